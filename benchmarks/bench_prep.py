"""End to end into the store: `prep features` and `prep images` beside their baselines.

In one run, on ETTh1 at T=512 (7 variables), medians of several runs:

* features: the per-window DWT-prompt generator as commonly written (``baseline_dwt_prompt``,
  one call per window, ~300 windows spread over the file) vs. ``prep_features`` on all 13,603
  windows of all splits into a fresh store — from the CSV (load + hash + compute + write), from
  an already loaded data set, and with 2 joblib workers forced (what ``parallel_min_rows``
  for features should be: a warm pool, and the first run that starts it);
* images: a pyplot figure per image (150 images) vs. ``prep_images`` (masks, 224², every core)
  into a fresh store, on every window of the validation split (19,495 images);
* peak resident memory of the process.

    python benchmarks/bench_prep.py [--runs 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_dwt_prompt import baseline_windows_per_second, ett_windows
from bench_images import load_rows, pyplot_image

from tsfs.pipeline.prep import _features_job, _run, prep_features, prep_images
from tsfs.pipeline.sources import load
from tsfs.pipeline.windows import Dataset
from tsfs.specs import FeatureSpec, ImageSpec, WindowSpec
from tsfs.stores.store import Store

ROOT = Path(__file__).resolve().parents[1]
ETTH1 = ROOT / "data" / "ETTh1.csv"


def _fresh_store_runs(fn: Callable[[Store], int], runs: int) -> list[float]:
    """Items per second of ``fn`` into a fresh store, per run."""
    rates = []
    for _ in range(runs):
        tmp = Path(tempfile.mkdtemp(prefix="tsfs-bench-prep-"))
        try:
            t0 = time.perf_counter()
            n = fn(Store(tmp / "s", mode="a"))
            rates.append(n / (time.perf_counter() - t0))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return rates


def _prep_two_workers(dataset: Dataset, store: Store, batch_rows: int) -> None:
    """``prep_features`` with 2 joblib workers whatever the size: the run prep would make with
    ``parallel_min_rows`` at 0 (the number this measures)."""
    job = dataclasses.replace(_features_job(store, FeatureSpec(), "cpu"), parallel_min_rows=0)
    _run(
        job,
        dataset,
        jobs=2,
        batch_rows=batch_rows,
        progress=False,
        budget_bytes=None,
        force=False,
        executor="local",
        scheduler=None,
    )


def features(runs: int, jobs: int) -> None:
    series, starts = ett_windows()
    sample = starts[np.linspace(0, starts.size - 1, 300).astype(np.int64)]
    base = statistics.median(baseline_windows_per_second(series, sample) for _ in range(runs))
    window = WindowSpec(seq_len=512)
    loaded = load(ETTH1, window)
    n_windows = sum(len(s) for s in loaded.splits.values())
    prep_features(loaded, FeatureSpec(), Store(tempfile.mkdtemp() + "/warm", mode="a"))  # imports

    def from_csv(store: Store, jobs: int = 1) -> int:
        prep_features(load(ETTH1, window), FeatureSpec(), store, jobs=jobs)
        return n_windows

    def from_loaded(store: Store) -> int:
        prep_features(loaded, FeatureSpec(), store, jobs=1)
        return n_windows

    def two_workers(store: Store) -> int:
        # batches of ~1/4 of the rows, so that the two workers get even shares
        _prep_two_workers(load(ETTH1, window), store, batch_rows=n_windows * 7 // 4 + 1)
        return n_windows

    print(f"features, ETTh1 T=512 db4 L3, {n_windows:,} windows x 7 variables")
    print(f"  baseline per-window generator      {base:>10,.0f} windows/s")
    cases: list[tuple[str, Callable[[Store], int]]] = [
        ("prep_features from CSV, 1 process", from_csv),
        ("prep_features, data loaded, 1 proc", from_loaded),
        (f"prep_features from CSV, --jobs {jobs}", lambda s: from_csv(s, jobs)),
    ]
    # the first run starts the workers (spawn + imports); later runs reuse them
    cold = _fresh_store_runs(two_workers, 1)[0]
    cases.append(("from CSV, 2 workers (warm pool)", two_workers))
    for label, fn in cases:
        rate = statistics.median(_fresh_store_runs(fn, runs))
        print(f"  {label:<35}{rate:>10,.0f} windows/s   {rate / base:6.1f}x")
    print(f"  {'from CSV, 2 workers, first run':<35}{cold:>10,.0f} windows/s   {cold / base:6.1f}x")


def images(runs: int, jobs: int) -> None:
    spec = ImageSpec()
    rows = load_rows(512, 150)
    pyplot_image(rows[0], spec)  # warm-up
    base_rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for r in rows:
            pyplot_image(r, spec)
        base_rates.append(len(rows) / (time.perf_counter() - t0))
    base = statistics.median(base_rates)
    window = WindowSpec(seq_len=512, splits=("val",))
    data = load(ETTH1, window)
    n_images = sum(len(s) for s in data.splits.values()) * len(data.variables)

    def run(store: Store) -> int:  # end to end: from the CSV, as the features cases
        report = prep_images(load(ETTH1, window), spec, store, jobs=jobs)
        return report.rows_computed

    rate = statistics.median(_fresh_store_runs(run, runs))
    print(f"images 224x224 masks, ETTh1 T=512, {n_images:,} images")
    print(f"  baseline pyplot figure per image   {base:>10,.1f} images/s")
    print(f"  prep_images --jobs {jobs} into a store {rate:>10,.1f} images/s   {rate / base:6.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    jobs = len(os.sched_getaffinity(0))
    features(args.runs, jobs)
    images(args.runs, jobs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of this process: {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
