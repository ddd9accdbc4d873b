"""Real light curves in: Kepler, K2 and TESS FITS products, FITS/CSV/TSV/ECSV tables and
lightkurve objects → lcgen's raw format (`lcgen ingest`).

- :mod:`lcgen.ingest.readers`: format detection and one reader per product; the archive
  layouts relied on, with references, are in its docstring.
- :mod:`lcgen.ingest.fitsfile`: a fast reader of FITS headers and binary-table columns.
- :mod:`lcgen.ingest.quality`: quality-flag levels from the missions' bit definitions.
- :mod:`lcgen.ingest.pipeline`: stitching, the `ingest` command and the Python API.

>>> from lcgen.ingest import read_lightcurve
>>> lc = read_lightcurve("kplr011446443-2009166043257_llc.fits")
>>> lc.time, lc.flux, lc.flux_err, lc.meta["segments"]
"""

from lcgen.ingest.options import IngestConfig
from lcgen.ingest.pipeline import (META_COLUMNS, LightCurve, describe_curves, from_lightkurve, ingest, planned_files, read_lightcurve,
                                   read_lightcurves, stitch, write_lightcurves)

__all__ = ["IngestConfig", "LightCurve", "META_COLUMNS", "describe_curves", "from_lightkurve", "ingest", "planned_files",
           "read_lightcurve", "read_lightcurves", "stitch", "write_lightcurves"]
