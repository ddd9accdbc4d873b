#!/usr/bin/env bash
# Reproduces the model shipped in lcgen/weights/bundled/ (the default run of lcgen fill and lcgen embed) with
# lcgen's own commands, from the repository root:
#
#     bash benchmarks/train_bundled.sh [WORKDIR]      # default WORKDIR: data/bundled
#
# Training is 950 steps of ~0.4 CPU-s on one core (one torch thread), ~7 CPU-minutes; it took
# 31 min wall on a shared 2-core machine at load ~10. The same lcgen commit gives the same weights.
# Steps: 1,200 mission-like mocks (Kepler long cadence + TESS 2-min, `--preset missions`), cut
# into 256-point windows, a small transformer (0.95M parameters) with the variance head and
# the interpolation residual, trained with the beta-NLL loss on masks of 1-64 points, then
# packed (weights, config, license, provenance) into lcgen/weights/bundled/.
set -euo pipefail
WORK=${1:-data/bundled}
mkdir -p "$WORK"
lcgen() { python -m lcgen "$@"; }
lcgen generate --preset missions -n 1200 --seed 1 -o "$WORK/raw.h5" --workers 1
lcgen convert -i "$WORK/raw.h5" -o "$WORK/timeseries.h5" --max-length 256
lcgen train transformer --preset small --data "$WORK/timeseries.h5" --name bundled \
    --epochs 1 --lr 2e-3 --seed 0 --threads 1 --set runs_dir="$WORK/runs" \
    --set model.input_length=256 --set model.variance_head=true --set model.interp_residual=true \
    --set loss=nll --set mask.max_block=64
python -m lcgen.bundled "$WORK/runs/transformer/bundled" lcgen/weights/bundled \
    --command "bash benchmarks/train_bundled.sh $WORK" --preset missions --seed 0
