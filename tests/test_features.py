"""Features against oracles: pywt.wavedec, Time-LLM's own torch statistics, the DWT prompt
generator's formulas restated here from its source, and a plain per-row reference."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import pywt
import torch
import xxhash

from tsfs.errors import InputError
from tsfs.pipeline.dwt import _read_plan, band_lengths, max_level, resolve_level, window_plan
from tsfs.pipeline.features import compute_rows, compute_windows, feature_schema, pool_window
from tsfs.pipeline.hashing import row_keys, window_keys
from tsfs.pipeline.normalize import revin
from tsfs.pipeline.stats import (
    _half_autocorrelation,
    _propose,
    _select,
    lag_length,
    sliding_extrema,
    sliding_order_statistic,
    sliding_top_lags,
    top_lags,
)
from tsfs.specs import FeatureSpec

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

WAVELETS = [
    *(f"db{i}" for i in range(1, 9)),
    *(f"sym{i}" for i in range(2, 9)),
    *(f"coif{i}" for i in range(1, 6)),
    "haar",
]
MODES = ["reflect", "zero", "constant", "periodic", "symmetric"]


@pytest.fixture(scope="module")
def ett() -> np.ndarray:
    """ETTh1 scaled with the train split's mean and population std (TSLib), float32."""
    data = np.genfromtxt(ROOT / "data" / "ETTh1.csv", delimiter=",", skip_header=1)[:, 1:]
    data = data[:14400]
    return ((data - data[:8640].mean(0)) / data[:8640].std(0)).astype(np.float32)


def windows_of(series: np.ndarray, starts: np.ndarray, T: int) -> np.ndarray:
    """(N·V, T) rows of the windows, window-major (the layout compute_windows returns)."""
    return np.stack([series[s : s + T].T for s in starts]).reshape(-1, T)


# ------------------------------------------------------------------ plain per-row reference


def ref_revin(x: np.ndarray) -> tuple[np.ndarray, float, float]:
    x64 = x.astype(np.float64)
    mean = x64.mean()
    std = math.sqrt(((x64 - mean) ** 2).mean() + 1e-5)
    m32, s32 = np.float32(mean), np.float32(std)
    return ((x - m32) / s32).astype(np.float32), float(m32), float(s32)


