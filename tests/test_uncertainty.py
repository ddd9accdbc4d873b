"""Predictive variance: the NLL loss, the variance heads, calibration metrics, the GP and the
forecast baselines, and `lcgen evaluate` on a run with a variance head."""

import json
import math

import numpy as np
import pytest
import torch

from lcgen.evaluate.scoring import (calibration_sums, extrapolation_baseline, forecast_mask, linear_baseline,
                            persistence_baseline, score_batch, summarise)
from lcgen.models import create_model
from lcgen.train.trainer import TrainConfig, complete_config, gaussian_nll_sums, model_from_checkpoint
from tests.conftest import run_cli, torch_threads


def test_gaussian_nll_matches_a_hand_computation():
    values = torch.tensor([[1.0, 2.0, 0.0, 5.0]])
    pred = torch.tensor([[0.0, 2.5, 1.0, 9.0]])
    log_var = torch.log(torch.tensor([[1.0, 0.25, 4.0, 1.0]]))
    err = torch.tensor([[0.0, 0.5, 0.0, 0.0]])
    batch = {"values": values, "valid": torch.tensor([[True, True, True, False]]),
             "hidden": torch.tensor([[True, True, False, False]]), "flux_err": err}
    sums = gaussian_nll_sums(pred, log_var, batch)
    # hidden: s² = 1 (r² = 1) and 0.25 + 0.25 = 0.5 (r² = 0.25 / 0.5); visible: s² = 4, r² = 1/4
    h = 0.5 * (math.log(2 * math.pi * 1.0) + 1.0) + 0.5 * (math.log(2 * math.pi * 0.5) + 0.5)
    v = 0.5 * (math.log(2 * math.pi * 4.0) + 0.25)
    np.testing.assert_allclose(sums.numpy(), [h, 2, v, 1], rtol=1e-6)  # padding (r = 4) never counts
    # Huber tails: beyond `tail` sigma the penalty grows linearly, 2 c |r| - c²
    batch["values"] = torch.tensor([[10.0, 2.5, 1.0, 0.0]])
    tailed = gaussian_nll_sums(pred, log_var, batch, tail=3.0)
    expect = 0.5 * (math.log(2 * math.pi) + 2 * 3.0 * 10.0 - 9.0) + 0.5 * math.log(2 * math.pi * 0.5)
    assert tailed[0].item() == pytest.approx(expect, rel=1e-6)
    # beta-NLL with beta = 1: each point weighted by its (detached) variance, so the gradient on
    # the mean is the MSE's, pred - y, whatever the variance
    pred = pred.clone().requires_grad_(True)
    batch["values"] = values
    sums = gaussian_nll_sums(pred, log_var, batch, beta=1.0)
    assert sums[0].item() == pytest.approx(1.0 * 0.5 * (math.log(2 * math.pi) + 1.0)
                                           + 0.5 * 0.5 * (math.log(2 * math.pi * 0.5) + 0.5), rel=1e-6)
    sums[0].backward()
    np.testing.assert_allclose(pred.grad.numpy(), [[-1.0, 0.5, 0.0, 0.0]], rtol=1e-6)


@pytest.mark.parametrize("name", ["transformer", "unet", "mlp"])
def test_every_model_has_a_variance_head_and_mean_only_checkpoints_load(name):
    model = create_model(name, "tiny", input_length=64, variance_head=True)
    x = {"values": torch.randn(3, 64), "valid": torch.ones(3, 64, dtype=torch.bool),
         "hidden": torch.rand(3, 64) < 0.3, "time": torch.cumsum(torch.rand(3, 64), 1)}
    out = model.forward_batch(x)
    assert out["log_var"].shape == out["reconstructed"].shape == (3, 64)
    from lcgen.models.layers import LOG_VAR_RANGE
    assert LOG_VAR_RANGE[0] < out["log_var"].min() and out["log_var"].max() < LOG_VAR_RANGE[1]
    (out["reconstructed"].sum() + out["log_var"].sum()).backward()
    assert all(p.grad is not None for p in model.parameters())
    # a checkpoint written before the variance head existed has no such key in its config
    plain = create_model(name, "tiny", input_length=64)
    from lcgen.config import config_to_dict
    config = {k: v for k, v in config_to_dict(plain.config).items()
              if k not in ("variance_head", "interp_residual", "time_attention")}
    ckpt = {"model_name": name, "model_config": config, "state_dict": plain.state_dict()}
    loaded = model_from_checkpoint(ckpt)
    assert "log_var" not in loaded.forward_batch(x)


