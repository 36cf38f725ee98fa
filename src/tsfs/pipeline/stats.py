"""Time-LLM's input statistics of a row: min, max, lower median, trend and top-k lags.

Time-LLM (``models/TimeLLM.py``) computes them on the RevIN row z: ``min``, ``max``,
``torch.median`` (the *lower* median, ``sort(z)[(T-1)//2]``), ``z.diff().sum()`` (which
telescopes to ``z[-1] - z[0]``; only ``> 0`` reads "upward") and the indices of the k largest
values of ``irfft(rfft(z) * conj(rfft(z)))`` — the circular autocorrelation, whose ``irfft`` is
called without ``n``, so odd rows give ``T - 1`` values.

Lags are ranked on the autocorrelation ``c`` of the raw row with its mean removed: that of
``z = (x - mean) / std`` is ``c / std²``, the same ranking without the RevIN pass. ``c`` is
computed in float64 and compared on a grid of ``c[0] / 2^24`` (float32's resolution at the
scale of the row's largest value): values on the same grid step tie, and ties go to the lower
lag. Time-LLM's own float32 numbers cannot tell such values apart either; the grid makes the
choice between them a rule (a period-2 row ties all its even lags, a constant row every lag),
and makes a row's lags independent of how ``c`` was computed, up to float64 rounding (~1e-13 of
``c[0]``) straddling a grid boundary.

Two ways to compute ``c`` share the selection:

- :func:`top_lags`, for independent rows: one float64 ``rfft``/``irfft`` per row.
- :func:`sliding_top_lags`, for the windows ``x[w : w + T]`` of one series (even T). Moving a
  window by one sample changes its circular autocorrelation ``S_w[k] = Σ_t x[w+t]·x[w+(t+k) mod T]``
  by ``S_{w+1}[k] - S_w[k] = (x[w+T] - x[w]) · (x[w+k] + x[w+T-k])`` (the linear part loses
  ``x[w]x[w+k]`` and gains ``x[w+T-k]x[w+T]``, the wrapped part loses ``x[w]x[w+T-k]`` and gains
  ``x[w+k]x[w+T]``). So ``S`` of every window is the FFT of an anchor window plus a cumulative
  sum of these updates: O(T) per window instead of two FFTs (~2x faster, selection included).
  Anchors sit every ``SLIDE_BLOCK`` positions of the series, whichever windows are asked for,
  so a window's values are always the same sequence of float64 operations. Removing a window's
  mean shifts all of its ``S_w[k]`` alike, which leaves differences between lags alone; the
  shift matters only for ``c[0]``, which sets the grid. Every window carries a bound on the
  float64 error of its values (drift of the sum included, typically ~1e-14 of ``c[0]``); a
  window whose bound exceeds ~1e-12 of ``c[0]`` (near-constant, or quiet beside loud stretches)
  takes the per-row FFT. For odd T Time-LLM's ``irfft`` is not the length-T circular
  autocorrelation: those windows take the per-row path too.

The autocorrelation is symmetric (``c[k] = c[n-k]``), so we rank the half ``0 … n/2`` and expand
each pair in ascending lag order: ties, mirrored or not, always go to the lower lag. Against
Time-LLM's own float32 computation the lag *sets* agree on every one of the 97k windows of
length 512 of ETTh1 (every start, every variable); the order inside a mirrored pair is rounding
noise in Time-LLM and ascending here.

Selection is exact and cheap: a few "anchor" rows propose their top half-lags, and every other
row checks, with one masked max, that its anchor's set is still its own top set (strictly
above every other half-lag on the grid); only rows that fail the check are ranked in full. The
check proves the set, so a row's lags never depend on its batch (NumPy's FFT of a row does not
either).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "ANCHOR_EVERY",
    "SLIDE_BLOCK",
    "lag_length",
    "series_center",
    "sliding_extrema",
    "sliding_order_statistic",
    "sliding_top_lags",
    "top_lags",
]

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

# Rows per FFT batch: small enough to stay in cache.
_FFT_ROWS = 1024
# One anchor row in this many proposes the top set for the rows after it (consecutive windows
# of one series keep their set ~97% of the time 32 windows apart on ETTh1). Callers batching
# windows of several variables keep each variable's rows in whole groups of this size.
ANCHOR_EVERY = 32
# Sliding autocorrelation: an FFT anchor every this many positions of the series (it bounds
# the float64 drift of the cumulative sum and the work for an isolated window; the block's
# first and middle windows propose its top sets), and blocks per chunk (V × chunk × (T/2 + 1)
# float64 stays in cache for T = 512; measured fastest).
SLIDE_BLOCK = 2 * ANCHOR_EVERY
_SLIDE_CHUNK_BLOCKS = 4
# Autocorrelations are ranked on a grid of c[0] / 2^24: float32's resolution at the scale of
# the row's largest value, finer than Time-LLM's own float32 numbers and far coarser than the
# float64 error of either way of computing them.
_GRID = 2.0**24
# A sliding value is used when its float64 error bound is at most this fraction of the
# window's c[0] (a float64 FFT's own is ~1e-15); other windows take the per-row FFT.
_SLIDE_TOLERANCE = 2.0**-40


def lag_length(T: int) -> int:
    """Length of Time-LLM's autocorrelation of a length-T row (``irfft`` without ``n``)."""
    return 2 * (T // 2)


def _half_autocorrelation(rows: F32, device: str | None = None) -> F64:
    """Float64 circular autocorrelation of rows (R, T) less their means, lags ``0 … n/2``
    (Time-LLM's ``irfft`` without ``n``): (R, n//2 + 1). NumPy's FFT on the CPU (one thread,
    and a row's values do not depend on its batch), torch's on another device."""
    n = lag_length(rows.shape[1])
    x = np.empty(rows.shape)
    np.subtract(rows, rows.mean(axis=1, dtype=np.float64, keepdims=True), out=x)
    if device is None or device == "cpu":
        spec = np.fft.rfft(x, axis=1)
        power = np.square(spec.real)
        power += np.square(spec.imag)
        return np.fft.irfft(power, n=n, axis=1)[:, : n // 2 + 1]
    import torch

    spec_t = torch.fft.rfft(torch.from_numpy(x).to(device), dim=1)
    power_t = spec_t.real.square() + spec_t.imag.square()
    half: F64 = torch.fft.irfft(power_t, n=n, dim=1)[:, : n // 2 + 1].cpu().numpy()
    return half


def _grid(values: F64, c0: F64, factor: F64) -> F64:
    """``values - c0`` (R, m) on each row's grid of ``1 / factor`` (R,): integral (R, m)."""
    return np.rint((values - c0[:, None]) * factor[:, None])


def _top_half(half: F64, k: int) -> I64:
    """Indices of the min(k, W) largest half-lags of each row (R, W), in decreasing value, equal
    values to the lower index (``argmax`` takes the first). ``half`` is restored."""
    R, W = half.shape
    rows = np.arange(R)
    top = np.empty((R, min(k, W)), dtype=np.int64)
    kept = np.empty(top.shape)
    for i in range(top.shape[1]):
        top[:, i] = half.argmax(axis=1)
        kept[:, i] = half[rows, top[:, i]]
        half[rows, top[:, i]] = -np.inf
    half[rows[:, None], top] = kept
    return top


def _order(values: F64, cand: I64, n: int, k: int) -> I32:
    """The k full lags of rows whose top half-lags are among ``cand`` (R, m; -1 = unused) with
    integral grid ``values`` (|values| < 2^31), by decreasing value, equal values to the lower
    lag."""
    R, m = cand.shape
    valid = cand >= 0
    # the value in the high 32 bits, n - lag in the low ones: one integer sort ranks by value,
    # then by lower lag (~5x cheaper than a lexsort); a half-lag's mirror n - cand has
    # n - lag = cand
    high = values.astype(np.int64) << 32
    keys = np.full((R, 2 * m), np.iinfo(np.int64).min)
    np.copyto(keys[:, :m], high | (n - cand), where=valid)
    np.copyto(keys[:, m:], high | cand, where=valid & (cand > 0) & (2 * cand < n))
    keys.sort(axis=1)
    return (n - (keys[:, : -k - 1 : -1] & 0xFFFFFFFF)).astype(np.int32)


def _propose(anchors: F64, n: int, k: int) -> I64:
    """Top sets of anchor rows (A, W): their leading half-lags that fill k full lags, in
    decreasing value; unused slots -1. The half-lags 0 and n/2 fill one lag, every other two."""
    top = _top_half(anchors, k)
    fills = np.cumsum(np.where((top > 0) & (2 * top < n), 2, 1), axis=1)
    used = np.concatenate([np.ones((top.shape[0], 1), bool), fills[:, :-1] < k], axis=1)
    return np.where(used, top, -1)


def _select(half: F64, c0: F64, proposal: I64, n: int, k: int) -> I32:
    """Top-k full lags of rows from their half autocorrelations.

    Args:
        half: (R, n//2 + 1) float64, each row's autocorrelation plus any constant; C-contiguous
            scratch, restored.
        c0: (R,) each row's own ``c[0]``: rows are ranked on the grid of ``c0 / 2^24``.
        proposal: (R, k) a top set for each row (:func:`_propose` of a similar row); a row
            whose values prove it (its members strictly above every other half-lag, on the
            grid) keeps it, every other row is ranked in full.
    """
    # The proposal is masked out in place through a flat view: of a strided array (the CPU
    # FFT's slice) reshape made a copy, the mask missed `half`, and no proposal was ever
    # proven, so every row was ranked in full.
    half = np.ascontiguousarray(half)
    R, W = half.shape
    with np.errstate(divide="ignore"):
        factor = np.where(c0 > 0, _GRID / c0, 0.0)
    first = half[:, 0].copy()
    valid = proposal >= 0
    # unused slots repeat the first half-lag (always used), so masking them masks nothing else
    safe = np.where(valid, proposal, proposal[:, :1])
    flat = half.reshape(-1)
    at = safe + (np.arange(R) * W)[:, None]
    vals = flat[at]
    flat[at] = -np.inf  # the rest, in place
    rest = half.max(axis=1)
    flat[at] = vals
    lowest = vals.min(axis=1)
    everything = np.isneginf(rest)  # the proposal holds every half-lag
    bounds = _grid(np.stack([lowest, np.where(everything, lowest, rest)], axis=1), first, factor)
    proven = (bounds[:, 0] > bounds[:, 1]) | everything
    cand = np.where(valid & proven[:, None], proposal, -1)
    values = _grid(vals, first, factor)
    redo = np.flatnonzero(~proven)
    if redo.size:
        grid = _grid(half[redo], first[redo], factor[redo])
        cand[redo] = _top_half(grid, k)
        values[redo] = np.take_along_axis(grid, cand[redo], axis=1)
    return _order(values, cand, n, k)


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
        half = _half_autocorrelation(rows[lo : lo + _FFT_ROWS], device)
        group = np.arange(half.shape[0]) // ANCHOR_EVERY
        proposal = _propose(half[::ANCHOR_EVERY], n, k)[group]
        out[lo : lo + _FFT_ROWS] = _select(half, half[:, 0].copy(), proposal, n, k)
    return out


def _gathered_top_lags(windows: F32, starts: I64, k: int) -> I32:
    """:func:`top_lags` of ``windows[:, starts]`` ((V, P, T) view), batch by batch: (N, V, k)."""
    V, _, T = windows.shape
    out = np.empty((starts.size, V, k), dtype=np.int32)
    # whole anchor groups per variable, so every group of rows is one variable's windows
    per_batch = max(1, _FFT_ROWS // V // ANCHOR_EVERY) * ANCHOR_EVERY
    for lo in range(0, starts.size, per_batch):
        batch = windows[:, starts[lo : lo + per_batch]]  # (V, n, T) float32 copy
        lags = top_lags(batch.reshape(-1, T), k).reshape(V, batch.shape[1], k)
        out[lo : lo + per_batch] = lags.transpose(1, 0, 2)
    return out


@dataclass(frozen=True)
class _Slide:
    """A series prepared for the sliding autocorrelation of its length-T windows.

    Arrays run over positions u of the series padded with B zeros (Lp = L + B), so a chunk of
    whole blocks may run past the last window; those rows are computed and never used.
    """

    series: F32  # (V, L)
    ahead: F64  # (V, Lp-h, h+1): ahead[v, u, j] = y[v, u + j]
    behind: F64  # (V, Lp-h, h+1): behind[v, Lp-1-T-u, j] = y[v, u + T - j]
    step: F64  # (V, Lp-T): y[u + T] - y[u], the change of a window's sum from u to u + 1
    # (V, Lp-T): bound on the float64 rounding of the update from u to u + 1, less that of the
    # partial sum it is added to: 4·|step|·max|y| over [u, u + T]
    update_error: F64
    center: F64  # (V, 1): y = series - center

    @classmethod
    def of(cls, series: F32, T: int, center: F64) -> _Slide:
        V, L = series.shape
        h = T // 2
        x = series.astype(np.float64)
        y = np.zeros((V, L + SLIDE_BLOCK))
        np.subtract(x, center, out=y[:, :L])  # centred: keeps the sums near the data's scale
        step = y[:, T:] - y[:, :-T]
        low, high = sliding_extrema(series, T + 1, np.arange(L - T))
        reach = np.zeros_like(step)
        reach[:, : L - T] = np.maximum(np.abs(high.T - center), np.abs(low.T - center))
        return cls(
            series=series,
            ahead=sliding_window_view(y, h + 1, axis=1),
            behind=sliding_window_view(np.ascontiguousarray(y[:, ::-1]), h + 1, axis=1),
            step=step,
            update_error=4.0 * np.abs(step) * reach,
            center=center,
        )

    def fill(self, buf: F64, p0: int) -> tuple[F64, F64]:
        """The autocorrelations of positions ``p0 + b·B + j`` into ``buf[j, v, b]``, each plus
        a constant; ``p0`` is a block start.

        Args:
            buf: (B, V, blocks, h+1) float64, C-contiguous.

        Returns:
            ``(c0, error)``, each (B, V, blocks): every row's ``c[0]`` and a bound on the
            float64 error of its values (and of ``c0``).
        """
        block, V, blocks, width = buf.shape
        T = 2 * (width - 1)
        span = blocks * block
        anchor_rows = sliding_window_view(self.series, T, axis=1)[:, p0 : span + p0 : block]
        buf[0] = _half_autocorrelation(anchor_rows.reshape(-1, T)).reshape(V, blocks, width)

        def blocked(a: F64) -> F64:
            """(V, span, ...) over positions p0 + i → (B, V, blocks, ...), a view."""
            return np.moveaxis(a.reshape(V, blocks, block, *a.shape[2:]), 2, 0)

        # row j > 0 first holds the update from the position before, then a cumulative sum
        # down the rows gives every position's values (the anchor's plus the updates)
        i0 = self.behind.shape[1] - 1 - (width - 1) - p0  # behind index of u = p0
        behind = self.behind[:, i0 - span + 1 : i0 + 1][:, ::-1]
        step = blocked(self.step[:, p0 : p0 + span])
        np.add(blocked(self.ahead[:, p0 : p0 + span])[:-1], blocked(behind)[:-1], out=buf[1:])
        buf[1:] *= step[:-1, ..., None]
        for j in range(1, block):
            np.add(buf[j - 1], buf[j], out=buf[j])

        def running(updates: F64) -> F64:
            """Sums of the updates (B, V, blocks) of the rows before each row of a block."""
            out = np.zeros_like(updates)
            np.cumsum(updates[:-1], axis=0, out=out[1:])
            return out

        # A row's values exceed its own autocorrelation by T·(a² - a0²), a and a0 the means
        # of its window and of its block's first one: with d = T·(a - a0), d·(2·a0 + d / T).
        a0 = anchor_rows.mean(axis=2, dtype=np.float64) - self.center
        d = running(step)
        reach = 2 * np.abs(a0) + np.abs(d) / T
        shift = d * (2 * a0 + d / T)
        c0 = buf[..., 0] - shift
        # float64 error: the anchor's FFT, then every partial sum (at most c[0] + |shift| in
        # magnitude) and update of the block so far, and the rounding of d and the shift
        size = np.abs(buf[..., 0]) + np.abs(shift)
        size[0] = c0[0] * np.log2(T)
        error = np.cumsum(size, axis=0) + running(blocked(self.update_error[:, p0 : p0 + span]))
        rank = np.arange(block)[:, None, None]
        error += reach * (rank * running(np.abs(step)) + 3 * np.abs(d))
        return c0, 2 * np.finfo(np.float64).eps * error


def series_center(series: F32) -> F64:
    """(V, 1) float64 mean of each variable of a (V, L) series: what :func:`sliding_top_lags`
    centres it on, to be computed on the whole series when only a stretch is passed."""
    center: F64 = series.astype(np.float64).mean(axis=1, keepdims=True)
    return center


def sliding_top_lags(series: F32, T: int, starts: I64, k: int, *, center: F64 | None = None) -> I32:
    """:func:`top_lags` of every window ``series[:, s : s + T]``, without an FFT per window.

    Even T: the sliding autocorrelation (module docstring), over whole blocks of
    ``SLIDE_BLOCK`` positions holding a requested start (a few windows of a long series cost at
    most a block each). A window whose float64 values may be off by more than ~1e-12 of its
    ``c[0]`` (a near-constant window, or a quiet one beside loud ones) takes the per-row FFT.
    Odd T: :func:`top_lags` of the gathered windows.

    Args:
        series: (V, L) float32.
        starts: (N,) window starts.
        center: (V, 1) what the sums are centred on (default :func:`series_center` of
            ``series``). A stretch of a longer series that starts on a multiple of
            ``SLIDE_BLOCK``, given the longer series' centre, gives its windows the values
            the whole series would.

    Returns:
        (N, V, k) int32, equal to ``top_lags`` of each window up to float64 rounding.
    """
    V = series.shape[0]
    windows = sliding_window_view(series, T, axis=1)  # (V, L-T+1, T), a view
    if T % 2 or starts.size == 0:
        return _gathered_top_lags(windows, starts, k)
    out = np.empty((starts.size, V, k), dtype=np.int32)
    block, width = SLIDE_BLOCK, T // 2 + 1
    slide = _Slide.of(series, T, series_center(series) if center is None else center)
    order = np.argsort(starts, kind="stable")
    ordered = starts[order]
    blocks = np.unique(ordered // block)
    scratch = np.empty(block * V * _SLIDE_CHUNK_BLOCKS * width)
    loose_w, loose_v = [], []
    # runs of consecutive blocks, cut into chunks
    for run in np.split(blocks, np.flatnonzero(np.diff(blocks) != 1) + 1):
        for part in np.split(run, range(_SLIDE_CHUNK_BLOCKS, run.size, _SLIDE_CHUNK_BLOCKS)):
            nb, p0 = part.size, int(part[0]) * block
            buf = scratch[: block * V * nb * width].reshape(block, V, nb, width)
            c0, error = slide.fill(buf, p0)
            # each block's first and middle windows propose the top sets of its halves
            halves = buf[:: block // 2].reshape(-1, width)
            proposal = np.repeat(_propose(halves, T, k).reshape(2, V, nb, -1), block // 2, axis=0)
            # rows of the requested windows, window-major: position p0 + b·B + j is buf[j, :, b]
            i0, i1 = np.searchsorted(ordered, [p0, p0 + nb * block])
            at = ordered[i0:i1] - p0
            rows = (
                ((at % block)[:, None] * V + np.arange(V)) * nb + (at // block)[:, None]
            ).ravel()
            half, c0 = buf.reshape(-1, width), c0.reshape(-1)
            proposal = proposal.reshape(half.shape[0], -1)
            if rows.size == half.shape[0] and (at == np.arange(at.size)).all():
                lags = _select(half, c0, proposal, T, k)[rows]  # every position: no copy
            else:
                lags = _select(half[rows], c0[rows], proposal[rows], T, k)
            out[order[i0:i1]] = lags.reshape(at.size, V, k)
            t, v = np.divmod(
                np.flatnonzero(error.reshape(-1)[rows] > _SLIDE_TOLERANCE * c0[rows]), V
            )
            loose_w.append(order[i0:i1][t])
            loose_v.append(v)
    w, v = np.concatenate(loose_w), np.concatenate(loose_v)
    if w.size:
        out[w, v] = top_lags(windows[v, starts[w]], k)
    return out


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
