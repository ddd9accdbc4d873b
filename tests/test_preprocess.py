"""`lcgen preprocess` end to end on raw files written from seeded curves."""

import collections
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from lcgen.features import multitaper as mt
from lcgen.cli import app
from lcgen.errors import LcgenError
from lcgen.io import RawWriter, partial_path
from lcgen.features import preprocess as pp
from lcgen.features.convert import clean_curve
from lcgen.features.preprocess import (PreprocessConfig, invert_normalisation, merge_shards, normalise,
                              physical_features, preprocess, shard_path)

ROOT = Path(__file__).resolve().parents[1]
N_CURVES = 36
SHORT, CONSTANT, DIRTY = 3, 7, 11  # special rows of the fixture


def make_curves(seed=0):
    """Mock-like curves: regular and random sampling, sines and red noise, flux ~ 10."""
    rng = np.random.default_rng(seed)
    times, fluxes, errors = [], [], []
    for i in range(N_CURVES):
        n = int(rng.integers(120, 300))
        span = rng.uniform(40, 200)
        t = np.linspace(0.0, span, n) if i % 3 == 0 else np.sort(rng.uniform(0.0, span, n))
        y = 10 + np.sin(2 * np.pi * t / rng.uniform(2, 30)) + 0.3 * np.cumsum(rng.normal(size=n)) / np.sqrt(n)
        y += rng.normal(0, 0.2, n)
        times.append(t)
        fluxes.append(y.astype(np.float32))
        errors.append(np.full(n, 0.2, np.float32))
    times[SHORT], fluxes[SHORT], errors[SHORT] = times[SHORT][:20], fluxes[SHORT][:20], errors[SHORT][:20]
    fluxes[CONSTANT][:] = 4.0
    # dirty curve: 3 NaN fluxes, 2 duplicated times, 4 wild outliers, shuffled order
    t, y = times[DIRTY].copy(), fluxes[DIRTY].copy()
    y[[5, 50, 90]] = np.nan
    t[[21, 61]] = t[[20, 60]]
    y[[30, 70, 100, 110]] += np.float32(500.0)
    order = rng.permutation(t.size)
    times[DIRTY], fluxes[DIRTY], errors[DIRTY] = t[order], y[order], errors[DIRTY][order]
    return times, fluxes, errors


@pytest.fixture(scope="module")
def raw_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("raw") / "raw.h5"
    times, fluxes, errors = make_curves()
    with RawWriter(path, {"test": True}) as w:
        w.append(times, fluxes, errors, meta={"lc_type": ["sine"] * N_CURVES, "period": np.arange(N_CURVES, dtype=float)})
    return path