def test_nll_turns_the_variance_head_on_and_refuses_it_off():
    cfg = complete_config(TrainConfig(model_name="transformer", preset="tiny", loss="nll"))
    assert cfg.model["variance_head"] is True
    from lcgen.errors import LcgenError
    with pytest.raises(LcgenError, match="variance head"):
        complete_config(TrainConfig(model_name="transformer", preset="tiny", loss="nll",
                                    model={"variance_head": False}))


@pytest.fixture
def one_thread():
    """One torch thread for a loop of many small steps: on a busy machine two spinning threads
    made this ~1 CPU-second test take minutes of wall time."""
    with torch_threads(1):
        yield


def test_nll_training_on_pure_noise_learns_the_noise_variance(one_thread):
    torch.manual_seed(0)
    sigma = 0.5
    model = create_model("mlp", "tiny", input_length=64, variance_head=True)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    valid = torch.ones(64, 64, dtype=torch.bool)

    def noise_batch():
        return {"values": sigma * torch.randn(64, 64), "valid": valid, "hidden": torch.rand(64, 64) < 0.4}

    for _ in range(100):  # ~0.6 CPU s; the variance lands within 3 % of sigma² (seeds 0-2)
        batch = noise_batch()
        out = model.forward_batch(batch)
        sums = gaussian_nll_sums(out["reconstructed"], out["log_var"], batch)
        opt.zero_grad()
        (sums[0] / sums[1] + sums[2] / sums[3]).backward()
        opt.step()
    with torch.no_grad():
        batch = noise_batch()
        out = model.forward_batch(batch)
    var = out["log_var"].exp()[batch["hidden"]].mean().item()
    # nothing to predict in white noise: the learned variance is the noise variance (0.25)
    assert 0.7 * sigma ** 2 < var < 1.4 * sigma ** 2, var


