"""HDF5 formats: round trips, atomic writes, and the errors users meet."""

import h5py
import numpy as np
import pytest

from lcgen.errors import LcgenError
from lcgen.io import RawWriter, atomic_h5, describe, open_checked, partial_path, read_config, read_raw, write_header
from tests.conftest import write_sine_raw


def test_raw_round_trip_in_chunks(tmp_path):
    path = tmp_path / "raw.h5"
    rng = np.random.default_rng(1)
    curves = [np.sort(rng.uniform(0, 50, n)) for n in (5, 9, 1, 30)]
    with RawWriter(path, {"seed": 3}) as w:
        for chunk in (curves[:2], curves[2:]):
            w.append(chunk, [c * 2 for c in chunk], [c * 0 + 0.5 for c in chunk], None,
                     {"lc_type": ["a", "b"], "period": [1.5, np.nan]})
    raw = read_raw(path)
    assert len(raw) == 4
    np.testing.assert_array_equal(raw.offsets, [0, 5, 14, 15, 45])
    for i, c in enumerate(curves):
        t, f, e = raw.curve(i)
        np.testing.assert_array_equal(t, c)  # float64 times are exact
        np.testing.assert_allclose(f, 2 * c, rtol=1e-6)
        np.testing.assert_array_equal(e, 0.5)
    assert raw.signal is None
    assert list(raw.meta["lc_type"]) == ["a", "b", "a", "b"]
    np.testing.assert_array_equal(raw.meta["period"], [1.5, np.nan, 1.5, np.nan])
    assert raw.config == {"seed": 3} == read_config(path)
    with h5py.File(path) as f:
        assert f.attrs["format"] == "raw" and f.attrs["format_version"] == 1


def test_writer_exception_leaves_nothing_under_final_name(tmp_path):
    path = tmp_path / "raw.h5"
    with pytest.raises(KeyboardInterrupt):
        with RawWriter(path) as w:
            w.append([np.arange(3.0)], [np.ones(3)], [np.ones(3)])
            raise KeyboardInterrupt
    assert not path.exists() and not partial_path(path).exists()


def test_atomic_h5_renames_only_on_success(tmp_path):
    path = tmp_path / "x.h5"
    with atomic_h5(path) as f:
        write_header(f, "spectra", {"a": 1})
        assert partial_path(path).exists() and not path.exists()
    assert path.exists() and not partial_path(path).exists()


def test_open_checked_errors(tmp_path, raw_file):
    with pytest.raises(LcgenError, match=r"missing\.h5 does not exist; make one with `lcgen generate`"):
        open_checked(tmp_path / "missing.h5", "raw")
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(LcgenError, match="is not an HDF5 file"):
        open_checked(text, "raw")
    with pytest.raises(LcgenError, match="is a directory"):
        open_checked(tmp_path, "raw")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = [1]
    with pytest.raises(LcgenError, match="is not an lcgen file"):
        open_checked(foreign, "raw")
    with pytest.raises(LcgenError, match="is an lcgen 'raw' file; expected a 'timeseries' file; make one with `lcgen convert`"):
        open_checked(raw_file, "timeseries")
    with pytest.raises(LcgenError, match="lacks psd, acf; it holds flux, flux_err, meta, offsets, signal, time"):
        open_checked(raw_file, "raw", ("psd", "acf", "time"))


def test_read_raw_detects_corruption(tmp_path):
    path = tmp_path / "raw.h5"
    write_sine_raw(path, n_curves=3)
    with h5py.File(path, "a") as f:
        f["offsets"][-1] = 5
    with pytest.raises(LcgenError, match="'offsets' does not partition"):
        read_raw(path)
    write_sine_raw(path, n_curves=3)
    with h5py.File(path, "a") as f:
        del f["flux_err"]
        f["flux_err"] = np.ones(3)
    with pytest.raises(LcgenError, match="point arrays differ in length"):
        read_raw(path)


def test_writer_rejects_mismatched_lengths(tmp_path):
    with pytest.raises(ValueError, match="differ in length"):
        with RawWriter(tmp_path / "r.h5") as w:
            w.append([np.arange(3.0)], [np.ones(4)], [np.ones(3)])
    assert not (tmp_path / "r.h5").exists()


def test_describe_counts_and_ranges(raw_file):
    d = describe(raw_file)
    assert d["format"] == "raw" and d["n_curves"] == 6
    rows = {r["name"]: r for r in d["datasets"]}
    raw = read_raw(raw_file)
    assert rows["time"]["min"] == raw.time.min() and rows["time"]["max"] == raw.time.max()
    assert rows["meta/lc_type"]["values"] == {"sinusoid": 6}
    assert "made_by: tests" in d["config"]


