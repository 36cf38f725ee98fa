"""Epoch orders, batches and shards: pure functions of (seed, epoch, layout), no I/O.

Three orders over the windows of a split:

``chunks`` (default)
    Chunk-aware, in the spirit of FFCV's ``QUASI_RANDOM`` and mosaicml streaming's ``py1e``.
    Windows are grouped by the chunk their rows live in; runs of ``span`` neighbouring chunks
    are shuffled as units, cut into blocks of ``buffer`` chunks, and the windows of each block
    are shuffled together. A reader that caches two blocks' chunks therefore decodes every
    chunk about once per epoch, while each batch mixes windows of ``buffer / span`` random
    places in the data. Spans exist because a window's V rows may cross a chunk boundary
    (~one window per boundary when chunks do not hold whole windows): that window needs both
    chunks, and with neighbours in different blocks each boundary costs one more chunk decode
    — about twice the work for single-chunk units, ``1 + 1/span`` times with spans.
``random``
    A uniform permutation of all windows (each batch touches ~batch-size chunks).
``sequential``
    Window order, unshuffled.

Every order is a function of ``(seed, epoch)`` alone, so all ranks and worker processes compute
the same one without talking to each other. The order is cut into batches of ``batch_size``
windows; ranks take contiguous runs of batches (so their chunks barely overlap) and, inside a
rank, DataLoader worker ``k`` of ``W`` takes batches ``k, k + W, …`` of that rank's: the
DataLoader hands out batch ``i`` from worker ``i mod W``, so the rank's batch order, and with
it the training, does not depend on the number of workers, and a resumed run (its remaining
batches shared out the same way) continues exactly. Neighbouring batches read neighbouring
chunks, so each worker then decodes most chunks itself. Every window is in
exactly one batch of one rank per epoch (``drop_last`` drops the final partial batch and
trims the batch count to a multiple of ``world_size``, so every rank takes as many steps — what
DistributedDataParallel needs).

Resuming is bookkeeping on batch numbers: a rank's consumed batches are a boolean mask over
its batches, saved as ``[start, stop)`` ranges; the remaining batches are shared out again
among however many workers the resumed run has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from tsfs.errors import InputError

__all__ = [
    "ORDERS",
    "EpochPlan",
    "Order",
    "epoch_order",
    "mask_from_ranges",
    "plan_epoch",
    "ranges_from_mask",
    "worker_share",
]

Order = Literal["chunks", "random", "sequential"]
ORDERS: tuple[str, ...] = ("chunks", "random", "sequential")

I64 = npt.NDArray[np.int64]


def epoch_order(
    groups: npt.ArrayLike,
    *,
    order: Order,
    seed: int,
    epoch: int,
    buffer: int = 16,
    span: int = 4,
) -> I64:
    """The windows of one epoch, in the order they are read.

    Args:
        groups: (N,) integer chunk of each window: windows whose rows share a chunk share a
            group, and neighbouring chunks have consecutive numbers. Only ``chunks`` reads it.
        order: ``chunks``, ``random`` or ``sequential`` (see the module docs).
        seed, epoch: the order is a pure function of these two.
        buffer: chunks shuffled together (``chunks`` only; at least one span).
        span: neighbouring chunks kept in one block (``chunks`` only).

    Returns:
        (N,) int64 permutation of ``range(N)``.
    """
    g = np.asarray(groups)
    n = len(g)
    if order == "sequential":
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng([seed, epoch])
    if order == "random":
        return rng.permutation(n).astype(np.int64)
    if order != "chunks":
        raise InputError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
    if buffer < 1 or span < 1:
        raise InputError(f"buffer and span must be at least 1 chunk, got {buffer} and {span}")
    # Span boundaries move every epoch, so no chunk boundary is always between two blocks.
    units = (g.astype(np.int64) + int(rng.integers(span))) // span
    _, unit_of = np.unique(units, return_inverse=True)
    rank = rng.permutation(int(unit_of.max(initial=-1)) + 1)[unit_of]
    # Sort by block of shuffled units, and randomly inside each block.
    return np.lexsort((rng.random(n), rank // max(1, buffer // span))).astype(np.int64)


@dataclass(frozen=True, kw_only=True)
class EpochPlan:
    """One rank's batches of one epoch.

    Attributes:
        order: (N,) window indices of the whole split in epoch order (same on every rank).
        batch_size: windows per batch (the split's last batch may be shorter).
        first: this rank's first batch, as a number of the whole order's batches.
        count: this rank's number of batches.
    """

    order: I64
    batch_size: int
    first: int
    count: int

    def windows(self, batch: int) -> I64:
        """(b,) window indices of this rank's batch number ``batch`` (0 ≤ batch < count)."""
        if not 0 <= batch < self.count:
            raise IndexError(f"batch {batch} out of range(0, {self.count})")
        start = (self.first + batch) * self.batch_size
        return self.order[start : start + self.batch_size]


def plan_epoch(
    groups: npt.ArrayLike,
    *,
    order: Order,
    seed: int,
    epoch: int,
    batch_size: int,
    buffer: int = 16,
    span: int = 4,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
) -> EpochPlan:
    """The epoch's order, cut into batches, and the contiguous run of them that ``rank`` takes.

    Without ``drop_last`` every window is in exactly one batch; rank batch counts then differ
    by at most one. With it, the final partial batch is dropped and the count is trimmed to a
    multiple of ``world_size`` (at most ``world_size·batch_size − 1`` windows skipped).
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"rank {rank} is not in range(0, world_size={world_size})")
    windows = epoch_order(groups, order=order, seed=seed, epoch=epoch, buffer=buffer, span=span)
    n = len(windows)
    if drop_last:
        total = n // batch_size
        total -= total % world_size
    else:
        total = -(-n // batch_size)
    bounds = [total * r // world_size for r in range(world_size + 1)]
    return EpochPlan(
        order=windows,
        batch_size=batch_size,
        first=bounds[rank],
        count=bounds[rank + 1] - bounds[rank],
    )


def worker_share(batches: npt.ArrayLike, worker: int, num_workers: int) -> I64:
    """The batches of ``batches`` (M,) that DataLoader worker ``worker`` reads: every
    ``num_workers``-th from its own index, the ones the DataLoader yields from it in turn."""
    return np.asarray(batches, dtype=np.int64)[worker::num_workers]


def ranges_from_mask(mask: npt.NDArray[np.bool_]) -> list[list[int]]:
    """``[[start, stop], …]`` of the runs of True in a (M,) mask."""
    padded = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1]).reshape(-1, 2)
    return [[int(a), int(b)] for a, b in edges]


def mask_from_ranges(ranges: list[list[int]], size: int) -> npt.NDArray[np.bool_]:
    """The (size,) mask that is True on ``[start, stop)`` of each range."""
    mask = np.zeros(size, dtype=bool)
    for pair in ranges:
        if len(pair) != 2 or not 0 <= int(pair[0]) <= int(pair[1]) <= size:
            raise InputError(f"invalid batch range {pair!r} for {size} batches")
        mask[int(pair[0]) : int(pair[1])] = True
    return mask
