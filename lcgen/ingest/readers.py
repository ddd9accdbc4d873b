"""Read one light-curve file into :class:`Segment` s: Kepler/K2/TESS FITS products, any FITS
binary table, CSV/TSV/ECSV tables. The format is detected from the file's bytes, not its name.
FITS files are parsed by :mod:`lcgen.ingest.fitsfile` (astropy reads what that does not handle);
text tables by astropy.io.ascii.

Archive layouts (what the readers rely on)
------------------------------------------
Kepler and K2 light curves (``kplr*_llc.fits`` / ``_slc.fits``, ``ktwo*_llc.fits``; Kepler
Archive Manual KDMC-10008 §2.3; K2 Handbook). Primary header: ``TELESCOP = 'Kepler'``,
``MISSION`` ('Kepler' or 'K2' in later releases), ``OBJECT`` ('KIC 11446443' / 'EPIC 2...'),
``KEPLERID`` (the KIC or EPIC number), ``QUARTER`` (Kepler) or ``CAMPAIGN`` (K2), ``CREATOR``
naming the exporter. Extension ``LIGHTCURVE`` (binary table): ``TIME`` (D, unit 'BJD - 2454833',
i.e. BKJD), ``TIMECORR``, ``CADENCENO``, ``SAP_FLUX``/``SAP_FLUX_ERR`` (E, e-/s), ``SAP_BKG``,
``SAP_BKG_ERR``, ``PDCSAP_FLUX``/``PDCSAP_FLUX_ERR``, ``SAP_QUALITY`` (J), ``PSF_CENTR1/2``,
``MOM_CENTR1/2`` (+ ``_ERR``), ``POS_CORR1/2``; header ``BJDREFI = 2454833``, ``BJDREFF``,
``TIMEDEL`` (cadence in days: 0.02043 long, 0.00068 short), ``TIMESYS = 'TDB'``. The quality
column is ``SAP_QUALITY`` since file version 2; the first public releases (no ``FILEVER`` key)
had lower-case columns ``barytime`` (BJD − 2,400,000), ``cadence_number``, ``ap_raw_flux``/
``ap_raw_err`` (SAP), ``ap_corr_flux``/``ap_corr_err`` (the corrected flux) in electrons per
cadence, ``QUARTER``/``DATATYPE`` in the table header and no quality column: they are read too
(with no quality cut, said in the metadata). Target-pixel files (``*_lpd-targ.fits``) have a
``TARGETTABLES`` extension instead and are skipped with that reason.

TESS SPOC light curves (2-min ``*_lc.fits`` and 20-s ``*_fast-lc.fits``; TESS Science Data
Products Description Document EXP-TESS-ARC-ICD-0014 §5.4): primary ``TELESCOP = 'TESS'``,
``ORIGIN = 'NASA/Ames'``, ``OBJECT`` ('TIC 261136679'), ``TICID``, ``SECTOR``, ``CAMERA``,
``CCD``; extension ``LIGHTCURVE`` with the Kepler columns except the quality column, named
``QUALITY``; ``TIME`` is BTJD (unit 'BJD - 2457000, days', ``BJDREFI = 2457000``);
``TIMEDEL`` 0.001389 d (2 min) or 0.000231 d (20 s). TESS-SPOC full-frame-image light curves
(MAST HLSP ``hlsp_tess-spoc_*_lc.fits``; Caldwell et al. 2020) share that layout at 1800/600/200-s
cadence; they are labelled TESS-SPOC when an HLSP keyword (``HLSPID``, ``HLSPACRN``,
``HLSPNAME``) says so, else SPOC (the label is all that differs: the columns are the same). QLP (MIT Quick-Look Pipeline HLSP,
``hlsp_qlp_*_llc.fits``; Huang et al. 2020, RNAAS 4, 204; Kunimoto et al. 2022, RNAAS 6, 236):
primary ``ORIGIN = 'MIT/QLP'``, ``TICID``, ``SECTOR``; extension ``LIGHTCURVE`` with ``TIME``
(BTJD), ``CADENCENO``, ``SAP_FLUX`` (normalised, no error column of its own), the detrended
``KSPSAP_FLUX``/``KSPSAP_FLUX_ERR`` (sectors 1–55; renamed ``DET_FLUX``/``DET_FLUX_ERR`` from
sector 56, with ``SYS_RM_FLUX``), ``KSPSAP_FLUX_SML``/``_LAG``, ``QUALITY``, ``ORBITID``,
``SAP_X``, ``SAP_Y``, ``SAP_BKG``, ``SAP_BKG_ERR``. QLP's detrended flux is high-pass filtered
(the stellar variability these models learn is removed), so ``flux="auto"`` reads ``SAP_FLUX``
there, with the detrended column's error; ``flux="det"`` reads the detrended column.

Flux choice: ``auto`` = ``PDCSAP_FLUX`` where the product has it (Kepler, K2, SPOC, TESS-SPOC),
else ``SAP_FLUX`` (QLP); ``pdcsap``, ``sap`` and ``det`` ask for one column and fail a file that
lacks it.

Times: every curve is stored in days as BJD_TDB − 2,400,000 (``t = TIME + BJDREFI + BJDREFF −
2400000``), so Kepler (BKJD) and TESS (BTJD) curves share one axis without ambiguity; tables
keep their times unless ``time_ref`` (the Julian date of their time 0) is given.

Magnitudes (tables with ``mag=True``) become relative flux about the curve's median magnitude
m̃ by first-order error propagation: ``f = 10^(−0.4 (m − m̃))``, ``σ_f = 0.4 ln(10) f σ_m``.
A table without an error column gets a constant per-curve error from the point-to-point scatter,
``σ = 1.4826 · median|Δf − median Δf| / √2`` (a white-noise estimate robust to slow variability).
"""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from lcgen.ingest import fitsfile
from lcgen.ingest.options import IngestConfig
from lcgen.ingest.quality import bitmask, flagged

