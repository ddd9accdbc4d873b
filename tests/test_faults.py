"""Faults a flaky machine or a clumsy user brings, through the CLI: full disks (RLIMIT_FSIZE in the
child), a second writer, a killed parent, Ctrl-C, damaged files and bad input. Each failure must be
exit code 1 (130 for Ctrl-C), ONE stderr line without a traceback, no partial file left (unless it
holds resumable work and the line says so), and every file that was there before byte-identical."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from lcgen.io import RawWriter, partial_path
from lcgen.features.preprocess import PreprocessConfig, preprocess
from tests.conftest import cli_command, run_cli, write_sine_raw

SMALL = ["--set", "n_freq=64", "--set", "n_lags=64", "--set", "chunk_size=2"]  # preprocess, fast


def snapshot(root: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_clean_failure(proc, root: Path, before: dict, says: str, code: int = 1) -> str:
    """Exit ``code``, one stderr line naming the problem, no traceback, no partial file, and
    every file that was there before unchanged."""
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert says in lines[0], lines[0]
    assert not list(root.rglob("*.partial"))
    after = snapshot(root)
    assert {p: after.get(p) for p in before} == before
    return lines[0]


def same_datasets(a: Path, b: Path) -> None:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names = []
        fb.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        assert names and sorted(names) == sorted(n for n in names if n in fa)
        for name in names:
            x, y = fa[name][()], fb[name][()]
            assert x.dtype == y.dtype and x.shape == y.shape, name
            assert (np.array_equal(x, y, equal_nan=True) if x.dtype.kind == "f" else np.array_equal(x, y)), name


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """raw.h5 (6 sinusoids), spectra.h5, ts.h5 and a tiny trained mlp run with metrics.json."""
    from lcgen.features.convert import ConvertConfig, convert
    from lcgen.evaluate.scoring import evaluate_run
    from lcgen.train.trainer import TrainConfig, fit

    d = tmp_path_factory.mktemp("faults")
    write_sine_raw(d / "raw.h5", n_curves=6, n_range=(80, 200))
    preprocess(PreprocessConfig(input=str(d / "raw.h5"), output=str(d / "spectra.h5"), workers=1,
                                n_freq=64, n_lags=64, chunk_size=2))
    convert(ConvertConfig(input=str(d / "raw.h5"), output=str(d / "ts.h5"), max_length=64))
    fit(TrainConfig(model_name="mlp", preset="tiny", data=str(d / "spectra.h5"), epochs=1, batch_size=4,
                    runs_dir=str(d / "runs")), name="run")
    evaluate_run(d / "runs" / "mlp" / "run")
    return d


@pytest.fixture
def place(work, tmp_path):
    """A scratch directory holding copies of the module's files (tests may break them)."""
    for name in ("raw.h5", "spectra.h5", "ts.h5"):
        shutil.copy(work / name, tmp_path / name)
    shutil.copytree(work / "runs", tmp_path / "runs")
    return tmp_path


# ------------------------------------------------------------------------------------------
# A full disk


@pytest.mark.parametrize("args", [
    ("generate", "-n", "300", "-o", "out.h5", "-j", "1"),
    ("convert", "-i", "raw.h5", "-o", "out.h5", "--max-length", "64"),
    ("preprocess", "-i", "raw.h5", "-o", "out.h5", "-j", "1", *SMALL),
    ("train", "mlp", "--data", "spectra.h5", "--preset", "tiny", "--epochs", "1", "--name", "new",
     "--set", "runs_dir=runs"),
    ("evaluate", "runs/mlp/run"),
], ids=["generate", "convert", "preprocess", "train", "evaluate"])
def test_full_disk_is_one_line_and_keeps_the_old_file(place, args):
    shutil.copy(place / "ts.h5", place / "out.h5")  # a good file already under the output name
    before = snapshot(place)
    proc = run_cli(*args, cwd=place, file_size_limit=1_000 if args[0] == "evaluate" else 8_000)
    assert_clean_failure(proc, place, before, "file too large (the file-size limit was reached) writing")
    assert not (place / "runs" / "mlp" / "new").exists()  # a failed train start leaves no run directory


