"""Mission-like mock presets for ``lcgen generate --preset NAME``: Kepler and TESS photometry.

A preset is a set of :class:`lcgen.simulate.SimulateConfig` settings laid over the defaults
(before ``--config``, flags and ``--set``, which still win), so every number below can be changed
and the resolved config stored in the raw file says what was used. Flux is relative (offset 1),
noise is the mission's per-point precision in ppm (``noise_ppm``, log-uniform: a spread of stellar
magnitudes) instead of a drawn S/N, and the variability classes have the amplitudes and time
scales seen in the missions' data.

Sampling (cadence, block lengths, downlink gaps: the TESS/Kepler samplers of
:func:`lcgen.simulate.mocks.sample_space`, whose docstring gives their sources), plus

- **Kepler long cadence** (``kepler-lc``): 29.4244 min; 1–4 quarters of ~93 d with the monthly
  ~1-d downlinks. Per-point noise 40–1,000 ppm: the shot noise of 4.6e9 e⁻ per 6.5 h at
  Kp = 12 (Koch et al. 2010, ApJ 713, L79) is ~55 ppm per 30 min, and the 6.5-h CDPP of quiet
  Kp 11.5–12 dwarfs is ~30 ppm, ~100 ppm per 30-min point (Gilliland et al. 2011, ApJS 197, 6);
  ~700 ppm at Kp = 16. Extra losses: 0–1 per quarter of 0.5–4 d (safe modes and pointing
  tweaks; Kepler Data Characteristics Handbook, KSCI-19040).
- **Kepler short cadence** (``kepler-sc``): 58.85 s (9 frames of 6.54 s; Kepler Instrument
  Handbook, KSCI-19033), targets assigned by the ~31-d month between downlinks; 1–3 months. Per-point
  noise ×√30 of long cadence: 200–5,500 ppm.
- **TESS 2-min** (``tess-2min``): 27.4-d sectors of two orbits with the ~1-d perigee downlink;
  1–2 sectors. Per-point noise 250–10,000 ppm (T ≈ 7–13): the 1-h noise of Sullivan et al.
  2015 (ApJ 809, 77) and the 60 ppm h^½ systematic floor (Ricker et al. 2015) times √30.
  Momentum dumps every 3.125 d lose ~10 min (Sectors 1–13 dumped every 2.5–3.1 d; TESS Data
  Release Notes, Fausnaugh et al.); 0–1 extra losses per sector of 0.5–3 d (scattered light and
  pointing excluded at orbit starts, same notes).
- **TESS full-frame images** (``tess-ffi``): 10-min cadence (Sectors 27–55; 30 min before,
  200 s after), fainter stars: per-point noise 200–15,000 ppm; gaps as 2-min.
- **Mission mix** (``missions``): Kepler long cadence and TESS 2-min, one quarter or sector per
  curve, 3 Kepler curves for each TESS curve, so that a 256-point window cut comes from either
  about equally often (a sector holds ~4× the points of a quarter): the pretraining data of the
  bundled model.

Variability (every preset; the classes are the simulator's signal types and overlays):

- spotted rotation (30 %): P 0.5–40 d, spot dips 0.05–2 % (McQuillan, Mazeh & Aigrain 2014,
  ApJS 211, 24: Kepler rotation periods 0.2–70 d, amplitudes ~0.1–2 %);
- granulation (25 %): a damped random walk, the Lorentzian (Harvey 1985) background of
  convection, σ 30–1,000 ppm, τ 0.02–2 d (dwarfs to red giants; Mathur et al. 2011, ApJ 741, 119;
  Kallinger et al. 2014, A&A 570, A41);
- pulsation: multi-periodic (15 %, δ Sct and γ Dor: 2–5 modes of 0.02–3 d, 50 ppm–0.5 %;
  Uytterhoeven et al. 2011, A&A 534, A125) and single-periodic (15 %, ellipsoidal/reflection
  binaries and single-mode pulsators: 0.1–10 d, 0.02–2 %);
- quasi-periodic (15 %): Q 2–20 over 0.5–20 d, 0.01–0.5 % (semi-regular giants, evolving spots);
- eclipses/transits on 15 % of curves: depths 100 ppm (planets) to 30 % (eclipsing binaries,
  Prša et al. 2011, AJ 141, 83), periods 0.3–30 d, durations 1–10 h, secondaries 0–0.8 deep;
- flares on 10 %: 0.1–20 % peaks (Davenport 2016, ApJ 829, 23; Günther et al. 2020, AJ 159,
  60), decay 5 min–1.2 h, 0.05–1 per day;
- red noise on 50 %: rms 10–300 ppm, PSD slope 1–3 (instrumental drifts and unresolved
  stellar signal).

Not modelled: the flux integrated over each exposure (values are instantaneous, which matters
for flares at 30-min cadence), the missions' systematics (focus drift, pointing jitter, cosmic
rays), the distribution of stellar magnitudes (noise is log-uniform over the range), and
blocks from different years (a curve's blocks follow each other).
"""