JD_REF = 2400000.0  # stored times are BJD_TDB − JD_REF, days
TIME_SYSTEM = "BJD_TDB - 2400000"
DEFAULT_BJDREF = {"Kepler": 2454833.0, "K2": 2454833.0, "TESS": 2457000.0}
LEGACY_CADENCE_S = {"long cadence": 1625.3468, "short cadence": 54.178}  # exposure per cadence, s


class Unreadable(Exception):
    """A file (or a part of one) that gives no light curve; the message is the reason."""


@dataclasses.dataclass
class Segment:
    """One target's points from one file: a quarter, campaign or sector, or a table's rows for
    one id. Points are cleaned (quality and non-finite cuts), in time order, and normalised
    when asked."""

    time: np.ndarray  # (n,) float64 days, BJD_TDB − 2,400,000 (tables: see time_system)
    flux: np.ndarray  # (n,) float64
    flux_err: np.ndarray  # (n,) float64
    target: str  # 'KIC 11446443', 'EPIC 211945201', 'TIC 261136679', a table id or the file name
    mission: str  # Kepler, K2, TESS, or 'table'
    pipeline: str  # Kepler SOC, SPOC, TESS-SPOC, QLP, table, lightkurve
    segment: str  # 'Q3', 'C5', 'S14', or '' when the file does not say
    cadence_s: float
    source: str  # file name (or object description)
    flux_column: str
    quality_mask: int  # bits dropped (-1: any bit; 0: none or no quality column)
    time_system: str
    n_cadences: int  # rows in the file for this segment
    n_quality: int  # dropped by the quality mask
    n_nonfinite: int  # dropped for a non-finite time, flux or error (after the quality cut)


# --------------------------------------------------------------------------------------------
# Format detection


