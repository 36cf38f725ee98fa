"""Store figures: rows hashed per second, key lookups, files per namespace.

Prints, each beside its baseline in the same run (medians of several runs):
* rows hashed per second on ETTh1 at T=512 (all windows of all splits, 7 variables):
  tsfs's xxh3-128 straight from the series vs. the common way (copy each window, then
  hashlib.blake2b of its bytes) and our BLAKE2b-128 option;
* seconds to look up 1,000,000 keys in a 1,000,000-row index vs. a Python dict of bytes keys;
* files (and bytes) a 100,000-row features namespace produces;
* maintenance of a features namespace of ~190 segments (ETTh1 T=96, ``--batch-rows 512``):
  reading every array for ``verify``/``compact`` directly vs. through zarr-python's
  ``open_array`` and slicing (what tsfs did before), and removing the replaced segment trees
  on 8 threads vs. one ``shutil.rmtree`` after another; then ``store compact`` end to end.

    python benchmarks/bench_store.py
"""

from __future__ import annotations

import hashlib
import os
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


def maintenance() -> None:
    import zarr

    from tsfs.stores.store import _concurrently

    data = load(ETTH1, WindowSpec(seq_len=96, pred_len=96, features="M"))
    tmp = Path(tempfile.mkdtemp(prefix="tsfs-bench-store-"))
    try:
        made = Store(tmp / "s", mode="a")
        prep_features(data, FeatureSpec(), made, jobs=1, batch_rows=512)
        (ns,) = made.namespaces()
        commits = ns.commits()
        arrays = [(c, name) for c in commits for name in c.arrays]

        def direct() -> None:
            fresh = Store(tmp / "s").namespaces()[0]  # nothing learnt beforehand
            for c, name in arrays:
                fresh.read_array(c, name)

        def through_zarr() -> None:
            zstore = ns.files.zarr_store()
            for c, name in arrays:
                path = f"{ns.segment_key(c.segment)}/{name}"
                np.asarray(zarr.open_array(zstore, path=path, mode="r")[:])

        fast, slow = median_time(direct, 3), median_time(through_zarr, 3)
        print(
            f"reading all {len(arrays):,} arrays of {len(commits)} segments: direct "
            f"{fast:.2f} s, through zarr-python {slow:.2f} s ({slow / fast:.1f}x)"
        )

        def copy(name: str) -> Path:
            shutil.copytree(tmp / "s", tmp / name)
            return tmp / name

        def segment_trees(root: Path) -> list[Path]:
            return sorted(root.glob("features/*/segments/[0-9a-f]*"))

        threaded, serial = [], []
        for run in range(3):  # fresh copies each time, written out before the clock starts
            trees_a, trees_b = segment_trees(copy(f"a{run}")), segment_trees(copy(f"b{run}"))
            os.sync()
            t0 = time.perf_counter()
            _concurrently(shutil.rmtree, trees_a)
            threaded.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for tree in trees_b:
                shutil.rmtree(tree)
            serial.append(time.perf_counter() - t0)
        a, b = statistics.median(threaded), statistics.median(serial)
        print(
            f"removing {len(commits)} segment trees: 8 threads {a:.2f} s, one after another "
            f"{b:.2f} s ({b / a:.1f}x)"
        )
        compacted = copy("compact")
        os.sync()
        t0 = time.perf_counter()
        Store(compacted, mode="a").compact()
        print(f"store compact of those {len(commits)} segments: {time.perf_counter() - t0:.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    hashing()
    lookups()
    files_per_namespace()
    maintenance()
