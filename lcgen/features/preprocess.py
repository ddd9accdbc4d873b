"""Raw light curves → multitaper spectral features on one shared grid (``lcgen preprocess``).

Per curve (:func:`analyse_curve`; a chunk's curves go 32 at a time through :func:`analyse_curves`,
which shares the per-frequency work of their spectra and gives the same numbers):

1. clean: drop non-finite points, sort, merge duplicate times (:func:`lcgen.features.convert.clean_curve`),
   drop points further than ``outlier_iqr`` × IQR from the median, then scale
   x = (flux − median) / IQR (median and IQR of the kept points, stored per row);
2. spectra in ONE set of frequency bins shared by every curve (1024 log-spaced bins by default,
   from 1/T of the longest curve to the highest Nyquist frequency of any curve, so every
   curve's band is covered); each curve is computed on a grid
   fine enough for it (at most 1/(4T) apart) and aggregated into the shared bins
   (:func:`lcgen.features.multitaper.binned_multitaper`): adaptive multitaper PSD averaged over the bin,
   harmonic F-statistic as the bin's largest F with its p-value corrected for the frequencies
   tried; the window-corrected ACF on ONE lag grid (days, lag 0 then log-spaced);
3. validity masks: frequency bins inside the curve's unbiased band [W, f_hi]
   (:func:`lcgen.features.multitaper.resolvable_band`: W = NW/T, f_hi the mean-cadence Nyquist, or W
   below the true Nyquist of exactly regular data) (``mask``; ``band_kept`` is the share of
   that band the shared grid covers), lags up to ``acf_max_fraction`` × T with enough pairs
   (``acf_mask``);
4. normalise each channel c ∈ {psd, acf, fstat} for the networks, as the original did (arcsinh
   then per-sample standardisation), over the valid bins only:

       z = (arcsinh(v / s) − μ) / σ,        v = s · sinh(σ z + μ)   (:func:`invert_normalisation`)

   with s = the median valid PSD for ``psd`` (makes the transform unit-free; log-like above the
   median, linear below) and s = 1 for ``acf`` and ``fstat``; s, μ, σ are stored per row as
   ``{c}_scale``, ``{c}_mean``, ``{c}_std``. Invalid bins hold 0.

A curve that cannot be analysed (too few points, constant flux, no valid bin, any error) is
recorded with ``failed = True`` and its ``fail_reason``; its feature rows are NaN and its masks
all False, never a silent row of zeros. The run never stops for one bad curve.

Work is split into chunks of ``chunk_size`` curves processed by ``workers`` processes (this one
and ``workers`` − 1 started ones; finufft single-threaded inside each), written as they finish to
``OUTPUT.partial`` together with a record of finished chunks; a rerun after a kill continues from
there (if the config is unchanged) and the result equals an uninterrupted run, because every
curve is processed independently on grids fixed by the whole input. ``shard = "I/N"`` processes the I-th of N slices of the catalogue into
``OUTPUT`` with ``.shard-I-of-N`` before the suffix; :func:`merge_shards` joins them.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import hashlib
import os
import re
import time
from pathlib import Path
from typing import Callable, Iterator, Literal, Optional

import h5py
import numpy as np

from lcgen.config import config_to_dict
from lcgen.features.convert import MAX_BASELINE_DAYS, clean_curve
from lcgen.errors import LcgenError
from lcgen.errors import Interrupted
from lcgen.io import (DEFAULT_RAW, DEFAULT_SPECTRA, RAW_KEYS, atomic_h5, atomic_path, check_memory, discard_h5,
                      open_checked, open_h5_for_writing, quiet_hdf5_deallocs, raw_offsets, read_config, sync_h5,
                      write_error, write_header)
from lcgen.workers import check_workers, deferred_interrupt, keep_freed_memory, process_pool, result, start_method
from lcgen.features.multitaper import (DPSS_CACHE_BYTES, autocorrelation, bin_edges, binned_multitaper,
                                       binned_multitaper_many, default_k, is_regular, REGULAR_RTOL, resolvable_band,
                                       taper_cache_keys, warm_taper_caches)

CHANNELS = ("psd", "acf", "fstat")
COUNT_COLUMNS = ("n_nonfinite", "n_duplicates", "n_outliers")


@dataclasses.dataclass
class PreprocessConfig:
    input: str = DEFAULT_RAW  # (str) raw light-curve file (lcgen generate output)
    output: str = DEFAULT_SPECTRA  # (str) spectral-feature file to write
    workers: Optional[int] = None  # (int) worker processes; null = all cores
    chunk_size: int = 256  # (int) curves per chunk: the unit of work, of writing and of resuming
    resume: bool = True  # (bool) continue an interrupted run from OUTPUT.partial when the config matches
    shard: Optional[str] = None  # (str) "I/N": process only the I-th of N slices (0-based), e.g. "0/4"
    n_freq: int = 1024  # (int) bins of the frequency grid shared by all curves
    freq_spacing: Literal["log", "linear"] = "log"  # (str) spacing of the frequency grid
    freq_min: Optional[float] = None  # (float) lowest frequency, cycles/day; null = 1 / longest baseline
    freq_max: Optional[float] = None  # (float) highest frequency; null = the highest mean-cadence Nyquist N/(2T) of any curve
    n_lags: int = 1024  # (int) lags of the ACF grid shared by all curves (lag 0, then log-spaced)
    lag_min: Optional[float] = None  # (float) first non-zero lag, days; null = median mean cadence T/N
    lag_max: Optional[float] = None  # (float) last lag, days; null = acf_max_fraction × longest baseline
    acf_max_fraction: float = 0.75  # (float) a curve's ACF counts as valid up to this fraction of its baseline
    nw: float = 4.0  # (float) time-bandwidth product NW of the DPSS tapers
    k: Optional[int] = None  # (int) number of tapers; null = 2NW − 1
    adaptive: bool = True  # (bool) Thomson's adaptive weighting of the eigenspectra
    outlier_iqr: float = 5.0  # (float) drop points more than this many IQRs from the median; 0 = keep all
    min_points: int = 32  # (int) curves with fewer clean points are recorded as failed
    min_valid_bins: int = 16  # (int) curves with fewer valid frequency bins are recorded as failed


@dataclasses.dataclass(frozen=True)
class Grids:
    """The frequency (cycles/day) and lag (days) grids shared by every curve of a run."""

    frequency: np.ndarray  # (n_freq,) bin centres
    lag: np.ndarray  # (n_lags,)
    edges: np.ndarray  # (n_freq + 1,) bin edges (stored as the ``edges`` attribute of ``frequency``)


# --------------------------------------------------------------------------------------------
# Normalisation


def normalise(values: np.ndarray, valid: np.ndarray, scale: float) -> tuple[np.ndarray, float, float]:
    """z = (arcsinh(v/s) − μ)/σ with μ, σ the mean and std over the valid bins; 0 elsewhere.

    Returns (z, μ, σ); σ falls back to 1 when the valid values are all equal. One row of
    :func:`normalise_rows`.
    """
    z, mean, std = normalise_rows(values[None], valid[None], np.array([scale], dtype=np.float64))
    return z[0], float(mean[0]), float(std[0])


def normalise_rows(values: np.ndarray, valid: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`normalise` of every row of ``values`` (B, L) with its own mask (B, L) and scale (B,)
    at once: (z (B, L), μ (B,), σ (B,)). μ and σ² are means over the valid bins (σ² of the
    deviations from μ, numpy's ``std``)."""
    a = np.arcsinh(values / scale[:, None])
    count = valid.sum(axis=1)
    mean = np.where(valid, a, 0.0).sum(axis=1) / count
    dev = np.where(valid, a - mean[:, None], 0.0)
    std = np.sqrt((dev * dev).sum(axis=1) / count)
    std = np.where(std > 0, std, 1.0)
    return dev / std[:, None], mean, std


