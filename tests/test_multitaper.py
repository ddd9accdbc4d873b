"""lcgen.features.multitaper against exact references and known statistics (no tapify needed)."""

import numpy as np
import pytest
from scipy import stats
from scipy.interpolate import make_interp_spline

from lcgen.features import multitaper as mt
from lcgen.errors import LcgenError
from lcgen.features.preprocess import PreprocessConfig, make_grids
from lcgen.simulate.mocks import SAMPLERS, SimulateConfig

# Every sampling pattern of the simulator, plus seasonal curves longer than a year (two seasons).
SAMPLINGS = [*SAMPLERS, "seasonal_long"]


def sample_times(sampling, rng, **settings):
    """Times from the simulator's own sampler ``sampling`` (``seasonal_long``: 400–500 d seasonal)."""
    cfg = SimulateConfig(**settings)
    if sampling == "seasonal_long":
        cfg.duration, sampling = [400.0, 500.0], "seasonal"
    return SAMPLERS[sampling](cfg, rng, {})


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



def test_direct_finufft_calls_equal_its_python_interface(monkeypatch):
    # _nufft calls finufft's C setpts/execute itself (the Python interface's argument checks cost
    # more than a small transform); the numbers must be the interface's, and both the direct sums'.
    rng = np.random.default_rng(41)
    x = np.sort(rng.uniform(-np.pi, np.pi, 300))
    strengths = rng.normal(size=(3, 300)) + 1j * rng.normal(size=(3, 300))
    modes = rng.normal(size=(3, 256)) + 1j * rng.normal(size=(3, 256))
    k = np.arange(-128, 128)
    calls = [(1, x, strengths, 256, -1, 1e-9, None), (2, x, modes, 256, 1, 1e-9, 1.25)]
    assert mt._FINUFFT_C is not None  # this finufft takes the direct path
    direct = [mt._nufft(*c) for c in calls]
    monkeypatch.setattr(mt, "_FINUFFT_C", None)
    interface = [mt._nufft(*c) for c in calls]
    for a, b in zip(direct, interface):
        assert np.array_equal(a, b)
    ref1 = strengths @ np.exp(-1j * np.outer(x, k))  # (3, 256)
    ref2 = modes @ np.exp(1j * np.outer(k, x))  # (3, 300)
    assert np.max(np.abs(direct[0] - ref1)) <= 1e-8 * np.max(np.abs(ref1))
    assert np.max(np.abs(direct[1] - ref2)) <= 1e-8 * np.max(np.abs(ref2))

def test_dpss_are_cached_by_length_nw_and_k():
    a = mt.dpss_tapers(301, 4.0, 7)
    b = mt.dpss_tapers(301, 4.0, 7)
    c = mt.dpss_tapers(301, 3.0, 5)
    assert a[0] is b[0] and c[0].shape == (5, 301)
    assert not a[0].flags.writeable


@pytest.mark.parametrize("n, nw, k", [(9, 2.0, 3), (301, 4.0, 7), (640, 3.0, 5), (2048, 4.0, 8)])
def test_dpss_are_scipys(n, nw, k):
    from scipy.signal.windows import dpss

    v, lam = mt.dpss_tapers(n, nw, k)
    ref, ref_lam = dpss(n, nw, k, return_ratios=True)
    assert np.max(np.abs(v - ref)) <= 1e-14  # same tapers, same signs
    assert np.max(np.abs(lam - ref_lam)) <= 1e-14


def test_dpss_refined_from_the_bucket_match_scipys_direct_solution():
    # lengths between bucket multiples start from the bucket's spline and take two Rayleigh-
    # quotient steps (_dpss_refined); they must be scipy's tapers to rounding, signs included
    from scipy.signal.windows import dpss

    for n, nw, k in [(128 + 3, 2.0, 3), (333, 4.0, 7), (614, 4.0, 7), (999, 3.0, 5), (1500, 4.0, 8), (5001, 4.0, 7)]:
        assert n % mt.DPSS_BUCKET and n >= mt.REFINE_MIN  # the refined path, not the direct one
        j = np.arange(n, dtype=np.float64)
        diag = ((n - 1 - 2 * j) / 2.0) ** 2 * np.cos(2 * np.pi * nw / n)
        assert mt._dpss_refined(n, nw, k, diag, j[1:] * (n - j[1:]) / 2.0) is not None
        v, lam = mt.dpss_tapers(n, nw, k)
        ref, ref_lam = dpss(n, nw, k, return_ratios=True)
        assert np.max(np.abs(v - ref)) <= 1e-10 * np.max(np.abs(ref)), n
        assert np.max(np.abs(lam - ref_lam)) <= 1e-14, n
        assert np.allclose(v @ v.T, np.eye(k), atol=1e-11)


