"""`tsfs store info|verify|gc|compact`: look after a store."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tsfs.cli._common import StoreArg, count_of, echo_json, human_bytes, reports_errors
from tsfs.stores.store import Store

__all__ = ["app"]

app = typer.Typer(
    help="""Inspect and maintain a store.

Examples:

  tsfs store info tsfs-store

  tsfs store verify tsfs-store

  tsfs store gc tsfs-store --dry-run

  tsfs store compact tsfs-store

  tsfs store verify s3://bucket/tsfs-store
""",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


@app.command()
@reports_errors
def info(store: StoreArg, json_out: JsonOpt = False) -> None:
    """Namespaces, their specs, rows, segments and bytes on disk.

    Example: tsfs store info tsfs-store --json
    """
    summary = Store(store).info()
    if json_out:
        echo_json(summary)
        return
    typer.echo(
        f"store {summary['path']}  format {summary['format']}  keys {summary['key']}  "
        f"{human_bytes(summary['bytes'])} in {summary['files']} files"
    )
    if not summary["namespaces"]:
        typer.echo("  (empty: run `tsfs prep features DATA` or `tsfs prep images DATA`)")
    for ns in summary["namespaces"]:
        counts = (
            f"{ns['rows']:,} rows  {count_of(ns['segments'], 'segment')}"
            if ns["damaged"] is None
            else "damaged"
        )
        typer.echo(
            f"  {ns['kind']}/{ns['fingerprint']}  {counts}"
            f"  {human_bytes(ns['bytes'])}  {ns['files']} files"
        )
        if ns["damaged"] is not None:
            typer.echo(f"      {ns['damaged']}")
        if ns["spec"] is None:
            typer.echo("      spec: unreadable (`tsfs store verify` says why; prep rewrites it)")
            continue
        spec = {k: v for k, v in ns["spec"].items() if k not in ("kind", "version")}
        typer.echo(f"      spec: {' '.join(f'{k}={v}' for k, v in sorted(spec.items()))}")
        if not ns["current"]:
            typer.echo(
                f"      written by another tsfs version (spec version "
                f"{ns['spec'].get('version')}): not read; its rows are recomputed by prep"
            )
        if ns["uncommitted_segments"]:
            typer.echo(
                f"      {ns['uncommitted_segments']} uncommitted segment(s): "
                "a writer is running, or one crashed (`tsfs store gc` removes them)"
            )


@app.command()
@reports_errors
def verify(store: StoreArg, json_out: JsonOpt = False) -> None:
    """Read every chunk and commit record; exit 1 naming each bad file.

    Example: tsfs store verify tsfs-store
    """
    problems = Store(store).verify()
    if json_out:
        echo_json(
            {
                "ok": not problems,
                "problems": [{"path": p.path, "message": p.message} for p in problems],
            }
        )
    elif problems:
        for p in problems:
            typer.echo(f"BAD {p}", err=True)
        docs_only = all(p.message.endswith("the prep command rewrites it") for p in problems)
        typer.echo(
            f"{len(problems)} problem{'s' if len(problems) != 1 else ''}. "
            + (
                "Re-running the prep command that made the store repairs "
                + ("it." if len(problems) == 1 else "them.")
                if docs_only
                else f"`tsfs store gc --drop-corrupt {store}` drops the bad segments; "
                "re-running the prep command then recomputes their rows."
            ),
            err=True,
        )
    else:
        typer.echo(f"ok: every chunk and commit record of {store} checks out")
    if problems:
        raise typer.Exit(1)


@app.command()
@reports_errors
def gc(
    store: StoreArg,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would go.")] = False,
    drop_corrupt: Annotated[
        bool,
        typer.Option("--drop-corrupt", help="Also drop committed segments that fail verify."),
    ] = False,
    grace: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            help="Keep uncommitted segments younger than this, in seconds (default: 10 on a "
            "local disk; 3600 on an object store, where no lock tells a live writer)."
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Remove uncommitted segments of dead writers, replaced segments and temp files.

    On a local disk, segments that a live writer still holds are never touched. Object stores
    (s3://…) have no locks: there only uncommitted segments older than --grace go.

    Example: tsfs store gc tsfs-store --dry-run
    """
    report = Store(store, mode="r" if dry_run else "a", create=False).gc(
        dry_run=dry_run, drop_corrupt=drop_corrupt, grace_s=grace
    )
    if json_out:
        echo_json(
            {
                "dry_run": dry_run,
                "uncommitted": [str(p) for p in report.uncommitted],
                "replaced": [str(p) for p in report.replaced],
                "corrupt": [str(p) for p in report.corrupt],
                "temp_files": [str(p) for p in report.temp_files],
                "unfinished": [str(p) for p in report.unfinished],
                "skipped_active": report.skipped_active,
                "skipped_recent": report.skipped_recent,
                "bytes_freed": report.bytes_freed,
            }
        )
        return
    verb = "would remove" if dry_run else "removed"
    for label, paths in (
        ("uncommitted segment", report.uncommitted),
        ("replaced segment", report.replaced),
        ("corrupt segment", report.corrupt),
        ("temp file", report.temp_files),
        ("unfinished namespace", report.unfinished),
    ):
        for p in paths:
            typer.echo(f"{verb} {label} {p}")
    if report.skipped_active:
        typer.echo(f"kept {count_of(report.skipped_active, 'segment')} still being written")
    if report.skipped_recent:
        typer.echo(
            f"kept {count_of(report.skipped_recent, 'uncommitted segment')} younger than the "
            "grace period (--grace); run gc again later to remove those a dead writer left"
        )
    typer.echo(f"{verb} {human_bytes(report.bytes_freed)}")


@app.command()
@reports_errors
def compact(store: StoreArg, json_out: JsonOpt = False) -> None:
    """Merge each namespace's segments and drop duplicate keys, atomically.

    Images keep the codec of the newest segment (the last --codec a prep run chose).

    Example: tsfs store compact tsfs-store
    """
    kept = Store(store, mode="a", create=False).compact()
    if json_out:
        echo_json({"namespaces": [{"path": p, "rows": rows} for p, rows in kept.items()]})
        return
    for path, rows in kept.items():
        typer.echo(f"{path}: {count_of(rows, 'row')}")
