"""Per-row features behind ``tsfs prep features``: Time-LLM statistics and DWT prompt features.

Two entry points compute the same values:

- :func:`compute_rows` for independent rows (UEA samples, any rows): RevIN, a batched wavelet
  transform (PyWavelets on the CPU, ptwt on a torch device) and batched FFT lags.
- :func:`compute_windows` for the stride-1 windows of one long series (the TSLib splits). The
  interior wavelet coefficients of every window are samples of one undecimated transform of the
  whole series at the window's phase, and RevIN is affine per row, so band sums and energies
  come from float64 prefix sums per phase plus a few explicit boundary coefficients per window
  (:class:`tsfs.pipeline.dwt.WindowPlan`). Min, max and lower median are exact selections
  over the series (:mod:`tsfs.pipeline.stats`), mapped through the row's RevIN with revin's own
  float32 operations (monotone, so ``min(z) = (min(x) − m) / s`` as float32 rounds it); lags
  come from the sliding autocorrelation of the raw windows
  (:func:`tsfs.pipeline.stats.sliding_top_lags`), ranked as on the per-row path.

Every stored output and its per-row shape and dtype is listed by :func:`feature_schema`;
:func:`pool_window` derives the per-window values of the public SWT-Time ``DWTPromptGenerator``
from stored per-row values (see :mod:`tsfs.pipeline.dwt` for the formulas).

Trend: stored as ``z[-1] − z[0]`` in float32 (upward iff > 0). Time-LLM's ``z.diff().sum()``
telescopes to the same number in exact arithmetic, but its float32 sum of T−1 rounded
differences is rounding noise of either sign on a row whose ends are equal. Measured on the
95,221 distinct ETTh1 rows of length 512 (all windows of the three splits, pred_len 96): 934
have ``z[-1] == z[0]``, Time-LLM calls 377 of them "upward", and those are the only rows where
the trend words differ. The stored value says "downward" for all of them, as the formula does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from tsfs._threads import one_blas_thread
from tsfs.errors import InputError
from tsfs.pipeline.dwt import (
    BandPrimitives,
    WindowPlan,
    band_lengths,
    derive_features,
    pool_primitives,
    resolve_level,
    row_primitives,
    wavedec_rows,
    window_plan,
)
from tsfs.pipeline.normalize import REVIN_EPS, revin
from tsfs.pipeline.stats import (
    SLIDE_BLOCK,
    sliding_extrema,
    sliding_order_statistic,
    sliding_top_lags,
    top_lags,
)
from tsfs.specs import FeatureSpec

__all__ = ["compute_rows", "compute_windows", "feature_schema", "pool_window"]

Arrays = dict[str, npt.NDArray[np.generic]]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)

# Positions per product of the explicit rows: the copied windows of one product stay in cache
# (measured ~25% faster than 4096 at T=512).
_EXPLICIT_BLOCK = 512
# Rows per batch of the per-row work: bounds memory and keeps a batch in cache.
_ROW_BATCH = 4096
# A shared-transform sum is trusted when it is at least 1e9 times its float64 rounding bound
# (relative error < 1e-9); other rows (constant or near-constant windows, tiny bands far from
# the series' scale) are recomputed on the per-row path, which is exact for them.
_CONDITION = 1e9 * np.finfo(np.float64).eps


def feature_schema(spec: FeatureSpec, T: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Name → (per-row trailing shape, dtype) of every output for rows of length T.

    Moments (``band_sum``, ``band_energy`` = sum of squares) are float64 so pooled values are
    exact derivations; ``band_count`` is int32, ``lags`` int32, ``dominant`` int8, all other
    values float32.
    """
    nb = resolve_level(spec, T) + 1
    scalar: tuple[int, ...] = ()
    band = (nb,)
    schema: dict[str, tuple[tuple[int, ...], np.dtype]] = {
        "revin_mean": (scalar, _F32),
        "revin_std": (scalar, _F32),
        "min": (scalar, _F32),
        "max": (scalar, _F32),
        "median": (scalar, _F32),
        "trend": (scalar, _F32),
        "lags": ((spec.top_k,), np.dtype(np.int32)),
        "band_count": (band, np.dtype(np.int32)),
        "band_sum": (band, _F64),
        "band_energy": (band, _F64),
        "energy_ratio": (band, _F32),
        "entropy": (scalar, _F32),
        "entropy_norm": (scalar, _F32),
        "dominant": (scalar, np.dtype(np.int8)),
        "band_trend": (band, _F32),
        "consistency": (scalar, _F32),
        "band_std": (band, _F32),
        "snr_db": (scalar, _F32),
        "volatility": (scalar, _F32),
        "difficulty": (scalar, _F32),
    }
    if spec.store_coefficients:
        total = sum(band_lengths(spec.wavelet, spec.mode, T, nb - 1))
        schema["coefficients"] = ((total,), _F32)
    return schema