def invert_normalisation(z, scale, mean, std) -> np.ndarray:
    """Undo :func:`normalise`: v = s · sinh(σ z + μ). Broadcasts, so rows of a (N, L) array take
    (N, 1) constants: ``invert_normalisation(f["psd"][:], f["psd_scale"][:, None], ...)``."""
    z = np.asarray(z, dtype=np.float64)
    return np.asarray(scale) * np.sinh(np.asarray(std) * z + np.asarray(mean))


def physical_features(path: str | Path, channel: str, rows=slice(None)) -> np.ndarray:
    """Read one channel of a spectra file back in physical units (NaN at invalid bins)."""
    if channel not in CHANNELS:
        raise LcgenError(f"unknown channel {channel!r}; choose one of {', '.join(CHANNELS)}")
    with open_checked(path, "spectra", (channel, f"{channel}_scale", "mask", "acf_mask")) as f:
        z = f[channel][rows]
        consts = [f[f"{channel}_{c}"][rows][..., None] for c in ("scale", "mean", "std")]
        valid = f["acf_mask" if channel == "acf" else "mask"][rows]
    out = invert_normalisation(z, *consts)
    return np.where(valid, out, np.nan)


# --------------------------------------------------------------------------------------------
# One curve


def analyse_curve(t: np.ndarray, flux: np.ndarray, flux_err: np.ndarray, grids: Grids,
                  cfg: PreprocessConfig) -> dict:
    """Clean one light curve and compute its normalised features on the shared grids.

    Returns a dict of the row's values (see the module docstring); raises :class:`LcgenError`
    with the reason when the curve cannot be analysed (the caller records it as failed).
    :func:`analyse_curves` gives the same rows for many curves, faster.
    """
    row, t, x, fmask = _prepare_curve(t, flux, flux_err, grids, cfg)
    spec = binned_multitaper(t, x, grids.frequency, grids.edges, nw=cfg.nw, k=cfg.k, adaptive=cfg.adaptive)
    return _finish_curve(row, t, x, fmask, spec, grids, cfg)


BATCH_CURVES = 32  # curves whose spectra are computed together (binned_multitaper_many) ...
BATCH_POINTS = 32_768  # ... and at most this many points between them (the batch's arrays grow with ~2 bins a point)


def analyse_curves(curves, grids: Grids, cfg: PreprocessConfig) -> list[tuple[dict, str]]:
    """:func:`analyse_curve` of each ``(t, flux, flux_err)`` of ``curves``, with the spectra of
    up to ``BATCH_CURVES`` curves (of ``BATCH_POINTS`` points in all, or one longer curve) at a
    time computed together (:func:`binned_multitaper_many`; the same numbers). Returns (row, fail
    reason) per curve: the reason is "" for an analysed curve; a failed one keeps the cleaning
    counts gathered before it failed, as in :func:`process_chunk`. Sets this process's allocator
    to keep freed memory (:func:`lcgen.workers.keep_freed_memory`): the batches' temporaries
    would otherwise cost ~0.5 CPU-ms per curve in page faults on the project's machine."""
    keep_freed_memory()
    results: list = [None] * len(curves)
    ready = []  # (i, row, t, x, fmask) of the batch being gathered
    for i, curve in enumerate(curves):
        try:
            ready.append((i, *_prepare_curve(*curve, grids, cfg)))
        except Exception as exc:
            results[i] = _failure(exc)
        if ready and (len(ready) == BATCH_CURVES or sum(r[2].size for r in ready) >= BATCH_POINTS
                      or i == len(curves) - 1):
            _analyse_batch(ready, results, grids, cfg)
            ready = []
    return results


def _analyse_batch(ready: list, results: list, grids: Grids, cfg: PreprocessConfig) -> None:
    """The spectra, ACF and normalised channels of prepared curves ``ready`` ((i, row, t, x,
    valid bins) each), into ``results[i]``."""
    try:
        specs = binned_multitaper_many([(t, x) for _, _, t, x, _ in ready], grids.frequency, grids.edges,
                                       nw=cfg.nw, k=cfg.k, adaptive=cfg.adaptive)
    except Exception:  # an unexpected error in the shared part: find its curve one at a time
        specs = [_spectrum_or_error(t, x, grids, cfg) for _, _, t, x, _ in ready]
    finished, channels = [], []  # (i, row) of the curves that get this far, and their channels
    for (i, row, t, x, fmask), spec in zip(ready, specs):
        try:
            if isinstance(spec, Exception):
                raise spec
            channels.append(_channels(row, t, x, fmask, spec, grids, cfg))
            finished.append((i, row))
        except Exception as exc:
            results[i] = _failure(exc)
    if finished:
        for (i, _), row in zip(finished, _normalised([row for _, row in finished], channels)):
            results[i] = (row, "")


