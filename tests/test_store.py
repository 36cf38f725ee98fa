"""Contract tests of the store on real directories and real Zarr files."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tsfs.errors import (
    InputError,
    MissingRowsError,
    StoreCorruptError,
    StoreFormatError,
    StoreReadOnlyError,
)
from tsfs.pipeline.hashing import row_keys
from tsfs.stores.store import KeyIndex, Store

SPEC = {"kind": "features", "version": 1, "wavelet": "db4"}
FP = "0123456789abcdef"


def _rows(n: int, t: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, t)).astype(np.float32)


def _outputs(rows: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "mean": rows.mean(axis=1).astype(np.float32),
        "band": np.stack([rows.min(axis=1), rows.max(axis=1)], axis=1).astype(np.float64),
        "mask": (np.abs(rows[:, :, None]) * np.ones((1, 1, 8)) * 40).astype(np.uint8),
    }


def _write(store: Store, rows: np.ndarray) -> None:
    ns = store.namespace("features", SPEC, FP)
    ns.write_segment(row_keys(rows), _outputs(rows), codecs={"mask": "zstd"})


def test_write_lookup_read_roundtrip(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", mode="a")
    rows = _rows(300)
    _write(store, rows[:200])
    _write(store, rows[150:])  # overlaps by 50 rows: duplicates are harmless
    ns = Store(tmp_path / "s").namespace("features", SPEC, FP)
    assert len(ns) == 300
    loc = ns.lookup(row_keys(rows[::-1]))
    assert loc.found.all()
    got = ns.read(loc)
    want = _outputs(rows[::-1])
    for name, arr in want.items():
        np.testing.assert_array_equal(got[name], arr)
    # unknown keys are reported missing, and reading them names the command that fills them
    other = row_keys(_rows(5, seed=1))
    assert not ns.lookup(other).found.any()
    with pytest.raises(MissingRowsError, match="tsfs prep features"):
        ns.read_keys(other)


def test_index_lookup_matches_a_dict(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    keys = [rng.integers(0, 256, (n, 16), dtype=np.uint8) for n in (1000, 500)]
    # force shared upper halves (the rare path) and a duplicate across segments
    keys[1][:10, :8] = keys[0][:10, :8]
    keys[1][10] = keys[0][20]
    idx = KeyIndex.build([], keys)  # type: ignore[arg-type]
    oracle: dict[bytes, tuple[int, int]] = {}
    for s, k in enumerate(keys):
        for r, key in enumerate(k):
            oracle.setdefault(key.tobytes(), (s, r))
    queries = np.concatenate([keys[1], keys[0][::7], rng.integers(0, 256, (50, 16), np.uint8)])
    loc = idx.lookup(queries)
    for q, s, r in zip(queries, loc.segment, loc.row, strict=True):
        assert oracle.get(q.tobytes(), (-1, -1)) == (s, r)


def test_uncommitted_segment_is_invisible_and_gc_removes_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", mode="a")
    rows = _rows(50)
    _write(store, rows)
    ns = store.namespace("features", SPEC, FP)
    commit = ns.commits()[0]
    (ns.path / "commits" / f"{commit.segment}.json").unlink()  # as if killed before commit
    assert len(Store(tmp_path / "s").namespace("features", SPEC, FP)) == 0
    young = store.gc(dry_run=True)  # default grace: too young to tell from a live writer
    assert (young.uncommitted, young.skipped_recent, young.skipped_active) == ([], 1, 0)
    report = store.gc(grace_s=0, dry_run=True)
    assert len(report.uncommitted) == 1
    assert ns.segment_path(commit.segment).exists()
    store.gc(grace_s=0)
    assert not ns.segment_path(commit.segment).exists()


def test_gc_keeps_a_segment_that_commits_while_gc_looks_at_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gc lists the commit records, then the segments: a writer can commit and let go of its
    lock in between, so the listing names a segment that is committed by the time its lock
    is checked. It must survive (seen with `gc --grace 0` beside a running prep)."""
    from tsfs.stores.store import Namespace

    store = Store(tmp_path / "s", mode="a")
    rows = _rows(50)
    _write(store, rows)
    ns = store.namespace("features", SPEC, FP)
    (seg,) = [c.segment for c in ns.commits()]
    # what the listing returns when taken just before the commit record was written
    monkeypatch.setattr(Namespace, "uncommitted", lambda self: [seg])
    report = store.gc(grace_s=0)
    assert report.uncommitted == []
    monkeypatch.undo()
    assert store.verify() == []
    assert Store(tmp_path / "s").namespace("features", SPEC, FP).lookup(row_keys(rows)).found.all()


