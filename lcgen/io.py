"""The lcgen HDF5 formats: atomic writes, checked reads.

Four formats, each an HDF5 file whose root attributes name it:

- ``raw``: ragged light curves. ``time`` (float64, days), ``flux``, ``flux_err`` and, for mocks,
  the noise-free ``signal`` (float32) as 1-D concatenations; ``offsets`` (N+1,) int64 so curve i
  is ``[offsets[i], offsets[i+1])``; per-curve metadata columns under the group ``meta``.
- ``spectra``: multitaper features, written by :mod:`lcgen.preprocess`.
- ``timeseries``: fixed-length windows, written by :mod:`lcgen.convert`.
- ``embeddings``: a run's pooled latents, written by :mod:`lcgen.embed`.

Every file carries ``format``, ``format_version``, ``lcgen_version``, ``created`` and ``config``
(the YAML of the resolved config that produced it). Files are written under ``NAME.partial`` and
renamed when complete, so a crash never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np
import yaml

from lcgen import __version__
from lcgen.errors import LcgenError

# Where each command reads and writes when given no path.
DEFAULT_RAW = "data/mock_lightcurves/mock_lightcurves.h5"
DEFAULT_SPECTRA = "data/mock_lightcurves/preprocessed.h5"
DEFAULT_TIMESERIES = "data/mock_lightcurves/timeseries.h5"

FORMAT_VERSION = 1
FORMATS = ("raw", "spectra", "timeseries", "embeddings")
RAW_KEYS = ("time", "flux", "flux_err", "offsets")


def partial_path(path: str | Path) -> Path:
    """Where a file is written before it is complete."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield ``path.partial`` to write to; rename it to ``path`` only if the block succeeds.

    On any exception (Ctrl-C included) the partial file is removed and nothing appears under
    the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_h5(path: str | Path) -> Iterator[h5py.File]:
    """An HDF5 file open for writing under ``path.partial``, renamed to ``path`` on success."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        yield f


def config_yaml(config: Any) -> str:
    """YAML text of a dataclass config or a plain dict."""
    if dataclasses.is_dataclass(config):
        from lcgen.config import config_to_yaml

        return config_to_yaml(config)
    return yaml.safe_dump(config if config is not None else {}, sort_keys=False)


def write_header(f: h5py.File, fmt: str, config: Any) -> None:
    """Stamp a file with its format, versions, creation time and the config that produced it."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    f.attrs["format"] = fmt
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["lcgen_version"] = __version__
    f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    f.attrs["config"] = config_yaml(config)


def open_checked(path: str | Path, fmt: str | None = None, required: Sequence[str] = ()) -> h5py.File:
    """Open an lcgen file read-only, checking that it exists, is HDF5, has the expected format
    and holds the required datasets. Errors say which file, what is wrong and what to do."""
    path = Path(path)
    if not path.exists():
        hint = _make_hint(fmt)
        raise LcgenError(f"{path} does not exist{hint}")
    if path.is_dir():
        raise LcgenError(f"{path} is a directory, not an lcgen HDF5 file")
    if not h5py.is_hdf5(path):
        raise LcgenError(f"{path} is not an HDF5 file (lcgen reads and writes .h5 files)")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise LcgenError(f"{path} could not be opened as HDF5: {exc}") from None
    try:
        found = f.attrs.get("format")
        found = found.decode() if isinstance(found, bytes) else found
        if fmt is not None and found != fmt:
            what = f"an lcgen '{found}' file" if found else "not an lcgen file (no 'format' attribute)"
            raise LcgenError(f"{path} is {what}; expected a '{fmt}' file{_make_hint(fmt)}")
        version = int(f.attrs.get("format_version", 0))
        if found and version > FORMAT_VERSION:
            raise LcgenError(f"{path} has format version {version}, newer than this lcgen reads "
                             f"({FORMAT_VERSION}); upgrade lcgen")
        missing = [k for k in required if k not in f]
        if missing:
            raise LcgenError(f"{path} lacks {', '.join(missing)}; it holds {', '.join(sorted(f.keys())) or 'nothing'}")
    except BaseException:
        f.close()
        raise
    return f


def read_config(path_or_file: str | Path | h5py.File) -> dict:
    """The config stored in a file's attributes, as a dict."""
    if isinstance(path_or_file, h5py.File):
        return yaml.safe_load(_attr_str(path_or_file.attrs.get("config", ""))) or {}
    with open_checked(path_or_file) as f:
        return read_config(f)