def _spectrum_or_error(t, x, grids: Grids, cfg: PreprocessConfig):
    """One curve's binned spectrum, or the exception it raised."""
    try:
        return binned_multitaper(t, x, grids.frequency, grids.edges, nw=cfg.nw, k=cfg.k, adaptive=cfg.adaptive)
    except Exception as exc:
        return exc


def _failure(exc: Exception) -> tuple[dict, str]:
    """(row, reason) of a curve that failed: a :class:`_Failed` keeps its counts and reason, any
    other error (one bad curve must never stop a catalogue run) is named with its type."""
    if isinstance(exc, _Failed):
        return exc.row, str(exc)
    return {}, f"{type(exc).__name__}: {exc}"


def _prepare_curve(t: np.ndarray, flux: np.ndarray, flux_err: np.ndarray, grids: Grids,
                   cfg: PreprocessConfig) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Cleaning, scaling and the checks before the spectra: (row so far, t, x, valid frequency bins)."""
    t, y, _, counts = clean_curve(np.asarray(t, np.float64), np.asarray(flux, np.float64),
                                  np.asarray(flux_err, np.float64))
    row = {"n_nonfinite": counts.non_finite, "n_duplicates": counts.duplicates_merged, "n_outliers": 0,
           "n_points": t.size}
    if t.size < cfg.min_points:
        raise _Failed(f"only {t.size} finite points (min_points = {cfg.min_points})", row)
    med, iqr = _median_iqr(y)
    if not iqr > 0:
        raise _Failed("flux has zero interquartile range (constant curve)", row)
    if cfg.outlier_iqr > 0:
        keep = np.abs(y - med) <= cfg.outlier_iqr * iqr
        row["n_outliers"] = int(keep.size - keep.sum())
        t, y = t[keep], y[keep]
        row["n_points"] = t.size
        if t.size < cfg.min_points:
            raise _Failed(f"only {t.size} points after outlier clipping (min_points = {cfg.min_points})", row)
        med, iqr = _median_iqr(y)
        if not iqr > 0:
            raise _Failed("flux has zero interquartile range after outlier clipping", row)
    x = (y - med) / iqr
    span = float(t[-1] - t[0])
    if span > MAX_BASELINE_DAYS:
        raise _Failed(f"times span {span:.3g} d, more than {MAX_BASELINE_DAYS:.0e} d (wrong units?)", row)
    w, f_hi, nyquist = resolvable_band(t, cfg.nw)
    freq = grids.frequency
    kept = (min(f_hi, freq[-1]) - max(w, freq[0])) / (f_hi - w) if f_hi > w else 0.0
    row.update(n_points=t.size, baseline=span, nyquist=nyquist, band_kept=float(np.clip(kept, 0.0, 1.0)),
               flux_median=med, flux_iqr=iqr)
    fmask = (freq >= w) & (freq <= f_hi)
    if fmask.sum() < cfg.min_valid_bins:
        raise _Failed(f"{int(fmask.sum())} grid frequencies inside the resolvable band [W, f_hi] = [{w:.4g}, "
                      f"{f_hi:.4g}] c/d (min_valid_bins = {cfg.min_valid_bins})", row)
    return row, t, x, fmask


def _finish_curve(row: dict, t: np.ndarray, x: np.ndarray, fmask: np.ndarray, spec, grids: Grids,
                  cfg: PreprocessConfig) -> dict:
    """The ACF and the normalised channels of a prepared curve with its binned spectrum ``spec``."""
    channels = _channels(row, t, x, fmask, spec, grids, cfg)
    return _normalised([row], [channels])[0]


def _channels(row: dict, t: np.ndarray, x: np.ndarray, fmask: np.ndarray, spec, grids: Grids,
              cfg: PreprocessConfig) -> dict:
    """The ACF, and each channel's (values, valid bins, scale) before normalisation."""
    lag, span = grids.lag, float(t[-1] - t[0])
    in_reach = lag <= cfg.acf_max_fraction * span
    acf = np.full(lag.size, np.nan)
    acf[in_reach] = autocorrelation(t, x, lag[in_reach], checked=True)  # t, x as binned_multitaper_many took them
    amask = np.isfinite(acf)
    if amask.sum() < 2:
        raise _Failed("the ACF has fewer than 2 supported lags", row)
    psd_scale = float(np.median(spec.psd[fmask]))
    if not psd_scale > 0:
        raise _Failed("the PSD is zero at every valid frequency", row)
    row.update(pvalue=spec.pvalue)
    return {"psd": (spec.psd, fmask, psd_scale), "acf": (np.where(amask, acf, 0.0), amask, 1.0),
            "fstat": (np.nan_to_num(spec.fstat, nan=0.0, posinf=1e30), fmask, 1.0)}


def _normalised(rows: list[dict], channels: list[dict]) -> list[dict]:
    """Each row completed with its channels normalised (:func:`normalise_rows`, all rows of a
    channel in one call) and its masks."""
    for name in CHANNELS:
        values, valid, scale = (np.stack(part) for part in zip(*(c[name] for c in channels)))
        z, mean, std = normalise_rows(values, valid, scale)
        for i, row in enumerate(rows):
            row.update({name: z[i], f"{name}_scale": float(scale[i]), f"{name}_mean": float(mean[i]),
                        f"{name}_std": float(std[i])})
    for row, c in zip(rows, channels):
        row.update(mask=c["psd"][1], acf_mask=c["acf"][1])
    return rows


class _Failed(LcgenError):
    """A curve that cannot be analysed; carries the cleaning counts gathered so far."""

    def __init__(self, reason: str, row: dict):
        super().__init__(reason)
        self.row = row


