"""The planner's predictions against what prep then really writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tsfs.errors import BudgetError, InputError
from tsfs.pipeline.prep import plan_features, plan_images, prep_features, prep_images
from tsfs.pipeline.sources import load
from tsfs.specs import FeatureSpec, ImageSpec, WindowSpec
from tsfs.stores.store import Store
from tsfs.units import parse_size

ROOT = Path(__file__).resolve().parents[1]
ETTH1 = ROOT / "data" / "ETTh1.csv"
BASIC = ROOT.parent / "shared" / "data" / "BasicMotions_TRAIN.ts"


def _written(store: Path) -> tuple[int, int]:
    """Bytes (but the root zarr.json's) and files a run added to a fresh store."""
    info = Store(store).info()
    root = (store / "zarr.json").stat().st_size
    return info["bytes"] - root, info["files"]


CASES = [
    pytest.param(ETTH1, WindowSpec(seq_len=96, stride=4), id="etth1-96"),
    pytest.param(ETTH1, WindowSpec(seq_len=512, stride=8), id="etth1-512"),
    pytest.param(BASIC, WindowSpec(preset="uea"), id="basicmotions"),
    # one split, sorted by class: a sample of its start alone was 13% off
    pytest.param(BASIC, WindowSpec(preset="uea", splits=("train",)), id="basicmotions-train"),
]


def _load(path: Path, window: WindowSpec):  # type: ignore[no-untyped-def]
    if not path.exists():
        pytest.skip(f"{path.name} is not available")
    return load(path, window)


@pytest.mark.parametrize(("path", "window"), CASES)
def test_feature_bytes_within_10_percent(tmp_path: Path, path: Path, window: WindowSpec) -> None:
    data = _load(path, window)
    spec = FeatureSpec()
    est = plan_features(data, spec, Store(tmp_path / "s", missing_ok=True))
    assert not (tmp_path / "s").exists()  # planning writes nothing
    report = prep_features(data, spec, Store(tmp_path / "s", mode="a"))
    nbytes, files = _written(tmp_path / "s")
    assert report.rows_computed == est.rows_missing
    assert abs(est.bytes_on_disk - nbytes) <= 0.10 * nbytes
    assert est.files == files


@pytest.mark.parametrize(("path", "window"), CASES)
@pytest.mark.parametrize("rgb", [False, True], ids=["mask", "rgb"])
def test_image_bytes_within_10_percent(
    tmp_path: Path, path: Path, window: WindowSpec, rgb: bool
) -> None:
    from dataclasses import replace

    if path == ETTH1:
        window = replace(window, stride=window.stride * 8, splits=("val",))
    data = _load(path, window)
    spec = ImageSpec(size=64 if rgb else 112, rgb=rgb)
    est = plan_images(data, spec, Store(tmp_path / "s", missing_ok=True))
    prep_images(data, spec, Store(tmp_path / "s", mode="a"))
    nbytes, files = _written(tmp_path / "s")
    assert abs(est.bytes_on_disk - nbytes) <= 0.10 * nbytes, (est.bytes_on_disk, nbytes)
    assert est.files == files
    # a second namespace of the kind, in the store that now exists: only its own files
    other = replace(spec, size=spec.size // 2)
    est = plan_images(data, other, Store(tmp_path / "s", missing_ok=True))
    prep_images(data, other, Store(tmp_path / "s", mode="a"))
    assert est.files == Store(tmp_path / "s").info()["files"] - files


def test_prep_refuses_a_run_over_budget_and_force_overrides(tmp_path: Path) -> None:
    data = load(ETTH1, WindowSpec(seq_len=96, stride=16, splits=("test",)))
    store = Store(tmp_path / "s", mode="a")
    with pytest.raises(BudgetError, match="--force"):
        prep_features(data, FeatureSpec(), store, budget_bytes=1000)
    assert Store(tmp_path / "s").info()["namespaces"] == []  # not even an empty namespace
    report = prep_features(data, FeatureSpec(), store, budget_bytes=1000, force=True)
    assert report.rows_computed > 0


def test_parse_size() -> None:
    assert parse_size("500M") == 500 * 2**20
    assert parse_size("2.5G") == int(2.5 * 2**30)
    assert parse_size("10GiB") == 10 * 2**30
    assert parse_size("123") == 123
    with pytest.raises(InputError, match="--budget"):
        parse_size("lots")
    for nothing in ("0", "-1", "0.5", "1e-3"):  # 0.5 used to truncate to a 0-byte budget
        with pytest.raises(InputError, match="at least one byte"):
            parse_size(nothing)
    with pytest.raises(InputError, match="finite"):
        parse_size("inf")


def test_cheaper_settings_say_which_fit_and_go_on_until_one_does(tmp_path: Path) -> None:
    from tsfs.pipeline.prep import cheaper_settings

    data = load(ETTH1, WindowSpec(seq_len=96, stride=4))
    store = Store(tmp_path / "s", missing_ok=True)
    budget = 1 << 20
    full = plan_features(data, FeatureSpec(), store, budget_bytes=budget)
    assert not full.fits
    options = cheaper_settings(data, FeatureSpec(), store, budget_bytes=budget)
    for _label, est in options:
        assert est.fits == (est.bytes_on_disk <= budget)
    fitting = [label for label, est in options if est.fits]
    assert fitting
    assert fitting[-1].startswith("--stride ")
    stride = int(fitting[-1].split()[1])
    # the offered stride, planned on its own, fits too
    alone = plan_features(load(ETTH1, WindowSpec(seq_len=96, stride=stride)), FeatureSpec(), store)
    assert alone.bytes_on_disk <= budget


def test_free_space_counts_whole_blocks() -> None:
    """Small files fill whole blocks: 2.65 MB in 135 files took 3.06 MB of a tmpfs."""
    from tsfs.pipeline.plan import Estimate

    def est(free: int) -> Estimate:
        return Estimate(
            kind="features", namespace="features/x", windows={"train": 1}, rows_total=1,
            rows_unique=1, rows_present=0, rows_missing=1, segments=1,
            bytes_uncompressed=2_658_657, bytes_on_disk=2_658_657, files=135, seconds=1.0,
            jobs=1, threads=1, free_bytes=free, budget_bytes=None, sample_rows=1,
        )  # fmt: skip

    assert est(2_969_600).verdict == "does not fit the free space"  # the tmpfs that filled up
    assert est(2_658_657 + 135 * 4096).fits


def test_plan_says_how_the_run_would_compute(tmp_path: Path) -> None:
    """Features below a million rows run in one process on --jobs threads, images on --jobs
    worker processes: the plan says which, rather than echoing a --jobs the run does not use."""
    from typer.testing import CliRunner

    from tsfs.cli.main import app

    runner = CliRunner()
    common = [str(ETTH1), "--store", str(tmp_path / "s"), "--jobs", "2", "--splits", "val"]
    features = runner.invoke(app, ["plan", "features", *common])
    assert features.exit_code == 0, features.output
    assert "s in one process, 2 threads" in features.output
    assert "with file-system blocks at most" in features.output  # what `du` may show
    images = runner.invoke(app, ["plan", "images", *common, "--size", "32"])
    assert images.exit_code == 0, images.output
    assert "s on 2 worker processes" in images.output
    assert not (tmp_path / "s").exists()  # planning creates nothing


@pytest.mark.parametrize("kind", ["features", "images"])
def test_files_and_directories_are_counted_exactly(tmp_path: Path, kind: str) -> None:
    """Many small segments: each one's directories (its own, each array's, every chunk row's)
    take a block each on most file systems, and the free-space bound counts them."""
    data = load(ETTH1, WindowSpec(seq_len=96, stride=10, splits=("test",)))
    store = Store(tmp_path / "s", mode="a", create="on_write")
    if kind == "features":
        est = plan_features(data, FeatureSpec(), store, batch_rows=100)
        prep_features(data, FeatureSpec(), store, batch_rows=100)
    else:
        est = plan_images(data, ImageSpec(size=32), store, batch_rows=70)
        prep_images(data, ImageSpec(size=32), store, batch_rows=70)
    made = list((tmp_path / "s").rglob("*"))
    assert est.files == sum(p.is_file() for p in made)
    assert est.directories == 1 + sum(p.is_dir() for p in made)  # the store's own too
    assert est.disk_bytes_bound >= est.bytes_on_disk + est.directories * 4096
    used = sum(p.stat().st_blocks * 512 for p in [tmp_path / "s", *made])  # what `du` counts
    assert used <= est.disk_bytes_bound


def test_a_short_plans_sample_spreads_over_all_of_it() -> None:
    """Fewer stretches than asked for (a short plan) must still reach its end: rows differ in
    how well they compress, and data sorted by class differs from start to end."""
    from tsfs.pipeline.execute import plan_rows
    from tsfs.pipeline.plan import _sample_batches
    from tsfs.pipeline.prep import dataset_blocks

    data = load(ETTH1, WindowSpec(seq_len=96, stride=64, splits=("val",)))
    plan = plan_rows(dataset_blocks(data), None, key_algorithm="xxh3-128", batch_rows=2048)
    total = plan.rows_missing
    stretches = _sample_batches(plan, sample_rows=512, stretches=8)
    assert 1 < len(stretches) < 8  # fewer than asked for: the case this is about
    windows = data.splits["val"].starts.size
    first = [int(b.windows[0]) for b in stretches]
    # the stretches start across the whole split, the last one in its last part
    assert first[-1] >= windows * (len(stretches) - 1) / len(stretches) - 1, (first, total)


def test_cheaper_images_combine_masks_and_a_smaller_size(tmp_path: Path) -> None:
    """Where neither masks nor a smaller size fits alone (data without strides to thin),
    the two together are offered, and what is offered fits."""
    import numpy as np

    from tsfs.pipeline.prep import cheaper_settings

    walks = np.random.default_rng(0).normal(size=(60, 96, 4)).cumsum(axis=1)
    np.save(tmp_path / "walks.npy", walks)
    data = load(tmp_path / "walks.npy", WindowSpec())
    store = Store(tmp_path / "s", missing_ok=True)
    rgb = ImageSpec(size=128, rgb=True)
    both = plan_images(data, ImageSpec(size=32), store)
    budget = int(both.bytes_on_disk * 1.05)
    options = dict(cheaper_settings(data, rgb, store, budget_bytes=budget))
    singles = ["masks instead of RGB (drop --rgb)", "--size 64", "--size 32"]
    assert not any(options[label].fits for label in singles)
    assert options["drop --rgb, --size 32"].fits
    assert not options["drop --rgb, --size 64"].fits
