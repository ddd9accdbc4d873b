"""Training throughput and peak memory of every registered model, through the real trainer.

For each model and preset (``small`` and ``default``, i.e. full size) a child process writes a
small synthetic data file, runs ``lcgen.train.fit`` for two epochs of a few steps at the model's
default batch size and reports the second epoch's training samples/s (masking, data reading,
forward, backward, clipping and the optimiser step; validation excluded), the seconds a
50,000-window epoch would take at that rate, the share of the step time spent waiting for the
next batch from the reader, and the child's peak RSS. A second table times the data pipeline
alone on a larger spectra file, stored plain and compressed (gzip, lzf), to show that reading is
cheap and that memory stays bounded by the read buffer, not the file.

``--profile`` instead profiles one training step of each model (torch.profiler): the share of
self CPU time by kind of work (matrix products, attention, convolutions, norms, copies, random
numbers, optimiser, ...) and the operators with the most self CPU time (the profiler times each
operator on the clock, so under load read the shares, not the seconds), and the step's arithmetic
against its ceiling: the GFLOP of its matrix products and convolutions (``torch.utils.flop_counter``),
the rate its matrix products reach against a large ``bmm`` on the same CPU, ISA and threads, and
the time all of it would take at that rate — how much faster the step could be without less
arithmetic (fewer multiply-adds or a narrower dtype). ``--against REF`` compares this tree with git revision REF step by
step: children of the two trees alternate (A B A B ...) on the same batch, seed and threads, and
the table gives CPU seconds per step (``time.process_time``, which other processes' load barely
moves), wall seconds, samples/s, the step's kernel time and minor page faults
(``resource.getrusage``: fresh memory being faulted in) and peak RSS, and the ratio old / new. On a shared machine, quote
the ratios and the CPU time, and the load average printed with them.

    python benchmarks/bench_train.py                  # all models, small and default
    python benchmarks/bench_train.py --models mlp --presets small --steps 20
    python benchmarks/bench_train.py --device cuda    # on a GPU: bf16 autocast, TF32, fused AdamW,
                                                      # prefetching reader, loss read every 50 steps
    python benchmarks/bench_train.py --device cuda --compile   # and torch.compile
    python benchmarks/bench_train.py --profile --models unet --batch 32 --threads 1
    python benchmarks/bench_train.py --against main --models transformer --rounds 2 --threads 1

On a quiet machine, the issue-19 check: samples/s of the default models at their default batch
sizes on 2 threads, the version before issue 19's second pass (f1b5792) against this tree,
alternating (~5 minutes on the 2-core machine; read the wall and samples/s columns):

    python benchmarks/bench_train.py --against f1b5792 --models transformer unet --rounds 2 --steps 2 --threads 2

and the UNet against the tree before its fourth pass (memory traffic: scratch buffers, no
decoder concatenation, LayerNorm + GELU fused):

    python benchmarks/bench_train.py --against 8eb40f7 --models unet --rounds 2 --steps 2 --threads 2

and against the tree before its fifth pass (pooled buffers, the normalised values kept):

    python benchmarks/bench_train.py --against 78e789d --models unet --rounds 2 --steps 2 --threads 2

and against the tree before its sixth pass (the level-0 convolutions' weight gradient as matrix
products):

    python benchmarks/bench_train.py --against ffdf9ed --models unet --rounds 2 --steps 2 --threads 2

and against the tree before its eighth pass (freed memory kept in training, so no page faults;
run it more than once, and against d0248db, the bridge to the original, as well):

    python benchmarks/bench_train.py --against 44703b2 --models unet --rounds 4 --steps 2 --threads 2
    python benchmarks/bench_train.py --against d0248db --models unet --rounds 2 --steps 2 --threads 2

``--threads N`` sets torch's threads in every child (the environment variable BENCH_THREADS does
the same); without either, torch's default (one per core).

``--isa avx2`` runs every child as on an AVX2 CPU: ATen's kernels (``ATEN_CPU_CAPABILITY``), oneDNN's
convolutions (``ONEDNN_MAX_CPU_ISA``) and MKL's matrix products (``MKL_ENABLE_INSTRUCTIONS``) are held
to AVX2, so an AVX-512 machine can measure what the original's AVX2 machine would see (each row
prints the ATen capability the child ran with). Issue 19's ratio to the original, on this ISA:

    python benchmarks/bench_train.py --against d0248db --models unet --rounds 3 --steps 2 --threads 2 --isa avx2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# --isa: the environment each child gets to hold its kernels to an instruction set
ISA_ENV = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}
USER_THP = os.environ.get("THP_MEM_ALLOC_ENABLE")  # lcgen's import sets it; children decide for their own tree
sys.path.insert(0, os.environ.get("BENCH_TREE", str(ROOT)))  # --against: children import the old tree


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def write_spectra(path: Path, n: int, length: int = 1024, seed: int = 0, compression: str | None = None) -> None:
    """A spectra file of standard-normal channels, all bins valid, written chunk by chunk.

    The values are rounded to 12 bits of mantissa so that compression has something to find
    (white noise at full float32 precision would not compress at all); real files compress by
    their own ratio (README, "Data at scale")."""
    import numpy as np

    from lcgen.train.data import CHANNELS
    from lcgen.io import atomic_h5, write_header

    rng = np.random.default_rng(seed)
    with atomic_h5(path) as f:
        write_header(f, "spectra", {"made_by": "bench_train"})
        packing = {"compression": compression, "shuffle": True} if compression else {}
        sets = {c: f.create_dataset(c, shape=(n, length), dtype="f4", chunks=(min(256, n), length), **packing)
                for c in CHANNELS}
        mask = f.create_dataset("mask", shape=(n, length), dtype=bool, chunks=(min(256, n), length), **packing)
        for start in range(0, n, 4096):
            stop = min(n, start + 4096)
            for ds in sets.values():
                x = rng.standard_normal((stop - start, length), dtype=np.float32)
                ds[start:stop] = (x.view(np.uint32) & np.uint32(0xFFFFF800)).view(np.float32)
            mask[start:stop] = True
        f["frequency"] = np.linspace(0.001, 24, length)
        f["lag"] = np.linspace(0, 500, length)
        f["failed"] = np.zeros(n, bool)


def write_timeseries(path: Path, n: int, length: int = 512, seed: int = 0) -> None:
    """A time-series file of noisy sinusoids on irregular times, one window per curve."""
    import numpy as np

    from lcgen.io import atomic_h5, write_header

    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 300, (n, length)), axis=1)
    t -= t[:, :1]
    flux = np.sin(2 * np.pi * t / rng.uniform(2, 50, (n, 1))) + 0.1 * rng.standard_normal((n, length))
    with atomic_h5(path) as f:
        write_header(f, "timeseries", {"made_by": "bench_train"})
        f["flux"] = flux.astype(np.float32)
        f["time"] = t.astype(np.float32)
        f["flux_err"] = np.full((n, length), 0.1, np.float32)
        f["mask"] = np.ones((n, length), bool)
        f["source"] = np.arange(n)


def one(model: str, preset: str, steps: int, device: str, workdir: Path, compile_: bool = False) -> dict:
    """Train ``model`` at ``preset`` for two epochs of ``steps`` steps; epoch-2 samples/s."""
    import torch

    from lcgen.train.data import load_split, n_batches
    from lcgen.models import MODELS
    from lcgen.train.trainer import TrainConfig, complete_config, fit

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    cfg = complete_config(TrainConfig(model_name=model, preset=preset, device=device))
    rows = round(cfg.batch_size * steps / 0.8)  # 10% validation, 10% test: `steps` full batches train
    data = workdir / f"{model}.h5"
    if MODELS[model].data == "spectra":
        write_spectra(data, rows)
    else:
        write_timeseries(data, rows)
    base = peak_rss_mb()
    cfg = complete_config(TrainConfig(model_name=model, preset=preset, data=str(data), epochs=2,
                                      runs_dir=str(workdir / "runs"), device=device, compile=compile_))
    start = time.perf_counter()
    result = fit(cfg, name=f"{model}-{preset}")
    row = result["history"][-1]
    ckpt = torch.load(result["run_dir"] / "last.pt", weights_only=True)
    params = sum(v.numel() for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    n_steps = n_batches(len(load_split(result["run_dir"])["train"]), cfg.batch_size)
    out = {"model": model, "preset": preset, "params": params, "batch": cfg.batch_size, "threads": torch.get_num_threads(),
           "steps": n_steps, "samples_per_s": row["samples_per_s"], "step_ms": 1000 * row["seconds"] / n_steps,
           "epoch_50k_s": 50_000 / row["samples_per_s"], "data_wait": row["data_wait_s"] / row["seconds"],
           "peak_rss_mb": peak_rss_mb(), "rss_before_fit_mb": base, "wall_s": time.perf_counter() - start}
    if device.startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def step_batch(model: str, batch_size: int, seed: int = 0) -> dict:
    """One training batch for ``model`` at its default window length: noisy sinusoids on
    irregular times (time series) or standard-normal spectra, a quarter of the rows padded at the
    end, block masks from a seeded generator."""
    import torch

    from lcgen.masking import block_mask
    from lcgen.models import MODELS

    timeseries = MODELS[model].data == "timeseries"
    length = 512 if timeseries else 1024
    g = torch.Generator().manual_seed(seed)
    valid = torch.ones(batch_size, length, dtype=torch.bool)
    valid[: batch_size // 4, length - length // 8:] = False
    time_ = torch.cumsum(torch.rand(batch_size, length, generator=g), 1)
    if timeseries:
        period = 2 + 48 * torch.rand(batch_size, 1, generator=g)
        values = torch.sin(2 * torch.pi * time_ / period) + 0.1 * torch.randn(batch_size, length, generator=g)
    else:
        values = torch.randn(batch_size, length, generator=g)
    batch = {"values": torch.where(valid, values, 0.0), "valid": valid, "time": time_,
             "index": torch.arange(batch_size)}
    batch["hidden"] = block_mask(valid, generator=g)
    return batch


def train_steps(model_name: str, preset: str, batch_size: int, steps: int, profile: bool = False) -> dict:
    """CPU and wall seconds per training step (forward, masked loss, backward, clipping, AdamW
    as the trainer sets it up) after one warm-up step; with ``profile``, the top operators."""
    import torch

    from lcgen.models import create_model
    try:
        from lcgen.train import trainer as train
    except ImportError:  # --against a tree from before the train stage became a subpackage
        from lcgen import train

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    try:  # fit() chooses huge pages per model; trees from before it keep lcgen's import-time setting
        from lcgen.workers import choose_huge_pages
    except ImportError:
        pass
    else:
        from lcgen.models import MODELS

        choose_huge_pages(MODELS[model_name].huge_pages)
    try:  # fit() keeps freed memory on the CPU; trees from before it lack the call
        from lcgen.workers import keep_all_freed_memory
    except ImportError:
        pass
    else:
        keep_all_freed_memory()
    torch.manual_seed(0)
    cfg = train.complete_config(train.TrainConfig(model_name=model_name, preset=preset, device="cpu"))
    model = create_model(model_name, preset).train()
    optimizer = train._make_optimizer(model, cfg)
    batch = step_batch(model_name, batch_size)

    def step():
        out = model.forward_batch(batch)
        total = train.losses_from_sums(train.mse_sums(out["reconstructed"], batch), cfg.unmasked_weight)[0]
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=True)
        optimizer.step()

    step()
    cpu, wall, kernel, faults = [], [], [], []
    for _ in range(steps):
        r, c, w = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), time.perf_counter()
        step()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
        r2 = resource.getrusage(resource.RUSAGE_SELF)
        kernel.append(r2.ru_stime - r.ru_stime)
        faults.append(r2.ru_minflt - r.ru_minflt)
    out = {"model": model_name, "preset": preset, "batch": batch_size, "threads": torch.get_num_threads(),
           "cpu_s": min(cpu), "wall_s": min(wall), "sys_s": min(kernel), "minflt": min(faults),
           "peak_rss_mb": peak_rss_mb(), "load": os.getloadavg()[0], "isa": torch.backends.cpu.get_cpu_capability()}
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            step()
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events)
        out["top"] = [(e.key, e.self_cpu_time_total / 1e6, e.self_cpu_time_total / total, e.count)
                      for e in events[:14]]
        kinds: dict[str, float] = {}
        for e in events:
            kinds[op_kind(e.key)] = kinds.get(op_kind(e.key), 0.0) + e.self_cpu_time_total / total
        out["kinds"] = sorted(kinds.items(), key=lambda kv: -kv[1])
        products = [e for e in prof.key_averages(group_by_input_shape=True) if op_kind(e.key) == "matrix products"]
        out["products_s"] = sum(e.self_cpu_time_total for e in products) / 1e6
        thin = [e for e in products if thin_product(e.key, e.input_shapes)]
        out["thin_products_s"] = sum(e.self_cpu_time_total for e in thin) / 1e6
        out["thin_products_flops"] = sum(e.count * product_flops(e.key, e.input_shapes) for e in thin)
        out["profiled_s"] = total / 1e6
        out.update(step_arithmetic(step))
    return out


def thin_product(op: str, shapes: list) -> bool:
    """A matrix product with a dimension of at most 8 (Winograd's tile transforms, G W): bound by
    memory traffic, not arithmetic, so its time says nothing of the multiply-add rate."""
    return any(len(shape) >= 2 and min(shape[-2:]) <= 8 for shape in _operands(op, shapes))


def product_flops(op: str, shapes: list) -> int:
    """2 b n k m of one (batched) matrix product (b, n, k) x (b, k, m)."""
    a, b = _operands(op, shapes)
    return 2 * math.prod(a) * b[-1]


def _operands(op: str, shapes: list) -> list:
    return shapes[1:3] if op in ("aten::addmm", "aten::baddbmm") else shapes[:2]


# A large batched matrix product, the shape class of the Winograd and attention products: the
# rate this CPU (at this ISA and thread count) reaches on matrix products, the roofline's ceiling.
REFERENCE_BMM = (8, 4096, 512, 512)


def step_arithmetic(step) -> dict:
    """The floating-point work of one training step (``torch.utils.flop_counter``: matrix products
    and convolutions, forward and backward) and the rate of ``REFERENCE_BMM`` on this CPU."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    flops = {str(op).removeprefix("aten."): n for op, n in counter.get_flop_counts()["Global"].items()}
    b, n, k, m = REFERENCE_BMM
    x, y = torch.randn(b, n, k), torch.randn(b, k, m)
    torch.bmm(x, y)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        torch.bmm(x, y)
        times.append(time.perf_counter() - start)
    return {"flops": flops, "reference_gflops": 2 * b * n * k * m / min(times) / 1e9}


# Kinds of work in a training step, by operator name (first match wins); the rest is "other".
OP_KINDS = (
    ("attention", ("scaled_dot_product", "flash_attention", "_efficient_attention")),
    ("matrix products", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")),
    ("convolutions", ("convolution", "conv1d", "conv2d", "conv_transpose")),
    ("norms", ("layer_norm", "group_norm", "batch_norm")),
    ("activations", ("gelu", "relu", "silu", "tanh", "sigmoid")),
    ("copies and layout", ("aten::copy_", "aten::cat", "aten::stack", "aten::contiguous", "aten::clone",
                           "aten::constant_pad_nd", "aten::index", "aten::repeat")),
    ("random numbers", ("bernoulli", "random_", "randint", "aten::rand", "aten::normal_", "aten::uniform_")),
    ("optimiser and clipping", ("adam", "_foreach", "clip_grad", "norm")),
    ("pooling", ("pool",)),
    ("elementwise", ("aten::add", "aten::mul", "aten::sub", "aten::div", "aten::where", "aten::masked_fill",
                     "aten::fill_", "aten::zero_", "aten::sum", "aten::mean", "aten::pow", "aten::ge", "aten::lt",
                     "aten::gt", "aten::le", "aten::eq", "aten::ne", "aten::bitwise", "aten::logical", "aten::clamp",
                     "aten::exp", "aten::log", "aten::sqrt", "aten::rsqrt", "aten::neg", "aten::abs", "aten::sin",
                     "aten::cos", "aten::frac", "aten::amax", "aten::amin", "aten::any", "aten::all")),
)


def op_kind(name: str) -> str:
    """The kind of work (``OP_KINDS``) a profiler event name belongs to."""
    low = name.lower()
    for kind, keys in OP_KINDS:
        if any(k.lower() in low for k in keys):
            return kind
    return "other"


def pipeline(rows: int, workdir: Path, compression: str | None = None) -> dict:
    """Rows/s (CPU time) and peak RSS of shuffled batch reading alone (no model)."""
    import numpy as np

    from lcgen.train.data import SpectraSource, iter_batches

    path = workdir / "pipeline.h5"
    write_spectra(path, rows, compression=compression)
    file_mb = path.stat().st_size / 2**20
    base = peak_rss_mb()
    with SpectraSource(path, "psd") as src:
        start, cpu = time.perf_counter(), time.process_time()
        n = sum(len(b["index"]) for b in iter_batches(src, np.arange(rows), 128, shuffle=True, seed=0))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"rows": rows, "compression": compression or "none", "file_mb": file_mb,
            "rows_per_s": n / seconds, "rows_per_cpu_s": n / cpu,
            "rss_growth_mb": peak_rss_mb() - base, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--presets", nargs="*", default=["small", "default"])
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per epoch [default: 6 for small, 1 for default]")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--compile", action="store_true", help="train with torch.compile")
    parser.add_argument("--compression", nargs="*", default=["none", "gzip", "lzf"],
                        help="storage of the data-pipeline file(s)")
    parser.add_argument("--pipeline-rows", type=int, default=20000)
    parser.add_argument("--profile", action="store_true", help="profile one training step per model and preset")
    parser.add_argument("--against", metavar="REF", help="compare training steps with git revision REF, interleaved")
    parser.add_argument("--rounds", type=int, default=2, help="--against: children per tree, alternating")
    parser.add_argument("--batch", type=int, default=None, help="--profile/--against: batch size [default: the trainer's]")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads in every child [default: $BENCH_THREADS, else torch's default]")
    parser.add_argument("--isa", choices=["native", *ISA_ENV], default="native",
                        help="hold every child's ATen, oneDNN and MKL kernels to this instruction set [default: the CPU's]")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "PRESET"), help=argparse.SUPPRESS)
    parser.add_argument("--step", nargs=3, metavar=("MODEL", "PRESET", "BATCH"), help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads is not None:
        os.environ["BENCH_THREADS"] = str(args.threads)  # read by the children
    os.environ.update(ISA_ENV.get(args.isa, {}))  # inherited by the children
    import lcgen  # noqa: F401  before torch, as the CLI imports them: lcgen sets torch's allocator options

    with tempfile.TemporaryDirectory() as tmp:
        if args.one:
            print(json.dumps(one(*args.one, args.steps or 6, args.device, Path(tmp), args.compile)))
            return
        if args.step:
            model, preset, batch = args.step
            print(json.dumps(train_steps(model, preset, int(batch), args.steps or 2, args.profile)))
            return
        if args.pipeline:
            comp = args.compression[0]
            print(json.dumps(pipeline(args.pipeline_rows, Path(tmp), None if comp == "none" else comp)))
            return

    from lcgen.models import list_models

    models = args.models or list_models()
    if args.profile or args.against:
        steps_table(args, models, ["default"] if args.presets == ["small", "default"] else args.presets)
        return
    print(f"device {args.device}{' (compiled)' if args.compile else ''}, torch threads "
          f"{os.environ.get('BENCH_THREADS', 'default')}, load average {os.getloadavg()[0]:.1f}; default batch "
          f"sizes; samples/s of epoch 2; peak RSS of the child process")
    print(f"{'model':<12}{'preset':<9}{'params':>12}{'batch':>7}{'threads':>8}{'steps':>7}{'ms/step':>10}{'samples/s':>11}"
          f"{'s/50k epoch':>13}{'data wait':>11}{'peak RSS MB':>13}")
    for model in models:
        for preset in args.presets:
            steps = args.steps or (1 if preset == "default" else 6)
            r = _child(["--one", model, preset, "--steps", str(steps), "--device", args.device]
                       + (["--compile"] if args.compile else []))
            if "error" in r:
                print(f"{model:<12}{preset:<9}  failed: {r['error']}")
                continue
            gpu = f"  (GPU peak {r['peak_gpu_mb']:,.0f} MB)" if "peak_gpu_mb" in r else ""
            print(f"{model:<12}{preset:<9}{r['params']:>12,}{r['batch']:>7}{r['threads']:>8}{r['steps']:>7}{r['step_ms']:>10.1f}"
                  f"{r['samples_per_s']:>11,.1f}{r['epoch_50k_s']:>13,.1f}{r['data_wait']:>11.1%}"
                  f"{r['peak_rss_mb']:>13,.0f}{gpu}")
    print(f"\ndata pipeline: {args.pipeline_rows:,} x 1024 spectra (4 channels + mask), shuffled, batch 128")
    print(f"{'storage':<10}{'MB on disk':>12}{'rows/s':>10}{'rows/CPU-s':>12}{'RSS growth MB':>15}")
    for comp in args.compression:
        r = _child(["--pipeline", "--pipeline-rows", str(args.pipeline_rows), "--compression", comp])
        if "error" in r:
            print(f"{comp:<10}  failed: {r['error']}")
            continue
        print(f"{comp:<10}{r['file_mb']:>12,.0f}{r['rows_per_s']:>10,.0f}{r['rows_per_cpu_s']:>12,.0f}"
              f"{r['rss_growth_mb']:>15,.0f}")


def steps_table(args, models: list[str], presets: list[str]) -> None:
    """--profile and --against: per-step CPU time in children, this tree and (--against) REF."""
    from lcgen.train.trainer import MODEL_DEFAULTS

    with tempfile.TemporaryDirectory() as tmp:
        trees = {"new": ROOT}
        if args.against:
            trees = {"old": Path(tmp) / "old", "new": ROOT}
            trees["old"].mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.against, "lcgen"],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(trees["old"])], input=archive, check=True)
        print(f"training steps on cpu, torch threads {os.environ.get('BENCH_THREADS', 'default')}, "
              f"load average {os.getloadavg()[0]:.1f} at the start; min over {args.steps or 2} steps per child "
              f"after a warm-up step" + (f"; {args.rounds} children per tree, alternating" if args.against else ""))
        for model in models:
            batch = args.batch or MODEL_DEFAULTS.get(model, {"batch_size": 64})["batch_size"]
            for preset in presets:
                results = {name: [] for name in trees}
                for _ in range(args.rounds if args.against else 1):
                    for name, tree in trees.items():
                        extra = ["--step", model, preset, str(batch), "--steps", str(args.steps or 2)]
                        r = _child(extra + (["--profile"] if args.profile and name == "new" else []), tree)
                        if "error" in r:
                            print(f"{model} {preset} {name}: failed: {r['error']}")
                            continue
                        results[name].append(r)
                        print(f"  {model:<12}{preset:<9}{name:<4} batch {batch:>4}, {r['threads']} threads: "
                              f"{r['cpu_s']:7.2f} s CPU/step, {r['wall_s']:7.2f} s wall/step "
                              f"({batch / r['wall_s']:6.1f} samples/s), kernel {r.get('sys_s', float('nan')):.2f} s, "
                              f"{r.get('minflt', 0) / 1000:,.0f}k faults, peak RSS {r['peak_rss_mb']:,.0f} MB, "
                              f"load {r['load']:.1f}, {r.get('isa', '?')}", flush=True)
                        if "kinds" in r:
                            print("      by kind: " + ", ".join(f"{kind} {share:.1%}" for kind, share in r["kinds"]
                                                            if share >= 0.005))
                        for op, seconds, share, count in r.get("top", []):
                            print(f"      {op[:60]:<62}{seconds:8.3f} s {share:6.1%} {count:6d} calls")
                        if "flops" in r:
                            print(arithmetic_summary(r))
                if args.against and all(results.values()):
                    cpu = {name: min(r["cpu_s"] for r in rs) for name, rs in results.items()}
                    wall = {name: min(r["wall_s"] for r in rs) for name, rs in results.items()}
                    rss = {name: max(r["peak_rss_mb"] for r in rs) for name, rs in results.items()}
                    print(f"{model} {preset} batch {batch}, {results['new'][0]['threads']} threads, old -> new: "
                          f"CPU/step {cpu['old']:.2f} -> {cpu['new']:.2f} s ({cpu['old'] / cpu['new']:.2f}x), "
                          f"wall/step {wall['old']:.2f} -> {wall['new']:.2f} s, samples/s {batch / wall['old']:.2f} -> "
                          f"{batch / wall['new']:.2f} ({wall['old'] / wall['new']:.2f}x), peak RSS "
                          f"{rss['old']:,.0f} -> {rss['new']:,.0f} MB (best times, worst memory of the children)",
                          flush=True)


