"""Files → stitched light curves → one raw HDF5 file (`lcgen ingest`).

Two passes keep memory bounded by one target's files: the first reads only the primary header
of each FITS file to group files by target (files that are not mission light curves form their
own group), the second reads each group, stitches it and appends it to the output. A file that
gives nothing is recorded with its reason under ``skipped/`` in the output and in the summary;
the command fails only when no file gives a light curve.
"""

from __future__ import annotations

import dataclasses
import glob
import time as _time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

import h5py
import numpy as np

from lcgen.errors import LcgenError
from lcgen.ingest.options import IngestConfig
from lcgen.ingest.quality import bitmask
from lcgen.ingest.readers import (JD_REF, TIME_SYSTEM, Segment, Unreadable, clean_segment, fits_target, read_segments,
                                  scatter_error)
from lcgen.io import RawWriter, partial_path

# Per-curve columns written under meta/ (one row per curve).
META_COLUMNS = ("target", "mission", "pipeline", "segments", "n_segments", "cadence_s", "sources", "flux_column",
                "quality_mask", "n_cadences", "n_quality_dropped", "n_nonfinite_dropped", "time_system")
FLUSH_POINTS = 250_000  # curves are buffered up to this many points between writes (~6 MB)


@dataclasses.dataclass
class LightCurve:
    """One target's stitched light curve: ``time`` (days, see ``meta['time_system']``), relative
    ``flux`` and ``flux_err`` (float64, each segment divided by its median unless
    normalisation was turned off) and ``meta`` with the columns of :data:`META_COLUMNS`."""

    time: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray
    meta: dict[str, Any]

    def __len__(self) -> int:
        return len(self.time)


def curve_from_segments(segments: list[Segment]) -> LightCurve:
    """Concatenate one target's (time-ordered, non-overlapping) segments."""

    def join(values: Iterable) -> str:
        return ",".join(dict.fromkeys(str(v) for v in values if str(v)))

    return LightCurve(
        time=np.concatenate([s.time for s in segments]),
        flux=np.concatenate([s.flux for s in segments]),
        flux_err=np.concatenate([s.flux_err for s in segments]),
        meta={"target": segments[0].target, "mission": join(s.mission for s in segments),
              "pipeline": join(s.pipeline for s in segments), "segments": ",".join(s.segment for s in segments if s.segment),
              "n_segments": len(segments), "cadence_s": float(np.median([s.cadence_s for s in segments])),
              "sources": ";".join(s.source for s in segments), "flux_column": join(s.flux_column for s in segments),
              "quality_mask": segments[0].quality_mask, "n_cadences": sum(s.n_cadences for s in segments),
              "n_quality_dropped": sum(s.n_quality for s in segments),
              "n_nonfinite_dropped": sum(s.n_nonfinite for s in segments),
              "time_system": join(s.time_system for s in segments)})


def stitch(segments: list[Segment], *, enabled: bool = True) -> tuple[list[LightCurve], list[tuple[str, str]]]:
    """Light curves from segments: with ``enabled``, one per target with its segments in time
    order; else one per segment. Where two segments of a target overlap in time (e.g. 20-s and
    2-min files of one sector, or SPOC and QLP), the one with more points is kept and the other
    is returned as skipped ``(source, reason)``."""
    if not enabled:
        return [curve_from_segments([s]) for s in segments], []
    by_target: dict[str, list[Segment]] = {}
    for s in segments:
        by_target.setdefault(s.target, []).append(s)
    curves, skipped = [], []
    for group in by_target.values():
        kept: list[Segment] = []
        for s in sorted(group, key=lambda s: (s.time[0], s.source)):
            if kept and s.time[0] <= kept[-1].time[-1]:
                prev = kept[-1]
                winner, loser = (prev, s) if len(prev.time) >= len(s.time) else (s, prev)
                skipped.append((loser.source, f"overlaps {winner.segment or 'the time span'} of {winner.target} "
                                              f"in {winner.source}; kept that file (more points)"))
                kept[-1] = winner
                continue
            kept.append(s)
        curves.append(curve_from_segments(kept))
    return curves, skipped


# --------------------------------------------------------------------------------------------
# Inputs


