"""lcgen ingest: archive FITS layouts, tables, quality levels, normalisation, stitching, bad files,
the lightkurve path, and the real-data chain through the CLI."""

import gzip
import shutil

import h5py
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from lcgen.errors import LcgenError
from lcgen.ingest import IngestConfig, from_lightkurve, ingest, read_lightcurve, read_lightcurves, write_lightcurves
from lcgen.io import read_raw
from tests.archive_files import (KEPLER_LONG_CADENCE_D, TESS_2MIN_D, TESS_20S_D, write_kepler, write_kepler_legacy,
                                 write_qlp, write_tess, write_tpf)
from tests.conftest import run_cli

# The published bits of each level, written out here from the Kepler Archive Manual (Table 2-3)
# and the TESS SDPDD (Table 28) as an independent reference for lcgen.ingest.quality.
KEPLER_LEVEL_BITS = {"default": [1, 2, 4, 8, 32, 256, 16384, 65536, 1048576],
                     "hard": [1, 2, 4, 8, 32, 256, 16384, 65536, 1048576, 128, 1024, 8192, 524288]}
TESS_LEVEL_BITS = {"default": [1, 2, 4, 8, 32, 128], "hard": [1, 2, 4, 8, 32, 128, 64, 1024, 2048, 4096]}
KEPLER_ALL = [2 ** k for k in range(21) if k != 9]
TESS_ALL = [2 ** k for k in range(16)]


def _expected_drops(quality, bad, level, level_bits):
    """Cadences dropped by ``level`` and then as non-finite, counted one cadence at a time."""
    n_quality = n_nonfinite = 0
    for q, b in zip(quality.tolist(), bad.tolist()):
        if level == "none":
            hit = False
        elif level == "hardest":
            hit = q != 0
        elif str(level).isdigit():
            hit = (q & int(level)) != 0
        else:
            hit = any(q & bit for bit in level_bits[level])
        if hit:
            n_quality += 1
        elif b:
            n_nonfinite += 1
    return n_quality, n_nonfinite


def _segment(rng, n, t0, dt, level, all_bits, p_flag=0.25, p_nan=0.03):
    """Times, flux around ``level``, errors, random multi-bit quality and NaN cadences."""
    time = t0 + dt * np.arange(n)
    flux = level * (1 + 0.01 * np.sin(2 * np.pi * time / 3.7)) + rng.normal(0, 0.5, n)
    err = np.full(n, 0.5) * rng.uniform(0.9, 1.1, n)
    quality = np.zeros(n, np.int64)
    for i in np.flatnonzero(rng.random(n) < p_flag):
        quality[i] = sum(rng.choice(all_bits, size=rng.integers(1, 3), replace=False))
    nan = rng.random(n) < p_nan
    flux[nan] = np.nan
    err[rng.random(n) < p_nan / 3] = np.nan
    time[rng.random(n) < p_nan / 3] = np.nan  # Kepler and TESS files carry NaN times in gaps
    return time, flux, err, quality


