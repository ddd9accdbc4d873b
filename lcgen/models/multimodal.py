"""One shared latent for the time series, PSD, ACF and F-statistic of a window (``multimodal``).

The model reuses the other models' parts: the hierarchical transformer
(:class:`~lcgen.models.transformer.TimeSeriesTransformer`) encodes and decodes the time series,
one 1-D UNet (:class:`~lcgen.models.unet.UNetAutoencoder`) per spectral channel encodes and
decodes that channel, and transformer :class:`~lcgen.models.transformer.Block` s fuse them::

    series (B, L, 2) --transformer encoder--> bottleneck (B, L/2**n, D_s) -> Linear -> tokens
    psd    (B, 2, F) --UNet encoder---------> bottleneck (B, D_u, F/2**m) -> Linear -> tokens
    acf    (B, 2, G) --UNet encoder---------> ...                         -> Linear -> tokens
    fstat  (B, 2, F) --UNet encoder---------> ...                         -> Linear -> tokens
    (each token + a learned modality embedding; spectral tokens + a learned bin-position embedding;
    ``series_levels`` n > 1: the positions of the series encoder's n − 1 levels above the
    bottleneck are tokens too, each level through its own Linear and + a learned level code)

    fusion: [K learned latent queries ; all tokens] -> fusion_blocks x Block (keys: real tokens
            of modalities with a visible position) -> the K query outputs = the shared latent
            z (B, K, latent_dim)  (``encoded``; ``latents(batch)["latent"]``)

    readout, per modality: [z ; learned queries, one per bottleneck position of the modality,
            + a learned code of the window's log time span (span_readout)]
            -> readout_blocks x Block -> query outputs -> LayerNorm -> Linear -> + the modality's own
            encoder bottleneck when any of it is visible -> that modality's bottleneck
    decoders: each modality's own decoder (transformer / UNet) from that bottleneck and its own
            encoder's skips (zeros for a modality hidden whole) -> reconstructed series (B, L), psd (B, F), acf (B, G), fstat (B, F);
            a spectral channel hidden whole instead: latent_head, a Linear from each normalised
            readout vector to the 2**levels bins under its position

Between modalities, information passes only through the fixed-size latent z; a modality's own
encoder reaches its own decoder through its skips and its bottleneck, as in its single-modality
model, so a visible modality never decodes worse for lack of room in z. For a modality hidden
whole the own bottleneck is left out and the skips are zeros (the series keeps its times, in the
rotary encodings): it is read from z alone, so modality dropout trains z to carry what one
modality says about another. (The skips an all-hidden input makes are row-constant features that
swamp the readout at every decoder level: with them, the PSD decoded from the series alone was the
same for every row, the training mean, and its gradient barely reached z.) The readout's
pre-norm blocks leave through a layer norm (no parameters) before ``token_out``, as z leaves the
fusion through ``norm``. A spectral channel hidden whole skips its UNet decoder: trained on
visible spectra, where the skips say everything, that decoder learns to pass nothing up from its
bottleneck (a run with zero skips still decoded the training mean for every row), so a linear
head reads it from the readout, whose gradient then reaches z directly.

The window's time span (last minus first real time; known from the times even when the series
is hidden) sets which bins of the fixed frequency and lag grids a window resolves. Without
``span_readout`` the decoders could learn it only from z, and training put it there: 96 % of the
pooled z's variance followed the span on the 3,000-curve mocks, so z's neighbours were windows of
equal span. With it, each readout query gets the span directly (an MLP of log1p(span)), so z
need not carry it. ``series_dims`` etc. equal a transformer run's settings: ``init_series``
starts the series branch from that run (``lcgen train multimodal --init runs/transformer/NAME``).

Padding: every encoder zeroes values outside ``valid`` (``masking.model_input``) and the
transformer masks padded keys, and tokens at padded positions, or of a modality with nothing
visible, are masked out of the fusion, so values at padded, invalid or hidden positions change
no output.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lcgen.errors import LcgenError
from lcgen.masking import MODALITIES, model_input, modality_keys
from lcgen.models.layers import check_dims
from lcgen.models.transformer import Block, TimeSeriesTransformer, TransformerConfig, key_padding_mask
from lcgen.models.unet import UNetAutoencoder, UNetConfig

SPECTRAL = MODALITIES[1:]


@dataclass
class MultimodalConfig:
    """Shared-latent model over a window's time series and its spectra (paired data)."""

    input_length: int = 512  # (int) time-series window length (points)
    freq_length: int = 256  # (int) bins of the PSD and F-statistic (the paired file's frequency grid)
    lag_length: int = 256  # (int) lags of the ACF (the paired file's lag grid)
    series_dims: list[int] = field(default_factory=lambda: [64, 128, 256, 512])  # (list[int]) transformer width per level
    series_blocks: int = 2  # (int) transformer blocks per level
    spectral_dims: list[int] = field(default_factory=lambda: [32, 64, 128, 256])  # (list[int]) UNet width per level (each channel)
    latent_tokens: int = 16  # (int) K: vectors in the shared latent
    latent_dim: int = 256  # (int) width of the latent vectors and of the fusion
    fusion_blocks: int = 2  # (int) blocks fusing the modality tokens into the latent
    readout_blocks: int = 1  # (int) blocks reading each modality's bottleneck out of the latent
    nhead: int = 4  # (int) attention heads (divides every series width and latent_dim)
    ff_mult: int = 4  # (int) feed-forward width / model width
    dropout: float = 0.1  # (float) dropout on the residual branches
    # (bool) give every readout the window's time span (a learned embedding of log1p(span in days)
    # added to its queries), so z need not carry it; false = the model before (runs saved without
    # the setting rebuild as false); every preset sets it true
    span_readout: bool = False
    # (int) the series encoder's deepest levels whose positions become fusion tokens: 1 = the
    # bottleneck only (the model before; runs saved without the setting rebuild as 1); 2 = also
    # the level above it (twice the positions), ... up to len(series_dims) + 1 (every level)
    series_levels: int = 1

    def __post_init__(self) -> None:
        check_dims("series_dims", self.series_dims)
        check_dims("spectral_dims", self.spectral_dims)
        for name in ("input_length", "freq_length", "lag_length", "latent_tokens", "latent_dim",
                     "fusion_blocks", "readout_blocks", "series_blocks", "nhead", "ff_mult"):
            if getattr(self, name) < 1:
                raise LcgenError(f"multimodal: {name}={getattr(self, name)} must be >= 1")
        if self.latent_dim % self.nhead:
            raise LcgenError(f"multimodal: nhead={self.nhead} must divide latent_dim={self.latent_dim}")
        if not 1 <= self.series_levels <= len(self.series_dims) + 1:
            raise LcgenError(f"multimodal: series_levels={self.series_levels} must be in [1, {len(self.series_dims) + 1}] "
                             f"(1: the series bottleneck; {len(self.series_dims) + 1}: every level of series_dims and the bottleneck)")
        self.series_config()  # checks the transformer settings now

    def series_config(self) -> TransformerConfig:
        return TransformerConfig(input_length=self.input_length, encoder_dims=list(self.series_dims),
                                 nhead=self.nhead, num_transformer_blocks=self.series_blocks,
                                 ff_mult=self.ff_mult, dropout=self.dropout)

    def spectral_config(self, name: str) -> UNetConfig:
        return UNetConfig(input_length=self.lag_length if name == "acf" else self.freq_length,
                          encoder_dims=list(self.spectral_dims))


