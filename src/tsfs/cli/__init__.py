"""The ``tsfs`` command line (:mod:`tsfs.cli.main`)."""

import os

# Ctrl-C stops prep's worker processes mid-batch, which leaves the lock numcodecs makes at
# import to multiprocessing's resource tracker: it frees the lock, then warns of "leaked
# semaphore objects" — a message that would only alarm a user whose store is fine. The
# tracker is a process of its own that takes its warning filters from the environment.
_QUIET_TRACKER = "ignore:resource_tracker:UserWarning"
if _QUIET_TRACKER not in os.environ.get("PYTHONWARNINGS", ""):
    os.environ["PYTHONWARNINGS"] = ",".join(
        w for w in (os.environ.get("PYTHONWARNINGS"), _QUIET_TRACKER) if w
    )