@pytest.fixture
def archive(tmp_path):
    """Two Kepler quarters of one star, one quarter of a second star, a K2 campaign, two TESS
    sectors (SPOC 2-min) of one star: the arrays written, keyed by file name."""
    rng = np.random.default_rng(5)
    d = tmp_path / "archive"
    d.mkdir()
    files = {}
    for name, (kepid, q, t0, level) in {"kplr011446443-q03_llc.fits": (11446443, 3, 260.2, 1000.0),
                                        "kplr011446443-q04_llc.fits": (11446443, 4, 352.4, 1400.0),
                                        "kplr008462852-q03_llc.fits": (8462852, 3, 260.2, 5000.0)}.items():
        t, f, e, q_ = _segment(rng, 400, t0, KEPLER_LONG_CADENCE_D, level, KEPLER_ALL)
        write_kepler(d / name, kepid=kepid, segment=q, time=t, pdc=f, pdc_err=e, quality=q_)
        files[name] = dict(time=t, flux=f, err=e, quality=q_, mission="kepler", offset=2454833 - 2400000)
    t, f, e, q_ = _segment(rng, 300, 2300.0, KEPLER_LONG_CADENCE_D, 800.0, KEPLER_ALL)
    write_kepler(d / "ktwo211945201-c05_llc.fits", kepid=211945201, segment=5, time=t, pdc=f, pdc_err=e, quality=q_, k2=True)
    files["ktwo211945201-c05_llc.fits"] = dict(time=t, flux=f, err=e, quality=q_, mission="kepler", offset=54833)
    for name, (sector, t0, level) in {"tess-s0002-0000000261136679_lc.fits": (2, 1354.1, 300.0),
                                      "tess-s0001-0000000261136679_lc.fits": (1, 1325.3, 200.0)}.items():
        t, f, e, q_ = _segment(rng, 500, t0, TESS_2MIN_D, level, TESS_ALL)
        write_tess(d / name, ticid=261136679, sector=sector, time=t, pdc=f, pdc_err=e, quality=q_)
        files[name] = dict(time=t, flux=f, err=e, quality=q_, mission="tess", offset=2457000 - 2400000)
    return d, files


@pytest.mark.parametrize("level", ["default", "hard", "hardest", "none", "4096"])
def test_quality_levels_drop_the_published_bits(archive, level):
    d, files = archive
    for name, a in files.items():
        lc = read_lightcurve(d / name, quality=level)
        bad = ~(np.isfinite(a["time"]) & np.isfinite(a["flux"]) & np.isfinite(a["err"]))
        bits = KEPLER_LEVEL_BITS if a["mission"] == "kepler" else TESS_LEVEL_BITS
        n_quality, n_nonfinite = _expected_drops(a["quality"], bad, level, bits)
        assert (lc.meta["n_quality_dropped"], lc.meta["n_nonfinite_dropped"]) == (n_quality, n_nonfinite), name
        assert len(lc) == len(a["time"]) - n_quality - n_nonfinite
        assert lc.meta["n_cadences"] == len(a["time"])
    # the levels are nested: each drops at least what the one before dropped
    if level == "hard":
        for name in files:
            assert (read_lightcurve(d / name, quality="hard").meta["n_quality_dropped"]
                    >= read_lightcurve(d / name, quality="default").meta["n_quality_dropped"])


def test_points_times_and_normalisation_per_segment(archive):
    d, files = archive
    name = "kplr011446443-q03_llc.fits"
    a = files[name]
    lc = read_lightcurve(d / name, quality="none")
    keep = np.isfinite(a["time"]) & np.isfinite(a["flux"]) & np.isfinite(a["err"])
    median = np.median(a["flux"][keep].astype(np.float32).astype(np.float64))  # the file stores float32
    np.testing.assert_array_equal(lc.time, a["time"][keep] + 54833.0)  # BKJD → BJD − 2400000, exact
    np.testing.assert_allclose(lc.flux, a["flux"][keep].astype(np.float32) / median, rtol=1e-12)
    np.testing.assert_allclose(lc.flux_err, a["err"][keep].astype(np.float32) / median, rtol=1e-12)
    assert np.median(lc.flux) == pytest.approx(1.0, abs=1e-12)
    raw = read_lightcurve(d / name, quality="none", normalise=False)
    np.testing.assert_allclose(raw.flux, a["flux"][keep].astype(np.float32), rtol=0)
    assert lc.meta | {"n_quality_dropped": 0} == lc.meta  # quality none
    assert (lc.meta["target"], lc.meta["mission"], lc.meta["segments"], lc.meta["flux_column"]) == (
        "KIC 11446443", "Kepler", "Q3", "PDCSAP_FLUX")
    assert lc.meta["cadence_s"] == pytest.approx(1765.4629, abs=1e-3)
    sap = read_lightcurve(d / name, flux="sap", quality="none")
    assert sap.meta["flux_column"] == "SAP_FLUX"


