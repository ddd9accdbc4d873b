"""The spectra of each time-series window: paired data for ``lcgen train multimodal``.

``lcgen convert --spectra`` adds to a time-series file, for every window (row) i, the multitaper
PSD, F-statistic and ACF of THAT window's real points, so that every modality of a row describes
the same stretch of light curve. The work is :func:`lcgen.features.preprocess.analyse_curve`, applied to
the window's stored points (``time[i, mask[i]]``, ``flux[i, mask[i]]``), so the spectra are
exactly what ``lcgen preprocess`` would compute for a curve made of that window alone (in
batches, :func:`lcgen.features.preprocess.analyse_curves`, as preprocess does):

1. grids: ONE frequency grid (``n_freq`` bins, log-spaced from 1/T of the longest window to the
   highest mean-cadence Nyquist frequency of any window) and ONE lag grid (``n_lags``: lag 0,
   then log-spaced from the median mean cadence to ``acf_max_fraction`` × the longest window),
   chosen by :func:`lcgen.features.preprocess.make_grids` from the windows' spans and point counts, the
   same for every row of the file;
2. per window: 5×IQR outlier clipping, adaptive multitaper PSD averaged over each bin, harmonic F
   (bin maximum, p-value corrected for the frequencies tried), window-corrected ACF;
3. validity per row: ``psd_mask`` = ``fstat_mask`` = bins inside the window's resolvable band
   [W, f_hi]; ``acf_mask`` = lags up to ``acf_max_fraction`` × the window's span with support;
4. normalisation as preprocess: z = (arcsinh(v / s) − μ) / σ over the valid bins, with
   ``{c}_scale``, ``{c}_mean``, ``{c}_std`` stored per row
   (:func:`lcgen.features.preprocess.invert_normalisation` undoes it).

A window that cannot be analysed (fewer than ``min_points``, too few valid bins, constant) gets
``spectra_failed = True``, its reason in ``spectra_fail_reason``, NaN spectra and all-False
masks: its time series still trains, its spectra count as absent.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, Literal, Optional

import h5py
import numpy as np

from lcgen.io import PAIRED_KEYS

if TYPE_CHECKING:
    from lcgen.features.preprocess import Grids, PreprocessConfig

# lcgen.features.preprocess imports lcgen.features.convert, which imports this module: preprocess is imported where used.
CHANNELS = ("psd", "acf", "fstat")  # = lcgen.features.preprocess.CHANNELS
# Datasets a paired time-series file holds per window beyond the time series (lcgen.io.check_paired).
SPECTRA_ROW_KEYS = tuple(PAIRED_KEYS)
CHUNK_ROWS = 2048  # windows analysed between writes


@dataclasses.dataclass
class WindowSpectraConfig:
    """Settings of the per-window spectra (``lcgen convert --spectra``); see lcgen preprocess."""

    n_freq: int = 256  # (int) bins of the frequency grid shared by every window
    n_lags: int = 256  # (int) lags of the ACF grid shared by every window (lag 0, then log-spaced)
    freq_spacing: Literal["log", "linear"] = "log"  # (str) spacing of the frequency grid
    nw: float = 4.0  # (float) time-bandwidth product NW of the DPSS tapers
    k: Optional[int] = None  # (int) number of tapers; null = 2NW − 1
    adaptive: bool = True  # (bool) Thomson's adaptive weighting of the eigenspectra
    acf_max_fraction: float = 0.75  # (float) a window's ACF counts as valid up to this fraction of its span
    outlier_iqr: float = 5.0  # (float) spectra only: drop points more than this many IQRs from the median; 0 = keep all
    min_valid_bins: int = 8  # (int) windows with fewer valid frequency bins get no spectra (spectra_failed)
    freq_min: Optional[float] = None  # (float) lowest frequency, cycles/day; null = 1 / longest window span
    freq_max: Optional[float] = None  # (float) highest frequency; null = the highest mean-cadence Nyquist of any window
    lag_min: Optional[float] = None  # (float) first non-zero lag, days; null = median mean cadence of the windows
    lag_max: Optional[float] = None  # (float) last lag, days; null = acf_max_fraction × longest window span


def preprocess_settings(cfg: WindowSpectraConfig, min_points: int) -> PreprocessConfig:
    """The :class:`PreprocessConfig` whose per-curve analysis the windows get."""
    from lcgen.features.preprocess import PreprocessConfig

    return PreprocessConfig(n_freq=cfg.n_freq, n_lags=cfg.n_lags, freq_spacing=cfg.freq_spacing, nw=cfg.nw,
                            k=cfg.k, adaptive=cfg.adaptive, acf_max_fraction=cfg.acf_max_fraction,
                            outlier_iqr=cfg.outlier_iqr, min_points=min_points, min_valid_bins=cfg.min_valid_bins,
                            freq_min=cfg.freq_min, freq_max=cfg.freq_max, lag_min=cfg.lag_min, lag_max=cfg.lag_max)


def window_points(time: np.ndarray, flux: np.ndarray, flux_err: np.ndarray, mask: np.ndarray):
    """The real points of one stored window as float64: (t, y, e)."""
    return (time[mask].astype(np.float64), flux[mask].astype(np.float64), flux_err[mask].astype(np.float64))


def window_grids(f: h5py.File, settings: PreprocessConfig) -> Grids:
    """The shared grids of the windows of an open time-series file (spans and counts of its rows)."""
    from lcgen.features.preprocess import make_grids

    n = f["flux"].shape[0]
    spans, counts = np.zeros(n), np.zeros(n, dtype=np.int64)
    for a in range(0, n, CHUNK_ROWS):
        t, m = f["time"][a:a + CHUNK_ROWS], f["mask"][a:a + CHUNK_ROWS].astype(bool)
        counts[a:a + len(m)] = m.sum(1)
        last = np.where(m, t, -np.inf).max(1)
        first = np.where(m, t, np.inf).min(1)
        spans[a:a + len(m)] = np.where(counts[a:a + len(m)] > 1, last - first, 0.0)
    return make_grids(settings, spans, counts)


def analyse_windows(windows, grids: Grids, settings: PreprocessConfig) -> list[dict]:
    """The normalised spectra on the shared grids of each window ``(t, y, e)`` of ``windows``
    (:func:`lcgen.features.preprocess.analyse_curves`: what ``analyse_curve`` gives each window,
    computed in batches), as rows of a paired file: keys of ``SPECTRA_ROW_KEYS`` plus ``reason``
    ("" when analysed). A window that cannot be analysed (too few points, no valid bin, constant,
    ...) gets NaN spectra, empty masks and its reason: one window never stops a file."""
    from lcgen.features.preprocess import analyse_curves

    F, Lg = grids.frequency.size, grids.lag.size
    rows = []
    for row, reason in analyse_curves(windows, grids, settings):
        if reason:
            row = {c: np.full(Lg if c == "acf" else F, np.nan) for c in CHANNELS}
            row.update({f"{c}_{k}": np.nan for c in CHANNELS for k in ("scale", "mean", "std")})
            row.update(pvalue=np.full(F, np.nan), mask=np.zeros(F, bool), acf_mask=np.zeros(Lg, bool))
        rows.append({**_rename(row), "spectra_failed": bool(reason), "reason": reason})
    return rows


def _rename(row: dict) -> dict:
    keys = [k for k in SPECTRA_ROW_KEYS if k in row]
    out = {k: row[k] for k in keys}
    out["psd_mask"] = out["fstat_mask"] = row["mask"]
    return out


def add_window_spectra(f: h5py.File, cfg: WindowSpectraConfig, min_points: int, *,
                       progress: Callable[[int], None] | None = None) -> dict:
    """Compute and write the spectra of every row of the time-series file ``f`` (open for writing,
    its ``time``, ``flux``, ``flux_err`` and ``mask`` written). Returns ``{"windows", "failed",
    "freq_range", "lag_range"}``; ``progress(n)`` is called per chunk of rows."""
    settings = preprocess_settings(cfg, min_points)
    grids = window_grids(f, settings)
    n = f["flux"].shape[0]
    F, Lg = grids.frequency.size, grids.lag.size
    freq = f.create_dataset("frequency", data=grids.frequency)
    freq.attrs["edges"] = grids.edges
    f.create_dataset("lag", data=grids.lag)
    shapes = {"psd": (F, "f4"), "fstat": (F, "f4"), "pvalue": (F, "f4"), "acf": (Lg, "f4"),
              "psd_mask": (F, "bool"), "fstat_mask": (F, "bool"), "acf_mask": (Lg, "bool")}
    columns = {k: f.create_dataset(k, (n, width), dtype=dtype, chunks=(min(256, max(n, 1)), width))
               for k, (width, dtype) in shapes.items()}
    for c in CHANNELS:
        for k in ("scale", "mean", "std"):
            columns[f"{c}_{k}"] = f.create_dataset(f"{c}_{k}", (n,), dtype="f8")
    columns["spectra_failed"] = f.create_dataset("spectra_failed", (n,), dtype=bool)
    reasons = f.create_dataset("spectra_fail_reason", (n,), dtype=h5py.string_dtype())
    failed = 0
    for a in range(0, n, CHUNK_ROWS):
        b = min(n, a + CHUNK_ROWS)
        t, y, e, m = (f[k][a:b] for k in ("time", "flux", "flux_err", "mask"))
        rows = analyse_windows([window_points(t[i], y[i], e[i], m[i].astype(bool)) for i in range(b - a)],
                               grids, settings)
        for key, ds in columns.items():
            ds[a:b] = np.stack([r[key] for r in rows]) if ds.ndim == 2 else np.asarray([r[key] for r in rows])
        reasons[a:b] = np.array([r["reason"] for r in rows], dtype=object)
        failed += sum(r["spectra_failed"] for r in rows)
        if progress is not None:
            progress(b - a)
    return {"windows": n, "failed": int(failed), "freq_range": (float(grids.frequency[0]), float(grids.frequency[-1])),
            "lag_range": (float(grids.lag[1]), float(grids.lag[-1]))}
