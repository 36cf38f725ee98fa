"""Training loaders over a store: views, chunk reads, orders, sharding, resumption, memory.

Stores here are filled with outputs that are simple functions of each row (its first and last
values, a mask quantised from its values), so every value a loader returns can be checked
against the row it should come from: TSLib's window ``data[b1+i : b1+i+T]``, restated here from
the CSV. Chunk sizes are shrunk so that a split spans many segments and chunks.
"""

from __future__ import annotations

import itertools
import json
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch
from _refuse_imports import REFUSE_PTWT_MATPLOTLIB
from torch.utils.data import DataLoader

import tsfs.stores.store as store_module
import tsfs.training.data as data_module
from tsfs.errors import InputError, MissingRowsError, StoreCorruptError, StoreError
from tsfs.pipeline.compose import TAB10, compose_torch, palette, parse_color
from tsfs.pipeline.execute import plan_rows
from tsfs.pipeline.prep import dataset_blocks
from tsfs.pipeline.sources import load
from tsfs.pipeline.windows import Dataset
from tsfs.specs import FeatureSpec, ImageSpec, WindowSpec
from tsfs.stores.store import Namespace, Store
from tsfs.training._compose_kernel import compose_into
from tsfs.training.cache import ChunkCache
from tsfs.training.data import (
    ChunkedWindows,
    ImageComposer,
    ImageOutput,
    StoreLoader,
    WindowDataset,
    WindowReader,
    open_view,
    prep_command,
)
from tsfs.training.sampler import (
    Order,
    epoch_order,
    mask_from_ranges,
    plan_epoch,
    ranges_from_mask,
    worker_share,
)

REPO = Path(__file__).resolve().parents[1]
ETTH1 = REPO / "data" / "ETTh1.csv"
BASIC_MOTIONS = REPO.parent / "shared" / "data" / "BasicMotions_TRAIN.ts"
SEQ_LEN, LABEL_LEN, PRED_LEN = 96, 48, 96
FEATURES = FeatureSpec(level=3)  # what the default resolves to at T=96
IMAGES = ImageSpec(size=8)
# Small chunks, many per segment (the store aims at 4 MiB): 28 masks of 8×8 = 4 windows of V=7.
CHUNK_BYTES = 1792


def row_mask(rows: npt.NDArray[np.float32], size: int) -> npt.NDArray[np.uint8]:
    """(R, T) rows → (R, size, size) masks: a stand-in image that identifies its row."""
    pixels = size * size
    reps = -(-pixels // rows.shape[1])
    values = np.tile(rows, reps)[:, :pixels]
    return (np.abs(values) * 60).clip(0, 255).astype(np.uint8).reshape(-1, size, size)


def fill(
    store: Store, dataset: Dataset, *, batch_rows: int = 6000, skip_last: bool = False
) -> None:
    """Write features (first, last, pair) and masks of every row of ``dataset`` into ``store``."""
    fns = store.namespace("features", FEATURES.to_dict(), FEATURES.fingerprint)
    ins = store.namespace("images", IMAGES.to_dict(), IMAGES.fingerprint)
    batches = plan_rows(
        dataset_blocks(dataset), fns, key_algorithm=store.key, batch_rows=batch_rows
    ).batches
    for b in batches[:-1] if skip_last else batches:
        w, v = np.nonzero(b.select)
        rows = b.block.rows(b.windows[w], v)
        feats = {"first": rows[:, 0].copy(), "last": rows[:, -1].copy(), "pair": rows[:, :2]}
        fns.write_segment(b.keys, feats)
        ins.write_segment(b.keys, {"mask": row_mask(rows, IMAGES.size)}, codecs={"mask": "zstd"})


@pytest.fixture(scope="module")
def ett() -> Dataset:
    return load(ETTH1, WindowSpec(seq_len=SEQ_LEN, label_len=LABEL_LEN, pred_len=PRED_LEN))


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory, ett: Dataset) -> Store:
    path = tmp_path_factory.mktemp("store") / "s"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store_module, "_CHUNK_TARGET_BYTES", CHUNK_BYTES)
        store = Store(path, mode="a")
        fill(store, ett)
        # A later segment repeating some keys with wrong values: the earliest copy must win.
        fns = store.namespace("features", FEATURES.to_dict(), FEATURES.fingerprint)
        keys = open_view(ett, store, persist=False).keys["train"][:50].reshape(-1, 16)
        junk = np.full(len(keys), np.nan, dtype=np.float32)
        fns.write_segment(keys, {"first": junk, "last": junk, "pair": np.c_[junk, junk]})
    return Store(path, mode="r")


@pytest.fixture(scope="module")
def reader(ett: Dataset, filled: Store) -> WindowReader:
    view = open_view(ett, filled)
    return WindowReader(view, "train", features=FEATURES, images=IMAGES, image_output="mask")


def tslib_windows(split: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], int]:
    """TSLib's Dataset_ETT_hour arithmetic restated: (raw rows, scaled rows, border1) of a split."""
    raw = np.loadtxt(ETTH1, delimiter=",", skiprows=1, usecols=range(1, 8))
    train = raw[: 12 * 30 * 24]
    data = (raw - train.mean(axis=0)) / train.std(axis=0)  # StandardScaler: population std
    border1 = [0, 12 * 30 * 24 - SEQ_LEN, 16 * 30 * 24 - SEQ_LEN][split]
    return raw, data, border1


# --------------------------------------------------------------------------------------------
# views and reads


def test_view_is_persisted_once_and_loaded_without_rehashing(
    tmp_path: Path, ett: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "s", mode="a")
    first = open_view(ett, store)
    assert (store.path / "views" / first.fingerprint).is_dir()

    def no_hashing(*args: object, **kwargs: object) -> None:
        raise AssertionError("the persisted view should have been loaded")

    monkeypatch.setattr("tsfs.pipeline.execute.Block.keys", no_hashing)
    again = open_view(ett, Store(tmp_path / "s", mode="r"))
    assert again.fingerprint == first.fingerprint
    for name, keys in first.keys.items():
        assert np.array_equal(again.keys[name], keys)
        assert keys.shape == (len(ett.splits[name]), 7, 16)