def test_ingest_stitches_targets_in_time_order(archive, tmp_path):
    d, files = archive
    # files named in reverse order, one of them twice (once through the directory)
    inputs = [str(d / "tess-s0002-0000000261136679_lc.fits"), str(d / "kplr011446443-q04_llc.fits"), str(d)]
    out = tmp_path / "raw.h5"
    result = ingest(IngestConfig(inputs=inputs, output=str(out)))
    assert result["files"] == len(files) and result["files_read"] == len(files) and result["skipped"] == []
    raw = read_raw(out)
    targets = list(raw.meta["target"])
    assert sorted(targets) == ["EPIC 211945201", "KIC 11446443", "KIC 8462852", "TIC 261136679"]
    kic = targets.index("KIC 11446443")
    t, y, e = raw.curve(kic)
    assert np.all(np.diff(t) > 0)
    assert raw.meta["segments"][kic] == "Q3,Q4"
    assert raw.meta["sources"][kic] == "kplr011446443-q03_llc.fits;kplr011446443-q04_llc.fits"
    assert raw.meta["n_segments"][kic] == 2
    # each quarter divided by its own median: both sit at 1 although their levels differ 1000 vs 1400
    boundary = 352.4 + 54833.0
    for part in (t < boundary, t >= boundary):
        assert np.median(y[part]) == pytest.approx(1.0, abs=2e-7)
    q3 = read_lightcurve(d / "kplr011446443-q03_llc.fits")
    q4 = read_lightcurve(d / "kplr011446443-q04_llc.fits")
    np.testing.assert_array_equal(t, np.concatenate([q3.time, q4.time]))
    np.testing.assert_allclose(e, np.concatenate([q3.flux_err, q4.flux_err]).astype(np.float32))
    tic = targets.index("TIC 261136679")
    assert raw.meta["segments"][tic] == "S1,S2" and raw.meta["mission"][tic] == "TESS"
    assert raw.curve(tic)[0][0] == pytest.approx(1325.3 + 57000.0)
    assert raw.meta["cadence_s"][tic] == pytest.approx(120.0)
    k2 = targets.index("EPIC 211945201")
    assert (raw.meta["mission"][k2], raw.meta["segments"][k2]) == ("K2", "C5")
    assert int(np.sum(raw.meta["n_quality_dropped"])) == result["n_quality"]
    # --no-stitch: one curve per file
    out2 = tmp_path / "raw2.h5"
    ingest(IngestConfig(inputs=[str(d)], output=str(out2), stitch=False))
    assert len(read_raw(out2)) == len(files)


