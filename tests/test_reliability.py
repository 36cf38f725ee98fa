"""Crash, concurrency and corruption tests with real processes, real files and real signals."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tsfs.pipeline.execute import plan_rows
from tsfs.pipeline.prep import dataset_blocks, features_namespace
from tsfs.pipeline.sources import load
from tsfs.specs import FeatureSpec, WindowSpec
from tsfs.stores.store import Namespace, Store

ROOT = Path(__file__).resolve().parents[1]
ETTH1 = ROOT / "data" / "ETTh1.csv"
# A small, quick job: every 3rd 96-step window of the training split, many small segments.
ARGS = ["--seq-len", "96", "--pred-len", "24", "--splits", "train", "--stride", "3", "--jobs", "1"]


def _prep(store: Path, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "tsfs", "prep", "features", str(ETTH1), "--store", str(store)]
    return subprocess.Popen(
        [*cmd, *ARGS, "--quiet", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _run(store: Path, *extra: str) -> None:
    proc = _prep(store, *extra)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()


def _contents(store: Path) -> dict[bytes, tuple[bytes, ...]]:
    """Every visible row: key → the bytes of each of its outputs."""
    # Built directly (not via the store's namespace()), so a run killed before it created the
    # namespace reads as empty rather than as an error.
    ns = Namespace(Store(store), "features", FeatureSpec(level=3).fingerprint)
    index = ns.index(refresh=True)
    out: dict[bytes, tuple[bytes, ...]] = {}
    for commit in index.segments:
        names = sorted(commit.arrays)
        arrays = {n: ns.read_array(commit, n) for n in names}
        for r in range(commit.rows):
            key = arrays["keys"][r].tobytes()
            out.setdefault(key, tuple(arrays[n][r].tobytes() for n in names))
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[bytes, tuple[bytes, ...]]:
    store = tmp_path_factory.mktemp("ref") / "store"
    _run(store)
    rows = _contents(store)
    assert len(rows) > 1000  # the namespace the runs write, not an empty one
    return rows


@pytest.mark.slow
def test_sigkill_at_random_moments_never_exposes_partial_rows(
    tmp_path: Path, reference: dict[bytes, tuple[bytes, ...]]
) -> None:
    rng = random.Random(1234)
    # How long an uninterrupted run takes here, so kills land all over it.
    t0 = time.perf_counter()
    _run(tmp_path / "timing", "--batch-rows", "1500")
    full = time.perf_counter() - t0
    trials = 20
    for trial in range(trials):
        store = tmp_path / f"store{trial // 5}"  # a fresh store every 5 trials
        proc = _prep(store, "--batch-rows", "1500")
        time.sleep(rng.uniform(0.05, full))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not (store / "zarr.json").exists():
            continue  # killed before the store existed: nothing to check
        assert Store(store).verify() == []
        seen = _contents(store)
        for key, value in seen.items():
            assert reference[key] == value  # every visible row is whole and right
    for s in {tmp_path / f"store{t // 5}" for t in range(trials)}:
        _run(s, "--batch-rows", "1500")  # re-running completes the work
        assert _contents(s) == reference
        Store(s, mode="a").gc(grace_s=0)
        assert Store(s).verify() == []


@pytest.mark.slow
def test_two_concurrent_writers_lose_and_corrupt_nothing(
    tmp_path: Path, reference: dict[bytes, tuple[bytes, ...]]
) -> None:
    store = tmp_path / "store"
    procs = [_prep(store, "--batch-rows", "2000") for _ in range(2)]
    for p in procs:
        _out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    assert Store(store).verify() == []
    assert _contents(store) == reference
    Store(store, mode="a").compact()
    assert Store(store).verify() == []
    assert _contents(store) == reference
    ns = features_namespace(Store(store), FeatureSpec(level=3))
    assert len(ns.commits()) == 1
    assert ns.commits()[0].rows == len(reference)


@pytest.mark.slow
def test_gc_while_a_writer_runs_keeps_its_segments(
    tmp_path: Path, reference: dict[bytes, tuple[bytes, ...]]
) -> None:
    store = tmp_path / "store"
    proc = _prep(store, "--batch-rows", "1000")
    while proc.poll() is None:
        if (store / "zarr.json").exists():
            Store(store, mode="a").gc(grace_s=0)
        time.sleep(0.02)
    assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
    assert _contents(store) == reference


def test_flipped_byte_is_repaired_by_gc_and_rerun(
    tmp_path: Path, reference: dict[bytes, tuple[bytes, ...]]
) -> None:
    store = tmp_path / "store"
    _run(store, "--batch-rows", "4000")
    ns = features_namespace(Store(store), FeatureSpec(level=3))
    commit = ns.commits()[1]
    name = next(n for n in sorted(commit.arrays) if n != "keys")
    chunk = ns.segment_path(commit.segment) / name / "c" / "0"
    while chunk.is_dir():
        chunk = chunk / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    verify = subprocess.run(
        [sys.executable, "-m", "tsfs", "store", "verify", str(store)],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 1
    assert str(chunk) in verify.stderr
    gc = subprocess.run(
        [sys.executable, "-m", "tsfs", "store", "gc", str(store), "--drop-corrupt"],
        capture_output=True,
        text=True,
    )
    assert gc.returncode == 0, gc.stderr
    _run(store, "--batch-rows", "4000")
    assert Store(store).verify() == []
    assert _contents(store) == reference


def _children(pid: int) -> set[int]:
    """Live processes whose parent is ``pid``."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == str(pid):
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupt_stops_prep_images_cleanly_and_a_rerun_resumes(
    tmp_path: Path, sig: signal.Signals
) -> None:
    # Two worker processes, interrupted once the first batches are committed: the user sees
    # one line (no traceback, no warning from multiprocessing about the workers it stopped),
    # no worker outlives the command, the store checks out, and the same command then
    # finishes the work. SIGTERM (`kill`, a scheduler) reaches only the main process.
    store = tmp_path / "store"
    cmd = [
        sys.executable, "-m", "tsfs", "prep", "images", str(ETTH1), "--store", str(store),
        "--seq-len", "96", "--splits", "val", "--size", "96", "--jobs", "2",
        "--batch-rows", "700", "--quiet",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
    )
    deadline = time.monotonic() + 120
    while not list(store.glob("images/*/commits/*.json")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert workers  # the pool is up
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)]
    assert proc.returncode == 128 + sig  # as a shell reports it: 130 Ctrl-C, 143 SIGTERM
    assert err.decode().strip().splitlines() == [
        "tsfs: interrupted; committed segments are kept, re-run the command to resume"
    ]
    assert Store(store).verify() == []
    done = subprocess.run(cmd, capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode()
    (ns,) = Store(store).namespaces()
    data = load(ETTH1, WindowSpec(seq_len=96, splits=("val",)))
    unique = plan_rows(dataset_blocks(data), None, key_algorithm="xxh3-128", batch_rows=700)
    assert sum(c.rows for c in ns.commits()) == unique.rows_unique  # each row once


def _images_run(store: Path, **popen: object) -> tuple[list[str], subprocess.Popen[bytes]]:
    cmd = [
        sys.executable, "-m", "tsfs", "prep", "images", str(ETTH1), "--store", str(store),
        "--seq-len", "96", "--splits", "val", "--size", "96", "--jobs", "2",
        "--batch-rows", "700", "--quiet",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)  # type: ignore[call-overload]
    return cmd, proc


def _wait_for_workers(proc: subprocess.Popen[bytes]) -> set[int]:
    """The pool's processes (workers and their trackers), as soon as a worker exists."""

    def is_worker(pid: int) -> bool:
        try:
            return b"LokyProcess" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    deadline = time.monotonic() + 120
    while not any(map(is_worker, children := _children(proc.pid))):
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.005)
    return children


