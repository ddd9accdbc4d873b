"""Which readout of a multimodal run's shared latent do the probes read best, and what does the
latent's variation follow? Prints a table.

    python benchmarks/latent_readouts.py runs/multimodal/NAME PROBE_PAIRED.h5 [--readouts z:meanmax,...]

For every window of PROBE_PAIRED.h5 (everything visible, as ``lcgen embed``) the readouts are:

- ``z:POOLING``: the shared latent z (K vectors, after its layer norm) pooled as ``lcgen embed
  --pooling POOLING`` does (``z:meanmax`` is what ``lcgen embed`` writes by default);
- ``zpre:POOLING``: z before that layer norm;
- ``read_M:POOLING``: modality M's readout (its learned queries attending to z, layer-normed),
  the vectors the decoders read the modality from: functions of z alone;
- ``own_series:meanmax``: not the shared latent: the series encoder's own bottleneck, a reference;
  ``own_series_lN:POOLING`` its level N (0 = the finest; the bottleneck is the last),
  ``own_series_all:POOLING`` every level joined (as ``lcgen embed`` pools a transformer run);
- ``span``: the readouts' span code of the window (:meth:`MultimodalModel.span_code`, one vector,
  no pooling), what ``span_readout`` adds to every readout query: a control (the span alone);
- ``A&B``: readouts A and B joined side by side (e.g. ``z:meanmax&span``: z with the span code).

Per light curve (the mean of its windows' vectors, as ``embed``), each readout is probed as
``lcgen probe`` probes (curve rows, 30 % test curves, seed 0; no few-shot): type macro-F1
(logistic / kNN) and log10 period R² (ridge / kNN). ``span share`` is the fraction of the
readout's standardised variance (each dimension scaled to unit variance over the curves, as the
probes scale it) that a degree-5 polynomial of the curve's mean log10 window time span
explains: near 1, Euclidean neighbours are curves whose windows last as long, whatever their
type. ``--deflate R`` adds ``z:mean`` with its R leading principal directions (fitted on the
train curves) removed. ``--transformer RUN TIMESERIES.h5`` also prints the span share of a
transformer run's embeddings (``meanmax`` of its bottleneck and of all levels) on the same
windows, for comparison; every span share is also given for the same architecture with random
weights (``lcgen embed --weights random``), what training adds or removes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lcgen.embed import EmbedConfig, embed, pool
from lcgen.embed.extract import curve_means
from lcgen.embed.probe import probe_arrays, split_groups
from lcgen.masking import MODALITIES
from lcgen.train.data import iter_batches, open_source, read_rows
from lcgen.train.trainer import load_run

DEFAULT = ("z:meanmax,z:mean,z:max,z:std,z:flat,zpre:mean,read_series:meanmax,read_psd:meanmax,"
           "read_acf:meanmax,read_fstat:meanmax,own_series:meanmax")


def window_vectors(model, source, rows, readouts: list[str]) -> dict[str, np.ndarray]:
    """Every readout (``NAME:POOLING``) of each window in ``rows``, (N, D) each."""
    captured = {}
    hook = model.norm.register_forward_hook(lambda m, i, o: captured.__setitem__("zpre", i[0]))
    parts: dict[str, list] = {r: [] for r in readouts}
    try:
        for batch in iter_batches(source, rows, 256):
            with torch.no_grad():
                z, states = model.encode(batch)
                latents = {"z": z, "zpre": captured["zpre"]}
                for m in MODALITIES:
                    if any(f"read_{m}:" in r for r in readouts):
                        latents[f"read_{m}"] = model.read(z, m, model.span_code(batch))
                (levels, _, _), _ = states["series"]
                for r in readouts:
                    vectors = []
                    for part in r.split("&"):
                        if part == "span":
                            vectors.append(model.span_code(batch))
                            continue
                        name, how = part.split(":")
                        if name.startswith("own_series"):  # own_series (the bottleneck), own_series_lN, own_series_all
                            level = name[len("own_series"):]
                            chosen = (levels[-1:] if not level else levels if level == "_all"
                                      else [levels[int(level.removeprefix("_l"))]])
                            vectors += [pool(h, valid, how) for h, valid in chosen]
                            continue
                        h = latents[name]
                        vectors.append(pool(h, torch.ones(h.shape[:2], dtype=torch.bool), how))
                    parts[r].append(torch.cat(vectors, -1).numpy())
    finally:
        hook.remove()
    return {r: np.concatenate(p) for r, p in parts.items()}


def span_share(X: np.ndarray, span: np.ndarray) -> float:
    """Fraction of the standardised variance of X (n, D) explained by a degree-5 polynomial of span (n,)."""
    X = X.astype(np.float64)
    sd = X.std(0)
    X = (X - X.mean(0)) / np.where(sd > 0, sd, 1.0)
    design = np.vander(span - span.mean(), 6)
    fit = design @ np.linalg.lstsq(design, X, rcond=None)[0]
    return float(1 - (X - fit).var() / X.var())


def curve_span(input: str, emb) -> np.ndarray:
    """Per curve of ``emb``, the mean over its windows of log10(window time span) in ``input``."""
    with open_source(input, "timeseries") as source:  # the series part of a paired file too
        t, m = read_rows(source.f["time"], emb.row), read_rows(source.f["mask"], emb.row).astype(bool)
    span = np.log10(np.where(m, t, -np.inf).max(1) - np.where(m, t, np.inf).min(1))
    return np.bincount(emb.curve_index, span) / np.bincount(emb.curve_index)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="multimodal run directory")
    ap.add_argument("input", help="paired file on the run's grids (e.g. the probe curves)")
    ap.add_argument("--readouts", default=DEFAULT)
    ap.add_argument("--deflate", type=int, default=2, help="leading principal directions to remove from z:mean (0: none)")
    ap.add_argument("--transformer", nargs=2, metavar=("RUN", "TIMESERIES"), help="a transformer run to compare")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tick = time.process_time()
    base = embed(args.run, args.input, EmbedConfig(pooling="mean"))  # rows, curves, meta; checks the grids
    model, cfg = load_run(args.run)
    readouts = args.readouts.split(",")
    with open_source(args.input, "paired", cfg.channel) as source:
        windows = window_vectors(model, source, base.row, readouts)
    spans = curve_span(args.input, base)
    reps = {r: curve_means(w, base.source)[0] for r, w in windows.items()}
    meta, groups = base.curve_meta, base.curve_source
    train, test = split_groups(groups, 0.3, 0)
    if args.deflate and "z:mean" in reps:
        X = reps["z:mean"].astype(np.float64)
        X = (X - X[train].mean(0)) / np.where(X[train].std(0) > 0, X[train].std(0), 1.0)
        top = np.linalg.svd(X[train], full_matrices=False)[2][: args.deflate]
        reps[f"z:mean, top {args.deflate} PCs removed"] = X - (X @ top.T) @ top
    print(f"{args.run} on {args.input}: {groups.size} curves, {test.sum()} test; windows read in "
          f"{time.process_time() - tick:.0f} s CPU")
    print("| readout | dims | type F1 logistic | type F1 kNN | period R² ridge | period R² kNN | span share |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, X in reps.items():
        r = probe_arrays(X, meta, groups, ["lc_type", "log10(period)"], train=train, test=test, few_shot_sizes=())
        c, p = r["lc_type"], r["log10(period)"]
        print(f"| {name} | {X.shape[1]} | {c['logistic']['macro_f1']:.3f} | {c['knn']['macro_f1']:.3f} | "
              f"{p['ridge']['r2']:.3f} | {p['knn']['r2']:.3f} | {span_share(X, spans):.2f} |", flush=True)
    print("\n| embedding (meanmax) | span share, trained | random weights |\n|---|---:|---:|")
    others = [(args.run, args.input, "all")]
    if args.transformer:
        others += [(*args.transformer, level) for level in ("bottleneck", "all")]
    for run, data, level in others:
        shares = [span_share(emb.curve, curve_span(data, emb)) for emb in
                  (embed(run, data, EmbedConfig(level=level, weights=w)) for w in ("trained", "random"))]
        print(f"| {run} {level} | {shares[0]:.2f} | {shares[1]:.2f} |")


if __name__ == "__main__":
    main()
