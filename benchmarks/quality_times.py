"""Does a time-series run use WHEN points were observed? Masked MSE with the true times against
evenly spaced fake times, on the test windows that have gaps, same masks for both.

    PYTHONPATH=. python benchmarks/quality_times.py RUN_DIR [--mask-seed 1] [--gap 3] [--checkpoint last] [--cut 16]
        [--data FILE]

A window "has gaps" when its largest step between real points exceeds ``--gap`` times its
median step. Index times are ``t'_j = j * median step`` (the same span, no gaps). The model and
linear interpolation are both scored on exactly the same hidden positions; a model that ignores
time changes little, one that uses it loses clearly with index times.

Most hidden points of a gapped window lie far from its gap, where true and index times give
the same local picture; the second table scores only the hidden points whose nearest visible
neighbours straddle a gap (a step > ``--gap`` x median between them), where interpolation in
true and in index time differ. Beside each ratio: its 95 % interval with the windows resampled
(bootstrap, 2,000 draws).

``--data FILE`` scores every window of another time-series file instead of the run's test split
(as ``lcgen evaluate --data`` does), e.g. mocks with more and longer gaps than the run's own.

``--cut K`` first cuts a run of 1..K real points out of every test window and closes it up, as
``gap_augment`` does in training (draws fixed by the row index and ``--mask-seed``): every
window then holds a gap of a known kind, across which the signal went on evolving.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from lcgen.evaluate.scoring import EvaluateConfig, hide, linear_baseline, open_evaluation
from lcgen.masking import close_gap, fixed_uniforms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--mask-seed", type=int, default=1)
    parser.add_argument("--gap", type=float, default=3.0)
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    parser.add_argument("--cut", type=int, default=0, metavar="K",
                        help="first cut a run of 1..K real points out of every test window and close it up "
                             "(lcgen.masking.close_gap, draws fixed by the row index): gaps of a known kind")
    parser.add_argument("--data", help="score every window of this time-series file instead of the run's test split")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from lcgen.train.data import iter_batches

    subsets = ("all", "straddle")
    # per window: squared-error sum and count of each predictor, time input and subset
    sums = {(k, sub): [] for k in ("model true", "model index", "linear true", "linear index") for sub in subsets}
    n_windows = 0
    with open_evaluation(args.run_dir, EvaluateConfig(data=args.data, mask_seed=args.mask_seed, checkpoint=args.checkpoint)) as ev:
        for batch in iter_batches(ev.source, ev.rows, 64):
            if args.cut:
                u = fixed_uniforms(batch["index"], seed=args.mask_seed, n=3)
                batch = close_gap(batch, u, fraction=1.0, max_points=args.cut)
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
                        sse = np.where(m, (p - y) ** 2, 0.0).sum(1)
                        sums[(f"{name} {label}", sub)].extend(zip(sse, m.sum(1)))
    cut = f", a run of 1-{args.cut} real points cut out of each" if args.cut else ""
    rows = f"windows of {args.data}" if args.data else "test windows"
    print(f"{args.run_dir} ({args.checkpoint}.pt{cut}): {n_windows} gapped {rows} (largest step > {args.gap} x median), mask seed {args.mask_seed}")
    # 95 % interval of the ratio: the windows resampled with replacement (the same draws for all)
    draws = np.random.default_rng(0).integers(0, n_windows, size=(2000, n_windows))
    for sub, title in zip(subsets, ("all hidden points of the gapped windows",
                                    "hidden points whose visible neighbours straddle a gap")):
        print(f"{title}: {int(np.array(sums[('model true', sub)])[:, 1].sum())}")
        print(f"{'predictor':>10}  {'true times':>12}  {'index times':>12}  {'index / true':>12}  {'95 % interval':>14}")
        for name in ("model", "linear"):
            a, b = (np.array(sums[(f"{name} {label}", sub)]) for label in ("true", "index"))
            ratio = b[draws, 0].sum(1) / np.maximum(a[draws, 0].sum(1), 1e-30)
            lo, hi = np.percentile(ratio, [2.5, 97.5])
            mse_a, mse_b = a[:, 0].sum() / max(a[:, 1].sum(), 1), b[:, 0].sum() / max(b[:, 1].sum(), 1)
            print(f"{name:>10}  {mse_a:>12.4f}  {mse_b:>12.4f}  {mse_b / max(mse_a, 1e-30):>12.3f}  "
                  f"{lo:>6.3f} - {hi:.3f}")


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
