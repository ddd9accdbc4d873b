"""Post-hoc variance calibration: run lengths by hand, known miscalibrations recovered on
synthetic Gaussian predictions, and the fit applied by evaluate and fill."""

import numpy as np
import pytest
import torch

from lcgen.calibrate import (RUN_EDGES, calibrated_variance, coverage, fit_calibration, fit_scale,
                             hidden_run_lengths, run_bin)
from lcgen.evaluate import Z68, Z95


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
    # bins with no points (2, 3-4, ...) take the scale fitted on all points
    assert cal["n_points"][1] == 0 and cal["scales"][1] == cal["global_scale"]
    # before: wrong in both directions, by bin; one scale for all could not fix both
    before = cal["coverage_before"]["by_bin"]
    assert before[0][0] > 0.8 and before[5][0] < 0.45
    np.testing.assert_allclose(cal["coverage_after"]["overall"], [0.6827, 0.95], atol=0.01)
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
