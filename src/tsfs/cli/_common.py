"""What every tsfs command shares: error handling, output helpers, and the data options."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Annotated, Any, ParamSpec, TypeVar

import typer

from tsfs.errors import Interrupted, TsfsError
from tsfs.specs import strict_json
from tsfs.units import human_bytes

__all__ = [
    "DEFAULT_STORE",
    "StoreArg",
    "StoreOpt",
    "count_of",
    "echo_json",
    "fail",
    "human_bytes",
    "interrupt_exit_code",
    "interrupted_note",
    "reports_errors",
]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_STORE = "tsfs-store"

# Strings, not Paths: a store may be a URL (s3://bucket/store), which a Path would mangle.
StoreArg = Annotated[
    str,
    typer.Argument(help="Store directory or URL (s3://…).", metavar="STORE", show_default=False),
]
StoreOpt = Annotated[
    str,
    typer.Option(
        "--store", help="Store directory or URL, e.g. s3://bucket/store (created if missing)."
    ),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one line to stderr and return the Exit to raise."""
    typer.echo(f"tsfs: error: {message}", err=True)
    return typer.Exit(code)


def reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn deliberate tsfs errors into one line on stderr and their exit code; Ctrl-C into
    one line and exit 130 (143 for SIGTERM; :func:`interrupted_note` says more where there is
    more to say)."""

    lower = (
        "lower --batch-size or the model's sizes (-c d_model=…)"
        if fn.__module__.endswith(".train")
        else "lower --batch-rows (the rows a worker holds at once) or --jobs"
    )

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            with _terminate_as_interrupt():
                return fn(*args, **kwargs)
        except TsfsError as e:
            raise fail(str(e), e.exit_code) from None
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:
            # The reader went away (`tsfs show prompt ... | head`): not an error of ours.
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
            raise typer.Exit(0) from None
        except OSError as e:
            if os.environ.get("TSFS_DEBUG"):
                raise
            if e.errno in _ENVIRONMENT:
                # The file system said no (permissions, a read-only mount, a full disk) in a
                # place no deliberate check covers: the path and the reason, not a bug report.
                where = f"{e.filename}: " if e.filename else ""
                raise fail(
                    f"{where}{e.strerror}; check that path's permissions and space", 1
                ) from None
            raise _internal(e) from None
        except (MemoryError, RuntimeError) as e:
            if os.environ.get("TSFS_DEBUG"):
                raise
            if isinstance(e, RuntimeError) and "can't allocate memory" not in str(e):
                raise _internal(e) from None  # torch's CPU allocator says it so; others are bugs
            raise fail(f"out of memory ({_allocation(e)}); {lower}, or free memory", 1) from None
        except Exception as e:
            # A bug, not bad input: one line by default, the traceback on request.
            if os.environ.get("TSFS_DEBUG"):
                raise
            raise _internal(e) from None
        except KeyboardInterrupt as e:
            typer.echo("tsfs: interrupted", err=True)
            raise typer.Exit(interrupt_exit_code(e)) from None

    return wrapper


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signum=signum)


def interrupt_exit_code(e: KeyboardInterrupt) -> int:
    """The shell's code for a command stopped by a signal: 128 + its number (130 for Ctrl-C,
    143 for SIGTERM), so that a scheduler or script can tell the two apart."""
    return 128 + (e.signum if isinstance(e, Interrupted) else int(signal.SIGINT))


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a job scheduler's stop) ends a command as Ctrl-C does: worker
    processes are stopped, committed work is kept and the interrupt note says so — rather
    than the process vanishing and leaving its workers behind."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may handle signals
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# errno values that describe the machine, not tsfs: permissions, read-only mounts, full disks.
_ENVIRONMENT = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


def _allocation(e: BaseException) -> str:
    """What failed to be allocated, in a few words (torch's message runs to a paragraph)."""
    asked = re.search(r"tried to allocate (\d+) bytes", str(e))
    if asked:
        return f"an allocation of {human_bytes(int(asked.group(1)))} failed"
    return str(e) or "an allocation failed"


def _internal(e: BaseException) -> typer.Exit:
    return fail(
        f"internal error: {type(e).__name__}: {e} (set TSFS_DEBUG=1 to see the traceback, "
        "and please report it)",
        1,
    )


@contextlib.contextmanager
def interrupted_note(note: str) -> Iterator[None]:
    """Ctrl-C inside: ``tsfs: interrupted; <note>`` (what is kept, how to go on), exit 130
    (143 for SIGTERM)."""
    try:
        yield
    except KeyboardInterrupt as e:
        typer.echo(f"tsfs: interrupted; {note}", err=True)
        raise typer.Exit(interrupt_exit_code(e)) from None


def count_of(n: int, noun: str) -> str:
    """``1 segment``, ``2 segments``, ``1,024 rows``."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def echo_json(obj: Any) -> None:
    sys.stdout.write(strict_json(obj, indent=2, default=str) + "\n")
