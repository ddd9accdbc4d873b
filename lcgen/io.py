"""The lcgen HDF5 formats: atomic writes, checked reads.

Four formats, each an HDF5 file whose root attributes name it:

- ``raw``: ragged light curves. ``time`` (float64, days), ``flux``, ``flux_err`` and, for mocks,
  the noise-free ``signal`` (float32) as 1-D concatenations; ``offsets`` (N+1,) int64 so curve i
  is ``[offsets[i], offsets[i+1])``; per-curve metadata columns under the group ``meta``.
- ``spectra``: multitaper features, written by :mod:`lcgen.features.preprocess`.
- ``timeseries``: fixed-length windows, written by :mod:`lcgen.features.convert`; with ``convert --spectra``
  also each window's PSD, F-statistic and ACF (a "paired" file, :func:`check_paired`).
- ``embeddings``: a run's pooled latents, written by :mod:`lcgen.embed`.

Every file carries ``format``, ``format_version``, ``lcgen_version``, ``created`` and ``config``
(the YAML of the resolved config that produced it). Files are written under ``NAME.partial`` and
renamed when complete, so a crash never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import errno
import fcntl
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

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


# --------------------------------------------------------------------------------------------
# Writing: every output goes to a locked NAME.partial, renamed only once written and checked

# OS errors a write can meet, as the user should read them.
WRITE_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (the file-size limit was reached)",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EIO: "input/output error",
}


def write_error(exc: BaseException, path: str | Path) -> LcgenError | None:
    """The one-line error for an OS failure ``exc`` met while writing ``path``, or None when
    ``exc`` is not one. h5py reports some failures as RuntimeError or ValueError with
    "errno = N" inside; torch raises a RuntimeError whose context is the OSError."""
    if isinstance(exc, LcgenError) or not isinstance(exc, Exception):
        return None
    seen, code = exc, None
    while seen is not None and not code:
        code = getattr(seen, "errno", None)
        if not code:
            found = re.search(r"errno = (\d+)", str(seen))
            code = int(found.group(1)) if found else None
        seen = seen.__cause__ or seen.__context__
    if code in WRITE_ERRORS:
        return LcgenError(f"{WRITE_ERRORS[code]} writing {path}")
    if code and isinstance(exc, OSError):
        return LcgenError(f"could not write {path}: {os.strerror(code)}")
    return None


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (through links and relative paths too)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_output(path: str | Path, *, inputs: Sequence[str | Path] = ()) -> Path:
    """Refuse an output path that cannot work before any work is done: a directory, a path under
    a regular file, or one of the ``inputs`` (writing it would destroy the input)."""
    path = Path(path)
    if path.is_dir():
        raise LcgenError(f"output {path} is a directory; give a file name")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise LcgenError(f"cannot write {path}: {parent} is a file, not a directory")
    for source in inputs:
        if source is not None and (same_file(path, source) or same_file(partial_path(path), source)):
            raise LcgenError(f"output {path} is the input file {source}; writing it would destroy the "
                             f"input, so give another output path")
    return path


@contextlib.contextmanager
def locked_partial(path: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on ``path.partial`` for the block and yield that path.

    The lock (``flock`` on a descriptor of its own; lcgen opens the file in HDF5 with
    ``locking=False``) is taken before the file is truncated or read, so a second lcgen process
    writing the same output is refused with a clear error and never touches the first one's
    file. The lock dies with its process, so a partial file left by a killed run is taken over.
    """
    path = Path(path)
    tmp = partial_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(exc, path) or LcgenError(f"cannot create the directory of {path}: {exc}") from None
    while True:
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT, 0o644)  # no O_TRUNC: it may be someone else's
        except OSError as exc:
            raise write_error(exc, tmp) or LcgenError(f"cannot write {tmp}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LcgenError(f"{path} is being written by another lcgen process (it holds {tmp}); wait "
                             f"for it to finish or write elsewhere") from None
        # The file may have been renamed or removed between open and lock: lock the one at tmp.
        try:
            mine = os.stat(tmp)
            held = os.fstat(fd)
            if (mine.st_dev, mine.st_ino) == (held.st_dev, held.st_ino):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield tmp
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, inputs: Sequence[str | Path] = (),
                keep_partial: Callable[[], bool] = lambda: False) -> Iterator[Path]:
    """Yield ``path.partial`` (locked, see :func:`locked_partial`) to write to; rename it to
    ``path`` only if the block succeeds.

    On any exception (Ctrl-C included) the partial file is removed, unless ``keep_partial()``
    says it holds work a rerun continues; nothing appears under the final name. OS failures
    (disk full, file-size limit, permissions) become one-line :class:`LcgenError` messages.
    """
    path = check_output(path, inputs=inputs)
    with locked_partial(path) as tmp:
        try:
            yield tmp
            with open(tmp, "rb+") as fh:  # durable before it appears complete
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            if not keep_partial():
                tmp.unlink(missing_ok=True)
            error = write_error(exc, path)
            if error is not None:
                raise error from exc
            raise