def _median_iqr(y: np.ndarray) -> tuple[float, float]:
    """Median and interquartile range: ``np.percentile(y, [25, 50, 75])``'s numbers (linear
    interpolation, the same rounding) from one sort, ~7× cheaper for a few hundred points."""
    s = np.sort(y)
    h = (s.size - 1) * np.array([0.25, 0.5, 0.75])
    lo = h.astype(np.intp)
    a, b, f = s[lo], s[np.minimum(lo + 1, s.size - 1)], h - lo
    q25, med, q75 = np.where(f >= 0.5, b - (b - a) * (1 - f), a + (b - a) * f)
    return float(med), float(q75 - q25)


# --------------------------------------------------------------------------------------------
# A chunk of curves (runs in the worker processes)


def _columns(n_freq: int, n_lags: int) -> dict[str, tuple[tuple[int, ...], str, object]]:
    """Per-row datasets: name → (shape after the row axis, dtype, fill value of a failed row)."""
    cols: dict[str, tuple[tuple[int, ...], str, object]] = {}
    for name in CHANNELS:
        cols[name] = ((n_lags if name == "acf" else n_freq,), "f4", np.nan)
        for const in ("scale", "mean", "std"):
            cols[f"{name}_{const}"] = ((), "f8", np.nan)
    cols.update({
        "pvalue": ((n_freq,), "f4", np.nan), "mask": ((n_freq,), "bool", False),
        "acf_mask": ((n_lags,), "bool", False), "failed": ((), "bool", True),
        "n_points": ((), "i4", 0), "baseline": ((), "f8", np.nan), "nyquist": ((), "f8", np.nan),
        "band_kept": ((), "f8", np.nan),
        "flux_median": ((), "f8", np.nan), "flux_iqr": ((), "f8", np.nan),
        "n_nonfinite": ((), "i4", 0), "n_duplicates": ((), "i4", 0), "n_outliers": ((), "i4", 0),
    })
    return cols


def process_chunk(path: str, start: int, stop: int, grids: Grids, cfg: PreprocessConfig) -> dict:
    """Analyse raw curves ``start:stop`` of ``path``; returns column arrays and fail reasons."""
    cols = _columns(grids.frequency.size, grids.lag.size)
    n = stop - start
    out = {name: np.full((n, *shape), fill, dtype=dtype) for name, (shape, dtype, fill) in cols.items()}
    reasons = [""] * n
    with h5py.File(path, "r") as f:
        offsets = f["offsets"][start: stop + 1].astype(np.int64)
        lo, hi = int(offsets[0]), int(offsets[-1])
        time_, flux, err = (f[key][lo:hi] for key in ("time", "flux", "flux_err"))
    offsets -= lo
    spans = [slice(offsets[i], offsets[i + 1]) for i in range(n)]
    for i, (row, reasons[i]) in enumerate(analyse_curves([(time_[s], flux[s], err[s]) for s in spans], grids, cfg)):
        if not reasons[i]:
            row["failed"] = False
        for name, value in row.items():
            out[name][i] = value
    out["fail_reason"] = np.array([_fit_reason(r) for r in reasons], dtype=object)
    return out


REASON_BYTES = 256  # fail_reason is stored fixed-length (UTF-8), so writing rows never grows the file


def _fit_reason(reason: str) -> str:
    return reason.encode()[:REASON_BYTES].decode(errors="ignore")


# --------------------------------------------------------------------------------------------
# The run


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """"I/N" → (I, N) with 0 ≤ I < N."""
    if shard in (None, ""):
        return None
    try:
        index, count = (int(p) for p in str(shard).split("/"))
    except ValueError:
        raise LcgenError(f"shard = {shard!r} must look like I/N, e.g. 0/4 (the first of 4 slices)") from None
    if not (count >= 1 and 0 <= index < count):
        raise LcgenError(f"shard = {shard!r}: need 0 ≤ I < N (slices are numbered from 0)")
    return index, count


def planned_rows(cfg: PreprocessConfig) -> int:
    """How many curves a run of ``cfg`` processes (its shard's share of the input)."""
    with open_checked(cfg.input, "raw", RAW_KEYS) as f:
        n_total = f["offsets"].shape[0] - 1
    shard = parse_shard(cfg.shard)
    if shard is None:
        return n_total
    return (shard[0] + 1) * n_total // shard[1] - shard[0] * n_total // shard[1]


def shard_path(output: str | Path, index: int, count: int) -> Path:
    """Where shard I of N is written: ``preprocessed.h5`` → ``preprocessed.shard-0-of-4.h5``."""
    output = Path(output)
    return output.with_name(f"{output.stem}.shard-{index}-of-{count}{output.suffix}")