@pytest.mark.parametrize("m", [4, 5, 64, 640])
def test_taper_splines_are_scipys_not_a_knot_splines(m):
    v, _ = mt.dpss_tapers(m, 2.0, 3)
    u = np.sort(np.random.default_rng(m).uniform(0.0, 1.0, 500))
    u[0], u[-1] = 0.0, 1.0
    ref = make_interp_spline(np.linspace(0.0, 1.0, m), v.T, k=3)(u).T
    assert np.max(np.abs(mt.dpss_spline(m, 2.0, 3)(u) - ref)) <= 1e-13


def test_warmed_caches_give_the_same_tapers_and_build_nothing_more(monkeypatch):
    # what a process builds before forking workers is what taper_times would have built
    rng = np.random.default_rng(11)
    curves = [(np.linspace(0.0, 50.0, 333), True), (np.sort(rng.uniform(0.0, 50.0, 300)), False)]
    mt.clear_dpss_cache()
    cold = [mt.taper_times(t, 4.0, 7) for t, _ in curves]
    keys = [key for t, regular in curves for key in mt.taper_cache_keys(t.size, regular)]
    assert keys == [(333, True), (384, False), (320, False)]  # 333 is refined from its bucket's spline
    assert mt.taper_cache_keys(100, True) == [(100, True)] and mt.taper_cache_keys(384, True) == [(384, True)]
    mt.clear_dpss_cache()
    mt.warm_taper_caches(keys, 4.0)  # k: 2NW − 1, as check_series takes it

    def built(*args):
        raise AssertionError(f"built again: {args[:3]}")

    monkeypatch.setattr(mt, "_dpss", built)
    monkeypatch.setattr(mt, "_not_a_knot", built)
    for (t, _), ref in zip(curves, cold):
        warm = mt.taper_times(t, 4.0, 7)
        assert warm.regular == ref.regular and warm.dt == ref.dt
        for name in ("applied", "eigvals", "dc"):
            assert np.array_equal(getattr(warm, name), getattr(ref, name)), name
    mt.clear_dpss_cache()


def test_dpss_cache_is_bounded_in_bytes(monkeypatch):
    mt.clear_dpss_cache()
    monkeypatch.setattr(mt, "DPSS_CACHE_BYTES", 3 * 7 * 400 * 8)  # room for three (7, 400) sets
    first = mt.dpss_tapers(400, 4.0, 7)[0]
    for n in (401, 402, 403):
        mt.dpss_tapers(n, 4.0, 7)
    assert mt.dpss_tapers(403, 4.0, 7)[0] is mt.dpss_tapers(403, 4.0, 7)[0]
    assert mt.dpss_tapers(400, 4.0, 7)[0] is not first  # the oldest was evicted
    # the running byte totals follow the entries through insertions and evictions
    assert mt._DPSS_CACHE.nbytes == sum(v.nbytes for v, _ in mt._DPSS_CACHE.entries.values()) <= 3 * 7 * 400 * 8
    assert mt._SPLINE_CACHE.nbytes == sum(s.curvature.nbytes for s in mt._SPLINE_CACHE.entries.values())
    mt.clear_dpss_cache()
    assert (mt._DPSS_CACHE.nbytes, mt._SPLINE_CACHE.nbytes) == (0, 0)


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


