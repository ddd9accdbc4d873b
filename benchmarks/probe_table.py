"""Several probe reports of the same input side by side: prints a Markdown table.

    python benchmarks/probe_table.py transformer=probe-emb-transformer.json multimodal=probe-emb-multimodal.json

One column per report's learned embedding, then the hand-crafted features (one column per
feature set: the window features, or those read off each row's spectra for embeddings of a
spectra file; each from the first report that has them) and the random-weight control of each
architecture (runs whose controls score the same share one column: the same model, preset,
level, pooling and input; an MLP on the ACF has another control than one on the PSD). The
reports must have been made on the same curves with the same split (``lcgen probe`` with the
same seed and test fraction on embeddings of the same input, or of a spectra file of the same
curves), which is checked.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lcgen.embed.probe import headline, score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", metavar="NAME=PROBE.json")
    args = ap.parse_args()
    reports = {}
    for item in args.reports:
        name, _, path = item.partition("=")
        reports[name] = json.loads(Path(path).read_text())
    splits = {json.dumps(r["split"], sort_keys=True) for r in reports.values()}
    assert len(splits) == 1, f"the reports were probed on different splits: {splits}"
    columns = [(f"{name} learned", name, "learned") for name in reports]
    hands = {}  # one hand-crafted column per feature set (window features, or those read off spectra)
    for name, r in reports.items():
        if "handcrafted" in r["representations"]:
            hands.setdefault(tuple(r.get("handcrafted", {}).get("features", ())), (name, r))
    for name, r in hands.values():
        label = "hand-crafted" if len(hands) == 1 else f"hand-crafted ({Path(r['input']).name})"
        columns.append((label, name, "handcrafted"))
    seen = set()  # one random-weight column per distinct control (one architecture, input and seed
    for name, r in reports.items():  # score the same; a UNet/MLP of another channel does not)
        if "random" in r["representations"]:
            control = json.dumps(r["representations"]["random"]["targets"], sort_keys=True)
            if control not in seen:
                seen.add(control)
                columns.append((f"{name} random", name, "random"))
    first = next(iter(reports.values()))
    print("| probe (test curves) | " + " | ".join(c[0] for c in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for target, probe, metric, label in headline(first):
        cells = [score(reports[name], rep, target, probe, metric) for _, name, rep in columns]
        if all(c is None for c in cells):
            continue
        real = [c for c in cells if c is not None]
        best = min(real) if metric == "rmse" else max(real)
        print(f"| {label} | " + " | ".join("–" if c is None else (f"**{c:.3f}**" if c == best else f"{c:.3f}")
                                          for c in cells) + " |")
    dims = ", ".join(f"{name} {r['representations']['learned']['dim']}" for name, r in reports.items())
    s = first["split"]
    print(f"\n{s['n_curves']} curves, {s['n_test_rows']} test (seed {s['seed']}); learned dimensions: {dims}")


if __name__ == "__main__":
    main()
