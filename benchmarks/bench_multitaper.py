"""Multitaper speed: per-curve time of the adaptive PSD + F-test (and the ACF), and `preprocess`
throughput on generated curves.

    python benchmarks/bench_multitaper.py                 # per-curve table (about 30 s)
    python benchmarks/bench_multitaper.py --preprocess 50000 --workers 2

Targets (one core; DESIGN.md §5): adaptive PSD + F ≤ 10 / 16 / 85 / 160 ms at N ≈ 500 / 2k / 10k /
20k (tapify: ~20 / 60 / 470 / 900 ms); preprocess of 50,000 mock curves ≤ 5 min on 2 workers.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

# One BLAS/OpenMP thread, as in preprocess workers: scipy's DPSS eigen-solver with a thread pool on
# a busy 2-core machine was up to 15x slower.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lcgen.features import multitaper as mt  # noqa: E402

TARGET_MS = {500: 10, 2000: 16, 10000: 85, 20000: 160}
TAPIFY_MS = {500: 20, 2000: 60, 10000: 470, 20000: 900}


def irregular_curve(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A TESS-like sector of n points: 27.4 d, jittered cadence, 1-d mid-sector gap, dropouts."""
    span = 27.4
    t = np.linspace(0.0, span, int(n * 1.1))
    t = t + rng.normal(0.0, 0.05 * span / t.size, t.size)
    keep = ~((t > span / 2 - 0.5) & (t < span / 2 + 0.5))
    t = np.sort(t[keep])
    t = np.sort(rng.choice(t, size=n, replace=False))
    y = np.sin(2 * np.pi * t / 3.3) + rng.normal(size=n)
    return t, y


def best_of(fn, repeat: int) -> float:
    """Median CPU time of ``repeat`` calls, in ms. Everything runs on one thread (finufft
    nthreads=1, one BLAS thread), so this is single-core time, and unlike wall time it is not
    inflated by other jobs on a shared machine."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return 1e3 * float(np.median(times))


def bench_curves() -> None:
    rng = np.random.default_rng(0)
    grid = np.geomspace(1 / 27.4, 200.0, 1024)
    print(f"{'N':>6} {'cold ms':>8} {'cached ms':>10} {'grid1024 ms':>12} {'acf ms':>8} {'target':>7} {'tapify':>7}")
    for n in (500, 2000, 10000, 20000):
        t, y = irregular_curve(n, rng)
        lags = np.concatenate([[0.0], np.geomspace(0.01, 20.0, 1023)])
        repeat = 15 if n <= 2000 else 5

        def cold():
            mt.clear_dpss_cache()
            mt.multitaper(t, y)

        cold_ms = best_of(cold, repeat)
        mt.multitaper(t, y)
        warm_ms = best_of(lambda: mt.multitaper(t, y), repeat)
        grid_ms = best_of(lambda: mt.multitaper(t, y, freq=grid), repeat)
        acf_ms = best_of(lambda: mt.autocorrelation(t, y, lags), repeat)
        print(f"{n:>6} {cold_ms:>8.1f} {warm_ms:>10.1f} {grid_ms:>12.1f} {acf_ms:>8.1f} "
              f"{TARGET_MS[n]:>7} {TAPIFY_MS[n]:>7}")
    print("single-core CPU ms (median). cold: DPSS built each call; cached: DPSS cache hit (same N); "
          "grid1024: 1024-bin log grid (type-3 NUFFT, as preprocess); all adaptive PSD + F, double precision; "
          "acf: 1024 log-spaced lags")


def bench_preprocess(n_curves: int, workers: int, keep: str | None) -> None:
    """Generate ``n_curves`` default mock curves with lcgen generate, then time preprocess."""
    from lcgen.features.preprocess import PreprocessConfig, preprocess
    from lcgen.simulate import SimulateConfig, generate

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(keep) if keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        raw = folder / "raw.h5"
        if not raw.exists():
            start = time.perf_counter()
            generate(SimulateConfig(n_samples=n_curves, output=str(raw)), workers=workers)
            print(f"generated {n_curves:,} mock curves in {time.perf_counter() - start:.1f} s")
        cfg = PreprocessConfig(input=str(raw), output=str(folder / "preprocessed.h5"), workers=workers, resume=False)
        start = time.perf_counter()
        summary = preprocess(cfg)
        elapsed = time.perf_counter() - start
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"preprocess: {summary['curves']:,} curves, {workers} workers: {elapsed:.1f} s "
              f"({summary['curves'] / elapsed:,.0f} curves/s; target ≤ 300 s for 50,000), "
              f"failed {summary['failed']} {summary['fail_reasons']}, peak RSS of the main process {rss:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preprocess", type=int, default=0, help="also time preprocess on this many curves")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-curves", action="store_true", help="skip the per-curve table")
    parser.add_argument("--keep", help="folder to keep (and reuse) the generated raw file in")
    args = parser.parse_args()
    if not args.skip_curves:
        bench_curves()
    if args.preprocess:
        bench_preprocess(args.preprocess, args.workers, args.keep)


if __name__ == "__main__":
    main()