def ref_features(x: np.ndarray, wavelet: str, mode: str, level: int) -> dict[str, np.ndarray]:
    """Every DWT feature of one row, written out from the formulas (domain-specs §6)."""
    z, mean, std = ref_revin(x)
    coeffs = pywt.wavedec(z.astype(np.float64), wavelet, mode=mode, level=level)
    nb = len(coeffs)
    energy = np.array([float(np.sum(c**2)) for c in coeffs])
    total = energy.sum()
    ratio = np.full(nb, 1 / nb) if total == 0 else energy / max(total, 1e-10)
    safe = np.maximum(ratio, 1e-10)
    entropy = max(0.0, float(-(safe * np.log(safe)).sum()))
    trend = np.array([float(np.mean(np.diff(c))) for c in coeffs])
    # Documented in tsfs.pipeline.dwt: a band's float32 rounding scales with its rms or the
    # row's, whichever is larger; a trend within 4 float32 ulps of that (per step) has no
    # sign, and a std within 16 is zero.
    eps32 = float(np.finfo(np.float32).eps)
    row_rms = math.sqrt(sum(float(np.sum(c**2)) for c in coeffs) / sum(c.size for c in coeffs))
    scale = [max(math.sqrt(float(np.mean(c**2))), row_rms) for c in coeffs]
    tol = [4 * eps32 * m / (c.size - 1) for m, c in zip(scale, coeffs, strict=True)]
    sign = [0 if abs(t) <= e else 1 if t > 0 else -1 for t, e in zip(trend, tol, strict=True)]
    consistency = sum(s == sign[0] for s in sign) / nb if sign[0] != 0 else 0.5
    std_b = np.array(
        [
            0.0 if np.std(c, ddof=1) <= 16 * eps32 * m else float(np.std(c, ddof=1))
            for m, c in zip(scale, coeffs, strict=True)
        ]
    )
    sa, sd = std_b[0], std_b[-1]
    if sa == 0 and sd == 0:
        snr = 0.0
    elif sd == 0:
        snr = 60.0
    else:
        snr = float(np.clip(10 * math.log10(max(sa**2 / max(sd, 1e-10) ** 2, 1e-10)), -60, 60))
    difficulty = (
        float(np.clip(40 * (1 - consistency), 0, 40))
        + 35 * float(np.clip(entropy / math.log(nb), 0, 1))
        + 25 / (1 + math.exp((snr - 10) / 5))
    )
    return {
        "revin_mean": np.float64(mean),
        "revin_std": np.float64(std),
        "min": np.float64(z.min()),
        "max": np.float64(z.max()),
        "median": np.float64(np.sort(z)[(len(z) - 1) // 2]),
        "trend": np.float64(z[-1] - z[0]),
        "band_count": np.array([c.size for c in coeffs]),
        "band_sum": np.array([c.sum() for c in coeffs]),
        "band_energy": energy,
        "energy_ratio": ratio,
        "entropy": np.float64(entropy),
        "entropy_norm": np.float64(entropy / math.log(nb)),
        "dominant": np.int64(np.argmax(ratio)),
        "band_trend": trend,
        "consistency": np.float64(consistency),
        "band_std": std_b,
        "snr_db": np.float64(snr),
        "volatility": np.float64(sd / (sa + 1e-10)),
        "difficulty": np.float64(min(max(difficulty, 0.0), 100.0)),
    }


def assert_close(name: str, got: np.ndarray, want: np.ndarray, scale: np.ndarray | float) -> None:
    """Relative 1e-5, or 1e-6 of the value's natural scale for values near 0."""
    got64, want64 = np.asarray(got, np.float64), np.asarray(want, np.float64)
    tol = 1e-5 * np.abs(want64) + 1e-6 * np.asarray(scale)
    bad = np.abs(got64 - want64) > tol
    assert not bad.any(), f"{name}: {got64[bad][:5]} != {want64[bad][:5]}"


def check_against_reference(rows: np.ndarray, out: dict[str, np.ndarray], spec: FeatureSpec):
    level = resolve_level(spec, rows.shape[1])
    for r, x in enumerate(rows):
        ref = ref_features(x, spec.wavelet, spec.mode, level)
        for name, want in ref.items():
            got = out[name][r]
            if name in ("band_count", "dominant"):
                np.testing.assert_array_equal(got, want, err_msg=name)
                continue
            if name == "band_sum":  # a sum near 0 is resolved only to the rounding of z
                scale = np.sqrt(ref["band_count"] * ref["band_energy"]) + 1
            elif name == "band_trend":  # (last - first) / (n - 1) of z-scale values
                scale = np.sqrt(ref["band_energy"]) + 1
            else:
                scale = 1.0
            assert_close(name, got, want, scale)


# ------------------------------------------------------------------ transform vs pywt


@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize("T", [96, 97])
def test_coefficients_equal_pywt_every_level(wavelet: str, T: int) -> None:
    rng = np.random.default_rng(T)
    rows = rng.standard_normal((3, T)).astype(np.float32) * 3 + 1
    z = np.stack([ref_revin(x)[0] for x in rows])
    for level in range(1, max_level(wavelet, "reflect", T) + 1):
        spec = FeatureSpec(wavelet=wavelet, level=level, store_coefficients=True)
        got = compute_rows(rows, spec)["coefficients"]
        want = np.concatenate(pywt.wavedec(z, wavelet, mode="reflect", level=level), axis=1)
        np.testing.assert_allclose(got, want, rtol=0, atol=4 * np.finfo(np.float32).resolution)


@pytest.mark.parametrize("mode", MODES)
def test_every_boundary_mode_means_pywts_mode(mode: str) -> None:
    rows = np.random.default_rng(1).standard_normal((4, 101)).astype(np.float32)
    z = np.stack([ref_revin(x)[0] for x in rows])
    for wavelet, level in [("db4", 3), ("sym5", 2), ("haar", 4)]:
        spec = FeatureSpec(wavelet=wavelet, level=level, mode=mode, store_coefficients=True)
        want = np.concatenate(pywt.wavedec(z, wavelet, mode=mode, level=level), axis=1)
        for device in (None, "cpu"):  # PyWavelets, and ptwt on CPU torch
            got = compute_rows(rows, spec, device=device)["coefficients"]
            np.testing.assert_allclose(got, want, rtol=0, atol=4e-6)


def test_level_above_maximum_names_the_maximum() -> None:
    top = pywt.dwt_max_level(512, 8)
    with pytest.raises(InputError, match=f"maximum level {top} for rows of length 512"):
        resolve_level(FeatureSpec(level=top + 1), 512)
    with pytest.raises(InputError, match="too short"):
        resolve_level(FeatureSpec(), 6)
    assert resolve_level(FeatureSpec(), 512) == 3
    assert resolve_level(FeatureSpec(), 20) == min(3, pywt.dwt_max_level(20, 8))
    # haar at 32: PyWavelets allows 5, whose deepest band has one coefficient; the message
    # says why this maximum is lower than PyWavelets'
    assert pywt.dwt_max_level(32, 2) == 5
    with pytest.raises(InputError, match=r"maximum level 4 .* every band keeps the two"):
        resolve_level(FeatureSpec(wavelet="haar", level=5), 32)


@pytest.mark.parametrize("wavelet", ["db4", "sym8", "coif3", "haar"])
def test_too_short_names_the_shortest_length_that_works(wavelet: str) -> None:
    spec = FeatureSpec(wavelet=wavelet, top_k=1)
    shortest = next(T for T in range(2, 200) if max_level(wavelet, "reflect", T) >= 1)
    assert resolve_level(spec, shortest) == 1
    with pytest.raises(InputError, match=f"use rows of at least {shortest} values"):
        resolve_level(spec, shortest - 1)


def test_spec_rejects_unknown_wavelet_mode_and_level() -> None:
    with pytest.raises(InputError, match="wavelet"):
        FeatureSpec(wavelet="morl")  # continuous, not discrete
    with pytest.raises(InputError, match="mode"):
        FeatureSpec(mode="periodization")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="level"):
        FeatureSpec(level=0)


def test_non_finite_rows_are_an_input_error() -> None:
    rows = np.zeros((2, 64), np.float32)
    rows[1, 5] = np.nan
    with pytest.raises(InputError, match=r"\[1, 5\]"):
        compute_rows(rows, FeatureSpec())


def test_schema_lists_every_output_with_its_shape_and_dtype() -> None:
    spec = FeatureSpec(store_coefficients=True)
    out = compute_rows(np.random.default_rng(0).standard_normal((5, 96)), spec)
    schema = feature_schema(spec, 96)
    assert set(out) == set(schema)
    for name, (shape, dtype) in schema.items():
        assert out[name].shape == (5, *shape), name
        assert out[name].dtype == dtype, name
    assert schema["coefficients"][0] == (sum(band_lengths("db4", "reflect", 96, 3)),)


# ------------------------------------------------------------------ features vs reference


def test_features_equal_reference_on_ett_rows(ett: np.ndarray) -> None:
    rows = windows_of(ett, np.arange(0, 13000, 1601), 512)
    spec = FeatureSpec()
    check_against_reference(rows, compute_rows(rows, spec), spec)


@pytest.mark.parametrize(
    ("wavelet", "T", "level"),
    [("db4", 7 * 2**3, 3), ("haar", 3, 1), ("sym3", 5 * 2**2, 2), ("coif2", 11 * 2, 1)],
)
def test_features_equal_reference_at_the_shortest_length(wavelet: str, T: int, level: int) -> None:
    assert max_level(wavelet, "reflect", T) == level
    rows = np.random.default_rng(T).standard_normal((6, T)).astype(np.float32)
    spec = FeatureSpec(wavelet=wavelet, level=level, top_k=min(5, T - 1))
    check_against_reference(rows, compute_rows(rows, spec), spec)


def test_features_of_edge_rows() -> None:
    T = 64
    t = np.arange(T, dtype=np.float32)
    rows = np.stack(
        [
            np.zeros(T),  # constant: zero variance, every band empty
            np.full(T, 7.25),
            1e30 + 1e24 * np.sin(t),  # huge magnitudes
            -3e35 * np.cos(t / 5),
            np.where(t < 32, 1.0, 2.0),  # a step
        ]
    ).astype(np.float32)
    spec = FeatureSpec()
    out = compute_rows(rows, spec)
    check_against_reference(rows, out, spec)
    for r in (0, 1):  # the generator's conventions for an all-zero row
        np.testing.assert_array_equal(out["energy_ratio"][r], 0.25)
        assert out["snr_db"][r] == 0
        assert out["trend"][r] == 0
        assert out["consistency"][r] == 0.5


def test_a_pattern_gets_the_same_features_at_every_amplitude() -> None:
    """A ±a toggle is the same row after RevIN whatever a: its finest band is constant and
    every other band zero, so both stds are zero (SNR 0 dB, "both zero") — not rounding
    noise that read −60 dB at some amplitudes and +60 dB at others."""
    T, spec = 64, FeatureSpec()
    toggle = np.where(np.arange(T) % 2 == 0, 1.0, -1.0)
    amplitudes = [0.5, 1, 2, 3, 10, 100, 1e6]
    rows = np.stack([a * toggle for a in amplitudes]).astype(np.float32)
    out = compute_rows(rows, spec)
    check_against_reference(rows, out, spec)
    np.testing.assert_array_equal(out["snr_db"], 0.0)
    np.testing.assert_array_equal(out["band_std"], 0.0)
    for name in ("difficulty", "consistency", "dominant"):
        assert len(np.unique(out[name])) == 1, name
    # the shared transform of overlapping windows of one long toggle: every window alike
    series = (3 * np.where(np.arange(700) % 2 == 0, 1.0, -1.0))[:, None]
    windows = compute_windows(series, seq_len=T, starts=np.arange(600), spec=spec)
    for name in ("snr_db", "difficulty", "consistency"):
        np.testing.assert_array_equal(windows[name], out[name][0], err_msg=name)


# ------------------------------------------------------------------ Time-LLM's own statistics


def timellm_statistics(rows: np.ndarray, dtype: torch.dtype = torch.float32) -> dict:
    """Time-LLM's forecast() statistics on (R, T) raw rows, in its own torch code."""
    x = torch.from_numpy(rows).to(dtype).unsqueeze(-1)  # (B·N, T, 1)
    mean = x.mean(1, keepdim=True)
    x = (x - mean) / torch.sqrt(torch.var(x, dim=1, keepdim=True, unbiased=False) + 1e-5)
    fft = torch.fft.rfft(x.permute(0, 2, 1).contiguous(), dim=-1)
    corr = torch.fft.irfft(fft * torch.conj(fft), dim=-1)
    return {
        "min": torch.min(x, dim=1)[0][:, 0].numpy(),
        "max": torch.max(x, dim=1)[0][:, 0].numpy(),
        "median": torch.median(x, dim=1).values[:, 0].numpy(),
        "trend": x.diff(dim=1).sum(dim=1)[:, 0].numpy(),
        "lags": torch.topk(torch.mean(corr, dim=1), 5, dim=-1)[1].numpy(),
        "corr": torch.mean(corr, dim=1).double().numpy(),
    }


@pytest.mark.parametrize("T", [512, 96, 97])
def test_statistics_match_timellm(ett: np.ndarray, T: int) -> None:
    rows = windows_of(ett, np.arange(0, 14400 - T, 37), T)
    ours = compute_rows(rows, FeatureSpec())
    theirs = timellm_statistics(rows)
    exact = timellm_statistics(rows, torch.float64)
    # Time-LLM's float32 RevIN rounds x - mean at the scale of |x| and divides by std, so its
    # own float32 numbers carry an error of a few eps32·(|mean| + max|x|)/std (a flat ETTh1
    # stretch gives it z = -3.8e-5 instead of 0); its formula evaluated in float64 is the
    # few-ulps reference.
    own = 4 * np.finfo(np.float32).eps * (np.abs(rows).max(1) + np.abs(rows.mean(1)))
    own /= np.sqrt(rows.astype(np.float64).var(1) + 1e-5)
    for name in ("min", "max", "median"):
        ulps = np.abs(ours[name] - exact[name]) / np.spacing(np.abs(ours[name]) + 1)
        assert ulps.max() <= 8, name
        gap = np.abs(ours[name] - theirs[name]) - 8 * np.spacing(np.abs(ours[name]) + 1)
        assert (gap <= own).all(), name
    z = np.stack([ref_revin(x)[0] for x in rows])
    np.testing.assert_array_equal(ours["trend"], z[:, -1] - z[:, 0])
    for r in range(rows.shape[0]):
        # lags may differ only between autocorrelations tied within float32 rounding: the two
        # mirrored lags k and T-k (Time-LLM's pick is rounding noise, ours the lower lag) — in
        # order, and in membership when a mirrored pair straddles the k-th place
        corr = exact["corr"][r]
        tied = np.isclose(corr[ours["lags"][r]], corr[theirs["lags"][r]], rtol=1e-5, atol=1e-4)
        assert tied.all(), r
        if T == 512:  # no pair straddles the 5th place on these rows: the sets are equal
            assert set(ours["lags"][r]) == set(theirs["lags"][r]), r


def test_flat_rows_read_downward() -> None:
    """z[-1] == z[0] gives trend 0, which Time-LLM's template reads as "downward"; its float32
    diff-sum of the same row is rounding noise of either sign."""
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((200, 512)).astype(np.float32)
    rows[:, -1] = rows[:, 0]
    out = compute_rows(rows, FeatureSpec())
    assert (out["trend"] == 0).all()
    assert (timellm_statistics(rows)["trend"] != 0).any()


def test_lags_of_ties_go_to_the_lower_lag() -> None:
    rows = np.tile(np.array([1.0, -1.0], np.float32), (2, 32))  # period 2: even lags all tie
    rows[1] = 0
    lags = compute_rows(rows, FeatureSpec())["lags"]
    np.testing.assert_array_equal(lags[0], [0, 2, 4, 6, 8])
    np.testing.assert_array_equal(lags[1], [0, 1, 2, 3, 4])


def test_lag_proposals_are_proven_or_ranked_in_full_on_strided_autocorrelations() -> None:
    """The CPU FFT hands `_select` a strided slice: its proposals were masked in a copy, so
    none was ever proven (every row ranked in full). Proven now, a right proposal and a wrong
    one (another row's) must both give each row's own top lags, leaving the input as it was."""
    rng = np.random.default_rng(5)
    rows = np.cumsum(rng.standard_normal((300, 97)), axis=1).astype(np.float32)
    half = _half_autocorrelation(rows, None)
    assert not half.flags.c_contiguous
    kept = half.copy()
    n, k = lag_length(97), 5
    want = timellm_statistics(rows, torch.float64)["lags"]
    own = _propose(half, n, k)
    for proposal in (own, np.roll(own, 1, axis=0)):
        got = _select(half, half[:, 0].copy(), proposal, n, k)
        np.testing.assert_array_equal(half, kept)
        for r in range(len(rows)):
            assert set(got[r]) == set(want[r]), r


def test_lags_survive_extreme_magnitudes() -> None:
    t = np.arange(96, dtype=np.float32)
    row = np.sin(t / 3) + 0.3 * np.cos(t / 7)
    rows = np.stack([row, row * 1e35, row * 1e-25]).astype(np.float32)
    lags = compute_rows(rows, FeatureSpec())["lags"]
    want = timellm_statistics(rows[:1], torch.float64)["lags"][0]
    for got in lags:
        assert set(got) == set(want)


def test_rows_do_not_depend_on_their_batch(ett: np.ndarray) -> None:
    rows = windows_of(ett, np.arange(0, 5000, 97), 96)
    whole = compute_rows(rows, FeatureSpec())
    part = compute_rows(rows[5:9], FeatureSpec())
    for name, value in part.items():
        np.testing.assert_array_equal(value, whole[name][5:9], err_msg=name)


# ------------------------------------------------------------------ shared-transform windows


@pytest.mark.parametrize(
    ("T", "spec"),
    [
        (512, FeatureSpec()),
        (96, FeatureSpec(wavelet="sym5", mode="symmetric")),
        (97, FeatureSpec(wavelet="haar", mode="periodic", level=4)),
        (200, FeatureSpec(wavelet="coif2", mode="zero", level=2)),
        (64, FeatureSpec(wavelet="db2", mode="constant")),
    ],
)
def test_windows_agree_with_rows(ett: np.ndarray, T: int, spec: FeatureSpec) -> None:
    starts = np.r_[0:40, 3000:3013, 14400 - T - 5 : 14400 - T + 1]
    got = compute_windows(ett, seq_len=T, starts=starts, spec=spec)
    rows = windows_of(ett, starts, T)
    want = compute_rows(rows, spec)
    check_windows(got, want, rows.shape[0])


def check_windows(got: dict, want: dict, R: int) -> None:
    for name, value in want.items():
        flat = got[name].reshape(R, *value.shape[1:])
        if name in ("lags", "band_count", "dominant"):
            np.testing.assert_array_equal(flat, value, err_msg=name)
        elif name == "band_sum":
            scale = np.sqrt(want["band_count"] * want["band_energy"]) + 1
            assert_close(name, flat, value, scale)
        else:
            assert_close(name, flat, value, 1.0)


def test_windows_of_hard_series_agree_with_rows() -> None:
    """Large offsets, flat stretches (zero variance) and spikes: windows the shared sums cannot
    resolve are recomputed row by row."""
    series = hard_series()
    T = 128
    starts = np.arange(0, series.shape[0] - T + 1, 3)
    got = compute_windows(series, seq_len=T, starts=starts, spec=FeatureSpec())
    rows = windows_of(series, starts, T)
    check_windows(got, compute_rows(rows, FeatureSpec()), rows.shape[0])


@pytest.mark.parametrize("mode", MODES)
def test_long_rows_plan_equals_the_operator_read_off_pywavelets(mode: str) -> None:
    """Reading the operator off the T unit vectors took O(T²): 8 GB at T=20000. Long rows
    read it off a shorter row with the same ends and stretch the interior; the plan must be
    the one read off PyWavelets at T itself, field for field and bit for bit."""
    for wavelet in ("haar", "db4", "sym5", "bior2.8"):
        for level in (1, 3):
            period = 2**level
            base = 4 * pywt.Wavelet(wavelet).dec_len * period
            for T in (base + period, base + period + 1, base + 5 * period + 3):
                window_plan.cache_clear()
                got = window_plan(wavelet, mode, T, level)
                want = _read_plan(wavelet, mode, T, level)
                for a, b in zip(got.bands, want.bands, strict=True):
                    assert (a.length, a.step, a.k0, a.k1, a.start) == (
                        b.length, b.step, b.k0, b.k1, b.start
                    )  # fmt: skip
                    assert np.array_equal(a.taps, b.taps)
                assert (got.T, got.k_left, got.k_right) == (want.T, want.k_left, want.k_right)
                for name in ("explicit", "explicit_band", "explicit_ones", "first_row", "last_row"):
                    assert np.array_equal(getattr(got, name), getattr(want, name)), name


def test_very_long_windows_cost_no_more_than_their_data() -> None:
    """T=20000: the windows' features equal the per-row path's, without an O(T²) plan."""
    import tracemalloc

    series = np.random.default_rng(5).standard_normal((20_300, 2)).cumsum(axis=0)
    starts = np.array([0, 150, 300])
    window_plan.cache_clear()
    tracemalloc.start()
    got = compute_windows(series, seq_len=20_000, starts=starts, spec=FeatureSpec())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 << 20  # the dense operator alone was 3.2 GB
    rows = windows_of(series.astype(np.float32), starts, 20_000)
    check_windows(got, compute_rows(rows, FeatureSpec()), rows.shape[0])


def test_near_zero_bands_agree_between_windows_and_rows() -> None:
    """Rows are keyed by content alone, so a row must get the same features whichever path
    stores it first. Smooth rows leave the fine haar bands near zero; transformed from the
    float32 RevIN, their std, SNR and volatility differed from the shared transform's by up
    to 2e-5 relative here (1.5e-4 on other data): both paths transform it in float64."""
    t = np.arange(400)
    series = np.stack(
        [1e-6 * np.sin(t / 9.0), np.sin(t / 40.0) + 5, 1000 + 1e-3 * np.cos(t / 13.0)], axis=1
    ).astype(np.float32)
    spec, T = FeatureSpec(wavelet="haar", level=5), 37
    starts = np.arange(series.shape[0] - T + 1)
    got = compute_windows(series, seq_len=T, starts=starts, spec=spec)
    want = compute_rows(windows_of(series, starts, T), spec)
    for name in ("band_std", "snr_db", "volatility", "band_energy"):
        ours = got[name].reshape(want[name].shape).astype(np.float64)
        theirs = want[name].astype(np.float64)
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=0, err_msg=name)


