"""Issue 12's three targets, read from finished runs: prints a Markdown table.

    python benchmarks/multimodal_targets.py --transformer runs/transformer/e2 --multimodal runs/multimodal/e2 \\
        --probe-transformer emb-tr.json --probe-multimodal emb-mm.json

1. time-series masked MSE with the spectra visible (the multimodal run's ``metrics.json``) against
   the transformer alone on the same rows and masks (``lcgen evaluate`` of both, same mask seed);
2. probe type macro-F1 (logistic) and log10 period R² (ridge) from the shared latent against the
   transformer's latent (and the hand-crafted features, when the probe report holds them);
3. PSD reconstructed from the time series alone (``modalities.spectra_from_series``) against the
   mean-PSD (``profile``) baseline.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(path) -> dict:
    return json.loads(Path(path).read_text())


def probe_score(report: dict, rep: str, target: str, probe: str, metric: str):
    entry = report["representations"].get(rep, {}).get("targets", {}).get(target, {})
    return entry.get(probe, {}).get(metric)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transformer", required=True, help="transformer run directory (evaluated)")
    ap.add_argument("--multimodal", required=True, help="multimodal run directory (evaluated)")
    ap.add_argument("--probe-transformer", help="probe report of the transformer's embeddings")
    ap.add_argument("--probe-multimodal", help="probe report of the multimodal embeddings")
    args = ap.parse_args()
    tr, mm = load(Path(args.transformer) / "metrics.json"), load(Path(args.multimodal) / "metrics.json")
    assert tr["n_masked_positions"] == mm["n_masked_positions"], "the runs were scored on other positions"
    rows = []
    t, m, lin = (tr["overall"]["model"]["masked_mse"], mm["overall"]["model"]["masked_mse"],
                 tr["overall"]["linear"]["masked_mse"])
    rows.append(("series masked MSE, spectra visible (same rows and masks)", f"{m:.4f}", f"transformer {t:.4f}",
                 f"{m / t:.3f}", "≤ 1 " + ("met" if m <= t else "NOT met") + f" (linear interpolation {lin:.4f})"))
    if args.probe_transformer and args.probe_multimodal:
        pt, pm = load(args.probe_transformer), load(args.probe_multimodal)
        for target, probe, metric, label in (("lc_type", "logistic", "macro_f1", "type macro-F1, logistic"),
                                             ("lc_type", "knn", "macro_f1", "type macro-F1, kNN"),
                                             ("log10(period)", "ridge", "r2", "log10 period R², ridge"),
                                             ("log10(period)", "knn", "r2", "log10 period R², kNN")):
            a, b = probe_score(pm, "learned", target, probe, metric), probe_score(pt, "learned", target, probe, metric)
            hand = probe_score(pt, "handcrafted", target, probe, metric)
            if a is None or b is None:
                continue
            rows.append((f"probe {label}", f"{a:.3f}", f"transformer {b:.3f}", f"{a - b:+.3f}",
                         "≥ " + ("met" if a >= b else "NOT met") + (f" (hand-crafted {hand:.3f})" if hand is not None else "")))
    scen = mm["modalities"]
    for name, label in (("spectra_from_series", "from the series alone"), ("psd_from_others", "from series, ACF, F")):
        psd = scen[name]["psd"]["overall"]
        a, b = psd["model"]["masked_mse"], psd["profile"]["masked_mse"]
        rows.append((f"PSD {label}, MSE", f"{a:.4f}", f"mean PSD {b:.4f}", f"{a / b:.3f}",
                     "< 1 " + ("met" if a < b else "NOT met")))
    for m_ in ("psd", "acf", "fstat"):
        o = scen["masked"][m_]["overall"]
        rows.append((f"{m_} masked MSE, all visible but blocks", f"{o['model']['masked_mse']:.4f}",
                     f"linear {o['linear']['masked_mse']:.4f}", f"{o['model']['masked_mse'] / o['linear']['masked_mse']:.3f}", ""))
    o = scen["series_from_others"]["series"]["overall"]
    rows.append(("series from the spectra alone, MSE", f"{o['model']['masked_mse']:.4f}",
                 f"mean profile {o['profile']['masked_mse']:.4f}", f"{o['model']['masked_mse'] / o['profile']['masked_mse']:.3f}", ""))
    print("| quantity | multimodal | reference | ratio / difference | target |")
    print("|---|---:|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
