"""Planning rows: every distinct row exactly once, nothing the store holds, batches on windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tsfs.pipeline.execute import Block, _first_occurrence, plan_rows
from tsfs.pipeline.hashing import row_keys
from tsfs.stores.store import Store


def _blocks() -> list[Block]:
    rng = np.random.default_rng(0)
    series = rng.standard_normal((400, 3)).astype(np.float32)
    series[100:200, 1] = 5.0  # a flat stretch: many identical rows within one variable
    samples = rng.standard_normal((20, 32, 3)).astype(np.float32)
    samples[5] = samples[2]  # a duplicated sample
    return [
        Block(name="train", seq_len=32, series=series, starts=np.arange(0, 300, 3)),
        Block(name="val", seq_len=32, series=series, starts=np.arange(150, 368, 2)),  # overlaps
        Block(name="test", seq_len=32, samples=samples),
    ]


def _all_rows(blocks: list[Block]) -> list[np.ndarray]:
    rows = []
    for b in blocks:
        for w in range(b.n_windows):
            for v in range(b.n_variables):
                rows.append(b.rows(np.array([w]), np.array([v]))[0])
    return rows


def test_plan_covers_each_distinct_row_once() -> None:
    blocks = _blocks()
    plan = plan_rows(blocks, None, key_algorithm="xxh3-128", batch_rows=50)
    rows = _all_rows(blocks)
    distinct = {r.tobytes() for r in rows}
    assert plan.rows_total == len(rows)
    assert plan.rows_unique == len(distinct)
    planned = []
    for b in plan.batches:
        w, v = np.nonzero(b.select)
        got = b.block.rows(b.windows[w], v)
        np.testing.assert_array_equal(row_keys(got), b.keys)  # keys follow row order
        planned.extend(r.tobytes() for r in got)
        assert b.n_rows <= 50 + b.block.n_variables  # cut on window boundaries
    assert sorted(planned) == sorted(distinct)


def test_plan_skips_rows_the_store_holds(tmp_path: Path) -> None:
    blocks = _blocks()
    store = Store(tmp_path / "s", mode="a")
    ns = store.namespace("features", {"kind": "features"}, "00000000000000aa")
    first = plan_rows(blocks, ns, key_algorithm=store.key, batch_rows=64)
    done = first.batches[::2]
    for b in done:
        ns.write_segment(b.keys, {"one": np.ones(b.n_rows, np.float32)})
    second = plan_rows(blocks, ns, key_algorithm=store.key, batch_rows=64)
    assert second.rows_present == sum(b.n_rows for b in done)
    assert second.rows_missing == first.rows_missing - second.rows_present
    left = {k.tobytes() for b in second.batches for k in b.keys}
    assert not left & {k.tobytes() for b in done for k in b.keys}


def test_workers_get_equal_batches_in_a_multiple_of_their_number() -> None:
    series = np.random.default_rng(1).standard_normal((3000, 7)).astype(np.float32)
    block = Block(name="val", seq_len=64, series=series, starts=np.arange(2785))
    rows = 2785 * 7
    # One worker: batches as large as allowed (a remainder spread over the block's batches).
    alone = plan_rows([block], None, key_algorithm="xxh3-128", batch_rows=2048)
    assert len(alone.batches) == -(-rows // 2048)
    # Eight batches at least (two workers, four each): 10 by size, rounded up to 16.
    shared = plan_rows([block], None, key_algorithm="xxh3-128", batch_rows=2048, min_batches=8)
    sizes = [b.n_rows for b in shared.batches]
    assert len(sizes) == 16
    assert sum(sizes) == rows
    assert max(sizes) - min(sizes) <= 7  # equal, up to one window's rows
    assert max(sizes) <= 2048


def test_one_process_with_threads_stores_what_one_thread_stores(tmp_path: Path) -> None:
    """``jobs=2`` below the worker threshold runs one process on two threads: same rows."""
    from tsfs.pipeline.prep import features_namespace, prep_features
    from tsfs.pipeline.sources import load
    from tsfs.specs import FeatureSpec, WindowSpec

    data = load(Path(__file__).resolve().parents[1] / "data" / "ETTh1.csv", WindowSpec(seq_len=96))
    stored = []
    for jobs in (1, 2):
        store = Store(tmp_path / f"jobs{jobs}", mode="a")
        report = prep_features(data, FeatureSpec(), store, jobs=jobs)
        assert report.rows_computed == report.rows_unique > 0
        ns = features_namespace(store, FeatureSpec(level=3))
        rows: dict[bytes, tuple[bytes, ...]] = {}
        for commit in ns.index(refresh=True).segments:
            names = sorted(commit.arrays)
            arrays = {n: ns.read_array(commit, n) for n in names}
            for r in range(commit.rows):
                rows[arrays["keys"][r].tobytes()] = tuple(arrays[n][r].tobytes() for n in names)
        stored.append(rows)
    assert len(stored[0]) == report.rows_unique
    assert stored[1] == stored[0]


@pytest.mark.parametrize("shared_halves", [False, True])
def test_first_occurrences_of_keys(shared_halves: bool) -> None:
    """Against numpy's own unique over whole keys; keys that share their first 8 bytes but
    not their last (never seen from a real hash, made here) must still count as distinct."""
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 256, (5000, 16), dtype=np.uint8)
    keys[rng.integers(0, 5000, 800)] = keys[rng.integers(0, 5000, 800)]  # repeats
    if shared_halves:
        keys[100:140, :8] = keys[7, :8]
    _, first = np.unique(keys.view("V16").ravel(), return_index=True)
    want = np.zeros(len(keys), dtype=bool)
    want[first] = True
    np.testing.assert_array_equal(_first_occurrence(keys), want)
