"""Probe scores of one run's embeddings for several latent levels and poolings, beside the
hand-crafted features and the random-weight control, all on one split by light curve.

    python benchmarks/probe_variants.py RUN_DIR TIMESERIES.h5 [--features CACHE.npy]
        [--variants bottleneck:mean,all:mean,all:meanmax,all:mean+max+std,all:mean+max+spectrum]

Prints one table per target (curve rows, test fraction 0.3, seed 0, as `lcgen probe`). The
hand-crafted features of every row of TIMESERIES.h5 are computed once (the slow part: ~20 ms of
CPU per 128-point window) and cached in CACHE.npy when given.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from lcgen.embed import EmbedConfig, embed
from lcgen.embed.features import timeseries_features
from lcgen.embed.probe import _curve_nanmean, default_targets, probe_arrays, split_groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("input")
    ap.add_argument("--features", help="cache of the hand-crafted features (.npy, all rows of INPUT)")
    ap.add_argument("--variants", default="bottleneck:mean,all:mean,all:meanmax,all:mean+max+std,all:mean+max+spectrum")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    reps, info = {}, {}
    base = None
    for variant in args.variants.split(","):
        level, pooling = variant.split(":")
        for weights in ("trained", "random"):
            tick = time.process_time()
            emb = embed(args.run_dir, args.input, EmbedConfig(level=level, pooling=pooling, weights=weights,
                                                             seed=args.seed))
            name = f"{'learned' if weights == 'trained' else 'random'} {level}/{pooling}"
            reps[name] = emb.curve
            info[name] = f"{emb.curve.shape[1]} dims, {time.process_time() - tick:.1f} s CPU"
            base = base or emb
    cache = Path(args.features) if args.features else None
    if cache is not None and cache.is_file():
        feats = np.load(cache)
    else:
        tick = time.process_time()
        feats = timeseries_features(args.input, np.arange(base.row.max() + 1))
        print(f"hand-crafted features: {time.process_time() - tick:.0f} s CPU")
        if cache is not None:
            np.save(cache, feats)
    reps["handcrafted"] = _curve_nanmean(feats[base.row], base.curve_index, base.curve_source.size)

    meta, groups = base.curve_meta, base.curve_source
    targets = default_targets(meta)
    train, test = split_groups(groups, 0.3, args.seed)
    results = {name: probe_arrays(X, meta, groups, targets, train=train, test=test, seed=args.seed)
               for name, X in reps.items()}
    print(f"{args.run_dir} on {args.input}: {groups.size} curves, {test.sum()} test")
    for target in targets:
        print(f"\n{target}")
        if results["handcrafted"][target]["kind"] == "classification":
            cols = [("logistic", "macro_f1"), ("knn", "macro_f1"), ("logistic", "accuracy"),
                    ("few_shot", "10"), ("few_shot", "100")]
        else:
            cols = [("ridge", "r2"), ("knn", "r2"), ("ridge", "rmse"), ("knn", "rmse")]
        print(f"{'representation':34s}" + "".join(f"{a + ' ' + b:>20s}" for a, b in cols))
        for name, res in results.items():
            r = res[target]
            cells = [r["few_shot"][b]["macro_f1"] if a == "few_shot" else r[a][b] for a, b in cols]
            print(f"{name:34s}" + "".join(f"{c:20.3f}" for c in cells) + f"   ({info.get(name, '')})")


if __name__ == "__main__":
    main()
