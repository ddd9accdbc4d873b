"""``lcgen fill``: fill the gaps of light curves (and forecast past their end) with a trained run.

For every curve of a raw file (simulated or ingested):

1. the curve is cleaned as ``lcgen convert`` cleans it (non-finite points dropped, times sorted,
   duplicates merged);
2. a regular grid is laid from its first observation at its cadence (the median spacing, or
   ``cadence``), extended by ``forecast`` days past the last observation; a grid point with no
   observation within half a cadence is a gap point;
3. gaps (runs of consecutive gap points) longer than ``max_gap`` days, measured between the
   observations on either side, are left unfilled and counted (forecast points are kept), and
   so is any run of more than half a window (L/2 grid points, forecasts included): no window
   would see both of its sides, or any observation at all;
4. the observed points and the gap points, in time order, are covered by windows of the model's
   length overlapping by half; each window is normalised as ``convert`` does (median / IQR of its
   observed points) and the model predicts mean and variance at its gap points, which are hidden
   from it exactly as masked points are during training;
5. overlapping windows are blended with weights ``w_k = sin²(π (k + ½) / L)`` (they sum to ~1 at
   half overlap, so neither window's edge dominates): mean ``μ = Σ w μ_j / Σ w``, variance the
   mixture's ``Σ w (σ_j² + μ_j²) / Σ w − μ²``;
6. normalisation is undone: the output is in the input's units. Observed points are kept exactly.

The ``flux_err`` of a filled point is the predictive σ of an observation there: the model's
variance of the signal (scaled by the run's calibration, :mod:`lcgen.evaluate.calibrate`) plus the
window's median ``flux_err``² (the noise a measurement at that time would carry). Where the
calibration chose Student-t tails, ``flux_err`` is the half-width of the central 68.27 %
interval (the scale times t's quantile), so ±``flux_err`` still holds 68 %; the 95 % interval
is then wider than ±2 ``flux_err`` (×2.66 at 3 degrees of freedom instead of ×1.96 / 1). The
tails are chosen per noise-share group (σ²/e², with e the window's median error), so ν can differ
between windows: the quantile² is blended across overlapping windows with the same weights.
A run without a variance head fills means with ``flux_err`` = NaN.

Output (``format: h5``): a raw-layout HDF5 file (``time``, ``flux``, ``flux_err``, ``offsets``,
``meta/``) plus ``filled`` (bool per point) and per-curve ``meta/n_filled``; every command that
reads raw files reads it. ``csv`` and ``fits`` write one file per curve into a directory:
columns time, flux, flux_err, filled (FITS: a ``LIGHTCURVE`` binary table with ``TIME``,
``FLUX``, ``FLUX_ERR``, ``FILLED``).
"""

from __future__ import annotations

import dataclasses
import time as _time
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np

from lcgen.evaluate.calibrate import CHECK_LEVELS, calibrated_prediction, half_width
from lcgen.errors import LcgenError


@dataclasses.dataclass
class FillConfig:
    """Settings of ``lcgen fill``."""

    cadence: Optional[float] = None  # (float) grid spacing in days; default: each curve's median spacing
    max_gap: Optional[float] = None  # (float) gaps longer than this many days stay unfilled; default: fill all
    forecast: float = 0.0  # (float) days to predict past each curve's last observation
    format: Literal["h5", "csv", "fits"] = "h5"  # (str) h5: one raw-layout file; csv, fits: one file per curve in a directory
    checkpoint: Literal["best", "last"] = "best"  # (str) which weights of the run
    batch_size: int = 64  # (int) windows per forward pass
    device: str = "cpu"  # (str) cpu, cuda, cuda:N or auto


@dataclasses.dataclass
class CurveFill:
    """One filled curve: observed points and gap points in time order (input units)."""

    time: np.ndarray  # (M,) days
    flux: np.ndarray  # (M,) observed flux, or the predicted mean at filled points
    flux_err: np.ndarray  # (M,) observed error, or the predictive sigma at filled points
    filled: np.ndarray  # (M,) bool
    unfilled_gaps: int = 0  # gaps left out as longer than max_gap
    unfilled_points: int = 0  # grid points inside them


