"""The `tsfs` command: thin Typer apps over the library."""

from __future__ import annotations

import typer

from tsfs import __version__
from tsfs.cli import plan, prep, show, store, train

__all__ = ["app"]

app = typer.Typer(
    name="tsfs",
    help=f"""tsfs {__version__}: a time-series feature store.

Computes per-window DWT prompt features and line-plot images once, into a content-addressed \
Zarr v3 store, so training loops read them at memory speed.

Examples:

  tsfs prep features data/ETTh1.csv --seq-len 512 --store tsfs-store

  tsfs prep images data/ETTh1.csv --seq-len 96 --store tsfs-store

  tsfs store info tsfs-store
""",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(prep.app, name="prep")
app.add_typer(plan.app, name="plan")
app.add_typer(show.app, name="show")
app.add_typer(store.app, name="store")
app.command("train", help=train.HELP, no_args_is_help=True)(train.main)
