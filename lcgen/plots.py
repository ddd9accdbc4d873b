"""Figures of a run: training curves and reconstruction examples (the only matplotlib user).

Rendered headless with the Agg backend; every function takes the output path, writes one PNG and
returns its path. Figures are sized in inches at ``DPI`` dots per inch, so a figure of
``figsize=(w, h)`` is ``(w·DPI, h·DPI)`` pixels.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: no display needed, same output everywhere

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from lcgen.errors import LcgenError  # noqa: E402

DPI = 100
TRAIN_COLOR, VAL_COLOR = "tab:blue", "tab:orange"
DATA_COLOR, MODEL_COLOR, LINEAR_COLOR, SIGNAL_COLOR = "0.35", "tab:red", "tab:blue", "tab:green"
HIDDEN_COLOR = "0.85"


def read_history(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a run's ``history.csv`` as float arrays, one value per epoch."""
    path = Path(path)
    if not path.is_file():
        raise LcgenError(f"{path} does not exist; train the run first (`lcgen train MODEL`)")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise LcgenError(f"{path} has no epochs yet; train for at least one epoch")
    need = ("epoch", "lr", "train_loss", "val_loss")
    missing = [k for k in need if k not in rows[0]]
    if missing:
        raise LcgenError(f"{path} lacks the columns {', '.join(missing)}; it has {', '.join(rows[0])}")
    return {k: np.array([_float(r.get(k)) for r in rows]) for k in rows[0]}