def test_raw_reader_slices_match_the_whole_file(raw_file):
    from lcgen.io import RawReader

    whole = read_raw(raw_file)
    with RawReader(raw_file) as reader:
        assert len(reader) == len(whole) == 6
        for start, stop in ((0, 2), (2, 5), (5, 6), (4, 99)):
            part = reader.read(start, stop)
            assert len(part) == min(stop, 6) - start and part.offsets[0] == 0
            for i in range(len(part)):
                for got, want in zip(part.curve(i), whole.curve(start + i)):
                    np.testing.assert_array_equal(got, want)
                np.testing.assert_array_equal(part.signal[part.span(i)], whole.signal[whole.span(start + i)])
            np.testing.assert_array_equal(part.meta["lc_type"], whole.meta["lc_type"][start:stop])
    assert len(read_raw(raw_file, 1, 3)) == 2


def test_raw_chunks_fit_the_data(tmp_path):
    """A handful of curves makes a small file (fixed 65,536-element chunks made 5 curves 16 MB),
    and a catalogue still gets large chunks."""
    write_sine_raw(tmp_path / "small.h5", n_curves=5, n_range=(400, 500))
    assert (tmp_path / "small.h5").stat().st_size < 200_000
    with h5py.File(tmp_path / "small.h5") as f:
        assert f["time"].chunks == (4096,) and f["meta/period"].chunks == (64,)
    rng = np.random.default_rng(0)
    t = [np.sort(rng.uniform(0, 1, 300)) for _ in range(1000)]
    with RawWriter(tmp_path / "big.h5") as w:
        w.append(t, t, t)
    with h5py.File(tmp_path / "big.h5") as f:
        assert f["time"].chunks == (65536,) and f["offsets"].chunks == (1024,)


def test_same_file_through_links(tmp_path):
    from lcgen.io import check_output

    (tmp_path / "a.h5").write_bytes(b"x")
    (tmp_path / "sym.h5").symlink_to(tmp_path / "a.h5")
    for spelling in (tmp_path / "a.h5", tmp_path / "sym.h5", tmp_path / "d" / ".." / "a.h5"):
        with pytest.raises(LcgenError, match="is the input file"):
            check_output(spelling, inputs=[tmp_path / "a.h5"])
    assert check_output(tmp_path / "b.h5", inputs=[tmp_path / "a.h5"]) == tmp_path / "b.h5"


@pytest.mark.parametrize("rows_per_write", [1, 3, 10**6])
def test_raw_writer_gathers_per_curve_rows_whatever_the_flush(tmp_path, monkeypatch, rows_per_write):
    """Per-curve rows (offsets, meta) are written every ROWS_PER_WRITE curves and at the end;
    the file is the same for any setting, appends of packed curves included, and a meta column
    whose dtype changes between appends is converted by HDF5 as when each append was written."""
    import lcgen.io as io

    monkeypatch.setattr(io, "ROWS_PER_WRITE", rows_per_write)
    rng = np.random.default_rng(4)
    curves = [rng.random(n) for n in (3, 1, 7, 2, 5)]
    path = tmp_path / "raw.h5"
    with RawWriter(path, {"seed": 1}) as w:
        w.append(curves[:2], curves[:2], curves[:2], curves[:2], {"kind": ["a", "bb"], "n": np.array([1, 2])})
        packed = np.concatenate(curves[2:4])
        w.append_packed([7, 2], {"time": packed, "flux": packed, "flux_err": packed, "signal": packed},
                        {"kind": ["ccc", "d"], "n": np.array([3.0, 4.7])})  # float into the int column
        w.append(curves[4:], curves[4:], curves[4:], curves[4:], {"kind": ["e"], "n": np.array([5])})
        with pytest.raises(ValueError, match="lengths.sum"):
            w.append_packed([2], {"time": np.zeros(3), "flux": np.zeros(3), "flux_err": np.zeros(3),
                                  "signal": np.zeros(3)})
    raw = read_raw(path)
    np.testing.assert_array_equal(raw.offsets, [0, 3, 4, 11, 13, 18])
    for i, c in enumerate(curves):
        np.testing.assert_array_equal(raw.curve(i)[0], c)
    assert list(raw.meta["kind"]) == ["a", "bb", "ccc", "d", "e"]
    assert raw.meta["n"].dtype == np.int64 and raw.meta["n"].tolist() == [1, 2, 3, 4, 5]


def test_a_write_failing_at_the_end_removes_the_partial_file(tmp_path, monkeypatch):
    """The gathered per-curve rows are written as the writer closes: a full disk there is the
    same one-line error as anywhere else, and nothing is left under either name."""
    import errno

    import lcgen.io as io

    path = tmp_path / "raw.h5"
    real = io.append_rows

    def full(ds, values):
        if ds.name == "/offsets":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(ds, values)

    monkeypatch.setattr(io, "append_rows", full)
    with pytest.raises(LcgenError, match=r"writing .*raw\.h5"):
        with RawWriter(path, {"seed": 1}) as w:
            w.append([np.arange(3.0)], [np.ones(3)], [np.ones(3)], meta={"n": [1]})
    assert not path.exists() and not partial_path(path).exists()
