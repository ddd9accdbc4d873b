"""The model shipped with lcgen (lcgen/weights/bundled): it loads, records its license and
provenance, and fill/embed use it when no run directory is given."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from lcgen.bundled import BUNDLED_DIR, bundled_run, provenance, resolve_run
from lcgen.io import read_raw
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]


def test_bundled_model_loads_and_records_license_and_provenance():
    from lcgen.train.trainer import load_run

    model, cfg = load_run(bundled_run())
    assert cfg.model_name == "transformer" and cfg.preset == "small" and cfg.loss == "mse"
    assert model.config.input_length == 256 and model.config.variance_head and model.config.interp_residual
    assert model.variance_calibration is not None  # calibrated on its validation split at train end
    assert cfg.epochs >= 1 and cfg.mask.max_days >= 1  # trained on day masks up to days long
    p = provenance()
    assert p["data_preset"] == "missions" and p["seed"] == cfg.seed
    assert "benchmarks/train_bundled.sh" in p["command"] and p["lcgen_version"]
    assert len(p["git_commit"].split("-")[0]) == 40 and "MIT" in p["license"]
    # a few MB, shipped as package data
    size = sum(f.stat().st_size for f in BUNDLED_DIR.iterdir())
    assert size < 8e6
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '[tool.setuptools.package-data]\nlcgen = ["weights/bundled/*"]' in pyproject
    assert resolve_run("bundled") == resolve_run(None) == BUNDLED_DIR
    assert resolve_run("runs/x") == Path("runs/x")


def test_bundled_model_beats_interpolation_with_calibrated_intervals_on_held_out_tess(tmp_path):
    """A quality floor on one held-out TESS 2-min sector (a seed no training curve used), scored by
    lcgen evaluate on masks in days: the full measurement is benchmarks/eval_bundled.sh."""
    import json
    import shutil

    r = run_cli("generate", "--preset", "tess-2min", "-n", "1", "--seed", "103", "-o", tmp_path / "raw.h5",
                "--workers", "1", "--set", "tess.blocks=[1,1]")
    assert r.returncode == 0, r.stderr
    r = run_cli("convert", "-i", tmp_path / "raw.h5", "-o", tmp_path / "tess.h5", "--max-length", "256")
    assert r.returncode == 0, r.stderr
    run = shutil.copytree(BUNDLED_DIR, tmp_path / "bundled")  # evaluate writes beside the checkpoint
    r = run_cli("evaluate", run, "--data", tmp_path / "tess.h5", "--mask-days", "0.003,0.15",
                "--baselines", "linear,mean")
    assert r.returncode == 0, r.stderr
    m = json.loads((run / "metrics-days-tess.json").read_text())
    model, linear = m["overall"]["model"], m["overall"]["linear"]
    assert m["n_masked_positions"] > 3000
    # noise-dominated 2-min photometry: smoothing beats the line through two noisy neighbours
    # (measured 0.553x; the per-window mean is as good here: 0.551)
    assert model["masked_mse"] < 0.8 * linear["masked_mse"]
    # calibrated intervals neither too narrow (the one-epoch NLL model covered 0.48 at ±1σ) nor,
    # with the calibration per noise share, too wide (measured 0.713 / 0.972; one fit for all
    # points gave 0.78 / 0.999)
    assert 0.62 < model["coverage_68"] < 0.76 and 0.91 < model["coverage_95"] < 0.985


@pytest.fixture(scope="module")
def kepler_raw(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundled")
    r = run_cli("generate", "--preset", "kepler-lc", "-n", "1", "--seed", "9", "-o", d / "raw.h5",
                "--workers", "1", "--set", "kepler.blocks=[1,1]")
    assert r.returncode == 0, r.stderr
    return d


def test_fill_without_a_run_uses_the_bundled_model(kepler_raw, tmp_path):
    raw = kepler_raw / "raw.h5"
    r = run_cli("fill", raw, "-o", tmp_path / "filled.h5")
    assert r.returncode == 0, r.stderr
    r2 = run_cli("fill", BUNDLED_DIR, raw, "-o", tmp_path / "explicit.h5")
    assert r2.returncode == 0, r2.stderr
    out, explicit = read_raw(tmp_path / "filled.h5"), read_raw(tmp_path / "explicit.h5")
    np.testing.assert_array_equal(out.flux, explicit.flux)  # the same model as naming its directory
    with h5py.File(tmp_path / "filled.h5") as f:
        filled = f["filled"][:]
    assert filled.sum() > 0  # the monthly downlinks and losses of a quarter hold gaps to fill
    assert np.isfinite(out.flux_err[filled]).all() and (out.flux_err[filled] > 0).all()
    original = read_raw(raw)
    for i in range(len(original)):
        t, y, _ = out.curve(i)
        keep = ~filled[out.span(i)]
        np.testing.assert_array_equal(t[keep], original.curve(i)[0])
        # filled values stay within the curve's own range, widened by its spread
        y0 = original.curve(i)[1]
        spread = np.ptp(y0)
        assert (y[~keep] > y0.min() - spread).all() and (y[~keep] < y0.max() + spread).all()
    r = run_cli("fill", raw)
    assert r.returncode == 1 and "fill needs INPUT and --output/-o" in r.stderr


def test_embed_with_only_a_data_file_uses_the_bundled_model(kepler_raw, tmp_path):
    r = run_cli("convert", "-i", kepler_raw / "raw.h5", "-o", tmp_path / "ts.h5", "--max-length", "256")
    assert r.returncode == 0, r.stderr
    r = run_cli("embed", tmp_path / "ts.h5", "-o", tmp_path / "emb.h5")
    assert r.returncode == 0, r.stderr
    from lcgen.embed import read_embeddings

    emb = read_embeddings(tmp_path / "emb.h5")
    assert emb.window.shape[0] > 10 and np.isfinite(emb.window).all()
    assert Path(emb.attrs["run_dir"]) == BUNDLED_DIR.resolve()
    r = run_cli("embed", tmp_path / "ts.h5")
    assert r.returncode == 1 and "embed needs INPUT and --output/-o" in r.stderr


def test_fine_tuning_starts_from_the_bundled_model(kepler_raw, tmp_path):
    """`lcgen train transformer --init bundled`: the README's fine-tuning path."""
    import yaml

    from lcgen.train.trainer import load_checkpoint

    r = run_cli("convert", "-i", kepler_raw / "raw.h5", "-o", tmp_path / "ts.h5", "--max-length", "256")
    assert r.returncode == 0, r.stderr
    r = run_cli("train", "transformer", "--init", "bundled", "--data", tmp_path / "ts.h5", "--epochs", "1",
                "--threads", "1", "--name", "ft", "--set", f"runs_dir={tmp_path / 'runs'}",
                "--set", "val_fraction=0", "--set", "test_fraction=0", "--set", "lr=1e-12")
    assert r.returncode == 0, r.stderr
    run = tmp_path / "runs" / "transformer" / "ft"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["init"] == str(BUNDLED_DIR) and saved["model"]["interp_residual"] is True
    # at a vanishing learning rate the fine-tuned weights are the bundled ones
    start = load_checkpoint(BUNDLED_DIR / "best.pt")["state_dict"]
    tuned = load_checkpoint(run / "last.pt")["state_dict"]
    for key in start:
        np.testing.assert_allclose(tuned[key].numpy(), start[key].numpy(), atol=1e-6)
