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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lcgen.errors import LcgenError
from lcgen.masking import model_input
from lcgen.models.layers import bounded_log_var, check_dims, check_levels, make_activation, pad_length


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


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of a (B, C, L) tensor, at each position.

    torch's fused layer norm on the (B, L, C) view, copied back to a contiguous (B, C, L): the
    fused kernels (one pass forward, one backward) and two copies cost less on CPU than the
    formula written out in (B, C, L), and the activation after it sees a contiguous tensor (on a
    transposed one its backward is ~10x slower).
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.transpose(1, 2), (x.shape[1],), self.weight, self.bias, self.eps)  # (B, L, C)
        return y.transpose(1, 2).contiguous()


class ConvBlock(nn.Sequential):
    """2 x [conv -> LayerNorm over channels -> activation], then dropout; (B, C_in, L) -> (B, C_out, L)."""

    def __init__(self, c_in: int, c_out: int, cfg: UNetConfig):
        k = cfg.kernel_size
        super().__init__(
            nn.Conv1d(c_in, c_out, k, padding=k // 2), ChannelNorm(c_out), make_activation(cfg.activation),
            nn.Conv1d(c_out, c_out, k, padding=k // 2), ChannelNorm(c_out), make_activation(cfg.activation),
            nn.Dropout(cfg.dropout),
        )


class UNetAutoencoder(nn.Module):
    """1-D UNet autoencoder with skip connections; see the module docstring."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        dims = list(config.encoder_dims)
        self.levels = len(dims)
        self.stem = nn.Conv1d(config.in_channels, dims[0], 7, padding=3)
        widths_in = dims[:1] + dims[:-1]  # the stem already gives dims[0] channels
        self.encoder = nn.ModuleList(ConvBlock(d_in, d, config) for d_in, d in zip(widths_in, dims))
        self.pool = nn.MaxPool1d(2)
        self.bottleneck = ConvBlock(dims[-1], dims[-1], config)
        below = dims[1:] + dims[-1:]  # width arriving from below at each level
        self.up = nn.ModuleList(nn.ConvTranspose1d(d_b, d, 2, stride=2) for d, d_b in zip(dims, below))
        self.decoder = nn.ModuleList(ConvBlock(2 * d, d, config) for d in dims)
        self.head = nn.Conv1d(dims[0], 2 if config.variance_head else 1, 1)

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
        2**levels) (the encoder's, or the multimodal model's readout of its latent) to ``length`` bins."""
        L = length
        h = encoded = bottleneck
        for i in reversed(range(self.levels)):
            h = self.decoder[i](torch.cat([self.up[i](h), skips[i]], dim=1))
        out = self.head(h)[:, :, :L]  # (B, 1 or 2, L)
        result = {"reconstructed": out[:, 0], "encoded": encoded}
        if self.config.variance_head:
            result["log_var"] = bounded_log_var(out[:, 1])
        return result

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder half of :meth:`forward`: the output of each encoder level (the skips,
        (B, D_i, Lp / 2**i)) and, last, the bottleneck (``encoded``)."""
        h = self.stem(pad_length(x, 2 ** self.levels, dim=2))
        out = []
        for block in self.encoder:
            h = block(h)
            out.append(h)
            h = self.pool(h)
        out.append(self.bottleneck(h))
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
