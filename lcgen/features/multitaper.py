"""Multitaper spectra of irregularly sampled light curves (mtNUFFT) and a window-corrected ACF.

The method is Thomson's (1982) multitaper estimate carried to irregular sampling by Patil, Eadie,
Speagle & Thomson (2024, AJ, arXiv:2209.15027; harmonic F-test arXiv:2405.18509), as implemented
in their package ``tapify``. This module reimplements it on scipy and finufft (double precision,
all tapers in one NUFFT call). On exactly regular data the tapers, PSD and F-test are tapify's
(to rounding); where tapify is wrong, this module differs on purpose (see ``shared/MULTITAPER.md``):

- tapers orthonormal on the actual samples (:func:`taper_times`): the spline-interpolated DPSS
  lose orthogonality and unit energy across gaps and uneven cadence, which made the F-test's
  false-alarm rate 2–42 % instead of 1 % and the white-noise PSD 1.2–1.7× too high on seasonal
  curves. The fix is Löwdin's symmetric orthonormalisation of the interpolated tapers on the
  samples: the cheap relative of solving for the tapers on the actual times (Bronez 1988;
  Chave 2019). On near-regular data it changes tapify's numbers by ~1e−4 (TESS-like jitter);
  on strongly uneven sampling by up to ~10 % in the PSD, which is the point;
- the F-test uses the DC values of the tapers actually applied, and near a mirror frequency
  (f < 1.5W, or within 1.5W of the Nyquist frequency of regular data), where a real sinusoid's
  image leaks into the tapers, an exact generalised-least-squares form (:func:`mirror_fstat`),
  so the null law F(2, 2K − 2) holds from f = 1/T up;
- regular data: tapify labels FFT bins with spacing T/N although samples are T/(N−1) apart; here
  the eigencoefficients are always transforms at the *actual* times, so frequencies are physical;
- adaptive weighting iterates until every bin has converged, with a scale-free criterion;
- spectra for a grid shared by many curves are computed on a lattice fine enough for each curve
  and aggregated into the shared bins (:func:`binned_multitaper`), the F-test with a p-value
  corrected for the frequencies tried in a bin.

Notation: data (t_n, x_n), n = 0..N−1, sorted; T = t_{N−1} − t_0; mean cadence Δt = T/N
(tapify's convention; T/(N−1) for exactly regular data); NW the time-bandwidth product; K the
number of tapers (default 2NW − 1); W = NW/(N Δt) the half-bandwidth. Frequencies are in cycles
per unit of t.

References
----------
Thomson, D. J. 1982, Proc. IEEE 70, 1055, "Spectrum estimation and harmonic analysis".
Percival, D. B. & Walden, A. T. 1993, *Spectral Analysis for Physical Applications*, CUP, ch. 7
(adaptive weighting §7.4, harmonic F-test §10.11).
Patil, A. A., Eadie, G. M., Speagle, J. S. & Thomson, D. J. 2024, AJ (mtNUFFT), arXiv:2209.15027.
Bronez, T. P. 1988, IEEE Trans. ASSP 36, 1862, "Spectral estimation of irregularly sampled
multidimensional processes by generalized prolate spheroidal sequences".
Chave, A. D. 2019, Geophys. J. Int. 218, 2165, "A multitaper spectral estimator for time-series
with missing data".
Löwdin, P.-O. 1950, J. Chem. Phys. 18, 365 (symmetric orthonormalisation); Carlson, B. C. &
Keller, J. M. 1957, Phys. Rev. 105, 102 (its least-squares optimality).
Horne, J. H. & Baliunas, S. L. 1986, ApJ 302, 757 (effective number of independent frequencies).
Edelson, R. A. & Krolik, J. H. 1988, ApJ 333, 646 (discrete correlation function);
Welsh, W. F. 1999, PASP 111, 1347 (locally normalised DCF);
Rehfeld, K. et al. 2011, Nonlin. Processes Geophys. 18, 389 (Gaussian-kernel ACF).
"""

from __future__ import annotations

import dataclasses
import functools
from collections import OrderedDict
from collections.abc import Callable

import finufft
import numpy as np

from lcgen.errors import LcgenError

EPS = 1e-9  # NUFFT precision; single precision gave 2.5% PSD / 78% F errors at N = 20k
REGULAR_RTOL = 1e-10  # tapify's test for "all spacings equal"
MIRROR_ZONE = 1.5  # the exact mirror F-test is used within this many half-bandwidths W of a mirror


@dataclasses.dataclass(frozen=True)
class Tapers:
    """DPSS tapers as applied to one set of sample times.

    ``applied`` (K, N) are orthonormal on the samples up to the factor Δt:
    Σ_n a_j(t_n) a_k(t_n) = Δt δ_jk (see :func:`taper_times`); ``dc[k] = Σ_n applied[k, n]`` is
    the U_k of the F-test.
    """

    applied: np.ndarray  # (K, N)
    eigvals: np.ndarray  # (K,) concentration ratios λ_k
    dc: np.ndarray  # (K,)
    dt: float  # mean cadence used for the normalisation and the default grid
    regular: bool  # all spacings equal to REGULAR_RTOL (no spline needed)


@dataclasses.dataclass(frozen=True)
class MultitaperResult:
    """Output of :func:`multitaper`; arrays are (F,) over the frequency grid ``freq``."""

    freq: np.ndarray  # cycles per unit of t
    psd: np.ndarray  # two-sided density: white noise of variance σ² gives ≈ σ² Δt
    fstat: np.ndarray | None  # harmonic F-statistic, ~ F(2, 2K−2) where there is no line
    pvalue: np.ndarray | None  # P(F' > F) under no line
    amplitude: np.ndarray | None  # complex line amplitude μ(f); a sinusoid A cos(2πf₀t+φ) has |μ(f₀)| ≈ A/2
    n_iter: int  # adaptive-weighting iterations (0 when not adaptive)


# --------------------------------------------------------------------------------------------
# Input checks


