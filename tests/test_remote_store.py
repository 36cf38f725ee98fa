"""Stores at URLs: fsspec's memory:// file system for the contract, and a real S3-compatible
server (moto, started on loopback) for prep, verify and training reads over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
from typer.testing import CliRunner

from tsfs.cli.main import app
from tsfs.errors import StoreCorruptError
from tsfs.pipeline.hashing import row_keys
from tsfs.stores.files import LocalFiles, RemoteFiles
from tsfs.stores.store import Store
from tsfs.training.cache import ChunkReader

SPEC = {"kind": "features", "version": 1}
FP = "0123456789abcdef"
ROOT = Path(__file__).resolve().parents[1]
ETTH1 = ROOT / "data" / "ETTh1.csv"


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 48)).astype(np.float32)


def _outputs(rows: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "mean": rows.mean(axis=1).astype(np.float32),
        "mask": (np.abs(rows[:, :, None]) * np.ones((1, 1, 6)) * 40).astype(np.uint8),
    }


def _write(store: Store, rows: np.ndarray) -> str:
    ns = store.namespace("features", SPEC, FP)
    commit = ns.write_segment(row_keys(rows), _outputs(rows), codecs={"mask": "lz4"})
    return commit.segment


@pytest.fixture
def url() -> Iterator[str]:
    """A fresh memory:// store URL, emptied afterwards (the memory file system is global)."""
    bucket = f"memory://tsfs-{uuid.uuid4().hex[:12]}"
    yield f"{bucket}/store"
    fs, root = fsspec.url_to_fs(bucket)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _files(store: Store) -> dict[str, bytes]:
    """Every file (object) of a store, by key: what a copy of it would hold."""
    fs, root = fsspec.url_to_fs(store.url)
    return {p[len(root) + 1 :]: fs.cat_file(p) for p in sorted(fs.find(root))}


def test_a_remote_store_holds_the_same_bytes_as_a_local_one(url: str, tmp_path: Path) -> None:
    rows = _rows(300)
    stores = [Store(url, mode="a"), Store(tmp_path / "s", mode="a")]
    for store in stores:
        _write(store, rows[:200])
        _write(store, rows[150:])
    remote, local = (_files(s) for s in stores)

    # Segment ids and commit times differ between any two runs; everything else is equal.
    def normal(files: dict[str, bytes]) -> dict[str, bytes]:
        ids = sorted({k.split("/")[3] for k in files if "/segments/" in k and k.count("/") > 3})
        out = {}
        for k, v in files.items():
            for i, seg in enumerate(ids):
                k = k.replace(seg, f"SEG{i}")
            if "/commits/" in k:
                doc = json.loads(v)
                doc["segment"] = doc["created"] = None
                v = json.dumps(doc).encode()
            out[k] = v
        return out

    assert normal(remote) == normal(local)
    again = Store(url).namespace("features", SPEC, FP)
    np.testing.assert_array_equal(again.read_keys(row_keys(rows))["mean"], _outputs(rows)["mean"])
    assert Store(url).verify() == []
    info = Store(url).info()
    assert info["path"] == url
    assert info["namespaces"][0]["rows"] == 300
    assert info["bytes"] == sum(len(v) for v in remote.values())


def test_a_segment_without_its_commit_record_is_invisible(url: str) -> None:
    store = Store(url, mode="a")
    rows = _rows(64)
    seg = _write(store, rows[:32])
    ns = store.namespace("features", SPEC, FP)
    # As a writer killed after its chunk objects and before its commit object leaves it.
    fs, root = fsspec.url_to_fs(url)
    fs.rm_file(f"{root}/{ns.key}/commits/{seg}.json")
    _write(store, rows[32:])
    fresh = Store(url).namespace("features", SPEC, FP)
    assert len(fresh) == 32
    assert not fresh.lookup(row_keys(rows[:32])).found.any()
    assert fresh.uncommitted() == [seg]
    assert Store(url).verify() == []
    # No locks on object stores: only age tells a dead writer, so a young segment is kept …
    kept = store.gc()
    assert kept.uncommitted == []
    assert kept.skipped_recent == 1
    assert fs.exists(f"{root}/{ns.key}/segments/{seg}")
    # … and one older than the grace period goes.
    gone = store.gc(grace_s=0)
    assert gone.uncommitted == [f"{url}/{ns.key}/segments/{seg}"]
    assert gone.bytes_freed > 0
    assert not fs.exists(f"{root}/{ns.key}/segments/{seg}")
    assert len(Store(url).namespace("features", SPEC, FP)) == 32