def test_flipped_byte_is_named_verified_and_repaired(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", mode="a")
    rows = _rows(64)
    _write(store, rows)
    ns = store.namespace("features", SPEC, FP)
    seg = ns.commits()[0].segment
    chunk = ns.segment_path(seg) / "band" / "c" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[5] ^= 0x10
    chunk.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match=re.escape(str(chunk))):
        ns.read_keys(row_keys(rows), ["band"])
    problems = store.verify()
    assert [p.path for p in problems] == [str(chunk)]
    report = store.gc(drop_corrupt=True, grace_s=0)
    assert report.corrupt == [str(ns.segment_path(seg))]
    assert store.verify() == []
    assert not ns.lookup(row_keys(rows)).found.any()  # rows are gone: prep recomputes them


@pytest.mark.parametrize(
    "edit",
    [
        {"shape": [1, 2]},
        {"zarr_format": 2},
        {"node_type": "group"},
        {"fill_value": "abc"},
        {"data_type": "complex64"},
        {"data_type": None},
    ],
)
def test_invalid_array_metadata_is_named_and_dropped(tmp_path: Path, edit: dict) -> None:
    store = Store(tmp_path / "s", mode="a")
    _write(store, _rows(10))
    _write(store, _rows(10, seed=1))
    ns = store.namespace("features", SPEC, FP)
    seg = ns.commits()[0].segment
    meta = ns.segment_path(seg) / "mean" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc.update(edit)
    doc = {k: v for k, v in doc.items() if v is not None}
    meta.write_text(json.dumps(doc))
    (problem,) = store.verify()
    assert problem.path == str(meta.parent)  # the array; its message names the file
    assert "invalid array metadata" in problem.message
    assert store.gc(drop_corrupt=True, grace_s=0).corrupt == [str(ns.segment_path(seg))]
    assert store.verify() == []
    assert len(Store(tmp_path / "s").namespace("features", SPEC, FP)) == 10


