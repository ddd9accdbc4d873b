"""Mock light-curve simulator: physics, sampling, honest noise, determinism, config and CLI."""

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from scipy import stats
from scipy.signal import lombscargle

from lcgen.config import resolve_config
from lcgen.errors import LcgenError
from lcgen.io import read_raw
from lcgen.simulate.mocks import (SAMPLERS, SIGNALS, SamplingMix, SimulateConfig, TypeMix, check_config,
                            contact_durations, disk_overlap, eclipse_profiles, flare_profile, generate,
                            longest_curve, ou_process, power_law_noise, simulate_curve, transit_geometry)

from tests.conftest import ROOT, run_cli


def only(type_: str | None = None, sampling: str | None = None, **changes) -> SimulateConfig:
    """Default config restricted to one signal type and/or one sampling."""
    cfg = SimulateConfig(**changes)
    if type_:
        cfg.types = TypeMix(**{k: float(k == type_) for k in SIGNALS})
    if sampling:
        cfg.samplings = SamplingMix(**{k: float(k == sampling) for k in SAMPLERS})
    return cfg


def all_on() -> SimulateConfig:
    """Every type, sampling and overlay switched on."""
    cfg = SimulateConfig(types=TypeMix(*[1.0] * 5), samplings=SamplingMix(*[1.0] * 6))
    cfg.transit.probability = cfg.flare.probability = cfg.red_noise.probability = 0.5
    cfg.transit.secondary = [0.0, 0.5]
    return cfg


def peak_period(t, y, f_min, f_max):
    """Period of the highest Lomb-Scargle peak in [f_min, f_max] (cycles/day): a grid of 0.2/T,
    then a grid of 0.002/T around the best coarse frequency."""
    span = t[-1] - t[0]
    y = y - y.mean()
    coarse = np.arange(f_min, f_max, 0.2 / span)
    best = coarse[np.argmax(lombscargle(t, y, 2 * np.pi * coarse))]
    fine = best + np.arange(-0.3, 0.3, 0.002) / span
    fine = fine[fine > 0]
    return 1 / fine[np.argmax(lombscargle(t, y, 2 * np.pi * fine))]


# ------------------------------------------------------------------------------------------
# Physics


@pytest.mark.parametrize("sampling", ["regular", "random_gaps", "variable_cadence", "seasonal"])
def test_sinusoid_period_recovered_by_periodogram(sampling):
    cfg = only("sinusoid", sampling, seed=3)
    for i in range(4):
        c = simulate_curve(cfg, i)
        true = c.meta["period"]
        span = c.time[-1] - c.time[0]
        found = peak_period(c.time, c.flux, 0.5 / span, 1.0)  # periods in [1 d, 2T]
        # The peak must sit within a tenth of the frequency resolution 1/T of the truth.
        assert abs(1 / found - 1 / true) < 0.1 / span, (i, true, found)


def test_rotation_period_recovered_fundamental_or_harmonic():
    cfg = only("rotation", "tess", seed=5)
    cfg.tess.blocks, cfg.tess.max_points = [1, 3], 2000  # 1-3 sectors, binned to <= 2000 points (fast)
    cfg.rotation.shear = [0.0, 0.0]
    cfg.rotation.period = [1.0, 8.0]
    for i in range(5):
        c = simulate_curve(cfg, i)
        true = c.meta["period"]
        found = peak_period(c.time, c.flux, 1 / 30, 3.0)
        assert min(abs(found / true - 1), abs(found / (true / 2) - 1)) < 0.03, (true, found)
        assert c.signal.max() <= c.meta["offset"] + 1e-9  # spots only darken


def slow_ou(t, tau, sigma, z):
    """Reference: the exact OU update, one step at a time."""
    x = np.empty(t.size)
    x[0] = sigma * z[0]
    for i in range(1, t.size):
        a = np.exp(-(t[i] - t[i - 1]) / tau)
        x[i] = a * x[i - 1] + sigma * np.sqrt(1 - a * a) * z[i]
    return x


