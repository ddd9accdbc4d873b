"""The simulator's output pinned bit for bit: every sampling pattern, signal type, overlay and
mission preset, several seeds, and a whole ``generate`` file read back. The digests are main's
before the speed work of issue 16 (commit 14512d4), so every raw file (and every README figure
and test derived from one) stays what it was."""

import dataclasses
import hashlib

import h5py
import numpy as np
import pytest

from lcgen.simulate.missions import PRESETS, preset_config
from lcgen.simulate.mocks import (SAMPLERS, SIGNALS, SamplingMix, SimulateConfig, TypeMix, generate, pcg64_states,
                                  simulate_chunk)


def _one(cls, names, chosen):
    return cls(**{k: float(k == chosen) for k in names})


def _chunk_digest(cfg: SimulateConfig, n: int) -> str:
    chunk = simulate_chunk(cfg, 0, n)
    h = hashlib.sha256(chunk.lengths.tobytes())
    for key in ("time", "flux", "flux_err", "signal"):
        h.update(getattr(chunk, key).tobytes())
    for key in sorted(chunk.meta):
        values = chunk.meta[key]
        h.update(key.encode() + ("|".join(values.tolist()).encode() if values.dtype.kind == "U" else values.tobytes()))
    return h.hexdigest()[:16]


def _overlays_on(cfg: SimulateConfig) -> SimulateConfig:
    cfg.transit.probability = cfg.flare.probability = cfg.red_noise.probability = 0.5
    cfg.transit.secondary = [0.0, 0.5]
    return cfg


# (name, config, curves): the default mix; each sampling alone with every type and the overlays;
# each type alone; every mission preset (native cadence: few curves).
CASES = [("default", SimulateConfig(), 300)]
for _name in SAMPLERS:
    _cfg = _overlays_on(SimulateConfig(types=TypeMix(*[1.0] * 5), samplings=_one(SamplingMix, SAMPLERS, _name)))
    CASES.append((f"sampling={_name}", _cfg, 6 if _name in ("tess", "kepler") else 60))
for _name in SIGNALS:
    CASES.append((f"type={_name}", SimulateConfig(types=_one(TypeMix, SIGNALS, _name)), 40))
for _name in PRESETS:
    CASES.append((f"preset={_name}", preset_config(_name), 4))

EXPECTED = {
    "default,0": "86f92c87e3ad19ef",
    "default,7": "5563536bef507b69",
    "default,42": "5b772b18b916631a",
    "sampling=regular,0": "991370fbbd6943c6",
    "sampling=regular,7": "2f17d65bea53fbd1",
    "sampling=regular,42": "8f2432df341adac1",
    "sampling=random_gaps,0": "fc725799e393a48d",
    "sampling=random_gaps,7": "e8e821eeb2076861",
    "sampling=random_gaps,42": "de2e523c7f826aa8",
    "sampling=variable_cadence,0": "fcce2e7ce5d42224",
    "sampling=variable_cadence,7": "70d708b008b59341",
    "sampling=variable_cadence,42": "d386604c7468619b",
    "sampling=seasonal,0": "f1b9a2bfb560492a",
    "sampling=seasonal,7": "764cb833c448ad6d",
    "sampling=seasonal,42": "7087b866a4e894ea",
    "sampling=tess,0": "c599a08f8d895b63",
    "sampling=tess,7": "515305ae8a3e6b0f",
    "sampling=tess,42": "1e63ce7d446221e0",
    "sampling=kepler,0": "915367e01c70f552",
    "sampling=kepler,7": "e309badab2df0f6b",
    "sampling=kepler,42": "3d81f30adf33ef29",
    "type=sinusoid,0": "e9e33c7bbcbe4897",
    "type=sinusoid,7": "50fa5f43f78fb05f",
    "type=sinusoid,42": "56bfdacb4ae89530",
    "type=multiperiodic,0": "e175e7da31ddb82e",
    "type=multiperiodic,7": "a2c8c93ddc640c70",
    "type=multiperiodic,42": "df97b9b861c91244",
    "type=drw,0": "c257d212f6995112",
    "type=drw,7": "5b4f4c69e21c82e8",
    "type=drw,42": "577f8f057bf4c191",
    "type=qpo,0": "fd7957ba8977189a",
    "type=qpo,7": "b2dafcb98ceb4bb5",
    "type=qpo,42": "082c4e13b120c239",
    "type=rotation,0": "64f5baa9e8bcc128",
    "type=rotation,7": "b26fbe17f2f66e37",
    "type=rotation,42": "baa3fe763169e270",
    "preset=kepler-lc,0": "5fe22c6ad9ba52f6",
    "preset=kepler-lc,7": "ef842118cc09a640",
    "preset=kepler-lc,42": "5c107d887ab08c4f",
    "preset=kepler-sc,0": "1356f820f71d1f6e",
    "preset=kepler-sc,7": "c6398e8238b1ba9e",
    "preset=kepler-sc,42": "340f4d7652d3f084",
    "preset=tess-2min,0": "ba69709637153ab7",
    "preset=tess-2min,7": "034ce74c451c2136",
    "preset=tess-2min,42": "f51fc0ecf410cb38",
    "preset=tess-ffi,0": "8b445b38e1937986",
    "preset=tess-ffi,7": "f52b532d1e88204a",
    "preset=tess-ffi,42": "4578cb0b518c0537",
    "preset=missions,0": "ad8830f097f4ffd3",
    "preset=missions,7": "b08ec155ee0074c7",
    "preset=missions,42": "850ed4b979792e68",
    "file": "218d5d26fb19375b",
}


