"""The diffusion family: schedule, samplers, chunked sampling, scores, and a short real run."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from _torch_threads import one_thread  # noqa: F401  # autouse fixture
from family_runs import prepare

from tsfs.errors import InputError
from tsfs.pipeline.prep import prep_features
from tsfs.pipeline.sources import load
from tsfs.specs import FeatureSpec, WindowSpec
from tsfs.stores.store import Store
from tsfs.training.data import Batch
from tsfs.training.loop import TrainSpec, fit, repeat_last_scores, train
from tsfs.training.models import DataInfo
from tsfs.training.models.diffusion import (
    FAMILY,
    DiffusionConfig,
    DiffusionForecaster,
    cosine_schedule,
    ddim_timesteps,
)

ETTH1 = Path(__file__).resolve().parents[1] / "data" / "ETTh1.csv"
INFO = DataInfo(
    task="forecast",
    seq_len=32,
    label_len=8,
    pred_len=12,
    n_vars=3,
    n_marks=4,
    n_classes=0,
    feature_names={},
    image_size=0,
)
SMALL = DiffusionConfig(
    d_model=16, n_heads=2, e_layers=1, d_ff=32, channels=(8, 16), steps=100, sample_steps=10
)


def batch(b: int = 5, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randn(b, 32, 3, generator=g),
        "y": torch.randn(b, 20, 3, generator=g),
        "x_mark": torch.randn(b, 32, 4, generator=g),
        "y_mark": torch.randn(b, 20, 4, generator=g),
    }


def trained(config: DiffusionConfig = SMALL, steps: int = 20) -> DiffusionForecaster:
    """A model a few steps into training (its output layer no longer zero), in eval mode."""
    torch.manual_seed(0)
    model = FAMILY.build(INFO, config)
    assert isinstance(model, DiffusionForecaster)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for i in range(steps):
        loss = FAMILY.loss(model, batch(8, seed=100 + i))
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        opt.zero_grad()
    return model.eval()


def sample(model: DiffusionForecaster, seed: int = 1, **kw: object) -> torch.Tensor:
    samples, _ = model.sample(batch(), generator=torch.Generator().manual_seed(seed), **kw)  # type: ignore[arg-type]
    return samples


def test_cosine_schedule_is_nichol_and_dhariwals() -> None:
    steps, s = 1000, 0.008
    f = [math.cos((t / steps + s) / (1 + s) * math.pi / 2) ** 2 for t in range(steps + 1)]
    betas = [min(1 - f[t + 1] / f[t], 0.999) for t in range(steps)]
    np.testing.assert_allclose(cosine_schedule(steps).numpy(), betas, rtol=1e-12, atol=1e-15)
    assert ddim_timesteps(1000, 50) == list(range(980, -1, -20))
    assert ddim_timesteps(100, 30) == list(range(99, -1, -3))


@torch.no_grad()
def fork_ddim(model: DiffusionForecaster, b: Batch, n_samples: int, seed: int) -> torch.Tensor:
    """The iTransformerDiffusion fork's ``sample_ddim_batch`` (eta 0), restated step by step
    around the model's own networks: timesteps ``range(0, T, T // S)[::-1]``, ᾱ_prev = 1 at
    the last step, x0 clamped to ±3, and the noise direction the raw noise prediction
    (objective eps) or the one the clamped x0 implies (objective x0)."""
    cfg = model.config
    y_det, cond, mean, std = model.encode(b)
    bv, length = y_det.shape[0] * y_det.shape[1], y_det.shape[2]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n_samples * bv, 1, length), generator=g)
    cond_rows = cond.flatten(0, 1).repeat(n_samples, 1)  # sample-major
    det_rows = y_det.flatten(0, 1)[:, None].repeat(n_samples, 1, 1)
    steps = list(range(0, cfg.steps, cfg.steps // cfg.sample_steps))[::-1]
    alpha_bar = torch.cumprod(1 - cosine_schedule(cfg.steps), 0).float()
    for i, t in enumerate(steps):
        a_t = alpha_bar[t]
        a_prev = alpha_bar[steps[i + 1]] if i + 1 < len(steps) else torch.tensor(1.0)
        emb = model._embedding(cond_rows, torch.full((1,), t))
        pred = model.denoiser(torch.cat([x, det_rows], dim=1), emb)
        if cfg.objective == "eps":
            x0 = ((x - (1 - a_t).sqrt() * pred) / a_t.sqrt()).clamp(-3, 3)
            direction = pred
        else:
            x0 = pred.clamp(-3, 3)
            direction = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * direction
    z = y_det[None] + x.reshape(n_samples, *y_det.shape)
    return z.transpose(-1, -2) * std + mean


@pytest.mark.parametrize("objective", ["x0", "eps"])
def test_ddim_is_the_forks_sampler(objective: str) -> None:
    model = trained(dataclasses.replace(SMALL, objective=objective))  # type: ignore[arg-type]
    ours = sample(model, seed=3, n_samples=4)
    torch.testing.assert_close(ours, fork_ddim(model, batch(), 4, seed=3))


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_samples_have_the_forecast_shape(sampler: str) -> None:
    model = trained(steps=2)
    samples, y_det = model.sample(batch(), n_samples=4, sampler=sampler)  # type: ignore[arg-type]
    assert samples.shape == (4, 5, 12, 3)
    assert y_det.shape == (5, 12, 3)
    assert torch.isfinite(samples).all()


def test_ddim_with_eta_zero_is_deterministic_given_the_noise() -> None:
    model = trained()
    a, b = sample(model, n_samples=6), sample(model, n_samples=6)
    assert torch.equal(a, b)
    assert not torch.equal(a, sample(model, seed=2, n_samples=6))
    assert a.std(dim=0).mean() > 0  # the samples differ from each other
    # eta > 0 adds noise at each step: another sample, reproducible from the same generator.
    noisy = sample(model, n_samples=6, eta=1.0)
    assert not torch.allclose(noisy, a)
    assert torch.equal(noisy, sample(model, n_samples=6, eta=1.0))


@pytest.mark.parametrize("chunk", [1, 7, 15, 90, 10_000])
def test_chunked_sampling_equals_unchunked(chunk: int) -> None:
    model = trained()
    whole = sample(model, n_samples=6, chunk_rows=6 * 5 * 3)
    torch.testing.assert_close(sample(model, n_samples=6, chunk_rows=chunk), whole)


@pytest.mark.parametrize("chunk", [45, 100])
@pytest.mark.parametrize("how", [{"sampler": "ddpm"}, {"eta": 0.7}])
def test_stochastic_sampling_does_not_depend_on_the_chunks(
    chunk: int, how: dict[str, object]
) -> None:
    """Each step's noise belongs to a row, not to a chunk: 300 rows, whose noise blocks of
    128 rows straddle the chunks."""
    model = trained()
    whole = sample(model, n_samples=20, chunk_rows=20 * 5 * 3, **how)
    torch.testing.assert_close(sample(model, n_samples=20, chunk_rows=chunk, **how), whole)


@pytest.fixture
def torch_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("torch_threads")
@pytest.mark.parametrize("how", [{}, {"sampler": "ddpm"}])
def test_chunks_side_by_side_give_the_samples_of_one_thread(
    how: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With several torch threads the chunks run on threads of their own: the same samples,
    sampling's own no-grad mode in every chunk (grad mode is per thread), and torch's thread
    count as it was."""
    model = trained()
    real = model._reverse
    grad_in_chunks: list[bool] = []

    def reverse(*args: object, **kwargs: object) -> torch.Tensor:
        grad_in_chunks.append(torch.is_grad_enabled())
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(model, "_reverse", reverse)
    torch.set_num_threads(1)
    one = sample(model, n_samples=20, chunk_rows=40, **how)
    torch.set_num_threads(3)
    three = sample(model, n_samples=20, chunk_rows=40, **how)
    assert torch.equal(three, one)
    assert len(grad_in_chunks) == 2 * 8  # 300 rows in chunks of 40, twice
    assert not any(grad_in_chunks)
    assert torch.get_num_threads() == 3


