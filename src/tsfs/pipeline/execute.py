"""Batched, resumable execution of a per-row computation into a store namespace.

The plan of a run is pure arithmetic on keys: hash every row of every window (no copies: rows
are hashed straight out of the series), keep the first occurrence of each distinct key, drop
the keys the namespace already holds, and cut what is left into batches. Each batch is computed
and written as one segment by one writer, so a crash or Ctrl-C loses at most the batches in
flight, and re-running the same command resumes where it stopped. Batches run in this process,
in joblib worker processes on this machine's cores, or as tasks on a Dask cluster.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from tsfs.errors import InputError, StoreAccessError, WorkerError
from tsfs.pipeline.hashing import KEY_BYTES, key_order, row_keys, window_keys
from tsfs.stores.store import Codec, Namespace

__all__ = [
    "EXECUTORS",
    "Batch",
    "Block",
    "Executor",
    "PrepReport",
    "RowPlan",
    "plan_rows",
    "run_batches",
]


@dataclass(frozen=True, kw_only=True)
class Block:
    """Rows of one split, in one of two shapes.

    Either ``series`` (L, V) with window ``starts`` (N,) of length ``seq_len`` — overlapping
    windows of one long series, hashed and computed without materialising them — or
    ``samples`` (N, T, V) of independent windows (classification data).
    """

    name: str
    seq_len: int
    series: npt.NDArray[np.float32] | None = None
    starts: npt.NDArray[np.int64] | None = None
    samples: npt.NDArray[np.float32] | None = None

    @property
    def n_windows(self) -> int:
        if self.samples is not None:
            return len(self.samples)
        assert self.starts is not None
        return len(self.starts)

    @property
    def n_variables(self) -> int:
        arr = self.samples if self.samples is not None else self.series
        assert arr is not None
        return int(arr.shape[-1])

    def keys(self, algorithm: str) -> npt.NDArray[np.uint8]:
        """(N, V, 16) keys of every row of every window."""
        if self.samples is not None:
            n, t, v = self.samples.shape
            rows = np.ascontiguousarray(self.samples.transpose(0, 2, 1)).reshape(n * v, t)
            return row_keys(rows, algorithm).reshape(n, v, KEY_BYTES)
        assert self.series is not None
        assert self.starts is not None
        return window_keys(self.series, self.starts, self.seq_len, algorithm)

    def rows(
        self, windows: npt.NDArray[np.int64], variables: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        """(R, T) float32 rows ``(windows[r], variables[r])``."""
        if self.samples is not None:
            return np.ascontiguousarray(self.samples[windows, :, variables], dtype=np.float32)
        assert self.series is not None
        assert self.starts is not None
        idx = self.starts[windows][:, None] + np.arange(self.seq_len)
        return np.ascontiguousarray(self.series[idx, variables[:, None]], dtype=np.float32)


@dataclass(frozen=True, kw_only=True)
class Batch:
    """Rows to compute together and write as one segment: all from one block.

    ``windows`` (n,) lists the windows touched, ascending; ``select`` (n, V) marks the rows of
    those windows to store (first occurrences of keys the namespace lacks); ``keys`` (R, 16)
    are the selected rows' keys in window-major order.
    """

    block: Block
    windows: npt.NDArray[np.int64]
    select: npt.NDArray[np.bool_]
    keys: npt.NDArray[np.uint8]

    @property
    def n_rows(self) -> int:
        return len(self.keys)


@dataclass(frozen=True, kw_only=True)
class RowPlan:
    """What a run must do: counts, and the batches of missing rows."""

    windows: dict[str, int]
    rows_total: int
    rows_unique: int
    rows_present: int
    batches: list[Batch]

    @property
    def rows_missing(self) -> int:
        return sum(b.n_rows for b in self.batches)


def _first_occurrence(keys: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """(M,) mask of the first occurrence of each distinct (M, 16) key."""
    k = np.ascontiguousarray(keys).reshape(-1, KEY_BYTES)
    hi = k[:, :8].copy().view("<u8").ravel()
    lo = k[:, 8:].copy().view("<u8").ravel()
    order = key_order(hi, lo)  # stable: each key's first occurrence comes first
    ordered_hi, ordered_lo = hi[order], lo[order]
    new = np.ones(len(k), dtype=bool)
    new[1:] = (ordered_hi[1:] != ordered_hi[:-1]) | (ordered_lo[1:] != ordered_lo[:-1])
    first = np.zeros(len(k), dtype=bool)
    first[order[new]] = True
    return first


def plan_rows(
    blocks: Sequence[Block],
    namespace: Namespace | None,
    *,
    key_algorithm: str,
    batch_rows: int,
    min_batches: int | Callable[[int], int] = 1,
) -> RowPlan:
    """Hash every row, de-duplicate, look up the namespace, and cut batches of missing rows.

    Batches hold at most about ``batch_rows`` rows (cut on window boundaries), and a block's
    batches are of equal size. With ``min_batches`` above 1 (parallel workers), their number
    is a multiple of it, so that workers taking the next batch as they finish also finish
    together; no batch is then cut below 64 rows. ``min_batches`` may be a function of the
    number of rows to compute.
    """
    all_keys = [b.keys(key_algorithm) for b in blocks]
    flat = (
        np.concatenate([k.reshape(-1, KEY_BYTES) for k in all_keys])
        if all_keys
        else np.empty((0, KEY_BYTES), np.uint8)
    )
    first = _first_occurrence(flat)
    present = namespace.lookup(flat).found if namespace is not None else np.zeros(len(flat), bool)
    todo = first & ~present
    missing = int(todo.sum())
    least = max(1, min_batches(missing) if callable(min_batches) else min_batches)
    if least > 1:  # workers share the batches: one short last one left a core idle ~5%
        count = -(-max(least, -(-missing // max(1, batch_rows))) // least) * least
        batch_rows = max(1, min(batch_rows, max(64, -(-missing // count))))
    batches: list[Batch] = []
    offset = 0
    for block, keys in zip(blocks, all_keys, strict=True):
        n, v = keys.shape[:2]
        sel = todo[offset : offset + n * v].reshape(n, v)
        offset += n * v
        windows = np.flatnonzero(sel.any(axis=1))
        if not len(windows):
            continue
        # Cut on window boundaries into equal batches of at most about `batch_rows` rows.
        counts = np.cumsum(sel[windows].sum(axis=1))
        parts = -(-int(counts[-1]) // batch_rows)
        cuts = np.searchsorted(counts, np.arange(1, parts) * (counts[-1] / parts), "right")
        for w in np.split(windows, cuts):
            if len(w):
                s = sel[w]
                batches.append(Batch(block=block, windows=w, select=s, keys=keys[w][s]))
    return RowPlan(
        windows={b.name: b.n_windows for b in blocks},
        rows_total=len(flat),
        rows_unique=int(first.sum()),
        rows_present=int((first & present).sum()),
        batches=batches,
    )


@dataclass(frozen=True, kw_only=True)
class PrepReport:
    """The closing summary of a prep run (JSON-able via :meth:`to_dict`)."""

    namespace: str
    windows: dict[str, int]
    rows_total: int
    rows_unique: int
    rows_reused: int
    rows_computed: int
    segments_written: int
    bytes_written: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


ComputeFn = Callable[[Batch], dict[str, npt.NDArray[Any]]]


def _compute_and_commit(
    store: str,
    kind: str,
    fingerprint: str,
    batch: Batch,
    compute: ComputeFn,
    codecs: dict[str, Codec],
) -> tuple[int, int]:
    """One unit of work, run in whichever process: compute a batch, write and commit it."""
    from tsfs.stores.store import Store

    try:
        # never a store of its own: rows written there would be lost to the run's store
        opened = Store(store, mode="a", create=False)
    except InputError:
        raise StoreAccessError(
            f"a worker on {socket.gethostname()} finds no store at {store}: every worker must "
            "reach the run's store; give a URL (s3://…) or a path on a shared file system"
        ) from None
    namespace = Namespace(opened, kind, fingerprint)
    commit = namespace.write_segment(
        batch.keys, compute(batch), codecs=codecs, group=batch.block.n_variables
    )
    # the segment's files and its commit record: what this batch added to the store
    return batch.n_rows, namespace.segment_bytes(commit.segment) + len(commit.to_json())


def _compute_and_commit_parts(
    store: str,
    kind: str,
    fingerprint: str,
    block: Block,
    windows: npt.NDArray[np.int64],
    select: npt.NDArray[np.bool_],
    keys: npt.NDArray[np.uint8],
    compute: ComputeFn,
    codecs: dict[str, Codec],
) -> tuple[int, int]:
    """:func:`_compute_and_commit` of a batch sent in parts, so that its block (the whole
    series) can be sent to the cluster once and shared by every batch cut from it."""
    batch = Batch(block=block, windows=windows, select=select, keys=keys)
    return _compute_and_commit(store, kind, fingerprint, batch, compute, codecs)


Executor = Literal["local", "dask"]
EXECUTORS: tuple[str, ...] = ("local", "dask")


def _on_dask(
    plan: RowPlan,
    args: tuple[str, str, str],
    compute: ComputeFn,
    codecs: dict[str, Codec],
    *,
    scheduler: str | None,
    workers: int,
) -> Iterator[tuple[int, int]]:
    """Each batch as one Dask task, results as they complete (a small tuple each).

    Connects to the cluster at ``scheduler``, or starts a LocalCluster of ``workers``
    single-threaded processes (threads on top of processes oversubscribe the cores). The
    cluster retries the tasks of a worker that dies on another worker; a task cut short leaves
    at most an uncommitted segment, which readers never see and ``gc`` removes.
    """
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as e:
        raise InputError(
            "--executor dask needs Dask's distributed scheduler: pip install 'tsfs[dask]'"
        ) from e
    dask_log = logging.getLogger("distributed")
    level = dask_log.level
    try:
        with contextlib.ExitStack() as stack:
            if scheduler is None:
                # Its worker processes start with SIGINT blocked, and log errors only: a Ctrl-C
                # (it reaches the terminal's whole process group) printed a traceback from each
                # worker and a warning per task cancelled before tsfs's one line.
                with _ctrl_c_for_this_process_only():
                    cluster = stack.enter_context(
                        LocalCluster(
                            n_workers=max(1, workers),
                            threads_per_worker=1,
                            processes=True,
                            dashboard_address=None,
                            # its HTTP server (health, metrics) on a free loopback port: on 8787,
                            # taken by another cluster, it warned
                            scheduler_kwargs={
                                "dashboard": False,
                                "dashboard_address": "127.0.0.1:0",
                            },
                            silence_logs=logging.ERROR,
                        )
                    )
                client = stack.enter_context(Client(cluster))
            else:
                client = stack.enter_context(_connect(Client, scheduler))
            blocks: dict[int, Any] = {}
            for b in plan.batches:
                if id(b.block) not in blocks:
                    # On every worker: scattered data cannot be recomputed, so a copy held by one
                    # worker alone dies with it, and with it every task still to read it.
                    blocks[id(b.block)] = client.scatter(b.block, hash=False, broadcast=True)
            futures = [
                client.submit(
                    _compute_and_commit_parts,
                    *args,
                    blocks[id(b.block)],
                    b.windows,
                    b.select,
                    b.keys,
                    compute,
                    codecs,
                    pure=False,
                )
                for b in plan.batches
            ]
            try:
                for future in as_completed(futures):
                    yield future.result()
            except BaseException:
                # Stopped (Ctrl-C, a failed batch): the scheduler logs an error for each result
                # the cancellation cuts short, before tsfs's own line says what happened.
                dask_log.setLevel(logging.CRITICAL)
                raise
            finally:
                client.cancel(futures)
    finally:
        dask_log.setLevel(level)  # once a local cluster, and its scheduler, are closed


# How long a client waits for a scheduler that does not answer.
_CONNECT_TIMEOUT_S = 10


def _connect(client: Any, scheduler: str) -> Any:
    """A Dask ``Client`` of ``scheduler``, or a one-line error within the connect timeout.

    Client's own timeout covers the TCP connection, not the handshake after it: a port that
    answers with something else (a dashboard's HTTP) kept it waiting for good, or made it
    read a reply as a message length (an allocation of exabytes). The connection is made on
    a thread given the timeout, and any failure names the address.
    """
    made: dict[str, Any] = {}

    def connect() -> None:
        try:
            made["client"] = client(scheduler, timeout=_CONNECT_TIMEOUT_S)
        except BaseException as e:  # reported below, naming the address
            made["error"] = e

    thread = threading.Thread(target=connect, name="tsfs-dask-connect", daemon=True)
    thread.start()
    thread.join(_CONNECT_TIMEOUT_S + 5)
    hint = (
        "check --scheduler: the scheduler's own port (tcp://host:8786), not its dashboard's, "
        "and that `dask scheduler` runs there"
    )
    if thread.is_alive():
        raise InputError(
            f"the Dask scheduler at {scheduler} did not answer within "
            f"{_CONNECT_TIMEOUT_S + 5} s; {hint}"
        )
    if "error" in made:
        e = made["error"]
        raise InputError(
            f"cannot reach the Dask scheduler at {scheduler} ({type(e).__name__}: {e}); {hint}"
        ) from None
    return made["client"]


@contextlib.contextmanager
def _ctrl_c_for_this_process_only() -> Iterator[None]:
    """Start worker processes with SIGINT blocked: the mask passes through fork and exec.

    A Ctrl-C goes to the terminal's whole process group; workers still importing would each
    print a KeyboardInterrupt traceback (Dask's, a CancelledError one). This process alone
    handles it (joblib, or closing the Dask cluster, then stops the workers). A Ctrl-C while
    the pool starts waits for the mask to lift, then arrives. Threads started meanwhile
    (Dask's event loop) keep SIGINT blocked: Python runs signal handlers in the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # The resource trackers' start-up unblocks SIGINT in this thread once it has spawned them
    # (they shield only themselves), so they are started first.
    from multiprocessing import resource_tracker

    from joblib.externals.loky.backend import resource_tracker as loky_tracker

    resource_tracker.ensure_running()
    loky_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _watch_parent(parent: int) -> None:
    """In each worker process: exit once ``parent``, the process that started it, is gone.

    A parent killed outright (SIGKILL, the OOM killer) cannot stop its workers, and loky's
    idle workers would otherwise wait on for good, re-parented to init. The pid comes from
    the parent: one killed while this worker was still starting is gone already.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="tsfs-parent-watch", daemon=True).start()


_PARENT_POLL_S = 0.5


def run_batches(
    plan: RowPlan,
    namespace: Namespace,
    compute: ComputeFn,
    *,
    codecs: dict[str, Codec],
    jobs: int = 1,
    executor: Executor = "local",
    scheduler: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Compute every batch of ``plan`` and commit each as its own segment.

    ``executor="local"``: with ``jobs > 1`` batches run in joblib worker processes of this
    machine. ``executor="dask"``: batches run as tasks on the Dask cluster at ``scheduler``
    (``tcp://host:8786``), or on a LocalCluster of ``jobs`` processes when it is None; the
    store must then be one every worker reaches (a URL such as ``s3://bucket/store``, or a
    shared file system). Either way each worker writes and commits its own segments and
    only a row count and a byte count travel back. ``compute`` must be picklable (a
    module-level function or a ``functools.partial`` of one). Returns (segments, bytes
    written).
    """
    # Workers elsewhere (a Dask worker started in another directory) find a local store by
    # its absolute path; a relative one named a new store in their own directory.
    args = (namespace.store.files.address, namespace.kind, namespace.fingerprint)
    results: Iterator[tuple[int, int]]
    died: tuple[type[BaseException], ...] = ()  # what a worker's death raises here
    if executor == "dask":
        from concurrent.futures import CancelledError

        with contextlib.suppress(ImportError):  # without Dask, _on_dask says what to install
            from distributed import KilledWorker

            # a task whose workers kept dying; every task, once the whole cluster is gone
            died = (KilledWorker, CancelledError)
        results = (
            _on_dask(plan, args, compute, codecs, scheduler=scheduler, workers=jobs)
            if plan.batches
            else iter(())
        )
    elif jobs <= 1 or len(plan.batches) <= 1:
        results = (_compute_and_commit(*args, b, compute, codecs) for b in plan.batches)
    else:
        from joblib import Parallel, delayed, parallel_config
        from joblib.externals.loky.process_executor import TerminatedWorkerError

        died = (TerminatedWorkerError,)

        with (
            _ctrl_c_for_this_process_only(),
            parallel_config(backend="loky", initializer=_watch_parent, initargs=(os.getpid(),)),
        ):
            results = Parallel(n_jobs=jobs, return_as="generator_unordered")(
                delayed(_compute_and_commit)(*args, b, compute, codecs) for b in plan.batches
            )
    segments = written = 0
    try:
        for rows, nbytes in results:
            segments += 1
            written += nbytes
            if progress is not None:
                progress(rows)
    except died as e:
        codes = re.search(r"exit codes of the workers are \{([^}]*)\}", str(e))
        raise WorkerError(
            f"a worker process died ({codes.group(1) if codes else 'killed'}): stopped from "
            "outside, or by the system for lack of memory (then lower --jobs or --batch-rows). "
            "Every segment committed before is kept; re-running resumes"
        ) from None
    return segments, written
