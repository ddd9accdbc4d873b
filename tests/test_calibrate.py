"""Post-hoc variance calibration: run lengths by hand, known miscalibrations recovered on
synthetic Gaussian predictions, and the fit applied by evaluate and fill."""

import numpy as np
import pytest
import torch

from lcgen.evaluate.calibrate import (CHECK_LEVELS, RUN_EDGES, apply_calibration, calibrated_prediction,
                                     calibrated_variance, coverage, fit_calibration, fit_grouped_calibration,
                                     fit_scale, half_width, hidden_run_lengths, pooled_bins, run_bin, share_group)


def test_hidden_run_lengths_and_bins_by_hand():
    hidden = np.array([[1, 1, 0, 1, 0, 0, 1, 1, 1, 1],
                       [1, 0, 0, 0, 0, 0, 0, 0, 1, 1]], bool)  # a run at a row's end never joins the next row
    np.testing.assert_array_equal(hidden_run_lengths(hidden), [[2, 2, 0, 1, 0, 0, 4, 4, 4, 4],
                                                               [1, 0, 0, 0, 0, 0, 0, 0, 2, 2]])
    np.testing.assert_array_equal(hidden_run_lengths(hidden[1]), [1, 0, 0, 0, 0, 0, 0, 0, 2, 2])
    assert hidden_run_lengths(np.ones((1, 40), bool)).max() == 40
    # bins: 1 | 2 | 3-4 | 5-8 | 9-16 | 17-32 | > 32
    np.testing.assert_array_equal(run_bin([1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 33, 500]),
                                  [0, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6])


def synthetic(rng, n, claimed_over_true):
    """Residuals of a Gaussian predictor whose claimed variance is ``claimed_over_true`` times
    the true variance of the signal part; the noise part (e²) is stated exactly."""
    true_var = rng.lognormal(-2.0, 1.0, n)  # the signal's uncertainty varies from point to point
    noise_var = np.full(n, 0.01)
    resid = rng.normal(0.0, np.sqrt(true_var + noise_var))
    return resid, true_var * claimed_over_true, noise_var


def test_fit_scale_recovers_a_known_miscalibration():
    rng = np.random.default_rng(0)
    for factor in (0.25, 1.0, 3.0):  # intervals too narrow, right, too wide
        resid, model_var, noise_var = synthetic(rng, 20_000, factor)
        a = fit_scale(resid, model_var, noise_var)
        assert a == pytest.approx(1 / factor, rel=0.06), (factor, a)
        # σ(20,000 draws) of a coverage is ~0.003: calibrated within 1 point at 68 % and 95 %
        c = coverage(resid, a * model_var, noise_var, 1.0, (0.6827, 0.95))
        np.testing.assert_allclose(c, [0.6827, 0.95], atol=0.01)
    # an over-wide predictor really is over-covering before the fit, at both levels
    resid, model_var, noise_var = synthetic(rng, 20_000, 3.0)
    c = coverage(resid, model_var, noise_var, 1.0, (0.6827, 0.95))
    assert c[0] > 0.80 and c[1] > 0.98


def test_fit_calibration_scales_each_run_length_bin_on_its_own():
    rng = np.random.default_rng(1)
    # single hidden points: intervals 3x too wide in variance; runs of 20: 4x too narrow;
    # runs of 40 (> 32): right
    parts = [(*synthetic(rng, 8_000, f), np.full(8_000, n)) for f, n in ((3.0, 1), (0.25, 20), (1.0, 40))]
    resid, model_var, noise_var, length = (np.concatenate(x) for x in zip(*parts))
    cal = fit_calibration(resid, model_var, noise_var, length)
    bins = [run_bin(1), run_bin(20), run_bin(40)]
    assert [int(b) for b in bins] == [0, 5, 6]
    for b, expect in zip(bins, (1 / 3, 4.0, 1.0)):
        assert cal["scales"][b] == pytest.approx(expect, rel=0.08)
        np.testing.assert_allclose(cal["coverage_after"]["by_bin"][b], [0.6827, 0.95], atol=0.015)
    # bins with too few points (here none: runs of 2, 3-4, ...) are fitted with their nearest bins
    assert cal["n_points"][1] == 0 and cal["scales"][1] == cal["scales"][0]
    assert cal["scales"][4] == cal["scales"][5]  # 9-16: pooled with 5-8 (empty) and 17-32
    assert pooled_bins([0, 0, 50, 500, 10], 2, 200) == [1, 2, 3] and pooled_bins([300, 5], 1, 200) == [0, 1]
    # before: wrong in both directions, by bin; one scale for all could not fix both
    before = cal["coverage_before"]["by_bin"]
    assert before[0][0] > 0.8 and before[5][0] < 0.45
    np.testing.assert_allclose(cal["coverage_after"]["overall"], [0.6827, 0.95], atol=0.01)
    assert cal["dof"] is None or cal["dof"] >= 20  # Gaussian residuals: Gaussian (or near-Gaussian) tails
    one = coverage(resid[length == 20], cal["global_scale"] * model_var[length == 20], 0.01, 1.0, (0.6827,))
    assert abs(one[0] - 0.6827) > 0.05


