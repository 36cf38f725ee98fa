"""Whole-chunk reads of committed store arrays, checksummed once and kept in a bounded LRU cache.

Zarr decodes a whole chunk for every request, so reading rows one by one (or fancy-indexing a
few random rows) decodes the same chunk again and again: ~40–300 images/s, against ~50,000/s
for decoding each chunk once. Loaders therefore read *chunks*, never rows: :class:`ChunkReader`
turns (segment, array, chunk) into the chunk's decoded rows, and :class:`ChunkCache` keeps the
most recently used ones under a byte bound, so the sampler's chunk-aware order decodes each chunk
about once per epoch. :meth:`ChunkCache.get_many` decodes the chunks a batch lacks on one
thread per core while the caller copies rows out of those already decoded: the reading thread
alone was one core, ~45% of it in lz4.

Chunks are decoded by :meth:`~tsfs.stores.store.Namespace.read_chunk_rows`, directly for the
layouts tsfs writes (raw bytes, or blosc; crc32c checked over the file's payload), without
Zarr's per-call machinery. Chunk files are read rather than memory-mapped: the checksum touches
every byte anyway, and a mapping per cached chunk would hold a file descriptor per chunk. A store
at a URL (s3://…) is read the same way, one GET per chunk, and the cache is then the local copy
of what was fetched.
A wrong checksum is a :class:`~tsfs.errors.StoreCorruptError` naming the chunk file.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tsfs.errors import InputError
from tsfs.specs import is_integer
from tsfs.stores.store import Commit, Namespace

__all__ = ["DEFAULT_CACHE_BYTES", "CacheStats", "ChunkCache", "ChunkKey", "ChunkReader"]

#: Default bound of one process's chunk cache: room for 64 chunks of the store's ~4 MiB target.
DEFAULT_CACHE_BYTES = 256 << 20

#: (namespace fingerprint, segment id, array name, chunk number).
ChunkKey = tuple[str, str, str, int]


# Chunks missing from a cache are decoded on this many threads at once (blosc and the file
# reads run without the GIL): the reading thread alone uses one core, spending ~45% of it
# in lz4. Each thread holds at most one decoded chunk outside the cache.
_DECODE_THREADS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def _decoders() -> ThreadPoolExecutor:
    """This process's decode threads (a forked child starts its own: it has none of its
    parent's threads, so the parent's executor would never run a task there)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(_DECODE_THREADS, "tsfs-decode"))
        return _pool[1]


@dataclass(kw_only=True)
class CacheStats:
    """Counters of one :class:`ChunkCache` (per process)."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    bytes: int = 0
    peak_bytes: int = 0


class ChunkCache:
    """Least-recently-used decoded chunks, at most ``max_bytes`` of them.

    A chunk larger than the whole bound is returned but not kept, so the bound always holds.
    Safe to share between threads (a loader's reader thread and a dataset read from the main
    one): the entries and counters change under a lock; loads run outside it.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if not is_integer(max_bytes) or max_bytes < 0:
            raise InputError(f"cache_bytes must be a byte count, 0 or more, got {max_bytes!r}")
        self.max_bytes = int(max_bytes)
        self.stats = CacheStats()
        self._chunks: OrderedDict[ChunkKey, npt.NDArray[Any]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._chunks)

    def __contains__(self, key: ChunkKey) -> bool:
        return key in self._chunks

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def get(self, key: ChunkKey, load: Callable[[], npt.NDArray[Any]]) -> npt.NDArray[Any]:
        """The chunk under ``key``, calling ``load()`` (and caching its result) on a miss."""
        with self._lock:
            chunk = self._chunks.get(key)
            if chunk is not None:
                self._chunks.move_to_end(key)
                self.stats.hits += 1
                return chunk
            self.stats.misses += 1
        chunk = load()
        with self._lock:
            if key in self._chunks:  # another thread loaded it meanwhile
                return self._chunks[key]
            if chunk.nbytes <= self.max_bytes:
                while self.stats.bytes + chunk.nbytes > self.max_bytes:
                    _, old = self._chunks.popitem(last=False)
                    self.stats.bytes -= old.nbytes
                    self.stats.evictions += 1
                self._chunks[key] = chunk
                self.stats.bytes += chunk.nbytes
                self.stats.peak_bytes = max(self.stats.peak_bytes, self.stats.bytes)
        return chunk

    def get_many(
        self,
        requests: Iterable[tuple[ChunkKey, Callable[[], npt.NDArray[Any]]]],
        *,
        threads: int | None = None,
    ) -> Iterator[npt.NDArray[Any]]:
        """The chunk of each ``(key, load)`` request, in order, as :meth:`get` would give it.

        Chunks missing from the cache are loaded on ``threads`` decode threads (default: one
        per core, at most 4), at most ``threads`` ahead of the one handed out, so a caller
        copying rows out of one chunk overlaps the decoding of the next ones. The cache itself
        is only touched by the calling thread. With ``threads=1`` every load runs here.
        """
        threads = _DECODE_THREADS if threads is None else threads
        if threads <= 1:
            for key, load in requests:
                yield self.get(key, load)
            return
        pool = _decoders()
        todo = iter(requests)
        ahead: deque[tuple[ChunkKey, Callable[[], npt.NDArray[Any]], Future[Any] | None]]
        ahead = deque()

        def top_up() -> None:
            while len(ahead) < threads and (nxt := next(todo, None)) is not None:
                key, load = nxt
                ahead.append((key, load, None if key in self else pool.submit(load)))

        top_up()
        try:
            while ahead:
                key, load, loading = ahead.popleft()
                top_up()
                # A chunk cached at submission but evicted since is simply loaded here.
                yield self.get(key, load if loading is None else loading.result)
        finally:
            for _, _, loading in ahead:  # an abandoned read: drop what it queued
                if loading is not None:
                    loading.cancel()

    def clear(self) -> None:
        """Drop every chunk (the counters stay)."""
        with self._lock:
            self._chunks.clear()
            self.stats.bytes = 0


class ChunkReader:
    """Decoded chunks of the committed segments of one namespace.

    Args:
        namespace: the namespace to read.
        commits: the segments that locations refer to (``KeyIndex.segments``, in index order):
            a fixed snapshot, so segments committed later do not shift any location.

    Chunks are addressed by ``(segment position in commits, array name, chunk number)``;
    :meth:`chunk` returns the chunk's real rows (the last chunk of a segment may be short).
    """

    def __init__(self, namespace: Namespace, commits: Sequence[Commit]) -> None:
        self.namespace = namespace
        self.commits = tuple(commits)

    def chunk_rows(self, name: str) -> npt.NDArray[np.int64]:
        """(S,) rows per chunk of array ``name`` in each segment (0 where a segment lacks it)."""
        return np.array(
            [c.arrays[name].chunk_rows if name in c.arrays else 0 for c in self.commits],
            dtype=np.int64,
        )

    def key(self, segment: int, name: str, chunk: int) -> ChunkKey:
        return (self.namespace.fingerprint, self.commits[segment].segment, name, chunk)

    def chunk(self, segment: int, name: str, chunk: int) -> npt.NDArray[Any]:
        """(n, ...) rows of chunk ``chunk`` of array ``name`` of ``commits[segment]``."""
        return self.namespace.read_chunk_rows(self.commits[segment], name, chunk)
