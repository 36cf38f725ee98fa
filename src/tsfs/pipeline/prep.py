"""`prep` and `plan`: compute what a store lacks for a data set — or predict what that costs.

:func:`prep_features` and :func:`prep_images` are what the ``tsfs prep`` commands call;
:func:`plan_features` and :func:`plan_images` are ``tsfs plan``. All four share one job
description per kind (namespace, codecs, how a batch is computed), so a plan measures exactly
the computation and layout that prep then performs.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from tsfs._buffers import Recycler
from tsfs.errors import InputError, RowsTooShortError, StoreReadOnlyError
from tsfs.pipeline.execute import (
    EXECUTORS,
    Batch,
    Block,
    Executor,
    PrepReport,
    RowPlan,
    plan_rows,
    run_batches,
)
from tsfs.pipeline.normalize import revin
from tsfs.pipeline.plan import Estimate, check_budget, estimate, free_bytes, upper_bound_bytes
from tsfs.pipeline.windows import Dataset
from tsfs.specs import FeatureSpec, ImageSpec, is_integer
from tsfs.stores.store import Codec, Namespace, Store

__all__ = [
    "cheaper_settings",
    "check_rows",
    "dataset_blocks",
    "features_namespace",
    "images_namespace",
    "plan_features",
    "plan_images",
    "prep_features",
    "prep_images",
    "resolve_features",
]

ComputeFn = Callable[[Batch], dict[str, npt.NDArray[Any]]]
_RowType = tuple[tuple[int, ...], np.dtype[Any]]


def dataset_blocks(dataset: Dataset) -> list[Block]:
    """One :class:`Block` per split: overlapping windows of the split's series, or samples."""
    blocks = []
    for name, split in dataset.splits.items():
        seq_len = int(split.x.shape[1])
        if split.series is not None:
            starts = np.asarray(split.starts, dtype=np.int64)
            blocks.append(
                Block(name=name, seq_len=seq_len, series=split.series, starts=starts - starts[0])
            )
        else:
            blocks.append(Block(name=name, seq_len=seq_len, samples=split.x))
    return blocks


def check_rows(dataset: Dataset, spec: FeatureSpec | ImageSpec) -> None:
    """Refuse settings the data set's rows cannot take (``InputError``), before any store
    changes: e.g. a DWT level above the maximum for the rows' length.

    ``prep_*`` call it first; a caller that creates a store for the run calls it before that.
    """
    for length in _row_lengths(dataset):
        # the output schema for this length: raises for what these rows cannot take
        try:
            if isinstance(spec, FeatureSpec):
                _feature_rows(spec, length)
            else:
                _image_rows(spec, length)
        except RowsTooShortError as error:
            raise RowsTooShortError(f"{error} ({_longer_rows(dataset)})") from None


def _longer_rows(dataset: Dataset) -> str:
    """How rows of this data set get longer: the fix a too-short error names."""
    if dataset.preset == "uea":
        if dataset.spec.unequal == "truncate":
            return "--unequal pad keeps every sample's full length"
        return f"these are the samples' own length in {dataset.path.name}"
    if dataset.preset == "array":
        return f"the T axis of {dataset.path.name}'s (N, T, V) samples"
    return "a longer --seq-len"


def resolve_features(dataset: Dataset, spec: FeatureSpec) -> FeatureSpec:
    """``spec`` with its level resolved for the data set's rows (``level=None`` means
    ``min(3, maximum)`` for the rows' length).

    A features namespace is named by the resolved spec: rows of every length in it have the
    same bands, and ``--level 3`` and the default name the same namespace where they compute
    the same thing.

    Raises:
        InputError: splits of different row lengths would resolve to different levels.
    """
    from tsfs.pipeline.dwt import resolve_level

    levels = {length: resolve_level(spec, length) for length in _row_lengths(dataset)}
    if len(set(levels.values())) > 1:
        shown = ", ".join(f"level {lv} for length {n}" for n, lv in sorted(levels.items()))
        raise InputError(
            f"the rows of {dataset.path.name} have different lengths that resolve the default "
            f"DWT level differently ({shown}); give one with --level"
        )
    return replace(spec, level=next(iter(levels.values()))) if levels else spec


