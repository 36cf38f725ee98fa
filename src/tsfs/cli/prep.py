"""`tsfs prep features|images`: compute what the store lacks for a data set."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from tsfs.cli._common import (
    DEFAULT_STORE,
    StoreOpt,
    count_of,
    echo_json,
    interrupted_note,
    reports_errors,
)
from tsfs.cli._data import DataArg, data_options
from tsfs.errors import InputError
from tsfs.pipeline.execute import PrepReport
from tsfs.specs import FeatureSpec, ImageSpec, WindowSpec
from tsfs.units import human_bytes, parse_size

if TYPE_CHECKING:
    from tsfs.stores.store import Store

__all__ = [
    "BatchOpt",
    "CodecOpt",
    "CoefficientsOpt",
    "ColorOpt",
    "ExecutorOpt",
    "JobsOpt",
    "JsonOpt",
    "LevelOpt",
    "LinewidthOpt",
    "MarginOpt",
    "ModeOpt",
    "RgbOpt",
    "SchedulerOpt",
    "SigmaOpt",
    "SizeOpt",
    "WaveletOpt",
    "YlimOpt",
    "app",
    "feature_spec",
    "image_spec",
    "jobs_or_cores",
]

app = typer.Typer(
    help="""Compute features or images into a store (only rows it does not hold yet).

Examples:

  tsfs prep features data/ETTh1.csv --seq-len 512 --store tsfs-store

  tsfs prep images data/ETTh1.csv --seq-len 96 --size 224 --jobs 2

  tsfs prep images data/ETTh1.csv --store s3://bucket/store --executor dask --scheduler tcp://head:8786
""",
    no_args_is_help=True,
)

JobsOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(
        "--jobs",
        "-j",
        min=1,
        help="Cores to use (default: all): worker processes, or threads of one process where "
        "starting workers would cost more (features below a million rows).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
BatchOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(
        "--batch-rows",
        min=1,
        help="Rows per segment, cut on whole windows (so up to a window's variables more): "
        "about what a crash can lose, and the memory a batch takes.",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


BudgetOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="Refuse to start when the run is predicted to write more, e.g. 2G."),
]
WaveletOpt = Annotated[str, typer.Option(help="Any PyWavelets discrete wavelet.")]
LevelOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(help="DWT levels (default: min(3, max level for T))."),
]
ModeOpt = Annotated[
    str, typer.Option(help="Boundary mode: reflect, zero, constant, periodic or symmetric.")
]
CoefficientsOpt = Annotated[
    bool, typer.Option("--coefficients", help="Also store the DWT coefficients.")
]
SizeOpt = Annotated[int, typer.Option(help="Image height and width in pixels.")]
LinewidthOpt = Annotated[float, typer.Option(help="Line width in points.")]
YlimOpt = Annotated[
    str,
    typer.Option(
        help="Y limits: row (the row's range plus --margin each side) | sigma (fixed at "
        "±--sigma; rows are RevIN-normalised, so amplitudes compare across windows)."
    ),
]
MarginOpt = Annotated[
    float, typer.Option(help="--ylim row: margin each side, as a fraction of the range.")
]
SigmaOpt = Annotated[float, typer.Option(help="--ylim sigma: the limits ±sigma.")]
ColorOpt = Annotated[str, typer.Option(help="--rgb: the line's colour, #rrggbb.")]
RgbOpt = Annotated[
    bool, typer.Option("--rgb", help="Store matplotlib's RGB instead of a coverage mask.")
]
CodecOpt = Annotated[
    str,
    typer.Option(
        help="Image compression of the segments this run writes: lz4 (fast reads) | zstd "
        "(~30% smaller). `tsfs store compact` re-encodes with the newest segment's."
    ),
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Run even when predicted over --budget or free space.")
]
ExecutorOpt = Annotated[
    str,
    typer.Option(
        help="local (this machine's cores) | dask (a Dask cluster: --scheduler, or a "
        "LocalCluster of --jobs processes). Needs pip install 'tsfs\\[dask]'."
    ),
]
SchedulerOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        help="Dask scheduler address, e.g. tcp://head:8786 (with --executor dask). Every "
        "worker must reach --store: use a URL such as s3://bucket/store."
    ),
]


def jobs_or_cores(jobs: int | None) -> int:
    """``--jobs``, defaulting to every usable core."""
    return jobs or len(os.sched_getaffinity(0))


def feature_spec(wavelet: str, level: int | None, mode: str, coefficients: bool) -> FeatureSpec:
    return FeatureSpec(
        wavelet=wavelet,
        level=level,
        mode=mode,  # type: ignore[arg-type]  # validated by FeatureSpec
        store_coefficients=coefficients,
    )


def image_spec(
    size: int,
    linewidth: float,
    ylim: str,
    rgb: bool,
    *,
    margin: float,
    sigma: float,
    color: str,
) -> ImageSpec:
    """The images the options describe. Options of another mode than the one chosen would be
    ignored without a word, so a value other than their default is refused."""
    defaults = ImageSpec()
    for flag, unused, fix in (
        (
            "--color",
            color != defaults.color and not rgb,
            "add --rgb (masks get colours on reading)",
        ),
        ("--sigma", sigma != defaults.sigma and ylim != "sigma", "add --ylim sigma"),
        ("--margin", margin != defaults.margin and ylim == "sigma", "use --ylim row"),
    ):
        if unused:
            raise InputError(f"{flag} does not apply to these images: drop it, or {fix}")
    return ImageSpec(
        size=size,
        linewidth=linewidth,
        ylim=ylim,  # type: ignore[arg-type]  # checked by ImageSpec
        margin=margin,
        sigma=sigma,
        rgb=rgb,
        color=color,
    )


def _summary(report: PrepReport, json_out: bool) -> None:
    if json_out:
        echo_json(report.to_dict())
        return
    windows = ", ".join(f"{k} {v:,}" for k, v in report.windows.items())
    typer.echo(f"{report.namespace}: windows {windows}")
    if report.rows_computed == 0:
        typer.echo(
            f"nothing to compute: all {report.rows_unique:,} distinct rows are already in the "
            f"store ({report.seconds:.2f} s)"
        )
        return
    rate = report.rows_computed / report.seconds if report.seconds else float("inf")
    typer.echo(
        f"computed {count_of(report.rows_computed, 'row')}, reused {report.rows_reused:,} "
        f"({count_of(report.rows_total - report.rows_unique, 'duplicate')} skipped); "
        f"wrote {count_of(report.segments_written, 'segment')}, "
        f"{human_bytes(report.bytes_written)} "
        f"in {report.seconds:.2f} s ({rate:,.0f} rows/s)"
    )


# What Ctrl-C leaves: every batch committed before it, and a command that picks up from there.
_RESUMES = "committed segments are kept, re-run the command to resume"


def _run_options(
    jobs: int | None,
    batch_rows: int | None,
    budget: str | None,
    force: bool,
    executor: str,
    scheduler: str | None,
    quiet: bool,
) -> dict[str, Any]:
    """The keyword arguments both prep commands pass on: how and where the run goes."""
    from tsfs.pipeline.prep import check_executor

    return {
        "jobs": jobs_or_cores(jobs),
        "batch_rows": batch_rows,
        "budget_bytes": parse_size(budget) if budget else None,
        "force": force,
        "executor": check_executor(executor, scheduler),
        "scheduler": scheduler,
        "progress": not quiet and sys.stderr.isatty(),
    }


@app.command()
@reports_errors
@data_options
def features(
    data: DataArg,
    window: WindowSpec,
    store: StoreOpt = DEFAULT_STORE,
    wavelet: WaveletOpt = "db4",
    level: LevelOpt = None,
    mode: ModeOpt = "reflect",
    coefficients: CoefficientsOpt = False,
    jobs: JobsOpt = None,
    batch_rows: BatchOpt = None,
    budget: BudgetOpt = None,
    force: ForceOpt = False,
    executor: ExecutorOpt = "local",
    scheduler: SchedulerOpt = None,
    device: Annotated[
        str,
        typer.Option(
            help="Where the wavelet transforms and lag FFTs run: auto (CUDA when present) | "
            "cpu | cuda. On the CPU the overlapping windows of CSV data share one transform "
            "of the series; on CUDA every row is transformed (ptwt)."
        ),
    ] = "auto",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Time-LLM statistics and DWT prompt features of every row.

    Example: tsfs prep features data/ETTh1.csv --seq-len 512 --wavelet db4 --level 3
    """
    from tsfs.pipeline.prep import check_rows, prep_features
    from tsfs.pipeline.sources import load

    spec = feature_spec(wavelet, level, mode, coefficients)
    run = _run_options(jobs, batch_rows, budget, force, executor, scheduler, quiet or json_out)
    dev = _device(device)
    dataset = load(data, window)
    check_rows(dataset, spec)
    with interrupted_note(_RESUMES):
        report = prep_features(dataset, spec, _open(store), device=dev, **run)
    _summary(report, json_out)


