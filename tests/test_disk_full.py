"""A disk that fills up: prep refuses up front, or (with --force) ends with a clear message and
a consistent store. Uses a real, small tmpfs; skipped where mounting is not permitted."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tsfs.stores.store import Store

ROOT = Path(__file__).resolve().parents[1]
ETTH1 = ROOT / "data" / "ETTh1.csv"


@contextmanager
def _tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``mnt`` (skips the test where mounting is denied)."""
    mnt.mkdir()
    ok = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True
    )
    if ok.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with _tmpfs(tmp_path / "disk", "3m") as mnt:
        yield mnt


def _prep(store: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, "-m", "tsfs", "prep", "features", str(ETTH1),
            "--seq-len", "96", "--store", str(store), "--batch-rows", "5000", "--jobs", "1",
            *extra,
        ],
        capture_output=True,
        text=True,
    )  # fmt: skip


def test_prep_refuses_a_run_that_cannot_fit(small_disk: Path) -> None:
    proc = _prep(small_disk / "store")
    assert proc.returncode == 1
    assert "free" in proc.stderr
    assert "--force" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_disk_that_fills_ends_cleanly_and_the_store_stays_consistent(small_disk: Path) -> None:
    store = small_disk / "store"
    proc = _prep(store, "--force")
    assert proc.returncode == 1  # a disk problem, as the README says
    assert "full" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert Store(store).verify() == []  # what was committed is whole
    Store(store, mode="a").gc(grace_s=0)  # the unfinished segment goes
    assert Store(store).info()["namespaces"][0]["uncommitted_segments"] == 0


def test_training_on_a_full_disk_ends_with_one_line_and_no_half_written_file(
    small_disk: Path, tmp_path: Path
) -> None:
    out = small_disk / "run"
    out.mkdir()
    # Leave 8 KiB: less than any checkpoint (model and optimizer state).
    stat = os.statvfs(small_disk)
    (small_disk / "filler").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 8192))
    tiny = ["-c", "d_model=8", "-c", "n_heads=1", "-c", "e_layers=1", "-c", "d_ff=8"]
    proc = subprocess.run(
        [
            sys.executable, "-m", "tsfs", "train", "diffusion", str(ETTH1), "--stride", "97",
            "--store", str(tmp_path / "store"), "--max-steps", "2", "--out", str(out), *tiny,
        ],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"tsfs: error: cannot write {out}/")
    assert "No space left on device" in line
    assert line.endswith("Free space (or choose another --out) and continue with --resume")
    assert sorted(p.name for p in out.iterdir()) == []  # nothing half-written left behind


def test_a_view_that_does_not_fit_on_the_disk_is_not_kept_and_reading_goes_on(
    small_disk: Path,
) -> None:
    """A view is a cache: a store on a full disk is read with freshly hashed keys."""
    from tsfs.pipeline.sources import load
    from tsfs.specs import WindowSpec
    from tsfs.training.data import open_view

    store = Store(small_disk / "store", mode="a")
    stat = os.statvfs(small_disk)
    (small_disk / "filler").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 4096))
    dataset = load(ETTH1, WindowSpec(seq_len=96))
    view = open_view(dataset, store)
    assert sum(k.shape[0] for k in view.keys.values()) == sum(
        len(s) for s in dataset.splits.values()
    )
    assert store.load_view(view.fingerprint) is None
    assert [p.name for p in (small_disk / "store" / "views").iterdir()] in ([], ["zarr.json"])


def test_compaction_on_a_full_disk_stops_with_one_line_and_loses_nothing(
    small_disk: Path,
) -> None:
    store = small_disk / "store"
    proc = _prep(store, "--splits", "test", "--stride", "8", "--batch-rows", "600")
    assert proc.returncode == 0, proc.stderr
    before = Store(store).info()["namespaces"][0]["rows"]
    stat = os.statvfs(small_disk)
    (small_disk / "filler").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 8192))
    compact = subprocess.run(
        [sys.executable, "-m", "tsfs", "store", "compact", str(store)],
        capture_output=True,
        text=True,
    )
    assert compact.returncode == 1, compact.stderr
    (line,) = compact.stderr.strip().splitlines()
    assert "compaction stopped and every row is still readable" in line
    assert Store(store).verify() == []
    assert Store(store).info()["namespaces"][0]["rows"] == before


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """Two pages: room for a store's first document, not for a namespace."""
    with _tmpfs(tmp_path / "tiny", "8k") as mnt:
        yield mnt


def test_a_disk_full_while_creating_the_namespace_names_the_store(tiny_disk: Path) -> None:
    store = tiny_disk / "s"
    done = _prep(store, "--force")
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"tsfs: error: the disk holding {store} is full: no room to create the features "
        "namespace; free space and re-run"
    ]
