"""What the auxiliary PSD target itself tells the probes: prints a table.

    python benchmarks/probe_aux_target.py emb.h5 [emb2.h5 ...]

For an embeddings file made from a paired file (``lcgen convert --spectra``; e.g. ``probe.h5``) by a
run trained with ``psd_aux_weight``, probes on the split ``lcgen probe`` uses (curve rows, test
fraction 0.3, seed 0; the same probes and cross-validation):

- ``window PSD``: each window's normalised multitaper PSD (the auxiliary target; missing off the
  window's valid bins, filled by the probes' train medians), averaged per curve;
- ``head's PSD`` (per file whose run has a PSD head): what the run's PSD head predicts from the pooled latent, the same way;
- ``learned``: the embedding itself; ``hand-crafted``: the features ``lcgen probe`` cached beside
  the first file (``STEM-features.npz``), when there. All files must embed the same rows.

If the target itself reads the period worse than the hand-crafted features, an objective that
reconstructs it cannot be expected to lift the embedding above them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np
import torch

from lcgen.embed import probe as P
from lcgen.embed.extract import read_embeddings
from lcgen.train.data import iter_batches, open_source
from lcgen.train.trainer import load_run

TARGETS = ("lc_type", "log10(period)")
SCORES = (("lc_type", "logistic", "macro_f1"), ("lc_type", "knn", "macro_f1"),
          ("log10(period)", "ridge", "r2"), ("log10(period)", "knn", "r2"))


def window_psd(path: str, rows: np.ndarray) -> np.ndarray:
    """(N, F) the stored normalised PSD of ``rows``, NaN off each window's valid bins."""
    with h5py.File(path) as f:
        psd, ok = f["psd"][:][rows], f["psd_mask"][:][rows].astype(bool)
    return np.where(ok, psd, np.nan)


def head_psd(run_dir: str, path: str, rows: np.ndarray) -> np.ndarray | None:
    """(N, F) the run's PSD head on ``rows`` of ``path`` (nothing hidden), NaN off the valid bins;
    None for a run without one."""
    model, _ = load_run(run_dir)
    if not getattr(model.config, "psd_head", 0):
        return None
    out = []
    with open_source(path, "paired") as source, torch.no_grad():
        for batch in iter_batches(source, rows, 256):
            batch["hidden"] = torch.zeros_like(batch["valid"])
            pred = model.forward_batch(batch)["psd"].double().numpy()
            out.append(np.where(batch["psd_valid"].numpy(), pred, np.nan))
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("embeddings", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    columns: dict[str, dict] = {}
    for k, name in enumerate(args.embeddings):
        emb = read_embeddings(name)
        meta, groups = emb.curve_meta, emb.curve_source
        train, test = P.split_groups(groups, 0.3, 0)
        per_curve = {}
        if k == 0:
            per_curve["window PSD"] = window_psd(emb.attrs["input"], emb.row)
            cache = P.features_path(name)
            if cache.is_file():
                with np.load(cache) as z:
                    per_curve["hand-crafted"] = z["features"]
        head = head_psd(emb.attrs["run_dir"], emb.attrs["input"], emb.row)
        if head is not None:
            per_curve[f"{Path(name).stem}: head's PSD"] = head
        reps = {key: P._curve_nanmean(v, emb.curve_index, groups.size) for key, v in per_curve.items()}
        reps[f"{Path(name).stem}: learned"] = emb.curve
        for key, X in reps.items():
            columns[key] = P.probe_arrays(X, meta, groups, TARGETS, train=train, test=test, few_shot_sizes=())
    print("| probe (300 test curves) | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for target, probe, metric in SCORES:
        cells = [f"{columns[c][target][probe][metric]:.3f}" for c in columns]
        print(f"| {target} {metric} ({probe}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
