"""Training throughput and peak memory of every registered model, through the real trainer.

For each model and preset (``small`` and ``default``, i.e. full size) a child process writes a
small synthetic data file, runs ``lcgen.train.fit`` for two epochs of a few steps at the model's
default batch size and reports the second epoch's training samples/s (masking, data reading,
forward, backward, clipping and the optimiser step; validation excluded), the seconds a
50,000-window epoch would take at that rate, the share of the step time spent waiting for the
next batch from the reader, and the child's peak RSS. A second table times the data pipeline
alone on a larger spectra file, stored plain and compressed (gzip, lzf), to show that reading is
cheap and that memory stays bounded by the read buffer, not the file.

    python benchmarks/bench_train.py                  # all models, small and default
    python benchmarks/bench_train.py --models mlp --presets small --steps 20
    python benchmarks/bench_train.py --device cuda    # on a GPU: bf16 autocast, TF32, fused AdamW,
                                                      # prefetching reader, loss read every 50 steps
    python benchmarks/bench_train.py --device cuda --compile   # and torch.compile
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


def write_spectra(path: Path, n: int, length: int = 1024, seed: int = 0, compression: str | None = None) -> None:
    """A spectra file of standard-normal channels, all bins valid, written chunk by chunk.

    The values are rounded to 12 bits of mantissa so that compression has something to find
    (white noise at full float32 precision would not compress at all); real files compress by
    their own ratio (README, "Data at scale")."""
    import numpy as np

    from lcgen.data import CHANNELS
    from lcgen.io import atomic_h5, write_header

    rng = np.random.default_rng(seed)
    with atomic_h5(path) as f:
        write_header(f, "spectra", {"made_by": "bench_train"})
        packing = {"compression": compression, "shuffle": True} if compression else {}
        sets = {c: f.create_dataset(c, shape=(n, length), dtype="f4", chunks=(min(256, n), length), **packing)
                for c in CHANNELS}
        mask = f.create_dataset("mask", shape=(n, length), dtype=bool, chunks=(min(256, n), length), **packing)
        for start in range(0, n, 4096):
            stop = min(n, start + 4096)
            for ds in sets.values():
                x = rng.standard_normal((stop - start, length), dtype=np.float32)
                ds[start:stop] = (x.view(np.uint32) & np.uint32(0xFFFFF800)).view(np.float32)
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


def one(model: str, preset: str, steps: int, device: str, workdir: Path, compile_: bool = False) -> dict:
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
                                      runs_dir=str(workdir / "runs"), device=device, compile=compile_))
    start = time.perf_counter()
    result = fit(cfg, name=f"{model}-{preset}")
    row = result["history"][-1]
    ckpt = torch.load(result["run_dir"] / "last.pt", weights_only=True)
    params = sum(v.numel() for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    n_steps = n_batches(len(load_split(result["run_dir"])["train"]), cfg.batch_size)
    out = {"model": model, "preset": preset, "params": params, "batch": cfg.batch_size,
           "steps": n_steps, "samples_per_s": row["samples_per_s"], "step_ms": 1000 * row["seconds"] / n_steps,
           "epoch_50k_s": 50_000 / row["samples_per_s"], "data_wait": row["data_wait_s"] / row["seconds"],
           "peak_rss_mb": peak_rss_mb(), "rss_before_fit_mb": base, "wall_s": time.perf_counter() - start}
    if device.startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def pipeline(rows: int, workdir: Path, compression: str | None = None) -> dict:
    """Rows/s (CPU time) and peak RSS of shuffled batch reading alone (no model)."""
    import numpy as np

    from lcgen.data import SpectraSource, iter_batches

    path = workdir / "pipeline.h5"
    write_spectra(path, rows, compression=compression)
    file_mb = path.stat().st_size / 2**20
    base = peak_rss_mb()
    with SpectraSource(path, "psd") as src:
        start, cpu = time.perf_counter(), time.process_time()
        n = sum(len(b["index"]) for b in iter_batches(src, np.arange(rows), 128, shuffle=True, seed=0))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"rows": rows, "compression": compression or "none", "file_mb": file_mb,
            "rows_per_s": n / seconds, "rows_per_cpu_s": n / cpu,
            "rss_growth_mb": peak_rss_mb() - base, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--presets", nargs="*", default=["small", "default"])
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per epoch [default: 6 for small, 1 for default]")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--compile", action="store_true", help="train with torch.compile")
    parser.add_argument("--compression", nargs="*", default=["none", "gzip", "lzf"],
                        help="storage of the data-pipeline file(s)")
    parser.add_argument("--pipeline-rows", type=int, default=20000)
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "PRESET"), help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.one:
            print(json.dumps(one(*args.one, args.steps or 6, args.device, Path(tmp), args.compile)))
            return
        if args.pipeline:
            comp = args.compression[0]
            print(json.dumps(pipeline(args.pipeline_rows, Path(tmp), None if comp == "none" else comp)))
            return

    from lcgen.models import list_models

    models = args.models or list_models()
    print(f"device {args.device}{' (compiled)' if args.compile else ''}, torch threads "
          f"{os.environ.get('BENCH_THREADS', 'default')}, load average {os.getloadavg()[0]:.1f}; default batch "
          f"sizes; epoch 2")
    print(f"{'model':<12}{'preset':<9}{'params':>12}{'batch':>7}{'steps':>7}{'ms/step':>10}{'samples/s':>11}"
          f"{'s/50k epoch':>13}{'data wait':>11}{'peak RSS MB':>13}")
    for model in models:
        for preset in args.presets:
            steps = args.steps or (1 if preset == "default" else 6)
            r = _child(["--one", model, preset, "--steps", str(steps), "--device", args.device]
                       + (["--compile"] if args.compile else []))
            if "error" in r:
                print(f"{model:<12}{preset:<9}  failed: {r['error']}")
                continue
            gpu = f"  (GPU peak {r['peak_gpu_mb']:,.0f} MB)" if "peak_gpu_mb" in r else ""
            print(f"{model:<12}{preset:<9}{r['params']:>12,}{r['batch']:>7}{r['steps']:>7}{r['step_ms']:>10.1f}"
                  f"{r['samples_per_s']:>11,.1f}{r['epoch_50k_s']:>13,.1f}{r['data_wait']:>11.1%}"
                  f"{r['peak_rss_mb']:>13,.0f}{gpu}")
    print(f"\ndata pipeline: {args.pipeline_rows:,} x 1024 spectra (4 channels + mask), shuffled, batch 128")
    print(f"{'storage':<10}{'MB on disk':>12}{'rows/s':>10}{'rows/CPU-s':>12}{'RSS growth MB':>15}")
    for comp in args.compression:
        r = _child(["--pipeline", "--pipeline-rows", str(args.pipeline_rows), "--compression", comp])
        if "error" in r:
            print(f"{comp:<10}  failed: {r['error']}")
            continue
        print(f"{comp:<10}{r['file_mb']:>12,.0f}{r['rows_per_s']:>10,.0f}{r['rows_per_cpu_s']:>12,.0f}"
              f"{r['rss_growth_mb']:>15,.0f}")


def _child(extra: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *extra], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