def test_adaptive_psd_with_a_given_variance_reaches_the_plain_iterations_limit():
    # Newton steps speed up the bins' fixed-point iteration; the map has more than one fixed
    # point, and on this mock curve (regular sampling, a sinusoid) unguarded Newton steps from
    # afar landed on another one, 4x off in one bin. The plain iteration, run long, is the reference.
    from lcgen.simulate.mocks import simulate_curve

    curve = simulate_curve(SimulateConfig(seed=42), 451)
    t, y = curve.time, (curve.flux - np.median(curve.flux)) / np.std(curve.flux)
    span = t[-1] - t[0]
    _, _, nyquist = mt.resolvable_band(t, 4.0)
    lattice = np.arange(4, np.floor(nyquist * 4 * span) + 1) / (4 * span)  # binned_multitaper's
    _, coef, tapers = mt.eigencoefficients(t, y, lattice)
    power, variance = np.abs(coef) ** 2, float(np.var(y)) * tapers.dt
    fast, n_iter = mt.adaptive_psd(power, tapers.eigvals, variance=variance)
    lam, plain = tapers.eigvals[:, None], 0.5 * (power[0] + power[1])
    for _ in range(3000):
        d = plain / (lam * plain + (1 - lam) * variance)
        plain = (lam * d * d * power).sum(0) / (lam * d * d).sum(0)
    assert np.max(np.abs(fast / plain - 1)) < 1e-8
    assert n_iter < 60


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
    assert np.max(np.abs(again / res.psd - 1)) < 1e-8  # converged in EVERY bin, not 95 % of them
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


def test_acf_truncations_stay_below_1e9():
    # the lag period is only max(τ) + T + 10h and the kernel's transform is cut where it is 1e−10:
    # lags up to ~T (aliases of the longest pairs just 10h away) still match the direct sum
    rng = np.random.default_rng(9)
    t = np.sort(rng.uniform(0.0, 30.0, 70))
    y = np.sin(2 * np.pi * t / 4.0) + 0.3 * rng.normal(size=t.size)
    lags = np.array([0.7, 2.0, 4.1, 9.0, 15.0, 22.0, 29.0])
    for h in (0.3, 1.0):
        fast = mt.autocorrelation(t, y, lags, kernel_width=h, relative_width=0.0)
        assert np.max(np.abs(fast - direct_acf(t, y, lags, h))) <= 1e-9, h


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


def test_acf_checked_skips_only_the_checks():
    # preprocess passes checked=True for inputs it has cleaned: the same numbers, bit for bit;
    # without it, bad input is refused
    rng = np.random.default_rng(13)
    t = np.sort(rng.uniform(0.0, 80.0, 400))
    y = np.sin(2 * np.pi * t / 6.0) + 0.3 * rng.normal(size=t.size)
    lags = np.concatenate([[0.0], np.geomspace(0.1, 60.0, 200)])
    assert np.array_equal(mt.autocorrelation(t, y, lags, checked=True), mt.autocorrelation(t, y, lags), equal_nan=True)
    with pytest.raises(LcgenError, match="not sorted"):
        mt.autocorrelation(t[::-1], y, lags)
    with pytest.raises(LcgenError, match="non-negative"):
        mt.autocorrelation(t, y, -lags)


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


# ------------------------------------------------------------------------------------------
# Tapers on gapped sampling, the F-test near a mirror, and spectra in shared bins


def gram(tapers):
    return tapers.applied @ tapers.applied.T / tapers.dt


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_applied_tapers_are_orthonormal_on_the_samples(sampling):
    t = sample_times(sampling, np.random.default_rng(20))
    tapers = mt.taper_times(t, 4.0, 7)
    assert np.allclose(gram(tapers), np.eye(7), atol=1e-10)
    assert np.allclose(tapers.dc, tapers.applied.sum(axis=1))


def test_regular_tapers_are_tapifys_exactly():
    t = 2.0 + 0.3 * np.arange(640)
    tapers = mt.taper_times(t, 4.0, 7)
    v, _ = mt.dpss_tapers(t.size, 4.0, 7)
    tapify = v * (np.sqrt(0.3) / np.sum(v * v, axis=1))[:, None]  # h·√Δt/Σh², Δt the true spacing
    assert np.max(np.abs(tapers.applied - tapify)) <= 1e-12 * np.max(np.abs(tapify))


def test_evenly_spaced_grid_takes_the_type1_path_and_matches_the_direct_sum():
    rng = np.random.default_rng(21)
    t = sample_times("seasonal_long", rng)
    y = rng.normal(size=t.size)
    span = t[-1] - t[0]
    grid = 1.0 / span + np.arange(500) / (4 * span)  # the lattice binned_multitaper uses
    _, coef, _ = mt.eigencoefficients(t, y, grid)
    ref = mt.direct_eigencoefficients(t, y, grid)
    assert np.max(np.abs(coef - ref)) <= 1e-8 * np.max(np.abs(ref))


