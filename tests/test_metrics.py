"""CRPS forms against plain references written here from their published definitions.

References (element by element, Python loops, float64):
- properscoring's ``crps_ensemble``: the integral of (F_ens(x) − 1{x ≥ y})² over x, taken
  exactly piece by piece between sorted breakpoints — a different computation from the
  sorted-rank identity the library uses;
- the energy form with an explicit double sum over sample pairs (biased 1/S², fair
  2/(S(S−1)) Σ_{i<j} as the iTransformerDiffusion fork's ``CRPS()`` loops);
- CSDI's ``calc_quantile_CRPS`` / ``calc_quantile_CRPS_sum`` restated with numpy's own
  ``np.quantile`` (linear interpolation, what ``torch.quantile`` does).
"""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pytest
import torch

from tsfs.errors import InputError
from tsfs.training.metrics import (
    QUANTILES,
    crps_ensemble,
    crps_fair,
    crps_quantile,
    crps_scores,
    crps_sum,
    quantile_loss,
    sample_quantiles,
)

F64 = npt.NDArray[np.float64]


def integral_crps(members: F64, y: float) -> float:
    """∫ (F(x) − H(x − y))² dx for the empirical CDF F of ``members``, piece by piece."""
    points = sorted([*members.tolist(), y])
    total = 0.0
    for a, b in itertools.pairwise(points):
        f = float(np.mean(members <= a))  # F is constant on [a, b)
        h = 1.0 if a >= y else 0.0
        total += (f - h) ** 2 * (b - a)
    return total


def pair_crps(members: F64, y: float, *, fair: bool) -> float:
    m = len(members)
    error = sum(abs(x - y) for x in members) / m
    if fair:
        pairs = sum(abs(members[i] - members[j]) for i in range(m) for j in range(i + 1, m))
        return float(error - pairs / (m * (m - 1)))
    pairs = sum(abs(a - b) for a in members for b in members)
    return float(error - pairs / (2 * m * m))


def csdi_quantile_crps(samples: F64, target: F64) -> float:
    """CSDI ``calc_quantile_CRPS`` (mask of ones, no rescaling), quantiles by np.quantile."""
    denominator = np.abs(target).sum()
    crps = 0.0
    for q in np.arange(0.05, 1.0, 0.05):
        q_pred = np.quantile(samples, q, axis=0)
        loss = 2 * np.sum(np.abs((q_pred - target) * ((target <= q_pred) * 1.0 - q)))
        crps += loss / denominator
    return float(crps / 19)


def draws(shape: tuple[int, ...], seed: int, *, ties: bool = False) -> F64:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2 + 0.5
    return np.round(x, 1) if ties else x


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("s", [1, 2, 7, 30])
def test_ensemble_crps_is_properscorings_integral(s: int, ties: bool) -> None:
    samples, target = draws((s, 3, 4), 1, ties=ties), draws((3, 4), 2, ties=ties)
    ours = crps_ensemble(torch.from_numpy(samples), torch.from_numpy(target)).numpy()
    for idx in np.ndindex(target.shape):
        members = samples[(slice(None), *idx)]
        assert ours[idx] == pytest.approx(integral_crps(members, target[idx]), abs=1e-6)
        assert ours[idx] == pytest.approx(pair_crps(members, target[idx], fair=False), abs=1e-6)


@pytest.mark.parametrize("s", [2, 5, 40])
def test_fair_crps_is_the_pairwise_loop(s: int) -> None:
    samples, target = draws((s, 6, 2), 3), draws((6, 2), 4)
    ours = crps_fair(torch.from_numpy(samples), torch.from_numpy(target)).numpy()
    for idx in np.ndindex(target.shape):
        ref = pair_crps(samples[(slice(None), *idx)], target[idx], fair=True)
        assert ours[idx] == pytest.approx(ref, abs=1e-6)


def test_float32_inputs_agree_with_float64() -> None:
    samples, target = draws((50, 8, 3), 5), draws((8, 3), 6)
    for fn in (crps_ensemble, crps_fair):
        ref = fn(torch.from_numpy(samples), torch.from_numpy(target)).numpy()
        got = fn(torch.from_numpy(samples).float(), torch.from_numpy(target).float()).numpy()
        np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("offset", [1e3, 1e4, 1e5])
def test_float32_far_from_zero_keeps_float32_precision(offset: float) -> None:
    """Values in data units (levels in the thousands): the pair term's rank-weighted sum
    cancelled, losing up to 4e-3 of the CRPS. The reference: the exact pair loop in float64
    over the same float32 inputs."""
    samples = (draws((100, 64), 7) + offset).astype(np.float32)
    target = (draws((64,), 8) + offset).astype(np.float32)
    s64, t64 = samples.astype(np.float64), target.astype(np.float64)
    for fn, fair in ((crps_ensemble, False), (crps_fair, True)):
        ref = np.array([pair_crps(s64[:, i], t64[i], fair=fair) for i in range(64)])
        got = fn(torch.from_numpy(samples), torch.from_numpy(target)).numpy()
        assert np.abs(got - ref).max() < 1e-6 * np.abs(ref).mean()


@pytest.mark.parametrize("s", [1, 2, 10, 100])
def test_quantiles_are_numpys_linear_quantiles(s: int) -> None:
    samples = draws((s, 4, 5), 7)
    ours = sample_quantiles(torch.from_numpy(samples)).numpy()
    ref = np.quantile(samples, np.array(QUANTILES), axis=0)
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    np.testing.assert_allclose(np.array(QUANTILES), np.arange(0.05, 1.0, 0.05), atol=1e-12)