def test_preprocess_after_a_full_disk_equals_an_uninterrupted_run(place, work):
    before = snapshot(place)
    proc = run_cli("preprocess", "-i", "raw.h5", "-o", "out.h5", "-j", "1", *SMALL, cwd=place,
                   file_size_limit=20_000)
    assert_clean_failure(proc, place, before, "writing out.h5")
    assert run_cli("preprocess", "-i", "raw.h5", "-o", "out.h5", "-j", "1", *SMALL, cwd=place).returncode == 0
    same_datasets(place / "out.h5", work / "spectra.h5")


def test_a_chunk_marked_done_but_not_written_is_redone(place, work):
    """The survey's silent corruption: chunks counted done whose rows never reached the disk."""
    cfg = PreprocessConfig(input=str(place / "raw.h5"), output=str(place / "out.h5"), workers=1,
                           n_freq=64, n_lags=64, chunk_size=2)

    def stop(_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match="1 of 3 chunks kept"):
        preprocess(cfg, progress=stop)
    with h5py.File(partial_path(cfg.output), "r+", locking=False) as f:
        f["chunk_done"][2] = True  # as a crash between the mark and the rows could leave it
    summary = preprocess(cfg)
    assert summary["resumed_chunks"] == 1 and summary["analysed"] + summary["failed"] == 6
    same_datasets(place / "out.h5", work / "spectra.h5")


def test_rows_neither_analysed_nor_failed_never_reach_the_final_name(place):
    from lcgen.errors import LcgenError
    from lcgen.features.preprocess import check_rows

    path = place / "spectra.h5"
    check_rows(path)  # a good file passes
    with h5py.File(path, "r+") as f:
        f["failed"][3] = False
        f["psd"][3] = np.nan  # "analysed" but holding no features
        f["failed"][4] = True
        f["fail_reason"][4] = ""  # failed without a reason
    with pytest.raises(LcgenError, match="2 rows .first 3. are neither analysed nor recorded as failed"):
        check_rows(path)


# ------------------------------------------------------------------------------------------
# Paths and values that cannot work


@pytest.mark.parametrize("args, says", [
    (("convert", "-i", "raw.h5", "-o", "raw.h5"), "is the input file raw.h5"),
    (("preprocess", "-i", "raw.h5", "-o", "link.h5"), "is the input file raw.h5"),  # a symbolic link
    (("preprocess", "-i", "raw.h5", "-o", "hard.h5"), "is the input file raw.h5"),  # a hard link
    (("convert", "-i", "raw.h5", "-o", "sub/../raw.h5"), "is the input file raw.h5"),  # another spelling
    (("generate", "-n", "3", "-o", "sub"), "output sub is a directory"),
    (("generate", "-n", "3", "-o", "ts.h5/x.h5"), "ts.h5 is a file, not a directory"),
    (("generate", "-n", "3", "-o", "x.h5", "--seed", "-1"), "seed = -1: must be >= 0"),
    (("generate", "-n", "3", "-o", "x.h5", "--workers", "0"), "workers = 0 must be at least 1"),
    (("preprocess", "-i", "raw.h5", "-o", "x.h5", "--workers", "-3"), "workers = -3 must be at least 1"),
    (("preprocess", "-o", "x.h5", "--merge-shards", "0"), "number of shards must be at least 1"),
    (("preprocess", "-o", "x.h5", "--merge-shards", "-2"), "number of shards must be at least 1"),
    (("convert", "-i", "raw.h5", "-o", "x.h5", "--max-length", "100000000"), "GiB of memory"),
    (("generate", "-n", "3", "-o", "x.h5", "--set", "n_points=[1e8,1e8]"), "GiB of memory"),
    (("preprocess", "-i", "raw.h5", "-o", "x.h5", "--set", "n_freq=100000000"), "GiB of memory"),
    (("generate", "--set", "duration=[500,50]"), "[500.0, 50.0]: a range needs two finite numbers [low, high]"),
    (("info", "a[/x]b.h5"), "a[/x]b.h5 does not exist"),  # Rich markup in user text prints as it is
    (("demo", "--preset", "huge", "--workdir", "demo"), "no preset 'huge'"),
], ids=lambda v: v if isinstance(v, str) else " ".join(v)[:40])
def test_refused_before_any_work(place, args, says):
    (place / "sub").mkdir()
    (place / "link.h5").symlink_to(place / "raw.h5")
    os.link(place / "raw.h5", place / "hard.h5")
    before = snapshot(place)
    assert_clean_failure(run_cli(*args, cwd=place), place, before, says)
    assert not (place / "x.h5").exists() and not (place / "demo").exists()