def dense_mirror_fstat(t, y, f, nw=4.0, k=7):
    """The F-test of mirror_fstat by brute force: the 2K × N matrix R, the mean-removal projector
    P, GLS of z on X = R P [cos θ, −sin θ] with covariance R P Rᵀ (pseudo-inverse whitening),
    p-value from scipy's F(2, r − 2)."""
    tapers = mt.taper_times(t, nw, k)
    theta = 2 * np.pi * f * (t - 0.5 * (t[0] + t[-1]))
    r = np.concatenate([tapers.applied * np.cos(theta), tapers.applied * np.sin(theta)])  # (2K, N)
    proj = np.eye(t.size) - 1.0 / t.size
    z = r @ proj @ y
    x = r @ proj @ np.stack([np.cos(theta), -np.sin(theta)], axis=1)
    val, vec = np.linalg.eigh(r @ proj @ r.T)
    keep = val > 1e-4 * val[-1]
    w = vec[:, keep] / np.sqrt(val[keep])
    zt, xt = w.T @ z, w.T @ x
    beta = np.linalg.lstsq(xt, zt, rcond=None)[0]
    dfd = keep.sum() - 2
    fr = (np.sum((xt @ beta) ** 2) / 2) / (np.sum((zt - xt @ beta) ** 2) / dfd)
    return stats.f.sf(fr, 2, dfd)


@pytest.mark.parametrize("sampling", ["regular", "seasonal_long", "random_gaps"])
def test_mirror_f_test_matches_a_dense_gls_reference(sampling):
    rng = np.random.default_rng(22)
    t = sample_times(sampling, rng, n_points=[200, 260])
    span = t[-1] - t[0]
    y = 0.4 * np.sin(2 * np.pi * 2.2 / span * t + 1.0) + rng.normal(size=t.size)
    freq = np.array([1.0, 1.6, 2.2, 3.1, 5.0, 7.5]) / span
    _, coef, tapers = mt.eigencoefficients(t, y, freq)
    ref = [dense_mirror_fstat(t, y, f) for f in freq]
    assert np.allclose(mt.fstat_pvalue(mt.mirror_fstat(t, tapers, freq, coef), 7), ref, rtol=1e-5, atol=1e-12)
    near = freq < mt.MIRROR_ZONE * mt.resolvable_band(t, 4.0)[0]
    assert np.allclose(mt.multitaper(t, y, freq=freq).pvalue[near], np.array(ref)[near], rtol=1e-5, atol=1e-12)


def test_mirror_f_test_equals_the_plain_one_far_from_the_mirror():
    rng = np.random.default_rng(23)
    t = sample_times("variable_cadence", rng)
    y = rng.normal(size=t.size)
    freq = np.array([12.0, 20.0, 40.0]) / (t[-1] - t[0])  # ≥ 3W
    _, coef, tapers = mt.eigencoefficients(t, y, freq)
    plain, _ = mt.harmonic_fstat(coef, tapers.dc)
    # the same test up to mean removal and sidelobe leakage on uneven sampling (~1 %)
    assert np.allclose(mt.mirror_fstat(t, tapers, freq, coef), plain, rtol=0.03)


def test_f_test_is_calibrated_below_the_bandwidth():
    # Below W a sinusoid's mirror image at −f leaks into the tapers; the GLS test keeps the
    # null law F(2, 2K − 2) down to f = 1/T (pooled over all samplings; the 5 % tail).
    rng = np.random.default_rng(24)
    pvalues = []
    for i in range(240):
        t = sample_times(SAMPLINGS[i % len(SAMPLINGS)], rng, n_points=[200, 400])
        span = t[-1] - t[0]
        res = mt.multitaper(t, rng.normal(size=t.size), freq=np.array([1.0, 2.0, 3.0, 5.0, 7.0]) / span)
        pvalues.append(res.pvalue)
    pvalues = np.array(pvalues)  # (draws, 5)
    assert 0.035 <= np.mean(pvalues < 0.05) <= 0.065  # 1200 tests: σ = 0.6 %
    assert stats.kstest(pvalues.ravel(), "uniform").pvalue > 0.01


