"""Metrics and baselines: hand computations, then `lcgen evaluate` on a tiny trained run."""

import numpy as np
import pytest

from lcgen.evaluate.scoring import (breakdown, compare, concat_scores, error_sums, linear_baseline,
                            mean_baseline, ratio_bins, score_batch, summarise)
from tests.conftest import run_cli


def test_linear_baseline_by_hand():
    # one row, irregular times; positions 2, 3 hidden between visible 1 (t=1, y=2) and 4 (t=5, y=10)
    values = np.array([[0.0, 2.0, 99.0, 99.0, 10.0, 7.0, 0.0]])
    time = np.array([[0.0, 1.0, 2.0, 4.0, 5.0, 6.0, 0.0]])
    valid = np.array([[1, 1, 1, 1, 1, 1, 0]], bool)  # last position is padding
    hidden = np.array([[0, 0, 1, 1, 0, 0, 0]], bool)
    out = linear_baseline(values, valid, hidden, time)
    # y(t) = 2 + 8 (t − 1) / 4 → t=2: 4, t=4: 8; visible positions keep their own value
    np.testing.assert_allclose(out[0, :6], [0.0, 2.0, 4.0, 8.0, 10.0, 7.0])


def test_linear_baseline_edges_shared_grid_and_empty_rows():
    values = np.array([[5.0, 6.0, 1.0, 3.0], [1.0, 2.0, 3.0, 4.0]])
    valid = np.ones((2, 4), bool)
    hidden = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)  # leading gap; a row with nothing visible
    freq = np.array([0.1, 0.2, 0.4, 0.8])  # one (L,) grid for every row, as for spectra
    out = linear_baseline(values, valid, hidden, freq)
    np.testing.assert_allclose(out[0], [1.0, 1.0, 1.0, 3.0])  # constant before the first knot
    np.testing.assert_allclose(out[1], 0.0)
    # along frequency, not index: knots at f=0.1 (0) and f=0.8 (7) → f=0.2: 1, f=0.4: 3
    row = linear_baseline(np.array([0.0, 9, 9, 7]), np.ones(4, bool), np.array([0, 1, 1, 0], bool), freq)
    np.testing.assert_allclose(row[0], [0.0, 1.0, 3.0, 7.0])