def test_ou_process_matches_step_by_step_reference_across_blocks():
    rng = np.random.default_rng(0)
    # 3000 τ in total (several 500-τ blocks) plus one jump of 900 τ (a forced single step).
    t = np.sort(rng.uniform(0, 300, 4000))
    t[2000:] += 90.0
    z = rng.standard_normal(t.size)
    fast, slow = ou_process(t, 0.1, 1.7, z), slow_ou(t, 0.1, 1.7, z)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-9)
    t2 = np.sort(rng.uniform(0, 50, 300))  # the common case: one block
    np.testing.assert_allclose(ou_process(t2, 20.0, 0.8, z[:300]), slow_ou(t2, 20.0, 0.8, z[:300]), atol=1e-12)


def test_drw_is_stationary_with_variance_sigma2_and_exponential_covariance():
    tau, sigma = 10.0, 1.3
    t = np.array([0.0, 0.5, 3.0, 10.0, 30.0])
    rng = np.random.default_rng(1)
    x = np.stack([ou_process(t, tau, sigma, rng.standard_normal(t.size)) for _ in range(20000)])
    n = x.shape[0]
    var = x.var(axis=0)
    # Stationary from the first point: every column has variance σ² (se of a variance ≈ σ² √(2/n)).
    assert np.all(np.abs(var / sigma**2 - 1) < 5 * np.sqrt(2 / n)), var / sigma**2
    cov = (x[:, :1] * x).mean(axis=0)
    expected = sigma**2 * np.exp(-t / tau)
    assert np.all(np.abs(cov - expected) < 5 * sigma**2 / np.sqrt(n)), (cov, expected)


def test_drw_curves_carry_sigma_and_tau():
    cfg = only("drw", "regular", seed=11)
    cfg.drw.tau = [2.0, 2.0]
    cfg.duration = [400.0, 400.0]
    cfg.n_points = [999, 999]
    ratios = []
    for i in range(20):
        c = simulate_curve(cfg, i)
        ratios.append(np.var(c.signal - c.meta["offset"]) / c.meta["sigma"] ** 2)
    # T = 200 τ: each series' variance is within a few per cent of σ²; the mean of 20 much closer.
    assert abs(np.mean(ratios) - 1) < 0.05, np.mean(ratios)


def test_qpo_autocorrelation_has_the_coherence_q():
    period, q, amp = 20.0, 5.0, 1.0
    cfg = only("qpo", "regular")
    cfg.qpo.period, cfg.qpo.q, cfg.qpo.amplitude = [period] * 2, [q] * 2, [amp] * 2
    lag = period  # one full cycle: only the phase diffusion decorrelates
    t = np.array([0.0, lag])
    rng = np.random.default_rng(2)
    prods = np.array([np.prod(SIGNALS["qpo"](cfg, t, rng, {})) for _ in range(20000)])
    # <s(0) s(Δ)> = A²/2 cos(2π f0 Δ) exp(-D Δ), D = π f0 / Q
    expected = amp**2 / 2 * np.exp(-np.pi / q)
    assert abs(prods.mean() - expected) < 5 * prods.std() / np.sqrt(prods.size), (prods.mean(), expected)
    assert abs(prods.mean() - amp**2 / 2) > 0.1  # not a pure sinusoid


def test_power_law_noise_matches_direct_sum_and_has_the_slope():
    rng_t = np.random.default_rng(3)
    t = np.sort(rng_t.uniform(0, 40, 300))
    x = power_law_noise(t, 2.0, np.random.default_rng(9))
    # Direct O(n K) sum with the same draws.
    rng = np.random.default_rng(9)
    t0 = t - t[0]
    df = 0.5 / t0[-1]
    k_max = int(np.ceil(0.5 / np.median(np.diff(t0)) / df))
    k = np.arange(1, k_max + 1)
    coef = (rng.standard_normal(k_max) + 1j * rng.standard_normal(k_max)) * (k * df) ** -1.0
    ref = (coef[None, :] * np.exp(2j * np.pi * df * t0[:, None] * k[None, :])).sum(1).real
    np.testing.assert_allclose(x, ref / ref.std(), atol=1e-7)
    assert abs(x.std() - 1) < 1e-12

    # On an even grid the averaged periodogram falls as f^-β.
    tg = np.arange(2048) * 0.1
    beta = 2.0
    psd = np.mean([np.abs(np.fft.rfft(power_law_noise(tg, beta, np.random.default_rng(s)))) ** 2
                   for s in range(40)], axis=0)
    f = np.fft.rfftfreq(tg.size, 0.1)
    band = (f > 0.02) & (f < 1.0)
    slope = np.polyfit(np.log(f[band]), np.log(psd[band]), 1)[0]
    assert abs(slope + beta) < 0.2, slope