def reference_binned(t, y, centres, edges, nw=4.0, k=7, oversample=4):
    """binned_multitaper by loops and direct sums: each bin's lattice points (or the one nearest
    its centre), PSD and F from direct_eigencoefficients, mean and max per bin, Šidák per bin."""
    span = t[-1] - t[0]
    w, f_hi, nyquist = mt.resolvable_band(t, nw)
    d = 1.0 / (oversample * span)
    j_lo, j_hi = int(np.ceil(1 / span / d)), int(np.floor(nyquist / d))
    psd, pvalue = np.full(centres.size, np.nan), np.full(centres.size, np.nan)
    for j, c in enumerate(centres):
        if not 1 / span <= c <= nyquist:
            continue
        a, b = max(edges[j], 1 / span), min(edges[j + 1], nyquist)
        pts = [i * d for i in range(j_lo, j_hi + 1) if a <= i * d < b] or [min(max(round(c / d), j_lo), j_hi) * d]
        f = np.array(pts)
        coef = mt.direct_eigencoefficients(t, y, f, nw=nw, k=k)
        tapers = mt.taper_times(t, nw, k)
        s, _ = mt.adaptive_psd(np.abs(coef) ** 2, tapers.eigvals, variance=np.var(y) * tapers.dt)
        fs, _ = mt.harmonic_fstat(coef, tapers.dc)
        for i, fi in enumerate(f):
            if fi < mt.MIRROR_ZONE * w or (tapers.regular and fi > nyquist - mt.MIRROR_ZONE * w):
                fs[i] = mt.mirror_fstat(t, tapers, f[i:i + 1], coef[:, i:i + 1])[0]
        pmin = mt.fstat_pvalue(fs, k).min()
        psd[j] = s.mean()
        pvalue[j] = 1 - (1 - pmin) ** (1 + mt.SUBBIN_RHO * (f.size - 1))
    return psd, pvalue


@pytest.mark.parametrize("sampling", ["regular", "seasonal_long"])
def test_binned_spectrum_matches_a_direct_loop_reference(sampling):
    rng = np.random.default_rng(25)
    t = sample_times(sampling, rng, n_points=[150, 200])
    y = np.sin(2 * np.pi * t / 7.3) + rng.normal(size=t.size)
    centres = np.geomspace(0.5 / (t[-1] - t[0]), 1.2 * t.size / (t[-1] - t[0]), 90)
    edges = mt.bin_edges(centres, log=True)
    res = mt.binned_multitaper(t, y, centres, edges)
    psd, pvalue = reference_binned(t, y, centres, edges)
    assert np.array_equal(np.isnan(res.psd), np.isnan(psd)) and (res.n_sub > 1).sum() > 10
    ok = ~np.isnan(psd)
    assert np.allclose(res.psd[ok], psd[ok], rtol=1e-6)
    assert np.allclose(res.pvalue[ok], pvalue[ok], rtol=1e-5, atol=1e-14)
    assert np.allclose(mt.fstat_pvalue(res.fstat[ok], 7), res.pvalue[ok], rtol=1e-8)  # F and p agree



def lattice_reference(t, y, centres, edges, settings):
    """binned_multitaper's bins from one curve's lattice through the public steps one at a time
    (eigencoefficients, adaptive_psd, harmonic_fstat, mirror_fstat; multitaper and the batches
    share one implementation of them), aggregated as the docstring says."""
    span = t[-1] - t[0]
    _, _, nyquist = mt.resolvable_band(t, 4.0)
    lattice, index, m = mt.sub_frequencies(centres, edges, (1 / span, nyquist), 1 / (4 * span))
    k = settings.get("k", 7)
    _, coef, tapers = mt.eigencoefficients(t, y, lattice, k=k)
    power = coef.real ** 2 + coef.imag ** 2
    if settings.get("adaptive", True):
        psd_lattice, _ = mt.adaptive_psd(power, tapers.eigvals, variance=float(np.var(y)) * tapers.dt)
    else:
        psd_lattice = power.mean(axis=0)
    if k >= 2:
        fstat, _ = mt.harmonic_fstat(coef, tapers.dc)
        near = mt.mirror_zone(t, 4.0, lattice, tapers.regular)
        fstat[near] = mt.mirror_fstat(t, tapers, lattice[near], coef[:, near])
    done = m > 0
    starts = np.cumsum(m[done]) - m[done]
    psd = np.full(centres.size, np.nan)
    pvalue = np.full(centres.size, np.nan)
    psd[done] = np.add.reduceat(psd_lattice[index], starts) / m[done]
    if k >= 2:
        fmax = np.maximum.reduceat(np.nan_to_num(fstat, nan=0.0)[index], starts)
        pvalue[done] = np.exp(mt.aggregate_log_pvalue(fmax, m[done], k))
    return psd, pvalue


