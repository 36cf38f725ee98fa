"""`prep features` on wide data (ECL-shaped: 321 variables × 26,304 hours) beside the baseline.

Wide data is where batching bites: prep's batches hold ~64k rows, which is ~200 windows of 321
variables, so every per-batch cost that grows with the series' length is paid ~130 times.
This prints, in one run:

* the per-window DWT-prompt generator as commonly written (``baseline_dwt_prompt``, one call
  per window over all variables) on windows spread over the series;
* ``prep_features`` from the CSV into a fresh store on every core: windows/s, rows/s and the
  ratio to the baseline (medians of ``--runs``);
* peak resident memory of this process.

The CSV is synthetic but shaped and scaled as ECL (hourly load per client: a daily cycle, a
level per client, noise; one decimal), made once per run in a temporary directory.

    python benchmarks/bench_wide.py [--variables 321] [--length 26304] [--seq-len 96] [--runs 1]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_dwt_prompt import baseline_windows_per_second

from tsfs.pipeline.prep import prep_features
from tsfs.pipeline.sources import load
from tsfs.specs import FeatureSpec, WindowSpec
from tsfs.stores.store import Store


def write_csv(path: Path, variables: int, length: int) -> None:
    """An ECL-shaped CSV: ``date`` then ``0 … V-2, OT``, hourly from 2016-07-01 02:00."""
    rng = np.random.default_rng(0)
    hours = np.arange(length)
    daily = np.sin(2 * np.pi * hours / 24)[:, None] * rng.uniform(50, 500, variables)
    values = daily + rng.uniform(100, 3000, variables) + rng.normal(0, 30, (length, variables))
    start = np.datetime64("2016-07-01T02:00")
    dates = (start + hours.astype("timedelta64[h]")).astype(str)
    header = ",".join(["date", *(str(v) for v in range(variables - 1)), "OT"])
    with path.open("w") as f:
        f.write(header + "\n")
        for date, row in zip(dates, values.round(1), strict=True):
            f.write(date.replace("T", " ") + ":00," + ",".join(map(str, row.tolist())) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variables", type=int, default=321)
    ap.add_argument("--length", type=int, default=26304)
    ap.add_argument("--seq-len", type=int, default=96)
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    jobs = len(os.sched_getaffinity(0))
    tmp = Path(tempfile.mkdtemp(prefix="tsfs-bench-wide-"))
    try:
        csv = tmp / "ECL.csv"
        t0 = time.perf_counter()
        write_csv(csv, args.variables, args.length)
        window = WindowSpec(seq_len=args.seq_len, preset="custom")
        data = load(csv, window)
        windows = sum(len(s) for s in data.splits.values())
        rows = windows * len(data.variables)
        print(
            f"ECL-shaped CSV, {args.variables} variables x {args.length:,} steps "
            f"({csv.stat().st_size / 2**20:.0f} MiB, made in {time.perf_counter() - t0:.0f} s); "
            f"T={args.seq_len}, {windows:,} windows, {rows:,} rows, db4 level 3, {jobs} cores"
        )
        train = data.splits["train"]
        series = np.array(train.series, dtype=np.float32)  # writable, for torch.from_numpy
        sample = np.asarray(train.starts)[np.linspace(0, len(train) - 1, 40).astype(np.int64)]
        base = baseline_windows_per_second(series, sample, seq_len=args.seq_len)
        print(f"  baseline per-window generator    {base:>10,.1f} windows/s")
        rates = []
        for run in range(args.runs):
            store = Store(tmp / f"store{run}", mode="a")
            t0 = time.perf_counter()
            report = prep_features(load(csv, window), FeatureSpec(), store, jobs=jobs)
            seconds = time.perf_counter() - t0
            assert report.rows_computed + report.rows_reused <= rows
            rates.append(windows / seconds)
            shutil.rmtree(tmp / f"store{run}", ignore_errors=True)
        rate = statistics.median(rates)
        print(
            f"  prep_features from CSV, --jobs {jobs} {rate:>10,.1f} windows/s "
            f"({rate * len(data.variables):,.0f} rows/s, {windows / rate:.1f} s)  "
            f"{rate / base:6.1f}x"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of this process: {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