def test_disk_overlap_against_direct_integration():
    # Both disks are centred on the x axis, so at each x their vertical chords are centred on y = 0
    # and overlap over 2 min(half-chords): area = ∫ 2 min(sqrt(1 - x²), sqrt(k² - (x - z)²)) dx.
    x = np.linspace(-1, 1, 2_000_001)
    star = np.sqrt(np.clip(1 - x**2, 0, None))
    for k in (0.05, 0.1, 0.3):
        z = np.array([0.0, 0.5, 1 - k, 1 - k / 2, 1.0, 1 + k / 2, 1 + k, 1.5])
        direct = [np.trapezoid(2 * np.minimum(star, np.sqrt(np.clip(k * k - (x - zi) ** 2, 0, None))), x) / np.pi
                  for zi in z]
        np.testing.assert_allclose(disk_overlap(z, k), direct, rtol=1e-6, atol=1e-9)
        assert disk_overlap(z[:3], k) == pytest.approx([k * k] * 3, rel=1e-12)  # flat bottom: k²
        assert disk_overlap(z[-2:], k).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("period, a_rstar, impact, k", [(3.3, 8.0, 0.3, 0.1), (1.2, 2.5, 0.7, 0.2),
                                                        (15.0, 30.0, 0.0, 0.05)])
def test_eclipse_contacts_match_the_duration_formulas(period, a_rstar, impact, k):
    t14, t23 = contact_durations(period, a_rstar, impact, k)
    epoch = 0.37
    t = epoch + period * np.arange(-3, 4)[:, None] + np.linspace(-0.6 * t14, 0.6 * t14, 120001)[None, :]
    primary, secondary = eclipse_profiles(t.ravel(), period, epoch, a_rstar, impact, k)
    primary = primary.reshape(t.shape)
    step = 1.2 * t14 / 120000
    for row in primary:  # every transit: first/fourth contact where the profile leaves 0, the flat
        in_transit = np.flatnonzero(row > 0)  # bottom (exactly 1) between second and third
        bottom = np.flatnonzero(row >= 1 - 1e-12)
        assert (in_transit[-1] - in_transit[0]) * step == pytest.approx(t14, abs=2 * step)
        assert (bottom[-1] - bottom[0]) * step == pytest.approx(t23, abs=2 * step)
    assert secondary.max() == 0  # the occultation is half an orbit away
    _, occ = eclipse_profiles(t.ravel() + period / 2, period, epoch, a_rstar, impact, k)
    np.testing.assert_allclose(occ, primary.ravel(), atol=1e-5)  # same overlap, seen from behind


def test_transit_geometry_inverts_the_contact_durations():
    for period, k, duration, ingress in [(3.0, 0.1, 0.12, 0.2), (10.0, 0.05, 0.25, 0.06), (1.0, 0.2, 0.1, 0.4)]:
        a_rstar, impact = transit_geometry(period, k, duration, ingress, min_a_rstar=1.5)
        t14, t23 = contact_durations(period, a_rstar, impact, k)
        assert t14 == pytest.approx(duration, rel=1e-10) and (t14 - t23) / (2 * t14) == pytest.approx(ingress, rel=1e-9)
    # Too long for a/R* >= 4: the orbit sits at 4, the ingress fraction is kept, the transit is shorter.
    a_rstar, impact = transit_geometry(2.0, 0.1, 0.3, 0.2, min_a_rstar=4.0)
    t14, t23 = contact_durations(2.0, a_rstar, impact, 0.1)
    assert a_rstar == 4.0 and (t14 - t23) / (2 * t14) == pytest.approx(0.2, rel=1e-9) and t14 < 0.3


def transit_cfg(**transit) -> SimulateConfig:
    cfg = only("sinusoid", "regular", seed=12, n_points=[200, 200])
    cfg.transit.probability = 1.0
    for key, value in transit.items():
        setattr(cfg.transit, key, value)
    return cfg