@pytest.mark.parametrize("settings", [{}, {"adaptive": False}, {"k": 1}])
def test_binned_spectra_of_many_curves_are_those_of_one_curve_at_a_time(settings):
    # binned_multitaper_many puts the bins of all its curves through the adaptive weighting and
    # the F-tests together; each curve must get the numbers of its own unbatched multitaper call,
    # and a curve that fails must fail alone, with its own error.
    rng = np.random.default_rng(31)
    curves = []
    for sampling in SAMPLINGS:  # regular data have mirror rows near the Nyquist frequency too
        t = sample_times(sampling, rng, n_points=[150, 300])
        curves.append((t, np.sin(2 * np.pi * t / rng.uniform(1, 20)) + 0.05 * np.cumsum(rng.normal(size=t.size))))
    curves.insert(2, (curves[0][0], np.full(curves[0][0].size, 3.0)))  # constant flux
    curves.insert(4, (curves[1][0][:5], curves[1][1][:5]))  # too few points
    grids = shared_grid([t for t, _ in curves if t.size > 9])
    many = mt.binned_multitaper_many(curves, grids.frequency, grids.edges, **settings)
    assert [type(r).__name__ for r in many].count("LcgenError") == 2
    for (t, y), got in zip(curves, many):
        try:
            want = mt.binned_multitaper(t, y, grids.frequency, grids.edges, **settings)
        except LcgenError as exc:
            assert isinstance(got, LcgenError) and str(got) == str(exc)
            continue
        for name in ("psd", "fstat", "pvalue", "n_sub", "valid"):
            assert np.array_equal(getattr(got, name), getattr(want, name), equal_nan=True), name
        psd, pvalue = lattice_reference(t, y, grids.frequency, grids.edges, settings)
        assert np.array_equal(np.isnan(got.psd), np.isnan(psd))
        assert np.allclose(got.psd, psd, rtol=1e-12, atol=0, equal_nan=True)
        assert np.allclose(got.pvalue, pvalue, rtol=1e-12, atol=0, equal_nan=True)


def test_adaptive_psd_of_bins_from_several_curves_equals_one_curve_at_a_time():
    rng = np.random.default_rng(33)
    parts, want = [], []
    for sampling in ("regular", "seasonal", "variable_cadence"):
        t = sample_times(sampling, rng, n_points=[200, 300])
        y = np.cumsum(rng.normal(size=t.size)) * 0.1 + np.sin(2 * np.pi * t / 3.3)
        freq = np.arange(4, 400) / (4 * (t[-1] - t[0]))
        _, coef, tapers = mt.eigencoefficients(t, y, freq)
        power, variance = np.abs(coef) ** 2, float(np.var(y)) * tapers.dt
        want.append(mt.adaptive_psd(power, tapers.eigvals, variance=variance)[0])
        parts.append((power, np.repeat(tapers.eigvals[:, None], freq.size, axis=1), np.full(freq.size, variance)))
    together, _ = mt.adaptive_psd(np.concatenate([p[0] for p in parts], axis=1),
                                  np.concatenate([p[1] for p in parts], axis=1),
                                  variance=np.concatenate([p[2] for p in parts]))
    assert np.array_equal(together, np.concatenate(want))


def test_mirror_rows_of_several_curves_are_solved_as_alone_even_beside_a_broken_row():
    # _mirror_solve takes the rows of many curves; a row whose covariance cannot be factored
    # takes the eigen path by itself and moves no other row's number.
    rng = np.random.default_rng(32)
    t = sample_times("seasonal", rng, n_points=[200, 300])
    y = rng.normal(size=t.size)
    tapers = mt.taper_times(t, 4.0, 7)
    freq = np.arange(1, 30) / (4 * (t[-1] - t[0]))  # from well inside the mirror zone to beyond it
    _, coef, _ = mt.eigencoefficients(t, y, freq)
    cov, x, z = mt._mirror_problems(*mt._mirror_sums(t, tapers, freq, coef))
    alone = mt._mirror_solve(cov, x, z)
    assert np.array_equal(alone, mt.mirror_fstat(t, tapers, freq, coef), equal_nan=True)
    assert np.isfinite(alone).sum() >= 20
    broken = -np.eye(14)[None]  # not positive definite: the batch's Cholesky factorisation fails
    together = mt._mirror_solve(np.concatenate([cov, broken, cov]), np.concatenate([x, x[:1], x]),
                                np.concatenate([z, z[:1], z]))
    assert np.array_equal(together, np.concatenate([alone, [np.nan], alone]), equal_nan=True)

