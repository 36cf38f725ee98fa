"""CRPS of sample forecasts, in the four forms the probabilistic-forecasting papers report.

Every function takes ``samples`` (S, ...) — S draws of a forecast, sample dimension first — and
``target`` (...) of the same trailing shape, and is vectorised over every element: one sort
along S, no Python loop over samples or elements. They score forecasts (no gradient flows
through the sort).

1. :func:`crps_ensemble` — properscoring's ``crps_ensemble`` (the exact CRPS of the samples'
   empirical CDF): ``mean_i |x_i − y| − 1/(2S²) Σ_i Σ_j |x_i − x_j|``. TMDM reports it.
2. :func:`crps_fair` — the same with the unbiased pair term ``1/(2S(S−1))``: the expected
   CRPS of the distribution the samples come from (the iTransformerDiffusion fork's ``CRPS()``).
3. :func:`crps_quantile` — CSDI's ``calc_quantile_CRPS`` and GluonTS's ``mean_wQuantileLoss``:
   the quantile loss at the 19 levels 0.05 … 0.95, each quantile linearly interpolated from the
   samples (``torch.quantile``'s default), summed over all elements and normalised by
   ``Σ|y|``, averaged over the levels. One number for the whole set, not a per-element mean.
4. :func:`crps_sum` — CSDI's ``calc_quantile_CRPS_sum`` / TimeGrad's CRPS-sum: form 3 applied
   to the sum over variables (the last dimension) at each time step.

The pair term uses the sorted-sample identity ``Σ_i Σ_j |x_i − x_j| = 2 Σ_i (2i − S − 1) x_(i)``
(1-based ranks of the sorted values), O(S log S) instead of O(S²).

Forms 3 and 4 are ratios over a whole split; :func:`quantile_loss` gives their numerator so
a loop can add numerators and denominators over batches and divide once (exactly the number
CSDI computes on the concatenated test set). Values are on whatever scale the inputs are
(the scaled values, unless the caller inverts the scaling first).
"""

from __future__ import annotations

import torch

__all__ = [
    "QUANTILES",
    "crps_ensemble",
    "crps_fair",
    "crps_quantile",
    "crps_sum",
    "quantile_loss",
    "sample_quantiles",
]

#: CSDI's ``np.arange(0.05, 1.0, 0.05)`` and GluonTS's ``(np.arange(20) / 20.0)[1:]``.
QUANTILES: tuple[float, ...] = tuple(i / 20 for i in range(1, 20))


def _sorted_last(samples: torch.Tensor) -> torch.Tensor:
    """(S, ...) → (..., S) sorted along the last dimension (values only, no gradient).

    A contiguous last dimension sorts ~3x faster than dim 0; the samples are moved there by
    one 2-D transpose copy (~3x faster than ``movedim`` of the N-D tensor). On the CPU,
    numpy's vectorised sort, in place, takes another ~7x off torch's (S=100, 21,504 elements:
    ~3 ms against ~75 ms, one thread; ``benchmarks/bench_train.py`` times the metrics).
    """
    s = samples.shape[0]
    moved = samples.detach().reshape(s, -1).T.contiguous()  # (N, S)
    if moved.data_ptr() == samples.data_ptr():  # one element: already (1, S), not a copy
        moved = moved.clone()  # sorted in place below; the caller's samples stay as they are
    if moved.device.type == "cpu" and moved.dtype in (torch.float32, torch.float64):
        moved.numpy().sort(axis=-1)
        ordered = moved
    else:
        ordered = moved.sort(dim=-1).values
    return ordered.reshape(*samples.shape[1:], s)


def _pair_term(ordered: torch.Tensor) -> torch.Tensor:
    """``Σ_i Σ_j |x_i − x_j| / 2`` of (..., S) values sorted along the last dimension → (...)."""
    s = ordered.shape[-1]
    rank = torch.arange(1, s + 1, dtype=ordered.dtype, device=ordered.device)
    return ordered @ (2 * rank - s - 1)


def _check(samples: torch.Tensor, target: torch.Tensor) -> None:
    if samples.dim() < 1 or samples.shape[1:] != target.shape:
        raise ValueError(
            f"samples (S, ...) {tuple(samples.shape)} do not fit target {tuple(target.shape)}"
        )


