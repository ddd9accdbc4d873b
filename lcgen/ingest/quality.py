"""Quality-flag levels from the missions' published bit definitions.

Every Kepler, K2 and TESS light-curve cadence carries an integer of flag bits (the
``SAP_QUALITY`` column in Kepler/K2 files, ``QUALITY`` in TESS SPOC, TESS-SPOC and QLP files).
A level names a bitmask; a cadence is dropped when ``quality & bitmask != 0``.

Kepler and K2 bits (Kepler Archive Manual, KDMC-10008, Table 2-3; bits 20–21 added for K2):

====== ===================================== ======= ====
value  meaning                               default hard
====== ===================================== ======= ====
1      attitude tweak                        x       x
2      safe mode                             x       x
4      coarse point                          x       x
8      Earth point                           x       x
16     reaction-wheel zero crossing
32     reaction-wheel desaturation event     x       x
64     Argabrightening event
128    cosmic ray in optimal aperture                x
256    manual exclude                        x       x
1024   sudden sensitivity dropout                    x
2048   impulsive outlier
4096   Argabrightening on the CCD
8192   cosmic ray in collateral data                 x
16384  detector anomaly                      x       x
32768  no fine point
65536  no data                               x       x
131072 rolling band in optimal aperture
262144 rolling band in full mask
524288 possible thruster firing (K2)                 x
1048576 thruster firing (K2)                 x       x
====== ===================================== ======= ====

TESS bits (TESS Science Data Products Description Document, EXP-TESS-ARC-ICD-0014, Table 28;
bit 16 from the sector-20 data release notes). QLP's ``QUALITY`` column is read with the same
table, as lightkurve reads it; the QLP data product description was not checked bit by bit
here, so ``hardest`` (drop any flagged cadence) is the safe choice for QLP:

====== ===================================== ======= ====
value  meaning                               default hard
====== ===================================== ======= ====
1      attitude tweak                        x       x
2      safe mode                             x       x
4      coarse point                          x       x
8      Earth point                           x       x
16     Argabrightening event
32     reaction-wheel desaturation (momentum dump) x x
64     cosmic ray in optimal aperture                x
128    manual exclude                        x       x
256    discontinuity corrected
512    impulsive outlier
1024   cosmic ray in collateral data                 x
2048   stray light (set by the MIT team)             x
4096   scattered light (set by SPOC)                 x
8192   planet-search exclude
16384  bad calibration exclude
32768  insufficient targets for error correction
====== ===================================== ======= ====

``default`` drops the cadences that are unusable whatever the science (the spacecraft was not
pointing, was in safe mode, was dumping momentum, or the pipeline excluded it); ``hard`` adds
cosmic rays, stray/scattered light and (K2) possible thruster firings, which also removes good
data; ``hardest`` drops any cadence with any bit set; ``none`` keeps every cadence. These are the
same groupings lightkurve uses, so counts compare. An integer gives the bitmask directly.
"""

from __future__ import annotations

import numpy as np

from lcgen.errors import LcgenError

KEPLER_BITS = {
    1: "attitude tweak", 2: "safe mode", 4: "coarse point", 8: "Earth point", 16: "zero crossing",
    32: "desaturation event", 64: "Argabrightening", 128: "cosmic ray in optimal aperture",
    256: "manual exclude", 1024: "sudden sensitivity dropout", 2048: "impulsive outlier",
    4096: "Argabrightening on CCD", 8192: "cosmic ray in collateral data", 16384: "detector anomaly",
    32768: "no fine point", 65536: "no data", 131072: "rolling band in optimal aperture",
    262144: "rolling band in full mask", 524288: "possible thruster firing", 1048576: "thruster firing",
}
TESS_BITS = {
    1: "attitude tweak", 2: "safe mode", 4: "coarse point", 8: "Earth point", 16: "Argabrightening",
    32: "desaturation event", 64: "cosmic ray in optimal aperture", 128: "manual exclude",
    256: "discontinuity corrected", 512: "impulsive outlier", 1024: "cosmic ray in collateral data",
    2048: "stray light", 4096: "scattered light", 8192: "planet search exclude",
    16384: "bad calibration exclude", 32768: "insufficient targets for error correction",
}

ALL_BITS = -1  # every bit set: ``q & -1 != 0`` exactly when q != 0

_KEPLER_DEFAULT = 1 | 2 | 4 | 8 | 32 | 256 | 16384 | 65536 | 1048576
_TESS_DEFAULT = 1 | 2 | 4 | 8 | 32 | 128
LEVELS = {
    "kepler": {"none": 0, "default": _KEPLER_DEFAULT,
               "hard": _KEPLER_DEFAULT | 128 | 1024 | 8192 | 524288, "hardest": ALL_BITS},
    "tess": {"none": 0, "default": _TESS_DEFAULT,
             "hard": _TESS_DEFAULT | 64 | 1024 | 2048 | 4096, "hardest": ALL_BITS},
}
LEVEL_NAMES = ("default", "hard", "hardest", "none")


def bitmask(level: str | int, flags: str) -> int:
    """The bitmask of quality ``level`` (a name or an int) for a mission's flag family
    (``"kepler"`` for Kepler and K2, ``"tess"`` for every TESS product)."""
    if isinstance(level, int) or (isinstance(level, str) and level.lstrip("-").isdigit()):
        return int(level)
    try:
        return LEVELS[flags][level]
    except KeyError:
        raise LcgenError(f"unknown quality level {level!r}; choose one of {', '.join(LEVEL_NAMES)} "
                         f"or an integer bitmask") from None


def check_level(level: str | int) -> str | int:
    """Validate a quality level up front (before any file is read)."""
    bitmask(level, "tess")
    return level


def flagged(quality: np.ndarray, mask: int) -> np.ndarray:
    """Boolean (N,): cadences whose quality has any bit of ``mask`` set."""
    return (np.asarray(quality).astype(np.int64) & np.int64(mask)) != 0
