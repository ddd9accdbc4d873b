"""Whole-curve `preprocess` cost: CPU time per curve on the default mock mix, the 2-worker CPU
overhead, a profile of the top costs, and an interleaved comparison with another lcgen tree.

    python benchmarks/bench_preprocess.py                          # 1,000 curves: CPU/curve + profile
    python benchmarks/bench_preprocess.py --curves 2000 --workers  # + 1 vs 2 workers (forked, spawned), CPU totals
    python benchmarks/bench_preprocess.py --curves 2000 --workers --halves  # + the two halves in turn
    python benchmarks/bench_preprocess.py --against f1b5792 --rounds 3      # old vs this tree, interleaved
    python benchmarks/bench_preprocess.py --against /work/main             # ... or another lcgen tree
    python benchmarks/bench_preprocess.py --curves 2000 --workers --against main --only-workers --no-spawned --rounds 6
                                        # 1 and 2 workers of both trees, interleaved (issue 16's 2-worker target)
    python benchmarks/bench_preprocess.py --curves 2000 --breakdown --against main --only-workers --rounds 3
                                        # per process: CPU user/system, faults, DPSS, splines, plans built

CPU time (``resource.getrusage`` of the process and its finished children), one BLAS/OpenMP
thread, finufft single-threaded: on a shared machine wall time says more about the neighbours
than about the code. Each measurement runs in a fresh subprocess on the same raw file, and with
``--against`` the two trees alternate round by round, so load drifts hit both alike; compare the
ratios. Target (issue #16, one idle core, default mix): ≤ 4 ms per curve; 2 workers within 5 % of
the 1-worker CPU total. The original lc-gen took 60.0 CPU-s for 2,000 default curves (30 ms per
curve), interleaved with lcgen at f972c9c (29.7 CPU-s) on this project's 2-core machine.

Every process runs from compiled bytecode (cached under a temporary ``PYTHONPYCACHEPREFIX``, warmed
before the first measurement), as an installed lcgen does: with ``PYTHONDONTWRITEBYTECODE`` set,
each process, and so each started worker, would first compile lcgen's modules (~0.1 CPU-s).
``--workers`` runs 1 worker, 2 workers as lcgen starts them (forked on Linux, see
``lcgen.workers.start_method``) and 2 spawned workers, alternating, and prints what a spawned
worker costs before its first curve (its imports; a forked one starts with them).
``--fixed-cost`` measures what a second worker adds whatever the run's size: 16 curves in two
chunks of 8, 1 worker against 2 (forked, spawned), ``--rounds`` + 2 alternating rounds; on a
loaded machine the totals of large runs spread by more than this cost.

``--breakdown`` runs 1 and 2 workers of each tree and prints, per process (the parent, a forked
worker, all), CPU user and system time, minor page faults and the caches each built (DPSS solved,
taper splines, finufft plans, with their CPU; the tapers built before the fork apart): what a
second worker repeats, counted rather than inferred from noisy totals.

``--stages`` adds the CPU time of each stage of a curve (cleaning, tapers, transform, adaptive
PSD, F-tests, ACF), measured in-process on this tree.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import checkout  # noqa: E402

HERE = Path(__file__).resolve().parents[1]
ENV_1THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
PYCACHE = tempfile.TemporaryDirectory(prefix="lcgen-bench-pycache-")  # bytecode of every tree, as installed
# What a started preprocess worker imports before its first curve (its first tapers load scipy.linalg).
WORKER_IMPORTS = ("import resource, concurrent.futures.process, multiprocessing.spawn\n"
                  "try:\n    import lcgen.features.preprocess\nexcept ImportError:\n    import lcgen.preprocess\n"
                  "import scipy.linalg\nu = resource.getrusage(resource.RUSAGE_SELF)\nprint(u.ru_utime + u.ru_stime)")


def child_env(tree: Path) -> dict:
    """One thread, ``tree`` first on the path, bytecode compiled once (see the module docstring)."""
    env = {**os.environ, **ENV_1THREAD, "PYTHONPATH": str(tree), "PYTHONPYCACHEPREFIX": PYCACHE.name}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def worker_startup(tree: Path, rounds: int = 3) -> float:
    """Median CPU seconds of a fresh interpreter importing what a started worker imports (the
    first run compiles and caches the bytecode of ``tree``; it is not counted)."""
    runs = [float(subprocess.run([sys.executable, "-c", WORKER_IMPORTS], check=True, capture_output=True,
                                 text=True, cwd=tree, env=child_env(tree)).stdout) for _ in range(rounds + 1)]
    return statistics.median(runs[1:])

# Runs inside a subprocess with PYTHONPATH at the tree under test; prints one JSON line.
CHILD = r"""
import json, resource, sys, time, cProfile, pstats, io
try:
    from lcgen.features import preprocess as pp
