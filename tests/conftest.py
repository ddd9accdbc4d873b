"""Shared fixtures: small raw light-curve files made from seeds (no binary fixtures)."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

# Under pytest-xdist (the default: one worker per core), each worker and the CLI runs it starts use
# cores / workers threads, so two workers on two cores do not run four spinning torch threads.
# Set before torch is imported anywhere; an explicit OMP_NUM_THREADS wins.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))

import numpy as np
import pytest

from lcgen.io import RawWriter

ROOT = Path(__file__).resolve().parents[1]


def write_sine_raw(path, n_curves=6, seed=0, n_range=(80, 700)):
    """Write a raw file of noisy sinusoids on irregular times; returns the arrays written."""
    rng = np.random.default_rng(seed)
    times, fluxes, errors, signals = [], [], [], []
    periods = rng.uniform(2, 20, n_curves)
    for p in periods:
        n = int(rng.integers(*n_range))
        t = np.sort(rng.uniform(0, 100, n)) + 1000.0
        t = np.unique(t)
        clean = 10 + np.sin(2 * np.pi * t / p)
        err = np.full(t.size, 0.1)
        times.append(t)
        signals.append(clean)
        fluxes.append(clean + err * rng.standard_normal(t.size))
        errors.append(err)
    meta = {"lc_type": ["sinusoid"] * n_curves, "period": periods}
    with RawWriter(path, {"made_by": "tests"}) as w:
        w.append(times, fluxes, errors, signals, meta)
    return times, fluxes, errors, signals, meta


@pytest.fixture
def raw_file(tmp_path):
    path = tmp_path / "raw.h5"
    write_sine_raw(path)
    return path


def cli_command(*args, env=None):
    """The argv and environment of `python -m lcgen ARGS` run from this tree."""
    full_env = {**os.environ, "CI": "true", "COLUMNS": "120", **(env or {})}
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    return [sys.executable, "-m", "lcgen", *map(str, args)], full_env


def run_cli(*args, cwd=None, env=None, file_size_limit=None, timeout=600):
    """Run `python -m lcgen ARGS` in a subprocess, as a user would. ``file_size_limit`` (bytes)
    sets RLIMIT_FSIZE in the child: a write past it fails as on a full disk."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    argv, full_env = cli_command(*args, env=env)
    return subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit if file_size_limit is not None else None)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block on ``n`` torch threads and restore the previous count. On a shared 2-core
    machine, two spinning threads per process cost tiny models far more than they bring."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
