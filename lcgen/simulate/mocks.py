"""Mock light curves: sampling patterns, stellar signals, honest noise; deterministic per curve.

Each curve ``i`` draws everything from its own generator,
``np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,)))``, so a file depends only
on ``(seed, config)``: the same bytes come out with 1 or N workers and any chunk size.

A curve is built in four steps:

1. **Sampling** (:data:`SAMPLERS`): strictly increasing times ``t`` (days, starting at 0).
2. **Signal** (:data:`SIGNALS`): the zero-mean-ish variability ``s(t)`` of one type.
3. **Noise**: the signal-to-noise ratio is defined as

       snr = std(s) / rms(σ),    rms(σ) = sqrt(mean(σ_i²)),

   with ``s`` the type's signal at the sampled times and ``σ_i`` the per-point errors: log-normal
   around the base level, ``σ_i = (std(s) / snr) · u_i``, ``u_i ∝ exp(error_scatter · g_i)`` with
   ``g_i ~ N(0, 1)`` and ``u`` rescaled to ``rms(u) = 1`` (so the stored ``snr`` is exact). A
   signal that comes out flat (a spot model seen from an unlucky angle) is drawn again, so no
   curve is degenerate.
4. **Overlays** (optional, drawn from a second generator so switching them on leaves the base
   curve and its noise unchanged): transits/eclipses (multiplicative), flares and red noise
   (additive). They do not change ``σ_i``; the stored ``snr`` is then the realised one,
   ``std(signal) / rms(σ)`` of the final noise-free flux.

Then ``signal = offset + overlays(s)`` is the noise-free flux and

    flux = signal + σ_i · z_i,   z_i ~ N(0, 1),   flux_err = σ_i,

so the reported errors are exactly the standard deviations of the noise that was drawn. (The raw
file keeps ``time`` in float64 and ``flux``, ``flux_err``, ``signal`` in float32.)

Per-curve metadata: ``lc_type``, ``sampling``, ``n_points`` and the float columns of
:data:`META_FLOAT` (true parameters; NaN where one does not apply).

The default mix reproduces the original lc-gen generator (types sinusoid 30 %, multiperiodic 25 %,
drw 25 %, qpo 20 %; samplings regular 40 %, random_gaps 20 %, variable_cadence 20 %, seasonal
20 %, the original's "astronomical"), with its faults fixed: the DRW starts from its stationary
law, times never repeat, errors are honest and the clean signal is kept. Rotation, TESS/Kepler
sampling and the overlays are off by default and switched on in the config.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import math
import time as _time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from lcgen.errors import LcgenError
from lcgen.io import DEFAULT_RAW, check_memory
from lcgen.workers import check_workers, deferred_interrupt, process_pool, result


def _range(lo: float, hi: float) -> Callable[[], list[float]]:
    return lambda: [lo, hi]


# --------------------------------------------------------------------------------------------
# Config


@dataclass
class TypeMix:
    """Relative weights of the signal types (normalised; 0 switches a type off)."""

    sinusoid: float = 0.30  # (float) one sinusoid
    multiperiodic: float = 0.25  # (float) 2-4 summed sinusoids
    drw: float = 0.25  # (float) damped random walk (Ornstein-Uhlenbeck)
    qpo: float = 0.20  # (float) quasi-periodic oscillation (phase random walk)
    rotation: float = 0.0  # (float) spot-modulated rotation with evolving spots


@dataclass
class SamplingMix:
    """Relative weights of the sampling patterns (normalised; 0 switches one off)."""

    regular: float = 0.40  # (float) evenly spaced
    random_gaps: float = 0.20  # (float) evenly spaced with random gaps cut out
    variable_cadence: float = 0.20  # (float) piecewise-constant cadence
    seasonal: float = 0.20  # (float) yearly observing seasons with weather losses
    tess: float = 0.0  # (float) TESS-like sectors
    kepler: float = 0.0  # (float) Kepler-like quarters


@dataclass
class SinusoidConfig:
    period: list[float] = field(default_factory=_range(2.0, 100.0))  # (list[float]) period range, days
    amplitude: list[float] = field(default_factory=_range(0.5, 2.0))  # (list[float]) semi-amplitude range, flux


@dataclass
class MultiperiodicConfig:
    n_components: list[int] = field(default_factory=lambda: [2, 4])  # (list[int]) number of sinusoids, inclusive
    period: list[float] = field(default_factory=_range(5.0, 100.0))  # (list[float]) period range, days
    amplitude: list[float] = field(default_factory=_range(0.3, 1.5))  # (list[float]) semi-amplitude range, flux


@dataclass
class DRWConfig:
    tau: list[float] = field(default_factory=_range(5.0, 50.0))  # (list[float]) damping time range, days
    sigma: list[float] = field(default_factory=_range(0.5, 2.0))  # (list[float]) stationary std range, flux


@dataclass
class QPOConfig:
    period: list[float] = field(default_factory=_range(10.0, 50.0))  # (list[float]) central period range, days
    q: list[float] = field(default_factory=_range(5.0, 20.0))  # (list[float]) coherence Q = f0 / FWHM range
    amplitude: list[float] = field(default_factory=_range(0.5, 2.0))  # (list[float]) semi-amplitude range, flux


@dataclass
class RotationConfig:
    period: list[float] = field(default_factory=_range(1.0, 30.0))  # (list[float]) equatorial rotation period range, days
    amplitude: list[float] = field(default_factory=_range(0.2, 1.5))  # (list[float]) dip of a face-on spot at full size, flux
    spot_lifetime: list[float] = field(default_factory=_range(10.0, 100.0))  # (list[float]) spot growth/decay time range, days
    spots: list[float] = field(default_factory=_range(1.0, 3.0))  # (list[float]) mean number of spots alive at once
    shear: list[float] = field(default_factory=_range(0.0, 0.2))  # (list[float]) differential rotation α: P(lat) = P / (1 − α sin² lat)
    max_spots: int = 64  # (int) cap on spots per curve (bounds the cost)


@dataclass
class TransitConfig:
    probability: float = 0.0  # (float) fraction of curves with transits/eclipses
    period: list[float] = field(default_factory=_range(1.0, 20.0))  # (list[float]) orbital period range, days
    depth: list[float] = field(default_factory=_range(0.002, 0.05))  # (list[float]) depth of the primary = (Rp/R*)^2, fraction of the flux
    duration: list[float] = field(default_factory=_range(0.05, 0.3))  # (list[float]) first-to-fourth-contact duration range, days (shortened where a/R* would fall below min_a_rstar)
    ingress: list[float] = field(default_factory=_range(0.05, 0.3))  # (list[float]) ingress (first-to-second contact) as a fraction of the duration, < 0.5 (raised to the central-transit value where smaller)
    secondary: list[float] = field(default_factory=_range(0.0, 0.0))  # (list[float]) secondary-eclipse depth / primary depth (0: planet)
    min_a_rstar: float = 2.0  # (float) smallest orbit a/R*; ~ the Roche limit 2.44 (ρ*/ρp)^(1/3) of a planet denser than its star


@dataclass
class FlareConfig:
    probability: float = 0.0  # (float) fraction of curves with flares
    rate: list[float] = field(default_factory=_range(0.01, 0.1))  # (list[float]) flare rate range, per day
    amplitude: list[float] = field(default_factory=_range(0.01, 0.3))  # (list[float]) peak height range, fraction of the offset
    decay: list[float] = field(default_factory=_range(0.01, 0.2))  # (list[float]) exponential decay time range, days
    rise: list[float] = field(default_factory=_range(0.1, 0.5))  # (list[float]) rise time as a fraction of the decay time


@dataclass
class RedNoiseConfig:
    probability: float = 0.0  # (float) fraction of curves with red (power-law) noise added to the signal
    rms: list[float] = field(default_factory=_range(0.05, 0.5))  # (list[float]) rms range at the sampled times, flux
    beta: list[float] = field(default_factory=_range(1.0, 3.0))  # (list[float]) PSD slope range: P(f) ∝ f^-beta
    max_modes: int = 16384  # (int) cap on Fourier modes of the spectral synthesis


@dataclass
class RandomGapsConfig:
    fraction: list[float] = field(default_factory=_range(0.1, 0.3))  # (list[float]) fraction of the window lost to gaps
    n_gaps: list[int] = field(default_factory=lambda: [2, 8])  # (list[int]) number of gaps, inclusive


@dataclass
class VariableCadenceConfig:
    segments: list[int] = field(default_factory=lambda: [3, 5])  # (list[int]) number of cadence segments, inclusive
    density: list[float] = field(default_factory=_range(0.5, 2.0))  # (list[float]) relative point density range per segment


@dataclass
class SeasonalConfig:
    season: list[float] = field(default_factory=_range(150.0, 180.0))  # (list[float]) observing-season length range, days
    year: float = 365.25  # (float) time between season starts, days
    weather_loss: list[float] = field(default_factory=_range(0.1, 0.2))  # (list[float]) fraction of nights lost to weather


@dataclass
class SpaceConfig:
    """A space-telescope pattern at its native cadence: ``blocks`` consecutive blocks (TESS
    sectors, Kepler quarters) of ``block_days``, each split into ``segments_per_block`` equal
    segments (TESS orbits, Kepler months) whose last ``gap_days`` are lost to the data downlink.
    The defaults are the missions' (sources in :func:`sample_space`); the point count follows."""

    cadence_minutes: float = 2.0  # (float) native cadence, minutes
    block_days: float = 27.4  # (float) sector/quarter length, days
    segments_per_block: int = 2  # (int) orbits (TESS) or months (Kepler) per block
    gap_days: float = 1.0  # (float) data lost at the end of each segment (downlink), days
    blocks: list[int] = field(default_factory=lambda: [1, 1])  # (list[int]) consecutive blocks, inclusive
    max_points: int = 0  # (int) 0: native cadence; else a cap: the cadence becomes the smallest multiple of the native one that fits (binning)
    noise_ppm: list[float] = field(default_factory=_range(0.0, 0.0))  # (list[float]) per-point noise rms, ppm of the flux level, log-uniform over the range; [0, 0]: set by snr
    dump_every_days: float = 0.0  # (float) a momentum dump this often, days (0: none); the cadences in the next dump_minutes are lost
    dump_minutes: float = 0.0  # (float) data lost at each momentum dump, minutes
    losses: list[int] = field(default_factory=lambda: [0, 0])  # (list[int]) extra data losses per block, inclusive (safe modes, scattered light)
    loss_days: list[float] = field(default_factory=_range(0.0, 0.0))  # (list[float]) length range of each extra loss, days


