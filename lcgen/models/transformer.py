"""Hierarchical U-Net transformer for irregularly sampled light curves (time series).

Input (B, L, 2) = [value where visible else 0, visibility flag] and the observation times (B, L)
in days. Shape of the default model (L = 512):

    embed 2 -> 64, + sinusoidal encoding of time since the window's first point
    level 0: 2 pre-norm blocks @ 64  (L 512)  -> skip -> conv stride 2 -> (256, 128)
    level 1: 2 blocks @ 128          (L 256)  -> skip -> conv stride 2 -> (128, 256)
    level 2: 2 blocks @ 256          (L 128)  -> skip -> conv stride 2 -> (64, 512)
    level 3: 2 blocks @ 512          (L 64)   -> skip -> conv stride 2 -> (32, 512)
    bottleneck: 2 blocks @ 512       (L 32)   = ``encoded``
    decoder, level 3..0: transposed conv x2 -> concat skip -> linear fuse -> 2 blocks
    head: LayerNorm + linear -> 1 channel (B, 512, 1) = ``reconstructed``

Padding. ``valid`` (B, L) marks real observations. A coarse position is real if either of its two
fine positions is; every attention at every level, encoder and decoder, masks padded keys, and
hidden states at padded positions are zeroed before anything mixes positions (the strided and
transposed convolutions), so values at padded positions cannot change any output at real
positions. A row with no real position attends to all (zeroed) positions, which keeps it finite.

Time encoding: for log-spaced periods P_k between ``min_period`` and ``max_period`` days,
``pe = [sin(2 pi t / P_k), cos(2 pi t / P_k)]`` with ``t`` the time since the window's first real
observation (so the encoding does not depend on where the window sits in the mission), computed
in float64 before the sine so that short periods keep their phase over long windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lcgen.errors import LcgenError
from lcgen.masking import model_input
from lcgen.models.layers import check_dims, check_levels, pad_length


@dataclass
class TransformerConfig:
    """Hierarchical U-Net transformer; field names follow the original README."""

    input_dim: int = 2  # (int) input channels: value + visibility flag
    input_length: int = 512  # (int) nominal sequence length (others work: padded to 2**levels)
    encoder_dims: list[int] = field(default_factory=lambda: [64, 128, 256, 512])  # (list[int]) width per level
    nhead: int = 4  # (int) attention heads at every level; divides every width
    num_layers: int | None = None  # (int) resolution levels, = len(encoder_dims) (README name)
    num_transformer_blocks: int = 2  # (int) pre-norm blocks per level, bottleneck and decoder level
    ff_mult: int = 4  # (int) feed-forward width / model width
    dropout: float = 0.1  # (float) dropout on the residual branches
    min_period: float = 0.00278  # (float) shortest period of the time encoding, days (4 min)
    max_period: float = 1640.0  # (float) longest period of the time encoding, days

    def __post_init__(self) -> None:
        dims = check_dims("encoder_dims", self.encoder_dims)
        check_levels(self.num_layers, dims, "transformer")
        if any(d % self.nhead for d in dims) or self.nhead < 1:
            raise LcgenError(f"transformer: nhead={self.nhead} must divide every width in "
                             f"encoder_dims {dims}")
        if dims[0] % 2:
            raise LcgenError(f"transformer: encoder_dims[0]={dims[0]} must be even (sin/cos pairs)")
        if self.num_transformer_blocks < 1 or self.ff_mult < 1 or self.input_dim < 1:
            raise LcgenError("transformer: num_transformer_blocks, ff_mult and input_dim must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise LcgenError(f"transformer: dropout={self.dropout} must be in [0, 1)")
        if not 0.0 < self.min_period < self.max_period:
            raise LcgenError(f"transformer: need 0 < min_period < max_period, got "
                             f"{self.min_period}, {self.max_period}")


class TimeEncoding(nn.Module):
    """Sinusoidal encoding of observation times (B, L) -> (B, L, dim) at log-spaced periods."""

    def __init__(self, dim: int, min_period: float, max_period: float):
        super().__init__()
        periods = torch.logspace(math.log10(min_period), math.log10(max_period), dim // 2,
                                 dtype=torch.float64)
        # float32 buffer so the model moves to any device; derived from the config, not saved
        self.register_buffer("frequency", (1.0 / periods).float(), persistent=False)  # cycles/day

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        wide = torch.float32 if t.device.type == "mps" else torch.float64  # MPS has no float64
        cycles = t.to(wide)[..., None] * self.frequency.to(wide)  # (B, L, dim/2)
        phase = (2 * math.pi) * torch.frac(cycles)  # whole cycles dropped before the sine
        return torch.cat([phase.sin(), phase.cos()], dim=-1).float()


def key_padding_mask(valid: torch.Tensor) -> torch.Tensor | None:
    """The attention mask for keys ``valid`` (B, L): (B, 1, 1, L) bool, True where a key may be
    attended to, or None when every key is real (the fused kernel then skips the mask).

    A row with no real key attends to all (zeroed) positions rather than to none, which would be
    a softmax of all -inf (NaN).
    """
    if bool(valid.all()):
        return None
    return (valid | ~valid.any(1, keepdim=True))[:, None, None, :]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q kᵀ / √hs, keys where ``mask``) v for q, k, v (B, nh, L, hs) -> (B, nh, L, hs).

    ``mask`` from :func:`key_padding_mask`. One fused kernel (flash attention on CPU and GPU); no
    (L, L) mask is ever built, and there is no dropout on the attention weights, which would force
    the slow materialised kernel on CPU. Strided q, k, v (heads split off one projection) are
    taken as they are.
    """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, dim: int, nhead: int, ff_mult: int, dropout: float):
        super().__init__()
        self.nhead = nhead
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Linear(ff_mult * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, L, D); mask from :func:`key_padding_mask`."""
        B, L, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, L, 3, self.nhead, D // self.nhead).unbind(2)
        q, k, v = (a.transpose(1, 2) for a in (q, k, v))  # (B, nh, L, hs), views of one (B, L, 3 D)
        y = attention(q, k, v, mask).transpose(1, 2).reshape(B, L, D)  # (B, L, D)
        x = x + self.drop(self.proj(y))
        return x + self.drop(self.ff(self.norm2(x)))


class Stage(nn.Module):
    """Blocks at one resolution; padded positions leave zeroed."""

    def __init__(self, dim: int, cfg: TransformerConfig):
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(dim, cfg.nhead, cfg.ff_mult, cfg.dropout) for _ in range(cfg.num_transformer_blocks))

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        mask = key_padding_mask(valid)
        for block in self.blocks:
            x = block(x, mask)
        return x if mask is None else x.masked_fill(~valid[..., None], 0.0)


class TimeSeriesTransformer(nn.Module):
    """Hierarchical U-Net transformer autoencoder; see the module docstring."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        dims = list(config.encoder_dims)
        self.levels = len(dims)
        below = dims[1:] + dims[-1:]  # width after each downsampling: [128, 256, 512, 512]
        self.embed = nn.Linear(config.input_dim, dims[0])
        self.time_encoding = TimeEncoding(dims[0], config.min_period, config.max_period)
        self.encoder = nn.ModuleList(Stage(d, config) for d in dims)
        # kernel 3, stride 2: each coarse position sees its two fine positions and one neighbour
        self.down = nn.ModuleList(
            nn.Conv1d(d, d_next, kernel_size=3, stride=2, padding=1) for d, d_next in zip(dims, below))
        self.bottleneck = Stage(dims[-1], config)
        # kernel 4, stride 2, padding 1: exact doubling, every output sees two inputs (no checkerboard)
        self.up = nn.ModuleList(
            nn.ConvTranspose1d(d_next, d, kernel_size=4, stride=2, padding=1)
            for d, d_next in zip(dims, below))
        self.fuse = nn.ModuleList(nn.Linear(2 * d, d) for d in dims)
        self.decoder = nn.ModuleList(Stage(d, config) for d in dims)
        self.norm_out = nn.LayerNorm(dims[0])
        self.head = nn.Linear(dims[0], 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None,
                valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """x (B, L, input_dim), t (B, L) or (B, L, 1) days, valid (B, L) bool (None: all real).

        Returns ``reconstructed`` (B, L, 1) and ``encoded`` (B, ceil(L / 2**levels), D_last).
        """
        levels = self.encode(x, t, valid)
        L = x.shape[1]
        h, _ = levels[-1]
        encoded = h  # (B, Lp / 2**levels, D_last)
        for i in reversed(range(self.levels)):
            skip, valid_i = levels[i]
            h = self.up[i](h.transpose(1, 2)).transpose(1, 2)  # (B, 2 L, D_i)
            h = self.fuse[i](torch.cat([h, skip], dim=-1))
            h = self.decoder[i](h, valid_i)
        out = self.head(self.norm_out(h))[:, :L]  # (B, L, 1)
        return {"reconstructed": out, "encoded": encoded}

    def encode(self, x: torch.Tensor, t: torch.Tensor | None = None,
               valid: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The encoder half of :meth:`forward`: ``(h, valid)`` after each encoder level (the
        skips, h (B, Lp / 2**i, D_i)) and, last, the bottleneck (``encoded``); ``valid`` (B, L')
        marks the real positions of each level, and h is zero elsewhere."""
        if x.dim() != 3 or x.shape[-1] != self.config.input_dim:
            raise LcgenError(f"transformer input must be (batch, length, {self.config.input_dim}), "
                             f"got {tuple(x.shape)}")
        B, L, _ = x.shape
        if valid is None:
            valid = torch.ones(B, L, dtype=torch.bool, device=x.device)
        if t is None:
            t = torch.arange(L, device=x.device, dtype=torch.float32).expand(B, L)
        elif t.dim() == 3:
            t = t[..., 0]
        valid = valid.bool()

        # Times since each window's first real point; padding contributes nothing (0, zeroed later).
        t_start = torch.where(valid, t, torch.inf).amin(1, keepdim=True)  # (B, 1)
        t_rel = torch.where(valid, t - t_start, 0.0)
        x = torch.where(valid[..., None], x, 0.0)  # NaN or junk at padding never enters

        # Pad the length to a multiple of 2**levels; the added positions are padding.
        multiple = 2 ** self.levels
        x, t_rel, valid = (pad_length(a, multiple, dim=1) for a in (x, t_rel, valid))

        h = self.embed(x) + self.time_encoding(t_rel)  # (B, Lp, D0)
        levels = []
        for stage, down in zip(self.encoder, self.down):
            h = stage(h, valid)  # zero at padding
            levels.append((h, valid))
            h = down(h.transpose(1, 2)).transpose(1, 2)  # (B, L/2, D_next)
            valid = valid.view(B, -1, 2).any(-1)  # coarse real if either fine position is
        levels.append((self.bottleneck(h, valid), valid))
        return levels

    def latents(self, batch: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Every latent level of a batch dict (values, valid, time; ``hidden`` optional, default
        nothing hidden): ``level0`` .. ``level{n-1}`` (after each encoder level) and
        ``bottleneck``, each ``(h (B, L', D), valid (B, L') bool)``; h is zero where not valid."""
        hidden = batch.get("hidden", torch.zeros_like(batch["valid"]))
        x = model_input(batch["values"], batch["valid"], hidden)
        levels = self.encode(x, batch["time"], batch["valid"])
        names = [f"level{i}" for i in range(self.levels)] + ["bottleneck"]
        return dict(zip(names, levels))

    def forward_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Batch dict (values, valid, hidden, time) -> reconstructed (B, L), encoded."""
        x = model_input(batch["values"], batch["valid"], batch["hidden"])
        out = self(x, batch["time"], batch["valid"])
        return {"reconstructed": out["reconstructed"][..., 0], "encoded": out["encoded"]}
