"""prep on a Dask cluster: a real LocalCluster of worker processes, real signals, real stores."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tsfs.pipeline.prep import features_namespace, images_namespace, prep_features, prep_images
from tsfs.pipeline.sources import load
from tsfs.specs import FeatureSpec, ImageSpec, WindowSpec
from tsfs.stores.store import Namespace, Store

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[1]
ETTH1 = ROOT / "data" / "ETTh1.csv"
WINDOWS = WindowSpec(seq_len=96, splits=("train",), stride=6)
ARGS = ["--seq-len", "96", "--splits", "train", "--stride", "6", "--quiet", "--json"]
IMAGES = ImageSpec(size=16)


def _contents(ns: Namespace) -> dict[bytes, tuple[bytes, ...]]:
    """Every visible row: key → the bytes of each of its outputs."""
    out: dict[bytes, tuple[bytes, ...]] = {}
    for commit in ns.index(refresh=True).segments:
        names = sorted(commit.arrays)
        arrays = {n: ns.read_array(commit, n) for n in names}
        for r in range(commit.rows):
            out.setdefault(
                arrays["keys"][r].tobytes(), tuple(arrays[n][r].tobytes() for n in names)
            )
    return out


def _tsfs(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tsfs", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _local_cluster(workers: int) -> distributed.LocalCluster:
    """Single-threaded worker processes; the scheduler's HTTP server on a free port (two
    clusters on 8787 warn, as tsfs's own avoids)."""
    return distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.Client]:
    """Two single-threaded worker processes, as `dask worker` runs them on two machines."""
    with (
        _local_cluster(2) as c,
        distributed.Client(c) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[bytes, tuple]]:
    """The local executor's rows: features in this process, images in 2 joblib workers."""
    ds = load(ETTH1, WINDOWS)
    store = Store(tmp_path_factory.mktemp("ref") / "s", mode="a")
    prep_features(ds, FeatureSpec(), store)
    report = prep_images(ds, IMAGES, store, jobs=2, batch_rows=400)
    assert report.segments_written > 2
    return {
        "features": _contents(features_namespace(store, FeatureSpec(level=3))),
        "images": _contents(images_namespace(store, IMAGES)),
    }


def test_a_dask_cluster_writes_what_the_local_executor_writes(
    cluster: distributed.Client, reference: dict[str, dict[bytes, tuple]], tmp_path: Path
) -> None:
    ds = load(ETTH1, WINDOWS)
    store = Store(tmp_path / "s", mode="a")
    address = cluster.scheduler.address
    feats = prep_features(
        ds, FeatureSpec(), store, executor="dask", scheduler=address, jobs=2, batch_rows=1000
    )
    images = prep_images(ds, IMAGES, store, executor="dask", scheduler=address, batch_rows=400)
    assert feats.segments_written > 2
    assert images.segments_written > 2
    # Both workers took part: each wrote segments from its own process.
    pids = set(cluster.run(os.getpid).values())
    assert len(pids) == 2
    assert _contents(features_namespace(store, FeatureSpec(level=3))) == reference["features"]
    assert _contents(images_namespace(store, IMAGES)) == reference["images"]
    assert store.verify() == []
    # segments, commit records and the namespaces' own documents: all the run added
    assert feats.bytes_written + images.bytes_written == sum(
        ns.files.usage(ns.key)[0] for ns in store.namespaces()
    )


def test_a_worker_killed_mid_run_loses_nothing(
    cluster: distributed.Client, reference: dict[str, dict[bytes, tuple]], tmp_path: Path
) -> None:
    store = tmp_path / "s"
    address = cluster.scheduler.address
    cmd = ["prep", "images", str(ETTH1), *ARGS, "--size", "16", "--store", str(store)]
    proc = _tsfs(*cmd, "--batch-rows", "100", "--executor", "dask", "--scheduler", address)
    victim = next(iter(cluster.run(os.getpid).values()))
    commits = None
    deadline = time.monotonic() + 120
    while True:  # kill a worker once the run has committed something, mid-run
        commits = next(iter((store / "images").glob("*/commits")), None) if store.exists() else None
        if commits is not None and any(commits.glob("*.json")):
            break
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert proc.poll() is None  # still running: the kill lands in the middle
    os.kill(victim, signal.SIGKILL)
    _out, err = proc.communicate(timeout=300)
    # The cluster reran the dead worker's tasks elsewhere; had it not, re-running resumes.
    assert proc.returncode == 0, err
    assert victim not in cluster.run(os.getpid).values()
    again = _tsfs(*cmd, "--executor", "dask", "--scheduler", address)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert json.loads(out)["rows_computed"] == 0
    Store(store, mode="a").gc(grace_s=0)  # what a killed task left uncommitted
    assert Store(store).verify() == []
    assert _contents(images_namespace(Store(store), IMAGES)) == reference["images"]


