"""Training throughput and peak memory of every registered model, through the real trainer.

For each model and preset (``small`` and ``default``, i.e. full size) a child process writes a
small synthetic data file, runs ``lcgen.train.fit`` for two epochs of a few steps at the model's
default batch size and reports the second epoch's training samples/s (masking, data reading,
forward, backward, clipping and the optimiser step; validation excluded) and the child's peak
RSS. A second table times the data pipeline alone on a larger spectra file, to show that reading
is cheap and that memory stays bounded by the read buffer, not the file.

    python benchmarks/bench_train.py                  # all models, small and default
    python benchmarks/bench_train.py --models mlp --presets small --steps 20
    python benchmarks/bench_train.py --device cuda    # on a GPU (bf16 autocast)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def write_spectra(path: Path, n: int, length: int = 1024, seed: int = 0) -> None:
    """A spectra file of standard-normal channels, all bins valid, written chunk by chunk."""
    import numpy as np

    from lcgen.data import CHANNELS
    from lcgen.io import atomic_h5, write_header

    rng = np.random.default_rng(seed)
    with atomic_h5(path) as f:
        write_header(f, "spectra", {"made_by": "bench_train"})
        sets = {c: f.create_dataset(c, shape=(n, length), dtype="f4", chunks=(min(256, n), length)) for c in CHANNELS}
        mask = f.create_dataset("mask", shape=(n, length), dtype=bool, chunks=(min(256, n), length))
        for start in range(0, n, 4096):
            stop = min(n, start + 4096)
            for ds in sets.values():
                ds[start:stop] = rng.standard_normal((stop - start, length), dtype=np.float32)
            mask[start:stop] = True
        f["frequency"] = np.linspace(0.001, 24, length)
        f["lag"] = np.linspace(0, 500, length)
        f["failed"] = np.zeros(n, bool)


def write_timeseries(path: Path, n: int, length: int = 512, seed: int = 0) -> None:
    """A time-series file of noisy sinusoids on irregular times, one window per curve."""
    import numpy as np

    from lcgen.io import atomic_h5, write_header

    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 300, (n, length)), axis=1)
    t -= t[:, :1]
    flux = np.sin(2 * np.pi * t / rng.uniform(2, 50, (n, 1))) + 0.1 * rng.standard_normal((n, length))
    with atomic_h5(path) as f:
        write_header(f, "timeseries", {"made_by": "bench_train"})
        f["flux"] = flux.astype(np.float32)
        f["time"] = t.astype(np.float32)
        f["flux_err"] = np.full((n, length), 0.1, np.float32)
        f["mask"] = np.ones((n, length), bool)
        f["source"] = np.arange(n)


def one(model: str, preset: str, steps: int, device: str, workdir: Path) -> dict:
    """Train ``model`` at ``preset`` for two epochs of ``steps`` steps; epoch-2 samples/s."""
    import torch

    from lcgen.data import load_split, n_batches
    from lcgen.models import MODELS
    from lcgen.train import TrainConfig, complete_config, fit

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    cfg = complete_config(TrainConfig(model_name=model, preset=preset, device=device))
    rows = round(cfg.batch_size * steps / 0.8)  # 10% validation, 10% test: `steps` full batches train
    data = workdir / f"{model}.h5"
    if MODELS[model].data == "spectra":
        write_spectra(data, rows)
    else:
        write_timeseries(data, rows)
    base = peak_rss_mb()
    cfg = complete_config(TrainConfig(model_name=model, preset=preset, data=str(data), epochs=2,
                                      runs_dir=str(workdir / "runs"), device=device))
    start = time.perf_counter()
    result = fit(cfg, name=f"{model}-{preset}")
    row = result["history"][-1]
    ckpt = torch.load(result["run_dir"] / "last.pt", weights_only=True)
    params = sum(v.numel() for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    n_steps = n_batches(len(load_split(result["run_dir"])["train"]), cfg.batch_size)
    out = {"model": model, "preset": preset, "params": params, "batch": cfg.batch_size,
           "steps": n_steps, "samples_per_s": row["samples_per_s"], "step_ms": 1000 * row["seconds"] / n_steps,
           "peak_rss_mb": peak_rss_mb(), "rss_before_fit_mb": base, "wall_s": time.perf_counter() - start}
    if device.startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def pipeline(rows: int, workdir: Path) -> dict:
    """Rows/s and peak RSS of shuffled batch reading alone (no model)."""
    import numpy as np

    from lcgen.data import SpectraSource, iter_batches

    path = workdir / "pipeline.h5"
    write_spectra(path, rows)
    file_mb = path.stat().st_size / 2**20
    base = peak_rss_mb()
    with SpectraSource(path, "psd") as src:
        start = time.perf_counter()
        n = sum(len(b["index"]) for b in iter_batches(src, np.arange(rows), 128, shuffle=True, seed=0))
        seconds = time.perf_counter() - start
    return {"rows": rows, "file_mb": file_mb, "rows_per_s": n / seconds,
            "rss_growth_mb": peak_rss_mb() - base, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--presets", nargs="*", default=["small", "default"])
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per epoch [default: 6 for small, 1 for default]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pipeline-rows", type=int, default=20000)
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "PRESET"), help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.one:
            print(json.dumps(one(*args.one, args.steps or 6, args.device, Path(tmp))))
            return
        if args.pipeline:
            print(json.dumps(pipeline(args.pipeline_rows, Path(tmp))))
            return

    from lcgen.models import list_models

    models = args.models or list_models()
    print(f"device {args.device}, torch threads {os.environ.get('BENCH_THREADS', 'default')}, "
          f"load average {os.getloadavg()[0]:.1f}; default batch sizes; samples/s of epoch 2")
    print(f"{'model':<12}{'preset':<9}{'params':>12}{'batch':>7}{'steps':>7}{'ms/step':>10}{'samples/s':>11}"
          f"{'peak RSS MB':>13}")
    for model in models:
        for preset in args.presets:
            steps = args.steps or (1 if preset == "default" else 6)
            r = _child(["--one", model, preset, "--steps", str(steps), "--device", args.device])
            if "error" in r:
                print(f"{model:<12}{preset:<9}  failed: {r['error']}")
                continue
            gpu = f"  (GPU peak {r['peak_gpu_mb']:,.0f} MB)" if "peak_gpu_mb" in r else ""
            print(f"{model:<12}{preset:<9}{r['params']:>12,}{r['batch']:>7}{r['steps']:>7}{r['step_ms']:>10.1f}"
                  f"{r['samples_per_s']:>11,.1f}{r['peak_rss_mb']:>13,.0f}{gpu}")
    r = _child(["--pipeline", "--pipeline-rows", str(args.pipeline_rows)])
    if "error" not in r:
        print(f"\ndata pipeline: {r['rows']:,} x 1024 spectra ({r['file_mb']:.0f} MB on disk), shuffled, "
              f"batch 128: {r['rows_per_s']:,.0f} rows/s; RSS grew {r['rss_growth_mb']:.0f} MB while reading "
              f"(peak {r['peak_rss_mb']:.0f} MB)")


def _child(extra: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *extra], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