def test_tess_products_spoc_fast_tess_spoc_and_qlp(tmp_path):
    rng = np.random.default_rng(1)
    n = 720
    t20 = 1400.0 + TESS_20S_D * np.arange(6 * n)
    t2 = 1400.0 + TESS_2MIN_D * np.arange(n)
    ones = lambda k: np.ones(k)
    write_tess(tmp_path / "s10_fast-lc.fits", ticid=7, sector=10, time=t20, pdc=100 + rng.normal(0, 1, 6 * n),
               pdc_err=ones(6 * n), quality=np.zeros(6 * n, int), timedel=TESS_20S_D)
    write_tess(tmp_path / "s10_lc.fits", ticid=7, sector=10, time=t2, pdc=100 + rng.normal(0, 1, n), pdc_err=ones(n),
               quality=np.zeros(n, int))
    write_tess(tmp_path / "hlsp_tess-spoc_s11.fits", ticid=7, sector=11, time=1430 + 600 / 86400 * np.arange(200),
               pdc=100 + rng.normal(0, 1, 200), pdc_err=ones(200), quality=np.zeros(200, int), timedel=600 / 86400, hlsp=True)
    sap = 1 + rng.normal(0, 1e-3, 300)
    det = 1 + rng.normal(0, 1e-3, 300)
    q = np.zeros(300, int)
    q[:7] = 4096  # scattered light: dropped by hard, kept by default
    write_qlp(tmp_path / "qlp_s12.fits", ticid=8, sector=12, time=1460 + 600 / 86400 * np.arange(300), sap=sap,
              det=det, det_err=np.full(300, 1e-3), quality=q)
    write_qlp(tmp_path / "qlp_s60.fits", ticid=9, sector=60, time=3000 + 200 / 86400 * np.arange(300), sap=sap,
              det=det, det_err=np.full(300, 1e-3), quality=q, names="det")

    fast = read_lightcurve(tmp_path / "s10_fast-lc.fits")
    assert fast.meta["cadence_s"] == pytest.approx(20.0) and fast.meta["pipeline"] == "SPOC"
    assert read_lightcurve(tmp_path / "hlsp_tess-spoc_s11.fits").meta["pipeline"] == "TESS-SPOC"
    qlp = read_lightcurve(tmp_path / "qlp_s12.fits", normalise=False)
    assert (qlp.meta["pipeline"], qlp.meta["flux_column"], qlp.meta["target"]) == ("QLP", "SAP_FLUX", "TIC 8")
    np.testing.assert_allclose(qlp.flux, sap.astype(np.float32))
    np.testing.assert_allclose(qlp.flux_err, np.float32(1e-3))  # the detrended column's error
    assert read_lightcurve(tmp_path / "qlp_s12.fits", quality="hard").meta["n_quality_dropped"] == 7
    assert read_lightcurve(tmp_path / "qlp_s12.fits").meta["n_quality_dropped"] == 0
    det12 = read_lightcurve(tmp_path / "qlp_s12.fits", flux="det", normalise=False)
    assert det12.meta["flux_column"] == "KSPSAP_FLUX"
    np.testing.assert_allclose(det12.flux, det.astype(np.float32))
    assert read_lightcurve(tmp_path / "qlp_s60.fits", flux="det").meta["flux_column"] == "DET_FLUX"
    assert read_lightcurve(tmp_path / "qlp_s60.fits").meta["flux_column"] == "SAP_FLUX"
    with pytest.raises(LcgenError, match="no pdcsap flux column.*KSPSAP_FLUX"):
        read_lightcurve(tmp_path / "qlp_s12.fits", flux="pdcsap")

    # 20-s and 2-min files of one sector overlap: one curve, from the denser file; the other is skipped
    result = ingest(IngestConfig(inputs=[str(tmp_path / "s10_lc.fits"), str(tmp_path / "s10_fast-lc.fits"),
                                         str(tmp_path / "hlsp_tess-spoc_s11.fits")], output=str(tmp_path / "o.h5")))
    raw = read_raw(tmp_path / "o.h5")
    assert len(raw) == 1 and len(raw.time) == 6 * n + 200
    assert raw.meta["segments"][0] == "S10,S11" and raw.meta["pipeline"][0] == "SPOC,TESS-SPOC"
    assert [(p, r.split(";")[0]) for p, r in result["skipped"]] == [
        ("s10_lc.fits", "overlaps S10 of TIC 7 in s10_fast-lc.fits")]