def test_read_only_store_hashes_without_persisting(tmp_path: Path, ett: Dataset) -> None:
    Store(tmp_path / "s", mode="a")
    view = open_view(ett, Store(tmp_path / "s", mode="r"))
    assert not (tmp_path / "s" / "views").exists()
    assert set(view.keys) == {"train", "val", "test"}


@pytest.mark.parametrize("damage", ["misfit", "bit flip", "missing chunk"])
def test_a_damaged_view_is_rebuilt_from_the_data(tmp_path: Path, ett: Dataset, damage: str) -> None:
    """A view is a cache of keys: one that does not fit its data set or does not read is
    hashed again and saved over, never read as (zero) keys."""
    store = Store(tmp_path / "s", mode="a")
    truth = open_view(ett, store, persist=False).keys
    fp = open_view(ett, store).fingerprint
    view = store.path / "views" / fp
    if damage == "misfit":
        store.drop_view(fp)
        store.save_view(fp, {"train": np.zeros((3, 7, 16), np.uint8)}, {})
    else:
        chunk = next(p for p in (view / "train").rglob("*") if p.is_file() and "c" in p.parts)
        if damage == "missing chunk":
            chunk.unlink()
        else:
            data = bytearray(chunk.read_bytes())
            data[len(data) // 2] ^= 0xFF
            chunk.write_bytes(bytes(data))
    for mode in ("r", "a"):  # read-only: rehashed each time; writable: saved over
        got = open_view(ett, Store(tmp_path / "s", mode=mode)).keys
        assert got.keys() == truth.keys()
        for name in truth:
            np.testing.assert_array_equal(got[name], truth[name])
    loaded = store.load_view(fp)
    assert loaded is not None
    np.testing.assert_array_equal(loaded[0]["train"], truth["train"])


def test_reader_returns_each_windows_own_rows(reader: WindowReader) -> None:
    _raw, data, b1 = tslib_windows(0)
    windows = np.array([0, 1, 17, 4000, 8448, 17, 2])  # any order, repeats allowed
    a = reader.read(windows)
    x = np.stack([data[b1 + i : b1 + i + SEQ_LEN] for i in windows])  # (B, T, V)
    np.testing.assert_allclose(a.x, x, rtol=0, atol=2e-6)
    assert a.y is not None
    assert a.x_mark is not None
    assert a.y_mark is not None
    y = np.stack(
        [data[b1 + i + SEQ_LEN - LABEL_LEN : b1 + i + SEQ_LEN + PRED_LEN] for i in windows]
    )
    np.testing.assert_allclose(a.y, y, rtol=0, atol=2e-6)
    assert a.x_mark.shape == (len(windows), SEQ_LEN, 4)
    assert a.y_mark.shape == (len(windows), LABEL_LEN + PRED_LEN, 4)
    # Features and masks come from the store (earliest copy of duplicated keys), per row.
    assert np.array_equal(a.features["first"], a.x[:, 0, :])
    assert np.array_equal(a.features["last"], a.x[:, -1, :])
    assert np.array_equal(a.features["pair"], a.x[:, :2, :].transpose(0, 2, 1))
    masks = row_mask(a.x.transpose(0, 2, 1).reshape(-1, SEQ_LEN), IMAGES.size)
    assert a.images is not None
    assert np.array_equal(a.images, masks.reshape(len(windows), 7, IMAGES.size, IMAGES.size))


def test_a_subset_reads_its_windows_under_their_own_numbers(reader: WindowReader) -> None:
    picked = np.array([4000, 3, 17, 8448])
    part = reader.subset(picked)
    assert len(part) == 4
    assert len(reader) > 8448
    got, want = part.read([2, 0, -1]), reader.read([17, 4000, 8448])
    np.testing.assert_array_equal(got.index, [17, 4000, 8448])  # the split's numbers
    for name in ("x", "y", "x_mark", "y_mark", "images"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    assert got.features is not None
    assert want.features is not None
    for name in want.features:
        np.testing.assert_array_equal(got.features[name], want.features[name])
    np.testing.assert_array_equal(part.groups(), reader.groups()[picked])
    np.testing.assert_array_equal(part.subset([3, 1]).read([0, 1]).index, [8448, 3])
    loader = StoreLoader(part, batch_size=3, order="sequential")
    assert sorted(np.concatenate([b["index"].numpy() for b in loader])) == sorted(picked)
    with pytest.raises(IndexError, match="out of range"):
        reader.subset([len(reader)])
    with pytest.raises(IndexError, match="out of range"):
        part.read([4])


def test_chunk_reads_equal_the_stores_own_zarr_reads(
    reader: WindowReader, filled: Store, ett: Dataset
) -> None:
    windows = np.random.default_rng(1).choice(len(reader), 300, replace=False)
    a = reader.read(windows)
    keys = open_view(ett, filled).keys["train"][windows].reshape(-1, 16)
    fns = filled.namespace("features", FEATURES.to_dict(), FEATURES.fingerprint)
    ins = filled.namespace("images", IMAGES.to_dict(), IMAGES.fingerprint)
    zarr_features = fns.read_keys(keys)
    for name, values in a.features.items():
        assert np.array_equal(
            values.reshape(len(keys), -1), zarr_features[name].reshape(len(keys), -1)
        )
    assert a.images is not None
    assert np.array_equal(a.images.reshape(len(keys), 8, 8), ins.read_keys(keys)["mask"])


def test_chunks_tsfs_writes_are_decoded_without_zarr(
    ett: Dataset, filled: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = WindowReader(open_view(ett, filled), "test", features=FEATURES, images=IMAGES)

    def through_zarr(*args: object, **kwargs: object) -> None:
        raise AssertionError("a raw or blosc chunk went through Zarr's reader")

    monkeypatch.setattr(Namespace, "read_array", through_zarr)
    a = fresh.read(np.arange(0, len(fresh), 97))
    assert np.array_equal(a.features["first"], a.x[:, 0, :])


def test_feature_subset_and_unknown_output(ett: Dataset, filled: Store) -> None:
    view = open_view(ett, filled)
    r = WindowReader(view, "val", features=FEATURES, feature_names=["last"])
    assert list(r.read([0, 1]).features) == ["last"]
    with pytest.raises(InputError, match="no output 'median'"):
        WindowReader(view, "val", features=FEATURES, feature_names=["median"])


def test_missing_rows_name_the_prep_command(tmp_path: Path, ett: Dataset) -> None:
    store = Store(tmp_path / "s", mode="a")
    fill(store, ett, skip_last=True)
    view = open_view(ett, store)
    with pytest.raises(MissingRowsError) as err:
        WindowReader(view, "test", images=IMAGES)
    message = str(err.value)
    command = message.split("compute them with: ")[1]
    assert shlex.split(command) == [
        "tsfs", "prep", "images", str(ETTH1), "--size", "8", "--store", str(store.path),
    ]  # fmt: skip
    # The command's options are the CLI's own: the parser accepts them (--help stops there).
    from typer.testing import CliRunner

    from tsfs.cli.main import app

    result = CliRunner().invoke(app, [*shlex.split(command)[1:], "--help"])
    assert result.exit_code == 0, result.output


def test_prep_command_carries_window_and_spec_options(tmp_path: Path) -> None:
    ds = load(ETTH1, WindowSpec(seq_len=512, pred_len=24, splits=("train",)))
    store = Store(tmp_path / "s", mode="a")
    cmd = prep_command("features", ds, FeatureSpec(level=2, store_coefficients=True), store)
    assert shlex.split(cmd) == [
        "tsfs", "prep", "features", str(ETTH1), "--seq-len", "512", "--pred-len", "24",
        "--splits", "train", "--level", "2", "--coefficients", "--store", str(store.path),
    ]  # fmt: skip
    # A mask's colour is applied at read time: it does not change what prep stores.
    assert "(with" not in prep_command("images", ds, ImageSpec(color="#ff0000"), store)
    odd = prep_command("images", ds, ImageSpec(antialiased=False), store)
    assert "antialiased" in odd
    assert "prep_images" in odd


def test_the_prep_command_named_makes_the_namespace_asked_for(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tsfs.cli.main import app

    ds = load(ETTH1, WindowSpec(seq_len=48, label_len=24, stride=97, splits=("test",)))
    store = Store(tmp_path / "s", mode="a")
    for spec in (
        ImageSpec(size=16, ylim="sigma", sigma=3.0),
        ImageSpec(size=16, margin=0.2),
        ImageSpec(size=16, rgb=True, color="#ff0000"),
    ):
        cmd = prep_command("images", ds, spec, store)
        assert "(with" not in cmd, cmd
        result = CliRunner().invoke(app, [*shlex.split(cmd)[1:], "-q"])
        assert result.exit_code == 0, (cmd, result.output)
        assert Namespace(store, "images", spec.fingerprint).exists(), cmd


def test_the_prep_command_named_fills_what_an_unscaled_or_truncated_run_reads(
    tmp_path: Path,
) -> None:
    """Data options that change the rows (--no-scale, --unequal truncate) are spelled out, and
    a features spec whose level is left to prep is not written as "--level None"."""
    from typer.testing import CliRunner

    from tsfs.cli.main import app

    toy = tmp_path / "Toy_TRAIN.ts"
    toy.write_text(
        "@problemName Toy\n@univariate true\n@equalLength false\n@classLabel true a b\n@data\n"
        + "".join(f"{','.join(str(v) for v in range(n))}:{'ab'[n % 2]}\n" for n in (40, 41, 44))
    )
    cases = [
        (load(ETTH1, WindowSpec(seq_len=48, label_len=24, stride=97, scale=False)), "--no-scale"),
        (load(toy, WindowSpec(unequal="truncate")), "--unequal truncate"),
    ]
    for ds, option in cases:
        store = Store(tmp_path / f"s{len(option)}", mode="a")
        cmd = prep_command("features", ds, FeatureSpec(), store)
        assert option in cmd, cmd
        assert "--level" not in cmd, cmd
        assert "(with" not in cmd, cmd
        result = CliRunner().invoke(app, [*shlex.split(cmd)[1:], "-q"])
        assert result.exit_code == 0, (cmd, result.output)
        split = next(iter(ds.splits))
        reader = WindowReader(open_view(ds, store), split, features=FeatureSpec())
        assert len(reader.read([0]).features["min"]) == 1


def test_corrupt_chunk_is_an_error_naming_its_file(tmp_path: Path, ett: Dataset) -> None:
    store = Store(tmp_path / "s", mode="a")
    fill(store, ett)
    reader = WindowReader(open_view(ett, store), "train", images=IMAGES)
    chunks = sorted((store.path / "images").glob("*/segments/*/mask/c/*/0/0"))
    assert chunks
    for path in chunks:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match="checksum") as err:
        reader.read([0])
    assert any(str(p) in str(err.value) for p in chunks)
    assert f"tsfs store gc --drop-corrupt {store.path}" in str(err.value)
    # Read on the loader's background thread, the error reaches the training loop.
    with pytest.raises(StoreCorruptError, match="checksum"):
        next(iter(StoreLoader(reader)))


def test_a_store_compacted_under_a_reader_is_named_as_such_not_as_corrupt(
    tmp_path: Path, ett: Dataset
) -> None:
    store = Store(tmp_path / "s", mode="a")
    fill(store, ett)
    reader = WindowReader(open_view(ett, store), "train", features=FEATURES, images=IMAGES)
    Store(tmp_path / "s", mode="a").compact()  # merges, then drops, the segments read from
    with pytest.raises(StoreError, match="removed after this run opened") as err:
        reader.read([0])
    assert not isinstance(err.value, StoreCorruptError)
    assert "restart the run" in str(err.value)
    fresh = WindowReader(open_view(ett, Store(tmp_path / "s")), "train", images=IMAGES)
    assert fresh.read([0]).images is not None  # the rows are all still there


# --------------------------------------------------------------------------------------------
# images


@pytest.mark.parametrize("width", [24, 23])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("output", ["uint8", "float", "clip"])
def test_cpu_composition_equals_compose_torch(
    output: ImageOutput, threads: int, width: int
) -> None:
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 5, 24, width), np.uint8)
    hit = rng.random(masks.shape) < 0.1
    masks[hit] = rng.integers(1, 256, int(hit.sum()))
    masks[0, 0, 0, :] = np.arange(width) * 11  # levels across the whole range
    masks[0, 1, :, :] = rng.integers(0, 256, (24, width))  # every kind of neighbour
    colors = palette(5)
    dense = compose_torch(torch.from_numpy(masks), colors, output=output)  # type: ignore[arg-type]
    sparse = ImageComposer(colors, output, threads=threads)(torch.from_numpy(masks))
    assert sparse.dtype == dense.dtype
    assert torch.equal(sparse, dense)


def test_the_compiled_loop_refuses_shapes_it_would_write_past() -> None:
    masks = np.zeros((2, 3, 4, 4), np.uint8)
    table = np.zeros((3, 256), np.uint32)
    with pytest.raises(InputError, match="out must be"):
        compose_into(masks, table, np.zeros((1, 3, 4, 4), np.uint32))
    with pytest.raises(InputError, match="table"):
        compose_into(masks, table[:2], np.zeros((2, 3, 4, 4), np.uint32))
    with pytest.raises(InputError, match="out must be"):
        compose_into(masks, table, np.zeros((2, 3, 4, 4), np.float32))


def test_composed_batches_reuse_memory_only_when_nobody_holds_it() -> None:
    rng = np.random.default_rng(1)
    first, second = (
        torch.from_numpy(rng.integers(0, 256, (2, 3, 16, 16), dtype=np.uint8)) for _ in range(2)
    )
    compose = ImageComposer(palette(3), "uint8")
    kept = compose(first)
    before = kept.clone()
    again = compose(second)  # `kept` is still held: new memory, `kept` untouched
    assert again.data_ptr() != kept.data_ptr()
    assert torch.equal(kept, before)
    view_ptr = kept.data_ptr()
    del kept  # nothing refers to the first batch now
    third = compose(first)
    assert third.data_ptr() == view_ptr
    assert torch.equal(third, before)
    assert torch.equal(again, compose_torch(second, palette(3)))


def test_read_masks_reuse_memory_only_when_nobody_holds_it(
    ett: Dataset, filled: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data_module, "_ROW_COPY_BYTES", 1)  # these 8×8 masks count as big rows
    reader = WindowReader(open_view(ett, filled), "test", images=IMAGES, image_output="mask")
    fresh = WindowReader(open_view(ett, filled), "test", images=IMAGES, image_output="mask")
    kept = reader.read(np.arange(8)).images
    assert kept is not None
    before = kept.copy()
    again = reader.read(np.arange(8, 16)).images  # `kept` is still held: new memory
    assert again is not None
    assert not np.shares_memory(again, kept)
    assert np.array_equal(kept, before)
    address = kept.ctypes.data
    del kept
    third = reader.read(np.arange(100, 108)).images  # recycled, and rightly filled
    assert third is not None
    assert third.ctypes.data == address
    assert np.array_equal(third, fresh.read(np.arange(100, 108)).images)  # type: ignore[arg-type]
    assert np.array_equal(again, fresh.read(np.arange(8, 16)).images)  # type: ignore[arg-type]


def test_loader_images_are_masks_in_each_variables_colour(ett: Dataset, filled: Store) -> None:
    view = open_view(ett, filled)
    masks_reader = WindowReader(view, "test", images=IMAGES, image_output="mask")
    hexes = ["#000000", *TAB10[:6]]
    rgb_reader = WindowReader(view, "test", images=IMAGES, colors=hexes)
    batch = next(iter(StoreLoader(rgb_reader, batch_size=4, order="sequential")))
    masks = torch.from_numpy(masks_reader.read(batch["index"].numpy()).images)  # type: ignore[arg-type]
    assert batch["images"].shape == (4, 7, 3, 8, 8)
    assert torch.equal(
        batch["images"], compose_torch(masks, np.stack([parse_color(h) for h in hexes]))
    )
    # Black on white: every channel is 255 minus the coverage (Agg's blend for black).
    assert torch.equal(batch["images"][:, 0], (255 - masks[:, 0, None]).expand(4, 3, 8, 8))


def test_loader_images_are_matplotlibs_own_pixels(tmp_path: Path) -> None:
    """End to end: ``tsfs prep images`` masks, composed by the loader, against pyplot figures."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    from tsfs.pipeline.normalize import revin
    from tsfs.pipeline.prep import prep_images
    from tsfs.pipeline.render import y_limits

    walks = np.cumsum(np.random.default_rng(3).standard_normal((4, 48, 3)), axis=1)
    np.save(tmp_path / "x.npy", walks.astype(np.float32))
    ds = load(tmp_path / "x.npy")
    spec = ImageSpec(size=32)
    store = Store(tmp_path / "s", mode="a")
    prep_images(ds, spec, store)
    reader = WindowReader(open_view(ds, store), "train", images=spec)
    batch = next(iter(StoreLoader(reader, batch_size=4, order="sequential")))
    colors = palette(3)
    for i in range(4):
        for v in range(3):
            row = ds.splits["train"].x[i, :, v]
            z, _, _ = revin(row[None, :])
            fig = plt.figure(figsize=(0.32, 0.32), dpi=100)
            ax = fig.add_axes((0, 0, 1, 1))
            ax.axis("off")
            ax.plot(z[0], color=colors[v] / 255, linewidth=spec.linewidth)
            ax.set_xlim(0, len(row) - 1)
            ax.set_ylim(*y_limits(z, spec)[0])
            fig.canvas.draw()
            drawn = np.asarray(fig.canvas.buffer_rgba())[..., :3].transpose(2, 0, 1)
            plt.close(fig)
            assert np.array_equal(batch["images"][i, v].numpy(), drawn), (i, v)


def test_chunks_in_another_codec_chain_are_read_through_zarr(tmp_path: Path) -> None:
    import zarr
    from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec
    from zarr.storage import LocalStore

    samples = np.random.default_rng(0).standard_normal((40, 16, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", samples)
    ds = load(tmp_path / "x.npy")
    store = Store(tmp_path / "s", mode="a")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store_module, "_CHUNK_TARGET_BYTES", CHUNK_BYTES)
        fill(store, ds)
    expected = WindowReader(open_view(ds, store), "train", images=IMAGES).read(np.arange(40))
    # Rewrite every mask array with a chain the fast path does not decode (same values).
    for array in (store.path / "images").glob("*/segments/*/mask"):
        old = zarr.open_array(LocalStore(array), mode="r")
        data, chunks = old[...], old.chunks
        new = zarr.create_array(
            LocalStore(array), shape=data.shape, chunks=chunks, dtype=data.dtype,
            serializer=BytesCodec(), compressors=[ZstdCodec(), Crc32cCodec()],
            overwrite=True, config={"write_empty_chunks": True},
        )  # fmt: skip
        new[...] = data
    got = WindowReader(open_view(ds, store), "train", images=IMAGES).read(np.arange(40))
    assert got.images is not None
    assert np.array_equal(got.images, expected.images)


def test_a_pickled_reader_reloads_its_data_instead_of_carrying_windows(
    reader: WindowReader,
) -> None:
    import pickle

    blob = pickle.dumps(reader)
    assert len(blob) < reader.split.x.nbytes / 10  # windows are strided views: never copied
    again = pickle.loads(blob)
    a, b = reader.read([5, 9]), again.read([5, 9])
    assert np.array_equal(a.x, b.x)
    assert np.array_equal(a.images, b.images)  # type: ignore[arg-type]
    assert all(np.array_equal(a.features[k], b.features[k]) for k in a.features)


# --------------------------------------------------------------------------------------------
# orders and shards


def test_orders_are_permutations_fixed_by_seed_and_epoch() -> None:
    groups = np.repeat(np.arange(40), 7)
    for order in ("chunks", "random", "sequential"):
        a = epoch_order(groups, order=order, seed=3, epoch=1, buffer=4)  # type: ignore[arg-type]
        assert np.array_equal(np.sort(a), np.arange(len(groups)))
        b = epoch_order(groups, order=order, seed=3, epoch=1, buffer=4)  # type: ignore[arg-type]
        assert np.array_equal(a, b)
    c = epoch_order(groups, order="chunks", seed=3, epoch=2, buffer=4)
    assert not np.array_equal(a, c)


def test_chunk_order_draws_each_stretch_from_a_few_chunks() -> None:
    groups = np.repeat(np.arange(100), 10)
    order = epoch_order(groups, order="chunks", seed=0, epoch=0, buffer=5, span=1)
    blocks = groups[order].reshape(20, 50)  # 20 blocks of 5 groups × 10 windows
    assert all(len(np.unique(b)) == 5 for b in blocks)
    assert len({tuple(np.sort(np.unique(b))) for b in blocks}) == 20  # each group in one block
    shuffled = epoch_order(groups, order="random", seed=0, epoch=0)
    assert np.mean([len(np.unique(b)) for b in groups[shuffled].reshape(20, 50)]) > 30


@pytest.mark.parametrize(("span", "most"), [(1, 100), (4, 26)])
def test_spans_keep_neighbouring_chunks_in_one_block(span: int, most: int) -> None:
    groups = np.repeat(np.arange(100), 10)
    position = np.empty(len(groups), np.int64)
    position[epoch_order(groups, order="chunks", seed=0, epoch=0, buffer=8, span=span)] = np.arange(
        len(groups)
    )
    first = np.array([position[groups == g].min() for g in range(100)])
    last = np.array([position[groups == g].max() for g in range(100)])
    # Chunks of one block interleave; neighbours in different blocks do not overlap at all.
    apart = (last[:-1] < first[1:]) | (last[1:] < first[:-1])
    assert int(apart.sum()) <= most
    if span == 1:
        assert int(apart.sum()) > 80


@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_and_workers_share_every_window_once(drop_last: bool) -> None:
    n, batch_size, world = 1003, 10, 3
    groups = np.arange(n) // 20
    seen = []
    counts = []
    for rank in range(world):
        plan = plan_epoch(
            groups, order="chunks", seed=1, epoch=0, buffer=4, batch_size=batch_size,
            rank=rank, world_size=world, drop_last=drop_last,
        )  # fmt: skip
        counts.append(plan.count)
        for w in range(4):
            for j in worker_share(np.arange(plan.count), w, 4):
                seen.append(plan.windows(int(j)))
    got = np.concatenate(seen)
    assert len(got) == len(np.unique(got))
    if drop_last:
        assert len(set(counts)) == 1
        assert len(got) == n // (batch_size * world) * batch_size * world
    else:
        assert max(counts) - min(counts) <= 1
        assert np.array_equal(np.sort(got), np.arange(n))


def test_batch_ranges_round_trip() -> None:
    mask = np.array([1, 1, 0, 1, 0, 0, 1], bool)
    assert ranges_from_mask(mask) == [[0, 2], [3, 4], [6, 7]]
    assert np.array_equal(mask_from_ranges(ranges_from_mask(mask), 7), mask)
    with pytest.raises(InputError):
        mask_from_ranges([[5, 9]], 7)


def test_chunk_order_decodes_each_chunk_once_per_epoch(tmp_path: Path) -> None:
    # Independent random samples of V=4: a chunk of 28 masks holds exactly 7 windows.
    samples = np.random.default_rng(0).standard_normal((700, 16, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", samples)
    ds = load(tmp_path / "x.npy")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store_module, "_CHUNK_TARGET_BYTES", CHUNK_BYTES)
        fill(Store(tmp_path / "s", mode="a"), ds)
    view = open_view(ds, Store(tmp_path / "s"))

    def chunk_reads(order: Order) -> int:
        reader = WindowReader(view, "train", images=IMAGES, cache_bytes=8 * CHUNK_BYTES)
        for _ in StoreLoader(reader, batch_size=16, order=order, buffer=4, span=4):
            pass
        return reader.cache.stats.misses

    assert chunk_reads("chunks") == 100  # each of the 100 chunks once
    assert chunk_reads("random") > 400


# --------------------------------------------------------------------------------------------
# the loader


def collect(loader: StoreLoader, stop: int | None = None) -> Iterator[npt.NDArray[np.int64]]:
    """Window indices of each batch (the first ``stop`` batches: no more are taken)."""
    for batch in itertools.islice(loader, stop):
        # Every batch's features belong to its windows.
        assert torch.equal(batch["features"]["first"], batch["x"][:, 0, :])
        yield batch["index"].numpy()


@pytest.mark.parametrize("workers", [0, 2])
def test_ranks_with_workers_see_every_window_exactly_once(
    reader: WindowReader, workers: int
) -> None:
    seen = []
    for rank in range(2):
        loader = StoreLoader(
            reader, batch_size=128, seed=5, rank=rank, world_size=2, num_workers=workers
        )
        seen += list(collect(loader))
    got = np.concatenate(seen)
    assert np.array_equal(np.sort(got), np.arange(len(reader)))


def test_each_pass_is_a_new_epoch_and_set_epoch_replays_it(reader: WindowReader) -> None:
    loader = StoreLoader(reader, batch_size=256, seed=2)
    first = np.concatenate(list(collect(loader)))
    assert loader.epoch == 1
    second = np.concatenate(list(collect(loader)))
    assert not np.array_equal(first, second)
    loader.set_epoch(0)
    assert np.array_equal(np.concatenate(list(collect(loader))), first)


@pytest.mark.parametrize(("before_workers", "after_workers"), [(2, 1), (0, 2), (1, 2)])
def test_resume_mid_epoch_loses_and_repeats_nothing(
    reader: WindowReader, before_workers: int, after_workers: int
) -> None:
    full = StoreLoader(reader, batch_size=100, seed=7)
    full.set_epoch(3)
    everything = list(collect(full))
    interrupted = StoreLoader(reader, batch_size=100, seed=7, num_workers=before_workers)
    interrupted.set_epoch(3)
    before = list(collect(interrupted, stop=21))
    state = json.loads(json.dumps(interrupted.state_dict()))  # survives a JSON checkpoint
    assert state["epoch"] == 3
    assert state["samples"] == 21 * 100
    resumed = StoreLoader(reader, batch_size=100, seed=7, num_workers=after_workers)
    resumed.load_state_dict(state)
    after = list(collect(resumed))
    got = np.concatenate(before + after)
    assert len(got) == len(reader) == len(np.unique(got))
    # The uninterrupted epoch's batches in its order, whatever the workers before and after:
    # the same training.
    assert [b.tolist() for b in before + after] == [b.tolist() for b in everything]
    assert resumed.epoch == 4


def test_resume_refuses_another_order(reader: WindowReader) -> None:
    state = StoreLoader(reader, batch_size=100, seed=7).state_dict()
    with pytest.raises(InputError, match="seed=7"):
        StoreLoader(reader, batch_size=100, seed=8).load_state_dict(state)


def test_window_indices_are_integers_and_negative_ones_count_from_the_end(
    reader: WindowReader,
) -> None:
    n = len(reader)
    last = reader.read([-1, n - 1])
    assert last.index.tolist() == [n - 1, n - 1]
    np.testing.assert_array_equal(last.x[0], last.x[1])
    assert WindowDataset(reader, tslib=False)[-1]["index"] == n - 1
    for read in (reader.read, WindowDataset(reader).__getitems__):  # both paths alike
        with pytest.raises(InputError, match="window indices must be integers"):
            read([1.5])
    with pytest.raises(IndexError, match=f"window {n} is out of range"):
        reader.read([0, n])


def test_persistent_workers_take_each_pass_as_the_next_epoch(reader: WindowReader) -> None:
    """A persistent worker keeps its copy of the dataset, which the main process's set_epoch
    never reaches: it must still give each epoch its own order, the one set_epoch gives."""

    def orders(workers: int, persistent: bool) -> list[list[int]]:
        ds = ChunkedWindows(reader, batch_size=256, order="random", seed=3)
        loader = DataLoader(ds, batch_size=None, num_workers=workers, persistent_workers=persistent)
        out = []
        for epoch in range(3):
            ds.set_epoch(epoch)
            out.append(torch.cat([b["index"] for b in loader]).tolist())
        return out

    want = orders(0, False)
    assert len({tuple(o) for o in want}) == 3  # three different epochs
    assert orders(2, True) == want


def test_loader_settings_are_checked_and_kept_as_plain_ints(
    reader: WindowReader, tmp_path: Path
) -> None:
    """numpy integers (a seed drawn from a generator) would keep a checkpoint from loading
    with weights_only and from JSON; bad values are one-line errors, not numpy's."""
    i64 = np.int64
    loader = StoreLoader(
        reader,
        batch_size=i64(64),
        seed=np.random.default_rng(0).integers(9),
        buffer=i64(8),
        span=i64(2),
        rank=i64(0),
        world_size=i64(2),
        drop_last=np.bool_(True),
    )
    state = loader.state_dict()
    json.dumps(state)
    torch.save({"loader": state}, tmp_path / "c.pt")
    assert torch.load(tmp_path / "c.pt", weights_only=True)["loader"] == state
    bad: list[tuple[dict[str, object], str]] = [
        ({"rank": "0", "world_size": 1}, "rank must be an integer in range"),
        ({"rank": 0.5, "world_size": 2}, "rank must be an integer in range"),
        ({"world_size": 0}, "world_size must be a positive integer"),
        ({"num_workers": "2"}, "num_workers must be an integer"),
        ({"num_workers": 1.5}, "num_workers must be an integer"),
        ({"prefetch_factor": 1.5}, "prefetch_factor must be a positive integer"),
        ({"drop_last": "yes"}, "drop_last must be True or False"),
        ({"pin_memory": "no"}, "pin_memory must be True, False or None"),
    ]
    for kwargs, message in bad:
        with pytest.raises(InputError, match=message):
            StoreLoader(reader, **kwargs)  # type: ignore[arg-type]
    for epoch in ("x", None, 1.5):  # 1.5 must not quietly become epoch 1
        with pytest.raises(InputError, match="epoch must be an integer in"):
            loader.set_epoch(epoch)  # type: ignore[arg-type]
    for record, message in ((7, "not a StoreLoader.state_dict"), ({"epoch": 0}, "lacks samples")):
        with pytest.raises(InputError, match=message):
            loader.load_state_dict(record)  # type: ignore[arg-type]
    for seed in (-1, 1.7, "3", True):  # 1.7 must not quietly train as seed 1
        with pytest.raises(InputError, match="seed must be an integer in"):
            StoreLoader(reader, seed=seed)  # type: ignore[arg-type]
    for size in (0, 1.5, "4"):
        with pytest.raises(InputError, match="batch_size must be a positive integer"):
            StoreLoader(reader, batch_size=size)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="cache_bytes must be a byte count"):
        ChunkCache(-1)
    with pytest.raises(InputError, match="epoch must be an integer in"):
        loader.set_epoch(-1)
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match=r"pin_memory=True needs CUDA"):
            StoreLoader(reader, pin_memory=True)
        with pytest.raises(InputError, match=r"device cuda needs CUDA"):
            StoreLoader(reader, device="cuda")


