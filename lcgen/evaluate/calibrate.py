"""Post-hoc recalibration of a run's predictive variance (``lcgen calibrate``).

A model trained with ``loss: nll`` predicts the variance σ² of the signal at every hidden
position, and the predictive distribution of an observation there is N(μ, s²) with
s² = σ² + e² (e: the point's own normalised ``flux_err``). Trained variances are rarely
calibrated out of the box (β-NLL weights and Huber tails bend them; a short run has not converged),
so after training the variance is rescaled on the **validation split** (rows the optimiser never
saw, with their fixed validation masks):

    s² = a_k σ² + e²,    k = the bin of the length of the hidden run the position lies in,

one scale per run-length bin (runs of 1, 2, 3–4, 5–8, 9–16, 17–32 and > 32 hidden points:
a point inside a long gap is uncertain in another way than a single missing point); a bin with
fewer than ``min_points`` hidden points (200) is fitted together with its nearest bins. Only the
model's own variance is scaled: the noise e² is known and stays as it is. A validation split
with fewer than ``MIN_TOTAL_FACTOR`` × ``min_points`` hidden points is too small to calibrate
on (a scale fitted on the short runs of a tiny split made long gaps over-confident): the run is
then left uncalibrated, and says so.

Each scale is chosen to make the intervals right, not to maximise the likelihood: it minimises
the squared distance of the reliability curve from the diagonal,

    a_k = argmin_a Σ_p (coverage_p(a) − p)²,   p ∈ {0.05, 0.10, …, 0.95, 0.99},

where coverage_p(a) is the fraction of bin-k validation points with |y − μ| ≤ h_p s (h_p the
half-width of the central interval holding p). The maximum-likelihood scale (mean z² = 1)
would be pulled by the few largest residuals (flares, outliers; the Huber-tailed training loss
lets them be) and widen every interval to cover them.

**Tails.** The residuals of a trained transformer are heavier-tailed than a Gaussian: with the
best Gaussian scales per bin, ±1 σ held 0.675 of the validation points but ±1.96 σ only 0.897
(demo data, epoch 3), and no scale can fix both. So the predictive distribution may be a
Student t, y = μ + s T_ν with the same s² = a_k σ² + e²: ν is chosen from ``DOF_GRID``
(2.5 … 50, and the Gaussian) by the same reliability error, with the scales refitted for each
candidate; the Gaussian wins where the tails are Gaussian (the fit on Gaussian residuals
chooses it, tested). ν = 3 gave 0.678 / 0.952 on the same points. A free-form map of the
levels (Kuleshov et al. 2018) would fit any shape but leaves no density for the NLL and CRPS
and no σ to write; a t keeps both (``fill`` writes the half-width of its 68.27 % interval as
``flux_err``).

**Noise share.** How heavy the tails are depends on who makes the residual: where the point's
own noise dominates (σ² ≪ e², e.g. TESS 2-min photometry) the residual is as Gaussian as the
noise, where the model's error dominates (σ² ≳ e², quiet Kepler long cadence, long gaps) it is
heavy-tailed. One t for both made the 2-min intervals far too wide (bundled model, held-out
TESS: 0.775 / 0.998 at 68 / 95 %, even with the model's scale at zero a t4 on Gaussian noise
gives 0.72 / 0.98), and neither bins of the run length in days (0.763 / 0.998) nor a fit per
cadence (Kepler then 0.731 / 0.973: the held-out Kepler stars are noisier than the validation
ones) fixed it. So the points are first split into groups by the model's share of the
variance, σ² / e² (uncalibrated σ²; edges ``NOISE_SHARE_EDGES`` 0.1 and 1), and each group gets
its own run-length scales and its own ν, as above (a group with fewer than ``MIN_TOTAL_FACTOR``
× ``min_points`` points takes the fit of all points). The predictive distribution is then a
Student t (or Gaussian) whose ν can differ from point to point: ``apply_calibration`` returns the
scaled σ² and ν per point (``np.inf``: Gaussian). Calibrations stored before the groups (keys
``edges``, ``scales``, ``dof`` at the top) are read as one group and give what they gave.

The fit is stored in the run's checkpoints (``best.pt`` and ``last.pt``, key
``variance_calibration``, plain lists and numbers) and in ``RUN_DIR/calibration.json``;
``lcgen.train.trainer.model_from_checkpoint`` hands it to the model (``model.variance_calibration``),
and ``evaluate`` and ``fill`` apply it through :func:`calibrated_prediction`. A run without one
(mean-only runs, runs trained before this existed) is used as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.special import ndtri

from lcgen.errors import LcgenError

RUN_EDGES = (1, 2, 4, 8, 16, 32)  # bin k holds hidden runs of length in (edges[k-1], edges[k]]; last bin: > 32
LEVELS = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2)) + (0.99,)  # the reliability curve's levels
DOF_GRID = (2.5, 3.0, 4.0, 5.0, 7.0, 10.0, 20.0, 50.0, None)  # Student-t degrees of freedom tried; None = Gaussian
SCALE_RANGE = (1e-3, 1e3)  # scales searched, log-uniformly
CHECK_LEVELS = (0.682689492, 0.95)  # the coverages reported before and after: ±1 σ and the 95 % interval
MIN_TOTAL_FACTOR = 5  # a split (and a noise-share group) needs 5 x min_points hidden points to be fitted on
NOISE_SHARE_EDGES = (0.1, 1.0)  # groups of the model's share of the variance, σ² / e² (uncalibrated σ²)
CALIBRATION_KEY = "variance_calibration"
CALIBRATION_FILE = "calibration.json"


def half_width(levels, dof=None) -> np.ndarray:
    """Half-widths of the central intervals holding ``levels`` of N(0, 1) (``dof`` None) or of
    a standard Student t with ``dof`` degrees of freedom (a number, or an array broadcast against
    ``levels``, ``np.inf`` for a Gaussian)."""
    levels = np.asarray(levels, np.float64)
    if dof is None:
        return ndtri(0.5 + levels / 2)
    from scipy.special import stdtrit

    return stdtrit(np.asarray(dof, np.float64), 0.5 + levels / 2)  # stdtrit(inf, q) is ndtri(q)


def hidden_run_lengths(hidden: np.ndarray) -> np.ndarray:
    """Length of the run of consecutive hidden positions each position lies in (0 where not
    hidden). ``hidden`` (B, L) or (L,) bool; returns the same shape, int64."""
    hidden = np.asarray(hidden, bool)
    shape = hidden.shape
    h = hidden.reshape(-1, shape[-1]) if hidden.ndim else hidden.reshape(1, 1)
    flat = np.concatenate([h, np.zeros((h.shape[0], 1), bool)], axis=1).ravel()  # a gap between rows
    edges = np.diff(np.concatenate([[0], flat.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    lengths = np.zeros(flat.size, np.int64)
    lengths[flat] = np.repeat(stops - starts, stops - starts)
    return lengths.reshape(h.shape[0], -1)[:, :shape[-1]].reshape(shape)


def run_bin(lengths: np.ndarray, edges: Sequence[int] = RUN_EDGES) -> np.ndarray:
    """Bin index of each run length: 0 for length <= edges[0], k for edges[k-1] < length <=
    edges[k], len(edges) beyond the last edge."""
    return np.searchsorted(np.asarray(edges), np.asarray(lengths), side="left")


def coverage(resid: np.ndarray, model_var: np.ndarray, noise_var: np.ndarray, scale: float,
             levels: Sequence[float] = LEVELS, dof: float | None = None) -> np.ndarray:
    """Fraction of points with |resid| <= h_p sqrt(scale σ² + e²), for each level p, (K,);
    h_p the half-width of the central p-interval of N(0, 1) or of Student t (``dof``)."""
    half = half_width(levels, dof)
    s = np.sqrt(scale * np.asarray(model_var, np.float64) + np.asarray(noise_var, np.float64))
    if s.size == 0:
        return np.full(half.size, np.nan)
    return (np.abs(resid)[:, None] <= half[None, :] * s[:, None]).mean(0)


def fit_scale(resid: np.ndarray, model_var: np.ndarray, noise_var: np.ndarray, *,
              levels: Sequence[float] = LEVELS, dof: float | None = None, n_grid: int = 1201,
              return_cost: bool = False):
    """The scale ``a`` of the model variance minimising Σ_p (coverage_p(a) − p)² (see the module
    docstring), searched on a log grid over ``SCALE_RANGE`` (steps of ~1 %); intervals of
    N(0, 1), or of Student t with ``dof`` degrees of freedom. With ``return_cost``, (a, the
    minimal cost).

    Point i lies inside the p-interval once a >= (r_i² / h_p² − e_i²) / σ_i², so coverage_p(a)
    is the empirical CDF of those thresholds: one sort per level, no pass over the points per
    trial scale."""
    resid, model_var, noise_var = (np.asarray(a, np.float64).ravel() for a in (resid, model_var, noise_var))
    if resid.size == 0:
        raise ValueError("fit_scale needs at least one point")
    levels = np.asarray(levels, np.float64)
    grid = np.geomspace(*SCALE_RANGE, n_grid)
    var = np.maximum(model_var, 1e-300)
    cost = np.zeros(n_grid)
    for p, h in zip(levels, half_width(levels, dof)):
        need = np.sort((resid ** 2 / h ** 2 - noise_var) / var)
        cost += (np.searchsorted(need, grid, side="right") / resid.size - p) ** 2
    best = int(np.argmin(cost))  # the smallest of equally good scales: argmin takes the first
    return (float(grid[best]), float(cost[best])) if return_cost else float(grid[best])


def pooled_bins(counts: Sequence[int], k: int, min_points: int) -> list[int]:
    """Bin ``k`` and, if it holds fewer than ``min_points`` points, its nearest neighbours (the
    next shorter run length first) until they do together (all bins at most)."""
    chosen, lo, hi = [k], k, k
    while sum(counts[b] for b in chosen) < min_points and (lo > 0 or hi < len(counts) - 1):
        for b in (lo - 1, hi + 1):
            if 0 <= b < len(counts) and sum(counts[c] for c in chosen) < min_points:
                chosen.append(b)
        lo, hi = lo - 1, hi + 1
    return sorted(b for b in chosen if 0 <= b < len(counts))


def fit_calibration(resid: np.ndarray, model_var: np.ndarray, noise_var: np.ndarray,
                    run_length: np.ndarray, *, min_points: int = 200, edges: Sequence[int] = RUN_EDGES,
                    dofs: Sequence[float | None] = DOF_GRID) -> dict[str, Any]:
    """Fit the per-run-length scales and the tails on hidden points (1-D arrays of equal size:
    residual y − μ, model variance σ², noise variance e², length of the hidden run). For each
    candidate of ``dofs`` (None: Gaussian) the scales are fitted per bin; the candidate whose
    scaled predictions have the smallest reliability error over all points wins. Returns the
    calibration dict stored in checkpoints: ``method``, ``dof`` (None: Gaussian), ``edges``,
    ``scales`` (one per bin), ``global_scale``, ``n_points`` per bin, ``reliability_error``
    per candidate, and ``coverage_before``/``coverage_after`` at 68.27 % (±1 σ) and 95 %, per
    bin and overall (before: Gaussian, unscaled)."""
    resid, model_var, noise_var = (np.asarray(a, np.float64).ravel() for a in (resid, model_var, noise_var))
    bins = run_bin(np.asarray(run_length).ravel(), edges)
    counts = [int((bins == k).sum()) for k in range(len(edges) + 1)]
    fits, errors = {}, {}
    for dof in dofs:
        overall = fit_scale(resid, model_var, noise_var, dof=dof)
        scales = []
        for k in range(len(counts)):
            sel = np.isin(bins, pooled_bins(counts, k, min_points))
            scales.append(fit_scale(resid[sel], model_var[sel], noise_var[sel], dof=dof))
        got = coverage(resid, model_var * np.asarray(scales)[bins], noise_var, 1.0, LEVELS, dof)
        errors[dof] = float(np.sum((got - np.asarray(LEVELS)) ** 2))
        fits[dof] = overall, scales
    dof = min(errors, key=lambda d: errors[d])  # an exact tie keeps the first in ``dofs``
    overall, scales = fits[dof]
    scale_per_point = np.asarray(scales)[bins]

    def cover(a, sel, d):
        return [round(float(c), 4) for c in coverage(resid[sel], model_var[sel] * a[sel], noise_var[sel], 1.0,
                                                     CHECK_LEVELS, d)] if sel.any() else None

    ones, everything = np.ones_like(resid), np.ones(resid.size, bool)
    return {
        "method": "variance scale per hidden-run length and Student-t tails, minimising the reliability error",
        "dof": dof, "edges": [int(e) for e in edges], "scales": scales, "global_scale": overall,
        "n_points": counts, "min_points": int(min_points), "levels": [float(p) for p in LEVELS],
        "reliability_error": {("gaussian" if d is None else f"t{d:g}"): e for d, e in errors.items()},
        "coverage_before": {"overall": cover(ones, everything, None),
                            "by_bin": [cover(ones, bins == k, None) for k in range(len(scales))]},
        "coverage_after": {"overall": cover(scale_per_point, everything, dof),
                           "by_bin": [cover(scale_per_point, bins == k, dof) for k in range(len(scales))]},
    }


def share_group(model_var: np.ndarray, noise_var, share_edges: Sequence[float]) -> np.ndarray:
    """Noise-share group of each point: k for σ² / e² in [edges[k-1], edges[k]) (e² = 0: the
    last group)."""
    model_var = np.asarray(model_var, np.float64)
    noise_var = np.broadcast_to(np.asarray(noise_var, np.float64), model_var.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(noise_var > 0, model_var / np.where(noise_var > 0, noise_var, 1.0), np.inf)
    return np.searchsorted(np.asarray(share_edges, np.float64), share, side="right")


def calibration_groups(cal: dict) -> tuple[list[float], list[dict]]:
    """(noise-share edges, the per-group fits) of a stored calibration; one stored before the
    groups existed (``edges``/``scales``/``dof`` at the top) is one group."""
    return (list(cal["share_edges"]), list(cal["groups"])) if "groups" in cal else ([], [cal])


def fit_grouped_calibration(resid: np.ndarray, model_var: np.ndarray, noise_var: np.ndarray,
                            run_length: np.ndarray, *, share_edges: Sequence[float] = NOISE_SHARE_EDGES,
                            min_points: int = 200, edges: Sequence[int] = RUN_EDGES,
                            dofs: Sequence[float | None] = DOF_GRID) -> dict[str, Any]:
    """:func:`fit_calibration` in each noise-share group of the hidden points (see the module
    docstring). Returns the dict stored in checkpoints: ``method``, ``share_edges``, ``groups``
    (one :func:`fit_calibration` dict each), ``n_points`` per group and ``coverage_before``/
    ``coverage_after`` at 68.27 % and 95 %, overall and per group."""
    resid, model_var, noise_var, run_length = (np.asarray(a).ravel() for a in (resid, model_var, noise_var, run_length))
    group = share_group(model_var, noise_var, share_edges)
    fits, whole = [], None
    for g in range(len(share_edges) + 1):
        sel = group == g
        if sel.sum() >= MIN_TOTAL_FACTOR * min_points:
            fits.append(fit_calibration(resid[sel], model_var[sel], noise_var[sel], run_length[sel],
                                        min_points=min_points, edges=edges, dofs=dofs))
        else:  # too few points for a fit of their own
            whole = whole or fit_calibration(resid, model_var, noise_var, run_length, min_points=min_points,
                                             edges=edges, dofs=dofs)
            fits.append(whole)
    cal = {"method": "per noise-share group (model variance / noise variance): variance scale per hidden-run "
                     "length and Student-t tails, minimising the reliability error",
           "share_edges": [float(e) for e in share_edges], "groups": fits,
           "n_points": [int((group == g).sum()) for g in range(len(fits))], "min_points": int(min_points)}
    scaled, dof = apply_calibration(cal, model_var, run_length, noise_var)

    def cover(var, sel, d):
        if not sel.any():
            return None
        half = half_width(np.asarray(CHECK_LEVELS)[None, :], None if d is None else d[sel][:, None])
        s = np.sqrt(var[sel] + noise_var[sel])
        return [round(float(c), 4) for c in (np.abs(resid[sel])[:, None] <= half * s[:, None]).mean(0)]

    everything = np.ones(resid.size, bool)
    cal["coverage_before"] = {"overall": cover(model_var, everything, None),
                              "by_group": [cover(model_var, group == g, None) for g in range(len(fits))]}
    cal["coverage_after"] = {"overall": cover(scaled, everything, dof),
                             "by_group": [cover(scaled, group == g, dof) for g in range(len(fits))]}
    return cal


def apply_calibration(cal: dict, raw_var: np.ndarray, run_length: np.ndarray, noise_var) -> tuple[np.ndarray, np.ndarray]:
    """The calibrated model variance (raw σ² times its point's scale) and the predictive ν of
    each point (``np.inf``: Gaussian), both shaped like ``raw_var``; ``run_length`` the length
    of the hidden run each point lies in (:func:`hidden_run_lengths`), ``noise_var`` e² (for the
    noise-share group; broadcast)."""
    raw_var = np.asarray(raw_var, np.float64)
    share_edges, groups = calibration_groups(cal)
    group = share_group(raw_var, noise_var, share_edges)
    scale, dof = np.ones_like(raw_var), np.full(raw_var.shape, np.inf)
    for g, fit in enumerate(groups):
        sel = group == g
        scale[sel] = np.asarray(fit["scales"], np.float64)[run_bin(np.asarray(run_length)[sel], fit["edges"])]
        dof[sel] = np.inf if fit.get("dof") is None else fit["dof"]
    return raw_var * scale, dof


def calibrated_prediction(model, raw_var: np.ndarray, hidden: np.ndarray, noise_var=0.0):
    """(σ², ν) of the model's predictive distribution at each position: the raw variance
    ``raw_var`` (B, L) with the run's calibration applied (``hidden`` (B, L) bool marks the
    positions the model did not see, ``noise_var`` the points' e², broadcast) and the Student-t
    degrees of freedom per position (``np.inf``: Gaussian). A model without a calibration gives
    (``raw_var`` itself, None): Gaussian, as trained."""
    cal = getattr(model, "variance_calibration", None)
    if not cal:
        return raw_var, None
    return apply_calibration(cal, raw_var, hidden_run_lengths(hidden), noise_var)


def calibrated_variance(model, raw_var: np.ndarray, hidden: np.ndarray, noise_var=0.0) -> np.ndarray:
    """The σ² of :func:`calibrated_prediction` (``raw_var`` itself for a model without a
    calibration)."""
    return calibrated_prediction(model, raw_var, hidden, noise_var)[0]


def validation_residuals(run_dir: str | Path, *, checkpoint: str = "best", batch_size: int = 64,
                         device: str = "cpu") -> dict[str, np.ndarray]:
    """Hidden-point residuals of a run's ``checkpoint`` on its validation rows, with the
    validation masks of training (``val_mask_seed``): 1-D ``resid``, ``model_var``
    (uncalibrated σ²), ``noise_var`` and ``run_length``."""
    from lcgen.evaluate.scoring import EvaluateConfig, open_evaluation, predict
    from lcgen.train.trainer import load_checkpoint

    seed = int(load_checkpoint(Path(run_dir) / f"{checkpoint}.pt")["train_config"].get("val_mask_seed", 0))
    cfg = EvaluateConfig(split="val", mask_seed=seed, checkpoint=checkpoint, batch_size=batch_size,
                         device=device, baselines="")
    parts: dict[str, list] = {"resid": [], "model_var": [], "noise_var": [], "run_length": []}
    with open_evaluation(run_dir, cfg) as ev:
        if not getattr(ev.model.config, "variance_head", False):
            raise LcgenError(f"{run_dir} has no variance head, so there is no variance to calibrate; "
                             f"train with --set loss=nll")
        for out in predict(ev):
            sel = out["valid"] & out["hidden"]
            parts["resid"].append((out["values"] - out["model"])[sel])
            parts["model_var"].append(out["model_raw_var"][sel])
            parts["noise_var"].append(out["noise_var"][sel])
            parts["run_length"].append(hidden_run_lengths(sel)[sel])
    return {k: np.concatenate(v) for k, v in parts.items()}


def calibrate_run(run_dir: str | Path, *, min_points: int = 200, batch_size: int = 64,
                  device: str = "cpu") -> dict[str, Any]:
    """Fit the variance calibration of ``run_dir`` on its validation split, for ``best.pt`` and
    ``last.pt`` each with its own predictions, store each in its checkpoint and write
    ``RUN_DIR/calibration.json`` (both fits). Refitting replaces an earlier calibration.
    Returns ``{"best": calibration dict, "last": ...}`` for the checkpoints that exist."""
    from lcgen.io import atomic_path
    from lcgen.train.trainer import load_checkpoint, save_checkpoint

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LcgenError(f"run directory {run_dir} does not exist; train one with "
                         f"`lcgen train transformer --set loss=nll`")
    fits = {}
    for which in ("best", "last"):
        path = run_dir / f"{which}.pt"
        if not path.is_file():
            continue
        res = validation_residuals(run_dir, checkpoint=which, batch_size=batch_size, device=device)
        if res["resid"].size < MIN_TOTAL_FACTOR * min_points:
            raise LcgenError(f"the validation rows of {run_dir} have {res['resid'].size:,} hidden points, too few "
                             f"to calibrate on (at least {MIN_TOTAL_FACTOR * min_points:,} = {MIN_TOTAL_FACTOR} x "
                             f"min_points {min_points}); its variance is used as trained. Train with more data "
                             f"or a larger val_fraction")
        cal = fit_grouped_calibration(res["resid"], res["model_var"], res["noise_var"], res["run_length"],
                                      min_points=min_points)
        cal.update(split="val", n_total=int(res["resid"].size))
        ckpt = load_checkpoint(path)
        ckpt[CALIBRATION_KEY] = cal
        save_checkpoint(path, ckpt)
        fits[which] = cal
    if not fits:
        raise LcgenError(f"{run_dir} has no best.pt or last.pt to calibrate")
    with atomic_path(run_dir / CALIBRATION_FILE) as tmp:
        tmp.write_text(json.dumps(fits, indent=2) + "\n")
    return fits
