"""The settings of `lcgen ingest` (and of :func:`lcgen.ingest.read_lightcurve`)."""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional, Union

from lcgen.errors import LcgenError
from lcgen.ingest.quality import check_level

DEFAULT_OUTPUT = "data/real/raw.h5"
FLUX_CHOICES = ("auto", "pdcsap", "sap", "det")


@dataclasses.dataclass
class IngestConfig:
    inputs: list[str] = dataclasses.field(default_factory=list)  # (list) files, directories (searched recursively) and globs
    output: str = DEFAULT_OUTPUT  # (str) raw light-curve file to write
    flux: Literal["auto", "pdcsap", "sap", "det"] = "auto"  # (str) auto: PDCSAP where the product has it, else SAP; det: QLP's detrended flux
    quality: Union[str, int] = "default"  # (str) default, hard, hardest, none, or an integer bitmask of flags to drop
    normalise: bool = True  # (bool) divide each segment (quarter/campaign/sector) by its median flux
    stitch: bool = True  # (bool) files of the same target become one curve, segments in time order
    time_col: Optional[str] = None  # (str) tables: time column (default: a column named 'time')
    flux_col: Optional[str] = None  # (str) tables: flux column (default: 'flux')
    err_col: Optional[str] = None  # (str) tables: flux-error column (default: 'flux_err' if present)
    id_col: Optional[str] = None  # (str) tables: target-id column, for many curves in one table
    mag: bool = False  # (bool) tables: the flux column holds magnitudes (and the error column magnitude errors)
    time_ref: Optional[float] = None  # (float) tables: Julian date of time 0 (2400000.5 for MJD, 0 for JD); None keeps times as given

    def __post_init__(self) -> None:
        if self.flux not in FLUX_CHOICES:
            raise LcgenError(f"--flux must be one of {', '.join(FLUX_CHOICES)}, got {self.flux!r}")
        self.quality = str(self.quality)
        check_level(self.quality)
