"""Block masking: the vectorised masks against a slow per-sample reference, and their properties."""

import math

import pytest
import torch

from lcgen.errors import LcgenError
from lcgen.masking import (
    MaskConfig,
    block_mask,
    block_sizes,
    close_gap,
    draw_fixed,
    draw_train,
    fixed_mask,
    lay_blocks,
    model_input,
)
from tests.conftest import torch_threads


def reference_mask(valid, draws, *, min_block, max_block, min_ratio, max_ratio):
    """The rule of DESIGN.md §3, one sample at a time, from the same random draws.

    Returns the hidden mask and, per sample, (block size, number of blocks, number hidden).
    """
    B, L = valid.shape
    hidden = torch.zeros(B, L, dtype=torch.bool)
    layout = []
    p_lo = math.ceil(math.log2(min_block))
    p_hi = math.floor(math.log2(max_block))
    for b in range(B):
        real = torch.nonzero(valid[b]).flatten().tolist()
        if not real:
            layout.append((None, 0, 0))
            continue
        first, last = real[0], real[-1]
        span = last - first + 1
        fits = [p for p in range(p_lo, p_hi + 1) if 2 ** (p + 1) <= span]
        if not fits:  # span too short for min_block: largest block giving two blocks, or 1
            fits = [max([p for p in range(p_lo) if 2 ** (p + 1) <= span], default=0)]
        p = fits[int(float(draws.u_block[b]) * len(fits))]
        n = math.ceil(span / 2**p)
        r = min_ratio + float(draws.u_ratio[b]) * (max_ratio - min_ratio)
        c = min(max(int(n * r), 1), n - 1) if n >= 2 else 0
        order = sorted(range(n), key=lambda k: (int(draws.keys[b, k]), k))
        chosen = set(order[:c])
        for j in real:
            if (j - first) // 2**p in chosen:
                hidden[b, j] = True
        layout.append((2**p, n, c))
    return hidden, layout