def survey_input(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Baseline T (days) and number of finite points of every raw curve, read in blocks. A curve
    whose times span more than ``MAX_BASELINE_DAYS`` gets T = 0, so it cannot stretch the shared
    grid (it is recorded as failed on its own)."""
    with open_checked(path, "raw", RAW_KEYS) as f:
        offsets = raw_offsets(f)
        n = offsets.size - 1
        spans = np.zeros(n)
        counts = np.zeros(n, dtype=np.int64)
        block = 4096
        for a in range(0, n, block):
            b = min(n, a + block)
            t = f["time"][offsets[a]: offsets[b]]
            for i in range(a, b):
                ti = t[offsets[i] - offsets[a]: offsets[i + 1] - offsets[a]]
                ti = ti[np.isfinite(ti)]
                counts[i] = ti.size
                spans[i] = ti.max() - ti.min() if ti.size else 0.0
    spans[spans > MAX_BASELINE_DAYS] = 0.0  # absurd times: that curve fails alone, the grid ignores it
    return spans, counts


def make_grids(cfg: PreprocessConfig, spans: np.ndarray, counts: np.ndarray) -> Grids:
    """The shared frequency and lag grids: given bounds, else bounds chosen from the data."""
    ok = (spans > 0) & (counts >= max(2, cfg.min_points))  # curves that will be analysed
    if not ok.any():
        ok = (spans > 0) & (counts >= 2)
    if not ok.any() and None in (cfg.freq_min, cfg.freq_max, cfg.lag_min, cfg.lag_max):
        raise LcgenError(f"{cfg.input}: no curve has two distinct finite times, so no grid can be chosen")
    longest = float(spans[ok].max()) if ok.any() else np.nan
    # from the lowest frequency any curve reaches (1/T of the longest) to the highest Nyquist
    # frequency of any curve: every curve's band is covered, bins outside its own stay masked
    fmin = cfg.freq_min if cfg.freq_min is not None else 1.0 / longest
    fmax = cfg.freq_max if cfg.freq_max is not None else float(np.max(counts[ok] / (2 * spans[ok])))
    lmin = cfg.lag_min if cfg.lag_min is not None else float(np.median(spans[ok] / counts[ok]))
    lmax = cfg.lag_max if cfg.lag_max is not None else cfg.acf_max_fraction * longest
    if cfg.n_freq < 2 or cfg.n_lags < 3:
        raise LcgenError(f"n_freq = {cfg.n_freq} and n_lags = {cfg.n_lags} must be at least 2 and 3")
    if not 0 < fmin < fmax:
        raise LcgenError(f"frequency range [{fmin:g}, {fmax:g}] c/d is empty; set freq_min < freq_max, both > 0")
    if not 0 < lmin < lmax:
        raise LcgenError(f"lag range [{lmin:g}, {lmax:g}] d is empty; set lag_min < lag_max, both > 0")
    space = np.geomspace if cfg.freq_spacing == "log" else np.linspace
    frequency = space(fmin, fmax, cfg.n_freq)
    lag = np.concatenate([[0.0], np.geomspace(lmin, lmax, cfg.n_lags - 1)])
    return Grids(frequency=frequency, lag=lag, edges=bin_edges(frequency, log=cfg.freq_spacing == "log"))


def _run_hash(cfg: PreprocessConfig, input_id: str) -> str:
    """What must match for a partial file to be resumed: every setting that changes the output."""
    settings = config_to_dict(cfg)
    for key in ("workers", "resume", "output"):
        settings.pop(key)
    return hashlib.sha256(f"{settings!r}|{input_id}".encode()).hexdigest()[:16]


def _input_id(path: str) -> str:
    stat = os.stat(path)
    with open_checked(path, "raw") as f:
        created = f.attrs.get("created", "")
    return f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{created}"


def preprocess(cfg: PreprocessConfig, *, progress: Callable[[int], None] | None = None) -> dict:
    """Run ``cfg`` (see the module docstring); returns a summary dict. ``progress(n)`` is called
    as chunks of n curves finish.

    ``OUTPUT.partial`` is locked for the whole run (a second run on the same output is refused).
    A chunk counts as done only once its rows are on disk (flushed and fsynced before its mark);
    a rerun checks the rows of every done chunk and redoes any that are not whole, and the file
    is renamed only after every row was checked to be analysed or recorded as failed. After
    Ctrl-C or a write failure the partial file is kept when it holds finished chunks, and the
    error says how many; rerunning the same command continues from them.

    With more than one worker the pool's processes are forked where that is safe (Linux, torch not
    loaded; they open the input themselves and never touch the output the parent holds open),
    else spawned (:func:`lcgen.workers.process_pool`).
    """
    started = time.perf_counter()
    check_config(cfg)
    shard = parse_shard(cfg.shard)
    workers = check_workers(cfg.workers)
    out = Path(cfg.output) if shard is None else shard_path(cfg.output, *shard)
    kept = [0]  # finished chunks on disk, for the error path
    with atomic_path(out, inputs=[cfg.input], keep_partial=lambda: kept[0] > 0) as tmp, quiet_hdf5_deallocs(), \
            deferred_interrupt() as check_interrupt:
        spans, counts = survey_input(cfg.input)
        grids = make_grids(cfg, spans, counts)
        n_total = spans.size
        first, last = (0, n_total) if shard is None else (shard[0] * n_total // shard[1], (shard[0] + 1) * n_total // shard[1])
        n = last - first
        if n == 0:
            raise LcgenError(f"{cfg.input} holds no curves{' in shard ' + cfg.shard if shard else ''}")
        run_hash = _run_hash(cfg, _input_id(cfg.input))
        chunks = [(a, min(n, a + cfg.chunk_size)) for a in range(0, n, cfg.chunk_size)]
        f, done = _open_partial(tmp, cfg, grids, n, chunks, run_hash, first)
        resumed = int(done.sum())
        kept[0] = resumed
        # Datasets held open for the whole run (see lcgen.io.RawWriter._new).
        columns = {name: f[name] for name in (*_columns(1, 1), "fail_reason", "chunk_done")}
        try:
            todo = [c for c in range(len(chunks)) if not done[c]]
            if progress is not None and resumed:
                progress(sum(chunks[c][1] - chunks[c][0] for c in range(len(chunks)) if done[c]))
            for c, computed in _map_chunks(cfg, grids, first, [chunks[c] for c in todo], todo, workers):
                a, b = chunks[c]
                for name, values in computed.items():
                    columns[name][a:b] = values
                sync_h5(f)  # the rows are on disk before the chunk is marked done
                columns["chunk_done"][c] = True
                sync_h5(f)
                kept[0] += 1
                if progress is not None:
                    progress(b - a)
                check_interrupt()  # Ctrl-C stops here, between chunks (a second one at once)
            summary = _summarise(f)
            for key, value in summary.items():
                f.attrs[key] = value
            del f["chunk_done"]
            sync_h5(f)
            f.close()
        except BaseException as exc:
            discard_h5(f)  # done chunks are on disk already; after a failed write HDF5 cannot close normally
            what = f"{kept[0]} of {len(chunks)} chunks kept in {tmp}"
            if isinstance(exc, KeyboardInterrupt):
                raise Interrupted(f"{what}; rerun the same command to continue" if kept[0] else
                                  "no chunk finished; nothing kept") from None
            error = write_error(exc, out)
            if error is not None and kept[0]:
                raise LcgenError(f"{error}; {what}: free space and rerun the same command to continue") from None
            raise
        kept[0] = 0  # a file that fails the check below is not worth resuming
        check_rows(tmp)
    elapsed = time.perf_counter() - started
    return {"output": str(out), "curves": n, "first_row": first, "resumed_chunks": resumed,
            "chunks": len(chunks), "seconds": elapsed, "curves_per_second": n / elapsed,
            "freq_range": (float(grids.frequency[0]), float(grids.frequency[-1])),
            "lag_range": (float(grids.lag[1]), float(grids.lag[-1])), "workers": workers,
            **summary, "fail_reasons": _fail_reasons(out)}


def bad_rows(f: h5py.File, a: int, b: int) -> np.ndarray:
    """Rows ``a:b`` (relative) of a spectra file that are neither analysed nor recorded as
    failed: a failed row needs its ``fail_reason``; an analysed row finite normalisation
    constants, at least one valid bin and finite values at its valid bins."""
    failed = f["failed"][a:b]
    reason = f["fail_reason"].asstr()[a:b]
    bad = failed & (np.char.str_len(reason.astype(str)) == 0)
    ok = ~failed
    mask, acf_mask = f["mask"][a:b], f["acf_mask"][a:b]
    ok &= mask.any(1) & acf_mask.any(1)
    for name in CHANNELS:
        for const in ("scale", "mean", "std"):
            ok &= np.isfinite(f[f"{name}_{const}"][a:b])
        valid = acf_mask if name == "acf" else mask
        ok &= np.all(np.isfinite(f[name][a:b]) | ~valid, axis=1)
    return bad | (~failed & ~ok)


def check_rows(path: str | Path) -> None:
    """Refuse a spectra file with any row neither analysed nor recorded as failed (read back from
    disk, in blocks)."""
    with h5py.File(path, "r", locking=False) as f:
        n = f["failed"].shape[0]
        bad = np.concatenate([bad_rows(f, a, min(n, a + 4096)) for a in range(0, n, 4096)] or [np.zeros(0, bool)])
    if bad.any():
        rows = np.flatnonzero(bad)
        raise LcgenError(f"{path}: {rows.size} rows (first {rows[0]}) are neither analysed nor recorded as "
                         f"failed; the file is not kept, rerun to recompute it")


def check_config(cfg: PreprocessConfig) -> None:
    """Raise :class:`LcgenError` naming the first setting that cannot work."""
    if cfg.chunk_size < 1:
        raise LcgenError(f"chunk_size = {cfg.chunk_size} must be at least 1")
    if not 0 < cfg.acf_max_fraction <= 1:
        raise LcgenError(f"acf_max_fraction = {cfg.acf_max_fraction} must be in (0, 1]")
    if cfg.outlier_iqr < 0:
        raise LcgenError(f"outlier_iqr = {cfg.outlier_iqr} must be ≥ 0 (0 keeps every point)")
    if cfg.min_points < 9:
        raise LcgenError(f"min_points = {cfg.min_points} is below the multitaper minimum of 9")
    from lcgen.features.multitaper import check_series

    grid = np.linspace(0.0, 1.0, max(cfg.min_points, 9, int(4 * cfg.nw) + 1))
    check_series(grid, np.sin(grid), cfg.nw, cfg.k)  # nw/k errors now, not once per curve
    if cfg.n_freq < 2 or cfg.n_lags < 3:
        raise LcgenError(f"n_freq = {cfg.n_freq} and n_lags = {cfg.n_lags} must be at least 2 and 3")
    # Memory: up to 2 chunks of finished rows per worker in flight, and per worker one curve's
    # eigencoefficients (K tapers × n_freq, complex) with their float64 companions.
    workers = check_workers(cfg.workers)
    row_bytes = 13 * cfg.n_freq + 5 * cfg.n_lags + 128
    tapers = cfg.k or max(1, int(2 * cfg.nw) - 1)
    need = 2 * workers * cfg.chunk_size * row_bytes + workers * (48 * tapers + 80) * (cfg.n_freq + cfg.n_lags)
    check_memory(need, f"n_freq = {cfg.n_freq:,}, n_lags = {cfg.n_lags:,} with {workers} workers")


def _open_partial(tmp: Path, cfg: PreprocessConfig, grids: Grids, n: int, chunks: list[tuple[int, int]],
                  run_hash: str, first: int) -> tuple[h5py.File, np.ndarray]:
    """Reopen the partial file (locked by the caller) if it belongs to this exact run, else start
    it afresh. Returns the file and which chunks are done: those marked done whose rows pass
    :func:`bad_rows` (a chunk torn by a crash or a full disk is redone)."""
    if cfg.resume and tmp.stat().st_size > 0:
        try:
            f = open_h5_for_writing(tmp, "r+")
        except Exception:
            f = None  # killed mid-write beyond repair: start again
        if f is not None:
            try:
                if f.attrs.get("run_hash") == run_hash and f.get("chunk_done", np.zeros(0)).shape == (len(chunks),):
                    done = f["chunk_done"][:]
                    for c in np.flatnonzero(done):
                        if bad_rows(f, *chunks[c]).any():
                            done[c] = False
                            f["chunk_done"][c] = False
                    return f, done
            except Exception:
                pass
            discard_h5(f)
    f = open_h5_for_writing(tmp, "w")
    try:
        write_header(f, "spectra", cfg)
        f.attrs["run_hash"] = run_hash
        f.attrs["first_row"] = first
        f.create_dataset("frequency", data=grids.frequency)
        f.create_dataset("lag", data=grids.lag)
        f["frequency"].attrs["units"] = "cycles/day"
        f["frequency"].attrs["edges"] = grids.edges  # bin j spans [edges[j], edges[j + 1])
        f["lag"].attrs["units"] = "day"
        # Every row's space is allocated (and filled) now, so the file never grows while chunks
        # are written: a full disk shows here, before any work, and a partial file left by a
        # crash keeps consistent metadata.
        rows = min(64, n)
        for name, (shape, dtype, fill) in _columns(grids.frequency.size, grids.lag.size).items():
            f.create_dataset(name, shape=(n, *shape), dtype=dtype, fillvalue=fill,
                             chunks=(rows, *shape) if shape else None, **_preallocated())
        f.create_dataset("fail_reason", shape=(n,), dtype=h5py.string_dtype(length=REASON_BYTES),
                         **_preallocated())
        f.create_dataset("source", data=np.arange(first, first + n, dtype=np.int64))
        f.create_dataset("chunk_done", data=np.zeros(len(chunks), dtype=bool))
        _copy_meta(cfg.input, f, first, first + n)
        sync_h5(f)
    except BaseException:
        discard_h5(f)
        raise
    return f, np.zeros(len(chunks), dtype=bool)


def _preallocated() -> dict:
    """create_dataset options: allocate the whole dataset at creation and write its fill."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    return {"dcpl": dcpl, "fill_time": "alloc"}


