"""What do an embedding's kNN neighbours follow, and is its variance in a few directions? Prints a table.

    python benchmarks/knn_neighbours.py DATA.h5 emb.h5 [emb2.h5 ...]

For each embeddings file (``lcgen embed`` of the curves in DATA.h5, a paired or time-series file
whose times give the window spans), the curve vectors are split and standardised as ``lcgen
probe`` does (curve rows, 30 % test curves, seed 0; each dimension scaled by the train curves'
moments), and printed:

- ``eff. dims``: 1 / Σ p_i², p_i the shares of the standardised train vectors' variance along
  their principal directions (1: one direction holds all the variance; D: spread evenly), and
  ``PC1, PC2``: the first two shares. Euclidean kNN on the standardised vectors (the probe's)
  is decided by the directions of large variance;
- ``type η² PC1``: the fraction of the first principal component's variance (train curves) that
  lies between the types;
- ``type kNN``: the probe's kNN type macro-F1 (k among 5, 10, 20, 40 by the probe's folds), then
  the same on the vectors with their 2 leading principal directions removed (``−2 PCs``) and on
  the leading 32 whitened (``white 32``): linear re-weightings of the directions, as an
  ``embed`` option could apply to every model alike;
- the test R² of a kNN regressor (k = 10) on the same standardised vectors for nuisance
  variables and the period: log10 period, the mean log10 window time span of the curve's
  windows, log10 duration, log10 points, log10 noise rms (near 1: neighbours share it).
"""

from __future__ import annotations

import argparse

import numpy as np

from latent_readouts import curve_span
from lcgen.embed.extract import read_embeddings
from lcgen.embed.probe import _folds, _knn, _macro_f1, _prepare, split_groups

NUISANCE = ("log10 period", "log span", "log duration", "log points", "log noise")


def knn_f1(A, B, codes, train, test, folds) -> float:
    """Test macro-F1 of the probe's kNN classifier (k chosen on ``folds``)."""
    from sklearn.metrics import f1_score
    from sklearn.neighbors import KNeighborsClassifier

    model = _knn(KNeighborsClassifier(), folds, A, codes[train], _macro_f1())
    return float(f1_score(codes[test], model.predict(B), average="macro"))


def knn_r2(A, B, v, train, test, k: int = 10) -> float:
    """Test R² of a k-neighbour regressor of ``v`` (curves with a finite value only)."""
    from sklearn.metrics import r2_score
    from sklearn.neighbors import KNeighborsRegressor

    a, b = np.isfinite(v[train]), np.isfinite(v[test])
    model = KNeighborsRegressor(k).fit(A[a], v[train][a])
    return float(r2_score(v[test][b], model.predict(B[b])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="the data file the embeddings were made from (its times give the spans)")
    ap.add_argument("embeddings", nargs="+")
    args = ap.parse_args()
    print("| embeddings | dims | eff. dims | PC1, PC2 | type η² PC1 | type kNN | −2 PCs | white 32 | "
          + " | ".join(f"kNN R² {n}" for n in NUISANCE) + " |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(NUISANCE))
    first = None
    for path in args.embeddings:
        emb = read_embeddings(path)
        if first is None:
            first = emb
            meta = emb.curve_meta
            labels, codes = np.unique(meta["lc_type"].astype(str), return_inverse=True)
            train, test = split_groups(emb.curve_source, 0.3, 0)
            folds = _folds(emb.curve_source[train], codes[train])
            targets = [np.log10(meta["period"]), curve_span(args.data, emb), np.log10(meta["duration"]),
                       np.log10(meta["n_points"].astype(np.float64)), np.log10(meta["noise_rms"])]
        assert np.array_equal(emb.curve_source, first.curve_source), f"{path} embeds other curves"
        A, B = _prepare(emb.curve[train], emb.curve[test])
        _, S, Vt = np.linalg.svd(A - A.mean(0), full_matrices=False)
        share = S ** 2 / np.sum(S ** 2)
        pc1 = (A - A.mean(0)) @ Vt[0]
        between = sum((codes[train] == c).sum() * pc1[codes[train] == c].mean() ** 2 for c in range(labels.size))
        drop = Vt[:2].T @ Vt[:2]
        white = Vt[:32].T / S[:32] * np.sqrt(len(A))
        f1 = [knn_f1(a, b, codes, train, test, folds) for a, b in
              ((A, B), (A - A @ drop, B - B @ drop), (A @ white, B @ white))]
        r2 = [knn_r2(A, B, v, train, test) for v in targets]
        print(f"| {path} | {A.shape[1]} | {1 / np.sum(share ** 2):.1f} | {share[0]:.2f}, {share[1]:.2f} | "
              f"{between / np.sum(pc1 ** 2):.2f} | " + " | ".join(f"{x:.3f}" for x in f1) + " | "
              + " | ".join(f"{x:.2f}" for x in r2) + " |", flush=True)


if __name__ == "__main__":
    main()