def test_early_release_kepler_and_gzip(tmp_path):
    rng = np.random.default_rng(2)
    n = 200
    bary = 54964.5 + KEPLER_LONG_CADENCE_D * np.arange(n)  # BJD − 2400000
    corr = 1625.3468 * (1000 + rng.normal(0, 1, n))  # electrons per long cadence
    write_kepler_legacy(tmp_path / "old.fits", kepid=757076, quarter=1, barytime=bary, corr_flux=corr,
                        corr_err=np.full(n, 1625.3468))
    lc = read_lightcurve(tmp_path / "old.fits", normalise=False)
    np.testing.assert_array_equal(lc.time, bary)
    np.testing.assert_allclose(lc.flux, corr.astype(np.float32).astype(np.float64) / 1625.3468, rtol=1e-12)  # e-/s
    assert (lc.meta["target"], lc.meta["segments"], lc.meta["quality_mask"]) == ("KIC 757076", "Q1", 0)
    with open(tmp_path / "old.fits", "rb") as src, gzip.open(tmp_path / "old.fits.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    np.testing.assert_array_equal(read_lightcurve(tmp_path / "old.fits.gz", normalise=False).flux, lc.flux)


def test_tables_csv_tsv_ecsv_fits_and_magnitudes(tmp_path):
    rng = np.random.default_rng(3)
    n = 150
    mjd = 59000 + np.sort(rng.uniform(0, 30, n))
    mag = 12.0 + 0.05 * np.sin(mjd) + rng.normal(0, 0.01, n)
    mag_err = np.full(n, 0.01)
    # CSV, two stars interleaved, magnitudes, MJD
    star = np.where(np.arange(2 * n) % 2 == 0, "A", "B")
    rows = ["star,mjd,vmag,vmag_err"] + [f"{s},{t!r},{m!r},{e!r}" for s, t, m, e in zip(
        star, np.repeat(mjd, 2).tolist(), np.column_stack([mag, mag + 1]).ravel().tolist(), np.repeat(mag_err, 2).tolist())]
    (tmp_path / "phot.csv").write_text("\n".join(rows) + "\n")
    curves = read_lightcurves(tmp_path / "phot.csv", time_col="mjd", flux_col="vmag", err_col="vmag_err",
                              id_col="star", mag=True, time_ref=2400000.5)
    assert [c.meta["target"] for c in curves] == ["A", "B"]
    a = curves[0]
    expected = 10 ** (-0.4 * (mag - np.median(mag)))
    expected_err = 0.4 * np.log(10) * expected * mag_err
    med = np.median(expected)
    np.testing.assert_allclose(a.flux, expected / med, rtol=1e-12)
    np.testing.assert_allclose(a.flux_err, expected_err / med, rtol=1e-12)
    np.testing.assert_allclose(a.time, mjd + 0.5, rtol=0, atol=1e-9)  # MJD → BJD − 2400000 (time_ref given)
    assert a.meta["time_system"].startswith("BJD_TDB - 2400000")
    # TSV with the default column names and no error column: the point-to-point scatter
    flux = 1 + rng.normal(0, 0.002, n)
    (tmp_path / "x.tsv").write_text("time\tflux\n" + "".join(f"{t!r}\t{f!r}\n" for t, f in zip(mjd.tolist(), flux.tolist())))
    tsv = read_lightcurve(tmp_path / "x.tsv", normalise=False)
    d = np.diff(flux)
    assert tsv.flux_err[0] == pytest.approx(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2))
    assert tsv.meta["time_system"] == "as given" and tsv.meta["target"] == "x"
    # ECSV with units and an OBJECT, and a FITS binary table, with --time-col/--flux-col/--err-col
    table = Table({"BJD": mjd, "FLUX": flux * 50, "FLUX_ERR": np.full(n, 0.1)}, meta={"OBJECT": "HD 1234"})
    table.write(tmp_path / "x.ecsv", format="ascii.ecsv")
    ecsv = read_lightcurve(tmp_path / "x.ecsv", time_col="bjd", flux_col="flux", err_col="flux_err")
    assert ecsv.meta["target"] == "HD 1234"
    np.testing.assert_allclose(ecsv.flux, flux / np.median(flux), rtol=1e-12)
    fits.BinTableHDU(table, name="PHOT").writeto(tmp_path / "tab.fits")
    tab = read_lightcurve(tmp_path / "tab.fits", time_col="BJD", flux_col="FLUX", err_col="FLUX_ERR")
    np.testing.assert_allclose(tab.flux, ecsv.flux, rtol=1e-12)
    with pytest.raises(LcgenError, match="no column 'flux' for flux; name it with --flux-col.*mjd, vmag"):
        read_lightcurves(tmp_path / "phot.csv", time_col="mjd")