def _tokens(length: int, levels: int) -> int:
    """Bottleneck positions of an encoder with ``levels`` halvings of ``length`` (padded up)."""
    return -(-length // 2 ** levels)


class MultimodalModel(nn.Module):
    """See the module docstring."""

    def __init__(self, config: MultimodalConfig):
        super().__init__()
        self.config = config
        D = config.latent_dim
        self.series = TimeSeriesTransformer(config.series_config())
        self.spectra = nn.ModuleDict({c: UNetAutoencoder(config.spectral_config(c)) for c in SPECTRAL})
        widths = {"series": config.series_dims[-1], **{c: config.spectral_dims[-1] for c in SPECTRAL}}
        self.n_tokens = {"series": _tokens(config.input_length, len(config.series_dims)),
                         **{c: _tokens(config.spectral_config(c).input_length, len(config.spectral_dims))
                            for c in SPECTRAL}}
        self.token_in = nn.ModuleDict({m: nn.Linear(widths[m], D) for m in MODALITIES})
        self.token_out = nn.ModuleDict({m: nn.Linear(D, widths[m]) for m in MODALITIES})
        self.modality = nn.Parameter(0.02 * torch.randn(len(MODALITIES), D))
        # spectral bins sit on a fixed grid: a learned embedding per bottleneck position
        self.position = nn.ParameterDict({c: nn.Parameter(0.02 * torch.randn(self.n_tokens[c], D)) for c in SPECTRAL})
        self.queries = nn.Parameter(0.02 * torch.randn(config.latent_tokens, D))
        self.readout_queries = nn.ParameterDict(
            {m: nn.Parameter(0.02 * torch.randn(self.n_tokens[m], D)) for m in MODALITIES})
        self.fusion = nn.ModuleList(Block(D, config.nhead, config.ff_mult, config.dropout)
                                    for _ in range(config.fusion_blocks))
        self.readout = nn.ModuleList(Block(D, config.nhead, config.ff_mult, config.dropout)
                                     for _ in range(config.readout_blocks))
        self.norm = nn.LayerNorm(D)
        # a spectral modality hidden whole: each readout vector -> the 2**levels bins under its position
        self.latent_head = nn.ModuleDict({c: nn.Linear(D, 2 ** self.spectra[c].levels) for c in SPECTRAL})
        # the window's time span -> a vector added to every readout query (span_readout)
        self.span_embed = (nn.Sequential(nn.Linear(1, D), nn.GELU(), nn.Linear(D, D))
                           if config.span_readout else None)
        # series_levels > 1: the levels above the bottleneck, deepest first (levels[-2], levels[-3], ...),
        # each a Linear to D and a learned level code; made last, so series_levels = 1 builds as before
        upper = [config.series_dims[-j] for j in range(1, config.series_levels)]
        self.series_level_in = nn.ModuleList(nn.Linear(w, D) for w in upper)
        self.series_level = nn.Parameter(0.02 * torch.randn(len(upper), D)) if upper else None

    def init_series(self, config: TransformerConfig, state_dict: dict[str, torch.Tensor]) -> None:
        """Start the series branch from a transformer run's weights (``lcgen train multimodal
        --init runs/transformer/NAME``): its config must be the branch's (:meth:`MultimodalConfig.
        series_config`), else a clear refusal naming the settings that differ."""
        mine = self.config.series_config()
        differ = [f"{f.name} {getattr(config, f.name)!r} (the series branch: {getattr(mine, f.name)!r})"
                  for f in dataclasses.fields(TransformerConfig) if getattr(config, f.name) != getattr(mine, f.name)]
        if differ:
            raise LcgenError("the transformer run's settings differ from the multimodal series branch's: "
                             + "; ".join(differ) + " (the branch: model.series_dims, series_blocks, nhead, ff_mult, "
                             "dropout; other transformer settings at their defaults)")
        self.series.load_state_dict(state_dict)

    # ----------------------------------------------------------------------------------------

    def _inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per modality: the model input (B, L_m, 2) and its visible positions (B, L_m)."""
        out = {}
        for m in MODALITIES:
            values_key, valid_key, hidden_key = modality_keys(m)
            values, valid = batch[values_key], batch[valid_key].bool()
            if values.shape[1] != (self.config.input_length if m == "series" else self.spectra[m].config.input_length):
                raise LcgenError(f"multimodal: {m} rows have {values.shape[1]} values, the model was built for "
                                 f"{self.config.input_length if m == 'series' else self.spectra[m].config.input_length}")
            hidden = batch.get(hidden_key)
            hidden = torch.zeros_like(valid) if hidden is None else hidden.bool()
            out[m] = (model_input(values, valid, hidden), valid & ~hidden)
        return out

    def encode(self, batch: dict[str, torch.Tensor]):
        """The shared latent z (B, K, latent_dim) and what the decoders need: per modality its
        encoder state (transformer: ``(levels, ropes, extra)``; UNet: its list of outputs)."""
        inputs = self._inputs(batch)
        states, tokens, keys = {}, [], []
        x, visible = inputs["series"]
        levels, ropes, extra = self.series.encode(x, batch["time"], batch["valid"])
        states["series"] = (levels, ropes, extra), visible.any(1)
        h, h_valid = levels[-1]  # (B, Ls, D_s), (B, Ls)
        tokens.append(self.token_in["series"](h) + self.modality[0])
        keys.append(h_valid & visible.any(1, keepdim=True))
        for j, linear in enumerate(self.series_level_in):  # series_levels > 1
            h, h_valid = levels[-2 - j]
            tokens.append(linear(h) + self.modality[0] + self.series_level[j])
            keys.append(h_valid & visible.any(1, keepdim=True))
        for j, c in enumerate(SPECTRAL, start=1):
            x, visible = inputs[c]
            unet = self.spectra[c]
            outs = unet.encode(x.transpose(1, 2))  # skips..., bottleneck (B, D_u, Lb)
            states[c] = outs, visible.any(1)
            h = outs[-1].transpose(1, 2)  # (B, Lb, D_u)
            tokens.append(self.token_in[c](h) + self.modality[j] + self.position[c])
            valid = batch[modality_keys(c)[1]].bool()  # a token is real if any bin under it is
            n, factor = h.shape[1], 2 ** unet.levels
            valid = nn.functional.pad(valid, (0, n * factor - valid.shape[1])).view(-1, n, factor).any(-1)
            keys.append(valid & visible.any(1, keepdim=True))
        B = x.shape[0]
        z = self.queries.expand(B, -1, -1)
        seq = torch.cat([z, *tokens], 1)  # (B, K + tokens, D)
        mask = key_padding_mask(torch.cat([torch.ones(B, z.shape[1], dtype=torch.bool, device=z.device), *keys], 1))
        for block in self.fusion:
            seq = block(seq, mask)
        return self.norm(seq[:, : z.shape[1]]), states

    def span_code(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The readouts' view of each window's time span, (B, latent_dim); None without
        ``span_readout``. The span is last minus first time of the real points (``valid``; hidden
        points count, since the series keeps its times when hidden), in days, as log1p(span)."""
        if self.span_embed is None:
            return None
        t, valid = batch["time"], batch["valid"].bool()
        t = t[..., 0] if t.dim() == 3 else t
        first = torch.where(valid, t, torch.inf).amin(1)
        last = torch.where(valid, t, -torch.inf).amax(1)
        span = torch.where(valid.any(1), last - first, 0.0)
        return self.span_embed(torch.log1p(span)[:, None].float())

    def read(self, z: torch.Tensor, m: str, span: torch.Tensor | None = None) -> torch.Tensor:
        """Modality ``m``'s readout of the latent z (B, K, D): its learned queries, one per
        bottleneck position (plus ``span``, :meth:`span_code` of the batch, when the model has
        ``span_readout``), after the readout blocks over [z ; queries], (B, n_tokens, D)."""
        if (span is None) != (self.span_embed is None):
            raise LcgenError("multimodal: read() needs the batch's span_code when (and only when) "
                             "the model has span_readout")
        q = (self.readout_queries[m] + self.modality[MODALITIES.index(m)]).expand(z.shape[0], -1, -1)
        if span is not None:
            q = q + span[:, None, :]
        seq = torch.cat([z, q], 1)
        for block in self.readout:
            seq = block(seq, None)
        # the blocks are pre-norm: their residual stream is normalised before it leaves (as z is)
        return F.layer_norm(seq[:, z.shape[1]:], seq.shape[-1:])

    def decode(self, z: torch.Tensor, states: dict, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every modality reconstructed from z (through its readout) and its own skips: the
        deepest level is the readout plus, when the modality has a visible position, its own
        encoder's bottleneck (so a visible modality decodes as its single-modality model does,
        with what the latent adds; a hidden one only from the latent)."""
        out = {}
        span = self.span_code(batch)
        for m in MODALITIES:
            read = self.read(z, m, span)  # (B, n_tokens, D)
            bottleneck = self.token_out[m](read)  # (B, n_tokens, width)
            state, seen = states[m]
            seen = seen[:, None, None]
            if m == "series":
                levels, ropes, extra = state
                bottleneck = bottleneck + torch.where(seen, levels[-1][0], 0.0)
                levels = [(torch.where(seen, h, 0.0), v) for h, v in levels]  # hidden whole: no skips
                result = self.series.decode(levels, ropes, extra, batch["values"].shape[1], bottleneck=bottleneck)
                out["reconstructed"] = result["reconstructed"][..., 0]
            else:
                *skips, own = state
                bottleneck = bottleneck.transpose(1, 2) + torch.where(seen, own, 0.0)
                length = batch[m].shape[1]
                result = self.spectra[m].decode(skips, bottleneck, length)["reconstructed"]
                direct = self.latent_head[m](read).flatten(1)[:, :length]  # (B, n_tokens * 2**levels) -> (B, F)
                out[f"reconstructed_{m}"] = torch.where(seen[:, 0], result, direct)
        return out

    def forward_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Paired batch dict (values, valid, time, psd, psd_valid, acf, ..., and each modality's
        hidden mask; missing masks hide nothing) -> ``reconstructed`` (B, L) (the series),
        ``reconstructed_psd`` (B, F), ``reconstructed_acf`` (B, G), ``reconstructed_fstat``
        (B, F) and ``encoded`` = the shared latent (B, K, latent_dim)."""
        z, states = self.encode(batch)
        return {**self.decode(z, states, batch), "encoded": z}

    def latents(self, batch: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{"latent": (z (B, K, latent_dim), valid (B, K) all True)}``: the shared latent of
        whatever the batch shows (``hidden`` masks optional, default nothing hidden)."""
        z, _ = self.encode(batch)
        return {"latent": (z, torch.ones(z.shape[:2], dtype=torch.bool, device=z.device))}