def test_cli_executor_dask_starts_its_own_cluster(
    reference: dict[str, dict[bytes, tuple]], tmp_path: Path
) -> None:
    store = tmp_path / "s"
    cmd = ["prep", "features", str(ETTH1), *ARGS, "--store", str(store)]
    proc = _tsfs(*cmd, "--executor", "dask", "--jobs", "2", "--batch-rows", "1000")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert json.loads(out)["segments_written"] > 2
    stored = _contents(features_namespace(Store(store), FeatureSpec(level=3)))
    assert stored == reference["features"]


def test_ctrl_c_with_its_own_cluster_is_one_line(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the whole process group, Dask's worker processes too: they
    printed a traceback each before tsfs's one line."""
    store = tmp_path / "s"
    cmd = [sys.executable, "-m", "tsfs", "prep", "images", str(ETTH1), "--store", str(store)]
    proc = subprocess.Popen(
        [*cmd, "--size", "64", "--executor", "dask", "--jobs", "2", "--batch-rows", "500"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, as a shell's foreground job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not list(store.glob("images/*/commits/*.json")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [
        "tsfs: interrupted; committed segments are kept, re-run the command to resume"
    ]


def test_executor_errors_are_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tsfs.cli.main import app

    store = ["--store", str(tmp_path / "s")]
    prep = ["prep", "features", str(ETTH1), *ARGS, *store]
    for extra, message in [
        (["--executor", "spark"], "unknown --executor 'spark'"),
        (["--scheduler", "tcp://127.0.0.1:1"], "add --executor dask"),
    ]:
        result = CliRunner().invoke(app, [*prep, *extra])
        assert result.exit_code == 2
        assert message in result.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    proc = _tsfs(*prep, "--executor", "dask", "--scheduler", f"tcp://127.0.0.1:{port}")
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert err.count("\n") == 1
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in err
    # A port that answers, but not as a scheduler (its dashboard's HTTP): the client waited
    # for good, or read the reply as a message length and ran "out of memory".
    import http.server
    import threading

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        address = f"tcp://127.0.0.1:{web.server_address[1]}"
        proc = _tsfs(*prep, "--executor", "dask", "--scheduler", address)
        _out, err = proc.communicate(timeout=120)
    finally:
        web.shutdown()
    assert proc.returncode == 2, err
    assert err.count("\n") == 1
    assert f"Dask scheduler at {address}" in err
    assert "not its dashboard's" in err
    # Without Dask installed: the command names the extra to install.
    blocked = "import sys; sys.modules['distributed'] = None; from tsfs.cli.main import app; app()"
    proc = subprocess.run(
        [sys.executable, "-c", blocked, *prep, "--executor", "dask"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1
    assert "pip install 'tsfs[dask]'" in proc.stderr


def test_a_relative_store_reaches_workers_started_elsewhere(
    cluster: distributed.Client, reference: dict[str, dict[bytes, tuple]], tmp_path: Path
) -> None:
    """Workers run in their own directory (here the test's, not the command's): a relative
    --store named a new store there, and the run reported rows its store never got."""
    name = f"tsfs-relative-store-{os.getpid()}"
    here = tmp_path / "project"
    here.mkdir()
    cmd = ["prep", "features", str(ETTH1), *ARGS, "--store", name, "--batch-rows", "1000"]
    dask = ["--executor", "dask", "--scheduler", cluster.scheduler.address]
    proc = subprocess.run(
        [sys.executable, "-m", "tsfs", *cmd, *dask],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=300,
    )
    stray = Path.cwd() / name
    try:
        assert proc.returncode == 0, proc.stderr
        assert not stray.exists()
        stored = _contents(features_namespace(Store(here / name), FeatureSpec(level=3)))
        assert stored == reference["features"]
    finally:
        if stray.exists():  # what the defect left behind
            import shutil

            shutil.rmtree(stray)


def test_a_task_whose_workers_keep_dying_is_a_worker_error(tmp_path: Path) -> None:
    """The cluster gives up on a task once its workers died (allowed-failures: here 0): one
    line saying a worker died, as the local executor says it, not an internal error."""
    import dask

    store = tmp_path / "s"
    cmd = ["prep", "images", str(ETTH1), *ARGS, "--size", "16", "--store", str(store)]
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        _local_cluster(1) as c,
        distributed.Client(c) as client,
    ):
        address = client.scheduler.address
        proc = _tsfs(*cmd, "--batch-rows", "100", "--executor", "dask", "--scheduler", address)
        victim = next(iter(client.run(os.getpid).values()))
        deadline = time.monotonic() + 120
        while not (store.exists() and any(store.glob("images/*/commits/*.json"))):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(victim, signal.SIGKILL)
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 1, err
        (line,) = err.strip().splitlines()[-1:]
        assert line.startswith("tsfs: error: a worker process died"), err
        assert "internal error" not in err
    assert Store(store).verify() == []