def test_workers_of_a_killed_prep_exit_too(tmp_path: Path) -> None:
    """SIGKILL (or the OOM killer) on the main process alone: nothing can stop its workers
    then, so they notice on their own that their parent is gone, rather than idling forever."""
    _cmd, proc = _images_run(tmp_path / "store")
    workers = _wait_for_workers(proc)
    assert workers
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)]


def test_ctrl_c_while_workers_start_is_one_line(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the whole process group, workers included, and may land
    while they are still importing: the user still sees only the one line."""
    _cmd, proc = _images_run(
        tmp_path / "store",
        start_new_session=True,  # its own group, as a shell's foreground job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    _wait_for_workers(proc)
    time.sleep(0.3)  # the workers are importing (joblib, numpy, tsfs) for about a second
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    assert "Traceback" not in err.decode()
    assert err.decode().strip().splitlines()[-1].startswith("tsfs: interrupted")


def test_a_worker_killed_mid_run_is_named_and_a_rerun_resumes(tmp_path: Path) -> None:
    """The OOM killer (or a person) takes one worker: a one-line error that says so and what
    to do, not an internal error to report; the committed segments are kept."""
    store = tmp_path / "store"
    cmd, proc = _images_run(store)
    deadline = time.monotonic() + 120
    while not list(store.glob("images/*/commits/*.json")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.02)
    workers = [
        pid
        for pid in _children(proc.pid)
        if b"LokyProcess" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    os.kill(workers[0], signal.SIGKILL)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err.decode()
    (line,) = err.decode().strip().splitlines()
    assert line.startswith("tsfs: error: a worker process died (SIGKILL(-9)")
    assert "lower --jobs or --batch-rows" in line
    assert "re-running resumes" in line
    assert "internal error" not in line
    assert Store(store).verify() == []
    done = subprocess.run(cmd, capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode()
