"""Thread limits shared by the numeric code.

Code that runs BLAS products from several threads at once, or whose products must round the
same whatever the batch (a multi-threaded BLAS splits a product by size), runs them on one
BLAS thread inside :func:`one_blas_thread`. Code that runs torch work side by side on threads
of its own gives each one torch thread inside :func:`one_torch_thread`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from threadpoolctl import ThreadpoolController

__all__ = ["one_blas_thread", "one_torch_thread"]


@functools.cache
def _controller() -> ThreadpoolController:
    # Made once: it scans the loaded libraries (~0.6 ms); entering a limit through it is ~10 µs.
    return ThreadpoolController()


def one_blas_thread() -> AbstractContextManager[Any]:
    """A context in which BLAS (OpenBLAS, MKL) runs on one thread, for this process."""
    limit: AbstractContextManager[Any] = _controller().limit(limits=1, user_api="blas")
    return limit


_torch_lock = threading.Lock()
_torch_inside = 0
_torch_before = 1


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """A context in which torch runs one intra-op thread (read by threads started inside it),
    and after which torch's thread count is as it was once the last such context is done.

    Contexts may be entered from several threads at once: one that saved the count after
    another had set it to 1, then finished last, would otherwise leave it at 1.
    """
    import torch  # the feature and image code never needs it

    global _torch_inside, _torch_before
    with _torch_lock:
        if not _torch_inside:
            _torch_before = torch.get_num_threads()
            torch.set_num_threads(1)
        _torch_inside += 1
    try:
        yield
    finally:
        with _torch_lock:
            _torch_inside -= 1
            if not _torch_inside:
                torch.set_num_threads(_torch_before)