def _row_lengths(dataset: Dataset) -> list[int]:
    return sorted({int(split.x.shape[1]) for split in dataset.splits.values()})


def features_namespace(store: Store, spec: FeatureSpec) -> Namespace:
    return store.namespace("features", spec.to_dict(), spec.fingerprint)


def images_namespace(store: Store, spec: ImageSpec) -> Namespace:
    return store.namespace("images", spec.to_dict(), spec.fingerprint)


# --------------------------------------------------------------------------------------------
# how each kind computes a batch


def _feature_batch(
    spec: FeatureSpec, device: str, batch: Batch, *, threads: int = 1
) -> dict[str, npt.NDArray[Any]]:
    """Features of a batch's selected rows, (R, ...) in the batch's key order."""
    from tsfs.pipeline.features import compute_rows, compute_windows

    block = batch.block
    if block.series is not None and block.starts is not None and device == "cpu":
        out = compute_windows(
            block.series,
            seq_len=block.seq_len,
            starts=block.starts[batch.windows],
            spec=spec,
            threads=threads,
        )
        return {k: np.ascontiguousarray(v[batch.select]) for k, v in out.items()}
    w, v = np.nonzero(batch.select)
    # On the CPU, PyWavelets' transform is ~15x faster than ptwt's; torch only for a GPU.
    return compute_rows(
        block.rows(batch.windows[w], v), spec, device=None if device == "cpu" else device
    )


def _threaded_features(spec: FeatureSpec, device: str, threads: int) -> ComputeFn:
    return functools.partial(_feature_batch, spec, device, threads=threads)


@dataclass(frozen=True, kw_only=True)
class _Job:
    """One prep run's parts: where it writes, how it encodes, how it computes."""

    store: Store
    kind: str
    spec: dict[str, Any]
    fingerprint: str
    codecs: dict[str, Codec]
    # Computes one batch; picklable, so joblib workers can run it.
    compute: ComputeFn
    # Rows per batch (one segment each) when the caller gives none.
    batch_rows: int
    # row length → (trailing shape, dtype) of each output row
    rows: Callable[[int], dict[str, _RowType]]
    # Seconds worker processes take to start (import, first renderer) before their first batch,
    # and what the one process's first batch costs beyond later ones when it computes alone
    # (measured here: 0.12-0.2 s for features and images alike; the modules themselves are
    # imported by check_rows, before a run's clock starts).
    parallel_startup_s: float = 1.0
    serial_startup_s: float = 0.15
    # Below this many rows to compute, one process is faster than paying that start-up.
    parallel_min_rows: int = 0
    # Rows to sample when planning, in how many contiguous stretches: features are computed
    # per stretch of windows, so their sample must be long enough to show the real rate.
    sample_rows: int = 512
    sample_stretches: int = 8
    # threads → `compute` using that many threads, for one process computing alone
    threaded: Callable[[int], ComputeFn] | None = None

    def row_bytes(self, length: int) -> dict[str, int]:
        """Uncompressed bytes of each output's row, for rows of ``length`` values."""
        return {
            name: int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            for name, (shape, dtype) in self.rows(length).items()
        }

    def compute_for(self, workers: int, jobs: int) -> ComputeFn:
        """The compute of a run on ``workers`` processes where ``jobs`` were asked for."""
        if self.threaded is not None and workers == 1 and jobs > 1:
            return self.threaded(jobs)
        return self.compute

    def namespace(self, *, create: bool) -> Namespace:
        if create:
            return self.store.namespace(self.kind, self.spec, self.fingerprint)
        return Namespace(self.store, self.kind, self.fingerprint)


def _feature_rows(spec: FeatureSpec, length: int) -> dict[str, _RowType]:
    from tsfs.pipeline.features import feature_schema

    return feature_schema(spec, length)