def test_a_flipped_byte_is_named_by_url_and_repaired(url: str) -> None:
    store = Store(url, mode="a")
    rows = _rows(40)
    _write(store, rows)
    ns = store.namespace("features", SPEC, FP)
    commit = ns.commits()[0]
    key = ns.chunk_key(commit, "mask", 0)
    fs, root = fsspec.url_to_fs(url)
    data = bytearray(fs.cat_file(f"{root}/{key}"))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(f"{root}/{key}", bytes(data))
    with pytest.raises(StoreCorruptError, match=f"{url}/{key}.*checksum"):
        ChunkReader(ns, ns.commits()).chunk(0, "mask", 0)
    assert [p.path for p in store.verify()] == [f"{url}/{key}"]
    report = store.gc(drop_corrupt=True, grace_s=0)
    assert report.corrupt == [f"{url}/{ns.segment_key(commit.segment)}"]
    assert store.verify() == []
    assert not ns.lookup(row_keys(rows)).found.any()


def test_compaction_and_views_on_an_object_store(url: str) -> None:
    store = Store(url, mode="a")
    rows = _rows(90)
    for a in range(0, 90, 30):
        _write(store, rows[a : a + 40])
    store.compact()
    ns = Store(url).namespace("features", SPEC, FP)
    assert [c.rows for c in ns.commits()] == [90]
    np.testing.assert_array_equal(ns.read_keys(row_keys(rows))["mask"], _outputs(rows)["mask"])
    assert Store(url).verify() == []
    keys = row_keys(rows).reshape(30, 3, 16)
    store.save_view("00112233aabbccdd", {"train": keys, "test": keys[:0]}, {"seq_len": 48})
    loaded = Store(url).load_view("00112233aabbccdd")
    assert loaded is not None
    np.testing.assert_array_equal(loaded[0]["train"], keys)
    assert loaded[0]["test"].shape == (0, 3, 16)
    assert loaded[1] == {"seq_len": 48}


def test_file_urls_are_local_directories(tmp_path: Path) -> None:
    store = Store(f"file://{tmp_path}/s", mode="a")
    assert isinstance(store.files, LocalFiles)
    assert store.path == tmp_path / "s"
    _write(store, _rows(10))
    assert len(Store(tmp_path / "s").namespace("features", SPEC, FP)) == 10
    assert isinstance(Store("memory://x/y", mode="a").files, RemoteFiles)


def test_store_commands_take_urls(url: str) -> None:
    store = Store(url, mode="a")
    _write(store, _rows(20))
    runner = CliRunner()
    info = runner.invoke(app, ["store", "info", url, "--json"])
    assert info.exit_code == 0, info.output
    assert json.loads(info.output)["namespaces"][0]["rows"] == 20
    verify = runner.invoke(app, ["store", "verify", url])
    assert verify.exit_code == 0, verify.output
    assert url in verify.output
    gc = runner.invoke(app, ["store", "gc", url, "--dry-run"])
    assert gc.exit_code == 0, gc.output
    missing = runner.invoke(app, ["store", "info", f"{url}-nothing-here"])
    assert missing.exit_code == 2
    assert "no tsfs store at" in missing.output


