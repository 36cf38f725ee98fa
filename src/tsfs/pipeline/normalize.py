"""Per-row RevIN normalisation, as Time-LLM applies it before every prompt statistic.

``z = (x - mean) / sqrt(var_pop + eps)`` over the time axis of each row. The moments are reduced
in float64 and rounded once to float32, so the result does not depend on the batch a row came in
with (a row always gives the same bytes) and sits within a few float32 ulps of Time-LLM's own
float32 torch reduction.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["REVIN_EPS", "revin"]

REVIN_EPS = 1e-5


def revin(
    rows: npt.NDArray[np.floating],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Normalise each row to zero mean and (almost) unit population variance.

    Args:
        rows: (R, T) values; any float dtype (converted to float32 first, as stored).

    Returns:
        ``(z, mean, std)``: z (R, T) float32; mean and std (R,) float32, where
        ``std = sqrt(var_pop + 1e-5)``.
    """
    x = np.asarray(rows, dtype=np.float32)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=1)
    var = np.square(x64 - mean[:, None]).mean(axis=1)
    # values near float32's limit overflow to inf here: callers name such rows themselves
    with np.errstate(over="ignore", invalid="ignore"):
        mean32 = mean.astype(np.float32)
        std32 = np.sqrt(var + REVIN_EPS).astype(np.float32)
        z = (x - mean32[:, None]) / std32[:, None]
    return z.astype(np.float32, copy=False), mean32, std32
