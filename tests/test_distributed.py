"""Data-parallel training: the reader's rank shares, real multi-process runs under torchrun (gloo on
the CPU), resume after a kill and across process counts, and the GPU-path switches on the CPU.

Tolerance of the 1-process / 2-process comparison. The two compute the same global loss and the
same gradient, only summed in another order: each rank sums over its half of the batch and
gloo adds the two halves, where one process sums over the whole batch. float32 sums of the
same numbers in two orders differ by a few units in the last place (eps = 1.2e-7 relative);
AdamW divides the gradient by its running RMS, so the difference in each update stays at that
relative size of the learning rate, and a few dozen steps leave weights (of size ~1) within
~1e-7 of each other (measured: 1.4e-7 at most after 10 steps). ``ATOL = 1e-5`` is ~100 units in
the last place; a real fault (a different global batch, masks or loss pooling) moves the weights
by ~1e-3 after one step, as ``test_two_processes_train_as_one`` checks.
"""

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import lcgen.train.trainer as train
from lcgen.train.data import SpectraSource, batch_order, batch_share, iter_batches, prefetch
from lcgen.errors import LcgenError
from lcgen.train.trainer import TrainConfig, fit, load_checkpoint
from tests.conftest import ROOT, torch_threads
from tests.test_data import write_spectra

ATOL = 1e-5
LENGTH = 128


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The in-process runs on one torch thread, like each torchrun worker (OMP_NUM_THREADS=1):
    on a loaded machine, two spinning threads per process cost far more than they bring."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp") / "spectra.h5"
    write_spectra(path, n=400, length=LENGTH, failed=(5,))
    return path


def config(data, runs, **changes):
    base = TrainConfig(model_name="mlp", preset="tiny", data=str(data), epochs=3, batch_size=10, lr=3e-3,
                       runs_dir=str(runs), device="cpu")
    return dataclasses.replace(base, **changes)


def cli_args(data, runs, name):
    return ["train", "mlp", "--preset", "tiny", "--data", data, "--epochs", 3, "--batch-size", 10,
            "--lr", 3e-3, "--device", "cpu", "--name", name, "--set", f"runs_dir={runs}"]