def test_calibration_of_synthetic_gaussian_predictions():
    rng = np.random.default_rng(1)
    n = 200_000
    mu = rng.normal(size=(4, n // 4))
    s = rng.uniform(0.2, 3.0, size=mu.shape)
    y = mu + s * rng.standard_normal(mu.shape)
    select = np.ones(mu.shape, bool)
    scores = score_batch(y, select, select, {"model": mu}, {"model": s ** 2})
    row = summarise(scores)["model"]
    # binomial sd of a coverage at n = 2e5 is ~0.001
    assert row["coverage_68"] == pytest.approx(0.6827, abs=0.003)
    assert row["coverage_95"] == pytest.approx(0.9500, abs=0.003)
    # NLL exact by construction; CRPS against E|X - y| - ½ E|X - X'| by Monte Carlo on a few points
    nll = np.mean(0.5 * (np.log(2 * np.pi * s ** 2) + ((y - mu) / s) ** 2))
    assert row["nll"] == pytest.approx(nll, rel=1e-9)
    k = 5
    x = mu.ravel()[:k, None] + s.ravel()[:k, None] * rng.standard_normal((k, 400_000))
    x2 = mu.ravel()[:k, None] + s.ravel()[:k, None] * rng.standard_normal((k, 400_000))
    ref = np.abs(x - y.ravel()[:k, None]).mean(1) - 0.5 * np.abs(x - x2).mean(1)
    one = calibration_sums(mu.ravel()[:k, None], s.ravel()[:k, None] ** 2, y.ravel()[:k, None],
                           np.ones((k, 1), bool))
    np.testing.assert_allclose(one["crps"], ref, rtol=0.02, atol=2e-3)
    # over-confident predictions (sigma halved) under-cover
    bad = summarise(score_batch(y, select, select, {"model": mu}, {"model": (s / 2) ** 2}))["model"]
    assert bad["coverage_68"] < 0.45 and bad["nll"] > row["nll"]
    # median absolute error of a Gaussian residual: 0.6745 sigma (on unit-variance residuals)
    z = summarise(score_batch((y - mu) / s, select, select, {"model": np.zeros_like(mu)}))["model"]
    assert z["masked_medae"] == pytest.approx(0.6745, abs=0.01)


def test_interpolation_inside_the_transformer_equals_the_baseline():
    from lcgen.models.transformer import interpolate_visible

    rng = np.random.default_rng(3)
    t = np.cumsum(rng.uniform(0.1, 2.0, (5, 40)), 1)
    y = rng.normal(size=(5, 40))
    visible = rng.random((5, 40)) < 0.4
    visible[4] = False  # a row with nothing visible gets 0
    ref = linear_baseline(y, np.ones_like(visible), ~visible, t)
    interp, dt_prev, dt_next = interpolate_visible(torch.tensor(y), torch.tensor(visible), torch.tensor(t))
    np.testing.assert_allclose(interp.numpy(), ref, atol=1e-12)
    i, j = np.argwhere(~visible[:4])[0]
    before = np.flatnonzero(visible[i, :j])
    assert dt_prev[i, j].item() == pytest.approx(t[i, j] - t[i, before[-1]] if before.size else 0.0)


def test_gp_baseline_beats_linear_interpolation_on_an_sho_process():
    from celerite2 import terms

    from lcgen.evaluate.gp import gp_baseline

    rng = np.random.default_rng(2)
    B, L = 8, 96
    time = np.sort(rng.uniform(0, 60, (B, L)), axis=1)
    signal = np.empty((B, L))
    for i in range(B):  # a quasi-periodic SHO process (P ~ 10 d, Q = 5)
        # drawn with this test's generator (celerite2's sample() draws from numpy's global state,
        # which made the test depend on what ran before it): the kernel's covariance, Cholesky
        cov = terms.SHOTerm(sigma=1.0, rho=10.0, Q=5.0).get_value(np.abs(time[i][:, None] - time[i][None, :]))
        signal[i] = np.linalg.cholesky(cov + 1e-6 * np.eye(L)) @ rng.standard_normal(L)
    err = np.full((B, L), 0.1)
    values = signal + err * rng.standard_normal((B, L))
    valid = np.ones((B, L), bool)
    hidden = np.zeros((B, L), bool)
    for i in range(B):
        start = rng.integers(10, L - 30)
        hidden[i, start:start + 16] = True  # one gap of 16 points per window
    mean, var = gp_baseline(values, valid, hidden, time, err)
    lin = linear_baseline(values, valid, hidden, time)
    sel = valid & hidden
    gp_mse, lin_mse = ((mean - values)[sel] ** 2).mean(), ((lin - values)[sel] ** 2).mean()
    assert gp_mse < 0.7 * lin_mse
    z = (values - mean)[sel] / np.sqrt(var[sel] + err[sel] ** 2)
    assert 0.5 < np.mean(np.abs(z) < 1) < 0.9  # its intervals mean something
    np.testing.assert_array_equal(mean[~hidden], values[~hidden])  # what is seen is kept


def test_forecast_mask_and_baselines_by_hand():
    valid = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]], bool)
    hidden = forecast_mask(valid, 2)
    np.testing.assert_array_equal(hidden, [[0, 0, 0, 1, 1, 0], [0, 1, 0, 0, 0, 0]])
    values = np.array([[1.0, 2.0, 3.0, 9.0, 9.0, 0.0], [5.0, 7.0, 0, 0, 0, 0]])
    np.testing.assert_allclose(persistence_baseline(values, valid, hidden)[0, :5], [1, 2, 3, 3, 3])
    t = np.array([0.0, 1.0, 2.0, 3.0, 5.0, 0.0])
    ext = extrapolation_baseline(values, valid, hidden, t, n_fit=3)
    np.testing.assert_allclose(ext[0, :5], [1, 2, 3, 4, 6])  # the line y = 1 + t continued
    np.testing.assert_allclose(ext[1, 1], 5.0)  # one visible point: flat


