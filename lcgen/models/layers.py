"""Small pieces shared by the models: activations, config checks, padding to a multiple."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lcgen.errors import LcgenError

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