def test_a_window_does_not_depend_on_the_other_windows(ett: np.ndarray) -> None:
    spec = FeatureSpec()
    every = compute_windows(ett, seq_len=336, starts=np.arange(0, 9000, 5), spec=spec)
    some = compute_windows(ett, seq_len=336, starts=np.array([4500, 10, 8995]), spec=spec)
    for name, value in some.items():
        np.testing.assert_array_equal(value, every[name][[900, 2, 1799]], err_msg=name)


@pytest.mark.parametrize("T", [96, 128, 512])
def test_window_revin_means_are_revins_own(ett: np.ndarray, T: int) -> None:
    """The shared sums are a few float64 ulps off, and the mean of T float32 values often sits
    exactly halfway between two float32s: every window's stored mean must still be the one
    revin rounds from its exact sum (one ulp off would move every z by ulp / std)."""
    for series in (ett[:5000], hard_series()):
        starts = np.arange(series.shape[0] - T + 1)
        got = compute_windows(series, seq_len=T, starts=starts, spec=FeatureSpec())
        _, mean32, std32 = revin(windows_of(series, starts, T))
        np.testing.assert_array_equal(got["revin_mean"].reshape(-1), mean32)
        np.testing.assert_allclose(got["revin_std"].reshape(-1), std32, rtol=2e-7)


