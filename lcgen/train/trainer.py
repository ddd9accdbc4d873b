"""The one training loop for every registered model.

A run reads batches from an HDF5 file (:mod:`lcgen.train.data`), hides blocks of each sample
(:mod:`lcgen.masking`) and trains the model to reconstruct them. The loss counts only real
positions (``valid``); padding and unresolvable bins never contribute:

    masked   = Σ_{hidden} (ŷ − y)² / #hidden
    unmasked = Σ_{valid & ~hidden} (ŷ − y)² / #(valid & ~hidden)
    loss     = masked + unmasked_weight · unmasked

pooled over all positions of the batch (and, for the logged epoch values, of the epoch). With
``mse_tail: c > 0`` each squared error e² becomes Huber's ρ(e²) (e² for |e| <= c, 2c|e| − c²
beyond; the logged losses are then these): on mission-like mocks normalised by their IQR, 98 % of
the sum of squared values comes from the few windows with flares or eclipses of 10–1000 IQR, and a
plain MSE spends its gradient on them.

The ``multimodal`` model (paired data, ``lcgen convert --spectra``) has these two terms for each
modality m (series, psd, acf, fstat), each pooled over that modality's positions, and

    loss = Σ_m w_m (masked_m + unmasked_weight · unmasked_m),   w_m = ``modality_weights[m]`` (default 1)

with each modality block-masked and, with probability ``modality_dropout``, modalities hidden
whole: all the spectra (the series alone visible) or one modality
(:func:`lcgen.masking.paired_masks`); history.csv then has ``train_masked_<m>`` and
``val_masked_<m>`` columns.

With ``psd_aux_weight: w > 0`` (transformer, paired data) the model gets a PSD head on its pooled
latent (``TransformerConfig.psd_head``) and a self-supervised auxiliary term, computed from the
data alone (no labels):

    psd_aux = Σ_{valid bins} (p̂ − p)² / #valid bins,      loss = ... + w · psd_aux

with ``p`` each window's normalised multitaper PSD from ``lcgen convert --spectra`` (``psd``,
its valid bins ``psd_mask``) and ``p̂`` the head's prediction from the window as the model sees
it (masked blocks hidden); history.csv then has ``train_psd_aux`` and ``val_psd_aux`` columns,
and ``val_loss`` (which picks ``best.pt``) includes ``w · val_psd_aux``.

With ``contrastive_weight: w > 0`` (transformer) the model gets a projection head on the same
pooled latent (``TransformerConfig.contrast_head``) and every training batch is B/2 source curves
with two windows each (:func:`lcgen.train.data.pair_plan`); the term is InfoNCE (NT-Xent) over the
batch, with z the head's output normalised to unit length and τ ``contrastive_temperature``:

    contrast = mean_i −log [exp(z_i·z_i⁺ / τ) / Σ_{j≠i} exp(z_i·z_j / τ)],   loss = ... + w · contrast

i⁺ the other window of i's curve; the other curves' windows are the negatives. The reconstruction
terms count every window as before. history.csv then has ``train_contrast`` and ``val_contrast``
(over fixed pairs of validation curves, with the validation masks), and ``val_loss`` includes
``w · val_contrast``.

With ``latent_spread_weight: w > 0`` (multimodal) a VICReg-style spread term (Bardes et al. 2022)
acts on the pooled shared latent that ``lcgen embed`` reads (z's mean and max over its K vectors,
x (B, P) over the batch's B rows), so that z's variance spreads over many directions:

    spread = (1/P) Σ_p max(0, 1 − sqrt(Var_p + 1e-4)) + (1/P) Σ_{p≠q} C_pq²,   loss = ... + w · spread

with C the batch covariance (divided by B − 1) and Var_p its diagonal; a batch of one row adds
nothing. history.csv then has ``train_spread`` and ``val_spread`` (means over batches), and
``val_loss`` includes ``w · val_spread``.

With ``latent_distill_weight: w > 0`` (multimodal) a relational distillation term (the distance
loss of Park et al. 2019) makes the same pooled latent x keep the neighbours of a teacher: t
(B, Q), the pooled latent (every level's mean and max) of the trained transformer run
``latent_distill_from`` for the batch's whole series (nothing hidden; frozen, not saved with the
run). Both are standardised over the batch, as the probes standardise, and their distances
divided by their mean over the pairs:

    ψ_ij = ‖x̃_i − x̃_j‖ / mean_{k≠l} ‖x̃_k − x̃_l‖,   distill = mean_{i≠j} (ψ(x)_ij − ψ(t)_ij)²,   loss = ... + w · distill

a batch of fewer than three rows adds nothing. history.csv then has ``train_distill`` and
``val_distill``. The auxiliary terms' sums follow the reconstruction's, in the order psd_aux,
contrast, spread, distill.

With ``loss: nll`` the model also predicts a log-variance (its variance head is switched on) and
both terms are Gaussian negative log-likelihoods instead of MSEs:

    nll = ½ [log(2π s²) + ρ((y − ŷ)² / s²)],   s² = exp(log_var) + flux_err²

with ``flux_err`` the point's own normalised error (0 for spectra), so the model learns the
uncertainty of the signal and the noise of the data is not counted twice. ``ρ`` is the identity
up to ``nll_tail`` standard deviations and linear beyond (Huber tails: ρ(r²) = 2c|r| − c²), so a
flare or an outlier pulls with a bounded force instead of dominating the batch; for Gaussian
residuals that changes nothing (P(|r| > 5) ≈ 6e-7). Each point's NLL is weighted by
``stop_gradient(s²)^β`` (β-NLL, Seitzer et al. 2022; ``nll_beta``, default 1): with the plain NLL
(β = 0) the gradient on the mean is scaled by 1/s², the variance absorbs the error and the mean
stays where it starts (measured on the demo: a transformer with ``interp_residual`` stuck at 0.99×
linear interpolation after 4 of 8 epochs, while calibrated); with β = 1 the mean gets the MSE's
gradient and the variance still converges to the squared residual. The validation loss (which
picks ``best.pt``) is the plain NLL: the weighted sum is not a proper score.

Optimisation: AdamW (no weight decay on biases and norm gains; torch's fused kernel by default),
OneCycleLR stepped per batch, gradient-norm clipping, bf16 autocast on CUDA, and optionally
``torch.compile``. Training masks are drawn from a seeded
``torch.Generator``; validation masks are fixed per sample index, so validation losses compare
across epochs and runs.

A run directory ``runs/MODEL/NAME/`` holds ``config.yaml`` (a valid ``--config``), ``split.npz``
(the train/val/test rows), ``history.csv``, ``last.pt`` (everything needed to resume exactly)
and ``best.pt`` (the weights with the lowest validation loss). Checkpoints are plain dicts of
tensors and Python values: ``torch.load(path, weights_only=True)`` reads them, and the model is
rebuilt from the checkpoint alone.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as _dt
import math
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Literal, Optional

import numpy as np
import torch

from lcgen import __version__
from lcgen.config import config_from_dict, config_to_dict, config_to_yaml, load_yaml, plain, resolve_config
from lcgen.train.data import (SPLIT_FILE, batch_share, iter_batches, iter_pair_batches, load_split, n_batches,
                        open_source, pair_curves, pair_plan, prefetch, save_split, split_rows)
from lcgen.train.distributed import Dist, all_sum, backend_for, from_env, gather, on_main, process_group
from lcgen.errors import LcgenError
from lcgen.io import DEFAULT_SPECTRA, DEFAULT_TIMESERIES, atomic_path
from lcgen.masking import (MODALITIES, MaskConfig, MaskDraws, close_gap, draw_train, fixed_mask, key_block,
                           lay_mask, modality_keys, paired_masks)
from lcgen.models import MODELS, create_model, get_spec
from lcgen.models.transformer import pooled_meanmax
from lcgen.workers import choose_huge_pages, keep_all_freed_memory

DEFAULT_DATA = {"timeseries": DEFAULT_TIMESERIES, "spectra": DEFAULT_SPECTRA, "paired": DEFAULT_TIMESERIES}
# The original project's defaults, per model; models registered later get FALLBACK_DEFAULTS.
MODEL_DEFAULTS = {
    "transformer": {"epochs": 50, "batch_size": 32, "lr": 1e-4},
    "unet": {"epochs": 50, "batch_size": 128, "lr": 1e-3},
    "mlp": {"epochs": 50, "batch_size": 128, "lr": 1e-3},
    "multimodal": {"epochs": 50, "batch_size": 32, "lr": 1e-4},  # as the transformer, its largest part
}
FALLBACK_DEFAULTS = {"epochs": 50, "batch_size": 64, "lr": 1e-3}
CHECKPOINT_FORMAT = "lcgen-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_KEYS = ("model_name", "model_config", "state_dict", "train_config")  # every checkpoint
RESUME_KEYS = ("optimizer", "scheduler", "rng", "progress")  # last.pt, to continue a run
# history.csv: lr is the learning rate at the end of the epoch; losses are pooled over the epoch's
# positions; seconds and samples/s count training steps only (validation excluded).
# data_wait_s is the part of `seconds` spent waiting for the next batch from the reader.
HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "train_masked", "train_unmasked", "val_loss",
                   "val_masked", "val_unmasked", "seconds", "samples_per_s", "data_wait_s")
# Settings a resumed run may change: where the data lives, where and how fast it runs.
RESUMABLE_CHANGES = ("data", "device", "threads", "compile", "loss_read_every", "prefetch")
# Steps between host reads of the loss on CUDA when loss_read_every is 0 (on the CPU a read is free).
CUDA_READ_EVERY = 50
# Batches read ahead on CUDA when prefetch is unset.
CUDA_PREFETCH = 2
# Width of the contrastive projection head (model.contrast_head overrides it).
CONTRAST_HEAD = 128
# The epoch log's label of each auxiliary term (aux_terms).
AUX_LABELS = {"psd_aux": "PSD", "contrast": "Pairs", "spread": "Sprd", "distill": "Dist"}


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (``lcgen train``); a run's config.yaml is one."""

    RENAMED: ClassVar[dict[str, str]] = {"log_every": "loss_read_every"}  # old name -> new (lcgen.config)

    model_name: str = "transformer"  # (str) registered model: transformer, unet, mlp, multimodal
    preset: str = "default"  # (str) model size: tiny (tests), small (CPU), default (full size)
    model: dict[str, Any] = dataclasses.field(default_factory=dict)  # (dict) overrides of the model's config, e.g. {dropout: 0.1}
    data: Optional[str] = None  # (str) data file; default timeseries.h5 (transformer) or preprocessed.h5 (unet, mlp)
    channel: Literal["psd", "acf", "fstat"] = "psd"  # (str) spectral channel the spectra models train on
    epochs: Optional[int] = None  # (int) epochs; default 50
    batch_size: Optional[int] = None  # (int) samples per step; default 32 (transformer) or 128 (unet, mlp)
    lr: Optional[float] = None  # (float) peak learning rate of OneCycleLR; default 1e-4 (transformer) or 1e-3
    weight_decay: float = 0.01  # (float) AdamW decoupled weight decay (not on biases and norm gains)
    unmasked_weight: float = 0.1  # (float) weight of the unmasked-position MSE in the loss
    loss: Literal["mse", "nll"] = "mse"  # (str) mse, or nll: Gaussian NLL with a predicted variance (turns the variance head on)
    mse_tail: float = 0.0  # (float) mse: errors beyond this (normalised flux units) count linearly (Huber), so flares do not dominate; 0 = pure MSE
    nll_tail: float = 5.0  # (float) nll: residuals beyond this many sigma count linearly (robust to flares); 0 = pure Gaussian
    nll_beta: float = 1.0  # (float) nll: weight each training point by stop-gradient(variance)^beta (beta-NLL); 0 = plain NLL. Validation (best.pt) uses the plain NLL
    grad_clip: float = 1.0  # (float) clip the global gradient norm to this; 0 turns clipping off
    pct_start: float = 0.1  # (float) OneCycleLR: fraction of steps spent warming up
    div_factor: float = 100.0  # (float) OneCycleLR: initial lr = lr / div_factor
    final_div_factor: float = 100.0  # (float) OneCycleLR: final lr = initial lr / final_div_factor
    val_fraction: float = 0.1  # (float) fraction of light curves held out for validation
    test_fraction: float = 0.1  # (float) fraction of light curves held out for lcgen evaluate
    seed: int = 0  # (int) seeds the split, model initialisation, batch order and training masks
    val_mask_seed: int = 0  # (int) fixes the validation masks (per sample index)
    mask: MaskConfig = dataclasses.field(default_factory=MaskConfig)  # block masking ranges
    gap_augment: float = 0.0  # (float) time series: fraction of training windows that get a real time gap: a run of real points cut out and the window closed up (lcgen.masking.close_gap); 0 = off
    gap_points: int = 16  # (int) gap_augment: the cut run is 1 to this many real points long (uniform)
    gap_drop: float = 0.0  # (float) gap_augment: each chosen window also loses scattered single points, each interior one with probability p ~ U(0, gap_drop) per window (like seasonal sampling's weather losses); 0 = off
    device: str = "auto"  # (str) auto, cpu, cuda or cuda:N
    threads: Optional[int] = None  # (int) CPU threads torch uses; default: torch's choice (one per core)
    amp: bool = True  # (bool) bf16 autocast on CUDA (ignored on CPU)
    optimizer_impl: Literal["auto", "fused", "foreach", "for-loop"] = "auto"  # (str) AdamW kernel: auto = fused (one kernel over all parameters)
    compile: bool = False  # (bool) torch.compile the model (minutes of compiling first; see README for when it pays); falls back to eager where compiling fails
    loss_read_every: int = 0  # (int) steps between host reads of the loss (progress, non-finite and Ctrl-C checks); 0: every step on CPU, 50 on CUDA
    prefetch: Optional[int] = None  # (int) batches read ahead by a background thread, 0 for none; default 2 on CUDA, 0 on the CPU (where the thread would compete with torch's)
    runs_dir: str = "runs"  # (str) runs are written to RUNS_DIR/MODEL/NAME/
    buffer_rows: int = 8192  # (int) rows read from disk at a time; batches are shuffled within them
    init: Optional[str] = None  # (str) fine-tune: start from this run directory's weights (best.pt), fresh optimizer and schedule; multimodal: a transformer run starts the series branch only
    modality_weights: dict[str, float] = dataclasses.field(default_factory=dict)  # (dict) multimodal: loss weight per modality (series, psd, acf, fstat), default 1 each
    modality_dropout: float = 0.3  # (float) multimodal: probability that a sample hides modalities whole: half of those all the spectra (the series alone visible), half one modality
    psd_aux_weight: float = 0.0  # (float) transformer: weight of a self-supervised auxiliary loss, a small head on the pooled latent (every level's mean and max, as lcgen embed pools) predicting each window's normalised multitaper PSD (valid bins; needs paired data from lcgen convert --spectra); the head is not part of the embedding. 0 = off
    contrastive_weight: float = 0.0  # (float) transformer: weight of a contrastive loss (InfoNCE) on a projection head over the pooled latent: two windows of one curve agree, other curves' windows are negatives; batches then hold batch_size/2 curves x 2 windows. The head is not part of the embedding. 0 = off
    contrastive_temperature: float = 0.1  # (float) contrastive_weight: the temperature tau of the InfoNCE softmax over cosine similarities
    latent_spread_weight: float = 0.0  # (float) multimodal: weight of a VICReg-style variance + covariance term on the pooled shared latent that lcgen embed reads (each dimension's std over the batch hinged at 1, plus the squared off-diagonal covariance), so that z's variance spreads over many directions. 0 = off
    latent_distill_weight: float = 0.0  # (float) multimodal: weight of a relational distillation term: the pooled shared latent's distances between the batch's windows (standardised over the batch, as the probes standardise) follow those of a trained transformer's pooled latent (latent_distill_from), so that z's nearest neighbours are the teacher's. 0 = off
    latent_distill_from: Optional[str] = None  # (str) latent_distill_weight: the transformer run directory (best.pt) whose pooled latent (every level's mean and max, as lcgen embed pools) is the teacher; frozen, not saved with the run