_SPACE = ("tess", "kepler")  # samplings with a SpaceConfig section of the same name


def _kepler() -> SpaceConfig:
    return SpaceConfig(cadence_minutes=29.4244, block_days=93.0, segments_per_block=3, gap_days=1.0)


@dataclass
class SimulateConfig:
    """Everything ``lcgen generate`` needs; the defaults reproduce the original mock mix."""

    output: str = DEFAULT_RAW  # (str) raw light-curve file to write
    n_samples: int = 50000  # (int) number of light curves
    seed: int = 42  # (int) master seed; curve i uses SeedSequence(seed, spawn_key=(i,))
    types: TypeMix = field(default_factory=TypeMix)
    samplings: SamplingMix = field(default_factory=SamplingMix)
    duration: list[float] = field(default_factory=_range(50.0, 500.0))  # (list[float]) window length range, days (not tess/kepler)
    n_points: list[int] = field(default_factory=lambda: [200, 999])  # (list[int]) points per curve, inclusive (not tess/kepler)
    snr: list[float] = field(default_factory=_range(5.0, 30.0))  # (list[float]) std(signal) / rms(flux_err) range
    error_scatter: float = 0.2  # (float) log-normal scatter of the per-point errors (0: all equal)
    offset: list[float] = field(default_factory=_range(8.0, 12.0))  # (list[float]) constant flux level range
    sinusoid: SinusoidConfig = field(default_factory=SinusoidConfig)
    multiperiodic: MultiperiodicConfig = field(default_factory=MultiperiodicConfig)
    drw: DRWConfig = field(default_factory=DRWConfig)
    qpo: QPOConfig = field(default_factory=QPOConfig)
    rotation: RotationConfig = field(default_factory=RotationConfig)
    transit: TransitConfig = field(default_factory=TransitConfig)
    flare: FlareConfig = field(default_factory=FlareConfig)
    red_noise: RedNoiseConfig = field(default_factory=RedNoiseConfig)
    random_gaps: RandomGapsConfig = field(default_factory=RandomGapsConfig)
    variable_cadence: VariableCadenceConfig = field(default_factory=VariableCadenceConfig)
    seasonal: SeasonalConfig = field(default_factory=SeasonalConfig)
    tess: SpaceConfig = field(default_factory=SpaceConfig)
    kepler: SpaceConfig = field(default_factory=_kepler)


# Range settings that must be > 0 (others must be >= 0); checked by check_config.
_POSITIVE = {"duration", "offset", "snr", "period", "tau", "sigma", "q", "amplitude", "spot_lifetime",
             "spots", "depth", "rate", "decay", "rise", "rms", "density", "season", "ingress",
             "n_points", "n_components", "n_gaps", "segments", "blocks"}


def check_config(cfg: SimulateConfig) -> None:
    """Raise :class:`LcgenError` naming the first setting that cannot work."""
    if not 1 <= cfg.n_samples <= 2 ** 32:
        raise LcgenError(f"n_samples = {cfg.n_samples}: need at least 1 light curve (and at most 2**32)")
    if cfg.seed < 0:
        raise LcgenError(f"seed = {cfg.seed}: must be >= 0 (numpy seeds are non-negative integers)")
    for mix in ("types", "samplings"):
        weights = dataclasses.asdict(getattr(cfg, mix))
        bad = {k: w for k, w in weights.items() if not (w >= 0 and math.isfinite(w))}
        if bad:
            raise LcgenError(f"{mix}: weights must be finite and >= 0, got {bad}")
        if sum(weights.values()) <= 0:
            raise LcgenError(f"{mix}: all weights are 0; give at least one of {', '.join(weights)} a weight > 0")
    _check_ranges(cfg, "")
    if cfg.n_points[0] < 2:
        raise LcgenError(f"n_points = {cfg.n_points}: curves need at least 2 points")
    if cfg.multiperiodic.n_components[0] < 1:
        raise LcgenError(f"multiperiodic.n_components = {cfg.multiperiodic.n_components}: need at least 1 component")
    if cfg.error_scatter < 0:
        raise LcgenError(f"error_scatter = {cfg.error_scatter}: must be >= 0")
    for name in ("transit", "flare", "red_noise"):
        p = getattr(cfg, name).probability
        if not 0 <= p <= 1:
            raise LcgenError(f"{name}.probability = {p}: must be between 0 and 1")
    tc = cfg.transit
    if tc.depth[1] >= 1 or tc.ingress[1] >= 0.5 or tc.min_a_rstar <= 1:
        raise LcgenError(f"transit: need depth < 1 (got {tc.depth}), ingress < 0.5 of the duration (got "
                         f"{tc.ingress}) and min_a_rstar > 1 (got {tc.min_a_rstar})")
    if max(cfg.rotation.shear) >= 1:
        raise LcgenError(f"rotation.shear = {cfg.rotation.shear}: must be < 1")
    if cfg.rotation.max_spots < 1 or cfg.red_noise.max_modes < 1:
        raise LcgenError("rotation.max_spots and red_noise.max_modes must be >= 1")
    if cfg.seasonal.year < cfg.seasonal.season[1]:
        raise LcgenError(f"seasonal.year = {cfg.seasonal.year} is shorter than the longest season "
                         f"{cfg.seasonal.season[1]}; seasons cannot overlap")
    if cfg.seasonal.weather_loss[1] >= 1:
        raise LcgenError(f"seasonal.weather_loss = {cfg.seasonal.weather_loss}: must stay below 1")
    if cfg.random_gaps.fraction[1] >= 1:
        raise LcgenError(f"random_gaps.fraction = {cfg.random_gaps.fraction}: must stay below 1")
    for name in ("tess", "kepler"):
        s: SpaceConfig = getattr(cfg, name)
        seg = s.block_days / max(s.segments_per_block, 1)
        if s.segments_per_block < 1 or s.blocks[0] < 1 or s.max_points == 1 or s.max_points < 0 \
                or s.cadence_minutes <= 0 or not 0 <= s.gap_days < seg - s.cadence_minutes / 1440:
            raise LcgenError(f"{name}: need segments_per_block >= 1, blocks >= 1, max_points 0 (no cap) or >= 2, "
                             f"cadence_minutes > 0 and 0 <= gap_days < block_days / segments_per_block")
        if s.noise_ppm[1] > 0 and s.noise_ppm[0] <= 0:
            raise LcgenError(f"{name}.noise_ppm = {s.noise_ppm}: both ends must be > 0 ([0, 0] leaves the noise to snr)")
        if s.dump_every_days < 0 or s.dump_minutes < 0 or s.dump_minutes / 1440 >= s.dump_every_days > 0:
            raise LcgenError(f"{name}: need dump_every_days >= 0 and 0 <= dump_minutes < dump_every_days "
                             f"(got {s.dump_every_days} d, {s.dump_minutes} min)")
        if s.losses[1] > 0 and s.loss_days[1] >= s.block_days / 2:
            raise LcgenError(f"{name}.loss_days = {s.loss_days}: a loss must stay below half a block "
                             f"({s.block_days / 2:g} d)")


