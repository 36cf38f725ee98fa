"""`tsfs plan features|images`: disk and time budget before any work."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from tsfs.cli._common import DEFAULT_STORE, count_of, echo_json, reports_errors
from tsfs.cli._data import DataArg, data_options
from tsfs.cli.prep import (
    BatchOpt,
    CodecOpt,
    CoefficientsOpt,
    ColorOpt,
    JobsOpt,
    JsonOpt,
    LevelOpt,
    LinewidthOpt,
    MarginOpt,
    ModeOpt,
    RgbOpt,
    SigmaOpt,
    SizeOpt,
    WaveletOpt,
    YlimOpt,
    feature_spec,
    image_spec,
    jobs_or_cores,
)
from tsfs.pipeline.plan import Estimate
from tsfs.specs import FeatureSpec, ImageSpec, WindowSpec
from tsfs.units import human_bytes, parse_size

__all__ = ["app"]

app = typer.Typer(
    help="""Predict what a prep run will write and how long it takes, before any work.

Examples:

  tsfs plan images data/ETTh1.csv --seq-len 512 --budget 2G

  tsfs plan features data/ETTh1.csv --seq-len 512 --json
""",
    no_args_is_help=True,
)

BudgetOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="Most bytes the run may write, e.g. 500M, 2G."),
]


def _show(est: Estimate, alternatives: list[tuple[str, Estimate]], json_out: bool) -> None:
    if json_out:
        d = est.to_dict()
        d["alternatives"] = [
            {"setting": label, "bytes_on_disk": a.bytes_on_disk, "files": a.files, "fits": a.fits}
            for label, a in alternatives
        ]
        echo_json(d)
        return
    windows = ", ".join(f"{k} {v:,}" for k, v in est.windows.items())
    dup = est.rows_total - est.rows_unique
    free = "no limit (object store)" if est.free_bytes is None else human_bytes(est.free_bytes)
    lines = [
        f"{est.namespace}",
        f"  windows          {windows}",
        f"  rows             {est.rows_total:,} ({est.rows_unique:,} distinct, {dup:,} duplicates)",
        f"  already stored   {est.rows_present:,}",
        f"  to compute       {est.rows_missing:,} in {count_of(est.segments, 'segment')}",
        f"  uncompressed     {human_bytes(est.bytes_uncompressed)}",
        f"  on disk          {human_bytes(est.bytes_on_disk)} in {est.files:,} files and "
        f"{est.directories:,} directories  ("
        # what `du` may count: whole blocks per file and a block per directory
        + (
            f"with file-system blocks at most {human_bytes(est.disk_bytes_bound)}; "
            if est.free_bytes is not None
            else ""
        )
        + f"from a {est.sample_rows:,}-row sample)",
        f"  time             {est.seconds:,.1f} s {_how(est)}",
        f"  free space       {free}"
        + (f", budget {human_bytes(est.budget_bytes)}" if est.budget_bytes is not None else ""),
        f"  verdict          {est.verdict}",
    ]
    typer.echo("\n".join(lines))
    if alternatives:
        typer.echo("  cheaper settings:")
        for label, a in alternatives:
            verdict = "fits" if a.fits else "does not fit"
            typer.echo(f"    {label:<36} {human_bytes(a.bytes_on_disk):>12}  {verdict}")


PlannedStoreOpt = Annotated[
    str,
    typer.Option(
        "--store",
        help="Store directory or URL the prep run would write to (planning writes nothing).",
    ),
]


def _how(est: Estimate) -> str:
    """How the run computes: ``on 2 worker processes``, ``in one process, 2 threads``."""
    if est.jobs > 1:
        return f"on {est.jobs} worker processes"
    return "in one process" + (f", {est.threads} threads" if est.threads > 1 else "")


def _run(
    est: Estimate,
    spec: FeatureSpec | ImageSpec,
    dataset: object,
    store: object,
    jobs: int,
    json_out: bool,
    **run: Any,
) -> None:
    from tsfs.pipeline.prep import cheaper_settings

    alternatives = (
        cheaper_settings(dataset, spec, store, jobs=jobs, budget_bytes=est.budget_bytes, **run)  # type: ignore[arg-type]
        if not est.fits and est.rows_missing
        else []
    )
    _show(est, alternatives, json_out)
    if not est.fits:
        raise typer.Exit(1)


@app.command()
@reports_errors
@data_options
def features(
    data: DataArg,
    window: WindowSpec,
    store: PlannedStoreOpt = DEFAULT_STORE,
    wavelet: WaveletOpt = "db4",
    level: LevelOpt = None,
    mode: ModeOpt = "reflect",
    coefficients: CoefficientsOpt = False,
    budget: BudgetOpt = None,
    jobs: JobsOpt = None,
    batch_rows: BatchOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Budget of `tsfs prep features` with the same options; exit 1 when it does not fit.

    Example: tsfs plan features data/ETTh1.csv --seq-len 512 --budget 100M
    """
    from tsfs.pipeline.prep import plan_features
    from tsfs.pipeline.sources import load
    from tsfs.stores.store import Store

    spec = feature_spec(wavelet, level, mode, coefficients)
    st = Store(store, missing_ok=True)
    st.check_creatable()
    dataset = load(data, window)
    n = jobs_or_cores(jobs)
    est = plan_features(
        dataset,
        spec,
        st,
        jobs=n,
        budget_bytes=parse_size(budget) if budget else None,
        batch_rows=batch_rows,
    )
    _run(est, spec, dataset, st, n, json_out, batch_rows=batch_rows)


@app.command()
@reports_errors
@data_options
def images(
    data: DataArg,
    window: WindowSpec,
    store: PlannedStoreOpt = DEFAULT_STORE,
    size: SizeOpt = 224,
    linewidth: LinewidthOpt = 1.5,
    ylim: YlimOpt = "row",
    margin: MarginOpt = 0.05,
    sigma: SigmaOpt = 3.5,
    rgb: RgbOpt = False,
    color: ColorOpt = "#1f77b4",
    codec: CodecOpt = "lz4",
    budget: BudgetOpt = None,
    jobs: JobsOpt = None,
    batch_rows: BatchOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Budget of `tsfs prep images` with the same options; exit 1 when it does not fit.

    Example: tsfs plan images data/ETTh1.csv --seq-len 512 --budget 2G
    """
    from tsfs.pipeline.prep import check_codec, plan_images
    from tsfs.pipeline.sources import load
    from tsfs.stores.store import Store

    spec = image_spec(size, linewidth, ylim, rgb, margin=margin, sigma=sigma, color=color)
    st = Store(store, missing_ok=True)
    st.check_creatable()
    dataset = load(data, window)
    n = jobs_or_cores(jobs)
    est = plan_images(
        dataset,
        spec,
        st,
        jobs=n,
        codec=check_codec(codec),
        budget_bytes=parse_size(budget) if budget else None,
        batch_rows=batch_rows,
    )
    _run(est, spec, dataset, st, n, json_out, batch_rows=batch_rows, codec=codec)
