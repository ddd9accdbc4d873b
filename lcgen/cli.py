"""The `lcgen` command line: thin commands that resolve a config, call one library function and
print a short Rich summary. Expected errors (:class:`lcgen.errors.LcgenError`) become one red line
and exit code 1; set ``LCGEN_DEBUG=1`` for the full traceback."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table
from rich.text import Text

from lcgen import __version__
from lcgen.bundled import resolve_run
from lcgen.config import load_yaml, resolve_config
from lcgen.errors import Interrupted, LcgenError

app = typer.Typer(
    name="lcgen",
    help=(
        "Learned representations, reconstructions and gap-fills of stellar light curves.\n\n"
        "The pipeline: [bold]generate[/] mock light curves (or [bold]ingest[/] real ones) → [bold]preprocess[/] them into multitaper "
        "spectra (PSD, ACF, F-statistic) and/or [bold]convert[/] them into fixed-length time series → "
        "[bold]train[/] a masked autoencoder → [bold]evaluate[/] and [bold]plot[/] the run, "
        "[bold]embed[/] data with it and [bold]probe[/] what its representation knows. "
        "Every command works with no arguments on the default paths under data/ and runs/."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Markup off: paths, settings and messages hold user text, and a "[" in it must print as it is.
# Styles are given as Text and style= arguments instead.
console = Console(markup=False, soft_wrap=True)  # paths are never broken across lines
err_console = Console(stderr=True, markup=False)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML file of settings (presets in configs/; every output file stores the one that made it).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override any setting: --set section.key=value (repeatable).")]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", "-j", help="Worker processes (default: all cores).")]


def _version(value: bool) -> None:
    if value:
        console.print(f"lcgen {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Show the version and exit.")] = False) -> None:
    pass


def main() -> None:
    """Console entry point: run the app, turning expected errors into one red line (exit 1).
    Out of memory and OS failures that nothing more specific caught get one line too."""
    try:
        app(prog_name="lcgen")
    except (LcgenError, MemoryError, OSError) as exc:
        if os.environ.get("LCGEN_DEBUG") == "1":
            raise
        if isinstance(exc, LcgenError):
            message = str(exc)
        elif isinstance(exc, MemoryError):
            message = "out of memory; use smaller settings or a machine with more memory"
        else:
            message = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
        _print_error("error:", message)
        _exit(1)


def _exit(code: int) -> None:
    from lcgen.io import hdf5_broken

    if hdf5_broken():  # HDF5's cleanup at exit would crash on the file a full disk broke
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _print_error(label: str, message: str) -> None:
    err_console.print(Text.assemble((label, "bold red"), " ", message), highlight=False, soft_wrap=True)


@contextlib.contextmanager
def reporting_interrupts(nothing_kept: str = "nothing was kept") -> Iterator[None]:
    """Ctrl-C in a long command: one line saying what was kept (the library's
    :class:`Interrupted` message, else ``nothing_kept``), exit code 130."""
    try:
        yield
    except KeyboardInterrupt as exc:
        _print_error("interrupted:", str(exc) if isinstance(exc, Interrupted) else nothing_kept)
        raise typer.Exit(130) from None


def show_progress() -> bool:
    """Progress bars on a terminal only (not in CI logs or when piped)."""
    return console.is_terminal and not os.environ.get("CI")


@contextlib.contextmanager
def progress_bars() -> Iterator:
    """One Rich progress display for several bars, one after another or at once: yields
    ``new(description, total, unit="curves")``, which adds a bar with a rate column and returns
    its ``advance(n)``."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=not show_progress(), transient=False) as bar:
        def new(description: str, total: int, unit: str = "curves") -> Callable[[int], None]:
            task = bar.add_task(description, total=total, rate="")

            def advance(n: int = 1) -> None:
                bar.advance(task, n)
                elapsed = bar.tasks[task].elapsed or 0.0
                if elapsed > 0:
                    bar.update(task, rate=f"{bar.tasks[task].completed / elapsed:,.0f} {unit}/s")

            return advance

        yield new


@contextlib.contextmanager
def progress_bar(description: str, total: int, unit: str = "curves") -> Iterator:
    """A Rich progress bar with a rate column; yields ``advance(n)``."""
    with progress_bars() as new:
        yield new(description, total, unit)


def summary_table(title: str, rows: dict) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    return table


# ------------------------------------------------------------------------------------------
# generate


