"""float32 error of the UNet's Winograd convolutions, F(4, 3) and F(6, 3), and of oneDNN's direct
float32 convolution, against the direct convolution in float64, on the inputs each Winograd
convolution of a UNet sees: a trained run's model on rows of its spectra file, and a freshly
initialised default-width UNet (widths 64-512) on the same rows.

For each convolution: the largest error over the output's largest value, and the RMS error over
the output's RMS.

    python benchmarks/winograd_accuracy.py RUN_DIR SPECTRA.h5 [--rows 64]
    # e.g. the README demo's UNet: demo/runs/unet/demo demo/data/preprocessed.h5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lcgen.masking import model_input  # noqa: E402
from lcgen.models import unet  # noqa: E402
from lcgen.train.data import open_source  # noqa: E402
from lcgen.train.trainer import load_run  # noqa: E402


def errors(got: torch.Tensor, want: torch.Tensor) -> tuple[float, float]:
    """(max |error| / max |want|, RMS error / RMS want)."""
    diff = got.double() - want
    return (diff.abs().max() / want.abs().max()).item(), (diff.pow(2).mean() / want.pow(2).mean()).sqrt().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("data", help="the spectra file the run trained on")
    parser.add_argument("--rows", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, cfg = load_run(args.run_dir)
    batch = open_source(args.data, "spectra", cfg.channel).read(np.arange(args.rows))
    values, valid = torch.as_tensor(batch["values"]).float(), torch.as_tensor(batch["valid"]).bool()
    x = model_input(values, valid, torch.zeros_like(valid)).transpose(1, 2)
    seen = []
    winograd = unet.winograd_conv3

    def spy(xs, weight, bias):
        seen.append(([p.detach().clone() for p in (xs if isinstance(xs, list) else [xs])], weight.detach(), bias.detach()))
        return winograd(xs, weight, bias)

    unet.winograd_conv3 = spy
    torch.manual_seed(0)
    fresh = unet.UNetAutoencoder(unet.UNetConfig(input_length=x.shape[-1])).eval()
    with torch.no_grad():
        for name, m in [(f"trained ({args.run_dir})", model), ("default widths, fresh", fresh)]:
            seen.clear()
            m(x)
            print(f"{name}: {args.rows} rows of {args.data}; error / scale as max, RMS")
            print(f"{'L':>5}{'C_in':>6}{'C_out':>6}{'F(4, 3)':>22}{'F(6, 3)':>22}{'oneDNN float32':>22}")
            for xs, w, b in seen:
                cat = torch.cat(xs, -1)
                want = F.conv1d(cat.double().transpose(1, 2), w.double(), b.double(), padding=1).transpose(1, 2)
                row = [errors(winograd(xs, w, b, tile=tile), want) for tile in (4, 6)]
                row.append(errors(F.conv1d(cat.transpose(1, 2), w, b, padding=1).transpose(1, 2), want))
                print(f"{cat.shape[1]:>5}{w.shape[1]:>6}{w.shape[0]:>6}" + "".join(f"{a:>11.1e}{r:>11.1e}" for a, r in row))


if __name__ == "__main__":
    main()
