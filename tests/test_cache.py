"""ChunkCache: the LRU bound, and chunks decoded on several threads while the caller reads."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from tsfs.errors import StoreCorruptError
from tsfs.training.cache import ChunkCache, ChunkKey


def key(i: int) -> ChunkKey:
    return ("ns", "seg", "mask", i)


def chunk(i: int) -> npt.NDArray[np.int64]:
    return np.full(100, i, dtype=np.int64)  # 800 bytes


def loader(i: int, calls: list[int] | None = None) -> Callable[[], npt.NDArray[np.int64]]:
    def load() -> npt.NDArray[np.int64]:
        if calls is not None:
            calls.append(i)
        return chunk(i)

    return load


def test_lru_keeps_the_bound_and_a_chunk_larger_than_it_is_not_kept() -> None:
    cache = ChunkCache(max_bytes=2400)  # three chunks
    for i in range(5):
        cache.get(key(i), loader(i))
    assert len(cache) == 3
    assert key(0) not in cache
    assert key(4) in cache
    assert cache.stats.evictions == 2
    assert cache.stats.peak_bytes == 2400
    big = cache.get(key(9), lambda: np.zeros(1000))
    assert big.shape == (1000,)
    assert key(9) not in cache
    assert cache.stats.bytes <= 2400


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_get_many_gives_what_get_gives_in_order(threads: int) -> None:
    cache = ChunkCache(max_bytes=8 * 800)
    for i in (1, 3):
        cache.get(key(i), loader(i))
    calls: list[int] = []
    got = list(cache.get_many([(key(i), loader(i, calls)) for i in range(6)], threads=threads))
    assert [int(c[0]) for c in got] == list(range(6))
    assert sorted(calls) == [0, 2, 4, 5]  # only the chunks the cache lacked were loaded
    assert cache.stats.hits == 2
    assert cache.stats.misses == 2 + 4
    assert all(key(i) in cache for i in range(6))


def test_get_many_decodes_on_several_threads_at_once() -> None:
    # Each load waits until two loads are running together: loaded one after the other,
    # the barrier times out and the read fails.
    barrier = threading.Barrier(2, timeout=10)
    where: list[int] = []

    def load(i: int) -> Callable[[], npt.NDArray[np.int64]]:
        def run() -> npt.NDArray[np.int64]:
            where.append(threading.get_ident())
            barrier.wait()
            return chunk(i)

        return run

    cache = ChunkCache()
    got = list(cache.get_many([(key(i), load(i)) for i in range(4)], threads=2))
    assert [int(c[0]) for c in got] == [0, 1, 2, 3]
    assert threading.get_ident() not in where


def test_a_chunk_evicted_before_its_turn_is_loaded_again() -> None:
    cache = ChunkCache(max_bytes=800)  # one chunk
    cache.get(key(1), loader(1))
    calls: list[int] = []
    # key 1 is cached when the read starts; loading key 0 evicts it before its turn.
    got = list(cache.get_many([(key(0), loader(0, calls)), (key(1), loader(1, calls))], threads=2))
    assert [int(c[0]) for c in got] == [0, 1]
    assert sorted(calls) == [0, 1]


def test_a_failing_load_fails_the_read_with_its_own_error() -> None:
    def corrupt() -> npt.NDArray[np.int64]:
        raise StoreCorruptError("chunk 7: checksum mismatch")

    cache = ChunkCache()
    requests = [(key(0), loader(0)), (key(7), corrupt), (key(8), loader(8))]
    with pytest.raises(StoreCorruptError, match="chunk 7"):
        list(cache.get_many(requests, threads=2))
    assert key(7) not in cache


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_decodes_on_threads_of_its_own() -> None:
    cache = ChunkCache()
    list(cache.get_many([(key(i), loader(i)) for i in range(4)], threads=2))  # parent's threads
    pid = os.fork()
    if pid == 0:  # the child has none of the parent's threads: it must start its own
        code = 1
        try:
            signal.alarm(10)  # a child waiting on threads that do not exist dies of SIGALRM
            child = ChunkCache()
            got = list(child.get_many([(key(i), loader(i)) for i in range(4)], threads=2))
            code = 0 if [int(c[0]) for c in got] == [0, 1, 2, 3] else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_threads_sharing_a_cache_keep_its_bound_and_its_count() -> None:
    """A loader's reader thread and a dataset read from the main thread share one reader's
    cache: entries and the byte count must survive both at once (an unlocked cache once
    popped from an empty dict, and counted four times what it held)."""
    cache = ChunkCache(max_bytes=10 * 8000)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for key in rng.integers(0, 40, 4000):
                chunk = cache.get((0, "x", int(key)), lambda k=int(key): np.full(1000, k, float))
                assert chunk[0] == key
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    held = sum(c.nbytes for c in cache._chunks.values())
    assert cache.stats.bytes == held <= cache.max_bytes