def check_series(t, y, nw: float = 4.0, k: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate (t, y) and (NW, K); return float64 copies and K (default 2NW − 1).

    Raises :class:`LcgenError` for non-1-D or mismatched inputs, non-finite values, unsorted or
    duplicate times, NW < 0.5, K outside [1, 2NW], or fewer than max(9, 4·NW) points (the
    half-bandwidth W = NW/N must stay at most 1/4 cycle per sample for the tapers to concentrate).
    """
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if t.ndim != 1 or y.ndim != 1 or t.shape != y.shape:
        raise LcgenError(f"t and y must be 1-D arrays of equal length, got shapes {t.shape} and {y.shape}")
    nw = float(nw)
    if not np.isfinite(nw) or nw < 0.5:
        raise LcgenError(f"nw = {nw} is too small; the time-bandwidth product NW must be at least 0.5 (4 is usual)")
    if k is None:
        k = default_k(nw)
    if isinstance(k, (bool, np.bool_)) or int(k) != k:
        raise LcgenError(f"k = {k!r} must be a whole number of tapers")
    k = int(k)
    if k < 1 or k > 2 * nw:
        raise LcgenError(f"k = {k} tapers is outside [1, 2·NW = {2 * nw:g}]; tapers beyond 2NW leak; use k ≤ {int(2 * nw)}")
    n_min = max(9, int(np.ceil(4 * nw)))
    if t.size < n_min:
        raise LcgenError(f"{t.size} points are too few for NW = {nw:g}: need at least {n_min} "
                         f"(max(9, 4·NW)); lower nw or give a longer series")
    bad = ~(np.isfinite(t) & np.isfinite(y))
    if bad.any():
        raise LcgenError(f"{int(bad.sum())} non-finite time or flux values (first at index {int(np.argmax(bad))}); "
                         f"drop them first")
    dt = np.diff(t)
    if np.any(dt < 0):
        raise LcgenError(f"times are not sorted (first decrease at index {int(np.argmax(dt < 0)) + 1}); sort t and y together")
    if np.any(dt == 0):
        raise LcgenError(f"{int(np.sum(dt == 0))} duplicate times (first at index {int(np.argmax(dt == 0)) + 1}); "
                         f"merge points that share a time")
    return t, y, k


def default_k(nw: float) -> int:
    """The number of tapers when none is given: 2NW − 1 (at least 1)."""
    return max(1, int(round(2 * float(nw))) - 1)


def check_grid(freq, name: str = "freq") -> np.ndarray:
    """A non-empty, finite, 1-D float64 grid."""
    freq = np.asarray(freq, dtype=np.float64)
    if freq.ndim != 1 or freq.size == 0:
        raise LcgenError(f"{name} must be a non-empty 1-D array, got shape {freq.shape}")
    if not np.all(np.isfinite(freq)):
        raise LcgenError(f"{name} has non-finite values; give finite values")
    return freq


# --------------------------------------------------------------------------------------------
# Tapers


def is_regular(t: np.ndarray) -> bool:
    """True when every spacing equals the first to ``REGULAR_RTOL`` (tapify's ``math.isclose``)."""
    dt = np.diff(t)
    return bool(np.all(np.abs(dt - dt[0]) <= REGULAR_RTOL * np.maximum(np.abs(dt), abs(dt[0]))))


DPSS_CACHE_BYTES = 64 * 2 ** 20  # per process and cache; survey curves repeat a few hundred lengths


class _BoundedCache:
    """The most recently used values by key, up to ``DPSS_CACHE_BYTES`` of ``size(value)`` (the
    newest is always kept). ``nbytes`` is a running total: summing a few hundred entries on every
    miss cost ~0.1 ms."""

    def __init__(self, size: Callable[[object], int]):
        self.entries: OrderedDict = OrderedDict()
        self.size = size
        self.nbytes = 0

    def get(self, key):
        hit = self.entries.get(key)
        if hit is not None:
            self.entries.move_to_end(key)
        return hit

    def put(self, key, value):
        self.entries[key] = value
        self.nbytes += self.size(value)
        while self.nbytes > DPSS_CACHE_BYTES and len(self.entries) > 1:
            self.nbytes -= self.size(self.entries.popitem(last=False)[1])
        return value

    def clear(self) -> None:
        self.entries.clear()
        self.nbytes = 0


_DPSS_CACHE = _BoundedCache(lambda entry: entry[0].nbytes)  # (n, NW, K) -> (tapers, λ)
DPSS_BUCKET = 64  # irregular data interpolate DPSS built for N rounded up to a multiple of this


def _refines(n: int) -> bool:
    """Whether the DPSS of a regular length ``n`` start from its bucket's spline
    (:func:`_dpss_refined`): N ≥ ``REFINE_MIN`` and not itself a multiple of the bucket."""
    return n >= REFINE_MIN and taper_bucket(n) != n


def taper_bucket(n: int) -> int:
    """``n`` rounded up to a multiple of ``DPSS_BUCKET``: the DPSS length whose spline gives the
    tapers of an irregular curve of ``n`` samples (:func:`taper_times`)."""
    return -(-int(n) // DPSS_BUCKET) * DPSS_BUCKET


def dpss_tapers(n: int, nw: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-energy DPSS v_k[m] (K, n) and concentration ratios λ_k (K,), cached by (n, NW, K).

    Building them is about half the cost of a spectrum, and survey curves repeat lengths. The
    cache keeps the most recently used tapers up to ``DPSS_CACHE_BYTES`` per process; the arrays
    are read-only. Computed by :func:`_dpss` (the numbers of ``scipy.signal.windows.dpss``).
    """
    key = (int(n), float(nw), int(k))
    hit = _DPSS_CACHE.get(key)
    if hit is not None:
        return hit
    v, lam = _dpss(*key)
    v.setflags(write=False)
    lam.setflags(write=False)
    return _DPSS_CACHE.put(key, (v, lam))


def _dpss(n: int, nw: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first K discrete prolate spheroidal sequences of length N and half-bandwidth
    W = NW/N (Slepian 1978; Percival & Walden 1993 §8.3), as (K, N) unit-energy rows and their
    concentration ratios λ_k (K,).

    v_k are the eigenvectors of the K largest eigenvalues of the symmetric tridiagonal matrix
    that commutes with the concentration operator (P&W eq. 378):

        diagonal ((N − 1 − 2j)/2)² cos(2πW), j = 0..N−1;   off-diagonal j(N − j)/2, j = 1..N−1,

    signed as P&W p. 379: symmetric tapers (even k) sum to a positive value, antisymmetric
    ones begin with a positive lobe (their first sample above the numerical noise,
    v² > max(1e−7, 1/N), is positive). λ_k = Σ_{j,l} v_j v_l sin(2πW(j − l))/(π(j − l)), with
    2W at j = l, from the taper's autocorrelation. scipy.signal.windows.dpss follows the same
    definitions (the tests check the two agree); this avoids importing scipy.signal, ~0.5 CPU-s
    in every worker process.
    """
    j = np.arange(n, dtype=np.float64)
    w = nw / n
    diag = ((n - 1 - 2 * j) / 2.0) ** 2 * np.cos(2 * np.pi * w)
    off = j[1:] * (n - j[1:]) / 2.0
    v = _dpss_refined(n, nw, k, diag, off)
    if v is None:
        from scipy.linalg import eigh_tridiagonal  # imported where used: workers start faster

        _, vec = eigh_tridiagonal(diag, off, select="i", select_range=(n - k, n - 1))  # ascending
        v = np.ascontiguousarray(vec[:, ::-1].T)  # (K, N), the best concentrated first
    v[0::2] *= np.where(v[0::2].sum(axis=1) < 0, -1.0, 1.0)[:, None]
    noise = max(1e-7, 1.0 / n)
    for row in v[1::2]:
        if row[np.argmax(row * row > noise)] < 0:
            row *= -1.0
    size = 1 << int(2 * n - 1).bit_length()  # ≥ 2N − 1: no circular wrap in the autocorrelation
    spec = np.fft.rfft(v, size, axis=1)
    acorr = np.fft.irfft(spec.real ** 2 + spec.imag ** 2, size, axis=1)[:, :n]  # (K, N): lags 0..N−1
    lag = np.arange(1, n)
    lam = 2 * w * acorr[:, 0] + 2 * acorr[:, 1:] @ (np.sin(2 * np.pi * w * lag) / (np.pi * lag))
    return v, lam


REFINE_MIN = 128  # shorter DPSS are computed directly (the bucket's spline is then a poor start)


def _dpss_refined(n: int, nw: float, k: int, diag: np.ndarray, off: np.ndarray) -> np.ndarray | None:
    """The K leading eigenvectors of the DPSS tridiagonal matrix (diagonal ``diag``, off-diagonal
    ``off``) by Rayleigh-quotient iteration, or None where the direct solver must be used.

    The start is the DPSS of the bucket length M = N rounded up to a multiple of ``DPSS_BUCKET``
    (computed directly and cached; the same M whose spline gives the tapers of irregular data),
    interpolated to N points by its spline: the tapers are sampled functions of the scaled time
    that change little with N (the start is within 1e−2 of the taper at N = 131, 4e−4 at 614,
    1e−5 at 5,001, relative to its peak). Two steps x ← (T − μI)⁻¹x / ‖·‖, μ = xᵀTx, each an
    O(N) tridiagonal solve, converge cubically to the eigenvector (Parlett 1998, *The Symmetric
    Eigenvalue Problem*, §4.6): within 1e−12 of LAPACK's (relative to the taper's peak) up to
    N ≈ 1,500 and 9e−12 at 5,001 (the tests compare with scipy), in about half the CPU time of
    the bisection and inverse iteration of ``eigh_tridiagonal`` (0.7–1.2 against 2.0–2.2 ms at
    N ≈ 600 on a loaded machine, λ_k not included). The start depends only on N, so the result
    is the same in every process. Returns None (the caller solves directly) for
    N < ``REFINE_MIN``, for N a multiple of the bucket, or if any eigenpair fails its checks
    (residual, order, overlap with the start).
    """
    if not _refines(n):
        return None
    m = taper_bucket(n)
    from scipy.linalg.lapack import dgtsv

    start = dpss_spline(m, nw, k)(np.linspace(0.0, 1.0, n))  # (K, N)
    x = start / np.sqrt(np.einsum("kn,kn->k", start, start))[:, None]
    scale = float(np.max(np.abs(diag)) + 2 * np.max(off))  # ≥ ‖T‖
    for _ in range(2):
        mu = np.einsum("kn,kn->k", x, _tridiagonal_times(diag, off, x))
        for i in range(k):
            x[i], info = dgtsv(off, diag - mu[i], off, x[i])[3:]  # a NaN fails the residual check below
            if info != 0:
                return None
        x /= np.sqrt(np.einsum("kn,kn->k", x, x))[:, None]
    tx = _tridiagonal_times(diag, off, x)
    mu = np.einsum("kn,kn->k", x, tx)
    resid = np.sqrt(np.einsum("kn,kn->k", tx - mu[:, None] * x, tx - mu[:, None] * x))
    overlap = np.einsum("kn,kn->k", x, start) / np.sqrt(np.einsum("kn,kn->k", start, start))
    if not (np.all(resid <= 1e-12 * scale) and np.all(np.diff(mu) < 0) and np.all(np.abs(overlap) > 0.9)):
        return None
    return x * np.sign(overlap)[:, None]


def _tridiagonal_times(diag: np.ndarray, off: np.ndarray, x: np.ndarray) -> np.ndarray:
    """T xᵀ for the rows of ``x`` (K, N), T symmetric tridiagonal (diagonal ``diag``, off-diagonal
    ``off``): (K, N)."""
    tx = diag * x
    tx[:, :-1] += off * x[:, 1:]
    tx[:, 1:] += off * x[:, :-1]
    return tx


@dataclasses.dataclass(frozen=True)
class TaperSpline:
    """Cubic not-a-knot interpolants of K sequences sampled at u_j = j/(m − 1), j = 0..m−1.

    On [u_j, u_{j+1}], with s = (m − 1)u − j:
    S(u) = (1 − s) v_j + s v_{j+1} + [((1 − s)³ − (1 − s)) c_j + (s³ − s) c_{j+1}] / 6,
    c_j the second derivatives times the spacing squared (Press et al., Numerical Recipes §3.3).
    """

    values: np.ndarray  # (K, m)
    curvature: np.ndarray  # (K, m): c_j

    def __call__(self, u: np.ndarray) -> np.ndarray:
        """The K interpolants at ``u`` (N,) in [0, 1]: (K, N)."""
        m = self.values.shape[1]
        x = np.asarray(u, dtype=np.float64) * (m - 1)
        j = np.minimum(x.astype(np.intp), m - 2)  # floor for x ≥ 0
        s = x - j
        r = 1.0 - s
        v, c = self.values, self.curvature
        return r * v[:, j] + s * v[:, j + 1] + ((r * r - 1.0) * r * c[:, j] + (s * s - 1.0) * s * c[:, j + 1]) / 6.0


def _not_a_knot(values: np.ndarray) -> TaperSpline:
    """Fit :class:`TaperSpline` to ``values`` (K, m), m ≥ 4: the usual equations
    c_{j−1} + 4c_j + c_{j+1} = 6(v_{j+1} − 2v_j + v_{j−1}) for j = 1..m−2, closed by a continuous
    third derivative at u_1 and u_{m−2} (c_0 − 2c_1 + c_2 = 0, likewise at the end), which give
    6c_1 = r_1 and 6c_{m−2} = r_{m−2}; the rest is a (1, 4, 1) tridiagonal system. The same
    function as ``scipy.interpolate.make_interp_spline(u, v, k=3)``."""
    from scipy.linalg import solve_banded

    k, m = values.shape
    if m < 4:
        raise LcgenError(f"a not-a-knot cubic spline needs at least 4 points, got {m}")
    r = 6.0 * (values[:, 2:] - 2.0 * values[:, 1:-1] + values[:, :-2])  # (K, m − 2): r_1..r_{m−2}
    c = np.zeros((k, m))
    c[:, 1], c[:, m - 2] = r[:, 0] / 6.0, r[:, -1] / 6.0
    if m > 4:
        rhs = r[:, 1:-1].copy()  # r_2..r_{m−3}
        rhs[:, 0] -= c[:, 1]
        rhs[:, -1] -= c[:, m - 2]
        bands = np.array([[0.0] + [1.0] * (m - 5), [4.0] * (m - 4), [1.0] * (m - 5) + [0.0]])
        c[:, 2:m - 2] = solve_banded((1, 1), bands, rhs.T).T
    c[:, 0] = 2.0 * c[:, 1] - c[:, 2]
    c[:, m - 1] = 2.0 * c[:, m - 2] - c[:, m - 3]
    return TaperSpline(values=values, curvature=c)


_SPLINE_CACHE = _BoundedCache(lambda spline: spline.curvature.nbytes)  # (m, NW, K) -> TaperSpline


def dpss_spline(m: int, nw: float, k: int) -> TaperSpline:
    """The cubic not-a-knot spline through the DPSS v_k[j] (:func:`dpss_tapers` of length m) at
    u_j = j/(m − 1) on [0, 1]: the interpolating function of every curve whose tapers are built
    from length m, in the time coordinate u = (t − t_0)/(t_{N−1} − t_0). Cached like the DPSS
    (same byte bound), so a curve pays only for evaluating it."""
    key = (int(m), float(nw), int(k))
    hit = _SPLINE_CACHE.get(key)
    if hit is not None:
        return hit
    return _SPLINE_CACHE.put(key, _not_a_knot(dpss_tapers(*key)[0]))


def clear_dpss_cache() -> None:
    """Forget all cached tapers and their splines (for benchmarks of the uncached path)."""
    _DPSS_CACHE.clear()
    _SPLINE_CACHE.clear()


def taper_cache_keys(n: int, regular: bool) -> list[tuple[int, bool]]:
    """What :func:`taper_times` takes from the caches for a curve of ``n`` samples, as (length,
    regular) pairs for :func:`warm_taper_caches`: a regular curve the DPSS of length N (refined
    from its bucket's spline, :func:`_dpss_refined`, when that applies), an irregular one its
    bucket's DPSS and spline."""
    m = taper_bucket(n)
    if not regular:
        return [(m, False)]
    return [(int(n), True)] + ([(m, False)] if _refines(n) else [])


def warm_taper_caches(keys, nw: float, k: int | None = None) -> None:
    """Build the cached tapers of ``keys`` (:func:`taper_cache_keys`): the DPSS of each regular
    length, the DPSS and spline of each irregular (bucket) length. ``k`` defaults as in
    :func:`check_series`. For a process about to fork workers: they inherit the cached arrays
    (copy-on-write, never written) instead of each building its own (~0.75 ms a length on the
    project's machine). Only the caches change; the tapers are the same whoever builds them."""
    nw, k = float(nw), default_k(nw) if k is None else int(k)
    for n, regular in keys:
        if regular:
            dpss_tapers(n, nw, k)
        else:
            dpss_spline(n, nw, k)  # builds the DPSS too


_PLANS: "OrderedDict[tuple, finufft.Plan]" = OrderedDict()
PLAN_MODES = 64  # type-1/2 mode counts are rounded up to a multiple of this (and to 8 sizes per octave), so plans repeat
PLAN_CACHE_BYTES = 64 * 2 ** 20  # per process


def _nufft(kind: int, x: np.ndarray, data: np.ndarray, n_modes: int, isign: int, eps: float,
           upsampfac: float | None = None) -> np.ndarray:
    """A type-1 (``data`` = strengths (T, N) → modes (T, n_modes)) or type-2 (``data`` = modes
    (T, n_modes) → values (T, N)) NUFFT with a cached finufft plan (single-threaded). A fresh
    plan costs ~0.35 ms of setup, as much as a whole small transform; callers round ``n_modes``
    up (:func:`_round_modes`) so that curves of similar size share plans."""
    data = np.ascontiguousarray(data, dtype=np.complex128)
    key = (kind, int(n_modes), data.shape[0], isign, eps, upsampfac)
    plan = _PLANS.get(key)
    if plan is None:
        extra = {} if upsampfac is None else {"upsampfac": upsampfac}
        plan = finufft.Plan(kind, (int(n_modes),), n_trans=data.shape[0], eps=eps, isign=isign, nthreads=1, **extra)
        _PLANS[key] = plan
        # a plan holds about its upsampled grid, 2 · modes · transforms complex values
        while len(_PLANS) > 1 and sum(32 * k[1] * k[2] for k in _PLANS) > PLAN_CACHE_BYTES:
            _PLANS.popitem(last=False)
    else:
        _PLANS.move_to_end(key)
    x = np.ascontiguousarray(x, dtype=np.float64)
    inner = getattr(plan, "_inner_plan", None)
    if _FINUFFT_C is not None and inner is not None:
        setpts, execute = _FINUFFT_C
        out = np.empty((data.shape[0], int(n_modes) if kind == 1 else x.size), dtype=np.complex128)
        if setpts(inner, x.size, x.ctypes.data, None, None, 0, None, None, None) == 0:
            c, f = (data, out) if kind == 1 else (out, data)  # finufft_execute(plan, nonuniform values, modes)
            if execute(inner, c.ctypes.data, f.ctypes.data) == 0:
                return out
        # a non-zero code (an error or a warning): the Python interface below reports it
    plan.setpts(x)
    return plan.execute(data).reshape(data.shape[0], -1)


def _finufft_c() -> tuple | None:
    """finufft's C ``setpts`` and ``execute`` (double precision) called directly by ctypes, or None
    where this finufft's Python package does not expose them as expected (then its interface is
    used). The interface checks and converts every argument on every call, ~80 µs a pair on a
    busy core, against ~25 µs for the call itself: most of a small transform's cost, and a
    curve makes about five."""
    import ctypes

    try:
        from finufft import _finufft

        vp, ll = ctypes.c_void_p, ctypes.c_longlong
        setpts = ctypes.cast(_finufft.lib.finufft_setpts, ctypes.CFUNCTYPE(ctypes.c_int, vp, ll, vp, vp, vp, ll, vp, vp, vp))
        execute = ctypes.cast(_finufft.lib.finufft_execute, ctypes.CFUNCTYPE(ctypes.c_int, vp, vp, vp))
    except (ImportError, AttributeError):
        return None
    return setpts, execute


_FINUFFT_C = _finufft_c()


def _round_modes(m: int) -> int:
    """``m`` rounded up to a multiple of ``PLAN_MODES`` and of 2^(⌊log2 m⌋ − 3): at most 8 sizes
    per octave (≤ 12.5 % spare modes), so that curves of different lengths share finufft plans
    (a new plan costs as much as several transforms)."""
    m = max(int(m), 1)
    step = max(PLAN_MODES, 1 << max(m.bit_length() - 4, 0))
    return -(-m // step) * step


def taper_times(t: np.ndarray, nw: float, k: int, *, regular: bool | None = None) -> Tapers:
    """DPSS tapers on irregular times, orthonormal on the actual samples.

    1. v_k = DPSS(M, NW, K) on the regular grid τ_m = linspace(t_0, t_{N−1}, M) (Patil et al.
       2024 take M = N; here M is N rounded up to a multiple of ``DPSS_BUCKET`` so that the
       costly DPSS are shared by curves of similar length; regular data use M = N exactly);
    2. h_k(t_n) = cubic not-a-knot spline through (τ_m, v_k[m]) at t_n (skipped when regular;
       built once per M in the scaled time (t − t_0)/T, :func:`dpss_spline`);
    3. applied tapers a = sqrt(Δt) · G^{−1/2} h with G = h hᵀ (K × K) the tapers' Gram matrix on
       the samples (Löwdin's symmetric orthonormalisation), so Σ_n a_j(t_n) a_k(t_n) = Δt δ_jk;
       U_k = Σ_n a_k(t_n).

    Why step 3: under white noise of variance σ² the eigencoefficients Y_k(f) have covariance
    σ² Σ_n a_j a_k, so the harmonic F-test follows F(2, 2K − 2) and the PSD level is σ² Δt only
    when the applied tapers are orthonormal on the samples that exist. Interpolated tapers are
    not once gaps or uneven cadence remove part of their support (tapify's normalisation
    h sqrt(Δt)/Σh² then also raises the PSD by 1/Σh², by up to 4× across seasonal gaps). Of all
    orthonormal sets spanning the interpolated tapers, Löwdin's is the one closest to them in
    least squares (Löwdin 1950; Carlson & Keller 1957), i.e. the smallest change that restores
    the properties the statistics rely on. It is the cheap relative of solving for the tapers on
    the actual times (Bronez 1988; Chave 2019), which costs O(N²)–O(N³) per curve; λ_k stay the
    regular-grid concentrations. On regular data G = I to rounding, so the tapers (and the
    numbers) are tapify's exactly.

    Δt = T/N (tapify's mean cadence); for exactly regular data Δt = T/(N−1), the true spacing.
    ``regular``: :func:`is_regular` of ``t`` when the caller knows it already.
    """
    n = t.size
    if regular is None:
        regular = is_regular(t)
    span = t[-1] - t[0]
    if regular:
        v, lam = dpss_tapers(n, float(nw), int(k))
        h = v
        dt = span / (n - 1)
    else:
        # The spline only needs the DPSS on some fine regular grid: build them for N rounded up to
        # a multiple of DPSS_BUCKET, so that curves of similar length share one (cached) set.
        m = taper_bucket(n)
        _, lam = dpss_tapers(m, float(nw), int(k))
        h = dpss_spline(m, float(nw), int(k))((t - t[0]) / span)  # (K, N), all tapers in one spline
        dt = span / n
    gram = np.einsum("jn,kn->jk", h, h)  # (K, K); einsum, not BLAS: same bits in every process
    w, q = np.linalg.eigh(gram)
    if not w[0] > 1e-10 * w[-1]:
        raise LcgenError(f"the sampling leaves the {k} tapers linearly dependent (Gram eigenvalues "
                         f"{w[0]:.2g} … {w[-1]:.2g}); use fewer tapers (smaller k or nw)")
    applied = np.einsum("jk,kn->jn", (q * (np.sqrt(dt) / np.sqrt(w))) @ q.T, h)  # (K, N) = √Δt G^{−1/2} h
    return Tapers(applied=applied, eigvals=np.array(lam), dc=applied.sum(axis=1), dt=dt, regular=regular)


def resolvable_band(t: np.ndarray, nw: float, *, regular: bool | None = None) -> tuple[float, float, float]:
    """(W, f_hi, f_N) for sorted times ``t``: the band [W, f_hi] that a multitaper estimate
    resolves without bias, and the Nyquist frequency f_N = 1/(2Δt) (Δt as in :func:`taper_times`:
    the mean cadence T/N, or the true spacing T/(N − 1) of exactly regular data).

    W = NW/(N Δt) is the half-bandwidth: below it the spectral windows at +f and −f overlap
    (white noise then reads ~12 % low and the F-test loses its F(2, 2K − 2) law). Irregular data
    have no exact alias, so f_hi = f_N; exactly regular data alias at f_N, and their band stops
    W below it, where the window meets its mirror image. ``regular``: :func:`is_regular` of ``t``
    when the caller knows it already."""
    n, span = t.size, float(t[-1] - t[0])
    if regular is None:
        regular = is_regular(t)
    dt = span / (n - 1) if regular else span / n
    w = nw / (n * dt)
    nyquist = 0.5 / dt
    return w, nyquist - w if regular else nyquist, nyquist


def default_frequencies(n: int, dt: float) -> np.ndarray:
    """tapify's default grid: N_pad = 2·2^⌈log2 N⌉, f_j = j / (N_pad Δt), j = 0 .. N_pad/2 − 1.

    It ends one bin below the mean-cadence Nyquist 1/(2Δt) and oversamples the Rayleigh
    resolution 1/T by N_pad/N ∈ (2, 4].
    """
    n_pad = 2 * 2 ** int(np.ceil(np.log2(n)))
    return np.arange(n_pad // 2) / (n_pad * dt)


# --------------------------------------------------------------------------------------------
# Eigencoefficients


def eigencoefficients(t, y, freq=None, *, nw: float = 4.0, k: int | None = None,
                      eps: float = EPS) -> tuple[np.ndarray, np.ndarray, Tapers]:
    """Tapered Fourier transforms Y_k(f) of the mean-removed data.

        c_k[n] = (x_n − x̄) · a_k(t_n),
        Y_k(f) = Σ_n c_k[n] · exp(+2πi f (t_n − t_c)),   t_c = (t_0 + t_{N−1}) / 2.

    The phase centre t_c cancels in |Y_k|² and in the F-test. With ``freq=None`` the grid is
    :func:`default_frequencies` and the sum is a type-1 NUFFT; any other grid is evaluated at
    exactly its frequencies (a type-1 NUFFT when it is evenly spaced, else type-3). All K tapers
    go through one finufft call
    (double precision, ``eps``, ``nthreads=1``: parallelise over curves with processes instead).

    Returns ``(freq (F,), Y (K, F) complex128, tapers)``.
    """
    t, y, k = check_series(t, y, nw, k)
    return _eigencoefficients(t, y, freq, nw, k, eps)


def _eigencoefficients(t: np.ndarray, y: np.ndarray, freq, nw: float, k: int, eps: float,
                       regular: bool | None = None) -> tuple[np.ndarray, np.ndarray, Tapers]:
    """:func:`eigencoefficients` of inputs already checked by :func:`check_series` (``regular`` as
    in :func:`taper_times`)."""
    tapers = taper_times(t, nw, k, regular=regular)
    c = (y - y.mean()) * tapers.applied  # (K, N)
    tc = 0.5 * (t[0] + t[-1])
    if freq is None:
        freq = default_frequencies(t.size, tapers.dt)
        m = freq.size  # even: N_pad / 2
        df = freq[1]
        x = 2 * np.pi * df * (t - tc)  # |x| ≤ π/2 because N_pad Δt ≥ 2T
        # finufft returns modes −m/2 .. m/2−1; shifting the strengths by exp(i m/2 x) turns them
        # into modes 0 .. m−1, the non-negative grid, at no extra cost.
        strengths = c * np.exp(1j * (m // 2) * x)
        coef = _nufft(1, x, strengths, m, 1, eps)
    else:
        freq = check_grid(freq)
        coef = _transform(t - tc, c, freq, eps)
    return freq, np.atleast_2d(coef), tapers


def _transform(x: np.ndarray, c: np.ndarray, freq: np.ndarray, eps: float) -> np.ndarray:
    """Σ_n c[:, n] exp(2πi f x_n) at ``freq``: a type-1 NUFFT when ``freq`` is an evenly spaced
    grid f_0 + j δ with δ · span(x) ≤ 1 (to 1e−10/span, far below the NUFFT precision), else a
    type-3 NUFFT at exactly those frequencies."""
    span = float(x[-1] - x[0])
    m = freq.size
    if m > 2:
        df = (freq[-1] - freq[0]) / (m - 1)
        if 0 < df * span <= 1 and np.max(np.abs(freq - (freq[0] + df * np.arange(m)))) * span <= 1e-10:
            phase = 2 * np.pi * df * x  # within ±π
            modes = _round_modes(m)  # a few spare frequencies beyond the grid, dropped: plans repeat
            strengths = c * np.exp(1j * (2 * np.pi * freq[0] * x + (modes // 2) * phase))  # modes 0..modes−1
            return _nufft(1, phase, np.atleast_2d(strengths), modes, 1, eps)[:, :m].reshape(*c.shape[:-1], m)
    return finufft.nufft1d3(x, c.astype(np.complex128), 2 * np.pi * freq, eps=eps, isign=1, nthreads=1)


def direct_eigencoefficients(t, y, freq, *, nw: float = 4.0, k: int | None = None) -> np.ndarray:
    """The O(N·F) direct sum of :func:`eigencoefficients`: the exact reference for tests."""
    t, y, k = check_series(t, y, nw, k)
    tapers = taper_times(t, nw, k)
    c = (y - y.mean()) * tapers.applied
    phase = np.exp(2j * np.pi * np.outer(t - 0.5 * (t[0] + t[-1]), np.asarray(freq, dtype=np.float64)))  # (N, F)
    return c @ phase


# --------------------------------------------------------------------------------------------
# PSD and F-test


def adaptive_psd(power: np.ndarray, eigvals: np.ndarray, *, variance: float | None = None,
                 n: int | None = None, tol: float = 1e-10, max_iter: int = 500) -> tuple[np.ndarray, int]:
    """Thomson's adaptively weighted multitaper PSD (Thomson 1982 §V; Percival & Walden §7.4).

    From S = (S_0 + S_1)/2, repeat:

        σ² = Σ_j S(f_j) / N          (tapify's estimate; or ``variance`` when given)
        B_k = (1 − λ_k) σ²            broad-band leakage
        d_k = S / (λ_k S + B_k)
        S ← Σ_k λ_k d_k² S_k / Σ_k λ_k d_k²

    until the relative change |ΔS|/S is below ``tol`` in EVERY bin. The map contracts (each bin's
    step shrinks by a roughly constant factor), so the distance to the fixed point is about the
    last step times a small factor: ~1e−9 at the default tol. (tapify stops when the 95th
    percentile of its residual is small, which left up to 1 % error in the remaining bins.) With
    ``variance`` given the bins are independent: once a bin's plain step is below 1 % of S it
    takes Newton steps on S − φ(S) = 0 (φ the map above, φ' from d_k' = B_k/(λ_k S + B_k)²; the
    plain step wherever φ' ≥ 1 or Newton's step would not stay positive). The map can have
    several fixed points, and Newton from afar was seen to jump to another one (1 bin in 1,000
    curves); from close in it converges quadratically to the plain iteration's own limit: 12
    iterations on average instead of 44 over 1,000 default mock curves (the plain map, contracting
    by up to ~0.99 per step, stopped unconverged at 500 in 2 of them). Only unconverged bins are
    iterated. With tapify's σ², which couples all bins, every bin takes the plain step.
    ``power`` is (K, F) eigenspectra |Y_k|²; ``eigvals`` (K,), or (K, F) with ``variance`` (F,) for the
    bins of several curves; returns (S, iterations).
    """
    k = power.shape[0]
    if k == 1:
        return power[0].copy(), 0
    lam = eigvals[:, None] if eigvals.ndim == 1 else eigvals  # (K, 1), or (K, F) for bins of several curves
    fallback = power.mean(axis=0)  # where every weight vanishes (S = 0)
    spec = 0.5 * (power[0] + power[1])
    if variance is not None:
        return _adaptive_newton(power, lam, variance, spec, fallback, tol, max_iter)
    it = 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for it in range(1, max_iter + 1):  # σ² couples the bins: every bin takes the plain step
            leak = (1.0 - lam) * (spec.sum() / n)  # (K, 1): B_k
            d = spec / (lam * spec + leak)  # (K, F)
            w = lam * d * d
            new = np.einsum("kf,kf->f", w, power) / w.sum(axis=0)  # φ(S)
            new = np.where(np.isfinite(new), new, fallback)
            moving = ~(np.abs(new - spec) <= tol * new)  # NaN-safe: a NaN change counts as moving
            spec = new
            if not moving.any():
                break
    return spec, it


def _adaptive_newton(power: np.ndarray, lam: np.ndarray, variance: float, spec: np.ndarray,
                     fallback: np.ndarray, tol: float, max_iter: int) -> tuple[np.ndarray, int]:
    """:func:`adaptive_psd` with a given σ² (independent bins) from the start ``spec`` (F,):
    plain steps, Newton steps once within 1 % of the fixed point; only moving bins are carried
    to the next iteration (their values compacted, written back to ``spec`` as they stop).

    The weights are taken in the form with fewest array passes: with r_k = B_k/λ_k and
    g_k = 1/(S + r_k), w_k = λ_k d_k² = S² g_k²/λ_k, and the common S² cancels in φ; likewise
    dw_k/dS = 2 S (g_k²/λ_k) r_k g_k, so φ' = (2/S) Σ_k (g_k²/λ_k) r_k g_k (P_k − φ) / Σ_k g_k²/λ_k.

    ``lam`` is (K, 1), or (K, F) and ``variance`` (F,) when the bins come from several curves
    (:func:`binned_multitaper_many`): every bin iterates on its own, so the numbers are the same."""
    ratio = (1.0 - lam) * variance / lam  # (K, 1) or (K, F): r_k = B_k/λ_k
    inv_lam = np.broadcast_to(1.0 / lam, ratio.shape)
    per_bin = ratio.shape[1] > 1
    idx, s, pw, fb = np.arange(spec.size), spec, power, fallback  # the moving bins
    it = 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for it in range(1, max_iter + 1):
            g = 1.0 / (s + ratio)  # (K, F_moving)
            wt = g * g
            wt *= inv_lam  # w_k / S²
            wsum = _sum_tapers(wt)
            new = _sum_tapers(wt * pw) / wsum  # φ(S)
            step = new - s
            near = np.abs(step) <= 1e-2 * s  # only close in: from afar Newton can jump to another fixed point
            n_near = np.count_nonzero(near)
            if n_near > s.size // 2:  # Newton: S − (φ − S)/(φ' − 1)
                g *= wt
                g *= ratio  # (w_k'/2S) · S²
                g *= pw - new
                slope = 2.0 * _sum_tapers(g) / (s * wsum)
                newton = s + step / (1.0 - slope)
                new = np.where(near & (slope < 1.0) & (newton > 0) & np.isfinite(newton), newton, new)
            elif n_near:  # the same on the near bins only (elementwise: the same numbers)
                j = np.flatnonzero(near)
                g = g.take(j, axis=1) * wt.take(j, axis=1)
                g *= ratio.take(j, axis=1) if per_bin else ratio
                g *= pw.take(j, axis=1) - new[j]
                slope = 2.0 * _sum_tapers(g) / (s[j] * wsum[j])
                newton = s[j] + step[j] / (1.0 - slope)
                take = (slope < 1.0) & (newton > 0) & np.isfinite(newton)
                new[j[take]] = newton[take]
            new = np.where(np.isfinite(new) & (s > 0), new, fb)  # every w_k = 0 at S = 0: the plain mean
            moving = ~(np.abs(new - s) <= tol * new)  # NaN-safe: a NaN change counts as moving
            if moving.all():
                s = new
                continue
            spec[idx] = new
            if not moving.any():
                break
            # compress, not pw[:, moving]: a boolean index along the last axis is ~3× slower
            idx, s, pw, fb = idx[moving], new[moving], pw.compress(moving, axis=1), fb[moving]
            if per_bin:
                ratio, inv_lam = ratio.compress(moving, axis=1), inv_lam.compress(moving, axis=1)
        else:
            spec[idx] = s
    return spec, it


def _sum_tapers(a: np.ndarray) -> np.ndarray:
    """Σ_k a[k] of a (K, F) array by K − 1 elementwise additions in order: each bin's rounding is
    then the same however many bins the array holds (numpy's reductions pick their summation
    order by the array's shape, so a bin's last digit could depend on the other curves of a batch
    of :func:`binned_multitaper_many`, or on how many bins are still iterating)."""
    out = a[0].copy()
    for row in a[1:]:
        out += row
    return out


def harmonic_fstat(coef: np.ndarray, dc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thomson's harmonic F-test for a line at each frequency (Thomson 1982 §XIII; P&W §10.11).

        μ(f) = Σ_k U_k Y_k(f) / Σ_k U_k²
        F(f) = (K − 1) |μ|² Σ_k U_k² / Σ_k |Y_k(f) − U_k μ(f)|²

    U_k is the DC value of the taper actually applied (``Tapers.dc``). With no line at f, F
    follows F(2, 2K − 2). ``coef`` is (K, F); returns (F (F,), μ (F,) complex).
    """
    k = coef.shape[0]
    if k < 2:
        raise LcgenError("the F-test needs at least 2 tapers (k ≥ 2)")
    return _harmonic_fstat(coef, dc[:, None], float(np.sum(dc * dc)))


def _harmonic_fstat(coef: np.ndarray, u: np.ndarray, uu) -> tuple[np.ndarray, np.ndarray]:
    """:func:`harmonic_fstat` with U_k as ``u`` (K, 1), or (K, F) and Σ_k U_k² ``uu`` (F,) for
    bins from several curves."""
    k = coef.shape[0]
    mu = _sum_tapers(u * coef) / uu
    resid = _sum_tapers(np.abs(coef - u * mu) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        fstat = (k - 1) * np.abs(mu) ** 2 * uu / resid
    return fstat, mu


def mirror_fstat(t: np.ndarray, tapers: Tapers, freq: np.ndarray, coef: np.ndarray, *,
                 eps: float = EPS) -> np.ndarray:
    """The harmonic F-test where a line's mirror image matters: near f = 0 (f < 1.5W) and, for
    regular data, near the Nyquist frequency, where a real sinusoid's component at −f (or its
    alias) leaks into the tapers at +f and the plain test's F(2, 2K − 2) law fails.

    The 2K real numbers z = (Re Y_k(f), Im Y_k(f)) are regressed on the exact response to a real
    sinusoid α cos θ − γ sin θ (θ = 2πf(t − t_c)), mean removal included:

        X = R (I − 11ᵀ/N) [cos θ, −sin θ],   R = the 2K × N rows (a_k cos θ, a_k sin θ),

    by generalised least squares with the exact white-noise covariance of z,
    C = R (I − 11ᵀ/N) Rᵀ (σ² cancels). Whitened by C^{−1/2} on the r directions with noise (r = 2K
    except very close to f = 0), F_r = (|fit|²/2) / (|residual|²/(r − 2)) follows F(2, r − 2)
    exactly under Gaussian white noise; it is returned as the F(2, 2K − 2) value with the same
    p-value, so :func:`fstat_pvalue` applies unchanged. Far from the mirror (f ≫ W) it equals
    :func:`harmonic_fstat`. All sums are transforms at f and 2f: with orthonormal tapers
    R Rᵀ = ½[[Δt I + Re V, Im V], [Im V, Δt I − Re V]], V_jk = Σ_n a_j a_k e^{2iθ_n},
    R 1 = (Re h, Im h), h_k = Σ_n a_k e^{iθ_n}, R [cos θ, −sin θ] from U_k and
    w_k = Σ_n a_k e^{2iθ_n}. ``coef`` (K, P) are the eigencoefficients at ``freq`` (P,).
    """
    return _mirror_solve(*_mirror_problems(*_mirror_sums(t, tapers, freq, coef)))


def _mirror_sums(t: np.ndarray, tapers: Tapers, freq: np.ndarray, coef: np.ndarray) -> tuple[np.ndarray, ...]:
    """The per-row inputs of :func:`mirror_fstat`'s problems (:func:`_mirror_problems`), all with
    one row per frequency, so the rows of several curves concatenate: the sums at f (P, 2K + 2:
    Re then Im of h_k = Σ a_k e^{iθ} and of Σ e^{iθ}), the sums at 2f (P, 2K + K(K + 1): Re then
    Im of w_k = Σ a_k e^{2iθ} and of V_jk, j ≤ k), z (P, 2K), Δt (P,), N (P,) and U (P, K)."""
    a = tapers.applied  # (K, N)
    k, n = a.shape
    ju, ku = _triu_indices(k)
    p = freq.size
    # Direct sums, not NUFFTs: the mirror zone holds a few dozen frequencies, where dense
    # (P, N) phase matrices and two real matrix products are exact and cheaper than two type-3
    # NUFFTs (so ``eps`` is not needed here; it stays for callers).
    e1 = _phases(t - 0.5 * (t[0] + t[-1]), freq)  # (P, N): e^{iθ}
    e2 = e1 * e1  # (P, N): e^{2iθ}
    at_f = np.concatenate([a, np.ones((1, n))]) @ np.concatenate([e1.real, e1.imag]).T  # (K + 1, 2P)
    at_2f = np.concatenate([a, a[ju] * a[ku]]) @ np.concatenate([e2.real, e2.imag]).T  # (K + K(K+1)/2, 2P)
    z = np.concatenate([coef.real.T, coef.imag.T], axis=1)  # (P, 2K)
    return (np.concatenate([at_f[:, :p].T, at_f[:, p:].T], axis=1), np.concatenate([at_2f[:, :p].T, at_2f[:, p:].T], axis=1),
            z, np.full(p, tapers.dt), np.full(p, float(n)), np.broadcast_to(tapers.dc, (p, k)))


def _mirror_problems(at_f: np.ndarray, at_2f: np.ndarray, z: np.ndarray, dt: np.ndarray, n: np.ndarray,
                     dc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows' problems of :func:`mirror_fstat` from :func:`_mirror_sums` (of one curve or the
    rows of several): (C (P, 2K, 2K), X (P, 2K, 2), z (P, 2K))."""
    p, k = dc.shape
    ju, ku = _triu_indices(k)
    kv = k + ju.size  # columns of at_2f per part (w, then V)
    h = at_f[:, :k] + 1j * at_f[:, k + 1: 2 * k + 1]  # (P, K): h_k = Σ a_k e^{iθ}
    h0 = at_f[:, k] + 1j * at_f[:, 2 * k + 1]  # (P,): Σ e^{iθ}
    w = at_2f[:, :k] + 1j * at_2f[:, kv: kv + k]  # (P, K): w_k = Σ a_k e^{2iθ}
    cov = np.empty((p, 2 * k, 2 * k))  # R Rᵀ = ½[[Δt I + Re V, Im V], [Im V, Δt I − Re V]], V_jk = Σ a_j a_k e^{2iθ}
    for part, rows in ((cov[:, :k, :k], at_2f[:, k:kv]), (cov[:, :k, k:], at_2f[:, kv + k:])):
        part[:, ju, ku] = rows
        part[:, ku, ju] = rows
    cov[:, k:, :k] = cov[:, :k, k:]
    cov[:, k:, k:] = -cov[:, :k, :k]
    diagonal = np.arange(2 * k)
    cov[:, diagonal, diagonal] += dt[:, None]
    cov *= 0.5
    r1 = np.concatenate([h.real, h.imag], axis=1)  # (P, 2K) = R 1
    cov -= r1[:, :, None] * r1[:, None, :] / n[:, None, None]
    x = 0.5 * np.stack([np.concatenate([dc + w.real, w.imag], axis=1),
                        np.concatenate([-w.imag, -(dc - w.real)], axis=1)], axis=2)  # (P, 2K, 2)
    x -= r1[:, :, None] * np.stack([h0.real, -h0.imag], axis=1)[:, None, :] / n[:, None, None]
    return cov, x, z


def _mirror_solve(cov: np.ndarray, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The F of :func:`mirror_fstat` from its generalised least-squares problems, one per row:
    noise covariance ``cov`` (P, 2K, 2K), regressors ``x`` (P, 2K, 2), data ``z`` (P, 2K). Rows
    are independent, so those of several curves can be solved in one call."""
    p, k = z.shape[0], z.shape[1] // 2
    # Whiten by C^{−1/2} on the directions that carry noise: close to f = 0 mean removal and the
    # mirror leave some combinations of z (nearly) noise-free, and those are dropped; with r
    # directions kept the fit has 2 and r − 2 degrees of freedom.
    zx = np.concatenate([z[:, :, None], x], axis=2)  # (P, 2K, 3)
    white = np.zeros_like(zx)  # whitened z and X
    kept = np.full(p, 2 * k)
    full = np.zeros(p, dtype=bool)  # rows where every direction is kept, known without eigh
    # Most rows are well conditioned: whiten them by L⁻¹ (C + s I = L Lᵀ, s = 1e−13 tr C keeps the
    # factorisation alive on the rank-deficient rows), ~4× cheaper than eigh. λ_min + s ≥
    # 1/‖L⁻¹‖_F² and λ_max ≤ tr C, so where tr C · ‖L⁻¹‖_F² < 5e3 every eigenvalue exceeds 2e−4
    # λ_max − s > 1e−4 λ_max: the eigen path below would keep all 2K directions, and L⁻¹ whitens
    # as its C^{−1/2} does up to a rotation (which leaves the fit and residual norms alone) and
    # the shift (relative ≤ 1.4e−8). The other rows take the eigen path.
    trace = np.trace(cov, axis1=1, axis2=2)  # (P,)
    shifted = cov + (1e-13 * trace)[:, None, None] * np.eye(2 * k)
    try:
        chol = np.linalg.cholesky(shifted)
        factored = np.ones(p, dtype=bool)
    except np.linalg.LinAlgError:  # some C + s I still not numerically positive definite: those take eigh
        chol, factored = np.zeros_like(shifted), np.zeros(p, dtype=bool)
        for i in range(p):
            try:
                chol[i] = np.linalg.cholesky(shifted[i])
                factored[i] = True
            except np.linalg.LinAlgError:
                pass
    if factored.any():
        chol_inv = np.linalg.inv(chol[factored])
        full[factored] = np.einsum("pij,pij->p", chol_inv, chol_inv) * trace[factored] < 5e3
        white[full] = chol_inv[full[factored]] @ zx[full]
    rest = ~full
    if rest.any():
        val, vec = np.linalg.eigh(cov[rest])  # (R, 2K), (R, 2K, 2K)
        keep = val > 1e-4 * val[:, -1:]  # below, NUFFT rounding (eps 1e-9) would be amplified
        scale = np.where(keep, 1.0 / np.sqrt(np.where(keep, val, 1.0)), 0.0)
        white[rest] = np.einsum("pji,pjc->pic", vec, zx[rest]) * scale[:, :, None]
        kept[rest] = keep.sum(axis=1)
    zt, xt = white[:, :, 0], white[:, :, 1:]
    # β = (XᵀX)⁻¹Xᵀz in closed form (2 columns); the SVD where XᵀX is ill-conditioned
    g = np.einsum("pic,pid->pcd", xt, xt)  # (P, 2, 2)
    r = np.einsum("pic,pi->pc", xt, zt)  # (P, 2)
    det = g[:, 0, 0] * g[:, 1, 1] - g[:, 0, 1] * g[:, 1, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = np.stack([g[:, 1, 1] * r[:, 0] - g[:, 0, 1] * r[:, 1],
                         g[:, 0, 0] * r[:, 1] - g[:, 1, 0] * r[:, 0]], axis=1) / det[:, None]
    poor = ~(det > 1e-6 * g[:, 0, 0] * g[:, 1, 1])  # cond(XᵀX) ≳ 1e6: normal equations would lose digits
    if poor.any():
        beta[poor] = _batched_lstsq(xt[poor], zt[poor])
    fit = np.einsum("pic,pc->pi", xt, beta)
    dfd = kept - 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        f_r = (np.sum(fit * fit, axis=1) / 2) / (np.sum((zt - fit) ** 2, axis=1) / dfd)  # ~ F(2, r − 2)
        log_p = -0.5 * dfd * np.log1p(2 * f_r / dfd)  # P(F(2, d) > F) = (1 + 2F/d)^(−d/2)
        fstat = (k - 1) * np.expm1(-log_p / (k - 1))  # the F(2, 2K − 2) value with the same p
    return np.where(dfd >= 1, fstat, np.nan)


@functools.lru_cache(maxsize=None)
def _triu_indices(k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(k)


def _phases(x: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """exp(2πi f_p x_n) as a (P, N) array, ~10× cheaper than an exp per entry: each run of evenly
    spaced frequencies f_0 + jδ (within 1e−10 in phase) takes exp(2πi f_0 x) and exp(2πi δ x),
    then powers of the step by doubling (relative error ~1e−14)."""
    out = np.empty((freq.size, x.size), dtype=np.complex128)
    tol = 1e-10 / (2 * np.pi * max(float(np.max(np.abs(x))), 1e-300))  # in frequency
    d = np.diff(freq)
    starts = np.flatnonzero(np.abs(np.diff(d)) > 1e-6 * np.abs(d[:-1])) + 1  # where the step changes
    for a, b in zip([0, *starts], [*starts, freq.size - 1]):  # runs freq[a..b], sharing freq[b] when b < P − 1
        step = (freq[b] - freq[a]) / max(b - a, 1)
        if b - a < 2 or np.max(np.abs(freq[a:b + 1] - freq[a] - step * np.arange(b - a + 1))) > tol:
            out[a:b + 1] = np.exp(2j * np.pi * np.outer(freq[a:b + 1], x))
            continue
        out[a] = np.exp(2j * np.pi * freq[a] * x)
        power, done, m = np.exp(2j * np.pi * step * x), 1, b - a + 1  # power = exp(2πi δ·done·x)
        while done < m:
            c = min(done, m - done)
            np.multiply(out[a: a + c], power, out=out[a + done: a + done + c])
            power = power * power
            done += c
    return out


def _batched_lstsq(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Least-squares β (P, C) of z (P, M) on x (P, M, C), one small problem per row, through the
    SVD (robust when a column vanishes)."""
    u, sv, vt = np.linalg.svd(x, full_matrices=False)  # (P, M, C), (P, C), (P, C, C)
    inv = np.where(sv > 1e-12 * sv[:, :1], 1.0 / np.where(sv > 0, sv, 1.0), 0.0)
    return np.einsum("pdc,pd,pmd,pm->pc", vt, inv, u, z)


def mirror_zone(t: np.ndarray, nw: float, freq: np.ndarray, regular: bool) -> np.ndarray:
    """Where :func:`mirror_fstat` replaces the plain F-test: 0 < f < 1.5W and, for exactly regular
    data, f > f_N − 1.5W, where a line's mirror image leaks into the tapers (from 1.1W up the
    plain test was measured calibrated). (F,) bool."""
    w, _, nyquist = resolvable_band(t, nw, regular=regular)
    near = (freq < MIRROR_ZONE * w) | (regular & (freq > nyquist - MIRROR_ZONE * w))
    return near & (freq > 0)


def fstat_pvalue(fstat: np.ndarray, k: int) -> np.ndarray:
    """P(F' > F) for F' ~ F(2, 2K − 2): the closed form (1 + F/(K − 1))^{−(K − 1)}."""
    return np.power(1.0 + np.asarray(fstat, dtype=np.float64) / (k - 1), -(k - 1.0))


def _spectra(parts: list[tuple], k: int, *, adaptive: bool, ftest: bool,
             n: int | None = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, int]:
    """PSD, harmonic F and line amplitude μ at the frequencies of one or several curves, from
    each curve's part ``(coef (K, F_i), tapers, σ²Δt, mirror rows (F_i,) bool, their
    :func:`_mirror_sums` or None)``: :func:`adaptive_psd` (or the mean of the eigenspectra),
    :func:`harmonic_fstat` and, on the mirror rows, :func:`mirror_fstat`. Every frequency is a
    problem of its own, so the frequencies of all the parts go through each step together (the
    numbers are those of one part at a time). σ²Δt None (one part only) is tapify's noise level
    Σ S/N with ``n`` the curve's N. Returns (psd, fstat, μ, adaptive iterations) over the parts'
    frequencies in order; fstat and μ are None without ``ftest``."""
    coefs, tapers, variances, nears, systems = zip(*parts)
    sizes = [c.shape[1] for c in coefs]
    coef = np.concatenate(coefs, axis=1)  # (K, ΣF)
    power = coef.real ** 2 + coef.imag ** 2
    n_iter = 0
    if not adaptive:
        psd = power.mean(axis=0)
    elif variances[0] is None:  # tapify's σ²: the bins of the one curve are coupled
        psd, n_iter = adaptive_psd(power, tapers[0].eigvals, n=n)
    else:
        lam = np.repeat(np.stack([tp.eigvals for tp in tapers], axis=1), sizes, axis=1)  # (K, ΣF)
        psd, n_iter = adaptive_psd(power, lam, variance=np.repeat(variances, sizes))
    if not ftest:
        return psd, None, None, n_iter
    dc = np.stack([tp.dc for tp in tapers], axis=1)  # (K, parts)
    fstat, mu = _harmonic_fstat(coef, np.repeat(dc, sizes, axis=1), np.repeat(np.sum(dc * dc, axis=0), sizes))
    given = [system for system in systems if system is not None]
    if given:
        mirror = _mirror_solve(*_mirror_problems(*(np.concatenate(rows) for rows in zip(*given))))
        at = 0
        for a, near, system in zip(np.cumsum([0] + sizes), nears, systems):
            if system is not None:
                rows = system[2].shape[0]  # z
                fstat[a + np.flatnonzero(near)] = mirror[at: at + rows]
                at += rows
    return psd, fstat, mu, n_iter


def multitaper(t, y, *, nw: float = 4.0, k: int | None = None, freq=None, adaptive: bool = True,
               ftest: bool = True, eps: float = EPS) -> MultitaperResult:
    """Multitaper PSD, harmonic F-statistic and line amplitude of an irregular time series.

    Parameters
    ----------
    t, y : (N,) sorted, distinct, finite times and values.
    nw : time-bandwidth product NW (default 4); the resolution half-width is W = NW/T.
    k : number of tapers, 1 ≤ K ≤ 2NW (default 2NW − 1).
    freq : (F,) frequencies in cycles per unit of t. ``None`` uses tapify's default grid
        (:func:`default_frequencies`); any other grid is evaluated there exactly.
    adaptive : Thomson's adaptive weights (:func:`adaptive_psd`); else the mean of S_k.
    ftest : compute the F-statistic, its p-value and the line amplitude.

    The PSD is a two-sided density: S(f) = Σ_k w_k |Y_k(f)|² / Σ_k w_k with Y_k from
    :func:`eigencoefficients`; white noise of variance σ² gives E S ≈ σ² Δt. On the default grid
    the adaptive noise level σ² is tapify's Σ_j S(f_j)/N; on a given grid it is var(x)·Δt, the
    level of white noise with the data's variance (tapify's value is larger by
    2^⌈log2 N⌉/N ∈ [1, 2), which matters only where S is near the leakage level).

    Differences from tapify, by design: exactly regular data get physical frequencies and
    Δt = T/(N − 1) (tapify labels bin j as j/(N_pad·T/N), off by (N−1)/N, and scales the PSD by
    T/N); the tapers are orthonormal on the samples (identical to tapify's on regular data,
    within ~1e−4 on jittered near-regular data, different where gaps or uneven cadence made
    tapify's miscalibrated); the F-test uses the applied tapers' DC values and, within 1.5W of a
    mirror frequency, the exact GLS form of :func:`mirror_fstat`; adaptive weighting converges
    in every bin.
    """
    t, y, k = check_series(t, y, nw, k)
    if np.all(y == y[0]):
        raise LcgenError("y is constant: its spectrum is zero and the F-test undefined")
    if ftest and k < 2:
        raise LcgenError("ftest=True needs at least 2 tapers; raise k or pass ftest=False")
    default_grid = freq is None
    freq, coef, tapers = _eigencoefficients(t, y, freq, nw, k, eps)
    near = mirror_zone(t, nw, freq, tapers.regular) if ftest else np.zeros(freq.size, dtype=bool)
    system = _mirror_sums(t, tapers, freq[near], coef[:, near]) if near.any() else None
    variance = None if default_grid else float(np.var(y)) * tapers.dt
    psd, fstat, mu, n_iter = _spectra([(coef, tapers, variance, near, system)], k, adaptive=adaptive, ftest=ftest,
                                      n=t.size)
    pvalue = fstat_pvalue(fstat, k) if ftest else None
    return MultitaperResult(freq=freq, psd=psd, fstat=fstat, pvalue=pvalue, amplitude=mu, n_iter=n_iter)


# --------------------------------------------------------------------------------------------
# Spectra aggregated into the bins of a shared grid

OVERSAMPLE = 4  # sub-frequencies per Rayleigh resolution 1/T inside a wide bin
SUBBIN_RHO = 0.7  # effective independent F tests per extra sub-frequency (calibrated, see binned_multitaper)


@dataclasses.dataclass(frozen=True)
class BinnedSpectrum:
    """Output of :func:`binned_multitaper`; arrays are (B,) over the shared bins, NaN outside
    the curve's resolvable band."""

    psd: np.ndarray  # mean PSD over the bin's sub-frequencies (same density units as multitaper)
    fstat: np.ndarray  # the F(2, 2K−2) value whose single-test p-value equals ``pvalue``
    pvalue: np.ndarray  # p-value of the largest F in the bin, corrected for the sub-frequencies tried
    n_sub: np.ndarray  # sub-frequencies evaluated per bin (0 outside the band)
    valid: np.ndarray  # bin centre inside the resolvable band [W, f_hi] (resolvable_band)


def bin_edges(centres, *, log: bool) -> np.ndarray:
    """(B + 1,) edges of the bins around sorted ``centres``: midpoints between neighbours (geometric
    midpoints when ``log``), the outer edges half a step beyond the outer centres."""
    c = np.log(centres) if log else np.asarray(centres, dtype=np.float64)
    if c.size < 2 or not np.all(np.diff(c) > 0):
        raise LcgenError("bin centres must be at least 2 increasing (and, for log bins, positive) values")
    mid = 0.5 * (c[1:] + c[:-1])
    e = np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])
    return np.exp(e) if log else e


def sub_frequencies(centres: np.ndarray, edges: np.ndarray, band: tuple[float, float],
                    spacing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each bin is evaluated: on ONE lattice of frequencies j·``spacing`` (integer j) over
    ``band``. A bin whose centre lies in the band takes the lattice points inside it (its edges
    clipped to the band) or, when it is narrower than the spacing and holds none, the point
    nearest its centre. Every frequency of the band is thus within spacing/2 of a point used,
    wide bins are sampled at exactly that spacing (what :func:`aggregate_log_pvalue` was
    calibrated at), and the lattice makes the transform a type-1 NUFFT.

    Returns (lattice (L,), index (Σm,) into the lattice, m (B,) points per bin, 0 outside the
    band); each bin's points are contiguous in ``index``."""
    lo, hi = band
    j_lo, j_hi = int(np.ceil(lo / spacing)), int(np.floor(hi / spacing))
    lattice = spacing * np.arange(j_lo, j_hi + 1)
    done = (centres >= lo) & (centres <= hi)
    first = np.ceil(np.maximum(edges[:-1], lo) / spacing)
    stop = np.ceil(np.minimum(edges[1:], hi) / spacing)  # points j·spacing in [a, b): first ≤ j < stop
    wide = done & (stop > first)
    nearest = np.clip(np.rint(centres / spacing), j_lo, j_hi)
    m = np.where(wide, stop - first, done).astype(np.int64)  # (B,)
    start = (np.where(wide, first, nearest) - j_lo).astype(np.int64)
    owner = np.repeat(np.arange(centres.size), m)
    index = start[owner] + np.arange(owner.size) - (np.cumsum(m) - m)[owner]
    return lattice, index, m


def binned_multitaper(t, y, centres, edges, *, nw: float = 4.0, k: int | None = None,
                      adaptive: bool = True, oversample: int = OVERSAMPLE, eps: float = EPS) -> BinnedSpectrum:
    """Multitaper PSD and harmonic F-test of one curve, aggregated into shared frequency bins.

    A shared log grid is coarser than a long curve's resolution 1/T at high frequency, and a line
    between two bin centres is then missed by the F-test (whose peak is only ~1/(4T) wide). So
    the curve is computed on a lattice of spacing δ = 1/(``oversample``·T) from 1/T to its
    Nyquist frequency (:func:`sub_frequencies`): each bin takes the m lattice points inside it
    (the nearest one when it is narrower than δ), and they are aggregated:

    - PSD: the mean over the sub-frequencies (the bin-averaged density);
    - F-test: the largest F in the bin, i.e. the smallest single-test p-value p_min, corrected
      for the m tries as independent tests of an effective number m_eff = 1 + ρ(m − 1)
      (Šidák): p = 1 − (1 − p_min)^{m_eff}. Neighbouring sub-frequencies are correlated, so
      m_eff < m; ρ = ``SUBBIN_RHO`` = 0.7 was measured from white-noise draws on the sampling
      patterns of :mod:`lcgen.simulate` at the default NW = 4, K = 7 and spacing 1/(4T) (the
      1 % quantile of p_min over m = 2–128 lattice points is 0.01/m_eff with
      (m_eff − 1)/(m − 1) = 0.6–0.85, median ≈ 0.7), the empirical route Horne & Baliunas (1986)
      took for the number of independent frequencies of a periodogram. The test suite checks the
      result: 1.0 ± 0.2 % of null bins at p < 0.01 on every sampling. Other NW, K or
      ``oversample`` keep the same ρ, which is then only approximate. ``fstat`` is reported as the F whose single-test p-value is the corrected
      one, so fstat and pvalue keep the closed-form relation of :func:`fstat_pvalue` and the
      F channel means the same in narrow and wide bins.

    ``centres`` (B,) and ``edges`` (B + 1,) describe the bins (:func:`bin_edges`). Bins outside
    [1/T, f_N] are NaN; ``valid`` marks the unbiased part [W, f_hi] of :func:`resolvable_band`
    (the bins between 1/T and W carry values, biased, for users who want them).
    """
    (out,) = binned_multitaper_many([(t, y)], centres, edges, nw=nw, k=k, adaptive=adaptive,
                                    oversample=oversample, eps=eps)
    if isinstance(out, LcgenError):
        raise out
    return out


def binned_multitaper_many(curves, centres, edges, *, nw: float = 4.0, k: int | None = None,
                           adaptive: bool = True, oversample: int = OVERSAMPLE,
                           eps: float = EPS) -> list[BinnedSpectrum | LcgenError]:
    """:func:`binned_multitaper` of several curves ``[(t, y), ...]`` at once, with the same numbers.

    Each curve's tapers, transform and mirror-zone sums are its own; the per-frequency work after
    that (adaptive weighting, the F-test, the mirror F-test's small least-squares problems) treats
    every bin on its own, so the bins of all the curves go through it together: at survey sizes
    (a few hundred points, ~1,200 lattice frequencies and ~30 mirror rows per curve) a numpy call
    per curve costs about as much in overhead as in arithmetic. Returns, per curve, its
    :class:`BinnedSpectrum` or the :class:`LcgenError` that :func:`binned_multitaper` would raise.
    """
    centres = check_grid(centres, "centres")
    edges = np.asarray(edges, dtype=np.float64)
    out: list = [None] * len(curves)
    todo = []  # curves with lattice points: (result, index, m, k, and their part of _spectra)
    for i, (t, y) in enumerate(curves):
        try:
            t, y, kk = check_series(t, y, nw, k)
            span = t[-1] - t[0]
            regular = is_regular(t)  # once per curve: the band, the tapers and the mirror zone
            w, f_hi, nyquist = resolvable_band(t, nw, regular=regular)
            lattice, index, m = sub_frequencies(centres, edges, (1.0 / span, nyquist), 1.0 / (oversample * span))
            nan = np.full(centres.size, np.nan)
            res = out[i] = BinnedSpectrum(psd=nan, fstat=nan.copy(), pvalue=nan.copy(), n_sub=m,
                                          valid=(centres >= w) & (centres <= f_hi))
            if not np.any(m > 0):
                continue
            if np.all(y == y[0]):
                raise LcgenError("y is constant: its spectrum is zero and the F-test undefined")
            _, coef, tapers = _eigencoefficients(t, y, lattice, nw, kk, eps, regular)
            near = mirror_zone(t, nw, lattice, tapers.regular) if kk >= 2 else np.zeros(lattice.size, dtype=bool)
            system = _mirror_sums(t, tapers, lattice[near], coef[:, near]) if near.any() else None
            todo.append((res, index, m, kk, coef, tapers, float(np.var(y)) * tapers.dt, near, system))
        except LcgenError as exc:
            out[i] = exc
    if not todo:
        return out
    k = todo[0][3]
    sizes = [c[4].shape[1] for c in todo]
    bounds = np.cumsum([0] + sizes)
    psd, fstat, _, _ = _spectra([c[4:] for c in todo], k, adaptive=adaptive, ftest=k >= 2)
    for c, a, b in zip(todo, bounds, bounds[1:]):
        res, index, m = c[:3]
        done = m > 0
        md = m[done]
        starts = np.cumsum(md) - md
        res.psd[done] = np.add.reduceat(psd[a:b][index], starts) / md
        if k >= 2:
            fmax = np.maximum.reduceat(np.nan_to_num(fstat[a:b], nan=0.0)[index], starts)
            log_p = aggregate_log_pvalue(fmax, md, k)
            res.pvalue[done] = np.exp(log_p)
            res.fstat[done] = (k - 1) * np.expm1(-log_p / (k - 1))  # inverse of fstat_pvalue
    return out


def aggregate_log_pvalue(fmax: np.ndarray, m: np.ndarray, k: int, rho: float = SUBBIN_RHO) -> np.ndarray:
    """log p of the largest of m correlated F(2, 2K − 2) values: Šidák with m_eff = 1 + ρ(m − 1),
    p = 1 − (1 − p_min)^{m_eff}, computed in logs so that tiny p-values do not underflow."""
    log_pmin = -(k - 1) * np.log1p(np.asarray(fmax, dtype=np.float64) / (k - 1))  # log of fstat_pvalue
    m_eff = 1.0 + rho * (np.asarray(m, dtype=np.float64) - 1.0)
    with np.errstate(divide="ignore"):
        sidak = np.log(-np.expm1(m_eff * np.log1p(-np.exp(log_pmin))))
    return np.where(log_pmin < -30, np.log(m_eff) + log_pmin, np.minimum(sidak, 0.0))  # Bonferroni limit


# --------------------------------------------------------------------------------------------
# Autocorrelation

CUTOFF = 1.08  # the kernel's transform exp(−2π²h²f²) is cut at f = CUTOFF/h, where it is 1e−10 (NUFFT eps 1e−9)


def autocorrelation(t, y, lags, *, kernel_width: float | None = None, relative_width: float = 0.04,
                    min_pairs: float = 2.0, eps: float = EPS, max_modes: int = 2 ** 21,
                    checked: bool = False) -> np.ndarray:
    """Window-corrected autocorrelation of irregular data at given lags (a Gaussian-kernel,
    locally normalised discrete correlation function).

    Every pair of points (n earlier, m later) with separation Δ = t_m − t_n counts at lag τ with
    weight g(τ − Δ) = exp(−(τ − Δ)² / 2h²), and the ACF is the weighted Pearson correlation of the
    earlier with the later values (Edelson & Krolik 1988 with local normalisation, Welsh 1999;
    Gaussian kernel as Rehfeld et al. 2011):

        ⟨ab⟩(τ) = Σ_{n,m} a_n b_m g(τ − Δ_nm) / Σ_{n,m} g(τ − Δ_nm)   (all ordered pairs),
        ACF(τ) = (⟨x·x'⟩ − ⟨x⟩⟨x'⟩) / sqrt((⟨x²⟩ − ⟨x⟩²)(⟨x'²⟩ − ⟨x'⟩²)),   ACF(0) = 1,

    where x is the earlier and x' the later point of each pair (within a few h of τ = 0 the self
    pairs and reversed pairs count too, which only matters there). Dividing by the weight sum is the
    window correction: gaps and uneven cadence change how many pairs fall near τ, not what they
    average to. The local means and variances make a sinusoid correlate exactly 1 at τ = P
    whatever part of its cycle the overlapping pairs cover, so its first peak sits at P for any
    P up to about half the baseline (the Gaussian only lowers the peak by exp(−2π²h²/P²)).

    Each weighted sum is computed in O(N log N) through the Fourier domain:
    Σ_{n,m} a_n b_m g(τ − Δ_nm) = ∫ conj(A(f)) B(f) G(f) e^{2πifτ} df with A(f) = Σ_n a_n
    e^{−2πi f t_n} and G(f) ∝ exp(−2π²h²f²): one type-1 NUFFT of (x, 1, x²) onto a uniform
    frequency grid up to ``CUTOFF``/h₀ (where G has fallen to 1e−10) whose lag period exceeds
    max(τ) + T + 10h (no wrap-around), then type-2 NUFFTs at exactly the requested lags.

    The kernel width grows with the lag, h(τ) = max(h₀, ``relative_width``·τ) rounded down to
    h₀·4^b, because a fixed lag grid that is log-spaced only resolves τ to about 1% anyway, and
    averaging over more pairs steadies the peak. h₀ = ``kernel_width``, by default 0.75 × the
    median spacing: wide enough to suppress the aliases of regular sampling (at multiples of
    1/spacing) by G ≈ 1e−5, narrow enough to keep periods of a few cadences. It is widened if the
    frequency grid would exceed ``max_modes``. Lags with fewer than ``min_pairs`` kernel-weighted
    pairs (longer than T, or inside seasonal gaps) are NaN.

    Why not the original's inverse FFT of the multitaper PSD: that is the true ACF times the DPSS
    lag window, which vanishes near T/(2NW) and moved or erased rotation peaks.

    ``checked=True`` skips the input checks for callers that have made sure of them already
    (``t``, ``y`` float64 arrays that pass :func:`check_series`, ``lags`` a non-empty finite
    non-negative float64 array), as ``lcgen preprocess`` does.

    Returns the ACF at ``lags`` ((L,), non-negative, in the units of t).
    """
    if not checked:
        t, y, _ = check_series(t, y, nw=0.5, k=1)
        lags = check_grid(lags, "lags")
        if np.any(lags < 0):
            raise LcgenError("lags must be non-negative (the ACF is symmetric)")
    x = y - y.mean()
    if not np.any(x):
        raise LcgenError("y is constant: its autocorrelation is undefined")
    span = t[-1] - t[0]
    reach = float(lags.max()) + span  # lag period needed before the kernel tails (pairs are ≤ T apart)
    h0 = float(kernel_width) if kernel_width is not None else 0.75 * _median(np.diff(t))
    if not h0 > 0:
        raise LcgenError(f"kernel_width = {kernel_width} must be positive")
    h0 = max(h0, 2 * CUTOFF * (reach + 10 * h0) / max_modes)  # keep 2 · CUTOFF/h0 · period ≤ max_modes
    # band b uses h = h0·4^b, the largest with h ≤ max(h0, relative_width·τ): few NUFFT calls
    bands = np.floor(np.log(np.maximum(relative_width * lags / h0, 1.0)) / np.log(4.0)).astype(int)  # (L,)
    widths = h0 * 4.0 ** bands
    df = 1.0 / (reach + 10 * widths.max())
    half = _round_modes(np.ceil(CUTOFF / (h0 * df))) // 2 * 2  # rounded for plan reuse
    phase = 2 * np.pi * df * (t - 0.5 * (t[0] + t[-1]))  # (N,), within ±π
    strengths = np.zeros((3, x.size), dtype=np.complex128)  # (3, N): x, window, x²
    strengths.real[0], strengths.real[1], strengths.real[2] = x, 1.0, x * x
    xf, wf, x2f = _nufft(1, phase, strengths, 2 * half, -1, eps, upsampfac=1.25)  # modes −half..half−1; FFT-bound, so a small upsampling
    # conj(A)·B transforms back to Σ_{n,m} a_n b_m g(τ − (t_m − t_n)), a at the earlier time. Each
    # such spectrum is Hermitian (its transform is real), so two ride in one complex transform:
    # spectrum a + i·b gives sum_a + i·sum_b.
    cross = np.stack([xf.conj() * xf + 1j * (wf.conj() * wf),
                      xf.conj() * wf + 1j * (wf.conj() * xf),
                      x2f.conj() * wf + 1j * (wf.conj() * x2f)])  # (3, 2·half)
    sums = np.empty((6, lags.size))
    pairs = np.empty(lags.size)
    f = df * np.arange(-half, half)
    for band in np.flatnonzero(np.bincount(bands)):  # one call per band (bands ≥ 0, ascending), on only the modes its kernel needs
        h = h0 * 4.0 ** band
        sel = bands == band
        m = min(half, _round_modes(2 * np.ceil(CUTOFF / (h * df))) // 2)  # the wider kernel needs fewer modes
        part = cross[:, half - m: half + m] * np.exp(-2 * np.pi ** 2 * h * h * f[half - m: half + m] ** 2)
        out = _nufft(2, 2 * np.pi * df * lags[sel], part, 2 * m, 1, eps, upsampfac=1.25)  # (3, L_band) complex
        sums[0::2, sel] = out.real
        sums[1::2, sel] = out.imag
        pairs[sel] = out[0].imag * df * np.sqrt(2 * np.pi) * h  # pairs within ~h of τ (g(0) = 1)
    r_xx, r_ww, r_xw, r_wx, r_x2w, r_wx2 = sums
    with np.errstate(divide="ignore", invalid="ignore"):
        m1, m2 = r_xw / r_ww, r_wx / r_ww  # weighted means of the earlier and the later points
        cov = r_xx / r_ww - m1 * m2
        var1, var2 = r_x2w / r_ww - m1 * m1, r_wx2 / r_ww - m2 * m2
        acf = cov / np.sqrt(var1 * var2)
    acf[(pairs < min_pairs) | ~(var1 > 0) | ~(var2 > 0)] = np.nan
    acf[lags == 0] = 1.0
    return np.clip(acf, -1.0, 1.0)


def _median(a: np.ndarray) -> float:
    """``np.median`` of a 1-D array by one partition (~10× cheaper for a few hundred values)."""
    h = (a.size - 1) // 2
    if a.size % 2:
        return float(np.partition(a, h)[h])
    part = np.partition(a, (h, h + 1))
    return float(0.5 * (part[h] + part[h + 1]))


def acf_first_peak(lags, acf, *, threshold: float = 0.1) -> float:
    """Lag of the first peak of an ACF: the maximum of its first positive excursion after its
    first negative one, with hysteresis (excursions start beyond ±``threshold``) so that noise
    around a zero crossing does not count as a peak. NaN when there is no such peak."""
    lags = np.asarray(lags, dtype=np.float64)
    acf = np.asarray(acf, dtype=np.float64)
    below = np.flatnonzero(acf < -threshold)
    if below.size == 0:
        return float("nan")
    above = np.flatnonzero(acf[below[0]:] > threshold)
    if above.size == 0:
        return float("nan")
    start = below[0] + above[0]
    after = np.flatnonzero(acf[start:] < -threshold)
    stop = start + after[0] if after.size else acf.size
    segment = np.where(np.isfinite(acf[start:stop]), acf[start:stop], -np.inf)
    return float(lags[start + int(np.argmax(segment))])
