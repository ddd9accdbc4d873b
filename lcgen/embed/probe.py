"""Probes: what simple models can read from a representation, on a split by source light curve.

A representation is a matrix X (n, D), one row per light curve (or per window, ``rows='window'``),
with a group id per row (its source curve). Rows are split into train and test by a seeded
permutation of the groups, so no curve sits on both sides, and every representation of the same
rows is probed on the same split:

- classification targets (text columns such as ``lc_type``): logistic regression (multinomial,
  L2) and k-nearest neighbours (Euclidean); macro-F1 and accuracy on the test rows; and
  few-shot: the logistic probe trained on ``n`` labelled curves per class drawn from the train
  split (for each n in ``few_shot``, ``repeats`` seeded draws, mean and std);
- regression targets (numeric columns, ``log10(NAME)`` for a log): ridge regression and
  k-nearest neighbours; R² and RMSE on the test rows. Rows where the target is missing (NaN,
  or ≤ 0 under a log) are left out of that target.

Each probe's one setting (the logistic C among 10^-3..10^2, the ridge alpha among 10^-2..10^5,
the kNN k among 5, 10, 20, 40) is chosen by 5-fold cross-validation on the train rows alone
(macro-F1 for classifiers, R² for regressors), with fixed folds by light curve (sklearn's
GroupKFold, or StratifiedGroupKFold for classes, unshuffled); a few-shot probe chooses its C on
its own labelled curves. The chosen values are in the report. So a wide representation gets the
regularisation it needs and a narrow one is not over-regularised: the protocol is the same for
every representation.

Every probe sees standardised features (mean 0, variance 1 on the train rows; missing values
set to the train median first), fitted on the train rows only. All seeds are fixed, so the
numbers are reproducible. Chance for macro-F1 with K balanced classes is 1/K; for R² it is ≤ 0.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Callable, Literal, Optional, Sequence

import numpy as np

from lcgen.errors import LcgenError

PROBE_FILE = "probe.json"
DEFAULT_TARGETS = ("lc_type", "log10(period)", "log10(tau)")


@dataclasses.dataclass
class ProbeConfig:
    """Settings of ``lcgen probe``."""

    targets: Optional[list[str]] = None  # (list[str]) meta columns to read out; log10(NAME) regresses the log; null = lc_type, log10(period), log10(tau) where present
    rows: Literal["curve", "window"] = "curve"  # (str) probe one vector per light curve or per window (split by curve either way)
    test_fraction: float = 0.3  # (float) fraction of light curves held out for scoring
    seed: int = 0  # (int) seeds the split, the few-shot draws and the random-weight control
    few_shot: list[int] = dataclasses.field(default_factory=lambda: [10, 100])  # (list[int]) labelled curves per class for the few-shot scores
    repeats: int = 5  # (int) few-shot draws per size (mean and std reported)
    baselines: bool = True  # (bool) also probe hand-crafted features and the random-weight control on the same split


# --------------------------------------------------------------------------------------------
# Targets and the split


def parse_target(spec: str) -> tuple[str, bool]:
    """``'log10(period)'`` -> ('period', True); ``'lc_type'`` -> ('lc_type', False)."""
    m = re.fullmatch(r"\s*log10\((\w+)\)\s*", spec)
    return (m.group(1), True) if m else (spec.strip(), False)


def target_values(meta: dict[str, np.ndarray], spec: str) -> tuple[np.ndarray, np.ndarray, str]:
    """The values of target ``spec`` from ``meta`` columns: ``(y, usable (n,) bool, kind)`` with
    kind "classification" (text or bool columns) or "regression" (numbers)."""
    name, log = parse_target(spec)
    if name not in meta:
        raise LcgenError(f"no meta column '{name}' to probe; the file has: {', '.join(sorted(meta)) or 'none'}")
    values = np.asarray(meta[name])
    if values.dtype.kind in "USOb":
        if log:
            raise LcgenError(f"meta column '{name}' is not numeric; log10() needs numbers")
        values = values.astype(str)
        return values, values != "", "classification"
    values = values.astype(np.float64)
    usable = np.isfinite(values)
    if log:
        usable &= values > 0
        values = np.log10(np.where(usable, values, 1.0))
    return values, usable, "regression"


def default_targets(meta: dict[str, np.ndarray]) -> list[str]:
    """The mock targets that the data carry: type, log period (periodic types), log tau (DRW)."""
    return [t for t in DEFAULT_TARGETS if parse_target(t)[0] in meta]


def split_groups(groups: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (train, test) masks over rows, by a seeded permutation of the unique ``groups``:
    every row of one group lands on the same side."""
    if not 0 < test_fraction < 1:
        raise LcgenError(f"test_fraction must be in (0, 1), got {test_fraction}")
    unique = np.unique(groups)
    if unique.size < 2:
        raise LcgenError("need at least 2 light curves to split into train and test")
    order = np.random.default_rng(seed).permutation(unique.size)
    n_test = min(max(1, int(round(test_fraction * unique.size))), unique.size - 1)
    test = np.isin(groups, unique[order[:n_test]])
    return ~test, test


