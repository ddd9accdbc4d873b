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
"""

from __future__ import annotations

import argparse

import numpy as np

from lcgen.embed import probe as P
from lcgen.embed.extract import read_embeddings

PROBES = (("lc_type", "logistic"), ("lc_type", "knn"), ("log10(period)", "ridge"), ("log10(period)", "knn"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("embeddings")
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--against", help="another embeddings file of the same input, in place of the hand-crafted features")
    ap.add_argument("--targets", choices=("all", "period"), default="all")
    ap.add_argument("--seed", type=int, default=0, help="the split seed, as lcgen probe --seed")
    args = ap.parse_args()
    from sklearn.metrics import f1_score, r2_score

    emb = read_embeddings(args.embeddings)
    if args.against:
        other = read_embeddings(args.against)
        assert np.array_equal(other.curve_source, emb.curve_source), "the other file embeds other curves"
        hand = other.curve
    else:
        with np.load(P.features_path(args.embeddings), allow_pickle=False) as z:
            assert np.array_equal(z["row"], emb.row), "the features cache holds other rows"
            hand = P._curve_nanmean(z["features"], emb.curve_index, emb.curve_source.size)
    reps = {"learned": emb.curve, "hand-crafted": hand}
    meta, groups = emb.curve_meta, emb.curve_source
    train, test = P.split_groups(groups, 0.3, args.seed)
    rng = np.random.default_rng(0)
    print(f"{args.embeddings}: paired bootstrap over test curves, {args.draws} draws, split seed {args.seed}")
    print("| probe | learned | hand-crafted | difference | 95 % interval | draws learned higher |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"(the second column: {args.against})" if args.against else "", flush=True)
    probes = [p for p in PROBES if args.targets == "all" or p[0] == "log10(period)"]
    for spec in dict.fromkeys(t for t, _ in probes):
        y, usable, kind = P.target_values(meta, spec)
        a, b = train & usable, test & usable
        preds = {}
        for name, X in reps.items():
            preds[name] = {}
            fit = P.classify if kind == "classification" else P.regress
            extra = {"seed": args.seed} if kind == "classification" else {}
            fit(X[a], y[a], X[b], y[b], groups=groups[a], predictions=preds[name], **extra)
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
            pl, ph = preds["learned"][probe], preds["hand-crafted"][probe]
            sl, sh = metric(truth, pl), metric(truth, ph)
            diff = np.array([metric(truth[i], pl[i]) - metric(truth[i], ph[i]) for i in draws])
            lo, hi = np.quantile(diff, [0.025, 0.975])
            print(f"| {spec} {'macro-F1' if labels is not None else 'R²'} ({probe}) | {sl:.3f} | {sh:.3f} | "
                  f"{sl - sh:+.3f} | [{lo:+.3f}, {hi:+.3f}] | {np.mean(diff > 0):.0%} |", flush=True)


if __name__ == "__main__":
    main()
