"""Mock light curves, one of lcgen's two sources (the other is :mod:`lcgen.ingest`): the
generator (:mod:`.mocks`: sampling patterns, signals, noise) and the mission-like presets
(:mod:`.missions`).

``from lcgen.simulate import SimulateConfig, generate`` gives the generator's main entry points."""

from lcgen.simulate.mocks import (SAMPLERS, SIGNALS, SamplingMix, SimulateConfig, TypeMix, check_config, generate,
                                  simulate_chunk, simulate_curve)

__all__ = ["SAMPLERS", "SIGNALS", "SamplingMix", "SimulateConfig", "TypeMix", "check_config", "generate",
           "simulate_chunk", "simulate_curve"]
