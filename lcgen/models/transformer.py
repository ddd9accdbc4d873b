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
          (+ 1 channel ``log_var`` (B, 512, 1) with ``variance_head``)

Options (all off by default, so the original API and saved mean-only runs are unchanged):

- ``input_dim=3``: a third input channel, the point's normalised ``flux_err`` where visible (0
  elsewhere); ``forward_batch`` fills it from the batch.
- ``variance_head``: a second output channel, the log of the predictive variance of the signal
  at each position, squashed into ``layers.LOG_VAR_RANGE``.
- ``interp_residual``: the model is fed the linear interpolation (in time) of the visible points
  and the time gaps to the nearest visible point on each side, ``log1p(dt / cadence)`` with the
  window's median spacing as cadence, and predicts a residual on top of the interpolation
  (``reconstructed = interpolation + head``). Interpolation is then the model's starting point,
  not something it must learn.
- ``time_attention``: continuous-time rotary encodings in every attention: queries and keys
  are rotated by angles ``2 pi t / P_k`` (periods log-spaced as the time encoding's), so the
  attention score between two positions depends on their time difference ``t_i - t_j`` in days,
  not on how many samples apart they are. At coarser levels a position's time is the mean of
  its real fine positions.
- ``time_gaps``: the model sees where the window's data gaps are. Each position gets the time
  to the previous and to the next real observation, ``log(dt / cadence)`` with the window's
  median spacing as cadence (0 on a regular grid, ~2.4 beside a gap of 11 cadences; 0 where
  there is no such observation), embedded and added to the input. The gaps are those of the
  data, not of the mask, so they tell the model what evenly spaced times would hide.
- ``cadence_rope``: rotary encodings as ``time_attention``'s, but of a time counted in the
  window's median cadences with every step between consecutive real points clipped to
  ``ROPE_MAX_STEP`` cadences, at periods log-spaced from 2 steps of the level (2**(level+1)
  cadences) to twice the window. On a regular grid that is the sample index; a gap moves the
  points after it further away, but never out of reach: with time in days (``time_attention``)
  a point across a gap of hundreds of cadences sits at an arbitrary phase of every short
  period, and the short periods rotate by random angles between samples of a 30-min or slower
  cadence. The gaps' true lengths come in through ``time_gaps``. Excludes ``time_attention``.
- ``day_encoding`` (on by default): the additive sinusoidal encoding of the time in days below.
  Off, time reaches the model only through the rotary encodings and ``time_gaps``.
- ``psd_head``: F > 0 adds a small head (layer norm + linear, or with ``psd_head_hidden`` one
  GELU layer of that width between them) that reads the pooled latent, the
  mean and the max over the real positions of every encoder level and the bottleneck (what
  ``lcgen embed`` pools by default), and predicts the window's normalised multitaper PSD on F
  frequency bins (``forward_batch`` output ``psd`` (B, F)). ``lcgen train`` sets it from
  ``psd_aux_weight`` and the paired file's frequency grid, and trains it as a self-supervised
  auxiliary loss, so that the latent must hold the window's frequencies. The head is not part of
  any latent (``latents``), so embeddings never include it.
- ``contrast_head``: P > 0 adds a projection head (layer norm, linear to P, GELU, linear) on the
  same pooled latent (``forward_batch`` output ``contrast`` (B, P)), for ``lcgen train``'s
  contrastive objective (``contrastive_weight``); like the PSD head, made last and never part of
  a latent.

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
from lcgen.models.layers import Dropout, bounded_log_var, check_dims, check_levels, pad_length


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
    variance_head: bool = False  # (bool) also predict a log-variance per position (output log_var)
    interp_residual: bool = False  # (bool) predict a residual over linear interpolation of the visible points, given the gaps
    time_attention: bool = False  # (bool) rotary encodings of observation times (days) in every attention
    time_gaps: bool = False  # (bool) feed each position log(time to the previous / next real point / median cadence)
    day_encoding: bool = True  # (bool) add the sinusoidal encoding of the time in days to the input (off: only rotary encodings and gap features carry time)
    cadence_rope: bool = False  # (bool) rotary encodings of times in median cadences (steps clipped to 4) in every attention
    psd_head: int = 0  # (int) bins of the auxiliary head that predicts the window's PSD from the pooled latent (lcgen train sets it from psd_aux_weight and the data's grid); 0 = no head
    psd_head_hidden: int = 0  # (int) PSD head: 0 = layer norm + linear; > 0 = a GELU layer of this width before the output layer
    contrast_head: int = 0  # (int) width of the projection head on the pooled latent for a contrastive objective (lcgen train sets it with contrastive_weight); 0 = no head

    def __post_init__(self) -> None:
        dims = check_dims("encoder_dims", self.encoder_dims)
        check_levels(self.num_layers, dims, "transformer")
        if any(d % self.nhead for d in dims) or self.nhead < 1:
            raise LcgenError(f"transformer: nhead={self.nhead} must divide every width in "
                             f"encoder_dims {dims}")
        if dims[0] % 2:
            raise LcgenError(f"transformer: encoder_dims[0]={dims[0]} must be even (sin/cos pairs)")
        if self.time_attention and self.cadence_rope:
            raise LcgenError("transformer: time_attention and cadence_rope are two rotary encodings of "
                             "the times; choose one")
        if (self.time_attention or self.cadence_rope) and any((d // self.nhead) % 2 for d in dims):
            raise LcgenError(f"transformer: time_attention/cadence_rope need an even head width (width / nhead) at "
                             f"every level, got encoder_dims {dims} with nhead={self.nhead}")
        if self.contrast_head < 0:
            raise LcgenError(f"transformer: contrast_head={self.contrast_head} must be >= 0 (0: no head)")
        if self.psd_head < 0 or self.psd_head_hidden < 0:
            raise LcgenError(f"transformer: psd_head={self.psd_head} and psd_head_hidden={self.psd_head_hidden} "
                             f"must be >= 0 (0: no PSD head; a linear one)")
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
        phase = time_phase(t, self.frequency)  # (B, L, dim/2)
        return torch.cat([phase.sin(), phase.cos()], dim=-1).float()


def time_phase(t: torch.Tensor, frequency: torch.Tensor) -> torch.Tensor:
    """``2 pi frac(t f_k)``, (..., K) for times (...) in days and frequencies (K,) in cycles/day.

    Computed in float64 (whole cycles dropped before the sine) so that short periods keep their
    phase over long windows."""
    wide = torch.float32 if t.device.type == "mps" else torch.float64  # MPS has no float64
    cycles = t.to(wide)[..., None] * frequency.to(wide)
    return (2 * math.pi) * torch.frac(cycles)


def rotate(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotary encoding: rotate pairs (x_k, x_{k+hs/2}) of x (B, nh, L, hs) by the angles whose
    (cos, sin) are given, each (B, 1, L, hs/2)."""
    cos, sin = rope
    a, b = x.chunk(2, dim=-1)
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


def nearest_marked(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each position j of a (B, L) bool ``mask``: the last marked index <= j (-1 where there is
    none) and the first marked index >= j (L where there is none), (B, L) int64 each."""
    B, L = mask.shape
    idx = torch.arange(L, device=mask.device).expand(B, L)
    return (torch.where(mask, idx, -1).cummax(1).values,
            torch.where(mask, idx, L).flip(1).cummin(1).values.flip(1))


def interpolate_visible(values: torch.Tensor, visible: torch.Tensor, t: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear interpolation in time of each row's visible points, vectorised over the batch.

    values, visible, t: (B, L), times increasing along the visible positions. Returns (interp,
    dt_prev, dt_next), each (B, L): the straight line between the nearest visible neighbours
    (the nearest visible value beyond the ends, 0 in a row with none; visible positions get their
    own value, as :func:`lcgen.evaluate.linear_baseline`), and the time from the previous / to the
    next visible position (0 where there is none).
    """
    L = values.shape[1]
    prev, nxt = nearest_marked(visible)  # last visible index <= j, first >= j
    has_prev, has_next = prev >= 0, nxt < L
    p, n = prev.clamp(min=0), nxt.clamp(max=L - 1)
    vp, vn, tp, tn = values.gather(1, p), values.gather(1, n), t.gather(1, p), t.gather(1, n)
    span = tn - tp
    w = torch.where(span > 0, (t - tp) / torch.where(span > 0, span, 1.0), 0.0).clamp(0, 1)
    interp = torch.where(has_prev & has_next, vp + w * (vn - vp),
                         torch.where(has_prev, vp, torch.where(has_next, vn, 0.0)))
    dt_prev = torch.where(has_prev, t - tp, 0.0).clamp(min=0)
    dt_next = torch.where(has_next, tn - t, 0.0).clamp(min=0)
    return interp, dt_prev, dt_next


ROPE_MAX_STEP = 4.0  # cadence_rope: a step between real points counts as at most this many cadences


def rope_time(t: torch.Tensor, valid: torch.Tensor, cadence: torch.Tensor) -> torch.Tensor:
    """(B, L) the ``cadence_rope`` time: the sum of the steps between consecutive real points up
    to each position, each in units of ``cadence`` (B, 1) and clipped to ``ROPE_MAX_STEP``; 0 at
    the first real point, constant over padding."""
    step = (real_gaps(t, valid)[0] / cadence).clamp(max=ROPE_MAX_STEP)
    return torch.where(valid, step, 0.0).cumsum(1)


def real_gaps(t: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Time from the previous real position to each position and from each to the next real
    one, (B, L) each, for times t (B, L) increasing along the real positions ``valid`` (B, L);
    0 where there is none."""
    L = t.shape[1]
    prev, nxt = nearest_marked(valid)
    prev = F.pad(prev[:, :-1], (1, 0), value=-1)  # last real index < j
    nxt = F.pad(nxt[:, 1:], (0, 1), value=L)  # first real index > j
    dt_prev = torch.where(prev >= 0, t - t.gather(1, prev.clamp(min=0)), 0.0)
    dt_next = torch.where(nxt < L, t.gather(1, nxt.clamp(max=L - 1)) - t, 0.0)
    return dt_prev, dt_next


def gap_features(t: torch.Tensor, valid: torch.Tensor, cadence: torch.Tensor) -> torch.Tensor:
    """(B, L, 2) ``log(dt / cadence)`` to the previous and the next real position (see
    ``time_gaps``), steps clamped to [cadence / 100, 10**4 cadences]; 0 where there is no such
    position and at padding."""
    feats = []
    for dt in real_gaps(t, valid):
        f = torch.log((dt / cadence).clamp(1e-2, 1e4))
        feats.append(torch.where(valid & (dt > 0), f, 0.0))
    return torch.stack(feats, -1)


def median_spacing(t: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Median time step between consecutive real positions of each row, (B, 1); 1 if undefined."""
    dt = (t[:, 1:] - t[:, :-1]).masked_fill(~(valid[:, 1:] & valid[:, :-1]), float("nan"))
    cadence = dt.nanmedian(1, keepdim=True).values
    return torch.where(torch.isfinite(cadence) & (cadence > 0), cadence, torch.ones_like(cadence))


def any_padding(valid: torch.Tensor) -> bool:
    """Whether ``valid`` (B, L) marks any position as padding: the one host read of a forward
    pass (a GPU sync), made once for all levels. Under ``torch.compile`` it answers True without
    reading, so the graph does not break there (the masks then cost a little on GPU)."""
    if torch.compiler.is_compiling():
        return True
    return not bool(valid.all())


def key_padding_mask(valid: torch.Tensor) -> torch.Tensor:
    """The attention mask for keys ``valid`` (B, L): (B, 1, 1, L) bool, True where a key may be
    attended to. Pass None to :func:`attention` instead when no key is padding (see
    :func:`any_padding`): the fused kernel then skips the mask.

    A row with no real key attends to all (zeroed) positions rather than to none, which would be
    a softmax of all -inf (NaN).
    """
    return (valid | ~valid.any(1, keepdim=True))[:, None, None, :]


class Down(nn.Conv1d):
    """``Conv1d(kernel_size=3, stride=2, padding=1)`` on a (B, L, D) tensor (L even) -> (B, L/2, D').

    Coarse position j sees fine positions 2j-1, 2j, 2j+1: with the pairs (x[2j], x[2j+1]) as one
    (B, L/2, 2 D) view, that is one matrix product over taps 1 and 2 plus one over tap 0 of the
    previous pair's second half, shifted by one. No transposes or copies of x; the same
    parameters (names and shapes) as ``Conv1d``.
    """

    def __init__(self, d_in: int, d_out: int):
        super().__init__(d_in, d_out, kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        w = self.weight  # (D', D, 3)
        pairs = x.reshape(B, L // 2, 2 * D)  # (x[2j], x[2j+1])
        out = F.linear(pairs, w[:, :, 1:].transpose(1, 2).reshape(w.shape[0], 2 * D), self.bias)
        previous = F.linear(pairs[:, :-1, D:], w[:, :, 0])  # tap 0 on x[2j-1], for j >= 1
        return out + F.pad(previous, (0, 0, 1, 0))


class Up(nn.ConvTranspose1d):
    """``ConvTranspose1d(kernel_size=4, stride=2, padding=1)`` on a (B, L, D') tensor -> (B, 2 L, D).

    Fine position 2j gets taps 1 and 3 of coarse positions j and j-1, position 2j+1 taps 2 and 0
    of j and j+1: one matrix product gives all four taps, (B, L, 4 D), and two shifted sums
    interleave them. Same parameters as ``ConvTranspose1d``.
    """

    def __init__(self, d_in: int, d_out: int):
        super().__init__(d_in, d_out, kernel_size=4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        d_in, d, _ = self.weight.shape
        zero = self.bias.new_zeros(d)
        bias = torch.cat([zero, self.bias, self.bias, zero])  # once into each output, with taps 1 and 2
        taps = F.linear(x, self.weight.permute(2, 1, 0).reshape(4 * d, d_in), bias).split(d, -1)  # 4 x (B, L, D)
        even = taps[1] + F.pad(taps[3][:, :-1], (0, 0, 1, 0))  # 2j: x[j] tap 1, x[j-1] tap 3
        odd = taps[2] + F.pad(taps[0][:, 1:], (0, 0, 0, 1))  # 2j+1: x[j] tap 2, x[j+1] tap 0
        return torch.stack([even, odd], 2).view(B, 2 * L, d)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q kᵀ / √hs, keys where ``mask``) v for q, k, v (B, nh, L, hs) -> (B, nh, L, hs).

    ``mask`` from :func:`key_padding_mask`, or None when no key is padding. One fused kernel (flash attention on CPU and GPU); no
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
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, rope=None) -> torch.Tensor:
        """x (B, L, D); mask from :func:`key_padding_mask`; rope: None or (cos, sin)
        (B, 1, L, hs/2) of the time rotary encoding."""
        B, L, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, L, 3, self.nhead, D // self.nhead).unbind(2)
        q, k, v = (a.transpose(1, 2) for a in (q, k, v))  # (B, nh, L, hs), views of one (B, L, 3 D)
        if rope is not None:
            q, k = rotate(q, rope), rotate(k, rope)
        y = attention(q, k, v, mask).transpose(1, 2).reshape(B, L, D)  # (B, L, D)
        x = x + self.drop(self.proj(y))
        return x + self.drop(self.ff(self.norm2(x)))


class Stage(nn.Module):
    """Blocks at one resolution; padded positions leave zeroed."""

    def __init__(self, dim: int, cfg: TransformerConfig):
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(dim, cfg.nhead, cfg.ff_mult, cfg.dropout) for _ in range(cfg.num_transformer_blocks))

    def forward(self, x: torch.Tensor, valid: torch.Tensor, rope=None, padded: bool = True) -> torch.Tensor:
        """x (B, L, D), valid (B, L); ``padded`` False when every position is real (no masks)."""
        mask = key_padding_mask(valid) if padded else None
        for block in self.blocks:
            x = block(x, mask, rope)
        return x.masked_fill(~valid[..., None], 0.0) if padded else x


class TimeSeriesTransformer(nn.Module):
    """Hierarchical U-Net transformer autoencoder; see the module docstring."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        dims = list(config.encoder_dims)
        self.levels = len(dims)
        below = dims[1:] + dims[-1:]  # width after each downsampling: [128, 256, 512, 512]
        self.embed = nn.Linear(config.input_dim, dims[0])
        if config.interp_residual:  # interpolation, log1p(dt_prev / cadence), log1p(dt_next / cadence)
            self.embed_interp = nn.Linear(3, dims[0])
        if config.time_gaps:  # log(step from the previous / to the next real point / cadence)
            self.embed_gaps = nn.Linear(2, dims[0])
        self.time_encoding = TimeEncoding(dims[0], config.min_period, config.max_period)
        self.encoder = nn.ModuleList(Stage(d, config) for d in dims)
        # kernel 3, stride 2: each coarse position sees its two fine positions and one neighbour
        self.down = nn.ModuleList(Down(d, d_next) for d, d_next in zip(dims, below))
        self.bottleneck = Stage(dims[-1], config)
        # kernel 4, stride 2, padding 1: exact doubling, every output sees two inputs (no checkerboard)
        self.up = nn.ModuleList(Up(d_next, d) for d, d_next in zip(dims, below))
        self.fuse = nn.ModuleList(nn.Linear(2 * d, d) for d in dims)
        self.decoder = nn.ModuleList(Stage(d, config) for d in dims)
        self.norm_out = nn.LayerNorm(dims[0])
        self.head = nn.Linear(dims[0], 2 if config.variance_head else 1)
        width = 2 * (sum(dims) + dims[-1])  # pooled_meanmax: mean and max of every level and the bottleneck
        if config.psd_head:  # made last, so every other parameter is initialised as without it
            hidden = [nn.Linear(width, config.psd_head_hidden), nn.GELU()] if config.psd_head_hidden else []
            self.psd_head = nn.Sequential(nn.LayerNorm(width), *hidden,
                                          nn.Linear(config.psd_head_hidden or width, config.psd_head))
        if config.contrast_head:  # after the PSD head: every other parameter initialises as without it
            self.contrast_head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, config.contrast_head), nn.GELU(),
                                               nn.Linear(config.contrast_head, config.contrast_head))

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None,
                valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """x (B, L, input_dim), t (B, L) or (B, L, 1) days, valid (B, L) bool (None: all real).

        Returns ``reconstructed`` (B, L, 1), ``encoded`` (B, ceil(L / 2**levels), D_last) and, with
        the variance head, ``log_var`` (B, L, 1).
        """
        levels, ropes, extra = self.encode(x, t, valid)
        return self.decode(levels, ropes, extra, x.shape[1])

    def decode(self, levels, ropes, extra, length: int, bottleneck: torch.Tensor | None = None
               ) -> dict[str, torch.Tensor]:
        """The decoder half of :meth:`forward`, from :meth:`encode`'s output, back to ``length``
        positions. ``bottleneck`` (B, Lp / 2**levels, D_last) replaces the encoder's bottleneck
        (the multimodal model decodes from its shared latent); the skips are the encoder's."""
        L = length
        h = levels[-1][0] if bottleneck is None else bottleneck
        encoded = h  # (B, Lp / 2**levels, D_last)
        padded = any_padding(levels[0][1])
        for i in reversed(range(self.levels)):
            skip, valid_i = levels[i]
            h = self.up[i](h)  # (B, 2 L, D_i)
            h = self.fuse[i](torch.cat([h, skip], dim=-1))
            h = self.decoder[i](h, valid_i, ropes[i], padded)
        out = self.head(self.norm_out(h))[:, :L]  # (B, L, 1 or 2)
        mean = out[..., :1]
        if extra is not None:
            mean = mean + extra[..., :1]
        result = {"reconstructed": mean, "encoded": encoded}
        if self.config.variance_head:
            result["log_var"] = bounded_log_var(out[..., 1:])  # (B, L, 1)
        return result

    def encode(self, x: torch.Tensor, t: torch.Tensor | None = None, valid: torch.Tensor | None = None):
        """The encoder half of :meth:`forward`. Returns ``(levels, ropes, extra)``: ``levels`` holds
        ``(h, valid)`` after each encoder level (the skips, h (B, Lp / 2**i, D_i)) and, last, the
        bottleneck (``encoded``), ``valid`` (B, L') marking the real positions of each level and h
        zero elsewhere; ``ropes`` the time rotary encodings of the levels (None when off);
        ``extra`` (B, L, 3) the interpolation features (None without ``interp_residual``)."""
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
        extra = gaps = cadence = None
        if self.config.time_gaps or self.config.interp_residual or self.config.cadence_rope:
            cadence = median_spacing(t_rel, valid)  # (B, 1) days; a sort per row, so only when used
        if self.config.time_gaps:
            gaps = gap_features(t_rel, valid, cadence)  # (B, L, 2)
        if self.config.interp_residual:
            visible = valid & (x[..., 1] > 0.5)
            interp, dt_prev, dt_next = interpolate_visible(x[..., 0], visible, t_rel)
            extra = torch.stack([interp, torch.log1p(dt_prev / cadence), torch.log1p(dt_next / cadence)], -1)

        # the times the rotary encodings see: days, or clipped steps in cadences (cadence_rope)
        t_rope = rope_time(t_rel, valid, cadence) if self.config.cadence_rope else t_rel

        # Pad the length to a multiple of 2**levels; the added positions are padding.
        multiple = 2 ** self.levels
        x, t_rel, t_rope, valid = (pad_length(a, multiple, dim=1) for a in (x, t_rel, t_rope, valid))
        padded = any_padding(valid)

        h = self.embed(x)  # (B, Lp, D0)
        if self.config.day_encoding:
            h = h + self.time_encoding(t_rel)
        if extra is not None:
            h = h + self.embed_interp(pad_length(extra, multiple, dim=1))
        if gaps is not None:
            h = h + self.embed_gaps(pad_length(gaps, multiple, dim=1))
        levels, ropes = [], []
        for level, (stage, down) in enumerate(zip(self.encoder, self.down)):
            ropes.append(self._rope(t_rope, level))
            h = stage(h, valid, ropes[-1], padded)  # zero at padding
            levels.append((h, valid))
            h = down(h)  # (B, L/2, D_next)
            # coarse time: mean of the real fine positions' times
            weight = valid.view(B, -1, 2).float()
            t_rope = (t_rope.view(B, -1, 2) * weight).sum(-1) / weight.sum(-1).clamp(min=1)
            valid = valid.view(B, -1, 2).any(-1)  # coarse real if either fine position is
        levels.append((self.bottleneck(h, valid, self._rope(t_rope, self.levels - 1), padded), valid))
        return levels, ropes, extra

    def _rope(self, t: torch.Tensor, level: int):
        """(cos, sin) (B, 1, L, hs/2) of the time rotary encoding at ``level``; None when off.

        The bottleneck shares the last level's width. ``time_attention``: times in days,
        frequencies log-spaced over [min_period, max_period] as the additive time encoding's;
        ``cadence_rope``: ``t`` from :func:`rope_time` (cadences), periods over [2**(level+1),
        2 * input_length] cadences."""
        cfg = self.config
        if not (cfg.time_attention or cfg.cadence_rope):
            return None
        hs = cfg.encoder_dims[level] // cfg.nhead
        if cfg.time_attention:
            low, high = cfg.min_period, cfg.max_period
        else:
            low, high = 2.0 ** (level + 1), 2.0 * max(cfg.input_length, 2 ** (level + 2))
        periods = torch.logspace(math.log10(low), math.log10(high), hs // 2, dtype=torch.float64, device=t.device)
        phase = time_phase(t, 1.0 / periods)[:, None]  # (B, 1, L, hs/2)
        return phase.cos().float(), phase.sin().float()

    def _batch_input(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, L, input_dim) model input of a batch dict: values, mask channel and, when
        ``input_dim >= 3``, flux_err where visible (0 where the batch has none); ``hidden``
        optional (default nothing hidden)."""
        hidden = batch.get("hidden")
        x = model_input(batch["values"], batch["valid"], torch.zeros_like(batch["valid"]) if hidden is None else hidden)
        if self.config.input_dim >= 3:
            err = batch.get("flux_err")
            err = torch.zeros_like(x[..., 0]) if err is None else torch.where(x[..., 1] > 0, err.to(x.dtype), 0.0)
            x = torch.cat([x, err[..., None], x.new_zeros(*x.shape[:2], self.config.input_dim - 3)], -1)
        return x

    def latents(self, batch: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Every latent level of a batch dict (values, valid, time; ``hidden`` optional, default
        nothing hidden): ``level0`` .. ``level{n-1}`` (after each encoder level) and
        ``bottleneck``, each ``(h (B, L', D), valid (B, L') bool)``; h is zero where not valid."""
        levels, _, _ = self.encode(self._batch_input(batch), batch["time"], batch["valid"])
        names = [f"level{i}" for i in range(self.levels)] + ["bottleneck"]
        return dict(zip(names, levels))

    def forward_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Batch dict (values, valid, hidden, time[, flux_err]) -> reconstructed (B, L), encoded
        (and log_var (B, L) with the variance head, psd (B, F) with the PSD head, contrast (B, P)
        with the contrastive head)."""
        x = self._batch_input(batch)
        levels, ropes, extra = self.encode(x, batch["time"], batch["valid"])
        out = self.decode(levels, ropes, extra, x.shape[1])
        out = {k: (v[..., 0] if k != "encoded" else v) for k, v in out.items()}
        if self.config.psd_head or self.config.contrast_head:
            pooled = pooled_meanmax(levels)
            if self.config.psd_head:
                out["psd"] = self.psd_head(pooled)  # (B, F)
            if self.config.contrast_head:
                out["contrast"] = self.contrast_head(pooled)  # (B, contrast_head)
        return out


def pooled_meanmax(levels: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """(B, 2 ΣD) the mean and the max over the real positions of every ``(h (B, L', D), valid
    (B, L'))`` of ``levels``, concatenated in order: ``lcgen embed``'s default pooling (level
    ``all``, ``meanmax``), here in the model's precision and differentiable. A row with no real
    position gives zeros."""
    out = []
    for h, valid in levels:
        v = valid[..., None]  # (B, L', 1)
        h = torch.where(v, h, 0.0)
        out.append(h.sum(1) / v.sum(1).clamp(min=1))
        out.append(torch.where(v.any(1), torch.where(v, h, -torch.inf).amax(1), 0.0))
    return torch.cat(out, -1)
