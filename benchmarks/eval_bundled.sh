#!/usr/bin/env bash
# Scores the bundled model (lcgen/weights/bundled) against linear interpolation, the per-window
# mean and a celerite2 GP fitted per window, on held-out mission-like mocks at Kepler long
# cadence and TESS 2-min (seeds the model's training data never used), with masks drawn in days
# (4 min to 3 d; a 256-point window spans 5.2 d at Kepler and 8.5 h at TESS cadence, so blocks are
# capped at half of that). Prints issue 17's target table (benchmarks/bundled_target.py).
#
#     bash benchmarks/eval_bundled.sh [WORKDIR]      # default WORKDIR: data/bundled_eval
set -euo pipefail
WORK=${1:-data/bundled_eval}
mkdir -p "$WORK"
lcgen() { python -m lcgen "$@"; }
rm -rf "$WORK/bundled" && cp -r lcgen/weights/bundled "$WORK/bundled"   # metrics go beside it
lcgen generate --preset kepler-lc -n 12 --seed 101 -o "$WORK/kepler_raw.h5" --workers 1 --set kepler.blocks=[1,1]
lcgen generate --preset tess-2min -n 3 --seed 102 -o "$WORK/tess_raw.h5" --workers 1 --set tess.blocks=[1,1]
for m in kepler tess; do
    lcgen convert -i "$WORK/${m}_raw.h5" -o "$WORK/$m.h5" --max-length 256
    lcgen evaluate "$WORK/bundled" --data "$WORK/$m.h5" --mask-days 0.003,3 --baselines linear,mean,gp
done
python benchmarks/bundled_target.py "$WORK/bundled/metrics-days-kepler.json" "$WORK/bundled/metrics-days-tess.json"
