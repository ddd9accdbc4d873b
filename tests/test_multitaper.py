"""lcgen.multitaper against exact references and known statistics (no tapify needed)."""

import numpy as np
import pytest
from scipy import stats
from scipy.interpolate import make_interp_spline

from lcgen import multitaper as mt
from lcgen.errors import LcgenError


def tess_times(rng, cadence=30 / 1440, span=27.4, gap=1.0, dropout=0.05, jitter=0.05):
    """TESS-like sector: regular cadence with jitter, a mid-sector gap and random dropouts."""
    t = np.arange(0.0, span, cadence)
    t = t + rng.normal(0.0, jitter * cadence, t.size)
    keep = ~((t > span / 2 - gap / 2) & (t < span / 2 + gap / 2)) & (rng.uniform(size=t.size) > dropout)
    return np.sort(t[keep])


def direct_acf(t, y, lags, h):
    """O(N²) Gaussian-kernel, locally normalised pair correlation: the reference for the NUFFT path."""
    x = y - y.mean()
    d = t[None, :] - t[:, None]  # (N, N): d[n, m] = t_m − t_n, n the earlier point when d > 0
    out = []
    for tau in lags:
        g = np.exp(-((tau - d) ** 2) / (2 * h * h))
        w = g.sum()
        m1 = (g * x[:, None]).sum() / w
        m2 = (g * x[None, :]).sum() / w
        cov = (g * np.outer(x, x)).sum() / w - m1 * m2
        v1 = (g * (x * x)[:, None]).sum() / w - m1 * m1
        v2 = (g * (x * x)[None, :]).sum() / w - m2 * m2
        out.append(cov / np.sqrt(v1 * v2))
    return np.array(out)


# ------------------------------------------------------------------------------------------
# Eigencoefficients


@pytest.mark.parametrize("sampling", ["irregular", "regular"])
def test_eigencoefficients_match_direct_sum_on_default_grid(sampling):
    rng = np.random.default_rng(0)
    n = 157
    t = np.sort(rng.uniform(3.0, 40.0, n)) if sampling == "irregular" else 3.0 + 0.25 * np.arange(n)
    y = np.sin(2 * np.pi * t / 5.3) + rng.normal(size=n)
    freq, coef, tapers = mt.eigencoefficients(t, y)
    ref = mt.direct_eigencoefficients(t, y, freq)
    assert coef.shape == (7, 256) and freq.size == 256
    assert np.max(np.abs(coef - ref)) / np.max(np.abs(ref)) <= 1e-8
    assert tapers.regular == (sampling == "regular")


def test_eigencoefficients_match_direct_sum_on_given_grid():
    rng = np.random.default_rng(1)
    t = np.sort(rng.uniform(0.0, 80.0, 211))
    y = rng.normal(size=t.size)
    grid = np.geomspace(1 / 80, 1.3, 300)
    freq, coef, _ = mt.eigencoefficients(t, y, grid, nw=3.0, k=5)
    ref = mt.direct_eigencoefficients(t, y, grid, nw=3.0, k=5)
    assert np.array_equal(freq, grid) and coef.shape == (5, 300)
    assert np.max(np.abs(coef - ref)) / np.max(np.abs(ref)) <= 1e-8


def test_given_grid_equals_default_grid_at_the_same_frequencies():
    rng = np.random.default_rng(2)
    t = np.sort(rng.uniform(0.0, 30.0, 300))
    y = rng.normal(size=t.size)
    freq, coef, _ = mt.eigencoefficients(t, y)
    _, coef3, _ = mt.eigencoefficients(t, y, freq[5:400:7])
    assert np.max(np.abs(coef3 - coef[:, 5:400:7])) <= 1e-8 * np.max(np.abs(coef))


def test_dpss_are_cached_by_length_nw_and_k():
    a = mt.dpss_tapers(301, 4.0, 7)
    b = mt.dpss_tapers(301, 4.0, 7)
    c = mt.dpss_tapers(301, 3.0, 5)
    assert a[0] is b[0] and c[0].shape == (5, 301)
    assert not a[0].flags.writeable


def test_dpss_cache_is_bounded_in_bytes(monkeypatch):
    mt.clear_dpss_cache()
    monkeypatch.setattr(mt, "DPSS_CACHE_BYTES", 3 * 7 * 400 * 8)  # room for three (7, 400) sets
    first = mt.dpss_tapers(400, 4.0, 7)[0]
    for n in (401, 402, 403):
        mt.dpss_tapers(n, 4.0, 7)
    assert mt.dpss_tapers(403, 4.0, 7)[0] is mt.dpss_tapers(403, 4.0, 7)[0]
    assert mt.dpss_tapers(400, 4.0, 7)[0] is not first  # the oldest was evicted
    mt.clear_dpss_cache()


# ------------------------------------------------------------------------------------------
# PSD