def shared_grid(times):
    spans = np.array([t[-1] - t[0] for t in times])
    counts = np.array([t.size for t in times])
    return make_grids(PreprocessConfig(), spans, counts)  # what `lcgen preprocess` would use


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_null_calibration_in_shared_bins_on_every_sampling(sampling):
    # White noise through the preprocess grid: the fraction of valid shared bins with p < 0.01
    # must be 1.0 ± 0.2 % (it was 2–42 % across gaps) and the PSD level σ²Δt within 5 %
    # (it was 1.23–1.74 on seasonal curves). Draws are pooled until ~100k points and 40 curves
    # are seen: low-frequency bins narrower than 1/T share one resolution cell, so few curves
    # leave the fraction noisy by ±0.3 % even when each has thousands of points.
    rng = np.random.default_rng(sum(map(ord, sampling)))
    times = []
    while sum(t.size for t in times) < 100_000 or len(times) < 40:
        times.append(sample_times(sampling, rng))
    grids = shared_grid(times)
    pvalues, levels = [], []
    for t in times:
        res = mt.binned_multitaper(t, rng.normal(size=t.size), grids.frequency, grids.edges)
        pvalues.append(res.pvalue[res.valid])
        levels.append(np.mean(res.psd[res.valid]) * 2 * mt.resolvable_band(t, 4.0)[2])  # PSD / (σ² Δt)
    pvalues = np.concatenate(pvalues)
    assert pvalues.size > 20_000 and np.isfinite(pvalues).all()
    assert 0.008 <= np.mean(pvalues < 0.01) <= 0.012
    assert 0.95 <= np.mean(levels) <= 1.05


def test_injected_lines_are_found_in_their_shared_bin_at_every_period():
    # A sinusoid of amplitude 0.5 σ at P/T from 0.001 to 0.5 on every sampling (≥ 2500 points so
    # that P/T = 0.001 lies below the Nyquist frequency): its shared bin must have p < 1e-3.
    rng = np.random.default_rng(26)
    times = [sample_times(s, rng, n_points=[2500, 3000]) for s in SAMPLINGS for _ in range(3)]
    grids = shared_grid(times)
    found = {pt: [] for pt in (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 0.5)}
    for i, t in enumerate(times):
        span = t[-1] - t[0]
        for pt in found:
            f0 = 1 / (pt * span)
            if f0 > 0.95 * mt.resolvable_band(t, 4.0)[2]:
                continue  # beyond this curve's Nyquist frequency
            y = 0.5 * np.sin(2 * np.pi * f0 * t + rng.uniform(0, 2 * np.pi)) + rng.normal(size=t.size)
            res = mt.binned_multitaper(t, y, grids.frequency, grids.edges)
            found[pt].append(res.pvalue[np.searchsorted(grids.edges, f0) - 1] < 1e-3)
    for pt, hits in found.items():
        assert len(hits) >= 15 and np.mean(hits) >= 0.95, (pt, np.mean(hits), len(hits))


def test_near_regular_data_keep_tapify_parity():
    # gap-free, jittered 30-min cadence: tapify's tapers (spline of DPSS(N), scaled by their
    # energy) are nearly orthonormal already, so the PSD (mean of eigenspectra) moves ~1e-4
    rng = np.random.default_rng(27)
    cad = 30 / 1440
    t = np.arange(0, 27.4, cad) + rng.normal(0, 0.05 * cad, 1316)
    y = rng.normal(size=t.size)
    v, _ = mt.dpss_tapers(t.size, 4.0, 7)
    h = make_interp_spline(np.linspace(t[0], t[-1], t.size), v.T, k=3)(t).T
    a = h * (np.sqrt((t[-1] - t[0]) / t.size) / np.sum(h * h, axis=1))[:, None]
    f = np.arange(4, 1300) / (4 * (t[-1] - t[0]))
    coef = ((y - y.mean()) * a) @ np.exp(2j * np.pi * np.outer(t - 0.5 * (t[0] + t[-1]), f))
    ours = mt.multitaper(t, y, freq=f, adaptive=False, ftest=False).psd
    assert np.max(np.abs(ours / (np.abs(coef) ** 2).mean(axis=0) - 1)) < 5e-4