def _features_job(store: Store, spec: FeatureSpec, device: str) -> _Job:
    return _Job(
        store=store,
        kind="features",
        spec=spec.to_dict(),
        fingerprint=spec.fingerprint,
        codecs={},
        compute=functools.partial(_feature_batch, spec, device),
        batch_rows=_FEATURE_BATCH_ROWS,
        rows=functools.partial(_feature_rows, spec),
        # Worker processes start and import the feature code before their first batch, and one
        # process computes ~150k rows/s: a second one pays off from about a million rows
        # (measured: 2 workers on ETTh1 T=512's 95k rows run at 0.6x of one process).
        parallel_startup_s=2.0,
        parallel_min_rows=1_000_000,
        # One whole batch: a call's cost has a fixed part (the shared transform runs over the
        # series once per call), so only a batch of the size prep uses shows the real rate.
        sample_rows=_FEATURE_BATCH_ROWS,
        sample_stretches=1,
        # One process computes the lags and order statistics beside the wavelet sums.
        threaded=functools.partial(_threaded_features, spec, device),
    )


@functools.lru_cache(maxsize=4)
def _renderer(spec: ImageSpec, length: int) -> Any:
    """One long-lived renderer per process (per spec and row length): never a figure per image."""
    from tsfs.pipeline.render import Renderer

    return Renderer(spec, length)


def _image_rows(spec: ImageSpec, length: int) -> dict[str, _RowType]:
    from tsfs.pipeline.render import image_shape

    if length < 2:
        raise RowsTooShortError(
            f"a line plot needs at least 2 values per row, and these rows have {length}"
        )
    return {"rgb" if spec.rgb else "mask": (image_shape(spec), np.dtype(np.uint8))}


# A worker's image batches, rendered into the memory of its last one once that is written:
# a fresh ~100 MB batch cost ~5% of rendering in page faults.
_IMAGE_BUFFERS = Recycler(keep=1)


def _image_batch(spec: ImageSpec, batch: Batch) -> dict[str, npt.NDArray[Any]]:
    """Images of a batch's selected rows, (R, H, W[, 3]) in the batch's key order."""
    from tsfs.pipeline.render import image_shape

    w, v = np.nonzero(batch.select)
    # finite: a data set holds values within ±VALUE_LIMIT, whose RevIN float32 holds
    z, _, _ = revin(batch.block.rows(batch.windows[w], v))
    out = _IMAGE_BUFFERS.empty((len(z), *image_shape(spec)), np.uint8)
    _renderer(spec, z.shape[1]).render(z, out)
    return {"rgb" if spec.rgb else "mask": out}


def _images_job(store: Store, spec: ImageSpec, codec: Codec) -> _Job:
    return _Job(
        store=store,
        kind="images",
        spec=spec.to_dict(),
        fingerprint=spec.fingerprint,
        codecs={"rgb" if spec.rgb else "mask": codec},
        # Each worker renders, compresses and commits its own segments: both cores draw and
        # nothing but a row count travels back.
        compute=functools.partial(_image_batch, spec),
        batch_rows=_image_batch_rows(spec),
        rows=functools.partial(_image_rows, spec),
        parallel_min_rows=2_000,
    )


# --------------------------------------------------------------------------------------------
# running and planning


@contextmanager
def _progress(total: int, enabled: bool, desc: str) -> Iterator[Callable[[int], None]]:
    from tqdm import tqdm

    with tqdm(
        total=total,
        unit="row",
        unit_scale=True,
        disable=not enabled or total == 0,
        desc=desc,
        dynamic_ncols=True,
    ) as bar:
        yield bar.update


def _estimate(
    job: _Job,
    plan: RowPlan,
    *,
    jobs: int,
    hash_seconds: float,
    budget_bytes: int | None,
) -> Estimate:
    # Sample in this process: its rate per process is what gets spread over the workers.
    workers = _workers(job, plan.rows_missing, jobs)
    return estimate(
        kind=job.kind,
        plan=plan,
        namespace=job.namespace(create=False),
        spec=job.spec,
        compute=job.compute_for(workers, jobs),
        codecs=job.codecs,
        jobs=workers,
        threads=jobs if workers == 1 and job.threaded is not None else 1,
        hash_seconds=hash_seconds,
        budget_bytes=budget_bytes,
        parallel_startup_s=job.parallel_startup_s,
        serial_startup_s=job.serial_startup_s,
        sample_rows=job.sample_rows,
        stretches=job.sample_stretches,
    )


