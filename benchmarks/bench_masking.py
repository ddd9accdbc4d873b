"""Time the block masking on one CPU thread: ms per batch (median and best wall time, median CPU
time), side by side with other revisions, and where the time goes.

    python benchmarks/bench_masking.py                    # this tree
    python benchmarks/bench_masking.py --against f972c9c  # ... interleaved with that revision
    python benchmarks/bench_masking.py --against main --against f972c9c  # ... with both

Rows: fresh training masks (`block_mask`) and fixed validation masks (`fixed_mask`). Batches are
padded time series: each row has 50-100 % real points. Targets (issue #16): 128 x 1024 <= 1 ms
median on one idle thread; the original's Python-loop collate took 402 ms (128 x 1024) and 57 ms
(32 x 512), measured side by side on this project's 2-core machine (so >= 250x and >= 100x).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import lcgen.masking as this_tree  # noqa: E402
from benchmarks.common import checkout, load_average, load_module, profile_rows  # noqa: E402

ORIGINAL_MS = {(32, 512): 57.0, (128, 1024): 402.0}  # issue #16, the original's collate masking
F972C9C_THEN_MS = {(32, 512): (1.5, 1.8), (128, 1024): (8.6, 13.0)}  # lcgen f972c9c's medians beside the original (issue #16)
SHAPES = [(32, 512), (128, 1024)]


def batch(B: int, L: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    n_real = torch.randint(L // 2, L + 1, (B, 1), generator=gen)
    return torch.arange(L) < n_real, torch.arange(B)


def calls(module, valid: torch.Tensor, index: torch.Tensor) -> dict:
    gen = torch.Generator().manual_seed(0)
    return {"train": lambda: module.block_mask(valid, generator=gen),
            "fixed": lambda: module.fixed_mask(valid, index, seed=0)}


def timings(modules: dict, repeats: int, block: int = 10) -> dict:
    """{(name, shape, kind): (wall list, cpu-per-call list)}: every module's call in turn, in
    blocks of ``block`` calls, so a loaded machine slows all of them alike."""
    out: dict = {}
    for shape in SHAPES:
        valid, index = batch(*shape)
        fns = {(name, kind): fn for name, mod in modules.items() for kind, fn in calls(mod, valid, index).items()}
        for fn in fns.values():  # warm-up
            for _ in range(5):
                fn()
        for _ in range(max(1, repeats // block)):
            for (name, kind), fn in fns.items():
                walls, cpus = out.setdefault((name, shape, kind), ([], []))
                c0 = time.process_time()
                for _ in range(block):
                    t0 = time.perf_counter()
                    fn()
                    walls.append(time.perf_counter() - t0)
                cpus.append((time.process_time() - c0) / block)
    return out


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def split_table(console: Console, repeats: int) -> None:
    """CPU medians of the two stages, interleaved: the random draws (torch's generator for
    training masks, a numpy hash for fixed ones) and laying the blocks (``lay_blocks``, numpy),
    and the top costs of whole calls."""
    mod = this_tree
    table = Table(title=f"where the time goes, this tree, CPU median ms ({load_average()})")
    for col in ("batch", "draw_train", "lay_blocks (train)", "draw_fixed", "lay_blocks (fixed)"):
        table.add_column(col, justify="left" if col == "batch" else "right")
    for shape in SHAPES:
        valid, index = batch(*shape)
        gen = torch.Generator().manual_seed(0)
        train, fixed = mod.draw_train(valid, generator=gen), mod.draw_fixed(valid, index, seed=0)
        fns = {"draw_train": lambda: mod.draw_train(valid, generator=gen),
               "lay train": lambda: mod.lay_blocks(valid, train),
               "draw_fixed": lambda: mod.draw_fixed(valid, index, seed=0),
               "lay fixed": lambda: mod.lay_blocks(valid, fixed)}
        cpus = {k: [] for k in fns}
        for _ in range(max(1, repeats // 10)):
            for k, fn in fns.items():
                c0 = time.process_time()
                for _ in range(10):
                    fn()
                cpus[k].append((time.process_time() - c0) / 10)
        table.add_row(f"{shape[0]} x {shape[1]}", *(f"{median(cpus[k]) * 1e3:.3f}" for k in fns))
    console.print(table)
    valid, index = batch(128, 1024)
    gen = torch.Generator().manual_seed(0)
    for kind, fn in {"train": lambda: mod.block_mask(valid, generator=gen),
                     "fixed": lambda: mod.fixed_mask(valid, index, seed=0)}.items():
        fn()
        total, rows = profile_rows(lambda: [fn() for _ in range(50)], top=6)
        console.print(f"{kind} masks, 128 x 1024, top costs (own time, cProfile): "
                      + ", ".join(f"{where} {own / total:.0%}" for where, _, own in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=300, help="calls per row")
    parser.add_argument("--against", action="append", default=[],
                        help="git revision to time side by side (e.g. main, a commit); repeat for several")
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    console = Console(width=130)

    with contextlib.ExitStack() as stack:
        modules = {"this tree": this_tree}
        for k, rev in enumerate(args.against):
            old = stack.enter_context(checkout(rev))
            modules[f"revision {rev}"] = load_module(old / "lcgen" / "masking.py", f"lcgen_masking_old{k}")
        result = timings(modules, args.repeats)
    table = Table(title=f"block masking, torch {torch.__version__}, 1 thread, {args.repeats} calls per row, "
                        f"interleaved ({load_average()})")
    for col in ("batch", "masks", "code", "wall median ms", "wall best ms", "CPU median ms", "original / median"):
        table.add_column(col, justify="left" if col in ("batch", "masks", "code") else "right")
    for (name, shape, kind), (walls, cpus) in result.items():
        ratio = f"{ORIGINAL_MS[shape] / (median(walls) * 1e3):.0f}x" if kind == "train" else "-"
        table.add_row(f"{shape[0]} x {shape[1]}", kind, name, f"{median(walls) * 1e3:.3f}",
                      f"{min(walls) * 1e3:.3f}", f"{median(cpus) * 1e3:.3f}", ratio)
    console.print(table)
    console.print(f"original (issue #16): {ORIGINAL_MS[(32, 512)]:.0f} ms at 32 x 512, "
                  f"{ORIGINAL_MS[(128, 1024)]:.0f} ms at 128 x 1024 (its Python loop in the collate), measured on "
                  "a loaded machine: 'original / median' flatters an idle run. The fair ratio chains through "
                  "f972c9c, measured beside the original then and beside this tree now (--against f972c9c):")
    for shape, (lo, hi) in F972C9C_THEN_MS.items():
        now, then = result.get(("this tree", shape, "train")), result.get(("revision f972c9c", shape, "train"))
        if now and then:
            factor = median(then[0]) / median(now[0])  # f972c9c / this tree, wall medians of this run
            console.print(f"  {shape[0]} x {shape[1]}: original / f972c9c then {ORIGINAL_MS[shape] / hi:.0f}-"
                          f"{ORIGINAL_MS[shape] / lo:.0f}x, times f972c9c / this tree now {factor:.2f} = "
                          f"{ORIGINAL_MS[shape] / hi * factor:.0f}-{ORIGINAL_MS[shape] / lo * factor:.0f}x")
    if not args.no_profile:
        split_table(console, args.repeats)


if __name__ == "__main__":
    main()
