"""Benchmark `lcgen ingest`: files/s on one core for Kepler-sized (4,400 cadences, one long-cadence
quarter) and TESS-sized (20,000 cadences, one 2-min sector) light-curve FITS files written in the
archive layouts (tests/archive_files.py), and peak memory as the number of files doubles.

    python benchmarks/bench_ingest.py                # 400 Kepler + 200 TESS files
    python benchmarks/bench_ingest.py -n 1000

Target (issue 9): >= 100 files/s on one core; memory bounded by one target's files, not the input.
Times are CPU seconds of this process (time.process_time) beside the wall clock, because the
machine may be shared.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core

import multiprocessing  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from lcgen.ingest import IngestConfig, ingest  # noqa: E402
from tests.archive_files import KEPLER_LONG_CADENCE_D, TESS_2MIN_D, write_kepler, write_tess  # noqa: E402


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def make_files(folder: Path, kind: str, n_files: int, sectors_per_target: int) -> None:
    """``n_files`` files; every ``sectors_per_target`` consecutive files belong to one target."""
    rng = np.random.default_rng(0)
    n, dt, t0 = (4400, KEPLER_LONG_CADENCE_D, 120.0) if kind == "kepler" else (20000, TESS_2MIN_D, 1325.0)
    for i in range(n_files):
        target, segment = divmod(i, sectors_per_target)
        time_ = t0 + segment * (n * dt + 2.0) + dt * np.arange(n)
        flux = 1000 + rng.normal(0, 1, n)
        flux[rng.random(n) < 0.02] = np.nan
        quality = np.where(rng.random(n) < 0.05, 2 ** rng.integers(0, 12, n), 0)
        if kind == "kepler":
            write_kepler(folder / f"kplr{target:09d}-q{segment + 1:02d}_llc.fits", kepid=target + 1, segment=segment + 1,
                         time=time_, pdc=flux, pdc_err=np.ones(n), quality=quality)
        else:
            write_tess(folder / f"tess-s{segment + 1:04d}-{target:016d}_lc.fits", ticid=target + 1, sector=segment + 1,
                       time=time_, pdc=flux, pdc_err=np.ones(n), quality=quality)


def measure(folder: str, output: str) -> tuple[float, float, dict, float]:
    """Ingest ``folder`` in this (fresh) process: CPU s, wall s, summary, peak RSS (MiB)."""
    cfg = IngestConfig(inputs=[folder], output=output)
    cpu, wall = time.process_time(), time.perf_counter()
    result = ingest(cfg)
    return time.process_time() - cpu, time.perf_counter() - wall, result, peak_mib()


def compare_parsers(folder: str, rounds: int = 3) -> tuple[float, float]:
    """CPU seconds per file to open a file and read its columns: the fast parser and astropy,
    interleaved file by file on the same files (best of ``rounds``)."""
    from astropy.io import fits

    from lcgen.ingest.readers import open_fits

    columns = ("TIME", "PDCSAP_FLUX", "PDCSAP_FLUX_ERR")

    def fast(path):
        _, names, tables = open_fits(path)
        table = tables[names.index("LIGHTCURVE")]
        return [table.header.get("TIMEDEL")] + [table.column(name) for name in columns]

    def astropy(path):  # the plain way: open, look up the extension, read three columns
        with fits.open(path) as hdul:
            hdu = hdul["LIGHTCURVE"]
            return [hdu.header.get("TIMEDEL")] + [np.array(hdu.data[name]) for name in columns]

    files = sorted(Path(folder).iterdir())
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        spent = [0.0, 0.0]
        for path in files:
            for k, read in enumerate((fast, astropy)):
                start = time.process_time()
                read(path)
                spent[k] += time.process_time() - start
        best = [min(b, s / len(files)) for b, s in zip(best, spent)]
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--n-files", type=int, default=400, help="Kepler files (TESS: half as many)")
    args = parser.parse_args()
    console = Console(width=120)
    table = Table(title="lcgen ingest, one core (CPU seconds of the ingesting process; wall clock beside)")
    for col in ("files", "cadences/file", "files/target", "CPU s", "files/s (CPU)", "wall s", "files/s (wall)",
                "points written", "peak RSS (MiB)"):
        table.add_column(col, justify="right")
    parsers = {}
    spawn = multiprocessing.get_context("spawn")  # each measurement in a fresh process: its own peak RSS
    with tempfile.TemporaryDirectory() as tmp:
        for kind, n_files, per_target in (("kepler", args.n_files // 2, 4), ("kepler", args.n_files, 4),
                                          ("tess", args.n_files // 4, 2), ("tess", args.n_files // 2, 2)):
            folder = Path(tmp) / f"{kind}-{n_files}"
            folder.mkdir()
            make_files(folder, kind, n_files, per_target)
            with spawn.Pool(1) as pool:
                cpu, wall, result, rss = pool.apply(measure, (str(folder), str(Path(tmp) / f"{kind}-{n_files}.h5")))
            assert result["files_read"] == n_files, result["skipped"][:3]
            if n_files == args.n_files // 2 and kind == "kepler" or n_files == args.n_files // 4:
                with spawn.Pool(1) as pool:
                    parsers[kind] = pool.apply(compare_parsers, (str(folder),))
            table.add_row(f"{n_files:,}", "4,400" if kind == "kepler" else "20,000", str(per_target), f"{cpu:.2f}",
                          f"{n_files / cpu:,.0f}", f"{wall:.2f}", f"{n_files / wall:,.0f}", f"{result['points']:,}",
                          f"{rss:,.0f}")
    console.print(table)
    cmp = Table(title="Opening a file and reading TIME, PDCSAP_FLUX, PDCSAP_FLUX_ERR (CPU ms per file, interleaved)")
    for col in ("file", "lcgen.ingest.fitsfile", "astropy.io.fits", "ratio"):
        cmp.add_column(col, justify="right")
    for kind, (fast, ref) in parsers.items():
        cmp.add_row("Kepler, 4,400 cadences" if kind == "kepler" else "TESS, 20,000 cadences", f"{fast * 1e3:.2f}",
                    f"{ref * 1e3:.2f}", f"{ref / fast:.1f}x")
    console.print(cmp)
    console.print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
