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
  positions, in time for time series and along the frequency (or lag) grid for spectra, in grid
  steps: on the default log-spaced grid that is a straight line in log frequency, as the spectra
  are plotted (and a stronger baseline than one linear in frequency: on the demo's PSDs its
  masked MSE is ~30 % lower); hidden positions before the first or after the last visible one
  take the nearest visible value.
- ``mean``: every position set to the mean of the curve's visible real values.
- ``gp`` (time series, on request: ``--baselines linear,mean,gp``): a celerite2 Gaussian process
  (SHO kernel + jitter) fitted on each window's visible points (:mod:`lcgen.evaluate.gp`), with a variance.

Beside MSE and MAE, the median absolute error on hidden positions (``masked_medae``) is reported:
a single flare or outlier can dominate a mean of squares, not a median.

Calibration (predictors with a variance: a model with a variance head, the GP). The predictive
distribution of a hidden observation is N(μ, s²), s² = predicted variance + the point's own
``flux_err``² (normalised; 0 for spectra), and with z = (y − μ)/s:

    coverage_68 = fraction of |z| <= 1 (68.27 %),   coverage_95 = fraction of |z| <= 1.9600,
    nll  = mean of ½ [log(2π s²) + z²],
    crps = mean of s [z (2Φ(z) − 1) + 2φ(z) − 1/√π]   (Gneiting & Raftery 2007),

pooled over hidden positions like the errors, overall and by block size. A run calibrated with
``lcgen calibrate`` (:mod:`lcgen.evaluate.calibrate`; ``lcgen train`` does it for runs with a variance
head) has its variance scaled per noise-share group and hidden-run length and may have Student-t
tails (``dof``, per position): its intervals, NLL and CRPS are then those of that t (CRPS:
Jordan, Krüger & Lerch 2019).

Forecast mode (``mode: forecast``) hides the last ``forecast_points`` real points of every window
instead of blocks, and scores against ``persistence`` (the last visible value carried forward)
and ``extrapolation`` (the least-squares line through the last ``forecast_points`` visible
points, in time, continued) besides ``mean`` (and ``gp`` on request).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Optional, Sequence

import numpy as np
from scipy.special import ndtr

from lcgen.evaluate.calibrate import CHECK_LEVELS, calibrated_prediction, calibration_groups, half_width
from lcgen.errors import LcgenError
from lcgen.io import atomic_path

PREDICTORS = ("model", "linear", "mean")
BASELINES = {"mask": ("linear", "mean", "gp"), "forecast": ("persistence", "extrapolation", "mean", "gp")}
DEFAULT_BASELINES = {"mask": "linear,mean", "forecast": "persistence,extrapolation,mean"}
Z68, Z95 = 1.0, 1.959963985  # central 68.27 % (±1 σ) and 95 % intervals of N(0, 1): Φ⁻¹(0.841345), Φ⁻¹(0.975)
REGIONS = ("masked", "unmasked")
METRICS_FILE = "metrics.json"
UNITS = {"timeseries": "normalised flux: (flux - median) / IQR of each window",
         "spectra": "normalised spectral value: arcsinh, then standardised per sample"}


@dataclasses.dataclass
class EvaluateConfig:
    """Settings of ``lcgen evaluate``."""

    data: Optional[str] = None  # (str) data file; default: the run's own data file
    split: Optional[Literal["test", "val", "train", "all"]] = None  # (str) rows to score; default: test (all rows of a --data file)
    mask_seed: int = 1  # (int) fixes every sample's mask (by its row index): same masks for every run and model
    checkpoint: Literal["best", "last"] = "best"  # (str) best.pt (lowest validation loss) or last.pt
    batch_size: int = 64  # (int) samples per forward pass
    device: str = "cpu"  # (str) cpu, cuda, cuda:N or auto
    ratio_bins: int = 3  # (int) equal-width bins of the hidden fraction between the run's min and max mask ratio
    mode: Literal["mask", "forecast"] = "mask"  # (str) mask: hide blocks; forecast: hide the last forecast_points of each window
    forecast_points: int = 16  # (int) forecast mode: real points hidden at the end of each window
    baselines: Optional[str] = None  # (str) comma list; mask: linear, mean, gp; forecast: persistence, extrapolation, mean, gp. default: all but gp (slow)
    gp_max_iter: int = 60  # (int) gp baseline: L-BFGS-B iterations of each window's hyperparameter fit
    mask_days: Optional[list[float]] = None  # (list[float]) [min, max]: score on blocks of this many days (log-uniform) instead of the run's own masks (time series)


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


def forecast_mask(valid: np.ndarray, n: int) -> np.ndarray:
    """Hide the last ``n`` real positions of each row (all but the first if it has fewer), (B, L)."""
    valid = _as_2d(valid).astype(bool)
    rank_from_end = np.cumsum(valid[:, ::-1], axis=1)[:, ::-1]  # 1 at the last real position
    count = valid.sum(1, keepdims=True)
    return valid & (rank_from_end <= np.minimum(n, count - 1))