def plot_training_curves(history: Mapping[str, np.ndarray] | str | Path, path: str | Path, *,
                         title: str = "") -> Path:
    """Train and validation loss (total, masked, unmasked; log scale) and the learning rate
    against epoch, in a 2×2 grid. ``history`` is a :func:`read_history` dict or the CSV path."""
    h = read_history(history) if isinstance(history, (str, Path)) else history
    epoch = h["epoch"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True, constrained_layout=True)
    panels = (("loss", "Total loss"), ("masked", "Masked-position MSE"),
              ("unmasked", "Unmasked-position MSE"))
    for ax, (key, label) in zip(axes.flat, panels):
        for split, color in (("train", TRAIN_COLOR), ("val", VAL_COLOR)):
            y = h.get(f"{split}_{key}")
            if y is not None and np.isfinite(y).any():
                ax.plot(epoch, y, "o-", color=color, ms=3, label=split)
        ax.set_title(label)
        ax.set_ylabel("loss" if key == "loss" else "MSE (normalised units)")
        _log_if_positive(ax)
        ax.legend()
        ax.grid(alpha=0.3)
    ax = axes[1, 1]
    ax.plot(epoch, h["lr"], "o-", color="0.2", ms=3)
    ax.set_title("Learning rate")
    ax.set_ylabel("learning rate")
    _log_if_positive(ax)
    ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_reconstructions(examples: Sequence[Mapping], path: str | Path, *, kind: str = "timeseries",
                         title: str = "", xlabel: str | None = None, ylabel: str | None = None,
                         xscale: str | None = None, ncols: int = 2) -> Path:
    """Reconstruction examples, one panel each: data (dots), hidden regions (grey bands), the
    model's reconstruction, the linear-interpolation baseline and, where given, the noise-free
    signal.

    Each example maps ``coord`` (L,) (time in days, or frequency in cycles/day), ``values``,
    ``valid``, ``hidden``, ``reconstructed``, ``linear`` (each (L,)), optionally ``signal`` (L,)
    and ``label`` (panel title, e.g. the light-curve type). ``kind="spectra"`` defaults to
    frequency on a log axis; ``xlabel``, ``ylabel`` and ``xscale`` override the defaults.
    """
    if not examples:
        raise LcgenError("no examples to plot; the data split is empty")
    n = len(examples)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 3.0 * nrows), squeeze=False,
                             constrained_layout=True)
    xscale = xscale or ("linear" if kind == "timeseries" else "log")
    for ax, ex in zip(axes.flat, examples):
        _plot_one(ax, ex, kind, xscale)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    xlabel = xlabel or ("time since window start [d]" if kind == "timeseries" else "frequency [cycles/d]")
    ylabel = ylabel or ("normalised flux (median/IQR)" if kind == "timeseries" else "normalised value")
    for k, ax in enumerate(axes.flat[:n]):
        if k + ncols >= n:  # the lowest panel of its column
            ax.set_xlabel(xlabel)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    handles.insert(0, Patch(color=HIDDEN_COLOR, label="hidden from model"))
    labels.insert(0, "hidden from model")
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), frameon=False)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_metrics(metrics: Mapping, path: str | Path) -> Path:
    """Masked MSE of the model and both baselines by block size, hidden fraction and (where
    known) light-curve type: grouped bars on a log axis, from a ``metrics.json`` dict."""
    panels = [(k, label) for k, label in (("by_block_size", "block size [points]"),
                                          ("by_mask_ratio", "hidden fraction of real points"),
                                          ("by_lc_type", "light-curve type")) if metrics.get(k)]
    if not panels:
        raise LcgenError("the metrics hold no breakdown to plot; rerun `lcgen evaluate`")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 4.2), squeeze=False,
                             constrained_layout=True)
    colors = {"model": MODEL_COLOR, "linear": LINEAR_COLOR, "mean": "0.6", "gp": "tab:purple"}
    labels = {"model": metrics["model_name"], "linear": "linear interpolation", "mean": "per-curve mean",
              "gp": "GP (celerite2)"}
    bars = tuple((name, labels.get(name, name), colors.get(name)) for name in metrics["overall"])
    for ax, (key, label) in zip(axes[0], panels):
        groups = metrics[key]
        x = np.arange(len(groups))
        width = 0.8 / len(bars)
        heights = np.array([[np.nan if g[name]["masked_mse"] is None else g[name]["masked_mse"] for g in groups]
                            for name, _, _ in bars], dtype=float)  # (predictors, G)
        for j, (name, legend, color) in enumerate(bars):
            ax.bar(x + (j - (len(bars) - 1) / 2) * width, heights[j], width, color=color, label=legend)
        ax.set_xticks(x, [f"{g['group']}\n(n={g['n_samples']})" for g in groups], fontsize=8)
        _log_if_positive(ax, heights.ravel())
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, axis="y")
    axes[0, 0].set_ylabel("masked MSE (normalised units)")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{metrics['model_name']}: masked MSE on {metrics['n_samples']:,} {metrics['split']} rows "
                 f"against the baselines (same masks)")
    return _save(fig, path)


