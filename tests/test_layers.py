"""Shared model blocks: running a row-wise net over chunks of rows on the CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tsfs.training.models.layers as layers
from tsfs.training.models.layers import forecast_loss, forecast_scores, in_chunks


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.GELU(), nn.Conv2d(8, 1, 1)
    )


def test_chunks_give_the_whole_batchs_values_and_gradients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = torch.randn(10, 2, 12, 20)
    row_bytes = 8 * 12 * 20 * 4
    whole_net, chunked_net = _net(), _net()
    whole = whole_net(x)
    calls: list[int] = []

    def counted(part: torch.Tensor) -> torch.Tensor:
        calls.append(len(part))
        out: torch.Tensor = chunked_net(part)
        return out

    monkeypatch.setattr(layers, "_CPU_ACTIVATION_BYTES", 3 * row_bytes)  # 3 rows a chunk
    chunked = in_chunks(counted, x, row_bytes)
    assert calls == [3, 3, 3, 1]
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    whole.square().sum().backward()
    chunked.square().sum().backward()
    for a, b in zip(whole_net.parameters(), chunked_net.parameters(), strict=True):
        assert a.grad is not None
        assert b.grad is not None
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5)


def test_a_batch_under_the_bound_runs_whole() -> None:
    x = torch.randn(4, 2, 8, 8)
    calls: list[int] = []

    def counted(part: torch.Tensor) -> torch.Tensor:
        calls.append(len(part))
        return part * 2

    assert torch.equal(in_chunks(counted, x, row_bytes=1024), x * 2)
    assert calls == [4]
    calls.clear()
    in_chunks(counted, x, row_bytes=1 << 40)  # a row over the bound: one row at a time
    assert calls == [1, 1, 1, 1]


def test_patches_longer_than_the_rows_are_refused() -> None:
    from tsfs.errors import InputError

    assert layers.patch_count(96, 16, 8) == 12  # Time-LLM: int((96 - 16) / 8 + 2)
    assert layers.patch_count(96, 96, 8) == 2
    with pytest.raises(InputError, match=r"patch_len \(200\) exceeds the rows' length \(96\)"):
        layers.patch_count(96, 200, 8)


def test_target_only_scores_the_last_variable_as_tslibs_ms() -> None:
    g = torch.Generator().manual_seed(0)
    forecast, y = torch.randn(4, 6, 3, generator=g), torch.randn(4, 9, 3, generator=g)
    error = forecast[..., -1] - y[:, -6:, -1]
    scores = forecast_scores(forecast, y, target_only=True)
    torch.testing.assert_close(scores["mse"][0], error.square().sum())
    torch.testing.assert_close(scores["mae"][0], error.abs().sum())
    assert scores["mse"][1] == 4 * 6
    torch.testing.assert_close(forecast_loss(forecast, y, target_only=True), error.square().mean())
    every = forecast_scores(forecast, y)
    assert every["mse"][1] == 4 * 6 * 3
