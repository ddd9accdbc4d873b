"""Worker processes for the parallel commands (``generate``, ``preprocess``): a process pool
whose workers leave Ctrl-C to their parent and die with it.

Workers are forked where that is safe (Linux, torch not loaded; see :func:`start_method`), so
they begin with this process's modules already imported (numpy, scipy.linalg, h5py, finufft,
lcgen: ~0.7 CPU-s that a spawned worker pays again); elsewhere they are spawned. Each computes
with one BLAS/OpenMP thread: the parallelism is across light curves. They run only lcgen's own
functions, so spawned ones do not re-run the calling script (see :func:`process_pool`). When the
parent is killed (SIGKILL, out of memory) the kernel kills its workers too (Linux
``PR_SET_PDEATHSIG``; elsewhere a thread in each worker watches for the parent to go), so no
orphan keeps computing.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from typing import Callable, Iterator

from lcgen.errors import LcgenError

_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def check_workers(workers: int | None) -> int:
    """``workers`` checked (at least 1), or every core when None."""
    if workers is None:
        return os.cpu_count() or 1
    if workers < 1:
        raise LcgenError(f"workers = {workers} must be at least 1 (leave --workers out to use every core)")
    return workers


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[Callable[[], None]]:
    """Turn Ctrl-C into a flag that ``check()`` raises as KeyboardInterrupt between chunks.

    A KeyboardInterrupt raised at an arbitrary bytecode can land in a finaliser (h5py, pools),
    where Python prints "Exception ignored" and carries on; checking a flag at chunk boundaries
    makes the stop certain. A second Ctrl-C interrupts at once. Only the main thread's default
    handler is replaced (and restored afterwards).
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield lambda: None
        return
    hits: list[int] = []

    def handler(signum, frame):
        hits.append(signum)
        if len(hits) > 1:
            raise KeyboardInterrupt

    def check() -> None:
        if hits:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, previous)


def start_method() -> str:
    """How :func:`process_pool` starts workers: "fork" where a forked worker is safe, else "spawn".

    A forked worker computes only lcgen's functions on data it is sent or opens itself by path,
    and leaves through ``os._exit`` (multiprocessing's fork start), so what it inherits is safe to
    share or never touched:

    - no file is written through an inherited handle: HDF5's state for a file the parent has open
      (the output being written) is copied, never flushed or closed in the worker;
    - locks another thread may hold at the fork: CPython renews its own (imports, logging), h5py
      holds its lock across the fork, OpenBLAS stops its thread pool before one, glibc's malloc
      takes its locks; the standard streams (a thread such as the CLI's progress refresh may be
      writing to them) are replaced in the worker by fresh ones (:func:`_fresh_streams`);
    - BLAS/OpenMP thread counts are set by calls in the worker (the environment variables act
      only when a library loads, which happened in the parent).

    Not on Linux (macOS's system libraries are not fork-safe; Windows has no fork), and not once
    torch is loaded: its OpenMP and CUDA state does not survive a fork, and a process that
    trained or embedded holds large thread pools. Spawned workers start a fresh interpreter.
    """
    if sys.platform.startswith("linux") and "torch" not in sys.modules:
        return "fork"
    return "spawn"


_MALLOC_KEPT = False
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # glibc <malloc.h>


def keep_freed_memory(mmap_below: int = 32 * 2 ** 20, trim_above: int = 256 * 2 ** 20) -> None:
    """Have this process's C allocator keep freed memory for reuse rather than return it to the
    kernel: blocks under ``mmap_below`` bytes come from the heap (glibc otherwise maps, and on
    free unmaps, each one above a threshold that moves with the sizes freed so far), and up to
    ``trim_above`` bytes of free heap stay mapped. Linux with glibc only; elsewhere nothing
    (musl's ``mallopt`` does nothing).

    Why: the spectra of a batch of curves make numpy temporaries of a few MiB each (K tapers ×
    ~36,000 frequencies), and memory handed back to the kernel costs a page fault per 4 KiB when
    it is touched again: analysing 1,000 default curves took 157,000 faults and 0.80 s of system
    time on the project's machine (a VM where a fault costs ~5–10 µs), 42,000 and 0.31 s with
    this setting, with the same peak RSS. The price is that the process keeps its peak heap until
    it exits. Settings are per process: forked
    workers inherit them, spawned ones call this themselves (it runs where curves are analysed)."""
    global _MALLOC_KEPT
    if _MALLOC_KEPT or not sys.platform.startswith("linux"):
        return
    _MALLOC_KEPT = True
    with contextlib.suppress(Exception):
        mallopt = ctypes.CDLL(None).mallopt
        mallopt(M_MMAP_THRESHOLD, int(mmap_below))
        mallopt(M_TRIM_THRESHOLD, int(trim_above))


