"""Batches for the networks, read from the lcgen HDF5 files a buffer at a time.

Nothing here loads a whole file: rows are read by contiguous slices (or HDF5 chunk by chunk)
into a buffer of at most ``buffer_rows`` rows, and batches are cut from that buffer. Shuffling is
two-level, the usual trade-off for data on disk: blocks of consecutive rows are shuffled, then the
rows inside each buffer. The order depends only on ``(seed, epoch)``, so an epoch can be restarted
at any batch without reading the batches before it (exact ``--resume`` after Ctrl-C). With
several training processes, each reads only its share of every global batch (``rank``,
``world_size`` of :func:`iter_batches`), so the order is the same whatever their number.

A batch is a dict of tensors (see ``notes``: "Batch and model interface"):

- ``values`` (B, L) float32: the normalised target, 0 where not ``valid``;
- ``valid``  (B, L) bool: a real observation (time series) or a resolvable bin (spectra);
- ``time``   (B, L) float32: days since the window start (time series only);
- ``flux_err`` (B, L) float32: normalised flux error, 0 where not valid (time series files that
  have it);
- ``index``  (B,) int64: the row in the data file;
- paired files (``lcgen convert --spectra``, :class:`PairedSource`) add, per spectral channel
  c in psd, acf, fstat: ``c`` (B, F or G) float32, the window's normalised spectrum (0 where not
  valid) and ``c_valid`` (B, F or G) bool.

Masks (``hidden``) are added by the trainer, not here.

Splits are made once per run by a seeded permutation of whole groups of rows: for time series a
group is a source light curve, so windows of one curve never land in two splits; for spectra each
row is its own group. Rows that failed preprocessing are left out of every split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import torch

from lcgen.errors import LcgenError
from lcgen.io import atomic_path, check_paired, open_checked

CHANNELS = ("psd", "acf", "fstat")
SPLITS = ("train", "val", "test")
SPLIT_FILE = "split.npz"


# --------------------------------------------------------------------------------------------
# Row sources: one open HDF5 file, read by sorted row indices


def read_rows(ds: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """``ds[rows]`` for sorted unique ``rows``, read without fancy-indexing row by row.

    Dense selections are read as one contiguous slice; sparse ones one HDF5 chunk (or 1024-row
    stretch) at a time, so no read touches far more data than the chunks holding the rows.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return np.zeros((0, *ds.shape[1:]), dtype=ds.dtype)
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    if hi - lo <= 2 * rows.size + 1024:
        return ds[lo:hi][rows - lo]
    step = ds.chunks[0] if ds.chunks else 1024
    groups = np.split(rows, np.flatnonzero(np.diff(rows // step)) + 1)
    return np.concatenate([ds[int(g[0]):int(g[-1]) + 1][g - g[0]] for g in groups])


class _Source:
    """Common part of the two row sources: an open file, its usable rows and their groups."""

    kind = ""

    def __init__(self, path: str | Path, required: tuple[str, ...]):
        self.path = Path(path)
        self.f = open_checked(self.path, self.kind, required)

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.n_rows

    def read(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def statistics(self, rows: np.ndarray, chunk: int = 4096) -> dict:
        """Range, mean and std of ``values`` over the valid positions of ``rows``, streamed.

        Also counts non-finite values inside ``valid`` (they are treated as missing)."""
        lo, hi, total, total_sq, count = np.inf, -np.inf, 0.0, 0.0, 0
        for start in range(0, len(rows), chunk):
            part = self.read(rows[start:start + chunk])
            v = part["values"][part["valid"]].astype(np.float64)
            if v.size:
                lo, hi = min(lo, v.min()), max(hi, v.max())
                total += v.sum()
                total_sq += (v * v).sum()
                count += v.size
        mean = total / count if count else float("nan")
        std = float(np.sqrt(max(total_sq / count - mean * mean, 0.0))) if count else float("nan")
        return {"shape": (len(rows), self.length), "min": float(lo), "max": float(hi),
                "mean": float(mean), "std": std, "valid_fraction": count / max(1, len(rows) * self.length),
                "non_finite": self.non_finite}


class TimeSeriesSource(_Source):
    """Rows of a ``timeseries`` file (``lcgen convert``): flux windows with their times."""

    kind = "timeseries"

    def __init__(self, path: str | Path):
        super().__init__(path, ("flux", "time", "mask"))
        self.n_rows, self.length = self.f["flux"].shape
        self.non_finite = 0
        self.usable = np.arange(self.n_rows, dtype=np.int64)
        # one small int per row: windows of one light curve stay in one split
        self.groups = self.f["source"][:] if "source" in self.f else self.usable.copy()
        self.description = str(self.path)

    def read(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        values = read_rows(self.f["flux"], rows)
        valid = read_rows(self.f["mask"], rows).astype(bool)
        time = read_rows(self.f["time"], rows)
        out = _clean(values, valid, rows, self, time=time)
        if "flux_err" in self.f:
            err = read_rows(self.f["flux_err"], rows)
            ok = out["valid"] & np.isfinite(err)
            out["flux_err"] = np.where(ok, err, 0).astype(np.float32)
        return out


class PairedSource(TimeSeriesSource):
    """Rows of a paired time-series file (``lcgen convert --spectra``): each window with the PSD,
    ACF and F-statistic of its own points (see the module docstring for the batch keys)."""

    def __init__(self, path: str | Path):
        super().__init__(path)
        try:
            check_paired(self.f, self.path)
        except LcgenError:
            self.close()
            raise
        self.description = f"{self.path} (time series + per-window spectra)"
        # row lengths of the other modalities, for the model (lcgen.train.trainer.build_model)
        self.lengths = {"freq_length": self.f["psd"].shape[1], "lag_length": self.f["acf"].shape[1]}

    def read(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        out = super().read(rows)
        for c in CHANNELS:
            values = read_rows(self.f[c], rows)
            valid = read_rows(self.f[f"{c}_mask"], rows).astype(bool) & np.isfinite(values)
            out[c] = np.where(valid, values, 0).astype(np.float32)
            out[f"{c}_valid"] = valid
        return out


class SpectraSource(_Source):
    """Rows of a ``spectra`` file (``lcgen preprocess``): one channel, ``psd``, ``acf`` or ``fstat``."""

    kind = "spectra"

    def __init__(self, path: str | Path, channel: str = "psd"):
        if channel not in CHANNELS:
            raise LcgenError(f"channel '{channel}' is not one of {', '.join(CHANNELS)}")
        super().__init__(path, (channel,))
        self.channel = channel
        self.n_rows, self.length = self.f[channel].shape
        self.non_finite = 0
        failed = self.f["failed"][:].astype(bool) if "failed" in self.f else np.zeros(self.n_rows, bool)
        self.usable = np.flatnonzero(~failed).astype(np.int64)
        self.n_failed = int(failed.sum())
        self.groups = self.f["source"][:] if "source" in self.f else np.arange(self.n_rows, dtype=np.int64)
        self._mask = self._find_mask()
        self.description = f"{self.path} (channel {channel})"

    def _find_mask(self) -> h5py.Dataset | None:
        """This channel's per-bin validity (N, L): ``acf_mask`` for the ACF (lags), ``mask`` for the
        PSD and F-statistic (frequencies); ``<channel>_mask`` wins if a file has one."""
        keys = [f"{self.channel}_mask"] + (["mask"] if self.channel != "acf" else [])
        for key in keys:
            if key in self.f:
                ds = self.f[key]
                if ds.shape != (self.n_rows, self.length):
                    raise LcgenError(f"{self.path}: '{key}' has shape {ds.shape}, expected "
                                     f"({self.n_rows}, {self.length}); the file is corrupt, rerun lcgen preprocess")
                return ds
        return None  # no mask stored: every finite value counts

    def read(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        values = read_rows(self.f[self.channel], rows)
        if self._mask is None:
            valid = np.ones(values.shape, dtype=bool)
        else:
            valid = read_rows(self._mask, rows).astype(bool)
        return _clean(values, valid, rows, self)


def _clean(values: np.ndarray, valid: np.ndarray, rows: np.ndarray, source: _Source,
           time: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Zero every position that is not valid; a non-finite value makes its position invalid."""
    finite = np.isfinite(values)
    bad = valid & ~finite
    if bad.any():
        source.non_finite += int(bad.sum())
        valid = valid & finite
    out = {"values": np.where(valid, values, 0).astype(np.float32), "valid": valid,
           "index": np.asarray(rows, dtype=np.int64)}
    if time is not None:
        out["time"] = np.where(valid, time, 0).astype(np.float32)
    return out


def open_source(path: str | Path, kind: str, channel: str = "psd") -> _Source:
    """Open ``path`` as the data a model of ``kind`` ("timeseries", "spectra" or "paired") trains on."""
    if kind == "timeseries":
        return TimeSeriesSource(path)
    if kind == "spectra":
        return SpectraSource(path, channel)
    if kind == "paired":
        return PairedSource(path)
    raise ValueError(f"unknown data kind {kind!r}")


# --------------------------------------------------------------------------------------------
# Splits


def split_rows(groups: np.ndarray, usable: np.ndarray | None = None, *, val_fraction: float = 0.1,
               test_fraction: float = 0.1, seed: int = 0) -> dict[str, np.ndarray]:
    """Split rows into train/val/test by a seeded permutation of their groups.

    ``groups`` (N,) labels each row (its source light curve); every row of a group lands in the
    same split. ``usable`` (sorted row indices) restricts the split (e.g. drops failed rows).
    Fractions count groups; a non-zero fraction gets at least one group when there are three or
    more. Returns sorted int64 row indices per split.
    """
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= frac < 1:
            raise LcgenError(f"{name} must be in [0, 1), got {frac}")
    if val_fraction + test_fraction >= 1:
        raise LcgenError(f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves no "
                         f"training data; keep their sum below 1")
    rows = np.arange(len(groups), dtype=np.int64) if usable is None else np.asarray(usable, np.int64)
    labels = np.asarray(groups)[rows]
    unique = np.unique(labels)
    order = np.random.default_rng(seed).permutation(len(unique))
    needed = 1 + (val_fraction > 0) + (test_fraction > 0)  # a group for training and each split asked for
    if len(unique) < needed:
        raise LcgenError(f"only {len(unique)} light curve(s): training with a validation and/or test split "
                         f"needs at least {needed}; use more data (or val_fraction=0 and test_fraction=0)")

    def count(frac: float) -> int:
        n = int(round(frac * len(unique)))
        return max(n, 1) if frac > 0 else n

    n_test, n_val = count(test_fraction), count(val_fraction)
    test_groups, val_groups = unique[order[:n_test]], unique[order[n_test:n_test + n_val]]
    in_test, in_val = np.isin(labels, test_groups), np.isin(labels, val_groups)
    split = {"train": rows[~in_test & ~in_val], "val": rows[in_val], "test": rows[in_test]}
    if split["train"].size == 0:
        raise LcgenError(f"only {len(unique)} light curve(s): nothing left to train on after the "
                         f"validation/test split; use more data or lower val_fraction/test_fraction")
    return split


def save_split(path: str | Path, split: dict[str, np.ndarray], n_rows: int) -> None:
    """Write a split as ``.npz`` (plain integer arrays, no pickle), atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, n_rows=np.int64(n_rows), **{k: split[k] for k in SPLITS})


def load_split(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The train/val/test row indices a run used (``RUN_DIR/split.npz``); ``n_rows`` is the row
    count of the data file it was made for."""
    path = Path(run_dir) / SPLIT_FILE
    if not path.is_file():
        raise LcgenError(f"{path} does not exist; is {run_dir} an lcgen run directory?")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in (*SPLITS, "n_rows") if k not in z.files]
            if missing:
                raise LcgenError(f"{path} lacks {', '.join(missing)}; it is not the split lcgen train wrote")
            split = {k: z[k] for k in (*SPLITS, "n_rows")}
    except LcgenError:
        raise
    except Exception as exc:  # not a zip, torn, or holding objects
        raise LcgenError(f"{path} is damaged ({type(exc).__name__}: {str(exc)[:120]}); it cannot be "
                         f"rebuilt, so evaluate with --split all, or train the run again") from None
    n_rows = split["n_rows"]
    bad = [] if n_rows.shape == () and n_rows.dtype.kind in "iu" else ["n_rows"]
    bad += [k for k in SPLITS if not bad and (split[k].ndim != 1 or split[k].dtype.kind not in "iu" or (
        split[k].size and (split[k].min() < 0 or split[k].max() >= int(n_rows))))]
    if bad:
        raise LcgenError(f"{path} is damaged ({', '.join(bad)}: not row indices of the data); "
                         f"evaluate with --split all, or train the run again")
    return split


# --------------------------------------------------------------------------------------------
# Batches


def batch_order(rows: np.ndarray, *, shuffle: bool, seed: int = 0, epoch: int = 0,
                block_rows: int = 128, buffer_rows: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """The order rows are visited in one epoch, and where the read buffers start.

    Returns ``(sequence, bounds)``: ``sequence`` is a permutation of ``rows``; buffer j holds
    ``sequence[bounds[j]:bounds[j+1]]``. Shuffled: blocks of ``block_rows`` consecutive rows are
    permuted, grouped into buffers of about ``buffer_rows``, and permuted inside each buffer, all
    from ``numpy.random.default_rng([seed, epoch])``. Unshuffled: the rows in order.
    """
    rows = np.asarray(rows, dtype=np.int64)
    n = rows.size
    if not shuffle:
        return rows, np.append(np.arange(0, n, buffer_rows), n)
    rng = np.random.default_rng([seed, epoch])
    block_rows = max(1, min(block_rows, buffer_rows))
    blocks = np.array_split(rows, max(1, -(-n // block_rows)))
    blocks = [blocks[i] for i in rng.permutation(len(blocks))]
    per_buffer = max(1, buffer_rows // block_rows)
    parts, bounds = [], [0]
    for start in range(0, len(blocks), per_buffer):
        buf = np.concatenate(blocks[start:start + per_buffer])
        parts.append(buf[rng.permutation(buf.size)])
        bounds.append(bounds[-1] + buf.size)
    return (np.concatenate(parts) if parts else rows), np.asarray(bounds, dtype=np.int64)


def n_batches(n_rows: int, batch_size: int, drop_last: bool = False) -> int:
    return n_rows // batch_size if drop_last else -(-n_rows // batch_size)


def batch_share(size: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank ``rank``'s rows ``[start, stop)`` of a global batch of ``size`` rows.

    Contiguous and as even as possible: the first ``size % world_size`` ranks get one row more;
    a rank gets no rows when the batch has fewer rows than there are ranks.
    """
    base, extra = divmod(size, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + int(rank < extra)


def rank_positions(n: int, batch_size: int, rank: int = 0, world_size: int = 1, *,
                   start_batch: int = 0, drop_last: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Where one rank's rows lie in an epoch's sequence of ``n`` rows cut into global batches.

    Returns ``(positions, cuts)``: the rank's positions in the sequence, in order, and its local
    batch k = ``positions[cuts[k]:cuts[k+1]]``, one local batch per global batch from
    ``start_batch`` on. Over all ranks the positions of each global batch are covered exactly
    once (:func:`batch_share`).
    """
    parts, cuts = [], [0]
    for k in range(start_batch, n_batches(n, batch_size, drop_last)):
        s = k * batch_size
        a, b = batch_share(min(batch_size, n - s), rank, world_size)
        parts.append(np.arange(s + a, s + b, dtype=np.int64))
        cuts.append(cuts[-1] + b - a)
    positions = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return positions, np.asarray(cuts, dtype=np.int64)


def iter_batches(source: _Source, rows: np.ndarray, batch_size: int, *, shuffle: bool = False,
                 seed: int = 0, epoch: int = 0, start_batch: int = 0, drop_last: bool = False,
                 buffer_rows: int = 8192, rank: int = 0, world_size: int = 1) -> Iterator[dict[str, torch.Tensor]]:
    """Yield batches (dicts of CPU tensors) over ``rows`` of ``source``.

    Each buffer is read once, its rows sorted for the read; batches may straddle two buffers.
    ``start_batch`` skips the first batches of the epoch without reading them.

    With ``world_size`` > 1, batch k is rank ``rank``'s share of global batch k (global batches
    of ``batch_size`` rows, in the order :func:`batch_order` gives whatever the world size), and
    the rank reads only its own rows of each buffer. A rank whose share of a batch is empty
    gets an empty batch, so every rank yields the same number of batches.
    """
    sequence, bounds = batch_order(rows, shuffle=shuffle, seed=seed, epoch=epoch, buffer_rows=buffer_rows)
    positions, cuts = rank_positions(sequence.size, batch_size, rank, world_size,
                                     start_batch=start_batch, drop_last=drop_last)
    # this rank's rows of buffer j are mine[local[j]:local[j+1]]
    mine, local = sequence[positions], np.searchsorted(positions, bounds)
    j, data = -1, None
    for k in range(len(cuts) - 1):
        s, e = int(cuts[k]), int(cuts[k + 1])
        parts = []
        pos = s
        while pos < e:
            if j < 0 or pos >= local[j + 1]:  # move to the buffer holding local position `pos`
                j = int(np.searchsorted(local, pos, side="right")) - 1
                data = _read_buffer(source, mine[local[j]:local[j + 1]])
            stop = min(e, int(local[j + 1]))
            a, b = pos - int(local[j]), stop - int(local[j])
            parts.append({key: value[a:b] for key, value in data.items()})
            pos = stop
        if not parts:  # an empty share: the right keys and shapes, no rows
            parts = [{key: value[:0] for key, value in source.read(np.zeros(0, np.int64)).items()}]
        yield {key: torch.from_numpy(np.concatenate([p[key] for p in parts])) for key in parts[0]}


def pair_curves(rows: np.ndarray, groups: np.ndarray) -> int:
    """How many source curves (``groups[row]``) have two or more windows among ``rows``."""
    _, count = np.unique(np.asarray(groups)[np.asarray(rows, dtype=np.int64)], return_counts=True)
    return int((count >= 2).sum())


def pair_plan(rows: np.ndarray, groups: np.ndarray, pairs: int, n_steps: int, *, seed: int = 0,
              epoch: int = 0) -> np.ndarray:
    """(n_steps, 2 ``pairs``) row indices for a contrastive objective: each batch holds ``pairs``
    distinct source curves (``groups[row]``) and two distinct windows of each, the two of a curve
    side by side (columns 2i and 2i+1).

    Only curves with at least two windows among ``rows`` take part. A batch's curves are drawn
    without replacement with probability proportional to their number of windows, its two windows
    uniformly without replacement, so every window of those curves is about equally likely; batches
    are drawn independently (a window may come twice in an epoch, or not at all). From
    ``numpy.random.default_rng([seed, epoch, 1])``: the plan of an epoch depends on nothing else, so a
    resumed run sees the same batches. Raises ValueError when fewer than ``pairs`` curves qualify.
    """
    rows = np.asarray(rows, dtype=np.int64)
    g = np.asarray(groups)[rows]
    order = np.argsort(g, kind="stable")
    rows, g = rows[order], g[order]
    _, first, count = np.unique(g, return_index=True, return_counts=True)
    ok = count >= 2
    first, count = first[ok], count[ok]
    if first.size < pairs:
        raise ValueError(f"{first.size} curves have two or more windows, fewer than the {pairs} a batch needs")
    rng = np.random.default_rng([seed, epoch, 1])
    p = count / count.sum()
    curves = np.stack([rng.choice(first.size, size=pairs, replace=False, p=p) for _ in range(n_steps)]) \
        if n_steps else np.zeros((0, pairs), np.int64)
    n = count[curves]
    a = rng.integers(0, n)
    b = (a + 1 + rng.integers(0, n - 1)) % n  # another of the curve's windows
    start = first[curves]
    return np.stack([rows[start + a], rows[start + b]], -1).reshape(n_steps, 2 * pairs)


def iter_pair_batches(source: _Source, plan: np.ndarray, *, start_batch: int = 0,
                      buffer_rows: int = 8192) -> Iterator[dict[str, torch.Tensor]]:
    """Yield the batches of a :func:`pair_plan` from ``start_batch`` on, each with ``curve`` (B,)
    int64, the source curve of every row (``source.groups``). The distinct rows of about
    ``buffer_rows`` rows' worth of batches are read at once."""
    size = max(1, plan.shape[1])
    per_read = max(1, buffer_rows // size)
    for k0 in range(start_batch, plan.shape[0], per_read):
        part = plan[k0:k0 + per_read]
        unique, inverse = np.unique(part, return_inverse=True)
        data = source.read(unique)
        data["curve"] = np.asarray(source.groups[unique], dtype=np.int64)
        inverse = inverse.reshape(part.shape)
        for j in range(part.shape[0]):
            yield {key: torch.from_numpy(value[inverse[j]]) for key, value in data.items()}


_END = object()


def prefetch(batches: Iterator[dict[str, torch.Tensor]], depth: int = 2, *,
             pin_memory: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Yield the batches of ``batches`` read ahead by a background thread, ``depth`` at most.

    HDF5 reading and decompression then overlap the training step (torch releases the GIL
    while it computes). ``pin_memory`` page-locks each batch, so copies to a GPU with
    ``non_blocking=True`` run asynchronously. The order is unchanged. An error in the reader is
    raised here; closing this generator (or leaving the loop) stops and joins the thread.
    """
    if depth <= 0:
        for batch in batches:
            yield {k: v.pin_memory() for k, v in batch.items()} if pin_memory else batch
        return
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for batch in batches:
                if pin_memory:
                    batch = {k: v.pin_memory() for k, v in batch.items()}
                if not put(batch):
                    return
            put(_END)
        except BaseException as exc:  # hand it to the consumer
            put(exc)

    thread = threading.Thread(target=work, name="lcgen-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _read_buffer(source: _Source, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Read ``rows`` (any order) sorted, and return them in the given order."""
    order = np.argsort(rows, kind="stable")
    data = source.read(rows[order])
    back = np.empty_like(order)
    back[order] = np.arange(order.size)
    return {key: value[back] for key, value in data.items()}
