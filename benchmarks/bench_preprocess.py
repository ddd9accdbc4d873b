"""Benchmark `lcgen preprocess`: CPU ms per curve on the default mock mix, side by side with
another revision, 1 against 2 workers, and the top costs.

    python benchmarks/bench_preprocess.py                        # 2,000 default curves, 3 rounds
    python benchmarks/bench_preprocess.py --against f972c9c      # ... interleaved with that revision
    python benchmarks/bench_preprocess.py -n 10000 --workers 1 2 --keep /tmp/pre   # reuse the raw file

The raw file is generated once (by this tree) and every version reads the same one. CPU time is
that of all processes (main and workers). Targets (issue #16): <= 4 ms CPU per default curve on one
core; 2 workers within 5 % of the 1-worker CPU total. The original lc-gen took 60.0 CPU-s for
2,000 curves (30 ms per curve) and 281 CPU-s for 10,000, measured side by side on this project's
2-core machine under load (lcgen then: 29.7 and 135 CPU-s).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks.common import ROOT, checkout, load_average, profile_rows, run_child  # noqa: E402

ORIGINAL_MS_PER_CURVE = {2000: 60.0 / 2000 * 1e3, 10000: 281.0 / 10000 * 1e3}  # issue #16

CHILD = """
import json, os, resource, tempfile
from lcgen.preprocess import PreprocessConfig, preprocess

def cpu():
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        cfg = PreprocessConfig(input={raw!r}, output=os.path.join(tmp, "pre.h5"), workers={workers}, resume=False)
        start = cpu()
        result = preprocess(cfg)
        used = cpu() - start
    peak = max(resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    print(json.dumps({{"cpu": used, "curves": result["curves"], "failed": result["failed"], "peak_mib": peak / 1024}}))
"""


def make_raw(folder: Path, n: int) -> Path:
    from lcgen.simulate import SimulateConfig, generate

    raw = folder / f"raw_{n}.h5"
    if not raw.exists():
        generate(SimulateConfig(n_samples=n, output=str(raw)), workers=1)
    return raw


def interleaved(raw: Path, n: int, rounds: int, workers: list[int], against: str | None, console: Console) -> None:
    table = Table(title=f"lcgen preprocess, {n:,} default curves x {rounds} rounds, interleaved ({load_average()})")
    for col in ("code", "workers", "CPU s per round", "CPU ms per curve", "vs this tree, 1 worker", "peak MiB"):
        table.add_column(col, justify="left" if col == "code" else "right")
    with checkout(against) as old:
        trees = {"this tree": ROOT, **({f"revision {against}": old} if old is not None else {})}
        runs: dict = {}
        for _ in range(rounds):
            for name, path in trees.items():
                for w in workers:
                    out = run_child(CHILD.format(raw=str(raw), workers=w), path)
                    cpu, peak = runs.get((name, w), (0.0, 0.0))
                    runs[(name, w)] = (cpu + out["cpu"], max(peak, out["peak_mib"]))
    base = runs[("this tree", workers[0])][0]
    for (name, w), (cpu, peak) in runs.items():
        table.add_row(name, str(w), f"{cpu / rounds:.2f}", f"{cpu / (rounds * n) * 1e3:.2f}", f"{cpu / base:.2f}x",
                      f"{peak:.0f}")
    if n in ORIGINAL_MS_PER_CURVE:
        ms = ORIGINAL_MS_PER_CURVE[n]
        table.add_row("original lc-gen (issue #16: another run, another load)", "1", f"{ms * n / 1e3:.1f}", f"{ms:.2f}",
                      "-", "")
    console.print(table)
    console.print("Issue #16 timed the original against lcgen at f972c9c side by side: 2.0x (2,000 curves), 2.1x "
                  "(10,000). This tree's ratio to the original is that times the f972c9c / this-tree ratio above.")


def profile(raw: Path, console: Console) -> None:
    from lcgen.preprocess import PreprocessConfig, preprocess

    with tempfile.TemporaryDirectory() as tmp:
        cfg = PreprocessConfig(input=str(raw), output=str(Path(tmp) / "pre.h5"), workers=1, resume=False)
        total, rows = profile_rows(lambda: preprocess(cfg), top=15)
    table = Table(title=f"top costs of preprocess, {raw.name}, 1 worker (cProfile; own time)")
    for col in ("function", "calls", "own s", "share"):
        table.add_column(col, justify="left" if col == "function" else "right")
    for where, calls, own in rows:
        table.add_row(where, f"{calls:,}", f"{own:.3f}", f"{own / total:.0%}")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--n-samples", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--against", help="git revision to time side by side (e.g. main, a commit)")
    parser.add_argument("--profile", type=int, default=500, help="curves in the profiled run (0: skip)")
    parser.add_argument("--keep", help="folder to keep (and reuse) the generated raw files in")
    args = parser.parse_args()
    console = Console(width=130)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        interleaved(make_raw(folder, args.n_samples), args.n_samples, args.rounds, args.workers, args.against, console)
        if args.profile:
            profile(make_raw(folder, args.profile), console)


if __name__ == "__main__":
    main()