def test_transits_realise_the_configured_ingress_and_keep_a_over_rstar_physical():
    # Small planets (k <= 0.1): every ingress fraction in [0.15, 0.35] is geometrically possible
    # (the central-transit value is ~k/(1+k) <= 0.09) and comes out exactly as drawn.
    cfg = transit_cfg(depth=[0.001, 0.01], ingress=[0.15, 0.35], duration=[0.05, 0.3])
    fractions = []
    for i in range(300):
        m = simulate_curve(cfg, i).meta
        t14, t23 = contact_durations(m["transit_period"], m["transit_a_rstar"], m["transit_impact"],
                                     np.sqrt(m["transit_depth"]))
        assert t14 == pytest.approx(m["transit_duration"], rel=1e-12)
        assert (t14 - t23) / (2 * t14) == pytest.approx(m["transit_ingress"], rel=1e-9)
        assert m["transit_a_rstar"] >= cfg.transit.min_a_rstar and 0 <= m["transit_impact"] < 1
        assert t14 <= 0.3 + 1e-12
        fractions.append(m["transit_ingress"])
    fractions = np.array(fractions)
    assert fractions.min() >= 0.15 - 1e-9 and fractions.max() <= 0.35 + 1e-9
    assert abs(fractions.mean() - 0.25) < 0.01  # uniform over the configured range (se 0.0033)
    # Deep transits cannot have short ingresses: the fraction is raised to the central value, never below.
    cfg = transit_cfg(depth=[0.04, 0.04], ingress=[0.05, 0.05], period=[1.0, 1.0], duration=[0.3, 0.3])
    m = simulate_curve(cfg, 0).meta
    k = 0.2
    assert m["transit_impact"] < 1e-6 and m["transit_ingress"] == pytest.approx(
        0.5 * (1 - np.arcsin(np.sin(np.pi * m["transit_duration"]) * (1 - k) / (1 + k)) / (np.pi * m["transit_duration"])),
        rel=1e-6)
    assert m["transit_a_rstar"] >= 2.0  # P = 1 d and 0.3 d would need a/R* ~ 1.2: shortened instead


def test_flare_profile_peaks_rises_and_decays():
    t = np.linspace(0, 10, 100001)
    y = flare_profile(t, np.array([5.0]), np.array([2.0]), np.array([0.01]), np.array([0.1]))
    assert y.max() == pytest.approx(2.0, rel=1e-6) and t[np.argmax(y)] == pytest.approx(5.0, abs=1e-4)
    assert y[np.searchsorted(t, 5.1)] == pytest.approx(2.0 / np.e, rel=1e-3)  # one decay time
    assert y[np.searchsorted(t, 4.99)] == pytest.approx(2.0 / np.e, rel=1e-3)  # one rise time


def test_overlays_appear_and_leave_the_base_curve_alone():
    base = only("sinusoid", "tess", seed=4)
    with_transit = only("sinusoid", "tess", seed=4)
    with_transit.transit.probability = 1.0
    with_transit.transit.period = [2.0, 2.0]
    with_transit.transit.duration = [0.3, 0.3]
    a, b = simulate_curve(base, 0), simulate_curve(with_transit, 0)
    np.testing.assert_array_equal(a.time, b.time)
    np.testing.assert_array_equal(a.flux_err, b.flux_err)
    np.testing.assert_allclose(a.flux - a.signal, b.flux - b.signal, rtol=0, atol=1e-12)  # the same noise
    ratio = b.signal / a.signal
    assert ratio.max() == pytest.approx(1.0) and ratio.min() == pytest.approx(1 - b.meta["transit_depth"], rel=1e-6)
    assert np.isnan(a.meta["transit_depth"])


# ------------------------------------------------------------------------------------------
# Noise and sampling


def test_errors_are_honest_and_snr_is_exact():
    cfg = SimulateConfig(seed=8)
    pulls, rows = [], []
    for i in range(150):
        c = simulate_curve(cfg, i)
        pulls.append((c.flux - c.signal) / c.flux_err)
        rms = np.sqrt(np.mean(c.flux_err**2))
        assert rms == pytest.approx(c.meta["noise_rms"], rel=1e-12)
        assert np.std(c.signal - c.meta["offset"]) / rms == pytest.approx(c.meta["snr"], rel=1e-9)
        rows.append(c.flux_err.std() / c.flux_err.mean())
    pulls = np.concatenate(pulls)
    assert abs(pulls.mean()) < 5 / np.sqrt(pulls.size)
    assert abs(pulls.std() - 1) < 5 / np.sqrt(2 * pulls.size)
    assert stats.kstest(pulls, "norm").pvalue > 1e-3
    assert 0.1 < np.mean(rows) < 0.3  # heteroscedastic, about error_scatter = 0.2


