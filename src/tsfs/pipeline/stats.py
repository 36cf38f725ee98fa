"""Time-LLM's input statistics of a row: min, max, lower median, trend and top-k lags.

Time-LLM (``models/TimeLLM.py``) computes them on the RevIN row z: ``min``, ``max``,
``torch.median`` (the *lower* median, ``sort(z)[(T-1)//2]``), ``z.diff().sum()`` (which
telescopes to ``z[-1] - z[0]``; only ``> 0`` reads "upward") and the indices of the k largest
values of ``irfft(rfft(z) * conj(rfft(z)))`` — the circular autocorrelation, whose ``irfft`` is
called without ``n``, so odd rows give ``T - 1`` values.

Lags are computed here from the *raw* row: the autocorrelation of ``(x - mean) / std`` is that
of ``x`` with its mean removed, scaled by ``1 / std²``, so dropping the DC bin of ``x``'s
spectrum gives the same ranking without the RevIN pass. The row is shifted by its first value
before the float32 FFT so large offsets do not swamp the rounding; the DC bin absorbs the shift.

The autocorrelation is symmetric (``c[k] = c[n-k]``), so its two mirrored values are one number
that float rounding splits. We rank the half ``0 … n/2`` and expand each pair in ascending lag
order: ties, mirrored or not, always go to the lower lag. Against Time-LLM's own float32
computation on all 95k ETTh1 rows of length 512 the lag *sets* agree on every row; the order
inside a mirrored pair is rounding noise in Time-LLM and ascending here.

Selection is exact and cheap: the top half-lags of a few "anchor" rows come from ``topk``, and
every other row checks, with one masked max, that its neighbouring anchor's set is still its
own top set (strictly larger than every other half-lag); only rows that fail the check are
ranked in full. The check proves the set, so a row's lags never depend on its batch (and the
CPU FFT is batch-invariant, checked).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

__all__ = [
    "ANCHOR_EVERY",
    "lag_length",
    "sliding_extrema",
    "sliding_order_statistic",
    "top_lags",
]

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]

# Rows per FFT batch: small enough to stay in cache (measured ~2× faster than one batch).
_FFT_ROWS = 1024
# One anchor row in this many proposes the top set for the rows after it (consecutive windows
# of one series keep their set ~98% of the time 16 windows apart on ETTh1). Callers batching
# windows of several variables keep each variable's rows in whole groups of this size.
ANCHOR_EVERY = 16


def lag_length(T: int) -> int:
    """Length of Time-LLM's autocorrelation of a length-T row (``irfft`` without ``n``)."""
    return 2 * (T // 2)


def _top_half(half: F32, k: int) -> I64:
    """Indices of the k largest half-lags of each row (R, W); equal values to the lower index."""
    width = half.shape[1]
    kk = min(k + 1, width)
    vals, idx = torch.topk(torch.from_numpy(half), kk, dim=1)
    idx_np = idx.numpy()
    if kk > k:
        # topk leaves the order of equal values open: re-rank rows whose k-th and (k+1)-th
        # values tie with a stable sort, so the lower lag wins.
        tied = np.flatnonzero((vals[:, k - 1] == vals[:, k]).numpy())
        if tied.size:
            idx_np[tied] = np.argsort(-half[tied], axis=1, kind="stable")[:, :kk]
    return idx_np[:, :k].astype(np.int64)


def _order(half: F32, cand: I64, n: int, k: int) -> npt.NDArray[np.int32]:
    """The k full lags of rows whose top half-lags are among ``cand`` (R, m; -1 = unused),
    by decreasing autocorrelation, equal values to the lower lag."""
    valid = cand >= 0
    safe = np.where(valid, cand, 0)
    vals = np.where(valid, np.take_along_axis(half, safe, axis=1), -np.inf)
    mirror = n - safe
    paired = valid & (safe > 0) & (mirror > safe)
    lags = np.concatenate([np.where(valid, safe, n), np.where(paired, mirror, n)], axis=1)
    score = np.concatenate([vals, np.where(paired, vals, -np.inf)], axis=1)
    order = np.lexsort((lags, -score), axis=1)[:, :k]
    return np.take_along_axis(lags, order, axis=1).astype(np.int32)


def _needed(half: F32, top: I64, n: int, k: int) -> I64:
    """The leading half-lags of ``top`` (R, k, in decreasing value) that fill k full lags;
    the rest are set to -1. The half-lags 0 and n/2 fill one lag, every other two."""
    fills = np.cumsum(np.where((top > 0) & (2 * top < n), 2, 1), axis=1)
    used = np.concatenate([np.ones((top.shape[0], 1), bool), fills[:, :-1] < k], axis=1)
    return np.where(used, top, -1)


def _select(half: F32, n: int, k: int) -> npt.NDArray[np.int32]:
    """Top-k full lags of rows from their half autocorrelations (R, n//2 + 1) float32
    (used as scratch and restored)."""
    R = half.shape[0]
    anchors = np.arange(0, R, ANCHOR_EVERY)
    proposal = _needed(half, _top_half(half[anchors], k)[np.arange(R) // ANCHOR_EVERY], n, k)
    valid = proposal >= 0
    safe = np.where(valid, proposal, 0)
    vals = np.take_along_axis(half, safe, axis=1)
    lowest = np.where(valid, vals, np.inf).min(axis=1)
    np.put_along_axis(half, safe, -np.inf, axis=1)  # the rest, in place: half is scratch
    proven = lowest > half.max(axis=1)
    np.put_along_axis(half, safe, vals, axis=1)
    cand = np.where(proven[:, None], proposal, -1)
    redo = np.flatnonzero(~proven)
    if redo.size:
        cand[redo] = _top_half(half[redo], k)
    return _order(half, cand, n, k)


def top_lags(
    rows: npt.NDArray[np.float32], k: int, *, device: str | None = None
) -> npt.NDArray[np.int32]:
    """Indices of the k largest circular autocorrelations of each row (Time-LLM's lags).

    Args:
        rows: (R, T) float32 raw or RevIN rows (the result is the same up to float ties).
        k: number of lags; at most ``lag_length(T)``.
        device: torch device for the FFT; None means the CPU.

    Returns:
        (R, k) int32, in decreasing autocorrelation, ties to the lower lag.
    """
    R, T = rows.shape
    n = lag_length(T)
    out = np.empty((R, k), dtype=np.int32)
    for lo in range(0, R, _FFT_ROWS):
        x = torch.from_numpy(np.ascontiguousarray(rows[lo : lo + _FFT_ROWS])).to(device or "cpu")
        corr = torch.fft.irfft(_power(x), n=n, dim=1)[:, : n // 2 + 1]
        out[lo : lo + _FFT_ROWS] = _select(corr.cpu().contiguous().numpy(), n, k)
    return out


def _spectrum_power(y: torch.Tensor) -> torch.Tensor:
    spec = torch.fft.rfft(y, dim=1)
    if not spec.is_cpu:
        power: torch.Tensor = spec.real.square() + spec.imag.square()
        return power
    c = spec.numpy()  # numpy's power of a complex64 array is ~2x cheaper than torch's
    with np.errstate(over="ignore", under="ignore"):
        p = np.square(c.real)
        p += np.square(c.imag)
    return torch.from_numpy(p)


def _power(x: torch.Tensor) -> torch.Tensor:
    """Power spectrum of rows shifted by their first value, DC bin dropped: (R, T//2 + 1).

    Rows whose float32 power would overflow or underflow are scaled by an exact power of two
    first; that scales all of a row's autocorrelations alike, so its ranking is unchanged.
    """
    y = x - x[:, :1]
    p = _spectrum_power(y)
    peak = p.amax(dim=1)
    bad = torch.nonzero(~(peak < 1e30) | (peak < 1e-30)).flatten()
    if bad.numel():
        yb = y[bad]
        exponent = torch.frexp(yb.abs().amax(dim=1, keepdim=True)).exponent
        p[bad] = _spectrum_power(torch.ldexp(yb, -exponent.to(yb.dtype)))
    p[:, 0] = 0.0
    return p


def sliding_extrema(series: F32, T: int, starts: I64) -> tuple[F32, F32]:
    """Min and max of every window ``series[s : s + T]`` (van Herk / Gil-Werman, O(L)).

    Args:
        series: (V, L) float32.
        starts: (N,) window starts.

    Returns:
        ``(min, max)``, each (N, V) float32, exactly the windows' own min and max.
    """
    V, L = series.shape
    nblk = -(-L // T)
    out = []
    for fill, acc in ((np.inf, np.minimum), (-np.inf, np.maximum)):
        padded = np.full((V, nblk * T), fill, dtype=np.float32)
        padded[:, :L] = series
        blocks = padded.reshape(V, nblk, T)
        # prefix[t]: over block start … t; suffix[t]: over t … block end. A window [s, s+T)
        # is suffix[s] joined with prefix[s+T-1] of the next block.
        prefix = acc.accumulate(blocks, axis=2).reshape(V, -1)
        suffix = acc.accumulate(blocks[:, :, ::-1], axis=2)[:, :, ::-1].reshape(V, -1)
        out.append(acc(suffix[:, starts], prefix[:, starts + T - 1]).T)
    return out[0], out[1]


def sliding_order_statistic(series: F32, T: int, starts: I64, rank: int) -> F32:
    """The ``rank``-th smallest value (0-based) of every window ``series[s : s + T]``.

    A wavelet matrix over the ranks of each series answers every window with one descent of
    ``log2 L`` levels (vectorised over windows) instead of a partial sort of T values.

    Args:
        series: (V, L) float32.
        starts: (N,) window starts.

    Returns:
        (N, V) float32, exactly the selected values.
    """
    V, L = series.shape
    bits = max(1, (L - 1).bit_length())
    order = np.argsort(series, axis=1, kind="stable")
    ranked = np.empty_like(order)
    np.put_along_axis(ranked, order, np.arange(L)[None, :], axis=1)
    # zeros[b, v, i]: how many of the first i entries of level b have bit b clear
    zeros = np.zeros((bits, V, L + 1), dtype=np.int64)
    level = ranked
    position = np.arange(L)
    for b in range(bits - 1, -1, -1):
        clear = ((level >> b) & 1) == 0
        before = zeros[b, :, 1:]
        np.cumsum(clear, axis=1, out=before)
        # stable partition, entries with the bit clear first: a clear entry goes to its count
        # of clear entries so far, a set one after all clear ones by its count of set ones
        dest = np.where(clear, before - 1, before[:, -1:] + position - before)
        nxt = np.empty_like(level)
        np.put_along_axis(nxt, dest, level, axis=1)
        level = nxt
    base = np.arange(V)[None, :] * (L + 1)
    lo = np.broadcast_to(starts[:, None] + base, (starts.size, V)).copy()
    hi = lo + T
    k = np.full(lo.shape, rank, dtype=np.int64)
    found = np.zeros(lo.shape, dtype=np.int64)
    for b in range(bits - 1, -1, -1):
        z = zeros[b].reshape(-1)
        zlo, zhi = z[lo], z[hi]
        left = k < zhi - zlo
        nclear = z[base + L]
        k = np.where(left, k, k - (zhi - zlo))
        lo = np.where(left, base + zlo, base + nclear + (lo - base) - zlo)
        hi = np.where(left, base + zhi, base + nclear + (hi - base) - zhi)
        found |= (~left).astype(np.int64) << b
    return np.take_along_axis(series, order, axis=1)[np.arange(V)[None, :], found]
