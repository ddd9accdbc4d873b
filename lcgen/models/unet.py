"""1-D UNet autoencoder for one spectral channel (PSD, ACF or F-statistic).

Input (B, 2, L) = [spectrum where visible else 0, visibility flag]. Default shape (L = 1024):

    stem: conv k7, 2 -> 64
    level i (widths 64, 128, 256, 512 at lengths 1024, 512, 256, 128):
        2 x [conv k3 -> LayerNorm over channels -> GELU] -> skip -> max-pool 2
    bottleneck: 2 x conv block @ 512, length 64 = ``encoded`` (B, 512, 64)
    decoder, level 3..0: transposed conv x2 -> concat skip -> 2 x conv block
    head: conv k1 -> 1 channel = ``reconstructed`` (B, 1024)

LayerNorm normalises each position over its channels, so one sample's statistics never depend on
another's (unlike BatchNorm) and train and eval behave alike.

Inside, activations are channels-last, (B, L, C): the layer norm over channels and the activation
then run on contiguous memory, with no transposes (which cost ~13 % of a CPU training step when
the activations were (B, C, L)), and the convolutions run as oneDNN's channels-last kernels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lcgen.errors import LcgenError
from lcgen.masking import model_input
from lcgen.models.layers import (Dropout, bounded_log_var, check_dims, check_levels, make_activation, pad_length,
                                 pooled, scratch)
from lcgen.models.winograd import winograd_conv3

WINOGRAD_MIN_CHANNELS = 128  # below, oneDNN's convolution is as fast (bench_conv.py)
# from this many input channels the weight's gradient runs as matrix products (_SameConv); the
# stem's 2 made it 4x slower than oneDNN's (228 against 55 ms at batch 128 x 1024, one core)
SAME_CONV_MIN_CHANNELS = 16


@dataclass
class UNetConfig:
    """1-D UNet; field names follow the original README."""

    input_length: int = 1024  # (int) spectrum length (others work: padded to 2**levels)
    in_channels: int = 2  # (int) input channels: spectrum + visibility flag
    encoder_dims: list[int] = field(default_factory=lambda: [64, 128, 256, 512])  # (list[int]) width per level
    num_layers: int | None = None  # (int) resolution levels, = len(encoder_dims) (README name)
    activation: str = "gelu"  # (str) gelu, relu, silu, tanh or leakyrelu
    kernel_size: int = 3  # (int) odd convolution width inside the blocks
    dropout: float = 0.0  # (float) dropout after each conv block
    variance_head: bool = False  # (bool) also predict a log-variance per bin (output log_var)

    def __post_init__(self) -> None:
        dims = check_dims("encoder_dims", self.encoder_dims)
        check_levels(self.num_layers, dims, "unet")
        make_activation(self.activation)  # fails early on an unknown name
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise LcgenError(f"unet: kernel_size={self.kernel_size} must be odd and positive")
        if self.in_channels < 1:
            raise LcgenError(f"unet: in_channels={self.in_channels} must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise LcgenError(f"unet: dropout={self.dropout} must be in [0, 1)")


class Conv(nn.Conv1d):
    """A ``Conv1d`` applied to a channels-last (B, L, C_in) tensor -> (B, L', C_out), contiguous.

    The UNet keeps its activations channels-last so that the layer norm over channels and the
    activation run on contiguous memory with no transposes. On the CPU, width-3 convolutions with at least
    ``WINOGRAD_MIN_CHANNELS`` channels in and out run as Winograd F(6, 3) matrix products
    (:mod:`lcgen.models.winograd`: 4/9 of the multiply-adds; 1.5-2.3x faster than oneDNN's
    convolution, forward and backward, at 256-1024 channels on one CPU core, see
    ``benchmarks/bench_conv.py``); the others as a channels-last 2-D convolution of height 1
    (oneDNN's fast layout on CPU), from ``SAME_CONV_MIN_CHANNELS`` input channels with the
    weight's gradient as matrix products (:class:`_SameConv`). Same parameters (names and shapes)
    as ``Conv1d``.
    """

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """x (B, L, C_in), or a list of parts (B, L, C_i) whose channels together are the C_in
        (the decoder's upsampled input and skip): as their concatenation, which Winograd never makes."""
        if (self.weight.device.type == "cpu"  # measured on the CPU only; cuDNN picks its own algorithms
                and self.kernel_size[0] == 3 and self.stride[0] == 1 and self.padding[0] == 1 and self.dilation[0] == 1
                and self.groups == 1 and min(self.in_channels, self.out_channels) >= WINOGRAD_MIN_CHANNELS):
            return winograd_conv3(x, self.weight, self.bias)
        if (self.weight.device.type == "cpu" and self.stride[0] == 1 and self.dilation[0] == 1 and self.groups == 1
                and self.bias is not None
                and self.padding[0] == self.kernel_size[0] // 2 and self.kernel_size[0] % 2 == 1
                and self.in_channels >= SAME_CONV_MIN_CHANNELS):
            return _SameConv.apply(self.weight, self.bias, *([x] if isinstance(x, torch.Tensor) else x))
        if not isinstance(x, torch.Tensor):
            x = torch.cat(x, dim=-1)
        return _conv_last(x, self.weight, self.bias, self.stride[0], self.padding[0])


def _conv_last(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1,
               padding: int = 0) -> torch.Tensor:
    """``Conv1d`` of a channels-last x (B, L, C_in) -> (B, L', C_out), contiguous, as a channels-last
    2-D convolution of height 1 (oneDNN's fast layout on the CPU)."""
    y = F.conv2d(x.transpose(1, 2).unsqueeze(2), weight.unsqueeze(2), bias,  # (B, C, 1, L) channels-last
                 stride=(1, stride), padding=(0, padding))
    return y.squeeze(2).transpose(1, 2)  # (B, L', C_out), contiguous


class _SameConv(torch.autograd.Function):
    """A stride-1 ``Conv1d`` of odd width k, padding k // 2, with a bias, on channels-last (B, L,
    C_i) input parts whose channels together are the C_in (concatenated into a pooled buffer,
    :func:`lcgen.models.layers.pooled`): oneDNN's convolution forward and for the input's
    gradient, and the weight's gradient as k matrix products, one per tap, ``dW[:, :, j] = Σ_b
    dy[b, l]ᵀ x[b, l + j - k // 2]`` over the positions l where both exist (oneDNN's weight
    gradient ran at a third of the matrix-product rate at the UNet's level-0 shapes: 170 against
    96 ms for 64 channels at batch 128 × 1024 on one core). It sums in another order than
    oneDNN, so the weight's gradient equals ``Conv1d``'s to float rounding."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, bias: torch.Tensor, *xs: torch.Tensor) -> torch.Tensor:
        x = xs[0].contiguous() if len(xs) == 1 else \
            torch.cat(xs, dim=-1, out=pooled((*xs[0].shape[:2], weight.shape[1]), xs[0]))
        ctx.save_for_backward(x, weight)
        ctx.widths = [p.shape[2] for p in xs]
        return _conv_last(x, weight, bias, 1, weight.shape[2] // 2)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, weight = ctx.saved_tensors
        dy = dy.contiguous()
        B, L, c_out = dy.shape
        half = weight.shape[2] // 2
        dxs = [None] * len(ctx.widths)
        if any(ctx.needs_input_grad[2:]):
            dx = torch.ops.aten.convolution_backward(
                dy.transpose(1, 2).unsqueeze(2), x.transpose(1, 2).unsqueeze(2), weight.unsqueeze(2), None,
                (1, 1), (0, half), (1, 1), False, (0, 0), 1, (True, False, False))[0].squeeze(2).transpose(1, 2)
            dxs = dx.split(ctx.widths, dim=-1)
        dw = None
        if ctx.needs_input_grad[0]:
            taps = []
            for shift in range(-half, half + 1):  # output l reads input l + shift
                if shift == 0:
                    taps.append(dy.view(B * L, c_out).t().mm(x.view(B * L, -1)))
                else:
                    out_rows, in_rows = (slice(0, L - shift), slice(shift, L)) if shift > 0 else \
                        (slice(-shift, L), slice(0, L + shift))
                    taps.append(torch.bmm(dy[:, out_rows].transpose(1, 2), x[:, in_rows]).sum(0))
            dw = torch.stack(taps, 2)
        db = dy.sum((0, 1)) if ctx.needs_input_grad[1] else None
        return dw, db, *dxs


class Up(nn.ConvTranspose1d):
    """``ConvTranspose1d(kernel_size=2, stride=2)`` on a channels-last (B, L, C_in) tensor ->
    (B, 2 L, C_out): each input position gives two outputs, so it is one matrix product,
    ``y[2j + k] = W[:, :, k]ᵀ x[j] + b``, whose (B, L, 2 C_out) result is already (B, 2 L, C_out)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(c_in, c_out, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        c_in, c_out, _ = self.weight.shape
        w = self.weight.permute(2, 1, 0).reshape(2 * c_out, c_in)  # rows: (k, out channel)
        return _Linear.apply(x.contiguous(), w, self.bias.repeat(2)).view(B, 2 * L, c_out)


class _Linear(torch.autograd.Function):
    """``F.linear(x, w, b)`` of a contiguous x (..., C_in) (the same kernels), with its output and
    the input's gradient written into pooled buffers (:func:`lcgen.models.layers.pooled`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x2 = x.view(-1, x.shape[-1])
        ctx.save_for_backward(x, w)
        y = torch.addmm(b, x2, w.t(), out=pooled((x2.shape[0], w.shape[0]), x))
        return y.view(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, w = ctx.saved_tensors
        x2, dy2 = x.view(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
        dx = torch.mm(dy2, w, out=pooled(tuple(x2.shape), dy)).view(x.shape) if ctx.needs_input_grad[0] else None
        dw = x2.t().mm(dy2).t() if ctx.needs_input_grad[1] else None  # as addmm's backward computes it
        db = dy2.sum(0) if ctx.needs_input_grad[2] else None
        return dx, dw, db


class _NormGelu(torch.autograd.Function):
    """gelu(layer_norm(y)) over the last dimension. Backward keeps y and the per-position
    statistics and makes the normalised z again (the same kernel on the same input, so the same
    values); the output is written into a pooled buffer (:func:`lcgen.models.layers.pooled`),
    and GELU's gradient into a reusable one. The values and gradients are those of
    ``nn.LayerNorm`` then ``nn.GELU`` (the same kernels on the same inputs). Keeping z instead
    would cost one activation per norm (32 MiB each in the default UNet at batch 128, 0.4 GB of
    peak RSS) to save one layer norm each; it paid only while a fresh 32 MiB tensor was page
    faults, which training on the CPU no longer has
    (:func:`lcgen.workers.keep_all_freed_memory`)."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        z, mean, rstd = torch.ops.aten.native_layer_norm(y, y.shape[-1:], weight, bias, eps)  # no real out= variant
        ctx.save_for_backward(y, weight, bias, mean, rstd)
        ctx.eps = eps
        return torch.ops.aten.gelu.out(z, out=pooled(tuple(z.shape), z))

    @staticmethod
    def backward(ctx, da: torch.Tensor):
        y, weight, bias, mean, rstd = ctx.saved_tensors
        z = torch.ops.aten.native_layer_norm(y, y.shape[-1:], weight, bias, ctx.eps)[0]
        dz = scratch(0, tuple(z.shape), z)
        dz = torch.ops.aten.gelu_backward(da, z) if dz is None else \
            torch.ops.aten.gelu_backward.grad_input(da, z, grad_input=dz)
        dy, dw, db = torch.ops.aten.native_layer_norm_backward(dz, y, y.shape[-1:], mean, rstd, weight, bias,
                                                                [True, True, True])
        return dy, dw, db, None


def norm_act(norm: nn.Module, act: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """act(norm(y)); a LayerNorm with exact GELU runs as :class:`_NormGelu`."""
    if (isinstance(norm, nn.LayerNorm) and norm.elementwise_affine and norm.bias is not None
            and type(act) is nn.GELU and act.approximate == "none" and y.is_contiguous()):
        return _NormGelu.apply(y, norm.weight, norm.bias, norm.eps)
    return act(norm(y))


class ConvBlock(nn.Sequential):
    """2 x [conv -> LayerNorm over channels -> activation], then dropout; (B, L, C_in) -> (B, L, C_out).
    The input may be a list of parts along the channels (:class:`Conv`)."""

    def __init__(self, c_in: int, c_out: int, cfg: UNetConfig):
        k = cfg.kernel_size
        super().__init__(
            Conv(c_in, c_out, k, padding=k // 2), nn.LayerNorm(c_out), make_activation(cfg.activation),
            Conv(c_out, c_out, k, padding=k // 2), nn.LayerNorm(c_out), make_activation(cfg.activation),
            Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        conv1, norm1, act1, conv2, norm2, act2, dropout = self
        return dropout(norm_act(norm2, act2, conv2(norm_act(norm1, act1, conv1(x)))))


def max_pool(x: torch.Tensor) -> torch.Tensor:
    """Max over pairs of positions of a channels-last (B, L, C) tensor -> (B, L / 2, C)."""
    return _MaxPool2.apply(x.contiguous())


class _MaxPool2(torch.autograd.Function):
    """The max over pairs of positions, with output and input gradient in pooled buffers
    (:func:`lcgen.models.layers.pooled`); backward keeps which of each pair won (bool, a tie to
    the first, as ``max_pool`` picks it), not ``max_pool``'s int64 indices (8x the memory)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        first, second = x.view(B, L // 2, 2, C).unbind(2)
        if ctx.needs_input_grad[0]:
            first_won = pooled((B, L // 2, C), x.new_empty(0, dtype=torch.bool))
            ctx.save_for_backward(torch.ge(first, second, out=first_won))
        return torch.maximum(first, second, out=pooled((B, L // 2, C), x))

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        first_won, = ctx.saved_tensors
        B, L2, C = dy.shape
        dx, zero = pooled((B, L2, 2, C), dy), dy.new_zeros(())
        torch.where(first_won, dy, zero, out=dx[:, :, 0])
        torch.where(first_won, zero, dy, out=dx[:, :, 1])
        return dx.view(B, 2 * L2, C)


class UNetAutoencoder(nn.Module):
    """1-D UNet autoencoder with skip connections; see the module docstring."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        dims = list(config.encoder_dims)
        self.levels = len(dims)
        self.stem = Conv(config.in_channels, dims[0], 7, padding=3)
        widths_in = dims[:1] + dims[:-1]  # the stem already gives dims[0] channels
        self.encoder = nn.ModuleList(ConvBlock(d_in, d, config) for d_in, d in zip(widths_in, dims))
        self.bottleneck = ConvBlock(dims[-1], dims[-1], config)
        below = dims[1:] + dims[-1:]  # width arriving from below at each level
        self.up = nn.ModuleList(Up(d_b, d) for d, d_b in zip(dims, below))
        self.decoder = nn.ModuleList(ConvBlock(2 * d, d, config) for d in dims)
        self.head = Conv(dims[0], 2 if config.variance_head else 1, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (B, in_channels, L) -> reconstructed (B, L), encoded (B, D_last, L / 2**levels)
        (and log_var (B, L) with the variance head)."""
        if x.dim() != 3 or x.shape[1] != self.config.in_channels:
            raise LcgenError(f"unet input must be (batch, {self.config.in_channels}, length), "
                             f"got {tuple(x.shape)}")
        *skips, h = self.encode(x)
        return self.decode(skips, h, x.shape[-1])

    def decode(self, skips: list[torch.Tensor], bottleneck: torch.Tensor, length: int) -> dict[str, torch.Tensor]:
        """The decoder half of :meth:`forward`: from the skips and a bottleneck (B, D_last, Lp /
        2**levels) (the encoder's, or the multimodal model's readout of its latent) to ``length`` bins.

        All (B, D, L') as :meth:`encode` returns them: transposed views of channels-last tensors."""
        encoded = bottleneck
        h = bottleneck.transpose(1, 2)  # (B, L', D): channels-last from here on
        for i in reversed(range(self.levels)):
            h = self.decoder[i]([self.up[i](h), skips[i].transpose(1, 2)])  # (B, Lp / 2**i, D_i); Conv concatenates
        out = self.head(h)[:, :length]  # (B, L, 1 or 2)
        result = {"reconstructed": out[..., 0], "encoded": encoded}
        if self.config.variance_head:
            result["log_var"] = bounded_log_var(out[..., 1])
        return result

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder half of :meth:`forward`: the output of each encoder level (the skips,
        (B, D_i, Lp / 2**i)) and, last, the bottleneck (``encoded``); transposed views of the
        channels-last (B, L', D) tensors the model computes in (x may be one too)."""
        h = self.stem(pad_length(x, 2 ** self.levels, dim=2).transpose(1, 2).contiguous())  # (B, Lp, D_0)
        out = []
        for block in self.encoder:
            h = block(h)
            out.append(h.transpose(1, 2))
            h = max_pool(h)
        out.append(self.bottleneck(h).transpose(1, 2))
        return out

    def latents(self, batch: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Every latent level of a batch dict (values, valid; ``hidden`` optional, default nothing
        hidden): ``level0`` .. ``level{n-1}`` and ``bottleneck``, each ``(h (B, L', D), valid
        (B, L') bool)``. A coarse position is valid when any bin under it is; convolutions mix
        neighbouring bins, so unlike the transformer's, h there is not independent of the rest."""
        hidden = batch.get("hidden", torch.zeros_like(batch["valid"]))
        x = model_input(batch["values"], batch["valid"], hidden).transpose(1, 2)
        if x.dim() != 3 or x.shape[1] != self.config.in_channels:
            raise LcgenError(f"unet input must be (batch, {self.config.in_channels}, length), "
                             f"got {tuple(x.shape)}")
        valid = pad_length(batch["valid"].bool(), 2 ** self.levels, dim=1)  # (B, Lp)
        out = {}
        for i, h in enumerate(self.encode(x)):
            name = f"level{i}" if i < self.levels else "bottleneck"
            step = valid.shape[1] // h.shape[2]
            out[name] = (h.transpose(1, 2), valid.view(valid.shape[0], -1, step).any(-1))
        return out

    def forward_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Batch dict (values, valid, hidden) -> reconstructed (B, L), encoded."""
        x = model_input(batch["values"], batch["valid"], batch["hidden"])  # (B, L, 2)
        return self(x.transpose(1, 2))