@pytest.fixture(scope="module")
def nll_run(tmp_path_factory):
    from lcgen.features.convert import ConvertConfig, convert
    from lcgen.simulate.mocks import SimulateConfig, generate
    from lcgen.train.trainer import fit

    d = tmp_path_factory.mktemp("nllrun")
    generate(SimulateConfig(n_samples=24, output=str(d / "raw.h5"), seed=5), workers=1)
    convert(ConvertConfig(input=str(d / "raw.h5"), output=str(d / "ts.h5"), max_length=64, min_points=16))
    result = fit(TrainConfig(model_name="transformer", preset="tiny", data=str(d / "ts.h5"), epochs=1,
                             batch_size=16, lr=3e-3, runs_dir=str(d / "runs"), device="cpu", loss="nll",
                             test_fraction=0.2, model={"input_dim": 3, "interp_residual": True,
                                                       "time_attention": True}), name="nll")
    return result["run_dir"]


def test_evaluate_reports_calibration_gp_and_forecasts_through_the_cli(nll_run):
    r = run_cli("evaluate", nll_run, "--baselines", "linear,mean,gp")
    assert r.returncode == 0, r.stderr + r.stdout
    m = json.loads((nll_run / "metrics.json").read_text())
    assert m["baselines"] == ["linear", "mean", "gp"]
    for name in ("model", "gp"):
        row = m["overall"][name]
        assert 0 < row["coverage_68"] <= row["coverage_95"] <= 1 and np.isfinite(row["nll"]) and row["crps"] > 0
        assert row["masked_medae"] > 0
    assert "coverage_68" not in m["overall"]["linear"]
    assert all("coverage_95" in g["model"] for g in m["by_block_size"])
    assert "68 % coverage" in r.stdout
    r = run_cli("evaluate", nll_run, "--forecast", "8")
    assert r.returncode == 0, r.stderr + r.stdout
    f = json.loads((nll_run / "metrics-forecast.json").read_text())
    assert f["mode"] == "forecast" and set(f["overall"]) == {"model", "persistence", "extrapolation", "mean"}
    assert f["n_masked_positions"] == 8 * f["n_samples"]
    assert "coverage_68" in f["overall"]["model"]
    r = run_cli("evaluate", nll_run, "--baselines", "linear,splines")
    assert r.returncode == 1 and "unknown baseline 'splines'" in r.stdout + r.stderr


def test_calibrate_cli_round_trips_through_the_checkpoint_and_evaluate(nll_run, tmp_path):
    """A tiny nll run, calibrated by the CLI: the fit is in best.pt and last.pt, comes back on the
    loaded model, and evaluate on the validation rows (their training masks) reproduces the
    coverage the fit reported."""
    from lcgen.evaluate.calibrate import RUN_EDGES
    from lcgen.evaluate.scoring import Z68, Z95
    from lcgen.train.trainer import load_checkpoint, load_run

    run = nll_run
    r = run_cli("calibrate", run, "--min-points", 20)  # a tiny run: a few hundred validation points
    assert r.returncode == 0, r.stderr + r.stdout
    assert "Variance calibration of best.pt" in r.stdout
    fits = json.loads((run / "calibration.json").read_text())
    for which in ("best", "last"):
        stored = load_checkpoint(run / f"{which}.pt")["variance_calibration"]
        assert stored == fits[which]
    model, tcfg = load_run(run)
    assert model.variance_calibration == fits["best"]
    assert all(len(g["scales"]) == len(RUN_EDGES) + 1 for g in fits["best"]["groups"])  # per noise-share group
    r = run_cli("evaluate", run, "--split", "val", "--mask-seed", str(tcfg.val_mask_seed))
    assert r.returncode == 0, r.stderr + r.stdout
    m = json.loads((run / "metrics-val.json").read_text())
    assert m["n_masked_positions"] == fits["best"]["n_total"]
    assert [g["scales"] for g in m["variance_calibration"]["groups"]] == [g["scales"] for g in fits["best"]["groups"]]
    row = m["overall"]["model"]
    np.testing.assert_allclose([row["coverage_68"], row["coverage_95"]], fits["best"]["coverage_after"]["overall"],
                               atol=2e-3)
    assert Z68 == 1.0 and Z95 == pytest.approx(1.959964, abs=1e-6)  # the levels the fit reports: ±1 σ, 95 %
    # too few validation points for the default bins, or a missing run directory: a clear error
    from lcgen.evaluate.calibrate import calibrate_run
    from lcgen.errors import LcgenError
    with pytest.raises(LcgenError, match="too few to calibrate on"):
        calibrate_run(run)
    with pytest.raises(LcgenError, match="does not exist"):
        calibrate_run(tmp_path / "nowhere")
