"""The CPU loop that turns coverage masks into pixels: one table read per pixel, compiled.

numpy's only gather, ``np.take``, wants its indices as ``intp``: composing a uint8 mask through
it first widens every level to 8 bytes, writes them out and reads them back, three times the
memory traffic of the pixels themselves, and on a CPU composing is bound by memory traffic.
This loop reads each level byte once and writes its pixel once (``benchmarks/bench_loader.py``:
~1.4x the RGB images per second of the ``np.take`` form, the same pixels). Compiled by numba on
first use in each process (~0.4 s); it holds no GIL, so threads compose side by side.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from tsfs.errors import InputError

__all__ = ["compose_into"]


@numba.njit(nogil=True, cache=False)
def _compose(masks: Any, table: Any, out: Any) -> None:
    b, v, h, w = masks.shape
    for i in range(b):
        for j in range(v):
            levels = table[j]
            for y in range(h):
                for x in range(w):
                    out[i, j, y, x] = levels[masks[i, j, y, x]]


def compose_into(
    masks: npt.NDArray[np.uint8], table: npt.NDArray[Any], out: npt.NDArray[Any]
) -> None:
    """Masks (B, V, H, W) uint8 → ``out`` (B, V, H, W) whole pixels: ``table[v, level]``.

    Args:
        masks: (B, V, H, W) uint8 coverage levels, C-contiguous.
        table: (V, 256) one whole pixel per level and variable (e.g. uint32: RGBA bytes).
        out: (B, V, H, W) of the table's dtype, C-contiguous, written in place.
    """
    # the loop checks no bounds: shapes that disagree would write past ``out``
    if masks.dtype != np.uint8 or masks.ndim != 4 or table.shape != (masks.shape[1], 256):
        raise InputError(f"masks (B, V, H, W) uint8 and a (V, 256) table; got {table.shape}")
    if out.shape != masks.shape or out.dtype != table.dtype:
        raise InputError(f"out must be {masks.shape} {table.dtype}, got {out.shape} {out.dtype}")
    _compose(masks, table, out)
