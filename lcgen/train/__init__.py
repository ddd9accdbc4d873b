"""The train stage: the one trainer (:mod:`.trainer`), the batches it reads (:mod:`.data`) and
data-parallel training over processes (:mod:`.distributed`).

``from lcgen.train import TrainConfig, fit, load_run, load_checkpoint`` gives the trainer's main
entry points; everything else lives in the modules."""

from lcgen.train.trainer import TrainConfig, fit, load_checkpoint, load_run

__all__ = ["TrainConfig", "fit", "load_checkpoint", "load_run"]