def _copy_meta(path: str, f: h5py.File, first: int, last: int) -> None:
    """Per-row copies of the raw metadata (light-curve type, true parameters) for evaluation."""
    group = f.create_group("meta")
    with open_checked(path, "raw") as raw:
        for key, ds in raw.get("meta", {}).items():
            if h5py.check_string_dtype(ds.dtype):
                group.create_dataset(key, data=ds.asstr()[first:last].astype(object), dtype=h5py.string_dtype())
            else:
                group.create_dataset(key, data=ds[first:last])


def _map_chunks(cfg: PreprocessConfig, grids: Grids, first: int, spans: list[tuple[int, int]],
                ids: list[int], workers: int) -> Iterator[tuple[int, dict]]:
    """Yield (chunk id, result) as chunks finish, computed by ``workers`` processes: this one and
    a pool of ``workers − 1``.

    This process is one of the workers (it computes a chunk whenever none of the pool's is
    ready), so a run starts one process fewer: each started worker rebuilds its own taper and
    NUFFT-plan caches (~0.2 CPU-s on the default mix) and, when spawned rather than forked, pays
    its own imports (~0.7 CPU-s: numpy, scipy.linalg, h5py, finufft). The pool holds up to two
    chunks per process queued, so it never waits for this one.

    This process's BLAS is held to one thread meanwhile (the started workers hold one too, by the
    environment when spawned and by a call when forked, :func:`lcgen.workers.process_pool`): the
    spectra's matrices are small, and a BLAS
    that spreads them over busy cores was seen to take ~60 ms for one product of < 1 ms."""
    import scipy.linalg  # noqa: F401  (the tapers load it anyway; loaded first, its own BLAS is held too)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield from _chunks_computed(cfg, grids, first, spans, ids, workers)