_BROKEN: list[h5py.File] = []  # files whose close failed after a write failure (see discard_h5)


def discard_h5(f: h5py.File) -> None:
    """Close ``f`` without writing another byte to its file.

    After a failed write (disk full, file-size limit) HDF5 cannot flush the file, and its close
    at interpreter exit would crash the process; pointing its descriptor at /dev/null first lets
    it close cleanly. What was on disk before stays as it was. When even that close fails (a
    flush that failed half way leaves HDF5 unable to close the file), the file object is kept
    here for good and :func:`hdf5_broken` says so: the process must then leave with
    ``os._exit``, as HDF5's own cleanup at exit would crash it.
    """
    if not f.id.valid:
        return
    with contextlib.suppress(Exception):
        fd = f.id.get_vfd_handle()
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, fd)
        os.close(null)
    try:
        f.close()
    except Exception:
        _BROKEN.append(f)


def hdf5_broken() -> bool:
    """Whether a failed write left HDF5 unable to close a file (see :func:`discard_h5`)."""
    return bool(_BROKEN)


@contextlib.contextmanager
def quiet_hdf5_deallocs() -> Iterator[None]:
    """Keep HDF5 write failures met while closing temporary objects off stderr.

    h5py closes an object when its last reference goes, and a failed write there prints a
    traceback per object (Cython reports it through ``sys.excepthook``, then
    ``sys.unraisablehook``); the same failure is raised by the next flush (:func:`sync_h5`), so
    those reports are dropped. Anything else passes on to the hooks in place before.
    """
    except_hook, unraisable_hook = sys.excepthook, sys.unraisablehook

    def on_except(kind, value, tb) -> None:
        if write_error(value, "") is None:
            except_hook(kind, value, tb)

    def on_unraisable(unraisable) -> None:
        from_h5py = "h5py" in str(unraisable.object)
        if not (from_h5py and (unraisable.exc_value is None or write_error(unraisable.exc_value, "") is not None)):
            unraisable_hook(unraisable)

    sys.excepthook, sys.unraisablehook = on_except, on_unraisable
    try:
        yield
    finally:
        sys.excepthook, sys.unraisablehook = except_hook, unraisable_hook


def open_h5_for_writing(tmp: str | Path, mode: str = "w") -> h5py.File:
    """Open a partial file that :func:`locked_partial` holds (HDF5's own lock would clash)."""
    return h5py.File(tmp, mode, locking=False)


def sync_h5(f: h5py.File) -> None:
    """Flush ``f`` and fsync its file: what was written is on disk when this returns."""
    f.flush()
    os.fsync(f.id.get_vfd_handle())


@contextlib.contextmanager
def atomic_h5(path: str | Path, *, inputs: Sequence[str | Path] = ()) -> Iterator[h5py.File]:
    """An HDF5 file open for writing under ``path.partial``, renamed to ``path`` on success,
    after it was closed and read back."""
    with atomic_path(path, inputs=inputs) as tmp, quiet_hdf5_deallocs():
        f = open_h5_for_writing(tmp)
        try:
            yield f
            sync_h5(f)  # a failed write shows here, with every object still open (see discard_h5)
            f.close()
        except BaseException:
            discard_h5(f)
            raise
        with h5py.File(tmp, "r", locking=False) as check:
            if "format" not in check.attrs:
                raise LcgenError(f"{tmp} was written without its header; it is not renamed to {path}")


