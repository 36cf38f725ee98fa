"""`prep`: compute what a store lacks for a data set, and nothing else.

:func:`prep_features` and :func:`prep_images` are what the ``tsfs prep`` commands call. Both
follow :mod:`tsfs.pipeline.execute`: hash every row, look up the namespace, compute only the
missing rows in batches, commit each batch as one segment.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt

from tsfs.pipeline.execute import Batch, Block, PrepReport, RowPlan, plan_rows, run_batches
from tsfs.pipeline.windows import Dataset
from tsfs.specs import FeatureSpec, ImageSpec
from tsfs.stores.store import Codec, Namespace, Store

__all__ = [
    "dataset_blocks",
    "features_namespace",
    "images_namespace",
    "prep_features",
    "prep_images",
]


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


def features_namespace(store: Store, spec: FeatureSpec) -> Namespace:
    return store.namespace("features", spec.to_dict(), spec.fingerprint)


def images_namespace(store: Store, spec: ImageSpec) -> Namespace:
    return store.namespace("images", spec.to_dict(), spec.fingerprint)


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


def _report(
    namespace: Namespace, plan: RowPlan, segments: int, nbytes: int, t0: float
) -> PrepReport:
    return PrepReport(
        namespace=f"{namespace.kind}/{namespace.fingerprint}",
        windows=plan.windows,
        rows_total=plan.rows_total,
        rows_unique=plan.rows_unique,
        rows_reused=plan.rows_present,
        rows_computed=plan.rows_missing,
        segments_written=segments,
        bytes_written=nbytes,
        seconds=time.perf_counter() - t0,
    )


def _feature_batch(spec: FeatureSpec, device: str, batch: Batch) -> dict[str, npt.NDArray[Any]]:
    """Features of a batch's selected rows, (R, ...) in the batch's key order."""
    from tsfs.pipeline.features import compute_rows, compute_windows

    block = batch.block
    if block.series is not None and block.starts is not None and device == "cpu":
        out = compute_windows(
            block.series, seq_len=block.seq_len, starts=block.starts[batch.windows], spec=spec
        )
        return {k: np.ascontiguousarray(v[batch.select]) for k, v in out.items()}
    w, v = np.nonzero(batch.select)
    return compute_rows(block.rows(batch.windows[w], v), spec, device=device)


def prep_features(
    dataset: Dataset,
    spec: FeatureSpec,
    store: Store,
    *,
    jobs: int = 1,
    device: str = "cpu",
    batch_rows: int = 1 << 16,
    progress: bool = False,
) -> PrepReport:
    """Compute and store the features of every row of ``dataset`` that ``store`` lacks."""
    t0 = time.perf_counter()
    namespace = features_namespace(store, spec)
    plan = plan_rows(
        dataset_blocks(dataset), namespace, key_algorithm=store.key, batch_rows=batch_rows
    )
    with _progress(plan.rows_missing, progress, "features") as update:
        segments, nbytes = run_batches(
            plan,
            namespace,
            functools.partial(_feature_batch, spec, device),
            codecs={},
            jobs=jobs,
            progress=update,
        )
    return _report(namespace, plan, segments, nbytes, t0)


def prep_images(
    dataset: Dataset,
    spec: ImageSpec,
    store: Store,
    *,
    jobs: int = 1,
    batch_rows: int = 2048,
    progress: bool = False,
) -> PrepReport:
    """Render and store the image of every row of ``dataset`` that ``store`` lacks.

    Rendering runs in ``jobs`` long-lived worker processes that draw straight into shared
    memory; the parent compresses and commits each batch as one segment.
    """
    from tsfs.pipeline.render import RenderPool

    t0 = time.perf_counter()
    namespace = images_namespace(store, spec)
    blocks = dataset_blocks(dataset)
    plan = plan_rows(blocks, namespace, key_algorithm=store.key, batch_rows=batch_rows)
    name = "rgb" if spec.rgb else "mask"
    lengths = sorted({b.block.seq_len for b in plan.batches})
    segments = nbytes = 0
    with _progress(plan.rows_missing, progress, "images") as update:
        for length in lengths:
            sub = RowPlan(
                windows=plan.windows,
                rows_total=plan.rows_total,
                rows_unique=plan.rows_unique,
                rows_present=plan.rows_present,
                batches=[b for b in plan.batches if b.block.seq_len == length],
            )
            with RenderPool(spec, length, jobs=jobs) as pool:

                def render(batch: Batch, pool: Any = pool) -> dict[str, npt.NDArray[Any]]:
                    w, v = np.nonzero(batch.select)
                    return {name: pool.render(batch.block.rows(batch.windows[w], v))}

                codecs: dict[str, Codec] = {name: "zstd"}
                s, b = run_batches(sub, namespace, render, codecs=codecs, progress=update)
            segments += s
            nbytes += b
    return _report(namespace, plan, segments, nbytes, t0)
