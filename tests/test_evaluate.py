"""Metrics and baselines: hand computations, then `lcgen evaluate` on a tiny trained run."""

import numpy as np
import pytest

from lcgen.evaluate import (breakdown, compare, concat_scores, error_sums, linear_baseline,
                            mean_baseline, ratio_bins, score_batch, summarise)


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

    from lcgen.evaluate import mask_block_sizes
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