def test_calibrated_variance_applies_the_scale_of_each_runs_bin():
    model = torch.nn.Linear(1, 1)  # any model: the calibration is an attribute
    raw = np.ones((1, 8))
    hidden = np.array([[1, 0, 1, 1, 0, 0, 0, 0]], bool)
    assert calibrated_variance(model, raw, hidden) is raw  # no calibration (old runs): unchanged
    model.variance_calibration = {"edges": list(RUN_EDGES), "scales": [2.0, 5.0, 1, 1, 1, 1, 1]}
    np.testing.assert_allclose(calibrated_variance(model, raw, hidden), [[2, 2, 5, 5, 2, 2, 2, 2]])


def test_fill_applies_the_calibration_to_the_models_variance():
    from lcgen.fill import fill_curves
    from lcgen.models import create_model

    torch.manual_seed(0)
    model = create_model("transformer", "tiny", input_length=64, variance_head=True).eval()
    t = np.arange(60) * 0.5
    t = np.delete(t, np.arange(20, 26))  # one 6-point gap; the curve fits in one window (no blending)
    y = np.sin(t)
    err = np.full(t.size, 0.1)
    plain = fill_curves(model, [(t, y, err)])[0]
    model.variance_calibration = {"edges": list(RUN_EDGES), "scales": [1, 1, 1, 4.0, 1, 1, 1]}  # runs of 5-8
    scaled = fill_curves(model, [(t, y, err)])[0]
    f = plain.filled
    assert f.sum() == 6 and np.array_equal(f, scaled.filled)
    np.testing.assert_allclose(scaled.flux[f], plain.flux[f])  # the mean is untouched
    # flux_err² = (a σ² + e²) IQR², e the window's median normalised error: the model part scales by a
    noise = np.median(err) ** 2
    np.testing.assert_allclose(scaled.flux_err[f] ** 2 - noise, 4 * (plain.flux_err[f] ** 2 - noise), rtol=1e-6)
    # Student-t tails: ±flux_err is still the central 68.27 % interval, t's half-width times the scale
    from scipy import stats

    model.variance_calibration["dof"] = 3.0
    heavy = fill_curves(model, [(t, y, err)])[0]
    np.testing.assert_allclose(heavy.flux_err[f], scaled.flux_err[f] * stats.t.ppf(0.8413447, 3.0), rtol=1e-6)
    # grouped by noise share: this curve's points all fall in one group, whose scales and tails they get
    flat = {"edges": list(RUN_EDGES), "scales": [1, 1, 1, 4.0, 1, 1, 1]}
    for share_edges, groups in (([1e9], [{**flat, "dof": 3.0}, {**flat, "dof": None, "scales": [9.0] * 7}]),
                                ([1e-9], [{**flat, "dof": None, "scales": [9.0] * 7}, {**flat, "dof": 3.0}])):
        model.variance_calibration = {"share_edges": share_edges, "groups": groups}
        grouped = fill_curves(model, [(t, y, err)])[0]
        np.testing.assert_allclose(grouped.flux_err[f], heavy.flux_err[f], rtol=1e-6)