def test_markup_in_an_output_name_is_written_and_printed(tmp_path):
    proc = run_cli("generate", "-n", "3", "-o", "out[/x].h5", "-j", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out[/x].h5").is_file() and "Wrote out[/x].h5" in proc.stdout


# ------------------------------------------------------------------------------------------
# Two writers, killed parents, Ctrl-C


HOLDER = """
import sys, time
from lcgen.io import locked_partial
with locked_partial(sys.argv[1]) as tmp:
    tmp.write_bytes(b"the first writer's work")
    print("holding", flush=True)
    sys.stdin.read()
"""


def test_a_second_writer_is_refused_and_never_touches_the_first(place):
    argv, env = cli_command()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, "out.h5"], cwd=place, env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "holding"
        for args in (("generate", "-n", "3", "-o", "out.h5"), ("preprocess", "-i", "raw.h5", "-o", "out.h5")):
            proc = run_cli(*args, cwd=place)
            assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
            assert "out.h5 is being written by another lcgen process" in proc.stderr
            assert partial_path(place / "out.h5").read_bytes() == b"the first writer's work"
            assert not (place / "out.h5").exists()
    finally:
        holder.communicate("")
    # the first writer is gone (its lock with it): its stale partial file is taken over
    assert run_cli("generate", "-n", "3", "-o", "out.h5", "-j", "1", cwd=place).returncode == 0
    assert (place / "out.h5").is_file() and not partial_path(place / "out.h5").exists()


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_a_killed_parent(tmp_path):
    argv, env = cli_command("generate", "-n", "2000000", "-o", "big.h5", "-j", "2")
    parent = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    while len(workers) < 2 and time.monotonic() < deadline:  # 2 workers (+ the resource tracker)
        time.sleep(0.2)
        workers = {p for p in _children(parent.pid)  # forked (the parent's command line) or spawned
                   if b"resource_tracker" not in (Path("/proc") / str(p) / "cmdline").read_bytes()}
    assert len(workers) == 2, "the workers never started"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers)


def test_workers_do_not_rerun_the_calling_script(tmp_path):
    """A script run by path (as the ``lcgen`` console script is) is not re-run in the spawned
    workers: once the CLI's imports in every worker, and for a script without a main guard a pool
    started again inside each worker, which multiprocessing refuses."""
    script = tmp_path / "unguarded.py"
    script.write_text("import pathlib, sys\n"
                      "with open(pathlib.Path(sys.argv[0]).with_suffix('.runs'), 'a') as f:\n"
                      "    f.write('ran\\n')\n"
                      "from lcgen.cli import main\n"
                      "sys.argv[1:] = ['generate', '-n', '600', '-o', 'gen.h5', '-j', '2']\n"
                      "main()\n")
    _, env = cli_command()
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert script.with_suffix(".runs").read_text() == "ran\n"
    with h5py.File(tmp_path / "gen.h5") as f:
        assert f["offsets"].size == 601  # 3 chunks of 256: the pool computes them


PROBE = """import os, sys
import numpy  # its BLAS, loaded in a spawned worker too
from threadpoolctl import threadpool_info

def state():
    print("a line from the worker", file=sys.stderr)  # blocks for good on a stream locked at the fork
    return {"spawned": b"spawn_main" in open(f"/proc/{os.getpid()}/cmdline", "rb").read(),
            "has_scipy_linalg": "scipy.linalg" in sys.modules,
            "blas_threads": sorted({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"})}
"""

