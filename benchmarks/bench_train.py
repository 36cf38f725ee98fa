"""Training-side speed: sampling, CRPS, and a training step fed from the store vs on the fly.

Each figure is printed beside its faithful baseline, measured in the same run (medians of
``--repeats`` runs, cases taking turns so load from other processes falls on all alike).

``sampling``
    :meth:`DiffusionForecaster.sample` with ``n_samples=100`` folded into the batch (chunks of
    rows, no loop over samples) against the sequential per-sample loop that CSDI and the
    iTransformerDiffusion fork run (``for s in range(100): sample(batch, n_samples=1)``, every
    call a full reverse chain). Same model, DDIM; ETTh1 test windows. Once on one torch
    thread, once on torch's default (one per core), for both cases alike: there the folded
    chunks run side by side, one torch thread each.
``CRPS``
    :mod:`tsfs.training.metrics` (one sort over the samples) against the loop forms: the
    fork's ``CRPS()`` (a Python double loop over sample pairs, for the fair and the ensemble
    form) and CSDI's ``calc_quantile_CRPS`` (per level, a ``torch.quantile`` call per window of
    its (B, S, L, K) layout) and ``calc_quantile_CRPS_sum``.
``training step``
    One optimizer step of the diffusion family conditioned on DWT features, fed by
    :class:`~tsfs.training.data.StoreLoader` (features and RGB images read from the store)
    against the same step fed by ``bench_loader.OnTheFly`` — the per-window DWT prompt
    generator (:mod:`baseline_dwt_prompt`) and a pyplot figure per image inside
    ``__getitem__``, in a 2-worker DataLoader. The on-the-fly path gives its features as
    prompt text (what Time-LLM consumes), so its model step gets equally shaped feature
    tensors: both run the same model arithmetic.

    python benchmarks/bench_train.py [--repeats 3] [--skip-step]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_loader import ETTH1, OnTheFly

from tsfs.pipeline.prep import prep_features, prep_images
from tsfs.pipeline.sources import load
from tsfs.pipeline.windows import Split
from tsfs.specs import FeatureSpec, ImageSpec, WindowSpec
from tsfs.stores.store import Store
from tsfs.training.data import Batch, StoreLoader, WindowReader, open_view
from tsfs.training.metrics import QUANTILES, crps_ensemble, crps_fair, crps_quantile, crps_sum
from tsfs.training.models import DataInfo
from tsfs.training.models.diffusion import FAMILY, DiffusionConfig, DiffusionForecaster

N_SAMPLES = 100
SMALL = {"d_model": 32, "n_heads": 2, "e_layers": 1, "d_ff": 64, "channels": (16, 32)}


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def turns(cases: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median seconds (or rate) of each case over ``repeats`` rounds, the cases taking turns."""
    runs: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, case in cases.items():
            runs[name].append(case())
    return {name: statistics.median(v) for name, v in runs.items()}


def info_of(split: Split, seq_len: int, feature_names: dict[str, tuple[int, ...]]) -> DataInfo:
    return DataInfo(
        task="forecast",
        seq_len=seq_len,
        label_len=48,
        pred_len=96,
        n_vars=split.x.shape[2],
        n_marks=4,
        n_classes=0,
        feature_names=feature_names,
        image_size=0,
    )


def split_batch(split: Split, b: int) -> Batch:
    assert split.y is not None
    assert split.x_mark is not None
    assert split.y_mark is not None
    return {
        "x": torch.from_numpy(np.array(split.x[:b])),
        "y": torch.from_numpy(np.array(split.y[:b])),
        "x_mark": torch.from_numpy(np.array(split.x_mark[:b])),
        "y_mark": torch.from_numpy(np.array(split.y_mark[:b])),
    }


# --------------------------------------------------------------------------------------------
# sampling


def bench_sampling(repeats: int, steps: int, threads: int) -> None:
    torch.set_num_threads(threads)
    print(
        f"\n== sampling: n_samples={N_SAMPLES}, DDIM {steps} steps, ETTh1 96→96 test windows, "
        f"{threads} torch thread{'s' if threads > 1 else ''}"
    )
    print(f"{'case':<26}{'batch-parallel s':>17}{'sequential s':>14}{'ratio':>8}")
    for features, b in (("S", 1), ("M", 1), ("M", 16)):
        split = load(ETTH1, WindowSpec(features=features, splits=("test",))).splits["test"]
        batch = split_batch(split, b)
        torch.manual_seed(0)
        config = DiffusionConfig(**SMALL, sample_steps=steps)  # type: ignore[arg-type]
        model = FAMILY.build(info_of(split, 96, {}), config).eval()
        assert isinstance(model, DiffusionForecaster)
        got = turns(
            {
                "parallel": lambda m=model, x=batch: timed(
                    lambda: m.sample(x, n_samples=N_SAMPLES)
                ),
                "sequential": lambda m=model, x=batch: timed(
                    lambda: [m.sample(x, n_samples=1) for _ in range(N_SAMPLES)]
                ),
            },
            repeats,
        )
        v = split.x.shape[2]
        name = f"{b} window{'s' if b > 1 else ''} × {v} variable{'s' if v > 1 else ''}"
        print(
            f"{name:<26}{got['parallel']:>17.2f}{got['sequential']:>14.2f}"
            f"{got['sequential'] / got['parallel']:>7.1f}×"
        )