def test_heavy_tailed_residuals_get_student_t_tails_and_both_levels_right():
    rng = np.random.default_rng(2)
    n = 30_000
    model_var = rng.lognormal(-2.0, 1.0, n)
    noise_var = np.full(n, 1e-4)
    resid = np.sqrt(0.5 * model_var + noise_var) * rng.standard_t(3.0, n)  # t3 residuals, scale² = σ²/2
    gauss = fit_calibration(resid, model_var, noise_var, np.ones(n), dofs=(None,))
    cal = fit_calibration(resid, model_var, noise_var, np.ones(n))
    assert cal["dof"] in (2.5, 3.0, 4.0)
    assert cal["reliability_error"]["gaussian"] > 3 * cal["reliability_error"][f"t{cal['dof']:g}"]
    np.testing.assert_allclose(cal["coverage_after"]["overall"], [0.6827, 0.95], atol=0.012)
    # a Gaussian with the best scale cannot get both levels: 95 % falls short
    assert gauss["dof"] is None and gauss["coverage_after"]["overall"][1] < 0.93


def test_student_t_scores_against_scipy_and_monte_carlo():
    from scipy import stats

    from lcgen.evaluate.scoring import calibration_sums

    rng = np.random.default_rng(3)
    nu, n = 3.0, 100_000
    mu, s = rng.normal(size=(1, n)), rng.uniform(0.2, 2.0, (1, n))
    y = mu + s * rng.standard_t(nu, (1, n))
    sums = calibration_sums(mu, s ** 2, y, np.ones((1, n), bool), dof=nu)
    assert sums["in68"][0] / n == pytest.approx(0.6827, abs=0.005)  # sd ~0.0015
    assert sums["in95"][0] / n == pytest.approx(0.95, abs=0.003)
    np.testing.assert_allclose(sums["nll"][0], -stats.t.logpdf(y, nu, loc=mu, scale=s).sum(), rtol=1e-9)
    # CRPS = E|X − y| − ½ E|X − X'| by Monte Carlo on a few points
    k = 4
    x = mu[0, :k, None] + s[0, :k, None] * rng.standard_t(nu, (k, 400_000))
    x2 = mu[0, :k, None] + s[0, :k, None] * rng.standard_t(nu, (k, 400_000))
    ref = np.abs(x - y[0, :k, None]).mean(1) - 0.5 * np.abs(x - x2).mean(1)
    one = calibration_sums(mu[0, :k, None], s[0, :k, None] ** 2, y[0, :k, None], np.ones((k, 1), bool), dof=nu)
    np.testing.assert_allclose(one["crps"], ref, rtol=0.03, atol=3e-3)
    # a very large dof is the Gaussian
    big = calibration_sums(mu, s ** 2, y, np.ones((1, n), bool), dof=1e7)
    gauss = calibration_sums(mu, s ** 2, y, np.ones((1, n), bool))
    for key in ("in68", "in95", "nll", "crps"):
        np.testing.assert_allclose(big[key], gauss[key], rtol=1e-5)
    # ν per position: each row scored with its own tails, np.inf the Gaussian
    dof = np.array([[3.0], [np.inf]])
    both = calibration_sums(np.vstack([mu, mu]), np.vstack([s, s]) ** 2, np.vstack([y, y]), np.ones((2, n), bool),
                            dof=dof)
    for key in ("in68", "in95", "nll", "crps"):
        np.testing.assert_allclose(both[key], [sums[key][0], gauss[key][0]], rtol=1e-12)


def noise_and_model_dominated(rng, n):
    """Hidden points of two kinds: noise-dominated (σ²/e² ~ 0.01, Gaussian residuals, σ claimed
    2x too large) and model-dominated (σ²/e² ~ 10^2, t3 residuals of scale² σ²/2), runs of 1-40."""
    quiet_var, quiet_noise = rng.lognormal(-6.0, 0.5, n), np.full(n, 0.25)
    quiet = rng.normal(0.0, np.sqrt(quiet_var / 2 + quiet_noise))
    loud_var, loud_noise = rng.lognormal(-2.0, 0.5, n), np.full(n, 1e-3)
    loud = np.sqrt(0.5 * loud_var + loud_noise) * rng.standard_t(3.0, n)
    length = rng.integers(1, 41, 2 * n)
    return (np.concatenate([quiet, loud]), np.concatenate([quiet_var, loud_var]),
            np.concatenate([quiet_noise, loud_noise]), length)


