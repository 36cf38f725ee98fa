"""Keep freed heap memory for reuse instead of handing it back to the kernel at every free.

PyTorch on the CPU allocates every activation through the C library's ``malloc``. glibc serves
allocations of a few MiB from its heap, but gives the heap's free top back to the kernel as soon
as it exceeds twice the largest block freed so far; a U-Net pass over a batch frees more than
that at once, so the next pass takes every page back as a fresh, zero-filled page fault. For
a diffusion training step on ETTh1 that was a quarter of the step's time, and over a third of
sampling's
(``benchmarks/bench_train.py``). :func:`keep_freed_memory` raises glibc's two thresholds once
per process, so freed blocks stay mapped and are reused.

What it costs: up to 1 GiB of free memory at the heap's top stays mapped (beyond that glibc
trims it as before), so memory freed after a peak is mostly not given back; and blocks up to
32 MiB now come from the heap, where a freed block under a live one leaves a hole that a later,
larger block may not fit, so a process's peak can be somewhat higher than with glibc's defaults.

A user who has tuned the allocator (glibc's ``MALLOC_*_`` variables or ``GLIBC_TUNABLES``, or
jemalloc or tcmalloc preloaded) keeps their settings; other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from typing import Final

__all__ = ["keep_freed_memory"]

# mallopt parameters (glibc's malloc.h) and their values here
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
# Blocks up to this size come from the heap (glibc's largest allowed threshold on 64-bit);
# larger ones stay separate mappings, returned whole when freed.
_MMAP_THRESHOLD: Final = 32 << 20
# Free memory at the heap's top kept mapped up to this much; past it glibc trims the top.
_TRIM_THRESHOLD: Final = 1 << 30


def _user_tuned() -> bool:
    """Whether the user has chosen the allocator's behaviour themselves."""
    env = os.environ
    if any(k.startswith("MALLOC_") and k.endswith("_") for k in env):
        return True
    if "glibc.malloc." in env.get("GLIBC_TUNABLES", ""):
        return True
    preload = env.get("LD_PRELOAD", "")
    return "jemalloc" in preload or "tcmalloc" in preload or "mimalloc" in preload


@functools.cache  # once per process; a second mallopt would change nothing anyway
def keep_freed_memory() -> bool:
    """Have glibc's ``malloc`` keep freed memory for reuse, once per process.

    Returns:
        True when the thresholds are (now or already) raised by this function; False on
        another platform or C library, or where the user tuned the allocator.
    """
    if not sys.platform.startswith("linux") or _user_tuned():
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl's mallopt does nothing)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; a refused value leaves glibc's own behaviour in place.
    return bool(
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )
