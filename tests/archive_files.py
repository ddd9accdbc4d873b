"""Light-curve files written with astropy in the archives' layouts (for the ingest tests and
benchmarks/bench_ingest.py). Header keys, column names, formats and units follow the Kepler
Archive Manual (KDMC-10008), the TESS Science Data Products Description Document
(EXP-TESS-ARC-ICD-0014) and the TESS-SPOC and QLP HLSP descriptions; see lcgen/ingest/readers.py.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

KEPLER_LONG_CADENCE_D = 0.02043359821692  # 29.4 min
TESS_2MIN_D = 2.0 / 1440.0
TESS_20S_D = 20.0 / 86400.0

# (name, TFORM, TUNIT) of the LIGHTCURVE table, in file order.
_SPOC_COLUMNS = [
    ("TIME", "D", None), ("TIMECORR", "E", "d"), ("CADENCENO", "J", None),
    ("SAP_FLUX", "E", "e-/s"), ("SAP_FLUX_ERR", "E", "e-/s"), ("SAP_BKG", "E", "e-/s"), ("SAP_BKG_ERR", "E", "e-/s"),
    ("PDCSAP_FLUX", "E", "e-/s"), ("PDCSAP_FLUX_ERR", "E", "e-/s"), (None, "J", None),  # quality: name per mission
    ("PSF_CENTR1", "D", "pixel"), ("PSF_CENTR1_ERR", "E", "pixel"), ("PSF_CENTR2", "D", "pixel"),
    ("PSF_CENTR2_ERR", "E", "pixel"), ("MOM_CENTR1", "D", "pixel"), ("MOM_CENTR1_ERR", "E", "pixel"),
    ("MOM_CENTR2", "D", "pixel"), ("MOM_CENTR2_ERR", "E", "pixel"), ("POS_CORR1", "E", "pixel"), ("POS_CORR2", "E", "pixel"),
]
_QLP_COLUMNS = {  # sectors 1-55, and the sector-56+ names
    "ksp": [("TIME", "D", "BJD - 2457000, days"), ("CADENCENO", "J", None), ("SAP_FLUX", "E", None),
            ("KSPSAP_FLUX", "E", None), ("KSPSAP_FLUX_ERR", "E", None), ("QUALITY", "J", None), ("ORBITID", "J", None),
            ("SAP_X", "E", "pixel"), ("SAP_Y", "E", "pixel"), ("SAP_BKG", "E", None), ("SAP_BKG_ERR", "E", None),
            ("KSPSAP_FLUX_SML", "E", None), ("KSPSAP_FLUX_LAG", "E", None)],
    "det": [("TIME", "D", "BJD - 2457000, days"), ("CADENCENO", "J", None), ("SAP_FLUX", "E", None),
            ("DET_FLUX", "E", None), ("DET_FLUX_ERR", "E", None), ("QUALITY", "J", None), ("ORBITID", "J", None),
            ("SAP_X", "E", "pixel"), ("SAP_Y", "E", "pixel"), ("SAP_BKG", "E", None), ("SAP_BKG_ERR", "E", None),
            ("DET_FLUX_SML", "E", None), ("DET_FLUX_LAG", "E", None), ("SYS_RM_FLUX", "E", None)],
}


def _spoc_columns(quality_name: str, time_unit: str) -> list:
    return [("TIME", "D", time_unit) if c[0] == "TIME" else c if c[0] else (quality_name, "J", None) for c in _SPOC_COLUMNS]


def _table(columns, values: dict, n: int) -> fits.BinTableHDU:
    cols = []
    for name, form, unit in columns:
        data = values.get(name)
        if data is None:
            data = np.zeros(n, dtype=np.int32 if form == "J" else np.float64)
        cols.append(fits.Column(name=name, format=form, unit=unit, array=data))
    return fits.BinTableHDU.from_columns(cols, name="LIGHTCURVE")


def _time_keys(bjdrefi: int, time, timedel: float) -> dict:
    """The LIGHTCURVE header's time keywords (barycentric TDB days from BJDREFI + BJDREFF)."""
    return {"TIMEREF": "SOLARSYSTEM", "TASSIGN": "SPACECRAFT", "TIMESYS": "TDB", "BJDREFI": bjdrefi, "BJDREFF": 0.0,
            "TIMEUNIT": "d", "TSTART": float(np.nanmin(time)), "TSTOP": float(np.nanmax(time)), "TIMEPIXR": 0.5,
            "TIMEDEL": timedel}


def _aperture() -> fits.ImageHDU:
    return fits.ImageHDU(np.ones((5, 5), np.int32), name="APERTURE")


def _spoc_values(time, sap, sap_err, pdc, pdc_err, quality, quality_name, rng) -> dict:
    n = len(time)
    return {"TIME": time, "TIMECORR": np.full(n, 1e-3, np.float32), "CADENCENO": np.arange(n, dtype=np.int32) + 1000,
            "SAP_FLUX": sap, "SAP_FLUX_ERR": sap_err, "SAP_BKG": rng.normal(50, 1, n), "SAP_BKG_ERR": np.ones(n),
            "PDCSAP_FLUX": pdc, "PDCSAP_FLUX_ERR": pdc_err, quality_name: quality.astype(np.int32),
            "MOM_CENTR1": rng.normal(500, 0.01, n), "MOM_CENTR2": rng.normal(300, 0.01, n)}


def write_kepler(path, *, kepid, segment, time, pdc, pdc_err, quality, sap=None, sap_err=None, k2=False,
                 timedel=KEPLER_LONG_CADENCE_D, seed=0) -> None:
    """A Kepler (``segment`` = quarter) or K2 (``k2=True``, ``segment`` = campaign) long-cadence
    light-curve file: TIME in BKJD, SAP_QUALITY."""
    primary = fits.PrimaryHDU()
    h = primary.header
    h.update({"NEXTEND": 2, "EXTNAME": "PRIMARY", "ORIGIN": "NASA/Ames", "CREATOR": "917482 FluxExporter2PipelineModule",
              "FILEVER": "6.1", "TELESCOP": "Kepler", "INSTRUME": "Kepler Photometer",
              "OBJECT": f"{'EPIC' if k2 else 'KIC'} {kepid}", "KEPLERID": kepid, "CHANNEL": 44, "MODULE": 13, "OUTPUT": 4})
    h.update({"CAMPAIGN": segment, "MISSION": "K2"} if k2 else {"QUARTER": segment, "SEASON": segment % 4, "MISSION": "Kepler"})
    h.update({"DATA_REL": 25, "OBSMODE": "long cadence", "RADESYS": "ICRS", "KEPMAG": 12.3})
    rng = np.random.default_rng(seed)
    sap = pdc * 0.97 if sap is None else sap
    sap_err = pdc_err if sap_err is None else sap_err
    table = _table(_spoc_columns("SAP_QUALITY", "BJD - 2454833"),
                   _spoc_values(time, sap, sap_err, pdc, pdc_err, quality, "SAP_QUALITY", rng), len(time))
    table.header.update({"TELESCOP": "Kepler", "OBJECT": h["OBJECT"], "KEPLERID": kepid, **_time_keys(2454833, time, timedel),
                         "INT_TIME": 6.01980290327, "NUM_FRM": 270, "PDCMETHD": "msMAP"})
    fits.HDUList([primary, table, _aperture()]).writeto(path, overwrite=True)


def write_tess(path, *, ticid, sector, time, pdc, pdc_err, quality, sap=None, sap_err=None, timedel=TESS_2MIN_D,
               hlsp=False, seed=0) -> None:
    """A TESS SPOC light-curve file (2-min ``*_lc.fits`` or, with ``timedel=TESS_20S_D``,
    20-s ``*_fast-lc.fits``); ``hlsp=True`` writes a TESS-SPOC FFI light curve instead."""
    primary = fits.PrimaryHDU()
    h = primary.header
    h.update({"NEXTEND": 2, "EXTNAME": "PRIMARY", "ORIGIN": "NASA/Ames", "CREATOR": "18469 LightCurveExporterPipelineModule",
              "PROCVER": "spoc-4.0.26-20200323", "FILEVER": "1.0", "TELESCOP": "TESS", "INSTRUME": "TESS Photometer",
              "DATA_REL": 26, "OBJECT": f"TIC {ticid}", "TICID": ticid, "SECTOR": sector, "CAMERA": 1, "CCD": 2,
              "RADESYS": "ICRS", "TESSMAG": 9.1})
    if hlsp:
        h.update({"HLSPID": "TESS-SPOC", "HLSPLEAD": "Douglas A. Caldwell", "HLSPVER": "v1.0", "HLSPTARG": f"TIC {ticid}"})
    rng = np.random.default_rng(seed)
    sap = pdc * 0.97 if sap is None else sap
    sap_err = pdc_err if sap_err is None else sap_err
    table = _table(_spoc_columns("QUALITY", "BJD - 2457000, days"),
                   _spoc_values(time, sap, sap_err, pdc, pdc_err, quality, "QUALITY", rng), len(time))
    table.header.update({"TELESCOP": "TESS", "OBJECT": h["OBJECT"], "TICID": ticid, **_time_keys(2457000, time, timedel),
                         "INT_TIME": 1.98, "PDCMETHD": "msMAP"})
    fits.HDUList([primary, table, _aperture()]).writeto(path, overwrite=True)