def gap_points(t: np.ndarray, cadence: float, *, max_gap: float | None = None,
               forecast: float = 0.0) -> tuple[np.ndarray, int, int]:
    """Grid points (days) with no observation within half a cadence, for sorted times ``t``.

    The grid runs from ``t[0]`` in steps of ``cadence`` to ``t[-1] + forecast``. Runs of gap
    points whose flanking observations are more than ``max_gap`` apart are dropped (forecast
    points, past the last observation, are kept). Returns (gap times, gaps dropped, points dropped).
    """
    if not cadence > 0:
        raise LcgenError(f"cadence must be > 0 days, got {cadence}")
    n = int(np.floor((t[-1] + forecast - t[0]) / cadence + 1e-9)) + 1
    grid = t[0] + cadence * np.arange(n)
    j = np.searchsorted(t, grid)
    dist = np.minimum(np.abs(grid - t[np.clip(j - 1, 0, t.size - 1)]), np.abs(t[np.clip(j, 0, t.size - 1)] - grid))
    gaps = grid[dist > 0.5 * cadence]
    if max_gap is None or gaps.size == 0:
        return gaps, 0, 0
    after = np.searchsorted(t, gaps)  # index of the next observation (t.size: a forecast point)
    inside = after < t.size
    span = np.where(inside, t[np.minimum(after, t.size - 1)] - t[np.maximum(after - 1, 0)], 0.0)
    drop = inside & (span > max_gap)
    return gaps[~drop], int(np.unique(after[drop]).size), int(drop.sum())