except ImportError:  # a tree from before the features/ subpackage
    from lcgen import preprocess as pp
raw, out, workers, profile = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
if sys.argv[5] == "spawn":  # force spawned workers (trees before lcgen.workers.start_method spawn anyway)
    import lcgen.workers
    lcgen.workers.start_method = lambda: "spawn"
cfg = pp.PreprocessConfig(input=raw, output=out, workers=workers, chunk_size=int(sys.argv[6]), resume=False,
                          shard=sys.argv[7] if len(sys.argv) > 7 else None)
def cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
start, wall = cpu(), time.perf_counter()
if profile:
    prof = cProfile.Profile()
    prof.enable()
summary = pp.preprocess(cfg)
if profile:
    prof.disable()
cpu_s, wall_s = cpu() - start, time.perf_counter() - wall
top = ""
if profile:
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
    top = buf.getvalue()
print(json.dumps({"cpu": cpu_s, "wall": wall_s, "curves": summary["curves"], "failed": summary["failed"], "profile": top}))
"""


def make_raw(path: Path, n: int, seed: int) -> None:
    """The default mock mix (lcgen generate's defaults), written with this tree's simulator."""
    code = ("import sys; from lcgen.simulate import SimulateConfig, generate; "
            f"generate(SimulateConfig(output=sys.argv[1], n_samples={n}, seed={seed}), workers=1)")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, cwd=HERE,
                   env=child_env(HERE))


def measure(tree: Path, raw: Path, workers: int, profile: bool = False, spawn: bool = False,
            chunk_size: int = 250, shard: str | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", CHILD, str(raw), str(Path(tmp) / "pre.h5"), str(workers),
                              "1" if profile else "0", "spawn" if spawn else "default", str(chunk_size)]
                             + ([shard] if shard else []), check=True,
                             capture_output=True, text=True, cwd=tree, env=child_env(tree))
    return json.loads(out.stdout.strip().splitlines()[-1])


# The stages of one curve: CPU time of each, nested calls counted in their callers too.
STAGES = r"""
import collections, json, sys, time, h5py
import lcgen.features.multitaper as mt, lcgen.features.preprocess as pp
raw = sys.argv[1]
cfg = pp.PreprocessConfig(input=raw)
grids = pp.make_grids(cfg, *pp.survey_input(raw))
spent = collections.Counter()
def timed(module, name):
    fn = getattr(module, name)
    def wrapper(*a, **k):
        start = time.process_time()
        try:
            return fn(*a, **k)
        finally:
            spent[name] += time.process_time() - start
    setattr(module, name, wrapper)
for name in ("taper_times", "dpss_tapers", "_transform", "adaptive_psd", "_harmonic_fstat", "_mirror_sums",
             "_mirror_problems", "_mirror_solve"):
    timed(mt, name)
for name in ("clean_curve", "binned_multitaper_many", "autocorrelation", "normalise_rows"):
    timed(pp, name)
with h5py.File(raw) as f:
    o = f["offsets"][:]
    t, y, e = f["time"][:], f["flux"][:], f["flux_err"][:]
start = time.process_time()
pp.analyse_curves([(t[o[i]:o[i + 1]], y[o[i]:o[i + 1]], e[o[i]:o[i + 1]]) for i in range(o.size - 1)], grids, cfg)
total = time.process_time() - start
print(json.dumps({"total": total, "curves": o.size - 1, **spent}))
"""

STAGE_NAMES = {"binned_multitaper_many": "binned spectra, in batches (all below)",
               "taper_times": "  tapers on the samples", "dpss_tapers": "    DPSS (cached per length)",
               "_transform": "  lattice NUFFT", "adaptive_psd": "  adaptive PSD (batch)", "_harmonic_fstat": "  F-test (batch)",
               "_mirror_sums": "  mirror F-test: sums per curve", "_mirror_problems": "  mirror F-test: set-up (batch)",
               "_mirror_solve": "  mirror F-test: solves (batch)",
               "autocorrelation": "ACF", "normalise_rows": "normalisation (batch)", "clean_curve": "cleaning"}


def stages(raw: Path) -> None:
    out = subprocess.run([sys.executable, "-c", STAGES, str(raw)], check=True, capture_output=True, text=True,
                         cwd=HERE, env=child_env(HERE))
    m = json.loads(out.stdout.strip().splitlines()[-1])
    per = 1e3 / m["curves"]
    print("\n| stage (this tree, in-process) | CPU ms per curve | share |\n|---|---|---|")
    print(f"| whole curve | {per * m['total']:.2f} | 100 % |")
    for key, name in STAGE_NAMES.items():
        if key in m:
            print(f"| {name} | {per * m[key]:.2f} | {100 * m[key] / m['total']:.0f} % |")


def workers_table(raw: Path, rounds: int, chunk_size: int, what: str, halves: bool = False,
                  trees: list[tuple[str, Path]] | None = None, spawned: bool = True) -> None:
    """CPU totals of 1 worker, 2 workers as lcgen starts them and 2 spawned ones, alternating;
    with ``halves`` also the two halves (``shard`` 0/2 and 1/2) one after the other in fresh
    processes: what a second process duplicates (caches, first page faults, the grids' survey,
    which a forked worker does not repeat) without two processes running at once. With more
    ``trees`` (name, folder) than this one, each also runs 1 and 2 workers in every round."""
    trees = trees or [("this tree", HERE)]
    arms = {}  # name -> (tree, workers, spawn)
    for i, (tree_name, tree) in enumerate(trees):
        tag = "" if len(trees) == 1 else f"{tree_name}: "
        arms[f"{tag}1 worker"] = (tree, 1, False)
        arms[f"{tag}2 workers"] = (tree, 2, False)
        if i == 0 and spawned:
            arms[f"{tag}2 spawned"] = (tree, 2, True)
    if halves:
        arms["halves in turn"] = (HERE, 1, False)
    cpu: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(rounds):
        for name in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
            tree, workers, spawn = arms[name]
            if name == "halves in turn":
                cpu[name].append(sum(measure(HERE, raw, 1, chunk_size=chunk_size, shard=f"{i}/2")["cpu"] for i in (0, 1)))
            else:
                cpu[name].append(measure(tree, raw, workers, spawn=spawn, chunk_size=chunk_size)["cpu"])
            print(f"  round {r + 1} {name:9s}: {cpu[name][-1]:6.2f} CPU-s ({load()})", flush=True)
    for tree_name, _ in trees:
        tag = "" if len(trees) == 1 else f"{tree_name}: "
        base = cpu[f"{tag}1 worker"]
        one = statistics.median(base)
        print(f"\n| {what}{', ' + tree_name if tag else ''} | CPU-s (median) | minus 1 worker | median of the rounds' "
              "ratios to 1 worker | rounds |\n|---|---|---|---|---|")
        for name, values in cpu.items():  # a round's runs follow each other: their ratio drifts less with the load
            if tag and not name.startswith(tag):
                continue
            m = statistics.median(values)
            paired = statistics.median(v / o for v, o in zip(values, base))
            print(f"| {name} | {m:.2f} | {m - one:+.2f} CPU-s ({100 * (m / one - 1):+.1f} %) | {100 * (paired - 1):+.1f} % | "
                  f"{', '.join(f'{c:.2f}' for c in values)} |")
    if len(trees) > 1:
        print(f"\n| {what}: {trees[0][0]} / {trees[1][0]} | median of the rounds' ratios |\n|---|---|")
        for arm in ("1 worker", "2 workers"):
            a, b = cpu[f"{trees[0][0]}: {arm}"], cpu[f"{trees[1][0]}: {arm}"]
            print(f"| {arm} | {statistics.median(x / y for x, y in zip(a, b)):.3f} |")


# Where a run's CPU goes, per process: each process's CPU (user, system), minor page faults and
# the caches it built (DPSS solved, taper splines, finufft plans, with their CPU), written by
# each process after each chunk; the parent's taper build before the fork (trees that have it)
# apart. Runs inside a subprocess with PYTHONPATH at the tree under test; prints one JSON line.
BREAKDOWN = r"""
import json, os, resource, sys, tempfile, time
from pathlib import Path
import finufft
try:
    from lcgen.features import multitaper as mt, preprocess as pp
except ImportError:
    from lcgen import multitaper as mt, preprocess as pp
raw, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
stats, logs = {"pid": os.getpid()}, tempfile.mkdtemp()
def mine():  # this process's counts (a forked worker starts its own)
    if stats["pid"] != os.getpid():
        stats.clear()
        stats["pid"] = os.getpid()
    return stats
def add(name, seconds):
    count, total = mine().get(name, (0, 0.0))
    stats[name] = (count + 1, total + seconds)
def timed(module, name, key):
    fn = getattr(module, name, None)
    if fn is None:
        return
    def wrapper(*a, **k):
        start = time.process_time()
        try:
            return fn(*a, **k)
        finally:
            add(key, time.process_time() - start)
    wrapper.__qualname__, wrapper.__module__ = fn.__qualname__, fn.__module__  # pickled by name
    setattr(module, name, wrapper)
timed(mt, "_dpss", "dpss")
timed(mt, "_not_a_knot", "splines")
timed(pp, "warm_taper_caches", "before the fork")  # as preprocess calls it
class Plan(finufft.Plan):
    def __init__(self, *a, **k):
        start = time.process_time()
        super().__init__(*a, **k)
        add("plans", time.process_time() - start)
finufft.Plan = Plan
chunk = pp.process_chunk
def process_chunk(path, start, stop, *rest):
    result = chunk(path, start, stop, *rest)
    mine()["curves"] = stats.get("curves", 0) + stop - start
    u = resource.getrusage(resource.RUSAGE_SELF)
    Path(logs, str(os.getpid())).write_text(json.dumps({**stats, "user": u.ru_utime, "sys": u.ru_stime, "faults": u.ru_minflt}))
    return result
process_chunk.__qualname__, process_chunk.__module__ = "process_chunk", pp.__name__
pp.process_chunk = process_chunk
before = resource.getrusage(resource.RUSAGE_SELF)
pp.preprocess(pp.PreprocessConfig(input=raw, output=out, workers=workers, chunk_size=250, resume=False))
after = resource.getrusage(resource.RUSAGE_SELF)
rows = {p.name: json.loads(p.read_text()) for p in Path(logs).iterdir()}
parent = rows.pop(str(os.getpid()), {})
parent.update(user=after.ru_utime - before.ru_utime, sys=after.ru_stime - before.ru_stime,
              faults=after.ru_minflt - before.ru_minflt)  # the whole run, not only its chunks
children = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"parent": parent, "workers": list(rows.values()),
                  "children": {"user": children.ru_utime, "sys": children.ru_stime, "faults": children.ru_minflt}}))
