"""`lcgen demo` end to end at a tiny size, through a subprocess as a user runs it."""

import json
import math

from lcgen.demo import DemoConfig, paths
from tests.conftest import run_cli
from tests.test_plots import png_size


def test_demo_chain_tiny(tmp_path):
    work = tmp_path / "demo"
    r = run_cli("demo", "--workdir", work, "--n-samples", 40, "--epochs", 1, "--preset", "tiny",
                "--workers", 1, "--set", "max_length=64", "--set", "n_freq=64")
    assert r.returncode == 0, r.stderr
    p = paths(DemoConfig(workdir=str(work)))
    for key in ("raw", "spectra", "timeseries"):
        assert p[key].is_file(), key
    for model, kind in (("transformer", "timeseries"), ("unet", "spectra")):
        run = work / "runs" / model / "demo"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["model_name"] == model and metrics["data_kind"] == kind
        assert metrics["split"] == "test" and metrics["n_samples"] > 0
        assert all(math.isfinite(v) for row in metrics["overall"].values() for v in row.values())
        assert png_size(run / "figures" / "training.png") == (1000, 700)
        assert (run / "figures" / "reconstructions.png").stat().st_size > 10_000
        assert f"{model}: figures in {run / 'figures'}/, metrics in {run / 'metrics.json'}" in r.stdout
    assert "Demo finished in" in r.stdout
    assert "transformer: " in r.stdout and "than linear interpolation (ratio" in r.stdout
