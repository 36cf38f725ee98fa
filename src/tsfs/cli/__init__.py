"""The ``tsfs`` command line (:mod:`tsfs.cli.main`)."""

import os
import sys

__all__ = ["main"]

# Ctrl-C stops prep's worker processes mid-batch, which leaves the lock numcodecs makes at
# import to multiprocessing's resource tracker: it frees the lock, then warns of "leaked
# semaphore objects" — a message that would only alarm a user whose store is fine. The
# tracker is a process of its own that takes its warning filters from the environment.
_QUIET_TRACKER = "ignore:resource_tracker:UserWarning"
if _QUIET_TRACKER not in os.environ.get("PYTHONWARNINGS", ""):
    os.environ["PYTHONWARNINGS"] = ",".join(
        w for w in (os.environ.get("PYTHONWARNINGS"), _QUIET_TRACKER) if w
    )


def main() -> None:
    """The ``tsfs`` executable: the Typer app, with Ctrl-C during start-up handled too.

    Importing the commands (torch, numpy, zarr) takes a second or more; a Ctrl-C in that time
    would otherwise end in a traceback of import machinery rather than the one line every
    command prints when interrupted.
    """
    try:
        from tsfs.cli.main import app

        # Commands turn Ctrl-C into this same line themselves; this covers the moments
        # before one runs (option parsing, its own imports).
        app(prog_name="tsfs")
    except KeyboardInterrupt:
        print("tsfs: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