def _check_ranges(node, where: str) -> None:
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        path = f"{where}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_ranges(value, path + ".")
        elif isinstance(value, list):
            if len(value) != 2 or not all(math.isfinite(v) for v in value) or value[0] > value[1]:
                raise LcgenError(f"{path} = {value}: a range needs two finite numbers [low, high] with low <= high")
            if f.name in _POSITIVE and value[0] <= 0:
                raise LcgenError(f"{path} = {value}: values must be > 0")
            if value[0] < 0:
                raise LcgenError(f"{path} = {value}: values must be >= 0")


# --------------------------------------------------------------------------------------------
# Per-curve metadata: a fixed set of columns, NaN where a parameter does not apply.

META_FLOAT = (
    "duration",  # window length, days (tess/kepler: blocks x block_days)
    "offset", "snr", "noise_rms",  # constant level; std(signal)/rms(err); rms(err)
    "period", "amplitude",  # sinusoid, multiperiodic (strongest component), qpo, rotation (equatorial)
    "n_components",  # multiperiodic
    "tau", "sigma",  # drw
    "q",  # qpo coherence
    "spot_lifetime", "n_spots", "shear", "inclination",  # rotation; inclination in degrees
    # transits: duration T14 and ingress fraction T12/T14 as realised, orbit a/R*, impact b, epoch
    "transit_period", "transit_depth", "transit_duration", "transit_ingress", "transit_a_rstar",
    "transit_impact", "transit_epoch", "secondary_ratio",
    "n_flares", "flare_rate",
    "red_rms", "red_beta",
)


# --------------------------------------------------------------------------------------------
# Samplings: each returns strictly increasing times (days from 0) and fills meta["duration"].


# Scalar draws through rng.random(): ~5x cheaper per call than rng.uniform / rng.integers, and
# a curve makes a dozen of them.
def _uniform(rng: np.random.Generator, r: list[float]) -> float:
    return r[0] + (r[1] - r[0]) * rng.random()


def _integer(rng: np.random.Generator, r: list[int]) -> int:
    """Uniform on {r[0], ..., r[1]} (bias < 2^-50 for any range a config can hold)."""
    return min(r[0] + int(rng.random() * (r[1] - r[0] + 1)), r[1])


def _even(span: float, n: int) -> np.ndarray:
    """n evenly spaced times from 0 to ``span`` (np.linspace without its Python overhead)."""
    return np.arange(n) * (span / (n - 1)) if n > 1 else np.zeros(1)


def _cumsum0(x: np.ndarray) -> np.ndarray:
    """[0, x_0, x_0 + x_1, ...] of a float64 array: ``np.concatenate([[0.0], np.cumsum(x)])``
    (the same sums, in order) without the list conversion and the second copy."""
    out = np.empty(x.size + 1)
    out[0] = 0.0
    x.cumsum(out=out[1:])
    return out