@pytest.mark.parametrize("adaptive", [False, True])
def test_white_noise_psd_level_and_variance_reduction(adaptive):
    rng = np.random.default_rng(3)
    sigma, n, span = 1.7, 800, 120.0
    ratios, levels = [], []
    for _ in range(12):
        t = np.sort(rng.uniform(0.0, span, n))
        y = rng.normal(0.0, sigma, n)
        res = mt.multitaper(t, y, adaptive=adaptive, ftest=False)
        s = res.psd[20:-20]  # away from f = 0 and the Nyquist edge
        ratios.append(s.var() / s.mean() ** 2)
        levels.append(s.mean() / (sigma ** 2 * (t[-1] - t[0]) / n))
    assert abs(np.mean(ratios) - 1 / 7) <= 0.1 / 7  # var/mean² ≈ 1/K (Lomb–Scargle: ≈ 1)
    assert abs(np.mean(levels) - 1.0) <= 0.05  # mean S ≈ σ² Δt


def test_adaptive_psd_is_a_fixed_point_of_thomsons_weights():
    rng = np.random.default_rng(4)
    t = np.sort(rng.uniform(0.0, 60.0, 500))
    y = np.cumsum(rng.normal(size=t.size)) * 0.1 + np.sin(2 * np.pi * t / 3.1)  # red noise + line
    freq, coef, tapers = mt.eigencoefficients(t, y)
    power = np.abs(coef) ** 2
    res = mt.multitaper(t, y, ftest=False)
    assert 1 <= res.n_iter < 100
    lam = tapers.eigvals[:, None]
    leak = (1 - lam) * res.psd.sum() / t.size
    d = res.psd / (lam * res.psd + leak)
    again = (lam * d ** 2 * power).sum(0) / (lam * d ** 2).sum(0)
    assert np.percentile(np.abs(again / res.psd - 1), 95) < 1e-5
    assert np.all(res.psd > 0)


def test_regular_data_get_physical_frequencies():
    # tapify labels bin j of regular data as j/(N_pad·T/N); the samples are T/(N−1) apart.
    rng = np.random.default_rng(5)
    n, dt = 500, 0.1
    t = 7.0 + dt * np.arange(n)
    freq, _, tapers = mt.eigencoefficients(t, rng.normal(size=n))
    assert tapers.regular and tapers.dt == pytest.approx(dt, rel=1e-12)
    assert freq[1] == pytest.approx(1 / (1024 * dt), rel=1e-12)
    f0 = freq[123]
    y = 0.8 * np.cos(2 * np.pi * f0 * t + 0.3) + 0.05 * rng.normal(size=n)
    res = mt.multitaper(t, y)
    assert np.argmax(res.fstat) == 123
    assert 2 * abs(res.amplitude[123]) == pytest.approx(0.8, rel=0.02)
    assert res.freq[np.argmax(res.psd)] == pytest.approx(f0, abs=4.0 / (t[-1] - t[0]))  # within W = NW/T


# ------------------------------------------------------------------------------------------
# F-test


def test_sines_in_tess_like_data_are_found_by_the_f_peak():
    rng = np.random.default_rng(6)
    for _ in range(6):
        t = tess_times(rng)
        span = t[-1] - t[0]
        f0 = rng.uniform(0.3, 12.0)
        y = 0.5 * np.sin(2 * np.pi * f0 * t + rng.uniform(0, 2 * np.pi)) + rng.normal(size=t.size)
        res = mt.multitaper(t, y)
        assert abs(res.freq[np.argmax(res.fstat)] - f0) <= 0.25 / span
        assert res.pvalue[np.argmax(res.fstat)] < 1e-4


def test_f_pvalues_are_uniform_without_a_signal():
    rng = np.random.default_rng(7)
    pvalues = []
    for _ in range(150):
        t = np.sort(rng.uniform(0.0, 50.0, 200))
        res = mt.multitaper(t, rng.normal(size=t.size))
        pvalues.extend(res.pvalue[[30, 110, 190]])  # bins ≫ 2W apart: independent
    assert stats.kstest(pvalues, "uniform").pvalue > 0.01


def test_pvalue_closed_form_matches_scipy():
    f = np.array([0.0, 0.3, 1.0, 4.0, 25.0, 400.0])
    for k in (2, 5, 7):
        assert np.allclose(mt.fstat_pvalue(f, k), stats.f.sf(f, 2, 2 * k - 2), rtol=1e-10, atol=0)