def test_resume_mid_epoch_refuses_rows_that_moved_and_another_split(tmp_path: Path) -> None:
    """The chunk order follows where the rows sit: after a compaction the saved batches name
    other windows, which would repeat some and skip others. Mid-epoch that is refused; at an
    epoch's end nothing is left to order and the state loads. A split of the same length is
    another split."""
    from tsfs.pipeline.prep import prep_features

    data = load(ETTH1, WindowSpec(seq_len=96, stride=8))
    store = Store(tmp_path / "s", mode="a")
    prep_features(data, FEATURES, store, batch_rows=700)  # several segments to merge

    def loader(split: str = "train") -> StoreLoader:
        reader = WindowReader(open_view(data, Store(tmp_path / "s")), split, features=FEATURES)
        return StoreLoader(reader, batch_size=32, seed=0)

    first = loader()
    batches = iter(first)
    for _ in range(5):
        next(batches)
    mid = first.state_dict()
    del batches
    ended = loader()
    for _ in ended:
        pass
    boundary = ended.state_dict()
    assert len(data.splits["val"]) == len(data.splits["test"])
    val = loader("val")
    with pytest.raises(InputError, match=r"split='val' \(now 'test'\)"):
        loader("test").load_state_dict(val.state_dict())
    loader().load_state_dict(mid)  # the same store: accepted
    store.compact()
    with pytest.raises(InputError, match=r"cannot resume mid-epoch: .* moved since"):
        loader().load_state_dict(mid)
    restarted = loader()
    assert restarted.load_state_dict(mid, if_moved="restart") is True
    assert sorted(np.concatenate([b["index"].numpy() for b in restarted]).tolist()) == list(
        range(len(restarted.reader))
    )  # the whole epoch again: nothing skipped
    resumed = loader()
    resumed.load_state_dict(boundary)
    assert resumed.epoch == 1


