"""Raw → time-series windows: cleaning, windowing, invertible normalisation."""

import h5py
import numpy as np
import pytest

from lcgen.features.convert import ConvertConfig, clean_curve, convert, robust_scale
from lcgen.errors import LcgenError
from lcgen.io import RawWriter, open_checked, read_config
from tests.conftest import write_sine_raw


def test_windows_cover_every_point_and_invert_exactly(tmp_path):
    raw_path, out = tmp_path / "raw.h5", tmp_path / "ts.h5"
    times, fluxes, errors, signals, _ = write_sine_raw(raw_path, n_curves=5, n_range=(300, 1400))
    result = convert(ConvertConfig(input=str(raw_path), output=str(out), max_length=256, min_points=1))
    with open_checked(out, "timeseries", ("flux", "time", "mask", "median", "iqr", "source")) as f:
        flux, time, mask = f["flux"][:], f["time"][:], f["mask"][:]
        med, iqr, source, start, t0 = f["median"][:], f["iqr"][:], f["source"][:], f["start"][:], f["t0"][:]
        err, signal = f["flux_err"][:], f["signal"][:]
        lc_type = f["meta/lc_type"].asstr()[:]
    assert flux.shape[1] == 256 and result["windows"] == len(flux)
    # every point of every curve lands in exactly one window (strategy "window" drops nothing)
    assert mask.sum() == sum(len(t) for t in times)
    for row in range(len(flux)):
        i, s, n = source[row], start[row], mask[row].sum()
        assert mask[row, :n].all() and not mask[row, n:].any()  # real points first, then padding
        np.testing.assert_allclose(flux[row, :n] * iqr[row] + med[row], np.float32(fluxes[i][s:s + n]), rtol=1e-6)
        np.testing.assert_allclose(err[row, :n] * iqr[row], np.float32(errors[i][s:s + n]), rtol=1e-5)
        np.testing.assert_allclose(signal[row, :n] * iqr[row] + med[row], np.float32(signals[i][s:s + n]), rtol=1e-6)
        np.testing.assert_allclose(time[row, :n] + t0[row], times[i][s:s + n], atol=1e-4)
        assert time[row, 0] == 0
        assert (flux[row, n:] == 0).all() and (time[row, n:] == 0).all()
        # median-centred and IQR-scaled: the window's median is 0 and its IQR 1
        q25, q50, q75 = np.percentile(flux[row, :n].astype(np.float64), [25, 50, 75])
        assert abs(q50) < 1e-5 and abs(q75 - q25 - 1) < 1e-4
    assert set(lc_type) == {"sinusoid"}
    assert read_config(out)["max_length"] == 256


def test_truncate_keeps_first_window_only(tmp_path):
    raw_path, out = tmp_path / "raw.h5", tmp_path / "ts.h5"
    write_sine_raw(raw_path, n_curves=4, n_range=(600, 900))
    convert(ConvertConfig(input=str(raw_path), output=str(out), max_length=512, strategy="truncate"))
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["source"][:], [0, 1, 2, 3])
        assert f["mask"][:].all()


def test_min_points_drops_short_windows(tmp_path):
    raw_path, out = tmp_path / "raw.h5", tmp_path / "ts.h5"
    with RawWriter(raw_path) as w:
        ts = [np.arange(100.0), np.arange(10.0)]
        w.append(ts, [np.sin(t) for t in ts], [t * 0 + 1 for t in ts])
    result = convert(ConvertConfig(input=str(raw_path), output=str(out), max_length=64, min_points=20))
    # curve 0 → windows of 64 and 36 points; curve 1 (10 points) is too short
    assert result["windows"] == 2 and result["too_short"] == 1
    with RawWriter(raw_path) as w:
        w.append([np.arange(10.0)], [np.ones(10)], [np.ones(10)])
    with pytest.raises(LcgenError, match="no window has at least min_points=20"):
        convert(ConvertConfig(input=str(raw_path), output=str(tmp_path / "x.h5"), max_length=64, min_points=20))
    assert not (tmp_path / "x.h5").exists()


def test_short_tail_becomes_an_end_aligned_window(tmp_path):
    raw_path, out = tmp_path / "raw.h5", tmp_path / "ts.h5"
    t = np.arange(100.0)
    with RawWriter(raw_path) as w:
        w.append([t], [np.sin(t)], [t * 0 + 0.1])
    result = convert(ConvertConfig(input=str(raw_path), output=str(out), max_length=64, min_points=40))
    # 100 points: [0, 64) and, since a 36-point tail is under min_points, [36, 100) (overlapping)
    assert result["windows"] == 2 and result["too_short"] == 0
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["start"][:], [0, 36])
        assert f["mask"][:].all()
        np.testing.assert_allclose(f["time"][1], np.arange(64.0))
        np.testing.assert_allclose(f["t0"][:], [0.0, 36.0])


def test_clean_curve_counts_and_merges():
    t = np.array([3.0, 1.0, 2.0, 2.0, np.nan, 5.0])
    y = np.array([3.0, 1.0, 2.0, 4.0, 9.0, np.inf])
    e = np.array([1.0, 1.0, 3.0, 4.0, 1.0, 1.0])
    t2, y2, e2, counts = clean_curve(t, y, e)
    np.testing.assert_array_equal(t2, [1, 2, 3])
    np.testing.assert_array_equal(y2, [1, 3, 3])  # the two points at t=2 averaged
    np.testing.assert_allclose(e2, [1, 2.5, 1])  # sqrt(3² + 4²) / 2
    assert (counts.non_finite, counts.unsorted_curves, counts.duplicates_merged) == (2, 1, 1)


def test_robust_scale_never_divides_by_zero():
    assert robust_scale(np.array([5.0, 5.0, 5.0])) == (5.0, 1.0)
    med, iqr = robust_scale(np.array([0.0, 0.0, 0.0, 0.0, 10.0]))
    assert med == 0 and iqr == pytest.approx(4.0)  # IQR 0 → falls back to the std


def test_convert_streams_the_input_and_compression_changes_no_value(tmp_path, monkeypatch):
    """Any chunk size, with or without compression: the same rows; no read holds more than one
    chunk of curves."""
    import lcgen.features.convert as conv
    from lcgen.io import RawReader

    raw_path = tmp_path / "raw.h5"
    write_sine_raw(raw_path, n_curves=7, n_range=(100, 400))
    whole = tmp_path / "whole.h5"
    convert(ConvertConfig(input=str(raw_path), output=str(whole), max_length=64))
    real_read, sizes = RawReader.read, []

    def recording_read(self, start, stop):
        sizes.append(min(stop, len(self)) - start)
        return real_read(self, start, stop)

    monkeypatch.setattr(RawReader, "read", recording_read)
    monkeypatch.setattr(conv, "CHUNK_CURVES", 3)
    for compression in ("none", "gzip", "lzf"):
        out = tmp_path / f"{compression}.h5"
        convert(ConvertConfig(input=str(raw_path), output=str(out), max_length=64, compression=compression))
        with h5py.File(whole) as a, h5py.File(out) as b:
            assert b["flux"].compression == (None if compression == "none" else compression)
            for key in ("flux", "flux_err", "time", "mask", "signal", "median", "iqr", "source", "start"):
                np.testing.assert_array_equal(a[key][:], b[key][:], err_msg=key)
            np.testing.assert_array_equal(a["meta/lc_type"].asstr()[:], b["meta/lc_type"].asstr()[:])
            np.testing.assert_array_equal(a["meta/period"][:], b["meta/period"][:])
    assert sizes == [3, 3, 1] * 3
