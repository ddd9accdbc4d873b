"""Shared pieces of the benchmarks: CPU clocks, another revision's code side by side, profiles.

Speed is compared as CPU time (``time.process_time`` in the process doing the work, children
added where workers run), interleaved: the two versions alternate round by round on the same
inputs, so a machine loaded by others inflates both alike and the ratio stays meaningful.
"""

from __future__ import annotations

import contextlib
import cProfile
import importlib.util
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]

# One thread everywhere: the targets are per core.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def load_average() -> str:
    """The 1-minute load average and core count, to quote beside absolute figures."""
    return f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


@contextlib.contextmanager
def checkout(rev: str | None) -> Iterator[Path | None]:
    """The ``lcgen`` package as it is at git revision ``rev``, extracted into a temporary folder
    (yielded: put it on PYTHONPATH); None for no revision."""
    if rev is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix=f"lcgen-{rev[:12]}-") as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "lcgen"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield Path(tmp)


def load_module(path: Path, name: str) -> ModuleType:
    """Import the file ``path`` as module ``name`` (another revision's copy of a module that
    imports nothing of lcgen beyond what this tree has the same)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def run_child(code: str, pythonpath: Path, timeout: float = 3600) -> dict:
    """Run ``code`` in a fresh interpreter with ``pythonpath`` first on the path and one thread;
    the code prints one JSON object as its last line, which is returned."""
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(pythonpath)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=timeout, cwd=tempfile.gettempdir())
    if out.returncode != 0:
        raise RuntimeError(f"child failed ({pythonpath}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def profile_rows(fn: Callable[[], object], *, top: int = 12) -> tuple[float, list[tuple[str, int, float]]]:
    """Run ``fn`` under cProfile; return its total profiled seconds and the ``top`` functions by
    own time as (where, calls, seconds). Profiling inflates Python-heavy code: read shares."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (file, line, func), (_, calls, own, _, _) in stats.stats.items():
        where = func if file == "~" else f"{'/'.join(Path(file).parts[-2:])}:{line}({func})"
        rows.append((where, calls, own))
    rows.sort(key=lambda r: -r[2])
    return stats.total_tt, rows[:top]
