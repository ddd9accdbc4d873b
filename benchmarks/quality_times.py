"""Does a time-series run use WHEN points were observed? Masked MSE with the true times against
evenly spaced fake times, on the test windows that have gaps, same masks for both.

    PYTHONPATH=. python benchmarks/quality_times.py RUN_DIR [--mask-seed 1] [--gap 3]

A window "has gaps" when its largest step between real points exceeds ``--gap`` times its
median step. Index times are ``t'_j = j * median step`` (the same span, no gaps). The model and
linear interpolation are both scored on exactly the same hidden positions; a model that ignores
time changes little, one that uses it loses clearly with index times.

Most hidden points of a gapped window lie far from its gap, where true and index times give
the same local picture; the second table scores only the hidden points whose nearest visible
neighbours straddle a gap (a step > ``--gap`` x median between them), where interpolation in
true and in index time differ.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from lcgen.evaluate.scoring import EvaluateConfig, hide, linear_baseline, open_evaluation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--mask-seed", type=int, default=1)
    parser.add_argument("--gap", type=float, default=3.0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from lcgen.train.data import iter_batches

    subsets = ("all", "straddle")
    sums = {(k, sub): [0.0, 0] for k in ("model true", "model index", "linear true", "linear index")
            for sub in subsets}
    n_windows = 0
    with open_evaluation(args.run_dir, EvaluateConfig(mask_seed=args.mask_seed)) as ev:
        for batch in iter_batches(ev.source, ev.rows, 64):
            t, valid = batch["time"].numpy(), batch["valid"].numpy()
            steps = np.where(valid[:, 1:] & valid[:, :-1], np.diff(t, axis=1), np.nan)
            med = np.nanmedian(steps, axis=1)
            gapped = np.nanmax(steps, axis=1) > args.gap * med
            if not gapped.any():
                continue
            keep = torch.from_numpy(np.flatnonzero(gapped))
            batch = {k: v[keep] for k, v in batch.items()}
            batch["hidden"] = hide(ev, batch)
            n_windows += len(keep)
            index_time = torch.from_numpy(np.arange(t.shape[1])[None] * med[gapped][:, None]).float()
            sel = (batch["valid"] & batch["hidden"]).numpy()
            straddle = sel & straddles_gap(t[gapped], batch["valid"].numpy(), sel, med[gapped], args.gap)
            y = batch["values"].numpy()
            for label, times in (("true", batch["time"]), ("index", index_time)):
                with torch.no_grad():
                    pred = ev.model.forward_batch({**batch, "time": times})["reconstructed"].numpy()
                lin = linear_baseline(y, batch["valid"].numpy(), batch["hidden"].numpy(), times.numpy())
                for name, p in (("model", pred), ("linear", lin)):
                    for sub, m in zip(subsets, (sel, straddle)):
                        s = sums[(f"{name} {label}", sub)]
                        s[0] += float(((p - y)[m] ** 2).sum())
                        s[1] += int(m.sum())
    print(f"{args.run_dir}: {n_windows} gapped test windows (largest step > {args.gap} x median), mask seed {args.mask_seed}")
    for sub, title in zip(subsets, ("all hidden points of the gapped windows",
                                    "hidden points whose visible neighbours straddle a gap")):
        print(f"{title}: {sums[('model true', sub)][1]}")
        print(f"{'predictor':>10}  {'true times':>12}  {'index times':>12}  {'index / true':>12}")
        for name in ("model", "linear"):
            a = sums[(f"{name} true", sub)][0] / max(sums[(f"{name} true", sub)][1], 1)
            b = sums[(f"{name} index", sub)][0] / max(sums[(f"{name} index", sub)][1], 1)
            print(f"{name:>10}  {a:>12.4f}  {b:>12.4f}  {b / max(a, 1e-30):>12.3f}")


def straddles_gap(t: np.ndarray, valid: np.ndarray, hidden: np.ndarray, med: np.ndarray, gap: float) -> np.ndarray:
    """(B, L) bool: positions whose previous and next visible positions (or the window's ends)
    enclose a step between adjacent real points larger than ``gap`` x the row's median ``med``."""
    B, L = t.shape
    steps = np.where(valid[:, 1:] & valid[:, :-1], np.diff(t, axis=1), 0.0)
    big = np.concatenate([np.zeros((B, 1)), np.cumsum(steps > gap * med[:, None], axis=1)], axis=1)  # big steps before j
    visible = valid & ~hidden
    idx = np.broadcast_to(np.arange(L), (B, L))
    prev = np.maximum.accumulate(np.where(visible, idx, 0), axis=1)
    nxt = np.minimum.accumulate(np.where(visible, idx, L - 1)[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(B)[:, None]
    return big[rows, nxt] > big[rows, prev]


if __name__ == "__main__":
    main()
