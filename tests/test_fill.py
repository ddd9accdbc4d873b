"""`lcgen fill`: grids and gaps by hand, then a tiny trained model filling cut gaps of sinusoids."""

import numpy as np
import pytest

from lcgen.fill import FillConfig, blend_weights, gap_points, window_starts
from lcgen.io import RawWriter, read_raw
from tests.conftest import run_cli

CADENCE = 0.2


def test_gap_points_by_hand():
    t = np.array([0.0, 1.0, 2.0, 5.0, 6.0, 13.0])
    gaps, n_gaps, n_points = gap_points(t, 1.0)
    np.testing.assert_allclose(gaps, [3, 4, 7, 8, 9, 10, 11, 12])
    assert (n_gaps, n_points) == (0, 0)
    # the 7-day gap (6 → 13) is longer than max_gap; the 3-day one (2 → 5) is kept
    gaps, n_gaps, n_points = gap_points(t, 1.0, max_gap=4.0, forecast=2.0)
    np.testing.assert_allclose(gaps, [3, 4, 14, 15])  # forecast points are always kept
    assert (n_gaps, n_points) == (1, 6)
    # an observation within half a cadence of a grid point fills it (jittered times)
    gaps, _, _ = gap_points(np.array([0.0, 1.3, 2.1, 2.9]), 1.0)
    assert gaps.size == 0


def test_windows_cover_everything_and_blend_to_one_at_half_overlap():
    for n in (5, 64, 100, 200):
        starts = window_starts(n, 64)
        covered = np.zeros(n, bool)
        for s in starts:
            covered[s:s + 64] = True
        assert covered.all() and starts[-1] == max(n - 64, 0)
    w = blend_weights(64)
    total = w[32:] + w[:32]  # two windows overlapping by half
    np.testing.assert_allclose(total, 1.0, atol=1e-12)


def sine_curves(rng, n_curves, n_points, gap=None):
    """Regularly sampled noisy sinusoids (P 5-15 d); with ``gap``, points [a, a + gap) are cut and
    returned as the truth."""
    times, fluxes, errors, cut = [], [], [], []
    for _ in range(n_curves):
        t = 100.0 + CADENCE * np.arange(n_points)
        err = np.full(n_points, 0.05)
        y = 10 + rng.uniform(0.5, 2) * np.sin(2 * np.pi * t / rng.uniform(5, 15) + rng.uniform(0, 6)) \
            + err * rng.standard_normal(n_points)
        if gap:
            a = int(rng.integers(20, n_points - gap - 20))
            keep = np.ones(n_points, bool)
            keep[a:a + gap] = False
            cut.append((t[~keep], y[~keep]))
            t, y, err = t[keep], y[keep], err[keep]
        times.append(t)
        fluxes.append(y)
        errors.append(err)
    return times, fluxes, errors, cut


@pytest.fixture(scope="module")
def sine_run(tmp_path_factory):
    from lcgen.features.convert import ConvertConfig, convert

    d = tmp_path_factory.mktemp("fillrun")
    rng = np.random.default_rng(0)
    times, fluxes, errors, _ = sine_curves(rng, 40, 256)
    with RawWriter(d / "raw.h5", {"made_by": "tests"}) as w:
        w.append(times, fluxes, errors, meta={"lc_type": ["sinusoid"] * 40})
    convert(ConvertConfig(input=str(d / "raw.h5"), output=str(d / "ts.h5"), max_length=64, min_points=32))
    # through the CLI: a run with a variance head is calibrated on its validation split at the
    # end, unless (as this tiny one) the split has too few hidden points; it then says so
    r = run_cli("train", "transformer", "--preset", "tiny", "--data", d / "ts.h5", "--epochs", 6, "--batch-size", 16,
                "--lr", 3e-3, "--device", "cpu", "--name", "sine", "--set", f"runs_dir={d / 'runs'}",
                "--set", "loss=nll", "--set", "mask.max_block=16", "--set", "mask.max_ratio=0.5",
                "--set", "model.interp_residual=true", "--set", "model.input_dim=3")
    assert r.returncode == 0, r.stderr + r.stdout
    run = d / "runs" / "transformer" / "sine"
    assert "not calibrated" in r.stdout and "too few to calibrate on" in r.stdout
    assert not (run / "calibration.json").exists()
    return run


def test_fine_tuning_a_variance_head_run_calibrates_it_too(sine_run, tmp_path):
    """`lcgen train --init RUN` of a run with a variance head: the variance head comes from RUN's
    settings, not the command line's, and the end-of-training calibration is tried (here it says
    the tiny split is too small; it used to be skipped without a word)."""
    r = run_cli("train", "transformer", "--init", sine_run, "--data", sine_run.parents[2] / "ts.h5", "--epochs", 1,
                "--batch-size", 16, "--lr", 1e-4, "--device", "cpu", "--threads", 1, "--name", "ft",
                "--set", f"runs_dir={tmp_path / 'runs'}", "--set", "loss=nll")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "not calibrated" in r.stdout and "too few to calibrate on" in r.stdout