# --------------------------------------------------------------------------------------------
# map-style dataset (TSLib tuples)


def test_tslib_tuples_match_tslib_arithmetic(ett: Dataset, filled: Store) -> None:
    _raw, data, b1 = tslib_windows(1)
    ds = WindowDataset(WindowReader(open_view(ett, filled), "val"))
    assert len(ds) == 11520 - b1 - SEQ_LEN - PRED_LEN + 1  # TSLib's __len__
    for i in (0, 1234, len(ds) - 1):
        x, y, x_mark, y_mark = ds[i]
        np.testing.assert_allclose(x, data[b1 + i : b1 + i + SEQ_LEN], atol=2e-6)
        s_end = b1 + i + SEQ_LEN
        np.testing.assert_allclose(y, data[s_end - LABEL_LEN : s_end + PRED_LEN], atol=2e-6)
        assert x_mark.shape == (SEQ_LEN, 4)
        assert y_mark.shape == (LABEL_LEN + PRED_LEN, 4)
    # A TSLib training loop's own DataLoader and unpacking work unchanged.
    batch_x, batch_y, _bxm, _bym = next(iter(DataLoader(ds, batch_size=32, shuffle=True)))
    assert batch_x.shape == (32, SEQ_LEN, 7)
    assert batch_y.shape == (32, LABEL_LEN + PRED_LEN, 7)
    np.testing.assert_allclose(
        ds.inverse_transform(data[b1 : b1 + 3]), _raw[b1 : b1 + 3], rtol=1e-9, atol=1e-9
    )


