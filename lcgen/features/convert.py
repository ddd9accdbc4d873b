"""Raw light curves → fixed-length, normalised time-series windows (the transformer's data).

Each curve is cleaned (invalid points dropped: non-finite, error <= 0; times sorted; duplicate
times merged; a curve whose times span more than ``MAX_BASELINE_DAYS`` is skipped whole), cut
into consecutive windows of ``max_length`` points (``strategy="window"``, nothing thrown away) or
only its first window (``"truncate"``), and each window is median-centred and IQR-scaled:

    flux_norm = (flux − median) / iqr,   flux_err_norm = flux_err / iqr,

with ``median`` and ``iqr`` stored per row so ``flux = flux_norm · iqr + median`` undoes it.
Times are days from the window's first point. Short windows are padded with zeros and a boolean
``mask`` says which positions are real observations.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Literal

import h5py
import numpy as np

from lcgen.errors import LcgenError
from lcgen.io import DEFAULT_RAW, DEFAULT_TIMESERIES, RawReader, append_rows, atomic_h5, check_memory, write_header
from lcgen.features.window_spectra import WindowSpectraConfig, add_window_spectra


@dataclasses.dataclass
class ConvertConfig:
    input: str = DEFAULT_RAW  # (str) raw light-curve file (lcgen generate output)
    output: str = DEFAULT_TIMESERIES  # (str) time-series file to write
    max_length: int = 512  # (int) points per window
    strategy: Literal["window", "truncate"] = "window"  # (str) all windows, or only the first
    min_points: int = 32  # (int) windows with fewer real points are dropped
    compression: Literal["none", "gzip", "lzf"] = "none"  # (str) HDF5 compression of the output (chunks of 256 rows); see README "Data at scale"
    spectra: bool = False  # (bool) also store each window's multitaper PSD, F-statistic and ACF (paired data for lcgen train multimodal)
    window_spectra: WindowSpectraConfig = dataclasses.field(default_factory=WindowSpectraConfig)  # grids and multitaper settings of --spectra


FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_BASELINE_DAYS = 1e5  # a curve spanning longer (~270 years) has absurd times (wrong units?)


@dataclasses.dataclass
class CleanCounts:
    non_finite: int = 0  # points dropped: NaN/inf time, flux or error, error <= 0, |value| beyond float32
    unsorted_curves: int = 0  # curves whose times had to be sorted
    duplicates_merged: int = 0  # points merged into another with the same time
    absurd_span: int = 0  # curves skipped whole: their times span more than MAX_BASELINE_DAYS

    def add(self, other: "CleanCounts") -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def clean_curve(t: np.ndarray, y: np.ndarray, e: np.ndarray, *extra: np.ndarray):
    """Drop unusable points (non-finite time, flux or error; error <= 0; flux or error beyond the
    float32 range the files store), sort by time, merge points that share a time.

    Merged points take the mean flux (and mean of ``extra`` arrays) and the error of that mean,
    sqrt(Σ e²)/n. Returns ``(t, y, e, *extra, counts)``.
    """
    counts = CleanCounts()
    good = np.isfinite(t) & (np.abs(y) <= FLOAT32_MAX) & (e > 0) & (e <= FLOAT32_MAX)  # NaN fails all
    counts.non_finite = int(good.size - good.sum())
    if counts.non_finite:
        t, y, e = t[good], y[good], e[good]
        extra = tuple(x[good] for x in extra)
    if np.any(np.diff(t) < 0):
        counts.unsorted_curves = 1
        order = np.argsort(t, kind="stable")
        t, y, e = t[order], y[order], e[order]
        extra = tuple(x[order] for x in extra)
    if t.size > 1 and np.any(np.diff(t) == 0):
        t_unique, group, n = np.unique(t, return_inverse=True, return_counts=True)
        counts.duplicates_merged = int(t.size - t_unique.size)

        def mean(x):
            return np.bincount(group, weights=x) / n

        y = mean(y)
        e = np.sqrt(np.bincount(group, weights=e.astype(np.float64) ** 2)) / n
        extra = tuple(mean(x) for x in extra)
        t = t_unique
    return (t, y, e, *extra, counts)


def robust_scale(y: np.ndarray) -> tuple[float, float]:
    """Median and interquartile range of ``y``; the IQR falls back to the standard deviation,
    then 1, so a constant window never divides by zero."""
    q25, med, q75 = np.percentile(y, [25, 50, 75])
    iqr = q75 - q25
    if not iqr > 0:
        iqr = float(np.std(y)) or 1.0
    return float(med), float(iqr)


def window_starts(n: int, max_length: int, strategy: str, min_points: int = 1) -> list[int]:
    """Start indices of the windows cut from a curve of ``n`` points.

    With ``"window"`` a tail shorter than ``min_points`` is not dropped: the last window is
    aligned to the curve's end instead (it then overlaps the one before it).
    """
    if strategy == "truncate" or n <= max_length:
        return [0]
    starts = list(range(0, n, max_length))
    if n - starts[-1] < min_points:
        starts[-1] = n - max_length
    return starts


CHUNK_CURVES = 2048  # curves converted between writes: bounds memory, not the result
POINT_KEYS = ("flux", "flux_err", "time", "signal")  # (N, L) float32 per row
ROW_KEYS = {"median": np.float64, "iqr": np.float64, "t0": np.float64, "source": np.int64, "start": np.int64}


def check_config(cfg: ConvertConfig) -> None:
    """Raise :class:`LcgenError` naming the first setting that cannot work."""
    if cfg.max_length < 2:
        raise LcgenError(f"max_length must be at least 2, got {cfg.max_length}")
    if cfg.min_points < 1 or cfg.min_points > cfg.max_length:
        raise LcgenError(f"min_points must be in [1, max_length={cfg.max_length}], got {cfg.min_points}")
    # one block of windows is held in memory: (CHUNK_CURVES, L) for each row array
    check_memory(CHUNK_CURVES * cfg.max_length * (4 * len(POINT_KEYS) + 1), f"max_length = {cfg.max_length}")
    w = cfg.window_spectra
    if cfg.spectra and (w.n_freq < 2 or w.n_lags < 3):
        raise LcgenError(f"window_spectra.n_freq = {w.n_freq} and n_lags = {w.n_lags} must be at least 2 and 3")


def convert(cfg: ConvertConfig, *, progress: Callable[[int], None] | None = None,
            spectra_progress: Callable[[int], Callable[[int], None]] | None = None) -> dict:
    """Convert ``cfg.input`` (raw) into ``cfg.output`` (time series). Returns a summary dict.

    The input is read and the rows appended a chunk of curves at a time, so memory holds one
    chunk, whatever the sizes of the input and the output. With ``cfg.spectra`` every window then
    gets its own spectra (:mod:`lcgen.features.window_spectra`): ``spectra_progress(n_windows)``
    is called once the windows are written and returns the ``advance(n)`` that counts windows
    done.
    """
    check_config(cfg)
    L = cfg.max_length
    counts = CleanCounts()
    short = 0
    packing = {} if cfg.compression == "none" else {"compression": cfg.compression, "shuffle": True}
    with RawReader(cfg.input) as reader, atomic_h5(cfg.output, inputs=[cfg.input]) as f:
        n_curves = len(reader)
        point_keys = [k for k in POINT_KEYS if k != "signal" or reader.has_signal]
        write_header(f, "timeseries", cfg)
        # Datasets held open for the whole write (see lcgen.io.RawWriter._new).
        columns = {key: f.create_dataset(key, (0, L), maxshape=(None, L), dtype=np.float32, chunks=(256, L),
                                         **packing) for key in point_keys}
        columns["mask"] = f.create_dataset("mask", (0, L), maxshape=(None, L), dtype=bool, chunks=(256, L),
                                           **packing)
        for key, dtype in ROW_KEYS.items():
            columns[key] = f.create_dataset(key, (0,), maxshape=(None,), dtype=dtype, chunks=(4096,))
        # Per-row copies of the raw metadata (light-curve type, true parameters) for evaluation.
        meta = f.create_group("meta")
        for key in reader.meta_keys:
            kind = reader.meta(key, 0, 0).dtype
            columns[f"meta/{key}"] = meta.create_dataset(
                key, (0,), maxshape=(None,), chunks=(4096,),
                dtype=h5py.string_dtype() if kind.kind in "USO" else kind)
        for lo in range(0, n_curves, CHUNK_CURVES):  # one chunk of curves in memory at a time
            raw = reader.read(lo, lo + CHUNK_CURVES)
            rows, n_short = _windows(raw, range(len(raw)), cfg, counts, progress)
            short += n_short
            local = rows["source"]
            rows["source"] = local + lo
            for key, values in rows.items():
                append_rows(columns[key], values)
            for key, values in raw.meta.items():
                values = values[local]
                append_rows(columns[f"meta/{key}"], values.astype(object) if values.dtype.kind in "USO" else values)
        n_rows = columns["source"].shape[0]
        if n_rows == 0:
            raise LcgenError(f"{cfg.input}: no window has at least min_points={cfg.min_points} points; "
                             f"lower --min-points")
        for key, value in dataclasses.asdict(counts).items():
            f.attrs[f"clean_{key}"] = value
        f.attrs["windows_too_short"] = short
        spectra = {}
        if cfg.spectra:
            spectra = add_window_spectra(f, cfg.window_spectra, cfg.min_points,
                                         progress=spectra_progress(n_rows) if spectra_progress else None)
            spectra = {"spectra_failed": spectra["failed"], "freq_range": spectra["freq_range"],
                       "lag_range": spectra["lag_range"]}
    return {"output": cfg.output, "curves": n_curves, "windows": n_rows, "too_short": short,
            **dataclasses.asdict(counts), **spectra}


def _windows(raw, curves: range, cfg: ConvertConfig, counts: CleanCounts,
             progress: Callable[[int], None] | None) -> tuple[dict[str, np.ndarray], int]:
    """Clean, cut and normalise ``curves``; returns the rows as stacked arrays and the number of
    windows dropped as too short."""
    L = cfg.max_length
    has_signal = raw.signal is not None
    rows: dict[str, list] = {k: [] for k in (*POINT_KEYS, "mask", *ROW_KEYS)}
    short = 0
    for i in curves:
        s = raw.span(i)
        extra = (raw.signal[s].astype(np.float64),) if has_signal else ()
        t, y, e, *extra, c = clean_curve(raw.time[s], raw.flux[s].astype(np.float64),
                                         raw.flux_err[s].astype(np.float64), *extra)
        if t.size and t[-1] - t[0] > MAX_BASELINE_DAYS:  # wrong units or a bad time: this curve only
            c.absurd_span = 1
            t = t[:0]
        counts.add(c)
        for start in window_starts(len(t), L, cfg.strategy, cfg.min_points) if t.size else ():
            stop = min(start + L, len(t))
            n = stop - start
            if n < cfg.min_points:
                short += 1
                continue
            med, iqr = robust_scale(y[start:stop])
            rows["flux"].append(_pad((y[start:stop] - med) / iqr, L))
            rows["flux_err"].append(_pad(e[start:stop] / iqr, L))
            rows["time"].append(_pad(t[start:stop] - t[start], L))
            if has_signal:
                rows["signal"].append(_pad((extra[0][start:stop] - med) / iqr, L))
            rows["mask"].append(np.arange(L) < n)
            for key, value in (("median", med), ("iqr", iqr), ("t0", t[start]), ("source", i), ("start", start)):
                rows[key].append(value)
        if progress is not None:
            progress(1)
    stacked = {}
    for key, values in rows.items():
        if key in POINT_KEYS or key == "mask":
            if values:
                stacked[key] = np.stack(values)
            elif key != "signal" or has_signal:
                stacked[key] = np.zeros((0, L), bool if key == "mask" else np.float32)
        else:
            stacked[key] = np.asarray(values, ROW_KEYS[key])
    return stacked, short


def _pad(x: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros(length, dtype=np.float32)
    out[: len(x)] = x
    return out