def test_an_mse_fine_tune_keeps_the_variance_head_and_calibrates_it_again(sine_run, tmp_path):
    """The README's uncertainty recipe ends with `--init NLL_RUN --set loss=mse`: the mean is
    trained on, the variance head stays (untrained: its outputs' weights change only by the
    optimizer's weight decay) and the end-of-training calibration is tried again."""
    import torch

    from lcgen.train.trainer import load_checkpoint

    r = run_cli("train", "transformer", "--init", sine_run, "--data", sine_run.parents[2] / "ts.h5", "--epochs", 1,
                "--batch-size", 16, "--lr", 1e-3, "--device", "cpu", "--threads", 1, "--name", "ftm",
                "--set", f"runs_dir={tmp_path / 'runs'}", "--set", "loss=mse")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "not calibrated" in r.stdout and "too few to calibrate on" in r.stdout
    before = load_checkpoint(sine_run / "best.pt")  # what --init starts from
    after = load_checkpoint(tmp_path / "runs" / "transformer" / "ftm" / "last.pt")
    assert after["model_config"]["variance_head"] and after["train_config"]["loss"] == "mse"
    w0, w1 = before["state_dict"]["head.weight"], after["state_dict"]["head.weight"]
    assert w1.shape[0] == 2
    assert not torch.equal(w1[0], w0[0])  # the mean trained on
    ratio = (w1[1] / w0[1])[w0[1].abs() > 1e-6]
    assert ratio.max() <= 1 and ratio.min() > 0.99  # the log-variance outputs: weight decay only


def test_fill_puts_the_truth_inside_the_band_at_about_the_nominal_rate(sine_run, tmp_path):
    from lcgen.fill import fill_file

    rng = np.random.default_rng(7)
    gap = 12
    times, fluxes, errors, cut = sine_curves(rng, 12, 200, gap=gap)
    with RawWriter(tmp_path / "gappy.h5", {"made_by": "tests"}) as w:
        w.append(times, fluxes, errors, meta={"target": [f"star {i}" for i in range(12)]})
    summary = fill_file(sine_run, tmp_path / "gappy.h5", tmp_path / "filled.h5", FillConfig(cadence=CADENCE))
    assert summary["filled points"] == 12 * gap and summary["has variance"]
    out = read_raw(tmp_path / "filled.h5")
    import h5py
    with h5py.File(tmp_path / "filled.h5") as f:
        filled = f["filled"][:]
    z = []
    for i in range(12):
        t, y, e = out.curve(i)
        f = filled[out.span(i)]
        # observed points are kept exactly, in the input's units
        np.testing.assert_array_equal(t[~f], times[i])
        np.testing.assert_allclose(y[~f], fluxes[i], rtol=1e-6)
        np.testing.assert_allclose(t[f], cut[i][0], atol=1e-9)  # the grid lands on the cut times
        z.append((y[f] - cut[i][1]) / e[f])
    z = np.abs(np.concatenate(z))
    inside1, inside2 = np.mean(z < 1), np.mean(z < 2)
    # nominal 0.68 / 0.95 on 144 points (binomial sd ~0.04 / 0.02): loose, but an overconfident
    # band (sigma = noise only) or a useless one (sigma = the amplitude) fails
    assert 0.45 < inside1 < 0.9, inside1
    assert 0.8 < inside2 <= 1.0, inside2
    assert out.meta["n_filled"].tolist() == [gap] * 12


def test_fill_cli_formats_max_gap_forecast_and_plot(sine_run, tmp_path):
    rng = np.random.default_rng(8)
    times, fluxes, errors, _ = sine_curves(rng, 2, 150, gap=30)  # a 6-day gap each
    with RawWriter(tmp_path / "in.h5", {"made_by": "tests"}) as w:
        w.append(times, fluxes, errors, meta={"target": ["KIC 1", "TIC 2"]})
    r = run_cli("fill", sine_run, tmp_path / "in.h5", "-o", tmp_path / "out.h5", "--max-gap", "3",
                "--forecast", "1")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "gaps left unfilled" in r.stdout
    out = read_raw(tmp_path / "out.h5")
    # the 6-day gaps exceed --max-gap 3: only the forecast (1 d = 5 points past the end) is filled
    assert out.meta["n_filled"].tolist() == [5, 5]
    t, _, _ = out.curve(0)
    assert t[-1] == pytest.approx(times[0][-1] + 5 * CADENCE)
    for fmt in ("csv", "fits"):
        r = run_cli("fill", sine_run, tmp_path / "in.h5", "-o", tmp_path / fmt, "--format", fmt)
        assert r.returncode == 0, r.stderr + r.stdout
    csv = np.loadtxt(tmp_path / "csv" / "KIC_1.csv", delimiter=",", skiprows=1)
    assert csv.shape == (150, 4) and csv[:, 3].sum() == 30
    np.testing.assert_allclose(csv[csv[:, 3] == 0, 0], times[0])
    from astropy.io import fits
    with fits.open(tmp_path / "fits" / "TIC_2.fits") as hdul:
        table = hdul["LIGHTCURVE"].data
        assert table["FILLED"].sum() == 30 and hdul[0].header["OBJECT"] == "TIC 2"
        np.testing.assert_allclose(table["TIME"][~table["FILLED"]], times[1])
        assert np.all(np.isfinite(table["FLUX_ERR"]))
    r = run_cli("plot", tmp_path / "out.h5", "-o", tmp_path / "filled.png")
    assert r.returncode == 0, r.stderr + r.stdout
    assert (tmp_path / "filled.png").stat().st_size > 10_000
    r = run_cli("fill", sine_run, tmp_path / "in.h5", "-o", tmp_path / "x.h5", "--forecast", "-1")
    assert r.returncode == 1 and "forecast" in r.stderr
