"""How sure is "learned beats hand-crafted"? Paired bootstrap over the test curves: prints a table.

    python benchmarks/probe_bootstrap.py emb.h5 [--draws 2000] [--against other.h5] [--targets period] [--seed 0]

For an embeddings file and its hand-crafted features (the ``STEM-features.npz`` cache that
``lcgen probe`` wrote beside it), fits the probes exactly as ``lcgen probe`` does (curve rows,
test fraction 0.3, seed 0 or ``--seed``; ``probe.classify`` / ``probe.regress``, settings chosen by the same
cross-validation), keeps both representations' predictions for every test curve, and resamples
the test curves with replacement (the same draw for both, seeded): the score difference learned −
hand-crafted on the test set as probed, its 95 % interval over the draws, and the fraction of
draws in which the learned embedding scores higher. Macro-F1 for the type, R² for log10 period.
``--against other.h5``: the curve vectors of another embeddings file of the same input take the
hand-crafted features' place (learned − other; no features cache needed). ``--targets period``:
the period probes only.
``--seed S``: the split (and the logistic probe's seed) of ``lcgen probe --seed S``; the
bootstrap draws stay seeded 0.

Several embeddings files with as many ``--against`` files (e.g. one model's training seeds and
another's, paired seed by seed; all of the same input): every column is the mean over the pairs,
and each draw resamples the test curves once for all of them, so the interval is that of the
seed-averaged difference (the training seeds themselves are not resampled):

    python benchmarks/probe_bootstrap.py mm_s0.h5 mm_s1.h5 mm_s2.h5 --against tr_s0.h5 tr_s1.h5 tr_s2.h5
"""

from __future__ import annotations

import argparse

import numpy as np

from lcgen.embed import probe as P
from lcgen.embed.extract import read_embeddings

PROBES = (("lc_type", "logistic"), ("lc_type", "knn"), ("log10(period)", "ridge"), ("log10(period)", "knn"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("embeddings", nargs="+")
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--against", nargs="+", help="other embeddings files of the same input (one per embeddings "
                                                  "file), in place of the hand-crafted features")
    ap.add_argument("--targets", choices=("all", "period"), default="all")
    ap.add_argument("--seed", type=int, default=0, help="the split seed, as lcgen probe --seed")
    args = ap.parse_args()
    from sklearn.metrics import f1_score, r2_score

    if (args.against or len(args.embeddings) > 1) and len(args.against or ()) != len(args.embeddings):
        ap.error(f"{len(args.embeddings)} embeddings files need as many --against files, one for each")
    pairs = []  # (learned, other) curve vectors per pair
    for k, path in enumerate(args.embeddings):
        emb = read_embeddings(path)
        if args.against:
            other = read_embeddings(args.against[k])
            assert np.array_equal(other.curve_source, emb.curve_source), "the other file embeds other curves"
            pairs.append((emb.curve, other.curve))
        else:
            with np.load(P.features_path(path), allow_pickle=False) as z:
                assert np.array_equal(z["row"], emb.row), "the features cache holds other rows"
                pairs.append((emb.curve, P._curve_nanmean(z["features"], emb.curve_index, emb.curve_source.size)))
        if k == 0:
            meta, groups = emb.curve_meta, emb.curve_source
        assert np.array_equal(emb.curve_source, groups), f"{path} embeds other curves than {args.embeddings[0]}"
    train, test = P.split_groups(groups, 0.3, args.seed)
    rng = np.random.default_rng(0)
    many = f", the mean over {len(pairs)} pairs" if len(pairs) > 1 else ""
    print(f"{' '.join(args.embeddings)}: paired bootstrap over test curves, {args.draws} draws, split seed {args.seed}{many}")
    print("| probe | learned | hand-crafted | difference | 95 % interval | draws learned higher |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"(the second column: {' '.join(args.against)})" if args.against else "", flush=True)
    probes = [p for p in PROBES if args.targets == "all" or p[0] == "log10(period)"]
    for spec in dict.fromkeys(t for t, _ in probes):
        y, usable, kind = P.target_values(meta, spec)
        a, b = train & usable, test & usable
        fit = P.classify if kind == "classification" else P.regress
        extra = {"seed": args.seed} if kind == "classification" else {}
        preds = []  # per pair: {"learned": {probe: predictions}, "hand-crafted": {...}}
        for learned, other in pairs:
            preds.append({"learned": {}, "hand-crafted": {}})
            for name, X in (("learned", learned), ("hand-crafted", other)):
                fit(X[a], y[a], X[b], y[b], groups=groups[a], predictions=preds[-1][name], **extra)
        truth = y[b]
        labels = np.unique(y[a | b]) if kind == "classification" else None

        def metric(t, p):
            if kind == "classification":
                return f1_score(t, p, labels=labels, average="macro", zero_division=0)
            return r2_score(t, p)

        draws = rng.integers(0, truth.size, size=(args.draws, truth.size))
        for target, probe in probes:
            if target != spec:
                continue
            sl = np.mean([metric(truth, p["learned"][probe]) for p in preds])
            sh = np.mean([metric(truth, p["hand-crafted"][probe]) for p in preds])
            diff = np.array([np.mean([metric(truth[i], p["learned"][probe][i]) - metric(truth[i], p["hand-crafted"][probe][i])
                                      for p in preds]) for i in draws])
            lo, hi = np.quantile(diff, [0.025, 0.975])
            print(f"| {spec} {'macro-F1' if labels is not None else 'R²'} ({probe}) | {sl:.3f} | {sh:.3f} | "
                  f"{sl - sh:+.3f} | [{lo:+.3f}, {hi:+.3f}] | {np.mean(diff > 0):.0%} |", flush=True)


if __name__ == "__main__":
    main()