def insert_gaps(u: np.ndarray, cuts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Map observed time ``u`` to clock time by inserting gap ``k`` of ``lengths[k]`` at ``cuts[k]``.

    ``t = u + Σ_{k: cuts[k] <= u} lengths[k]``; ``cuts`` sorted. Strictly increasing ``u`` gives
    strictly increasing ``t`` (the added term never decreases).
    """
    before = _cumsum0(np.asarray(lengths, dtype=np.float64))
    return u + before[np.searchsorted(cuts, u, side="right")]


def sample_regular(cfg: SimulateConfig, rng: np.random.Generator, meta: dict) -> np.ndarray:
    """n evenly spaced times over [0, T]."""
    duration, n = _uniform(rng, cfg.duration), _integer(rng, cfg.n_points)
    meta["duration"] = duration
    return _even(duration, n)


def sample_random_gaps(cfg: SimulateConfig, rng: np.random.Generator, meta: dict) -> np.ndarray:
    """An even grid of n points over the observed time (1 − g)·T, with ``n_gaps`` gaps of total
    length g·T (split by a flat Dirichlet draw) inserted at uniform positions. Spans exactly [0, T]."""
    duration, n = _uniform(rng, cfg.duration), _integer(rng, cfg.n_points)
    g, k = _uniform(rng, cfg.random_gaps.fraction), _integer(rng, cfg.random_gaps.n_gaps)
    observed = (1.0 - g) * duration
    split = rng.exponential(size=k)
    lengths = g * duration * split / split.sum()
    cuts = rng.uniform(0.0, observed, k)
    cuts.sort()
    meta["duration"] = duration
    return insert_gaps(_even(observed, n), cuts, lengths)


def sample_variable_cadence(cfg: SimulateConfig, rng: np.random.Generator, meta: dict) -> np.ndarray:
    """Piecewise-constant point density: ``segments`` pieces of [0, T] (uniform cut points), each
    with relative density d ~ U(density); times are the inverse of the density's cumulative
    integral at n evenly spaced quantiles, so the cadence in a piece is ∝ 1/d."""
    duration, n = _uniform(rng, cfg.duration), _integer(rng, cfg.n_points)
    k = _integer(rng, cfg.variable_cadence.segments)
    edges = np.empty(k + 1)
    edges[0], edges[k] = 0.0, duration
    edges[1:k] = rng.uniform(0.0, duration, k - 1)
    edges[1:k].sort()
    density = rng.uniform(*cfg.variable_cadence.density, size=k)
    cumulative = _cumsum0(density * (edges[1:] - edges[:-1]))
    meta["duration"] = duration
    t = np.interp(_even(cumulative[-1], n), cumulative, edges)
    return _strictly_increasing(t)


def sample_seasonal(cfg: SimulateConfig, rng: np.random.Generator, meta: dict) -> np.ndarray:
    """Ground-based seasons: every ``year`` days a season of length s ~ U(season) (clipped to the
    window); a fraction w ~ U(weather_loss) of an even grid over the observed time is lost to
    weather, leaving exactly n points."""
    sc = cfg.seasonal
    duration, n = _uniform(rng, cfg.duration), _integer(rng, cfg.n_points)
    season, loss = _uniform(rng, sc.season), _uniform(rng, sc.weather_loss)
    starts = np.arange(0.0, duration, sc.year)
    lengths = np.minimum(season, duration - starts)  # (n_seasons,)
    cuts = lengths.cumsum()[:-1]  # season ends in observed time
    grid_size = max(n, int(round(n / (1.0 - loss))))
    # Weather removes grid_size - n points, never the first (the curve starts at t = 0).
    drop = rng.choice(grid_size - 1, size=grid_size - n, replace=False, shuffle=False) + 1
    keep = np.ones(grid_size, dtype=bool)
    keep[drop] = False
    u = np.arange(grid_size)[keep] * (lengths.sum() / grid_size)
    meta["duration"] = duration
    return insert_gaps(u, cuts, np.full(cuts.size, sc.year - season))


def sample_space(sc: SpaceConfig, rng: np.random.Generator, meta: dict) -> np.ndarray:
    """A space-telescope pattern: ``blocks`` consecutive blocks of ``segments_per_block`` segments
    of ``block_days / segments_per_block`` days, sampled at the native cadence from each segment
    start, with the last ``gap_days`` of every segment lost to the data downlink.

    Defaults, from the missions' documentation:

    - TESS (``tess``): 27.4-d sectors of two 13.7-d orbits (Ricker et al. 2015, JATIS 1, 014003);
      the science data are downlinked at perigee between the orbits, leaving ~1 d without data
      (Sector 1: 1.13 d paused; Sector 13: 668 cadences = 0.93 d, TESS Data Release Notes,
      Fausnaugh et al.), 2-min cadence for the target light curves: ~18,300 points per sector.
    - Kepler (``kepler``): long cadence 29.4244 min (270 frames of 6.54 s; Kepler Instrument
      Handbook, KSCI-19033), ~93-d quarters between the quarterly rolls, each of three months
      ended by a ~1-d data downlink (Q4: 89.8 d of long-cadence data in 4,397 cadences, monthly
      breaks 0.9–2 d; Kepler Data Release 6 Notes, KSCI-19046): ~4,400 points per quarter.

    A curve is ``blocks`` ~ U{blocks} consecutive blocks (default one). ``max_points > 0`` caps
    the point count by binning: the cadence becomes the smallest multiple of the native one that
    fits. By default momentum dumps, safe modes and quality-flagged cadences are not modelled;
    the mission presets (:mod:`lcgen.simulate.missions`) switch on :func:`drop_losses`.
    """
    blocks = _integer(rng, sc.blocks)
    segment = sc.block_days / sc.segments_per_block
    n_segments = blocks * sc.segments_per_block
    cadence, per_segment = _space_grid(sc, n_segments)
    t = np.arange(n_segments)[:, None] * segment + np.arange(per_segment)[None, :] * cadence
    meta["duration"] = blocks * sc.block_days
    if sc.dump_every_days > 0 or sc.losses[1] > 0:
        return drop_losses(sc, t.ravel(), blocks, rng)
    return t.ravel()


def drop_losses(sc: SpaceConfig, t: np.ndarray, blocks: int, rng: np.random.Generator) -> np.ndarray:
    """Remove the cadences lost to momentum dumps and to extra data losses from ``t``.

    Dumps: every ``dump_every_days`` from a uniform phase, the next ``dump_minutes`` are lost.
    Losses: ``blocks`` × U{losses} intervals of U(loss_days) days starting at uniform times over
    the curve (they may overlap each other and the downlink gaps). The first point always stays,
    and the curve is shifted to start at 0 again.
    """
    lost = np.zeros(t.size, dtype=bool)
    if sc.dump_every_days > 0 and sc.dump_minutes > 0:
        phase = sc.dump_every_days * rng.random()
        lost |= np.mod(t - phase, sc.dump_every_days) < sc.dump_minutes / 1440.0
    if sc.losses[1] > 0:
        n = sum(_integer(rng, sc.losses) for _ in range(blocks))
        starts = rng.uniform(0.0, float(t[-1]), n)
        lengths = rng.uniform(*sc.loss_days, size=n)
        for start, length in zip(starts, lengths):
            lost[np.searchsorted(t, start):np.searchsorted(t, start + length)] = True
    lost[0] = False
    kept = t[~lost]
    return kept - kept[0]


def _space_grid(sc: SpaceConfig, n_segments: int) -> tuple[float, int]:
    """(cadence in days, points per segment) of :func:`sample_space` for ``n_segments`` segments."""
    cadence = sc.cadence_minutes / 1440.0
    usable = sc.block_days / sc.segments_per_block - sc.gap_days
    per_segment = int(usable / cadence + 1e-9) + 1  # cadences in [0, usable]
    if sc.max_points and n_segments * per_segment > sc.max_points:
        cadence *= math.ceil(n_segments * per_segment / sc.max_points)
        per_segment = min(int(usable / cadence + 1e-9) + 1, sc.max_points // n_segments) or 1
    return cadence, per_segment


def longest_curve(cfg: SimulateConfig) -> int:
    """The most points any curve of ``cfg`` can have (over the samplings with a weight > 0), e.g.
    to size memory: ``n_points[1]`` on the ground, the longest run of blocks in space."""
    most = 0
    for name in _SAMPLINGS:
        if getattr(cfg.samplings, name) <= 0:
            continue
        if name in _SPACE:
            sc: SpaceConfig = getattr(cfg, name)
            n_segments = sc.blocks[1] * sc.segments_per_block
            most = max(most, n_segments * _space_grid(sc, n_segments)[1])
        else:
            most = max(most, cfg.n_points[1])
    return most


SAMPLERS: dict[str, Callable] = {
    "regular": sample_regular,
    "random_gaps": sample_random_gaps,
    "variable_cadence": sample_variable_cadence,
    "seasonal": sample_seasonal,
    "tess": lambda cfg, rng, meta: sample_space(cfg.tess, rng, meta),
    "kepler": lambda cfg, rng, meta: sample_space(cfg.kepler, rng, meta),
}


def _strictly_increasing(t: np.ndarray) -> np.ndarray:
    """Nudge any equal neighbours (possible only from float round-off) up by one ulp each."""
    while (bad := t[1:] <= t[:-1]).any():
        idx = np.flatnonzero(bad) + 1
        t[idx] = np.nextafter(t[idx - 1], np.inf)
    return t


# --------------------------------------------------------------------------------------------
# Signals: each returns s(t) (flux units, no offset) and fills its true parameters into meta.


def signal_sinusoid(cfg: SimulateConfig, t: np.ndarray, rng: np.random.Generator, meta: dict) -> np.ndarray:
    """s(t) = A sin(2π t / P + φ),  P ~ U(period), A ~ U(amplitude), φ ~ U(0, 2π)."""
    period, amp = _uniform(rng, cfg.sinusoid.period), _uniform(rng, cfg.sinusoid.amplitude)
    phase = 2 * np.pi * rng.random()
    meta.update(period=period, amplitude=amp, n_components=1.0)
    return amp * np.sin(2 * np.pi * t / period + phase)


def signal_multiperiodic(cfg: SimulateConfig, t: np.ndarray, rng: np.random.Generator, meta: dict) -> np.ndarray:
    """s(t) = Σ_k A_k sin(2π t / P_k + φ_k) over k ~ U{n_components} components; meta keeps the
    strongest component's period and amplitude."""
    mc = cfg.multiperiodic
    k = _integer(rng, mc.n_components)
    periods = rng.uniform(*mc.period, size=k)
    amps = rng.uniform(*mc.amplitude, size=k)
    phases = rng.uniform(0.0, 2 * np.pi, size=k)
    strongest = int(np.argmax(amps))
    meta.update(period=float(periods[strongest]), amplitude=float(amps[strongest]), n_components=float(k))
    # (k, n) then summed over components
    return (amps[:, None] * np.sin(2 * np.pi * t[None, :] / periods[:, None] + phases[:, None])).sum(0)


def ou_process(t: np.ndarray, tau: float, sigma: float, z: np.ndarray) -> np.ndarray:
    """Exact Ornstein-Uhlenbeck (damped random walk) values at times ``t`` from normals ``z``.

    x_0 = σ z_0 (the stationary law N(0, σ²)), and for i ≥ 1, with a_i = exp(−(t_i − t_{i−1})/τ),

        x_i = a_i x_{i−1} + σ sqrt(1 − a_i²) z_i

    (Gillespie 1996; the DRW of Kelly, Bechtold & Siemiginowska 2009), exact for any spacing and
    stationary at every step: Var x_i = σ², Cov(x_i, x_j) = σ² exp(−|t_i − t_j|/τ).

    Vectorised with the closed form of the recursion: with r_i = (t_i − t_0)/τ and innovations
    w_i = σ sqrt(1 − a_i²) z_i,  x_i = e^{−r_i} (x_0 + Σ_{j≤i} e^{r_j} w_j)  (a cumulative sum).
    To keep e^{r} finite the series is cut into blocks spanning at most 500 τ, each restarted from
    the previous block's last value.
    """
    n = t.size
    x = np.empty(n)
    x[0] = sigma * z[0]
    if n == 1:
        return x
    steps = (t[1:] - t[:-1]) / tau  # (n-1,) (np.diff's Python overhead is most of its cost here)
    w = np.empty(n)
    w[0] = 0.0
    w[1:] = sigma * np.sqrt(-np.expm1(-2.0 * steps)) * z[1:]
    r = _cumsum0(steps)  # (n,)
    start = 0
    while start < n - 1:
        stop = max(int(np.searchsorted(r, r[start] + 500.0, side="right")), start + 2)  # exclusive
        rel = r[start + 1:stop] - r[start]
        if rel[-1] > 700.0:  # one step longer than 500 τ: the previous value is forgotten
            x[start + 1] = w[start + 1]
            start += 1
            continue
        x[start + 1:stop] = np.exp(-rel) * (x[start] + (np.exp(rel) * w[start + 1:stop]).cumsum())
        start = stop - 1
    return x


def signal_drw(cfg: SimulateConfig, t: np.ndarray, rng: np.random.Generator, meta: dict) -> np.ndarray:
    """Damped random walk with τ ~ U(tau), σ ~ U(sigma), started from its stationary law
    (see :func:`ou_process`)."""
    tau, sigma = _uniform(rng, cfg.drw.tau), _uniform(rng, cfg.drw.sigma)
    meta.update(tau=tau, sigma=sigma)
    return ou_process(t, tau, sigma, rng.standard_normal(t.size))


def signal_qpo(cfg: SimulateConfig, t: np.ndarray, rng: np.random.Generator, meta: dict) -> np.ndarray:
    """Quasi-periodic oscillation: s(t) = A sin(2π f0 t + φ(t)) with a Brownian phase,
    φ(t_i) − φ(t_{i−1}) ~ N(0, 2D Δt_i), D = π f0 / Q.

    Phase diffusion turns the line into a Lorentzian, ⟨s(t) s(t+Δ)⟩ = (A²/2) cos(2π f0 Δ) e^{−D|Δ|},
    of full width at half maximum D/π = f0/Q in frequency, so Q is the usual quality factor.
    """
    period, q, amp = _uniform(rng, cfg.qpo.period), _uniform(rng, cfg.qpo.q), _uniform(rng, cfg.qpo.amplitude)
    f0 = 1.0 / period
    diffusion = np.pi * f0 / q
    steps = np.sqrt(2.0 * diffusion * (t[1:] - t[:-1])) * rng.standard_normal(t.size - 1)
    phase = 2 * np.pi * rng.random() + _cumsum0(steps)
    meta.update(period=period, q=q, amplitude=amp)
    return amp * np.sin(2 * np.pi * f0 * t + phase)


def signal_rotation(cfg: SimulateConfig, t: np.ndarray, rng: np.random.Generator, meta: dict) -> np.ndarray:
    """Spot-modulated rotation with evolving spots and differential rotation.

    Each spot j (latitude ℓ_j ~ U(−60°, 60°), longitude λ_j, size a_j ~ U(0.3, 1)) rotates with
    P_j = P / (1 − α sin² ℓ_j) and is seen with foreshortening
    μ_j(t) = max(0, cos i sin ℓ_j + sin i cos ℓ_j cos(2π t / P_j + λ_j)) (zero when on the far
    side, which puts power in the harmonics). It grows and decays as a Gaussian
    e^{−(t − t_j)² / (2 L²)} of the spot lifetime L, with t_j spread over [−2L, T + 2L] at a rate
    that keeps ``spots`` alive on average (the first inside [0, T]). The star is inclined by
    cos i ~ U(0, 1), and

        s(t) = −A Σ_j a_j e^{−(t − t_j)² / (2 L²)} μ_j(t)   (≤ 0: the unspotted star is the offset).

    A toy version of the spot models used to validate rotation-period methods (Aigrain et al.
    2015, MNRAS 450, 3211).
    """
    rc = cfg.rotation
    period, amp = _uniform(rng, rc.period), _uniform(rng, rc.amplitude)
    lifetime, alive, shear = _uniform(rng, rc.spot_lifetime), _uniform(rng, rc.spots), _uniform(rng, rc.shear)
    cos_i = rng.random()
    sin_i = math.sqrt(1.0 - cos_i**2)
    span = float(t[-1] - t[0])
    window = span + 4.0 * lifetime
    n_spots = int(min(rc.max_spots, max(1, rng.poisson(alive * window / (math.sqrt(2 * math.pi) * lifetime)))))
    centres = rng.uniform(-2.0 * lifetime, span + 2.0 * lifetime, n_spots) + t[0]
    centres[0] = t[0] + span * rng.random()
    lat = rng.uniform(-np.pi / 3, np.pi / 3, n_spots)
    lat[0] = abs(lat[0])  # the first spot on the hemisphere facing us: some signal is always seen
    lon = rng.uniform(0.0, 2 * np.pi, n_spots)
    size = rng.uniform(0.3, 1.0, n_spots)
    spot_period = period / (1.0 - shear * np.sin(lat) ** 2)
    # (n_spots, n) foreshortening and evolution
    mu = cos_i * np.sin(lat)[:, None] + sin_i * np.cos(lat)[:, None] * np.cos(
        2 * np.pi * t[None, :] / spot_period[:, None] + lon[:, None])
    envelope = np.exp(-0.5 * ((t[None, :] - centres[:, None]) / lifetime) ** 2)
    meta.update(period=period, amplitude=amp, spot_lifetime=lifetime, n_spots=float(n_spots), shear=shear,
                inclination=math.degrees(math.acos(cos_i)))
    return -amp * (size[:, None] * envelope * np.maximum(mu, 0.0)).sum(0)


SIGNALS: dict[str, Callable] = {
    "sinusoid": signal_sinusoid,
    "multiperiodic": signal_multiperiodic,
    "drw": signal_drw,
    "qpo": signal_qpo,
    "rotation": signal_rotation,
}


# --------------------------------------------------------------------------------------------
# Overlays


def disk_overlap(z: np.ndarray, k: float) -> np.ndarray:
    """λ(z, k): the fraction of a uniform disk of radius 1 covered by a disk of radius k < 1 whose
    centre is z away (Mandel & Agol 2002, ApJ 580, L171, eq. 1, the uniform source):

        λ = 0                                              for z ≥ 1 + k
        λ = k²                                             for z ≤ 1 − k
        λ = [k² κ0 + κ1 − sqrt(4z² − (1 + z² − k²)²) / 2] / π   otherwise,
        κ0 = arccos((k² + z² − 1) / (2kz)),  κ1 = arccos((1 − k² + z²) / (2z)).
    """
    z = np.asarray(z, dtype=np.float64)
    lam = np.where(z <= 1.0 - k, k * k, 0.0)
    part = (z > 1.0 - k) & (z < 1.0 + k)
    if part.any():
        zp = z[part]
        kappa0 = np.arccos(np.clip((k * k + zp * zp - 1.0) / (2.0 * k * zp), -1.0, 1.0))
        kappa1 = np.arccos(np.clip((1.0 - k * k + zp * zp) / (2.0 * zp), -1.0, 1.0))
        root = np.sqrt(np.maximum(4.0 * zp * zp - (1.0 + zp * zp - k * k) ** 2, 0.0))
        # Near the contacts the three terms nearly cancel (round-off ~1e-8 of k²): keep λ in [0, k²].
        lam[part] = np.clip((k * k * kappa0 + kappa1 - 0.5 * root) / np.pi, 0.0, k * k)
    return lam


def eclipse_profiles(t: np.ndarray, period: float, epoch: float, a_rstar: float, impact: float,
                     k: float) -> tuple[np.ndarray, np.ndarray]:
    """Transit and occultation profiles, each in [0, 1] (1 = fully in eclipse), of a circular orbit.

    The sky-projected separation in stellar radii is z = (a/R*) sqrt(sin²φ + cos²i cos²φ), with
    φ = 2π (t − epoch) / P and b = (a/R*) cos i (Winn 2010, "Transits and Occultations", eq. 5).
    With the planet in front (cos φ > 0) the transit blocks λ(z, k) of the star
    (:func:`disk_overlap`), i.e. ``primary`` = λ / k²; behind it (cos φ < 0) the star hides the
    same overlap area π λ of the planet's disk π k², i.e. ``secondary`` = λ / k². Uniform disks
    (no limb darkening): the bottom is flat at exactly k² between second and third contact.
    """
    phase = 2.0 * np.pi * (t - epoch) / period
    cos_i = impact / a_rstar
    cos_phi = np.cos(phase)
    z = a_rstar * np.sqrt(np.sin(phase) ** 2 + (cos_i * cos_phi) ** 2)
    covered = disk_overlap(z, k) / (k * k)
    front = cos_phi > 0
    return np.where(front, covered, 0.0), np.where(front, 0.0, covered)


def contact_durations(period: float, a_rstar: float, impact: float, k: float) -> tuple[float, float]:
    """(T14, T23) in days for a circular orbit (Winn 2010, eqs. 14-15):

        T14 = (P/π) asin( sqrt((1 + k)² − b²) / ((a/R*) sin i) ),
        T23 = (P/π) asin( sqrt((1 − k)² − b²) / ((a/R*) sin i) ),   (a/R*)² sin² i = (a/R*)² − b².
    """
    x = math.sqrt(a_rstar**2 - impact**2)
    t14 = period / math.pi * math.asin(min(1.0, math.sqrt(max((1 + k) ** 2 - impact**2, 0.0)) / x))
    t23 = period / math.pi * math.asin(min(1.0, math.sqrt(max((1 - k) ** 2 - impact**2, 0.0)) / x))
    return t14, t23


def transit_geometry(period: float, k: float, duration: float, ingress: float, *,
                     min_a_rstar: float = 2.0) -> tuple[float, float]:
    """(a/R*, b) of the circular orbit whose transit lasts ``duration`` (T14) with ingress
    τ = T12 = ``ingress`` · T14, for a planet of radius ratio k.

    Exact inversion of :func:`contact_durations`: with s_j = sin(π T_j / P) and
    X = (a/R*)² − b², the two contact equations give X s14² = (1 + k)² − b² and
    X s23² = (1 − k)² − b², hence X = 4k / (s14² − s23²), b² = (1 + k)² − X s14², (a/R*)² = X + b².
    Needs ``ingress`` ≥ the central (b = 0) value and T23 = (1 − 2·ingress) T14 > 0; the caller
    keeps to those (:func:`add_overlays`). If the result has a/R* < ``min_a_rstar`` the orbit is
    put at ``min_a_rstar`` and b solved (Brent's method; the ingress fraction grows
    monotonically with b) so the ingress fraction is kept; the duration then comes out shorter.
    """
    s14 = math.sin(math.pi * duration / period) ** 2
    s23 = math.sin(math.pi * duration * (1.0 - 2.0 * ingress) / period) ** 2
    x = 4.0 * k / (s14 - s23)
    b2 = max((1.0 + k) ** 2 - x * s14, 0.0)
    a_rstar = math.sqrt(x + b2)
    if a_rstar >= min_a_rstar:
        return a_rstar, math.sqrt(b2)
    a_rstar = min_a_rstar

    def excess(b: float) -> float:  # realised minus wanted ingress fraction, increasing in b
        t14, t23 = contact_durations(period, a_rstar, b, k)
        return 0.5 * (1.0 - t23 / t14) - ingress

    if excess(0.0) >= 0:
        return a_rstar, 0.0
    from scipy.optimize import brentq

    return a_rstar, brentq(excess, 0.0, 1.0 - k, xtol=1e-13, rtol=1e-13)


def central_ingress(period: float, k: float, duration: float) -> float:
    """Ingress fraction τ / T14 of a central (b = 0) transit of duration T14: the smallest any
    impact parameter gives (sin(π T23 / P) = sin(π T14 / P) (1 − k) / (1 + k) at b = 0)."""
    theta14 = math.pi * duration / period
    theta23 = math.asin(math.sin(theta14) * (1.0 - k) / (1.0 + k))
    return 0.5 * (1.0 - theta23 / theta14)


def flare_profile(t: np.ndarray, peaks: np.ndarray, amps: np.ndarray, rise: np.ndarray,
                  decay: np.ndarray) -> np.ndarray:
    """Sum of fast-rise exponential-decay flares: a_k e^{(t − t_k)/r_k} before the peak t_k and
    a_k e^{−(t − t_k)/d_k} after it (the classic FRED shape; cf. Davenport et al. 2014)."""
    dt = t[None, :] - peaks[:, None]  # (n_flares, n)
    scale = np.where(dt < 0, rise[:, None], decay[:, None])
    return (amps[:, None] * np.exp(-np.abs(dt) / scale)).sum(0)


def power_law_noise(t: np.ndarray, beta: float, rng: np.random.Generator, *, max_modes: int = 16384) -> np.ndarray:
    """Gaussian noise with PSD ∝ f^−β at arbitrary times, by random-phase spectral synthesis
    (Timmer & König 1995, A&A 300, 707), normalised to unit standard deviation over ``t``.

    x(t) = Re Σ_{k=1}^{K} c_k e^{2πi k Δf t},  c_k = (g_k + i h_k) (k Δf)^{−β/2},  g, h ~ N(0, 1),
    with Δf = 1/(2T) (a base period twice the span so x is not periodic over the window) and
    K Δf ≥ the Nyquist frequency of the median cadence (at most ``max_modes`` modes). The sum is a
    type-2 non-uniform FFT (finufft), exact to 1e-9.
    """
    import finufft

    t0 = t - t[0]
    span = max(float(t0[-1]), 1e-12)
    df = 0.5 / span
    nyquist = 0.5 / max(float(np.median(np.diff(t0))) if t0.size > 1 else span, 1e-12)
    k_max = int(min(max_modes, max(1, math.ceil(nyquist / df))))
    k = np.arange(1, k_max + 1)
    coef = (rng.standard_normal(k_max) + 1j * rng.standard_normal(k_max)) * (k * df) ** (-beta / 2)
    modes = np.zeros(2 * k_max + 2, dtype=np.complex128)  # finufft order: index m ↔ mode m − (k_max + 1)
    modes[k_max + 2:] = coef
    x = finufft.nufft1d2(2 * np.pi * df * t0, modes, eps=1e-9, isign=1, nthreads=1).real
    std = x.std()
    return x / std if std > 0 else x


def add_overlays(cfg: SimulateConfig, t: np.ndarray, flux: np.ndarray, rng: np.random.Generator,
                 meta: dict) -> np.ndarray:
    """Apply the optional overlays to the noise-free flux ``flux = offset + s`` (returns a new array).

    Transits/eclipses multiply the stellar flux by 1 − δ (primary + ratio · secondary), the
    uniform-disk profiles of :func:`eclipse_profiles` for the orbit that :func:`transit_geometry`
    finds for the drawn duration and ingress fraction (δ = k²; realised values in ``meta``);
    flares add offset·a_k·FRED; red noise adds rms·x(t). One uniform decides each overlay, in
    this order, so each overlay's draws do not depend on the others' probabilities.
    """
    tc, fc, rc = cfg.transit, cfg.flare, cfg.red_noise
    use_transit, use_flare, use_red = rng.random(3) < [tc.probability, fc.probability, rc.probability]
    offset = meta["offset"]
    if use_transit:
        period, depth = _uniform(rng, tc.period), _uniform(rng, tc.depth)
        k = math.sqrt(depth)  # uniform disks: the flat bottom is exactly k² deep
        # No transit can last longer than the central one at a/R* = min_a_rstar.
        longest = period / math.pi * math.asin(min(1.0, (1.0 + k) / tc.min_a_rstar))
        duration = min(_uniform(rng, tc.duration), longest)
        # Ingress fractions below the central-transit value need b² < 0: draw from the part
        # of the configured range that geometry allows (its lowest value if none is left).
        floor = central_ingress(period, k, duration)
        lo, hi = max(tc.ingress[0], floor), max(tc.ingress[1], floor)
        ingress = _uniform(rng, [lo, hi])
        ratio, epoch = _uniform(rng, tc.secondary), period * rng.random()
        a_rstar, impact = transit_geometry(period, k, duration, ingress, min_a_rstar=tc.min_a_rstar)
        t14, t23 = contact_durations(period, a_rstar, impact, k)
        primary, secondary = eclipse_profiles(t, period, epoch, a_rstar, impact, k)
        flux = flux * (1.0 - depth * (primary + ratio * secondary))
        meta.update(transit_period=period, transit_depth=depth, transit_duration=t14,
                    transit_ingress=0.5 * (1.0 - t23 / t14), transit_a_rstar=a_rstar, transit_impact=impact,
                    transit_epoch=epoch, secondary_ratio=ratio)
    if use_flare:
        rate = _uniform(rng, fc.rate)
        span = float(t[-1] - t[0])
        n = 1 + int(rng.poisson(rate * span))
        peaks = t[0] + rng.uniform(0.0, span, n)
        decay = rng.uniform(*fc.decay, size=n)
        rise = decay * rng.uniform(*fc.rise, size=n)
        amps = offset * rng.uniform(*fc.amplitude, size=n)
        flux = flux + flare_profile(t, peaks, amps, rise, decay)
        meta.update(n_flares=float(n), flare_rate=rate)
    if use_red:
        rms, beta = _uniform(rng, rc.rms), _uniform(rng, rc.beta)
        flux = flux + rms * power_law_noise(t, beta, rng, max_modes=rc.max_modes)
        meta.update(red_rms=rms, red_beta=beta)
    return flux


# --------------------------------------------------------------------------------------------
# One curve, a chunk of curves, a whole file


@dataclass
class MockCurve:
    time: np.ndarray  # (n,) float64 days, strictly increasing
    flux: np.ndarray  # (n,) float64 = signal + noise
    flux_err: np.ndarray  # (n,) float64 = std of the noise drawn at each point
    signal: np.ndarray  # (n,) float64 noise-free flux (offset included)
    lc_type: str
    sampling: str
    meta: dict  # META_FLOAT columns, NaN where not applicable


_TYPES = tuple(f.name for f in dataclasses.fields(TypeMix))
_SAMPLINGS = tuple(f.name for f in dataclasses.fields(SamplingMix))


# numpy's SeedSequence (numpy/random/bit_generator.pyx, stable since numpy 1.19) and PCG64 seeding
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R, _M32, _M128 = 0xCA01F9DD, 0x4973F715, 0xFFFFFFFF, (1 << 128) - 1
_PCG_MULT = 0x2360ED051FC65DA44385DF649FCCF645


def pcg64_states(seed: int, start: int, stop: int, tail: tuple[int, ...] = ()) -> list[dict]:
    """The ``bit_generator.state`` of ``np.random.default_rng(np.random.SeedSequence(seed,
    spawn_key=(i, *tail)))`` for i in ``start .. stop-1``, the seed hashing done for all i at once.

    Building the generators one by one costs ~7.5 µs a curve (most of it SeedSequence's Python);
    setting a reused generator's state from these dicts ~1.5 µs. SeedSequence: the entropy words
    (the seed's 32-bit words, zero-padded to the pool size of 4, then the spawn key's words) are
    hashed into a pool of 4 words (``mix_entropy``), and ``generate_state(4, uint64)`` hashes the
    pool into PCG64's 128-bit seed and stream; PCG64 then takes two steps (``pcg64_set_seed``).
    Exact: a test compares every field with numpy's own for many seeds and indices."""
    if not (0 <= start <= stop <= 2 ** 32) or any(not 0 <= k < 2 ** 32 for k in tail):
        raise ValueError("pcg64_states covers spawn keys of 32-bit words")
    words = []
    n = int(seed)
    while True:  # numpy's _int_to_uint32_array: little-endian 32-bit words, [0] for 0
        words.append(n & _M32)
        n >>= 32
        if not n:
            break
    words += [0] * (4 - len(words))
    index = np.arange(start, stop, dtype=np.uint32)
    entropy = [np.full(index.size, w, np.uint32) for w in words] + [index] + [
        np.full(index.size, w, np.uint32) for w in tail]
    hash_const = _INIT_A

    def hashmix(value: np.ndarray) -> np.ndarray:
        nonlocal hash_const
        value = value ^ np.uint32(hash_const)
        hash_const = (hash_const * _MULT_A) & _M32
        value = value * np.uint32(hash_const)
        return value ^ (value >> np.uint32(16))

    def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.uint32(_MIX_L) * x - np.uint32(_MIX_R) * y
        return out ^ (out >> np.uint32(16))

    pool = [hashmix(entropy[i]) for i in range(4)]
    for i_src in range(4):
        for i_dst in range(4):
            if i_src != i_dst:
                pool[i_dst] = mix(pool[i_dst], hashmix(pool[i_src]))
    for extra in entropy[4:]:
        for i_dst in range(4):
            pool[i_dst] = mix(pool[i_dst], hashmix(extra))
    out, hash_const = [], _INIT_B
    for i in range(8):  # generate_state(4, uint64): 8 words, pairs read as little-endian uint64
        value = pool[i % 4] ^ np.uint32(hash_const)
        hash_const = (hash_const * _MULT_B) & _M32
        value = value * np.uint32(hash_const)
        out.append((value ^ (value >> np.uint32(16))).astype(np.uint64))
    seed64 = [(out[2 * j] | (out[2 * j + 1] << np.uint64(32))).tolist() for j in range(4)]
    states = []
    for s0, s1, i0, i1 in zip(*seed64):
        inc = (((i0 << 64) | i1) << 1 | 1) & _M128
        state = (((inc + ((s0 << 64) | s1)) & _M128) * _PCG_MULT + inc) & _M128  # two steps from 0
        states.append({"bit_generator": "PCG64", "state": {"state": state, "inc": inc}, "has_uint32": 0,
                       "uinteger": 0})
    return states


def _choices(mix, names: tuple[str, ...]) -> tuple[float, list[tuple[str, float]], str]:
    """(total weight, (name, cumulative weight) in order, the last name with a weight > 0) of a mix."""
    weights = [getattr(mix, name) for name in names]
    cumulative, total = [], 0.0
    for name, w in zip(names, weights):
        total += w
        cumulative.append((name, total))
    return sum(weights), cumulative, next(name for name, w in zip(names[::-1], weights[::-1]) if w > 0)


def _pick(choices: tuple[float, list[tuple[str, float]], str], u: float) -> str:
    """The name whose share of the cumulative weights holds u·total (u in [0, 1))."""
    total, cumulative, last = choices
    target = u * total
    for name, up_to in cumulative:
        if target < up_to:
            return name
    return last  # round-off at u ~ 1


_META_TEMPLATE = dict.fromkeys(META_FLOAT, math.nan)


def simulate_curve(cfg: SimulateConfig, index: int) -> MockCurve:
    """Simulate curve ``index`` of the data set defined by ``cfg`` (depends on nothing else).

    Draws come from ``SeedSequence(cfg.seed, spawn_key=(index,))``; the overlays use the child
    ``spawn_key=(index, 1)`` so switching them on leaves the base curve and its noise unchanged.
    """
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(index,)))
    extra = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(index, 1))) if _overlays(cfg) else None
    return _simulate(cfg, index, rng, extra, _choices(cfg.types, _TYPES), _choices(cfg.samplings, _SAMPLINGS))