def test_grouped_calibration_gets_gaussian_noise_and_heavy_model_tails_both_right():
    """Where the noise dominates the residual is Gaussian, where the model's error does it is
    heavy-tailed: one t for all makes the noise-dominated intervals too wide at 95 % (TESS 2-min
    against Kepler long cadence); a fit per noise-share group gets both within a point."""
    rng = np.random.default_rng(4)
    n = 20_000  # σ of a coverage ~0.003
    resid, model_var, noise_var, length = noise_and_model_dominated(rng, n)
    group = share_group(model_var, noise_var, (0.1, 1.0))
    assert (group[:n] == 0).all() and (group[n:] == 2).all()
    one = fit_calibration(resid, model_var, noise_var, length)
    cal = fit_grouped_calibration(resid, model_var, noise_var, length)
    assert cal["n_points"] == [n, 0, n] and cal["groups"][1] == fit_calibration(resid, model_var, noise_var, length)
    assert cal["groups"][0]["dof"] is None or cal["groups"][0]["dof"] >= 20  # Gaussian noise: Gaussian tails
    assert cal["groups"][2]["dof"] in (2.5, 3.0, 4.0)
    var, dof = apply_calibration(cal, model_var, length, noise_var)
    for part in (slice(0, n), slice(n, 2 * n)):
        half = half_width(np.asarray(CHECK_LEVELS)[None, :], dof[part, None])
        got = (np.abs(resid[part])[:, None] <= half * np.sqrt(var[part] + noise_var[part])[:, None]).mean(0)
        np.testing.assert_allclose(got, CHECK_LEVELS, atol=0.012)
    np.testing.assert_allclose(cal["coverage_after"]["by_group"][0], CHECK_LEVELS, atol=0.012)
    np.testing.assert_allclose(cal["coverage_after"]["overall"], CHECK_LEVELS, atol=0.01)
    # one t for both (measured t7): the noise-dominated intervals too wide, the others too narrow
    # (0.983 and 0.907 at 95 %)
    quiet, loud = (coverage(resid[part], model_var[part] * np.asarray(one["scales"])[run_bin(length[part])],
                            noise_var[part], 1.0, CHECK_LEVELS, one["dof"]) for part in (slice(0, n), slice(n, 2 * n)))
    assert quiet[1] > 0.975 and loud[1] < 0.925


def test_calibrations_stored_before_the_groups_apply_as_they_did():
    model = torch.nn.Linear(1, 1)
    raw = np.ones((1, 8))
    hidden = np.array([[1, 0, 1, 1, 0, 0, 0, 0]], bool)
    assert calibrated_prediction(model, raw, hidden, 0.5) == (raw, None)
    model.variance_calibration = {"edges": list(RUN_EDGES), "scales": [2.0, 5.0, 1, 1, 1, 1, 1], "dof": 3.0}
    var, dof = calibrated_prediction(model, raw, hidden, np.full((1, 8), 1e-6))  # any noise share: one group
    np.testing.assert_allclose(var, [[2, 2, 5, 5, 2, 2, 2, 2]])
    assert (dof == 3.0).all()
    model.variance_calibration["dof"] = None
    assert np.isinf(calibrated_prediction(model, raw, hidden, 10.0)[1]).all()  # Gaussian
    # grouped: the group of each position by σ²/e², its own scales and tails
    flat = {"edges": list(RUN_EDGES), "dof": None}
    model.variance_calibration = {"share_edges": [1.0], "groups": [{**flat, "scales": [3.0] * 7},
                                                                    {**flat, "scales": [7.0] * 7, "dof": 4.0}]}
    noise = np.array([[2.0, 0.5, 2.0, 0.5, 0.0, 1.0, 2.0, 2.0]])  # σ²/e² 0.5 | 2 | ... (e² = 0: the last group)
    var, dof = calibrated_prediction(model, raw, hidden, noise)
    np.testing.assert_allclose(var, [[3, 7, 3, 7, 7, 7, 3, 3]])
    np.testing.assert_array_equal(dof, [[np.inf, 4, np.inf, 4, 4, 4, np.inf, np.inf]])