@pytest.mark.parametrize("s", [3, 100])
def test_quantile_crps_is_csdis(s: int) -> None:
    samples, target = draws((s, 4, 6, 3), 8), draws((4, 6, 3), 9)
    ours = crps_quantile(torch.from_numpy(samples), torch.from_numpy(target)).item()
    assert ours == pytest.approx(csdi_quantile_crps(samples, target), abs=1e-6)
    # Numerator over the normaliser: what a loop adds over batches.
    numerator = quantile_loss(torch.from_numpy(samples), torch.from_numpy(target)).item()
    assert numerator / np.abs(target).sum() == pytest.approx(ours, abs=1e-12)


def test_quantile_crps_adds_over_batches_like_one_set() -> None:
    samples, target = draws((20, 10, 5, 2), 10), draws((10, 5, 2), 11)
    s, t = torch.from_numpy(samples), torch.from_numpy(target)
    parts = [
        (quantile_loss(s[:, i : i + 3], t[i : i + 3]), t[i : i + 3].abs().sum())
        for i in (0, 3, 6, 9)
    ]
    pooled = sum(p[0] for p in parts) / sum(p[1] for p in parts)
    assert float(pooled) == pytest.approx(crps_quantile(s, t).item(), abs=1e-9)


def test_crps_sum_is_csdis() -> None:
    samples, target = draws((30, 4, 6, 5), 12), draws((4, 6, 5), 13)
    ours = crps_sum(torch.from_numpy(samples), torch.from_numpy(target)).item()
    ref = csdi_quantile_crps(samples.sum(-1), target.sum(-1))
    assert ours == pytest.approx(ref, abs=1e-6)


def test_a_perfect_sharp_forecast_scores_zero_and_spread_costs() -> None:
    target = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    sharp = target.expand(5, 3)
    assert crps_ensemble(sharp, target).abs().max() == 0
    assert crps_quantile(sharp, target) == 0
    wide = sharp + torch.linspace(-1, 1, 5, dtype=torch.float64)[:, None]
    assert (crps_ensemble(wide, target) > 0).all()


def test_shapes_that_do_not_fit_are_refused() -> None:
    with pytest.raises(InputError, match="variable dimension"):
        crps_sum(torch.randn(10), torch.randn(()))
    with pytest.raises(ValueError, match="do not fit"):
        crps_ensemble(torch.zeros(4, 3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="at least two"):
        crps_fair(torch.zeros(1, 3), torch.zeros(3))


def test_half_precision_takes_torchs_sort_and_agrees() -> None:
    samples, target = draws((20, 6, 3), 14), draws((6, 3), 15)
    ref = crps_ensemble(torch.from_numpy(samples), torch.from_numpy(target)).numpy()
    half = crps_ensemble(torch.from_numpy(samples).half(), torch.from_numpy(target).half())
    np.testing.assert_allclose(half.float().numpy(), ref, atol=2e-2)
    q = sample_quantiles(torch.from_numpy(samples).half()).float().numpy()
    np.testing.assert_allclose(q, np.quantile(samples, np.array(QUANTILES), axis=0), atol=2e-2)
    s, t = torch.from_numpy(samples).half(), torch.from_numpy(target).half()
    quantile = crps_quantile(s, t).item()
    assert quantile == pytest.approx(csdi_quantile_crps(samples, target), abs=2e-2)
    both = crps_scores(s, t)
    np.testing.assert_allclose(both["ensemble"].float().numpy(), ref, atol=2e-2)
    assert both["quantile_loss"].item() == pytest.approx(
        quantile * float(t.float().abs().sum()), rel=1e-2
    )


@pytest.mark.parametrize("shape", [(5,), (5, 1), (5, 1, 1), (5, 3)])
def test_the_callers_samples_are_left_as_they_are(shape: tuple[int, ...]) -> None:
    samples = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    kept = samples.clone()
    target = torch.zeros(shape[1:])
    crps_ensemble(samples, target)
    crps_fair(samples, target)
    sample_quantiles(samples)
    torch.testing.assert_close(samples, kept, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_many_elements_in_blocks_and_threads_agree_with_the_references(
    dtype: torch.dtype, threads: int
) -> None:
    """Above a block of elements the CPU path transposes, sorts and sums block by block, in as
    many threads as torch may use (each given at least 4 blocks): 9,400 elements are nine
    whole blocks and a partial one."""
    samples, target = draws((9, 2, 4700), 16, ties=True), draws((2, 4700), 17)
    s, t = torch.from_numpy(samples).to(dtype), torch.from_numpy(target).to(dtype)
    kept = s.clone()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ensemble, fair = crps_ensemble(s, t).numpy(), crps_fair(s, t).numpy()
        q = sample_quantiles(s).numpy()
        quantile = crps_quantile(s, t).item()
        both = crps_scores(s, t)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(s, kept, rtol=0, atol=0)
    atol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(
        q, np.quantile(s.double().numpy(), np.array(QUANTILES), axis=0), atol=atol
    )
    assert quantile == pytest.approx(csdi_quantile_crps(samples, target), abs=1e-5)
    # the first block's ends, one within, the two threads' seam, the partial last block's ends
    for idx in [(0, 0), (0, 1023), (0, 1024), (1, 419), (1, 420), (1, 4516), (1, 4699)]:
        members = s.double().numpy()[(slice(None), *idx)]
        y = float(t[idx])
        assert ensemble[idx] == pytest.approx(integral_crps(members, y), abs=1e-5)
        assert fair[idx] == pytest.approx(pair_crps(members, y, fair=True), abs=1e-5)
    np.testing.assert_allclose(both["ensemble"].numpy(), ensemble, rtol=0, atol=0)
    np.testing.assert_allclose(both["fair"].numpy(), fair, rtol=0, atol=0)
    assert both["quantile_loss"].item() == pytest.approx(quantile * np.abs(target).sum(), 1e-6)