def _attr_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _make_hint(fmt: str | None) -> str:
    return {
        "raw": "; make one with `lcgen generate` (mock data) or give the path with --input",
        "spectra": "; make one with `lcgen preprocess`",
        "timeseries": "; make one with `lcgen convert`",
        "embeddings": "; make one with `lcgen embed RUN_DIR`",
    }.get(fmt or "", "")


# --------------------------------------------------------------------------------------------
# Raw light curves


@dataclasses.dataclass
class RawLightCurves:
    """Ragged light curves held in memory; curve i spans ``offsets[i]:offsets[i+1]``."""

    time: np.ndarray  # (P,) float64, days
    flux: np.ndarray  # (P,)
    flux_err: np.ndarray  # (P,)
    offsets: np.ndarray  # (N+1,) int64
    meta: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # each (N,)
    signal: np.ndarray | None = None  # (P,) noise-free flux, mocks only
    config: dict = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def span(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def curve(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(time, flux, flux_err) of curve i."""
        s = self.span(i)
        return self.time[s], self.flux[s], self.flux_err[s]


def raw_offsets(f: h5py.File) -> np.ndarray:
    """The checked ``offsets`` (N+1,) of an open raw file: they must partition its points."""
    offsets = f["offsets"][:].astype(np.int64)
    n_points = f["time"].shape[0]
    sizes = {k: f[k].shape[0] for k in ("time", "flux", "flux_err", "signal") if k in f}
    if len(set(sizes.values())) != 1:
        raise LcgenError(f"{f.filename}: point arrays differ in length ({sizes}); the file is corrupt")
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != n_points \
            or np.any(np.diff(offsets) < 0):
        raise LcgenError(f"{f.filename}: 'offsets' does not partition the {n_points} points; the file is corrupt")
    return offsets


def read_raw(path: str | Path) -> RawLightCurves:
    """Read a whole raw file into memory, validating its structure."""
    with open_checked(path, "raw", RAW_KEYS) as f:
        offsets = raw_offsets(f)
        meta = {}
        n = len(offsets) - 1
        for key, ds in f.get("meta", {}).items():
            values = ds.asstr()[:] if h5py.check_string_dtype(ds.dtype) else ds[:]
            if len(values) != n:
                raise LcgenError(f"{path}: meta/{key} has {len(values)} rows for {n} curves; the file is corrupt")
            meta[key] = np.asarray(values)
        return RawLightCurves(
            time=f["time"][:], flux=f["flux"][:], flux_err=f["flux_err"][:], offsets=offsets,
            meta=meta, signal=f["signal"][:] if "signal" in f else None, config=read_config(f),
        )


class RawWriter:
    """Stream curves into a raw file, atomically.

    >>> with RawWriter("raw.h5", config) as w:
    ...     w.append(times, fluxes, errors, signals=None, meta={"lc_type": [...], "period": [...]})

    ``times``, ``fluxes``, ``errors`` (and ``signals``) are lists of 1-D arrays, one per curve;
    ``meta`` maps column names to sequences with one value per curve (str or number). The file
    appears under its final name only when the ``with`` block ends without error.
    """

    def __init__(self, path: str | Path, config: Any = None):
        self.path = Path(path)
        self.config = config
        self._stack: contextlib.ExitStack | None = None
        self.f: h5py.File | None = None
        self.n_curves = 0
        self.n_points = 0

    def __enter__(self) -> "RawWriter":
        self._stack = contextlib.ExitStack()
        self.f = self._stack.enter_context(atomic_h5(self.path))
        write_header(self.f, "raw", self.config)
        for key, dtype in (("time", "f8"), ("flux", "f4"), ("flux_err", "f4")):
            self._new(key, dtype)
        self.f.create_dataset("offsets", data=np.zeros(1, np.int64), maxshape=(None,), chunks=(65536,))
        self.f.create_group("meta")
        return self

    def __exit__(self, *exc) -> bool:
        assert self._stack is not None
        return self._stack.__exit__(*exc)

    def _new(self, key: str, dtype: str, group: h5py.Group | None = None) -> h5py.Dataset:
        group = group if group is not None else self.f
        return group.create_dataset(key, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(65536,))

    def append(self, times: Sequence[np.ndarray], fluxes: Sequence[np.ndarray],
               errors: Sequence[np.ndarray], signals: Sequence[np.ndarray] | None = None,
               meta: dict[str, Sequence] | None = None) -> None:
        n = len(times)
        if not (len(fluxes) == len(errors) == n) or (signals is not None and len(signals) != n):
            raise ValueError("times, fluxes, errors (and signals) need one array per curve")
        lengths = np.array([len(t) for t in times], dtype=np.int64)
        for i in range(n):
            if not (len(fluxes[i]) == len(errors[i]) == lengths[i]) or (
                    signals is not None and len(signals[i]) != lengths[i]):
                raise ValueError(f"curve {self.n_curves + i}: time, flux and errors differ in length")
        if self.n_curves == 0 and signals is not None:
            self._new("signal", "f4")
        if ("signal" in self.f) != (signals is not None):
            raise ValueError("either every chunk has signals or none does")
        columns = {"time": times, "flux": fluxes, "flux_err": errors}
        if signals is not None:
            columns["signal"] = signals
        for key, arrays in columns.items():
            append_rows(self.f[key], np.concatenate(arrays) if n else np.zeros(0))
        append_rows(self.f["offsets"], self.n_points + np.cumsum(lengths))
        group = self.f["meta"]
        for key, values in (meta or {}).items():
            values = np.asarray(values)
            if len(values) != n:
                raise ValueError(f"meta column {key!r} has {len(values)} values for {n} curves")
            if key not in group:
                if self.n_curves:
                    raise ValueError(f"meta column {key!r} appeared after the first chunk")
                dtype = h5py.string_dtype() if values.dtype.kind in "USO" else values.dtype
                self._new(key, dtype, group)
            if values.dtype.kind in "USO":
                values = values.astype(object)
            append_rows(group[key], values)
        self.n_curves += n
        self.n_points += int(lengths.sum())


def append_rows(ds: h5py.Dataset, values: np.ndarray) -> None:
    """Append ``values`` along the first axis of a resizable dataset."""
    start = ds.shape[0]
    ds.resize(start + len(values), axis=0)
    if len(values):
        ds[start:] = values


# --------------------------------------------------------------------------------------------
# Summaries for `lcgen info`


def describe(path: str | Path) -> dict:
    """Format, attributes and per-dataset shape/dtype/range of any lcgen file."""
    with open_checked(path) as f:
        info = {
            "path": str(path),
            "format": _attr_str(f.attrs.get("format", "(none)")),
            "format_version": int(f.attrs.get("format_version", 0)),
            "lcgen_version": _attr_str(f.attrs.get("lcgen_version", "?")),
            "created": _attr_str(f.attrs.get("created", "?")),
            "config": _attr_str(f.attrs.get("config", "")),
            "datasets": [],
        }

        def visit(name: str, obj: Any) -> None:
            if not isinstance(obj, h5py.Dataset):
                return
            row = {"name": name, "shape": obj.shape, "dtype": str(obj.dtype)}
            if obj.dtype.kind in "fiub" and obj.size:
                data = _sample(obj)
                finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data
                if finite.size:
                    row.update(min=float(finite.min()), max=float(finite.max()),
                               mean=float(finite.mean()), std=float(finite.std()))
                if data.dtype.kind == "f":
                    row["non_finite"] = int(data.size - np.isfinite(data).sum())
            elif h5py.check_string_dtype(obj.dtype) and obj.size:
                values, counts = np.unique(obj.asstr()[: min(obj.shape[0], 100_000)], return_counts=True)
                row["values"] = dict(zip(values.tolist(), counts.tolist()))
            info["datasets"].append(row)

        f.visititems(visit)
        if info["format"] == "embeddings":  # where the vectors came from
            info["provenance"] = {k: _attr_str(f.attrs[k]) for k in (
                "run_dir", "model_name", "preset", "checkpoint", "weights", "level", "pooling", "input")
                if k in f.attrs}
        if "offsets" in f:
            info["n_curves"] = int(f["offsets"].shape[0] - 1)
        else:
            first = next((d for d in info["datasets"] if len(d["shape"]) == 2), None)
            info["n_curves"] = int(first["shape"][0]) if first else 0
        return info


def _sample(ds: h5py.Dataset, limit: int = 5_000_000) -> np.ndarray:
    """All of a dataset, or its first ``limit`` elements' rows when it is large."""
    if ds.size <= limit:
        return ds[()]
    rows = max(1, limit // max(1, int(np.prod(ds.shape[1:]))))
    return ds[:rows]
