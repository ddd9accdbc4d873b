"""kNN probe scores of embeddings files in other feature spaces than the probes' own: prints a table.

    python benchmarks/probe_knn_space.py emb.h5 [emb2.h5 ...]

`lcgen probe` standardises every representation the same way (``probe._prepare``: train medians
for missing values, then each column to mean 0 and variance 1 on the train rows) and runs kNN
with the Euclidean distance. This asks whether that preparation, not the representation, is what
holds the learned embeddings' kNN scores back: for each file's learned curve vectors and its
hand-crafted features (the ``STEM-features.npz`` cache that ``lcgen probe`` wrote beside it), the
kNN type macro-F1 and log10-period R² on the probes' split (curve rows, test fraction 0.3, seed
0; k chosen by the same cross-validation) with

- ``standardised``: the probes' preparation, Euclidean distance (what ``lcgen probe`` reports);
- ``cosine``: the same standardised columns, cosine distance (the usual kNN protocol of
  self-supervised image models);
- ``centred``: the vectors' own scales, only centred (learned embeddings only: the hand-crafted
  columns are in unrelated units);
- ``pca16``/``pca64``: standardised, then the first 16/64 principal components of the train rows.
"""

from __future__ import annotations

import argparse

import numpy as np

from lcgen.embed import probe as P
from lcgen.embed.extract import read_embeddings

SPACES = ("standardised", "cosine", "centred", "pca16", "pca64")
TARGETS = ("lc_type", "log10(period)")


def knn_score(X, meta, groups, train, test, spec: str, space: str) -> tuple[float, int]:
    """kNN score (macro-F1 or R²) of ``X`` for target ``spec`` in feature space ``space``, and k."""
    from sklearn.decomposition import PCA
    from sklearn.metrics import f1_score, r2_score
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

    y, usable, kind = P.target_values(meta, spec)
    a, b = train & usable, test & usable
    if space == "centred":
        A, B = X[a] - X[a].mean(0), X[b] - X[a].mean(0)
    else:
        A, B = P._prepare(X[a], X[b])
        if space.startswith("pca"):
            pca = PCA(int(space[3:]), random_state=0).fit(A)
            A, B = pca.transform(A), pca.transform(B)
    metric = "cosine" if space == "cosine" else "euclidean"
    if kind == "classification":
        labels = np.unique(y[a | b])
        codes = np.searchsorted(labels, y[a])
        model = P._knn(KNeighborsClassifier(metric=metric), P._folds(groups[a], codes), A, codes, P._macro_f1())
        value = f1_score(y[b], labels[model.predict(B)], labels=labels, average="macro", zero_division=0)
    else:
        model = P._knn(KNeighborsRegressor(metric=metric), P._folds(groups[a]), A, y[a], "r2")
        value = r2_score(y[b], model.predict(B))
    return float(value), int(model.best_params_["n_neighbors"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("embeddings", nargs="+")
    args = ap.parse_args()
    print("| representation | space | " + " | ".join(f"{t} kNN" for t in TARGETS) + " |")
    print("|---|---|" + "---:|" * len(TARGETS))
    for path in args.embeddings:
        emb = read_embeddings(path)
        with np.load(P.features_path(path), allow_pickle=False) as z:
            assert np.array_equal(z["row"], emb.row), f"{P.features_path(path)} holds other rows"
            feats = P._curve_nanmean(z["features"], emb.curve_index, emb.curve_source.size)
        meta, groups = emb.curve_meta, emb.curve_source
        train, test = P.split_groups(groups, 0.3, 0)
        for name, X in ((f"{path} learned ({emb.curve.shape[1]})", emb.curve.astype(np.float64)),
                        (f"{path} hand-crafted ({feats.shape[1]})", feats)):
            for space in SPACES:
                if space == "centred" and "hand-crafted" in name:
                    continue
                if space.startswith("pca") and int(space[3:]) >= X.shape[1]:
                    continue
                cells = [knn_score(X, meta, groups, train, test, t, space) for t in TARGETS]
                print(f"| {name} | {space} | " + " | ".join(f"{v:.3f} (k={k})" for v, k in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
