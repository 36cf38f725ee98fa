"""Big output arrays handed out again once nothing refers to them.

A fresh array of tens of megabytes costs the kernel a page fault and a zeroed page per 4 KiB
on first touch: for a batch of composed images, about a third as much again as composing
them; for a batch of rendered masks, ~5% of rendering. Code that fills such a batch over and
over asks a :class:`Recycler` for its memory instead of ``np.empty``.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Recycler"]


_LIVE: weakref.WeakSet[Recycler] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A lock held by another thread at fork() would stay held in the child forever.
    for recycler in list(_LIVE):
        recycler._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Recycler:
    """Arrays handed out again once nothing refers to them.

    An array is reused only when its reference count shows that no array, tensor, view or
    variable anywhere still holds it (every view of it refers to it), so a batch the caller
    keeps is never overwritten; the caller then simply gets a new one. A request for fewer
    rows than a free array has gets a view of its leading rows (a shorter last batch).

    Args:
        keep: the most arrays kept (each as large as the largest asked for of its kind).
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._arrays: list[npt.NDArray[Any]] = []
        self._lock = threading.Lock()  # two threads must never be handed the same array
        _LIVE.add(self)

    def __reduce__(self) -> tuple[type[Recycler], tuple[int]]:
        return Recycler, (self.keep,)  # pickles empty: arrays here mean nothing elsewhere

    def empty(self, shape: tuple[int, ...], dtype: npt.DTypeLike) -> npt.NDArray[Any]:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype``."""
        with self._lock:
            return self._empty(shape, np.dtype(dtype))

    def _empty(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> npt.NDArray[Any]:
        for i in range(len(self._arrays)):
            # two references: the list's and getrefcount's own argument
            if sys.getrefcount(self._arrays[i]) == 2:
                free = self._arrays[i]
                if free.dtype == dtype and free.shape[1:] == shape[1:] and free.ndim == len(shape):
                    if shape[0] == free.shape[0]:
                        return free
                    if shape[0] < free.shape[0]:
                        return free[: shape[0]]
                del self._arrays[i]  # free, but of another kind or too small: let it go
                break
        fresh = np.empty(shape, dtype=dtype)
        if len(self._arrays) < self.keep:
            self._arrays.append(fresh)
        return fresh
