"""Scores of a multimodal run on every modality and across modalities (``lcgen evaluate``).

``lcgen evaluate`` scores a ``multimodal`` run's time series as it scores the transformer: the
same fixed block masks (seed ``mask_seed``, by row index, so the same hidden points as a
transformer run on the same rows) and baselines, here with the window's spectra visible. This
module adds, on the same rows, the scenarios where other modalities are hidden:

- ``masked``: every modality block-masked with its own fixed masks (series: ``mask_seed``;
  spectral channel k: ``mask_seed + k · SEED_STRIDE``), none hidden whole; each modality scored
  on its hidden real positions against linear interpolation (in time; along the grid for the
  spectra), the per-row mean of its visible values, and ``profile``;
- ``<m>_from_others``: modality m hidden whole, the others fully visible: m reconstructed from
  the others alone, scored on all its real positions against ``profile``;
- ``spectra_from_series``: PSD, ACF and F-statistic hidden whole, the series fully visible.

``profile`` is the mean value at each position (time-series index, frequency bin, lag) over the
run's training rows: the best constant guess with nothing of the row visible, e.g. the mean PSD.
A ratio below 1 means the model beats the baseline.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from lcgen.evaluate.scoring import (Evaluation, compare, concat_scores, linear_baseline, mean_baseline, score_batch,
                            summarise)
from lcgen.masking import MODALITIES, fixed_mask, modality_keys, paired_masks

SPECTRAL = MODALITIES[1:]


def scenarios() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Scenario name -> (block-masked modalities, modalities hidden whole); every modality in
    either is scored."""
    out = {"masked": (MODALITIES, ())}
    out.update({f"{m}_from_others": ((), (m,)) for m in MODALITIES})
    out["spectra_from_series"] = ((), SPECTRAL)
    return out


def train_profiles(ev: Evaluation) -> dict[str, np.ndarray]:
    """Per modality, the mean value at each position over the run's training rows (0 where no
    training row is valid), read from the run's training data file."""
    from lcgen.train.data import iter_batches, load_split, open_source

    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    with open_source(ev.train_config.data, "paired") as source:
        rows = np.sort(load_split(ev.run_dir)["train"]).astype(np.int64)
        for batch in iter_batches(source, rows, 1024):
            for m in MODALITIES:
                values_key, valid_key, _ = modality_keys(m)
                v, ok = batch[values_key].numpy().astype(np.float64), batch[valid_key].numpy()
                sums[m] = sums.get(m, 0.0) + np.where(ok, v, 0.0).sum(0)
                counts[m] = counts.get(m, 0) + ok.sum(0)
    return {m: np.divide(sums[m], counts[m], out=np.zeros_like(sums[m]), where=counts[m] > 0) for m in MODALITIES}


def crossmodal_metrics(ev: Evaluation, *, progress: Callable[[int], None] | None = None) -> dict:
    """``{scenario: {modality: {"overall": summarise(...), "vs_baselines": {baseline: ratio}}}}``
    on ``ev.rows`` (see the module docstring)."""
    import torch

    from lcgen.train.data import iter_batches
    from lcgen.train.trainer import recon_key

    profile = train_profiles(ev)
    seed, mask = ev.config.mask_seed, ev.mask
    plan = scenarios()
    parts: dict[str, dict[str, list]] = {s: {m: [] for m in (*blocked, *whole)} for s, (blocked, whole) in plan.items()}
    for batch in iter_batches(ev.source, ev.rows, ev.config.batch_size):
        series_blocks = fixed_mask(batch["valid"], batch["index"], seed=seed, time=batch.get("time"), **mask)
        blocks = paired_masks(batch, series_blocks, p_drop=0.0, seed=seed, **mask)  # nothing dropped
        for name, (blocked, whole) in plan.items():
            hidden = {}
            for m in MODALITIES:
                _, valid_key, hidden_key = modality_keys(m)
                valid = batch[valid_key]
                hidden[hidden_key] = (blocks[hidden_key] if m in blocked else valid if m in whole
                                      else torch.zeros_like(valid))
            with torch.no_grad():
                out = ev.model.forward_batch({k: v.to(ev.device) for k, v in {**batch, **hidden}.items()})
            for m in (*blocked, *whole):
                values_key, valid_key, hidden_key = modality_keys(m)
                v, ok, hid = (batch[values_key].numpy(), batch[valid_key].numpy(), hidden[hidden_key].numpy())
                preds = {"model": out[recon_key(m)].float().cpu().numpy().reshape(v.shape),
                         "profile": np.broadcast_to(profile[m], v.shape)}
                if m in blocked:
                    knots = batch["time"].numpy() if m == "series" else np.arange(v.shape[1], dtype=np.float64)
                    preds["linear"] = linear_baseline(v, ok, hid, knots)
                    preds["mean"] = mean_baseline(v, ok, hid)
                parts[name][m].append(score_batch(v, ok, hid, preds))
        if progress is not None:
            progress(len(batch["index"]))
    result = {}
    for name, by_modality in parts.items():
        result[name] = {}
        for m, chunks in by_modality.items():
            overall = summarise(concat_scores(chunks))
            for row in overall.values():
                row.pop("masked_medae", None)
            result[name][m] = {"overall": overall,
                               "vs_baselines": {b: {"masked_mse_ratio": r} for b, r in
                                                compare(overall, baselines=[k for k in overall if k != "model"]).items()}}
    return result
