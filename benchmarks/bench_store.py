"""Store figures: rows hashed per second, key lookups, files per namespace.

Prints, each beside its baseline in the same run (medians of several runs):
* rows hashed per second on ETTh1 at T=512 (all windows of all splits, 7 variables):
  tsfs's xxh3-128 straight from the series vs. the common way (copy each window, then
  hashlib.blake2b of its bytes) and our BLAKE2b-128 option;
* seconds to look up 1,000,000 keys in a 1,000,000-row index vs. a Python dict of bytes keys;
* files (and bytes) a 100,000-row features namespace produces.

    python benchmarks/bench_store.py
"""

from __future__ import annotations

import hashlib
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tsfs.pipeline.execute import plan_rows
from tsfs.pipeline.hashing import window_keys
from tsfs.pipeline.prep import dataset_blocks, features_namespace, prep_features
from tsfs.pipeline.sources import load
from tsfs.specs import FeatureSpec, WindowSpec
from tsfs.stores.store import KeyIndex, Store

ROOT = Path(__file__).resolve().parents[1]
ETTH1 = ROOT / "data" / "ETTh1.csv"


def median_time(fn: Callable[[], object], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def hashing() -> None:
    data = load(ETTH1, WindowSpec(seq_len=512))
    blocks = dataset_blocks(data)
    rows = sum(b.n_windows * b.n_variables for b in blocks)

    def ours(algorithm: str) -> None:
        for b in blocks:
            assert b.series is not None
            assert b.starts is not None
            window_keys(b.series, b.starts, b.seq_len, algorithm)

    def common() -> None:  # what a per-window loader typically does
        for b in blocks:
            assert b.series is not None
            assert b.starts is not None
            for s in b.starts:
                window = np.ascontiguousarray(b.series[s : s + b.seq_len].T)
                for v in range(len(window)):
                    hashlib.blake2b(window[v].tobytes(), digest_size=16).digest()

    t_x = median_time(lambda: ours("xxh3-128"))
    t_b = median_time(lambda: ours("blake2b-128"))
    t_c = median_time(common, runs=3)
    print(f"hashing ETTh1 T=512, {rows:,} rows")
    print(f"  tsfs xxh3-128 from the series   {rows / t_x:>12,.0f} rows/s")
    print(f"  tsfs blake2b-128 from the series{rows / t_b:>12,.0f} rows/s")
    print(f"  copy window + blake2b (common)  {rows / t_c:>12,.0f} rows/s   ratio {t_c / t_x:.1f}x")
    t_plan = median_time(
        lambda: plan_rows(blocks, None, key_algorithm="xxh3-128", batch_rows=65536)
    )
    print(f"  whole plan (hash + dedup + batches) {t_plan * 1000:.0f} ms")


def lookups() -> None:
    n = 1_000_000
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    t0 = time.perf_counter()
    index = KeyIndex.build([], [keys])  # type: ignore[arg-type]
    build = time.perf_counter() - t0
    queries = keys[rng.permutation(n)]
    t_ours = median_time(lambda: index.lookup(queries), runs=3)
    table = {k.tobytes(): i for i, k in enumerate(keys)}
    qb = [q.tobytes() for q in queries]
    t_dict = median_time(lambda: [table.get(q, -1) for q in qb], runs=3)
    print(f"lookup of 1,000,000 keys in a 1,000,000-row index (index built in {build:.2f} s)")
    print(f"  tsfs vectorized lookup  {t_ours:.3f} s")
    print(
        f"  Python dict of bytes    {t_dict:.3f} s (keys already bytes)"
        f"   ratio {t_dict / t_ours:.1f}x"
    )


def files_per_namespace() -> None:
    data = load(ETTH1, WindowSpec(seq_len=96, pred_len=96, features="M"))
    tmp = Path(tempfile.mkdtemp(prefix="tsfs-bench-store-"))
    try:
        store = Store(tmp / "s", mode="a")
        report = prep_features(data, FeatureSpec(), store, jobs=1)
        ns = features_namespace(store, FeatureSpec())
        info = next(s for s in store.info()["namespaces"] if s["fingerprint"] == ns.fingerprint)
        print(
            f"features namespace of {report.rows_computed:,} rows (ETTh1 T=96, all splits): "
            f"{info['files']} files, {info['bytes'] / 2**20:.1f} MiB, "
            f"{info['segments']} segments"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    hashing()
    lookups()
    files_per_namespace()
