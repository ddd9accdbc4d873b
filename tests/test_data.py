"""Batches from the HDF5 files: exact contents, order, resumable epochs, bounded reads, splits."""

import h5py
import numpy as np
import pytest
import torch

from lcgen.features.convert import ConvertConfig, convert
from lcgen.train.data import (CHANNELS, SpectraSource, TimeSeriesSource, batch_order, iter_batches,
                        load_split, read_rows, save_split, split_rows)
from lcgen.errors import LcgenError
from lcgen.io import atomic_h5, write_header
from tests.conftest import write_sine_raw


def write_spectra(path, n=40, length=64, seed=0, failed=(), nan_at=None):
    """A small spectra file with the keys lcgen preprocess writes, from a seed.

    Row i is valid on frequency bins [lo_i, hi_i) (``mask``, for psd and fstat) and on lags
    [0, hi_i - lo_i) (``acf_mask``); rows in ``failed`` are flagged as failed and hold NaN.
    Returns (data by channel, masks by channel, failed).
    """
    rng = np.random.default_rng(seed)
    data = {c: rng.standard_normal((n, length)).astype(np.float32) for c in CHANNELS}
    lo = rng.integers(0, length // 4, n)
    hi = rng.integers(length // 2, length + 1, n)
    bins = np.arange(length)
    freq_mask = (bins >= lo[:, None]) & (bins < hi[:, None])  # (n, L)
    acf_mask = bins < (hi - lo)[:, None]
    is_failed = np.zeros(n, bool)
    is_failed[list(failed)] = True
    freq_mask[is_failed] = acf_mask[is_failed] = False
    for c in CHANNELS:
        data[c][is_failed] = np.nan
    if nan_at is not None:
        data["psd"][nan_at] = np.nan
    with atomic_h5(path) as f:
        write_header(f, "spectra", {"made_by": "tests"})
        for c in CHANNELS:
            f.create_dataset(c, data=data[c], chunks=(8, length))
            for const in ("scale", "mean", "std"):
                f.create_dataset(f"{c}_{const}", data=np.ones(n))
        f.create_dataset("mask", data=freq_mask, chunks=(8, length))
        f.create_dataset("acf_mask", data=acf_mask, chunks=(8, length))
        f["frequency"] = np.geomspace(0.01, 5, length)
        f["lag"] = np.linspace(0, 100, length)
        f["failed"] = is_failed
        f["source"] = np.arange(n)
    masks = {"psd": freq_mask, "fstat": freq_mask, "acf": acf_mask}
    return data, masks, is_failed


def write_timeseries(tmp_path, n_curves=8, length=64, seed=0, n_range=(60, 300)):
    raw, out = tmp_path / f"raw{seed}.h5", tmp_path / f"ts{seed}.h5"
    write_sine_raw(raw, n_curves=n_curves, seed=seed, n_range=n_range)
    convert(ConvertConfig(input=str(raw), output=str(out), max_length=length, min_points=8))
    return out


@pytest.fixture
def ts_file(tmp_path):
    return write_timeseries(tmp_path)


def test_read_rows_matches_fancy_indexing(tmp_path):
    x = np.arange(5000 * 3, dtype=np.float32).reshape(5000, 3)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        ds = f.create_dataset("x", data=x, chunks=(64, 3))
        for rows in (np.array([7]), np.arange(100, 400), np.array([0, 3, 64, 65, 1000, 4999]),
                     np.sort(np.random.default_rng(1).choice(5000, 300, replace=False))):
            np.testing.assert_array_equal(read_rows(ds, rows), x[rows])
        assert read_rows(ds, np.array([], np.int64)).shape == (0, 3)


def test_timeseries_batches_hold_the_file_rows(ts_file):
    with h5py.File(ts_file) as f:
        flux, time, mask = f["flux"][:], f["time"][:], f["mask"][:]
    with TimeSeriesSource(ts_file) as src:
        rows = np.arange(len(src))
        batches = list(iter_batches(src, rows, 5, shuffle=True, seed=3, epoch=1, buffer_rows=7))
    index = torch.cat([b["index"] for b in batches]).numpy()
    assert sorted(index.tolist()) == rows.tolist()  # every row exactly once
    assert [len(b["index"]) for b in batches] == [5] * (len(rows) // 5) + ([len(rows) % 5] if len(rows) % 5 else [])
    for b in batches:
        i = b["index"].numpy()
        np.testing.assert_array_equal(b["values"].numpy(), flux[i])
        np.testing.assert_array_equal(b["valid"].numpy(), mask[i])
        np.testing.assert_array_equal(b["time"].numpy(), time[i])
        assert b["values"].dtype == torch.float32 and b["valid"].dtype == torch.bool
        assert b["index"].dtype == torch.int64


def test_order_is_seeded_per_epoch_and_an_epoch_restarts_at_any_batch(ts_file):
    rows = np.arange(3, 40)
    a, _ = batch_order(rows, shuffle=True, seed=1, epoch=0, block_rows=4, buffer_rows=12)
    b, _ = batch_order(rows, shuffle=True, seed=1, epoch=0, block_rows=4, buffer_rows=12)
    c, _ = batch_order(rows, shuffle=True, seed=1, epoch=1, block_rows=4, buffer_rows=12)
    np.testing.assert_array_equal(a, b)
    assert sorted(a) == list(rows) and not np.array_equal(a, c) and not np.array_equal(a, rows)
    plain, bounds = batch_order(rows, shuffle=False, buffer_rows=10)
    np.testing.assert_array_equal(plain, rows)
    np.testing.assert_array_equal(bounds, [0, 10, 20, 30, 37])
    with TimeSeriesSource(ts_file) as src:
        rows = np.arange(len(src))
        full = [b["index"] for b in iter_batches(src, rows, 4, shuffle=True, seed=2, epoch=5, buffer_rows=6)]
        tail = [b["index"] for b in iter_batches(src, rows, 4, shuffle=True, seed=2, epoch=5, buffer_rows=6,
                                                 start_batch=3)]
    assert len(tail) == len(full) - 3
    for x, y in zip(full[3:], tail):
        torch.testing.assert_close(x, y)


def test_reads_are_bounded_by_the_buffer_and_skipped_batches_are_not_read(ts_file):
    with TimeSeriesSource(ts_file) as src:
        calls = []
        read = src.read
        src.read = lambda rows: calls.append(len(rows)) or read(rows)
        rows = np.arange(len(src))
        list(iter_batches(src, rows, 4, shuffle=True, buffer_rows=8))
        assert max(calls) <= 8 and sum(calls) == len(rows)
        calls.clear()
        n = -(-len(rows) // 4)
        list(iter_batches(src, rows, 4, shuffle=False, buffer_rows=8, start_batch=n - 1))
        assert sum(calls) <= 8  # only the buffer holding the last batch


def test_spectra_channel_mask_and_failed_rows(tmp_path):
    path = tmp_path / "spec.h5"
    data, masks, failed = write_spectra(path, failed=(2, 5))
    for channel in CHANNELS:
        with SpectraSource(path, channel) as src:
            np.testing.assert_array_equal(src.usable, np.flatnonzero(~failed))
            (b,) = list(iter_batches(src, src.usable, 100))
            i = b["index"].numpy()
            valid = masks[channel][i]
            np.testing.assert_array_equal(b["valid"].numpy(), valid)
            np.testing.assert_array_equal(b["values"].numpy(), np.where(valid, data[channel][i], 0))
            assert src.statistics(src.usable)["non_finite"] == 0  # failed rows are never read
    assert not np.array_equal(masks["acf"], masks["psd"])
    with pytest.raises(LcgenError, match="channel 'flux' is not one of psd, acf, fstat"):
        SpectraSource(path, "flux")


def test_non_finite_values_become_missing_and_are_counted(tmp_path):
    path = tmp_path / "spec.h5"
    data, masks, _ = write_spectra(path, nan_at=(slice(0, 3), slice(None)))
    mask = masks["psd"]
    with SpectraSource(path, "psd") as src:
        stats = src.statistics(src.usable)
        (b,) = list(iter_batches(src, src.usable, 100))
    assert not b["valid"][:3].any() and torch.isfinite(b["values"]).all()
    assert stats["non_finite"] == mask[:3].sum()
    good = data["psd"][3:][mask[3:]].astype(np.float64)
    assert stats["min"] == pytest.approx(good.min()) and stats["max"] == pytest.approx(good.max())
    assert stats["mean"] == pytest.approx(good.mean()) and stats["std"] == pytest.approx(good.std())


def test_split_keeps_groups_together_and_is_seeded(tmp_path):
    groups = np.repeat(np.arange(50), 3)  # 50 curves, 3 windows each
    usable = np.setdiff1d(np.arange(150), [4, 77])
    s = split_rows(groups, usable, val_fraction=0.1, test_fraction=0.2, seed=7)
    assert {k: len(np.unique(groups[v])) for k, v in s.items()} == {"train": 35, "val": 5, "test": 10}
    sets = [set(groups[s[k]]) for k in ("train", "val", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    np.testing.assert_array_equal(np.sort(np.concatenate(list(s.values()))), usable)
    again = split_rows(groups, usable, val_fraction=0.1, test_fraction=0.2, seed=7)
    other = split_rows(groups, usable, val_fraction=0.1, test_fraction=0.2, seed=8)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    assert not np.array_equal(s["test"], other["test"])
    save_split(tmp_path / "split.npz", s, 150)
    loaded = load_split(tmp_path)
    assert int(loaded["n_rows"]) == 150 and all(np.array_equal(s[k], loaded[k]) for k in s)
    # tiny data still gets one validation and one test curve
    assert [len(v) for v in split_rows(np.arange(3)).values()] == [1, 1, 1]
    assert [len(v) for v in split_rows(np.zeros(5, int), val_fraction=0, test_fraction=0).values()] == [5, 0, 0]
    with pytest.raises(LcgenError, match="only 1 light curve.*needs at least 3"):  # one curve is no split
        split_rows(np.zeros(5, int))
    assert [len(v) for v in split_rows(np.arange(2), test_fraction=0).values()] == [1, 1, 0]
    with pytest.raises(LcgenError, match="only 2 light curve.*needs at least 3"):
        split_rows(np.arange(2), val_fraction=0.5, test_fraction=0.45)
    with pytest.raises(LcgenError, match="leaves no training data"):
        split_rows(groups, val_fraction=0.5, test_fraction=0.5)


def test_timeseries_windows_of_one_curve_share_a_split(tmp_path):
    path = write_timeseries(tmp_path, n_curves=10, length=32, n_range=(100, 200))
    with TimeSeriesSource(path) as src:
        s = split_rows(src.groups, src.usable, seed=0)
        source = src.groups
    assert len(source) > 10  # several windows per curve
    owners = {}
    for k, rows in s.items():
        for curve in source[rows]:
            assert owners.setdefault(int(curve), k) == k