def collect_paths(inputs: Iterable[str], exclude: Iterable[str | Path] = ()) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files named by ``inputs`` (files, directories searched recursively, globs), in order,
    without duplicates or hidden files; inputs that match nothing are returned as skipped."""
    excluded = {Path(p).resolve() for p in exclude}
    files: dict[Path, None] = {}
    missing = []
    for item in inputs:
        item = str(item)
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not any(
                part.startswith(".") for part in p.relative_to(path).parts))
        elif path.is_file():
            found = [path]
        elif any(c in item for c in "*?["):
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
        else:
            found = []
        if not found:
            missing.append((item, "does not exist" if not any(c in item for c in "*?[") and not path.is_dir()
                            else "matches no file"))
        for p in found:
            if p.resolve() not in excluded:
                files.setdefault(p, None)
    return list(files), missing


def planned_files(cfg: IngestConfig) -> int:
    """How many files ``ingest(cfg)`` will read (for a progress bar)."""
    return len(collect_paths(cfg.inputs, _own_files(cfg))[0])


def _own_files(cfg: IngestConfig) -> tuple[Path, Path]:
    return Path(cfg.output), partial_path(cfg.output)


# --------------------------------------------------------------------------------------------
# The command


def ingest(cfg: IngestConfig, *, progress: Callable[[int], None] | None = None) -> dict:
    """Read every file of ``cfg.inputs`` and write the light curves to ``cfg.output`` (raw
    format, atomically). Returns a summary dict; raises :class:`LcgenError` only when no file
    gave a light curve (nothing is written then)."""
    if not cfg.inputs:
        raise LcgenError("no input given: name light-curve files, directories or globs, e.g. "
                         "lcgen ingest downloads/ -o data/real/raw.h5")
    start = _time.perf_counter()
    paths, skipped = collect_paths(cfg.inputs, _own_files(cfg))
    groups: dict[str, list[Path]] = {}
    for path in paths:
        target = fits_target(path) if cfg.stitch else None
        groups.setdefault(f"target:{target}" if target else f"file:{path}", []).append(path)
    totals = Counter()
    missions = Counter()
    buffer: list[LightCurve] = []
    with RawWriter(cfg.output, cfg) as writer:
        _stamp_time_convention(writer)
        for files in groups.values():
            segments = []
            for path in files:
                try:
                    found = read_segments(path, cfg)
                    segments.extend(found)
                    totals["files_read"] += 1
                except Unreadable as exc:
                    skipped.append((str(path), str(exc)))
                except Exception as exc:  # a reader bug or an odd file must not stop the run
                    skipped.append((str(path), f"unexpected {type(exc).__name__}: {exc}"))
                if progress is not None:
                    progress(1)
            curves, overlaps = stitch(segments, enabled=cfg.stitch)
            skipped.extend(overlaps)
            buffer.extend(curves)
            if sum(len(c) for c in buffer) >= FLUSH_POINTS:
                _append(writer, buffer, totals, missions)
                buffer = []
        _append(writer, buffer, totals, missions)
        if writer.n_curves == 0:
            reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in skipped[:3])
            raise LcgenError(f"no light curve could be read from {len(paths)} file(s)"
                             + (f" ({reasons}{'; …' if len(skipped) > 3 else ''})" if reasons else ""))
        group = writer.f.create_group("skipped")
        for key, values in (("source", [p for p, _ in skipped]), ("reason", [r for _, r in skipped])):
            # held open with the writer's columns, so they are flushed when the file closes
            writer.columns[f"skipped/{key}"] = group.create_dataset(
                key, data=np.array(values, dtype=object), dtype=h5py.string_dtype())
    seconds = _time.perf_counter() - start
    return {"output": cfg.output, "files": len(paths), "files_read": totals["files_read"],
            "curves": totals["curves"], "points": totals["points"], "n_quality": totals["n_quality"],
            "n_nonfinite": totals["n_nonfinite"], "missions": dict(missions), "skipped": skipped,
            "seconds": seconds, "files_per_s": len(paths) / seconds}


def _stamp_time_convention(writer: RawWriter) -> None:
    writer.f.attrs.update({"time_system": TIME_SYSTEM, "time_ref_jd": JD_REF, "time_unit": "d"})


def _append(writer: RawWriter, curves: list[LightCurve], totals: Counter, missions: Counter) -> None:
    if not curves:
        return
    writer.append([c.time for c in curves], [c.flux for c in curves], [c.flux_err for c in curves],
                  meta={key: [c.meta[key] for c in curves] for key in META_COLUMNS})
    for c in curves:
        totals["curves"] += 1
        totals["points"] += len(c)
        totals["n_quality"] += c.meta["n_quality_dropped"]
        totals["n_nonfinite"] += c.meta["n_nonfinite_dropped"]
        missions[c.meta["mission"]] += 1


def write_lightcurves(curves: list[LightCurve], path: str | Path, config: Any = None) -> Path:
    """Write light curves (from :func:`read_lightcurve` or :func:`from_lightkurve`) to a raw
    file, atomically; ``lcgen convert``/``preprocess`` read it as they read mock data."""
    if not curves:
        raise LcgenError("no light curves to write")
    with RawWriter(path, config if config is not None else {"made_by": "lcgen.ingest.write_lightcurves"}) as writer:
        _stamp_time_convention(writer)
        _append(writer, curves, Counter(), Counter())
    return Path(path)


def describe_curves(path: str | Path, limit: int = 20) -> dict | None:
    """For `lcgen info`: the first ``limit`` curves of an ingested raw file (target, mission,
    segments, points, cadence, drops, flux column) and its skipped files; None for other files."""
    from lcgen.io import open_checked, raw_offsets

    with open_checked(path) as f:
        if "meta" not in f or "target" not in f["meta"] or "offsets" not in f:
            return None
        meta = f["meta"]
        n = min(limit, meta["target"].shape[0])
        sizes = np.diff(raw_offsets(f)[: n + 1])

        def column(key):
            ds = meta[key]
            return ds.asstr()[:n] if h5py.check_string_dtype(ds.dtype) else ds[:n]

        rows = [dict(zip(("target", "mission", "pipeline", "segments", "cadence_s", "flux_column",
                          "n_quality_dropped", "n_nonfinite_dropped"), values), points=int(size))
                for size, *values in zip(sizes, *(column(k) for k in ("target", "mission", "pipeline", "segments",
                                                                        "cadence_s", "flux_column", "n_quality_dropped",
                                                                        "n_nonfinite_dropped")))]
        skipped = list(zip(f["skipped/source"].asstr()[:], f["skipped/reason"].asstr()[:])) if "skipped" in f else []
        return {"curves": rows, "n_curves": int(meta["target"].shape[0]), "skipped": skipped,
                "time_system": str(f.attrs.get("time_system", ""))}


# --------------------------------------------------------------------------------------------
# Python API


def read_lightcurves(path: str | Path, **options) -> list[LightCurve]:
    """Every light curve in one file (one for a mission FITS file; one per id for a table read
    with ``id_col``). ``options`` are the fields of :class:`IngestConfig` (``flux``, ``quality``,
    ``normalise``, ``time_col``, ``flux_col``, ``err_col``, ``id_col``, ``mag``, ``time_ref``)."""
    cfg = _options(options)
    try:
        segments = read_segments(path, cfg)
    except Unreadable as exc:
        raise LcgenError(f"{path}: {exc}") from None
    return stitch(segments, enabled=cfg.stitch)[0]


def read_lightcurve(path: str | Path, **options) -> LightCurve:
    """The light curve in one file: ``curve.time`` (days, BJD_TDB − 2,400,000 for mission files),
    ``curve.flux``, ``curve.flux_err`` and ``curve.meta`` (target, mission, segments, cadence_s,
    points dropped, flux column, ...). Options as :func:`read_lightcurves`.

    >>> lc = read_lightcurve("tess2019_s0014-0000000261136679-0150-s_lc.fits", quality="hard")
    """
    curves = read_lightcurves(path, **options)
    if len(curves) != 1:
        raise LcgenError(f"{path} holds {len(curves)} light curves ({', '.join(c.meta['target'] for c in curves[:5])}"
                         f"{', …' if len(curves) > 5 else ''}); use read_lightcurves")
    return curves[0]


def from_lightkurve(obj: Any, *, quality: str | int = "default", normalise: bool = True,
                    stitch_segments: bool = True) -> list[LightCurve]:
    """Light curves from a lightkurve ``LightCurve`` or ``LightCurveCollection`` (duck typed:
    anything with ``.time``, ``.flux`` and optional ``.flux_err``, ``.quality``, ``.meta``, or an
    iterable of such). Times given as astropy ``Time`` become BJD_TDB − 2,400,000; the quality
    level is applied again where a ``quality`` column and the mission are known. Returns one
    curve per target (segments stitched) unless ``stitch_segments=False``."""
    items = [obj] if _is_lightcurve(obj) else list(obj) if _iterable(obj) else []
    if not items or not all(_is_lightcurve(x) for x in items):
        raise LcgenError("from_lightkurve expects a lightkurve LightCurve or LightCurveCollection "
                         f"(objects with .time and .flux), got {type(obj).__name__}")
    cfg = _options({"quality": quality, "normalise": normalise, "stitch": stitch_segments})
    segments = []
    for i, lc in enumerate(items):
        try:
            segments.append(_segment_from_lightkurve(lc, i, cfg))
        except Unreadable as exc:
            raise LcgenError(f"light curve {i} of the collection: {exc}") from None
    return stitch(segments, enabled=cfg.stitch)[0]


def _segment_from_lightkurve(lc: Any, index: int, cfg: IngestConfig) -> Segment:
    meta = {str(k).upper(): v for k, v in dict(getattr(lc, "meta", None) or {}).items()}
    t = lc.time
    if hasattr(t, "jd1"):  # astropy Time: exact two-part Julian date in TDB
        t = getattr(t, "tdb", t)
        time = (np.asarray(t.jd1, np.float64) - JD_REF) + np.asarray(t.jd2, np.float64)
        time_system = TIME_SYSTEM
    else:
        time, time_system = _values(t), "as given"
    flux = _values(lc.flux)
    err = _values(lc.flux_err) if getattr(lc, "flux_err", None) is not None else np.full(len(flux), scatter_error(flux))
    mission = str(meta.get("MISSION") or meta.get("TELESCOP") or "").strip()
    mission = {"KEPLER": "Kepler", "K2": "K2", "TESS": "TESS"}.get(mission.upper(), mission or "unknown")
    quality = _values(lc.quality).astype(np.int64) if getattr(lc, "quality", None) is not None else None
    mask = bitmask(cfg.quality, "tess" if mission == "TESS" else "kepler") if mission in ("Kepler", "K2", "TESS") else 0
    prefix = {"Kepler": "KIC", "K2": "EPIC", "TESS": "TIC"}.get(mission)
    target = str(meta.get("LABEL") or meta.get("OBJECT") or (
        f"{prefix} {meta['TARGETID']}" if prefix and meta.get("TARGETID") is not None else f"lightkurve {index}"))
    segment = next((f"{letter}{int(meta[key])}" for key, letter in (("QUARTER", "Q"), ("CAMPAIGN", "C"), ("SECTOR", "S"))
                    if meta.get(key) is not None), "")
    timedel = meta.get("TIMEDEL")
    return clean_segment(time, flux, err, quality if mask else None, mask, cfg, target=target, mission=mission,
                         pipeline=str(meta.get("AUTHOR") or "lightkurve"), segment=segment,
                         cadence_s=float(timedel) * 86400.0 if timedel else None,
                         source=str(meta.get("FILENAME") or f"lightkurve object {index}"),
                         flux_column=str(meta.get("FLUX_ORIGIN") or "flux"), time_system=time_system)


def _values(x: Any) -> np.ndarray:
    """A float array from a Quantity, masked array or column (masked entries become NaN)."""
    if hasattr(x, "mask") and hasattr(x, "filled"):
        x = x.filled(np.nan)
    return np.asarray(getattr(x, "value", x), dtype=np.float64)


def _is_lightcurve(x: Any) -> bool:
    return hasattr(x, "time") and hasattr(x, "flux")


def _iterable(x: Any) -> bool:
    return hasattr(x, "__iter__") and not isinstance(x, (str, bytes, dict))


def _options(options: dict) -> IngestConfig:
    from lcgen.config import config_from_dict

    return config_from_dict(IngestConfig, {k: v for k, v in options.items() if v is not None}, where="option")
