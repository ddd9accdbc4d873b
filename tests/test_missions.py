"""Mission-like mock presets (lcgen/simulate/missions.py): each produces the cadence, span, gaps and noise
level it claims (numbers from the preset tables, checked on the simulated curves)."""

import math

import numpy as np
import pytest

from lcgen.errors import LcgenError
from lcgen.io import read_raw
from lcgen.simulate.missions import PRESETS, preset_config
from lcgen.simulate.mocks import check_config, simulate_curve

from tests.conftest import run_cli

SPACE = {"kepler-lc": "kepler", "kepler-sc": "kepler", "tess-2min": "tess", "tess-ffi": "tess"}


def _gaps(t: np.ndarray, cadence_days: float) -> np.ndarray:
    """Lengths (days) of the gaps in t: spacings longer than 1.5 cadences, minus one cadence."""
    d = np.diff(t)
    return d[d > 1.5 * cadence_days] - cadence_days


@pytest.mark.parametrize("name", list(SPACE))
def test_preset_cadence_span_noise_and_gaps(name):
    cfg = preset_config(name)
    check_config(cfg)
    sc = getattr(cfg, SPACE[name])
    cadence = sc.cadence_minutes / 1440
    n = 4 if name != "kepler-sc" else 2
    for i in range(n):
        c = simulate_curve(cfg, i)
        assert c.sampling == SPACE[name]
        t = c.time
        blocks = round(c.meta["duration"] / sc.block_days)
        assert sc.blocks[0] <= blocks <= sc.blocks[1] and c.meta["duration"] == pytest.approx(blocks * sc.block_days)
        assert t[0] == 0 and t[-1] < c.meta["duration"]
        # cadence: the native one, to float round-off
        assert np.median(np.diff(t)) == pytest.approx(cadence, rel=1e-9)
        # noise: per-point rms in ppm of the flux level inside the preset's range; errors honest
        ppm = c.meta["noise_rms"] / c.meta["offset"] * 1e6
        assert sc.noise_ppm[0] <= ppm <= sc.noise_ppm[1]
        resid = (c.flux - c.signal) / c.flux_err
        assert abs(resid.std() - 1) < 5 / math.sqrt(t.size)
        assert math.sqrt(np.mean(c.flux_err ** 2)) == pytest.approx(c.meta["noise_rms"], rel=1e-9)
        # gaps: every downlink (segment end) is a gap of at least gap_days; nothing else is
        # longer than gap_days + the longest extra loss; momentum dumps leave short gaps
        gaps = _gaps(t, cadence)
        segments = blocks * sc.segments_per_block
        assert (gaps >= sc.gap_days - 1.5 * cadence).sum() >= segments - 1 - 2 * sc.losses[1] * blocks
        assert gaps.max() <= sc.gap_days + 2 * sc.loss_days[1] + 2 * cadence
        if sc.dump_every_days:
            short = gaps[gaps < 0.1]
            dump = sc.dump_minutes / 1440
            assert short.size >= 0.5 * t[-1] / sc.dump_every_days - 4 * segments
            assert np.all(np.abs(short - dump) <= cadence + 1e-9)


def test_kepler_long_cadence_points_and_quarter_structure():
    """One quarter of 93 d: three months of 31 d, each ending in a 1-d downlink; 4,407 cadences
    of 29.4244 min when nothing else is lost (the README's figure)."""
    cfg = preset_config("kepler-lc")
    cfg.kepler.blocks, cfg.kepler.losses = [1, 1], [0, 0]
    c = simulate_curve(cfg, 0)
    assert c.time.size == 4407
    gaps = _gaps(c.time, 29.4244 / 1440)
    np.testing.assert_allclose(gaps, 1.0, atol=29.4244 / 1440)
    assert gaps.size == 2


def test_preset_losses_and_dumps_are_switched_off_by_default():
    """The default config's TESS/Kepler sampling (no preset) is unchanged: no dumps, no losses."""
    from lcgen.simulate.mocks import SamplingMix, SimulateConfig

    cfg = SimulateConfig(samplings=SamplingMix(0, 0, 0, 0, 1, 0), seed=3)
    c = simulate_curve(cfg, 0)
    assert c.time.size == 18290  # the README's points per sector, as before the presets


def test_missions_mix_and_realistic_amplitudes():
    cfg = preset_config("missions")
    kinds = [simulate_curve(cfg, i) for i in range(24)]
    samplings = {c.sampling for c in kinds}
    assert samplings == {"kepler", "tess"}
    for c in kinds:
        assert c.meta["offset"] == 1.0
        ppm = c.meta["noise_rms"] * 1e6
        sc = getattr(cfg, c.sampling)
        assert sc.noise_ppm[0] <= ppm <= sc.noise_ppm[1]
        assert sc.blocks == [1, 1] and c.meta["duration"] == sc.block_days
        # relative variability: a few percent at most, except eclipses and flares
        if math.isnan(c.meta["transit_depth"]) and math.isnan(c.meta["n_flares"]):
            assert np.ptp(c.signal) < 0.25


def test_unknown_preset_and_bad_loss_settings_are_refused():
    with pytest.raises(LcgenError, match="unknown mock preset 'kepler'; choose one of kepler-lc"):
        preset_config("kepler")
    cfg = preset_config("tess-2min")
    cfg.tess.loss_days = [1.0, 20.0]
    with pytest.raises(LcgenError, match="loss_days"):
        check_config(cfg)
    cfg = preset_config("tess-2min")
    cfg.tess.noise_ppm = [0.0, 100.0]
    with pytest.raises(LcgenError, match="noise_ppm"):
        check_config(cfg)


def test_generate_preset_cli_round_trip_and_overrides(tmp_path):
    out = tmp_path / "tess.h5"
    r = run_cli("generate", "--preset", "tess-ffi", "-n", "3", "--seed", "5", "-o", out, "--workers", "1",
                "--set", "tess.blocks=[1,1]")
    assert r.returncode == 0, r.stderr
    raw = read_raw(out)
    assert raw.config["tess"]["cadence_minutes"] == 10.0 and raw.config["tess"]["blocks"] == [1, 1]
    assert set(raw.meta["sampling"]) == {"tess"}
    # the same curves as the library makes from the preset with the same override
    cfg = preset_config("tess-ffi")
    cfg.seed, cfg.tess.blocks = 5, [1, 1]
    np.testing.assert_array_equal(raw.curve(1)[0], simulate_curve(cfg, 1).time)
    r = run_cli("generate", "--preset", "nope", "-n", "3", "-o", tmp_path / "x.h5")
    assert r.returncode == 1 and "unknown mock preset 'nope'" in r.stderr
    assert set(PRESETS) == {"kepler-lc", "kepler-sc", "tess-2min", "tess-ffi", "missions"}