def _chunks_computed(cfg: PreprocessConfig, grids: Grids, first: int, spans: list[tuple[int, int]],
                     ids: list[int], workers: int) -> Iterator[tuple[int, dict]]:
    """:func:`_map_chunks` without the thread limit."""
    if workers <= 1 or len(spans) <= 1:
        for c, (a, b) in zip(ids, spans):
            yield c, process_chunk(cfg.input, first + a, first + b, grids, cfg)
        return
    helpers = min(workers, len(spans)) - 1
    if start_method() == "fork":  # the workers inherit this process's caches: the tapers they share, built once
        warm_taper_caches(shared_tapers(cfg, first, spans), cfg.nw, cfg.k)
    with process_pool(helpers) as pool:
        pending: dict[cf.Future, int] = {}
        queue = list(zip(ids, spans))
        while queue or pending:
            while queue and len(pending) < 2 * helpers:  # bounded: results are big
                c, (a, b) = queue.pop(0)
                pending[pool.submit(process_chunk, cfg.input, first + a, first + b, grids, cfg)] = c
            for future in [f for f in pending if f.done()]:
                yield pending.pop(future), result(future)
            if queue:  # this process takes the last chunk in the queue; the pool takes from the front
                c, (a, b) = queue.pop()
                yield c, process_chunk(cfg.input, first + a, first + b, grids, cfg)
            elif pending:
                finished, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    yield pending.pop(future), result(future)


TAPER_SAMPLE = 8192  # curves whose raw times predict the tapers that forked workers share