# --------------------------------------------------------------------------------------------
# Configuration


def resolve_train_config(model_name: str | None = None, *, config_file: str | Path | None = None,
                         flags: dict | None = None, sets: list[str] | None = None) -> TrainConfig:
    """Defaults < ``--config`` YAML < flags < ``--set``, then the per-model defaults for what is
    still unset (:func:`complete_config`)."""
    cfg = resolve_config(TrainConfig, config_file=config_file,
                         flags={**(flags or {}), "model_name": model_name}, sets=sets)
    return complete_config(cfg)


def complete_config(cfg: TrainConfig) -> TrainConfig:
    """Check a config against the model registry and fill the per-model defaults.

    Unknown model names and presets fail listing the known ones; model overrides are checked
    (and converted) against the model's own config class.
    """
    spec = get_spec(cfg.model_name)
    if cfg.preset not in spec.presets:
        raise LcgenError(f"model '{cfg.model_name}' has no preset '{cfg.preset}'; "
                         f"choose one of {', '.join(spec.presets)}")
    overrides = {}
    if cfg.model:
        # checked (types, names, consistency) as they will be used: laid over the preset
        checked = config_from_dict(spec.config_cls, {**spec.presets[cfg.preset], **cfg.model}, where="model")
        overrides = {key: plain(getattr(checked, key)) for key in cfg.model}
    if spec.data == "paired":
        if cfg.loss != "mse" or cfg.mse_tail:
            raise LcgenError(f"model '{cfg.model_name}' trains with loss mse only (and no mse_tail)")
        unknown = [k for k in cfg.modality_weights if k not in MODALITIES]
        if unknown:
            raise LcgenError(f"modality_weights has unknown modalities {', '.join(unknown)}; "
                             f"choose from {', '.join(MODALITIES)}")
        if any(not (float(v) >= 0) for v in cfg.modality_weights.values()):
            raise LcgenError(f"modality_weights must be >= 0, got {cfg.modality_weights}")
        if not 0 <= cfg.modality_dropout < 1:
            raise LcgenError(f"setting 'modality_dropout' = {cfg.modality_dropout!r} must be in [0, 1)")
    if cfg.loss == "nll":
        if overrides.get("variance_head") is False:
            raise LcgenError("loss nll needs the model's variance head; drop model.variance_head=false "
                             "or use loss mse")
        overrides["variance_head"] = True
    defaults = MODEL_DEFAULTS.get(cfg.model_name, FALLBACK_DEFAULTS)
    cfg = dataclasses.replace(
        cfg, model=overrides,
        data=cfg.data if cfg.data is not None else DEFAULT_DATA[spec.data],
        epochs=cfg.epochs if cfg.epochs is not None else defaults["epochs"],
        batch_size=cfg.batch_size if cfg.batch_size is not None else defaults["batch_size"],
        lr=cfg.lr if cfg.lr is not None else defaults["lr"])
    for name, value, ok, rule in (
            ("epochs", cfg.epochs, cfg.epochs >= 1, ">= 1"),
            ("batch_size", cfg.batch_size, cfg.batch_size >= 1, ">= 1"),
            ("lr", cfg.lr, cfg.lr > 0 and math.isfinite(cfg.lr), "> 0"),
            ("weight_decay", cfg.weight_decay, cfg.weight_decay >= 0, ">= 0"),
            ("unmasked_weight", cfg.unmasked_weight, cfg.unmasked_weight >= 0, ">= 0"),
            ("mse_tail", cfg.mse_tail, cfg.mse_tail >= 0, ">= 0 (0 turns the Huber tails off)"),
            ("nll_tail", cfg.nll_tail, cfg.nll_tail >= 0, ">= 0 (0 turns the Huber tails off)"),
            ("nll_beta", cfg.nll_beta, 0 <= cfg.nll_beta <= 1, "in [0, 1]"),
            ("grad_clip", cfg.grad_clip, cfg.grad_clip >= 0, ">= 0 (0 turns clipping off)"),
            ("pct_start", cfg.pct_start, 0 < cfg.pct_start < 1, "in (0, 1)"),
            ("div_factor", cfg.div_factor, cfg.div_factor > 0, "> 0"),
            ("final_div_factor", cfg.final_div_factor, cfg.final_div_factor > 0, "> 0"),
            ("buffer_rows", cfg.buffer_rows, cfg.buffer_rows >= 1, ">= 1"),
            ("loss_read_every", cfg.loss_read_every, cfg.loss_read_every >= 0, ">= 0 (0: automatic)"),
            ("prefetch", cfg.prefetch, cfg.prefetch is None or cfg.prefetch >= 0, ">= 0 (0: no read-ahead)"),
            ("threads", cfg.threads, cfg.threads is None or cfg.threads >= 1, ">= 1 (or unset)"),
            ("seed", cfg.seed, cfg.seed >= 0, ">= 0"),
            ("val_mask_seed", cfg.val_mask_seed, cfg.val_mask_seed >= 0, ">= 0"),
            ("gap_augment", cfg.gap_augment, 0 <= cfg.gap_augment <= 1, "in [0, 1] (0 turns it off)"),
            ("gap_points", cfg.gap_points, cfg.gap_points >= 1, ">= 1"),
            ("gap_drop", cfg.gap_drop, 0 <= cfg.gap_drop < 1, "in [0, 1) (0 turns it off)"),
            ("psd_aux_weight", cfg.psd_aux_weight, cfg.psd_aux_weight >= 0, ">= 0 (0 turns it off)"),
            ("contrastive_weight", cfg.contrastive_weight, cfg.contrastive_weight >= 0, ">= 0 (0 turns it off)"),
            ("contrastive_temperature", cfg.contrastive_temperature, cfg.contrastive_temperature > 0, "> 0"),
            ("latent_spread_weight", cfg.latent_spread_weight, cfg.latent_spread_weight >= 0, ">= 0 (0 turns it off)"),
            ("latent_distill_weight", cfg.latent_distill_weight, cfg.latent_distill_weight >= 0, ">= 0 (0 turns it off)")):
        if not ok:
            raise LcgenError(f"setting '{name}' = {value!r} must be {rule}")
    if cfg.gap_augment > 0 and spec.data != "timeseries":
        raise LcgenError(f"gap_augment = {cfg.gap_augment}: gaps are cut out of time series, and "
                         f"{cfg.model_name} trains on {spec.data_words}; set gap_augment=0")
    if cfg.gap_drop > 0 and cfg.gap_augment == 0:
        raise LcgenError(f"gap_drop = {cfg.gap_drop} drops points in gap_augment's windows, and gap_augment "
                         f"is 0; set gap_augment > 0 as well")
    if cfg.psd_aux_weight > 0 and cfg.model_name != "transformer":
        raise LcgenError(f"psd_aux_weight = {cfg.psd_aux_weight}: the auxiliary PSD head is the transformer's; "
                         f"{cfg.model_name} has none (set psd_aux_weight=0)")
    if cfg.contrastive_weight > 0 and cfg.model_name != "transformer":
        raise LcgenError(f"contrastive_weight = {cfg.contrastive_weight}: the contrastive head is the transformer's; "
                         f"{cfg.model_name} has none (set contrastive_weight=0)")
    if cfg.latent_spread_weight > 0 and cfg.model_name != "multimodal":
        raise LcgenError(f"latent_spread_weight = {cfg.latent_spread_weight}: the spread term acts on the multimodal "
                         f"model's shared latent; {cfg.model_name} has none (set latent_spread_weight=0)")
    if cfg.latent_distill_weight > 0 and cfg.model_name != "multimodal":
        raise LcgenError(f"latent_distill_weight = {cfg.latent_distill_weight}: the distillation term acts on the "
                         f"multimodal model's shared latent; {cfg.model_name} has none (set latent_distill_weight=0)")
    if (cfg.latent_distill_weight > 0) != (cfg.latent_distill_from is not None):
        raise LcgenError(f"latent_distill_weight = {cfg.latent_distill_weight} and latent_distill_from = "
                         f"{cfg.latent_distill_from}: set both (a weight > 0 and the teacher's transformer run "
                         f"directory) or neither")
    if cfg.contrastive_weight > 0 and (cfg.batch_size % 2 or cfg.batch_size < 4):
        raise LcgenError(f"contrastive_weight = {cfg.contrastive_weight} with batch_size = {cfg.batch_size}: a batch "
                         f"holds pairs of windows of at least two curves; use an even batch size >= 4")
    if cfg.psd_aux_weight > 0 and cfg.gap_augment > 0:
        raise LcgenError(f"psd_aux_weight = {cfg.psd_aux_weight} with gap_augment = {cfg.gap_augment}: the stored "
                         f"PSD is the uncut window's; set one of them to 0")
    if cfg.mask.max_days > 0 and spec.data != "timeseries":
        raise LcgenError(f"mask.max_days = {cfg.mask.max_days}: blocks in days need time series, and "
                         f"{cfg.model_name} trains on {spec.data_words}; use mask.min_block/max_block")
    resolve_device(cfg.device, check_available=False)
    return cfg


