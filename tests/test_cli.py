"""The CLI as a user meets it, through real subprocesses."""

import h5py
import pytest

from lcgen import __version__
from lcgen.features.convert import ConvertConfig, convert
from lcgen.io import partial_path
from tests.conftest import run_cli


def test_version_and_help():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"lcgen {__version__}"
    r = run_cli("--help")
    assert r.returncode == 0
    for command in ("convert", "info"):
        assert command in r.stdout


def test_convert_then_info_end_to_end(tmp_path, raw_file):
    out = tmp_path / "ts.h5"
    r = run_cli("convert", "--input", raw_file, "--output", out, "--max-length", 128, "--set", "min_points=8")
    assert r.returncode == 0, r.stderr
    assert "windows written" in r.stdout
    with h5py.File(out) as f:
        assert f["flux"].shape[1] == 128 and f.attrs["format"] == "timeseries"
    r = run_cli("info", out)
    assert r.returncode == 0, r.stderr
    assert "timeseries" in r.stdout and "max_length: 128" in r.stdout and "(" in r.stdout


@pytest.mark.parametrize("args, message", [
    (("convert", "--input", "nowhere.h5"), "nowhere.h5 does not exist; make one with `lcgen generate`"),
    (("convert", "--set", "max_lenth=3"), "unknown setting 'max_lenth'; did you mean 'max_length'?"),
    (("convert", "--strategy", "all"), "setting 'strategy' = 'all' is not one of 'window', 'truncate'"),
    (("info", "nowhere.h5"), "nowhere.h5 does not exist"),
])
def test_expected_errors_are_one_red_line(tmp_path, args, message):
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 1
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 2


def test_debug_shows_traceback(tmp_path):
    r = run_cli("info", "nowhere.h5", cwd=tmp_path, env={"LCGEN_DEBUG": "1"})
    assert r.returncode == 1 and "Traceback" in r.stderr and "LcgenError" in r.stderr


def test_interrupted_convert_leaves_no_file(tmp_path, raw_file):
    out = tmp_path / "ts.h5"

    def interrupt(_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(ConvertConfig(input=str(raw_file), output=str(out)), progress=interrupt)
    assert not out.exists() and not partial_path(out).exists()