def persistence_baseline(values: np.ndarray, valid: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """Every position after the last visible one gets that value; others their own. (B, L)."""
    values, valid, hidden = _as_2d(values), _as_2d(valid).astype(bool), _as_2d(hidden).astype(bool)
    visible = valid & ~hidden
    idx = np.where(visible, np.arange(values.shape[1]), -1)
    last = np.maximum.accumulate(idx, axis=1)  # last visible index at or before each position
    out = np.take_along_axis(values.astype(np.float64), np.maximum(last, 0), axis=1)
    return np.where(last >= 0, out, 0.0)


def extrapolation_baseline(values: np.ndarray, valid: np.ndarray, hidden: np.ndarray, coord: np.ndarray,
                           n_fit: int) -> np.ndarray:
    """Least-squares line (in ``coord``) through each row's last ``n_fit`` visible points,
    evaluated at every position (visible positions keep their own value). (B, L) float64."""
    values, valid, hidden = _as_2d(values), _as_2d(valid).astype(bool), _as_2d(hidden).astype(bool)
    coord = np.broadcast_to(np.asarray(coord, np.float64), values.shape)
    visible = valid & ~hidden
    out = np.where(visible, values, 0.0).astype(np.float64)
    for i in range(values.shape[0]):
        knots = np.flatnonzero(visible[i])[-max(n_fit, 2):]
        if knots.size == 0:
            continue
        x, y = coord[i, knots], values[i, knots].astype(np.float64)
        slope = np.polyfit(x - x[-1], y, 1)[0] if knots.size > 1 and np.ptp(x) > 0 else 0.0
        line = y.mean() + slope * (coord[i] - x.mean())
        out[i] = np.where(visible[i], out[i], line)
    return out


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


def calibration_sums(pred: np.ndarray, var: np.ndarray, target: np.ndarray,
                     select: np.ndarray, dof=None) -> dict[str, np.ndarray]:
    """Per-sample sums over the selected positions of a Gaussian prediction N(pred, var), or,
    with ``dof``, of a Student t with ``dof`` degrees of freedom and scale² ``var`` (a run whose
    calibration found heavier tails than a Gaussian's, :mod:`lcgen.evaluate.calibrate`; a number
    or an array broadcast against ``pred``, ``np.inf`` where Gaussian): ``in68``/``in95``
    (counts of |z| inside the central 68.27 %/95 % intervals), ``nll`` and ``crps`` (see the
    module docstring); each (B,). ``var`` must be > 0 where selected."""
    pred, var, target, select = _as_2d(pred), _as_2d(var), _as_2d(target), _as_2d(select).astype(bool)
    s = np.sqrt(np.where(select, var.astype(np.float64), 1.0))
    z = np.where(select, (target.astype(np.float64) - pred.astype(np.float64)) / s, 0.0)
    nll = 0.5 * (np.log(2 * np.pi * s * s) + z * z)
    pdf = np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    crps = s * (z * (2 * ndtr(z) - 1) + 2 * pdf - 1 / np.sqrt(np.pi))
    h68, h95 = Z68, Z95
    if dof is not None:
        from scipy.special import betaln, gammaln, stdtr

        dof = np.broadcast_to(np.asarray(dof, np.float64), z.shape)
        t = np.isfinite(dof)  # inf: Gaussian
        nu = np.where(t, dof, 3.0)
        logpdf = (gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * np.log(nu * np.pi)
                  - (nu + 1) / 2 * np.log1p(z * z / nu))
        nll = np.where(t, np.log(s) - logpdf, nll)
        # CRPS of the standard t (Jordan, Krüger & Lerch 2019, scoringRules crps_t), times the scale
        last = 2 * np.sqrt(nu) * np.exp(betaln(0.5, nu - 0.5) - 2 * betaln(0.5, nu / 2)) / (nu - 1)
        crps = np.where(t, s * (z * (2 * stdtr(nu, z) - 1) + 2 * np.exp(logpdf) * (nu + z * z) / (nu - 1) - last),
                        crps)
        h68, h95 = half_width(CHECK_LEVELS[0], dof), half_width(CHECK_LEVELS[1], dof)
    absz = np.abs(z)
    return {"in68": (select & (absz <= h68)).sum(1), "in95": (select & (absz <= h95)).sum(1),
            "nll": np.where(select, nll, 0.0).sum(1), "crps": np.where(select, crps, 0.0).sum(1)}


def score_batch(values: np.ndarray, valid: np.ndarray, hidden: np.ndarray,
                predictions: Mapping[str, np.ndarray],
                variances: Mapping[str, np.ndarray] | None = None,
                dofs: Mapping[str, float | None] | None = None) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Error sums of every prediction on the masked and the unmasked real positions.

    Returns ``{predictor: {"masked": error_sums, "unmasked": error_sums}}``. The masked sums
    also hold ``ae``, the absolute errors of the hidden positions, flattened in row order (for the
    median), and, for predictors with a total predictive variance in ``variances``,
    :func:`calibration_sums` (Student t for those with a ``dofs`` entry).
    """
    valid, hidden = _as_2d(valid).astype(bool), _as_2d(hidden).astype(bool)
    regions = {"masked": valid & hidden, "unmasked": valid & ~hidden}
    variances = variances or {}
    out = {}
    for name, pred in predictions.items():
        out[name] = {r: error_sums(pred, values, sel) for r, sel in regions.items()}
        sel = regions["masked"]
        diff = np.abs(_as_2d(pred).astype(np.float64) - _as_2d(values).astype(np.float64))
        out[name]["masked"]["ae"] = diff[sel].astype(np.float32)
        if name in variances:
            out[name]["masked"].update(calibration_sums(pred, variances[name], values, sel, (dofs or {}).get(name)))
    return out


def concat_scores(parts: Sequence[dict]) -> dict:
    """Join the per-sample arrays of several :func:`score_batch` results along the sample axis."""
    first = parts[0]
    return {p: {r: {k: np.concatenate([part[p][r][k] for part in parts]) for k in first[p][r]}
                for r in first[p]} for p in first}


def _take_ragged(flat: np.ndarray, counts: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The segments of ``flat`` (sample i owns ``counts[i]`` consecutive values) of ``rows``."""
    ends = np.cumsum(counts)
    starts = ends - counts
    return np.concatenate([flat[starts[r]:ends[r]] for r in rows]) if len(rows) else flat[:0]


def summarise(scores: dict, rows: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Pooled MSE and MAE per predictor and region over the samples ``rows`` (default: all).

    Returns ``{predictor: {"masked_mse", "masked_mae", "unmasked_mse", "unmasked_mae"}}``, plus
    ``masked_medae`` (median absolute error) where the scores hold the hidden errors, and
    ``coverage_68``, ``coverage_95``, ``nll``, ``crps`` (on hidden positions) for predictors with a
    variance; a region with no positions gives None (JSON null: undefined, not a number).
    """
    out = {}
    for name, by_region in scores.items():
        row = {}
        for region, sums in by_region.items():
            take = slice(None) if rows is None else rows
            n = int(sums["n"][take].sum())
            row[f"{region}_mse"] = float(sums["sse"][take].sum() / n) if n else None
            row[f"{region}_mae"] = float(sums["sae"][take].sum() / n) if n else None
            if "ae" in sums:
                ae = sums["ae"] if rows is None else _take_ragged(sums["ae"], sums["n"], rows)
                row[f"{region}_medae"] = float(np.median(ae)) if ae.size else None
                sse, count = sums["sse"][take], sums["n"][take]
                per_window = sse[count > 0] / count[count > 0]
                row[f"{region}_window_mse_median"] = float(np.median(per_window)) if per_window.size else None
            for key, label in (("in68", "coverage_68"), ("in95", "coverage_95"), ("nll", "nll"), ("crps", "crps")):
                if key in sums:
                    row[label] = float(sums[key][take].sum() / n) if n else None
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
    """Model error divided by each baseline's (< 1: the model is better; None where undefined)."""
    return {b: ratio(overall["model"][metric], overall[b][metric]) for b in baselines if b in overall}


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is 0 (a baseline that is exact)."""
    return a / b if a is not None and b else None


def _as_2d(x) -> np.ndarray:
    x = np.asarray(x)
    return x[None] if x.ndim == 1 else x


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


# --------------------------------------------------------------------------------------------
# Evaluating a run


def mask_block_sizes(valid: np.ndarray, index: np.ndarray, *, seed: int, min_block: int = 1,
                     max_block: int = 32) -> np.ndarray:
    """Block size of each sample's fixed mask (:func:`lcgen.masking.fixed_mask`), (B,) int64."""
    import torch

    from lcgen.masking import block_sizes, draw_fixed

    valid_t = torch.as_tensor(np.asarray(valid, bool))
    draws = draw_fixed(valid_t, torch.as_tensor(np.asarray(index, np.int64)), seed=seed, min_block=min_block)
    return block_sizes(valid_t, draws, min_block=min_block, max_block=max_block).numpy().astype(np.int64)


@dataclasses.dataclass
class Evaluation:
    """An opened run and the data it is scored on (see :func:`open_evaluation`)."""

    run_dir: Path
    model: Any  # torch.nn.Module in eval mode
    train_config: Any  # lcgen.train.TrainConfig
    config: EvaluateConfig
    kind: str  # "timeseries" or "spectra"
    source: Any  # lcgen.train.data row source (open HDF5 file)
    rows: np.ndarray  # (N,) sorted row indices scored
    split: str  # which rows: test, val, train or all
    data_path: str
    device: Any  # torch.device
    coord: np.ndarray | None  # (L,) frequency or lag grid of spectra; None for time series
    coord_name: str  # "time", "frequency", "lag" or "bin"
    lc_type: np.ndarray | None  # (n_rows,) light-curve type per row of the file, where known
    mask: dict  # min_block, max_block, min_ratio, max_ratio of the run
    paired: bool = False  # a multimodal run: kind is "timeseries" (its series is scored as the
    # transformer's, with the window's spectra visible), lcgen.evaluate.crossmodal scores the rest


@contextlib.contextmanager
def open_evaluation(run_dir: str | Path, cfg: EvaluateConfig | None = None) -> Iterator[Evaluation]:
    """Rebuild a run's model from its directory alone and open the rows it is scored on."""
    from lcgen.train.data import load_split, open_source
    from lcgen.models import get_spec
    from lcgen.train.trainer import load_run, resolve_device

    cfg = cfg or EvaluateConfig()
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LcgenError(f"run directory {run_dir} does not exist; train one with `lcgen train MODEL`")
    if cfg.batch_size < 1:
        raise LcgenError(f"batch_size must be >= 1, got {cfg.batch_size}")
    device = resolve_device(cfg.device)
    model, tcfg = load_run(run_dir, which=cfg.checkpoint, device=device)
    kind = get_spec(tcfg.model_name).data
    data_path = cfg.data or tcfg.data
    if not Path(data_path).exists():
        raise LcgenError(f"{data_path}, the data file of {run_dir}, does not exist (paths are relative to "
                         f"where you run lcgen); give it with --data FILE")
    split = cfg.split or ("test" if cfg.data is None else "all")
    source = open_source(data_path, kind, tcfg.channel)
    try:
        if cfg.data is not None:
            _check_same_layout(source, run_dir, model, tcfg, kind)
        if split == "all":
            rows = np.asarray(source.usable, np.int64)
        else:
            saved = load_split(run_dir)
            if int(saved["n_rows"]) != source.n_rows:
                raise LcgenError(f"{data_path} has {source.n_rows} rows but {run_dir} was split on a file of "
                                 f"{int(saved['n_rows'])} rows; use --split all to score every row of it")
            rows = np.sort(saved[split]).astype(np.int64)
        if rows.size == 0:
            raise LcgenError(f"the {split} split of {run_dir} is empty; use --split all or val, or train "
                             f"on more data")
        coord, coord_name = None, "time"
        if kind == "spectra":
            key = "lag" if tcfg.channel == "acf" else "frequency"
            if key in source.f and source.f[key].shape == (source.length,):
                coord, coord_name = source.f[key][:].astype(np.float64), key
            else:
                coord, coord_name = np.arange(source.length, dtype=np.float64), "bin"
        lc_type = None
        for key in ("meta/lc_type", "lc_type"):
            if key in source.f and source.f[key].shape == (source.n_rows,):
                ds = source.f[key]
                lc_type = np.asarray(ds.asstr()[:] if ds.dtype.kind == "O" else ds[:]).astype(str)
                break
        yield Evaluation(run_dir=run_dir, model=model, train_config=tcfg, config=cfg,
                         kind="timeseries" if kind == "paired" else kind,
                         source=source, rows=rows, split=split, data_path=str(data_path), device=device,
                         coord=coord, coord_name=coord_name, lc_type=lc_type,
                         mask=_scoring_mask(tcfg.mask, cfg, kind), paired=kind == "paired")
    finally:
        source.close()


def _scoring_mask(run_mask, cfg: EvaluateConfig, kind: str) -> dict:
    """The run's mask settings, with blocks in days when ``cfg.mask_days`` asks for them."""
    from lcgen.masking import check_day_settings

    mask = dataclasses.asdict(run_mask)
    if cfg.mask_days is not None:
        if len(cfg.mask_days) != 2 or kind not in ("timeseries", "paired"):
            raise LcgenError(f"mask_days = {cfg.mask_days}: give [min, max] days, for a run on time series")
        check_day_settings(*cfg.mask_days)
        mask.update(min_days=float(cfg.mask_days[0]), max_days=float(cfg.mask_days[1]))
    return mask


# Gap-duration bins of the by_gap_days breakdown: (upper edge in days, label)
GAP_BINS = ((1 / 24, "< 1 h"), (3 / 24, "1-3 h"), (8 / 24, "3-8 h"), (1.0, "8 h-1 d"), (3.0, "1-3 d"),
            (10.0, "3-10 d"), (math.inf, "> 10 d"))


def gap_days(valid: np.ndarray, time: np.ndarray, index: np.ndarray, points: np.ndarray, *, seed: int,
             mask: dict) -> np.ndarray:
    """Length in days (B,) of each window's fixed mask blocks: the drawn length of blocks in days,
    or the block size in ``points`` (:func:`mask_block_sizes`) times the window's median spacing."""
    import torch

    from lcgen.masking import day_block_length, draw_fixed, key_block

    valid_t, time_t = torch.as_tensor(np.asarray(valid, bool)), torch.as_tensor(np.asarray(time, np.float64))
    if mask.get("max_days", 0) > 0:
        draws = draw_fixed(valid_t, torch.as_tensor(np.asarray(index, np.int64)), seed=seed,
                           min_block=key_block(1, mask["max_days"]))
        return day_block_length(valid_t, time_t, draws.u_block, min_days=mask["min_days"],
                                max_days=mask["max_days"])[0].numpy()
    spacing = np.array([np.median(np.diff(t[ok])) if ok.sum() > 1 else np.nan for t, ok in zip(time, valid)])
    return points * spacing


def gap_labels(days: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Each window's :data:`GAP_BINS` label, and the labels in order."""
    edges = np.array([edge for edge, _ in GAP_BINS])
    names = [name for _, name in GAP_BINS]
    return np.asarray(names)[np.minimum(np.searchsorted(edges, days, side="right"), len(names) - 1)], names


def _check_same_layout(source, run_dir: Path, model, tcfg, kind: str) -> None:
    """Refuse to score a model on data laid out differently from its training data: another
    window length (checked against the length the run's model was built for, wherever lcgen runs)
    or, when the training file is still found, another frequency/lag grid. Its numbers would mean
    nothing."""
    from lcgen.train.data import open_source

    how = "preprocess" if kind == "spectra" else "convert"
    trained = getattr(model.config, "input_length", None)
    if trained is not None and trained != source.length:
        raise LcgenError(f"{source.path} has rows of {source.length} points but {run_dir} was trained on "
                         f"rows of {trained}; {how} the data with the settings of its training data "
                         f"({tcfg.data})")
    if kind == "paired" and Path(tcfg.data).exists():
        from lcgen.io import check_same_grids

        check_same_grids(source.path, tcfg.data, str(run_dir))
    if kind != "spectra" or not Path(tcfg.data).exists():
        return
    key = "lag" if tcfg.channel == "acf" else "frequency"
    with open_source(tcfg.data, kind, tcfg.channel) as train_source:
        if key in source.f and key in train_source.f and not np.array_equal(source.f[key][:], train_source.f[key][:]):
            raise LcgenError(f"{source.path} has another {key} grid than {tcfg.data}, which {run_dir} was "
                             f"trained on; {how} it with the same settings (see `lcgen info {tcfg.data}`)")


def baseline_names(cfg: EvaluateConfig, kind: str) -> list[str]:
    """The baselines ``cfg`` asks for, checked against the mode (and gp: time series only)."""
    text = cfg.baselines if cfg.baselines is not None else DEFAULT_BASELINES[cfg.mode]
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    allowed = BASELINES[cfg.mode]
    for name in names:
        if name not in allowed:
            raise LcgenError(f"unknown baseline '{name}' for {cfg.mode} mode; choose from {', '.join(allowed)}")
    if "gp" in names and kind != "timeseries":
        raise LcgenError("the gp baseline needs time series (a run of the transformer)")
    return list(dict.fromkeys(names))


def hide(ev: Evaluation, batch: dict) -> Any:
    """The fixed hidden positions of a batch: seeded blocks, or the window ends in forecast mode."""
    import torch

    from lcgen.masking import fixed_mask

    if ev.config.mode == "forecast":
        return torch.from_numpy(forecast_mask(batch["valid"].numpy(), ev.config.forecast_points))
    return fixed_mask(batch["valid"], batch["index"], seed=ev.config.mask_seed, time=batch.get("time"), **ev.mask)


def predict(ev: Evaluation, rows: np.ndarray | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Run the model and the baselines on ``rows`` (default: all of ``ev.rows``) with the fixed
    masks, a batch at a time. Yields numpy dicts: ``values``, ``valid``, ``hidden``, ``coord``
    (B, L), ``index`` (B,), ``model`` and one (B, L) prediction per baseline and, where the file
    has the noise-free signal, ``signal`` (B, L). Predictors with a variance (a model with a
    variance head, the GP) add ``NAME_var``: the total predictive variance of an observation,
    their variance plus the point's own ``flux_err``²."""
    import torch

    from lcgen.train.data import iter_batches, read_rows

    rows = ev.rows if rows is None else np.sort(np.asarray(rows, np.int64))
    names = baseline_names(ev.config, ev.kind)
    has_signal = "signal" in ev.source.f and ev.source.f["signal"].shape == (ev.source.n_rows, ev.source.length)
    for batch in iter_batches(ev.source, rows, ev.config.batch_size):
        batch["hidden"] = hide(ev, batch)
        with torch.no_grad():
            out = ev.model.forward_batch({k: v.to(ev.device) for k, v in batch.items()})
        b = {k: v.numpy() for k, v in batch.items()}
        coord = b["time"] if ev.kind == "timeseries" else np.broadcast_to(ev.coord, b["values"].shape)
        # spectra: interpolate in grid steps (log frequency on a log grid), see the module docstring
        knots = b["time"] if ev.kind == "timeseries" else np.arange(b["values"].shape[1], dtype=np.float64)
        err2 = b["flux_err"].astype(np.float64) ** 2 if "flux_err" in b else 0.0
        v, ok, hid = b["values"], b["valid"], b["hidden"]
        result = {"values": v, "valid": ok, "hidden": hid, "coord": coord, "index": b["index"],
                  "model": out["reconstructed"].float().reshape(v.shape).cpu().numpy()}
        if "log_var" in out:
            raw = np.exp(out["log_var"].double().reshape(v.shape).cpu().numpy())
            result["model_raw_var"], result["noise_var"] = raw, np.broadcast_to(err2, v.shape)
            var, result["model_dof"] = calibrated_prediction(ev.model, raw, ok & hid, err2)  # ν per point; None: Gaussian
            result["model_var"] = var + err2
        for name in names:
            if name == "linear":
                result[name] = linear_baseline(v, ok, hid, knots)
            elif name == "mean":
                result[name] = mean_baseline(v, ok, hid)
            elif name == "persistence":
                result[name] = persistence_baseline(v, ok, hid)
            elif name == "extrapolation":
                result[name] = extrapolation_baseline(v, ok, hid, knots, ev.config.forecast_points)
            elif name == "gp":
                from lcgen.evaluate.gp import gp_baseline

                result["gp"], var = gp_baseline(v, ok, hid, b["time"], b.get("flux_err"),
                                                max_iter=ev.config.gp_max_iter)
                result["gp_var"] = var + err2
        if has_signal:
            signal = read_rows(ev.source.f["signal"], b["index"])
            result["signal"] = np.where(b["valid"], signal, 0.0).astype(np.float32)
        yield result


def evaluate_run(run_dir: str | Path, cfg: EvaluateConfig | None = None, *,
                 output: str | Path | None = None, progress=None) -> dict:
    """Score a trained run on fixed, seeded masks against the linear and mean baselines.

    Writes ``output`` (default :func:`metrics_path`: ``RUN_DIR/metrics.json`` for the test split)
    and returns the same dict: ``overall``
    (pooled MSE/MAE per predictor on masked and unmasked real positions), ``vs_baselines`` (the
    model's error over each baseline's), ``by_mask_ratio``, ``by_block_size``, ``by_lc_type``
    (where the data carry it) and, for mock data, ``signal`` (errors against the noise-free
    signal, with ``data`` = the noise itself as the floor). ``progress(n)`` is called per batch.
    """
    cfg = cfg or EvaluateConfig()
    if cfg.ratio_bins < 1:
        raise LcgenError(f"ratio_bins must be >= 1, got {cfg.ratio_bins}")
    if cfg.forecast_points < 1:
        raise LcgenError(f"forecast_points must be >= 1, got {cfg.forecast_points}")
    with open_evaluation(run_dir, cfg) as ev:
        names = ["model", *baseline_names(cfg, ev.kind)]
        parts, signal_parts, index, hidden_frac, blocks, days = [], [], [], [], [], []
        for out in predict(ev):
            preds = {name: out[name] for name in names}
            variances = {name: out[f"{name}_var"] for name in names if f"{name}_var" in out}
            dofs = {name: out[f"{name}_dof"] for name in names if out.get(f"{name}_dof") is not None}
            parts.append(score_batch(out["values"], out["valid"], out["hidden"], preds, variances, dofs))
            if "signal" in out:
                signal_parts.append(score_batch(out["signal"], out["valid"], out["hidden"],
                                                {**preds, "data": out["values"]}))
            index.append(out["index"])
            hidden_frac.append(out["hidden"].sum(1) / np.maximum(out["valid"].sum(1), 1))
            if cfg.mode == "mask":
                blocks.append(mask_block_sizes(out["valid"], out["index"], seed=cfg.mask_seed,
                                               min_block=ev.mask["min_block"], max_block=ev.mask["max_block"]))
                if ev.kind == "timeseries":
                    days.append(gap_days(out["valid"], out["coord"], out["index"], blocks[-1],
                                         seed=cfg.mask_seed, mask=ev.mask))
            else:
                blocks.append(out["hidden"].sum(1).astype(np.int64))  # the forecast horizon in points
            if progress is not None:
                progress(len(out["index"]))
        scores = concat_scores(parts)
        index, hidden_frac, blocks = map(np.concatenate, (index, hidden_frac, blocks))
        overall = summarise(scores)
        mse_ratio, mae_ratio = (compare(overall, baselines=names[1:], metric=m) for m in ("masked_mse", "masked_mae"))
        m = ev.mask
        edges = np.linspace(m["min_ratio"], m["max_ratio"], cfg.ratio_bins + 1)
        ratio_labels, ratio_order = ratio_bins(hidden_frac, edges)
        tcfg = ev.train_config
        metrics = {
            "run_dir": str(ev.run_dir), "model_name": tcfg.model_name, "preset": tcfg.preset,
            "checkpoint": cfg.checkpoint, "data": ev.data_path, "data_kind": "paired" if ev.paired else ev.kind,
            **({"channel": tcfg.channel} if ev.kind == "spectra" else {}),
            "split": ev.split, "n_samples": int(index.size),
            "n_masked_positions": int(scores["model"]["masked"]["n"].sum()),
            "n_unmasked_positions": int(scores["model"]["unmasked"]["n"].sum()),
            "mode": cfg.mode, "baselines": names[1:],
            "mask": ({"seed": cfg.mask_seed, **m} if cfg.mode == "mask"
                     else {"forecast_points": cfg.forecast_points}), "units": UNITS[ev.kind],
            "overall": overall,
            **_calibration_summary(ev.model),
            "vs_baselines": {b: {"masked_mse_ratio": mse_ratio[b], "masked_mae_ratio": mae_ratio[b]}
                             for b in mse_ratio},
            "by_mask_ratio": breakdown(scores, ratio_labels, order=ratio_order),
            "by_block_size": breakdown(scores, blocks) if not ev.mask.get("max_days") else [],
        }
        if days:
            gap_label, gap_order = gap_labels(np.concatenate(days))
            metrics["by_gap_days"] = breakdown(scores, gap_label, order=gap_order)
        if ev.lc_type is not None:
            metrics["by_lc_type"] = breakdown(scores, ev.lc_type[index])
        if signal_parts:
            metrics["signal"] = summarise(concat_scores(signal_parts))
        if ev.paired and cfg.mode == "mask":  # every modality, and each from the others alone
            from lcgen.evaluate.crossmodal import crossmodal_metrics

            metrics["modalities"] = crossmodal_metrics(ev, progress=progress)
        metrics["summary"] = verdict(metrics)
    write_metrics(output or metrics_path(run_dir, metrics["split"], cfg.data, cfg.checkpoint, mode=cfg.mode,
                                         days=cfg.mask_days is not None),
                  metrics)
    return metrics


def _calibration_summary(model) -> dict:
    """``{"variance_calibration": {...}}``: the run's calibration the model was scored with
    (per noise-share group: edges, scales, tails and, for Student t, dof; ``share_edges``; the
    split); empty where there is none (metrics hold no nulls). A calibration of one group (stored
    before the groups) keeps its flat form."""
    cal = getattr(model, "variance_calibration", None)
    if not cal:
        return {}

    def one(fit):
        dof = fit.get("dof")
        return {"edges": fit["edges"], "scales": fit["scales"], "tails": "gaussian" if dof is None else "student_t",
                **({} if dof is None else {"dof": dof})}

    share_edges, groups = calibration_groups(cal)
    summary = {"share_edges": share_edges, "groups": [one(g) for g in groups]} if share_edges else one(cal)
    return {"variance_calibration": {**summary, "split": cal.get("split", "val")}}


def reliability(ev: Evaluation, levels: Sequence[float] = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2)) + (0.99,),
                predictor: str = "model") -> tuple[np.ndarray, np.ndarray]:
    """Observed coverage of the central intervals at nominal ``levels`` on the hidden positions
    of ``ev.rows`` (the model's total predictive variance, as in the metrics). Returns
    (levels, coverage), each (K,)."""
    levels = np.asarray(levels, np.float64)
    inside, n = np.zeros(levels.size), 0
    for out in predict(ev):
        dof = out.get(f"{predictor}_dof")  # None (Gaussian), or ν per position
        sel = out["valid"] & out["hidden"]
        z = np.abs(out[predictor][sel] - out["values"][sel]) / np.sqrt(out[f"{predictor}_var"][sel])
        # central interval of N(0, 1) (or of the point's Student t) holding each level
        half = half_width(levels[None, :], None if dof is None else np.broadcast_to(dof, sel.shape)[sel][:, None])
        inside += (z[:, None] <= half).sum(0)
        n += z.size
    return levels, inside / max(n, 1)


def metrics_path(run_dir: str | Path, split: str = "test", data: str | Path | None = None,
                 checkpoint: str = "best", *, mode: str = "mask", days: bool = False) -> Path:
    """Where :func:`evaluate_run` writes: ``RUN_DIR/metrics.json`` for the test split of the run's
    own data scored with ``best.pt``, ``metrics-SPLIT.json`` for another split,
    ``metrics-STEM[-SPLIT].json`` for a ``--data`` file and ``...-last.json`` for ``last.pt``, so
    scoring other rows or another checkpoint never overwrites the test metrics; forecast mode
    writes ``metrics-forecast[...].json``, masks in days (``days``) ``metrics-days[...].json``."""
    name = "metrics" + ("-forecast" if mode == "forecast" else "") + ("-days" if days else "")
    name += f"-{Path(data).stem}" if data is not None else ""
    name += "" if (split == "test" or (data is not None and split == "all")) else f"-{split}"
    name += "" if checkpoint == "best" else f"-{checkpoint}"
    return Path(run_dir) / f"{name}.json"


def write_metrics(path: str | Path, metrics: dict) -> Path:
    """Write ``metrics`` as indented JSON, atomically (NaN is refused: it is not JSON)."""
    path = Path(path)
    text = json.dumps(metrics, indent=2, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def read_metrics(run_dir: str | Path) -> dict:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise LcgenError(f"{path} does not exist; run `lcgen evaluate {run_dir}` first")
    return json.loads(path.read_text())


def verdict(metrics: dict) -> str:
    """One line: how much better or worse than each baseline the model is on masked MSE."""
    parts = []
    for name, r in ((n, v["masked_mse_ratio"]) for n, v in metrics["vs_baselines"].items()):
        label = BASELINE_LABELS.get(name, name)
        if r is None:
            parts.append(f"not comparable with {label} (no hidden positions, or it is exact)")
        elif r <= 1:
            parts.append(f"{1 - r:.0%} lower masked MSE than {label} (ratio {r:.3f})")
        else:
            parts.append(f"{r - 1:.0%} higher masked MSE than {label} (ratio {r:.3f})")
    return f"{metrics['model_name']}: " + "; ".join(parts)


BASELINE_LABELS = {"linear": "linear interpolation", "mean": "the per-curve mean", "gp": "the GP (celerite2)",
                   "persistence": "persistence", "extrapolation": "linear extrapolation"}


def metrics_markdown(metrics: dict) -> str:
    """The overall table of a metrics dict as Markdown (for the README)."""
    lines = ["| predictor | masked MSE | masked MAE | unmasked MSE | unmasked MAE |",
             "|---|---:|---:|---:|---:|"]
    names = {"model": metrics["model_name"], "linear": "linear interpolation", "mean": "per-curve mean"}
    for key, row in metrics["overall"].items():
        cells = " | ".join("-" if row[k] is None else f"{row[k]:.4f}"
                           for k in ("masked_mse", "masked_mae", "unmasked_mse", "unmasked_mae"))
        lines.append(f"| {names.get(key, key)} | {cells} |")
    return "\n".join(lines)


def choose_examples(ev: Evaluation, n: int = 6, *, seed: int = 0) -> np.ndarray:
    """Rows to show, chosen reproducibly: one per light-curve type in turn (types sorted, a row
    drawn from each by ``default_rng(seed)``) until ``n``; random rows where types are unknown."""
    rng = np.random.default_rng(seed)
    rows = ev.rows
    n = min(n, rows.size)
    if ev.lc_type is None:
        return rows[np.sort(rng.choice(rows.size, n, replace=False))]
    types = ev.lc_type[rows]
    pools = {t: list(rng.permutation(rows[types == t])) for t in sorted(set(types.tolist()))}
    chosen: list[int] = []
    while len(chosen) < n:
        for t in pools:
            if pools[t] and len(chosen) < n:
                chosen.append(int(pools[t].pop()))
    return np.asarray(chosen, np.int64)


def reconstruction_examples(ev: Evaluation, rows: Sequence[int]) -> list[dict]:
    """Per-row dicts for :func:`lcgen.plots.plot_reconstructions`, in the order of ``rows``."""
    found: dict[int, dict] = {}
    for out in predict(ev, np.unique(rows)):
        for k, row in enumerate(out["index"]):
            ex = {"coord": out["coord"][k], "values": out["values"][k], "valid": out["valid"][k],
                  "hidden": out["hidden"][k], "reconstructed": out["model"][k], "linear": out["linear"][k],
                  "signal": out["signal"][k] if "signal" in out else None}
            err = error_sums(ex["reconstructed"], ex["values"], ex["valid"] & ex["hidden"])
            lin = error_sums(ex["linear"], ex["values"], ex["valid"] & ex["hidden"])
            n = max(int(err["n"][0]), 1)
            label = str(ev.lc_type[row]) if ev.lc_type is not None else f"row {row}"
            ex["label"] = (f"{label} (row {row}): masked MSE model {err['sse'][0] / n:.3f}, "
                           f"linear {lin['sse'][0] / n:.3f}")
            found[int(row)] = ex
    return [found[int(r)] for r in rows]
