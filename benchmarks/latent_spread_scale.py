"""The scale of ``latent_spread_weight``'s term on trained multimodal runs, beside their series loss.

    python benchmarks/latent_spread_scale.py DATA.h5 RUN [RUN ...]

For each run: on the first 8 validation batches of 32 rows of DATA.h5 (the paired file it was
trained on; the run's split and the validation masks), the two parts of the spread term
(:func:`lcgen.train.trainer.spread_terms` of the pooled latent that ``lcgen embed`` reads: the
variance hinge and the covariance part) and the series masked MSE, each a mean over the batches.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import torch

from lcgen.masking import fixed_mask, paired_masks
from lcgen.models.transformer import pooled_meanmax
from lcgen.train.data import iter_batches, open_source
from lcgen.train.trainer import load_run, loss_sums, modality_losses, spread_terms


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    torch.set_num_threads(1)
    for run in sys.argv[2:]:
        model, cfg = load_run(run)
        source = open_source(sys.argv[1], "paired")
        rows = np.load(f"{run}/split.npz")["val"]
        mask_args = dataclasses.asdict(cfg.mask)
        variance, covariance, series = [], [], []
        with torch.no_grad():
            for k, batch in enumerate(iter_batches(source, rows, 32)):
                if k == 8:
                    break
                batch["hidden"] = fixed_mask(batch["valid"], batch["index"], seed=cfg.val_mask_seed,
                                             time=batch.get("time"), **mask_args)
                batch.update(paired_masks(batch, batch["hidden"], p_drop=cfg.modality_dropout,
                                          seed=cfg.val_mask_seed, **mask_args))
                out = model.forward_batch(batch)
                z = out["encoded"]
                v, c = spread_terms(pooled_meanmax([(z, torch.ones(z.shape[:2], dtype=torch.bool))]))
                variance.append(float(v)), covariance.append(float(c))
                series.append(modality_losses(loss_sums(out, batch, cfg))["series"])
        w = cfg.modality_weights.get("series", 1.0)
        print(f"{run}: variance part {np.mean(variance):.4f}, covariance part {np.mean(covariance):.4f}, "
              f"series masked MSE {np.mean(series):.4f} (x its weight {w:g}: {w * np.mean(series):.4f})", flush=True)


if __name__ == "__main__":
    main()
