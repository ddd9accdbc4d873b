"""Which of a transformer's time inputs makes evenly spaced index times score better than the
true times? On the gapped test windows of ``quality_times.py`` (same masks), swap one time path
at a time to index times: the additive day encoding, the gap features (``time_gaps``) or the
rotary time (``cadence_rope``), and print the masked MSE of each.

    PYTHONPATH=. python benchmarks/quality_times_swap.py RUN_DIR
"""
import sys

import numpy as np
import torch

from lcgen.evaluate.scoring import EvaluateConfig, hide, open_evaluation
from lcgen.train.data import iter_batches
import lcgen.models.transformer as T
torch.set_num_threads(1)
run = sys.argv[1]
sums = {}
with open_evaluation(run, EvaluateConfig(mask_seed=1)) as ev:
    m = ev.model
    orig_enc = m.time_encoding.forward
    orig_gap = T.gap_features
    orig_rope = T.rope_time
    for batch in iter_batches(ev.source, ev.rows, 64):
        t, valid = batch["time"].numpy(), batch["valid"].numpy()
        steps = np.where(valid[:, 1:] & valid[:, :-1], np.diff(t, axis=1), np.nan)
        med = np.nanmedian(steps, axis=1); g = np.nanmax(steps, axis=1) > 3 * med
        if not g.any(): continue
        keep = torch.from_numpy(np.flatnonzero(g)); b = {k: v[keep] for k, v in batch.items()}
        b["hidden"] = hide(ev, b)
        L = t.shape[1]
        it = torch.from_numpy(np.arange(L)[None] * med[g][:, None]).float()
        sel = (b["valid"] & b["hidden"]).numpy(); y = b["values"].numpy()
        def pad_it(x):  # index times, padded to the model's length
            Lp = x.shape[1]
            return torch.arange(Lp, dtype=torch.float32)[None] * torch.from_numpy(med[g][:, None]).float()
        for name in ("true", "index all", "index: additive enc only", "index: gaps only", "index: rope only"):
            T.gap_features, T.rope_time = orig_gap, orig_rope
            m.time_encoding.forward = orig_enc
            bb = dict(b)
            if name == "index all": bb["time"] = it
            if name == "index: additive enc only": m.time_encoding.forward = lambda tt: orig_enc(pad_it(tt))
            if name == "index: gaps only": T.gap_features = lambda tt, v, c: orig_gap(it, v, c)
            if name == "index: rope only": T.rope_time = lambda tt, v, c: orig_rope(it, v, c)
            with torch.no_grad():
                p = m.forward_batch(bb)["reconstructed"].numpy()
            s = sums.setdefault(name, [0.0, 0]); s[0] += float(((p - y)[sel] ** 2).sum()); s[1] += int(sel.sum())
        T.gap_features, T.rope_time = orig_gap, orig_rope; m.time_encoding.forward = orig_enc
for k, (a, n) in sums.items(): print(f"{k:>28}: {a / n:.4f}")