def resume_config(run_dir: str | Path, *, data: str | None = None, device: str | None = None,
                  threads: int | None = None) -> TrainConfig:
    """The saved config of ``run_dir`` (its config.yaml), with a new data path, device or threads."""
    run_dir = Path(run_dir)
    if not (run_dir / "last.pt").is_file():
        raise LcgenError(f"{run_dir} holds no last.pt to resume from; is it an lcgen run directory?")
    saved = config_from_dict(TrainConfig, load_yaml(run_dir / "config.yaml"))
    changes = {k: v for k, v in (("data", data), ("device", device), ("threads", threads)) if v is not None}
    if device is not None:
        resolve_device(device, check_available=False)
    return dataclasses.replace(saved, **changes)


def resolve_device(name: str, *, check_available: bool = True) -> torch.device:
    """``auto`` → the first CUDA GPU if there is one, else the CPU; ``cpu``; ``cuda``/``cuda:N``."""
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise LcgenError(f"device '{name}' is not one of auto, cpu, cuda, cuda:N")
    if check_available and device.type == "cuda":
        if not torch.cuda.is_available():
            raise LcgenError(f"device '{name}': torch sees no CUDA GPU here; use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise LcgenError(f"device '{name}': only {torch.cuda.device_count()} CUDA GPU(s) visible "
                             f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return device


# --------------------------------------------------------------------------------------------
# Loss


def huber(r2: torch.Tensor, tail: float) -> torch.Tensor:
    """``ρ(r²)``: ``r²`` for ``|r| <= tail`` and ``2·tail·|r| − tail²`` beyond (Huber); ``tail = 0``:
    always ``r²``. Same value and slope at ``|r| = tail``."""
    if tail <= 0:
        return r2
    r = r2.clamp(min=1e-12).sqrt()
    return torch.where(r <= tail, r2, 2 * tail * r - tail * tail)


def mse_sums(pred: torch.Tensor, batch: dict[str, torch.Tensor], *, tail: float = 0.0) -> torch.Tensor:
    """Squared-error sums and counts: tensor([Σ_hidden, n_hidden, Σ_visible, n_visible]).

    ``pred`` (B, L) (or (B, L, 1)); positions outside ``batch["valid"]`` never count, whatever
    ``pred`` or ``values`` hold there. Computed in float32. With ``tail > 0`` each squared error
    is :func:`huber`'s ``ρ(e²)`` (errors beyond ``tail`` count linearly).
    """
    pred = pred.reshape(batch["values"].shape).float()
    valid, hidden = batch["valid"], batch["hidden"]
    masked, unmasked = valid & hidden, valid & ~hidden
    zero = pred.new_zeros(())
    # zero the error off `valid` before squaring: NaN there must not reach the gradient either
    err = huber(torch.where(valid, pred - batch["values"].float(), zero) ** 2, tail)  # (B, L)
    return torch.stack([torch.where(masked, err, zero).sum(), masked.sum().to(err.dtype),
                        torch.where(unmasked, err, zero).sum(), unmasked.sum().to(err.dtype)])


def gaussian_nll_sums(pred: torch.Tensor, log_var: torch.Tensor, batch: dict[str, torch.Tensor], *,
                      tail: float = 0.0, beta: float = 0.0) -> torch.Tensor:
    """Gaussian NLL sums and counts: tensor([Σ_hidden nll, n_hidden, Σ_visible nll, n_visible]).

    ``nll = ½ [log(2π s²) + ρ(r²)]`` with ``s² = exp(log_var) + flux_err²`` (``flux_err`` from the
    batch where present, else 0) and ``r = (y − pred) / s``; ``ρ(r²) = r²`` for ``|r| <= tail``
    and ``2·tail·|r| − tail²`` beyond (``tail = 0``: always r²). With ``beta > 0`` each point's
    NLL is multiplied by ``s².detach() ** beta`` (β-NLL). Padding never counts.
    """
    shape = batch["values"].shape
    pred, log_var = pred.reshape(shape).float(), log_var.reshape(shape).float()
    valid, hidden = batch["valid"], batch["hidden"]
    masked, unmasked = valid & hidden, valid & ~hidden
    zero = pred.new_zeros(())
    var = log_var.exp()
    if "flux_err" in batch:
        var = var + torch.where(valid, batch["flux_err"].float(), zero) ** 2
    r2 = torch.where(valid, pred - batch["values"].float(), zero) ** 2 / var  # (B, L)
    nll = 0.5 * (torch.log(2 * math.pi * var) + huber(r2, tail))
    if beta > 0:
        nll = nll * var.detach() ** beta
    return torch.stack([torch.where(masked, nll, zero).sum(), masked.sum().to(nll.dtype),
                        torch.where(unmasked, nll, zero).sum(), unmasked.sum().to(nll.dtype)])


def loss_sums(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], cfg: "TrainConfig", *,
              validation: bool = False) -> torch.Tensor:
    """The sums of the configured loss (:func:`mse_sums` or :func:`gaussian_nll_sums`); for paired
    data the :func:`mse_sums` of each modality in ``MODALITIES`` order, (4 M,).

    ``validation``: the NLL without β-NLL's weights. Those weights are a training device (they
    give the mean the MSE's gradient); the weighted sum is not a proper score, it falls as the
    variance shrinks, and chose an epoch-1 ``best.pt`` with 1.35x the validation MSE of the last
    epoch's (demo data, 4 epochs). The plain NLL (a proper scoring rule) chose the last epoch."""
    if get_spec(cfg.model_name).data == "paired":
        sums = torch.cat([mse_sums(out[recon_key(m)], {"values": batch[v], "valid": batch[ok], "hidden": batch[h]})
                          for m in MODALITIES for v, ok, h in [modality_keys(m)]])
        if cfg.latent_spread_weight > 0 or cfg.latent_distill_weight > 0:
            z = out["encoded"]
            pooled = pooled_meanmax([(z, torch.ones(z.shape[:2], dtype=torch.bool, device=z.device))])
            if cfg.latent_spread_weight > 0:  # two more: the spread term of the batch and a count of 1
                sums = torch.cat([sums, spread_sums(pooled)])
            if cfg.latent_distill_weight > 0:  # two more: the distillation term of the batch and a count of 1
                sums = torch.cat([sums, distill_sums(pooled, out["teacher"])])
        return sums
    if cfg.loss == "nll":
        sums = gaussian_nll_sums(out["reconstructed"], out["log_var"], batch, tail=cfg.nll_tail,
                                 beta=0.0 if validation else cfg.nll_beta)
    else:
        sums = mse_sums(out["reconstructed"], batch, tail=cfg.mse_tail)
    if cfg.psd_aux_weight > 0:  # two more: the PSD head's squared-error sum and count of valid bins
        sums = torch.cat([sums, psd_sums(out["psd"], batch)])
    if cfg.contrastive_weight > 0:  # two more: the InfoNCE sum and count (zeros for a batch without pairs)
        sums = torch.cat([sums, contrast_sums(out["contrast"], batch["curve"], cfg.contrastive_temperature)
                          if "curve" in batch else sums.new_zeros(2)])
    return sums


