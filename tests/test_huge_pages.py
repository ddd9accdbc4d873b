"""Transparent huge pages per model in training (lcgen.workers.choose_huge_pages).

Torch reads its switch (THP_MEM_ALLOC_ENABLE) once, at the process's first tensor; a tensor in
huge pages is one whose memory the allocator marked with madvise(MADV_HUGEPAGE), which the kernel
shows as the flag ``hg`` of its mapping in /proc/self/smaps. Each case runs in a fresh process."""

import os
import subprocess
import sys
import textwrap

import pytest

from lcgen.train import trainer
from lcgen.train.trainer import TrainConfig
from tests.conftest import ROOT
from tests.test_data import write_spectra, write_timeseries

# A 12 MB tensor made last in the process, and whether its mapping is marked for huge pages.
PROBE = """
def in_huge_pages(t):
    addr = t.data_ptr()
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split()[0]
            if "-" in first and not first.endswith(":"):
                lo, hi = (int(x, 16) for x in first.split("-"))
                inside = lo <= addr < hi
            elif inside and line.startswith("VmFlags:"):
                return "hg" in line.split()[1:]
    raise AssertionError("the tensor's mapping is not in /proc/self/smaps")

print("HUGE", in_huge_pages(torch.empty(3_000_000)))
"""


def huge_pages_after(body: str, env: dict | None = None) -> bool:
    """Run ``body`` in a fresh Python (lcgen and torch imported first), then report whether a new
    12 MB tensor is in huge pages."""
    script = "import os, sys\nimport lcgen\nimport torch\n" + textwrap.dedent(body) + PROBE
    full_env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    full_env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})})
    out = subprocess.run([sys.executable, "-c", script], env=full_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1] == "HUGE True"


def test_no_lcgen_module_makes_a_tensor_as_it_is_imported():
    """Every lcgen module imported, then the switch turned off: the next tensor is not in huge
    pages, so training can still choose. The control: one tiny tensor made before the switch
    changes, and torch keeps the import-time setting (on) for good."""
    import_all = """
        import importlib, pkgutil
        for m in pkgutil.walk_packages(lcgen.__path__, "lcgen."):
            if m.name != "lcgen.__main__":
                importlib.import_module(m.name)
    """
    import_all = textwrap.dedent(import_all)
    assert huge_pages_after(import_all + "os.environ['THP_MEM_ALLOC_ENABLE'] = '0'\n") is False
    assert huge_pages_after(import_all + "torch.empty(1)\nos.environ['THP_MEM_ALLOC_ENABLE'] = '0'\n") is True


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("thp")
    spectra = root / "spectra.h5"
    write_spectra(spectra, n=24, length=64)
    return {"transformer": write_timeseries(root, n_curves=4, length=64, n_range=(60, 120)), "unet": spectra}


@pytest.mark.parametrize("model, user, huge", [("transformer", None, False), ("unet", None, True),
                                               ("transformer", "1", True), ("unet", "0", False)])
def test_training_puts_tensors_in_huge_pages_as_its_model_says_unless_the_user_set_it(data, tmp_path, model, user,
                                                                                       huge):
    """The UNet trains in huge pages, the transformer not; THP_MEM_ALLOC_ENABLE set by the user
    wins either way."""
    body = f"""
        from lcgen.train.trainer import TrainConfig, fit
        fit(TrainConfig(model_name={model!r}, preset="tiny", data={str(data[model])!r}, epochs=1, batch_size=8,
                        runs_dir={str(tmp_path)!r}, device="cpu", threads=1))
    """
    assert huge_pages_after(body, env={} if user is None else {"THP_MEM_ALLOC_ENABLE": user}) is huge


def test_resumed_runs_choose_by_the_model_in_their_config(tmp_path, monkeypatch):
    """A resumed run is chosen for by its config.yaml, read before any checkpoint; an unreadable
    or foreign one leaves the switch as it was; a user's setting is never touched."""
    import lcgen

    monkeypatch.setattr(lcgen, "THP_SET_BY_USER", False)
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "1")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model_name: transformer\npreset: tiny\n")
    trainer._choose_huge_pages(None, run)
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "0"
    (run / "config.yaml").write_text("model_name: unet\n")
    trainer._choose_huge_pages(None, run)
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "1"
    for text in ("model_name: nosuchmodel\n", "[not, a, mapping]\n", ": : :\n"):
        monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "x")
        (run / "config.yaml").write_text(text)
        trainer._choose_huge_pages(None, run)
        assert os.environ["THP_MEM_ALLOC_ENABLE"] == "x"
    trainer._choose_huge_pages(None, tmp_path / "missing")  # fit itself reports the missing run
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "x"
    monkeypatch.setattr(lcgen, "THP_SET_BY_USER", True)
    trainer._choose_huge_pages(TrainConfig(model_name="transformer"), None)
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "x"
