"""Benchmark `lcgen generate`: CPU time per curve for the whole file on one core, side by side with
another revision, the top costs, and the cost of each signal type, sampling and overlay.

    python benchmarks/bench_generate.py                        # 20,000 default curves, 3 rounds
    python benchmarks/bench_generate.py --against f972c9c main # ... interleaved with those revisions
    python benchmarks/bench_generate.py -n 5000 --workers 1 2  # also 2 workers (CPU of all processes)

Target (issue #16): <= 0.5 ms CPU per default curve on one core. The original lc-gen took
49.7 CPU-s for 20,000 curves (2.49 ms per curve), measured on this project's 2-core machine
under load, interleaved with lcgen's then state (16 CPU-s, 0.80 ms per curve).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks.common import ROOT, checkout, load_average, profile_rows, run_child  # noqa: E402
from lcgen.simulate import SAMPLERS, SIGNALS, SamplingMix, SimulateConfig, TypeMix, generate, simulate_chunk  # noqa: E402

ORIGINAL_MS_PER_CURVE = 49.7 / 20_000 * 1e3  # issue #16, measured side by side on the 2-core machine
ORIGINAL_VS_F972C9C = 49.7 / 16.0  # ... against lcgen at commit f972c9c, same run

# Run in a child: one core (workers=1, in-process), CPU time of generate() alone, imports excluded.
CHILD = """
import json, tempfile, time, os
from lcgen.simulate import SimulateConfig, generate
with tempfile.TemporaryDirectory() as tmp:
    cfg = SimulateConfig(n_samples={n}, seed={seed}, output=os.path.join(tmp, "mock.h5"))
    start = time.process_time()
    result = generate(cfg, workers=1)
    print(json.dumps({{"cpu": time.process_time() - start, "points": result["points"]}}))
"""


def one_hot(cls, names, chosen: str):
    return cls(**{k: float(k == chosen) for k in names})


def cpu_per_curve(cfg: SimulateConfig, n: int) -> tuple[float, float]:
    """(CPU µs per curve, mean points) of the simulation alone, in this process (the overlays'
    lazy imports done before: scipy.optimize for transits, finufft for red noise)."""
    for name in ("finufft", "scipy.optimize"):
        importlib.import_module(name)
    start = time.process_time()
    chunk = simulate_chunk(cfg, 0, n)
    return 1e6 * (time.process_time() - start) / n, float(chunk.lengths.mean())


def interleaved(n: int, rounds: int, against: list[str], console: Console) -> None:
    """CPU ms per curve of generate on one core, this tree and each revision of ``against``
    alternating per round (A, B, C, A, B, C ...)."""
    trees = {"this tree": ROOT}
    with contextlib.ExitStack() as stack:
        for rev in against:
            trees[f"revision {rev}"] = stack.enter_context(checkout(rev))
        cpu = {name: 0.0 for name in trees}
        for r in range(rounds):
            for name, path in trees.items():
                cpu[name] += run_child(CHILD.format(n=n, seed=r), path)["cpu"]
    table = Table(title=f"lcgen generate, {n:,} default curves x {rounds} rounds, 1 core, interleaved "
                        f"({load_average()})")
    for col in ("code", "CPU s per round", "CPU ms per curve", "vs this tree"):
        table.add_column(col, justify="left" if col == "code" else "right")
    mine = cpu["this tree"] / (rounds * n) * 1e3
    for name, seconds in cpu.items():
        ms = seconds / (rounds * n) * 1e3
        table.add_row(name, f"{seconds / rounds:.2f}", f"{ms:.3f}", f"{ms / mine:.2f}x")
    table.add_row("original lc-gen (issue #16: another run, another load)", f"{ORIGINAL_MS_PER_CURVE * 20:.1f} per 20,000",
                  f"{ORIGINAL_MS_PER_CURVE:.3f}", "-")
    console.print(table)
    console.print(f"Issue #16 timed the original against lcgen at f972c9c side by side: {ORIGINAL_VS_F972C9C:.2f}x. "
                  "This tree's ratio to the original is that times the f972c9c / this-tree ratio above.")


def profile(n: int, console: Console) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SimulateConfig(n_samples=n, output=str(Path(tmp) / "mock.h5"))
        total, rows = profile_rows(lambda: generate(cfg, workers=1))
    table = Table(title=f"top costs of generate, {n:,} curves, 1 core (cProfile; own time)")
    for col in ("function", "calls", "own s", "share"):
        table.add_column(col, justify="left" if col == "function" else "right")
    for where, calls, own in rows:
        table.add_row(where, f"{calls:,}", f"{own:.3f}", f"{own / total:.0%}")
    console.print(table)


def workers_table(n: int, workers: list[int], console: Console) -> None:
    table = Table(title=f"lcgen generate: {n:,} default curves, whole file written")
    for col in ("workers", "wall s", "CPU s (all processes)", "CPU ms per curve", "peak RSS main (MiB)"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for w in workers:
            cfg = SimulateConfig(n_samples=n, output=str(Path(tmp) / f"mock_{w}.h5"))
            before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            result = generate(cfg, workers=w)
            after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before))
            table.add_row(str(result["workers"]), f"{result['seconds']:.1f}", f"{cpu:.1f}",
                          f"{cpu / n * 1e3:.3f}", f"{after[0].ru_maxrss / 1024:.0f}")
    console.print(table)


def kinds(per_kind: int, console: Console) -> None:
    costs = Table(title=f"simulation only, one core, {per_kind:,} curves per row")
    for col in ("kind", "setting", "CPU µs per curve", "mean points"):
        costs.add_column(col, justify="left" if col in ("kind", "setting") else "right")
    for name in SIGNALS:
        us, pts = cpu_per_curve(SimulateConfig(types=one_hot(TypeMix, SIGNALS, name)), per_kind)
        costs.add_row("type", name, f"{us:,.0f}", f"{pts:,.0f}")
    for name in SAMPLERS:
        n = per_kind if name not in ("tess", "kepler") else max(1, per_kind // 20)  # ~18,000 / 4,400 points each
        us, pts = cpu_per_curve(SimulateConfig(samplings=one_hot(SamplingMix, SAMPLERS, name)), n)
        costs.add_row("sampling", name, f"{us:,.0f}", f"{pts:,.0f}")
    for name in ("transit", "flare", "red_noise"):
        cfg = SimulateConfig()
        setattr(cfg, name, dataclasses.replace(getattr(cfg, name), probability=1.0))
        us, pts = cpu_per_curve(cfg, per_kind)
        costs.add_row("overlay (p=1)", name, f"{us:,.0f}", f"{pts:,.0f}")
    console.print(costs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--n-samples", type=int, default=20_000, help="curves per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", nargs="*", default=[],
                        help="git revisions to time side by side (e.g. main f972c9c)")
    parser.add_argument("--profile", type=int, default=5000, help="curves in the profiled run (0: skip)")
    parser.add_argument("--workers", type=int, nargs="*", default=[], help="also time these worker counts")
    parser.add_argument("--per-kind", type=int, default=1000, help="curves per row of the cost table (0: skip)")
    args = parser.parse_args()
    console = Console(width=130)
    interleaved(args.n_samples, args.rounds, args.against, console)
    if args.profile:
        profile(args.profile, console)
    if args.workers:
        workers_table(args.n_samples, args.workers, console)
    if args.per_kind:
        kinds(args.per_kind, console)


if __name__ == "__main__":
    main()