def available_memory() -> int:
    """Bytes of memory this process can still take: the kernel's MemAvailable, capped by the
    address-space limit (RLIMIT_AS) when one is set."""
    avail = None
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/meminfo") as fh:
            avail = 1024 * int(next(line for line in fh if line.startswith("MemAvailable:")).split()[1])
    if avail is None:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    import resource

    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    return avail if limit == resource.RLIM_INFINITY else min(avail, limit)


def check_memory(nbytes: float, what: str) -> None:
    """Refuse, before any work, a setting whose arrays would not fit in the memory available
    (instead of a MemoryError, or a machine swapping, hours later)."""
    avail = available_memory()
    if nbytes > avail:
        raise LcgenError(f"{what} would need about {_gib(nbytes)} of memory, more than the {_gib(avail)} "
                         f"available; choose a smaller value")


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:,.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:,.0f} MiB"


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
    _check_header_readable(path)
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
    except LcgenError:
        f.close()
        raise
    except Exception as exc:  # KeyError, RuntimeError ... from HDF5 reading garbage
        f.close()
        raise damaged(path, exc) from None
    except BaseException:
        f.close()
        raise
    return f


def damaged(path: str | Path, exc: BaseException) -> LcgenError:
    """The error for a file HDF5 cannot read although its header is intact."""
    detail = str(exc).strip("'\"").splitlines()[0] if str(exc) else type(exc).__name__
    return LcgenError(f"{path} is damaged (HDF5: {detail}); make it again or restore it from a copy")


HEADER_TIMEOUT = 10.0  # seconds a forked child may take to read a file's root attributes
_HEADERS_READ: set[tuple] = set()  # (device, inode, size, mtime) of files already checked here


def _check_header_readable(path: Path) -> None:
    """Read the root attributes and names of ``path`` in a forked child first: HDF5 can loop
    for minutes on some damaged files (zeroed global heap) while holding the GIL, where
    nothing in this process could stop it; a child that takes longer than ``HEADER_TIMEOUT``
    is killed and the file reported as damaged. Each unchanged file is checked once per
    process (the fork costs ~5 ms of CPU)."""
    stat = path.stat()
    key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if not hasattr(os, "fork") or key in _HEADERS_READ:
        return
    from h5py._objects import phil  # h5py's global lock: held across the fork, so no other
                                    # thread can be inside HDF5 then (its lock would never free)
    with phil:
        pid = os.fork()
    if pid == 0:  # the child: read, then leave without any cleanup
        code = 1
        try:
            with h5py.File(path, "r") as f:
                for key in f.attrs:
                    f.attrs[key]
                list(f.keys())
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + HEADER_TIMEOUT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.waitstatus_to_exitcode(status) == 0:
                _HEADERS_READ.add(key)
            return  # whatever failed in the child fails here again, with its message
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise LcgenError(f"{path} is damaged (HDF5 did not finish reading its attributes in "
                             f"{HEADER_TIMEOUT:g} s); make it again or restore it from a copy")
        time.sleep(0.01)


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
    """The checked ``offsets`` (N+1,) of an open raw file: they must partition its points, and
    the point columns must be 1-D numbers."""
    for key in ("time", "flux", "flux_err", "signal", "offsets"):
        if key in f and (f[key].ndim != 1 or f[key].dtype.kind not in ("iu" if key == "offsets" else "fiu")):
            raise LcgenError(f"{f.filename}: '{key}' holds {f[key].dtype} values of shape {f[key].shape}; a raw "
                             f"file stores it as 1-D numbers")
    sizes = {k: f[k].shape[0] for k in ("time", "flux", "flux_err", "signal") if k in f}
    if len(set(sizes.values())) != 1:
        raise LcgenError(f"{f.filename}: point arrays differ in length ({sizes}); the file is corrupt")
    n_points = f["time"].shape[0]
    offsets = f["offsets"][:].astype(np.int64)
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != n_points \
            or np.any(np.diff(offsets) < 0):
        raise LcgenError(f"{f.filename}: 'offsets' does not partition the {n_points} points; the file is corrupt")
    return offsets


