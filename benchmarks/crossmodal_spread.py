"""Does a multimodal run predict the PSD from the series, or one PSD for every window? Prints a table.

    python benchmarks/crossmodal_spread.py runs/multimodal/NAME [--rows 1500]

On the run's test rows, with the PSD, ACF and F-statistic hidden whole (the series alone visible):

- the MSE of the model's PSD against the mean-PSD baseline (the training rows' mean at each bin,
  ``lcgen evaluate``'s ``profile``);
- the spread across rows (median over bins of the standard deviation over rows) of the predicted
  and of the true PSD: a spread near 0 means the model predicts the same PSD for every window;
- how much of the PSD a ridge regression reads off the pooled shared latent (mean over its K
  vectors; fitted on up to ``--rows`` training rows), with the series alone visible and with
  everything visible: whether the latent holds what the decoder does not use;
- the norm of the gradient of that PSD loss (64 test rows) with respect to the latent, and with
  respect to the run's parameters: a path from the latent to the PSD that carries no gradient
  cannot learn.

And the other way, the series hidden whole (its times kept) and the spectra visible: the MSE of
the series decoded from the spectra alone against the mean profile (the training rows' mean at
each position) and against predicting 0 (the window's median, in the normalised units), and the
spread across rows of the prediction. On data whose law is unchanged by flipping the sign of the
signal (the default mock mix: sinusoids and QPOs of uniform phase, Gaussian DRWs and noise), the
PSD, ACF and F-statistic of a window and of its negative are equal, so E[series | spectra,
times] = -E[series | spectra, times] = 0: no model can beat the mean profile there, and a
prediction with ~0 spread is the right answer, not a fault.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.linear_model import RidgeCV

from lcgen.masking import MODALITIES, modality_keys
from lcgen.train.data import iter_batches, load_split, open_source
from lcgen.train.trainer import load_run, mse_sums


def hide(batch: dict, spectra: bool, series: bool = False) -> dict:
    """The batch with every spectral channel hidden whole (``spectra``), the series hidden whole
    (``series``), or nothing hidden."""
    out = dict(batch)
    for m in MODALITIES:
        _, valid_key, hidden_key = modality_keys(m)
        whole = series if m == "series" else spectra
        out[hidden_key] = batch[valid_key].clone() if whole else torch.zeros_like(batch[valid_key])
    return out


def collect(model, source, rows, spectra: bool):
    """Pooled latent, predicted PSD, true PSD, PSD validity of ``rows``."""
    parts = []
    for batch in iter_batches(source, np.sort(rows), 256):
        with torch.no_grad():
            out = model.forward_batch(hide(batch, spectra))
        parts.append((out["encoded"].mean(1).numpy(), out["reconstructed_psd"].numpy(),
                      batch["psd"].numpy(), batch["psd_valid"].numpy()))
    return [np.concatenate(p) for p in zip(*parts)]


def collect_series(model, source, rows):
    """Series decoded from the spectra alone, true series, validity of ``rows``."""
    parts = []
    for batch in iter_batches(source, np.sort(rows), 256):
        with torch.no_grad():
            out = model.forward_batch(hide(batch, False, series=True))
        parts.append((out["reconstructed"].numpy(), batch["values"].numpy(), batch["valid"].numpy()))
    return [np.concatenate(p) for p in zip(*parts)]


def mse(pred, values, valid) -> float:
    return float(np.where(valid, (pred - np.nan_to_num(values)) ** 2, 0.0).sum() / valid.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="multimodal run directory")
    ap.add_argument("--rows", type=int, default=1500, help="training rows for the mean PSD and the ridge fit")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, cfg = load_run(args.run)
    split = load_split(args.run)
    with open_source(cfg.data, "paired") as source:
        train_rows, test_rows = split["train"][: args.rows], split["test"]
        z_tr, _, y_tr, ok_tr = collect(model, source, train_rows, True)
        z_te, pred, y_te, ok_te = collect(model, source, test_rows, True)
        z_tr_all = collect(model, source, train_rows, False)[0]
        z_te_all = collect(model, source, test_rows, False)[0]
        batch = hide(next(iter_batches(source, np.sort(test_rows)[:64], 64)), True)
        _, s_tr, ok_s_tr = collect_series(model, source, train_rows)
        s_pred, s_te, ok_s_te = collect_series(model, source, test_rows)
    profile = np.where(ok_tr, np.nan_to_num(y_tr), 0.0).sum(0) / np.maximum(ok_tr.sum(0), 1)
    target = np.where(ok_tr, np.nan_to_num(y_tr), profile)  # invalid bins: the profile
    rows = [("PSD from the series alone, MSE", mse(pred, y_te, ok_te)),
            ("mean PSD (profile), MSE", mse(np.broadcast_to(profile, y_te.shape), y_te, ok_te))]
    spread = lambda a: float(np.nanmedian(np.nanstd(np.where(ok_te, a, np.nan), 0)))  # noqa: E731
    rows += [("spread across rows: predicted PSD", spread(pred)), ("spread across rows: true PSD", spread(y_te))]
    for label, a, b in (("series alone", z_tr, z_te), ("all visible", z_tr_all, z_te_all)):
        ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(a, target)
        rows.append((f"ridge from the pooled latent ({label}), MSE", mse(ridge.predict(b), y_te, ok_te)))
    model.train()
    z, states = model.encode(batch)
    out = model.decode(z, states, batch)["reconstructed_psd"]
    sums = mse_sums(out, {"values": batch["psd"], "valid": batch["psd_valid"], "hidden": batch["psd_valid"]})
    loss = sums[0] / sums[1]
    grad_z = torch.autograd.grad(loss, z, retain_graph=True)[0]
    grads = torch.autograd.grad(loss, [p for p in model.parameters()], allow_unused=True)
    rows.append(("|d loss / d latent|", float(grad_z.norm())))
    rows.append(("|d loss / d parameters|", float(sum((g.norm() ** 2 for g in grads if g is not None)) ** 0.5)))
    print(f"{args.run}: {len(test_rows)} test rows, the spectra hidden whole")
    print("| quantity | value |\n|---|---:|")
    for label, value in rows:
        print(f"| {label} | {value:.4g} |")
    s_profile = np.where(ok_s_tr, np.nan_to_num(s_tr), 0.0).sum(0) / np.maximum(ok_s_tr.sum(0), 1)
    s_spread = lambda a: float(np.nanmedian(np.nanstd(np.where(ok_s_te, a, np.nan), 0)))  # noqa: E731
    print(f"\nthe series hidden whole (its times kept), the spectra visible\n| quantity | value |\n|---|---:|")
    for label, value in (("series from the spectra alone, MSE", mse(s_pred, s_te, ok_s_te)),
                         ("mean profile, MSE", mse(np.broadcast_to(s_profile, s_te.shape), s_te, ok_s_te)),
                         ("zero (the window median), MSE", mse(np.zeros_like(s_te), s_te, ok_s_te)),
                         ("spread across rows: predicted series", s_spread(s_pred)),
                         ("spread across rows: true series", s_spread(s_te))):
        print(f"| {label} | {value:.4g} |")


if __name__ == "__main__":
    main()