def _workers(job: _Job, rows: int, jobs: int, executor: Executor = "local") -> int:
    """Processes worth starting for ``rows`` rows: one when start-up would cost more (on this
    machine; a Dask cluster was asked for, and its workers are started anyway)."""
    return jobs if rows >= job.parallel_min_rows or executor == "dask" else 1


def _plan_rows(
    job: _Job,
    dataset: Dataset,
    namespace: Namespace,
    *,
    jobs: int,
    batch_rows: int | None,
    executor: Executor = "local",
) -> RowPlan:
    """The batches prep runs (and plan predicts): the same cut for both (``batch_rows``
    None: the kind's own)."""
    return plan_rows(
        dataset_blocks(dataset),
        namespace,
        key_algorithm=job.store.key,
        batch_rows=batch_rows or job.batch_rows,
        # Several batches per worker, so the last ones do not leave a core idle.
        min_batches=lambda rows: 4 * w if (w := _workers(job, rows, jobs, executor)) > 1 else 1,
    )


def _check_row_shapes(job: _Job, namespace: Namespace, dataset: Dataset) -> None:
    """Refuse rows whose outputs differ in shape or dtype from those the namespace holds
    (e.g. stored coefficients of another row length): readers need one shape per output."""
    commits = namespace.commits() if namespace.exists() else []
    if not commits:
        return
    held = commits[0].arrays
    for length in _row_lengths(dataset):
        for name, (shape, dtype) in job.rows(length).items():
            record = held.get(name)
            if record is None or (tuple(record.shape[1:]), record.dtype) == (shape, str(dtype)):
                continue
            raise InputError(
                f"{job.kind} namespace {job.fingerprint} of store {job.store.url} holds "
                f"{name!r} rows of shape {tuple(record.shape[1:])} {record.dtype}, and rows of "
                f"length {length} give {shape} {dtype}; one namespace holds one shape: use "
                "another --store for these rows"
            )


def _check_disk(job: _Job, plan: RowPlan, *, jobs: int, budget_bytes: int | None) -> None:
    """Refuse a run that would not fit: a cheap uncompressed bound first (from the output
    schema alone), the sampled estimate only when that bound is too large to decide.

    An object store has no free space to run out of: only ``budget_bytes`` bounds a run there.
    """
    row_bytes = job.row_bytes(max(b.block.seq_len for b in plan.batches))
    limits = [n for n in (free_bytes(job.store), budget_bytes) if n is not None]
    if not limits or upper_bound_bytes(plan, row_bytes) <= min(limits):
        return
    check_budget(_estimate(job, plan, jobs=jobs, hash_seconds=0.0, budget_bytes=budget_bytes))


def _run(
    job: _Job,
    dataset: Dataset,
    *,
    jobs: int,
    batch_rows: int | None,
    progress: bool,
    budget_bytes: int | None,
    force: bool,
    executor: Executor,
    scheduler: str | None,
) -> PrepReport:
    t0 = time.perf_counter()
    namespace = job.namespace(create=False)
    plan = _plan_rows(
        job,
        dataset,
        namespace,
        jobs=jobs,
        batch_rows=batch_rows,
        executor=executor,
    )
    if plan.batches and job.store.mode != "a":
        raise StoreReadOnlyError(
            f"store {job.store.url} is read-only and lacks {plan.rows_missing:,} rows of this "
            "run; make it writable (chmod u+w) or give another store path"
        )
    if plan.batches:
        _check_row_shapes(job, namespace, dataset)
    if plan.batches and not force:
        _check_disk(job, plan, jobs=jobs, budget_bytes=budget_bytes)
    created = 0
    # Created only now (a run refused for its size leaves no trace), or rewritten where its
    # document was lost or damaged beside committed rows.
    if plan.batches or (plan.rows_present and not namespace.document_readable()):
        existed = namespace.exists()
        namespace = job.namespace(create=True)
        if not existed:
            # its two documents: the whole folder would count another writer's segments too
            created = sum(
                namespace.files.usage(f"{namespace.key}/{doc}")[0]
                for doc in ("zarr.json", "segments/zarr.json")
            )
    with _progress(plan.rows_missing, progress, job.kind) as update:
        workers = _workers(job, plan.rows_missing, jobs, executor)
        segments, nbytes = run_batches(
            plan,
            namespace,
            job.compute_for(workers, jobs),
            codecs=job.codecs,
            jobs=workers,
            executor=executor,
            scheduler=scheduler,
            progress=update,
        )
    return PrepReport(
        namespace=f"{job.kind}/{job.fingerprint}",
        windows=plan.windows,
        rows_total=plan.rows_total,
        rows_unique=plan.rows_unique,
        rows_reused=plan.rows_present,
        rows_computed=plan.rows_missing,
        segments_written=segments,
        bytes_written=nbytes + created,
        seconds=time.perf_counter() - t0,
    )