def shared_tapers(cfg: PreprocessConfig, first: int, spans: list[tuple[int, int]]) -> list[tuple[int, bool]]:
    """The cached tapers (:func:`lcgen.features.multitaper.taper_cache_keys`) that at least two
    of the curves of ``spans`` (rows ``first + a : first + b``) will take, most used first, up to
    half of ``DPSS_CACHE_BYTES``; predicted from the raw times of up to ``TAPER_SAMPLE`` curves
    (the first of every span), finite and with duplicates merged as cleaning leaves them.
    Non-finite flux and outlier clipping can still change a curve's N; a wrong guess only builds
    tapers no curve takes.

    Why: each worker otherwise builds every taper its curves need, so two workers built those
    used in both halves twice (129 of 512 on 2,000 default curves, ~0.16 CPU-s: a third of what a
    second worker cost). Tapers used once are left to the curve's worker."""
    k = default_k(cfg.nw) if cfg.k is None else cfg.k
    per_span = -(-TAPER_SAMPLE // len(spans))
    uses: collections.Counter = collections.Counter()
    with open_checked(cfg.input, "raw", RAW_KEYS) as f:
        offsets = raw_offsets(f)
        for a, b in spans:
            a, b = first + a, min(first + b, first + a + per_span)
            for n, regular in _sampling(f["time"][offsets[a]: offsets[b]], offsets[a: b + 1] - offsets[a]):
                if n >= cfg.min_points:
                    uses.update(taper_cache_keys(n, regular))
    chosen, nbytes = [], 0
    for (n, regular), count in uses.most_common():
        nbytes += 8 * k * n * (1 if regular else 2)  # the DPSS; a bucket's spline as much again
        if count < 2 or nbytes > DPSS_CACHE_BYTES // 2:
            break
        chosen.append((n, regular))
    return chosen


def _sampling(t: np.ndarray, offsets: np.ndarray) -> list[tuple[int, bool]]:
    """(N, :func:`is_regular`) of each curve ``t[offsets[i]:offsets[i + 1]]`` once its times are
    finite, sorted and unique, as cleaning leaves them: in one pass over all the curves where
    their times already are (what the simulator writes), else curve by curve."""
    sizes = np.diff(offsets)
    if np.any(sizes < 2):  # (no curve has fewer points in the simulator's files)
        return [_one_sampling(t[a:b]) for a, b in zip(offsets, offsets[1:])]
    dt = np.diff(t)  # dt[j] = t[j + 1] − t[j]: a spacing of curve i for offsets[i] ≤ j < offsets[i + 1] − 1
    dt0 = np.repeat(dt[offsets[:-1]], sizes)[:-1]  # its curve's first spacing
    ok = dt > 0  # not a decrease, a duplicate or a non-finite time
    scale = np.maximum(dt, dt0)  # is_regular's test, |dt − dt0| ≤ rtol · max(|dt|, |dt0|), where ok
    scale *= REGULAR_RTOL
    dt0 -= dt
    even = np.abs(dt0, out=dt0) <= scale
    ok[offsets[1:-1] - 1] = even[offsets[1:-1] - 1] = True  # from one curve's last point to the next one's first
    ok, even = (np.logical_and.reduceat(v, offsets[:-1]) for v in (ok, even))
    return [(int(sizes[i]), bool(even[i])) if ok[i] else _one_sampling(t[offsets[i]: offsets[i + 1]])
            for i in range(sizes.size)]


def _one_sampling(t: np.ndarray) -> tuple[int, bool]:
    t = np.unique(t)  # sorted, NaN last
    t = t[np.isfinite(t)]
    return t.size, t.size >= 2 and is_regular(t)


def _summarise(f: h5py.File) -> dict:
    failed = f["failed"][:]
    out = {"failed": int(failed.sum()), "analysed": int((~failed).sum())}
    for name in COUNT_COLUMNS:
        out[name] = int(f[name][:].sum())
    return out


def band_coverage(path: str | Path) -> dict | None:
    """How much of each analysed curve's resolvable band [W, f_hi] the shared frequency grid keeps
    (the ``band_kept`` column): min, median and the number of curves with less than all of it.
    None for a file without that column (written before it existed) or with no analysed curve."""
    with open_checked(path, "spectra") as f:
        if "band_kept" not in f:
            return None
        kept = f["band_kept"][:][~f["failed"][:]]
    if kept.size == 0:
        return None
    return {"min": float(kept.min()), "median": float(np.median(kept)), "curves": int(kept.size),
            "partial": int(np.sum(kept < 1.0))}


def _fail_reasons(path: Path) -> dict[str, int]:
    """Failure reasons with counts, most common first (numbers replaced by # so reasons group;
    each row's ``fail_reason`` keeps the numbers)."""
    with h5py.File(path, "r") as f:
        reasons = f["fail_reason"].asstr()[:][f["failed"][:]]
    grouped = (re.sub(r"-?\d+(\.\d+)?(e[-+]?\d+)?", "#", r) for r in reasons)
    return dict(collections.Counter(grouped).most_common())


# --------------------------------------------------------------------------------------------
# Shards


def merge_shards(output: str | Path, count: int) -> dict:
    """Join ``OUTPUT.shard-I-of-N.h5`` for I = 0..N−1 into ``output`` (checked: same run settings,
    same grids, consecutive rows). The shard files are left in place."""
    if count < 1:
        raise LcgenError(f"--merge-shards {count}: the number of shards must be at least 1")
    paths = [shard_path(output, i, count) for i in range(count)]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise LcgenError(f"missing shard files: {', '.join(missing)}; run `lcgen preprocess --shard I/{count}` for each")
    files = [open_checked(p, "spectra", ("frequency", "lag", "failed")) for p in paths]
    try:
        ref = files[0]
        expected = int(ref.attrs["first_row"])
        for p, f in zip(paths, files):
            if not (np.array_equal(f["frequency"][:], ref["frequency"][:]) and np.array_equal(f["lag"][:], ref["lag"][:])):
                raise LcgenError(f"{p} has different grids from {paths[0]}; rerun every shard with the same settings")
            if _unsharded_settings(f) != _unsharded_settings(ref):
                raise LcgenError(f"{p} was made with different settings from {paths[0]}; rerun it with the same config")
            if int(f.attrs["first_row"]) != expected:
                raise LcgenError(f"{p} starts at row {int(f.attrs['first_row'])}, expected {expected}; shards are not consecutive")
            expected += f["failed"].shape[0]
        total = expected - int(ref.attrs["first_row"])
        with atomic_h5(output, inputs=paths) as out:
            write_header(out, "spectra", _unsharded_settings(ref))
            out.attrs["first_row"] = int(ref.attrs["first_row"])
            for name in ("frequency", "lag"):
                ref.copy(ref[name], out, name)
            row_keys = [k for k in ref.keys() if k not in ("frequency", "lag", "meta")]
            for key in row_keys:
                ds = ref[key]
                out.create_dataset(key, shape=(total, *ds.shape[1:]), dtype=ds.dtype,
                                   chunks=(min(64, total), *ds.shape[1:]) if ds.ndim > 1 else None)
            meta = out.create_group("meta")
            for key in ref.get("meta", {}):
                ds = ref["meta"][key]
                meta.create_dataset(key, shape=(total,), dtype=ds.dtype)
            row = 0
            columns = {key: out[key] for key in (*row_keys, *(f"meta/{k}" for k in ref.get("meta", {})))}
            for f in files:
                m = f["failed"].shape[0]
                for key in row_keys:
                    for a in range(0, m, 4096):
                        b = min(m, a + 4096)
                        columns[key][row + a: row + b] = f[key][a:b]
                for key in f.get("meta", {}):
                    columns[f"meta/{key}"][row: row + m] = f["meta"][key][:]
                row += m
            summary = _summarise(out)
            out.attrs.update(summary)
    finally:
        for f in files:
            f.close()
    return {"output": str(output), "curves": total, "shards": count, **summary,
            "fail_reasons": _fail_reasons(Path(output))}


def _unsharded_settings(f: h5py.File) -> dict:
    """A shard's stored config without the settings that may differ between shards."""
    cfg = dict(read_config(f))
    for key in ("shard", "workers", "resume"):
        cfg.pop(key, None)
    return cfg
