"""Hand-crafted light-curve features: the baseline a learned embedding has to beat.

The kind of feature set variability studies use (e.g. Richards et al. 2011; Sokolovsky et al.
2017), computed from each window's real points (t days, y flux in physical units: the stored
median/IQR scaling undone where the file has it):

    amp_5_95      (p95 − p5) / 2 of y
    amp_25_75     p75 − p25 of y
    std           standard deviation of y
    skew          sample skewness of y
    kurtosis      excess kurtosis of y
    von_neumann   η = Σ (y_{i+1} − y_i)² / (n − 1) / var(y)  (small for smooth, ≈ 2 for white noise)
    log_peak_freq log10 of the frequency (cycles/day) of the multitaper PSD's highest bin at
                  f ≥ 1/T (T the window's span)
    log_peak_power log10 of that PSD value over the white-noise level var(y)·Δt, Δt = T / n
    log_acf_lag   log10 of the ACF's first-peak lag (days) on 256 lags up to 0.75 T; where the ACF
                  has no peak, log10 T
    acf_peak      1 where the ACF has a first peak, else 0

The spectrum is :func:`lcgen.multitaper.multitaper` (adaptive, tapify's default grid) and the ACF
:func:`lcgen.multitaper.autocorrelation` with :func:`lcgen.multitaper.acf_first_peak`. A value
that cannot be computed (too few points, a constant window) is NaN; the probes impute it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import stats

from lcgen.errors import LcgenError

FEATURES = ("amp_5_95", "amp_25_75", "std", "skew", "kurtosis", "von_neumann", "log_peak_freq",
            "log_peak_power", "log_acf_lag", "acf_peak")
MIN_POINTS = 8  # fewer real points: every feature NaN
N_LAGS = 256


def window_features(t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The :data:`FEATURES` of one window: times ``t`` (days, increasing) and fluxes ``y``, (n,)
    each, real points only. Returns (len(FEATURES),) float64, NaN where undefined."""
    from lcgen.multitaper import acf_first_peak, autocorrelation, multitaper

    out = np.full(len(FEATURES), np.nan)
    t, y = np.asarray(t, np.float64), np.asarray(y, np.float64)
    if t.size < MIN_POINTS:
        return out
    p5, p25, p75, p95 = np.percentile(y, [5, 25, 75, 95])
    var = y.var()
    out[:3] = (p95 - p5) / 2, p75 - p25, np.sqrt(var)
    if var <= 0 or not np.all(np.diff(t) > 0):
        return out
    out[3], out[4] = stats.skew(y), stats.kurtosis(y)
    out[5] = np.sum(np.diff(y) ** 2) / (y.size - 1) / var
    span = t[-1] - t[0]
    try:
        res = multitaper(t, y, ftest=False)
        usable = res.freq >= 1.0 / span
        if usable.any():
            k = np.flatnonzero(usable)[np.argmax(res.psd[usable])]
            out[6] = np.log10(res.freq[k])
            out[7] = np.log10(res.psd[k] / (var * span / t.size))
        lags = np.linspace(0.0, 0.75 * span, N_LAGS)
        lag = acf_first_peak(lags, autocorrelation(t, y, lags))
    except LcgenError:  # a series the spectral code refuses (e.g. too short for its tapers)
        return out
    out[8] = np.log10(lag if np.isfinite(lag) and lag > 0 else span)
    out[9] = float(np.isfinite(lag))
    return out


def timeseries_features(path, rows: np.ndarray, *, chunk: int = 1024,
                        progress: Callable[[int], None] | None = None) -> np.ndarray:
    """:func:`window_features` of ``rows`` (sorted) of a ``timeseries`` file, (len(rows),
    len(FEATURES)). Fluxes are put back in physical units with each row's ``median``/``iqr``
    where the file has them."""
    from lcgen.data import read_rows
    from lcgen.io import open_checked

    rows = np.asarray(rows, np.int64)
    out = np.empty((rows.size, len(FEATURES)))
    with open_checked(path, "timeseries", ("flux", "time", "mask")) as f:
        for lo in range(0, rows.size, chunk):
            part = rows[lo:lo + chunk]
            flux, time, mask = (read_rows(f[k], part) for k in ("flux", "time", "mask"))
            scale = read_rows(f["iqr"], part) if "iqr" in f else np.ones(part.size)
            offset = read_rows(f["median"], part) if "median" in f else np.zeros(part.size)
            for i in range(part.size):
                real = mask[i].astype(bool) & np.isfinite(flux[i])
                y = flux[i][real].astype(np.float64) * scale[i] + offset[i]
                out[lo + i] = window_features(time[i][real].astype(np.float64), y)
            if progress is not None:
                progress(part.size)
    return out