def arithmetic_summary(r: dict) -> str:
    """How far the step is from its arithmetic's floor: the counted GFLOP at the reference rate."""
    flops = r["flops"]
    total = sum(flops.values()) / 1e9
    products = sum(n for op, n in flops.items() if op in ("mm", "addmm", "bmm", "baddbmm")) / 1e9
    ceiling = r["reference_gflops"]
    thick_s = r["products_s"] - r.get("thin_products_s", 0.0)
    products -= r.get("thin_products_flops", 0) / 1e9
    rate = products / thick_s if thick_s else float("nan")  # on the profiler's clock
    floor = total / ceiling
    return (f"      arithmetic: {total:.1f} GFLOP per step ("
            + ", ".join(f"{op} {n / 1e9:.1f}" for op, n in sorted(flops.items(), key=lambda kv: -kv[1]))
            + f"); the profiled operators {r['profiled_s']:.2f} s, of which matrix products {r['products_s']:.2f} s "
            f"({r.get('thin_products_s', 0.0):.2f} s in products with a dimension <= 8, e.g. Winograd's transforms); "
            f"the others, {products:.1f} GFLOP, at {rate:.1f} GFLOP/s = {rate / ceiling:.0%} of this CPU's "
            f"{ceiling:.1f} GFLOP/s ({'x'.join(map(str, REFERENCE_BMM))} bmm, {r['threads']} threads, {r.get('isa', '?')}); "
            f"all {total:.1f} GFLOP at that rate: {floor:.2f} s, against the step's {r['wall_s']:.2f} s: "
            f"at most {r['wall_s'] / floor:.2f}x faster with this arithmetic"
            + ("; attention is not counted (no FLOP formula for the CPU's fused kernel), so its time is in "
               "the step but not in the floor" if any(kind == "attention" for kind, _ in r.get("kinds", [])) else ""))


def _child(extra: list[str], tree: Path = ROOT) -> dict:
    env = {**os.environ, "BENCH_TREE": str(tree)}
    if USER_THP is None:
        env.pop("THP_MEM_ALLOC_ENABLE", None)
    proc = subprocess.run([sys.executable, __file__, *extra], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
