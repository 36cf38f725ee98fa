"""`tsfs show prompt|images`: look at what a store holds for one window."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tsfs.cli._common import StoreArg, reports_errors
from tsfs.cli._data import DataArg, data_options
from tsfs.specs import WindowSpec

__all__ = ["app"]

app = typer.Typer(
    help="""Show stored values of one window (nothing is recomputed).

Examples:

  tsfs show prompt tsfs-store data/ETTh1.csv --seq-len 512 --window 0

  tsfs show images tsfs-store data/ETTh1.csv --seq-len 96 --window 10 --out window10.png
""",
    no_args_is_help=True,
)

WindowOpt = Annotated[int, typer.Option("--window", "-w", help="Window number within --split.")]
SplitOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--split", help="train | val | test (default: test, or the only split --splits loads)."
    ),
]
NamespaceOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="Fingerprint (or its start) when the store holds several namespaces."),
]


@app.command()
@reports_errors
@data_options
def prompt(
    store: StoreArg,
    data: DataArg,
    window: WindowSpec,
    index: WindowOpt = 0,
    split: SplitOpt = None,
    namespace: NamespaceOpt = None,
    description: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Dataset description (default: Time-LLM's ETT sentence)."),
    ] = None,
) -> None:
    """Time-LLM prompts (one per variable) and the DWT prompt of a window, from stored values.

    Example: tsfs show prompt tsfs-store data/ETTh1.csv --seq-len 512 --window 0 --split test
    """
    from tsfs.pipeline.show import pick_namespace, pick_split, window_prompts
    from tsfs.pipeline.sources import load
    from tsfs.stores.store import Store

    dataset = load(data, window)
    split = pick_split(dataset, split)
    ns = pick_namespace(Store(store), "features", namespace, holding=(dataset, split, index))
    per_var, dwt = window_prompts(dataset, ns, split, index, description=description)
    if dataset.kind != "forecast":
        typer.echo(
            f"tsfs: note: Time-LLM's task sentence forecasts; {dataset.path.name} has no "
            f"horizon, so it says --pred-len {dataset.spec.pred_len}",
            err=True,
        )
    for name, text in zip(dataset.variables, per_var, strict=False):
        typer.echo(f"# Time-LLM prompt, {name}\n{text}\n")
    typer.echo(f"# DWT prompt (window)\n{dwt}")


@app.command()
@reports_errors
@data_options
def images(
    store: StoreArg,
    data: DataArg,
    window: WindowSpec,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Image file to write: .png (or .svg, .pdf, ...).")
    ],
    index: WindowOpt = 0,
    split: SplitOpt = None,
    namespace: NamespaceOpt = None,
    features_namespace: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="Features fingerprint (or its start) to show beside the images, when the "
            "store holds several."
        ),
    ] = None,
    variables: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="Variables to show, comma-separated names or 0-based indices "
            "(default: the first 16)."
        ),
    ] = None,
) -> None:
    """A contact sheet of a window's stored images in colour, with its features beside them.

    Example: tsfs show images tsfs-store data/ETTh1.csv --seq-len 96 --window 10 --out w.png

    Example: tsfs show images tsfs-store data/ETTh1.csv --variables HUFL,OT --out w.png
    """
    from tsfs.errors import InputError, MissingRowsError
    from tsfs.pipeline.show import (
        SHEET_VARIABLES,
        pick_namespace,
        pick_split,
        pick_variables,
        window_rows,
        write_contact_sheet,
    )
    from tsfs.pipeline.sources import load
    from tsfs.stores.store import Store

    dataset = load(data, window)
    split = pick_split(dataset, split)
    shown = pick_variables(dataset, variables)
    st = Store(store)
    ns = pick_namespace(st, "images", namespace, holding=(dataset, split, index))
    try:
        feats = pick_namespace(
            st,
            "features",
            features_namespace,
            option="--features-namespace",
            holding=(dataset, split, index),
        )
    except MissingRowsError:
        if features_namespace:
            raise
        feats = None  # no features stored: the images alone
    except InputError as e:  # several, none picked
        if features_namespace:
            raise
        typer.echo(f"tsfs: note: the features are left out: {e}", err=True)
        feats = None
    if feats is not None:
        try:
            window_rows(dataset, feats, split, index, ["min"])
        except MissingRowsError as e:
            typer.echo(f"tsfs: note: the features are left out: {e}", err=True)
            feats = None
    write_contact_sheet(dataset, ns, feats, split, index, out, variables=shown)
    if variables is None and len(dataset.variables) > SHEET_VARIABLES:
        typer.echo(
            f"tsfs: note: showing the first {SHEET_VARIABLES} of {len(dataset.variables)} "
            "variables; pick others with --variables",
            err=True,
        )
    typer.echo(f"wrote {out}")
