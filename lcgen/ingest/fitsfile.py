"""A small, fast reader of FITS headers and binary-table columns (FITS Standard 4.0, §4 headers,
§7.3 binary tables), for the ingest of thousands of archive light curves.

astropy.io.fits builds a Column object per column and validates every card it touches, which
costs ~20 ms per light-curve file; ingest needs a few header keys and three or four columns, so
this reader parses the 80-character cards of each header into a dict, walks the HDUs by their
sizes and views the wanted columns straight out of the bytes with a big-endian numpy dtype
(``np.ndarray(buffer=..., offset=..., strides=(NAXIS1,))``). Anything outside that plain subset
(variable-length arrays, vector columns, a truncated file) raises :class:`Unsupported`, and the
caller falls back to astropy. tests/test_ingest.py checks both give the same arrays.
"""

from __future__ import annotations

import dataclasses
import gzip
import re
from pathlib import Path

import numpy as np

BLOCK = 2880
CARD = 80
# TFORM letter → (bytes per element, numpy dtype); 'A' is handled as a string of `repeat` bytes.
_FORMS = {"L": (1, None), "X": (None, None), "B": (1, "u1"), "I": (2, ">i2"), "J": (4, ">i4"), "K": (8, ">i8"),
          "A": (1, None), "E": (4, ">f4"), "D": (8, ">f8"), "C": (8, None), "M": (16, None), "P": (8, None),
          "Q": (16, None)}
_TFORM = re.compile(r"^\s*(\d*)([LXBIJKAEDCMPQ])")


class Unsupported(Exception):
    """Outside the plain subset this reader handles (or not FITS at all)."""


@dataclasses.dataclass
class Column:
    name: str
    offset: int  # bytes from the start of a row
    repeat: int
    code: str
    scale: float = 1.0
    zero: float = 0.0


@dataclasses.dataclass
class HDU:
    header: dict  # keyword → value (str, int, float, bool); COMMENT/HISTORY/CONTINUE left out
    data_start: int  # byte offset of the data in the file
    data_size: int  # bytes of data (without padding)

    @property
    def name(self) -> str:
        return str(self.header.get("EXTNAME", "PRIMARY" if "SIMPLE" in self.header else "")).strip().upper()

    @property
    def is_table(self) -> bool:
        return str(self.header.get("XTENSION", "")).strip() == "BINTABLE"

    def columns(self) -> dict[str, Column]:
        """The table's columns by upper-case name (empty for other HDUs)."""
        if not self.is_table:
            return {}
        out, offset = {}, 0
        for i in range(1, int(self.header.get("TFIELDS", 0)) + 1):
            match = _TFORM.match(str(self.header.get(f"TFORM{i}", "")))
            if not match:
                raise Unsupported(f"TFORM{i} = {self.header.get(f'TFORM{i}')!r}")
            repeat, code = int(match.group(1) or 1), match.group(2)
            size = (repeat + 7) // 8 if code == "X" else _FORMS[code][0] * repeat
            name = str(self.header.get(f"TTYPE{i}", f"COL{i}")).strip()
            out[name.upper()] = Column(name, offset, repeat, code, float(self.header.get(f"TSCAL{i}", 1.0)),
                                       float(self.header.get(f"TZERO{i}", 0.0)))
            offset += size
        if offset != int(self.header.get("NAXIS1", -1)):
            raise Unsupported(f"column widths add up to {offset} bytes, NAXIS1 says {self.header.get('NAXIS1')}")
        return out


def parse_header(buf: bytes, start: int) -> tuple[dict, int]:
    """The header starting at byte ``start``: its cards as a dict, and where its data starts."""
    header: dict = {}
    pos = start
    while True:
        block = buf[pos: pos + BLOCK]
        if len(block) < BLOCK:
            raise Unsupported("the file ends inside a header (truncated?)")
        pos += BLOCK
        for k in range(0, BLOCK, CARD):
            card = block[k: k + CARD].decode("ascii", "replace")
            key = card[:8].rstrip()
            if key == "END":
                return header, pos
            if card[8:10] == "= " and key:
                header[key] = _card_value(card[10:])


def _card_value(text: str):
    text = text.lstrip()
    if text.startswith("'"):  # a string: '' is an escaped quote; trailing blanks do not count
        end = text.find("'", 1)
        while end != -1 and text[end + 1: end + 2] == "'":
            end = text.find("'", end + 2)
        return text[1: end if end != -1 else None].replace("''", "'").rstrip()
    token = text.split("/", 1)[0].strip()
    if token in ("T", "F"):
        return token == "T"
    try:
        return int(token)
    except ValueError:
        pass
    try:
        return float(token.replace("D", "E"))
    except ValueError:
        return token or None


def file_bytes(path: str | Path) -> bytes:
    """The whole file, gunzipped if it is gzip-compressed."""
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise Unsupported(f"corrupt gzip data ({exc})") from None
    return data


def read_hdus(buf: bytes) -> list[HDU]:
    """Every HDU of a FITS file held in ``buf``: headers parsed, data located (not read)."""
    if not buf.startswith(b"SIMPLE  ="):
        raise Unsupported("not a FITS file")
    hdus, pos = [], 0
    while pos < len(buf):
        header, data_start = parse_header(buf, pos)
        naxis = int(header.get("NAXIS", 0))
        size = 0
        if naxis:
            size = int(np.prod([int(header.get(f"NAXIS{i}", 0)) for i in range(1, naxis + 1)]))
            size = abs(int(header.get("BITPIX", 8))) // 8 * int(header.get("GCOUNT", 1)) * (size + int(header.get("PCOUNT", 0)))
        hdus.append(HDU(header, data_start, size))
        pos = data_start + -(-size // BLOCK) * BLOCK
        if pos > len(buf) + BLOCK:  # the last HDU's padding may be missing; more is truncation
            raise Unsupported("the file ends inside an HDU's data (truncated?)")
    if hdus and hdus[-1].data_start + hdus[-1].data_size > len(buf):
        raise Unsupported("the file ends inside an HDU's data (truncated?)")
    return hdus


def primary_header(path: str | Path) -> dict:
    """The primary header alone, reading only its blocks (for grouping files cheaply)."""
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    with (gzip.open if gzipped else open)(path, "rb") as fh:
        buf = b""
        while True:
            block = fh.read(BLOCK)
            if len(block) < BLOCK or not (buf or block).startswith(b"SIMPLE  ="):
                raise Unsupported("not a FITS file, or no complete primary header")
            buf += block
            if any(block[k: k + 8] == b"END     " for k in range(0, BLOCK, CARD)):
                return parse_header(buf, 0)[0]


def read_column(buf: bytes, hdu: HDU, column: Column) -> np.ndarray:
    """One scalar column of a binary table as a native-endian array (TSCAL/TZERO applied)."""
    nbytes, dtype = _FORMS[column.code]
    rows, width = int(hdu.header["NAXIS2"]), int(hdu.header["NAXIS1"])
    if column.code == "A":
        raw = np.ndarray((rows,), f"S{column.repeat}", buf, hdu.data_start + column.offset, (width,))
        return np.char.strip(raw.astype(str))
    if dtype is None or column.repeat != 1:
        raise Unsupported(f"column {column.name} has form {column.repeat}{column.code}")
    values = np.ndarray((rows,), dtype, buf, hdu.data_start + column.offset, (width,))
    values = values.astype(values.dtype.newbyteorder("="))
    if column.scale != 1.0 or column.zero != 0.0:
        values = values * column.scale + column.zero
    return values