def test_bad_files_are_listed_and_recorded(archive, tmp_path):
    d, _ = archive
    good = d / "kplr011446443-q03_llc.fits"
    data = good.read_bytes()
    (d / "truncated.fits").write_bytes(data[: 2880 * 2 + 100])  # header intact, table cut off
    (d / "noise.bin").write_bytes(bytes(range(256)) * 4)
    (d / "empty.csv").write_text("")
    write_tpf(d / "kplr011446443-2009_lpd-targ.fits")
    n = 50
    write_tess(d / "allnan.fits", ticid=5, sector=3, time=1380 + TESS_2MIN_D * np.arange(n), pdc=np.full(n, np.nan),
               pdc_err=np.ones(n), quality=np.zeros(n, int))
    out = tmp_path / "real" / "raw.h5"
    r = run_cli("ingest", d, "-o", out)
    assert r.returncode == 0, r.stderr
    reasons = {}
    with h5py.File(out) as f:
        for source, reason in zip(f["skipped/source"].asstr()[:], f["skipped/reason"].asstr()[:]):
            reasons[source.split("/")[-1]] = reason
    assert set(reasons) == {"truncated.fits", "noise.bin", "empty.csv", "kplr011446443-2009_lpd-targ.fits", "allnan.fits"}
    assert "target-pixel file" in reasons["kplr011446443-2009_lpd-targ.fits"]
    assert reasons["allnan.fits"] == "no usable points (50 cadences: 0 dropped by the quality mask, 50 non-finite)"
    assert reasons["empty.csv"] == "an empty file"
    assert "neither FITS nor a text table" in reasons["noise.bin"]
    for name in reasons:
        assert name in r.stdout
    assert len(read_raw(out)) == 4
    info = run_cli("info", out, "--no-config")
    assert info.returncode == 0
    assert "KIC 11446443" in info.stdout and "Q3,Q4" in info.stdout and "5 files skipped" in info.stdout
    # nothing readable: exit 1, one line, no output file
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(d / "noise.bin", bad)
    out2 = tmp_path / "none.h5"
    r = run_cli("ingest", bad, str(tmp_path / "missing.fits"), "-o", out2)
    assert r.returncode == 1
    assert "no light curve could be read from 1 file(s)" in r.stderr and "missing.fits: does not exist" in r.stderr
    assert not out2.exists() and not (tmp_path / "none.h5.partial").exists()


class _Time:
    """Stand-in for astropy Time (two-part JD in TDB)."""

    def __init__(self, jd):
        self.jd1, self.jd2 = np.floor(jd), jd - np.floor(jd)

    @property
    def tdb(self):
        return self


class _Quantity:
    def __init__(self, value):
        self.value = np.asarray(value)


class _LightCurve:
    def __init__(self, jd, flux, err, quality, meta):
        self.time, self.flux, self.flux_err = _Time(jd), _Quantity(flux), _Quantity(err)
        self.quality, self.meta = _Quantity(quality), meta


def test_from_lightkurve_duck_typed(tmp_path):
    rng = np.random.default_rng(4)
    n = 100
    sectors = []
    for sector, t0 in ((15, 2458711.4), (14, 2458683.4)):
        q = np.zeros(n, int)
        q[:3] = 32  # desaturation: dropped by default
        flux = 500 + rng.normal(0, 1, n)
        sectors.append(_LightCurve(t0 + TESS_2MIN_D * np.arange(n), flux, np.ones(n), q,
                                   {"MISSION": "TESS", "TARGETID": 150428135, "SECTOR": sector,
                                    "LABEL": "TIC 150428135", "FLUX_ORIGIN": "pdcsap_flux", "AUTHOR": "SPOC"}))
    curves = from_lightkurve(sectors)  # a collection: any iterable of light curves
    assert len(curves) == 1
    lc = curves[0]
    assert lc.meta["segments"] == "S14,S15" and lc.meta["target"] == "TIC 150428135"
    assert lc.meta["n_quality_dropped"] == 6 and len(lc) == 2 * (n - 3)
    np.testing.assert_allclose(lc.time[0], 2458683.4 + 3 * TESS_2MIN_D - 2400000, atol=1e-9)
    assert np.all(np.diff(lc.time) > 0)
    single = from_lightkurve(sectors[0], quality="none", normalise=False)[0]
    np.testing.assert_allclose(single.flux, sectors[0].flux.value)
    out = write_lightcurves(curves, tmp_path / "lk.h5")
    assert read_raw(out).meta["target"][0] == "TIC 150428135"
    with pytest.raises(LcgenError, match="expects a lightkurve LightCurve"):
        from_lightkurve(42)


