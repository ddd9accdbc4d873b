"""Whole-curve `preprocess` cost: CPU time per curve on the default mock mix, the 2-worker CPU
overhead, a profile of the top costs, and an interleaved comparison with another lcgen tree.

    python benchmarks/bench_preprocess.py                          # 1,000 curves: CPU/curve + profile
    python benchmarks/bench_preprocess.py --curves 2000 --workers  # + 1 vs 2 workers, CPU totals
    python benchmarks/bench_preprocess.py --against /work/main --rounds 3   # old vs this tree, interleaved

CPU time (``resource.getrusage`` of the process and its finished children), one BLAS/OpenMP
thread, finufft single-threaded: on a shared machine wall time says more about the neighbours
than about the code. Each measurement runs in a fresh subprocess on the same raw file, and with
``--against`` the two trees alternate round by round, so load drifts hit both alike; compare the
ratios. Target (issue #16, one idle core, default mix): ≤ 4 ms per curve; 2 workers within 5 % of
the 1-worker CPU total.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
ENV_1THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# Runs inside a subprocess with PYTHONPATH at the tree under test; prints one JSON line.
CHILD = r"""
import json, resource, sys, time, cProfile, pstats, io
from lcgen import preprocess as pp
raw, out, workers, profile = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
cfg = pp.PreprocessConfig(input=raw, output=out, workers=workers, chunk_size=250, resume=False)
def cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
start, wall = cpu(), time.perf_counter()
if profile:
    prof = cProfile.Profile()
    prof.enable()
summary = pp.preprocess(cfg)
if profile:
    prof.disable()
cpu_s, wall_s = cpu() - start, time.perf_counter() - wall
top = ""
if profile:
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
    top = buf.getvalue()
print(json.dumps({"cpu": cpu_s, "wall": wall_s, "curves": summary["curves"], "failed": summary["failed"], "profile": top}))
"""


def make_raw(path: Path, n: int, seed: int) -> None:
    """The default mock mix (lcgen generate's defaults), written with this tree's simulator."""
    code = ("import sys; from lcgen.simulate import SimulateConfig, generate; "
            f"generate(SimulateConfig(output=sys.argv[1], n_samples={n}, seed={seed}), workers=1)")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, cwd=HERE,
                   env={**os.environ, **ENV_1THREAD, "PYTHONPATH": str(HERE)})


def measure(tree: Path, raw: Path, workers: int, profile: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", CHILD, str(raw), str(Path(tmp) / "pre.h5"), str(workers),
                              "1" if profile else "0"], check=True, capture_output=True, text=True, cwd=tree,
                             env={**os.environ, **ENV_1THREAD, "PYTHONPATH": str(tree)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def load() -> str:
    return "load average " + " / ".join(f"{v:.1f}" for v in os.getloadavg()) + f" on {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--curves", type=int, default=1000, help="default mock curves to preprocess")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workers", action="store_true", help="also compare 1 and 2 workers (CPU totals)")
    parser.add_argument("--against", type=Path, help="another lcgen tree (e.g. /work/main): measured interleaved")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds with --against")
    parser.add_argument("--no-profile", action="store_true", help="skip the profile summary")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.h5"
        make_raw(raw, args.curves, args.seed)
        print(f"{args.curves:,} default mock curves; {load()}")
        trees = [("this tree", HERE)] + ([("against", args.against.resolve())] if args.against else [])
        per_curve: dict[str, list[float]] = {name: [] for name, _ in trees}
        for r in range(args.rounds if args.against else 1):
            for name, tree in (trees if r % 2 == 0 else trees[::-1]):  # alternate who goes first
                m = measure(tree, raw, 1)
                per_curve[name].append(1e3 * m["cpu"] / m["curves"])
                print(f"  round {r + 1} {name:9s}: {per_curve[name][-1]:6.2f} CPU-ms/curve "
                      f"({m['wall']:.1f} s wall, {m['failed']} failed)", flush=True)
        print("\n| tree | CPU ms per curve, 1 worker (median of rounds) |\n|---|---|")
        for name, values in per_curve.items():
            print(f"| {name} | {statistics.median(values):.2f} |")
        if args.against:
            a, b = (statistics.median(v) for v in per_curve.values())
            print(f"\nthis tree / against = {a / b:.2f}")
        if args.workers:
            one, two = measure(HERE, raw, 1), measure(HERE, raw, 2)
            print(f"\n1 worker: {one['cpu']:.1f} CPU-s; 2 workers: {two['cpu']:.1f} CPU-s "
                  f"({100 * (two['cpu'] / one['cpu'] - 1):+.1f} %; wall {one['wall']:.1f} → {two['wall']:.1f} s)")
        if not args.no_profile:
            print("\nprofile, this tree, 1 worker (cProfile inflates the absolute times):")
            print(measure(HERE, raw, 1, profile=True)["profile"])
        print(load())


if __name__ == "__main__":
    main()