# --------------------------------------------------------------------------------------------
# Probes


def _prepare(X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Impute missing values with the train medians, then standardise with the train moments."""
    X_train, X_test = np.array(X_train, np.float64), np.array(X_test, np.float64)
    median = np.nanmedian(np.where(np.isfinite(X_train), X_train, np.nan), axis=0)
    median = np.where(np.isfinite(median), median, 0.0)
    for X in (X_train, X_test):
        bad = ~np.isfinite(X)
        X[bad] = np.broadcast_to(median, X.shape)[bad]
    mean, std = X_train.mean(0), X_train.std(0)
    std = np.where(std > 0, std, 1.0)
    return (X_train - mean) / std, (X_test - mean) / std


CV_FOLDS = 5
LOGISTIC_CS = np.logspace(-3, 2, 6)  # inverse L2 strengths tried by the logistic probe
RIDGE_ALPHAS = np.logspace(-2, 5, 15)  # L2 strengths tried by the ridge probe
KNN_KS = (5, 10, 20, 40)  # neighbour counts tried by the kNN probes


def _folds(groups: np.ndarray, y: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fixed cross-validation folds over train rows, by group (every row of a curve in one fold):
    :data:`CV_FOLDS` (fewer with fewer groups) folds of sklearn's deterministic GroupKFold, or
    StratifiedGroupKFold (not shuffled) when class labels ``y`` are given."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    groups = np.asarray(groups)
    n = min(CV_FOLDS, np.unique(groups).size)
    if y is not None:
        n = min(n, int(np.unique(y, return_counts=True)[1].min()))
        if n >= 2:
            return list(StratifiedGroupKFold(n).split(np.zeros(len(y)), y, groups))
    return list(GroupKFold(max(n, 2)).split(np.zeros(len(groups)), groups=groups))


def _knn(estimator, folds, A, y, scoring):
    """kNN with k chosen among :data:`KNN_KS` (at most the smallest fold's train size) by
    ``scoring`` on the folds."""
    from sklearn.model_selection import GridSearchCV

    smallest = min(len(train) for train, _ in folds)
    ks = [k for k in KNN_KS if k <= smallest] or [max(1, smallest)]
    return GridSearchCV(estimator, {"n_neighbors": ks}, cv=folds, scoring=scoring, error_score="raise").fit(A, y)


def _macro_f1():
    """The macro-F1 scorer, for integer class codes. (On two text classes sklearn 1.9's scorers
    fail: the "f1_macro" string inside LogisticRegressionCV passes pos_label twice, and a
    make_scorer's default pos_label=1 is not a label; so the probes fit class codes.)"""
    from sklearn.metrics import f1_score, make_scorer

    return make_scorer(f1_score, average="macro")


def _logistic(folds, A, y, seed: int):
    """sklearn's LogisticRegressionCV (L2, C among :data:`LOGISTIC_CS` by macro-F1 on ``folds``)
    fitted to ``A``, ``y``; its FutureWarnings about coming changes of defaults and attributes
    (none of which this uses) are kept out of the user's output."""
    import warnings

    from sklearn.linear_model import LogisticRegressionCV

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return LogisticRegressionCV(Cs=LOGISTIC_CS, cv=folds, scoring=_macro_f1(), max_iter=2000,
                                    random_state=seed).fit(A, y)


def classify(X_train, y_train, X_test, y_test, *, seed: int = 0, groups=None,
             predictions: dict | None = None) -> dict:
    """Logistic-regression and kNN classifiers, their strength C and neighbour count k chosen by
    cross-validated macro-F1 on the train rows (folds by ``groups``, default one per row);
    macro-F1 and accuracy on the test rows, and the chosen C and k. ``predictions`` (a dict)
    receives each probe's test predictions."""
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.neighbors import KNeighborsClassifier

    A, B = _prepare(X_train, X_test)
    labels = np.unique(np.concatenate([y_train, y_test]))
    codes = np.searchsorted(labels, y_train)  # fitted as class codes (see _macro_f1)
    folds = _folds(np.arange(len(codes)) if groups is None else groups, codes)
    logistic = _logistic(folds, A, codes, seed)
    knn = _knn(KNeighborsClassifier(), folds, A, codes, _macro_f1())
    out = {}
    for name, model, chosen in (("logistic", logistic, {"C": float(np.ravel(logistic.C_)[0])}),
                                ("knn", knn, {"k": int(knn.best_params_["n_neighbors"])})):
        pred = labels[model.predict(B)]
        if predictions is not None:
            predictions[name] = pred
        out[name] = {"macro_f1": float(f1_score(y_test, pred, labels=labels, average="macro", zero_division=0)),
                     "accuracy": float(accuracy_score(y_test, pred)), **chosen}
    return out


def regress(X_train, y_train, X_test, y_test, *, groups=None, predictions: dict | None = None) -> dict:
    """Ridge and kNN regressors, their alpha and neighbour count k chosen by cross-validation on
    the train rows (folds by ``groups``, default one per row); R² and RMSE on the test rows, and
    the chosen alpha and k. ``predictions`` (a dict) receives each probe's test predictions."""
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import mean_squared_error, r2_score
    from sklearn.neighbors import KNeighborsRegressor

    A, B = _prepare(X_train, X_test)
    folds = _folds(np.arange(len(y_train)) if groups is None else groups)
    ridge = RidgeCV(alphas=RIDGE_ALPHAS, cv=folds).fit(A, y_train)
    knn = _knn(KNeighborsRegressor(), folds, A, y_train, "r2")
    out = {}
    for name, model, chosen in (("ridge", ridge, {"alpha": float(ridge.alpha_)}),
                                ("knn", knn, {"k": int(knn.best_params_["n_neighbors"])})):
        pred = model.predict(B)
        if predictions is not None:
            predictions[name] = pred
        out[name] = {"r2": float(r2_score(y_test, pred)),
                     "rmse": float(np.sqrt(mean_squared_error(y_test, pred))), **chosen}
    return out


def few_shot(X, y, groups, train: np.ndarray, test: np.ndarray, sizes: Sequence[int], *,
             repeats: int, seed: int) -> dict:
    """The logistic probe trained on ``n`` train curves per class (all their rows), for each n
    in ``sizes``: mean and std over ``repeats`` seeded draws of macro-F1 and accuracy on the
    test rows. A class with fewer train curves than n contributes all of them (``n_max`` says
    the most any class could give)."""
    from sklearn.metrics import accuracy_score, f1_score

    labels = np.unique(y[train | test])
    out = {}
    for n in sizes:
        f1s, accs = [], []
        for r in range(repeats):
            rng = np.random.default_rng([seed, n, r])
            pick = np.zeros(len(y), bool)
            for c in labels:
                curves = np.unique(groups[train & (y == c)])
                chosen = rng.choice(curves, size=min(n, curves.size), replace=False)
                pick |= train & np.isin(groups, chosen)
            if np.unique(y[pick]).size < 2:
                continue
            A, B = _prepare(X[pick], X[test])
            folds = _folds(groups[pick], y[pick])  # C chosen on the labelled curves alone
            pred = labels[_logistic(folds, A, np.searchsorted(labels, y[pick]), seed).predict(B)]
            f1s.append(f1_score(y[test], pred, labels=labels, average="macro", zero_division=0))
            accs.append(accuracy_score(y[test], pred))
        per_class = min(np.unique(groups[train & (y == c)]).size for c in labels)
        out[str(n)] = {"macro_f1": _mean(f1s), "macro_f1_std": _std(f1s), "accuracy": _mean(accs),
                       "accuracy_std": _std(accs), "n_max": int(min(n, per_class)), "repeats": len(f1s)}
    return out


def _mean(x) -> float | None:
    return float(np.mean(x)) if len(x) else None


def _std(x) -> float | None:
    return float(np.std(x)) if len(x) else None


def probe_arrays(X: np.ndarray, meta: dict[str, np.ndarray], groups: np.ndarray, targets: Sequence[str], *,
                 train: np.ndarray, test: np.ndarray, few_shot_sizes: Sequence[int] = (10, 100),
                 repeats: int = 5, seed: int = 0) -> dict:
    """Probe representation ``X`` (n, D) for each target (a ``meta`` column, see
    :func:`target_values`) on the given train/test row masks. Returns ``{target: {"kind",
    "n_train", "n_test", probe scores...}}``; classification targets also get ``classes``,
    ``chance_macro_f1`` (1/K) and ``few_shot``."""
    X = np.asarray(X)
    out = {}
    for spec in targets:
        y, usable, kind = target_values(meta, spec)
        tr, te = train & usable, test & usable
        if tr.sum() < 2 or te.sum() < 1:
            out[spec] = {"kind": kind, "n_train": int(tr.sum()), "n_test": int(te.sum()),
                         "skipped": "too few rows with this target"}
            continue
        entry = {"kind": kind, "n_train": int(tr.sum()), "n_test": int(te.sum())}
        if kind == "classification":
            classes = np.unique(y[tr | te])
            entry.update(classes=classes.tolist(), chance_macro_f1=1.0 / classes.size)
            if np.unique(y[tr]).size < 2:
                entry["skipped"] = "only one class in the train split"
            else:
                entry.update(classify(X[tr], y[tr], X[te], y[te], seed=seed, groups=groups[tr]))
                entry["few_shot"] = few_shot(X, y, groups, tr, te, few_shot_sizes, repeats=repeats, seed=seed)
        else:
            entry["target_std"] = float(np.std(y[te]))
            entry.update(regress(X[tr], y[tr], X[te], y[te], groups=groups[tr]))
        out[spec] = entry
    return out


# --------------------------------------------------------------------------------------------
# Probing an embeddings file against its baselines


def probe_path(embeddings: str | Path) -> Path:
    """Where :func:`probe_file` writes: ``probe.json`` beside ``embeddings.h5``, ``probe-STEM.json``
    beside any other embeddings file."""
    embeddings = Path(embeddings)
    name = "probe.json" if embeddings.stem == "embeddings" else f"probe-{embeddings.stem}.json"
    return embeddings.with_name(name)


HANDCRAFTED_INPUTS = ("timeseries", "paired", "spectra")  # input formats with a hand-crafted baseline


def features_path(embeddings: str | Path) -> Path:
    """Where :func:`probe_file` caches the hand-crafted features of an embeddings file's rows:
    ``STEM-features.npz`` beside it."""
    embeddings = Path(embeddings)
    return embeddings.with_name(f"{embeddings.stem}-features.npz")


def _input_key(path: str | Path) -> dict:
    """What identifies the input file's contents for the cache: its resolved path, size and
    modification time (ns); any rewrite of the file changes it."""
    path = Path(path)
    stat = path.stat()
    return {"input": str(path.resolve()), "size": int(stat.st_size), "mtime_ns": int(stat.st_mtime_ns)}


def handcrafted(emb, *, cache: str | Path | None = None,
                progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, tuple[str, ...], bool]:
    """The hand-crafted features (:mod:`lcgen.embed.features`) of every embedded row of
    ``emb`` (N, F), their names, and whether they came from ``cache``: per window for a
    ``timeseries`` or ``paired`` input (from the windows' time series), per spectra row for a
    ``spectra`` input. With ``cache`` (a ``.npz`` path), they are read from there when it was
    made from the same rows of the same, unchanged input file (path, size, modification time)
    with the same feature set, and computed and written there otherwise. ``progress(n)`` after
    each chunk of computed rows."""
    from lcgen.embed.features import (FEATURES, SPECTRAL_FEATURES, spectra_features,
                                      timeseries_features)

    kind = emb.attrs.get("input_format")
    if kind not in HANDCRAFTED_INPUTS:
        raise LcgenError(f"no hand-crafted features for '{kind}' inputs")
    names = SPECTRAL_FEATURES if kind == "spectra" else FEATURES
    if not Path(emb.attrs["input"]).is_file():
        raise LcgenError(f"{emb.attrs['input']}, the file these embeddings were made from, is gone; the "
                         f"baselines need it (or probe with --no-baselines)")
    key = {**_input_key(emb.attrs["input"]), "kind": kind, "names": list(names)}
    if cache is not None and Path(cache).is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if json.loads(str(z["key"])) == key and np.array_equal(z["row"], emb.row):
                    return z["features"], names, True
        except (OSError, ValueError, KeyError):
            pass  # unreadable or of another layout: computed again
    compute = spectra_features if kind == "spectra" else timeseries_features
    feats = compute(emb.attrs["input"], emb.row, progress=progress)
    if cache is not None:
        cache = Path(cache)
        tmp = cache.with_name(cache.name + ".partial")
        with open(tmp, "wb") as fh:
            np.savez(fh, features=feats, row=emb.row, key=json.dumps(key))
        tmp.replace(cache)
    return feats, names, False


def representations(emb, cfg: ProbeConfig, *, progress: Callable[[str, int, int], None] | None = None,
                    cache: str | Path | None = None, notes: dict | None = None) -> dict:
    """The matrices to probe, row-aligned with ``emb``'s windows or curves: ``learned`` (the
    file's vectors) and, with ``cfg.baselines``, ``handcrafted`` (:func:`handcrafted` of the
    same rows, averaged per curve like the embeddings; cached in ``cache``) and ``random`` (the
    run's architecture with random weights, same level and pooling). ``progress(name, done,
    total)`` reports the slow steps; ``notes`` (a dict) receives the hand-crafted feature names,
    the cache path and whether it was used."""
    from lcgen.embed.extract import EmbedConfig, embed

    per_curve = cfg.rows == "curve"
    out = {"learned": emb.curve if per_curve else emb.window}
    if not cfg.baselines:
        return out
    attrs = emb.attrs
    total = emb.row.size
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress("hand-crafted features", done[0], total)

    if attrs.get("input_format") in HANDCRAFTED_INPUTS:
        feats, names, cached = handcrafted(emb, cache=cache, progress=tick)
        if notes is not None:
            notes.update(features=list(names), cache=str(cache) if cache is not None else None, cached=cached)
        out["handcrafted"] = _curve_nanmean(feats, emb.curve_index, emb.curve_source.size) if per_curve else feats
    elif notes is not None:
        notes.update(skipped=f"no hand-crafted features are defined for '{attrs.get('input_format')}' inputs "
                             f"(only {', '.join(HANDCRAFTED_INPUTS)})")
    embed_cfg = EmbedConfig(checkpoint=attrs["checkpoint"], level=attrs["level"], pooling=attrs["pooling"],
                            span=bool(attrs.get("span", False)), weights="random", seed=cfg.seed)
    control = embed(attrs["run_dir"], attrs["input"], embed_cfg)
    if not np.array_equal(control.row, emb.row):
        raise LcgenError(f"{attrs['input']} changed since it was embedded (other rows); embed it again")
    out["random"] = control.curve if per_curve else control.window
    return out


def _curve_nanmean(values: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """Per-curve mean of window rows, ignoring NaN (NaN where a curve has no finite value)."""
    finite = np.isfinite(values)
    sums = np.zeros((n, values.shape[1]))
    counts = np.zeros((n, values.shape[1]))
    np.add.at(sums, index, np.where(finite, values, 0.0))
    np.add.at(counts, index, finite)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def probe_file(embeddings: str | Path, cfg: ProbeConfig | None = None, *, output: str | Path | None = None,
               progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Probe an ``embeddings`` file (and, with ``cfg.baselines``, its hand-crafted and
    random-weight baselines) on one split by light curve; write ``probe.json`` (see
    :func:`probe_path`) and return the same dict."""
    from lcgen.embed.extract import read_embeddings
    from lcgen.evaluate.scoring import write_metrics

    cfg = cfg or ProbeConfig()
    for n in cfg.few_shot:
        if n < 1:
            raise LcgenError(f"few_shot sizes must be >= 1, got {cfg.few_shot}")
    if cfg.repeats < 1:
        raise LcgenError(f"repeats must be >= 1, got {cfg.repeats}")
    emb = read_embeddings(embeddings)
    per_curve = cfg.rows == "curve"
    meta = emb.curve_meta if per_curve else emb.meta
    groups = emb.curve_source if per_curve else emb.source
    targets = list(cfg.targets) if cfg.targets else default_targets(meta)
    if not targets:
        raise LcgenError(f"{embeddings} carries no lc_type/period/tau columns; name meta columns to probe "
                         f"with --target (it has: {', '.join(sorted(meta)) or 'none'})")
    for spec in targets:
        target_values(meta, spec)  # fail early on an unknown column
    train, test = split_groups(groups, cfg.test_fraction, cfg.seed)
    notes: dict = {}
    reps = representations(emb, cfg, progress=progress, cache=features_path(embeddings), notes=notes)
    results = {name: {"dim": int(X.shape[1]),
                      "targets": probe_arrays(X, meta, groups, targets, train=train, test=test,
                                              few_shot_sizes=cfg.few_shot, repeats=cfg.repeats, seed=cfg.seed)}
               for name, X in reps.items()}
    a = emb.attrs
    report = {"embeddings": str(embeddings), "run_dir": a.get("run_dir"), "model_name": a.get("model_name"),
              "preset": a.get("preset"), "level": a.get("level"), "pooling": a.get("pooling"),
              "input": a.get("input"), "rows": cfg.rows,
              "split": {"by": "source light curve", "test_fraction": cfg.test_fraction, "seed": cfg.seed,
                        "n_train_rows": int(train.sum()), "n_test_rows": int(test.sum()),
                        "n_curves": int(np.unique(groups).size)},
              "config": dataclasses.asdict(cfg), "representations": results}
    if notes:
        report["handcrafted"] = notes
    report["summary"] = summary_lines(report)
    write_metrics(output or probe_path(embeddings), report)
    return report


_LABEL = {"macro_f1": "macro-F1", "accuracy": "accuracy", "r2": "R²", "rmse": "RMSE"}


def headline(report: dict) -> list[tuple[str, str, str, str]]:
    """(target, probe, metric, label) of the scores compared across representations."""
    rows = []
    first = next(iter(report["representations"].values()))["targets"]
    for spec, entry in first.items():
        if "skipped" in entry:
            continue
        if entry["kind"] == "classification":
            rows += [(spec, p, m, f"{spec} {_LABEL[m]} ({p})") for p in ("logistic", "knn")
                     for m in ("macro_f1", "accuracy")]
            rows += [(spec, f"few_shot.{n}", "macro_f1", f"{spec} macro-F1, {n} per class")
                     for n in entry.get("few_shot", {})]
        else:
            rows += [(spec, p, m, f"{spec} {_LABEL[m]} ({p})") for p in ("ridge", "knn")
                     for m in ("r2", "rmse")]
    return rows


def score(report: dict, rep: str, target: str, probe: str, metric: str) -> float | None:
    """One number of a probe report (None where it was skipped)."""
    entry = report["representations"][rep]["targets"].get(target, {})
    for key in probe.split("."):
        entry = entry.get(key, {}) if isinstance(entry, dict) else {}
    value = entry.get(metric) if isinstance(entry, dict) else None
    return value


def summary_lines(report: dict) -> list[str]:
    """One line per headline score: learned against each baseline (higher is better, except RMSE)."""
    reps = report["representations"]
    lines = []
    for target, probe, metric, label in headline(report):
        learned = score(report, "learned", target, probe, metric)
        if learned is None:
            continue
        parts = []
        for base in ("handcrafted", "random"):
            if base in reps and (b := score(report, base, target, probe, metric)) is not None:
                better = learned < b if metric == "rmse" else learned > b
                parts.append(f"{base} {b:.3f} ({'learned better' if better else 'learned NOT better'})")
        lines.append(f"{label}: learned {learned:.3f}" + (f"; {'; '.join(parts)}" if parts else ""))
    return lines