from __future__ import annotations

import copy

from lcgen.config import merge
from lcgen.errors import LcgenError
from lcgen.simulate.mocks import SimulateConfig

_TYPES = {"sinusoid": 0.15, "multiperiodic": 0.15, "drw": 0.25, "qpo": 0.15, "rotation": 0.30}
_NO_GROUND = {"regular": 0.0, "random_gaps": 0.0, "variable_cadence": 0.0, "seasonal": 0.0}

# Settings shared by every preset: relative flux, realistic amplitudes (sources above).
_STARS = {
    "offset": [1.0, 1.0],
    "error_scatter": 0.05,  # pipeline errors vary little from cadence to cadence
    "types": _TYPES,
    "sinusoid": {"period": [0.1, 10.0], "amplitude": [2e-4, 2e-2]},
    "multiperiodic": {"n_components": [2, 5], "period": [0.02, 3.0], "amplitude": [5e-5, 5e-3]},
    "drw": {"tau": [0.02, 2.0], "sigma": [3e-5, 1e-3]},
    "qpo": {"period": [0.5, 20.0], "q": [2.0, 20.0], "amplitude": [1e-4, 5e-3]},
    "rotation": {"period": [0.5, 40.0], "amplitude": [5e-4, 2e-2], "spot_lifetime": [10.0, 100.0]},
    "transit": {"probability": 0.15, "period": [0.3, 30.0], "depth": [1e-4, 0.3],
                "duration": [0.04, 0.4], "secondary": [0.0, 0.8]},
    "flare": {"probability": 0.10, "rate": [0.05, 1.0], "amplitude": [1e-3, 0.2], "decay": [0.0035, 0.05],
              "rise": [0.1, 0.5]},
    "red_noise": {"probability": 0.5, "rms": [1e-5, 3e-4], "beta": [1.0, 3.0]},
}

KEPLER_LC = {"cadence_minutes": 29.4244, "block_days": 93.0, "segments_per_block": 3, "gap_days": 1.0,
             "blocks": [1, 4], "noise_ppm": [40.0, 1000.0], "losses": [0, 1], "loss_days": [0.5, 4.0]}
KEPLER_SC = {"cadence_minutes": 58.85 / 60.0, "block_days": 31.0, "segments_per_block": 1, "gap_days": 1.0,
             "blocks": [1, 3], "noise_ppm": [200.0, 5500.0], "losses": [0, 1], "loss_days": [0.5, 4.0]}
TESS_2MIN = {"cadence_minutes": 2.0, "block_days": 27.4, "segments_per_block": 2, "gap_days": 1.0,
             "blocks": [1, 2], "noise_ppm": [250.0, 10000.0], "dump_every_days": 3.125, "dump_minutes": 10.0,
             "losses": [0, 1], "loss_days": [0.5, 3.0]}
TESS_FFI = {**TESS_2MIN, "cadence_minutes": 10.0, "noise_ppm": [200.0, 15000.0]}


def _preset(description: str, samplings: dict, **sections) -> tuple[str, dict]:
    return description, {**copy.deepcopy(_STARS), "samplings": {**_NO_GROUND, "tess": 0.0, "kepler": 0.0,
                                                                 **samplings}, **sections}


PRESETS: dict[str, tuple[str, dict]] = {
    "kepler-lc": _preset("Kepler long cadence (29.4 min), 1-4 quarters", {"kepler": 1.0}, kepler=KEPLER_LC),
    "kepler-sc": _preset("Kepler short cadence (58.9 s), 1-3 months", {"kepler": 1.0}, kepler=KEPLER_SC),
    "tess-2min": _preset("TESS 2-min target pixels, 1-2 sectors", {"tess": 1.0}, tess=TESS_2MIN),
    "tess-ffi": _preset("TESS full-frame images (10 min), 1-2 sectors", {"tess": 1.0}, tess=TESS_FFI),
    "missions": _preset("Kepler long cadence and TESS 2-min, one quarter or sector a curve, 3:1",
                        {"kepler": 0.75, "tess": 0.25},
                        kepler={**KEPLER_LC, "blocks": [1, 1]}, tess={**TESS_2MIN, "blocks": [1, 1]}),
}


def preset_config(name: str) -> SimulateConfig:
    """The default :class:`SimulateConfig` with preset ``name``'s settings laid over it."""
    if name not in PRESETS:
        raise LcgenError(f"unknown mock preset {name!r}; choose one of {', '.join(PRESETS)}")
    return merge(SimulateConfig(), copy.deepcopy(PRESETS[name][1]))
