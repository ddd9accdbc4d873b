"""How sure is "run A's masked MSE is below run B's"? Paired bootstrap over the test rows.

    python benchmarks/mse_bootstrap.py RUN_A RUN_B [RUN_C ...] [--draws 2000] [--mask-seed 1]

Each run is scored as ``lcgen evaluate RUN --mask-seed 1`` scores its series (its own test rows,
the fixed masks by row index; a multimodal run with the window's spectra visible): per test row
the sum of squared errors on the hidden real points and their count. The runs must share the
rows and the hidden points (checked), as runs on the same file and split do. Printed per run
against the first: the masked-MSE ratio (its MSE over A's, on all hidden points, as
``evaluate`` reports it), its 95 % interval over bootstrap draws of the rows (the same draws for
every run; each draw's ratio is a ratio of sums over the drawn rows), and the fraction of draws
in which the run's MSE is below A's.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from lcgen.evaluate import EvaluateConfig
from lcgen.evaluate.scoring import open_evaluation, predict


def row_errors(run: str, mask_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, per-row sum of squared errors on hidden real points, per-row hidden point count)."""
    index, sse, count = [], [], []
    with open_evaluation(run, EvaluateConfig(mask_seed=mask_seed, baselines="linear")) as ev:
        for b in predict(ev):
            sel = b["hidden"] & b["valid"]
            err = np.where(sel, (b["model"].astype(np.float64) - b["values"]) ** 2, 0.0)
            index.append(b["index"]), sse.append(err.sum(1)), count.append(sel.sum(1))
    return np.concatenate(index), np.concatenate(sse), np.concatenate(count)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--mask-seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    scored = {run: row_errors(run, args.mask_seed) for run in args.runs}
    first, (rows, base, count) = args.runs[0], scored[args.runs[0]]
    draws = np.random.default_rng(0).integers(0, rows.size, size=(args.draws, rows.size))
    base_draws = base[draws].sum(1)
    print(f"{rows.size} test rows, {count.sum()} hidden points, mask seed {args.mask_seed}, {args.draws} draws")
    print(f"{first}: masked MSE {base.sum() / count.sum():.4f}")
    print("| run | masked MSE | ratio to the first | 95 % interval | draws below the first |")
    print("|---|---:|---:|---:|---:|")
    for run in args.runs[1:]:
        r, sse, n = scored[run]
        assert np.array_equal(r, rows) and np.array_equal(n, count), f"{run} is scored on other rows or points"
        ratio = sse[draws].sum(1) / base_draws
        lo, hi = np.quantile(ratio, [0.025, 0.975])
        print(f"| {run} | {sse.sum() / n.sum():.4f} | {sse.sum() / base.sum():.3f} | [{lo:.3f}, {hi:.3f}] | "
              f"{np.mean(ratio < 1):.0%} |", flush=True)


if __name__ == "__main__":
    main()