@pytest.mark.parametrize("T", [96, 97, 512])
def test_narrow_batches_of_a_long_series_give_the_same_bytes(ett: np.ndarray, T: int) -> None:
    """Prep cuts a wide data set into batches of a few hundred windows, and only the stretch of
    the series they cover is transformed: stretches that start and end anywhere (beside the
    prefix sums' restarts at 4096 and 8192, the last window of the series) must give each
    window the bytes of one call over every window."""
    spec = FeatureSpec()
    every = compute_windows(ett, seq_len=T, starts=np.arange(ett.shape[0] - T + 1), spec=spec)
    last = ett.shape[0] - T
    for starts in (
        np.arange(4000, 4200),
        np.arange(4096, 4160),
        np.array([8191, 8192]),
        np.arange(9001, 9400, 3),
        np.arange(last - 150, last + 1),
        np.array([last]),
    ):
        part = compute_windows(ett, seq_len=T, starts=starts, spec=spec, threads=2)
        for name, value in part.items():
            np.testing.assert_array_equal(value, every[name][starts], err_msg=f"{name} {starts}")


@pytest.mark.parametrize("threads", [2, 3])
def test_threads_give_the_same_bytes(ett: np.ndarray, threads: int) -> None:
    """Lags and order statistics computed beside the wavelet sums change no value."""
    spec = FeatureSpec()
    starts = np.arange(0, 4000, 3)
    one = compute_windows(ett, seq_len=96, starts=starts, spec=spec)
    many = compute_windows(ett, seq_len=96, starts=starts, spec=spec, threads=threads)
    assert many.keys() == one.keys()
    for name, value in one.items():
        np.testing.assert_array_equal(many[name], value, err_msg=name)
        assert many[name].dtype == value.dtype