def plot_reliability(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, *,
                     title: str = "") -> Path:
    """Calibration (reliability) diagram: observed coverage of the central intervals against
    their nominal level, one line per predictor (``{name: (levels, coverage)}``); the diagonal is
    perfect calibration, below it over-confident."""
    fig, ax = plt.subplots(figsize=(5.2, 5.0), constrained_layout=True)
    ax.plot([0, 1], [0, 1], ":", color="0.5", lw=1.0, label="perfect calibration")
    colors = {"model": MODEL_COLOR, "gp": "tab:purple"}
    for name, (levels, coverage) in curves.items():
        ax.plot(levels, coverage, "o-", ms=3, color=colors.get(name), label=name)
    for level in (0.6827, 0.95):
        ax.axvline(level, color="0.85", lw=0.8, zorder=0)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("nominal coverage of the central interval")
    ax.set_ylabel("observed coverage of hidden points")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_filled(path: str | Path, output: str | Path, *, n_curves: int = 4) -> Path:
    """A file written by ``lcgen fill``: for its first ``n_curves`` curves with filled points,
    the observed points, the filled mean and the ±1σ / ±2σ bands of the filled points."""
    import h5py

    from lcgen.io import open_checked, raw_offsets

    with open_checked(path, "raw", ("time", "flux", "flux_err", "offsets")) as f:
        if "filled" not in f:
            raise LcgenError(f"{path} has no 'filled' column: it is not a file written by lcgen fill; "
                             f"give a run directory to plot a run")
        offsets = raw_offsets(f)
        filled_all = f["filled"][:]
        n_filled = np.add.reduceat(filled_all, offsets[:-1]) if filled_all.size else np.zeros(len(offsets) - 1)
        n_filled = np.where(np.diff(offsets) > 0, n_filled, 0)
        curves = [i for i in np.flatnonzero(n_filled > 0)[:n_curves]] or list(range(min(n_curves, len(offsets) - 1)))
        if not curves:
            raise LcgenError(f"{path} holds no curves")
        data = [(int(i), *(f[k][offsets[i]:offsets[i + 1]] for k in ("time", "flux", "flux_err", "filled")))
                for i in curves]
        target = f["meta/target"].asstr()[:] if "meta/target" in f and h5py.check_string_dtype(f["meta/target"].dtype) else None
    fig, axes = plt.subplots(len(data), 1, figsize=(10, 2.6 * len(data)), squeeze=False, constrained_layout=True)
    for ax, (i, t, y, e, filled) in zip(axes[:, 0], data):
        sigma = np.where(filled, e, 0.0)  # observed points are known: the bands pinch there
        for k, alpha in ((2, 0.18), (1, 0.35)):
            ax.fill_between(t, y - k * sigma, y + k * sigma, color=MODEL_COLOR, alpha=alpha, lw=0,
                            label=f"±{k}σ (filled)")
        ax.plot(t, y, "-", color=MODEL_COLOR, lw=0.8, label="filled mean")
        ax.plot(t[~filled], y[~filled], ".", color=DATA_COLOR, ms=3, label="observed")
        name = target[i] if target is not None else f"curve {i}"
        ax.set_title(f"{name}: {int(filled.sum())} filled points", fontsize=10)
        ax.set_ylabel("flux")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time [d]")
    axes[0, 0].legend(fontsize=8, ncols=4, loc="upper right")
    return _save(fig, output)


def _plot_one(ax, ex: Mapping, kind: str, xscale: str) -> None:
    valid = np.asarray(ex["valid"], bool)
    hidden = np.asarray(ex["hidden"], bool) & valid
    x = np.asarray(ex["coord"], np.float64)[valid]
    h = hidden[valid]
    for lo, hi in _hidden_spans(x, h):
        ax.axvspan(lo, hi, color=HIDDEN_COLOR, lw=0, zorder=0)
    y = np.asarray(ex["values"])[valid]
    if kind == "timeseries":
        ax.plot(x[~h], y[~h], ".", color=DATA_COLOR, ms=3, label="data (visible)")
        ax.plot(x[h], y[h], ".", color=DATA_COLOR, ms=3, alpha=0.35, label="data (hidden)")
    else:
        ax.plot(x, y, "-", color=DATA_COLOR, lw=1.0, label="data")
    if ex.get("signal") is not None:
        ax.plot(x, np.asarray(ex["signal"])[valid], "-", color=SIGNAL_COLOR, lw=1.0, alpha=0.8,
                label="noise-free signal")
    if ex.get("linear") is not None:
        ax.plot(x, np.asarray(ex["linear"])[valid], "--", color=LINEAR_COLOR, lw=1.0, label="linear interpolation")
    ax.plot(x, np.asarray(ex["reconstructed"])[valid], "-", color=MODEL_COLOR, lw=1.3, label="model")
    if xscale == "log" and (x > 0).any():
        ax.set_xscale("log")
        ax.set_xlim(x[x > 0].min(), x.max())
    if ex.get("label"):
        ax.set_title(str(ex["label"]), fontsize=10)
    ax.grid(alpha=0.3)