def _spread_and_error(
    samples: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(...) mean absolute error of the samples, and (...) half their summed pair distances."""
    _check(samples, target)
    ordered = _sorted_last(samples)  # (..., S)
    # From the sorted copy, whose samples are contiguous per element, and in place: a fresh
    # (S, ...) temporary per step cost ~10x the arithmetic (pages faulted in and zeroed).
    error = (ordered - target.unsqueeze(-1)).abs_().mean(dim=-1)
    return error, _pair_term(ordered)


def crps_ensemble(samples: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """properscoring's ``crps_ensemble`` of each element.

    Args:
        samples: (S, ...) draws, sample dimension first.
        target: (...) observed values.

    Returns:
        (...) ``mean_i |x_i − y| − 1/(2S²) Σ_i Σ_j |x_i − x_j|``.
    """
    error, pairs = _spread_and_error(samples, target)
    s = samples.shape[0]
    return error - pairs / (s * s)


def crps_fair(samples: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The fair (unbiased) CRPS of each element: the pair term divided by S(S−1), not S².

    Args:
        samples: (S, ...) draws, S ≥ 2.
        target: (...) observed values.

    Returns:
        (...) ``mean_i |x_i − y| − 1/(2S(S−1)) Σ_i Σ_j |x_i − x_j|``.
    """
    s = samples.shape[0]
    if s < 2:
        raise ValueError("the fair CRPS needs at least two samples")
    error, pairs = _spread_and_error(samples, target)
    return error - pairs / (s * (s - 1))


def sample_quantiles(
    samples: torch.Tensor, quantiles: tuple[float, ...] = QUANTILES
) -> torch.Tensor:
    """Linearly interpolated quantiles of the samples, as ``torch.quantile(samples, q, dim=0)``.

    One sort serves every level (``torch.quantile`` also refuses inputs over 2^24 elements).

    Args:
        samples: (S, ...) draws.
        quantiles: Q levels in [0, 1].

    Returns:
        (Q, ...) the quantiles.
    """
    s = samples.shape[0]
    ordered = _sorted_last(samples)  # (..., S)
    q = torch.tensor(quantiles, dtype=torch.float64, device=samples.device)
    position = q * (s - 1)
    low = position.floor().long()
    high = position.ceil().long()
    frac = (position - low).to(samples.dtype)
    between = torch.lerp(ordered[..., low], ordered[..., high], frac)  # (..., Q)
    return between.movedim(-1, 0)


def quantile_loss(
    samples: torch.Tensor, target: torch.Tensor, quantiles: tuple[float, ...] = QUANTILES
) -> torch.Tensor:
    """The numerator of :func:`crps_quantile`: ``mean_q 2 Σ|(Q_q − y)(1{y ≤ Q_q} − q)|``.

    Args:
        samples: (S, ...) draws.
        target: (...) observed values.
        quantiles: Q levels.

    Returns:
        () the quantile loss summed over every element, averaged over the levels.
    """
    _check(samples, target)
    q_values = sample_quantiles(samples, quantiles)  # (Q, ...)
    levels = torch.tensor(quantiles, dtype=samples.dtype, device=samples.device)
    levels = levels.reshape(-1, *([1] * target.dim()))
    y = target.unsqueeze(0)
    loss = 2 * ((q_values - y) * ((y <= q_values).to(samples.dtype) - levels)).abs()
    return loss.flatten(1).sum(dim=1).mean()


def crps_quantile(
    samples: torch.Tensor, target: torch.Tensor, quantiles: tuple[float, ...] = QUANTILES
) -> torch.Tensor:
    """CSDI's normalised CRPS (GluonTS ``mean_wQuantileLoss``) of a whole set of forecasts.

    Args:
        samples: (S, ...) draws.
        target: (...) observed values (not all zero).
        quantiles: Q levels (default: 0.05, 0.10, …, 0.95).

    Returns:
        () :func:`quantile_loss` / ``Σ|y|``.
    """
    return quantile_loss(samples, target, quantiles) / target.abs().sum()


def crps_sum(
    samples: torch.Tensor, target: torch.Tensor, quantiles: tuple[float, ...] = QUANTILES
) -> torch.Tensor:
    """CRPS-sum (CSDI, TimeGrad): :func:`crps_quantile` of the sums over variables.

    Args:
        samples: (S, ..., V) draws.
        target: (..., V) observed values.
        quantiles: Q levels.

    Returns:
        () the normalised quantile CRPS of ``samples.sum(-1)`` against ``target.sum(-1)``.
    """
    return crps_quantile(samples.sum(dim=-1), target.sum(dim=-1), quantiles)