def sniff(path: str | Path) -> str:
    """'fits', 'ecsv', 'csv', 'tsv', 'ssv' (semicolons) or 'ascii' (whitespace-separated), from
    the file's bytes."""
    with open(path, "rb") as fh:
        head = fh.read(2880)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as fh:
                head = fh.read(2880)
        except (OSError, EOFError) as exc:
            raise Unreadable(f"a corrupt gzip file ({exc})") from None
        if not head.startswith(b"SIMPLE  ="):
            raise Unreadable("a gzip file that does not hold FITS (gunzip text tables first)")
    if not head:
        raise Unreadable("an empty file")
    if head.startswith(b"SIMPLE  ="):
        return "fits"
    if head.startswith(b"# %ECSV"):
        return "ecsv"
    if b"\x00" in head:
        raise Unreadable("a binary file that is neither FITS nor a text table")
    lines = [ln for ln in head.decode("utf-8", "replace").splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise Unreadable("a text file without a table")
    first = lines[0]
    return "tsv" if "\t" in first else "csv" if "," in first else "ssv" if ";" in first else "ascii"


# --------------------------------------------------------------------------------------------
# FITS


@dataclasses.dataclass
class _Table:
    """A FITS binary table as the readers see it, whichever parser opened the file."""

    header: Mapping
    names: list[str]  # column names as written
    get: Callable[[str], np.ndarray]  # column by upper-case name

    def has(self, name: str) -> bool:
        return name.upper() in {n.upper() for n in self.names}

    def column(self, name: str) -> np.ndarray:
        return self.get(name.upper())


def open_fits(path: str | Path) -> tuple[Mapping, list[str], list[_Table | None]]:
    """(primary header, HDU names, one :class:`_Table` or None per HDU) of a FITS file, by the
    fast parser of :mod:`lcgen.ingest.fitsfile`, or by astropy for what that does not handle."""
    try:
        buf = fitsfile.file_bytes(path)
        hdus = fitsfile.read_hdus(buf)
        tables = []
        for hdu in hdus:
            columns = hdu.columns() if hdu.is_table else None
            tables.append(None if columns is None else _Table(
                hdu.header, [c.name for c in columns.values()],
                lambda name, hdu=hdu, columns=columns: fitsfile.read_column(buf, hdu, columns[name])))
        return hdus[0].header, [h.name for h in hdus], tables
    except (fitsfile.Unsupported, KeyError, ValueError):
        return _open_fits_astropy(path)


def _open_fits_astropy(path: str | Path) -> tuple[Mapping, list[str], list[_Table | None]]:
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            tables = []
            for hdu in hdul:
                if not isinstance(hdu, fits.BinTableHDU):
                    tables.append(None)
                    continue
                data = {name.upper(): np.array(hdu.data[name]) for name in hdu.columns.names} if hdu.data is not None else {}
                tables.append(_Table(hdu.header.copy(), list(hdu.columns.names), data.__getitem__))
            return hdul[0].header.copy(), [h.name.upper() for h in hdul], tables
    except Exception as exc:
        raise Unreadable(f"not a readable FITS file ({_short(exc)})") from None


def fits_target(path: str | Path) -> str | None:
    """The target name of a mission FITS light curve from its primary header alone (cheap: used
    to group files before reading them), or None when it cannot tell."""
    try:
        header = fitsfile.primary_header(path)
    except (fitsfile.Unsupported, OSError, EOFError):
        return None
    mission = _mission(header)
    return _target_name(header, None, mission) if mission else None


def read_fits(path: str | Path, cfg: IngestConfig) -> list[Segment]:
    primary, names, tables = open_fits(path)
    if "TARGETTABLES" in names or "targetpixel" in str(primary.get("CREATOR", "")).lower():
        raise Unreadable("a target-pixel file, not a light curve (make a light curve first, e.g. with "
                         "lightkurve, and pass it to lcgen.ingest.from_lightkurve)")
    mission = _mission(primary)
    if mission and "LIGHTCURVE" in names:
        return [_read_mission(path, tables[names.index("LIGHTCURVE")], primary, mission, cfg)]
    found = [t for t in tables if t is not None]
    if mission == "Kepler" and found and found[0].has("BARYTIME"):
        return [_read_kepler_legacy(path, found[0], primary, cfg)]
    if cfg.time_col and cfg.flux_col:
        for table in found:
            if table.has(cfg.time_col):
                columns = {name: table.column(name) for name in table.names if _scalar(table, name)}
                return _table_segments(path, columns, {"OBJECT": primary.get("OBJECT") or table.header.get("OBJECT")}, cfg)
        raise Unreadable(f"no binary table with a column {cfg.time_col!r} (HDUs: {', '.join(names)})")
    what = f"a {mission} FITS file" if mission else "a FITS file"
    raise Unreadable(f"{what} without a LIGHTCURVE table (HDUs: {', '.join(names)}); "
                     f"for another FITS table give --time-col and --flux-col")


def _scalar(table: _Table, name: str) -> bool:
    try:
        return table.column(name).ndim == 1
    except (fitsfile.Unsupported, KeyError):
        return False


def _mission(primary) -> str | None:
    telescope = str(primary.get("TELESCOP", primary.get("MISSION", ""))).strip().upper()
    if telescope == "TESS" or "MIT/QLP" in str(primary.get("ORIGIN", "")).upper():
        return "TESS"
    if telescope == "KEPLER":
        k2 = str(primary.get("MISSION", "")).strip().upper() == "K2" or "CAMPAIGN" in primary
        return "K2" if k2 else "Kepler"
    return None


def _pipeline(primary, mission: str) -> str:
    if mission != "TESS":
        return "Kepler SOC"
    if "MIT/QLP" in str(primary.get("ORIGIN", "")).upper():
        return "QLP"
    hlsp = " ".join(str(primary.get(k, "")) for k in ("HLSPID", "HLSPACRN", "HLSPNAME")).upper()
    return "TESS-SPOC" if "TESS-SPOC" in hlsp else "SPOC"


def _target_name(primary, table_header, mission: str) -> str:
    prefix, key = {"Kepler": ("KIC", "KEPLERID"), "K2": ("EPIC", "KEPLERID"), "TESS": ("TIC", "TICID")}[mission]
    for header in (primary, table_header):
        if header is not None and header.get(key) not in (None, ""):
            return f"{prefix} {int(header[key])}"
    obj = str(primary.get("OBJECT", "")).strip()
    return obj or "unknown"


def _segment_label(headers, mission: str) -> str:
    key, letter = {"Kepler": ("QUARTER", "Q"), "K2": ("CAMPAIGN", "C"), "TESS": ("SECTOR", "S")}[mission]
    for header in headers:
        if header.get(key) not in (None, ""):
            return f"{letter}{int(header[key])}"
    return ""


# (flux, error) column candidates per product and --flux choice; the first present is used.
_SPOC_FLUX = {"pdcsap": [("PDCSAP_FLUX", "PDCSAP_FLUX_ERR")], "sap": [("SAP_FLUX", "SAP_FLUX_ERR")]}
_QLP_FLUX = {"sap": [("SAP_FLUX", "KSPSAP_FLUX_ERR"), ("SAP_FLUX", "DET_FLUX_ERR")],
             "det": [("KSPSAP_FLUX", "KSPSAP_FLUX_ERR"), ("DET_FLUX", "DET_FLUX_ERR")]}


def _flux_columns(product: dict, choice: str, present: set[str], what: str) -> tuple[str, str]:
    order = {"auto": ["pdcsap", "sap"]}.get(choice, [choice])
    for key in order:
        for flux, err in product.get(key, []):
            if flux in present and err in present:
                return flux, err
    have = sorted(c for c in present if "FLUX" in c)
    raise Unreadable(f"{what} has no {choice if choice != 'auto' else 'PDCSAP or SAP'} flux column "
                     f"(flux columns: {', '.join(have) or 'none'}); choose another --flux")


def _read_mission(path, table: _Table, primary, mission: str, cfg: IngestConfig) -> Segment:
    header = table.header
    present = {n.upper() for n in table.names}
    if "TIME" not in present or not int(header.get("NAXIS2", 1) or 0):
        raise Unreadable("a LIGHTCURVE table without rows or without a TIME column")
    pipeline = _pipeline(primary, mission)
    flux_col, err_col = _flux_columns(_QLP_FLUX if pipeline == "QLP" else _SPOC_FLUX, cfg.flux, present,
                                      f"this {pipeline} file")
    quality_col = next((c for c in ("SAP_QUALITY", "QUALITY") if c in present), None)
    bjdref = float(header.get("BJDREFI", DEFAULT_BJDREF[mission])) + float(header.get("BJDREFF", 0.0))
    try:
        time = table.column("TIME").astype(np.float64) + (bjdref - JD_REF)
        flux = table.column(flux_col).astype(np.float64)
        err = table.column(err_col).astype(np.float64)
        quality = table.column(quality_col) if quality_col else None
    except Exception as exc:
        raise Unreadable(f"unreadable LIGHTCURVE columns ({_short(exc)})") from None
    timedel = header.get("TIMEDEL")
    mask = bitmask(cfg.quality, "tess" if mission == "TESS" else "kepler") if quality_col else 0
    return clean_segment(time, flux, err, quality, mask, cfg, target=_target_name(primary, header, mission),
                         mission=mission, pipeline=pipeline, segment=_segment_label((primary, header), mission),
                         cadence_s=float(timedel) * 86400.0 if timedel else None, source=Path(path).name,
                         flux_column=flux_col, time_system=TIME_SYSTEM)


def _read_kepler_legacy(path, table: _Table, primary, cfg: IngestConfig) -> Segment:
    """The first public Kepler releases: barytime (BJD − 2400000) and ap_* flux in e-/cadence."""
    present = {n.upper() for n in table.names}
    product = {"pdcsap": [("AP_CORR_FLUX", "AP_CORR_ERR")], "sap": [("AP_RAW_FLUX", "AP_RAW_ERR")]}
    flux_col, err_col = _flux_columns(product, cfg.flux, present, "this early-release Kepler file")
    header = table.header
    kind = str(header.get("DATATYPE", primary.get("DATATYPE", ""))).strip().lower()
    exposure = LEGACY_CADENCE_S.get(kind, 1.0)  # e-/cadence → e-/s (cancels in normalisation)
    return clean_segment(table.column("BARYTIME").astype(np.float64),
                         table.column(flux_col).astype(np.float64) / exposure,
                         table.column(err_col).astype(np.float64) / exposure, None, 0, cfg,
                         target=_target_name(primary, header, "Kepler"), mission="Kepler",
                         pipeline="Kepler SOC (early release)", segment=_segment_label((primary, header), "Kepler"),
                         cadence_s=None, source=Path(path).name, flux_column=flux_col.lower(),
                         time_system=TIME_SYSTEM)


# --------------------------------------------------------------------------------------------
# Tables


def read_table(path: str | Path, kind: str, cfg: IngestConfig) -> list[Segment]:
    from astropy.io import ascii as astro_ascii

    fmt, options = {"ecsv": ("ecsv", {}), "csv": ("csv", {}), "tsv": ("tab", {}), "ssv": ("csv", {"delimiter": ";"}),
                    "ascii": ("basic", {})}[kind]
    try:
        table = astro_ascii.read(path, format=fmt, guess=False, **options)
    except Exception as exc:
        raise Unreadable(f"an unreadable {kind.upper()} table ({_short(exc)})") from None
    columns = {name: _filled(table[name]) for name in table.colnames if table[name].ndim == 1}
    return _table_segments(path, columns, dict(table.meta), cfg)


def _filled(column) -> np.ndarray:
    """A table column as an array; empty cells of a numeric column become NaN (dropped and
    counted as non-finite), never astropy's fill value."""
    if getattr(column, "mask", None) is not None and np.any(column.mask) and column.dtype.kind in "fiu":
        return column.astype(np.float64).filled(np.nan)
    return np.asarray(column)


def _table_segments(path, columns: dict[str, np.ndarray], meta: dict, cfg: IngestConfig) -> list[Segment]:
    """Segments of a table: one, or one per value of ``cfg.id_col``."""
    by_upper = {name.upper(): name for name in columns}

    def column(name: str | None, default: str | None, role: str, required: bool = True):
        wanted = name or default
        key = by_upper.get(wanted.upper()) if wanted else None
        if key is None:
            if not required and name is None:
                return None
            have = ", ".join(columns)
            hint = "" if name else f"; name it with --{role}-col"
            raise Unreadable(f"no column {wanted!r} for {role}{hint} (columns: {have})")
        return columns[key]

    time = column(cfg.time_col, "time", "time")
    flux = column(cfg.flux_col, "flux", "flux")
    err = column(cfg.err_col, "flux_err", "err", required=False)
    ids = column(cfg.id_col, None, "id") if cfg.id_col else None
    try:
        time, flux = time.astype(np.float64), flux.astype(np.float64)
        err = err.astype(np.float64) if err is not None else None
    except (TypeError, ValueError) as exc:
        raise Unreadable(f"non-numeric time, flux or error column ({_short(exc)})") from None
    if cfg.time_ref is not None:
        time = time + (cfg.time_ref - JD_REF)
    time_system = f"{TIME_SYSTEM} (from time_ref={cfg.time_ref})" if cfg.time_ref is not None else "as given"
    name = str(meta.get("OBJECT", "") or Path(path).name.split(".")[0])
    if ids is None:
        groups = [(name, np.arange(len(time)))]
    else:
        ids = ids.astype(str)
        _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
        groups = [(ids[first[k]], np.flatnonzero(inverse == k)) for k in np.argsort(first)]
    segments = []
    for target, rows in groups:
        y = flux[rows]
        e = err[rows] if err is not None else None
        if cfg.mag:
            y, e = magnitudes_to_flux(y, e)
        if e is None:
            e = np.full(len(y), scatter_error(y[np.argsort(time[rows], kind="stable")]))
        segments.append(clean_segment(
            time[rows], y, e, None, 0, cfg, target=target, mission="table", pipeline="table", segment="",
            cadence_s=None, source=Path(path).name, flux_column=(cfg.flux_col or "flux") + (" (mag)" if cfg.mag else ""),
            time_system=time_system))
    return segments


def magnitudes_to_flux(mag: np.ndarray, mag_err: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Relative flux ``10^(−0.4 (m − m̃))`` about the median finite magnitude m̃, and its
    first-order error ``0.4 ln(10) f σ_m``."""
    finite = mag[np.isfinite(mag)]
    ref = float(np.median(finite)) if finite.size else 0.0
    flux = 10.0 ** (-0.4 * (mag - ref))
    err = 0.4 * np.log(10.0) * flux * mag_err if mag_err is not None else None
    return flux, err


def scatter_error(flux: np.ndarray) -> float:
    """White-noise level from the point-to-point differences: 1.4826 MAD(Δf) / √2."""
    d = np.diff(flux[np.isfinite(flux)])
    if d.size < 2:
        return np.nan
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))


# --------------------------------------------------------------------------------------------
# Cleaning shared by every reader


def clean_segment(time, flux, err, quality, mask: int, cfg: IngestConfig, *, cadence_s: float | None,
                  **meta) -> Segment:
    """Drop cadences flagged by ``mask`` (counted first), then those with a non-finite time,
    flux or error; sort by time; divide by the median flux when ``cfg.normalise``."""
    n = len(time)
    keep = ~flagged(quality, mask) if quality is not None and mask else np.ones(n, bool)
    n_quality = int(n - keep.sum())
    finite = np.isfinite(time) & np.isfinite(flux) & np.isfinite(err)
    n_nonfinite = int((keep & ~finite).sum())
    keep &= finite
    if not keep.any():
        raise Unreadable(f"no usable points ({n} cadences: {n_quality} dropped by the quality mask, "
                         f"{n_nonfinite} non-finite)")
    t, y, e = time[keep], flux[keep], err[keep]
    if np.any(np.diff(t) < 0):
        order = np.argsort(t, kind="stable")
        t, y, e = t[order], y[order], e[order]
    if cfg.normalise:
        median = float(np.median(y))
        if not median > 0:
            raise Unreadable(f"median flux {median:.4g} is not positive, so it cannot be normalised "
                             f"(use --no-normalise, or --mag if the column holds magnitudes)")
        y, e = y / median, e / median
    if cadence_s is None:
        cadence_s = float(np.median(np.diff(t))) * 86400.0 if t.size > 1 else float("nan")
    return Segment(time=t, flux=y, flux_err=e, cadence_s=cadence_s,
                   quality_mask=int(mask) if quality is not None else 0,
                   n_cadences=n, n_quality=n_quality, n_nonfinite=n_nonfinite, **meta)


def read_segments(path: str | Path, cfg: IngestConfig) -> list[Segment]:
    """Every segment in one file, whatever its format; :class:`Unreadable` says why not."""
    try:
        kind = sniff(path)
    except OSError as exc:
        raise Unreadable(f"cannot be opened ({_short(exc)})") from None
    return read_fits(path, cfg) if kind == "fits" else read_table(path, kind, cfg)


def _upper(names) -> list[str]:
    return [n.upper() for n in names]


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]
