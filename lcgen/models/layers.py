"""Small pieces shared by the models: activations, config checks, padding to a multiple."""

from __future__ import annotations

import functools
import math
import threading

import torch
import torch.nn.functional as F
from torch import nn

from lcgen.errors import LcgenError

_SCRATCH = threading.local()  # .buffers: {(slot, dtype): flat CPU tensor}
_POOL = threading.local()  # .buffers: {dtype: [flat CPU tensors]}


def scratch(slot: int, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor | None:
    """A reusable CPU buffer of ``shape`` for ``slot`` (0 or 1; contents undefined, valid until
    the slot's next use), or None off the CPU, where torch's caching allocator reuses memory.

    For the large transient tensors of a training step whose life ends inside one call
    (Winograd's products, GELU's gradient in the UNet's fused norm; longer-lived outputs and
    gradients come from :func:`pooled`): a fresh tensor of tens of MB is page faults as it is first written.
    glibc serves allocations of 32 MiB and more (exactly one activation of the default UNet at
    batch 128) by mmap and gives them back on free, so each is faulted in anew; in such a step
    the faults were ~30 % of the CPU time on this project's VM (kernel time, 5.8 of 19.4 s under
    load). Keeping all freed memory instead (glibc's mmap and trim thresholds raised) saved that
    but raised the peak RSS by ~1.8 GB (fragmentation), so only these transients are kept, in
    buffers the caller reuses. Each slot grows to the largest shape asked of it
    (50 MB for the default UNet at batch 128), per thread, and stays for the process's life."""
    if like.device.type != "cpu":
        return None
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    n, key = math.prod(shape), (slot, like.dtype)
    if key not in buffers or buffers[key].numel() < n:
        buffers.pop(key, None)  # the old one goes before the new one is made
        buffers[key] = torch.empty(n, dtype=like.dtype)
    return buffers[key][:n].view(shape)


def _users(buffer: torch.Tensor) -> int:
    """How many references torch holds to the buffer's memory (tensors and views sharing it)."""
    return torch._C._storage_Use_Count(buffer.untyped_storage()._cdata)


def pooled(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """An uninitialised CPU tensor of ``shape`` (``like``'s dtype) from a per-thread pool of
    buffers kept across calls; off the CPU a plain ``torch.empty`` (torch's caching allocator
    reuses memory there).

    A buffer is handed out again only once no tensor refers to its memory (autograd's saved
    tensors included), so a pooled tensor is an ordinary tensor to its users. For the large
    outputs and gradients of a training step: glibc maps each tensor of 32 MiB and more (every
    activation of the default UNet at batch 128) fresh and unmaps it on free, so each is page
    faults as it is first written: 20-50 ms of CPU for 32 MiB on this project's VM (2026-12-02),
    more than the 13 ms of the layer norm that writes it. A request takes the smallest free
    buffer of n to 2n elements, so a smaller last batch reuses the full batches' buffers (one
    under half a batch makes its own); free buffers too small for a request that makes a new
    one are given back. The pool grows to the most buffers alive at once and stays for the
    process's life."""
    only_pool = _only_the_pool()
    if like.device.type != "cpu" or only_pool is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    n = math.prod(shape)
    buffers = _POOL.__dict__.setdefault("buffers", {}).setdefault(like.dtype, [])
    free = [b for b in buffers if _users(b) == only_pool]
    fits = [b for b in free if n <= b.numel() <= 2 * n]
    if fits:
        return min(fits, key=torch.Tensor.numel)[:n].view(shape)
    buffers[:] = [b for b in buffers if b.numel() >= n or _users(b) != only_pool]
    buffers.append(torch.empty(n, dtype=like.dtype))
    return buffers[-1].view(shape)


@functools.cache
def _only_the_pool() -> int | None:
    """The count of a buffer that only the pool holds; None where torch lacks the (private)
    count, and pooled() is then a plain torch.empty. Taken at the first use, not on import: no
    lcgen module makes a tensor as it is imported, since torch reads its huge-page switch at its
    first allocation (:func:`lcgen.workers.choose_huge_pages`)."""
    return _users(torch.empty(1)) if hasattr(torch._C, "_storage_Use_Count") else None


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "leakyrelu": nn.LeakyReLU,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (gelu, relu, silu, tanh, leakyrelu)."""
    key = str(name).lower()
    if key not in ACTIVATIONS:
        raise LcgenError(f"unknown activation '{name}'; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[key]()


def check_dims(name: str, dims, *, what: str = "widths") -> list[int]:
    """``dims`` as a list of positive ints, or LcgenError naming the setting."""
    dims = list(dims) if isinstance(dims, (list, tuple)) else None
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise LcgenError(f"{name} must be a non-empty list of positive integer {what}, got {dims!r}")
    return dims


def check_levels(num_layers: int | None, encoder_dims: list[int], model: str) -> None:
    """``num_layers`` (the README's name for the number of resolution levels) must match."""
    if num_layers is not None and num_layers != len(encoder_dims):
        raise LcgenError(
            f"{model}: num_layers={num_layers} but encoder_dims has {len(encoder_dims)} levels "
            f"{encoder_dims}; num_layers counts resolution levels, so set it to "
            f"{len(encoder_dims)} or leave it out"
        )


def pad_length(x: torch.Tensor, multiple: int, dim: int) -> torch.Tensor:
    """Zero-pad ``x`` along ``dim`` (at the end) to a length divisible by ``multiple``."""
    extra = -x.shape[dim] % multiple
    if extra == 0:
        return x
    pad = [0, 0] * (x.dim() - 1 - dim % x.dim()) + [0, extra]
    return F.pad(x, pad)


# Predicted log-variances are squashed into this range (normalised units): sigma from ~1e-3
# to ~20. A soft clamp (sigmoid) keeps a gradient everywhere, unlike a hard clamp.
LOG_VAR_RANGE = (-14.0, 6.0)


def bounded_log_var(raw: torch.Tensor) -> torch.Tensor:
    """Map the variance head's raw output into ``LOG_VAR_RANGE``: lo + (hi - lo) sigmoid(raw).

    raw = 0 gives the middle of the range (log var = -4, sigma ~ 0.14)."""
    lo, hi = LOG_VAR_RANGE
    return lo + (hi - lo) * torch.sigmoid(raw)


class Dropout(nn.Module):
    """``nn.Dropout`` with a cheaper random mask on the CPU (no parameters; same semantics).

    torch's CPU dropout draws one Bernoulli number per element (~15 ns each, 3-4 % of a
    transformer training step). Here each element's keep/drop decision is 16 bits of one 64-bit
    draw from torch's default generator (so seeding and saved RNG states work as before): an
    element is dropped when its 16 bits fall below ``round(p * 2**16)``, i.e. with probability
    ``p`` rounded to a multiple of 2**-16 (0.1 -> 0.100006), and kept ones are scaled by
    1 / (1 - that probability), so the expectation is unchanged. Only a bool mask is kept for
    the backward pass, as torch's own. On other devices torch's fused dropout is used.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability {p} must be in [0, 1)")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        drop = round(self.p * 2**16)
        n = x.numel()
        bits = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64).view(torch.int16)[:n]
        keep = (bits >= drop - 2**15).view(x.shape)  # int16 bits are uniform on [-2**15, 2**15)
        return _MaskedScale.apply(x, keep, 2**16 / (2**16 - drop))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _MaskedScale(torch.autograd.Function):
    """x * keep * scale, saving only the bool ``keep`` for the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.mul(x, keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return torch.mul(grad, keep).mul_(ctx.scale), None, None