def test_f_uses_the_dc_of_the_applied_tapers_across_a_gap():
    # A noiseless sine across a 3-d gap, evaluated exactly at its frequency: with the applied
    # tapers' DC the residual is tiny and F huge; tapify's convention (raw spline tapers scaled by
    # their energy, DC of the raw spline with the odd tapers' zeroed) gives a far smaller F.
    rng = np.random.default_rng(8)
    t = tess_times(rng, gap=3.0)
    y = 1.3 * np.sin(2 * np.pi * 2.0 * t + 0.4)
    freq, coef, tapers = mt.eigencoefficients(t, y, np.array([2.0]))
    f_ours, mu = mt.harmonic_fstat(coef, tapers.dc)
    v, _ = mt.dpss_tapers(t.size, 4.0, 7)
    raw = make_interp_spline(np.linspace(t[0], t[-1], t.size), v.T, k=3)(t).T  # tapify's h_k(t_n)
    applied = raw * (np.sqrt(tapers.dt) / np.sum(raw * raw, axis=1))[:, None]
    coef_tapify = ((y - y.mean()) * applied) @ np.exp(2j * np.pi * 2.0 * (t - 0.5 * (t[0] + t[-1])))
    raw_dc = raw.sum(axis=1) * np.sqrt(tapers.dt)
    raw_dc[1::2] = 0.0
    f_tapify, _ = mt.harmonic_fstat(coef_tapify[:, None], raw_dc)
    assert f_ours[0] > 3000 and f_ours[0] > 10 * f_tapify[0]
    assert 2 * abs(mu[0]) == pytest.approx(1.3, rel=0.01)


# ------------------------------------------------------------------------------------------
# ACF


def test_acf_matches_direct_pair_sum():
    rng = np.random.default_rng(9)
    t = np.sort(rng.uniform(0.0, 30.0, 70))
    y = np.sin(2 * np.pi * t / 4.0) + 0.3 * rng.normal(size=t.size)
    lags = np.array([0.7, 2.0, 4.1, 9.0, 15.0])
    h = 0.3
    fast = mt.autocorrelation(t, y, lags, kernel_width=h, relative_width=0.0)
    assert np.allclose(fast, direct_acf(t, y, lags, h), atol=1e-6)
    assert mt.autocorrelation(t, y, np.array([0.0, 1.0]))[0] == 1.0


@pytest.mark.parametrize("sampling", ["tess", "random", "regular_with_gaps"])
def test_acf_first_peak_within_2_percent_of_the_period(sampling):
    rng = np.random.default_rng({"tess": 10, "random": 11, "regular_with_gaps": 12}[sampling])
    for _ in range(8):
        if sampling == "tess":
            t = tess_times(rng, cadence=1 / 48)
        elif sampling == "random":
            t = np.sort(rng.uniform(0.0, rng.uniform(50, 500), rng.integers(200, 1000)))
        else:
            span = rng.uniform(50, 500)
            t = np.linspace(0.0, span, rng.integers(200, 1000))
            t = t[(t < 0.3 * span) | (t > 0.4 * span)]
        span = t[-1] - t[0]
        lags = np.concatenate([[0.0], np.geomspace(span / 3000, 0.75 * span, 1023)])
        period = np.exp(rng.uniform(np.log(10 * np.median(np.diff(t))), np.log(span / 2)))
        y = np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)) + 0.2 * rng.normal(size=t.size)
        acf = mt.autocorrelation(t, y, lags)
        assert acf[0] == 1.0
        assert abs(mt.acf_first_peak(lags, acf) / period - 1) <= 0.02, (sampling, period, span)


def test_acf_is_nan_where_no_pairs_support_it():
    t = np.concatenate([np.linspace(0, 10, 100), np.linspace(100, 110, 100)])  # two seasons
    y = np.sin(2 * np.pi * t / 3.0)
    acf = mt.autocorrelation(t, y, np.array([0.0, 2.0, 50.0, 95.0, 300.0]))
    assert np.isfinite(acf[[0, 1, 3]]).all() and np.isnan(acf[[2, 4]]).all()


# ------------------------------------------------------------------------------------------
# Input checks


@pytest.mark.parametrize("case, message", [
    ("unsorted", "not sorted"),
    ("duplicate", "duplicate times"),
    ("nonfinite", "non-finite"),
    ("too_few", "too few"),
    ("k_too_big", "outside [1, 2·NW"),
    ("empty_grid", "non-empty"),
    ("constant", "constant"),
])
def test_bad_input_raises_clear_errors(case, message):
    t = np.linspace(0.0, 10.0, 50)
    y = np.sin(t)
    kwargs = {}
    if case == "unsorted":
        t = t.copy()
        t[[3, 4]] = t[[4, 3]]
    elif case == "duplicate":
        t = t.copy()
        t[5] = t[4]
    elif case == "nonfinite":
        y = y.copy()
        y[7] = np.nan
    elif case == "too_few":
        t, y = t[:12], y[:12]
    elif case == "k_too_big":
        kwargs = {"k": 9}
    elif case == "empty_grid":
        kwargs = {"freq": np.array([])}
    elif case == "constant":
        y = np.ones_like(t)
    with pytest.raises(LcgenError, match=message.replace("[", r"\[")):
        mt.multitaper(t, y, **kwargs)
