"""The small trained model shipped with lcgen: the run ``lcgen fill`` and ``lcgen embed`` use when
none is given, and the starting point for fine-tuning (``lcgen train transformer --init bundled``).

It is an ordinary run directory inside the package, ``lcgen/weights/bundled/``: ``best.pt`` (the
weights, model and training config, plus ``license`` and ``provenance``: the command line that
trained it, lcgen version, git commit, data preset and seed), ``config.yaml`` and a README.
:func:`export` makes it from a finished run (``python -m lcgen.bundled RUN_DIR OUT_DIR ...``,
the last step of ``benchmarks/train_bundled.sh``).
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
from pathlib import Path

from lcgen import __version__
from lcgen.errors import LcgenError

BUNDLED_DIR = Path(__file__).parent / "weights" / "bundled"
BUNDLED_NAME = "bundled"  # what --init and RUN_DIR arguments accept for BUNDLED_DIR
LICENSE = ("MIT (the lcgen license). Trained by lcgen's own commands on lcgen's mock light curves only: "
           "no third-party data or weights.")


def bundled_run() -> Path:
    """The bundled run directory; an error if this installation lacks it."""
    if not (BUNDLED_DIR / "best.pt").is_file():
        raise LcgenError(f"the bundled model is missing from this installation ({BUNDLED_DIR}); give a run "
                         f"directory, or reinstall lcgen")
    return BUNDLED_DIR


def resolve_run(run_dir: str | Path | None) -> Path:
    """``run_dir`` as a path: None or ``bundled`` mean :func:`bundled_run`."""
    if run_dir is None or str(run_dir) == BUNDLED_NAME:
        return bundled_run()
    return Path(run_dir)


def provenance(run_dir: str | Path | None = None) -> dict:
    """The ``provenance`` dict of a run's best.pt (the bundled run by default; {} if it has none),
    with its ``license``."""
    from lcgen.train.trainer import load_checkpoint

    ckpt = load_checkpoint(resolve_run(run_dir) / "best.pt")
    return {**ckpt.get("provenance", {}), **({"license": ckpt["license"]} if "license" in ckpt else {})}


def _git_commit(where: Path) -> str:
    """HEAD of the repository holding ``where``, with ``-dirty`` if tracked files differ; "" outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        head = git("rev-parse", "HEAD")
        return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return ""


def export(run_dir: str | Path, out_dir: str | Path, *, command: str, preset: str, seed: int,
           commit: str | None = None) -> Path:
    """Copy a finished run's best.pt and config.yaml to ``out_dir``, with the license and provenance recorded in the checkpoint and
    in a README. ``commit``: the lcgen git commit that trained it (default: this checkout's HEAD).
    Returns ``out_dir``."""
    import torch

    from lcgen.io import atomic_path
    from lcgen.train.trainer import load_checkpoint

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    ckpt = load_checkpoint(run_dir / "best.pt")
    tcfg = ckpt["train_config"]
    prov = {"command": command, "lcgen_version": __version__, "git_commit": commit or _git_commit(Path(__file__).parent),
            "data_preset": preset, "seed": int(seed), "data": str(tcfg.get("data")),
            "epochs": tcfg.get("epochs"), "trained_run": str(run_dir),
            **({"init": str(tcfg["init"])} if tcfg.get("init") else {}),  # fine-tuned from this run's weights
            "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    slim = {**ckpt, "license": LICENSE, "provenance": prov}  # best.pt holds no optimiser state
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "best.pt") as tmp:
        torch.save(slim, tmp)
    shutil.copyfile(run_dir / "config.yaml", out_dir / "config.yaml")
    lines = ["# lcgen's bundled model", "", "The default run of `lcgen fill` and `lcgen embed`; fine-tune it with",
             "`lcgen train transformer --init bundled --data YOUR_WINDOWS.h5`.", "",
             f"License: {LICENSE}", "", "Provenance:", ""]
    lines += [f"- {k}: `{v}`" for k, v in prov.items()]
    (out_dir / "README.md").write_text("\n".join(lines) + "\n")
    return out_dir


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m lcgen.bundled", description=export.__doc__)
    p.add_argument("run_dir")
    p.add_argument("out_dir")
    p.add_argument("--command", required=True, help="the command line that trained the run")
    p.add_argument("--preset", required=True, help="the lcgen generate --preset of its data")
    p.add_argument("--seed", type=int, required=True, help="the training seed")
    p.add_argument("--commit", help="the lcgen git commit that trained the run (default: HEAD here)")
    a = p.parse_args(argv)
    print(export(a.run_dir, a.out_dir, command=a.command, preset=a.preset, seed=a.seed, commit=a.commit))


if __name__ == "__main__":
    main()