def read_raw(path: str | Path, start: int = 0, stop: int | None = None) -> RawLightCurves:
    """Read curves ``[start, stop)`` of a raw file (all of them by default) into memory,
    validating its structure. For files larger than memory, :class:`RawReader` reads slices."""
    with RawReader(path) as reader:
        return reader.read(start, len(reader) if stop is None else stop)


class RawReader:
    """A raw file open for reading curves by slices: memory holds one slice, not the file.

    >>> with RawReader("raw.h5") as r:
    ...     for start in range(0, len(r), 2048):
    ...         chunk = r.read(start, start + 2048)  # RawLightCurves, offsets from 0

    The structure (offsets, point and metadata lengths) is checked on opening.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.f = open_checked(path, "raw", RAW_KEYS)
        try:
            self.offsets = raw_offsets(self.f)
            n = len(self.offsets) - 1
            self.meta_keys = list(self.f.get("meta", {}).keys())
            for key in self.meta_keys:
                if self.f["meta"][key].shape[0] != n:
                    raise LcgenError(f"{path}: meta/{key} has {self.f['meta'][key].shape[0]} rows for {n} "
                                     f"curves; the file is corrupt")
            self.config = read_config(self.f)
            self.has_signal = "signal" in self.f
        except BaseException:
            self.f.close()
            raise

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __enter__(self) -> "RawReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.f.close()

    def meta(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Metadata column ``key`` for curves ``[start, stop)`` (strings as str)."""
        ds = self.f["meta"][key]
        rows = slice(start, len(self) if stop is None else stop)
        return np.asarray(ds.asstr()[rows] if h5py.check_string_dtype(ds.dtype) else ds[rows])

    def read(self, start: int, stop: int) -> RawLightCurves:
        """Curves ``[start, stop)`` (clipped to the file) with offsets counted from 0."""
        start, stop = max(0, start), min(len(self), max(start, stop))
        a, b = int(self.offsets[start]), int(self.offsets[stop])
        return RawLightCurves(
            time=self.f["time"][a:b], flux=self.f["flux"][a:b], flux_err=self.f["flux_err"][a:b],
            offsets=self.offsets[start:stop + 1] - a,
            meta={key: self.meta(key, start, stop) for key in self.meta_keys},
            signal=self.f["signal"][a:b] if self.has_signal else None, config=self.config)