@app.command()
def generate(
    n_samples: Annotated[Optional[int], typer.Option("--n-samples", "-n", help="Light curves to simulate. \\[default: 50000]")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Master seed; curve i draws from SeedSequence(seed, spawn_key=(i,)). \\[default: 42]")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Raw file to write. \\[default: data/mock_lightcurves/mock_lightcurves.h5]")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Mission-like mocks laid under --config/--set: kepler-lc, kepler-sc, tess-2min, tess-ffi, or missions (Kepler long cadence + TESS 2-min). Cadence, gaps, noise in ppm and variability as in the missions' data (sources: lcgen/simulate/missions.py, README). \\[default: the original mix]")] = None,
    workers: WorkersOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Simulate mock light curves: sinusoids, multi-sines, damped random walks and QPOs on
    regular, gappy, variable and seasonal sampling (the original mix), plus optional spotted
    rotators, transits/eclipses, flares, red noise and TESS/Kepler-like sampling (see
    configs/mock.yaml), or Kepler/TESS-like curves with --preset. The same seed gives the same
    bytes with any number of workers.

    Example: [cyan]lcgen generate --n-samples 1000 --set types.rotation=0.3 --set samplings.tess=0.5 --set flare.probability=0.2[/]
    Missions: [cyan]lcgen generate --preset kepler-lc -n 500 -o data/kepler/raw.h5[/]
    """
    from lcgen.simulate.missions import preset_config
    from lcgen.simulate.mocks import SimulateConfig, generate as run_generate

    cfg = resolve_config(SimulateConfig, config_file=config, sets=set_, flags={
        "n_samples": n_samples, "seed": seed, "output": _str(output)},
        base=preset_config(preset) if preset is not None else None)
    with reporting_interrupts(f"nothing written to {cfg.output} (generate does not resume: rerun to start again)"), \
            progress_bar("generate", cfg.n_samples) as advance:
        result = run_generate(cfg, workers=workers, progress=advance)
    console.print(summary_table(f"Wrote {result['output']}", {
        "curves": result["curves"], "points": result["points"],
        "time": f"{result['seconds']:.1f} s ({result['curves_per_s']:,.0f} curves/s, {result['workers']} worker{'s' * (result['workers'] != 1)})",
        "types": ", ".join(f"{k} {v:,}" for k, v in result["types"].items()),
        "samplings": ", ".join(f"{k} {v:,}" for k, v in result["samplings"].items())}))


# ------------------------------------------------------------------------------------------
# ingest


@app.command()
def ingest(
    paths: Annotated[Optional[list[str]], typer.Argument(help="Light-curve files, directories (searched recursively) and quoted globs, in any mix.", show_default=False)] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Raw file to write. \\[default: data/real/raw.h5]")] = None,
    flux: Annotated[Optional[str], typer.Option(help="Flux column: auto (PDCSAP where the product has it, else SAP, as for QLP), pdcsap, sap, or det (QLP's detrended KSPSAP/DET flux). \\[default: auto]")] = None,
    quality: Annotated[Optional[str], typer.Option(help="Cadences to drop by their quality flags: default (pointing, safe mode, momentum dumps, manual excludes), hard (+ cosmic rays, stray light, K2 thruster firings), hardest (any flag), none, or an integer bitmask. \\[default: default]")] = None,
    normalise: Annotated[Optional[bool], typer.Option("--normalise/--no-normalise", help="Divide each quarter/campaign/sector by its median flux (errors alike). \\[default: on]", show_default=False)] = None,
    stitch: Annotated[Optional[bool], typer.Option("--stitch/--no-stitch", help="Files of one target become one curve, segments in time order (else one curve per file). \\[default: on]", show_default=False)] = None,
    time_col: Annotated[Optional[str], typer.Option(help="Tables: the time column. \\[default: time]")] = None,
    flux_col: Annotated[Optional[str], typer.Option(help="Tables: the flux (or magnitude) column. \\[default: flux]")] = None,
    err_col: Annotated[Optional[str], typer.Option(help="Tables: the error column. \\[default: flux_err if present, else the point-to-point scatter]")] = None,
    id_col: Annotated[Optional[str], typer.Option(help="Tables: a target-id column; each id becomes its own curve.")] = None,
    mag: Annotated[Optional[bool], typer.Option("--mag", help="Tables: the flux column holds magnitudes: f = 10^(-0.4 (m - median m)), sigma_f = 0.4 ln(10) f sigma_m.", show_default=False)] = None,
    time_ref: Annotated[Optional[float], typer.Option(help="Tables: Julian date of time 0 (2400000.5 for MJD, 0 for JD), to put them on lcgen's BJD - 2400000 axis. \\[default: times kept as given]")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Read real light curves (Kepler, K2, TESS SPOC 2-min/20-s, TESS-SPOC and QLP FITS; any
    FITS/CSV/TSV/ECSV table) into one raw file that convert, preprocess, train and evaluate use
    unchanged. Formats are detected from the files' contents. Times become days, BJD_TDB - 2400000,
    for every mission. Files that give nothing are listed with their reason (and stored under
    skipped/ in the output); the command fails only if no file could be read.

    Example: [cyan]lcgen ingest downloads/tess/ -o data/real/raw.h5 --quality hard[/]
    Tables: [cyan]lcgen ingest "phot/*.csv" --time-col mjd --flux-col mag --err-col mag_err --mag --time-ref 2400000.5[/]
    """
    from lcgen.ingest import IngestConfig, ingest as run_ingest, planned_files

    cfg = resolve_config(IngestConfig, config_file=config, sets=set_, flags={
        "inputs": paths or None, "output": _str(output), "flux": flux, "quality": quality, "normalise": normalise,
        "stitch": stitch, "time_col": time_col, "flux_col": flux_col, "err_col": err_col, "id_col": id_col,
        "mag": mag, "time_ref": time_ref})
    with reporting_interrupts(f"nothing written to {cfg.output} (rerun to ingest again)"), \
            progress_bar("ingest", planned_files(cfg), unit="files") as advance:
        result = run_ingest(cfg, progress=advance)
    rows = {"files": result["files"], "files read": result["files_read"], "light curves": result["curves"],
            "points": result["points"], "missions": ", ".join(f"{k} {v:,}" for k, v in result["missions"].items()),
            "dropped by quality flags": result["n_quality"], "dropped as non-finite": result["n_nonfinite"],
            "skipped": len(result["skipped"])}
    rows.update({f"  {Path(p).name}": reason for p, reason in result["skipped"][:10]})
    if len(result["skipped"]) > 10:
        rows["  …"] = f"{len(result['skipped']) - 10} more under skipped/ in the output (lcgen info)"
    rows["time"] = f"{result['seconds']:.1f} s ({result['files_per_s']:,.0f} files/s)"
    console.print(summary_table(f"Wrote {result['output']}", rows))


# ------------------------------------------------------------------------------------------
# convert


@app.command()
def convert(
    input: Annotated[Optional[Path], typer.Option("--input", "-i", help="Raw light-curve file. \\[default: data/mock_lightcurves/mock_lightcurves.h5]")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Time-series file to write. \\[default: data/mock_lightcurves/timeseries.h5]")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="Points per window. \\[default: 512]")] = None,
    strategy: Annotated[Optional[str], typer.Option(help="'window': every consecutive window; 'truncate': the first only. \\[default: window]")] = None,
    min_points: Annotated[Optional[int], typer.Option(help="Drop windows with fewer real points. \\[default: 32]")] = None,
    spectra: Annotated[Optional[bool], typer.Option("--spectra/--no-spectra", help="Also store each window's multitaper PSD, F-statistic and ACF on grids shared by all windows (paired data for `lcgen train multimodal`; grid settings: --set window_spectra.n_freq=256 ...). \\[default: no]", show_default=False)] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Cut light curves into fixed-length, median/IQR-normalised windows for the transformer.

    With --spectra every window also carries the spectra of its own points (paired data).

    Example: [cyan]lcgen convert --max-length 512 --strategy window[/]
    """
    from lcgen.features.convert import ConvertConfig, convert as run_convert

    cfg = resolve_config(ConvertConfig, config_file=config, sets=set_, flags={
        "input": _str(input), "output": _str(output), "max_length": max_length,
        "strategy": strategy, "min_points": min_points, "spectra": spectra})
    from lcgen.io import open_checked

    with open_checked(cfg.input, "raw", ("offsets",)) as f:
        total = f["offsets"].shape[0] - 1
    with reporting_interrupts(), progress_bars() as new_bar:
        result = run_convert(cfg, progress=new_bar("convert", total),
                             spectra_progress=lambda n: new_bar("window spectra", n, "windows"))
    spectra_rows = {}
    if cfg.spectra:
        (f0, f1), (l0, l1) = result["freq_range"], result["lag_range"]
        spectra_rows = {"windows without spectra (too few points or valid bins)": result["spectra_failed"],
                        "spectra grids": f"{cfg.window_spectra.n_freq} frequencies {f0:.4g}–{f1:.4g} c/d, "
                                         f"{cfg.window_spectra.n_lags} lags 0, {l0:.4g}–{l1:.4g} d"}
    console.print(summary_table(f"Wrote {result['output']}", {**spectra_rows,
        "curves read": result["curves"], "windows written": result["windows"],
        "windows too short (dropped)": result["too_short"], "invalid points dropped (non-finite, error ≤ 0)": result["non_finite"],
        "curves re-sorted": result["unsorted_curves"], "duplicate times merged": result["duplicates_merged"],
        "curves skipped (times span > 1e5 d)": result["absurd_span"]}))


# ------------------------------------------------------------------------------------------
# preprocess


@app.command()
def preprocess(
    input: Annotated[Optional[Path], typer.Option("--input", "-i", help="Raw light-curve file. \\[default: data/mock_lightcurves/mock_lightcurves.h5]")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Spectral-feature file to write. \\[default: data/mock_lightcurves/preprocessed.h5]")] = None,
    workers: WorkersOpt = None,
    shard: Annotated[Optional[str], typer.Option(help="Process only slice I of N (0-based), e.g. 0/4, into OUTPUT with .shard-I-of-N; join with --merge-shards N.")] = None,
    merge_shards: Annotated[Optional[int], typer.Option(help="Join the N shard files of OUTPUT into OUTPUT (after every --shard I/N run finished).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Multitaper PSD, F-statistic (with p-values) and ACF of every light curve, on one frequency
    grid and one lag grid shared by all curves, normalised for the spectral models (arcsinh, then
    per-sample standardisation; constants stored so it inverts). Curves that cannot be analysed are
    recorded as failed with their reason. Interrupted runs continue where they stopped.

    Example: [cyan]lcgen preprocess --workers 2 --set n_freq=1024 --set freq_max=5[/]
    Cluster: [cyan]lcgen preprocess --shard $TASK/8[/] per array task, then [cyan]lcgen preprocess --merge-shards 8[/]
    """
    from lcgen.features.preprocess import PreprocessConfig, merge_shards as run_merge, planned_rows
    from lcgen.features.preprocess import preprocess as run_preprocess

    cfg = resolve_config(PreprocessConfig, config_file=config, sets=set_, flags={
        "input": _str(input), "output": _str(output), "workers": workers, "shard": shard})
    if merge_shards is not None:
        result = run_merge(cfg.output, merge_shards)
        title = f"Merged {result['shards']} shards into {result['output']}"
    else:
        with reporting_interrupts(), progress_bar("preprocess", planned_rows(cfg)) as advance:
            result = run_preprocess(cfg, progress=advance)
        title = f"Wrote {result['output']}"
    rows = {"curves": result["curves"], "analysed": result["analysed"], "failed": result["failed"]}
    rows.update({f"  {reason}": count for reason, count in list(result["fail_reasons"].items())[:5]})
    rows.update({"invalid points dropped (non-finite, error ≤ 0)": result["n_nonfinite"], "duplicate times merged": result["n_duplicates"],
                 f"outliers clipped (>{cfg.outlier_iqr:g}×IQR)": result["n_outliers"]})
    if "seconds" in result:
        rows["frequency grid"] = "{:.4g} – {:.4g} c/d".format(*result["freq_range"])
        rows["band kept"] = _band_kept_line(cfg.output if cfg.shard is None else result["output"])
        rows["lag grid"] = "0, {:.4g} – {:.4g} d".format(*result["lag_range"])
        rows["time"] = (f"{result['seconds']:.1f} s ({result['curves_per_second']:,.0f} curves/s, "
                        f"{result['workers']} workers" + (f", resumed {result['resumed_chunks']} chunks)" if result["resumed_chunks"] else ")"))
    console.print(summary_table(title, rows))


# ------------------------------------------------------------------------------------------
# train


class _TrainCommand(typer.core.TyperCommand):
    """Puts the registered model names into the help when it is shown (the registry imports
    torch, too slow to load for every command)."""

    def format_help(self, ctx, formatter) -> None:
        from lcgen.models import list_models

        names = ", ".join(list_models())
        self.help = (self.help or "").replace("{models}", names)
        for param in self.params:
            if getattr(param, "help", None):
                param.help = param.help.replace("{models}", names)
        return super().format_help(ctx, formatter)


@app.command(cls=_TrainCommand)
def train(
    model: Annotated[Optional[str], typer.Argument(help="Model to train: {models}. \\[default: transformer, or the one in --config]", show_default=False)] = None,
    data: Annotated[Optional[Path], typer.Option("--data", "-d", help="Data file. \\[default: data/mock_lightcurves/timeseries.h5 (transformer), .../preprocessed.h5 (unet, mlp)]")] = None,
    channel: Annotated[Optional[str], typer.Option(help="Spectral channel for unet/mlp: psd, acf or fstat. \\[default: psd]")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs. \\[default: 50]")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Samples per step. \\[default: 32 transformer, 128 unet/mlp]")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate (OneCycleLR). \\[default: 1e-4 transformer, 1e-3 unet/mlp]")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Model size: tiny, small or default. \\[default: default]")] = None,
    name: Annotated[Optional[str], typer.Option(help="Run name: writes runs/MODEL/NAME/. \\[default: a timestamp]")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N. \\[default: auto]")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seeds the split, initialisation, batch order and masks. \\[default: 0]")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch (1 on a busy machine). \\[default: torch's choice, one per core]")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in RUN_DIR exactly where it stopped.", metavar="RUN_DIR")] = None,
    init: Annotated[Optional[Path], typer.Option(help="Fine-tune: start from the weights of the run in RUN_DIR (its model config; fresh optimizer and schedule), e.g. on ingested real data; 'bundled' is the model shipped with lcgen. lcgen train multimodal --init runs/transformer/NAME starts only its series branch from that transformer run (same series settings).", metavar="RUN_DIR")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML file of settings: configs/MODEL.yaml, or a run's config.yaml.")] = None,
    set_: SetOpt = None,
    nproc: Annotated[Optional[int], typer.Option(help="Train with N processes on this machine (DistributedDataParallel; one GPU each on CUDA): runs this command under torchrun --standalone --nproc_per_node N.", min=1)] = None,
) -> None:
    """Train a masked autoencoder with the shared trainer; writes runs/MODEL/NAME/ (config.yaml,
    split.npz, history.csv, best.pt, last.pt). Models: {models}.

    Example: [cyan]lcgen train transformer --epochs 50[/]   [cyan]lcgen train mlp --channel acf --preset small[/]
    Fine-tune on real data: [cyan]lcgen train transformer --data data/real/timeseries.h5 --init runs/transformer/NAME --lr 3e-5[/]
    (--init bundled: the model shipped with lcgen, on 256-point windows).
    Ctrl-C saves last.pt; continue with [cyan]lcgen train --resume runs/MODEL/NAME[/].
    Several processes or nodes: [cyan]lcgen train transformer --nproc 4[/], or
    [cyan]torchrun --nproc_per_node 4 -m lcgen train transformer[/] (the batch size stays the global one).
    """
    from lcgen.train.distributed import from_env
    from lcgen.train.trainer import fit, resolve_train_config, resume_config

    flags = {"data": _str(data), "channel": channel, "epochs": epochs, "batch_size": batch_size,
             "lr": lr, "preset": preset, "device": device, "seed": seed, "threads": threads,
             "init": _str(resolve_run(init) if init is not None else None)}
    if resume is not None:
        fixed = {"--init": init, "--channel": channel, "--epochs": epochs, "--batch-size": batch_size, "--lr": lr,
                 "--preset": preset, "--seed": seed, "--name": name, "--config": config, "--set": set_}
        given = [flag for flag, value in fixed.items() if value is not None]
        if given:
            raise LcgenError(f"--resume continues {resume} with its saved settings; drop {', '.join(given)} "
                             f"(only --data, --device and --threads may change)")
        cfg = resume_config(resume, data=_str(data), device=device, threads=threads)
        if model is not None and model != cfg.model_name:
            raise LcgenError(f"{resume} is a '{cfg.model_name}' run, not '{model}'")
    else:
        cfg = resolve_train_config(model, config_file=config, flags=flags, sets=set_)
    if nproc is not None and nproc > 1 and not from_env().enabled:  # not yet under torchrun
        from lcgen.train.data import open_source
        from lcgen.models import get_spec

        # settings and data checked here: a mistake is one line, not one per process
        open_source(cfg.data, get_spec(cfg.model_name).data, cfg.channel).close()
        args = [model] if model else []
        for flag, value in (("--data", data), ("--channel", channel), ("--epochs", epochs),
                            ("--batch-size", batch_size), ("--lr", lr), ("--preset", preset),
                            ("--name", name), ("--device", device), ("--seed", seed), ("--threads", threads),
                            ("--resume", resume), ("--init", init),
                            ("--config", config), *(("--set", s) for s in set_ or [])):
            if value is not None:
                args += [flag, str(value)]
        raise typer.Exit(run_torchrun(nproc, ["train", *args]))
    try:
        result = fit(cfg, name=name, resume=resume, console=console, progress=show_progress())
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training started
        err_console.print(Text("interrupted", style="bold red"))
        raise typer.Exit(130)
    if not from_env().main:  # under torchrun, rank 0 reports
        raise typer.Exit(130 if result["status"] == "interrupted" else 0)
    console.print("")
    best = "best val loss" if cfg.val_fraction > 0 else "best train loss (no validation split)"
    console.print(summary_table(f"Run {result['run_dir']}", {
        "status": result["status"], "epochs done": result["epoch"],
        best: f"{result['best_val']:.6f}" if result["epoch"] else "-",
        "history": str(result["run_dir"] / "history.csv")}))
    if result["status"] == "interrupted":
        raise typer.Exit(130)
    # the model settings the run saved: with --init they are the init run's, not the command line's
    trained_model = load_yaml(Path(result["run_dir"]) / "config.yaml").get("model") or {}
    if result["status"] == "finished" and result["epoch"] and trained_model.get("variance_head") and cfg.val_fraction > 0:
        from lcgen.evaluate.calibrate import calibrate_run

        try:
            _print_calibration(result["run_dir"], calibrate_run(result["run_dir"], device=cfg.device))
        except LcgenError as exc:  # too small a validation split: the run stays as trained
            console.print(Text.assemble(("note:", "yellow"), f" not calibrated: {exc}"))


def _print_calibration(run_dir: Path, fits: dict) -> None:
    """One line per calibrated checkpoint: 68/95 % coverage of validation points before -> after."""
    from lcgen.evaluate.calibrate import calibration_groups

    for which, cal in fits.items():
        before, after = cal["coverage_before"]["overall"], cal["coverage_after"]["overall"]
        share_edges, groups = calibration_groups(cal)
        bounds = ["0", *(f"{e:g}" for e in share_edges), "inf"]
        parts = []
        for g, fit in enumerate(groups):
            tails = "Gaussian" if fit["dof"] is None else f"Student t, {fit['dof']:g} dof"
            where = f"σ²/e² {bounds[g]}-{bounds[g + 1]} ({cal['n_points'][g]:,} points): " if share_edges else ""
            parts.append(f"{where}{tails}; scales {', '.join(f'{a:.3g}' for a in fit['scales'])} by hidden-run "
                         f"length 1, 2, ..., >{fit['edges'][-1]}")
        console.print(f"Variance calibration of {which}.pt on {cal['n_total']:,} hidden validation points: "
                      f"68/95 % coverage {before[0]:.3f}/{before[1]:.3f} -> {after[0]:.3f}/{after[1]:.3f} "
                      f"({'; '.join(parts)})", highlight=False)
    console.print(f"Stored in the checkpoints; wrote {Path(run_dir) / 'calibration.json'}")


# ------------------------------------------------------------------------------------------
# evaluate, plot, demo

RunDirArg = Annotated[Path, typer.Argument(help="A run directory written by lcgen train (runs/MODEL/NAME).", metavar="RUN_DIR")]


def _fmt(value: Optional[float], spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def metrics_tables(m: dict, detail: bool = True) -> list[Table]:
    """Rich tables of a metrics dict: overall errors, calibration (predictors with a variance),
    errors against the noise-free signal and (``detail``) the masked MSE by block size, mask ratio
    and light-curve type."""
    from lcgen.evaluate.calibrate import calibration_groups
    from lcgen.evaluate.scoring import BASELINE_LABELS, ratio

    names = {**BASELINE_LABELS, "model": m["model_name"], "mean": "per-curve mean",
             "data": "the data itself (noise)"}
    forecast = m.get("mode") == "forecast"
    where = (f"last {m['mask']['forecast_points']} points of each window hidden" if forecast
             else f"mask seed {m['mask']['seed']}")
    overall = Table("predictor", "masked MSE", "masked MAE", "masked median AE", "unmasked MSE", "unmasked MAE",
                    title_justify="left",
                    title=f"{m['model_name']}{' forecasting' if forecast else ''} on {m['n_samples']:,} {m['split']} "
                          f"rows of {m['data']} ({m['n_masked_positions']:,} hidden positions, {where})")
    for key, row in m["overall"].items():
        overall.add_row(names.get(key, key), *(_fmt(row.get(k)) for k in (
            "masked_mse", "masked_mae", "masked_medae", "unmasked_mse", "unmasked_mae")))
    tables = [overall]
    calibrated = {k: row for k, row in m["overall"].items() if "coverage_68" in row}
    if calibrated:
        fit = m.get("variance_calibration")
        dofs = [g.get("dof") for g in calibration_groups(fit)[1]] if fit else []
        tails = ", ".join("Gaussian" if d is None else f"t{d:g}" for d in dofs)
        how = ("" if not fit else "; the model's variance calibrated on the validation split"
               + (f", tails {tails} by noise share" if "groups" in fit
                  else "" if fit.get("dof") is None else f", Student t with {fit['dof']:g} dof"))
        cal = Table("predictor", "68 % coverage", "95 % coverage", "NLL", "CRPS", title_justify="left",
                    title=f"calibration on hidden positions (nominal 0.683 / 0.950{how})")
        for key, row in calibrated.items():
            cal.add_row(names.get(key, key), _fmt(row["coverage_68"], ".3f"), _fmt(row["coverage_95"], ".3f"),
                        _fmt(row["nll"]), _fmt(row["crps"]))
        tables.append(cal)
    if "signal" in m:
        signal = Table("predictor", "masked MSE", "unmasked MSE", title_justify="left",
                       title="against the noise-free signal (mock data)")
        for key, row in m["signal"].items():
            signal.add_row(names.get(key, key), _fmt(row["masked_mse"]), _fmt(row["unmasked_mse"]))
        tables.append(signal)
    if not detail:
        return tables
    predictors = list(m["overall"])
    first = predictors[1] if len(predictors) > 1 else None
    for key, label in (("by_block_size", "forecast horizon" if forecast else "block size"),
                       ("by_gap_days", "gap duration"),
                       ("by_mask_ratio", "hidden fraction"), ("by_lc_type", "light-curve type")):
        if not m.get(key):
            continue
        extra = (f"model / {first}",) if first else ()
        t = Table(label, "samples", *(names.get(p, p) for p in predictors), *extra, title_justify="left",
                  title=f"masked MSE by {label}")
        for g in m[key]:
            cells = [_fmt(g[p]["masked_mse"]) for p in predictors]
            if first:
                cells.append(_fmt(ratio(g["model"]["masked_mse"], g[first]["masked_mse"]), ".3f"))
            t.add_row(str(g["group"]), f"{g['n_samples']:,}", *cells)
        tables.append(t)
        if key == "by_gap_days":  # the median window matters as much as the pooled error here
            t = Table(label, "samples", *(names.get(p, p) for p in predictors), title_justify="left",
                      title="median per-window masked MSE by gap duration")
            for g in m[key]:
                t.add_row(str(g["group"]), f"{g['n_samples']:,}",
                          *(_fmt(g[p]["masked_window_mse_median"]) for p in predictors))
            tables.append(t)
    return tables


@app.command()
def evaluate(
    run_dir: RunDirArg,
    data: Annotated[Optional[Path], typer.Option("--data", "-d", help="Score every row of this file instead of the run's test split.")] = None,
    split: Annotated[Optional[str], typer.Option(help="Rows to score: test, val, train or all. \\[default: test; all with --data]")] = None,
    mask_seed: Annotated[Optional[int], typer.Option(help="Seed fixing every sample's mask (same masks for every run). \\[default: 1]")] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="best (lowest validation loss) or last. \\[default: best]")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Samples per forward pass. \\[default: 64]")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N or auto. \\[default: cpu]")] = None,
    baselines: Annotated[Optional[str], typer.Option(help="Comma list. mask mode: linear, mean, gp (celerite2 GP, slow: ~0.1 s per window); forecast mode: persistence, extrapolation, mean, gp. \\[default: all but gp]")] = None,
    forecast: Annotated[Optional[int], typer.Option("--forecast", metavar="N", help="Forecast mode: hide the last N real points of each window (writes metrics-forecast.json).")] = None,
    mask_days: Annotated[Optional[str], typer.Option(metavar="MIN,MAX", help="Hide blocks of MIN-MAX days (log-uniform) instead of the run's own masks, e.g. 0.02,5 (writes metrics-days.json). Errors by gap duration are reported either way.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Score a trained run on fixed, seeded masks against linear interpolation and the per-curve
    mean (same masks); MSE/MAE/median AE on hidden and visible real positions, by block size, mask
    ratio and light-curve type, and, for a run with a variance head, 68/95 % coverage, NLL and
    CRPS. Writes RUN_DIR/metrics.json (metrics-val.json etc. for other rows).

    Example: [cyan]lcgen evaluate runs/transformer/demo --baselines linear,mean,gp[/]   [cyan]lcgen evaluate runs/transformer/demo --forecast 16[/]
    """
    from lcgen.evaluate.scoring import EvaluateConfig, evaluate_run, metrics_path, verdict

    cfg = resolve_config(EvaluateConfig, config_file=config, sets=set_, flags={
        "data": _str(data), "split": split, "mask_seed": mask_seed, "checkpoint": checkpoint,
        "batch_size": batch_size, "device": device, "baselines": baselines,
        "mode": None if forecast is None else "forecast", "forecast_points": forecast,
        "mask_days": _days_range(mask_days)})
    metrics = evaluate_run(run_dir, cfg)
    for table in metrics_tables(metrics):
        console.print(table)
    console.print(verdict(metrics), highlight=False)
    console.print(f"Scored {run_dir}/{cfg.checkpoint}.pt; wrote "
                  f"{metrics_path(run_dir, metrics['split'], cfg.data, cfg.checkpoint, mode=cfg.mode, days=cfg.mask_days is not None)}")


def _days_range(text: str | None) -> list[float] | None:
    """``--mask-days MIN,MAX`` as [min, max] (None when not given)."""
    if text is None:
        return None
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise LcgenError(f"--mask-days {text!r}: give two numbers of days, MIN,MAX (e.g. 0.02,5)") from None
    return [lo, hi]


@app.command()
def calibrate(
    run_dir: RunDirArg,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N or auto. \\[default: cpu]")] = None,
    min_points: Annotated[int, typer.Option(help="Hidden validation points a run-length bin needs to get its own scale (fewer: pooled with its neighbours); a noise-share group needs 5x as many to get its own fit, the split 5x as many in all.", min=1)] = 200,
) -> None:
    """Recalibrate the predictive variance of a run with a variance head (loss nll) on its
    validation split: in each group of the model's share of the variance (σ²/e² < 0.1, 0.1-1,
    > 1), one scale of the model's variance per hidden-run length and, where the errors are
    heavier-tailed than a Gaussian, Student-t tails, chosen to put the reliability curve on the
    diagonal; stored in best.pt and last.pt and applied by evaluate and fill.
    lcgen train does this itself at the end of a run with a variance head; rerunning replaces
    the earlier fit.

    Example: [cyan]lcgen calibrate runs/transformer/demo[/]
    """
    from lcgen.evaluate.calibrate import calibrate_run

    _print_calibration(run_dir, calibrate_run(run_dir, min_points=min_points, device=device or "cpu"))


@app.command()
def fill(
    run_dir: Annotated[Optional[Path], typer.Argument(help="A run directory written by lcgen train; left out (lcgen fill INPUT -o OUT): the model shipped with lcgen.", metavar="[RUN_DIR]", show_default=False)] = None,
    input: Annotated[Optional[Path], typer.Argument(help="Raw light-curve file (lcgen generate or lcgen ingest).", metavar="INPUT", show_default=False)] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where to write (required): an .h5 file (raw layout + filled), or a directory for --format csv/fits.", show_default=False)] = None,
    cadence: Annotated[Optional[float], typer.Option(help="Grid spacing in days. \\[default: each curve's median spacing]")] = None,
    max_gap: Annotated[Optional[float], typer.Option(help="Leave gaps longer than this many days unfilled (counted in the summary). \\[default: fill every gap]")] = None,
    forecast: Annotated[Optional[float], typer.Option(help="Also predict this many days past each curve's last observation. \\[default: 0]")] = None,
    format: Annotated[Optional[str], typer.Option("--format", "-f", help="h5 (one file), csv or fits (one file per curve in the OUTPUT directory). \\[default: h5]")] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="best or last. \\[default: best]")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N or auto. \\[default: cpu]")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Fill the gaps of every light curve in INPUT with a trained time-series run: a regular grid
    at the curve's cadence, predicted mean and sigma at the grid points with no observation,
    overlapping windows blended, observed points kept, output in the input's units.

    Example: [cyan]lcgen fill runs/transformer/demo data/ingested.h5 -o filled.h5 --max-gap 5 --forecast 2[/]
    With the model shipped with lcgen: [cyan]lcgen fill data/ingested.h5 -o filled.h5[/]
    """
    from lcgen.fill import FillConfig, fill_file

    if input is None:  # one path given: it is INPUT, filled by the bundled model
        run_dir, input = None, run_dir
    if input is None or output is None:
        raise LcgenError("fill needs INPUT and --output/-o: lcgen fill [RUN_DIR] INPUT -o OUT")
    run_dir = resolve_run(run_dir)

    cfg = resolve_config(FillConfig, config_file=config, sets=set_, flags={
        "cadence": cadence, "max_gap": max_gap, "forecast": forecast, "format": format,
        "checkpoint": checkpoint, "device": device})
    with progress_bar("fill", None, unit="windows") as advance:
        result = fill_file(run_dir, input, output, cfg, progress=advance)
    rate = result.pop("filled points / cpu s")
    result["cpu seconds"] = f"{result['cpu seconds']:.2f}" + (f" ({rate:,.0f} filled points/s)" if rate else "")
    if not result["has variance"]:
        console.print(Text.assemble(("note:", "yellow"), " the run has no variance head (train with --set loss=nll): "
                                    "flux_err of filled points is NaN"))
    result["has variance"] = "yes" if result["has variance"] else "no"
    console.print(summary_table(f"Wrote {result.pop('output')}", result))


@app.command()
def plot(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (lcgen train), or a file written by lcgen fill.", metavar="RUN_DIR|FILLED.h5")],
    examples: Annotated[int, typer.Option(min=1, help="Reconstruction panels (one light-curve type after another); curves of a filled file.")] = 6,
    seed: Annotated[int, typer.Option(help="Chooses which rows are shown.")] = 0,
    mask_seed: Annotated[Optional[int], typer.Option(help="Seed of the masks, as in lcgen evaluate. \\[default: 1]")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="PNG for a filled file. \\[default: FILLED.png beside it]")] = None,
    map_: Annotated[str, typer.Option("--map", help="2-D map of embeddings: auto (UMAP when umap-learn is installed, else PCA), pca, or umap (pip install 'lcgen[umap]'; ~25 s of CPU for a few thousand curves).")] = "auto",
) -> None:
    """Draw a run's training curves, reconstructions of test rows (data, hidden regions, model,
    linear interpolation), its errors by block size, for a run with a variance head its
    calibration (reliability), and the 2-D map of its embeddings.h5 (PCA, or UMAP when umap-learn
    is installed) coloured by light-curve type, as PNGs under RUN_DIR/figures/. Given a file
    written by lcgen fill, draw its observed points, the filled mean and the 1 and 2 sigma bands;
    given an embeddings file, draw its map beside it (STEM_map.png).

    Example: [cyan]lcgen plot runs/transformer/demo --examples 8[/]   [cyan]lcgen plot filled.h5[/]
    """
    from lcgen.evaluate.scoring import EvaluateConfig
    from lcgen.io import open_checked
    from lcgen.plots import MAP_METHODS, plot_embeddings, plot_filled, plot_run

    if map_ not in MAP_METHODS:
        raise LcgenError(f"--map {map_}: choose one of {', '.join(MAP_METHODS)}")
    if run_dir.is_file():
        with open_checked(run_dir) as f:
            fmt = str(f.attrs.get("format", ""))
        if fmt == "embeddings":
            path = plot_embeddings(run_dir, method=map_)
        else:
            path = plot_filled(run_dir, output or run_dir.with_suffix(".png"), n_curves=examples)
        console.print(f"Wrote {path}")
        return
    if seed < 0:
        raise LcgenError(f"--seed {seed}: must be >= 0")
    cfg = resolve_config(EvaluateConfig, flags={"mask_seed": mask_seed})
    for path in plot_run(run_dir, n_examples=examples, seed=seed, eval_config=cfg, map_method=map_):
        console.print(f"Wrote {path}")


@app.command()
def demo(
    workdir: Annotated[Optional[Path], typer.Option(help="Where the demo writes data/ and runs/. \\[default: demo]")] = None,
    n_samples: Annotated[Optional[int], typer.Option("--n-samples", "-n", help="Mock light curves. \\[default: 1500]")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs of both models. \\[default: 8 transformer, 20 spectral]")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Size of both models: tiny or small. \\[default: small]")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N or auto. \\[default: cpu]")] = None,
    workers: WorkersOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Run the whole pipeline on small mock data: generate → preprocess → convert → train a small
    transformer and a small spectral model → evaluate → plot. A few minutes on 2 CPU cores.

    Example: [cyan]lcgen demo[/]   [cyan]lcgen demo --n-samples 200 --epochs 1 --preset tiny --workdir /tmp/demo[/]
    """
    from lcgen.demo import DemoConfig, run_demo
    from lcgen.evaluate.scoring import verdict

    cfg = resolve_config(DemoConfig, config_file=config, sets=set_, flags={
        "workdir": _str(workdir), "n_samples": n_samples, "transformer_epochs": epochs,
        "spectral_epochs": epochs, "preset": preset, "device": device, "workers": workers})
    result = run_demo(cfg, console=console, progress=show_progress(),
                      on_step=lambda name: console.rule(Text(name, style="bold")))
    console.rule(Text("results", style="bold"))
    for run in result["runs"].values():
        for table in metrics_tables(run["metrics"], detail=False):
            console.print(table)
    console.print(summary_table("Seconds per step", {name: f"{seconds:.1f}" for name, seconds in result["steps"].items()}))
    for run in result["runs"].values():
        console.print(verdict(run["metrics"]), highlight=False)
    console.print(f"Demo finished in {result['seconds']:.0f} s.", style="bold")
    for model, run in result["runs"].items():
        console.print(f"{model}: figures in {run['figures'][0].parent}/, metrics in {run['metrics_file']}",
                      highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------------
# embed, probe


@app.command()
def embed(
    run_dir: Annotated[Optional[Path], typer.Argument(help="A run directory written by lcgen train; given only a data file (lcgen embed INPUT -o OUT), the model shipped with lcgen.", metavar="[RUN_DIR]", show_default=False)] = None,
    input: Annotated[Optional[Path], typer.Argument(help="Data file of the kind the run's model eats (time series for the transformer, spectra for unet/mlp). \\[default: the run's own data file]", show_default=False, metavar="INPUT")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Embeddings file to write. \\[default: RUN_DIR/embeddings.h5]")] = None,
    level: Annotated[Optional[str], typer.Option(help="Latent level: all (every level, concatenated), or one of bottleneck, level0, level1, ... (mlp: latent). \\[default: all]")] = None,
    pooling: Annotated[Optional[str], typer.Option(help="Over the real positions: mean, max, std, spectrum (amplitudes of 4 Fourier harmonics along the window), flat (every vector in order; the multimodal shared latent only), or several joined by + (meanmax = mean+max). \\[default: meanmax]")] = None,
    span: Annotated[Optional[bool], typer.Option("--span/--no-span", help="Multimodal runs: append the span code (what every readout of the shared latent reads beside it: a learned code of the window's log time span) to each window's vector. \\[default: off]")] = None,
    weights: Annotated[Optional[str], typer.Option(help="trained, or random (the same architecture freshly initialised: a control). \\[default: trained]")] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="best or last. \\[default: best]")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Rows per forward pass. \\[default: 256]")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N or auto. \\[default: cpu]")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Take a trained run's representation out: the latent of every row pooled over its real
    positions (padding never counts) into one float32 vector, and per source light curve the mean
    of its windows. Writes an HDF5 'embeddings' file (window, curve, source, start, meta/, the
    run it came from); read it with lcgen.embed.read_embeddings, score it with lcgen probe.

    Example: [cyan]lcgen embed runs/transformer/demo data/mock_lightcurves/timeseries.h5 -o emb.h5[/]
    With the model shipped with lcgen: [cyan]lcgen embed windows.h5 -o emb.h5[/] (256-point windows)
    """
    from lcgen.embed import EMBEDDINGS_FILE, EmbedConfig, embed as run_embed, write_embeddings
    from lcgen.embed.extract import count_rows

    if input is None and (run_dir is None or run_dir.is_file()):  # no run given: the bundled model
        run_dir, input = None, run_dir
        if input is None or output is None:
            raise LcgenError("with the bundled model, embed needs INPUT and --output/-o: lcgen embed INPUT -o OUT")
    run_dir = resolve_run(run_dir)

    cfg = resolve_config(EmbedConfig, config_file=config, sets=set_, flags={
        "level": level, "pooling": pooling, "span": span, "weights": weights, "checkpoint": checkpoint,
        "batch_size": batch_size, "device": device})
    with progress_bar("embed", count_rows(run_dir, input), unit="rows") as advance:
        emb = run_embed(run_dir, input, cfg, progress=advance)
    path = write_embeddings(output or Path(run_dir) / EMBEDDINGS_FILE, emb)
    a = emb.attrs
    console.print(summary_table(f"Wrote {path}", {
        "run": f"{a['run_dir']} ({a['model_name']} {a['preset']}, {a['checkpoint']}.pt, {a['weights']} weights)",
        "input": a["input"], "latent": f"{a['level']}, {a['pooling']}-pooled over real positions" + (", then the span code" if a["span"] else ""),
        "windows": f"{emb.window.shape[0]:,} × {emb.window.shape[1]}",
        "curves": f"{emb.curve.shape[0]:,} × {emb.curve.shape[1]}",
        "time": f"{a['seconds']:.1f} s ({emb.window.shape[0] / max(a['seconds'], 1e-9):,.0f} rows/s)"}))


@app.command()
def probe(
    embeddings: Annotated[Path, typer.Argument(help="An embeddings file written by lcgen embed.")],
    target: Annotated[Optional[list[str]], typer.Option("--target", "-t", help="meta column to read out (repeatable); text columns are classified, numbers regressed, log10(NAME) regresses the log. \\[default: lc_type, log10(period), log10(tau)]")] = None,
    rows: Annotated[Optional[str], typer.Option(help="curve (one vector per light curve) or window. \\[default: curve]")] = None,
    baselines: Annotated[Optional[bool], typer.Option("--baselines/--no-baselines", help="Also probe hand-crafted features and random weights on the same split. \\[default: on]")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seeds the split, few-shot draws and random weights. \\[default: 0]")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="JSON to write. \\[default: probe.json beside the embeddings]")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Measure what simple probes read from embeddings, on a split by light curve: logistic
    regression and kNN for the light-curve type (macro-F1, accuracy, few-shot at 10 and 100 curves
    per class), ridge and kNN for log period and log DRW timescale, or any meta column you name;
    against hand-crafted features and the random-weight control on the same split.

    Example: [cyan]lcgen probe runs/transformer/demo/embeddings.h5[/]   [cyan]lcgen probe emb.h5 -t sampling -t "log10(snr)"[/]
    """
    from lcgen.embed.probe import ProbeConfig, probe_file, probe_path

    cfg = resolve_config(ProbeConfig, config_file=config, sets=set_, flags={
        "targets": target or None, "rows": rows, "baselines": baselines, "seed": seed})
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, disable=not show_progress()) as bar:
        tasks: dict = {}

        def advance(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done)

        report = probe_file(embeddings, cfg, output=output, progress=advance)
    console.print(probe_table(report))
    if "handcrafted" in report:
        h = report["handcrafted"]
        console.print(f"hand-crafted baseline: {h['skipped']}" if "skipped" in h else
                      f"hand-crafted features ({', '.join(h['features'])}): "
                      f"{'read from' if h['cached'] else 'computed, cached in'} {h['cache']}", highlight=False)
    for line in report["summary"]:
        console.print(line, highlight=False)
    console.print(f"Wrote {output or probe_path(embeddings)}")


def probe_table(report: dict) -> Table:
    """The headline probe scores, one column per representation."""
    from lcgen.embed.probe import headline, score

    reps = list(report["representations"])
    s = report["split"]
    table = Table("score", *reps, title_justify="left",
                  title=f"probes on {s['n_test_rows']:,} test / {s['n_train_rows']:,} train {report['rows']} rows "
                        f"(split by light curve, seed {s['seed']}); {report['level']} {report['pooling']}-pooled")
    for target, probe_name, metric, label in headline(report):
        table.add_row(label, *(_fmt(score(report, r, target, probe_name, metric), ".3f") for r in reps))
    return table


# ------------------------------------------------------------------------------------------
# info


@app.command()
def info(path: Annotated[Path, typer.Argument(help="Any lcgen HDF5 file.")],
         show_config: Annotated[bool, typer.Option("--config/--no-config", help="Print the config that made the file.")] = True) -> None:
    """Summarise any lcgen HDF5 file: format, counts, datasets, value ranges and its config.

    Example: [cyan]lcgen info data/mock_lightcurves/preprocessed.h5[/]
    """
    from lcgen.io import describe

    d = describe(path)
    console.print(Text.assemble((d["path"], "bold"), ": lcgen ", (d["format"], "bold"),
                                f" file (format v{d['format_version']}, lcgen {d['lcgen_version']}, "
                                f"created {d['created']}), {d['n_curves']:,} rows"))
    if "provenance" in d:
        console.print(", ".join(f"{k}: {v}" for k, v in d["provenance"].items()), highlight=False,
                      markup=False, soft_wrap=True)
    table = Table("dataset", "shape", "dtype", "range", "mean ± std", "note")
    table.columns[0].no_wrap = True
    for row in d["datasets"]:
        stats = ("", "")
        if "min" in row:
            stats = (f"{row['min']:.4g} … {row['max']:.4g}", f"{row['mean']:.4g} ± {row['std']:.3g}")
        note = ""
        if row.get("non_finite"):
            note = "all NaN" if "min" not in row else f"{row['non_finite']:,} non-finite"
        if "values" in row:
            note = ", ".join(f"{k}: {v:,}" for k, v in list(row["values"].items())[:8])
        shape = "×".join(str(n) for n in row["shape"])
        table.add_row(row["name"], shape, row["dtype"], *stats, note)
    console.print(table)
    _print_real_curves(path)
    if d["format"] == "spectra":
        console.print(f"frequency grid keeps {_band_kept_line(path)}", highlight=False)
    if "paired" in d:
        p = d["paired"]
        console.print(f"paired: each window carries its own PSD, F-statistic ({p['n_freq']} frequencies "
                      f"{p['freq_range'][0]:.4g}–{p['freq_range'][1]:.4g} c/d) and ACF ({p['n_lags']} lags: 0, "
                      f"{p['lag_range'][0]:.4g}–{p['lag_range'][1]:.4g} d), on grids shared by every window; "
                      f"{p['failed']:,} windows have no spectra (spectra_failed)", highlight=False, soft_wrap=True)
    if show_config and d["config"].strip():
        console.print("config", style="bold")
        console.print(d["config"].rstrip(), highlight=False)


def _print_real_curves(path: Path) -> None:
    """`lcgen info` on an ingested file: one line per light curve and the skipped files."""
    from lcgen.ingest import describe_curves

    real = describe_curves(path)
    if real is None:
        return
    table = Table("target", "mission", "pipeline", "segments", "points", "cadence", "flux", "dropped (quality / non-finite)",
                  title_justify="left", title=f"light curves ({len(real['curves'])} of {real['n_curves']:,} shown; "
                                              f"times in days, {real['time_system'] or 'as given'})")
    for c in real["curves"]:
        table.add_row(c["target"], c["mission"], c["pipeline"], c["segments"] or "-", f"{c['points']:,}",
                      f"{c['cadence_s']:.4g} s", c["flux_column"], f"{c['n_quality_dropped']:,} / {c['n_nonfinite_dropped']:,}")
    console.print(table)
    if real["skipped"]:
        skipped = Table("skipped file", "reason", title_justify="left", title=f"{len(real['skipped']):,} files skipped")
        for source, reason in real["skipped"][:20]:
            skipped.add_row(source, reason)
        console.print(skipped)


def _band_kept_line(path) -> str:
    """What share of each curve's resolvable band [W, Nyquist] the shared frequency grid keeps."""
    from lcgen.features.preprocess import band_coverage

    c = band_coverage(path)
    if c is None:
        return "(no band_kept column: file written by an older lcgen)"
    return (f"{100 * c['median']:.1f} % of the median curve's band (min {100 * c['min']:.1f} %; "
            f"{c['partial']:,} of {c['curves']:,} curves lose part of theirs)")


def run_torchrun(nproc: int, args: list[str]) -> int:
    """``torchrun --standalone --nproc_per_node NPROC -m lcgen ARGS`` on this machine; its exit code."""
    import signal
    import subprocess

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "lcgen", *args]
    proc = subprocess.Popen(command)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # the terminal's Ctrl-C reached torchrun's workers too; let them save
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _str(path: Optional[Path]) -> Optional[str]:
    return None if path is None else str(path)