@pytest.fixture(scope="module")
def full_run(raw_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "pre.h5"
    summary = preprocess(PreprocessConfig(input=str(raw_file), output=str(out), workers=1, chunk_size=8))
    return out, summary


def read_all(path):
    with h5py.File(path, "r") as f:
        data = {}
        f.visititems(lambda name, obj: data.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        return data


def assert_same_files(a, b):
    da, db = read_all(a), read_all(b)
    assert sorted(da) == sorted(db)
    for key in da:
        if da[key].dtype.kind == "f":
            assert np.array_equal(da[key], db[key], equal_nan=True), key
        else:
            assert np.array_equal(da[key], db[key]), key


def test_outputs_have_the_documented_shapes_and_one_shared_grid(full_run, raw_file):
    out, summary = full_run
    times, _, _ = make_curves()
    with h5py.File(out, "r") as f:
        assert f.attrs["format"] == "spectra" and "nw: 4.0" in f.attrs["config"]
        for key in ("psd", "acf", "fstat", "pvalue", "mask", "acf_mask"):
            assert f[key].shape == (N_CURVES, 1024), key
        assert f["psd"].dtype == np.float32 and f["mask"].dtype == bool
        freq, lag = f["frequency"][:], f["lag"][:]
        assert freq.shape == lag.shape == (1024,)
        spans = np.array([t.max() - t.min() for t in times])
        counts = np.array([np.isfinite(t).sum() for t in times])
        analysed = counts >= 32  # min_points: the short curve does not set the grid
        # from 1/T of the longest curve to the highest Nyquist frequency of any analysed curve
        assert freq[0] == pytest.approx(1 / spans.max()) and freq[-1] == pytest.approx(np.max((counts / (2 * spans))[analysed]))
        edges = f["frequency"].attrs["edges"]
        assert edges.shape == (1025,) and np.all((edges[:-1] < freq) & (freq < edges[1:]))
        assert np.allclose(np.diff(np.log(freq)), np.log(freq[1] / freq[0]))  # log-spaced
        assert lag[0] == 0 and lag[-1] == pytest.approx(0.75 * spans.max())
        ok = ~f["failed"][:]
        mask, baseline, nyquist, n = f["mask"][:], f["baseline"][:], f["nyquist"][:], f["n_points"][:]
        # validity = bins inside [W, f_hi] of each curve: W = NW/(N Δt) = 2 NW f_N / N; f_hi = f_N,
        # or f_N − W for exactly regular curves, whose Nyquist is (N − 1)/(2T) (not N/(2T))
        regular = np.isclose(nyquist, (n - 1) / (2 * baseline), rtol=1e-9)
        assert regular[ok].sum() == len(range(0, N_CURVES, 3)) - 1  # every third curve; the short one failed
        w = 2 * 4.0 * nyquist / n
        f_hi = np.where(regular, nyquist - w, nyquist)
        expected = (freq[None] >= w[:, None]) & (freq[None] <= f_hi[:, None])
        assert np.array_equal(mask[ok], expected[ok])
        assert np.all(f["band_kept"][:][ok] == 1.0)  # the default grid covers every curve's band
        for key, m in (("psd", mask), ("fstat", mask), ("acf", f["acf_mask"][:])):
            z = f[key][:][ok]
            mk = m[ok]
            assert np.all(z[~mk] == 0) and np.all(np.isfinite(z))
            assert np.allclose([row[r].mean() for row, r in zip(z, mk)], 0, atol=1e-5)
            assert np.allclose([row[r].std() for row, r in zip(z, mk)], 1, atol=1e-4)
        assert f["meta/lc_type"].asstr()[0] == "sine" and f["meta/period"][5] == 5.0
        assert np.array_equal(f["source"][:], np.arange(N_CURVES))
    assert summary["curves"] == N_CURVES and summary["analysed"] == N_CURVES - 2


def test_failed_curves_are_recorded_never_zeros(full_run):
    out, summary = full_run
    with h5py.File(out, "r") as f:
        failed = f["failed"][:]
        assert np.flatnonzero(failed).tolist() == [SHORT, CONSTANT]
        reasons = f["fail_reason"].asstr()[:]
        assert "only 20 finite points" in reasons[SHORT] and f["n_points"][SHORT] == 20
        assert "interquartile range" in reasons[CONSTANT]
        assert reasons[~failed].tolist() == [""] * (N_CURVES - 2)
        for key in ("psd", "acf", "fstat", "pvalue"):
            assert np.all(np.isnan(f[key][:][failed])), key
        assert not f["mask"][:][failed].any() and not f["acf_mask"][:][failed].any()
    assert summary["failed"] == 2 and sum(summary["fail_reasons"].values()) == 2



def test_curves_analysed_together_equal_one_at_a_time(raw_file, monkeypatch):
    # process_chunk analyses its curves in batches (analyse_curves); every row, failed ones
    # included, must be what analyse_curve gives the curve alone, across batch boundaries, and
    # when the shared spectral step fails the batch falls back to one curve at a time.
    from lcgen.features import preprocess as pp

    times, fluxes, errors = make_curves()
    cfg = PreprocessConfig(input=str(raw_file))
    grids = pp.make_grids(cfg, *pp.survey_input(str(raw_file)))
    curves = list(zip(times, fluxes, errors))
    alone = []
    for c in curves:
        try:
            alone.append((pp.analyse_curve(*c, grids, cfg), ""))
        except pp._Failed as exc:
            alone.append((exc.row, str(exc)))
    assert [bool(r) for _, r in alone].count(True) == 2

    def broken(*args, **kwargs):
        raise RuntimeError("shared step failed")

    monkeypatch.setattr(pp, "BATCH_CURVES", 5)
    batches = [pp.analyse_curves(curves, grids, cfg)]
    monkeypatch.setattr(pp, "BATCH_CURVES", 32)
    monkeypatch.setattr(pp, "BATCH_POINTS", 500)  # 2-4 curves a batch, by their points
    batches.append(pp.analyse_curves(curves, grids, cfg))
    monkeypatch.setattr(pp, "binned_multitaper_many", broken)
    batches.append(pp.analyse_curves(curves, grids, cfg))
    for together in batches:
        for (row, reason), (want, want_reason) in zip(together, alone, strict=True):
            assert reason == want_reason and sorted(row) == sorted(want)
            for key, value in want.items():
                assert np.array_equal(row[key], value, equal_nan=True), key


def test_the_calling_process_computes_with_one_blas_thread(raw_file, tmp_path, monkeypatch):
    # with workers=1 the chunks run in this process, under whatever BLAS threads the environment
    # gives; preprocess holds them to one (a 2-thread BLAS on busy cores stalled small products)
    from threadpoolctl import threadpool_info, threadpool_limits
    from lcgen.features import preprocess as pp

    seen = []

    def recording(*args, **kwargs):
        seen.extend(blas().values())
        return chunk(*args, **kwargs)

    chunk = pp.process_chunk
    monkeypatch.setattr(pp, "process_chunk", recording)
    blas = lambda: {lib["filepath"]: lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}  # noqa: E731
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas()
        preprocess(PreprocessConfig(input=str(raw_file), output=str(tmp_path / "pre.h5"), workers=1, chunk_size=18))
        after = blas()
        assert {lib: after[lib] for lib in before} == before  # the caller's setting is given back
    assert seen and set(seen) == {1}

KEPT_MEMORY = """
import resource, sys
import numpy as np
from lcgen.features.preprocess import PreprocessConfig, analyse_curves, make_grids
def faults_of_a_round():  # minor page faults of 8 blocks of 4 MiB held at once, then freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    held = [np.ones(2 ** 19) for _ in range(8)]
    del held
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
if sys.argv[1] == "analysed":
    t = np.linspace(0.0, 30.0, 300)
    cfg = PreprocessConfig()
    analyse_curves([(t, np.sin(t), np.ones_like(t))], make_grids(cfg, np.array([30.0]), np.array([300])), cfg)
faults_of_a_round()
print(faults_of_a_round())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: elsewhere keep_freed_memory does nothing")
def test_a_process_that_analyses_curves_keeps_freed_memory(tmp_path):
    # the batches' temporaries are a few MiB each; returned to the kernel they cost a page fault
    # per 4 KiB when touched again (~1 CPU-ms per curve on the project's VM)
    faults = {}
    for case in ("analysed", "fresh"):
        out = subprocess.run([sys.executable, "-c", KEPT_MEMORY, case], capture_output=True, text=True, check=True,
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        faults[case] = int(out.stdout.split()[-1])
    assert faults["analysed"] < 100 < 1000 < faults["fresh"]  # 0 against ~4,000 (one per 4 KiB of 32 MiB)


def test_cleaning_counts_and_robust_scaling(full_run):
    out, summary = full_run
    with h5py.File(out, "r") as f:
        assert f["n_nonfinite"][DIRTY] == 3 and f["n_duplicates"][DIRTY] == 2 and f["n_outliers"][DIRTY] == 4
        assert not f["failed"][DIRTY]
    assert summary["n_nonfinite"] == 3 and summary["n_duplicates"] == 2 and summary["n_outliers"] >= 4


def test_normalisation_inverts_to_the_multitaper_values(full_run):
    out, _ = full_run
    times, fluxes, _ = make_curves()
    i = 4  # a clean irregular curve
    t, y = times[i], fluxes[i].astype(np.float64)
    q25, med, q75 = np.percentile(y, [25, 50, 75])
    x = (y - med) / (q75 - q25)
    with h5py.File(out, "r") as f:
        freq, lag, mask, amask = f["frequency"][:], f["lag"][:], f["mask"][i], f["acf_mask"][i]
        assert f["n_outliers"][i] == 0
    res = mt.binned_multitaper(t, x, freq, mt.bin_edges(freq, log=True))
    acf = mt.autocorrelation(t, x, lag[lag <= 0.75 * (t[-1] - t[0])])
    psd = physical_features(out, "psd", i)
    fstat = physical_features(out, "fstat", i)
    acf_back = physical_features(out, "acf", i)
    assert np.allclose(psd[mask], res.psd[mask], rtol=2e-5, atol=0)
    assert np.allclose(fstat[mask], res.fstat[mask], rtol=2e-5, atol=1e-6)
    with h5py.File(out, "r") as f:
        assert np.allclose(f["pvalue"][i][mask], res.pvalue[mask], rtol=1e-5, atol=1e-30)
    assert np.allclose(acf_back[amask], acf[amask[: acf.size]], atol=1e-5)
    assert np.isnan(psd[~mask]).all()


def test_normalise_and_invert_are_exact_inverses():
    rng = np.random.default_rng(0)
    v = np.exp(rng.normal(0, 3, 200))
    valid = rng.uniform(size=200) > 0.2
    z, mean, std = normalise(v, valid, scale=0.7)
    assert np.allclose(invert_normalisation(z, 0.7, mean, std)[valid], v[valid], rtol=1e-12)
    assert z[valid].mean() == pytest.approx(0, abs=1e-12) and z[valid].std() == pytest.approx(1)


def test_interrupted_run_resumes_to_the_same_file(raw_file, full_run, tmp_path):
    out = tmp_path / "pre.h5"
    cfg = PreprocessConfig(input=str(raw_file), output=str(out), workers=1, chunk_size=8)
    seen = []

    def kill_after_two_chunks(n):
        seen.append(n)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        preprocess(cfg, progress=kill_after_two_chunks)
    assert partial_path(out).exists() and not out.exists()
    summary = preprocess(cfg)
    assert summary["resumed_chunks"] == 2 and not partial_path(out).exists()
    assert_same_files(out, full_run[0])


def test_changed_settings_do_not_resume(raw_file, tmp_path):
    out = tmp_path / "pre.h5"
    cfg = PreprocessConfig(input=str(raw_file), output=str(out), workers=1, chunk_size=8)

    def kill(n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        preprocess(cfg, progress=kill)
    summary = preprocess(PreprocessConfig(input=str(raw_file), output=str(out), workers=1, chunk_size=8, nw=3.0))
    assert summary["resumed_chunks"] == 0


def test_shards_and_workers_give_the_same_result(raw_file, full_run, tmp_path):
    out = tmp_path / "pre.h5"
    for index, workers in ((0, 2), (1, 1)):  # a process pool for one shard, in-process for the other
        preprocess(PreprocessConfig(input=str(raw_file), output=str(out), workers=workers, chunk_size=8, shard=f"{index}/2"))
    assert shard_path(out, 1, 2).exists() and not out.exists()
    summary = merge_shards(out, 2)
    assert summary["curves"] == N_CURVES and summary["failed"] == 2
    merged, full = read_all(out), read_all(full_run[0])
    for key in full:
        if full[key].dtype.kind == "f":
            assert np.array_equal(merged[key], full[key], equal_nan=True), key
        else:
            assert np.array_equal(merged[key], full[key]), key


BUILDS = """
import os, sys
import lcgen.features.multitaper as mt
from lcgen.features.preprocess import PreprocessConfig, preprocess
from lcgen.workers import start_method
dpss = mt._dpss
def logged(n, nw, k):  # every DPSS built, by which process (forked workers inherit this)
    with open(sys.argv[3], "a") as f:
        f.write(f"{os.getpid()} {n}\\n")
    return dpss(n, nw, k)
mt._dpss = logged
assert start_method() == "fork"
preprocess(PreprocessConfig(input=sys.argv[1], output=sys.argv[2], workers=2, chunk_size=4))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are forked only on Linux")
def test_forked_workers_build_no_taper_twice(raw_file, full_run, tmp_path):
    # the tapers that two curves share are built once, before the fork (shared_tapers); a worker
    # builds only those that its curves alone take, and the rows are the 1-worker run's
    built, out = tmp_path / "built.txt", tmp_path / "pre.h5"
    subprocess.run([sys.executable, "-c", BUILDS, str(raw_file), str(out), str(built)], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = [line.split() for line in built.read_text().splitlines()]
    assert len({pid for pid, _ in lines}) == 2  # both processes built tapers
    assert max(collections.Counter(n for _, n in lines).values()) == 1, lines  # no length twice
    two, one = read_all(out), read_all(full_run[0])
    for key in one:
        assert np.array_equal(two[key], one[key], equal_nan=one[key].dtype.kind == "f"), key


def test_shared_tapers_are_the_keys_several_curves_take(raw_file, tmp_path, monkeypatch):
    taken = collections.Counter()
    taper_times = mt.taper_times

    def recorded(t, nw, k, *, regular=None):
        tapers = taper_times(t, nw, k, regular=regular)
        taken.update(mt.taper_cache_keys(t.size, tapers.regular))
        return tapers

    monkeypatch.setattr(mt, "taper_times", recorded)
    cfg = PreprocessConfig(input=str(raw_file), output=str(tmp_path / "pre.h5"), workers=1, chunk_size=8)
    preprocess(cfg)
    spans = [(a, min(N_CURVES, a + 8)) for a in range(0, N_CURVES, 8)]
    shared = pp.shared_tapers(cfg, 0, spans)
    assert shared == [key for key, count in taken.most_common() if count >= 2]  # most used first
    assert (256, False) in shared and all(not regular for _, regular in shared)  # 12 regular curves, 12 lengths
    assert pp.shared_tapers(cfg, 8, [(a - 8, b - 8) for a, b in spans[1:]])[0] == (256, False)  # a shard's rows
    monkeypatch.setattr(pp, "DPSS_CACHE_BYTES", 2 * (2 * 8 * 7 * 256))  # half the cache holds one bucket
    assert pp.shared_tapers(cfg, 0, spans) == [(256, False)]


def test_sampling_is_what_cleaning_leaves():
    # (N, regular) per curve from the raw times, as clean_curve leaves them (finite, sorted, unique)
    rng = np.random.default_rng(5)
    grid = np.linspace(0.0, 27.4, 60)
    with_nan, with_duplicate, gapped = grid.copy(), grid.copy(), np.delete(grid, 30)
    with_nan[[0, 17]] = np.nan
    with_duplicate[12] = with_duplicate[11]
    curves = [grid, np.sort(rng.uniform(0.0, 10.0, 45)), grid[::-1], rng.permutation(grid), with_nan,
              with_duplicate, gapped, grid[:40] * 1e6, np.array([0.0, 1.0])]
    expected = []
    for t in curves:
        clean = clean_curve(t, np.ones_like(t), np.ones_like(t))[0]
        expected.append((clean.size, bool(mt.is_regular(clean))))
    assert [r for _, r in expected] == [True, False, True, True, False, False, False, True, True]
    one_point = (1, False)
    for part, want in ((curves, expected),  # in one pass
                       (curves + [np.array([3.0])], expected + [one_point]),  # curve by curve
                       ([np.array([np.nan, 1.0])] + curves, [one_point] + expected)):
        offsets = np.cumsum([0] + [t.size for t in part])
        assert pp._sampling(np.concatenate(part), offsets) == want


def test_bad_settings_raise_clear_errors(raw_file, tmp_path):
    base = {"input": str(raw_file), "output": str(tmp_path / "x.h5"), "workers": 1}
    with pytest.raises(LcgenError, match="0 ≤ I < N"):
        preprocess(PreprocessConfig(**base, shard="2/2"))
    with pytest.raises(LcgenError, match="I/N"):
        preprocess(PreprocessConfig(**base, shard="half"))
    with pytest.raises(LcgenError, match="outside"):
        preprocess(PreprocessConfig(**base, k=9))
    with pytest.raises(LcgenError, match="does not exist"):
        preprocess(PreprocessConfig(**{**base, "input": str(tmp_path / "missing.h5")}))
    with pytest.raises(LcgenError, match="missing shard"):
        merge_shards(tmp_path / "x.h5", 3)


def test_cli_preprocess_end_to_end(raw_file, tmp_path):
    out = tmp_path / "cli.h5"
    result = CliRunner().invoke(app, ["preprocess", "-i", str(raw_file), "-o", str(out), "--workers", "1",
                                      "--set", "n_freq=256", "--set", "n_lags=128"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "failed" in result.output and "Wrote" in result.output
    with h5py.File(out, "r") as f:
        assert f["psd"].shape == (N_CURVES, 256) and f["acf"].shape == (N_CURVES, 128)


def test_band_kept_with_a_capped_grid_and_info_reports_it(raw_file, tmp_path):
    out = tmp_path / "capped.h5"
    runner = CliRunner()
    result = runner.invoke(app, ["preprocess", "-i", str(raw_file), "-o", str(out), "--workers", "1",
                                 "--set", "freq_max=1.0", "--set", "n_freq=128", "--set", "n_lags=64"],
                           env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    with h5py.File(out, "r") as f:
        ok = ~f["failed"][:]
        n, nyq, kept = f["n_points"][:][ok], f["nyquist"][:][ok], f["band_kept"][:][ok]
        fmin = f["frequency"][0]
        regular = np.isclose(nyq, (n - 1) / (2 * f["baseline"][:][ok]), rtol=1e-9)
    w = 2 * 4.0 * nyq / n
    f_hi = np.where(regular, nyq - w, nyq)
    assert np.allclose(kept, np.clip((np.minimum(f_hi, 1.0) - np.maximum(w, fmin)) / (f_hi - w), 0, 1))
    assert (kept < 1).sum() > 5  # curves whose Nyquist frequency lies above 1 c/d lose part of their band
    info = runner.invoke(app, ["info", str(out), "--no-config"], env={"COLUMNS": "200"})
    assert info.exit_code == 0, info.output
    line = next(line for line in info.output.splitlines() if line.startswith("frequency grid keeps"))
    assert f"{100 * np.median(kept):.1f} % of the median curve's band" in line
    assert f"{(kept < 1).sum()} of {kept.size} curves lose part" in line