# --------------------------------------------------------------------------------------------
# CRPS


def fork_crps(samples: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The iTransformerDiffusion fork's ``CRPS()``: the fair pair term by a Python double loop
    over sample pairs (each pair vectorised over the elements), scalar means."""
    m = samples.shape[0]
    error = (samples - y).abs().mean()
    pairs = torch.zeros(())
    for i in range(m):
        for j in range(i + 1, m):
            pairs = pairs + (samples[i] - samples[j]).abs().mean()
    return error - pairs / (m * (m - 1))


def properscoring_element(members: list[float], obs: float) -> float:
    """properscoring's ``crps_ensemble`` kernel (its numba gufunc body) for one element: the
    integral of (F − H)² over the sorted members, equal weights."""
    m = len(members)
    obs_cdf = forecast_cdf = prev = integral = 0.0
    for f in sorted(members):
        if obs_cdf == 0 and obs < f:
            integral += (obs - prev) * forecast_cdf**2 + (f - obs) * (forecast_cdf - 1) ** 2
            obs_cdf = 1.0
        else:
            integral += (f - prev) * (forecast_cdf - obs_cdf) ** 2
        forecast_cdf += 1 / m
        prev = f
    if obs_cdf == 0:
        integral += obs - prev
    return integral


def per_element_crps(samples: torch.Tensor, y: torch.Tensor, count: int) -> float:
    """Mean ensemble CRPS of the first ``count`` elements, one Python call per element (as
    TMDM scores with the ``CRPS`` package per window, step and variable)."""
    flat = samples.reshape(samples.shape[0], -1)[:, :count].T.tolist()
    obs = y.reshape(-1)[:count].tolist()
    return sum(properscoring_element(f, o) for f, o in zip(flat, obs, strict=True)) / count


def csdi_crps(forecast: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CSDI's ``calc_quantile_CRPS`` (mask of ones): per level, one ``torch.quantile`` per
    window along the samples of its (B, S, L, K) forecast."""
    denominator = y.abs().sum()
    crps = torch.zeros(())
    for q in QUANTILES:
        q_pred = torch.cat([torch.quantile(forecast[j : j + 1], q, dim=1) for j in range(len(y))])
        crps = crps + 2 * ((q_pred - y) * ((y <= q_pred).float() - q)).abs().sum() / denominator
    return crps / len(QUANTILES)


def csdi_crps_sum(forecast: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CSDI's ``calc_quantile_CRPS_sum``: the same over the sum of the variables, per level one
    ``torch.quantile`` of the whole (B, S, L) forecast sum along the samples (summed per level,
    as there)."""
    y_sum = y.sum(-1)
    denominator = y_sum.abs().sum()
    crps = torch.zeros(())
    for q in QUANTILES:
        q_pred = torch.quantile(forecast.sum(-1), q, dim=1)
        loss = 2 * ((q_pred - y_sum) * ((y_sum <= q_pred).float() - q)).abs().sum()
        crps = crps + loss / denominator
    return crps / len(QUANTILES)


def bench_crps(repeats: int) -> None:
    shape = (N_SAMPLES, 32, 96, 7)
    g = torch.Generator().manual_seed(0)
    samples, y = torch.randn(shape, generator=g), torch.randn(shape[1:], generator=g)
    n, part = y.numel(), 2048  # the per-element loop runs on `part` elements, scaled to n
    flat_samples, flat_y = samples.reshape(N_SAMPLES, -1), y.reshape(-1)
    # CSDI's own layout, (B, S, L, K): what its loops get (made once, untimed)
    per_window = samples.permute(1, 0, 2, 3).contiguous()
    print(f"\n== CRPS: {N_SAMPLES} samples of a batch of 32 × 96 steps × 7 variables ({n:,})")
    print(f"{'form':<34}{'ours ms':>9}{'loop ms':>11}{'ratio':>8}{'|difference|':>14}")
    forms: list[tuple[str, Callable[[], object], Callable[[], object], float, float]] = [
        (
            "ensemble vs per-element loop",
            lambda: crps_ensemble(samples, y),
            lambda: per_element_crps(samples, y, part),
            n / part,
            abs(
                float(crps_ensemble(flat_samples[:, :part], flat_y[:part]).mean())
                - per_element_crps(samples, y, part)
            ),
        ),
        (
            "fair vs the fork's pair loop",
            lambda: crps_fair(samples, y).mean(),
            lambda: fork_crps(samples, y),
            1.0,
            abs(float(crps_fair(samples, y).mean()) - float(fork_crps(samples, y))),
        ),
        (
            "quantile vs CSDI's per-level loop",
            lambda: crps_quantile(samples, y),
            lambda: csdi_crps(per_window, y),
            1.0,
            abs(float(crps_quantile(samples, y)) - float(csdi_crps(per_window, y))),
        ),
        (
            "CRPS-sum vs CSDI's per-level loop",
            lambda: crps_sum(samples, y),
            lambda: csdi_crps_sum(per_window, y),
            1.0,
            abs(float(crps_sum(samples, y)) - float(csdi_crps_sum(per_window, y))),
        ),
    ]
    for name, ours, loop, scale, diff in forms:
        got = turns({"ours": lambda f=ours: timed(f), "loop": lambda f=loop: timed(f)}, repeats)
        ours_ms, loop_ms = got["ours"] * 1e3, got["loop"] * 1e3 * scale
        print(f"{name:<34}{ours_ms:>9.1f}{loop_ms:>11.1f}{loop_ms / ours_ms:>7.0f}×{diff:>14.1e}")


# --------------------------------------------------------------------------------------------
# a training step


def _steps_per_second(batches: Iterator[Any], step: Callable[[Any], None], count: int) -> float:
    step(next(batches))  # the pipeline fills and the first step warms up
    t0 = time.perf_counter()
    for _ in range(count):
        step(next(batches))
    return count / (time.perf_counter() - t0)


def bench_step(repeats: int, batch_size: int, workers: int) -> None:
    window = WindowSpec(seq_len=96, splits=("val",), stride=4)
    features, images = FeatureSpec(), ImageSpec()
    with tempfile.TemporaryDirectory() as tmp:
        dataset = load(ETTH1, window)
        split = dataset.splits["val"]
        store = Store(Path(tmp) / "store", mode="a")
        t0 = time.perf_counter()
        prep_features(dataset, features, store, jobs=2)
        prep_images(dataset, images, store, jobs=2)
        reader = WindowReader(open_view(dataset, store), "val", features=features, images=images)
        assert reader.features is not None
        shapes = dict(reader.features.shapes)
        print(
            f"\n== training step: diffusion with DWT features, batches of {batch_size}, "
            f"ETTh1 val every 4th window ({len(split):,}), T=96, 224² images; store ready in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        torch.manual_seed(0)
        config = DiffusionConfig(**SMALL, reads_features=True)  # type: ignore[arg-type]
        model = FAMILY.build(info_of(split, 96, shapes), config)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step(batch: Batch) -> None:
            loss = FAMILY.loss(model, batch)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            opt.zero_grad(set_to_none=True)

        def from_tuple(t: tuple[Any, ...]) -> None:
            x, y, x_mark, y_mark, _prompt, _images = t
            feats = {k: torch.zeros((len(x), x.shape[2], *s)) for k, s in shapes.items()}
            step({"x": x, "y": y, "x_mark": x_mark, "y_mark": y_mark, "features": feats})

        loader = StoreLoader(reader, batch_size=batch_size, seed=1)
        on_the_fly = DataLoader(
            OnTheFly(split, images),
            batch_size=batch_size,
            shuffle=True,
            num_workers=workers,
            worker_init_fn=lambda _w: torch.set_num_threads(1),
        )

        def store_case() -> float:
            loader.set_epoch(loader.epoch + 1)
            reader.cache.clear()
            return _steps_per_second(iter(loader), step, 20)

        def fly_case() -> float:
            return _steps_per_second(iter(on_the_fly), from_tuple, 4)

        model_only = split_batch(split, batch_size) | {
            "features": {
                k: torch.zeros((batch_size, split.x.shape[2], *s)) for k, s in shapes.items()
            }
        }
        got = turns(
            {
                "store": store_case,
                "on the fly": fly_case,
                "model step alone": lambda: (
                    10 / timed(lambda: [step(model_only) for _ in range(10)])
                ),
            },
            repeats,
        )
        print(f"{'fed by':<20}{'steps/s':>10}{'windows/s':>11}{'ratio':>8}")
        for name, rate in got.items():
            print(
                f"{name:<20}{rate:>10.2f}{rate * batch_size:>11.1f}"
                f"{rate / got['on the fly']:>7.1f}×"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ddim-steps", type=int, default=20, help="sampling steps (ratio-neutral)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="on-the-fly DataLoader workers")
    p.add_argument("--skip-step", action="store_true", help="skip the training-step section")
    args = p.parse_args()
    default_threads = torch.get_num_threads()
    load_before = os.getloadavg()[0]
    bench_sampling(args.repeats, args.ddim_steps, 1)
    if default_threads > 1:
        bench_sampling(args.repeats, args.ddim_steps, default_threads)
    torch.set_num_threads(1)
    bench_crps(args.repeats)
    if not args.skip_step:
        bench_step(args.repeats, args.batch_size, args.workers)
    print(
        f"\n{args.repeats} runs per case, medians; one torch thread unless said; load average "
        f"{load_before:.1f} → {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