def choose_huge_pages(on: bool) -> bool:
    """Torch's transparent huge pages for this process's tensors of 2 MB or more
    (``THP_MEM_ALLOC_ENABLE``), unless the user set that variable before importing lcgen; True
    where the choice was made here. Torch reads the variable once, at the process's first tensor
    (of any size), so this acts only before that: the trainer calls it before it loads or makes
    anything, and no lcgen module makes a tensor as it is imported.

    Why per model (``ModelSpec.huge_pages``): in training, with freed memory kept
    (:func:`keep_all_freed_memory`), huge pages help the UNet, whose step makes a few large
    activations of the same sizes every step (default preset, one thread: 5.15 against 5.50 CPU-s
    a step, peak RSS 2.6-2.8 against 3.3 GB), and hurt the transformer, whose step makes many
    blocks of 2-30 MB of varied sizes: each fault in a huge-page range compacts memory first
    (``/sys/kernel/mm/transparent_hugepage/defrag`` = madvise) and half-used 2 MB pages add up
    (two epochs of the default transformer, one thread: 58.1 / 58.8 against 63.9 / 67.0 s, 2.1-2.3
    against 8.7 s of system time, peak RSS 2.9-3.0 against 3.9 GB; 2026-12-02, docs/speed.md)."""
    import lcgen

    if lcgen.THP_SET_BY_USER:
        return False
    os.environ["THP_MEM_ALLOC_ENABLE"] = "1" if on else "0"
    return True


def keep_all_freed_memory() -> bool:
    """Have this process's C allocator serve every block, however large, from its heap and keep
    all freed heap memory mapped (glibc ``mallopt``: no separate mappings, no trimming); True
    where set (Linux with glibc). For a training step on the CPU, whose large activations are
    freed and made again every step: glibc maps each block of 32 MiB and more (every
    activation of the default UNet at batch 128) on its own and unmaps it on free, so the next
    step faults it in again. That was 1.3 of 5.9 CPU-s per default-UNet step (batch 128, one
    thread; fresh layer-norm outputs and gradients, oneDNN's convolutions, autograd's gradient
    sums; 2026-12-02). The price: the process keeps its peak heap until it exits, plus what
    fragments (peak RSS of default training steps on one thread: the UNet at 128 x 1024 2.26 ->
    2.67 GB, the transformer at 32 x 512 2.65 -> 2.91 GB)."""
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(Exception):
        mallopt = ctypes.CDLL(None).mallopt
        return bool(mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))
    return False


def _init_worker(parent: int, forked: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    if forked:
        _fresh_streams()
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)  # for good: BLAS and OpenMP loaded in the parent with their own counts
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the parent died before the line above ran
                os._exit(1)
            return
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _fresh_streams() -> None:
    """New ``sys.stdout``/``sys.stderr`` on the same descriptors, for a forked worker: the
    inherited objects may be locked for good (a parent thread was writing at the fork) or be a
    wrapper such as Rich's, which prints through the parent's console and its lock."""
    for name, fd in (("stdout", 1), ("stderr", 2)):
        try:
            stream = open(fd, "w", buffering=1, closefd=False, errors="backslashreplace")
        except OSError:  # no such descriptor: the output goes nowhere, as it would have
            stream = open(os.devnull, "w")
        setattr(sys, name, stream)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


@contextlib.contextmanager
def process_pool(workers: int) -> Iterator[cf.ProcessPoolExecutor]:
    """A pool of ``workers`` single-threaded processes that die with this one: forked all at once
    where :func:`start_method` allows, else spawned as work arrives.

    Leaving the block, normally or with an exception (Ctrl-C included), cancels what has not
    started, lets each worker finish the one item it is computing (one chunk: seconds at most;
    workers ignore Ctrl-C) and waits for the workers to exit, so no worker outlives the command.
    Workers are not terminated: one killed while sending its result leaves a partial message in
    the result pipe, and the pool's manager thread then waits on it forever, which hangs the
    interpreter's exit (seen under load, about one Ctrl-C in ten).

    Only lcgen's own functions and data are sent to the workers, so spawned ones do not re-run the
    calling script (:func:`_script_not_rerun`).
    """
    method = start_method()
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update({k: "1" for k in _THREAD_VARS})  # inherited by spawned workers
    try:
        with _script_not_rerun():
            pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method),
                                          initializer=_init_worker, initargs=(os.getpid(), method == "fork"))
            try:
                if method == "fork":
                    with warnings.catch_warnings():  # Python ≥ 3.12 warns of threads at a fork: see start_method
                        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
                        pool.submit(int)  # forks every worker now, before the pool's own threads start
                yield pool
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _script_not_rerun() -> Iterator[None]:
    """Hide the calling script's path from the workers started meanwhile.

    A spawned worker first runs the script that started its parent (as ``__mp_main__``), so that
    functions defined there can be unpickled; Python skips that only for ``python -m pkg``
    (``__main__.__spec__`` names ``pkg.__main__``) and for code with no file (``python -c``). The
    ``lcgen`` console script is a file that imports the CLI (Typer, Rich: ~0.3 CPU-s in every
    worker, a third of a worker's start-up), and a user's script without an
    ``if __name__ == "__main__":`` guard would start its pool again inside each worker (which
    multiprocessing refuses). lcgen sends workers only its own functions, so while the pool
    starts processes ``__main__`` has no ``__file__`` for multiprocessing to pass on (it reads it
    when a process starts; processes start inside ``submit``); lcgen reads it nowhere.
    """
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None or "__file__" not in vars(main):
        yield
        return
    path = vars(main).pop("__file__")
    try:
        yield
    finally:
        main.__file__ = path


def result(future: cf.Future):
    """``future.result()``, with a dead worker turned into one clear error."""
    try:
        return future.result()
    except cf.process.BrokenProcessPool:
        raise LcgenError("a worker process died (out of memory, killed, or it could not import the "
                         "calling script, e.g. code run from stdin); rerun with --workers 1") from None