class RawWriter:
    """Stream curves into a raw file, atomically.

    >>> with RawWriter("raw.h5", config) as w:
    ...     w.append(times, fluxes, errors, signals=None, meta={"lc_type": [...], "period": [...]})

    ``times``, ``fluxes``, ``errors`` (and ``signals``) are lists of 1-D arrays, one per curve;
    ``meta`` maps column names to sequences with one value per curve (str or number). The file
    appears under its final name only when the ``with`` block ends without error.
    """

    def __init__(self, path: str | Path, config: Any = None, *, inputs: Sequence[str | Path] = ()):
        self.path = Path(path)
        self.config = config
        self.inputs = inputs
        self._stack: contextlib.ExitStack | None = None
        self.f: h5py.File | None = None
        self.columns: dict[str, h5py.Dataset] = {}  # held open for the whole write (see below)
        self.n_curves = 0
        self.n_points = 0
        self._rows: dict[str, list[np.ndarray]] = {}  # per-curve rows not yet written (see append_packed)
        self._rows_held = 0

    def __enter__(self) -> "RawWriter":
        self._stack = contextlib.ExitStack()
        self.f = self._stack.enter_context(atomic_h5(self.path, inputs=self.inputs))
        write_header(self.f, "raw", self.config)
        self.f.create_group("meta")
        return self

    def __exit__(self, *exc) -> bool:
        assert self._stack is not None
        if exc[0] is None:
            try:
                if "offsets" not in self.f:  # no curve appended: an empty, valid file
                    self._create_columns(0, 0)
                self._write_rows()
            except BaseException as err:  # e.g. a full disk: the partial file goes, the error is reported
                if not self._stack.__exit__(type(err), err, err.__traceback__):
                    raise
                return True
        return self._stack.__exit__(*exc)

    def _create_columns(self, n_curves: int, n_points: int) -> None:
        """The point and per-curve columns, chunked to the size of the first append (a few
        curves make a small file; a catalogue gets 64K-element chunks)."""
        self._chunks = {"points": _chunk_length(n_points), "curves": _chunk_length(n_curves + 1)}
        for key, dtype in (("time", "f8"), ("flux", "f4"), ("flux_err", "f4")):
            self._new(key, dtype)
        self.columns["offsets"] = self.f.create_dataset("offsets", data=np.zeros(1, np.int64), maxshape=(None,),
                                                        chunks=(self._chunks["curves"],))

    def _new(self, key: str, dtype: str, group: h5py.Group | None = None) -> h5py.Dataset:
        # Datasets stay open until the file closes: a dataset closed mid-write flushes its cache
        # in a destructor, where a full disk cannot be reported and HDF5 can crash.
        per = "points" if group is None else "curves"
        name = key if group is None else f"{group.name.strip('/')}/{key}"
        group = group if group is not None else self.f
        self.columns[name] = group.create_dataset(key, shape=(0,), maxshape=(None,), dtype=dtype,
                                                  chunks=(self._chunks[per],))
        return self.columns[name]

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
        columns = {"time": times, "flux": fluxes, "flux_err": errors}
        if signals is not None:
            columns["signal"] = signals
        self.append_packed(lengths, {key: np.concatenate(arrays) if n else np.zeros(0)
                                     for key, arrays in columns.items()}, meta)

    def append_packed(self, lengths: np.ndarray, columns: dict[str, np.ndarray],
                      meta: dict[str, Sequence] | None = None) -> None:
        """:meth:`append` for curves already packed end to end: ``lengths`` (one per curve) and
        ``columns`` ``time``, ``flux``, ``flux_err`` (and ``signal``), each ``lengths.sum()`` long.

        The point columns are written at once; the per-curve rows (offsets, meta) are gathered
        and written every :data:`ROWS_PER_WRITE` curves and at the end (an HDF5 write costs
        ~50-100 µs whatever its size: 30 columns per append of 256 curves cost ~7 µs a curve)."""
        lengths = np.asarray(lengths, dtype=np.int64)
        n, total = len(lengths), int(lengths.sum())
        if any(len(values) != total for values in columns.values()):
            raise ValueError("packed columns must hold lengths.sum() points each")
        if "offsets" not in self.f:
            self._create_columns(n, total)
        if self.n_curves == 0 and "signal" in columns:
            self._new("signal", "f4")
        if ("signal" in self.columns) != ("signal" in columns):
            raise ValueError("either every chunk has signals or none does")
        for key, values in columns.items():
            append_rows(self.columns[key], values)
        rows = {"offsets": self.n_points + np.cumsum(lengths)}
        group = self.f["meta"]
        for key, values in (meta or {}).items():
            values = np.asarray(values)
            if len(values) != n:
                raise ValueError(f"meta column {key!r} has {len(values)} values for {n} curves")
            if f"meta/{key}" not in self.columns:
                if self.n_curves:
                    raise ValueError(f"meta column {key!r} appeared after the first chunk")
                dtype = h5py.string_dtype() if values.dtype.kind in "USO" else values.dtype
                self._new(key, dtype, group)
            if values.dtype.kind in "USO":
                values = values.astype(object)
            rows[f"meta/{key}"] = values
        for name, values in rows.items():
            self._rows.setdefault(name, []).append(values)
        self._rows_held += n
        self.n_curves += n
        self.n_points += total
        if self._rows_held >= ROWS_PER_WRITE:
            self._write_rows()

    def _write_rows(self) -> None:
        """Write the per-curve rows gathered since the last call, one HDF5 write per column (one
        per append where the appended dtypes differ: HDF5 converts them as before)."""
        for name, parts in self._rows.items():
            ds = self.columns[name]
            if all(p.dtype == parts[0].dtype for p in parts):
                append_rows(ds, np.concatenate(parts) if len(parts) > 1 else parts[0])
            else:
                for p in parts:
                    append_rows(ds, p)
        self._rows, self._rows_held = {}, 0


