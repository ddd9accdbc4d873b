"""Gaussian-process baseline (celerite2): fitted on each window's visible points.

The kernel is a stochastic harmonic oscillator (Foreman-Mackey et al. 2017, celerite) plus a
jitter term,

    k(τ) = SHO(τ; σ, ρ, Q) + (e_i² + s²) δ_ij,

with ``e_i`` the points' own errors and ``s`` a fitted jitter: Q ≈ 1/√2 is a damped random walk
with an extra smoothness, large Q a quasi-periodic oscillation of period ρ, so one kernel covers
the mock types (sinusoids, DRW, QPO) and real rotators. The four parameters (log σ, log ρ, log Q,
log s) are fitted by maximum likelihood (L-BFGS-B with bounds, a fixed iteration cap) on the
visible points with a constant mean (their median), and the GP's conditional mean and variance
give the prediction at the hidden positions. The predictive variance returned is that of the
signal, σ²_f(t*); add the points' own ``flux_err``² (as :mod:`lcgen.evaluate.scoring` does) for the
distribution of an observation. Cost: one fit is ~40–150 likelihood evaluations, O(N) each.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import minimize

# bounds of log Q: from overdamped (0.1) to a near-coherent oscillation (100)
LOG_Q_BOUNDS = (np.log(0.1), np.log(100.0))


def _likelihood(params: np.ndarray, t: np.ndarray, y: np.ndarray, e2: np.ndarray, gp, term_cls) -> float:
    log_sigma, log_rho, log_q, log_s = params
    gp.kernel = term_cls(sigma=np.exp(log_sigma), rho=np.exp(log_rho), Q=np.exp(log_q))
    try:
        gp.compute(t, diag=e2 + np.exp(2 * log_s), quiet=True)
        value = gp.log_likelihood(y)
    except Exception:  # a numerically invalid point of the search: steer away from it
        return 1e25
    return -value if np.isfinite(value) else 1e25


def gp_predict(t: np.ndarray, y: np.ndarray, yerr: np.ndarray, t_pred: np.ndarray, *,
               max_iter: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Fit the SHO + jitter GP to (t, y, yerr) and predict at ``t_pred``.

    ``t`` increasing (days), ``y``, ``yerr`` the same length (at least 3 points). Returns the
    conditional mean and the variance of the signal at ``t_pred``, each float64 of its length.
    """
    import celerite2
    from celerite2 import terms

    t, y, t_pred = (np.asarray(a, np.float64) for a in (t, y, t_pred))
    e2 = np.asarray(yerr, np.float64) ** 2
    mean = float(np.median(y))
    r = y - mean
    std = float(np.std(r)) or 1.0
    span = float(t[-1] - t[0]) or 1.0
    step = float(np.min(np.diff(t))) if t.size > 1 else 1.0
    step = step if step > 0 else span / max(t.size, 1)
    bounds = [(np.log(1e-3 * std), np.log(10 * std)), (np.log(step), np.log(10 * span)), LOG_Q_BOUNDS,
              (np.log(1e-4 * std), np.log(2 * std))]
    start = np.array([np.log(std), np.log(span / 5), 0.0, np.log(0.1 * std)])
    start = np.clip(start, [b[0] for b in bounds], [b[1] for b in bounds])
    gp = celerite2.GaussianProcess(terms.SHOTerm(sigma=1.0, rho=1.0, Q=1.0), mean=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = minimize(_likelihood, start, args=(t, r, e2, gp, terms.SHOTerm), method="L-BFGS-B",
                       bounds=bounds, options={"maxiter": max_iter})
    params = fit.x if np.isfinite(fit.fun) and fit.fun < 1e25 else start
    _likelihood(params, t, r, e2, gp, terms.SHOTerm)  # condition on the chosen parameters
    mu, var = gp.predict(r, t=t_pred, return_var=True)
    return mu + mean, np.maximum(var, 0.0)


def gp_baseline(values: np.ndarray, valid: np.ndarray, hidden: np.ndarray, time: np.ndarray,
                flux_err: np.ndarray | None = None, *, max_iter: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """The GP baseline on a batch: (mean, variance), each (B, L) float64.

    Each row's GP is fitted on its visible real points (valid & ~hidden) and predicts every
    position; visible positions keep their own value with variance 0 (the baselines'
    convention: what is seen is not predicted). Rows with fewer than 3 visible points fall back
    to their visible mean with the visible values' variance.
    """
    values, valid, hidden, time = (np.atleast_2d(np.asarray(a)) for a in (values, valid, hidden, time))
    valid, hidden = valid.astype(bool), hidden.astype(bool)
    err = np.zeros(values.shape) if flux_err is None else np.atleast_2d(np.asarray(flux_err, np.float64))
    mean = np.zeros(values.shape, np.float64)
    var = np.zeros(values.shape, np.float64)
    for i in range(values.shape[0]):
        seen = valid[i] & ~hidden[i]
        want = valid[i] & hidden[i]
        mean[i, seen] = values[i, seen]
        if not want.any():
            continue
        if seen.sum() < 3:
            v = values[i, seen].astype(np.float64)
            mean[i, want] = v.mean() if v.size else 0.0
            var[i, want] = v.var() if v.size > 1 else 1.0
            continue
        mean[i, want], var[i, want] = gp_predict(time[i, seen], values[i, seen], err[i, seen],
                                                 time[i, want], max_iter=max_iter)
    return mean, var
