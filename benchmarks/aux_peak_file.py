"""An experiment for issue 11: the window's peak positions, not its whole PSD, as the auxiliary target.

    python benchmarks/aux_peak_file.py train.h5 train_peak.h5
    lcgen train transformer --data train_peak.h5 ... --set psd_aux_weight=0.3

Copies a paired file (``lcgen convert --spectra``) and overwrites its ``psd``/``psd_mask`` so that
the first three bins hold three of the hand-crafted features of each window (the multitaper
PSD's peak frequency and power over the white-noise level, the ACF's first-peak lag:
``lcgen.embed.features``, all logs), each standardised over the file's windows, and no other bin
is valid. ``psd_aux_weight`` then trains the PSD head on those three numbers alone: a
self-supervised target (computed from each window's own points) that is the position of the
peak itself, which the whole normalised PSD holds only non-linearly. A window without a
feature leaves that bin invalid. An experiment, not a format: the file's ``psd`` no longer is a
PSD, so use it for this training only.
"""

from __future__ import annotations

import argparse
import shutil

import h5py
import numpy as np

from lcgen.embed.features import FEATURES, timeseries_features
from lcgen.io import check_paired

TARGETS = ("log_peak_freq", "log_peak_power", "log_acf_lag")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paired")
    parser.add_argument("output")
    args = parser.parse_args()
    with h5py.File(args.paired) as f:
        check_paired(f, args.paired)
        n = f["flux"].shape[0]
    y = timeseries_features(args.paired, np.arange(n))[:, [FEATURES.index(k) for k in TARGETS]].astype(np.float64)
    ok = np.isfinite(y)
    z = (y - np.nanmean(y, 0)) / np.nanstd(y, 0)
    shutil.copyfile(args.paired, args.output)
    with h5py.File(args.output, "r+") as f:
        psd, mask = np.zeros(f["psd"].shape, np.float32), np.zeros(f["psd_mask"].shape, bool)
        psd[:, :len(TARGETS)], mask[:, :len(TARGETS)] = np.where(ok, z, 0), ok
        f["psd"][...], f["psd_mask"][...] = psd, mask
    print(f"{args.output}: {n} windows; {', '.join(TARGETS)} in psd bins 0-{len(TARGETS) - 1} "
          f"(valid in {ok.all(1).mean():.1%} of windows)")


if __name__ == "__main__":
    main()