def _overlays(cfg: SimulateConfig) -> bool:
    return cfg.transit.probability > 0 or cfg.flare.probability > 0 or cfg.red_noise.probability > 0


def _simulate(cfg: SimulateConfig, index: int, rng: np.random.Generator, extra: np.random.Generator | None,
              types: tuple, samplings: tuple) -> MockCurve:
    """:func:`simulate_curve` from its generators (``extra``: the overlays', None without
    overlays) and the mixes' :func:`_choices`."""
    u_type, u_sampling = rng.random(2)
    lc_type = _pick(types, u_type)
    sampling = _pick(samplings, u_sampling)
    meta = _META_TEMPLATE.copy()
    t = SAMPLERS[sampling](cfg, rng, meta)
    for _ in range(100):  # a flat signal has no scale for the noise: draw it again
        s = SIGNALS[lc_type](cfg, t, rng, meta)
        mean = s.sum() / s.size
        dev = s - mean
        # np.std(s) without its overhead; numpy's pairwise sum, not BLAS dot, whose last bit
        # depends on the process (the file must not depend on the worker count)
        spread = math.sqrt((dev * dev).sum() / s.size)
        if spread > 1e-6 * abs(mean):
            break
    else:
        raise LcgenError(f"{lc_type} signals come out flat 100 times in a row (curve {index}); "
                         f"check the {lc_type}.* amplitude settings")
    offset, snr = _uniform(rng, cfg.offset), _uniform(rng, cfg.snr)
    z = rng.standard_normal(2 * t.size)  # [error scatter | noise]
    scatter = np.exp(cfg.error_scatter * z[:t.size])
    scatter *= 1.0 / math.sqrt((scatter * scatter).sum() / t.size)  # rms(scatter) = 1 exactly
    noise_rms = spread / snr
    ppm = getattr(cfg, sampling).noise_ppm if sampling in _SPACE else None
    if ppm is not None and ppm[1] > 0:  # a mission's photometric precision, not a drawn snr
        noise_rms = offset * 1e-6 * math.exp(_uniform(rng, [math.log(ppm[0]), math.log(ppm[1])]))
        snr = spread / noise_rms
    flux_err = noise_rms * scatter
    noise = flux_err * z[t.size:]
    meta.update(offset=offset, snr=snr, noise_rms=noise_rms)
    clean = offset + s
    if extra is not None:
        clean = add_overlays(cfg, t, clean, extra, meta)
        meta["snr"] = float(np.std(clean)) / noise_rms  # what was realised, overlays included
    return MockCurve(time=t, flux=clean + noise, flux_err=flux_err, signal=clean,
                     lc_type=lc_type, sampling=sampling, meta=meta)