def contrast_sums(z: torch.Tensor, curve: torch.Tensor, temperature: float) -> torch.Tensor:
    """tensor([Σ_i ℓ_i, n]) of InfoNCE (NT-Xent) over a batch: ``z`` (B, P) the projections,
    ``curve`` (B,) each row's source curve. With s_ij = cos(z_i, z_j) / ``temperature``,
    ℓ_i = −log(Σ_{j≠i, same curve} e^{s_ij} / Σ_{j≠i} e^{s_ij}), summed over the n rows that have
    another window of their curve in the batch (with pairs, exactly one: NT-Xent). Float32."""
    z = torch.nn.functional.normalize(z.float(), dim=-1)
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    s = (z @ z.T / temperature).masked_fill(eye, -torch.inf)
    positive = (curve[:, None] == curve[None, :]) & ~eye
    has = positive.any(1)
    loss = torch.logsumexp(s, 1) - torch.logsumexp(s.masked_fill(~positive, -torch.inf), 1)
    return torch.stack([torch.where(has, loss, 0.0).sum(), has.sum().to(loss.dtype)])


def spread_terms(x: torch.Tensor, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg's variance and covariance terms (Bardes et al. 2022) of ``x`` (B, P), B >= 2, in
    float32: ((1/P) Σ_p max(0, 1 − sqrt(Var_p + eps)), (1/P) Σ_{p≠q} C_pq²), C the covariance over
    the B rows (divided by B − 1) and Var_p its diagonal."""
    x = x.float()
    x = x - x.mean(0)
    cov = x.T @ x / (x.shape[0] - 1)
    var = torch.diagonal(cov)
    variance = torch.relu(1 - torch.sqrt(var + eps)).mean()
    covariance = (cov.square().sum() - var.square().sum()) / x.shape[1]
    return variance, covariance


def spread_sums(x: torch.Tensor) -> torch.Tensor:
    """tensor([spread, 1]): the sum of :func:`spread_terms` of the batch ``x`` (B, P) and a count
    of one batch; zeros for a batch of one row (no spread to measure)."""
    if x.shape[0] < 2:
        return x.new_zeros(2, dtype=torch.float32)
    variance, covariance = spread_terms(x)
    return torch.stack([variance + covariance, torch.ones_like(variance)])


def relative_distances(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """(B, B) float32 Euclidean distances between the rows of ``x`` (B, P) after standardising
    each column over the B rows (mean 0, variance 1 + ``eps`` in the denominator), divided by
    their mean over the pairs i != j (zero diagonal): the geometry a kNN probe on standardised
    features sees, up to scale. ``sqrt(d² + eps)`` keeps the gradient finite for equal rows."""
    x = x.float()
    x = (x - x.mean(0)) / torch.sqrt(x.var(0) + eps)
    off = ~torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    d2 = (x[:, None, :] - x[None, :, :]).square().sum(-1)
    d = torch.where(off, torch.sqrt(d2 + eps), 0.0)
    return d / d[off].mean()


def distill_sums(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """tensor([distill, 1]): the relational distillation term (the distance loss of Park et al.
    2019, squared) of a batch, ``student`` (B, P) and ``teacher`` (B, Q) pooled latents of the
    same rows, and a count of one batch: the mean over pairs i != j of (ψ_s − ψ_t)², ψ the
    :func:`relative_distances`; zeros for a batch of fewer than three rows (two rows have one
    distance, which the mean makes 1 for both)."""
    n = student.shape[0]
    if n < 3:
        return student.new_zeros(2, dtype=torch.float32)
    diff = relative_distances(student) - relative_distances(teacher.detach())
    term = diff.square().sum() / (n * (n - 1))
    return torch.stack([term, torch.ones_like(term)])


def psd_sums(pred: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """tensor([Σ (pred − psd)², n]) over the valid bins (``psd_valid``) of a paired batch; ``pred``
    (B, F). Computed in float32; invalid bins never count, whatever they hold."""
    valid = batch["psd_valid"]
    err = torch.where(valid, pred.float() - batch["psd"].float(), 0.0) ** 2
    return torch.stack([err.sum(), valid.sum().to(err.dtype)])


def recon_key(modality: str) -> str:
    """The multimodal model's output key of a modality's reconstruction."""
    return "reconstructed" if modality == "series" else f"reconstructed_{modality}"


def modality_weights(cfg: "TrainConfig") -> torch.Tensor | None:
    """(M,) float64 loss weights of a paired run, in ``MODALITIES`` order; None for other runs."""
    if get_spec(cfg.model_name).data != "paired":
        return None
    return torch.tensor([float(cfg.modality_weights.get(m, 1.0)) for m in MODALITIES], dtype=torch.float64)


def modality_losses(sums: torch.Tensor) -> dict[str, float]:
    """Masked MSE of each modality from paired :func:`loss_sums` (the history.csv columns)."""
    s = sums[:4 * len(MODALITIES)].reshape(-1, 4).double()
    return {m: float(s[j, 0] / s[j, 1].clamp(min=1)) for j, m in enumerate(MODALITIES)}


def aux_terms(cfg: "TrainConfig") -> tuple[tuple[str, float], ...]:
    """(history name, weight) of each auxiliary term a run has (weight > 0), in the order of their
    sums after the reconstruction's: ``psd_aux`` (:func:`psd_sums`), ``contrast`` (:func:`contrast_sums`),
    ``spread`` (:func:`spread_sums`), ``distill`` (:func:`distill_sums`)."""
    return tuple((name, w) for name, w in (("psd_aux", cfg.psd_aux_weight), ("contrast", cfg.contrastive_weight),
                                            ("spread", cfg.latent_spread_weight),
                                            ("distill", cfg.latent_distill_weight)) if w > 0)


def aux_base(weights: torch.Tensor | None) -> int:
    """Where the auxiliary terms' sums start in :func:`loss_sums`: after the reconstruction's 4, or
    4 per modality for paired data (``weights``: :func:`modality_weights`)."""
    return 4 if weights is None else 4 * len(weights)


def aux_mean(sums: torch.Tensor, j: int, base: int = 4) -> torch.Tensor:
    """The mean of auxiliary term ``j`` (its sum / its count) from :func:`loss_sums`; ``base``:
    :func:`aux_base`."""
    return sums[base + 2 * j] / sums[base + 1 + 2 * j].clamp(min=1)


def batch_loss(sums: torch.Tensor, totals: torch.Tensor, unmasked_weight: float,
               weights: torch.Tensor | None = None, aux: tuple[float, ...] = ()) -> torch.Tensor:
    """The loss to differentiate: this process's ``sums`` normalised by the global batch's
    ``totals`` (counts), per modality and weighted for paired data; plus, for each weight of
    ``aux`` (:func:`aux_terms`), that times its term's mean (sum over the global count)."""
    base = aux_base(weights)
    if weights is None:
        loss = sums[0] / totals[1].clamp(min=1) + unmasked_weight * sums[2] / totals[3].clamp(min=1)
    else:
        s, t = sums[:base].reshape(-1, 4), totals[:base].reshape(-1, 4)
        per = s[:, 0] / t[:, 1].clamp(min=1) + unmasked_weight * s[:, 2] / t[:, 3].clamp(min=1)
        loss = (weights.to(per) * per).sum()
    for j, w in enumerate(aux):
        loss = loss + w * sums[base + 2 * j] / totals[base + 1 + 2 * j].clamp(min=1)
    return loss


def losses_from_sums(sums: torch.Tensor, unmasked_weight: float, weights: torch.Tensor | None = None,
                     aux: tuple[float, ...] = ()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, masked, unmasked) MSEs from :func:`mse_sums` (an empty set of positions gives 0);
    with ``weights`` (paired data), the weighted sums over the modalities of each; the total
    includes each weight of ``aux`` times its term's mean (:func:`aux_mean`)."""
    base = aux_base(weights)
    if weights is None:
        masked = sums[0] / sums[1].clamp(min=1)
        unmasked = sums[2] / sums[3].clamp(min=1)
    else:
        s = sums[:base].reshape(-1, 4)
        w = weights.to(s)
        masked, unmasked = (w * s[:, 0] / s[:, 1].clamp(min=1)).sum(), (w * s[:, 2] / s[:, 3].clamp(min=1)).sum()
    total = masked + unmasked_weight * unmasked
    for j, a in enumerate(aux):
        total = total + a * aux_mean(sums, j, base)
    return total, masked, unmasked


def masked_mse(pred: torch.Tensor, batch: dict[str, torch.Tensor],
               unmasked_weight: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training loss: (total, masked, unmasked), see the module docstring.

    ``masked`` is the MSE over hidden real positions, ``unmasked`` over visible real positions,
    each pooled over the batch; ``total = masked + unmasked_weight · unmasked``.
    """
    return losses_from_sums(mse_sums(pred, batch), unmasked_weight)


# --------------------------------------------------------------------------------------------
# Models and checkpoints


def build_model(name: str, preset: str = "default", overrides: dict | None = None,
                length: int | None = None, lengths: dict[str, int] | None = None) -> torch.nn.Module:
    """A registered model; ``length`` sets ``input_length`` and ``lengths`` other row lengths of
    the data (``freq_length``, ``lag_length`` of paired data) unless the overrides set them."""
    spec = get_spec(name)
    overrides = dict(overrides or {})
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    given = {**({"input_length": length} if length is not None else {}), **(lengths or {})}
    for key, value in given.items():
        if key not in overrides and key in fields:
            overrides[key] = int(value)
    try:
        return create_model(name, preset, **overrides)
    except LcgenError:
        raise
    except (ValueError, TypeError) as exc:
        raise LcgenError(f"model '{name}' (preset {preset}) cannot be built with {overrides}: {exc}") from None


def model_config_dict(model: torch.nn.Module) -> dict:
    """The resolved config of a model, as a plain dict (enough to rebuild it)."""
    return config_to_dict(model.config)


def model_from_checkpoint(ckpt: dict, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the model a checkpoint describes and load its weights (eval mode)."""
    spec = get_spec(ckpt["model_name"])
    model = spec.cls(config_from_dict(spec.config_cls, ckpt["model_config"]))
    _load_weights(model, ckpt["state_dict"], ckpt["model_name"])
    # the post-hoc variance calibration (lcgen.evaluate.calibrate), applied by evaluate and fill; None if unfitted
    model.variance_calibration = ckpt.get("variance_calibration")
    return model.to(device).eval()


def _load_weights(model: torch.nn.Module, state_dict: dict, model_name: str) -> None:
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:  # shapes or names that do not match the model it describes
        detail = " ".join(str(exc).split())
        raise LcgenError(f"the checkpoint's weights do not fit the '{model_name}' model it "
                         f"describes ({detail[:200]})") from None


def save_checkpoint(path: str | Path, ckpt: dict) -> None:
    """``torch.save`` to a temporary name, then rename: a crash never leaves half a checkpoint."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a file object: torch then keeps the OSError
        torch.save(ckpt, fh)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``weights_only=True`` (no pickled code is ever run)."""
    path = Path(path)
    if not path.is_file():
        raise LcgenError(f"{path} does not exist; is {path.parent} an lcgen run directory?")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a torn or foreign file (torch's own message talks of weights_only)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LcgenError(f"{path} is not a valid lcgen checkpoint (damaged or not written by lcgen: "
                         f"{first[:160]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise LcgenError(f"{path} is not an lcgen checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise LcgenError(f"{path} is not a valid lcgen checkpoint: it lacks {', '.join(missing)}")
    return ckpt


def load_run(run_dir: str | Path, *, which: Literal["best", "last"] = "best",
             device: str | torch.device = "cpu") -> tuple[torch.nn.Module, TrainConfig]:
    """The trained model (eval mode, on ``device``) and the config of a run directory.

    ``which="best"`` reads ``best.pt`` (lowest validation loss), ``"last"`` ``last.pt``; a
    missing one is an error (never silently the other: their metrics would be mixed up).
    """
    run_dir = Path(run_dir)
    path = run_dir / f"{which}.pt"
    if which == "best" and not path.is_file() and (run_dir / "last.pt").is_file():
        raise LcgenError(f"{run_dir} has no best.pt (no epoch finished, or it was removed); score its "
                         f"last.pt with --checkpoint last")
    ckpt = load_checkpoint(path)
    try:
        model = model_from_checkpoint(ckpt, device)
    except LcgenError as exc:
        raise LcgenError(f"{path}: {exc}") from None
    return model, config_from_dict(TrainConfig, ckpt["train_config"])


def _rng_state(generator: torch.Generator) -> dict:
    """Every random state a run touches, as tensors and plain values."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "generator": generator.get_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64),
                        "gauss_next": gauss}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _rank_rng_state(device: torch.device) -> dict:
    """The random state that differs between ranks (dropout): torch's CPU and this GPU's."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, generator: torch.Generator, place: Dist = Dist(),
                   device: torch.device = torch.device("cpu")) -> None:
    """Restore :func:`_rng_state`; each rank takes its own saved state when the run had as many
    ranks (with another number of ranks, ranks above 0 keep their fresh per-rank seeds)."""
    ranks = state.get("ranks")
    if place.enabled and not (ranks and len(ranks) == place.world_size):
        generator.set_state(state["generator"])  # the masks; dropout streams start afresh
        return
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
    if place.enabled:
        own = ranks[place.rank]
        torch.set_rng_state(own["cpu"])
        if "cuda" in own and device.type == "cuda":
            torch.cuda.set_rng_state(own["cuda"], device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# The loop


@dataclasses.dataclass
class _State:
    """What changes as a run advances (saved in last.pt)."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed training batches of the current epoch
    sums: list = dataclasses.field(default_factory=lambda: [0.0] * 4)  # loss_sums of the epoch so far
    samples: int = 0  # training samples seen in the epoch so far
    seconds: float = 0.0  # training time of the epoch so far
    data_wait: float = 0.0  # the part of `seconds` spent waiting for batches
    best_val: float = math.inf
    history: list = dataclasses.field(default_factory=list)


def _choose_huge_pages(cfg: TrainConfig | None, resume: str | Path | None) -> None:
    """Huge pages for the model about to train (:func:`lcgen.workers.choose_huge_pages`), decided
    before any checkpoint is read (torch reads the switch at the process's first tensor); a
    resumed run's model comes from its config.yaml. Nothing when the model is unknown."""
    name = cfg.model_name if cfg is not None else None
    if resume is not None:
        with contextlib.suppress(LcgenError, OSError):  # a broken run dir is reported by fit itself
            name = load_yaml(Path(resume) / "config.yaml").get("model_name")
    if isinstance(name, str) and name in MODELS:
        choose_huge_pages(MODELS[name].huge_pages)


def fit(cfg: TrainConfig | None = None, *, name: str | None = None, resume: str | Path | None = None,
        console=None, progress: bool = False, line_every_s: float | None = 60.0,
        stop_after: int | None = None) -> dict:
    """Train ``cfg.model_name`` on ``cfg.data``; or, with ``resume=RUN_DIR``, continue that run.

    Writes the run directory (see the module docstring). ``console`` (a Rich console) receives
    the per-epoch lines; ``progress`` shows a live progress bar per epoch, and without it a line
    goes to ``console`` every ``line_every_s`` seconds within an epoch (None: never). ``stop_after`` ends
    this call after that many epochs (the schedule still spans ``cfg.epochs``; resume later).
    With ``resume``, ``cfg`` may only change ``RESUMABLE_CHANGES`` of the saved config (``data``,
    ``device``, ``threads``, ``compile``, ``loss_read_every``, ``prefetch``).

    Started by torchrun (``RANK``/``WORLD_SIZE`` in the environment), every process calls this
    and they train one model with DistributedDataParallel (:mod:`lcgen.train.distributed`); rank 0
    alone writes and prints, and every rank returns the same result.

    Returns ``{"run_dir", "status" ("finished", "stopped" or "interrupted"), "epoch",
    "best_val", "history"}``. A non-finite loss or gradient raises :class:`LcgenError` naming
    the epoch and step, leaving the last good checkpoint untouched.
    """
    _choose_huge_pages(cfg, resume)
    place = from_env()
    log = _logger(console if place.main else None)
    progress = progress and place.main
    init_ckpt = None  # --init: the checkpoint whose weights a new run starts from
    if resume is not None:
        run_dir = Path(resume)
        ckpt = load_checkpoint(run_dir / "last.pt")
        missing = [k for k in RESUME_KEYS if k not in ckpt]
        if missing:
            raise LcgenError(f"{run_dir / 'last.pt'} cannot be resumed: it lacks {', '.join(missing)}")
        cfg = _resumed_config(ckpt, cfg, run_dir)
    else:
        if cfg is None:
            raise ValueError("fit needs a config or resume=RUN_DIR")
        cfg = complete_config(cfg)
        if cfg.init is not None:
            init_ckpt, cfg = _init_checkpoint(cfg)
        ckpt = None
        run_dir = None
    device = _process_device(cfg.device, place)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if device.type == "cpu":
        keep_all_freed_memory()  # each step's large tensors reuse the last step's memory, no page faults
    seed_everything(cfg.seed)
    spec = get_spec(cfg.model_name)

    log(f"Using device: {_device_name(device)}" + (f" x {place.world_size} processes" if place.enabled else ""))
    log("")
    source = _open_data(cfg, spec)  # check the data before making a run dir
    with contextlib.closing(source), contextlib.ExitStack() as cleanup, process_group(place, device), \
            _fast_cuda_math(device):
        if init_ckpt is not None:
            _check_init_data(init_ckpt, cfg, source)
        # the teacher is checked against the data before a run directory is made
        teacher = _load_teacher(cfg, source, device, log) if cfg.latent_distill_weight > 0 else None
        if run_dir is None:
            run_dir = on_main(lambda: _new_run_dir(cfg, name, config_to_yaml(cfg)), place)
            if place.main:
                cleanup.callback(_remove_if_unstarted, run_dir)
        log(f"Loading data from {source.description}...")
        log("")
        split = on_main(lambda: _load_or_make_split(cfg, source, run_dir, resume is not None), place)
        if place.main:  # one full pass over the file, for the log only
            stats = source.statistics(np.sort(np.concatenate([split[k] for k in ("train", "val", "test")])))
            _log_dataset(log, stats, split, source)

        if ckpt is not None:
            model = model_from_checkpoint(ckpt)
        elif init_ckpt is not None and init_ckpt["model_name"] != cfg.model_name:
            model = build_model(cfg.model_name, cfg.preset, cfg.model, length=source.length,
                                lengths=_model_lengths(cfg, source))
            model.init_series(config_from_dict(get_spec("transformer").config_cls, init_ckpt["model_config"]),
                              init_ckpt["state_dict"])
            log(f"Series branch from the transformer run {cfg.init} (epoch {init_ckpt['epoch']}; the rest fresh)")
            del init_ckpt
        elif init_ckpt is not None:
            model = init_model(init_ckpt, cfg)
            log(f"Fine-tuning from {cfg.init} (epoch {init_ckpt['epoch']}, fresh optimizer and schedule)")
            del init_ckpt
        else:
            model = build_model(cfg.model_name, cfg.preset, cfg.model, length=source.length,
                                lengths=_model_lengths(cfg, source))
        if cfg.psd_aux_weight > 0 and model.config.psd_head != source.lengths["freq_length"]:
            raise LcgenError(f"psd_aux_weight = {cfg.psd_aux_weight}: the model's PSD head has {model.config.psd_head} "
                             f"bins and {source.path} {source.lengths['freq_length']} frequencies; fine-tune a run "
                             f"trained with psd_aux_weight on the same grid, or start a new run")
        if cfg.contrastive_weight > 0 and not model.config.contrast_head:
            raise LcgenError(f"contrastive_weight = {cfg.contrastive_weight}: the model has no contrastive head "
                             f"(model.contrast_head = 0{', from --init ' + str(cfg.init) if cfg.init else ''}); "
                             f"start a new run, or fine-tune a run trained with contrastive_weight")
        if cfg.contrastive_weight > 0 and place.enabled:
            raise LcgenError(f"contrastive_weight = {cfg.contrastive_weight} compares the windows of the whole batch, "
                             f"which {place.world_size} processes would split; train it in one process")
        model.to(device)
        log(f"Creating {_model_title(cfg.model_name)} autoencoder (preset {cfg.preset})...")
        log(f"Model parameters: {sum(p.numel() for p in model.parameters()):,}")
        log("")

        steps = n_batches(len(split["train"]), cfg.batch_size)
        optimizer = _make_optimizer(model, cfg)
        scheduler = _make_scheduler(optimizer, cfg, steps)
        generator = torch.Generator().manual_seed(cfg.seed)  # training masks, on the CPU, same on every rank
        if place.enabled:  # dropout differs between ranks
            torch.manual_seed(cfg.seed + 1_000_003 * place.rank)
        state = _State()
        if ckpt is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            _set_rng_state(ckpt["rng"], generator, place, device)
            state = _State(**ckpt["progress"])
            del ckpt  # the weights and optimiser state are in place; free the copy

        if state.epoch >= cfg.epochs:
            log(f"{run_dir} has finished all {cfg.epochs} epochs; nothing to do.")
            return _result(run_dir, "finished", state)
        m = cfg.mask
        if state.epoch or state.step:
            log(f"Resuming training at epoch {state.epoch + 1}/{cfg.epochs}, step {state.step + 1}...")
        else:
            log(f"Starting training for {cfg.epochs} epochs...")
        blocks = (f"blocks of {m.min_days:g}-{m.max_days:g} days" if m.max_days > 0
                  else f"block size [{m.min_block}, {m.max_block}]")
        log(f"Dynamic masking: {blocks}, mask ratio [{m.min_ratio:.0%}, {m.max_ratio:.0%}]")
        if place.enabled:
            log(f"Data parallel: {place.world_size} processes ({backend_for(device)}), global batch "
                f"{cfg.batch_size} = about {cfg.batch_size // place.world_size} per process")
        log(f"Run directory: {run_dir}")

        if cfg.compile:
            log("Compiling the model with torch.compile (the first steps take minutes)...")
        loop = _Loop(cfg, model, optimizer, scheduler, generator, source, split, device, run_dir,
                     spec, log, progress, line_every_s, place, teacher)
        with _catch_interrupt() as interrupt:
            done_here = 0
            while state.epoch < cfg.epochs:
                finished_epoch = loop.run_epoch(state, interrupt)
                if not finished_epoch:
                    loop.save_last(state)
                    log("")
                    log(f"Interrupted at epoch {state.epoch + 1}, step {state.step}/{steps}: saved "
                        f"{run_dir / 'last.pt'}. Continue with: lcgen train --resume {run_dir}")
                    return _result(run_dir, "interrupted", state)
                done_here += 1
                if stop_after is not None and done_here >= stop_after and state.epoch < cfg.epochs:
                    return _result(run_dir, "stopped", state)
    return _result(run_dir, "finished", state)


class _Forward(torch.nn.Module):
    """``model.forward_batch`` as a module's ``forward``: what DDP wraps and torch.compile compiles.
    With a ``teacher`` (latent_distill_weight) the outputs also hold ``teacher``: its pooled latent
    of the batch's whole series (nothing hidden), without gradients."""

    def __init__(self, model: torch.nn.Module, teacher: torch.nn.Module | None = None):
        super().__init__()
        self.model, self.teacher = model, teacher

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.model.forward_batch(batch)
        if self.teacher is not None:
            with torch.no_grad():
                series = {k: batch[k] for k in ("values", "valid", "time", "flux_err") if k in batch}
                out["teacher"] = pooled_meanmax(list(self.teacher.latents(series).values()))
        return out


class _Loop:
    """One epoch of training and validation, plus checkpointing (the state lives in _State)."""

    def __init__(self, cfg, model, optimizer, scheduler, generator, source, split, device,
                 run_dir, spec, log, progress, line_every_s: float | None = None, place: Dist = Dist(),
                 teacher: torch.nn.Module | None = None):
        self.cfg, self.model, self.optimizer, self.scheduler = cfg, model, optimizer, scheduler
        self.generator, self.source, self.split, self.device = generator, source, split, device
        self.run_dir, self.spec, self.log, self.progress, self.place = run_dir, spec, log, progress, place
        self.line_every_s = line_every_s  # seconds between progress lines without a progress bar
        self.steps = n_batches(len(split["train"]), cfg.batch_size)
        self.mask_args = dataclasses.asdict(cfg.mask)
        self.autocast = dict(device_type=device.type, dtype=torch.bfloat16,
                             enabled=cfg.amp and device.type == "cuda")
        # Host reads of the device-side loss sums (each one waits for the GPU) every this many steps.
        self.read_every = cfg.loss_read_every or (CUDA_READ_EVERY if device.type == "cuda" else 1)
        self.prefetch = cfg.prefetch if cfg.prefetch is not None else (CUDA_PREFETCH if device.type == "cuda" else 0)
        # The batch forward, uncompiled (kept for the fallback): in training under DDP with several
        # processes; validation needs no DDP. With compile, the same compiled (the model itself
        # stays plain, so checkpoints keep its parameter names).
        net = _Forward(model, teacher)
        self.eager = {"train": self._wrap(net), "eval": net}
        self.forward = dict(self.eager)
        if cfg.compile:
            compiled = torch.compile(net)
            self.forward = {"train": torch.compile(self.eager["train"]) if place.enabled else compiled,
                            "eval": compiled}
        self.compiled = cfg.compile  # until the compiled model fails (then eager)
        self.weights = modality_weights(cfg)  # None unless paired data
        self.aux_names = [name for name, _ in aux_terms(cfg)]  # two more sums each (loss_sums)
        self.aux = tuple(w for _, w in aux_terms(cfg))
        self.n_sums = aux_base(self.weights) + 2 * len(self.aux)
        self.pairs = cfg.batch_size // 2 if cfg.contrastive_weight > 0 else 0  # curves per training batch
        self.val_plan = None  # the validation pairs: fixed (the validation mask seed), up to B/2 curves a batch
        if self.pairs:
            n_train = pair_curves(split["train"], source.groups)
            if n_train < self.pairs:
                raise LcgenError(f"contrastive_weight = {cfg.contrastive_weight}: a batch holds batch_size/2 = "
                                 f"{self.pairs} curves with two windows each, and the training split has {n_train} "
                                 f"curves with two or more windows; lower --batch-size")
            n_val = min(self.pairs, pair_curves(split["val"], source.groups))
            if n_val >= 2:
                self.val_plan = pair_plan(split["val"], source.groups, n_val, max(1, len(split["val"]) // cfg.batch_size),
                                          seed=cfg.val_mask_seed)

    def _wrap(self, net: torch.nn.Module) -> torch.nn.Module:
        """``net`` under DDP for several processes."""
        if self.place.enabled:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return net

    def _forward(self, batch: dict, mode: str) -> dict:
        """The model's outputs for ``batch`` (``mode`` "train" or "eval"); if the compiled model
        fails (no compiler toolchain, an unsupported platform or operator), say so once, go back
        to the uncompiled forward for good and run it again."""
        if not self.compiled:
            return self.forward[mode](batch)
        try:
            return self.forward[mode](batch)
        except Exception as exc:
            self.compiled = False
            self.forward = dict(self.eager)
            self.log(f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                     f"training without it")
            return self.forward[mode](batch)

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _share(self, step: int) -> tuple[int, int, int]:
        """(global batch size, first row, end row) of this rank's share of training step ``step``."""
        size = min(self.cfg.batch_size, len(self.split["train"]) - step * self.cfg.batch_size)
        if self.pairs:  # every batch is whole: B/2 pairs
            size = 2 * self.pairs
        return (size, *batch_share(size, self.place.rank, self.place.world_size))

    def _train_mask(self, valid: torch.Tensor, step: int, time: torch.Tensor | None = None) -> torch.Tensor:
        """Training masks for this rank's rows: the draws of the whole global batch are made (the
        same on every rank), this rank's rows kept, so a sample's mask does not depend on N."""
        size, a, b = self._share(step)
        draws = draw_train(torch.empty(size, valid.shape[1], dtype=torch.bool),
                           min_block=key_block(self.cfg.mask.min_block, self.cfg.mask.max_days),
                           generator=self.generator)
        draws = MaskDraws(draws.u_block[a:b], draws.u_ratio[a:b], draws.keys[a:b])
        return lay_mask(valid, draws, time=time, **self.mask_args)

    def _close_gap(self, batch: dict, step: int) -> dict:
        """Gap augmentation of this rank's rows (:func:`lcgen.masking.close_gap`), from draws of
        the whole global batch made with the run's generator, as for the masks."""
        size, a, b = self._share(step)
        u = torch.rand(size, 3, generator=self.generator, dtype=torch.float64)[a:b]
        if self.cfg.gap_drop == 0:  # the draws of runs made before gap_drop, unchanged
            return close_gap(batch, u, fraction=self.cfg.gap_augment, max_points=self.cfg.gap_points)
        more = torch.rand(size, 1 + batch["valid"].shape[1], generator=self.generator, dtype=torch.float64)[a:b]
        return close_gap(batch, torch.cat([u, more[:, :1]], 1), fraction=self.cfg.gap_augment,
                         max_points=self.cfg.gap_points, drop_max=self.cfg.gap_drop, u_drop=more[:, 1:])

    def run_epoch(self, state: _State, interrupt: dict) -> bool:
        """Train the rest of epoch ``state.epoch``, validate, checkpoint. False if interrupted."""
        cfg, epoch, place = self.cfg, state.epoch, self.place
        self.model.train()
        if state.step == 0:
            state.sums = [0.0] * self.n_sums
        if self.pairs:  # contrastive: B/2 curves x 2 windows, the epoch's plan from (seed, epoch)
            plan = pair_plan(self.split["train"], self.source.groups, self.pairs, self.steps, seed=cfg.seed, epoch=epoch)
            batches = iter_pair_batches(self.source, plan, start_batch=state.step, buffer_rows=cfg.buffer_rows)
        else:
            batches = iter_batches(self.source, self.split["train"], cfg.batch_size, shuffle=True,
                                   seed=cfg.seed, epoch=epoch, start_batch=state.step,
                                   buffer_rows=cfg.buffer_rows, rank=place.rank, world_size=place.world_size)
        batches = prefetch(batches, self.prefetch, pin_memory=self.device.type == "cuda")
        # Loss sums of the steps since the last host read, on the device; the worst non-finite
        # gradient norm seen (0 if none).
        pending = torch.zeros(self.n_sums, dtype=torch.float64, device=self.device)
        bad_norm = torch.zeros((), device=self.device)
        first_pending = state.step
        with contextlib.closing(batches), _epoch_bar(self.progress, f"Epoch {epoch + 1}/{cfg.epochs}", self.steps,
                                                     state.step, cfg.unmasked_weight, self.log, self.line_every_s,
                                                     self.weights, self.aux) as bar:
            tick = time.perf_counter()
            while state.step < self.steps:
                batch = next(batches)
                waited = time.perf_counter() - tick
                if cfg.gap_augment > 0:  # real gaps cut in first, so hidden blocks may straddle them
                    batch = self._close_gap(batch, state.step)
                # Training masks come from the run's generator on the CPU: identical on any device.
                batch["hidden"] = self._train_mask(batch["valid"], state.step, batch.get("time"))
                if self.weights is not None:  # paired data: the spectra's masks and modality dropout
                    batch.update(paired_masks(batch, batch["hidden"], p_drop=cfg.modality_dropout,
                                              generator=self.generator, share=self._share(state.step),
                                              **self.mask_args))
                batch = self._to_device(batch)
                with torch.autocast(**self.autocast):
                    out = self._forward(batch, "train")
                sums = loss_sums(out, batch, cfg)  # this rank's rows
                totals = all_sum(sums.detach().clone(), place)  # the global batch's
                # Pooled over the global batch (MSE or NLL alike); DDP averages gradients over ranks,
                # hence the factor.
                total = place.world_size * batch_loss(sums, totals, cfg.unmasked_weight, self.weights, self.aux)
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                if cfg.grad_clip > 0:
                    norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip, foreach=True)
                    bad_norm = torch.where(torch.isfinite(norm), bad_norm, norm.detach())
                self.optimizer.step()
                self.scheduler.step()

                pending += totals
                state.step += 1
                state.samples += self._share(state.step - 1)[0]
                now = time.perf_counter()
                state.seconds += now - tick
                state.data_wait += waited
                tick = now
                if state.step % self.read_every == 0 or state.step == self.steps:
                    # the one host read of the loss (it waits for the device)
                    self._check_finite(pending, bad_norm, state, first_pending)
                    state.sums = [a + b for a, b in zip(state.sums, pending.tolist())]
                    pending.zero_()
                    first_pending = state.step
                    bar(state)
                    if _any_rank(interrupt["stop"], place, self.device):
                        return False
        train_sums = torch.tensor(state.sums, dtype=torch.float64)
        train = losses_from_sums(train_sums, cfg.unmasked_weight, self.weights, self.aux)
        val = self.validate(interrupt)
        if val is None:
            return False
        val, val_sums = val[:3], val[3]
        lr = self.scheduler.get_last_lr()[0]
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": float(train[0]), "train_masked": float(train[1]),
               "train_unmasked": float(train[2]), "val_loss": val[0], "val_masked": val[1],
               "val_unmasked": val[2], "seconds": state.seconds,
               "samples_per_s": state.samples / state.seconds if state.seconds > 0 else 0.0,
               "data_wait_s": state.data_wait}
        if self.weights is not None:
            row.update({f"train_masked_{m}": v for m, v in modality_losses(train_sums).items()})
            row.update({f"val_masked_{m}": v if len(self.split["val"]) else float("nan")
                        for m, v in modality_losses(val_sums).items()})
        base = aux_base(self.weights)
        for j, name in enumerate(self.aux_names):
            row[f"train_{name}"] = float(aux_mean(train_sums, j, base))
            row[f"val_{name}"] = float(aux_mean(val_sums, j, base)) if val_sums[base + 1 + 2 * j] > 0 else float("nan")
        self.log("")
        self.log(f"Epoch {epoch + 1}/{cfg.epochs}")
        self.log(f"  Train - Loss: {row['train_loss']:.6f} | Masked: {row['train_masked']:.6f} | "
                 f"Unmasked: {row['train_unmasked']:.6f}")
        if len(self.split["val"]):
            self.log(f"  Val   - Loss: {val[0]:.6f} | Masked: {val[1]:.6f} | Unmasked: {val[2]:.6f}")
        for name, w in zip(self.aux_names, self.aux):
            self.log(f"  {AUX_LABELS[name]:<5} - Train: {row[f'train_{name}']:.6f} | Val: {row[f'val_{name}']:.6f} "
                     f"(auxiliary, weight {w:g})")
        self.log(f"  Time  - {row['seconds']:.1f} s | {row['samples_per_s']:,.0f} samples/s | lr {lr:.3g}")
        # with no validation rows, "best" falls back to the training loss
        score = val[0] if len(self.split["val"]) else row["train_loss"]
        state.epoch, state.step, state.sums, state.samples = epoch + 1, 0, [0.0] * self.n_sums, 0
        state.seconds = state.data_wait = 0.0
        state.history.append(row)
        if score < state.best_val:
            state.best_val = score
            if self.place.main:
                save_checkpoint(self.run_dir / "best.pt", self.checkpoint(state, full=False))
            self.log(f"  Saved best model to {self.run_dir / 'best.pt'}")
        self.save_last(state)
        return True

    @torch.no_grad()
    def validate(self, interrupt: dict) -> tuple[float, float, float, torch.Tensor] | None:
        """Pooled (loss, masked, unmasked, loss sums) over the validation rows with their fixed
        masks; each rank scores its share of every batch. None if interrupted."""
        rows = self.split["val"]
        if not len(rows):
            return (float("nan"),) * 3 + (torch.zeros(self.n_sums, dtype=torch.float64),)
        self.model.eval()
        sums = torch.zeros(self.n_sums, dtype=torch.float64, device=self.device)
        batches = iter_batches(self.source, rows, self.cfg.batch_size, buffer_rows=self.cfg.buffer_rows,
                               rank=self.place.rank, world_size=self.place.world_size)
        batches = prefetch(batches, self.prefetch, pin_memory=self.device.type == "cuda")
        with contextlib.closing(batches):
            for k, batch in enumerate(batches, 1):
                batch["hidden"] = fixed_mask(batch["valid"], batch["index"], seed=self.cfg.val_mask_seed,
                                             time=batch.get("time"), **self.mask_args)
                if self.weights is not None:
                    batch.update(paired_masks(batch, batch["hidden"], p_drop=self.cfg.modality_dropout,
                                              seed=self.cfg.val_mask_seed, **self.mask_args))
                batch = self._to_device(batch)
                with torch.autocast(**self.autocast):
                    out = self._forward(batch, "eval")  # no gradients: DDP is not needed
                sums += loss_sums(out, batch, self.cfg, validation=True).double()
                if k % self.read_every == 0 and _any_rank(interrupt["stop"], self.place, self.device):
                    return None
        if self.val_plan is not None:  # the contrastive term over fixed pairs of validation curves
            for batch in iter_pair_batches(self.source, self.val_plan, buffer_rows=self.cfg.buffer_rows):
                batch["hidden"] = fixed_mask(batch["valid"], batch["index"], seed=self.cfg.val_mask_seed,
                                             time=batch.get("time"), **self.mask_args)
                batch = self._to_device(batch)
                with torch.autocast(**self.autocast):
                    out = self._forward(batch, "eval")
                sums[-2:] += loss_sums(out, batch, self.cfg, validation=True)[-2:].double()
        self.model.train()
        sums = all_sum(sums, self.place).cpu()
        return (*(float(x) for x in losses_from_sums(sums, self.cfg.unmasked_weight, self.weights, self.aux)), sums)

    def _check_finite(self, pending: torch.Tensor, bad_norm: torch.Tensor, state: _State, first: int) -> None:
        """Stop on a non-finite loss or gradient norm among steps ``first + 1 .. state.step``."""
        loss = losses_from_sums(pending, self.cfg.unmasked_weight, self.weights, self.aux)[0]
        if not torch.isfinite(loss):
            self._stop_non_finite("loss", float(loss), state, first)
        if float(bad_norm) != 0:
            self._stop_non_finite("gradient norm", float(bad_norm), state, first)

    def _stop_non_finite(self, what: str, value: float, state: _State, first: int) -> None:
        last = self.run_dir / "last.pt"
        kept = (f"the last good checkpoint {last} (after epoch {state.epoch}) is kept" if last.is_file()
                else "no checkpoint was written yet")
        steps = f"step {state.step}" if first + 1 == state.step else f"steps {first + 1}-{state.step}"
        raise LcgenError(f"non-finite {what} ({value}) at epoch {state.epoch + 1}, {steps}: "
                         f"training stopped and {kept}; lower --lr, keep grad_clip on, or check the data")

    def checkpoint(self, state: _State, *, full: bool = True, rng: dict | None = None) -> dict:
        model = self.model
        ckpt = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "lcgen_version": __version__,
                "model_name": self.cfg.model_name, "model_config": model_config_dict(model),
                "preset": self.cfg.preset, "data_kind": self.spec.data,
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "epoch": state.epoch, "best_val": state.best_val,
                "train_config": config_to_dict(self.cfg)}
        if full:
            ckpt.update(optimizer=_to_cpu(self.optimizer.state_dict()), scheduler=self.scheduler.state_dict(),
                        rng=rng if rng is not None else _rng_state(self.generator),
                        progress=dataclasses.asdict(state))
        return ckpt

    def save_last(self, state: _State) -> None:
        """last.pt and history.csv, written by rank 0 (every rank must call this: the random
        states of all ranks are gathered into the checkpoint)."""
        rng = _rng_state(self.generator)
        if self.place.enabled:
            rng["ranks"] = gather(_rank_rng_state(self.device), self.place)
        if self.place.main:
            save_checkpoint(self.run_dir / "last.pt", self.checkpoint(state, rng=rng))
            write_history(self.run_dir / "history.csv", state.history)


def write_history(path: str | Path, rows: list[dict]) -> None:
    """history.csv: one row per finished epoch (columns ``HISTORY_COLUMNS``), written atomically."""
    extra = [k for k in (rows[0] if rows else {}) if k not in HISTORY_COLUMNS]  # per-modality losses
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*HISTORY_COLUMNS, *extra])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in row.items()})