def test_snr_recorded_is_the_realised_one_with_overlays():
    cfg = all_on()
    cfg.transit.probability = cfg.flare.probability = cfg.red_noise.probability = 1.0
    cfg.samplings = SamplingMix(1.0, 1.0, 1.0, 1.0, 0.0, 0.0)  # the overlays, not the long samplings, are the point
    for i in range(60):
        c = simulate_curve(cfg, i)
        rms = np.sqrt(np.mean(c.flux_err**2))
        assert rms == pytest.approx(c.meta["noise_rms"], rel=1e-12)
        assert np.std(c.signal) / rms == pytest.approx(c.meta["snr"], rel=1e-9), (i, c.lc_type)


def test_no_flat_curves_and_every_curve_starts_at_zero():
    # Before: 0.85 % of rotation curves were flat (a lone spot on the hidden hemisphere) and
    # seasonal curves lost their first point to weather 4 % of the time.
    cfg = only("rotation", None, seed=21, n_points=[200, 200])
    cfg.samplings = SamplingMix(1.0, 1.0, 1.0, 1.0, 0.0, 0.0)
    cfg.rotation.spots = [0.2, 1.0]  # few spots: where the flat curves came from
    ratios = []
    for i in range(1500):
        c = simulate_curve(cfg, i)
        assert c.time[0] == 0.0, (i, c.sampling)
        ratios.append(np.std(c.signal) / c.meta["amplitude"])
    assert np.isfinite(ratios).all() and min(ratios) > 1e-6


def test_times_strictly_increasing_and_ranges_respected():
    cfg = all_on()
    seen = set()
    for i in range(240):
        c = simulate_curve(cfg, i)
        seen.add(c.sampling)
        assert np.all(np.diff(c.time) > 0), (i, c.sampling)
        assert c.time[0] >= 0 and c.time[-1] <= c.meta["duration"] + 1e-9
        assert np.all(np.isfinite(c.flux)) and np.all(c.flux_err > 0)
        if c.sampling in ("tess", "kepler"):
            native = getattr(cfg, c.sampling).cadence_minutes / 1440
            assert np.median(np.diff(c.time)) == pytest.approx(native, rel=1e-9)
        else:
            assert 200 <= c.time.size <= 999 and 50 <= c.meta["duration"] <= 500
    assert seen == set(SAMPLERS)


def test_tess_sectors_have_2_min_cadence_and_a_downlink_gap_per_orbit():
    cfg = only("sinusoid", "tess")
    c = simulate_curve(cfg, 0)  # default: one 27.4-d sector of two 13.7-d orbits
    dt = np.diff(c.time)
    assert np.allclose(dt[dt < 0.5], 2 / 1440, rtol=1e-9)  # every step inside an orbit: 2 min
    gaps = dt[dt > 0.5]
    assert gaps.size == 1 and gaps[0] == pytest.approx(1.0, abs=1e-9)  # the mid-sector downlink gap
    assert c.time.size == 18290 == 2 * (12.7 * 720 + 1) and c.time[-1] == pytest.approx(26.4)  # README
    cfg.tess.blocks = [2, 2]
    c = simulate_curve(cfg, 0)
    dt = np.diff(c.time)
    assert (dt > 0.5).sum() == 3 and c.time.size == 4 * 9145  # 4 orbits, 3 gaps
    cfg.tess.max_points = 2000  # opt-in binning: the smallest multiple of 2 min that fits
    c = simulate_curve(cfg, 0)
    factor = int(np.ceil(4 * 9145 / 2000))  # 19
    assert c.time.size <= 2000 and np.median(np.diff(c.time)) == pytest.approx(factor * 2 / 1440)