def test_plan_and_prep_with_a_budget_on_an_object_store(url: str, tmp_path: Path) -> None:
    """No free space to check there: the plan says so, and only --budget bounds a run."""
    data = ["features", str(ETTH1), "--seq-len", "96", "--stride", "64", "--store", url]
    runner = CliRunner()
    planned = runner.invoke(app, ["plan", *data, "--json"])
    assert planned.exit_code == 0, planned.output
    est = json.loads(planned.output)
    assert est["free_bytes"] is None
    assert est["rows_missing"] > 0
    assert est["verdict"] == "ok"
    text = runner.invoke(app, ["plan", *data])
    assert "no limit (object store)" in text.output
    over = runner.invoke(app, ["prep", *data, "--budget", "1K", "-q"])
    assert over.exit_code == 1
    assert "budget of 1.0 KiB" in over.output
    done = runner.invoke(app, ["prep", *data, "--budget", "1G", "-q", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["rows_computed"] == est["rows_missing"]
    shown = runner.invoke(app, ["show", "prompt", url, str(ETTH1), "--seq-len", "96"])
    assert shown.exit_code == 0, shown.output
    assert "top 5 lags are" in shown.output
    # a store without the asked namespace names its URL in the message
    empty = f"{url}-empty"
    Store(empty, mode="a")
    show = [
        "show",
        "images",
        empty,
        str(ETTH1),
        "--seq-len",
        "96",
        "--out",
        str(tmp_path / "w.png"),
    ]
    missing = runner.invoke(app, show)
    assert missing.exit_code == 2
    assert f"store {empty} has no" in missing.output


# --------------------------------------------------------------------------------------------
# a real S3-compatible server on loopback


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """A moto S3 server in its own process on a free loopback port, with a bucket; the
    environment names it the way a user names their endpoint and credentials."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            mp.setenv(name, value)
        try:
            deadline = time.monotonic() + 60
            while True:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                assert server.poll() is None, "moto server exited"
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.1)
            fs = fsspec.filesystem("s3", skip_instance_cache=True)
            fs.mkdir("tsfs-test")
            yield "s3://tsfs-test"
        finally:
            server.terminate()
            server.wait(timeout=30)
            fsspec.filesystem("s3").clear_instance_cache()


def _tsfs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tsfs", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


# ETTh1's training and validation windows, every 16th: small, and many chunks to fetch.
DATA = ["--seq-len", "96", "--splits", "train,val", "--stride", "16"]


def test_prep_verify_and_train_from_s3(s3: str, tmp_path: Path) -> None:
    from tsfs.pipeline.prep import prep_features, prep_images
    from tsfs.pipeline.sources import load
    from tsfs.specs import FeatureSpec, ImageSpec, WindowSpec
    from tsfs.training.data import StoreLoader, WindowReader, open_view

    url = f"{s3}/store"
    for kind, extra in (("features", []), ("images", ["--size", "16", "--batch-rows", "500"])):
        run = _tsfs("prep", kind, str(ETTH1), *DATA, *extra, "--store", url, "--jobs", "1", "-q")
        assert run.returncode == 0, run.stderr
    verify = _tsfs("store", "verify", url)
    assert verify.returncode == 0, verify.stderr
    assert f"ok: every chunk and commit record of {url}" in verify.stdout

    # The same run into a local directory, through the library: what S3 must give back.
    ds = load(ETTH1, WindowSpec(seq_len=96, splits=("train", "val"), stride=16))
    local = Store(tmp_path / "local", mode="a")
    prep_features(ds, FeatureSpec(), local)
    prep_images(ds, ImageSpec(size=16), local, batch_rows=500)

    def reader(store: Store) -> WindowReader:
        spec = {"features": FeatureSpec(), "images": ImageSpec(size=16)}
        return WindowReader(open_view(ds, store), "train", **spec, image_output="mask")  # type: ignore[arg-type]

    remote, want_reader = reader(Store(url, mode="a")), reader(local)
    assert Store(url).load_view(open_view(ds, Store(url)).fingerprint) is not None  # persisted
    windows = np.arange(len(remote))
    got, want = remote.read(windows), want_reader.read(windows)
    assert got.features.keys() == want.features.keys()
    for name in want.features:
        np.testing.assert_array_equal(got.features[name], want.features[name])
    np.testing.assert_array_equal(got.images, want.images)

    # In this process, then in forked DataLoader workers (where the parent's s3fs refused
    # to work: "This class is not fork-safe").
    for workers in (0, 2):
        remote.cache.clear()  # chunks come from S3, not from the cache a fork copies
        seen = []
        for batch in StoreLoader(remote, batch_size=32, seed=3, num_workers=workers):
            index = batch["index"].numpy()
            seen.extend(index.tolist())
            np.testing.assert_array_equal(batch["images"].numpy(), want.images[index])
            for name, values in batch["features"].items():
                np.testing.assert_array_equal(values.numpy(), want.features[name][index])
        assert sorted(seen) == windows.tolist()
    assert remote.cache.stats.misses > 0


def test_s3_errors_are_one_line(s3: str) -> None:
    missing = _tsfs("prep", "features", str(ETTH1), *DATA, "--store", "s3://no-such-bucket/s")
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1
    assert "create the bucket first" in missing.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ACCESS_KEY")}
    env |= {"AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_CONFIG_FILE": os.devnull}
    anonymous = _tsfs("store", "info", f"{s3}/store", env=env)
    assert anonymous.returncode == 2
    assert anonymous.stderr.count("\n") == 1
    assert "no credentials" in anonymous.stderr
