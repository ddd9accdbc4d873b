"""Embeddings: a trained run's latent, pooled to one vector per row and per source light curve.

For every row of a data file the model eats (time-series windows for the transformer, one
spectral channel for the UNet and MLP), the model's latent at one level, ``h`` (L', D) with its
validity ``v`` (L',) (:meth:`latents` of every registered model), is pooled over the real
positions only:

    mean:     e = Σ_j v_j h_j / Σ_j v_j                                     (D)
    max:      e_d = max_{j: v_j} h_jd                                      (D)
    std:      e_d = (Σ_j v_j (h_jd − mean_d)² / Σ_j v_j)^½                 (D)
    spectrum: e_kd = |Σ_m (h_{j_m} d − mean_d) exp(−2πi k m / n)| / n,     (K·D, K = 4)
              k = 1..K: the amplitude of the latent sequence's k-th Fourier harmonic over its
              n real positions j_0 < .. < j_{n−1} (k cycles per window), a translation-invariant
              summary of periodic structure along the window
    flat:     e = (h_1, .., h_L')                                          (L'·D)
              every position's vector in order: only for a latent whose positions are all
              real and fixed in number, as the multimodal model's K shared-latent vectors (each
              the output of its own learned query, so which vector holds what is kept)

and any of them joined by ``+`` (concatenated in that order; ``meanmax`` is ``mean+max``).

Positions that are not real (padding) never enter, whatever they hold, so padding a window
further cannot change its vector. Nothing is hidden from the model (no mask), and dropout is off.
Per source light curve, the ``curve`` vector is the plain mean of its windows' vectors.

The ``embeddings`` HDF5 file (format ``embeddings``):

- ``window`` (N, D) float32: one vector per embedded row; ``row`` (N,) its row in the input
  file, ``source`` (N,) the light curve it came from (index into the raw file), ``start`` (N,)
  its first point in that curve (0 for spectra), ``curve_index`` (N,) its row of ``curve``;
- ``curve`` (M, D) float32: one vector per source light curve, ``curve_source`` (M,) (sorted);
- ``meta/`` (N rows, copied from the input) and ``curve_meta/`` (M rows: the first window's);
- attributes: the usual header (the :class:`EmbedConfig` as ``config``), and ``run_dir``,
  ``model_name``, ``preset``, ``checkpoint``, ``weights``, ``level``, ``pooling``, ``input``,
  ``input_format``, ``run_config`` (the run's training config, YAML).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Literal, Optional

import h5py
import numpy as np

from lcgen.errors import LcgenError
from lcgen.io import atomic_h5, config_yaml, open_checked, write_header

POOL_PARTS = ("mean", "max", "std", "spectrum", "flat")
POOLINGS = ("meanmax", "mean", "max", "std", "spectrum", "mean+max+std", "mean+max+spectrum", "flat")  # documented, measured
SPECTRUM_HARMONICS = 4
EMBEDDINGS_FILE = "embeddings.h5"


@dataclasses.dataclass
class EmbedConfig:
    """Settings of ``lcgen embed``."""

    checkpoint: Literal["best", "last"] = "best"  # (str) best.pt (lowest validation loss) or last.pt
    level: Optional[str] = "all"  # (str) latent level to pool: all (every level, concatenated; best measured), or one of level0.., bottleneck (mlp: latent); null = the model's bottleneck
    pooling: str = "meanmax"  # (str) over the real positions: mean, max, std, spectrum (Fourier amplitudes along the window), flat (every vector in order: the multimodal latent only), or several joined by + (meanmax = mean+max, the default)
    span: bool = False  # (bool) multimodal runs with span_readout: append the span code (the learned code of the window's log time span that every readout reads beside z; latent_dim numbers) to each window's pooled latent
    weights: Literal["trained", "random"] = "trained"  # (str) random: the same architecture freshly initialised (a control)
    seed: int = 0  # (int) initialisation seed of random weights
    batch_size: int = 256  # (int) rows per forward pass
    device: str = "cpu"  # (str) cpu, cuda, cuda:N or auto


@dataclasses.dataclass
class Embeddings:
    """What :func:`embed` returns and an ``embeddings`` file holds (see the module docstring)."""

    window: np.ndarray  # (N, D) float32
    curve: np.ndarray  # (M, D) float32
    row: np.ndarray  # (N,) int64, row of the input file
    source: np.ndarray  # (N,) int64, source light curve
    start: np.ndarray  # (N,) int64, first point of the window in its curve
    curve_index: np.ndarray  # (N,) int64, row of `curve` each window belongs to
    curve_source: np.ndarray  # (M,) int64
    meta: dict[str, np.ndarray]  # (N,) each
    curve_meta: dict[str, np.ndarray]  # (M,) each
    attrs: dict  # provenance: run_dir, model_name, level, pooling, input, ...


# --------------------------------------------------------------------------------------------
# Pooling


def pool_parts(how: str) -> list[str]:
    """The parts of a pooling name: ``'mean+max'`` -> ['mean', 'max']; ``meanmax`` is mean+max."""
    parts = ["mean", "max"] if how == "meanmax" else how.split("+")
    if not parts or any(p not in POOL_PARTS for p in parts) or len(set(parts)) < len(parts):
        raise LcgenError(f"unknown pooling '{how}'; choose one of {', '.join(POOL_PARTS)} or several joined "
                         f"by + (e.g. {', '.join(POOLINGS[:1] + POOLINGS[-2:])})")
    return parts


def pool(h, valid, how: str = "mean"):
    """Pool latents ``h`` (B, L', D) over the positions where ``valid`` (B, L') is True.

    Returns (B, D') float32 (D' = D per mean, max or std part, K·D for spectrum, L'·D for flat;
    see the module docstring), computed in float64 so that the result does not depend on how many invalid
    positions the row has (summing extra zeros in another order changes float32 sums in the
    last bit). A row with no valid position gives zeros.
    """
    import torch

    parts = pool_parts(how)
    valid = valid.bool()
    v = valid[..., None]  # (B, L', 1)
    h = torch.where(v, h.double(), 0.0)  # whatever padding holds (NaN too) never enters
    count = v.sum(1).clamp(min=1)  # (B, 1)
    mean = h.sum(1) / count
    out = []
    for part in parts:
        if part == "mean":
            out.append(mean)
        elif part == "max":
            top = torch.where(v, h, -torch.inf).amax(1)
            out.append(torch.where(v.any(1), top, 0.0))
        elif part == "flat":
            if not valid.all():
                raise LcgenError("pooling 'flat' needs a latent whose positions are all real (the multimodal "
                                 "shared latent); this level has padding or a varying length: use mean, max, std or spectrum")
            out.append(h.flatten(1))
        elif part == "std":
            out.append((torch.where(v, h - mean[:, None], 0.0) ** 2).sum(1).div(count).sqrt())
        else:  # spectrum: Fourier amplitudes over the real positions, in their order
            x = torch.where(v, h - mean[:, None], 0.0)
            m = (torch.cumsum(valid, 1) - 1).double()  # index among the row's real positions
            for k in range(1, SPECTRUM_HARMONICS + 1):
                phase = torch.where(valid, 2 * torch.pi * k * m / count, 0.0)[..., None]
                re, im = (x * phase.cos()).sum(1), (x * phase.sin()).sum(1)
                out.append(torch.sqrt(re ** 2 + im ** 2) / count)
    return torch.cat(out, dim=-1).float()


def pooled_latent(model, batch: dict, level: str, how: str = "mean", span: bool = False):
    """One (B, D) vector per row of ``batch``: ``model.latents(batch)[level]`` pooled by ``how``;
    ``level='all'`` concatenates every level's pooled vector. ``span``: the multimodal model's
    :meth:`span_code` of each row (B, latent_dim) follows, as float32 (what every readout of the
    shared latent is given beside it; a function of the row's real times only)."""
    import torch

    code = getattr(model, "span_code", None) if span else None
    if span and (code is None or model.span_embed is None):
        raise LcgenError("span: only a multimodal run with span_readout has a span code "
                         f"({type(model).__name__}{' without span_readout' if code is not None else ''})")
    levels = model.latents(batch)
    names = list(levels) if level == "all" else [level]
    for name in names:
        if name not in levels:
            raise LcgenError(f"{type(model).__name__} has no latent level '{name}'; "
                             f"choose one of {', '.join(levels)} or all")
    parts = [pool(*levels[name], how) for name in names]
    if span:
        parts.append(code(batch).float())
    return torch.cat(parts, dim=-1)


def curve_means(window: np.ndarray, source: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of the window vectors of each source curve.

    Returns ``(curve (M, D) float32, curve_source (M,) sorted, curve_index (N,))`` with
    ``curve[curve_index[i]]`` the curve of window i; sums in float64.
    """
    curve_source, curve_index = np.unique(source, return_inverse=True)
    sums = np.zeros((curve_source.size, window.shape[1]), np.float64)
    np.add.at(sums, curve_index, window.astype(np.float64))
    counts = np.bincount(curve_index, minlength=curve_source.size)
    return (sums / counts[:, None]).astype(np.float32), curve_source.astype(np.int64), curve_index.astype(np.int64)


# --------------------------------------------------------------------------------------------
# Embedding a file


def load_model(run_dir: str | Path, cfg: EmbedConfig):
    """The run's model (eval mode) with trained weights, or freshly initialised ones from
    ``cfg.seed`` (``weights='random'``); and its training config."""
    import torch

    from lcgen.config import config_from_dict
    from lcgen.models import get_spec
    from lcgen.train.trainer import load_checkpoint, load_run, resolve_device, TrainConfig

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LcgenError(f"run directory {run_dir} does not exist; train one with `lcgen train MODEL`")
    device = resolve_device(cfg.device)
    if cfg.weights == "trained":
        return load_run(run_dir, which=cfg.checkpoint, device=device)
    if cfg.weights != "random":
        raise LcgenError(f"weights must be 'trained' or 'random', got '{cfg.weights}'")
    path = run_dir / f"{cfg.checkpoint}.pt"
    if not path.is_file():
        path = run_dir / "last.pt"
    ckpt = load_checkpoint(path)
    spec = get_spec(ckpt["model_name"])
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left alone
        torch.manual_seed(cfg.seed)
        model = spec.cls(config_from_dict(spec.config_cls, ckpt["model_config"]))
    return model.to(device).eval(), config_from_dict(TrainConfig, ckpt["train_config"])


def open_input(path: str | Path, kind: str, channel: str, run_dir: Path):
    """The row source of ``path`` for a model of ``kind``; a raw or wrong-kind file fails saying
    which command makes the right one."""
    from lcgen.train.data import open_source

    with open_checked(path) as f:
        found = f.attrs.get("format")
        found = found.decode() if isinstance(found, bytes) else found
    expected = "timeseries" if kind == "paired" else kind  # paired: time series with per-window spectra
    if found != expected:
        make = {"timeseries": f"`lcgen convert --input {path}` (with the --max-length the run was trained on)",
                "paired": f"`lcgen convert --spectra --input {path}` (with the run's window and grid settings)",
                "spectra": f"`lcgen preprocess --input {path}` (with the run's grid settings)"}[kind]
        raise LcgenError(f"{path} is a '{found}' file, but the model of {run_dir} eats '{expected}' files; "
                         f"make one with {make} and embed that")
    return open_source(path, kind, channel)


def embed(run_dir: str | Path, input: str | Path | None = None, cfg: EmbedConfig | None = None, *,
          progress: Callable[[int], None] | None = None) -> Embeddings:
    """Embed every usable row of ``input`` (default: the run's own data file) with the run's
    model; returns the arrays of an ``embeddings`` file without writing it. ``progress(n)`` is
    called after each batch with its row count."""
    import torch

    from lcgen.train.data import iter_batches, read_rows
    from lcgen.models import get_spec

    cfg = cfg or EmbedConfig()
    if cfg.batch_size < 1:
        raise LcgenError(f"batch_size must be >= 1, got {cfg.batch_size}")
    pool_parts(cfg.pooling)  # fails early on an unknown pooling
    run_dir = Path(run_dir)
    model, tcfg = load_model(run_dir, cfg)
    spec = get_spec(tcfg.model_name)
    level = cfg.level or spec.latent
    input = Path(input if input is not None else tcfg.data)
    device = next(model.parameters()).device
    began = time.perf_counter()
    with open_input(input, spec.data, tcfg.channel, run_dir) as source:
        if source.length != _trained_length(model):
            raise LcgenError(f"{input} has rows of {source.length} points but {run_dir} was trained on "
                             f"{_trained_length(model)}; make the file with the run's settings")
        if spec.data == "paired" and Path(tcfg.data).exists():  # the spectra on the run's grids
            from lcgen.io import check_same_grids

            check_same_grids(input, tcfg.data, str(run_dir))
        rows = np.asarray(source.usable, np.int64)
        if rows.size == 0:
            raise LcgenError(f"{input} has no usable rows to embed")
        parts = []
        with torch.no_grad():
            for batch in iter_batches(source, rows, cfg.batch_size):
                batch = {k: v.to(device) for k, v in batch.items()}
                parts.append(pooled_latent(model, batch, level, cfg.pooling, cfg.span).cpu().numpy())
                if progress is not None:
                    progress(len(batch["index"]))
        window = np.concatenate(parts)
        f = source.f
        source_ids = read_rows(f["source"], rows).astype(np.int64) if "source" in f else rows.copy()
        start = read_rows(f["start"], rows).astype(np.int64) if "start" in f else np.zeros_like(rows)
        meta = {}
        for key, ds in f.get("meta", {}).items():
            if ds.shape == (source.n_rows,):
                values = read_rows(ds, rows)
                meta[key] = np.asarray(values.astype(str) if h5py.check_string_dtype(ds.dtype) else values)
    curve, curve_source, curve_index = curve_means(window, source_ids)
    first = np.unique(curve_index, return_index=True)[1]  # first window of each curve
    attrs = {"run_dir": str(run_dir.resolve()), "model_name": tcfg.model_name, "preset": tcfg.preset,
             "checkpoint": cfg.checkpoint, "weights": cfg.weights, "level": level,
             "pooling": cfg.pooling, "span": cfg.span, "input": str(input), "input_format": spec.data,
             "run_config": config_yaml(tcfg), "seconds": time.perf_counter() - began,
             "config": config_yaml(cfg)}
    return Embeddings(window=window, curve=curve, row=rows, source=source_ids, start=start,
                      curve_index=curve_index, curve_source=curve_source, meta=meta,
                      curve_meta={k: v[first] for k, v in meta.items()}, attrs=attrs)


def count_rows(run_dir: str | Path, input: str | Path | None = None) -> int:
    """How many rows :func:`embed` will embed (for a progress bar), from the run's config alone."""
    from lcgen.config import config_from_dict, load_yaml
    from lcgen.models import get_spec
    from lcgen.train.trainer import TrainConfig

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise LcgenError(f"{path} does not exist; is {run_dir} an lcgen run directory?")
    tcfg = config_from_dict(TrainConfig, load_yaml(path))
    with open_input(input if input is not None else tcfg.data, get_spec(tcfg.model_name).data,
                    tcfg.channel, Path(run_dir)) as source:
        return int(len(source.usable))


def _trained_length(model) -> int:
    """Row length the model was built for (time series: input_length; spectra: input_length)."""
    return int(model.config.input_length)


# --------------------------------------------------------------------------------------------
# The embeddings file


def write_embeddings(path: str | Path, emb: Embeddings) -> Path:
    """Write ``emb`` as an ``embeddings`` file, atomically."""
    path = Path(path)
    with atomic_h5(path) as f:
        write_header(f, "embeddings", {})
        for key in ("window", "curve"):
            f.create_dataset(key, data=getattr(emb, key).astype(np.float32))
        for key in ("row", "source", "start", "curve_index", "curve_source"):
            f.create_dataset(key, data=getattr(emb, key).astype(np.int64))
        for group, columns in (("meta", emb.meta), ("curve_meta", emb.curve_meta)):
            g = f.create_group(group)
            for key, values in columns.items():
                if values.dtype.kind in "USO":
                    g.create_dataset(key, data=values.astype(object), dtype=h5py.string_dtype())
                else:
                    g.create_dataset(key, data=values)
        for key, value in emb.attrs.items():  # provenance, and the EmbedConfig as `config`
            f.attrs[key] = value
    return path


def read_embeddings(path: str | Path) -> Embeddings:
    """Read an ``embeddings`` file back into :class:`Embeddings`."""
    with open_checked(path, "embeddings", ("window", "curve", "source", "curve_source", "curve_index")) as f:
        def columns(group: str) -> dict[str, np.ndarray]:
            return {k: np.asarray(ds.asstr()[:] if h5py.check_string_dtype(ds.dtype) else ds[:])
                    for k, ds in f.get(group, {}).items()}

        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        return Embeddings(window=f["window"][:], curve=f["curve"][:], row=f["row"][:],
                          source=f["source"][:], start=f["start"][:], curve_index=f["curve_index"][:],
                          curve_source=f["curve_source"][:], meta=columns("meta"),
                          curve_meta=columns("curve_meta"), attrs=attrs)
