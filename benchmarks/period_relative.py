"""Do an embedding's neighbours follow the period, or the period relative to the window's length?

    python benchmarks/period_relative.py PAIRED_OR_TIMESERIES.h5 emb.h5 [emb2.h5 ...]

For each embeddings file (``lcgen embed`` of the curves in the data file), probes its curve
vectors as ``lcgen probe`` does (curve rows, 30 % test curves, seed 0; ridge and kNN) for three
targets: log10(period); ``rel`` = log10(period) − the curve's mean log10 window time span (the
period in units of the window's length); and ``logspan``, that mean log10 span alone. Prints R²
and RMSE per probe, the targets' standard deviations (R² of targets of other spread are not
comparable: compare the RMSEs) and the correlation of log10(period) with the log span.
"""

from __future__ import annotations

import argparse

import numpy as np

from latent_readouts import curve_span
from lcgen.embed.extract import read_embeddings
from lcgen.embed.probe import probe_arrays, split_groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="the data file the embeddings were made from (its times give the spans)")
    ap.add_argument("embeddings", nargs="+")
    args = ap.parse_args()
    print("| embeddings | target (sd) | ridge R² | ridge RMSE | kNN R² | kNN RMSE |\n|---|---|---:|---:|---:|---:|")
    for path in args.embeddings:
        emb = read_embeddings(path)
        span = curve_span(args.data, emb)
        meta = dict(emb.curve_meta)
        meta["rel"] = np.log10(meta["period"].astype(float)) - span
        meta["logspan"] = span
        groups = emb.curve_source
        train, test = split_groups(groups, 0.3, 0)
        r = probe_arrays(emb.curve, meta, groups, ["log10(period)", "rel", "logspan"], train=train, test=test,
                         few_shot_sizes=())
        for t, s in r.items():
            print(f"| {path} | {t} ({s['target_std']:.3f}) | {s['ridge']['r2']:.3f} | {s['ridge']['rmse']:.3f} | "
                  f"{s['knn']['r2']:.3f} | {s['knn']['rmse']:.3f} |", flush=True)
    ok = np.isfinite(meta["rel"])
    print(f"correlation of log10(period) with the log span over the curves with a period: "
          f"{np.corrcoef(meta['rel'][ok] + span[ok], span[ok])[0, 1]:.3f}")


if __name__ == "__main__":
    main()