@pytest.mark.parametrize("T", [1, 17, 96, 301])
def test_sliding_order_statistics_select_the_windows_values(T: int) -> None:
    rng = np.random.default_rng(T)
    series = rng.integers(-3, 4, (3, 900)).astype(np.float32)  # many equal values
    series[1] = rng.standard_normal(900).astype(np.float32)
    starts = np.unique(rng.integers(0, 900 - T + 1, 150))
    windows = np.stack([series[:, s : s + T] for s in starts])  # (N, V, T)
    low, high = sliding_extrema(series, T, starts)
    np.testing.assert_array_equal(low, windows.min(axis=2))
    np.testing.assert_array_equal(high, windows.max(axis=2))
    for rank in sorted({0, (T - 1) // 2, T - 1}):
        got = sliding_order_statistic(series, T, starts, rank)
        np.testing.assert_array_equal(got, np.sort(windows, axis=2)[..., rank])


def hard_series(L: int = 3000) -> np.ndarray:
    """(L, 3): random walks with a large offset, flat stretches (zero variance) and a spike."""
    rng = np.random.default_rng(7)
    series = rng.standard_normal((L, 3)).cumsum(0).astype(np.float32)
    series[:, 1] += 1e5
    series[500:900, 0] = 3.0
    series[1200:1250, 2] = 0.0
    series[2000, 2] = 1e6
    return series


@pytest.mark.parametrize("T", [512, 96, 24, 97])
def test_sliding_lags_equal_per_row_lags(ett: np.ndarray, T: int) -> None:
    """The sliding autocorrelation (and its per-row fallback for loose windows) ranks every
    window as the per-row FFT does, whichever windows are asked for."""
    part = ett[2000:6000]
    xt = np.ascontiguousarray(part.T)
    every = np.arange(0, part.shape[0] - T + 1)
    want = top_lags(windows_of(part, every, T), 5).reshape(every.size, 7, 5)
    np.testing.assert_array_equal(sliding_top_lags(xt, T, every, 5), want)
    for starts in (every[::5], every[[2500, 10, 3000, 0, -1, 64, 63]], every[::-97]):
        np.testing.assert_array_equal(sliding_top_lags(xt, T, starts, 5), want[starts])
    hard = hard_series()
    starts = np.arange(0, 3000 - T + 1, 3)
    want = top_lags(windows_of(hard, starts, T), 5).reshape(starts.size, 3, 5)
    got = sliding_top_lags(np.ascontiguousarray(hard.T), T, starts, 5)
    np.testing.assert_array_equal(got, want)


def test_window_lags_equal_timellm_on_every_etth1_window(ett: np.ndarray) -> None:
    """All 97,223 windows of length 512 of ETTh1 (every variable): the lag sets of the sliding
    autocorrelation are Time-LLM's own float32 sets."""
    T = 512
    starts = np.arange(0, 14400 - T + 1)
    ours = sliding_top_lags(np.ascontiguousarray(ett.T), T, starts, 5).reshape(-1, 5)
    for lo in range(0, starts.size, 1024):
        part = starts[lo : lo + 1024]
        theirs = timellm_statistics(windows_of(ett, part, T))["lags"]
        mine = ours[lo * 7 : (lo + part.size) * 7]
        np.testing.assert_array_equal(np.sort(mine, axis=1), np.sort(theirs, axis=1))


def test_windows_validate_their_inputs(ett: np.ndarray) -> None:
    with pytest.raises(InputError, match="starts"):
        compute_windows(ett, seq_len=96, starts=np.array([14400 - 95]), spec=FeatureSpec())
    with pytest.raises(InputError, match="seq-len"):
        compute_windows(ett[:50], seq_len=96, starts=np.array([0]), spec=FeatureSpec())


# ------------------------------------------------------------------ pooled generator values


def generator_pooled(coeffs: list[torch.Tensor], level: int) -> dict[str, object]:
    """SWT-Time DWTPromptGenerator's values for one window, restated from its source: coeffs are
    ptwt-shaped (V, 1, len_j) tensors of the window's V RevIN rows."""
    energies = [torch.sum(c**2, dim=-1) for c in coeffs]
    total = sum(energies)
    if (total == 0).any():
        ratio = torch.ones(len(coeffs), energies[0].shape[0], 1) / len(coeffs)
    else:
        ratio = torch.stack([e / torch.clamp(total, min=1e-10) for e in energies], dim=0)
    safe = torch.clamp(ratio, min=1e-10)
    entropy = torch.clamp(-torch.sum(safe * torch.log(safe), dim=0), min=0).mean().item()
    counts = torch.bincount(torch.argmax(ratio, dim=0).flatten(), minlength=len(coeffs))
    dominant = int(torch.argmax(counts).item())
    trends = [(c[..., 1:] - c[..., :-1]).mean().item() for c in coeffs]
    signs = [1 if t > 0 else (-1 if t < 0 else 0) for t in trends]
    consistency = sum(1 for s in signs if s == signs[0]) / len(signs) if signs[0] else 0.5
    stds = [max(0.0, torch.std(c).item()) for c in coeffs]
    if stds[0] == 0 and stds[-1] == 0:
        snr = 0.0
    elif stds[-1] == 0:
        snr = 60.0
    else:
        snr = float(
            np.clip(10 * np.log10(max(stds[0] ** 2 / max(stds[-1], 1e-10) ** 2, 1e-10)), -60, 60)
        )
    score = (
        np.clip((1 - consistency) * 40, 0, 40)
        + np.clip(entropy / np.log(level + 1), 0, 1) * 35
        + 25 / (1 + np.exp((snr - 10) / 5))
    )
    return {
        "energy_ratio": ratio.mean(dim=1).flatten().numpy(),
        "entropy": entropy,
        "dominant": dominant,
        "dominant_energy": ratio[dominant].mean().item(),
        "band_trend": np.array(trends),
        "trend_sign": np.array(signs),
        "consistency": consistency,
        "band_std": np.array(stds),
        "snr_db": snr,
        "volatility": stds[-1] / (stds[0] + 1e-10),
        "difficulty": float(np.clip(score, 0, 100)),
    }


def test_pooled_values_equal_the_generator(ett: np.ndarray) -> None:
    T, V = 512, 7
    starts = np.arange(0, 13000, 1303)
    rows = windows_of(ett, starts, T)
    rows[V : 2 * V] = rows[V : 2 * V].round(0)  # coarse rows: ties in the dominant-band vote
    rows[2 * V + 3] = 5.0  # a constant variable: the generator's uniform-ratio rule
    per_row = compute_rows(rows, FeatureSpec())
    pooled = pool_window({k: v.reshape(len(starts), V, *v.shape[1:]) for k, v in per_row.items()})
    for w in range(len(starts)):
        z = np.stack([ref_revin(x)[0] for x in rows[w * V : (w + 1) * V]])
        coeffs = [
            torch.from_numpy(c).unsqueeze(1)
            for c in pywt.wavedec(z.astype(np.float64), "db4", mode="reflect", level=3)
        ]
        want = generator_pooled(coeffs, 3)
        for name, value in want.items():
            got = pooled[name][w]
            if name in ("dominant", "trend_sign"):
                np.testing.assert_array_equal(got, value, err_msg=f"{name} window {w}")
            else:
                assert_close(f"{name} window {w}", got, np.asarray(value), 1e-3)
        np.testing.assert_array_equal(pooled["lags"][w], per_row["lags"][w * V])
        assert pooled["min"][w] == pytest.approx(per_row["min"][w * V : (w + 1) * V].mean())


# ------------------------------------------------------------------ UEA rows and devices


def read_ts(path: Path) -> np.ndarray:
    """(samples, dims, T) values of a UEA .ts file with equal-length dimensions."""
    lines = path.read_text().splitlines()
    body = lines[[ln.strip().lower() for ln in lines].index("@data") + 1 :]
    return np.array([[d.split(",") for d in ln.split(":")[:-1]] for ln in body], dtype=np.float32)


@pytest.mark.skipif(not (SHARED / "BasicMotions_TRAIN.ts").exists(), reason="no shared data")
def test_basic_motions_rows_equal_reference() -> None:
    samples = read_ts(SHARED / "BasicMotions_TRAIN.ts")
    rows = samples.reshape(-1, samples.shape[-1])
    spec = FeatureSpec()
    out = compute_rows(rows, spec)
    pick = np.arange(0, rows.shape[0], 23)
    check_against_reference(rows[pick], {k: v[pick] for k, v in out.items()}, spec)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rows_equal_cpu_rows(ett: np.ndarray) -> None:
    rows = windows_of(ett, np.arange(0, 13000, 61), 512)
    spec = FeatureSpec(store_coefficients=True)
    cpu, gpu = compute_rows(rows, spec), compute_rows(rows, spec, device="cuda")
    check_windows(gpu, cpu, rows.shape[0])


# ------------------------------------------------------------------ row keys


@pytest.mark.parametrize("algorithm", ["xxh3-128", "blake2b-128"])
def test_keys_are_digests_of_the_rows_float32_bytes(ett: np.ndarray, algorithm: str) -> None:
    starts = np.array([0, 5, 5, 700, 14400 - 96])
    rows = windows_of(ett, starts, 96)  # (N·V, T), window-major

    def digest(row: np.ndarray) -> bytes:
        data = row.astype("<f4").tobytes()
        if algorithm == "xxh3-128":
            return xxhash.xxh3_128_digest(data, seed=1)
        return hashlib.blake2b(data, digest_size=16, person=b"tsfs-row-v1").digest()

    want = np.frombuffer(b"".join(digest(r) for r in rows), np.uint8).reshape(-1, 16)
    np.testing.assert_array_equal(row_keys(rows, algorithm), want)
    got = window_keys(ett, starts, 96, algorithm)
    np.testing.assert_array_equal(got.reshape(-1, 16), want)