def _hidden_spans(x: np.ndarray, hidden: np.ndarray) -> list[tuple[float, float]]:
    """(start, stop) coordinates of each run of hidden points, extended halfway to the visible
    neighbours so a single hidden point still shows as a band. ``x`` increasing, (n,)."""
    if not hidden.any():
        return []
    edges = np.diff(np.concatenate([[0], hidden.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    spans = []
    for a, b in zip(starts, stops):
        lo = 0.5 * (x[a - 1] + x[a]) if a > 0 else x[a]
        hi = 0.5 * (x[b] + x[b + 1]) if b + 1 < len(x) else x[b]
        spans.append((float(lo), float(hi)))
    return spans


def _log_if_positive(ax, data: np.ndarray | None = None) -> None:
    """Log y axis when every plotted value (default: the lines' y data) is positive, ticks
    written as plain numbers."""
    if data is None:
        lines = [ln.get_ydata() for ln in ax.get_lines()]
        data = np.concatenate([np.asarray(d, float) for d in lines]) if lines else np.array([])
    data = np.asarray(data, float)
    data = data[np.isfinite(data)]
    if data.size and (data > 0).all():
        ax.set_yscale("log")
        span = data.max() / data.min()
        # label minor ticks too on short axes (under a decade none but one major tick shows):
        # all of them below one decade, those at 2 and 5 × 10^k below two decades
        keep = (2, 3, 4, 5, 6, 7, 8, 9) if span < 10 else (2, 5) if span < 100 else ()

        def minor(v, _):
            return f"{v:.3g}" if round(v / 10 ** math.floor(math.log10(v))) in keep else ""

        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


# --------------------------------------------------------------------------------------------
# Embeddings


MAP_METHODS = ("auto", "pca", "umap")


def map_2d(X: np.ndarray, *, seed: int = 0, method: str = "auto") -> tuple[np.ndarray, str]:
    """2-D coordinates of the rows of ``X`` (n, D), standardised first: ``umap`` (umap-learn, the
    optional extra ``lcgen[umap]``; 15 neighbours, fewer for fewer rows, seeded), ``pca`` (the
    first two principal components), or ``auto``: UMAP when umap-learn is installed, else PCA.
    Returns (coords (n, 2), method name)."""
    if method not in MAP_METHODS:
        raise LcgenError(f"unknown map '{method}'; choose one of {', '.join(MAP_METHODS)}")
    X = np.asarray(X, np.float64)
    std = X.std(0)
    Z = (X - X.mean(0)) / np.where(std > 0, std, 1.0)
    if method != "pca":
        try:
            import umap  # optional: pip install 'lcgen[umap]'
        except ImportError:
            if method == "umap":
                raise LcgenError("the UMAP map needs umap-learn: pip install 'lcgen[umap]' (or umap-learn)") from None
        else:
            if len(Z) < 4:
                raise LcgenError(f"a UMAP map needs at least 4 rows, got {len(Z)}; use the PCA map")
            import warnings

            with warnings.catch_warnings():  # "n_jobs overridden by setting random_state": wanted
                warnings.simplefilter("ignore", UserWarning)
                mapper = umap.UMAP(n_components=2, n_neighbors=min(15, len(Z) - 1), random_state=seed)
                return mapper.fit_transform(Z), "UMAP"
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=seed).fit(Z)
    share = pca.explained_variance_ratio_
    return pca.transform(Z), f"PCA ({share[0]:.0%} + {share[1]:.0%} of the variance)"


def plot_embedding_map(X: np.ndarray, labels: np.ndarray | None, path: str | Path, *, title: str = "",
                       method: str = "auto") -> Path:
    """Scatter of a 2-D map (:func:`map_2d` by ``method``) of embeddings ``X`` (n, D), one colour
    per label."""
    coords, method = map_2d(X, method=method)
    labels = np.full(len(coords), "all") if labels is None else np.asarray(labels).astype(str)
    fig, ax = plt.subplots(figsize=(7, 6), constrained_layout=True)
    for k, label in enumerate(sorted(set(labels.tolist()))):
        sel = labels == label
        ax.scatter(*coords[sel].T, s=6, alpha=0.6, color=plt.cm.tab10(k % 10), label=f"{label} ({sel.sum():,})")
    ax.set_xlabel(f"{method.split(' ')[0]} 1")
    ax.set_ylabel(f"{method.split(' ')[0]} 2")
    ax.legend(markerscale=3, fontsize="small")
    ax.set_title(f"{title}\n{method}" if title else method, fontsize="medium")
    return _save(fig, path)


def plot_embeddings(path: str | Path, output: str | Path | None = None, *, method: str = "auto") -> Path:
    """The 2-D map (:func:`map_2d` by ``method``) of an embeddings file's curve vectors coloured
    by light-curve type; writes ``output`` (default: beside the file, STEM_map.png)."""
    from lcgen.embed import read_embeddings

    path = Path(path)
    emb = read_embeddings(path)
    a = emb.attrs
    title = (f"{a.get('model_name')} ({a.get('preset')}, {a.get('weights')} weights): "
             f"{a.get('level')} {a.get('pooling')}-pooled, {emb.curve.shape[0]:,} curves")
    return plot_embedding_map(emb.curve, emb.curve_meta.get("lc_type"),
                              output or path.with_name(f"{path.stem}_map.png"), title=title, method=method)


# --------------------------------------------------------------------------------------------
# A run's figures


def plot_run(run_dir: str | Path, *, n_examples: int = 6, seed: int = 0, eval_config=None,
             map_method: str = "auto") -> list[Path]:
    """Write ``RUN_DIR/figures/training.png`` (from history.csv),
    ``RUN_DIR/figures/reconstructions.png`` (``n_examples`` test rows, several light-curve types,
    chosen by ``seed``, on the same fixed masks as ``lcgen evaluate``), for a run with a variance
    head ``RUN_DIR/figures/calibration.png`` (:func:`plot_reliability`), once the run has a
    metrics.json ``RUN_DIR/figures/metrics.png`` (:func:`plot_metrics`) and, once it has an
    embeddings.h5 (``lcgen embed``), ``RUN_DIR/figures/embedding_map.png`` (``map_method``, see
    :func:`map_2d`). Returns the paths."""
    from lcgen.evaluate.scoring import choose_examples, open_evaluation, reconstruction_examples

    run_dir = Path(run_dir)
    figures = run_dir / "figures"
    with open_evaluation(run_dir, eval_config) as ev:
        name = f"{ev.train_config.model_name} ({ev.train_config.preset})"
        paths = [plot_training_curves(run_dir / "history.csv", figures / "training.png",
                                      title=f"{name}: training curves, {run_dir}")]
        examples = reconstruction_examples(ev, choose_examples(ev, n_examples, seed=seed))
        if ev.kind == "timeseries":
            labels = {}
        else:
            channel = ev.train_config.channel
            labels = {"ylabel": f"normalised {channel.upper() if channel != 'fstat' else 'F-statistic'}",
                      "xlabel": {"frequency": "frequency [cycles/d]", "lag": "lag [d]",
                                 "bin": "bin"}[ev.coord_name],
                      "xscale": "linear" if ev.coord_name == "bin" else "log"}
        paths.append(plot_reconstructions(
            examples, figures / "reconstructions.png", kind=ev.kind, **labels,
            title=f"{name}: reconstructions of {ev.split} rows (grey: hidden; mask seed {ev.config.mask_seed})"))
        if getattr(ev.model.config, "variance_head", False):
            from lcgen.evaluate.scoring import reliability

            paths.append(plot_reliability(
                {"model": reliability(ev)}, figures / "calibration.png",
                title=f"{name}: calibration on hidden points of {ev.split} rows (mask seed {ev.config.mask_seed})"))
    if (run_dir / "metrics.json").is_file():
        from lcgen.evaluate.scoring import read_metrics

        paths.append(plot_metrics(read_metrics(run_dir), figures / "metrics.png"))
    from lcgen.embed import EMBEDDINGS_FILE

    if (run_dir / EMBEDDINGS_FILE).is_file():
        paths.append(plot_embeddings(run_dir / EMBEDDINGS_FILE, figures / "embedding_map.png", method=map_method))
    return paths
