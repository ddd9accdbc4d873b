"""Time the block masking on one CPU thread: ms per batch, median (and best) of repeated calls.

    python benchmarks/bench_masking.py [--repeats 300]   (package installed, or PYTHONPATH=.)

Rows: fresh training masks (`block_mask`), fixed validation masks (`fixed_mask`) and, for
comparison only, a per-sample Python loop in the style of the original collate function (numpy
`random.choice` per sample). Batches are padded time series: each row has 50-100% real points.
Target (DESIGN.md §5): <= 1 ms per 128 x 1024 batch for the training masks.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lcgen.masking import block_mask, fixed_mask


def python_loop_mask(valid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The original's approach: one sample at a time, in Python (for comparison only)."""
    hidden = np.zeros_like(valid)
    for b in range(valid.shape[0]):
        n_real = int(valid[b].sum())
        size = 2 ** int(rng.integers(0, 6))
        while size > 1 and n_real < 2 * size:
            size //= 2
        n_blocks = -(-n_real // size)
        count = min(max(int(n_blocks * rng.uniform(0.1, 0.7)), 1), n_blocks - 1)
        for k in rng.choice(n_blocks, size=count, replace=False):
            hidden[b, k * size:(k + 1) * size] = True
        hidden[b] &= valid[b]
    return hidden


def time_ms(fn, repeats: int) -> tuple[float, float]:
    """Median and best wall time of fn() in ms, after a short warm-up."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return 1e3 * times[len(times) // 2], 1e3 * times[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(f"torch {torch.__version__}, 1 thread; ms per batch, median (best) of {args.repeats}")
    print(f"{'batch':>10}  {'train masks':>16}  {'fixed masks':>16}  {'python loop':>16}")
    for B, L in [(32, 512), (128, 1024)]:
        gen = torch.Generator().manual_seed(0)
        n_real = torch.randint(L // 2, L + 1, (B, 1), generator=gen)
        valid = torch.arange(L) < n_real
        index = torch.arange(B)
        train = time_ms(lambda: block_mask(valid, generator=gen), args.repeats)
        fixed = time_ms(lambda: fixed_mask(valid, index, seed=0), args.repeats)
        rng = np.random.default_rng(0)
        valid_np = valid.numpy()
        loop = time_ms(lambda: python_loop_mask(valid_np, rng), max(10, args.repeats // 20))
        cells = [f"{med:7.3f} ({best:6.3f})" for med, best in (train, fixed, loop)]
        print(f"{B:>4} x {L:<4}  " + "  ".join(f"{c:>16}" for c in cells))


if __name__ == "__main__":
    main()