def test_dict_samples_carry_features_and_images(reader: WindowReader) -> None:
    ds = WindowDataset(reader, tslib=False)
    sample = ds[10]
    assert sample["index"] == 10
    assert np.array_equal(sample["features"]["first"], sample["x"][0])
    assert sample["images"].shape == (7, 8, 8)  # masks, as the reader asks


def test_bad_loader_arguments_are_refused_when_given(
    ett: Dataset, filled: Store, reader: WindowReader
) -> None:
    with pytest.raises(InputError, match="num_workers"):
        StoreLoader(reader, num_workers=-1)
    with pytest.raises(InputError, match="tpu"):
        StoreLoader(reader, device="tpu")
    for colors in (np.full((7, 3), 300), np.full((7, 3), -1)):  # uint8 would wrap them
        with pytest.raises(InputError, match="8-bit RGB"):
            WindowReader(open_view(ett, filled), "val", images=IMAGES, colors=colors)


def test_worker_processes_compose_after_the_parent_did(ett: Dataset, filled: Store) -> None:
    """A batch looked at in the main process starts the composer's threads; DataLoader
    workers forked after that compose with threads of their own (the parent's pool has no
    threads in a child, and waiting on it hung)."""
    view = open_view(ett, filled)
    reader = WindowReader(view, "val", images=IMAGES, image_output="uint8")
    ds = WindowDataset(reader, tslib=False)
    first = next(iter(DataLoader(ds, batch_size=8)))
    assert first["images"].shape == (8, 7, 3, IMAGES.size, IMAGES.size)
    loader = DataLoader(ds, batch_size=64, num_workers=2, timeout=60)
    assert sum(len(b["index"]) for b in loader) == len(ds)


