"""Benchmark `lcgen generate`: curves/s and peak memory for the whole file, then the cost of each
signal type, sampling and overlay.

    python benchmarks/bench_generate.py                 # 50,000 curves, 1 and 2 workers
    python benchmarks/bench_generate.py -n 5000 --workers 1

Target (DESIGN.md §5): 50,000 default curves in <= 60 s on one core (the original: ~430 curves/s).
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from lcgen.simulate import SAMPLERS, SIGNALS, SamplingMix, SimulateConfig, TypeMix, generate, simulate_chunk  # noqa: E402


def peak_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def one_hot(cls, names, chosen: str):
    return cls(**{k: float(k == chosen) for k in names})


def rate(cfg: SimulateConfig, n: int) -> tuple[float, float]:
    """(curves/s, mean points per curve) of the simulation alone, in this process."""
    start = time.perf_counter()
    chunk = simulate_chunk(cfg, 0, n)
    return n / (time.perf_counter() - start), float(chunk.lengths.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--n-samples", type=int, default=50_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--per-kind", type=int, default=1000, help="curves per row of the cost table")
    args = parser.parse_args()
    console = Console(width=120)

    table = Table(title=f"lcgen generate: {args.n_samples:,} default curves, whole file written")
    for col in ("workers", "seconds", "curves/s", "points", "MB written", "peak RSS main (MiB)", "peak RSS worker (MiB)"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.workers:
            out = Path(tmp) / f"mock_{workers}.h5"
            cfg = SimulateConfig(n_samples=args.n_samples, output=str(out))
            result = generate(cfg, workers=workers)
            table.add_row(str(result["workers"]), f"{result['seconds']:.1f}", f"{result['curves_per_s']:,.0f}",
                          f"{result['points']:,}", f"{out.stat().st_size / 1e6:,.0f}",
                          f"{peak_mib(resource.RUSAGE_SELF):.0f}",
                          f"{peak_mib(resource.RUSAGE_CHILDREN):.0f}" if result["workers"] > 1 else "-")
            out.unlink()
    console.print(table)
    console.print("peak RSS is the maximum so far in the process (main) or over all finished workers.")

    costs = Table(title=f"simulation only, one core, {args.per_kind:,} curves per row")
    for col in ("kind", "setting", "curves/s", "mean points"):
        costs.add_column(col, justify="right" if col in ("curves/s", "mean points") else "left")
    for name in SIGNALS:
        cfg = SimulateConfig(types=one_hot(TypeMix, SIGNALS, name))
        r, pts = rate(cfg, args.per_kind)
        costs.add_row("type", name, f"{r:,.0f}", f"{pts:.0f}")
    for name in SAMPLERS:
        cfg = SimulateConfig(samplings=one_hot(SamplingMix, SAMPLERS, name))
        r, pts = rate(cfg, args.per_kind)
        costs.add_row("sampling", name, f"{r:,.0f}", f"{pts:.0f}")
    for name in ("transit", "flare", "red_noise"):
        cfg = SimulateConfig()
        setattr(cfg, name, dataclasses.replace(getattr(cfg, name), probability=1.0))
        r, pts = rate(cfg, args.per_kind)
        costs.add_row("overlay (p=1)", name, f"{r:,.0f}", f"{pts:.0f}")
    console.print(costs)


if __name__ == "__main__":
    main()