def test_kepler_quarters_have_30_min_cadence_and_monthly_gaps():
    cfg = only("sinusoid", "kepler")
    assert simulate_curve(cfg, 0).time.size == 4407  # the default: one quarter (README)
    cfg.kepler.blocks = [2, 2]
    c = simulate_curve(cfg, 0)
    dt = np.diff(c.time)
    assert np.allclose(dt[dt < 0.5], 29.4244 / 1440, rtol=1e-9)  # long cadence
    gaps = dt[dt > 0.5]
    assert gaps.size == 5 and np.all((gaps >= 1.0) & (gaps < 1.0 + 29.4244 / 1440))  # 6 months, 5 downlinks
    per_month = int(30.0 / (29.4244 / 1440)) + 1  # 31-d months with their last day lost: 1,469 points
    assert c.time.size == 6 * per_month and c.meta["duration"] == 186.0
    assert 4300 < 3 * per_month < 4500  # ~4,400 long cadences a quarter, as real quarters (Q4: 4,397)


def test_longest_curve_bounds_every_curve():
    cfg = all_on()
    cfg.tess.blocks = [1, 2]
    assert longest_curve(cfg) == 4 * 9145 and longest_curve(SimulateConfig()) == 999
    sizes = {}
    for i in range(120):
        c = simulate_curve(cfg, i)
        sizes[c.sampling] = max(sizes.get(c.sampling, 0), c.time.size)
    assert max(sizes.values()) <= longest_curve(cfg) and sizes["kepler"] == 4407


def test_default_mix_follows_the_weights():
    cfg = SimulateConfig(seed=0)
    curves = [simulate_curve(cfg, i) for i in range(1500)]
    for attr, mix in (("lc_type", cfg.types), ("sampling", cfg.samplings)):
        names = [getattr(c, attr) for c in curves]
        for name, w in dataclasses.asdict(mix).items():
            frac = names.count(name) / len(names)
            assert abs(frac - w) < 5 * np.sqrt(max(w * (1 - w), 1e-9) / len(names)) + 1e-9, (name, frac, w)


# ------------------------------------------------------------------------------------------
# Determinism and files


def read_all(path):
    with h5py.File(path, "r") as f:
        out = {}
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        return out


def test_same_bytes_with_any_worker_count_and_chunk_size(tmp_path):
    cfg = all_on()
    cfg.n_samples = 23
    a = generate(dataclasses.replace(cfg, output=str(tmp_path / "a.h5")), workers=1, chunk_size=23)
    done = []
    b = generate(dataclasses.replace(cfg, output=str(tmp_path / "b.h5")), workers=2, chunk_size=4,
                 progress=done.append)
    assert a["curves"] == b["curves"] == 23 and b["workers"] == 2
    assert done == [4, 4, 4, 4, 4, 3]  # one call per chunk, in order
    ra, rb = read_all(tmp_path / "a.h5"), read_all(tmp_path / "b.h5")
    assert ra.keys() == rb.keys() and {"time", "flux", "flux_err", "signal", "offsets", "meta/lc_type"} <= ra.keys()
    for key in ra:
        assert ra[key].dtype == rb[key].dtype, key
        if ra[key].dtype == object:  # variable-length strings
            assert ra[key].tolist() == rb[key].tolist(), key
        else:
            assert ra[key].tobytes() == rb[key].tobytes(), key
    # ...and equal to the curve simulated on its own.
    raw = read_raw(tmp_path / "b.h5")
    c = simulate_curve(cfg, 17)
    t, y, e = raw.curve(17)
    np.testing.assert_array_equal(t, c.time)
    np.testing.assert_array_equal(y, c.flux.astype(np.float32))
    assert raw.meta["lc_type"][17] == c.lc_type and raw.meta["n_points"][17] == c.time.size
    assert raw.config["seed"] == cfg.seed and raw.config["transit"]["probability"] == 0.5


def test_different_seeds_differ():
    a, b = simulate_curve(SimulateConfig(seed=1), 0), simulate_curve(SimulateConfig(seed=2), 0)
    assert a.time.size != b.time.size or not np.array_equal(a.flux, b.flux)


# ------------------------------------------------------------------------------------------
# Config