def _allocate(spec: FeatureSpec, T: int, lead: tuple[int, ...]) -> Arrays:
    return {
        name: np.empty(lead + shape, dtype=dtype)
        for name, (shape, dtype) in feature_schema(spec, T).items()
    }


def _finite_rows(rows: npt.ArrayLike, what: str) -> npt.NDArray[np.float32]:
    x = np.asarray(rows, dtype=np.float32)
    if x.ndim != 2 or 0 in x.shape:
        raise InputError(f"{what} must be a non-empty 2-D array, got shape {x.shape}")
    bad = ~np.isfinite(x)
    if bad.any():
        r, t = np.argwhere(bad)[0]
        raise InputError(
            f"{what} contain NaN or infinite values (first at [{r}, {t}]); "
            "fill or drop them first (option --nan)"
        )
    return x


def _put_dwt(out: Arrays, sl: slice | npt.NDArray[np.intp], p: BandPrimitives) -> None:
    out["band_count"][sl] = p.count
    out["band_sum"][sl] = p.total
    out["band_energy"][sl] = p.energy
    for name, value in derive_features(p).items():
        out[name][sl] = value


def compute_rows(rows: npt.ArrayLike, spec: FeatureSpec, *, device: str | None = None) -> Arrays:
    """Features of independent rows.

    Args:
        rows: (R, T) values (converted to float32, as stored and hashed).
        spec: what to compute.
        device: None computes on the CPU with PyWavelets and torch's CPU FFT; a torch device
            (``"cuda"``, ``"cpu"``…) runs the wavelet transform (ptwt) and the lag FFTs there.

    Returns:
        One array per :func:`feature_schema` entry, shaped (R, *shape).
    """
    x = _finite_rows(rows, "rows")
    R, T = x.shape
    level = resolve_level(spec, T)
    out = _allocate(spec, T, (R,))
    mid = (T - 1) // 2
    for lo in range(0, R, _ROW_BATCH):
        sl = slice(lo, min(lo + _ROW_BATCH, R))
        z, mean32, std32 = revin(x[sl])
        out["revin_mean"][sl], out["revin_std"][sl] = mean32, std32
        out["min"][sl] = z.min(axis=1)
        out["max"][sl] = z.max(axis=1)
        out["median"][sl] = np.partition(z, mid, axis=1)[:, mid]
        out["trend"][sl] = z[:, -1] - z[:, 0]
        out["lags"][sl] = top_lags(x[sl], spec.top_k, device=device)
        # The transform of RevIN in float64, as the shared transform of overlapping windows
        # computes it: z's float32 rounding is ~1e-7 of the row's scale, which on a band
        # that small moved its std and SNR by up to 1e-4 relative between the two paths.
        z64 = (x[sl].astype(np.float64) - mean32[:, None]) / std32[:, None]
        coeffs = wavedec_rows(z64, spec.wavelet, spec.mode, level, device=device)
        _put_dwt(out, sl, row_primitives(coeffs))
        if spec.store_coefficients:
            out["coefficients"][sl] = np.concatenate(coeffs, axis=1)
    return out