def test_reading_a_missing_namespace_names_the_command_and_writes_nothing(
    ett: Dataset, filled: Store, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(filled.path, copy)
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    for mode in ("a", "r"):
        view = open_view(ett, Store(copy, mode=mode), persist=False)
        with pytest.raises(MissingRowsError, match=r"tsfs prep features .* --wavelet haar"):
            WindowReader(view, "train", features=FeatureSpec(wavelet="haar"))
        with pytest.raises(MissingRowsError, match=r"tsfs prep images .* --size 16"):
            WindowReader(view, "train", images=ImageSpec(size=16))
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before


@pytest.mark.skipif(not BASIC_MOTIONS.exists(), reason="shared BasicMotions data not present")
def test_classification_tuples_and_labels(tmp_path: Path) -> None:
    ds = load(BASIC_MOTIONS)
    store = Store(tmp_path / "s", mode="a")
    reader = WindowReader(open_view(ds, store), "test")
    x, label = WindowDataset(reader)[3]
    assert x.shape == (100, 6)
    assert label.shape == (1,)
    assert label.dtype == np.int64
    batch = next(iter(StoreLoader(reader, batch_size=8, order="sequential")))
    assert torch.equal(batch["labels"], torch.tensor(ds.splits["test"].labels[:8]))  # type: ignore[index]


# --------------------------------------------------------------------------------------------
# never recompute; memory bound (one subprocess run serves both)

_EPOCH_SCRIPT = REFUSE_PTWT_MATPLOTLIB + textwrap.dedent(
    """

    import numpy as np
    from tsfs.pipeline.sources import load
    from tsfs.specs import ImageSpec, WindowSpec
    from tsfs.stores.store import Namespace, Store
    from tsfs.training.data import StoreLoader, WindowReader, open_view

    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

    data, store, size, cache = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ds = load(data, WindowSpec(preset="array"))
    reader = WindowReader(
        open_view(ds, Store(store)), "train", images=ImageSpec(size=size), cache_bytes=cache
    )
    loader = StoreLoader(reader, batch_size=32, buffer=2)
    it = iter(loader)
    first = next(it)
    base = peak = rss()
    n = len(first["index"])
    for batch in it:
        n += len(batch["index"])
        peak = max(peak, rss())
    print(json.dumps({
        "windows": n, "base": base, "peak": peak, "images": list(first["images"].shape),
        "cache_peak": reader.cache.stats.peak_bytes,
        "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("ptwt", "matplotlib")),
    }))
    """
)


@pytest.fixture(scope="module")
def epoch_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One epoch over a store ~100× the cache bound, in a process without ptwt or matplotlib."""
    tmp = tmp_path_factory.mktemp("big")
    n, t, v, size = 6000, 64, 4, 64
    rng = np.random.default_rng(0)
    samples = rng.standard_normal((n, t, v)).astype(np.float32)
    np.save(tmp / "samples.npy", samples)
    ds = load(tmp / "samples.npy", WindowSpec(preset="array"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store_module, "_CHUNK_TARGET_BYTES", 256 << 10)
        store = Store(tmp / "s", mode="a")
        ins = store.namespace(
            "images", ImageSpec(size=size).to_dict(), ImageSpec(size=size).fingerprint
        )
        keys = open_view(ds, store).keys["train"].reshape(-1, 16)
        masks = np.zeros((len(keys), size, size), np.uint8)
        cols = np.arange(size)
        for r in range(len(keys)):  # a wandering line per image
            masks[r, (np.cumsum(rng.integers(-1, 2, size)) + size // 2) % size, cols] = 255
        ins.write_segment(keys, {"mask": masks}, codecs={"mask": "zstd"})
    cache = 1 << 20
    out = subprocess.run(
        [sys.executable, "-c", _EPOCH_SCRIPT, str(tmp / "samples.npy"), str(tmp / "s"),
         str(size), str(cache)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report: dict[str, object] = json.loads(out.stdout)
    report.update(cache=cache, decoded=masks.nbytes, windows_total=n, variables=v, size=size)
    return report


def test_a_training_epoch_runs_without_ptwt_or_matplotlib(epoch_run: dict[str, object]) -> None:
    assert epoch_run["windows"] == epoch_run["windows_total"]
    assert epoch_run["loaded"] == []
    assert epoch_run["images"] == [32, 4, 3, 64, 64]  # composed to RGB


def test_resident_memory_stays_bounded_on_a_store_far_larger_than_the_cache(
    epoch_run: dict[str, object],
) -> None:
    cache, decoded = int(epoch_run["cache"]), int(epoch_run["decoded"])  # type: ignore[call-overload]
    assert int(epoch_run["cache_peak"]) <= cache  # type: ignore[call-overload]
    # The documented bound: the cache, plus six batches' arrays kept for reuse (masks and
    # their RGB), which cover the batches in flight, plus a chunk per decode thread.
    batch_bytes = 32 * 4 * 64 * 64 * (1 + 4)
    chunk_bytes = 256 << 10  # the store's chunk target in this test
    bound = cache + 6 * batch_bytes + 4 * chunk_bytes + (8 << 20)  # 8 MiB: allocator slack
    grew = int(epoch_run["peak"]) - int(epoch_run["base"])  # type: ignore[call-overload]
    assert decoded > 3 * bound  # the test means something: the store dwarfs the bound
    assert grew < bound, f"resident memory grew {grew / 2**20:.1f} MiB during the epoch"