@pytest.mark.usefixtures("torch_threads")
def test_a_failing_chunk_stops_sampling_and_gives_the_threads_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = trained()
    real = model._reverse
    started: list[int] = []

    def reverse(x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        started.append(len(x))
        if len(started) == 2:
            raise RuntimeError("a chunk failed")
        return real(x, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(model, "_reverse", reverse)
    torch.set_num_threads(2)
    with pytest.raises(RuntimeError, match="a chunk failed"):
        sample(model, n_samples=20, chunk_rows=10)  # 30 chunks
    assert len(started) < 30  # the chunks not yet started never ran
    assert torch.get_num_threads() == 2


@pytest.mark.usefixtures("torch_threads")
def test_sampling_in_several_threads_at_once() -> None:
    """The same samples in every thread, and torch's thread count as it was afterwards."""
    model = trained()
    torch.set_num_threads(2)
    want = sample(model, n_samples=20, chunk_rows=10)
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(lambda _: sample(model, n_samples=20, chunk_rows=10), range(6)))
    assert all(torch.equal(g, want) for g in got)
    assert torch.get_num_threads() == 2


def test_sampling_settings_out_of_range_are_refused() -> None:
    model = trained(steps=1)
    for bad, match in (
        ({"sample_steps": 2000}, "sample_steps must be from 1 to steps"),
        ({"eta": -1.0}, "eta ≥ 0"),
        ({"n_samples": 0}, "n_samples ≥ 1"),
        ({"sampler": "euler"}, "choose ddim or ddpm"),
    ):
        with pytest.raises(InputError, match=match):
            model.sample(batch(), **bad)  # type: ignore[arg-type]


def test_an_untrained_denoiser_samples_the_deterministic_forecast() -> None:
    # Zero output layer → predicted residual 0 → DDIM's last step (ᾱ_prev = 1) returns it.
    torch.manual_seed(0)
    model = FAMILY.build(INFO, SMALL).eval()
    assert isinstance(model, DiffusionForecaster)
    samples, y_det = model.sample(batch(), n_samples=3)
    torch.testing.assert_close(samples, y_det.expand(3, -1, -1, -1))


def test_scores_are_the_metrics_of_the_samples() -> None:
    model = trained()
    b = batch()
    torch.manual_seed(5)
    scores = FAMILY.score(model, b)
    torch.manual_seed(5)
    samples, y_det = model.sample(b, n_samples=SMALL.n_samples)
    y = b["y"][:, -12:]
    n = y.numel()
    mse = (samples.median(dim=0).values - y).square().sum()
    torch.testing.assert_close(scores["mse"][0], mse)
    torch.testing.assert_close(scores["mse_det"][0], (y_det - y).square().sum())
    assert scores["crps"][1] == n
    assert scores["crps_quantile"][1] == pytest.approx(float(y.abs().sum()))
    assert scores["crps_sum"][1] == pytest.approx(float(y.sum(-1).abs().sum()))
    assert 0 < scores["crps_fair"][0] < scores["crps"][0]


def test_bad_configs_are_refused() -> None:
    with pytest.raises(InputError, match="multiple of n_heads"):
        DiffusionConfig(d_model=30, n_heads=4)
    with pytest.raises(InputError, match="sample_steps"):
        DiffusionConfig(steps=10, sample_steps=20)
    with pytest.raises(InputError, match="n_samples"):
        DiffusionConfig(n_samples=1)
    with pytest.raises(InputError, match="reads_features"):
        FAMILY.build(INFO, DiffusionConfig(reads_features=True))


@pytest.fixture(scope="module")
def ett_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """ETTh1 96→96 (every 8th window) with its DWT features, prepared through the library."""
    store = Store(tmp_path_factory.mktemp("ett") / "store", mode="a")
    prep_features(load(ETTH1, WindowSpec(stride=8)), FeatureSpec(), store)
    return store


def test_diffusion_beats_repeating_the_last_value_on_etth1(
    ett_store: Store, tmp_path: Path
) -> None:
    # No validation split: sampling it every epoch would double the time of this test.
    ds = load(ETTH1, WindowSpec(stride=8, splits=("train", "test")))
    config = DiffusionConfig(
        d_model=32,
        n_heads=2,
        e_layers=1,
        d_ff=64,
        channels=(8, 16),
        steps=100,
        sample_steps=5,
        n_samples=4,
        dropout=0.0,
        reads_features=True,
    )
    spec = TrainSpec(epochs=2, batch_size=32, lr=1e-3, out=tmp_path / "run")
    result = train("diffusion", ds, ett_store, spec, config)
    test = result.metrics["test"]
    baseline = repeat_last_scores(ds.splits["test"], 96)
    assert test["mse"] < 0.8 * baseline["mse"]
    assert test["mae"] < baseline["mae"]
    assert 0 < test["crps_fair"] < test["crps"] < test["mae"]
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0


def test_val_is_scored_on_val_windows_evenly_spread(ett_store: Store) -> None:
    """``val_windows=k`` scores exactly the k windows a reader subset of those windows would,
    and the epoch line says how many of how many."""

    ds = load(ETTH1, WindowSpec(stride=8))
    run = prepare(ds, ett_store)
    config = dataclasses.replace(SMALL, n_samples=2, sample_steps=2, val_windows=7)
    spec = TrainSpec(epochs=1, max_steps=2, batch_size=16, log_epochs=True)
    lines: list[str] = []
    limited = fit(FAMILY, config, run.info, run.readers, spec, notify=lines.append)
    n = len(run.readers["val"])
    picked = np.unique(np.linspace(0, n - 1, 7).round()).astype(np.int64)
    readers = {**run.readers, "val": run.readers["val"].subset(picked)}
    whole = dataclasses.replace(config, val_windows=0)
    direct = fit(FAMILY, whole, run.info, readers, spec, notify=lambda _: None)
    (got,), (want,) = limited.metrics["epochs"], direct.metrics["epochs"]
    assert got["val"] == want["val"]
    assert f"(7 of {n:,} windows)" in lines[-1]
    assert limited.metrics["test"] == direct.metrics["test"]  # test: whole either way


def test_features_ms_scores_the_target_alone() -> None:
    """TSLib's MS (f_dim = -1): every score covers the last variable; inputs stay all three."""
    from dataclasses import replace

    torch.manual_seed(0)
    model = FAMILY.build(replace(INFO, target_only=True), SMALL)
    assert isinstance(model, DiffusionForecaster)
    b = batch()
    torch.manual_seed(5)
    scores = FAMILY.score(model.eval(), b)
    torch.manual_seed(5)
    samples, y_det = model.sample(b, n_samples=SMALL.n_samples)
    y = b["y"][:, -12:, -1:]
    mse = (samples.median(dim=0).values[..., -1:] - y).square().sum()
    torch.testing.assert_close(scores["mse"][0], mse)
    assert scores["mse"][1] == scores["crps"][1] == y.numel() == 5 * 12
    torch.testing.assert_close(scores["mse_det"][0], (y_det[..., -1:] - y).square().sum())
    assert scores["crps_quantile"][1] == pytest.approx(float(y.abs().sum()))
