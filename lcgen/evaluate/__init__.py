"""Evaluation of a trained run: ``lcgen evaluate`` and ``lcgen calibrate``.

- :mod:`lcgen.evaluate.scoring`: metrics and baselines on fixed masks, the ``metrics.json`` file.
- :mod:`lcgen.evaluate.calibrate`: the post-hoc calibration of a variance head.
- :mod:`lcgen.evaluate.crossmodal`: each modality of a multimodal run reconstructed from the others.
- :mod:`lcgen.evaluate.gp`: the celerite2 Gaussian-process baseline.

>>> from lcgen.evaluate import EvaluateConfig, evaluate_run
>>> metrics = evaluate_run("runs/transformer/demo", EvaluateConfig(split="test"))
"""

from lcgen.evaluate.calibrate import calibrate_run
from lcgen.evaluate.scoring import EvaluateConfig, evaluate_run, read_metrics, verdict

__all__ = ["EvaluateConfig", "calibrate_run", "evaluate_run", "read_metrics", "verdict"]