def test_mean_baseline_uses_only_visible_real_positions():
    values = np.array([[1.0, 2.0, 100.0, 3.0, 50.0], [4.0, 4.0, 4.0, 4.0, 4.0]])
    valid = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], bool)
    hidden = np.array([[0, 0, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    out = mean_baseline(values, valid, hidden)
    np.testing.assert_allclose(out[0], 2.0)  # (1 + 2 + 3) / 3: hidden 100 and padding 50 ignored
    np.testing.assert_allclose(out[1], 0.0)


def test_error_sums_and_pooled_summary_by_hand():
    target = np.array([[0.0, 0.0, 0.0, np.nan], [1.0, 1.0, 1.0, 1.0]])
    valid = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    hidden = np.array([[1, 0, 0, 0], [1, 1, 0, 0]], bool)
    pred = np.array([[2.0, 1.0, -1.0, 5.0], [1.0, 4.0, 1.5, 0.5]])
    s = error_sums(pred, target, valid & hidden)
    np.testing.assert_allclose(s["sse"], [4.0, 9.0])
    np.testing.assert_allclose(s["sae"], [2.0, 3.0])
    np.testing.assert_array_equal(s["n"], [1, 2])
    scores = score_batch(target, valid, hidden, {"model": pred})
    summary = summarise(scores)["model"]
    # pooled over positions: masked (4 + 0 + 9) / 3; unmasked (1 + 1 + 0.25 + 0.25) / 4
    assert summary["masked_mse"] == pytest.approx(13 / 3)
    assert summary["masked_mae"] == pytest.approx(5 / 3)
    assert summary["unmasked_mse"] == pytest.approx(2.5 / 4)
    assert summary["unmasked_mae"] == pytest.approx(3 / 4)
    # concatenating two halves and summarising equals summarising the whole
    halves = concat_scores([score_batch(target[:1], valid[:1], hidden[:1], {"model": pred[:1]}),
                            score_batch(target[1:], valid[1:], hidden[1:], {"model": pred[1:]})])
    assert summarise(halves) == summarise(scores)


def test_breakdown_groups_and_ratio_bins():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(6, 8))
    valid = np.ones((6, 8), bool)
    hidden = np.zeros((6, 8), bool)
    hidden[:, :2] = True
    hidden[5] = False  # a sample with nothing hidden is left out of its group
    pred = target + rng.normal(size=(6, 8))
    scores = score_batch(target, valid, hidden, {"model": pred, "mean": mean_baseline(target, valid, hidden)})
    labels = np.array(["a", "b", "a", "b", "a", "c"])
    groups = breakdown(scores, labels)
    assert [g["group"] for g in groups] == ["a", "b"]
    assert groups[0]["n_samples"] == 3
    rows = [0, 2, 4]
    expect = ((pred[rows, :2] - target[rows, :2]) ** 2).mean()
    assert groups[0]["model"]["masked_mse"] == pytest.approx(expect)
    names, order = ratio_bins(np.array([0.1, 0.29, 0.3, 0.7, 0.95, 0.0]), [0.1, 0.3, 0.5, 0.7])
    assert order == ["0.10-0.30", "0.30-0.50", "0.50-0.70"]
    assert names.tolist() == ["0.10-0.30", "0.10-0.30", "0.30-0.50", "0.50-0.70", "0.50-0.70", "0.10-0.30"]
    ratios = compare(summarise(scores), baselines=("mean",))
    s = summarise(scores)
    assert ratios["mean"] == pytest.approx(s["model"]["masked_mse"] / s["mean"]["masked_mse"])


def test_block_sizes_match_the_fixed_masks():
    """Re-laying each sample's draws with its block size forced gives exactly its fixed mask."""
    import torch

    from lcgen.evaluate.scoring import mask_block_sizes
    from lcgen.masking import draw_fixed, fixed_mask, lay_blocks

    g = torch.Generator().manual_seed(3)
    B, L = 64, 256
    lengths = torch.randint(8, L + 1, (B,), generator=g)
    valid = torch.arange(L)[None] < lengths[:, None]
    valid[::5, :3] = False  # some rows start late
    index = torch.arange(100, 100 + B)
    args = dict(min_block=1, max_block=32, min_ratio=0.1, max_ratio=0.7)
    hidden = fixed_mask(valid, index, seed=7, **args)
    sizes = mask_block_sizes(valid.numpy(), index.numpy(), seed=7, min_block=1, max_block=32)
    assert len(set(sizes.tolist())) >= 4  # the test covers several block sizes
    draws = draw_fixed(valid, index, seed=7)
    for s in set(sizes.tolist()):
        forced = lay_blocks(valid, draws, min_block=s, max_block=s, min_ratio=0.1, max_ratio=0.7)
        rows = torch.from_numpy(sizes == s)
        assert torch.equal(forced[rows], hidden[rows]), s


# --------------------------------------------------------------------------------------------
# A tiny trained run, scored end to end


def finite_leaves(obj, path="metrics"):
    """Every number in a nested dict/list, with its path; fails on NaN, inf and null."""
    import math

    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from finite_leaves(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from finite_leaves(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        assert math.isfinite(obj), path
        yield path, obj
    else:
        assert obj is not None, f"{path} is undefined"


def interpolate_by_loops(t, y, visible):
    """Slow reference: each hidden point on the line through its visible neighbours in time."""
    out = np.array(y, dtype=np.float64)
    idx = np.flatnonzero(visible)
    for j in range(len(y)):
        if visible[j]:
            continue
        before, after = idx[idx < j], idx[idx > j]
        if before.size and after.size:
            a, b = before[-1], after[0]
            out[j] = y[a] + (y[b] - y[a]) * (t[j] - t[a]) / (t[b] - t[a])
        else:
            out[j] = y[before[-1]] if before.size else y[after[0]]
    return out


@pytest.fixture(scope="module")
def ts_run(tmp_path_factory):
    from lcgen.features.convert import ConvertConfig, convert
    from lcgen.simulate.mocks import SimulateConfig, generate
    from lcgen.train.trainer import TrainConfig, fit

    d = tmp_path_factory.mktemp("evalrun")
    generate(SimulateConfig(n_samples=30, output=str(d / "raw.h5"), seed=5), workers=1)
    convert(ConvertConfig(input=str(d / "raw.h5"), output=str(d / "ts.h5"), max_length=64, min_points=16))
    result = fit(TrainConfig(model_name="transformer", preset="tiny", data=str(d / "ts.h5"), epochs=1,
                             batch_size=16, lr=3e-3, runs_dir=str(d / "runs"), device="cpu",
                             test_fraction=0.2), name="tiny")
    return result["run_dir"]


def test_evaluate_writes_finite_metrics_on_the_same_masks(ts_run):
    import json

    import h5py
    import torch

    from lcgen.train.data import load_split
    from lcgen.evaluate.scoring import EvaluateConfig, evaluate_run
    from lcgen.masking import fixed_mask
    from lcgen.train.trainer import load_run

    metrics = evaluate_run(ts_run, EvaluateConfig(mask_seed=11, batch_size=7))
    on_disk = json.loads((ts_run / "metrics.json").read_text())
    assert on_disk == metrics
    assert len(list(finite_leaves(on_disk))) > 50
    for key in ("overall", "vs_baselines", "by_mask_ratio", "by_block_size", "by_lc_type", "signal"):
        assert on_disk[key], key
    test_rows = np.sort(load_split(ts_run)["test"])
    assert metrics["n_samples"] == len(test_rows) > 0
    # Independent recomputation on the test rows: masks from fixed_mask by row index and seed,
    # the linear baseline by explicit loops, the model from load_run.
    with h5py.File(metrics["data"]) as f:
        flux, time, mask = f["flux"][:][test_rows], f["time"][:][test_rows], f["mask"][:][test_rows]
        signal = f["signal"][:][test_rows]
        types = f["meta/lc_type"].asstr()[:][test_rows]
    valid = torch.from_numpy(mask)
    ranges = {k: metrics["mask"][k] for k in ("min_block", "max_block", "min_ratio", "max_ratio")}
    hidden = fixed_mask(valid, torch.from_numpy(test_rows), seed=11, **ranges).numpy()
    sse = n = sse_mean = 0.0
    for i in range(len(test_rows)):
        visible = mask[i] & ~hidden[i]
        ref = interpolate_by_loops(time[i], flux[i].astype(np.float64), visible)
        sel = mask[i] & hidden[i]
        sse += ((ref[sel] - flux[i][sel]) ** 2).sum()
        sse_mean += ((flux[i][visible].astype(np.float64).mean() - flux[i][sel]) ** 2).sum()
        n += sel.sum()
    assert metrics["overall"]["linear"]["masked_mse"] == pytest.approx(sse / n, rel=1e-6)
    assert metrics["overall"]["mean"]["masked_mse"] == pytest.approx(sse_mean / n, rel=1e-6)
    assert metrics["n_masked_positions"] == n
    model, _ = load_run(ts_run)
    batch = {"values": torch.from_numpy(flux), "valid": valid, "hidden": torch.from_numpy(hidden),
             "time": torch.from_numpy(time), "index": torch.from_numpy(test_rows)}
    with torch.no_grad():
        pred = model.forward_batch(batch)["reconstructed"].reshape(flux.shape).double().numpy()
    sel = mask & hidden
    assert metrics["overall"]["model"]["masked_mse"] == pytest.approx(((pred - flux)[sel] ** 2).mean(), rel=1e-5)
    assert metrics["signal"]["data"]["masked_mse"] == pytest.approx(((flux - signal)[sel] ** 2).mean(), rel=1e-5)
    ratio = metrics["vs_baselines"]["linear"]["masked_mse_ratio"]
    assert ratio == pytest.approx(metrics["overall"]["model"]["masked_mse"] / (sse / n))
    assert f"(ratio {ratio:.3f})" in metrics["summary"]
    # breakdowns partition the samples
    assert sum(g["n_samples"] for g in metrics["by_lc_type"]) == len(test_rows)
    assert {g["group"] for g in metrics["by_lc_type"]} == set(types.tolist())
    assert sum(g["n_samples"] for g in metrics["by_block_size"]) == len(test_rows)
    assert all(g["group"] in (1, 2, 4, 8, 16, 32) for g in metrics["by_block_size"])


def test_metrics_path_keeps_test_metrics_apart(tmp_path):
    from lcgen.evaluate.scoring import metrics_path

    assert metrics_path(tmp_path) == tmp_path / "metrics.json"
    assert metrics_path(tmp_path, "val") == tmp_path / "metrics-val.json"
    assert metrics_path(tmp_path, "all", "other/kepler.h5") == tmp_path / "metrics-kepler.json"
    assert metrics_path(tmp_path, "test", "other/kepler.h5") == tmp_path / "metrics-kepler.json"
    assert metrics_path(tmp_path, "train", "other/kepler.h5") == tmp_path / "metrics-kepler-train.json"


def test_undefined_metrics_are_null_not_nan(tmp_path):
    import json

    from lcgen.evaluate.scoring import metrics_markdown, ratio, write_metrics

    values = np.array([[1.0, 2.0, 3.0]])
    valid = np.ones((1, 3), bool)
    hidden = np.zeros((1, 3), bool)  # nothing hidden: masked errors are undefined
    scores = score_batch(values, valid, hidden, {"model": values, "linear": values, "mean": values})
    s = summarise(scores)
    assert s["model"]["masked_mse"] is None and s["model"]["unmasked_mse"] == 0.0
    assert ratio(0.5, 0.0) is None and ratio(None, 1.0) is None and ratio(1.0, 4.0) == 0.25
    assert compare(s) == {"linear": None, "mean": None}
    assert "| m | - | - | 0.0000 | 0.0000 |" in metrics_markdown({"model_name": "m", "overall": s})
    path = write_metrics(tmp_path / "m.json", s)  # valid JSON: null, never NaN
    assert json.loads(path.read_text())["model"]["masked_mse"] is None


def test_data_laid_out_differently_from_training_is_refused(ts_run, tmp_path):
    from lcgen.features.convert import ConvertConfig, convert
    from lcgen.errors import LcgenError
    from lcgen.evaluate.scoring import EvaluateConfig, evaluate_run

    raw = ts_run.parents[2] / "raw.h5"
    other = tmp_path / "ts32.h5"
    convert(ConvertConfig(input=str(raw), output=str(other), max_length=32, min_points=16))
    refusal = "ts32.h5 has rows of 32 points but .*tiny was trained on rows of 64; convert the data"
    with pytest.raises(LcgenError, match=refusal):
        evaluate_run(ts_run, EvaluateConfig(data=str(other)))
    # checked against the run itself: refused the same when its training file is not found from here
    train_data = ts_run.parents[2] / "ts.h5"
    train_data.rename(tmp_path / "moved.h5")
    try:
        with pytest.raises(LcgenError, match=refusal):
            evaluate_run(ts_run, EvaluateConfig(data=str(other)))
    finally:
        (tmp_path / "moved.h5").rename(train_data)


def test_evaluate_in_days_reports_error_by_gap_duration(ts_run, tmp_path):
    """`evaluate --set mask_days=[lo,hi]` scores blocks in days on the same fixed masks as
    lcgen.masking.fixed_mask; by_gap_days partitions the windows by their drawn block length and
    gives pooled and median per-window MSE per bin."""
    import json

    import h5py
    import torch

    from lcgen.train.data import load_split
    from lcgen.evaluate.scoring import GAP_BINS
    from lcgen.masking import day_block_length, draw_fixed, fixed_mask

    r = run_cli("evaluate", ts_run, "--mask-days", "2,40", "--mask-seed", "3")
    assert r.returncode == 0, r.stderr
    assert "median per-window masked MSE by gap duration" in r.stdout
    m = json.loads((ts_run / "metrics-days.json").read_text())
    assert m["mask"]["min_days"] == 2 and m["mask"]["max_days"] == 40 and m["by_block_size"] == []
    rows = np.sort(load_split(ts_run)["test"])
    with h5py.File(m["data"]) as f:
        flux, time, mask = f["flux"][:][rows], f["time"][:][rows], f["mask"][:][rows]
    valid, t = torch.from_numpy(mask), torch.from_numpy(time)
    hidden = fixed_mask(valid, torch.from_numpy(rows), seed=3, min_block=1, max_block=32, min_ratio=0.1,
                        max_ratio=0.7, min_days=2.0, max_days=40.0, time=t).numpy()
    sel = mask & hidden
    assert m["n_masked_positions"] == sel.sum()
    d = day_block_length(valid, t, draw_fixed(valid, torch.from_numpy(rows), seed=3).u_block,
                         min_days=2.0, max_days=40.0)[0].numpy()
    groups = m["by_gap_days"]
    assert sum(g["n_samples"] for g in groups) == len(rows)
    names = [name for _, name in GAP_BINS]
    assert [g["group"] for g in groups] == sorted((g["group"] for g in groups), key=names.index)
    edges = [0.0] + [edge for edge, _ in GAP_BINS]
    for g in groups:
        k = names.index(g["group"])
        rows_in = (d >= edges[k]) & (d < edges[k + 1])
        assert rows_in.sum() == g["n_samples"]
        # the mean baseline is simple to redo: each window's mean of its visible points
        visible = mask[rows_in] & ~hidden[rows_in]
        mean = np.array([f[v].astype(np.float64).mean() for f, v in zip(flux[rows_in], visible)])
        sq = np.where(sel[rows_in], (flux[rows_in] - mean[:, None]) ** 2, 0.0)
        per_window = sq.sum(1)[sel[rows_in].sum(1) > 0] / sel[rows_in].sum(1)[sel[rows_in].sum(1) > 0]
        assert g["mean"]["masked_mse"] == pytest.approx(sq.sum() / sel[rows_in].sum(), rel=1e-6)
        assert g["mean"]["masked_window_mse_median"] == pytest.approx(np.median(per_window), rel=1e-6)
    r = run_cli("evaluate", ts_run, "--mask-days", "3,1")
    assert r.returncode == 1 and "0 < min_days <= max_days" in r.stderr
    r = run_cli("evaluate", ts_run, "--mask-days", "3")
    assert r.returncode == 1 and "give two numbers of days" in r.stderr