def make_valid(kind, B, L, gen):
    """Validity patterns: padded series, spectral sub-ranges, scattered gaps, edge cases."""
    pos = torch.arange(L)
    if kind == "prefix":  # time series: real points then padding
        n = torch.randint(1, L + 1, (B, 1), generator=gen)
        return pos < n
    if kind == "subrange":  # spectra: valid bins between a low and a high cut
        lo = torch.randint(0, L // 2, (B, 1), generator=gen)
        hi = torch.randint(L // 2, L + 1, (B, 1), generator=gen)
        return (pos >= lo) & (pos < hi)
    if kind == "scattered":  # gaps inside the span
        return torch.rand(B, L, generator=gen) < 0.7
    if kind == "edge":  # empty, single point, two points, full
        v = torch.zeros(B, L, dtype=torch.bool)
        v[1, 3] = True
        v[2, 5:7] = True
        v[3:] = True
        return v
    raise ValueError(kind)


SETTINGS = [
    dict(min_block=1, max_block=32, min_ratio=0.1, max_ratio=0.7),
    dict(min_block=2, max_block=8, min_ratio=0.3, max_ratio=0.5),
    dict(min_block=3, max_block=100, min_ratio=0.0, max_ratio=1.0),
    dict(min_block=4, max_block=8, min_ratio=0.5, max_ratio=0.9),  # short rows: blocks < 4
]


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("kind", ["prefix", "subrange", "scattered", "edge"])
@pytest.mark.parametrize("L", [9, 64, 100])
def test_block_mask_matches_reference(settings, kind, L):
    gen = torch.Generator().manual_seed(L + len(kind))
    valid = make_valid(kind, 12, L, gen)
    seed = 1234
    hidden = block_mask(valid, **settings, generator=torch.Generator().manual_seed(seed))
    draws = draw_train(
        valid, min_block=settings["min_block"], generator=torch.Generator().manual_seed(seed)
    )
    expected, _ = reference_mask(valid, draws, **settings)
    assert torch.equal(hidden, expected)


@pytest.mark.parametrize("kind", ["prefix", "subrange", "edge"])
def test_fixed_mask_matches_reference(kind):
    gen = torch.Generator().manual_seed(7)
    valid = make_valid(kind, 10, 96, gen)
    index = torch.arange(100, 110)
    settings = SETTINGS[0]
    hidden = fixed_mask(valid, index, seed=5, **settings)
    draws = draw_fixed(valid, index, seed=5, min_block=settings["min_block"])
    expected, _ = reference_mask(valid, draws, **settings)
    assert torch.equal(hidden, expected)


def histogram_lay_blocks(valid, draws, *, min_block, max_block, min_ratio, max_ratio):
    """lay_blocks as it was up to commit 8eb40f7: torch over (B, 1024) key histograms.

    Kept verbatim in its logic as the reference every fixed (validation/test) mask was made
    with, so the faster code is checked to give the same masks bit for bit.
    """
    B, L = valid.shape
    small, top = (torch.int16, 15) if L < 2**15 else (torch.int32, 31)
    p_lo, p_hi = (min_block - 1).bit_length(), max_block.bit_length() - 1
    pos1 = torch.arange(1, L + 1, dtype=small)
    ends = (valid.view(torch.uint8)[:, None, :] * torch.stack((pos1, pos1.flip(0)))).amax(2).long()
    first = L - ends[:, 1]
    span = (ends[:, 0] - first).clamp_(min=0)
    p_top = (torch.frexp((span >> 1).clamp_(min=1).double())[1] - 1).clamp_(max=p_hi).long()
    n_choices = (p_top - (p_lo - 1)).clamp_(min=1)
    p = (p_lo + (draws.u_block * n_choices).long()).minimum(p_top).clamp_(min=0)
    n_blocks = ((span - 1) >> p) + 1
    ratio = draws.u_ratio * (max_ratio - min_ratio) + min_ratio
    count = (n_blocks * ratio).long().clamp_(min=1).minimum(n_blocks - 1).clamp_(min=0)
    n_s, count_s, first_s, p_s = torch.stack((n_blocks, count, first, p)).to(small)
    keys = draws.keys.to(small)
    N = keys.shape[1]
    block = torch.arange(N, dtype=small)
    not_real = (block - n_s[:, None]) >> top
    hist = torch.zeros(B, 1024, dtype=small)
    hist.scatter_add_(1, keys.long(), -not_real)
    at_most = hist.cumsum(1, dtype=small)
    q_star = torch.searchsorted(at_most, count_s[:, None]).clamp_(max=1023)
    below = at_most.gather(1, q_star) - hist.gather(1, q_star)
    diff = keys - q_star.to(small)
    before = diff >> top
    tie = 1 + ((diff | -diff) >> top)
    m_th_tie = torch.searchsorted(tie.cumsum(1, dtype=small), count_s[:, None] - below.to(small))
    after_cut = torch.where(count[:, None] > 0, m_th_tie + 1, 0).to(small)
    up_to_cut = (block - after_cut) >> top
    chosen = (before | (up_to_cut & -tie)).bool()
    block_of = ((torch.arange(L, dtype=small) - first_s[:, None]) >> p_s[:, None]).clamp_(0, N - 1)
    return chosen.gather(1, block_of.long()) & valid


def random_validity(B, L, gen):
    """Rows of every kind mixed in one batch: padded prefixes, sub-ranges, scattered points,
    empty rows, single points, spans shorter than a block."""
    pos = torch.arange(L)
    kind = torch.randint(0, 6, (B, 1), generator=gen)
    lo = torch.randint(0, L, (B, 1), generator=gen)
    hi = lo + torch.randint(0, L + 1, (B, 1), generator=gen)
    short = lo + torch.randint(1, 8, (B, 1), generator=gen)
    dense = torch.rand(B, 1, generator=gen)
    return torch.where(kind == 0, pos < hi - lo,  # prefix then padding
           torch.where(kind == 1, (pos >= lo) & (pos < hi),  # sub-range
           torch.where(kind == 2, torch.rand(B, L, generator=gen) < dense,  # scattered
           torch.where(kind == 3, torch.zeros(B, L, dtype=torch.bool),  # empty
           torch.where(kind == 4, (pos >= lo) & (pos < short), pos == lo)))))  # short span / one point


@pytest.mark.parametrize("draw", ["train", "fixed"])
def test_lay_blocks_equals_the_histogram_algorithm(draw):
    """Bit for bit the masks of the previous algorithm, on many random draws, lengths (powers of
    two or not), paddings and block settings: fixed masks, and so every quality number, keep."""
    with torch_threads(1):  # ~150 batches of small torch ops: one thread is ~4x faster here
        gen = torch.Generator().manual_seed(16)
        for trial in range(150):
            B = int(torch.randint(1, 48, (1,), generator=gen))
            L = int(torch.randint(1, 1200, (1,), generator=gen)) if trial % 5 else int(2 ** torch.randint(0, 11, (1,), generator=gen))
            min_block = int(torch.randint(1, 9, (1,), generator=gen))
            max_block = min_block + int(torch.randint(0, 100, (1,), generator=gen))
            if (min_block - 1).bit_length() > max_block.bit_length() - 1:
                max_block = 2 * min_block
            lo, hi = sorted(torch.rand(2, generator=gen).tolist())
            settings = dict(min_block=min_block, max_block=max_block, min_ratio=lo, max_ratio=hi)
            valid = random_validity(B, L, gen)
            if draw == "train":
                draws = draw_train(valid, min_block=min_block, generator=gen)
            else:
                index = torch.randint(0, 2**40, (B,), generator=gen)
                draws = draw_fixed(valid, index, seed=trial, min_block=min_block)
            got = lay_blocks(valid, draws, **settings)
            assert torch.equal(got, histogram_lay_blocks(valid, draws, **settings)), (trial, B, L, settings)
        # the defaults at the sizes training uses, rows 50-100 % real
        for B, L in ((32, 512), (128, 1024)):
            valid = torch.arange(L) < torch.randint(L // 2, L + 1, (B, 1), generator=gen)
            draws = draw_train(valid, generator=gen)
            settings = dict(min_block=1, max_block=32, min_ratio=0.1, max_ratio=0.7)
            assert torch.equal(lay_blocks(valid, draws, **settings), histogram_lay_blocks(valid, draws, **settings))


def test_masks_are_those_of_main_bit_for_bit():
    """Digests of fixed (validation/test) masks and training masks over several seeds, settings
    and shapes, as main made them before the speed work of issue 16 (commit f86fe66): every
    quality number measured on fixed masks, and every training run's masks (so its resume and
    its README figures), stay exactly as they were."""
    import hashlib

    fixed, train = hashlib.sha256(), hashlib.sha256()
    for B, L in ((32, 512), (128, 1024), (40, 333)):
        valid = random_validity(B, L, torch.Generator().manual_seed(B + L))
        index = torch.arange(1000, 1000 + B)
        for seed in (0, 1, 12345):
            for settings in ({}, dict(min_block=2, max_block=16, min_ratio=0.2, max_ratio=0.5)):
                hidden = fixed_mask(valid, index, seed=seed, **settings)
                fixed.update(str(tuple(hidden.shape)).encode() + hidden.numpy().tobytes())
            hidden = block_mask(valid, generator=torch.Generator().manual_seed(seed))
            train.update(str(tuple(hidden.shape)).encode() + hidden.numpy().tobytes())
    assert fixed.hexdigest()[:16] == "22c5bd1a0605f377"
    assert train.hexdigest()[:16] == "702db462418a1aff"


@pytest.mark.parametrize("max_block", [1, 4096])
def test_long_rows_use_wider_integers(max_block):
    """Rows of >= 2**15 positions take int32 positions, and with blocks of 1 point (>= 2**15
    blocks in a row) int32 block scores; same rule."""
    gen = torch.Generator().manual_seed(8)
    valid = torch.arange(33000) < torch.tensor([[33000], [32800], [5]])
    settings = dict(min_block=1, max_block=max_block, min_ratio=0.1, max_ratio=0.7)
    draws = draw_train(valid, generator=gen)
    expected, _ = reference_mask(valid, draws, **settings)
    assert torch.equal(lay_blocks(valid, draws, **settings), expected)


def test_block_sizes_and_ratios_in_range():
    """Full-length rows: each power of two in [1, 32] is used, ratios stay in [0.1, 0.7]."""
    settings = SETTINGS[0]
    valid = torch.ones(600, 256, dtype=torch.bool)
    draws = draw_train(valid, generator=torch.Generator().manual_seed(3))
    hidden = lay_blocks(valid, draws, **settings)
    expected, layout = reference_mask(valid, draws, **settings)
    assert torch.equal(hidden, expected)
    sizes = {size for size, _, _ in layout}
    assert sizes == {1, 2, 4, 8, 16, 32}
    assert block_sizes(valid, draws).tolist() == [size for size, _, _ in layout]
    for b, (size, n, c) in enumerate(layout):
        assert n == 256 // size
        assert 1 <= c <= n - 1
        realised = hidden[b].float().mean().item()
        assert realised == c / n
        assert settings["min_ratio"] - 1 / n <= realised <= settings["max_ratio"]
        # hidden runs start and end on block boundaries
        edges = torch.nonzero(torch.diff(hidden[b].int(), prepend=torch.zeros(1, dtype=torch.int32),
                                         append=torch.zeros(1, dtype=torch.int32))).flatten()
        assert torch.all(edges % size == 0)
    ratios = hidden.float().mean(1)
    assert 0.35 < ratios.mean().item() < 0.42  # E[floor(n r) / n] is just under E[r] = 0.4


def test_short_and_padded_series_get_the_intended_ratio():
    """A series of 100 points padded to 1024 is masked over its 100 points, not over 1024."""
    valid = torch.arange(1024) < torch.tensor([[100], [37], [1024]])
    valid = valid.repeat(200, 1)
    hidden = block_mask(valid, generator=torch.Generator().manual_seed(0))
    assert not (hidden & ~valid).any()
    realised = hidden.sum(1) / valid.sum(1)
    assert realised.min() > 0.0 and realised.max() < 1.0
    for row in range(3):
        assert 0.3 < realised[row::3].mean().item() < 0.5


def test_padding_never_hidden_and_tiny_rows():
    gen = torch.Generator().manual_seed(11)
    for kind in ["prefix", "subrange", "scattered", "edge"]:
        valid = make_valid(kind, 64, 128, gen)
        hidden = block_mask(valid, generator=gen)
        assert not (hidden & ~valid).any()
        n_valid = valid.sum(1)
        assert torch.all(hidden.sum(1) < n_valid.clamp(min=1))  # something stays visible
        assert torch.all(hidden[n_valid >= 2].sum(1) >= 1)  # and something is hidden


def test_positions_hidden_uniformly():
    """Exact-count selection without a position bias: every position hidden half the time."""
    valid = torch.ones(8000, 64, dtype=torch.bool)
    hidden = block_mask(valid, min_block=1, max_block=1, min_ratio=0.5, max_ratio=0.5,
                        generator=torch.Generator().manual_seed(2))
    assert torch.all(hidden.sum(1) == 32)
    freq = hidden.float().mean(0)
    assert (freq - 0.5).abs().max().item() < 0.025  # 4.5 standard errors


def test_fixed_masks_ignore_batch_composition():
    gen = torch.Generator().manual_seed(4)
    valid = make_valid("prefix", 32, 200, gen)
    index = torch.arange(1000, 1032)
    full = fixed_mask(valid, index, seed=9)
    assert torch.equal(full, fixed_mask(valid, index, seed=9))  # deterministic
    perm = torch.randperm(32, generator=gen)[:20]
    part = fixed_mask(valid[perm], index[perm], seed=9)
    assert torch.equal(part, full[perm])
    # the same sample in a batch padded to another length, beside other samples
    wider = torch.zeros(20, 256, dtype=torch.bool)
    wider[:, :200] = valid[perm]
    assert torch.equal(fixed_mask(wider, index[perm], seed=9)[:, :200], full[perm])
    assert not torch.equal(fixed_mask(valid, index, seed=10), full)
    assert not torch.equal(fixed_mask(valid, index + 1, seed=9), full)


def lowbias32(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_fixed_draws_are_the_documented_hash_of_seed_and_index():
    """Pins what fixed masks are made of, one Python integer at a time: row word
    h(h(seed_lo ^ h(seed_hi)) ^ index_lo) mixed with h(index_hi), then one word
    h(row ^ h(counter)) per counter: counters 0, 1 the two uniforms, then three 10-bit keys
    (bits 22, 12, 2) per word. Any speed-up must leave these draws, and so the masks, alone."""
    valid = torch.ones(3, 40, dtype=torch.bool)
    index = torch.tensor([0, 7, 2**33 + 5])
    seed = 2**35 + 123
    draws = draw_fixed(valid, index, seed=seed)
    seed_word = lowbias32((seed & 0xFFFFFFFF) ^ lowbias32(seed >> 32))
    for b, i in enumerate(index.tolist()):
        row = lowbias32(lowbias32(seed_word ^ (i & 0xFFFFFFFF)) ^ lowbias32(i >> 32))
        words = [lowbias32(row ^ lowbias32(c)) for c in range(2 + 40 // 3 + 1)]
        assert draws.u_block[b].item() == words[0] / 2**32 and draws.u_ratio[b].item() == words[1] / 2**32
        keys = [(w >> s) & 1023 for w in words[2:] for s in (22, 12, 2)][:40]
        assert draws.keys[b].tolist() == keys


def test_train_masks_are_fresh_each_call():
    valid = torch.ones(16, 128, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    assert not torch.equal(block_mask(valid, generator=gen), block_mask(valid, generator=gen))


def test_model_input_hides_values():
    values = torch.tensor([[1.0, 2.0, float("nan"), 4.0, 5.0]])
    valid = torch.tensor([[True, True, True, True, False]])
    hidden = torch.tensor([[False, True, True, False, False]])
    x = model_input(values, valid, hidden)
    assert x.shape == (1, 5, 2)
    assert torch.equal(x[0, :, 0], torch.tensor([1.0, 0.0, 0.0, 4.0, 0.0]))
    assert torch.equal(x[0, :, 1], torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0]))


@pytest.mark.parametrize(
    "bad",
    [dict(min_block=3, max_block=3), dict(min_block=0), dict(min_ratio=0.8, max_ratio=0.2),
     dict(max_ratio=1.5)],
)
def test_bad_settings_raise(bad):
    with pytest.raises(LcgenError):
        MaskConfig(**bad)
    with pytest.raises(LcgenError):
        block_mask(torch.ones(2, 8, dtype=torch.bool), **bad)


def test_bad_inputs_raise():
    with pytest.raises(LcgenError, match="bool"):
        block_mask(torch.ones(2, 8))
    with pytest.raises(LcgenError, match="index"):
        fixed_mask(torch.ones(2, 8, dtype=torch.bool), torch.arange(3), seed=0)
    with pytest.raises(LcgenError, match="seed"):
        fixed_mask(torch.ones(2, 8, dtype=torch.bool), torch.arange(2), seed=-1)


# --------------------------------------------------------------------------------------------
# Blocks in days


def _day_reference(valid, time, u_block, u_ratio, keys, *, min_days, max_days, min_ratio, max_ratio):
    """Slow per-sample loop of the documented day-block rule (lay_day_blocks' docstring)."""
    import math

    import numpy as np

    B, L = valid.shape
    hidden = np.zeros((B, L), bool)
    for i in range(B):
        t = time[i][valid[i]].astype(np.float64)
        if t.size == 0:
            continue
        first, span = t.min(), t.max() - t.min()
        d = math.exp(math.log(min_days) + u_block[i] * (math.log(max_days) - math.log(min_days)))
        d = max(min(d, span / 2), span / (L - 1)) if span > 0 else 1.0
        n = min(int(math.floor(span / d)), L - 1) + 1
        r = u_ratio[i] * (max_ratio - min_ratio) + min_ratio
        c = max(0, min(max(int(n * r), 1), n - 1))
        order = sorted(range(n), key=lambda k: (int(keys[i, k]), k))
        chosen = set(order[:c])
        for j in range(L):
            if valid[i, j]:
                k = min(max(int(math.floor((float(time[i, j]) - first) / d)), 0), L - 1)
                hidden[i, j] = k in chosen
    return hidden


def test_day_blocks_match_a_slow_reference_on_gapped_windows():
    import numpy as np

    from lcgen.masking import draw_fixed, lay_day_blocks

    rng = np.random.default_rng(0)
    B, L = 64, 128
    cad = np.where(rng.random(B) < 0.5, 29.4244, 2.0) / 1440  # Kepler and TESS cadences
    time = np.arange(L)[None, :] * cad[:, None]
    gap_at = rng.integers(10, L - 10, B)
    time += np.where(np.arange(L)[None, :] >= gap_at[:, None], rng.uniform(0, 2, B)[:, None], 0.0)  # a downlink
    valid = rng.random((B, L)) > 0.05
    valid[:4, 100:] = False  # padded tails
    valid[4] = False  # an empty row
    valid_t, time_t = torch.as_tensor(valid), torch.as_tensor(time)
    draws = draw_fixed(valid_t, torch.arange(B), seed=3, min_block=1)
    for lo, hi in ((0.1, 3.0), (0.02, 0.02), (1.0, 5.0)):
        got = lay_day_blocks(valid_t, time_t, draws, min_days=lo, max_days=hi, min_ratio=0.1, max_ratio=0.7)
        want = _day_reference(valid, time, draws.u_block.numpy(), draws.u_ratio.numpy(), draws.keys.numpy(),
                              min_days=lo, max_days=hi, min_ratio=0.1, max_ratio=0.7)
        np.testing.assert_array_equal(got.numpy(), want)
        assert not got[4].any() and not (got & ~valid_t).any()


def test_day_masks_hide_runs_of_the_drawn_length_in_days():
    """On a regular 30-min grid, a mask of blocks of d days hides runs that are whole multiples of
    d (adjacent chosen blocks merge), whatever the cadence of the points."""
    import numpy as np

    from lcgen.masking import day_block_length, draw_fixed, fixed_mask

    B, L = 200, 512
    cad = 29.4244 / 1440
    time = torch.arange(L, dtype=torch.float64).expand(B, L) * cad
    valid = torch.ones(B, L, dtype=torch.bool)
    index = torch.arange(B)
    hidden = fixed_mask(valid, index, seed=1, min_days=0.5, max_days=3.0, time=time)
    assert torch.equal(hidden, fixed_mask(valid, index, seed=1, min_days=0.5, max_days=3.0, time=time))
    d = day_block_length(valid, time, draw_fixed(valid, index, seed=1).u_block, min_days=0.5, max_days=3.0)[0]
    assert (d >= 0.5 - 1e-12).all() and (d <= 3.0 + 1e-12).all()
    for i in range(B):
        x = np.r_[0, hidden[i].numpy().astype(int), 0]
        starts, ends = np.flatnonzero(np.diff(x) == 1), np.flatnonzero(np.diff(x) == -1)
        assert starts.size >= 1
        for a, b in zip(starts, ends):
            length = (b - a) * cad
            blocks = length / float(d[i])
            if b < L:  # a run cut by the window end can be shorter
                assert abs(blocks - round(blocks)) * float(d[i]) <= cad + 1e-9 and round(blocks) >= 1
    frac = hidden.float().mean(1)
    assert 0.0 < frac.min() and frac.max() <= 0.75


def test_day_mask_settings_are_checked():
    from lcgen.errors import LcgenError
    from lcgen.masking import MaskConfig, lay_mask, draw_train

    with pytest.raises(LcgenError, match="0 < min_days <= max_days"):
        MaskConfig(min_days=0.0, max_days=2.0)
    with pytest.raises(LcgenError, match="0 < min_days <= max_days"):
        MaskConfig(min_days=3.0, max_days=2.0)
    valid = torch.ones(2, 16, dtype=torch.bool)
    with pytest.raises(LcgenError, match="need time series"):
        lay_mask(valid, draw_train(valid), min_days=0.1, max_days=1.0)
    # points stay the default: max_days 0 gives the point masks, bit for bit
    draws = draw_train(valid, generator=torch.Generator().manual_seed(0))
    assert torch.equal(lay_mask(valid, draws, time=torch.zeros(2, 16)), lay_blocks(valid, draws))


# --------------------------------------------------------------------------------------------
# Gap augmentation


def closed_by_hand(values, time, err, valid, u, fraction, max_points, drop_max=0.0, u_drop=None):
    """close_gap's rule one row at a time with Python lists: the real points listed, the cut
    run (and with ``drop_max`` the scattered losses) removed from the list, the rest written
    back left-aligned, zeros after."""
    out = {k: torch.zeros_like(v) for k, v in (("values", values), ("time", time), ("flux_err", err), ("valid", valid))}
    for b in range(valid.shape[0]):
        n = int(valid[b].sum())
        k = min(1 + math.floor(float(u[b, 1]) * max_points), n - 2)
        rows = list(range(valid.shape[1]))
        if float(u[b, 0]) < fraction and k >= 1:
            real = [j for j in rows if valid[b, j]]
            s = 1 + math.floor(float(u[b, 2]) * max(n - 1 - k, 1))
            gone = set(real[s:s + k])
            if drop_max > 0:
                p = float(u[b, 3]) * drop_max
                gone |= {j for j in real[1:-1] if float(u_drop[b, j]) < p}
            assert real[0] not in gone and real[-1] not in gone
            rows = [j for j in rows if j not in gone]
        for new, j in enumerate(rows):
            for key, v in (("values", values), ("time", time), ("flux_err", err), ("valid", valid)):
                out[key][b, new] = v[b, j]
    return out


def test_close_gap_equals_the_window_closed_by_hand():
    """Rows: full, padded, with an invalid point inside, too short to cut (2 real points), not
    chosen (u0 >= fraction), the longest cut (k capped at n - 2), the cut at the last place."""
    B, L = 7, 12
    gen = torch.Generator().manual_seed(3)
    n_real = torch.tensor([12, 9, 10, 2, 12, 6, 11])
    valid = torch.arange(L) < n_real[:, None]
    valid[2, 4] = False  # an invalid point inside a window stays in place (not real, never cut)
    time = torch.where(valid, torch.cumsum(0.5 + torch.rand(B, L, generator=gen), 1), 0.0)
    values = torch.where(valid, torch.randn(B, L, generator=gen), 0.0)
    err = torch.where(valid, torch.rand(B, L, generator=gen), 0.0)
    u = torch.tensor([[0.1, 0.30, 0.5], [0.2, 0.00, 0.0], [0.3, 0.45, 0.3], [0.0, 0.5, 0.5],
                      [0.7, 0.50, 0.5], [0.0, 0.99, 0.9], [0.4, 0.20, 0.999]], dtype=torch.float64)
    batch = {"values": values, "time": time, "flux_err": err, "valid": valid, "index": torch.arange(B) + 40}
    out = close_gap(batch, u, fraction=0.5, max_points=8)
    want = closed_by_hand(values, time, err, valid, u, 0.5, 8)
    for key in want:
        assert torch.equal(out[key], want[key]), key
    assert torch.equal(out["index"], batch["index"])
    cut = valid.sum(1) - out["valid"].sum(1)
    assert cut.tolist() == [3, 1, 4, 0, 0, 4, 2]  # k = 1 + floor(u1 * 8), at most n - 2
    # the first and last real times stay: the window's span is kept, a gap opened inside
    for b in range(B):
        real_t = time[b][valid[b]]
        assert out["time"][b][out["valid"][b]][[0, -1]].tolist() == real_t[[0, -1]].tolist()
    # the batch itself is not changed in place
    assert torch.equal(batch["valid"], valid) and torch.equal(batch["values"], values)


def test_close_gap_with_scattered_losses_equals_the_window_closed_by_hand():
    """drop_max: the chosen rows also lose single interior real points where u_drop < u3 ·
    drop_max (never the first or last, nor in rows not chosen); u3 = 0 gives the run cut alone."""
    B, L = 6, 40
    gen = torch.Generator().manual_seed(5)
    n_real = torch.tensor([40, 31, 40, 2, 40, 25])
    valid = torch.arange(L) < n_real[:, None]
    valid[2, 17] = False
    time = torch.where(valid, torch.cumsum(0.5 + torch.rand(B, L, generator=gen), 1), 0.0)
    values = torch.where(valid, torch.randn(B, L, generator=gen), 0.0)
    err = torch.where(valid, torch.rand(B, L, generator=gen), 0.0)
    u = torch.tensor([[0.1, 0.30, 0.5, 0.9], [0.2, 0.0, 0.0, 0.5], [0.3, 0.45, 0.3, 0.99], [0.0, 0.5, 0.5, 0.9],
                      [0.7, 0.5, 0.5, 0.9], [0.4, 0.2, 0.999, 0.0]], dtype=torch.float64)
    u_drop = torch.rand(B, L, generator=gen, dtype=torch.float64)
    u_drop[0, 0] = u_drop[0, 39] = 0.0  # the ends stay even when their draw says drop
    batch = {"values": values, "time": time, "flux_err": err, "valid": valid, "index": torch.arange(B)}
    out = close_gap(batch, u, fraction=0.5, max_points=8, drop_max=0.4, u_drop=u_drop)
    want = closed_by_hand(values, time, err, valid, u, 0.5, 8, drop_max=0.4, u_drop=u_drop)
    for key in want:
        assert torch.equal(out[key], want[key]), key
    lost = (valid.sum(1) - out["valid"].sum(1)).tolist()
    run_only = (valid.sum(1) - close_gap(batch, u[:, :3], fraction=0.5, max_points=8)["valid"].sum(1)).tolist()
    assert lost[3:5] == [0, 0] and lost[5] == run_only[5] == 2  # too short, not chosen, rate 0
    assert all(a > r for a, r in zip(lost[:3], run_only[:3]))  # rates 0.36, 0.2, 0.4: more points go
    for b in range(B):
        real_t = time[b][valid[b]]
        assert out["time"][b][out["valid"][b]][[0, -1]].tolist() == real_t[[0, -1]].tolist()