# The parent: scipy.linalg loaded, BLAS at 2 threads, and a stderr whose lock is held across the
# fork (as the CLI's progress-refresh thread can hold its console's); "torch" fakes torch loaded.
PARENT = """import json, sys, threading
import scipy.linalg
from threadpoolctl import threadpool_limits
if sys.argv[1] == "torch":
    sys.modules["torch"] = type(sys)("torch")
from lcgen.workers import process_pool, start_method
import probe

class Held:
    def __init__(self, real):
        self.real, self.lock = real, threading.Lock()
    def write(self, text):
        with self.lock:
            return self.real.write(text)
    def flush(self):
        self.real.flush()

sys.stderr = held = Held(sys.stderr)
held.lock.acquire()
with threadpool_limits(limits=2, user_api="blas"), process_pool(1) as pool:
    state = pool.submit(probe.state).result()
held.lock.release()
print(json.dumps({"method": start_method(), **state}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers are for Linux")
@pytest.mark.parametrize("parent", ["plain", "torch"])
def test_workers_are_forked_where_safe(tmp_path, parent):
    """Without torch, workers are forked: they start with the parent's modules (no ~0.7 CPU-s of
    imports each), compute with one BLAS thread whatever the parent set, and write to stderr
    although the parent's stream was locked at the fork. With torch loaded they are spawned."""
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "parent.py").write_text(PARENT)
    _, env = cli_command()
    proc = subprocess.run([sys.executable, "parent.py", parent], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    state = json.loads(proc.stdout)
    forked = parent == "plain"
    assert state["method"] == ("fork" if forked else "spawn")
    assert state["spawned"] is not forked and state["has_scipy_linalg"] is forked
    assert state["blas_threads"] == [1]
    assert proc.stderr.count("a line from the worker") == 1


def _wait_for_done_chunks(partial: Path, n: int, proc) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with h5py.File(partial, "r", locking=False) as f:  # read while it is written: may be garbage
                done = f["chunk_done"][:]
                if done.sum() >= n and done[: done.sum()].all():  # one worker: done chunks are a prefix
                    return
        except Exception:
            pass
        time.sleep(0.1)
    raise AssertionError("no chunk finished in time")


def test_ctrl_c_says_what_was_kept(place):
    write_sine_raw(place / "many.h5", n_curves=2000, n_range=(80, 120))
    argv, env = cli_command("preprocess", "-i", "many.h5", "-o", "out.h5", "-j", "1", "--set", "n_freq=64",
                            "--set", "n_lags=64", "--set", "chunk_size=1")
    proc = subprocess.Popen(argv, cwd=place, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_done_chunks(partial_path(place / "out.h5"), 3, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and len(err.strip().splitlines()) == 1, err
    assert "interrupted:" in err and "of 2000 chunks kept in out.h5.partial; rerun the same command to continue" in err

    argv, env = cli_command("generate", "-n", "2000000", "-o", "gen.h5", "-j", "1")
    proc = subprocess.Popen(argv, cwd=place, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while not partial_path(place / "gen.h5").exists() and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip() == ("interrupted: nothing written to gen.h5 (generate does "
                                                      "not resume: rerun to start again)"), err
    assert not partial_path(place / "gen.h5").exists()


# ------------------------------------------------------------------------------------------
# Damaged files


def test_damaged_run_files_are_named(place):
    run = place / "runs" / "mlp" / "run"
    before_metrics = (run / "metrics.json").read_bytes()
    cases = []

    def case(setup, args, says):
        cases.append((setup, args, says))

    good_split = (run / "split.npz").read_bytes()
    good_best = torch.load(run / "best.pt", weights_only=True)

    def write_split(data):
        return lambda: (run / "split.npz").write_bytes(data)

    def keyless_split():
        np.savez(run / "split.npz", rows=np.arange(3))

    def best_without_name():
        torch.save({k: v for k, v in good_best.items() if k != "model_name"}, run / "best.pt")

    def best_wrong_shapes():
        bad = dict(good_best, state_dict={k: v[..., :1] for k, v in good_best["state_dict"].items()})
        torch.save(bad, run / "best.pt")

    case(write_split(b"PK\x03\x04 not a zip"), ("evaluate", run), "split.npz is damaged")
    case(keyless_split, ("evaluate", run), "split.npz lacks train, val, test, n_rows")
    case(best_without_name, ("evaluate", run), "best.pt is not a valid lcgen checkpoint: it lacks model_name")
    case(best_wrong_shapes, ("evaluate", run), "weights do not fit the 'mlp' model it describes")
    case(lambda: (run / "best.pt").unlink(), ("evaluate", run), "has no best.pt")
    case(lambda: (run / "last.pt").write_bytes(b"\x00" * 100), ("train", "--resume", run),
         "last.pt is not a valid lcgen checkpoint")
    for setup, args, says in cases:
        (run / "split.npz").write_bytes(good_split)
        torch.save(good_best, run / "best.pt")
        setup()
        before = snapshot(place)
        assert_clean_failure(run_cli(*args, cwd=place), place, before, says)
    assert (run / "metrics.json").read_bytes() == before_metrics


def test_a_checkpoint_other_than_best_writes_its_own_metrics(place):
    run = place / "runs" / "mlp" / "run"
    before = (run / "metrics.json").read_bytes()
    proc = run_cli("evaluate", run, "--checkpoint", "last", cwd=place)
    assert proc.returncode == 0, proc.stderr
    assert "last.pt; wrote" in proc.stdout and "metrics-last.json" in proc.stdout and (run / "metrics-last.json").is_file()
    assert (run / "metrics.json").read_bytes() == before


@pytest.mark.parametrize("keep, command", [(512, "convert"), (3000, "info")])  # 3000: HDF5 loops on it
def test_a_zeroed_inside_is_reported_as_damaged(tmp_path, keep, command):
    assert run_cli("generate", "-n", "5", "-o", "five.h5", "-j", "1", cwd=tmp_path).returncode == 0
    data = bytearray((tmp_path / "five.h5").read_bytes())
    data[keep:] = bytes(len(data) - keep)  # the superblock survives, everything inside is zero
    (tmp_path / "five.h5").write_bytes(data)
    before = snapshot(tmp_path)
    args = ("info", "five.h5") if command == "info" else ("convert", "-i", "five.h5", "-o", "ts.h5")
    assert_clean_failure(run_cli(*args, cwd=tmp_path, timeout=120), tmp_path, before, "five.h5 is damaged")


# ------------------------------------------------------------------------------------------
# Bad input


def test_unusable_values_are_dropped_and_strings_refused(tmp_path):
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 50, 200))
    flux = 10 + np.sin(t)
    err = np.full(t.size, 0.1)
    err[:5], err[5:10], flux[10:15] = 0.0, -1.0, 1e300  # 15 unusable points in curve 0
    good = np.full(t.size, 0.1)
    with RawWriter(tmp_path / "raw.h5") as w:
        w.append([t, t, t * 1e30], [flux, 10 + np.cos(t), 10 + np.sin(t)], [err, good, good])
    proc = run_cli("convert", "-i", "raw.h5", "-o", "ts.h5", "--max-length", "64", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with h5py.File(tmp_path / "ts.h5") as f:
        assert f.attrs["clean_non_finite"] == 15 and f.attrs["clean_absurd_span"] == 1
        assert set(f["source"][:]) == {0, 1}  # the curve with absurd times is skipped alone
        for key in ("flux", "flux_err", "time"):
            assert np.isfinite(f[key][:][f["mask"][:]]).all()

    # flux stored as strings: refused by convert and preprocess alike
    with h5py.File(tmp_path / "raw.h5", "r+") as f:
        flux = f["flux"][:]
        del f["flux"]
        f["flux"] = flux.astype("S12")
    before = snapshot(tmp_path)
    for cmd in ("convert", "preprocess"):
        assert_clean_failure(run_cli(cmd, "-i", "raw.h5", "-o", "out.h5", cwd=tmp_path), tmp_path, before,
                             "'flux' holds |S12 values")


def test_absurd_times_fail_one_curve_not_the_grid(tmp_path, work):
    times, fluxes, errors, signals, meta = write_sine_raw(tmp_path / "base.h5", n_curves=6, n_range=(80, 200))
    with RawWriter(tmp_path / "raw.h5") as w:
        w.append(times + [times[0] * 1e30], fluxes + [fluxes[0]], errors + [errors[0]])
    proc = run_cli("preprocess", "-i", "raw.h5", "-o", "out.h5", "-j", "1", *SMALL, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with h5py.File(tmp_path / "out.h5") as f, h5py.File(work / "spectra.h5") as ref:
        assert np.array_equal(f["frequency"][:], ref["frequency"][:])  # the grid of the six good curves
        assert np.array_equal(f["failed"][:6], ref["failed"][:]) and f["failed"][6]
        assert "(wrong units?)" in f["fail_reason"].asstr()[6]


def test_one_curve_is_not_enough_to_train(tmp_path):
    write_sine_raw(tmp_path / "raw.h5", n_curves=1, n_range=(300, 301))
    assert run_cli("convert", "-i", "raw.h5", "-o", "ts.h5", "--max-length", "32", cwd=tmp_path).returncode == 0
    before = snapshot(tmp_path)
    proc = run_cli("train", "transformer", "--data", "ts.h5", "--preset", "tiny", "--epochs", "1",
                   "--set", "runs_dir=runs", cwd=tmp_path)
    assert_clean_failure(proc, tmp_path, before, "only 1 light curve(s)")
    assert not (tmp_path / "runs" / "transformer").exists() or not any((tmp_path / "runs" / "transformer").iterdir())