@dataclass
class Chunk:
    """Curves [start, stop) packed for transfer between processes: 1-D concatenations + lengths."""

    start: int
    lengths: np.ndarray  # (m,) int64
    time: np.ndarray  # (P,) float64
    flux: np.ndarray  # (P,) float32
    flux_err: np.ndarray  # (P,) float32
    signal: np.ndarray  # (P,) float32
    meta: dict  # column -> (m,) array

    def split(self, key: str) -> list[np.ndarray]:
        return np.split(getattr(self, key), np.cumsum(self.lengths)[:-1])


def simulate_chunk(cfg: SimulateConfig, start: int, stop: int) -> Chunk:
    """Simulate curves ``start .. stop-1`` (as :func:`simulate_curve`) and pack them."""
    types, samplings = _choices(cfg.types, _TYPES), _choices(cfg.samplings, _SAMPLINGS)
    rng, extra = np.random.default_rng(0), np.random.default_rng(0)  # states set per curve
    extras = pcg64_states(cfg.seed, start, stop, (1,)) if _overlays(cfg) else None
    curves = []
    for k, state in enumerate(pcg64_states(cfg.seed, start, stop)):
        rng.bit_generator.state = state
        if extras is not None:
            extra.bit_generator.state = extras[k]
        curves.append(_simulate(cfg, start + k, rng, extra if extras is not None else None, types, samplings))
    meta = {
        "lc_type": np.array([c.lc_type for c in curves]),
        "sampling": np.array([c.sampling for c in curves]),
        "n_points": np.array([c.time.size for c in curves], dtype=np.int64),
    }
    for key in META_FLOAT:
        meta[key] = np.array([c.meta[key] for c in curves], dtype=np.float64)

    def cat(key: str, dtype) -> np.ndarray:
        return np.concatenate([getattr(c, key) for c in curves], dtype=dtype, casting="same_kind")

    return Chunk(start=start, lengths=meta["n_points"].copy(), time=cat("time", np.float64),
                 flux=cat("flux", np.float32), flux_err=cat("flux_err", np.float32),
                 signal=cat("signal", np.float32), meta=meta)