"""


def breakdown(raw: Path, rounds: int, trees: list[tuple[str, Path]]) -> None:
    """Per process, 1 worker and 2 workers of each tree, alternating: CPU user and system, minor
    faults, and the DPSS, splines and finufft plans each process built (medians of the rounds)."""
    arms = [(name, tree, w) for name, tree in trees for w in (1, 2)]
    seen: dict[tuple[str, str], list[dict]] = {}
    for r in range(rounds):
        for name, tree, w in (arms if r % 2 == 0 else arms[::-1]):
            with tempfile.TemporaryDirectory() as tmp:
                out = subprocess.run([sys.executable, "-c", BREAKDOWN, str(raw), str(Path(tmp) / "pre.h5"), str(w)],
                                     check=True, capture_output=True, text=True, cwd=tree, env=child_env(tree))
            m = json.loads(out.stdout.strip().splitlines()[-1])
            arm = f"{name}, {w} worker{'s' if w > 1 else ''}"
            seen.setdefault((arm, "parent (the whole run)"), []).append(m["parent"])
            for child in m["workers"]:
                seen.setdefault((arm, "forked worker"), []).append(child)
            every = [m["parent"]] + m["workers"]
            total = {key: tuple(sum(p[key][i] for p in every if key in p) for i in (0, 1))
                     for key in ("dpss", "splines", "plans", "before the fork")}
            seen.setdefault((arm, "all processes"), []).append(
                {"user": m["parent"]["user"] + m["children"]["user"], "sys": m["parent"]["sys"] + m["children"]["sys"],
                 "faults": m["parent"]["faults"] + m["children"]["faults"],
                 "curves": sum(p.get("curves", 0) for p in every), **total})
            print(f"  round {r + 1} {arm}: {m['parent']['user'] + m['parent']['sys'] + m['children']['user'] + m['children']['sys']:.2f} CPU-s ({load()})", flush=True)

    def med(rows: list[dict], key: str, part: int | None = None) -> float:
        values = [(row[key][part] if part is not None else row[key]) if key in row else 0 for row in rows]
        return statistics.median(values)

    print(f"\n| run, process (medians of {rounds} rounds) | curves | CPU user, s | system, s | minor faults | "
          "DPSS solved (CPU-s) | splines | finufft plans (CPU-s) | tapers built before the fork (CPU-s) |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for (arm, who), rows in seen.items():
        print(f"| {arm}, {who} | {med(rows, 'curves'):.0f} | {med(rows, 'user'):.2f} | {med(rows, 'sys'):.3f} | "
              f"{med(rows, 'faults'):,.0f} | {med(rows, 'dpss', 0):.0f} ({med(rows, 'dpss', 1):.3f}) | "
              f"{med(rows, 'splines', 0):.0f} | {med(rows, 'plans', 0):.0f} ({med(rows, 'plans', 1):.3f}) | "
              f"{med(rows, 'before the fork', 1):.3f} |")


def load() -> str:
    return "load average " + " / ".join(f"{v:.1f}" for v in os.getloadavg()) + f" on {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--curves", type=int, default=1000, help="default mock curves to preprocess")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workers", action="store_true", help="also compare 1 and 2 workers (CPU totals)")
    parser.add_argument("--fixed-cost", action="store_true", help="also what a second worker adds on 16 curves")
    parser.add_argument("--halves", action="store_true", help="with --workers: also the two halves of the curves "
                                                              "one after the other (duplicated work without concurrency)")
    parser.add_argument("--against", help="a git revision (e.g. main, f1b5792) or another lcgen tree (a folder): "
                                          "measured interleaved")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds with --against, and of 1 and 2 "
                                                              "workers with --workers")
    parser.add_argument("--no-spawned", action="store_true", help="with --workers: leave out 2 spawned workers")
    parser.add_argument("--only-workers", action="store_true", help="with --workers: skip the 1-worker per-curve "
                                                                     "rounds before the workers table")
    parser.add_argument("--no-profile", action="store_true", help="skip the profile summary")
    parser.add_argument("--stages", action="store_true", help="also the CPU time of each stage of a curve")
    parser.add_argument("--breakdown", action="store_true", help="also where 1 and 2 workers' CPU goes, per process "
                                                                 "(CPU, faults, caches built), of each tree")
    args = parser.parse_args()

    tree = Path(args.against) if args.against and Path(args.against).is_dir() else None
    with tempfile.TemporaryDirectory() as tmp, \
            (contextlib.nullcontext(tree) if tree or not args.against else checkout(args.against)) as other:
        raw = Path(tmp) / "raw.h5"
        make_raw(raw, args.curves, args.seed)
        print(f"{args.curves:,} default mock curves; {load()}")
        trees = [("this tree", HERE)] + ([(f"against {args.against}", Path(other).resolve())] if other else [])
        startup = {name: worker_startup(tree) for name, tree in trees}  # also warms the bytecode cache
        per_curve: dict[str, list[float]] = {name: [] for name, _ in trees}
        for r in range(0 if args.only_workers else args.rounds if args.against else 1):
            for name, tree in (trees if r % 2 == 0 else trees[::-1]):  # alternate who goes first
                m = measure(tree, raw, 1)
                per_curve[name].append(1e3 * m["cpu"] / m["curves"])
                print(f"  round {r + 1} {name:9s}: {per_curve[name][-1]:6.2f} CPU-ms/curve "
                      f"({m['wall']:.1f} s wall, {m['failed']} failed)", flush=True)
        if not args.only_workers:
            print("\n| tree | CPU ms per curve, 1 worker (median of rounds) | a worker's imports, CPU-s |\n|---|---|---|")
            for name, values in per_curve.items():
                print(f"| {name} | {statistics.median(values):.2f} | {startup[name]:.2f} |")
            if args.against:
                a, b = (statistics.median(v) for v in per_curve.values())
                print(f"\nthis tree / against = {a / b:.2f}")
        if args.workers:  # alternating, --rounds of each: one pair of runs on a loaded machine says little
            workers_table(raw, args.rounds, 250, f"{args.curves:,} curves", halves=args.halves,
                          trees=trees, spawned=not args.no_spawned)
            print(f"\na spawned worker's imports: {startup['this tree']:.2f} CPU-s (median of 3 fresh interpreters; "
                  f"a forked one starts with them); the rest is its own taper and NUFFT-plan caches and the pool")
        if args.fixed_cost:
            small = Path(tmp) / "small.h5"
            make_raw(small, 16, args.seed)
            workers_table(small, args.rounds + 2, 8, "16 curves, chunks of 8 (a second worker's fixed cost)")
        if args.breakdown:
            breakdown(raw, args.rounds, trees)
        if args.stages:
            stages(raw)
        if not args.no_profile:
            print("\nprofile, this tree, 1 worker (cProfile inflates the absolute times):")
            print(measure(HERE, raw, 1, profile=True)["profile"])
        print(load())


if __name__ == "__main__":
    main()