ROWS_PER_WRITE = 16384  # per-curve rows (offsets, meta) gathered before RawWriter writes them


def _chunk_length(n: int) -> int:
    """HDF5 chunk length for a growing 1-D column whose first write holds ``n`` values: the next
    power of two, between 64 and 65,536."""
    return int(min(65536, max(64, 1 << max(0, int(n) - 1).bit_length())))


def append_rows(ds: h5py.Dataset, values: np.ndarray) -> None:
    """Append ``values`` along the first axis of a resizable dataset."""
    start = ds.shape[0]
    ds.resize(start + len(values), axis=0)
    if len(values):
        ds[start:] = values


# --------------------------------------------------------------------------------------------
# Paired time-series files (lcgen convert --spectra)


PAIRED_KEYS = {  # a paired time-series file: dataset -> width (F frequencies, G lags; None: one value per row)
    "psd": "F", "fstat": "F", "pvalue": "F", "psd_mask": "F", "fstat_mask": "F", "acf": "G", "acf_mask": "G",
    "spectra_failed": None, **{f"{c}_{k}": None for c in ("psd", "acf", "fstat") for k in ("scale", "mean", "std")}}


def is_paired(f: h5py.File) -> bool:
    """Whether an open time-series file carries per-window spectra (``lcgen convert --spectra``)."""
    return "psd" in f and "flux" in f


def check_paired(f: h5py.File, path: str | Path) -> tuple[int, int]:
    """Check the per-window spectra of an open time-series file: every dataset of ``PAIRED_KEYS``
    with one row per window, the ``frequency`` (F,) and ``lag`` (G,) grids. Returns (F, G)."""
    if not is_paired(f):
        raise LcgenError(f"{path} is a time-series file without per-window spectra; make a paired one "
                         f"with `lcgen convert --spectra`")
    missing = [k for k in (*PAIRED_KEYS, "frequency", "lag") if k not in f]
    if missing:
        raise LcgenError(f"{path} lacks {', '.join(missing)} of the per-window spectra; it is damaged or "
                         f"incomplete, remake it with `lcgen convert --spectra`")
    n = f["flux"].shape[0]
    widths = {"F": f["frequency"].shape[0], "G": f["lag"].shape[0]}
    for key, width in PAIRED_KEYS.items():
        want = (n,) if width is None else (n, widths[width])
        if f[key].shape != want:
            raise LcgenError(f"{path}: '{key}' has shape {f[key].shape}, expected {want} (one row per window "
                             f"on the shared grids); remake it with `lcgen convert --spectra`")
    return widths["F"], widths["G"]


def check_same_grids(path: str | Path, reference: str | Path, what: str) -> None:
    """Refuse a paired file whose frequency or lag grid differs from ``reference``'s (the file a
    run was trained on): the model's spectral inputs would mean other frequencies. ``what`` names
    the run in the message."""
    with open_checked(path, "timeseries") as f, open_checked(reference, "timeseries") as g:
        for key in ("frequency", "lag"):
            if key in g and (key not in f or not np.array_equal(f[key][:], g[key][:])):
                raise LcgenError(f"{path} has another {key} grid than {reference}, which {what} was trained on; "
                                 f"make it with `lcgen convert --spectra` and that file's grid "
                                 f"(--set window_spectra.freq_min=... freq_max, lag_min, lag_max; see `lcgen info {reference}`)")


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

        try:
            f.visititems(visit)
        except Exception as exc:  # a damaged inside: HDF5 reads garbage
            raise damaged(path, exc) from None
        if info["format"] == "embeddings":  # where the vectors came from
            info["provenance"] = {k: _attr_str(f.attrs[k]) for k in (
                "run_dir", "model_name", "preset", "checkpoint", "weights", "level", "pooling", "input")
                if k in f.attrs}
        if info["format"] == "timeseries" and is_paired(f):
            F, G = check_paired(f, path)
            freq, lag = f["frequency"][:], f["lag"][:]
            info["paired"] = {"n_freq": F, "freq_range": (float(freq[0]), float(freq[-1])), "n_lags": G,
                              "lag_range": (float(lag[1]), float(lag[-1])),
                              "failed": int(f["spectra_failed"][:].sum())}
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
