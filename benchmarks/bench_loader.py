"""Training reads: batches of (x, y, features, RGB images) from a store vs computed on the fly.

Prints windows/s, batches/s and images/s of each case (median and range of several runs, the
cases taking turns run by run, so load from other processes falls on all of them alike) and
each case's ratio to the on-the-fly baseline. Rates are steady-state: every case first runs
once untimed, each run starts a second after the previous case's (whose worker processes and
freed memory otherwise slow the next case's first batches), and timing starts once the
loader's prefetching is full.

    python benchmarks/bench_loader.py [--store DIR] [--split val] [--workers 2] [--repeats 3]

``on the fly``
    What training code commonly does: a map-style Dataset whose ``__getitem__`` computes the
    window's prompt features with the per-window DWT generator
    (:func:`baseline_dwt_prompt.baseline_window`) and draws each variable's line plot with a
    fresh pyplot figure (:func:`bench_images.pyplot_image`), in a shuffling DataLoader.
``store → RGB``
    :class:`tsfs.training.data.StoreLoader` over the stored features and masks, chunk-aware
    order, read on the loader's background thread, images composed to RGB on the CPU (the
    device here). ``(Nw)``: read in N DataLoader worker processes instead.
``store → masks (not RGB)``
    The same, images handed over as masks: what a GPU run copies to the device, where
    composing is one table lookup per pixel (not measured here; this machine has no GPU).
    Its batches are not RGB: the issue's goals (100× in RGB batches, 10,000 composed images
    per second) are read off the RGB rows; this one shows what composing costs.

ETTh1 at T=512 (Time-LLM's length), 224×224 images, batches of 64 windows, V=7. The store is
prepared first (untimed; only missing rows are computed, so a kept ``--store`` is reused).
"""

from __future__ import annotations

import argparse
import dataclasses
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
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_dwt_prompt import baseline_window
from bench_images import pyplot_image

from tsfs.pipeline.compose import TAB10
from tsfs.pipeline.prep import prep_features, prep_images
from tsfs.pipeline.sources import load
from tsfs.pipeline.windows import Split
from tsfs.specs import FeatureSpec, ImageSpec, WindowSpec
from tsfs.stores.store import Store
from tsfs.training.data import ImageOutput, StoreLoader, WindowReader, open_view

ETTH1 = Path(__file__).resolve().parents[1] / "data" / "ETTh1.csv"
SEQ_LEN, BATCH, BASELINE_BATCH = 512, 64, 8
SETTLE_S = 1.0


class OnTheFly(Dataset[tuple[Any, ...]]):
    """The baseline: everything a window needs, computed inside ``__getitem__``."""

    def __init__(self, split: Split, spec: ImageSpec) -> None:
        self.split = split
        self.specs = [dataclasses.replace(spec, color=TAB10[v]) for v in range(split.x.shape[2])]

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        s = self.split
        x = np.array(s.x[i])
        prompt, _ = baseline_window(torch.from_numpy(x))
        images = np.stack([pyplot_image(x[:, v], spec) for v, spec in enumerate(self.specs)])
        marks = np.array(s.y[i]), np.array(s.x_mark[i]), np.array(s.y_mark[i])
        return x, *marks, prompt, images.transpose(0, 3, 1, 2)


def _single_thread(_worker: int) -> None:
    torch.set_num_threads(1)


def windows_per_second(batches: Iterator[Any], *, skip: int, count: int) -> float:
    """Windows per second over ``count`` batches, once ``skip`` batches filled the pipeline.

    Batches are dicts with an ``index`` (the store loader) or tuples led by ``x`` (baseline).
    """
    for _ in range(skip):
        next(batches)
    t0 = time.perf_counter()
    windows = 0
    for _ in range(count):
        batch = next(batches)
        windows += len(batch["index"] if isinstance(batch, dict) else batch[0])
    return windows / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store", type=Path, help="store directory (default: a temporary one)")
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (baseline too)")
    p.add_argument("--batches", type=int, default=20, help="timed store batches per run")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(args.store or Path(tmp) / "store", mode="a")
        dataset = load(ETTH1, WindowSpec(seq_len=SEQ_LEN, splits=(args.split,)))
        split = dataset.splits[args.split]
        features, images = FeatureSpec(), ImageSpec()
        t0 = time.perf_counter()
        prep_features(dataset, features, store, jobs=2)
        prep_images(dataset, images, store, jobs=2)
        view = open_view(dataset, store)
        print(
            f"ETTh1 {args.split}: {len(split):,} windows, T={SEQ_LEN}, V=7, 224² images; "
            f"store ready in {time.perf_counter() - t0:.1f} s"
        )

        def from_store(output: ImageOutput, workers: int) -> Callable[[], float]:
            reader = WindowReader(
                view, args.split, features=features, images=images, image_output=output
            )
            loader = StoreLoader(reader, batch_size=BATCH, num_workers=workers, seed=1)
            fill = 2 * max(workers, 1)  # prefetch_factor 2 per worker (or the reader thread)

            def run() -> float:
                loader.set_epoch(loader.epoch + 1)  # a fresh epoch, with a cold cache
                reader.cache.clear()
                return windows_per_second(iter(loader), skip=fill, count=args.batches)

            return run

        # The baseline's batches are smaller (a batch of 64 takes it seconds); the cost it
        # measures is per window either way.
        on_the_fly = DataLoader(
            OnTheFly(split, images),
            batch_size=BASELINE_BATCH,
            shuffle=True,
            num_workers=args.workers,
            worker_init_fn=_single_thread,
        )
        fill = 2 * max(args.workers, 1)
        cases: dict[str, Callable[[], float]] = {
            "on the fly": lambda: windows_per_second(iter(on_the_fly), skip=fill, count=fill),
            "store → RGB": from_store("uint8", 0),
            f"store → RGB ({args.workers}w)": from_store("uint8", args.workers),
            "store → masks (not RGB)": from_store("mask", 0),
        }
        runs: dict[str, list[float]] = {name: [] for name in cases}
        load_before = os.getloadavg()[0]
        for round_ in range(args.repeats + 1):
            for name, case in cases.items():
                time.sleep(SETTLE_S)  # the previous case's processes and memory wind down
                rate = case()
                if round_:  # the first round warms every case up (buffers, pools, caches)
                    runs[name].append(rate)
        print(
            f"{args.repeats} runs per case, taking turns; load average {load_before:.1f} → "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores. Batches of {BATCH} windows "
            f"(baseline {BASELINE_BATCH}), {args.workers} DataLoader workers for the baseline "
            "and the (Nw) case, otherwise the loader's reader thread."
        )
        base = statistics.median(runs["on the fly"])
        print(
            f"{'case':<26}{'windows/s':>11}{'range':>17}{'batches/s':>11}{'images/s':>10}"
            f"{'ratio':>8}"
        )
        for name, rates in runs.items():
            med = statistics.median(rates)
            spread = f"{min(rates):,.0f}–{max(rates):,.0f}"
            print(
                f"{name:<26}{med:>11,.1f}{spread:>17}{med / BATCH:>11.2f}{med * 7:>10,.0f}"
                f"{med / base:>7.0f}×"
            )


if __name__ == "__main__":
    main()