@pytest.mark.parametrize("seed", [0, 7, 42])
@pytest.mark.parametrize("name,cfg,n", CASES, ids=[c[0] for c in CASES])
def test_simulated_curves_bit_for_bit(name, cfg, n, seed):
    assert _chunk_digest(dataclasses.replace(cfg, seed=seed), n) == EXPECTED[f"{name},{seed}"]


def test_generated_file_bit_for_bit(tmp_path):
    """A whole file, every dataset read back (the writer's side too), 1 and 2 workers."""
    for workers in (1, 2):
        cfg = _overlays_on(SimulateConfig(types=TypeMix(*[1.0] * 5), samplings=SamplingMix(1, 1, 1, 1, 0.05, 0.05)))
        cfg.n_samples, cfg.seed, cfg.output = 300, 3, str(tmp_path / f"mock{workers}.h5")
        generate(cfg, workers=workers, chunk_size=64)
        h = hashlib.sha256()
        with h5py.File(cfg.output) as f:
            names = []
            f.visititems(lambda key, obj: names.append(key) if isinstance(obj, h5py.Dataset) else None)
            # the HDF5 chunk shapes too (set by the first append: 65 curves, ~60,000 points)
            assert {key: f[key].chunks for key in names} == {
                key: (65536,) if key in ("time", "flux", "flux_err", "signal") else (128,) for key in names}
            for key in sorted(names):
                values = f[key][()]
                h.update(key.encode() + (b"|".join(values.tolist()) if values.dtype == object else values.tobytes()))
        assert h.hexdigest()[:16] == EXPECTED["file"], workers


@pytest.mark.parametrize("tail", [(), (1,)])
def test_pcg64_states_are_numpys(tail):
    """The curves' generators set from :func:`pcg64_states` start where numpy's own
    ``default_rng(SeedSequence(seed, spawn_key=(i, *tail)))`` do: seeds of 1 to 7 words, indices
    up to the last 32-bit one."""
    for seed in (0, 1, 42, 2**32 - 1, 2**32, 2**64 + 3, 2**200 + 7):
        for start, stop in ((0, 70), (2**31 - 2, 2**31 + 2), (2**32 - 3, 2**32)):
            states = pcg64_states(seed, start, stop, tail)
            assert len(states) == stop - start
            for i, state in zip(range(start, stop), states):
                rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i, *tail)))
                assert state == rng.bit_generator.state, (seed, i)
    rng = np.random.default_rng(0)
    rng.bit_generator.state = pcg64_states(5, 9, 10, tail)[0]
    assert rng.random(3).tolist() == np.random.default_rng(np.random.SeedSequence(5, spawn_key=(9, *tail))).random(3).tolist()
    with pytest.raises(ValueError, match="32-bit"):
        pcg64_states(5, 0, 2**32 + 1, tail)
