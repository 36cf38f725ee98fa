"""Disk and time budgets before any work: what a prep run will write, and how long it takes.

The prediction is built from the run's real plan (every row hashed, duplicates and rows already
in the store removed, batches cut exactly as prep cuts them) and from a real sample: a few
contiguous stretches of rows are computed and written as a segment into a scratch store with
the same codecs and chunking. Uncompressed arrays then have exact sizes (rows × bytes per row +
a checksum per chunk); compressed arrays use the sample's measured bytes per row; metadata and
commit records use the sample's measured sizes. Time is the sample's compute and write rate,
spread over the worker processes.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tsfs.errors import BudgetError
from tsfs.pipeline.execute import Batch, RowPlan
from tsfs.stores.store import Codec, Namespace, Store, chunk_rows_for
from tsfs.units import human_bytes

__all__ = ["Estimate", "check_budget", "estimate", "free_bytes", "upper_bound_bytes"]


def free_bytes(store: Store) -> int | None:
    """Free bytes on the file system that holds ``store`` (or its nearest existing parent);
    None for an object store, which has no free space to run out of."""
    if not store.local:
        return None
    p = store.path.absolute()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


# A file system block: the unit a file's size is rounded up to on disk (ext4, xfs, tmpfs).
_BLOCK_BYTES = 4096


@dataclass(frozen=True, kw_only=True)
class Estimate:
    """A prediction of one prep run. Sizes in bytes, time in seconds."""

    kind: str
    namespace: str
    windows: dict[str, int]
    rows_total: int
    rows_unique: int
    rows_present: int
    rows_missing: int
    segments: int
    bytes_uncompressed: int
    bytes_on_disk: int
    files: int
    seconds: float
    jobs: int  # worker processes the run starts (1: this process computes)
    threads: int  # threads that one process computes with
    free_bytes: int | None  # None: an object store, with no free space to run out of
    budget_bytes: int | None
    sample_rows: int
    # directories the run makes (a segment's, each array's, its chunk rows'): on most file
    # systems a block each, which a run of many small segments runs out of first
    directories: int = 0
    alternatives: list[dict[str, Any]] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.rows_missing == 0:
            return "nothing to do"
        if self.free_bytes is not None and self.disk_bytes_bound > self.free_bytes:
            return "does not fit the free space"
        if self.budget_bytes is not None and self.bytes_on_disk > self.budget_bytes:
            return "over budget"
        return "ok"

    @property
    def disk_bytes_bound(self) -> int:
        """What the files may take of a disk: each file takes whole blocks, so up to one more
        block than its bytes (for small files, what free space runs out of first), and each
        directory a block."""
        return self.bytes_on_disk + (self.files + self.directories) * _BLOCK_BYTES

    @property
    def fits(self) -> bool:
        return self.verdict in ("ok", "nothing to do")

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["verdict"] = self.verdict
        return d


@dataclass(frozen=True, kw_only=True)
class _Sample:
    """What one sample segment measured."""

    rows: int
    compute_s: float
    write_s: float
    commit_bytes_fixed: int
    meta_bytes: dict[str, int]  # per array: its zarr.json
    group_bytes: int
    compressed_per_row: dict[str, float]  # compressed arrays: bytes per row (checksums out)
    row_bytes: dict[str, int]
    row_ndim: dict[str, int]  # dimensions of each array (rows included)
    namespace_bytes: int


def _sample_batches(plan: RowPlan, sample_rows: int, stretches: int) -> list[Batch]:
    """``stretches`` contiguous stretches of the plan's rows, ``sample_rows`` in all, spread
    evenly over the whole plan (rows differ in how well they compress: an even spread is
    what keeps the estimate unbiased), none longer than a typical batch."""
    if not plan.batches:
        return []
    if stretches == 1:  # one whole batch, as prep computes it (a call's cost has a fixed part)
        return [plan.batches[len(plan.batches) // 2]]
    typical = int(np.median([b.n_rows for b in plan.batches]))
    per = max(1, min(typical, sample_rows // max(1, stretches)))
    ends = np.cumsum([b.n_rows for b in plan.batches])
    total = int(ends[-1])
    out = []
    count = max(1, min(stretches, total // per))
    for k in range(count):
        # spread over the whole plan by the stretches taken (fewer than asked for, when the
        # plan is short): dividing by those asked for sampled only its start
        at = int((k + 0.5) * total / count)
        i = int(np.searchsorted(ends, at, side="right"))
        b = plan.batches[min(i, len(plan.batches) - 1)]
        counts = np.cumsum(b.select.sum(axis=1))
        n_win = min(len(b.windows), int(np.searchsorted(counts, per)) + 1)
        first_row = at - (int(ends[i - 1]) if i > 0 else 0)
        start = min(int(np.searchsorted(counts, first_row)), len(b.windows) - n_win)
        w = slice(start, start + n_win)
        sel = b.select[w]
        keys_before = int(b.select[:start].sum())
        out.append(
            Batch(
                block=b.block,
                windows=b.windows[w],
                select=sel,
                keys=b.keys[keys_before : keys_before + int(sel.sum())],
            )
        )
    return out


def _measure(
    namespace: Namespace,
    spec: dict[str, Any],
    batches: list[Batch],
    compute: Callable[[Batch], dict[str, npt.NDArray[Any]]],
    codecs: dict[str, Codec],
) -> _Sample:
    """Compute the sample and write it, stretch by stretch, into a scratch store with the
    real codecs and chunking."""
    t_warm = time.perf_counter()
    compute(batches[0])  # warm-up (imports, FFT plans, renderer): not part of the rate
    warm_s = time.perf_counter() - t_warm
    t0 = time.perf_counter()
    outputs = [compute(b) for b in batches]
    compute_s = time.perf_counter() - t0
    warm_s = max(
        0.0, warm_s - compute_s * batches[0].n_rows / max(1, sum(b.n_rows for b in batches))
    )
    names = list(outputs[0])
    rows = sum(b.n_rows for b in batches)
    scratch = Path(tempfile.mkdtemp(prefix="tsfs-plan-"))
    try:
        store = Store(scratch / "s", mode="a", key=namespace.store.key)
        ns = store.namespace(namespace.kind, spec, namespace.fingerprint)
        ns_bytes = sum(f.stat().st_size for f in ns.path.rglob("*") if f.is_file())
        ns_bytes += (store.path / namespace.kind / "zarr.json").stat().st_size
        t1 = time.perf_counter()
        commits = [
            ns.write_segment(b.keys, o, codecs=codecs, group=b.block.n_variables)
            for b, o in zip(batches, outputs, strict=True)
        ]
        write_s = time.perf_counter() - t1
        commit = commits[0]
        seg_dir = ns.segment_path(commit.segment)
        meta = {n: (seg_dir / n / "zarr.json").stat().st_size for n in ["keys", *names]}
        compressed: dict[str, float] = {}
        for n in names:
            if codecs.get(n, "raw") != "raw":
                total = sum(
                    f.stat().st_size - 4
                    for c in commits
                    for f in (ns.segment_path(c.segment) / n / "c").rglob("*")
                    if f.is_file()
                )
                compressed[n] = total / max(1, rows)
        commit_file = ns.path / "commits" / f"{commit.segment}.json"
        row_bytes = {
            n: int(np.prod(a.shape[1:], dtype=np.int64)) * a.itemsize for n, a in outputs[0].items()
        }
        row_bytes["keys"] = 16
        row_ndim = {n: a.ndim for n, a in outputs[0].items()} | {"keys": 2}
        return _Sample(
            rows=rows,
            compute_s=compute_s,
            write_s=write_s,
            commit_bytes_fixed=commit_file.stat().st_size,
            meta_bytes=meta,
            group_bytes=(seg_dir / "zarr.json").stat().st_size,
            compressed_per_row=compressed,
            row_bytes=row_bytes,
            row_ndim=row_ndim,
            namespace_bytes=ns_bytes,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def estimate(
    *,
    kind: str,
    plan: RowPlan,
    namespace: Namespace,
    spec: dict[str, Any],
    compute: Callable[[Batch], dict[str, npt.NDArray[Any]]],
    codecs: dict[str, Codec],
    jobs: int,
    hash_seconds: float,
    budget_bytes: int | None = None,
    threads: int = 1,
    sample_rows: int = 512,
    stretches: int = 4,
    parallel_startup_s: float = 0.0,
    serial_startup_s: float = 0.0,
) -> Estimate:
    """Predict bytes, files and seconds of running ``plan`` (see the module docstring)."""
    new_namespace = not namespace.exists()
    bytes_unc = files = bytes_disk = directories = 0
    seconds = hash_seconds
    sample_n = 0
    if plan.batches:
        batches = _sample_batches(plan, sample_rows, stretches)
        sample = _measure(namespace, spec, batches, compute, codecs)
        sample_n = sample.rows
        for b in plan.batches:
            r = b.n_rows
            bytes_disk += sample.group_bytes + sample.commit_bytes_fixed
            files += 2  # the segment's zarr.json and its commit record
            directories += 1
            for name, row_b in sample.row_bytes.items():
                cr = chunk_rows_for(r, row_b, b.block.n_variables)
                n_chunks = -(-r // cr)
                bytes_unc += r * row_b
                files += 1 + n_chunks
                # <name>/, <name>/c/, and one per inner level of each chunk's key (c/0/0)
                directories += 2 + n_chunks * (sample.row_ndim[name] - 1)
                bytes_disk += sample.meta_bytes[name] + 4 * n_chunks
                if name in sample.compressed_per_row:
                    bytes_disk += round(r * sample.compressed_per_row[name])
                else:  # Zarr stores the edge chunk at full size
                    bytes_disk += n_chunks * cr * row_b
        if new_namespace:
            bytes_disk += sample.namespace_bytes
            files += 2  # the namespace's and its segments group's zarr.json
            files += not namespace.store.files.exists(f"{namespace.kind}/zarr.json")  # kind's
            files += not namespace.store.files.exists("zarr.json")  # a store made by the run
            directories += 3  # the namespace's, its segments' and its commits'
            directories += not namespace.store.files.exists(namespace.kind)
            directories += not namespace.store.files.exists("zarr.json")
        per_row_compute = sample.compute_s / max(1, sample.rows)
        per_row_write = sample.write_s / max(1, sample.rows)
        cores = os.cpu_count() or 1
        workers = max(1, min(jobs, cores))
        rows = plan.rows_missing
        # Workers write their own segments, so writing spreads over them as computing does.
        seconds += rows * (per_row_compute + per_row_write) / workers
        # Every process asked for starts (imports, a first renderer), and more processes
        # than cores take turns at it.
        seconds += parallel_startup_s * math.ceil(jobs / cores) if workers > 1 else serial_startup_s
    return Estimate(
        kind=kind,
        namespace=f"{namespace.kind}/{namespace.fingerprint}",
        windows=plan.windows,
        rows_total=plan.rows_total,
        rows_unique=plan.rows_unique,
        rows_present=plan.rows_present,
        rows_missing=plan.rows_missing,
        segments=len(plan.batches),
        bytes_uncompressed=bytes_unc,
        bytes_on_disk=bytes_disk,
        files=files,
        seconds=seconds,
        jobs=jobs,
        threads=threads,
        free_bytes=free_bytes(namespace.store),
        budget_bytes=budget_bytes,
        sample_rows=sample_n,
        directories=directories,
    )


def upper_bound_bytes(plan: RowPlan, row_bytes: dict[str, int]) -> int:
    """A cheap bound on what ``plan`` writes: every array stored uncompressed, edge chunks
    padded, compression allowed to expand by 1%, and generous metadata per segment.

    Prep checks this first and samples a real estimate only when the bound does not fit.
    """
    total = 0
    for b in plan.batches:
        r = b.n_rows
        total += 16 * 1024  # group, commit record, and slack
        for rb in [*row_bytes.values(), 16]:
            cr = chunk_rows_for(r, rb, b.block.n_variables)
            n_chunks = -(-r // cr)
            total += int(n_chunks * cr * rb * 1.01) + n_chunks * (64 + _BLOCK_BYTES) + 2048
    return total


def check_budget(est: Estimate) -> None:
    """Refuse a run predicted not to fit (prep calls this before writing anything)."""
    if est.fits:
        return
    where = (
        f"the {human_bytes(est.free_bytes or 0)} free"
        if est.verdict == "does not fit the free space"
        else f"the budget of {human_bytes(est.budget_bytes or 0)}"
    )
    raise BudgetError(
        f"this run would write about {human_bytes(est.bytes_on_disk)}, more than {where}; "
        "see `tsfs plan` for cheaper settings, or pass --force to run anyway"
    )