def test_real_data_chain_through_the_cli(archive, tmp_path):
    """ingest → convert → train --init (from a run on mock data) → evaluate --data, tiny model."""
    from lcgen.features.convert import ConvertConfig, convert
    from lcgen.train.trainer import TrainConfig, fit
    from tests.conftest import write_sine_raw

    write_sine_raw(tmp_path / "mock.h5", n_curves=12)
    convert(ConvertConfig(input=str(tmp_path / "mock.h5"), output=str(tmp_path / "mock_ts.h5"), max_length=64))
    tiny = dict(model_name="transformer", epochs=1, batch_size=8, device="cpu", runs_dir=str(tmp_path / "runs"))
    fit(TrainConfig(preset="tiny", data=str(tmp_path / "mock_ts.h5"), **tiny), name="base")
    base = tmp_path / "runs" / "transformer" / "base"
    d, _ = archive
    raw, ts = tmp_path / "real.h5", tmp_path / "real_ts.h5"
    assert run_cli("ingest", d, "-o", raw).returncode == 0
    assert run_cli("convert", "-i", raw, "-o", ts, "--max-length", 64).returncode == 0
    r = run_cli("train", "transformer", "--data", ts, "--init", base, "--epochs", 1, "--batch-size", 8, "--name", "ft",
                "--device", "cpu", "--set", f"runs_dir={tmp_path / 'runs'}")
    assert r.returncode == 0, r.stderr
    assert f"Fine-tuning from {base}" in r.stdout
    run = tmp_path / "runs" / "transformer" / "ft"
    config = (run / "config.yaml").read_text()
    assert f"init: {base}" in config and "preset: tiny" in config
    r = run_cli("evaluate", run, "--data", ts)
    assert r.returncode == 0, r.stderr
    assert (run / "metrics-real_ts.json").is_file()
    # a different window length, or another model, is refused with the fix
    ts128 = tmp_path / "real_ts128.h5"
    convert(ConvertConfig(input=str(raw), output=str(ts128), max_length=128))
    with pytest.raises(LcgenError, match="trained on rows of length 64.*--max-length 64"):
        fit(TrainConfig(data=str(ts128), init=str(base), **tiny), name="bad")
    assert not (tmp_path / "runs" / "transformer" / "bad").exists()  # refused before a run directory is made
    with pytest.raises(LcgenError, match="is a 'transformer' run; train that model"):
        fit(TrainConfig(**{**tiny, "model_name": "mlp"}, init=str(base)), name="bad2")


def test_fast_fits_reader_matches_astropy(archive, tmp_path):
    """The plain-subset FITS parser (fitsfile) against astropy on every product layout."""
    from lcgen.ingest.readers import _open_fits_astropy, open_fits

    d, _ = archive
    n = 60
    t = 1500 + TESS_2MIN_D * np.arange(n)
    write_qlp(tmp_path / "qlp.fits", ticid=3, sector=60, time=t, sap=np.ones(n), det=np.ones(n),
              det_err=np.ones(n), quality=np.arange(n), names="det")
    write_kepler_legacy(tmp_path / "old.fits", kepid=1, quarter=0, barytime=t, corr_flux=np.ones(n), corr_err=np.ones(n))
    table = Table({"time": t, "flux": np.ones(n), "name": ["star A"] * n})
    fits.BinTableHDU(table).writeto(tmp_path / "tab.fits")
    paths = sorted(d.iterdir()) + [tmp_path / "qlp.fits", tmp_path / "old.fits", tmp_path / "tab.fits"]
    for path in paths:
        primary, names, tables = open_fits(path)
        ref_primary, ref_names, ref_tables = _open_fits_astropy(path)
        assert names == ref_names, path
        for key in ("TELESCOP", "OBJECT", "KEPLERID", "TICID", "QUARTER", "CAMPAIGN", "SECTOR", "ORIGIN", "CREATOR"):
            assert primary.get(key) == ref_primary.get(key), (path, key)
        for fast, ref in zip(tables, ref_tables):
            assert (fast is None) == (ref is None)
            if fast is None:
                continue
            assert fast.names == ref.names
            for key in ("TIMEDEL", "BJDREFI", "BJDREFF", "NAXIS2"):
                assert fast.header.get(key) == ref.header.get(key), (path, key)
            for name in fast.names:
                got, want = fast.column(name), ref.column(name)
                if want.dtype.kind in "SU":
                    assert list(got) == [str(v).strip() for v in want]
                else:
                    np.testing.assert_array_equal(got, want, err_msg=f"{path}: {name}")
                    assert got.dtype.isnative