def test_a_stray_copy_of_a_commit_record_is_no_record(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", mode="a")
    _write(store, _rows(10))
    ns = store.namespace("features", SPEC, FP)
    record = ns.path / "commits" / f"{ns.commits()[0].segment}.json"
    (record.parent / f"{record.stem} (copy).json").write_bytes(record.read_bytes())
    fresh = Store(tmp_path / "s").namespace("features", SPEC, FP)
    assert len(fresh) == 10
    assert len(fresh.commits()) == 1
    assert store.verify() == []


def test_deleted_chunk_file_is_reported(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", mode="a")
    _write(store, _rows(10))
    ns = store.namespace("features", SPEC, FP)
    f = ns.segment_path(ns.commits()[0].segment) / "mean" / "c" / "0"
    f.unlink()
    assert [p.path for p in store.verify()] == [str(f)]


def test_compact_merges_and_dedups(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", mode="a")
    rows = _rows(120)
    ns = store.namespace("features", SPEC, FP)
    for a in range(0, 120, 30):
        # 10 duplicate rows between neighbours; the newest segment with another mask codec
        codec = "lz4" if a == 90 else "zstd"
        ns.write_segment(
            row_keys(rows[a : a + 40]), _outputs(rows[a : a + 40]), codecs={"mask": codec}
        )
    assert len(ns.commits()) == 4
    store.compact()
    assert len(ns.commits()) == 1
    assert ns.commits()[0].rows == 120
    assert ns.commits()[0].arrays["mask"].codec == "lz4"  # the last codec a run chose
    got = ns.read_keys(row_keys(rows))
    np.testing.assert_array_equal(got["band"], _outputs(rows)["band"])
    assert store.verify() == []
    assert len(list((ns.path / "segments").iterdir())) == 2  # zarr.json + one segment


def test_two_compactions_of_a_namespace_take_turns(tmp_path: Path) -> None:
    """Two `tsfs store compact` runs from one snapshot each kept every row: the store ended
    with every key twice (or one run failed on segments the other removed). The second now
    waits for the first, then finds nothing left to merge."""
    store = Store(tmp_path / "s", mode="a")
    rows = _rows(300)
    ns = store.namespace("features", SPEC, FP)
    for a in range(0, 300, 30):  # every key twice, in segments of 30
        for _copy in range(2):
            ns.write_segment(row_keys(rows[a : a + 30]), _outputs(rows[a : a + 30]))
    compact = [sys.executable, "-m", "tsfs", "store", "compact", str(tmp_path / "s")]
    with store.files.exclusive(ns.key):  # a compaction of this namespace under way
        runs = [subprocess.Popen(compact, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        time.sleep(2.0)
        assert [r.poll() for r in runs] == [None, None]  # both wait their turn
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
    (commit,) = ns.commits()
    assert commit.rows == 300  # one copy of each key
    np.testing.assert_array_equal(ns.read_keys(row_keys(rows))["band"], _outputs(rows)["band"])
    assert store.verify() == []


def test_bad_store_paths(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        Store(f, mode="a")
    with pytest.raises(InputError, match="no tsfs store"):
        Store(tmp_path / "missing")
    (tmp_path / "notempty").mkdir()
    (tmp_path / "notempty" / "x").write_text("x")
    with pytest.raises(InputError, match="not a tsfs store"):
        Store(tmp_path / "notempty", mode="a")
    # a URL short of a slash read as a local path: prep made ./s3:/bucket/store
    for typo in ("s3:/bucket/store", "s3//bucket/store", "gs:/bucket/store"):
        with pytest.raises(InputError, match=r"looks like a mistyped URL; write (s3|gs)://"):
            Store(typo, mode="a")
    assert not Path("s3:").exists()
    assert not Path("s3").exists()


def test_newer_format_is_refused(tmp_path: Path) -> None:
    Store(tmp_path / "s", mode="a")
    root = tmp_path / "s" / "zarr.json"
    doc = json.loads(root.read_text())
    doc["attributes"]["tsfs"]["format"] = 99
    root.write_text(json.dumps(doc))
    with pytest.raises(StoreFormatError, match=r"format 99.*upgrade tsfs"):
        Store(tmp_path / "s")


def test_read_only_store_refuses_writes(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", mode="a")
    _write(store, _rows(5))
    os.chmod(tmp_path / "s", 0o555)
    try:
        with pytest.raises(StoreReadOnlyError, match="read-only"):
            Store(tmp_path / "s", mode="a")
        assert len(Store(tmp_path / "s").namespace("features", SPEC, FP)) == 5
    finally:
        os.chmod(tmp_path / "s", 0o755)


def test_untrusted_commit_records_are_validated(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", mode="a")
    _write(store, _rows(5))
    ns = store.namespace("features", SPEC, FP)
    cfile = next((ns.path / "commits").iterdir())
    doc = json.loads(cfile.read_text())
    doc["arrays"]["../../etc"] = doc["arrays"].pop("mean")
    cfile.write_text(json.dumps(doc))
    with pytest.raises(StoreCorruptError, match="array name"):
        ns.commits()
    assert [p.path for p in store.verify()] == [str(cfile)]


def test_views_persist_atomically_and_first_copy_wins(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", mode="a")
    keys = np.random.default_rng(0).integers(0, 256, (40, 7, 16), dtype=np.uint8)
    store.save_view("00112233aabbccdd", {"train": keys, "test": keys[:0]}, {"seq_len": 96})
    store.save_view("00112233aabbccdd", {"train": keys[:1]}, {"seq_len": 1})  # kept: first wins
    loaded = Store(tmp_path / "s").load_view("00112233aabbccdd")
    assert loaded is not None
    arrays, attrs = loaded
    np.testing.assert_array_equal(arrays["train"], keys)
    assert arrays["test"].shape == (0, 7, 16)
    assert attrs == {"seq_len": 96}
    assert store.load_view("ffffffffffffffff") is None
    assert not [p for p in (tmp_path / "s" / "views").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("dtype", "tail", "codec"),
    [
        ("float32", (), "raw"),
        ("float64", (4,), "raw"),
        ("int8", (), "raw"),
        ("uint8", (9, 7), "zstd"),
    ],
)
def test_segments_are_plain_zarr_arrays(
    tmp_path: Path, dtype: str, tail: tuple, codec: str
) -> None:
    """What we write equals what zarr-python writes for the same array, byte for byte in the
    metadata and value for value through zarr's own reader (edge chunk included)."""
    import zarr
    from zarr.codecs import BloscCodec, Crc32cCodec
    from zarr.storage import LocalStore

    rng = np.random.default_rng(5)
    n = 1_000_003 // max(1, int(np.prod(tail)) * np.dtype(dtype).itemsize) + 3  # >1 chunk
    data = (rng.standard_normal((n, *tail)) * 50).astype(dtype)
    store = Store(tmp_path / "s", mode="a")
    ns = store.namespace("images", SPEC, FP)
    commit = ns.write_segment(
        row_keys(rng.standard_normal((n, 2))), {"x": data}, codecs={"x": codec}
    )
    ours = ns.segment_path(commit.segment) / "x"
    rec = commit.arrays["x"]
    compressors = [Crc32cCodec()]
    if codec == "zstd":
        compressors.insert(0, BloscCodec(cname="zstd", clevel=1, shuffle="noshuffle", typesize=1))
    theirs = zarr.create_array(
        LocalStore(tmp_path / "z"),
        name="x",
        shape=data.shape,
        chunks=(rec.chunk_rows, *tail),
        dtype=dtype,
        compressors=compressors,
        fill_value=0,
    )
    assert json.loads((ours / "zarr.json").read_text()) == json.loads(
        (tmp_path / "z" / "x" / "zarr.json").read_text()
    )
    read_back = zarr.open_array(LocalStore(ns.segment_path(commit.segment)), path="x", mode="r")
    np.testing.assert_array_equal(read_back[:], data)
    assert theirs.shape == read_back.shape


def test_direct_reads_equal_zarrs_own_and_foreign_metadata_reads_through_zarr(
    tmp_path: Path,
) -> None:
    """Arrays tsfs wrote are decoded without zarr-python: every row range must equal what zarr
    reads from the same files. An array whose metadata tsfs did not write (another codec
    chain, as another Zarr v3 writer may use) is read through zarr and reads right too."""
    import zarr
    from zarr.codecs import Crc32cCodec, ZstdCodec
    from zarr.storage import LocalStore

    rng = np.random.default_rng(11)
    n = 9_000  # 9,000 rows of 1 KiB: three chunks, the last one short
    data = {
        "raw": rng.standard_normal((n, 128)),
        "lz4": (rng.random((n, 32, 32)) * 40).astype(np.uint8),
        "zstd": rng.standard_normal((n, 256)).astype(np.float32),
    }
    store = Store(tmp_path / "s", mode="a")
    ns = store.namespace("images", SPEC, FP)
    commit = ns.write_segment(
        row_keys(rng.standard_normal((n, 2))),
        data,
        codecs={c: c for c in data},  # type: ignore[misc]
    )
    segment = LocalStore(ns.segment_path(commit.segment))
    ranges = [(0, None), (5, 17), (4000, 8200), (-30, None), (8990, 20_000), (7, 7), (100, 50)]
    for name in data:
        assert commit.arrays[name].chunk_rows < n / 2
        theirs = zarr.open_array(segment, path=name, mode="r")
        assert ns.chunk_plan(commit, name).layout == ("raw" if name == "raw" else "blosc")
        for start, stop in ranges:
            np.testing.assert_array_equal(
                ns.read_array(commit, name, start, stop), theirs[start:stop]
            )

    # another Zarr writer's codec chain for "zstd" at the same place: same shape and chunks
    rows = commit.arrays["zstd"].chunk_rows
    other = zarr.create_array(
        segment,
        name="zstd",
        shape=(n, 256),
        chunks=(rows, 256),
        dtype="float32",
        compressors=[ZstdCodec(level=3), Crc32cCodec()],
        fill_value=0,
        overwrite=True,
    )
    other[:] = data["zstd"][::-1]
    fresh = Store(tmp_path / "s").namespace("images", SPEC, FP)
    assert fresh.chunk_plan(commit, "zstd").layout == "zarr"
    for start, stop in ranges:
        np.testing.assert_array_equal(
            fresh.read_array(commit, "zstd", start, stop), data["zstd"][::-1][start:stop]
        )
    np.testing.assert_array_equal(
        fresh.read_chunk_rows(commit, "zstd", 2), data["zstd"][::-1][2 * rows :]
    )


def test_a_store_creation_in_flight_or_killed_is_not_a_foreign_directory(
    tmp_path: Path,
) -> None:
    temp = tmp_path / "s" / ".zarr.json.0badc0de.tmp"
    temp.parent.mkdir()
    temp.write_text('{"zarr_format": 3')
    store = Store(tmp_path / "s", mode="a")
    assert store.info()["namespaces"] == []
    assert temp.exists()  # maybe another process's, about to be renamed: left alone
    assert store.gc(grace_s=0).temp_files == []  # young: maybe being renamed, kept
    os.utime(temp, (temp.stat().st_atime - 3600, temp.stat().st_mtime - 3600))
    assert store.gc(grace_s=0).temp_files == [str(temp)]  # a creation killed an hour ago
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["zarr.json"]


def test_gc_removes_a_view_whose_writer_died_only_once_it_is_old(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", mode="a")
    store.save_view("00000000000000aa", {"train": np.zeros((4, 2, 16), np.uint8)}, {})
    # What a writer killed while saving a view leaves: its private temp directory.
    temp = tmp_path / "s" / "views" / ".00000000000000bb.0badc0de.tmp"
    (temp / "train").mkdir(parents=True)
    (temp / "train" / "zarr.json").write_text("{}")
    assert store.gc(grace_s=0).temp_files == []  # young: maybe still being written
    os.utime(temp, (temp.stat().st_atime - 7200, temp.stat().st_mtime - 7200))
    report = store.gc(grace_s=0)
    assert report.temp_files == [str(temp)]
    assert report.bytes_freed == 2
    assert not temp.exists()
    assert store.load_view("00000000000000aa") is not None  # the saved view is untouched


def test_gc_removes_a_namespace_whose_creation_failed_once_it_is_old(tmp_path: Path) -> None:
    """A full disk while a namespace is created leaves its folders without its document and
    with nothing in them: no reader lists it, and only gc can take it away."""
    store = Store(tmp_path / "s", mode="a")
    kept = store.namespace("features", SPEC, "00000000000000aa")
    orphan = tmp_path / "s" / "features" / "00000000000000bb"
    (orphan / "segments").mkdir(parents=True)
    (orphan / "commits").mkdir()
    (orphan / "segments" / "zarr.json").write_text("{}")
    assert store.gc(grace_s=0).unfinished == []  # young: maybe still being made
    old = orphan.stat().st_mtime - 7200
    os.utime(orphan, (old, old))
    assert store.gc(grace_s=0, dry_run=True).unfinished == [str(orphan)]
    assert orphan.exists()
    assert store.gc(grace_s=0).unfinished == [str(orphan)]
    assert not orphan.exists()
    assert [ns.fingerprint for ns in store.namespaces()] == [kept.fingerprint]
    # a folder holding a commit is rows whose document was lost: never removed
    lost = tmp_path / "s" / "features" / "00000000000000cc"
    (lost / "commits").mkdir(parents=True)
    (lost / "commits" / "0123456789abcdef.json").write_text("{}")
    os.utime(lost, (old, old))
    assert store.gc(grace_s=0).unfinished == []
    assert lost.exists()


_CREATE_MANY = """
import sys, time
from tsfs.stores.store import Store
base, start = sys.argv[1], float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
for i in range(150):
    Store(f"{base}/s{i}", mode="a").namespace("features", {"v": 1}, "0123456789abcdef")
"""


def test_runs_creating_the_same_new_stores_together_all_succeed(tmp_path: Path) -> None:
    # Real processes racing through the creation of the same 150 stores and a namespace in
    # each (one raced run once failed on a temp file the other had removed).
    start = time.time() + 2.0  # both past their imports before the first store
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CREATE_MANY, str(tmp_path), str(start)],
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    for i in range(150):
        store = Store(tmp_path / f"s{i}")
        assert [ns.fingerprint for ns in store.namespaces()] == ["0123456789abcdef"]
        assert store.verify() == []


def test_segment_files_are_synced_together_and_failures_surface(tmp_path: Path) -> None:
    from tsfs.stores import files

    local = files.LocalFiles(tmp_path)
    for i in range(40):
        local.write(f"seg/a/c/{i}", b"x" * 100)
    local.sync_tree("seg")  # every file and directory, from several threads
    paths = [str(tmp_path / "seg" / "a" / "c" / str(i)) for i in range(40)]
    with pytest.raises(FileNotFoundError):  # a failed fsync is never lost in a thread
        files._fsync_all([*paths, str(tmp_path / "vanished")])


def _damaged_store(tmp_path: Path) -> tuple[Store, np.ndarray]:
    """Two segments; the first one's `mean` chunk file deleted."""
    store = Store(tmp_path / "s", mode="a")
    rows = _rows(60)
    _write(store, rows[:30])
    _write(store, rows[30:])
    ns = store.namespace("features", SPEC, FP)
    first = ns.commits()[0]
    (store.path / ns.chunk_key(first, "mean", 0)).unlink()
    return store, rows


def test_a_missing_chunk_is_an_error_not_zeros(tmp_path: Path) -> None:
    """Zarr reads an absent chunk as its fill value; a reader must fail instead."""
    store, rows = _damaged_store(tmp_path)
    ns = store.namespace("features", SPEC, FP)
    with pytest.raises(StoreCorruptError, match=r"mean/c/0 \(file missing\)"):
        ns.read_keys(row_keys(rows[:5]), ["mean"])
    np.testing.assert_array_equal(  # the intact segment still reads
        ns.read_keys(row_keys(rows[30:35]), ["mean"])["mean"], rows[30:35].mean(axis=1)
    )


def test_compact_refuses_a_damaged_segment_and_keeps_the_store(tmp_path: Path) -> None:
    store, _rows_written = _damaged_store(tmp_path)
    before = sorted(p.relative_to(store.path) for p in store.path.rglob("*"))
    with pytest.raises(StoreCorruptError, match=r"cannot compact .*gc --drop-corrupt"):
        store.compact()
    assert sorted(p.relative_to(store.path) for p in store.path.rglob("*")) == before


def test_metadata_pointing_zarr_elsewhere_is_corrupt(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", mode="a")
    rows = _rows(20)
    _write(store, rows)
    ns = store.namespace("features", SPEC, FP)
    meta = store.path / ns.segment_key(ns.commits()[0].segment) / "mean" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["chunk_key_encoding"]["configuration"]["separator"] = "."
    meta.write_text(json.dumps(doc))
    with pytest.raises(StoreCorruptError, match="chunk keys differ"):
        ns.read_keys(row_keys(rows[:3]), ["mean"])
    assert any("chunk keys differ" in p.message for p in store.verify())


def test_drop_corrupt_after_a_cut_short_compaction_keeps_the_originals(tmp_path: Path) -> None:
    """A compaction killed after committing its merged segment, before removing the ones it
    replaces: when the merged one is corrupt, gc drops it alone and the originals show again."""
    store = Store(tmp_path / "s", mode="a")
    rows = _rows(60)
    _write(store, rows[:30])
    _write(store, rows[30:])
    ns = store.namespace("features", SPEC, FP)
    originals = [c.segment for c in ns.commits()]
    merged = ns.write_segment(row_keys(rows), _outputs(rows), replaces=originals)
    chunk = store.path / ns.chunk_key(merged, "band", 0)
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    report = store.gc(drop_corrupt=True)
    assert report.corrupt == [str(ns.segment_path(merged.segment))]
    assert report.replaced == []
    assert sorted(c.segment for c in ns.commits()) == sorted(originals)
    got = ns.read_keys(row_keys(rows), ["band"])["band"]
    np.testing.assert_array_equal(got, _outputs(rows)["band"])
    assert store.verify() == []


def test_a_lost_empty_commits_folder_is_made_again(tmp_path: Path) -> None:
    """git, sync tools and `find -empty -delete` drop empty folders: a namespace whose first
    writer died before committing loses `commits/`, and the next writer must still commit."""
    store = Store(tmp_path / "s", mode="a")
    ns = store.namespace("features", SPEC, FP)
    (ns.path / "commits").rmdir()
    rows = _rows(20)
    _write(store, rows)
    assert len(Store(tmp_path / "s").namespace("features", SPEC, FP)) == 20


def test_commit_record_damage_is_corruption_not_another_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", mode="a")
    _write(store, _rows(5))
    ns = store.namespace("features", SPEC, FP)
    cfile = next((ns.path / "commits").iterdir())
    cfile.write_text('{"arrays": 5}')  # no "format": tsfs always writes one
    with pytest.raises(StoreCorruptError, match=r"invalid commit record \(format\).*drop-corrupt"):
        ns.commits()
    cfile.write_text('{"arrays": 5, "format": 7}')
    with pytest.raises(StoreFormatError, match="commit record of format 7"):
        ns.commits()


def test_info_shows_a_namespace_with_a_damaged_segment(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", mode="a")
    _write(store, _rows(30))
    _write(store, _rows(30, seed=1))
    ns = store.namespace("features", SPEC, FP)
    seg = ns.path / "segments" / ns.commits()[0].segment
    for damage in ("removed", "a file"):
        if damage == "a file":
            seg.write_text("not a folder")
        else:
            shutil.rmtree(seg)
        (space,) = Store(tmp_path / "s").info()["namespaces"]
        assert space["rows"] is None
        assert str(seg / "keys" / "zarr.json") in space["damaged"]
        assert f"`tsfs store gc --drop-corrupt {store.url}` removes it" in space["damaged"]
        with pytest.raises(StoreCorruptError, match="drop-corrupt"):  # exit 1, with the way out
            Store(tmp_path / "s").namespace("features", SPEC, FP).index()
        if damage == "a file":
            seg.unlink()
    Store(tmp_path / "s", mode="a").gc(drop_corrupt=True)
    assert len(Store(tmp_path / "s").namespace("features", SPEC, FP)) == 30


def test_info_counts_rows_as_the_key_index_does(tmp_path: Path) -> None:
    """info counts distinct keys without building the index: duplicates across segments once,
    and keys that share their first 8 bytes but not the rest as different rows."""
    store = Store(tmp_path / "s", mode="a")
    ns = store.namespace("features", SPEC, FP)
    rows = _rows(90)
    keys = row_keys(rows).copy()
    keys[10:20, :8] = keys[0, :8]  # eleven keys share an upper half, all distinct
    keys[30, :8] = keys[31, :8]
    for a, b in ((0, 50), (40, 80), (70, 90), (0, 5)):  # overlapping segments
        ns.write_segment(keys[a:b], _outputs(rows[a:b]), codecs={"mask": "zstd"})
    fresh = Store(tmp_path / "s").namespace("features", SPEC, FP)
    assert fresh.count_rows() == (4, 90) == (len(fresh.index().segments), len(fresh.index()))
    (space,) = Store(tmp_path / "s").info()["namespaces"]
    assert (space["segments"], space["rows"]) == (4, 90)
    assert Store(tmp_path / "s", mode="a").namespace("features", SPEC, FP).count_rows() == (4, 90)


def test_compact_bounds_merged_segments_by_bytes(tmp_path: Path) -> None:
    """A merged segment is what compaction holds in memory and what one damaged chunk costs:
    bounded in bytes (a million 224² images would be 50 GB), and a store already compacted
    that way is left as it is."""
    store = Store(tmp_path / "s", mode="a")
    rows = _rows(120)
    for a in range(0, 120, 30):
        _write(store, rows[a : a + 40])
    ns = store.namespace("features", SPEC, FP)
    (row_bytes,) = {
        sum(math.prod(a.shape[1:]) * np.dtype(a.dtype).itemsize for a in c.arrays.values())
        for c in ns.commits()
    }
    store.compact(max_segment_bytes=50 * row_bytes)
    assert [c.rows for c in ns.commits()] == [50, 50, 20]
    np.testing.assert_array_equal(ns.read_keys(row_keys(rows))["band"], _outputs(rows)["band"])
    before = [c.segment for c in ns.commits()]
    store.compact(max_segment_bytes=50 * row_bytes)
    assert [c.segment for c in ns.commits()] == before  # nothing to merge: nothing rewritten
    assert store.verify() == []