def _plan(
    job: _Job, dataset: Dataset, *, jobs: int, batch_rows: int | None, budget_bytes: int | None
) -> Estimate:
    t0 = time.perf_counter()
    plan = _plan_rows(
        job,
        dataset,
        job.namespace(create=False),
        jobs=jobs,
        batch_rows=batch_rows,
    )
    if plan.batches:
        _check_row_shapes(job, job.namespace(create=False), dataset)  # as prep would refuse
    return _estimate(
        job, plan, jobs=jobs, hash_seconds=time.perf_counter() - t0, budget_bytes=budget_bytes
    )


_FEATURE_BATCH_ROWS = 1 << 16
_IMAGE_BATCH_ROWS = 2048
# A worker holds its batch of images whole (rendered, then compressed): at most this many bytes
# of them, so large images (1024² RGB is 3 MiB each) get smaller batches, not a MemoryError.
_IMAGE_BATCH_BYTES = 256 << 20


def _image_batch_rows(spec: ImageSpec) -> int:
    """Rows per image batch: 2,048 (224² masks), fewer where they would pass 256 MiB."""
    per_image = spec.size * spec.size * (3 if spec.rgb else 1)
    return max(1, min(_IMAGE_BATCH_ROWS, _IMAGE_BATCH_BYTES // per_image))


def check_executor(executor: object, scheduler: object) -> Executor:
    """``executor`` (``--executor``), checked against ``scheduler`` (``--scheduler``)."""
    if executor not in EXECUTORS:
        raise InputError(f"unknown --executor {executor!r}; choose local or dask")
    if scheduler is not None and executor != "dask":
        raise InputError("--scheduler is for a Dask cluster; add --executor dask")
    return executor  # type: ignore[return-value]


def check_codec(codec: object) -> Codec:
    """An image codec (``--codec``)."""
    if codec not in ("lz4", "zstd"):
        raise InputError(f"unknown --codec {codec!r}; choose lz4 or zstd")
    return codec


def _check_arguments(
    dataset: object,
    spec: object,
    kind: type[FeatureSpec | ImageSpec],
    store: object,
    *,
    jobs: object,
    batch_rows: object,
    budget_bytes: object = None,
    executor: object = "local",
    scheduler: object = None,
    codec: object = "lz4",
    device: object = "cpu",
) -> None:
    """Refuse arguments of the wrong type or out of range, naming them (and their option),
    before any work: ``batch_rows=1.5`` would otherwise write a segment per row."""

    def whole(value: object, minimum: int) -> bool:
        return is_integer(value) and int(value) >= minimum  # type: ignore[call-overload]

    if not isinstance(dataset, Dataset):
        raise InputError(
            f"dataset must be a tsfs Dataset (tsfs.pipeline.sources.load(...)), got "
            f"{type(dataset).__name__}"
        )
    if not isinstance(spec, kind):
        raise InputError(f"spec must be of type {kind.__name__}, got {type(spec).__name__}")
    if not isinstance(store, Store):
        raise InputError(f"store must be a tsfs Store, got {type(store).__name__}")
    if not whole(jobs, 1):
        raise InputError(f"jobs (--jobs) must be a positive integer, got {jobs!r}")
    if batch_rows is not None and not whole(batch_rows, 1):
        raise InputError(
            f"batch_rows (--batch-rows) must be a positive integer, got {batch_rows!r}"
        )
    if budget_bytes is not None and not whole(budget_bytes, 0):
        raise InputError(f"budget_bytes (--budget) must be a byte count, got {budget_bytes!r}")
    check_executor(executor, scheduler)
    check_codec(codec)
    if not (device in ("cpu", "cuda") or (isinstance(device, str) and device.startswith("cuda:"))):
        raise InputError(f"unknown device {device!r} (--device); choose cpu, cuda or cuda:N")


def prep_features(
    dataset: Dataset,
    spec: FeatureSpec,
    store: Store,
    *,
    jobs: int = 1,
    device: str = "cpu",
    batch_rows: int | None = None,
    progress: bool = False,
    budget_bytes: int | None = None,
    force: bool = False,
    executor: Executor = "local",
    scheduler: str | None = None,
) -> PrepReport:
    """Compute and store the features of every row of ``dataset`` that ``store`` lacks.

    Refuses (``BudgetError``) when the predicted size exceeds ``budget_bytes`` or the free
    space, unless ``force``. ``executor``, ``scheduler``: where batches run (see
    :func:`~tsfs.pipeline.execute.run_batches`). ``batch_rows``: rows per segment (default
    65,536).
    """
    _check_arguments(
        dataset,
        spec,
        FeatureSpec,
        store,
        jobs=jobs,
        batch_rows=batch_rows,
        budget_bytes=budget_bytes,
        executor=executor,
        scheduler=scheduler,
        device=device,
    )
    check_rows(dataset, spec)
    return _run(
        _features_job(store, resolve_features(dataset, spec), device),
        dataset,
        jobs=jobs,
        batch_rows=batch_rows,
        progress=progress,
        budget_bytes=budget_bytes,
        force=force,
        executor=executor,
        scheduler=scheduler,
    )


def prep_images(
    dataset: Dataset,
    spec: ImageSpec,
    store: Store,
    *,
    jobs: int = 1,
    batch_rows: int | None = None,
    codec: Codec = "lz4",
    progress: bool = False,
    budget_bytes: int | None = None,
    force: bool = False,
    executor: Executor = "local",
    scheduler: str | None = None,
) -> PrepReport:
    """Render and store the image of every row of ``dataset`` that ``store`` lacks.

    Batches run in ``jobs`` worker processes (or on a Dask cluster: ``executor``,
    ``scheduler``), each with one long-lived renderer, each rendering, compressing and
    committing its own segments. ``codec``: ``lz4`` (default; decodes ~5x faster for training
    reads) or ``zstd`` (~30% smaller). ``batch_rows``: rows per segment (default 2,048).
    """
    _check_arguments(
        dataset,
        spec,
        ImageSpec,
        store,
        jobs=jobs,
        batch_rows=batch_rows,
        budget_bytes=budget_bytes,
        executor=executor,
        scheduler=scheduler,
        codec=codec,
    )
    check_rows(dataset, spec)
    return _run(
        _images_job(store, spec, codec),
        dataset,
        jobs=jobs,
        batch_rows=batch_rows,
        progress=progress,
        budget_bytes=budget_bytes,
        force=force,
        executor=executor,
        scheduler=scheduler,
    )


def plan_features(
    dataset: Dataset,
    spec: FeatureSpec,
    store: Store,
    *,
    jobs: int = 1,
    batch_rows: int | None = None,
    budget_bytes: int | None = None,
) -> Estimate:
    """Predict what :func:`prep_features` would write and how long it would take."""
    _check_arguments(
        dataset,
        spec,
        FeatureSpec,
        store,
        jobs=jobs,
        batch_rows=batch_rows,
        budget_bytes=budget_bytes,
    )
    return _plan(
        _features_job(store, resolve_features(dataset, spec), "cpu"),
        dataset,
        jobs=jobs,
        batch_rows=batch_rows,
        budget_bytes=budget_bytes,
    )


def plan_images(
    dataset: Dataset,
    spec: ImageSpec,
    store: Store,
    *,
    jobs: int = 1,
    batch_rows: int | None = None,
    codec: Codec = "lz4",
    budget_bytes: int | None = None,
) -> Estimate:
    """Predict what :func:`prep_images` would write and how long it would take."""
    _check_arguments(
        dataset,
        spec,
        ImageSpec,
        store,
        jobs=jobs,
        batch_rows=batch_rows,
        budget_bytes=budget_bytes,
        codec=codec,
    )
    return _plan(
        _images_job(store, spec, codec),
        dataset,
        jobs=jobs,
        batch_rows=batch_rows,
        budget_bytes=budget_bytes,
    )


def cheaper_settings(
    dataset: Dataset,
    spec: FeatureSpec | ImageSpec,
    store: Store,
    *,
    jobs: int = 1,
    budget_bytes: int | None = None,
    batch_rows: int | None = None,
    codec: Codec = "lz4",
) -> list[tuple[str, Estimate]]:
    """Predicted sizes of cheaper variants of a run (for a plan that does not fit).

    ``batch_rows`` and ``codec`` (images) are the run's own. Each estimate's ``fits`` says
    whether that variant fits ``budget_bytes`` and the free space. Strides double until one
    fits (up to 64 times the run's), so a budget that some stride meets always gets that
    stride offered. Variants the store already holds are left out.
    """
    from tsfs.pipeline.sources import load

    variants: list[tuple[str, Dataset, FeatureSpec | ImageSpec]] = []
    sizes: list[int] = []  # smaller images to offer
    if isinstance(spec, ImageSpec):
        sizes = [s for s in (spec.size // 2, spec.size // 4) if s >= 32]
        if spec.rgb:
            variants.append(
                ("masks instead of RGB (drop --rgb)", dataset, replace(spec, rgb=False))
            )
        variants.extend((f"--size {size}", dataset, replace(spec, size=size)) for size in sizes)
    elif spec.store_coefficients:
        variants.append(
            ("without --coefficients", dataset, replace(spec, store_coefficients=False))
        )
    if len(dataset.splits) > 1 and "train" in dataset.splits:
        variants.append(
            ("--splits train", load(dataset.path, replace(dataset.spec, splits=("train",))), spec)
        )
    out = [
        (label, _plan_variant(ds, sp, store, jobs, budget_bytes, batch_rows, codec))
        for label, ds, sp in variants
    ]
    if isinstance(spec, ImageSpec) and spec.rgb and not any(est.fits for _, est in out):
        # the two image savings together: masks take a third of RGB's bytes at any size
        for size in sizes:
            smaller = replace(spec, rgb=False, size=size)
            est = _plan_variant(dataset, smaller, store, jobs, budget_bytes, batch_rows, codec)
            out.append((f"drop --rgb, --size {size}", est))
    if dataset.kind == "forecast":
        for k in (2, 4, 8, 16, 32, 64):
            stride = dataset.spec.stride * k
            ds = load(dataset.path, replace(dataset.spec, stride=stride))
            if not any(len(split) for split in ds.splits.values()):
                break
            est = _plan_variant(ds, spec, store, jobs, budget_bytes, batch_rows, codec)
            out.append((f"--stride {stride}", est))
            if est.fits and k >= 4:  # offer two strides at least, then stop at one that fits
                break
    # a variant with nothing left to compute is no cheaper way to do this run
    return [(label, est) for label, est in out if est.rows_missing]


def _plan_variant(
    dataset: Dataset,
    spec: FeatureSpec | ImageSpec,
    store: Store,
    jobs: int,
    budget_bytes: int | None,
    batch_rows: int | None,
    codec: Codec,
) -> Estimate:
    if isinstance(spec, ImageSpec):
        return plan_images(
            dataset,
            spec,
            store,
            jobs=jobs,
            budget_bytes=budget_bytes,
            batch_rows=batch_rows,
            codec=codec,
        )
    return plan_features(
        dataset,
        spec,
        store,
        jobs=jobs,
        budget_bytes=budget_bytes,
        batch_rows=batch_rows,
    )