# --------------------------------------------------------------------------------------------
# Helpers of fit


def _open_data(cfg: TrainConfig, spec):
    """The row source of ``cfg.data`` for the model; with ``psd_aux_weight`` a paired file (the
    windows' PSD is the auxiliary target), refused with the command that makes one."""
    if cfg.psd_aux_weight <= 0:
        return open_source(cfg.data, spec.data, cfg.channel)
    try:
        return open_source(cfg.data, "paired")
    except LcgenError as exc:
        raise LcgenError(f"psd_aux_weight = {cfg.psd_aux_weight} needs each window's PSD: {exc}") from None


def _model_lengths(cfg: TrainConfig, source) -> dict[str, int] | None:
    """Row lengths of the data's other parts for :func:`build_model`: the spectra of paired data
    for the multimodal model, the PSD head's bins with ``psd_aux_weight``; and the contrastive
    head's width (``CONTRAST_HEAD``) with ``contrastive_weight``."""
    lengths = {"psd_head": source.lengths["freq_length"]} if cfg.psd_aux_weight > 0 else getattr(source, "lengths", None)
    if cfg.contrastive_weight > 0:
        lengths = {**(lengths or {}), "contrast_head": CONTRAST_HEAD}
    return lengths


def _make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    # Decay matrices and embeddings only; biases and norm gains (1-D) are left alone.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    impl = cfg.optimizer_impl
    if impl == "auto":  # torch has fused AdamW kernels for CPU and CUDA
        impl = "fused" if all(p.device.type in ("cpu", "cuda") for p in params) else "foreach"
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, fused=impl == "fused",
                             foreach=impl == "foreach")