def start(*args):
    """`python -m lcgen ARGS` in a subprocess."""
    env = {**os.environ, "CI": "true", "COLUMNS": "120", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-m", "lcgen", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_tree(pid):
    """SIGKILL ``pid`` and all its descendants at once, as a node failure would (torchrun starts its
    workers in sessions of their own, so a process-group kill would miss them)."""
    def children(p):
        try:
            with open(f"/proc/{p}/task/{p}/children") as fh:
                return [int(c) for c in fh.read().split()]
        except FileNotFoundError:
            return []

    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children(p)
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def finish(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out


def state(run_dir):
    return load_checkpoint(run_dir / "last.pt")["state_dict"]


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


# --------------------------------------------------------------------------------------------
# The reader's rank shares (in process)


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [7, 10])
def test_rank_shares_cover_every_row_once_in_the_global_order(data, world, batch_size):
    rows = np.arange(0, 120, dtype=np.int64)[np.arange(120) % 11 != 3]  # a sparse selection
    reads = {}
    with SpectraSource(data) as src:
        real_read = src.read

        def recording_read(r):
            reads.setdefault(rank, []).append(np.asarray(r).copy())
            return real_read(r)

        src.read = recording_read
        order, _ = batch_order(rows, shuffle=True, seed=4, epoch=2, buffer_rows=32)
        per_rank = []
        for rank in range(world):
            per_rank.append([b["index"].numpy() for b in iter_batches(
                src, rows, batch_size, shuffle=True, seed=4, epoch=2, buffer_rows=32, rank=rank,
                world_size=world)])
    n_steps = -(-rows.size // batch_size)
    assert all(len(p) == n_steps for p in per_rank)  # every rank takes part in every step
    for k in range(n_steps):
        # global batch k, rank by rank, is batch k of the one global order: same for any world size
        together = np.concatenate([per_rank[r][k] for r in range(world)])
        np.testing.assert_array_equal(together, order[k * batch_size:(k + 1) * batch_size])
        sizes = [len(per_rank[r][k]) for r in range(world)]
        assert max(sizes) - min(sizes) <= 1
    everything = np.concatenate([b for p in per_rank for b in p])
    assert np.array_equal(np.sort(everything), rows)  # each row exactly once per epoch
    for rank in range(world):  # each rank read only its own rows, each once
        read = np.concatenate(reads[rank])
        assert np.array_equal(np.sort(read), np.sort(np.concatenate(per_rank[rank])))


def test_batch_share_and_resume_within_an_epoch(data):
    assert [batch_share(10, r, 3) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    assert [batch_share(1, r, 2) for r in range(2)] == [(0, 1), (1, 1)]  # a rank may get nothing
    rows = np.arange(120, dtype=np.int64)
    with SpectraSource(data) as src:
        whole = [b["index"].numpy() for b in iter_batches(src, rows, 9, shuffle=True, seed=1, epoch=0,
                                                          buffer_rows=40, rank=1, world_size=2)]
        tail = [b["index"].numpy() for b in iter_batches(src, rows, 9, shuffle=True, seed=1, epoch=0,
                                                         buffer_rows=40, rank=1, world_size=2, start_batch=5)]
        one = list(iter_batches(src, rows[:1], 4, rank=1, world_size=2))
    assert all(np.array_equal(a, b) for a, b in zip(whole[5:], tail)) and len(tail) == len(whole) - 5
    assert one[0]["index"].shape == (0,) and one[0]["values"].shape == (0, LENGTH)


def test_prefetch_keeps_the_order_and_passes_errors_on():
    assert [x["a"].item() for x in prefetch(({"a": torch.tensor(i)} for i in range(50)), 3)] == list(range(50))

    def broken():
        yield {"a": torch.tensor(0)}
        raise LcgenError("disk on fire")

    got = []
    with pytest.raises(LcgenError, match="disk on fire"):
        for x in prefetch(broken(), 2):
            got.append(x)
    assert len(got) == 1
    # leaving early stops the reader thread
    reader = prefetch(({"a": torch.tensor(i)} for i in range(10**6)), 2)
    next(reader)
    reader.close()
    assert not any(t.name == "lcgen-prefetch" for t in __import__("threading").enumerate())


# --------------------------------------------------------------------------------------------
# Real processes: torchrun, gloo


def killed_after_an_epoch(data, root, attempts=3):
    """Start the 2-process run ``killed`` and SIGKILL its whole tree as soon as its last.pt holds a
    finished epoch; the epoch it was killed after (1 or 2). An epoch of this tiny run takes tens of
    milliseconds, so on a busy machine (the suite's other worker beside) the run can end before the
    kill lands: then it is started again from nothing, up to ``attempts`` times."""
    last = root / "mlp" / "killed" / "last.pt"
    for _ in range(attempts):
        shutil.rmtree(root / "mlp" / "killed", ignore_errors=True)
        killed = start(*cli_args(data, root, "killed"), "--nproc", 2)
        deadline = time.monotonic() + 600
        while not (last.is_file() and load_checkpoint(last)["epoch"] >= 1) and killed.poll() is None:
            assert time.monotonic() < deadline, "the 2-process run wrote no checkpoint"
            time.sleep(0.005)
        kill_tree(killed.pid)  # the launcher, torchrun and both workers
        killed.wait()
        time.sleep(0.5)
        kill_epoch = load_checkpoint(last)["epoch"]
        if kill_epoch < 3:
            return kill_epoch
    raise AssertionError(f"the run finished before it could be killed, {attempts} times")


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """The multi-process runs of this module (3 epochs of ~32 steps), two started together to share
    their start-up time: an uninterrupted 2-process run, and the same run killed after its first
    epoch, then resumed with 2 processes (and a copy of it with 1, in this process); and a
    1-process run stopped after one epoch, resumed with 2 processes; and one epoch of the
    Gaussian NLL loss (variance head) with 2 processes."""
    root = tmp_path_factory.mktemp("runs")
    two = start(*cli_args(data, root, "two"), "--nproc", 2)
    nll_args = cli_args(data, root, "two-nll")
    nll_args[nll_args.index("--epochs") + 1] = 1
    nll = start(*nll_args, "--set", "loss=nll", "--nproc", 2)
    kill_epoch = killed_after_an_epoch(data, root)
    shutil.copytree(root / "mlp" / "killed", root / "mlp" / "killed-1")
    resumed = start("train", "--resume", root / "mlp" / "killed", "--nproc", 2)
    fit(config(data, root), name="half", stop_after=1)
    across = start("train", "--resume", root / "mlp" / "half", "--nproc", 2)
    fit(config(data, root), name="one")
    fit(config(data, root, epochs=1, loss="nll"), name="one-nll")
    return {"root": root, "two": finish(two), "resumed": finish(resumed), "across": finish(across),
            "nll": finish(nll), "kill_epoch": kill_epoch}


def test_two_processes_train_as_one(runs, data):
    root = runs["root"]
    one, two = state(root / "mlp" / "one"), state(root / "mlp" / "two")
    assert max_diff(one, two) < ATOL
    ckpt = load_checkpoint(root / "mlp" / "two" / "last.pt")
    assert len(ckpt["rng"]["ranks"]) == 2 and ckpt["epoch"] == 3
    h1, h2 = load_checkpoint(root / "mlp" / "one" / "last.pt")["progress"]["history"], ckpt["progress"]["history"]
    for key in ("train_loss", "train_masked", "val_loss", "val_unmasked"):
        np.testing.assert_allclose([r[key] for r in h2], [r[key] for r in h1], rtol=1e-5)
    assert [r["lr"] for r in h2] == [r["lr"] for r in h1]
    # rank 0 alone writes and prints
    out = runs["two"]
    assert out.count("Epoch 3/3") == 1 and "Data parallel: 2 processes (gloo), global batch 10" in out
    assert sorted(p.name for p in (root / "mlp" / "two").iterdir()) == [
        "best.pt", "config.yaml", "history.csv", "last.pt", "split.npz"]
    # the comparison can fail: another global batch is another training run
    other = fit(config(data, root, batch_size=5, epochs=1), name="half-batch")
    assert max_diff(state(other["run_dir"]), two) > 1e-3


def test_two_processes_train_as_one_with_the_nll_loss(runs):
    """The NLL sums are pooled over the global batch's counts as the MSE's are: 2 processes train
    the variance-head model 1 process does."""
    root = runs["root"]
    one, two = load_checkpoint(root / "mlp" / "one-nll" / "last.pt"), load_checkpoint(root / "mlp" / "two-nll" / "last.pt")
    assert two["train_config"]["loss"] == "nll" and two["model_config"]["variance_head"] is True
    assert max_diff(one["state_dict"], two["state_dict"]) < ATOL
    for key in ("train_loss", "train_masked", "val_loss"):
        np.testing.assert_allclose([r[key] for r in two["progress"]["history"]],
                                   [r[key] for r in one["progress"]["history"]], rtol=1e-5)


def test_killed_two_process_run_resumes_where_an_uninterrupted_one_ends(runs):
    root = runs["root"]
    assert f"Resuming training at epoch {runs['kill_epoch'] + 1}/3, step 1" in runs["resumed"]
    killed = load_checkpoint(root / "mlp" / "killed" / "last.pt")
    two = load_checkpoint(root / "mlp" / "two" / "last.pt")
    assert killed["epoch"] == 3
    # the same two processes summing in the same order: the same weights, bit for bit
    assert max_diff(two["state_dict"], killed["state_dict"]) == 0
    assert [r["train_loss"] for r in killed["progress"]["history"]] == [r["train_loss"] for r in two["progress"]["history"]]


def test_resume_with_another_number_of_processes(runs):
    root = runs["root"]
    # the killed 2-process run continued by 1 process ends where 2 processes end: the batch order,
    # the masks and the step count do not depend on the number of processes
    result = fit(resume=root / "mlp" / "killed-1")
    assert result["status"] == "finished" and result["epoch"] == 3
    assert max_diff(state(root / "mlp" / "two"), state(root / "mlp" / "killed-1")) < ATOL
    # and the other way: 1 process for the first epoch, 2 for the rest, ends where 1 process ends
    assert "Resuming training at epoch 2/3, step 1" in runs["across"]
    assert max_diff(state(root / "mlp" / "one"), state(root / "mlp" / "half")) < ATOL


# --------------------------------------------------------------------------------------------
# The GPU path's switches, run on the CPU


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("small") / "spectra.h5"
    write_spectra(path, n=60, length=LENGTH)
    return path


def test_deferred_loss_reads_and_prefetch_change_nothing(small, tmp_path):
    """loss_read_every > 1 (the CUDA default: the loss stays on the device between reads) and the
    prefetching reader give the same run, bit for bit."""
    base = fit(config(small, tmp_path, epochs=2, loss_read_every=1, prefetch=0), name="base")
    other = fit(config(small, tmp_path, epochs=2, loss_read_every=4, prefetch=3), name="other")
    assert max_diff(state(base["run_dir"]), state(other["run_dir"])) == 0
    assert [r["train_loss"] for r in base["history"]] == [r["train_loss"] for r in other["history"]]
    assert all(0 <= r["data_wait_s"] <= r["seconds"] for r in other["history"])


def test_a_non_finite_loss_between_deferred_reads_names_the_steps(small, tmp_path, monkeypatch):
    real_build, count = train.build_model, [0]

    def poisoned_build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        forward = model.forward_batch

        def forward_batch(batch):
            out = forward(batch)
            count[0] += model.training
            return {**out, "reconstructed": out["reconstructed"] * float("nan")} if count[0] == 3 else out

        model.forward_batch = forward_batch
        return model

    monkeypatch.setattr(train, "build_model", poisoned_build)
    with pytest.raises(LcgenError, match=r"non-finite loss \(nan\) at epoch 1, steps 1-4: training stopped "
                                         r"and no checkpoint was written yet"):
        fit(config(small, tmp_path, loss_read_every=4), name="nan")


def test_compile_switch_gives_the_same_loss(small, tmp_path):
    """torch.compile (inductor, with this machine's C++ compiler) against eager: the same
    training losses to float tolerance (the compiled kernels fuse and reorder float32 work)."""
    # batches of 8 divide the 48 training rows: one batch shape, one compilation
    eager = fit(config(small, tmp_path, epochs=1, batch_size=8), name="eager")
    compiled = fit(config(small, tmp_path, epochs=1, batch_size=8, compile=True), name="compiled")
    np.testing.assert_allclose([r["train_loss"] for r in compiled["history"]],
                               [r["train_loss"] for r in eager["history"]], rtol=1e-5)
    assert max_diff(state(eager["run_dir"]), state(compiled["run_dir"])) < ATOL


def test_compile_falls_back_to_eager_where_it_fails(small, tmp_path, monkeypatch):
    def broken_compile(module, **kwargs):
        def call(*args):
            raise RuntimeError("no C++ compiler found\nmore detail")
        return call

    eager = fit(config(small, tmp_path, epochs=1), name="eager")
    monkeypatch.setattr(torch, "compile", broken_compile)
    lines = []
    console = type("Console", (), {"print": lambda self, text, **kw: lines.append(text)})()
    fallback = fit(config(small, tmp_path, epochs=1, compile=True), name="fallback", console=console)
    assert "torch.compile failed (RuntimeError: no C++ compiler found); training without it" in lines
    assert max_diff(state(eager["run_dir"]), state(fallback["run_dir"])) == 0


def test_cuda_settings_fused_adamw_and_tf32():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    fused = train._make_optimizer(model, TrainConfig(lr=1e-2))  # auto: fused on CPU and CUDA alike
    plain = train._make_optimizer(model, TrainConfig(lr=1e-2, optimizer_impl="foreach"))
    assert fused.defaults["fused"] is True and not plain.defaults["fused"]
    assert [len(g["params"]) for g in fused.param_groups] == [1, 3]  # no decay on biases and gains
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with train._fast_cuda_math(torch.device("cuda")):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == saved
    with train._fast_cuda_math(torch.device("cpu")):
        assert torch.backends.cuda.matmul.allow_tf32 == saved[0]
