"""Discrete wavelet transform of RevIN rows and the DWT prompt features derived from it.

The transform is ptwt's / PyWavelets' ``wavedec(z, wavelet, mode=mode, level=J)`` with bands
``[cA_J, cD_J, …, cD_1]``. Every feature is derived from five per-band *primitives* of a row —
coefficient count, sum, energy (sum of squares), first and last coefficient — so the batched
per-row path (:func:`row_primitives`) and the shared-transform path for overlapping windows
(:class:`WindowPlan`) feed one derivation (:func:`derive_features`), and the per-window pooled
values of the public SWT-Time ``DWTPromptGenerator`` are exact functions of stored moments.

Formulas (SWT-Time ``layers/DWTPromptGenerator.py``, restated; ``nb = J + 1`` bands):

- energy ``E_j = Σ c_j²``; ratio ``r_j = E_j / max(ΣE, 1e-10)``, uniform ``1/nb`` if ``ΣE = 0``
- entropy ``H = max(0, −Σ r'_j ln r'_j)`` with ``r' = max(r, 1e-10)``; normalised ``H / ln nb``
- dominant band ``argmax_j r_j`` (first on ties)
- band trend ``mean(diff(c_j)) = (c_j[-1] − c_j[0]) / (len_j − 1)``; consistency
  ``#{sign_j = sign_0} / nb``, or 0.5 when ``sign_0 = 0``. A trend within float32 rounding of 0
  (``|trend| <= 4·eps32·m_j / (len_j − 1)``, with ``m_j`` the larger of the band's rms and
  the row's rms over every band) has sign 0: its sign is rounding noise (boundary detail bands
  that vanish identically, for instance)
- band std (ddof=1), 0 when within float32 rounding (``σ_j <= 16·eps32·m_j``: a band of equal
  coefficients, whose moments cancel to noise); SNR
  ``clip(10 log10(max(σ_A² / max(σ_D1, 1e-10)², 1e-10)), −60, 60)``,
  0 when both stds are 0 and 60 when only ``σ_D1`` is; volatility ``σ_D1 / (σ_A + 1e-10)``
- difficulty ``clip(40 (1 − consistency), 0, 40) + 35 clip(H / ln nb, 0, 1)
  + 25 / (1 + exp((SNR − 10) / 5))``, clipped to [0, 100]
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pywt

from tsfs.errors import InputError, RowsTooShortError
from tsfs.specs import BoundaryMode, FeatureSpec

__all__ = [
    "BandPrimitives",
    "WindowPlan",
    "band_lengths",
    "derive_features",
    "max_level",
    "pool_primitives",
    "resolve_level",
    "row_primitives",
    "wavedec_rows",
    "window_plan",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# Constants of the public generator (kept as written there).
_RATIO_FLOOR = 1e-10
_SNR_CLIP = 60.0
# Ours: a band trend within this many float32 ulps of the band's scale per step has no sign,
# and a band std within _STD_ULPS of it is zero (see _scale, _std).
_SIGN_ULPS = 4
_STD_ULPS = 16


@dataclass(frozen=True)
class BandPrimitives:
    """Per-band primitives of R rows (or R pooled windows); every array is (R, nb).

    ``count`` is int64; the rest are float64. ``energy`` is the sum of squares.
    """

    count: I64
    total: F64
    energy: F64
    first: F64
    last: F64


def band_lengths(wavelet: str, mode: str, T: int, level: int) -> tuple[int, ...]:
    """Coefficient counts ``(len(cA_J), len(cD_J), …, len(cD_1))`` of a length-T row."""
    filt = pywt.Wavelet(wavelet).dec_len
    n = T
    details: list[int] = []
    for _ in range(level):
        n = pywt.dwt_coeff_len(n, filt, mode)
        details.append(n)
    return (details[-1], *reversed(details))


def max_level(wavelet: str, mode: str, T: int) -> int:
    """Largest level for a length-T row: PyWavelets' maximum, capped so every band has at
    least two coefficients (the band trend and the ddof=1 std need two)."""
    level = int(pywt.dwt_max_level(T, pywt.Wavelet(wavelet).dec_len))
    while level > 0 and min(band_lengths(wavelet, mode, T, level)) < 2:
        level -= 1
    return level


def _shortest(wavelet: str, mode: str) -> int:
    """The shortest row that takes one level of ``wavelet``."""
    T = 2
    while max_level(wavelet, mode, T) < 1:
        T += 1
    return T


def resolve_level(spec: FeatureSpec, T: int) -> int:
    """The decomposition level used for rows of length T: ``spec.level`` or ``min(3, max)``.

    Raises:
        InputError: the level exceeds the maximum for T and the wavelet (the message names
            that maximum), or T is too short for even one level or for ``top_k`` lags.
    """
    if spec.top_k >= T:
        raise RowsTooShortError(
            f"rows of length {T} are too short for Time-LLM's top {spec.top_k} lags; use rows "
            f"of more than {spec.top_k} values"
        )
    top = max_level(spec.wavelet, spec.mode, T)
    if top < 1:
        raise RowsTooShortError(
            f"rows of length {T} are too short for one level of the {spec.wavelet} wavelet; "
            f"use rows of at least {_shortest(spec.wavelet, spec.mode)} values"
        )
    if spec.level is None:
        return min(3, top)
    if spec.level > top:
        raise InputError(
            f"--level {spec.level} exceeds the maximum level {top} for rows of length {T} "
            f"with the {spec.wavelet} wavelet"
            # PyWavelets may allow one more: its deepest band there has one coefficient
            + (
                " (the deepest at which every band keeps the two coefficients its trend and "
                "std need)"
                if top < int(pywt.dwt_max_level(T, pywt.Wavelet(spec.wavelet).dec_len))
                else ""
            )
        )
    return spec.level


def wavedec_rows(
    z: npt.NDArray[np.floating], wavelet: str, mode: BoundaryMode, level: int, *, device: str | None
) -> list[F64]:
    """Batched ``wavedec`` of R rows in float64: pywt on the CPU, ptwt on a torch device.

    Args:
        z: (R, T) rows.
        device: None for PyWavelets (fastest on a CPU); a torch device (``"cpu"``,
            ``"cuda"``…) for ptwt on that device.

    Returns:
        ``[cA_J, cD_J, …, cD_1]``, each (R, len_j) float64 on the host.
    """
    z64 = np.asarray(z, dtype=np.float64)
    if device is None:
        return [np.asarray(c) for c in pywt.wavedec(z64, wavelet, mode=mode, level=level)]
    import torch
    from ptwt.conv_transform import wavedec

    zt = torch.from_numpy(z64).to(device)
    coeffs = wavedec(zt, pywt.Wavelet(wavelet), mode=mode, level=level)
    return [c.cpu().numpy() for c in coeffs]


def row_primitives(coeffs: list[F64]) -> BandPrimitives:
    """Band primitives of rows from their coefficients (each (R, len_j))."""
    R = coeffs[0].shape[0]
    return BandPrimitives(
        count=np.broadcast_to(np.array([c.shape[1] for c in coeffs], np.int64), (R, len(coeffs))),
        total=np.stack([c.sum(axis=1) for c in coeffs], axis=1),
        energy=np.stack([(c * c).sum(axis=1) for c in coeffs], axis=1),
        first=np.stack([c[:, 0] for c in coeffs], axis=1),
        last=np.stack([c[:, -1] for c in coeffs], axis=1),
    )


def _energy_ratio(energy: F64) -> F64:
    """(R, nb) energy ratios; a row without energy gets the uniform ratio (as the generator)."""
    total = energy.sum(axis=1, keepdims=True)
    ratio: F64 = np.where(
        total == 0, 1.0 / energy.shape[1], energy / np.maximum(total, _RATIO_FLOOR)
    )
    return ratio


def _entropy(ratio: F64) -> F64:
    safe = np.maximum(ratio, _RATIO_FLOOR)
    entropy: F64 = np.maximum(-(safe * np.log(safe)).sum(axis=1), 0.0)
    return entropy


def _scale(count: I64, energy: F64) -> F64:
    """(R, nb) the magnitude a band's float32 rounding scales with: its own rms, or the
    row's (over every band) where that is larger — a band of the row's rounding noise has
    noise for its own rms."""
    energy = np.maximum(energy, 0.0)
    row = np.sqrt(energy.sum(axis=1, keepdims=True) / count.sum(axis=1, keepdims=True))
    scale: F64 = np.maximum(np.sqrt(energy / count), row)
    return scale


def _sign_consistency(trend: F64, count: I64, scale: F64) -> tuple[npt.NDArray[np.int8], F64]:
    # A band trend within float32 rounding of zero has no sign: the generator's float32 diffs
    # give either sign there, and so would any two float64 evaluations of it.
    tol = _SIGN_ULPS * np.finfo(np.float32).eps * scale / (count - 1)
    sign = np.where(np.abs(trend) <= tol, 0, np.sign(trend)).astype(np.int8)
    agree = (sign == sign[:, :1]).mean(axis=1)
    return sign, np.where(sign[:, 0] != 0, agree, 0.5)


def _std(count: I64, total: F64, energy: F64, scale: F64) -> F64:
    """(R, nb) sample stds (ddof=1) from band moments.

    Float64 moments of O(1) z-values lose nothing that matters to a real band, but a band of
    equal nonzero coefficients (a ±1 toggle's finest details) cancels to rounding noise, and
    its SNR would then flip between −60 and +60 dB with the amplitude of the same pattern. A
    std within float32 rounding of the band's scale (:func:`_scale`) is therefore zero, as it
    is exactly: no float32 transform (the generator's) resolves it either.
    """
    var = np.maximum(energy - total * total / count, 0.0) / (count - 1)
    std = np.sqrt(var)
    tol = _STD_ULPS * np.finfo(np.float32).eps * scale
    zero: F64 = np.where(std <= tol, 0.0, std)
    return zero


def _quality(std: F64, entropy: F64, consistency: F64) -> tuple[F64, F64, F64]:
    """SNR dB, volatility and difficulty score from band stds (R, nb) and (R,) scores."""
    signal, noise = std[:, 0], std[:, -1]
    with np.errstate(divide="ignore"):
        ratio = np.maximum(signal**2 / np.maximum(noise, _RATIO_FLOOR) ** 2, _RATIO_FLOOR)
        snr = np.clip(10.0 * np.log10(ratio), -_SNR_CLIP, _SNR_CLIP)
    snr = np.where(noise == 0, np.where(signal == 0, 0.0, _SNR_CLIP), snr)
    volatility = noise / (signal + _RATIO_FLOOR)
    h_norm = np.clip(entropy / math.log(std.shape[1]), 0.0, 1.0)
    difficulty = (
        np.clip(40.0 * (1.0 - consistency), 0.0, 40.0)
        + 35.0 * h_norm
        + 25.0 / (1.0 + np.exp((snr - 10.0) / 5.0))
    )
    return snr, volatility, np.clip(difficulty, 0.0, 100.0)


def derive_features(p: BandPrimitives) -> dict[str, npt.NDArray[np.generic]]:
    """Every per-row DWT feature from band primitives (R rows, nb bands).

    Returns float64 arrays (R, nb) ``energy_ratio``, ``band_trend``, ``band_std``; (R,)
    ``entropy``, ``entropy_norm``, ``consistency``, ``snr_db``, ``volatility``,
    ``difficulty``; int64 (R,) ``dominant``.
    """
    ratio = _energy_ratio(p.energy)
    entropy = _entropy(ratio)
    trend = (p.last - p.first) / (p.count - 1)
    scale = _scale(p.count, p.energy)
    _, consistency = _sign_consistency(trend, p.count, scale)
    std = _std(p.count, p.total, p.energy, scale)
    snr, volatility, difficulty = _quality(std, entropy, consistency)
    return {
        "energy_ratio": ratio,
        "entropy": entropy,
        "entropy_norm": entropy / math.log(ratio.shape[1]),
        "dominant": ratio.argmax(axis=1),
        "band_trend": trend,
        "consistency": consistency,
        "band_std": std,
        "snr_db": snr,
        "volatility": volatility,
        "difficulty": difficulty,
    }


def pool_primitives(
    count: I64, total: F64, energy: F64, energy_ratio: F64, band_trend: F64
) -> dict[str, npt.NDArray[np.generic]]:
    """The generator's per-window values from per-row stored values of V rows per window.

    Args:
        count, total, energy: (N, V, nb) band moments.
        energy_ratio, band_trend: (N, V, nb) per-row features.

    Returns:
        (N, nb) ``energy_ratio`` (mean over variables), ``band_trend`` (mean), ``trend_sign``
        (int8), ``band_std`` (pooled over all V·len_j coefficients, ddof=1); (N,) ``entropy``
        (mean), ``dominant`` (bincount mode, lowest band on ties), ``dominant_energy``,
        ``consistency``, ``snr_db``, ``volatility``, ``difficulty``.
    """
    N, V, nb = energy.shape
    # The generator replaces the ratios of *all* rows by the uniform ratio as soon as one row
    # of the window has no energy; keep that so the pooled values stay its values.
    flat = np.where(
        (energy.sum(axis=2) == 0).any(axis=1)[:, None, None], 1.0 / nb, energy_ratio
    ).reshape(N * V, nb)
    entropy = _entropy(flat).reshape(N, V).mean(axis=1)
    votes = flat.argmax(axis=1).reshape(N, V)
    counts = (votes[:, :, None] == np.arange(nb)).sum(axis=1)
    dominant = counts.argmax(axis=1)
    ratio = flat.reshape(N, V, nb)
    dominant_energy = np.take_along_axis(ratio, dominant[:, None, None], axis=2)[..., 0]
    trend = band_trend.mean(axis=1)
    pooled_count, pooled_energy = count.sum(axis=1), energy.sum(axis=1)
    # the pooled bands' scale: the same per coefficient as the mean variable's
    scale = _scale(pooled_count, pooled_energy)
    sign, consistency = _sign_consistency(trend, count[:, 0], scale)
    std = _std(pooled_count, total.sum(axis=1), pooled_energy, scale)
    snr, volatility, difficulty = _quality(std, entropy, consistency)
    return {
        "energy_ratio": ratio.mean(axis=1),
        "entropy": entropy,
        "dominant": dominant,
        "dominant_energy": dominant_energy.mean(axis=1),
        "band_trend": trend,
        "trend_sign": sign,
        "consistency": consistency,
        "band_std": std,
        "snr_db": snr,
        "volatility": volatility,
        "difficulty": difficulty,
    }


# --------------------------------------------------------------------------------------------
# Shared transform for overlapping windows
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Band:
    """How one band's coefficients of a window split into shared interior and explicit rows.

    Interior rows ``k0 <= k < k1`` are ``Σ_i taps[i] · z[start + step·(k − k0) + i]``: samples of
    one undecimated (à trous) correlation of the whole series at the window's phase. All other
    rows (the boundary rows that see the padding, plus the first and last row) are explicit.
    """

    length: int
    step: int
    k0: int
    k1: int
    start: int
    taps: F64


@dataclass(frozen=True)
class WindowPlan:
    """The wavelet operator of one (wavelet, mode, T, level), split for the shared transform.

    ``explicit`` (n_exp, K_left + K_right) holds the explicit rows restricted to the first
    ``K_left`` and last ``K_right`` columns of a window (all their non-zero weights);
    ``explicit_band`` (n_exp,) says which band each explicit row belongs to, and
    ``explicit_ones`` (n_exp,) is each explicit row applied to a constant-one window (the
    response to the RevIN mean, which is not zero near the boundaries).
    """

    T: int
    bands: tuple[_Band, ...]
    explicit: F64
    explicit_band: I64
    explicit_ones: F64
    first_row: I64
    last_row: I64
    k_left: int
    k_right: int


def _interior(matrix: F64, step: int) -> tuple[int, int, int, F64]:
    """Longest run ``[k0, k1)`` of rows that are one shifted filter (``start`` of row k0)."""
    rows, T = matrix.shape
    mid = matrix[rows // 2]
    nz = np.flatnonzero(mid)
    if nz.size == 0:
        return rows, rows, 0, np.zeros(0)
    a, b = int(nz[0]), int(nz[-1]) + 1
    taps = mid[a:b]
    scale = float(np.abs(taps).max())
    ok = np.zeros(rows, dtype=bool)
    for k in range(1, rows - 1):
        s = a + step * (k - rows // 2)
        if s < 0 or s + taps.size > T:
            continue
        row = matrix[k]
        outside = np.abs(row[:s]).max(initial=0.0) + np.abs(row[s + taps.size :]).max(initial=0.0)
        ok[k] = outside == 0 and np.allclose(
            row[s : s + taps.size], taps, rtol=0, atol=1e-12 * scale
        )
    best = (rows, rows)
    k = 0
    while k < rows:
        if ok[k]:
            j = k
            while j < rows and ok[j]:
                j += 1
            if j - k > best[1] - best[0]:
                best = (k, j)
            k = j
        else:
            k += 1
    k0, k1 = best
    return k0, k1, a + step * (k0 - rows // 2), taps


@functools.lru_cache(maxsize=32)
def window_plan(wavelet: str, mode: str, T: int, level: int) -> WindowPlan:
    """Split the operator of ``wavedec`` on length-T rows for the shared-transform path.

    The operator is read off PyWavelets itself (the transform of unit vectors), so the plan
    is exact for every discrete wavelet and boundary mode without index algebra. Reading it
    takes O(T²) memory and time (8 GB at T=20000), so long rows read it off a shorter row
    with the same ends: ``T − k·2^level`` values give every band ``k·2^(level−j)`` fewer
    coefficients, all of them interior ones, and the same boundary rows at both ends (each
    level's length ``⌊(n + F − 1)/2⌋`` keeps its parity), so the plan of T is that plan with
    each band's interior run longer.
    """
    period = 2**level
    # Room for both ends' boundary rows and an interior run between them in every band.
    base = 4 * pywt.Wavelet(wavelet).dec_len * period
    if base + period <= T:
        short = T - (T - base) // period * period  # in [base, base + period)
        plan = _read_plan(wavelet, mode, short, level)
        if all(b.k1 > b.k0 for b in plan.bands):
            grow = T - short
            bands = tuple(
                dataclasses.replace(b, length=b.length + grow // b.step, k1=b.k1 + grow // b.step)
                for b in plan.bands
            )
            return dataclasses.replace(plan, T=T, bands=bands)
    return _read_plan(wavelet, mode, T, level)


def _read_plan(wavelet: str, mode: str, T: int, level: int) -> WindowPlan:
    """:func:`window_plan` read off the transform of all T unit vectors."""
    eye = np.eye(T)
    matrices = [c.T for c in pywt.wavedec(eye, wavelet, mode=mode, level=level)]
    steps = [2**level] + [2 ** (level - i) for i in range(level)]
    bands: list[_Band] = []
    explicit: list[F64] = []
    explicit_band: list[int] = []
    first_row: list[int] = []
    last_row: list[int] = []
    for j, (m, step) in enumerate(zip(matrices, steps, strict=True)):
        k0, k1, start, taps = _interior(m, step)
        bands.append(_Band(m.shape[0], step, k0, k1, start, taps))
        rows = [k for k in range(m.shape[0]) if not k0 <= k < k1]
        first_row.append(len(explicit) + rows.index(0))
        last_row.append(len(explicit) + rows.index(m.shape[0] - 1))
        explicit.extend(m[k] for k in rows)
        explicit_band.extend([j] * len(rows))
    full = np.stack(explicit)
    used = np.flatnonzero(np.abs(full).max(axis=0) > 0)
    # The explicit rows touch the two ends of a window (both ends for periodic padding); keep
    # the columns before and after the widest unused gap.
    gaps = np.diff(np.concatenate(([-1], used, [T])))
    g = int(gaps.argmax())
    k_left = int(used[g - 1]) + 1 if g > 0 else 0
    k_right = T - int(used[g]) if g < used.size else 0
    cols = np.r_[0:k_left, T - k_right : T]
    kept = np.ascontiguousarray(full[:, cols])  # every non-zero weight of the explicit rows
    return WindowPlan(
        T=T,
        bands=tuple(bands),
        explicit=kept,
        explicit_band=np.array(explicit_band, dtype=np.int64),
        # summed over the kept columns: the same bits for every T (a sum over all T columns,
        # zeros included, is grouped otherwise for other lengths)
        explicit_ones=kept.sum(axis=1),
        first_row=np.array(first_row, dtype=np.int64),
        last_row=np.array(last_row, dtype=np.int64),
        k_left=k_left,
        k_right=k_right,
    )
