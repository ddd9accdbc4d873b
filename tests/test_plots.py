"""Figures: headless PNGs of the expected pixel size, from data made in the test."""

import csv
import struct

import h5py
import numpy as np
import pytest

from lcgen.errors import LcgenError
from lcgen.plots import DPI, _hidden_spans, plot_reconstructions, plot_training_curves, read_history


def png_size(path):
    """(width, height) from a PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def write_history(path, epochs=4):
    cols = ["epoch", "lr", "train_loss", "train_masked", "train_unmasked", "val_loss", "val_masked",
            "val_unmasked", "seconds", "samples_per_s"]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for e in range(1, epochs + 1):
            w.writerow([e, 1e-3 / e, 1 / e, 2 / e, 0.1 / e, 1.1 / e, 2.2 / e, 0.11 / e, 3.0, 100.0])


def test_training_curves_png(tmp_path):
    hist = tmp_path / "history.csv"
    write_history(hist)
    h = read_history(hist)
    assert h["val_masked"].tolist() == pytest.approx([2.2, 1.1, 2.2 / 3, 0.55])
    out = plot_training_curves(hist, tmp_path / "figures" / "training.png", title="tiny run")
    assert out.stat().st_size > 10_000
    assert png_size(out) == (10 * DPI, 7 * DPI)


def test_history_errors(tmp_path):
    with pytest.raises(LcgenError, match="does not exist; train the run first"):
        read_history(tmp_path / "missing.csv")
    (tmp_path / "h.csv").write_text("epoch,foo\n1,2\n")
    with pytest.raises(LcgenError, match="lacks the columns lr, train_loss, val_loss"):
        read_history(tmp_path / "h.csv")


@pytest.mark.parametrize("kind", ["timeseries", "spectra"])
def test_reconstruction_png(tmp_path, kind):
    rng = np.random.default_rng(1)
    L = 64
    coord = np.sort(rng.uniform(0, 50, L)) if kind == "timeseries" else np.geomspace(0.01, 10, L)
    examples = []
    for label in ("sinusoid", "drw", "qpo"):
        values = np.sin(coord / 3) + 0.1 * rng.normal(size=L)
        hidden = np.zeros(L, bool)
        hidden[10:20] = True
        valid = np.arange(L) < 60
        examples.append(dict(coord=coord, values=values, valid=valid, hidden=hidden, label=label,
                             reconstructed=np.sin(coord / 3), linear=values, signal=np.sin(coord / 3)))
    out = plot_reconstructions(examples, tmp_path / f"{kind}.png", kind=kind, title="examples")
    assert out.stat().st_size > 10_000
    assert png_size(out) == (2 * 6.5 * DPI, 2 * 3.0 * DPI)


def test_hidden_spans_extend_halfway_to_neighbours():
    x = np.array([0.0, 1.0, 2.0, 4.0, 6.0])
    hidden = np.array([1, 0, 1, 1, 0], bool)
    assert _hidden_spans(x, hidden) == [(0.0, 0.5), (1.5, 5.0)]


# --------------------------------------------------------------------------------------------
# A run's figures, and the evaluate/plot commands, on a tiny spectral run


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    from lcgen.train.trainer import TrainConfig, fit
    from tests.test_data import write_spectra

    d = tmp_path_factory.mktemp("mlprun")
    write_spectra(d / "spectra.h5", n=40, length=64)
    with h5py.File(d / "spectra.h5", "r+") as f:  # a log-spaced grid, as lcgen preprocess makes
        del f["frequency"]
        f["frequency"] = np.geomspace(0.01, 5, 64)
    result = fit(TrainConfig(model_name="mlp", preset="tiny", data=str(d / "spectra.h5"), epochs=1,
                             batch_size=8, lr=1e-3, runs_dir=str(d / "runs"), device="cpu",
                             test_fraction=0.2), name="tiny")
    return result["run_dir"]


def test_plot_run_writes_every_figure(mlp_run):
    from lcgen.evaluate.scoring import evaluate_run
    from lcgen.plots import plot_run

    (mlp_run / "metrics.json").unlink(missing_ok=True)
    paths = plot_run(mlp_run, n_examples=3, seed=2)
    assert [p.name for p in paths] == ["training.png", "reconstructions.png"]  # not evaluated yet
    evaluate_run(mlp_run)
    paths = plot_run(mlp_run, n_examples=3, seed=2)
    assert [p.name for p in paths] == ["training.png", "reconstructions.png", "metrics.png"]
    assert all(p.parent == mlp_run / "figures" and p.stat().st_size > 10_000 for p in paths)
    assert png_size(paths[0]) == (10 * DPI, 7 * DPI)
    assert png_size(paths[1]) == (2 * 6.5 * DPI, 2 * 3.0 * DPI)  # 3 panels: 2 columns, 2 rows
    assert png_size(paths[2]) == (2 * 5.0 * DPI, 4.2 * DPI)  # by block size, by hidden fraction


def test_evaluate_and_plot_commands(mlp_run):
    import json

    from typer.testing import CliRunner

    from lcgen.cli import app

    runner = CliRunner()
    test_metrics = mlp_run / "metrics.json"  # the test split's (written by an earlier test, or not yet)
    before = test_metrics.read_bytes() if test_metrics.exists() else None
    r = runner.invoke(app, ["evaluate", str(mlp_run), "--split", "val", "--mask-seed", "4"],
                      env={"COLUMNS": "150"})
    assert r.exit_code == 0, r.output
    metrics = json.loads((mlp_run / "metrics-val.json").read_text())  # metrics.json stays the test split's
    assert metrics["split"] == "val" and metrics["mask"]["seed"] == 4 and metrics["data_kind"] == "spectra"
    assert (test_metrics.read_bytes() if test_metrics.exists() else None) == before  # never overwritten
    assert f"; wrote {mlp_run / 'metrics-val.json'}" in r.output.replace("\n", "")  # "Scored RUN/best.pt; wrote ..."
    assert "linear interpolation" in r.output and "masked MSE by block size" in r.output
    assert "mlp: " in r.output and "than linear interpolation (ratio" in r.output
    r = runner.invoke(app, ["plot", str(mlp_run), "--examples", "2"], env={"COLUMNS": "150"})
    assert r.exit_code == 0, r.output
    assert "reconstructions.png" in r.output and png_size(mlp_run / "figures" / "reconstructions.png") == (1300, 300)
    r = runner.invoke(app, ["evaluate", str(mlp_run.parent / "nothing")])
    assert r.exit_code != 0 and "does not exist; train one with `lcgen train MODEL`" in str(r.exception)


def test_spectra_baseline_runs_in_grid_steps_on_the_same_masks(mlp_run):
    import torch

    from lcgen.train.data import load_split
    from lcgen.evaluate.scoring import EvaluateConfig, evaluate_run
    from lcgen.masking import fixed_mask
    from tests.test_evaluate import interpolate_by_loops

    metrics = evaluate_run(mlp_run, EvaluateConfig(mask_seed=3), output=mlp_run / "m3.json")
    rows = np.sort(load_split(mlp_run)["test"])
    with h5py.File(metrics["data"]) as f:
        psd, mask, freq = f["psd"][:][rows], f["mask"][:][rows].astype(bool), f["frequency"][:]
    ranges = {k: metrics["mask"][k] for k in ("min_block", "max_block", "min_ratio", "max_ratio")}
    hidden = fixed_mask(torch.from_numpy(mask), torch.from_numpy(rows), seed=3, **ranges).numpy()
    sel = mask & hidden

    def pooled(coord):
        ref = np.stack([interpolate_by_loops(coord, psd[i].astype(np.float64), mask[i] & ~hidden[i])
                        for i in range(len(rows))])
        return ((ref - psd)[sel] ** 2).mean()

    steps, in_frequency = pooled(np.arange(64.0)), pooled(freq)
    assert metrics["overall"]["linear"]["masked_mse"] == pytest.approx(steps, rel=1e-6)
    assert abs(steps - in_frequency) > 1e-3 * steps  # the grid is log-spaced: the two differ