def _window_sums(
    values: F64, first: npt.NDArray[np.int64], count: int, step: int, block: int
) -> tuple[F64, F64]:
    """``Σ_{k<count} values[v, first + step·k]`` for every start and variable.

    Prefix sums restart every ``block`` samples (a multiple of ``step``, at least the span of
    one window), so a sum combines at most three prefix values of one or two blocks: its
    rounding is local and depends only on the series, never on which windows are asked for.

    Args:
        values: (V, M) float64.
        first: (N,) index of each window's first term.

    Returns:
        ``(sums, bound)``, both (N, V): the sums and the magnitude of the prefix values they
        were formed from (the sum's rounding error is a few ulps of ``bound``).
    """
    V, M = values.shape
    N = first.shape[0]
    if count == 0:
        return np.zeros((N, V)), np.zeros((N, V))
    nblk = -(-M // block)
    padded = np.zeros((V, nblk * block))
    padded[:, :M] = values
    inc4 = padded.reshape(V, nblk, block // step, step).cumsum(axis=2)
    exc4 = np.zeros_like(inc4)
    exc4[:, :, 1:] = inc4[:, :, :-1]
    inc, exc = inc4.reshape(V, -1), exc4.reshape(V, -1)
    last = first + step * (count - 1)
    block_end = (first // block + 1) * block - step + first % step
    cross = last > block_end
    head = np.where(cross, inc[:, block_end], 0.0)
    a, b = inc[:, last], exc[:, first]
    return (a - b + head).T, (np.abs(a) + np.abs(b) + np.abs(head)).T


def _explicit(
    x: npt.NDArray[np.float32], starts: npt.NDArray[np.int64], plan: WindowPlan, block: int
) -> F64:
    """E·x of the plan's explicit rows for every window: (N, V, n_exp).

    The rows weigh the first ``k_left`` and last ``k_right`` values of a window; each side is
    one BLAS product per variable, over the rows with weights on that side (half of them for
    the non-periodic modes) and every position of each ``block`` of positions holding a
    requested start. Every product thus has the same shape and data whichever windows were
    asked for (its rounding depends on where a row falls in the product), and runs on one BLAS
    thread for the same reason.
    """
    L, V = x.shape
    T = plan.T
    positions = L - T + 1
    xt = x.T.astype(np.float64)  # (V, L)
    sides = []
    for first, w in (
        (0, plan.explicit[:, : plan.k_left]),
        (T - plan.k_right, plan.explicit[:, plan.k_left :]),
    ):
        used = np.flatnonzero(np.abs(w).max(axis=1, initial=0.0) > 0)
        if used.size:
            sides.append((first, np.ascontiguousarray(w[used].T), used))
    out = np.zeros((starts.size, V, plan.explicit.shape[0]))
    blocks = starts // block
    with one_blas_thread():
        for b in np.unique(blocks):
            lo, hi = int(b) * block, min(int(b + 1) * block, positions)
            sel = np.flatnonzero(blocks == b)
            at = starts[sel] - lo
            part = np.zeros((V, sel.size, out.shape[2]))
            for first, weights, used in sides:
                width = weights.shape[0]
                seg = sliding_window_view(xt[:, lo + first : hi + first + width - 1], width, axis=1)
                part[:, :, used] += (np.ascontiguousarray(seg) @ weights)[:, at]
            out[sel] = part.transpose(1, 0, 2)
    return out


def _prefix_block(T: int) -> int:
    """Samples per restart of the prefix sums: the power of two at or above T (so a window
    spans at most two), at least 128. Short restarts keep the sums small (their rounding
    with them) and a batch's stretch short (it starts at a restart): a floor of 4096 cost
    batches of 200 windows of 321 variables 21–31% more time, each summing up to 4096
    samples before its first window."""
    return max(128, 1 << (T - 1).bit_length())


def _stretch_start(first: int, T: int) -> int:
    """Where the wavelet sums of windows from ``first`` on start: a prefix-sum restart and an
    explicit rows' block boundary (both powers of two) at or before ``first``."""
    align = max(_prefix_block(T), _EXPLICIT_BLOCK)
    return first // align * align


assert _EXPLICIT_BLOCK % SLIDE_BLOCK == 0


def compute_windows(
    series: npt.ArrayLike,
    *,
    seq_len: int,
    starts: npt.ArrayLike,
    spec: FeatureSpec,
    threads: int = 1,
) -> Arrays:
    """Features of the windows ``series[s : s + seq_len]`` through the shared transform.

    Agrees with :func:`compute_rows` on the same rows within float rounding (~1e-8 relative)
    and gives every window the same bytes whichever other windows are in ``starts``: prefix
    sums run over the whole series with block-local restarts, and every per-window step reads
    only that window. The whole series is transformed once per call (O(len(series))), so for a
    handful of windows of a long series, :func:`compute_rows` on those rows is cheaper; the
    choice is left to the caller because switching on ``len(starts)`` here would make a
    window's bytes depend on its neighbours. With ``spec.store_coefficients`` the windows are
    computed row by row (the coefficients have to be materialised anyway).

    Args:
        series: (L, V) values (converted to float32).
        seq_len: window length T.
        starts: (N,) window starts, ``0 <= s <= L - T``.
        spec: what to compute.
        threads: threads to use: the lags and the order statistics are computed beside the
            wavelet sums (the same values whatever the count).

    Returns:
        One array per :func:`feature_schema` entry, shaped (N, V, *shape).
    """
    x = _finite_rows(series, "series")
    T = int(seq_len)
    st = np.asarray(starts, dtype=np.int64).reshape(-1)
    L, V = x.shape
    if T < 1 or T > L:
        raise InputError(f"--seq-len {T} must be between 1 and the series length {L}")
    if st.size and (st.min() < 0 or st.max() > L - T):
        raise InputError(f"window starts must lie in [0, {L - T}] for --seq-len {T}")
    level = resolve_level(spec, T)
    N = st.size
    windows = sliding_window_view(x, T, axis=0)  # (L-T+1, V, T), a view
    if spec.store_coefficients or N == 0:
        flat = compute_rows(windows[st].reshape(N * V, T), spec) if N else _allocate(spec, T, (0,))
        return {k: v.reshape(N, V, *v.shape[1:]) for k, v in flat.items()}

    # Only the stretch of the series that the windows cover is transformed: a batch of a wide
    # data set (321 variables) spans a few hundred windows of a long series, and transforming
    # the whole series for each batch made the work grow with batches × length. Each part
    # starts its stretch where its own blocks start (the prefix sums' restarts for the wavelet
    # sums, a sliding block for the lags; anywhere for the exact order statistics) and keeps
    # the whole series' centres, so every float operation on a window is the one a call over
    # the whole series makes: a window's bytes never depend on its batch.
    first, last = int(st.min()), int(st.max())
    center = x.mean(axis=0, dtype=np.float64)  # (V,), for the wavelet sums and the lags
    lo = _stretch_start(first, T)
    # ... up to the end of the last window's block of explicit rows (a product of fixed shape)
    dwt_part = x[lo : min(L, (last // _EXPLICIT_BLOCK + 1) * _EXPLICIT_BLOCK + T - 1)]
    lag_lo = first // SLIDE_BLOCK * SLIDE_BLOCK
    xt = np.ascontiguousarray(x[lag_lo : last + T].T)  # (V, span)

    out = _allocate(spec, T, (N, V))
    with _beside(threads) as submit:
        # Order statistics straight from the series (exact selections, no rounding); lags from
        # the sliding autocorrelation of the raw windows.
        # On two threads the helper takes both (lags, then order statistics): about as long
        # as the wavelet sums on this one (measured 104-107 ms against 110-116 ms with the
        # order statistics here, ETTh1's train split at T=512).
        lags = submit(_lags, xt, T, st - lag_lo, spec.top_k, center[:, None])
        order = submit(_order_statistics, xt, T, st - lag_lo)
        ill = _window_dwt(dwt_part, st - lo, T, level, spec, out, center)
        low, high, median = order.result()
        out["lags"] = lags.result()
    mean32, std32 = out["revin_mean"], out["revin_std"]
    # RevIN of the order statistics and ends, with revin's own float32 operations.
    z = (np.stack([low, high, median, x[st], x[st + T - 1]]) - mean32) / std32  # (5, N, V)
    out["min"], out["max"], out["median"] = z[0], z[1], z[2]
    out["trend"] = z[4] - z[3]
    if ill.any():
        wi, vi = np.nonzero(ill)
        exact = compute_rows(windows[st[wi], vi], spec)
        for name, value in exact.items():
            out[name][wi, vi] = value
    return out


@contextmanager
def _beside(threads: int) -> Iterator[Callable[..., Future[Any]]]:
    """``submit(fn, *args)``: run beside the caller on ``threads − 1`` threads, or at once."""
    if threads <= 1:

        def now(fn: Callable[..., Any], *args: Any) -> Future[Any]:
            done: Future[Any] = Future()
            done.set_result(fn(*args))
            return done

        yield now
        return
    with ThreadPoolExecutor(threads - 1, thread_name_prefix="tsfs-features") as pool:
        yield pool.submit


def _lags(
    xt: F32, T: int, starts: npt.NDArray[np.int64], k: int, center: F64
) -> npt.NDArray[np.int32]:
    """:func:`sliding_top_lags` of a stretch, centred as the whole series: (N, V, k)."""
    return sliding_top_lags(xt, T, starts, k, center=center)


def _order_statistics(xt: F32, T: int, starts: npt.NDArray[np.int64]) -> tuple[F32, F32, F32]:
    """(N, V) min, max and lower median of the windows of the (V, L) series."""
    low, high = sliding_extrema(xt, T, starts)
    return low, high, sliding_order_statistic(xt, T, starts, (T - 1) // 2)


def _window_dwt(
    x: F32,
    st: npt.NDArray[np.int64],
    T: int,
    level: int,
    spec: FeatureSpec,
    out: Arrays,
    center: F64,
) -> npt.NDArray[np.bool_]:
    """RevIN and the DWT features of every window into ``out``, through the shared transform.

    ``center`` (V,) is what the sums are centred on: near the data's scale, and the same for
    every stretch of one series.

    Returns:
        (N, V) the windows whose sums are too ill-conditioned to trust: compute those rows
        on the per-row path.
    """
    N, V = st.size, x.shape[1]
    plan = window_plan(spec.wavelet, spec.mode, T, level)
    block = _prefix_block(T)
    y = x.T.astype(np.float64) - center[:, None]  # (V, L)

    s1, bound1 = _window_sums(y, st, T, 1, block)
    s2, bound = _window_sums(y * y, st, T, 1, block)
    var = np.maximum(s2 / T - (s1 / T) ** 2, 0.0)
    mean = center + s1 / T
    mean32 = mean.astype(np.float32)
    std32 = np.sqrt(var + REVIN_EPS).astype(np.float32)
    ill = T * var <= _CONDITION * bound
    # A window's mean is often exactly halfway between two float32s (the mean of T values on
    # one float32 grid can be: 1 window in 40 of ECL-like one-decimal data), and these sums,
    # unlike revin's exact one, are a few ulps off: they would round it to the other neighbour
    # half the time, and a RevIN mean one float32 ulp off moves every z by ulp / std, band
    # sums by up to ~1e-4 relative. Such windows get revin's own mean from their values
    # (each prefix value may be `block` roundings of its magnitude off).
    eps = np.finfo(np.float64).eps
    tie = _near_float32_boundary(mean, eps * ((block + 4) * bound1 / T + 4 * np.abs(mean)))
    if tie.any():
        w, v = np.nonzero(tie)
        rows = x[st[w, None] + np.arange(T), v[:, None]].astype(np.float64)  # (k, T)
        mean32[w, v] = rows.mean(axis=1).astype(np.float32)  # as revin computes it
    shift = mean32.astype(np.float64) - center  # RevIN mean in the centred frame, (N, V)
    scale = std32.astype(np.float64)

    nb = level + 1
    total = np.zeros((N, V, nb))
    energy = np.zeros((N, V, nb))
    for j, b in enumerate(plan.bands):
        n_int = b.k1 - b.k0
        if n_int == 0:
            continue
        u = np.stack([np.correlate(y[v], b.taps, mode="valid") for v in range(V)])
        first = st + b.start
        u1, _ = _window_sums(u, first, n_int, b.step, block)
        u2, bound2 = _window_sums(u * u, first, n_int, b.step, block)
        g = shift * b.taps.sum()
        # Σ(u − m·G)² over the interior, expanded so it comes from the two prefix sums.
        raw = u2 - 2.0 * g * u1 + n_int * g * g
        ill |= raw <= _CONDITION * (bound2 + 2.0 * np.abs(g) * np.abs(u1))
        total[:, :, j] = (u1 - n_int * g) / scale
        energy[:, :, j] = raw / scale**2

    # Explicit coefficients in z units: E·x minus the response to the RevIN mean, E·1·m.
    cz = (
        _explicit(x, st, plan, _EXPLICIT_BLOCK)
        - mean32.astype(np.float64)[..., None] * plan.explicit_ones
    )
    cz /= scale[..., None]
    # Explicit rows are grouped by band; reduceat sums in a fixed order (a BLAS product with a
    # one-hot matrix would round differently for different batch sizes).
    bounds = np.flatnonzero(np.diff(plan.explicit_band, prepend=-1))
    total += np.add.reduceat(cz, bounds, axis=2)
    energy += np.add.reduceat(cz * cz, bounds, axis=2)
    prims = BandPrimitives(
        count=np.broadcast_to(np.array([b.length for b in plan.bands]), (N * V, nb)),
        total=total.reshape(N * V, nb),
        energy=energy.reshape(N * V, nb),
        first=cz[..., plan.first_row].reshape(N * V, nb),
        last=cz[..., plan.last_row].reshape(N * V, nb),
    )
    flat = {k: v.reshape(N * V, *v.shape[2:]) for k, v in out.items()}
    _put_dwt(flat, slice(None), prims)
    out["revin_mean"], out["revin_std"] = mean32, std32
    return ill


def _near_float32_boundary(value: F64, error: F64) -> npt.NDArray[np.bool_]:
    """Whether rounding ``value`` ± ``error`` to float32 could give two results: a midpoint
    between ``float32(value)`` and a neighbour lies within ``error`` (midpoints of float32s
    are exact in float64)."""
    nearest = value.astype(np.float32)
    near = nearest.astype(np.float64)
    below = (near + np.nextafter(nearest, np.float32(-np.inf)).astype(np.float64)) / 2
    above = (near + np.nextafter(nearest, np.float32(np.inf)).astype(np.float64)) / 2
    result: npt.NDArray[np.bool_] = (value - error <= below) | (value + error >= above)
    return result


def pool_window(per_row: Mapping[str, npt.ArrayLike]) -> Arrays:
    """Per-window values of the public DWTPromptGenerator from stored per-row values.

    Args:
        per_row: the outputs of V rows per window, each (N, V, *shape): ``band_count``,
            ``band_sum``, ``band_energy``, ``energy_ratio``, ``band_trend``, ``min``, ``max``,
            ``median`` and ``lags``.

    Returns:
        float64 (N, nb) ``energy_ratio``, ``band_trend``, ``band_std``; int8 (N, nb)
        ``trend_sign``; (N,) ``entropy``, ``dominant``, ``dominant_energy``, ``consistency``,
        ``snr_db``, ``volatility``, ``difficulty``; (N,) ``min``, ``max``, ``median`` (means
        over variables, as the generator's prompt uses them) and (N, k) ``lags`` of the first
        variable.
    """

    def f64(name: str) -> F64:
        return np.asarray(per_row[name], dtype=np.float64)

    pooled = pool_primitives(
        np.asarray(per_row["band_count"], dtype=np.int64),
        f64("band_sum"),
        f64("band_energy"),
        f64("energy_ratio"),
        f64("band_trend"),
    )
    for name in ("min", "max", "median"):
        pooled[name] = f64(name).mean(axis=1)
    pooled["lags"] = np.asarray(per_row["lags"])[:, 0]
    return pooled
