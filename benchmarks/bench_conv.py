"""CPU seconds of one width-3 convolution (forward + backward) of the UNet at each level's shape,
computed five ways on channels-last (B, L, C) tensors, interleaved on the same inputs:

- ``onednn``: oneDNN's channels-last 2-D convolution of height 1 (the UNet before issue 19's third
  pass, ``unet.Conv``);
- ``shift3``: one matrix product x (B L, C_in) x (C_in, 3 C_out), then the three slices shifted by
  one position and added (the backward: three shifted copies, then two matrix products);
- ``unfold``: the three shifted copies of x side by side (B L, 3 C_in), then one matrix product;
- ``winograd``: Winograd F(6, 3) (``lcgen.models.winograd``, the UNet's): eight matrix products of
  4/9 of the multiply-adds in all, plus the tile transforms; ``winograd4``: F(4, 3), six products
  of half the multiply-adds (the UNet's before issue 19's seventh pass);
- ``sameconv``: oneDNN's forward and input gradient, the weight's gradient as one matrix product
  per tap (``unet._SameConv``, the UNet's convolutions below ``WINOGRAD_MIN_CHANNELS``).

One torch thread, ``time.process_time`` (other processes' load barely moves it); best of
``--repeats``; GFLOP/s counts the direct convolution's 3 x 2 B L C_in C_out per pass (x3 for
forward and backward), so a faster algorithm shows above the machine's matrix-product rate.

    python benchmarks/bench_conv.py                  # batch 128, the default UNet's shapes
    python benchmarks/bench_conv.py --batch 32 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lcgen  # noqa: E402, F401  before torch, as the CLI imports them: lcgen sets torch's allocator options
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lcgen.models.unet import _SameConv  # noqa: E402
from lcgen.models.winograd import winograd_conv3  # noqa: E402

# (length, C_in, C_out) of every width-3 convolution in the default UNet (input length 1024).
SHAPES = [(1024, 64, 64), (1024, 128, 64), (512, 64, 128), (512, 128, 128), (512, 256, 128),
          (256, 128, 256), (256, 256, 256), (256, 512, 256), (128, 256, 512), (128, 512, 512),
          (128, 1024, 512), (64, 512, 512)]


def onednn(x, w, b):
    y = F.conv2d(x.transpose(1, 2).unsqueeze(2), w.unsqueeze(2), b, padding=(0, 1))
    return y.squeeze(2).transpose(1, 2)


class _ShiftAdd(torch.autograd.Function):
    """z (B, L, 3, C) -> y[l] = z[l - 1, 0] + z[l, 1] + z[l + 1, 2] (zero beyond the ends)."""

    @staticmethod
    def forward(ctx, z):
        y = z[:, :, 1].clone()
        y[:, 1:] += z[:, :-1, 0]
        y[:, :-1] += z[:, 1:, 2]
        return y

    @staticmethod
    def backward(ctx, dy):
        B, L, C = dy.shape
        dz = dy.new_empty(B, L, 3, C)
        dz[:, :, 1] = dy
        dz[:, :-1, 0] = dy[:, 1:]
        dz[:, -1, 0] = 0
        dz[:, 1:, 2] = dy[:, :-1]
        dz[:, 0, 2] = 0
        return dz


def shift3(x, w, b):
    B, L, _ = x.shape
    c_out = w.shape[0]
    z = F.linear(x, w.permute(2, 0, 1).reshape(3 * c_out, -1)).view(B, L, 3, c_out)
    return _ShiftAdd.apply(z) + b


def unfold(x, w, b):
    xs = F.pad(x, (0, 0, 1, 1)).unfold(1, 3, 1)  # (B, L, C_in, 3) view
    return F.linear(xs.reshape(*x.shape[:2], -1), w.reshape(w.shape[0], -1), b)


def same_conv(x, w, b):
    return _SameConv.apply(w, b, x)


def winograd4(x, w, b):
    return winograd_conv3(x, w, b, tile=4)


VARIANTS = {"onednn": onednn, "shift3": shift3, "unfold": unfold, "winograd": winograd_conv3, "winograd4": winograd4,
            "sameconv": same_conv}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--lengths", nargs="*", type=int, default=None, help="only the shapes of these lengths")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"one width-3 convolution, forward + backward, batch {args.batch}, 1 thread, load average "
          f"{os.getloadavg()[0]:.1f}; CPU ms (best of {args.repeats}) and direct-convolution GFLOP/s")
    print(f"{'L':>6}{'C_in':>6}{'C_out':>6}" + "".join(f"{v:>20}" for v in args.variants) + "   max rel. diff")
    totals = dict.fromkeys(args.variants, 0.0)
    for L, c_in, c_out in SHAPES:
        if args.lengths and L not in args.lengths:
            continue
        x = torch.randn(args.batch, L, c_in, requires_grad=True)
        conv = torch.nn.Conv1d(c_in, c_out, 3, padding=1)
        g = torch.randn(args.batch, L, c_out)
        best = dict.fromkeys(args.variants, float("inf"))
        outs = {}
        for _ in range(args.repeats):
            for name in args.variants:
                start = time.process_time()
                y = VARIANTS[name](x, conv.weight, conv.bias)
                grads = torch.autograd.grad(y, [x, conv.weight, conv.bias], g)
                best[name] = min(best[name], time.process_time() - start)
                outs[name] = (y.detach(), *grads)
        ref = outs[args.variants[0]]
        diff = max(((a - b).abs().max() / b.abs().max()).item() for name in args.variants for a, b in zip(outs[name], ref))
        flops = 3 * 2 * 3 * args.batch * L * c_in * c_out
        for name in args.variants:
            totals[name] += best[name]
        print(f"{L:>6}{c_in:>6}{c_out:>6}" + "".join(f"{1000 * best[v]:>10.0f} ms {flops / best[v] / 1e9:>4.0f} GF"
                                                     for v in args.variants) + f"   {diff:.1e}")
    print(f"{'total':>18}" + "".join(f"{1000 * totals[v]:>10.0f} ms{'':>7}" for v in args.variants))


if __name__ == "__main__":
    main()