def write_qlp(path, *, ticid, sector, time, sap, det, det_err, quality, names="ksp") -> None:
    """A QLP HLSP light curve (``hlsp_qlp_tess_ffi_s00NN-..._llc.fits``): normalised SAP_FLUX,
    the detrended flux as KSPSAP_* (sectors 1–55) or DET_* (``names="det"``, sector 56 on)."""
    n = len(time)
    primary = fits.PrimaryHDU()
    primary.header.update({"ORIGIN": "MIT/QLP", "TELESCOP": "TESS", "INSTRUME": "TESS Photometer", "OBJECT": f"TIC {ticid}",
                           "TICID": ticid, "SECTOR": sector, "CAMERA": 3, "CCD": 1})
    det_name = "KSPSAP_FLUX" if names == "ksp" else "DET_FLUX"
    values = {"TIME": time, "CADENCENO": np.arange(n, dtype=np.int32), "SAP_FLUX": sap, det_name: det,
              det_name + "_ERR": det_err, "QUALITY": quality.astype(np.int32),
              "ORBITID": np.where(np.arange(n) < n // 2, 2 * sector - 1, 2 * sector).astype(np.int32)}
    table = _table(_QLP_COLUMNS[names], values, n)
    table.header.update(_time_keys(2457000, time, 600.0 / 86400.0))
    fits.HDUList([primary, table]).writeto(path, overwrite=True)


def write_kepler_legacy(path, *, kepid, quarter, barytime, corr_flux, corr_err, raw_flux=None) -> None:
    """An early-release Kepler light curve (no FILEVER): lower-case columns, barytime in
    BJD − 2400000, fluxes in electrons per long cadence, no quality column."""
    n = len(barytime)
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "Kepler"
    primary.header["OBJECT"] = f"KIC {kepid}"
    primary.header["KEPLERID"] = kepid
    raw_flux = corr_flux if raw_flux is None else raw_flux
    cols = [fits.Column("barytime", "D", array=barytime), fits.Column("timcorr", "E", array=np.zeros(n)),
            fits.Column("cadence_number", "J", array=np.arange(n)), fits.Column("ap_raw_flux", "E", array=raw_flux),
            fits.Column("ap_raw_err", "E", array=corr_err), fits.Column("ap_corr_flux", "E", array=corr_flux),
            fits.Column("ap_corr_err", "E", array=corr_err)]
    table = fits.BinTableHDU.from_columns(cols)
    table.header["QUARTER"] = quarter
    table.header["DATATYPE"] = "long cadence"
    fits.HDUList([primary, table]).writeto(path, overwrite=True)


def write_tpf(path, *, kepid=11446443) -> None:
    """A Kepler target-pixel file (TARGETTABLES extension with a 2-D FLUX column)."""
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "Kepler"
    primary.header["CREATOR"] = "TargetPixelExporterPipelineModule"
    primary.header["KEPLERID"] = kepid
    primary.header["QUARTER"] = 3
    cols = [fits.Column("TIME", "D", array=np.arange(4.0)), fits.Column("FLUX", "9E", dim="(3,3)", array=np.ones((4, 3, 3)))]
    fits.HDUList([primary, fits.BinTableHDU.from_columns(cols, name="TARGETTABLES"), _aperture()]).writeto(path, overwrite=True)
