"""The whole pipeline on small mock data, one call: generate → preprocess → convert → train a
small transformer and a small spectral model → evaluate → plot (``lcgen demo``).

Each step calls the library function the matching command calls (no subprocesses), writing
under ``workdir``:

    WORKDIR/data/mock_lightcurves.h5   raw mock light curves      (lcgen generate)
    WORKDIR/data/preprocessed.h5       multitaper spectra          (lcgen preprocess)
    WORKDIR/data/timeseries.h5         normalised windows          (lcgen convert)
    WORKDIR/runs/MODEL/demo/           runs with metrics.json and figures/*.png

The defaults are sized to finish in a few minutes on 2 CPU cores. Rerunning replaces the
previous demo's files.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from lcgen.errors import LcgenError

RUN_NAME = "demo"


@dataclasses.dataclass
class DemoConfig:
    """Settings of ``lcgen demo``."""

    workdir: str = "demo"  # (str) everything the demo writes goes under here (data/, runs/)
    n_samples: int = 1500  # (int) mock light curves to simulate
    seed: int = 0  # (int) seeds the mock data, the splits, the models and the masks
    max_length: int = 128  # (int) points per time-series window for the transformer
    preset: str = "small"  # (str) size preset of both models: tiny (tests), small
    transformer: dict[str, Any] = dataclasses.field(default_factory=dict)  # (dict) transformer config overrides, e.g. {dropout: 0.1}
    transformer_epochs: int = 8  # (int) transformer epochs
    transformer_lr: float = 3e-3  # (float) transformer peak learning rate
    transformer_batch_size: int = 32  # (int) transformer batch size
    spectral_model: Literal["unet", "mlp"] = "unet"  # (str) the model trained on spectra
    channel: Literal["psd", "acf", "fstat"] = "psd"  # (str) the spectral channel it learns
    spectral_epochs: int = 20  # (int) spectral-model epochs (a UNet epoch is ~10x faster)
    spectral_lr: float = 3e-3  # (float) spectral-model peak learning rate
    spectral_batch_size: int = 32  # (int) spectral-model batch size
    n_freq: int = 256  # (int) frequency (and lag) bins of the spectra
    workers: Optional[int] = None  # (int) processes for generate/preprocess; null = all cores
    device: str = "cpu"  # (str) cpu, cuda, cuda:N or auto


def paths(cfg: DemoConfig) -> dict[str, Path]:
    """Where each step writes."""
    root = Path(cfg.workdir)
    data = root / "data"
    return {"raw": data / "mock_lightcurves.h5", "spectra": data / "preprocessed.h5",
            "timeseries": data / "timeseries.h5", "runs": root / "runs"}


def step_configs(cfg: DemoConfig) -> dict[str, Any]:
    """The config of every step, each checked as its command would check it, so a bad setting
    fails before any work (not after generating and preprocessing)."""
    from lcgen.features.convert import ConvertConfig, check_config as check_convert
    from lcgen.features.preprocess import PreprocessConfig, check_config as check_preprocess
    from lcgen.simulate.mocks import SimulateConfig, check_config as check_simulate
    from lcgen.train.trainer import TrainConfig, complete_config
    from lcgen.workers import check_workers

    _check(cfg)
    check_workers(cfg.workers)
    p = paths(cfg)
    steps = {
        "generate": SimulateConfig(n_samples=cfg.n_samples, seed=cfg.seed, output=str(p["raw"])),
        "preprocess": PreprocessConfig(input=str(p["raw"]), output=str(p["spectra"]), workers=cfg.workers,
                                       resume=False, n_freq=cfg.n_freq, n_lags=cfg.n_freq),
        "convert": ConvertConfig(input=str(p["raw"]), output=str(p["timeseries"]), max_length=cfg.max_length,
                                 min_points=min(32, cfg.max_length)),
        "transformer": TrainConfig(
            model_name="transformer", preset=cfg.preset, model=dict(cfg.transformer),
            data=str(p["timeseries"]), epochs=cfg.transformer_epochs, lr=cfg.transformer_lr,
            batch_size=cfg.transformer_batch_size, seed=cfg.seed, device=cfg.device,
            runs_dir=str(p["runs"])),
        cfg.spectral_model: TrainConfig(
            model_name=cfg.spectral_model, preset=cfg.preset, data=str(p["spectra"]),
            channel=cfg.channel, epochs=cfg.spectral_epochs, lr=cfg.spectral_lr,
            batch_size=cfg.spectral_batch_size, seed=cfg.seed, device=cfg.device,
            runs_dir=str(p["runs"])),
    }
    check_simulate(steps["generate"])
    check_preprocess(steps["preprocess"])
    check_convert(steps["convert"])
    for model in ("transformer", cfg.spectral_model):
        steps[model] = complete_config(steps[model])
    return steps


def run_demo(cfg: DemoConfig | None = None, *, console=None, progress: bool = False,
             on_step: Callable[[str], None] | None = None) -> dict:
    """Run the pipeline; returns ``{"steps": {name: seconds}, "seconds", "runs": {model:
    {"run_dir", "metrics", "figures"}}, "paths"}``.

    ``console`` (Rich) receives the trainer's per-epoch lines; ``progress`` shows its bars;
    ``on_step(name)`` is called as each step starts. Every setting is checked before the first
    step (:func:`step_configs`).
    """
    from lcgen.features.convert import convert
    from lcgen.evaluate.scoring import EvaluateConfig, evaluate_run
    from lcgen.plots import plot_run
    from lcgen.features.preprocess import preprocess
    from lcgen.simulate.mocks import generate
    from lcgen.train.trainer import fit

    cfg = cfg or DemoConfig()
    configs = step_configs(cfg)
    p = paths(cfg)
    p["raw"].parent.mkdir(parents=True, exist_ok=True)
    steps: dict[str, float] = {}
    began = time.perf_counter()

    def step(name: str, fn: Callable[[], Any]) -> Any:
        if on_step is not None:
            on_step(name)
        tick = time.perf_counter()
        out = fn()
        steps[name] = time.perf_counter() - tick
        return out

    step("generate", lambda: generate(configs["generate"], workers=cfg.workers))
    step("preprocess", lambda: preprocess(configs["preprocess"]))
    step("convert", lambda: convert(configs["convert"]))

    runs = {}
    for model in ("transformer", cfg.spectral_model):
        tcfg = configs[model]
        run_dir = p["runs"] / model / RUN_NAME
        if run_dir.exists():
            shutil.rmtree(run_dir)  # the previous demo's run: the demo always starts afresh
        result = step(f"train {model}", lambda: fit(tcfg, name=RUN_NAME, console=console, progress=progress))
        run_dir = Path(result["run_dir"])
        eval_cfg = EvaluateConfig(device=cfg.device)
        metrics = step(f"evaluate {model}", lambda: evaluate_run(run_dir, eval_cfg))
        figures = step(f"plot {model}", lambda: plot_run(run_dir, eval_config=eval_cfg))
        runs[model] = {"run_dir": run_dir, "metrics": metrics, "figures": figures,
                       "metrics_file": run_dir / "metrics.json"}
    return {"steps": steps, "seconds": time.perf_counter() - began, "runs": runs, "paths": p}


def _check(cfg: DemoConfig) -> None:
    for name in ("n_samples", "max_length", "transformer_epochs", "spectral_epochs",
                 "transformer_batch_size", "spectral_batch_size", "n_freq"):
        if getattr(cfg, name) < 1:
            raise LcgenError(f"demo setting '{name}' = {getattr(cfg, name)} must be >= 1")
    if cfg.n_samples < 20:
        raise LcgenError(f"demo n_samples = {cfg.n_samples} is too few to split into train, "
                         f"validation and test; use at least 20")
