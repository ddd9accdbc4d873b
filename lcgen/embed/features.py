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

The spectrum is :func:`lcgen.features.multitaper.multitaper` (adaptive, tapify's default grid) and the ACF
:func:`lcgen.features.multitaper.autocorrelation` with :func:`lcgen.features.multitaper.acf_first_peak`. A value
that cannot be computed (too few points, a constant window) is NaN; the probes impute it.

For a ``spectra`` file (``lcgen preprocess`` output, what spectral runs eat) the features are read
off each row's own spectra, in physical units (:func:`lcgen.features.preprocess.physical_features`), over
its valid bins and lags only (:data:`SPECTRAL_FEATURES`):

    psd_slope       slope b of the least-squares line log10 PSD = a + b log10 f (red noise < 0)
    log_peak_freq   log10 of the frequency (cycles/day) where the PSD stands highest above that
                    line (a line's peak, not the low-frequency end of a red spectrum)
    log_peak_power  log10 of the PSD over the line there
    log_psd_median  log10 of the median valid PSD (the variability level)
    log_fstat_max   log10 of the largest harmonic F-statistic (a coherent sinusoid's strength)
    log_fstat_freq  log10 of its frequency
    log_acf_lag     log10 of the ACF's first-peak lag (days); where none, of the last valid lag
    acf_peak        1 where the ACF has a first peak, else 0
    acf_first       the ACF at the first valid lag after 0 (near 1 for smooth variability)
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import stats

from lcgen.errors import LcgenError

FEATURES = ("amp_5_95", "amp_25_75", "std", "skew", "kurtosis", "von_neumann", "log_peak_freq",
            "log_peak_power", "log_acf_lag", "acf_peak")
SPECTRAL_FEATURES = ("psd_slope", "log_peak_freq", "log_peak_power", "log_psd_median", "log_fstat_max",
                     "log_fstat_freq", "log_acf_lag", "acf_peak", "acf_first")
MIN_POINTS = 8  # fewer real points: every feature NaN
N_LAGS = 256


def window_features(t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The :data:`FEATURES` of one window: times ``t`` (days, increasing) and fluxes ``y``, (n,)
    each, real points only. Returns (len(FEATURES),) float64, NaN where undefined."""
    from lcgen.features.multitaper import acf_first_peak, autocorrelation, multitaper

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
    from lcgen.train.data import read_rows
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


def spectral_features(freq: np.ndarray, psd: np.ndarray, fstat: np.ndarray, valid: np.ndarray,
                      lag: np.ndarray, acf: np.ndarray, acf_valid: np.ndarray) -> np.ndarray:
    """The :data:`SPECTRAL_FEATURES` of one row of a spectra file, physical units: PSD and
    F-statistic on frequencies ``freq`` (valid where ``valid``), ACF on lags ``lag`` (valid where
    ``acf_valid``). Returns (len(SPECTRAL_FEATURES),) float64, NaN where undefined."""
    from lcgen.features.multitaper import acf_first_peak

    out = np.full(len(SPECTRAL_FEATURES), np.nan)
    ok = valid & np.isfinite(psd) & (psd > 0) & (freq > 0)
    if ok.sum() >= 2:
        f, p = np.log10(freq[ok]), np.log10(psd[ok])
        slope, level = np.polyfit(f, p, 1)
        above = p - (level + slope * f)
        k = int(np.argmax(above))
        out[:4] = slope, f[k], above[k], np.median(p)
    good = valid & np.isfinite(fstat) & (fstat > 0)
    if good.any():
        k = np.flatnonzero(good)[np.argmax(fstat[good])]
        out[4], out[5] = np.log10(fstat[k]), np.log10(freq[k])
    lags = np.flatnonzero(acf_valid & np.isfinite(acf))
    if lags.size >= 2:
        peak = acf_first_peak(lag[lags], acf[lags])
        out[6] = np.log10(peak if np.isfinite(peak) and peak > 0 else lag[lags[-1]])
        out[7] = float(np.isfinite(peak))
        out[8] = acf[lags[1]]
    return out


def spectra_features(path, rows: np.ndarray, *, chunk: int = 1024,
                     progress: Callable[[int], None] | None = None) -> np.ndarray:
    """:func:`spectral_features` of ``rows`` (sorted) of a ``spectra`` file, (len(rows),
    len(SPECTRAL_FEATURES)); a bin or lag is valid where the file's masks say so
    (:func:`lcgen.features.preprocess.physical_features` gives NaN elsewhere)."""
    from lcgen.io import open_checked
    from lcgen.features.preprocess import physical_features

    rows = np.asarray(rows, np.int64)
    out = np.empty((rows.size, len(SPECTRAL_FEATURES)))
    with open_checked(path, "spectra", ("psd", "fstat", "acf", "frequency", "lag")) as f:
        freq, lag = f["frequency"][:].astype(np.float64), f["lag"][:].astype(np.float64)
    for lo in range(0, rows.size, chunk):
        part = rows[lo:lo + chunk]
        psd, fstat, acf = (physical_features(path, c, part) for c in ("psd", "fstat", "acf"))
        for i in range(part.size):
            out[lo + i] = spectral_features(freq, psd[i], fstat[i], np.isfinite(psd[i]), lag, acf[i],
                                            np.isfinite(acf[i]))
        if progress is not None:
            progress(part.size)
    return out