def iter_chunks(cfg: SimulateConfig, *, workers: int = 1, chunk_size: int = 256):
    """Yield :class:`Chunk` objects in index order, computed in ``workers`` processes.

    At most ``2 * workers`` chunks are in flight, so memory stays bounded whatever ``n_samples``.
    """
    bounds = [(s, min(s + chunk_size, cfg.n_samples)) for s in range(0, cfg.n_samples, chunk_size)]
    if workers <= 1 or len(bounds) == 1:
        for start, stop in bounds:
            yield simulate_chunk(cfg, start, stop)
        return
    with process_pool(min(workers, len(bounds))) as pool:
        pending: list[cf.Future] = []
        todo = iter(bounds)
        for start, stop in todo:
            pending.append(pool.submit(simulate_chunk, cfg, start, stop))
            if len(pending) >= 2 * workers:
                break
        while pending:
            chunk = result(pending.pop(0))
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(simulate_chunk, cfg, *nxt))
            yield chunk


def generate(cfg: SimulateConfig, *, workers: int | None = None, chunk_size: int = 256,
             progress: Callable[[int], None] | None = None) -> dict:
    """Simulate ``cfg.n_samples`` light curves and write them to ``cfg.output`` (raw format).

    The file is written under ``NAME.partial`` and renamed at the end, so an interrupted run
    (Ctrl-C included) leaves nothing under the final name. ``workers`` (default: all cores) and
    ``chunk_size`` change the speed only, never the bytes. ``progress(n)`` is called with the
    number of curves finished after each chunk. Returns a summary dict.
    """
    from lcgen.io import RawWriter

    check_config(cfg)
    if chunk_size < 1:
        raise LcgenError(f"chunk_size = {chunk_size}: must be >= 1")
    workers = min(check_workers(workers), math.ceil(cfg.n_samples / chunk_size))  # no idle processes
    # Up to 2 packed chunks per worker in flight (~28 bytes a point) plus one curve's temporaries.
    most = longest_curve(cfg)  # native-cadence TESS/Kepler curves: 18,290 / 4,407 points a block
    check_memory(2 * workers * min(chunk_size, cfg.n_samples) * most * 28 + workers * most * 128,
                 f"curves of up to {most:,} points")
    begin = _time.perf_counter()
    types: Counter = Counter()
    samplings: Counter = Counter()
    chunks = iter_chunks(cfg, workers=workers, chunk_size=chunk_size)
    # Exit order: the writer removes its partial file, then the pool shuts down, then Ctrl-C is restored.
    with deferred_interrupt() as check_interrupt, contextlib.closing(chunks), RawWriter(cfg.output, cfg) as writer:
        for chunk in chunks:
            check_interrupt()
            writer.append_packed(chunk.lengths, {key: getattr(chunk, key) for key in ("time", "flux", "flux_err", "signal")},
                                 chunk.meta)
            types.update(chunk.meta["lc_type"].tolist())
            samplings.update(chunk.meta["sampling"].tolist())
            if progress is not None:
                progress(len(chunk.lengths))
            check_interrupt()
        n_points = writer.n_points
    seconds = _time.perf_counter() - begin
    return {
        "output": str(cfg.output), "curves": cfg.n_samples, "points": int(n_points),
        "seconds": seconds, "curves_per_s": cfg.n_samples / seconds if seconds > 0 else math.inf,
        "types": dict(sorted(types.items())), "samplings": dict(sorted(samplings.items())),
        "workers": workers,
    }
