"""The recycler of big output arrays: reuse only what nobody holds."""

from __future__ import annotations

import os
import pickle
import signal
import threading

import numpy as np
import pytest

from tsfs._buffers import Recycler


def test_an_array_is_reused_only_once_nothing_holds_it() -> None:
    recycler = Recycler(keep=2)
    first = recycler.empty((4, 3), np.uint8)
    first[:] = 7
    second = recycler.empty((4, 3), np.uint8)  # `first` is held: new memory
    assert not np.shares_memory(first, second)
    view = first[1:]
    address = first.ctypes.data
    del first
    assert recycler.empty((4, 3), np.uint8).ctypes.data != address  # a view still holds it
    del view
    assert recycler.empty((4, 3), np.uint8).ctypes.data == address


def test_fewer_rows_get_a_view_and_other_kinds_new_memory() -> None:
    recycler = Recycler(keep=1)
    address = recycler.empty((8, 5), np.float32).ctypes.data
    short = recycler.empty((3, 5), np.float32)  # a shorter last batch
    assert short.shape == (3, 5)
    assert short.flags.c_contiguous
    assert short.ctypes.data == address
    del short
    for shape, dtype in (((9, 5), np.float32), ((8, 4), np.float32), ((8, 5), np.float64)):
        other = recycler.empty(shape, dtype)
        assert other.shape == shape
        assert other.dtype == dtype
        del other


def test_threads_are_never_handed_the_same_array() -> None:
    recycler = Recycler(keep=4)
    clashes: list[int] = []
    start = threading.Barrier(4)

    def use(mark: int) -> None:
        start.wait()
        for _ in range(200):
            array = recycler.empty((64, 64), np.int64)
            array.fill(mark)
            if not (array == mark).all():  # another thread wrote into it meanwhile
                clashes.append(mark)
            del array

    threads = [threading.Thread(target=use, args=(m,)) for m in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clashes == []


def test_a_pickled_recycler_starts_empty() -> None:
    recycler = Recycler(keep=3)
    kept = recycler.empty((1000, 10), np.float64)
    again = pickle.loads(pickle.dumps(recycler))
    assert len(pickle.dumps(recycler)) < 1000  # no arrays travel
    assert again.keep == 3
    assert not np.shares_memory(again.empty((1000, 10), np.float64), kept)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_is_not_stuck_on_a_lock_held_at_fork() -> None:
    recycler = Recycler(keep=1)
    with recycler._lock:  # another thread would be inside empty() at the fork
        pid = os.fork()
        if pid == 0:  # the child: must not wait for a lock nobody will release
            try:
                signal.alarm(10)  # a child stuck on the lock dies of SIGALRM, failing the test
                recycler.empty((4, 4), np.uint8)
            finally:
                os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
