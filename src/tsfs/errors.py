"""One error hierarchy for tsfs.

Every error tsfs raises on purpose is a :class:`TsfsError`. Each subclass also subclasses the
builtin that a caller would naturally catch (``ValueError``, ``OSError``, ``KeyError`` …), so
library users can catch either. The CLI turns any :class:`TsfsError` into one line on stderr and
the subclass's ``exit_code`` — never a traceback.
"""

from __future__ import annotations

import signal

__all__ = [
    "BudgetError",
    "DataError",
    "InputError",
    "Interrupted",
    "MissingRowsError",
    "OutputError",
    "RowsTooShortError",
    "StoreAccessError",
    "StoreCorruptError",
    "StoreError",
    "StoreFormatError",
    "StoreReadOnlyError",
    "TsfsError",
    "WorkerError",
]


class TsfsError(Exception):
    """Base of every deliberate tsfs error. ``exit_code`` is what the CLI exits with."""

    exit_code: int = 2


class InputError(TsfsError, ValueError):
    """A bad option or argument: names the option and how to fix it."""


class DataError(InputError):
    """A data file that cannot be used: names the file, and the row/column where it applies."""


class RowsTooShortError(InputError):
    """Rows too short for what a spec computes from them (lags, a wavelet level, a line)."""


class StoreError(TsfsError):
    """A problem with a store's disk, files or state: full, unreadable, changed by another
    process under a running command. The subclasses that exit 2 name what the caller chose:
    a store this version cannot read, one it cannot reach or write, rows it lacks."""

    exit_code = 1


class StoreFormatError(StoreError, ValueError):
    """A store (or something in it) that this version cannot read: newer format, bad names."""

    exit_code = 2


class StoreAccessError(StoreError, PermissionError):
    """A store that cannot be reached as named: no credentials, no such bucket, not a local
    directory where one is needed."""

    exit_code = 2


class StoreReadOnlyError(StoreAccessError):
    """A store opened for writing that cannot be written."""


class StoreCorruptError(StoreError, OSError):
    """A chunk or record whose checksum or structure is wrong; names the file."""

    exit_code = 1


class MissingRowsError(StoreError, KeyError):
    """Rows asked for are not in the store; the message names the command that fills them."""

    exit_code = 2

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BudgetError(TsfsError):
    """A run predicted to exceed the disk budget or the free space."""

    exit_code = 1


class OutputError(TsfsError, OSError):
    """An output that could not be written (a training run's checkpoint, metrics or plot, a
    contact sheet); names the file and says what was kept."""

    exit_code = 1


class WorkerError(TsfsError, RuntimeError):
    """A worker process died under a run (killed, e.g. for memory): not a fault in the data
    or in tsfs; what was committed before is kept."""

    exit_code = 1


class Interrupted(KeyboardInterrupt):
    """A stop asked for by a signal: Ctrl-C (SIGINT) or ``kill`` (SIGTERM, which the CLI turns
    into an interrupt so that every Ctrl-C path handles it too). A ``KeyboardInterrupt``, so
    code that cleans up after Ctrl-C cleans up after either.

    Attributes:
        signum: the signal; the CLI exits with ``128 + signum`` (130, or 143 for SIGTERM), as
            a shell reports a process the signal stopped.
    """

    def __init__(self, *args: object, signum: int = signal.SIGINT) -> None:
        super().__init__(*args)
        self.signum = int(signum)