def _make_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    pct = cfg.pct_start
    if abs(pct * total - 1) < 1e-9:
        # torch's OneCycleLR divides by zero when warm-up is exactly one step long; a hair more
        # warm-up gives the same learning rates.
        pct += 1e-6 / total
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=total, pct_start=pct,
        div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor)


def _new_run_dir(cfg: TrainConfig, name: str | None, config_yaml: str) -> Path:
    """Make RUNS_DIR/MODEL/NAME (NAME a timestamp by default) and write its config.yaml."""
    root = Path(cfg.runs_dir) / cfg.model_name
    if name is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        name, k = stamp, 1
        while (root / name).exists():
            k += 1
            name = f"{stamp}-{k}"
    elif not name or "/" in name or "\\" in name or name in (".", ".."):
        raise LcgenError(f"run name '{name}' must be a plain directory name (no slashes)")
    run_dir = root / name
    if (run_dir / "last.pt").exists():  # a directory without last.pt holds nothing to resume
        raise LcgenError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                         f"or choose another --name")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config_yaml)
    return run_dir


def _remove_if_unstarted(run_dir: Path) -> None:
    """A new run directory that never got a checkpoint (the start failed) holds nothing to keep:
    remove what the run wrote there, and the directory if that leaves it empty."""
    if (run_dir / "last.pt").exists():
        return
    for name in ("config.yaml", SPLIT_FILE, "history.csv", "best.pt"):
        (run_dir / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()


def _resumed_config(ckpt: dict, cfg: TrainConfig | None, run_dir: Path) -> TrainConfig:
    saved = config_from_dict(TrainConfig, ckpt["train_config"])
    if cfg is None:
        return saved
    changed = [f.name for f in dataclasses.fields(TrainConfig)
               if getattr(cfg, f.name) != getattr(saved, f.name) and f.name not in RESUMABLE_CHANGES]
    if changed:
        raise LcgenError(f"--resume {run_dir} continues that run with its saved settings; "
                         f"{', '.join(changed)} cannot change (start a new run instead)")
    return dataclasses.replace(saved, **{k: getattr(cfg, k) for k in RESUMABLE_CHANGES})


# --init (fine-tuning): the weights and model config of another run, nothing else of it.


def _init_checkpoint(cfg: TrainConfig) -> tuple[dict, TrainConfig]:
    """The checkpoint ``cfg.init`` starts from (best.pt, else last.pt) and ``cfg`` with that
    run's model settings (preset and overrides), so config.yaml says what was trained."""
    run_dir = Path(cfg.init)
    path = run_dir / "best.pt" if (run_dir / "best.pt").is_file() else run_dir / "last.pt"
    if not path.is_file():
        raise LcgenError(f"--init {run_dir}: no best.pt or last.pt there; give a run directory written by lcgen train")
    ckpt = load_checkpoint(path)
    if cfg.model_name == "multimodal" and ckpt["model_name"] == "transformer":
        return ckpt, dataclasses.replace(cfg, init=str(run_dir))  # the series branch only (init_model)
    if ckpt["model_name"] != cfg.model_name:
        raise LcgenError(f"--init {run_dir} is a '{ckpt['model_name']}' run; train that model: "
                         f"lcgen train {ckpt['model_name']} --init {run_dir}")
    saved = ckpt["train_config"]
    model = {**saved["model"], **({"variance_head": True} if cfg.loss == "nll" else {})}
    return ckpt, dataclasses.replace(cfg, preset=saved["preset"], model=model, init=str(run_dir))


def init_model(ckpt: dict, cfg: TrainConfig) -> torch.nn.Module:
    """The model of an ``--init`` checkpoint with its weights. A mean-only run fine-tuned with
    ``loss: nll`` gets its variance head added: the output layer's mean outputs (first along
    its dim 0 in every model) keep their weights, the log-variance outputs start as a fresh
    layer would (seeded), so the fine-tune starts from the same mean predictions."""
    if not cfg.model.get("variance_head") or ckpt["model_config"].get("variance_head"):
        return model_from_checkpoint(ckpt)
    spec = get_spec(ckpt["model_name"])
    model = spec.cls(config_from_dict(spec.config_cls, {**ckpt["model_config"], "variance_head": True}))
    state = model.state_dict()
    for key, value in ckpt["state_dict"].items():
        if key in state and state[key].shape != value.shape and state[key].shape[1:] == value.shape[1:]:
            grown = state[key].clone()
            grown[:value.shape[0]] = value
            value = grown
        state[key] = value
    _load_weights(model, state, ckpt["model_name"])
    model.variance_calibration = None
    return model.eval()


def _check_init_data(ckpt: dict, cfg: TrainConfig, source) -> None:
    """Refuse data whose rows differ in length from those the ``--init`` run was trained on."""
    trained = ckpt["model_config"].get("input_length")
    if trained is not None and trained != source.length:
        raise LcgenError(f"--init {cfg.init} was trained on rows of length {trained}, but {source.path} has rows of "
                         f"length {source.length}; remake the data with that length (e.g. lcgen convert --max-length {trained})")


def _load_teacher(cfg: TrainConfig, source, device: torch.device, log: Callable) -> torch.nn.Module:
    """The frozen transformer of ``cfg.latent_distill_from`` (best.pt, eval mode, no gradients),
    checked against the data: a transformer run trained on rows of the data's length."""
    run_dir = Path(cfg.latent_distill_from)
    if not (run_dir / "best.pt").is_file():
        raise LcgenError(f"latent_distill_from {run_dir}: no best.pt there; give a transformer run directory "
                         f"written by lcgen train transformer")
    teacher, tcfg = load_run(run_dir, which="best", device=device)
    if tcfg.model_name != "transformer":
        raise LcgenError(f"latent_distill_from {run_dir} is a '{tcfg.model_name}' run; the teacher is a transformer run")
    if teacher.config.input_length != source.length:
        raise LcgenError(f"latent_distill_from {run_dir} was trained on rows of length {teacher.config.input_length}, "
                         f"but {source.path} has rows of length {source.length}")
    teacher.requires_grad_(False)
    log(f"Distilling the shared latent's neighbours from the transformer run {run_dir} "
        f"(weight {cfg.latent_distill_weight:g})")
    return teacher


def _load_or_make_split(cfg: TrainConfig, source, run_dir: Path, resuming: bool) -> dict:
    if resuming:
        split = load_split(run_dir)
        if int(split["n_rows"]) != source.n_rows:
            raise LcgenError(f"{source.path} has {source.n_rows} rows but {run_dir} was trained on a "
                             f"file of {int(split['n_rows'])} rows; give the original file with --data")
        return split
    split = split_rows(source.groups, source.usable, val_fraction=cfg.val_fraction,
                       test_fraction=cfg.test_fraction, seed=cfg.seed)
    save_split(run_dir / SPLIT_FILE, split, source.n_rows)
    return split


def _log_dataset(log, stats: dict, split: dict, source) -> None:
    log("Dataset statistics:")
    log(f"  Shape: {stats['shape']}")
    log(f"  Range: [{stats['min']:.3f}, {stats['max']:.3f}]")
    log(f"  Mean: {stats['mean']:.3f}")
    log(f"  Std: {stats['std']:.3f}")
    log(f"  Real positions: {stats['valid_fraction']:.1%}")
    if stats["non_finite"]:
        log(f"  Non-finite values treated as missing: {stats['non_finite']:,}")
    if getattr(source, "n_failed", 0):
        log(f"  Rows that failed preprocessing (left out): {source.n_failed:,}")
    log("")
    log("Dataset split:")
    log(f"  Train: {len(split['train'])} samples")
    log(f"  Val: {len(split['val'])} samples")
    log(f"  Test: {len(split['test'])} samples (held out for lcgen evaluate)")
    log("")


def _model_title(name: str) -> str:
    return {"transformer": "Hierarchical Transformer", "unet": "UNet", "mlp": "MLP",
            "multimodal": "Multimodal (shared latent)"}.get(name, name)


def _process_device(name: str, place: Dist) -> torch.device:
    """The device of this process: with several processes on CUDA, GPU ``LOCAL_RANK``."""
    device = resolve_device(name)
    if place.enabled and device.type == "cuda":
        device = resolve_device(f"cuda:{place.local_rank}")
    return device


@contextlib.contextmanager
def _fast_cuda_math(device: torch.device) -> Iterator[None]:
    """TF32 matmuls and convolutions on CUDA for the duration (float32 work outside autocast)."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _any_rank(flag: bool, place: Dist, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any (a Ctrl-C seen by one process stops all)."""
    if not place.enabled:
        return flag
    return bool(all_sum(torch.tensor([float(flag)], device=device), place).item() > 0)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def _result(run_dir: Path, status: str, state: _State) -> dict:
    return {"run_dir": run_dir, "status": status, "epoch": state.epoch, "best_val": state.best_val,
            "history": state.history}


def _logger(console) -> Callable[[str], None]:
    if console is None:
        return lambda text: None
    return lambda text: console.print(text, markup=False, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _catch_interrupt() -> Iterator[dict]:
    """Turn the first Ctrl-C (or SIGTERM, as a cluster scheduler sends before it kills) into a
    flag the loop checks after each step, so a step is never cut in half; a second Ctrl-C
    interrupts at once. Under torchrun one Ctrl-C arrives twice (from the terminal and
    forwarded by torchrun), so a repeat within a second counts as the same one."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    first = [0.0]

    def handler(signum, frame):
        now = time.monotonic()
        if flag["stop"] and now - first[0] > 1.0:
            raise KeyboardInterrupt
        if not flag["stop"]:
            flag["stop"], first[0] = True, now

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _running(state: _State, unmasked_weight: float, weights: torch.Tensor | None = None,
             aux: tuple[float, ...] = ()) -> tuple[float, float]:
    """The epoch's pooled loss and samples/s so far."""
    loss = float(losses_from_sums(torch.tensor(state.sums, dtype=torch.float64), unmasked_weight, weights, aux)[0])
    return loss, state.samples / state.seconds if state.seconds > 0 else 0.0


@contextlib.contextmanager
def _epoch_bar(enabled: bool, description: str, total: int, done: int, unmasked_weight: float,
               log: Callable[[str], None], line_every_s: float | None, weights: torch.Tensor | None = None,
               aux: tuple[float, ...] = ()):
    """A transient Rich bar with live loss and samples/s; without one (output to a log or pipe), a
    line through ``log`` every ``line_every_s`` seconds. Yields ``update(state)``."""
    if not enabled:
        last = time.monotonic()

        def log_line(state: _State) -> None:
            nonlocal last
            if line_every_s is None or time.monotonic() - last < line_every_s:
                return
            last = time.monotonic()
            loss, rate = _running(state, unmasked_weight, weights, aux)
            log(f"  {description} step {state.step}/{total}: loss {loss:.4f}, {rate:,.1f} samples/s")

        yield log_line
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(description, total=total, completed=done, loss="-", rate="")

        def update(state: _State) -> None:
            loss, rate = _running(state, unmasked_weight, weights, aux)
            bar.update(task, completed=state.step, loss=f"{loss:.4f}", rate=f"{rate:,.0f} samples/s")

        yield update


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