@app.command()
@reports_errors
@data_options
def images(
    data: DataArg,
    window: WindowSpec,
    store: StoreOpt = DEFAULT_STORE,
    size: SizeOpt = 224,
    linewidth: LinewidthOpt = 1.5,
    ylim: YlimOpt = "row",
    margin: MarginOpt = 0.05,
    sigma: SigmaOpt = 3.5,
    rgb: RgbOpt = False,
    color: ColorOpt = "#1f77b4",
    codec: CodecOpt = "lz4",
    jobs: JobsOpt = None,
    batch_rows: BatchOpt = None,
    budget: BudgetOpt = None,
    force: ForceOpt = False,
    executor: ExecutorOpt = "local",
    scheduler: SchedulerOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """One line-plot image per row, exact to matplotlib's pixels.

    Example: tsfs prep images data/ETTh1.csv --seq-len 96 --size 224 --jobs 2
    """
    from tsfs.pipeline.prep import check_codec, check_rows, prep_images
    from tsfs.pipeline.sources import load

    spec = image_spec(size, linewidth, ylim, rgb, margin=margin, sigma=sigma, color=color)
    run = _run_options(jobs, batch_rows, budget, force, executor, scheduler, quiet or json_out)
    chosen = check_codec(codec)
    dataset = load(data, window)
    check_rows(dataset, spec)
    with interrupted_note(_RESUMES):
        report = prep_images(dataset, spec, _open(store), codec=chosen, **run)
    _summary(report, json_out)


def _open(store: str) -> Store:
    """The store for a prep run: made once there is something to write; one that may not be
    written is opened to read (a run with nothing to compute needs no more)."""
    from tsfs.errors import StoreReadOnlyError
    from tsfs.stores.store import Store

    try:
        return Store(store, mode="a", create="on_write")
    except StoreReadOnlyError:
        if not Path(store).is_dir():
            raise
        return Store(store)


def _device(device: str) -> str:
    from tsfs.errors import InputError

    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"unknown --device {device!r}; choose auto, cpu or cuda")
    if device == "cpu":
        return "cpu"
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but no CUDA device is available")
    return "cuda" if torch.cuda.is_available() else "cpu"
