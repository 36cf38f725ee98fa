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
    """The ``tsfs`` executable: the Typer app, with Ctrl-C during start-up handled too, and
    option errors on one line as every other error.

    Importing the commands (torch, numpy, zarr) takes a second or more; a Ctrl-C in that time
    would otherwise end in a traceback of import machinery rather than the one line every
    command prints when interrupted.
    """
    try:
        from tsfs.cli.main import app

        try:
            # Not standalone: click's own errors come back here to be printed as every
            # tsfs error is, on one line, instead of in a usage box.
            code = app(prog_name="tsfs", standalone_mode=False)
        except Exception as e:
            # By name: newer Typers vendor click, so its classes are not click's.
            kinds = {c.__name__ for c in type(e).__mro__}
            if "Abort" in kinds:
                code = 1
            elif "ClickException" not in kinds:
                raise
            elif "NoArgsIsHelpError" in kinds:  # a bare `tsfs prep`: its help
                # Typer's rich help prints itself while the error is made; plain click's is
                # the error's message.
                text = e.format_message()  # type: ignore[attr-defined]
                if text.strip():
                    print(text)
                code = e.exit_code  # type: ignore[attr-defined]
            else:
                message = " ".join(e.format_message().split())  # type: ignore[attr-defined]
                context = getattr(e, "ctx", None)
                see = f" (see `{context.command_path} --help`)" if context is not None else ""
                print(f"tsfs: error: {message}{see}", file=sys.stderr)
                code = e.exit_code  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        # Commands turn Ctrl-C into this same line themselves; this covers the moments
        # before one runs (imports, option parsing).
        print("tsfs: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code)
