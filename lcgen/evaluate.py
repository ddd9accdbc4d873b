"""Metrics and baselines for masked reconstruction.

Every error is measured only where there is data (``valid``) and split into the positions hidden
from the model (``hidden``, "masked") and the visible real positions ("unmasked"). Errors are
*pooled over positions*: the masked MSE of a set of samples is

    MSE = Σ_i Σ_{j ∈ hidden_i} (ŷ_ij − y_ij)² / Σ_i |hidden_i|,

the same weighting the trainer's loss uses, so evaluation numbers and validation losses agree.
Values are in the model's normalised units (median/IQR-scaled flux for time series, arcsinh +
standardised spectra).

Two baselines are scored on exactly the same masks as the model:

- ``linear``: linear interpolation across each hidden run between the nearest visible real
  positions, in time for time series and along frequency (or lag) for spectra; hidden positions
  before the first or after the last visible one take the nearest visible value.
- ``mean``: every position set to the mean of the curve's visible real values.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

PREDICTORS = ("model", "linear", "mean")
REGIONS = ("masked", "unmasked")


# --------------------------------------------------------------------------------------------
# Baselines (numpy, per batch)


def linear_baseline(values: np.ndarray, valid: np.ndarray, hidden: np.ndarray,
                    coord: np.ndarray) -> np.ndarray:
    """Linear interpolation of each row across its hidden positions.

    ``values``, ``valid``, ``hidden``: (B, L); ``coord``: (B, L) or (L,), increasing along each
    row's valid positions (time in days, or frequency). Visible real positions (valid & ~hidden)
    are the knots; every position gets ``np.interp`` of them, so visible positions return their
    own value and hidden ones the straight line between the visible neighbours (constant beyond
    the ends). A row with no visible position gets 0, the normalised centre. Returns (B, L)
    float64.
    """
    values, valid, hidden = _as_2d(values), _as_2d(valid).astype(bool), _as_2d(hidden).astype(bool)
    coord = np.broadcast_to(np.asarray(coord, dtype=np.float64), values.shape)
    visible = valid & ~hidden
    out = np.zeros(values.shape, dtype=np.float64)
    for i in range(values.shape[0]):  # np.interp is per row; B×L = 10^5 points take ~1 ms
        knots = visible[i]
        if knots.any():
            out[i] = np.interp(coord[i], coord[i, knots], values[i, knots].astype(np.float64))
    return out


def mean_baseline(values: np.ndarray, valid: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """Each row filled with the mean of its visible real values (0 if none). (B, L) float64."""
    values, valid, hidden = _as_2d(values), _as_2d(valid).astype(bool), _as_2d(hidden).astype(bool)
    visible = valid & ~hidden
    total = np.where(visible, values, 0.0).sum(axis=1, dtype=np.float64)
    count = visible.sum(axis=1)
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return np.repeat(mean[:, None], values.shape[1], axis=1)


# --------------------------------------------------------------------------------------------
# Per-sample error sums and their pooled summaries


def error_sums(pred: np.ndarray, target: np.ndarray, select: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample sums over the selected positions: ``sse`` = Σ (pred − target)², ``sae`` =
    Σ |pred − target| and ``n`` = number of positions; each (B,). Unselected positions never
    contribute, whatever they hold (padding may be NaN)."""
    pred, target, select = _as_2d(pred), _as_2d(target), _as_2d(select).astype(bool)
    diff = np.where(select, pred.astype(np.float64) - target.astype(np.float64), 0.0)
    return {"sse": (diff ** 2).sum(axis=1), "sae": np.abs(diff).sum(axis=1),
            "n": select.sum(axis=1).astype(np.int64)}


def score_batch(values: np.ndarray, valid: np.ndarray, hidden: np.ndarray,
                predictions: Mapping[str, np.ndarray]) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Error sums of every prediction on the masked and the unmasked real positions.

    Returns ``{predictor: {"masked": error_sums, "unmasked": error_sums}}``.
    """
    valid, hidden = _as_2d(valid).astype(bool), _as_2d(hidden).astype(bool)
    regions = {"masked": valid & hidden, "unmasked": valid & ~hidden}
    return {name: {r: error_sums(pred, values, sel) for r, sel in regions.items()}
            for name, pred in predictions.items()}


def concat_scores(parts: Sequence[dict]) -> dict:
    """Join the per-sample arrays of several :func:`score_batch` results along the sample axis."""
    first = parts[0]
    return {p: {r: {k: np.concatenate([part[p][r][k] for part in parts]) for k in first[p][r]}
                for r in first[p]} for p in first}


def summarise(scores: dict, rows: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Pooled MSE and MAE per predictor and region over the samples ``rows`` (default: all).

    Returns ``{predictor: {"masked_mse", "masked_mae", "unmasked_mse", "unmasked_mae"}}``; a
    region with no positions gives NaN (callers skip empty groups).
    """
    out = {}
    for name, by_region in scores.items():
        row = {}
        for region, sums in by_region.items():
            take = slice(None) if rows is None else rows
            n = int(sums["n"][take].sum())
            row[f"{region}_mse"] = float(sums["sse"][take].sum() / n) if n else float("nan")
            row[f"{region}_mae"] = float(sums["sae"][take].sum() / n) if n else float("nan")
        out[name] = row
    return out


def breakdown(scores: dict, labels: np.ndarray, *, order: Sequence | None = None) -> list[dict]:
    """:func:`summarise` per group of samples sharing a label (mask-ratio bin, block size,
    light-curve type). Groups with no masked position are left out. Returns a list of
    ``{"group": label, "n_samples": k, **summary}`` in ``order`` (default: sorted labels)."""
    labels = np.asarray(labels)
    groups = list(order) if order is not None else sorted(set(labels.tolist()))
    first = next(iter(scores.values()))["masked"]["n"]
    out = []
    for group in groups:
        rows = np.flatnonzero(labels == group)
        if rows.size == 0 or first[rows].sum() == 0:
            continue
        out.append({"group": _plain(group), "n_samples": int(rows.size), **summarise(scores, rows)})
    return out


def ratio_bins(ratio: np.ndarray, edges: Sequence[float]) -> tuple[np.ndarray, list[str]]:
    """Label each sample's hidden fraction with its bin ``[edges[k], edges[k+1])`` (the last bin
    closed). Returns (labels (B,) str, the bin names in order)."""
    edges = np.asarray(edges, dtype=np.float64)
    names = [f"{lo:.2f}-{hi:.2f}" for lo, hi in zip(edges[:-1], edges[1:])]
    k = np.clip(np.searchsorted(edges, ratio, side="right") - 1, 0, len(names) - 1)
    return np.asarray(names)[k], names


def compare(overall: dict[str, dict[str, float]], *, baselines: Sequence[str] = ("linear", "mean"),
            metric: str = "masked_mse") -> dict[str, float]:
    """Model error divided by each baseline's (< 1: the model is better)."""
    return {b: overall["model"][metric] / overall[b][metric] for b in baselines if b in overall}


def _as_2d(x) -> np.ndarray:
    x = np.asarray(x)
    return x[None] if x.ndim == 1 else x


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