def window_starts(n: int, length: int) -> list[int]:
    """Starts of windows of ``length`` covering ``n`` points with half overlap (last one aligned
    to the end)."""
    if n <= length:
        return [0]
    step = max(length // 2, 1)
    starts = list(range(0, n - length + 1, step))
    if starts[-1] != n - length:
        starts.append(n - length)
    return starts


def blend_weights(length: int) -> np.ndarray:
    """Per-position weights of a window, ``sin²(π (k + ½) / L)``, (L,)."""
    return np.sin(np.pi * (np.arange(length) + 0.5) / length) ** 2


def prepare_curves(curves, cfg: FillConfig, length: int) -> tuple[list[dict], list[tuple[int, int, int]]]:
    """Clean each ``(time, flux, flux_err)`` curve, add its gap points, and list the windows
    ``(curve, start, stop)`` of ``length`` points that hold at least one gap point."""
    from lcgen.features.convert import clean_curve

    prepared, windows = [], []
    for c, (t, y, e) in enumerate(curves):
        t, y, e, _ = clean_curve(np.asarray(t, np.float64), np.asarray(y, np.float64), np.asarray(e, np.float64))
        if t.size < 3:
            raise LcgenError(f"curve {c} has {t.size} usable points; at least 3 are needed to fill it")
        cadence = cfg.cadence if cfg.cadence is not None else float(np.median(np.diff(t)))
        gaps, n_gaps, n_dropped = gap_points(t, cadence, max_gap=cfg.max_gap, forecast=cfg.forecast)
        order = np.argsort(np.concatenate([t, gaps]), kind="stable")
        filled = np.concatenate([np.zeros(t.size, bool), np.ones(gaps.size, bool)])[order]
        # A run of gap points longer than half a window cannot be seen from both sides (a window
        # could hold no observation at all): it stays unfilled, and is counted.
        edges = np.diff(np.concatenate([[0], filled.astype(np.int8), [0]]))
        starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        too_long = (stops - starts) > length // 2
        keep = np.ones(filled.size, bool)
        for a, b in zip(starts[too_long], stops[too_long]):
            keep[a:b] = False
        n_gaps += int(too_long.sum())
        n_dropped += int((stops - starts)[too_long].sum())
        order, filled = order[keep], filled[keep]
        prepared.append(dict(time=np.concatenate([t, gaps])[order], flux=np.concatenate([y, np.zeros(gaps.size)])[order],
                             err=np.concatenate([e, np.zeros(gaps.size)])[order], filled=filled,
                             n_gaps=n_gaps, n_dropped=n_dropped))
        if filled.any():
            windows += [(c, s, min(s + length, filled.size)) for s in window_starts(filled.size, length)
                        if filled[s:s + length].any()]
    return prepared, windows


def window_arrays(prepared: list[dict], chunk: list[tuple[int, int, int]], length: int) -> tuple[dict, np.ndarray]:
    """The model's inputs for windows ``chunk``: (B, L) ``values``, ``time``, ``flux_err``,
    ``valid``, ``hidden`` (gap points), normalised as ``lcgen convert`` normalises (median / IQR
    of each window's observed points), and the (B, 3) median, IQR and median normalised error."""
    from lcgen.features.convert import robust_scale

    B = len(chunk)
    arrays = {k: np.zeros((B, length), np.float32) for k in ("values", "time", "flux_err")}
    arrays.update(valid=np.zeros((B, length), bool), hidden=np.zeros((B, length), bool))
    scale = np.zeros((B, 3))
    for k, (c, s, e) in enumerate(chunk):
        p, n = prepared[c], e - s
        seen = ~p["filled"][s:e]
        med, iqr = robust_scale(p["flux"][s:e][seen])
        arrays["values"][k, :n] = np.where(seen, (p["flux"][s:e] - med) / iqr, 0.0)
        arrays["flux_err"][k, :n] = np.where(seen, p["err"][s:e] / iqr, 0.0)
        arrays["time"][k, :n] = p["time"][s:e] - p["time"][s]
        arrays["valid"][k, :n], arrays["hidden"][k, :n] = True, ~seen
        scale[k] = med, iqr, np.median(p["err"][s:e][seen]) / iqr
    return arrays, scale


def fill_curves(model, curves, cfg: FillConfig | None = None, *,
                progress: Callable[[int], None] | None = None) -> list[CurveFill]:
    """Fill each ``(time, flux, flux_err)`` of ``curves`` with ``model`` (a time-series model,
    eval mode). Returns one :class:`CurveFill` per curve, in input units."""
    import torch

    cfg = cfg or FillConfig()
    L = int(model.config.input_length)
    device = next(model.parameters()).device
    prepared, windows = prepare_curves(curves, cfg, L)
    for p in prepared:
        p.update(num=np.zeros(p["time"].size), den=np.zeros(p["time"].size), second=np.zeros(p["time"].size),
                 h2=np.zeros(p["time"].size))
    weights = blend_weights(L)
    for b0 in range(0, len(windows), cfg.batch_size):
        chunk = windows[b0:b0 + cfg.batch_size]
        arrays, scale = window_arrays(prepared, chunk, L)
        B = len(chunk)
        with torch.inference_mode():  # no autograd bookkeeping at all (cheaper than no_grad)
            out = model.forward_batch({k: torch.from_numpy(v).to(device) for k, v in arrays.items()})
        mean = out["reconstructed"].double().cpu().numpy().reshape(B, L)
        var, dof = (calibrated_prediction(model, np.exp(out["log_var"].double().cpu().numpy().reshape(B, L)),
                                          arrays["hidden"], scale[:, 2:3] ** 2)  # e²: the window's median error
                    if "log_var" in out else (np.full((B, L), np.nan), None))
        # ±flux_err holds 68.27 % of the predictive distribution: σ for a Gaussian, the scale times
        # t_ν's half-width where the calibration chose Student-t tails (ν per position)
        h68 = np.ones((B, L)) if dof is None else half_width(CHECK_LEVELS[0], dof)
        for k, (c, s, e) in enumerate(chunk):
            p, n = prepared[c], e - s
            med, iqr, err = scale[k]
            mu = mean[k, :n] * iqr + med
            v = (var[k, :n] + err ** 2) * iqr ** 2  # an observation's variance, in input units
            w = weights[:n] if n == L else blend_weights(n)
            p["num"][s:e] += w * mu
            p["second"][s:e] += w * (v + mu * mu)
            p["den"][s:e] += w
            p["h2"][s:e] += w * h68[k, :n] ** 2
        if progress is not None:
            progress(B)
    results = []
    for p in prepared:
        f = p["filled"]
        mu = p["num"][f] / p["den"][f]
        var = p["second"][f] / p["den"][f] - mu * mu
        flux, err = p["flux"].copy(), p["err"].copy()
        flux[f], err[f] = mu, np.sqrt(np.maximum(var, 0.0) * p["h2"][f] / p["den"][f])  # blended half-width²
        results.append(CurveFill(time=p["time"], flux=flux, flux_err=err, filled=f,
                                 unfilled_gaps=p["n_gaps"], unfilled_points=p["n_dropped"]))
    return results


def fill_file(run_dir: str | Path, input: str | Path, output: str | Path, cfg: FillConfig | None = None, *,
              progress: Callable[[int], None] | None = None) -> dict:
    """Fill every curve of the raw file ``input`` with the run in ``run_dir`` and write ``output``
    (see the module docstring). Returns a summary dict."""
    from lcgen.io import read_raw
    from lcgen.models import get_spec
    from lcgen.train.trainer import load_run, resolve_device

    cfg = cfg or FillConfig()
    for name, value in (("forecast", cfg.forecast), ("max_gap", cfg.max_gap), ("cadence", cfg.cadence)):
        if value is not None and (not np.isfinite(value) or value < 0 or (name != "forecast" and value == 0)):
            raise LcgenError(f"{name} = {value} must be {'>= 0' if name == 'forecast' else '> 0'} days")
    if cfg.batch_size < 1:
        raise LcgenError(f"batch_size must be >= 1, got {cfg.batch_size}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LcgenError(f"run directory {run_dir} does not exist; train one with `lcgen train transformer`")
    model, tcfg = load_run(run_dir, which=cfg.checkpoint, device=resolve_device(cfg.device))
    if (spec := get_spec(tcfg.model_name)).data != "timeseries":
        raise LcgenError(f"{run_dir} is a {tcfg.model_name} run on {spec.data_words}; fill needs a time-series run "
                         f"(lcgen train transformer)")
    raw = read_raw(input)
    tick = _time.process_time()
    results = fill_curves(model, (raw.curve(i) for i in range(len(raw))), cfg, progress=progress)
    seconds = _time.process_time() - tick
    meta = {**raw.meta, "n_filled": np.array([int(r.filled.sum()) for r in results], np.int64)}
    config = {"fill": dataclasses.asdict(cfg), "run_dir": str(run_dir), "input": str(input),
              "train": {"model_name": tcfg.model_name, "preset": tcfg.preset, "loss": tcfg.loss}}
    written = write_filled(output, results, meta, config, cfg.format)
    n_filled = int(meta["n_filled"].sum())
    return {"output": str(written), "curves": len(results), "observed points": int(sum((~r.filled).sum() for r in results)),
            "filled points": n_filled, "gaps left unfilled (> max_gap or > half a window)": sum(r.unfilled_gaps for r in results),
            "grid points left unfilled": sum(r.unfilled_points for r in results),
            "has variance": bool(getattr(model.config, "variance_head", False)), "cpu seconds": seconds,
            "filled points / cpu s": n_filled / seconds if seconds > 0 else None}


def write_filled(output: str | Path, results: list[CurveFill], meta: dict, config: dict, fmt: str = "h5") -> Path:
    """Write filled curves as one raw-layout HDF5 file or a directory of per-curve CSV/FITS files."""
    from lcgen.io import RawWriter

    output = Path(output)
    names = [str(meta["target"][i]) if "target" in meta else f"curve_{i:05d}" for i in range(len(results))]
    if fmt == "h5":
        output.parent.mkdir(parents=True, exist_ok=True)
        with RawWriter(output, config) as w:
            w.append([r.time for r in results], [r.flux for r in results], [r.flux_err for r in results],
                     meta=meta)
            w.f.create_dataset("filled", data=np.concatenate([r.filled for r in results]) if results
                               else np.zeros(0, bool))
        return output
    if fmt not in ("csv", "fits"):
        raise LcgenError(f"unknown output format '{fmt}'; choose h5, csv or fits")
    output.mkdir(parents=True, exist_ok=True)
    from lcgen.io import atomic_path

    for name, r in zip(names, results):
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        path = output / f"{safe}.{fmt}"
        with atomic_path(path) as tmp:
            if fmt == "csv":
                table = np.column_stack([r.time, r.flux, r.flux_err, r.filled.astype(int)])
                np.savetxt(tmp, table, delimiter=",", header="time,flux,flux_err,filled", comments="",
                           fmt=["%.10f", "%.8g", "%.8g", "%d"])
            else:
                _write_fits(tmp, r, name, config)
    return output


def _write_fits(path: Path, r: CurveFill, name: str, config: dict) -> None:
    from astropy.io import fits

    cols = [fits.Column(name="TIME", format="D", unit="d", array=r.time),
            fits.Column(name="FLUX", format="E", array=r.flux),
            fits.Column(name="FLUX_ERR", format="E", array=r.flux_err),
            fits.Column(name="FILLED", format="L", array=r.filled)]
    table = fits.BinTableHDU.from_columns(cols, name="LIGHTCURVE")
    primary = fits.PrimaryHDU()
    primary.header["OBJECT"] = name
    primary.header["CREATOR"] = "lcgen fill"
    primary.header["RUNDIR"] = config["run_dir"][-60:]
    table.header["NFILLED"] = (int(r.filled.sum()), "points predicted by lcgen fill")
    fits.HDUList([primary, table]).writeto(path, overwrite=True)