def test_mock_yaml_is_the_documented_default():
    path = ROOT / "configs" / "mock.yaml"
    assert resolve_config(SimulateConfig, config_file=path) == SimulateConfig()
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert re.search(r"#\s*\(\w[^)]*\) \S", line), f"undocumented setting: {line}"


@pytest.mark.parametrize("sets, message", [
    (["types.sinusoid=-1"], "weights must be finite and >= 0"),
    (["types={sinusoid: 0, multiperiodic: 0, drw: 0, qpo: 0}"], "all weights are 0"),
    (["sinusoid.period=[10, 2]"], "low <= high"),
    (["drw.tau=[0, 5]"], "must be > 0"),
    (["flare.probability=1.5"], "between 0 and 1"),
    (["n_samples=0"], "at least 1"),
    (["n_samples=4294967297"], "at most 2**32"),
    (["n_points=[1, 5]"], "at least 2 points"),
    (["n_points=[0, 5]"], "must be > 0"),
])
def test_bad_settings_fail_with_a_clear_message(sets, message):
    cfg = resolve_config(SimulateConfig, sets=sets)
    with pytest.raises(LcgenError, match=re.escape(message)):
        check_config(cfg)


# ------------------------------------------------------------------------------------------
# CLI


def test_cli_generate_end_to_end(tmp_path):
    out = tmp_path / "mock.h5"
    res = run_cli("generate", "--n-samples", "20", "--seed", "7", "--output", out, "--workers", "1",
                  "--config", ROOT / "configs" / "mock.yaml", "--set", "samplings.kepler=1")
    assert res.returncode == 0, res.stderr
    assert "curves/s" in res.stdout and "Wrote" in res.stdout
    raw = read_raw(out)
    assert len(raw) == 20 and raw.config["seed"] == 7 and raw.config["samplings"]["kepler"] == 1.0
    assert "kepler" in set(raw.meta["sampling"])
    np.testing.assert_array_equal(raw.curve(3)[0], simulate_curve(resolve_config(
        SimulateConfig, sets=["seed=7", "samplings.kepler=1"]), 3).time)

    bad = run_cli("generate", "-n", "5", "-o", tmp_path / "x.h5", "--set", "types.rotatoin=1")
    assert bad.returncode == 1 and "did you mean 'types.rotation'" in bad.stderr
    assert not (tmp_path / "x.h5").exists()


def test_native_cadence_curves_go_through_preprocess_and_convert(tmp_path):
    """A TESS sector (18,290 points) and a Kepler quarter (4,407) through the real commands."""
    raw, spectra, windows = tmp_path / "raw.h5", tmp_path / "spectra.h5", tmp_path / "ts.h5"
    sets = ["samplings={regular: 0, random_gaps: 0, variable_cadence: 0, seasonal: 0, tess: 1, kepler: 1}"]
    res = run_cli("generate", "-n", "2", "--seed", "3", "-o", raw, "-j", "1", *[a for s in sets for a in ("--set", s)])
    assert res.returncode == 0, res.stderr
    lengths = read_raw(raw).meta["n_points"]
    assert lengths.tolist() == [18290, 4407]  # seed 3: one of each
    res = run_cli("preprocess", "-i", raw, "-o", spectra, "-j", "1")
    assert res.returncode == 0, res.stderr
    with h5py.File(spectra, "r") as f:
        assert f["psd"].shape[0] == 2 and not f["failed"][:].any()
    res = run_cli("convert", "-i", raw, "-o", windows)
    assert res.returncode == 0, res.stderr
    with h5py.File(windows, "r") as f:
        per_curve = np.bincount(f["source"][:], minlength=2)
    np.testing.assert_array_equal(per_curve, -(-lengths // 512))  # every point in a 512-point window


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_leaves_no_file(tmp_path, workers):
    out = tmp_path / "mock.h5"
    partial = tmp_path / "mock.h5.partial"
    env = {**os.environ, "CI": "true", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "lcgen", "generate", "-n", "1000000", "-o", str(out),
                             "-j", str(workers)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    try:
        deadline = time.time() + 60
        # Interrupt once chunks are being written (the file has grown past its header).
        while not (partial.exists() and partial.stat().st_size > 2**20) and time.time() < deadline:
            time.sleep(0.02)
        assert partial.exists(), "generate never started writing"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, err
    assert not out.exists() and not partial.exists()