def test_shipped_config_holds_the_defaults_and_flags_reach_the_config(tmp_path):
    from lcgen.config import load_yaml
    from tests.conftest import ROOT

    assert load_yaml(ROOT / "configs" / "ingest.yaml") == {
        k: v for k, v in __import__("dataclasses").asdict(IngestConfig()).items()}
    n = 40
    rows = "\n".join(f"s{i % 2};{59000 + i * 0.1!r};{12 + 0.01 * (i % 5)!r}" for i in range(2 * n))
    (tmp_path / "t.csv").write_text("id;mjd;v\n" + rows + "\n")  # semicolon-separated
    out = tmp_path / "o.h5"
    r = run_cli("ingest", tmp_path / "t.csv", "-o", out, "--time-col", "mjd", "--flux-col", "v", "--id-col", "id",
                "--mag", "--time-ref", 2400000.5, "--no-normalise", "--quality", "hard", "--config",
                ROOT / "configs" / "ingest.yaml")
    assert r.returncode == 0, r.stderr
    raw = read_raw(out)
    assert list(raw.meta["target"]) == ["s0", "s1"]
    assert raw.time[0] == pytest.approx(59000.5)
    with h5py.File(out) as f:
        assert "mag: true" in f.attrs["config"] and "quality: hard" in f.attrs["config"]
    r = run_cli("ingest", tmp_path / "t.csv", "-o", out, "--quality", "medium")
    assert r.returncode == 1 and "unknown quality level 'medium'" in r.stderr


def test_sniff_and_own_output_in_the_input_folder(archive, tmp_path):
    from lcgen.ingest.readers import Unreadable, sniff

    (tmp_path / "w.txt").write_text("# comment\ntime flux\n1.0 2.0\n2.0 2.5\n3.0 2.25\n4.0 2.5\n")
    assert sniff(tmp_path / "w.txt") == "ascii"
    np.testing.assert_array_equal(read_lightcurve(tmp_path / "w.txt", normalise=False).flux, [2.0, 2.5, 2.25, 2.5])
    (tmp_path / "s.csv").write_text("time;flux\n1;2\n")
    assert sniff(tmp_path / "s.csv") == "ssv"
    # empty cells are missing values (dropped as non-finite), not astropy's fill value
    (tmp_path / "gaps.csv").write_text("time,flux,flux_err\n1,2.0,0.1\n2,,0.1\n3,2.5,\n4,2.25,0.1\n")
    gaps = read_lightcurve(tmp_path / "gaps.csv", normalise=False)
    np.testing.assert_array_equal(gaps.flux, [2.0, 2.25])
    assert gaps.meta["n_nonfinite_dropped"] == 2
    d, files = archive
    out = d / "raw.h5"  # the output inside the folder being ingested
    for _ in range(2):  # the second run must not read the first run's output
        result = ingest(IngestConfig(inputs=[str(d)], output=str(out)))
        assert result["files"] == len(files) and result["skipped"] == []
    with pytest.raises(Unreadable, match="neither FITS nor a text table"):
        sniff(out)
