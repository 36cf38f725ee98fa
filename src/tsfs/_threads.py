"""Thread limits shared by the numeric code.

Code that runs BLAS products from several threads at once, or whose products must round the
same whatever the batch (a multi-threaded BLAS splits a product by size), runs them on one
BLAS thread inside :func:`one_blas_thread`.
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager
from typing import Any

from threadpoolctl import ThreadpoolController

__all__ = ["one_blas_thread"]


@functools.cache
def _controller() -> ThreadpoolController:
    # Made once: it scans the loaded libraries (~0.6 ms); entering a limit through it is ~10 µs.
    return ThreadpoolController()


def one_blas_thread() -> AbstractContextManager[Any]:
    """A context in which BLAS (OpenBLAS, MKL) runs on one thread, for this process."""
    limit: AbstractContextManager[Any] = _controller().limit(limits=1, user_api="blas")
    return limit
