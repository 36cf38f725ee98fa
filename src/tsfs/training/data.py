"""Training data straight from a store: windows, their rows' features and images, never recomputed.

A training run pairs a data set (:func:`tsfs.pipeline.sources.load`) with a store that
``tsfs prep features|images`` filled. Three steps connect them:

1. :func:`open_view` — the (N, V, 16) row keys of every window of every split, hashed once and
   persisted in the store (``views/<fingerprint>``), so later runs load them instead of hashing.
2. :class:`WindowReader` — one split's windows resolved to (segment, row) locations in each
   namespace asked for, then read as whole chunks through a bounded :class:`ChunkCache`. A row
   the store lacks is an error at construction that names the ``tsfs prep`` command filling it.
3. A dataset over the reader:

   * :class:`StoreLoader` (the fast path): chunk-aware shuffling (:mod:`tsfs.training.sampler`),
     reading on a background thread or in DataLoader worker processes, rank/world-size
     sharding, ``state_dict`` to resume mid-epoch, and images composed from masks on the
     target device.
   * :class:`WindowDataset`: map-style, for plain random order with any sampler and for
     Time-Series-Library loops (``tslib=True`` returns TSLib's ``(x, y, x_mark, y_mark)``).

This package never imports ptwt or matplotlib: everything computed comes from the store.

**Memory.** What a reading process holds does not depend on the store's size:

* the data set itself (its scaled series and time features) and, per namespace read, 12 bytes
  per row of the split (segment and row of each window's V rows) — a function of the data
  set only (the view adds 16 bytes of key per row);
* at most ``cache_bytes`` of decoded chunks (per process: each DataLoader worker has its own),
  plus one chunk being decoded per decode thread (one per core, at most 4);
* the batches in flight: ``prefetch_factor`` per reader (the background thread, or each
  worker) plus the one in use, each ``batch_size · V`` rows (a 224² mask is 49 KiB; composed
  on the CPU, a uint8 RGB image takes 4 bytes per pixel, 196 KiB). Their arrays are kept for
  reuse, up to six batches' masks and six batches' pixels: the pipeline holds about five at
  once, and fresh pages would cost the kernel a third as much again as composing them.

Image arrays are never loaded whole, and locating rows reads one segment's keys at a time, so
opening a reader never holds more keys than the largest segment has.

**Speed** (``benchmarks/bench_loader.py``: ETTh1 T=512, 224² images, batches of 64 windows,
this project's 2-core machine). From a store as ``tsfs prep images`` writes it (blosc-lz4
masks), the reader thread delivers 40,800–46,100 masks/s (what a GPU run reads: composing there
is one table lookup per pixel) and 31,100–32,900 RGB images/s composed on the CPU, against
~270–315 images/s for pyplot and the per-window DWT generator inside ``__getitem__`` (2
workers): 139–173× and 104–110×. Per 224² image, reading costs ~23 µs (a lz4 mask decodes in
~12 µs, a zstd one, ``--codec zstd``, ~30% smaller, in ~45 µs); chunks the cache lacks are
decoded on one thread per core while the reader thread copies rows out of those already
decoded. Composing costs ~19 µs of CPU (a compiled loop, one table read per pixel), done by
a compose thread while the reader thread reads the next batch. DataLoader worker processes
are slower here (~12,000 RGB/s): each batch is copied between processes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import itertools
import math
import os
import queue
import shlex
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tsfs._buffers import Recycler
from tsfs.errors import InputError, MissingRowsError, StoreCorruptError, StoreError
from tsfs.pipeline.compose import Output, clip_normalize, compose_torch, palette, parse_color
from tsfs.pipeline.prep import dataset_blocks, resolve_features
from tsfs.pipeline.windows import Dataset, Split
from tsfs.specs import FeatureSpec, ImageSpec, WindowSpec, fingerprint, is_integer
from tsfs.stores.store import Commit, KeyIndex, Namespace, Store
from tsfs.training.cache import DEFAULT_CACHE_BYTES, ChunkCache, ChunkReader
from tsfs.training.sampler import (
    ORDERS,
    EpochPlan,
    Order,
    mask_from_ranges,
    plan_epoch,
    ranges_from_mask,
    worker_share,
)

__all__ = [
    "Batch",
    "ChunkedWindows",
    "ImageComposer",
    "ImageOutput",
    "StoreLoader",
    "View",
    "WindowArrays",
    "WindowDataset",
    "WindowReader",
    "open_view",
    "prep_command",
    "view_fingerprint",
]

ImageOutput = Literal["mask", "uint8", "float", "clip"]
_IMAGE_OUTPUTS: tuple[str, ...] = ("mask", "uint8", "float", "clip")
_VIEW_VERSION = 1
_ROW_COPY_BYTES = 4096
# Batches' arrays kept for reuse: a loader holds up to about five batches at once (the
# caller's, its prefetch queue's two, the one being composed and the one being read).
_KEEP_BATCHES = 6

I64 = npt.NDArray[np.int64]


# --------------------------------------------------------------------------------------------
# views: window → row keys, hashed once per data set and key algorithm


@dataclass(frozen=True, kw_only=True, eq=False)
class View:
    """A data set's windows as row keys.

    Attributes:
        dataset: the data set.
        store: the store the keys are looked up in.
        keys: split name → (N, V, 16) uint8 key of each window's rows.
        fingerprint: names the view in the store (data set fingerprint + key algorithm).
    """

    dataset: Dataset
    store: Store
    keys: Mapping[str, npt.NDArray[np.uint8]]
    fingerprint: str


def view_fingerprint(dataset: Dataset, key_algorithm: str) -> str:
    """The name of ``dataset``'s persisted view in a store keyed with ``key_algorithm``."""
    return fingerprint(
        {
            "kind": "view",
            "version": _VIEW_VERSION,
            "dataset": dataset.fingerprint,
            "key": key_algorithm,
        }
    )


def open_view(dataset: Dataset, store: Store, *, persist: bool = True) -> View:
    """Load ``dataset``'s persisted view from ``store``, or hash its rows (and persist them).

    Args:
        dataset: the windows to map.
        store: where rows are looked up; the view is saved there when ``persist`` is set and
            the store was opened for writing (a read-only store just costs a rehash per run).

    A view is a cache of the rows' keys: one that is damaged or does not fit the data set is
    replaced by a fresh hash (and re-saved where the store is writable), and one that cannot
    be saved (a full disk) is simply not kept.
    """
    fp = view_fingerprint(dataset, store.key)
    shapes = {name: (len(s), s.x.shape[2]) for name, s in dataset.splits.items()}
    try:
        loaded = store.load_view(fp)
    except StoreCorruptError:
        loaded, damaged = None, True
    else:
        damaged = False
    if loaded is not None:
        arrays, _attrs = loaded
        if all(
            (k := arrays.get(name)) is not None and k.shape == (n, v, 16) and k.dtype == np.uint8
            for name, (n, v) in shapes.items()
        ):
            return View(
                dataset=dataset, store=store, keys={n: arrays[n] for n in shapes}, fingerprint=fp
            )
        damaged = True
    keys = {b.name: b.keys(store.key) for b in dataset_blocks(dataset)}
    if persist and store.mode == "a":
        attrs = {
            "kind": "view",
            "version": _VIEW_VERSION,
            "dataset": dataset.fingerprint,
            "key": store.key,
            "windows": {name: n for name, (n, _v) in shapes.items()},
        }
        # Only a cache: reading goes on with the fresh keys whatever happens to saving them.
        with contextlib.suppress(OSError, StoreError):
            if damaged:
                store.drop_view(fp)
            store.save_view(fp, keys, attrs)
    return View(dataset=dataset, store=store, keys=keys, fingerprint=fp)


# The command-line options of `tsfs prep`: data options, then each kind's spec options.
_FORECAST_OPTIONS = ("seq_len", "label_len", "pred_len", "features", "target", "stride")
_SPEC_OPTIONS: dict[str, dict[str, str]] = {
    "features": {"wavelet": "--wavelet", "level": "--level", "mode": "--mode"},
    "images": {
        "size": "--size",
        "linewidth": "--linewidth",
        "ylim": "--ylim",
        "margin": "--margin",
        "sigma": "--sigma",
        "color": "--color",
    },
}
_SPEC_SWITCHES: dict[str, dict[str, str]] = {
    "features": {"store_coefficients": "--coefficients"},
    "images": {"rgb": "--rgb"},
}


def prep_command(
    kind: Literal["features", "images"],
    dataset: Dataset,
    spec: FeatureSpec | ImageSpec,
    store: Store,
) -> str:
    """The ``tsfs prep`` command line that computes ``spec``'s rows of ``dataset`` into ``store``.

    Only what differs from the defaults is spelled out. Settings that change the stored values
    but have no command-line option are named after the command (the Python API,
    :mod:`tsfs.pipeline.prep`, takes any spec).
    """
    from tsfs.pipeline.sources import infer_preset

    args = ["tsfs", "prep", kind, str(dataset.path)]
    try:
        inferred = infer_preset(dataset.path)
    except InputError:
        inferred = None
    if dataset.preset != inferred:
        args += ["--preset", dataset.preset]
    window, default_window = dataset.spec, WindowSpec()
    names = (*(_FORECAST_OPTIONS if dataset.kind == "forecast" else ()), "splits", "nan")
    for name in names:
        value = getattr(window, name)
        if value != getattr(default_window, name):
            shown = ",".join(value) if name == "splits" else str(value)
            args += [f"--{name.replace('_', '-')}", shown]
    if not window.scale:
        args.append("--no-scale")
    if window.unequal != default_window.unequal:
        args += ["--unequal", window.unequal]
    unflagged: list[str] = []
    # The spec's identity: fields that cannot change stored values are not in it.
    default_spec = type(spec)()
    if isinstance(spec, FeatureSpec) and isinstance(default_spec, FeatureSpec):
        # levels as prep resolves them: the default's goes unsaid, an unresolved one too
        spec, default_spec = (
            resolve_features(dataset, spec),
            resolve_features(dataset, default_spec),
        )
    identity, default = spec.to_dict(), default_spec.to_dict()
    for name, value in identity.items():
        if value == default.get(name):
            continue
        if name in _SPEC_OPTIONS[kind]:
            args += [_SPEC_OPTIONS[kind][name], str(value)]
        elif name in _SPEC_SWITCHES[kind]:
            args.append(_SPEC_SWITCHES[kind][name])
        else:
            unflagged.append(name)
    args += ["--store", store.url]
    command = shlex.join(args)
    if unflagged:
        command += (
            f" (with {', '.join(unflagged)} as this run has them: they have no command-line "
            f"option, so call tsfs.pipeline.prep.prep_{kind} with the same specs)"
        )
    return command


# --------------------------------------------------------------------------------------------
# one namespace's rows of one split


def _existing(
    store: Store,
    kind: str,
    spec: FeatureSpec | ImageSpec,
    resolved: FeatureSpec | ImageSpec,
    hint: str,
) -> Namespace:
    """The namespace of ``spec`` or else of ``resolved``, never creating one (reading leaves
    the store as it was)."""
    for candidate in (spec, resolved):
        namespace = Namespace(store, kind, candidate.fingerprint)
        if namespace.exists():
            return namespace
    raise MissingRowsError(
        f"store {store.url} has no {kind} computed with these settings; compute them with: {hint}"
    )


def _locate(
    namespace: Namespace, keys: npt.NDArray[np.uint8]
) -> tuple[tuple[Commit, ...], npt.NDArray[np.int32], I64]:
    """Commits, and (M,) segment position and row of each (M, 16) key (-1 where absent).

    Segments are searched oldest first, one at a time, so the earliest committed copy of a key
    wins (as in the store's own index) and no more than one segment's keys are held at once.
    """
    commits = tuple(namespace.commits())
    seg = np.full(len(keys), -1, dtype=np.int32)
    row = np.full(len(keys), -1, dtype=np.int64)
    todo = np.arange(len(keys))
    for i, commit in enumerate(commits):
        if not len(todo):
            break
        index = KeyIndex.build([commit], [namespace.read_array(commit, "keys")])
        loc = index.lookup(keys[todo])
        hit = loc.found
        seg[todo[hit]] = i
        row[todo[hit]] = loc.row[hit]
        todo = todo[~hit]
    return commits, seg, row


class _Columns:
    """The rows of one split's windows in one namespace, and how to gather them from chunks.

    Attributes:
        names: the arrays read, in order.
        seg: (N, V) int32 segment position (into ``reader.commits``) of each window's rows.
        row: (N, V) int64 row within that segment.
    """

    def __init__(
        self,
        namespace: Namespace,
        keys: npt.NDArray[np.uint8],
        names: Sequence[str] | None,
        *,
        missing_hint: str,
    ) -> None:
        n, v = keys.shape[:2]
        commits, seg, row = _locate(namespace, keys.reshape(-1, 16))
        absent = int((seg < 0).sum())
        if absent:
            raise MissingRowsError(
                f"{absent:,} of {seg.size:,} rows are not in {namespace.kind} namespace "
                f"{namespace.fingerprint} of store {namespace.store.url}; compute them with: "
                f"{missing_hint}"
            )
        self.reader = ChunkReader(namespace, commits)
        self.seg = seg.reshape(n, v)
        self.row = row.reshape(n, v)
        used = [commits[int(s)] for s in np.unique(seg)]
        if names is None:
            names = [a for a in used[0].arrays if a != "keys"] if used else []
        self.names = tuple(names)
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, np.dtype[Any]] = {}
        for name in self.names:
            recs = [c.arrays.get(name) for c in used]
            if any(r is None for r in recs):
                have = sorted(a for a in used[0].arrays if a != "keys") if used else []
                raise InputError(
                    f"{namespace.kind} namespace {namespace.fingerprint} has no output {name!r} "
                    f"in every segment (outputs: {', '.join(have)})"
                )
            kinds = {(r.shape[1:], r.dtype) for r in recs if r is not None}
            if len(kinds) > 1:
                raise StoreCorruptError(
                    f"{namespace.url}: output {name!r} has different row shapes or dtypes "
                    f"across segments: {sorted(kinds)}"
                )
            shape, dtype = kinds.pop() if kinds else ((), "float32")
            self.shapes[name] = tuple(shape)
            self.dtypes[name] = np.dtype(dtype)
        self._chunk_rows = {name: self.reader.chunk_rows(name) for name in self.names}
        self._buffers = Recycler(keep=_KEEP_BATCHES)

    def chunk_of(self, name: str, seg: npt.NDArray[np.int32], row: I64) -> tuple[I64, I64]:
        """Chunk number and row within the chunk of each (segment, row)."""
        rows_per_chunk = self._chunk_rows[name][seg]
        chunk = row // rows_per_chunk
        return chunk, row - chunk * rows_per_chunk

    def groups(self) -> I64:
        """(N,) chunk group of each window: the chunk of its first row in the first array."""
        if not self.names:
            return np.arange(len(self.seg), dtype=np.int64)
        seg = self.seg[:, 0]
        chunk, _ = self.chunk_of(self.names[0], seg, self.row[:, 0])
        return (seg.astype(np.int64) << 32) | chunk

    def gather(self, windows: I64, name: str, cache: ChunkCache) -> npt.NDArray[Any]:
        """(B, V, ...) array ``name`` of the rows of ``windows``, read chunk by chunk."""
        seg = self.seg[windows].ravel()
        row = self.row[windows].ravel()
        chunk, within = self.chunk_of(name, seg, row)
        shape = (len(seg), *self.shapes[name])
        # Big rows (images) are copied one by one: fancy indexing would copy them twice.
        per_row = self.dtypes[name].itemsize * math.prod(shape[1:]) >= _ROW_COPY_BYTES
        out = (self._buffers.empty if per_row else np.empty)(shape, self.dtypes[name])
        code = (seg.astype(np.int64) << 32) | chunk
        order = np.argsort(code, kind="stable")
        runs = np.split(order, np.flatnonzero(np.diff(code[order])) + 1) if len(order) else []
        keys = [self.reader.key(int(seg[r[0]]), name, int(chunk[r[0]])) for r in runs]
        # Cached chunks first: loading the others then evicts only chunks this batch is done
        # with (with the cache at twice the shuffle buffer, no chunk is decoded twice).
        first = sorted(range(len(keys)), key=lambda j: keys[j] not in cache)
        loads = [
            functools.partial(self.reader.chunk, int(seg[runs[j][0]]), name, int(chunk[runs[j][0]]))
            for j in first
        ]
        # In a DataLoader worker, the worker processes already share out the cores.
        threads = 1 if get_worker_info() is not None else None
        requests = zip([keys[j] for j in first], loads, strict=True)
        chunks = cache.get_many(requests, threads=threads)
        for j, data in zip(first, chunks, strict=True):
            sel = runs[j]
            if per_row:
                for i, r in zip(sel.tolist(), within[sel].tolist(), strict=True):
                    out[i] = data[r]
            else:
                out[sel] = data[within[sel]]
        return out.reshape(*self.seg[windows].shape, *self.shapes[name])


# --------------------------------------------------------------------------------------------
# reading windows


@dataclass(kw_only=True, eq=False)
class WindowArrays:
    """The arrays of a batch of B windows (numpy, on the CPU).

    Attributes:
        index: (B,) int64 window indices in the split.
        x: (B, T, V) float32 input windows.
        y, x_mark, y_mark: forecasting only: (B, label_len + pred_len, V), (B, T, F) and
            (B, label_len + pred_len, F) float32, as Time-Series-Library returns them.
        labels: classification only: (B,) int64 class codes.
        features: output name → (B, V, ...) per-row features.
        images: (B, V, H, W) uint8 coverage masks, or (B, V, H, W, 3) uint8 RGB as stored.
    """

    index: I64
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.float32] | None = None
    x_mark: npt.NDArray[np.float32] | None = None
    y_mark: npt.NDArray[np.float32] | None = None
    labels: I64 | None = None
    features: dict[str, npt.NDArray[Any]] = dataclasses.field(default_factory=dict)
    images: npt.NDArray[np.uint8] | None = None


class WindowReader:
    """Reads batches of one split's windows with their rows' stored features and images.

    Args:
        view: the data set's view (:func:`open_view`).
        split: ``train``, ``val`` or ``test`` (one the data set has).
        features: read this spec's features namespace (None: no features).
        feature_names: the feature outputs to read (default: every output the namespace has).
        images: read this spec's images namespace (None: no images).
        image_output: what images become: ``mask`` (the stored (V, H, W) coverage, as is),
            ``uint8`` (RGB pixels, (V, 3, H, W)), ``float`` (pixels / 255) or ``clip``
            (CLIP-normalised float32); see :class:`ImageComposer`.
        colors: (V, 3) RGB or V ``#rrggbb`` strings, one per variable (default: TimesCLIP's
            palette, :func:`tsfs.pipeline.compose.palette`). Stored RGB images ignore it.
        cache_bytes: bound of the decoded-chunk cache (per process).

    Raises:
        MissingRowsError: a row of the split is not in a namespace read; the message names the
            ``tsfs prep`` command that computes it.
        InputError: an unknown split or image output, or colours that do not fit.
    """

    def __init__(
        self,
        view: View,
        split: str,
        *,
        features: FeatureSpec | None = None,
        feature_names: Sequence[str] | None = None,
        images: ImageSpec | None = None,
        image_output: ImageOutput = "uint8",
        colors: npt.ArrayLike | Sequence[str] | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        dataset = view.dataset
        if split not in dataset.splits:
            raise InputError(
                f"{dataset.path.name} has no split {split!r} (it has "
                f"{', '.join(dataset.splits)}); check --splits"
            )
        self.dataset = dataset
        self.split_name = split
        self.cache = ChunkCache(cache_bytes)
        keys = view.keys[split]
        self.features: _Columns | None = None
        self.images: _Columns | None = None
        if features is not None:
            # The namespace prep makes is named by the resolved level; one a store holds under
            # the spec as given (e.g. picked by its fingerprint) is read as it is.
            resolved = resolve_features(dataset, features)
            hint = prep_command("features", dataset, resolved, view.store)
            self.features = _Columns(
                _existing(view.store, "features", features, resolved, hint),
                keys,
                feature_names,
                missing_hint=hint,
            )
        if images is not None:
            hint = prep_command("images", dataset, images, view.store)
            self.images = _Columns(
                _existing(view.store, "images", images, images, hint),
                keys,
                ["rgb" if images.rgb else "mask"],
                missing_hint=hint,
            )
        self.composer = ImageComposer(
            _colors(colors, int(keys.shape[1])),
            image_output,
            stored_rgb=images is not None and images.rgb,
        )
        #: the split's windows this reader reads (None: all of them); see :meth:`subset`
        self.windows: I64 | None = None

    @property
    def split(self) -> Split:
        return self.dataset.splits[self.split_name]

    def __len__(self) -> int:
        return len(self.split) if self.windows is None else len(self.windows)

    def subset(self, windows: npt.ArrayLike) -> WindowReader:
        """A reader of some of this one's windows (sharing its columns and cache).

        Its positions ``0 … len(windows) − 1`` read windows ``windows``; batches still report
        the split's own window numbers as ``index``.
        """
        picked = np.asarray(windows)
        if picked.size and not np.issubdtype(picked.dtype, np.integer):
            raise InputError(f"window indices must be integers, got {picked.dtype}")
        picked = picked.astype(np.int64).reshape(-1)
        if picked.size and (picked.min() < 0 or picked.max() >= len(self)):
            raise IndexError(f"windows out of range for split {self.split_name} ({len(self)})")
        part = copy.copy(self)
        part.windows = picked if self.windows is None else self.windows[picked]
        return part

    def groups(self) -> I64:
        """(N,) chunk group of each window, for :func:`tsfs.training.sampler.epoch_order`.

        Grouped by the images' chunks when images are read (they dominate the bytes), else
        by the features'; without either every window is its own group.
        """
        columns = self.images or self.features
        if columns is None:
            return np.arange(len(self), dtype=np.int64)
        groups = columns.groups()
        return groups if self.windows is None else groups[self.windows]

    def read(self, windows: npt.ArrayLike) -> WindowArrays:
        """The arrays of ``windows`` (B,) (any order; repeats allowed; negative ones count
        from the end, as in a list)."""
        asked = np.asarray(windows)
        if asked.size and not np.issubdtype(asked.dtype, np.integer):
            raise InputError(f"window indices must be integers, got {asked.dtype} {asked[:3]}")
        n = len(self)
        idx = asked.astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            bad = idx[(idx < -n) | (idx >= n)][0]
            raise IndexError(f"window {bad} is out of range for split {self.split_name} ({n})")
        idx = np.where(idx < 0, idx + n, idx)
        if self.windows is not None:
            idx = self.windows[idx]
        split = self.split
        arrays = WindowArrays(index=idx.copy(), x=split.x[idx])
        if split.y is not None and split.x_mark is not None and split.y_mark is not None:
            arrays.y, arrays.x_mark, arrays.y_mark = (
                split.y[idx],
                split.x_mark[idx],
                split.y_mark[idx],
            )
        if split.labels is not None:
            arrays.labels = split.labels[idx]
        if self.features is not None:
            arrays.features = {
                name: self.features.gather(idx, name, self.cache) for name in self.features.names
            }
        if self.images is not None:
            arrays.images = self.images.gather(idx, self.images.names[0], self.cache)
        return arrays

    def __getstate__(self) -> dict[str, Any]:
        # A split's windows are strided views of one series: pickled, they would be copied out
        # in full. Carry how to reload the data set instead (spawned workers reload it).
        state = self.__dict__.copy()
        ds = state.pop("dataset")
        state["_reload"] = (str(ds.path), ds.spec, ds.fingerprint)
        state["cache"] = ChunkCache(self.cache.max_bytes)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        from tsfs.pipeline.sources import load

        path, spec, fp = state.pop("_reload")
        dataset = load(path, spec)
        if dataset.fingerprint != fp:
            raise InputError(f"{path} changed while it was being read; restart the run")
        self.__dict__.update(state)
        self.dataset = dataset


class ImageComposer:
    """Stored images → what a model takes, on the device that trains.

    Args:
        colors: (V, 3) uint8 RGB, one colour per variable (masks only).
        output: ``mask`` (as stored), ``uint8`` RGB, ``float`` (pixels / 255) or ``clip``
            (CLIP-normalised), shaped channel first.
        stored_rgb: the store holds (…, H, W, 3) RGB images rather than coverage masks.
        threads: threads composing one batch on the CPU (default: half the cores, at least
            one, at most 4: one compiled compose thread outpaces two cores' reading).

    On the CPU, a batch's pixels go into memory recycled from earlier batches once nothing
    refers to those any more (a fresh batch of pages costs the kernel a third as much again
    as composing it).
    """

    def __init__(
        self,
        colors: npt.NDArray[np.uint8],
        output: ImageOutput,
        *,
        stored_rgb: bool = False,
        threads: int | None = None,
    ) -> None:
        if output not in _IMAGE_OUTPUTS:
            raise InputError(f"unknown image output {output!r}; choose {', '.join(_IMAGE_OUTPUTS)}")
        if stored_rgb and output == "mask":
            raise InputError("these images are stored as RGB, not masks; ask for uint8 or clip")
        self.colors = colors
        self.output: ImageOutput = output
        self.stored_rgb = stored_rgb
        # The other half of the cores decode chunks: composing on every core too only made
        # threads wait on each other (2 cores, benchmarks/bench_loader.py: 28,400-30,300 RGB
        # images/s with two compose threads, 31,100-32,900 with one).
        self.threads = threads or max(1, min(4, (os.cpu_count() or 1) // 2))
        self._tables: dict[str, npt.NDArray[Any]] = {}
        self._buffers = Recycler(keep=_KEEP_BATCHES)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0  # the process that made the pool

    def __call__(self, images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """(B, V, H, W) masks or (B, V, H, W, 3) RGB, uint8 → ``output`` on ``device``.

        Returns:
            ``mask``: (B, V, H, W) uint8; otherwise (B, V, 3, H, W) uint8 or float32 — for
            masks, equal to :func:`tsfs.pipeline.compose.compose_torch` in :attr:`colors`.
            Composed on the CPU (and stored RGB anywhere), the pixels are channels-last in
            memory and the tensor a channel-first view of them; ``.contiguous()`` converts.
        """
        dev = torch.device(device)
        output = self.output
        if self.stored_rgb:
            rgb = images.to(dev, non_blocking=True).movedim(-1, -3)
            if output == "uint8":
                return rgb
            if output == "float":
                return rgb.to(torch.float32) / 255
            return clip_normalize(rgb)
        if output == "mask":
            return images.to(dev, non_blocking=True)
        if dev.type != "cpu":
            return compose_torch(images, self.colors, device=dev, output=output)
        composed, jobs = self.start(images)
        for job in jobs:
            job.result()
        return composed

    @property
    def composes_on_cpu(self) -> bool:
        """Whether :meth:`start` applies: masks in, pixels out."""
        return not self.stored_rgb and self.output != "mask"

    def start(self, images: torch.Tensor) -> tuple[torch.Tensor, list[Future[None]]]:
        """Start composing (B, V, H, W) masks on the CPU; return the output and its jobs.

        The output (as :meth:`__call__` returns it) may be read once every job is done.
        Threads compose disjoint windows of the batch (the compiled loop holds no GIL), so
        the caller can read the next batch meanwhile.
        """
        output = self.output
        if output == "mask" or self.stored_rgb:
            raise ValueError("start() composes masks into pixels; see composes_on_cpu")
        from tsfs.training._compose_kernel import compose_into  # numba: on first use only

        masks = np.ascontiguousarray(images.numpy())
        b, v, h, w = masks.shape
        table = self._tables.get(output)
        if table is None:
            table = self._tables[output] = _pixel_table(self.colors, output)
        # a whole pixel, padding channel included: 4 uint8 channels, or 4 float32 ones
        channel, pixel = (np.uint8, np.uint32) if output == "uint8" else (np.float32, np.complex128)
        out = self._buffers.empty((b, v, h, w), pixel)
        # A pool made before a fork (a DataLoader worker) has no threads in the child.
        if self._pool is None or self._pool_pid != os.getpid():
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="tsfs-compose")
            self._pool_pid = os.getpid()
        edges = np.linspace(0, b, min(self.threads, b) + 1).astype(int)
        jobs = [
            self._pool.submit(compose_into, masks[lo:hi], table, out[lo:hi])
            for lo, hi in itertools.pairwise(edges)
            if hi > lo
        ]
        pixels = out.view(channel).reshape(b, v, h, w, 4)[..., :3]
        return torch.from_numpy(pixels).movedim(-1, 2), jobs

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pool"] = None
        return state


def _colors(colors: npt.ArrayLike | Sequence[str] | None, n_vars: int) -> npt.NDArray[np.uint8]:
    if colors is None:
        return palette(n_vars)
    if isinstance(colors, Sequence) and all(isinstance(c, str) for c in colors):
        c = np.stack([parse_color(str(s)) for s in colors]) if len(colors) else np.empty((0, 3))
    else:
        c = np.asarray(colors)
    if c.shape != (n_vars, 3):
        raise InputError(
            f"colors must give one RGB colour per variable: ({n_vars}, 3), got {c.shape}"
        )
    if c.dtype != np.uint8 and (
        not np.issubdtype(c.dtype, np.integer) or c.min(initial=0) < 0 or c.max(initial=0) > 255
    ):
        raise InputError("colors must be 8-bit RGB: integers from 0 to 255")
    return np.asarray(c, dtype=np.uint8)


def _pixel_table(colors: npt.NDArray[np.uint8], output: Output) -> npt.NDArray[Any]:
    """(V, 256): each coverage level's whole pixel, per variable, as one 4- or 16-byte item.

    The channels come from :func:`compose_torch` itself, run on one "image" holding all 256
    levels, so a pixel looked up here is bit-equal to the pixel ``compose_torch`` makes. A
    fourth, unused channel pads a pixel to a native item size (uint32 or complex128), so one
    gather moves a whole pixel.
    """
    levels = torch.arange(256, dtype=torch.uint8).expand(len(colors), 1, 256)
    rgb = compose_torch(levels, colors, output=output).numpy()[:, :, 0, :]  # (V, 3, 256)
    padded = np.zeros((len(colors), 256, 4), dtype=rgb.dtype)
    padded[..., :3] = rgb.transpose(0, 2, 1)
    return padded.view(np.uint32 if rgb.dtype == np.uint8 else np.complex128)[..., 0]


# --------------------------------------------------------------------------------------------
# map-style dataset: any sampler, TSLib tuples


class WindowDataset(torch.utils.data.Dataset[Any]):
    """Map-style dataset of one split's windows (plain random order via any torch sampler).

    ``tslib=True`` returns exactly what Time-Series-Library's datasets return, so an existing
    TSLib loop can swap its Dataset for this one: ``(x, y, x_mark, y_mark)`` float32 numpy
    arrays for forecasting, ``(x, label)`` with ``label`` a (1,) int64 array for
    classification (TSLib's UEA ``collate_fn`` pads those). ``inverse_transform`` undoes the
    scaling as TSLib's does. ``tslib=False`` returns a dict per window: ``index``, ``x``, …,
    ``features`` (name → (V, ...)) and ``images`` (composed on the CPU as the reader says).

    Reads go through the reader's chunk cache; ``__getitems__`` (used by DataLoader) reads a
    whole batch at once, decoding each chunk it touches once. With random order a batch still
    touches up to batch-size chunks: :class:`StoreLoader` is the fast path for images.
    """

    def __init__(self, reader: WindowReader, *, tslib: bool = True) -> None:
        self.reader = reader
        self.tslib = tslib

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> Any:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        a = self.reader.read(indices)  # validates them: 1.5 is no window
        if self.tslib:
            if a.y is not None and a.x_mark is not None and a.y_mark is not None:
                return list(zip(a.x, a.y, a.x_mark, a.y_mark, strict=True))
            if a.labels is not None:
                return list(zip(a.x, a.labels[:, None], strict=True))
            return [(x,) for x in a.x]
        images = None
        if a.images is not None:
            images = self.reader.composer(torch.from_numpy(a.images)).numpy()
        samples = []
        for i in range(len(a.index)):
            s: dict[str, Any] = {"index": int(a.index[i]), "x": a.x[i]}
            for name in ("y", "x_mark", "y_mark", "labels"):
                value = getattr(a, name)
                if value is not None:
                    s[name] = value[i]
            if a.features:
                s["features"] = {k: v[i] for k, v in a.features.items()}
            if images is not None:
                s["images"] = images[i]
            samples.append(s)
        return samples

    def inverse_transform(self, values: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """(..., V) scaled values → the file's units (TSLib's ``Dataset.inverse_transform``)."""
        return self.reader.dataset.inverse_transform(values)


# --------------------------------------------------------------------------------------------
# iterable dataset and loader: chunk-aware order, workers, ranks, resumption


class Batch(TypedDict, total=False):
    """A batch as :class:`StoreLoader` yields it (tensors on the loader's device).

    Keys: ``index`` (B,) window indices (CPU); ``x`` (B, T, V); ``y``, ``x_mark``, ``y_mark``
    (forecasting); ``labels`` (B,) (classification); ``features`` name → (B, V, ...);
    ``images`` (B, V, 3, H, W) (or (B, V, H, W) masks); ``batch``: this rank's batch number
    in the epoch (what resumption counts).
    """

    index: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    x_mark: torch.Tensor
    y_mark: torch.Tensor
    labels: torch.Tensor
    features: dict[str, torch.Tensor]
    images: torch.Tensor
    batch: int


def _to_batch(arrays: WindowArrays, number: int) -> Batch:
    batch: Batch = {"index": torch.from_numpy(arrays.index), "x": torch.from_numpy(arrays.x)}
    for name in ("y", "x_mark", "y_mark", "labels", "images"):
        value = getattr(arrays, name)
        if value is not None:
            batch[name] = torch.from_numpy(value)
    if arrays.features:
        batch["features"] = {k: torch.from_numpy(v) for k, v in arrays.features.items()}
    batch["batch"] = number
    return batch


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ChunkedWindows(IterableDataset[Batch]):
    """Batches of one split in chunk-aware (or random, or sequential) order.

    Yields whole batches (use ``DataLoader(..., batch_size=None)``): every batch is read with
    one vectorised gather per chunk it touches. Images stay as stored (masks); composing them
    is the job of ``reader.composer`` (:class:`ImageComposer`), on the device that trains.
    DataLoader worker ``k`` of ``W`` reads this rank's batches ``k, k + W, …``, which the
    DataLoader yields back in the epoch's order (:mod:`tsfs.training.sampler`), and runs
    single-threaded, so worker processes, not threads, use the cores.

    Args:
        reader: what to read.
        batch_size: windows per batch.
        order: ``chunks``, ``random`` or ``sequential``.
        seed: the order is a function of ``(seed, epoch)``.
        buffer, span: the ``chunks`` order shuffles runs of ``span`` neighbouring chunks,
            ``buffer`` chunks at a time (:func:`~tsfs.training.sampler.epoch_order`). The
            reader's cache should hold ``2 · max(buffer, span)`` chunks of every array read,
            or some chunks are decoded more than once per epoch.
        rank, world_size: this process's shard (default: torch.distributed's, else 0 of 1).
        drop_last: drop the final partial batch and trim to equal batch counts per rank.

    Call :meth:`set_epoch` before each epoch. With ``persistent_workers=True`` the workers keep
    their copy, so each of their passes after the first is taken as the next epoch: call
    ``set_epoch`` with consecutive epochs (as a training loop does), or not at all.
    """

    def __init__(
        self,
        reader: WindowReader,
        *,
        batch_size: int = 64,
        order: Order = "chunks",
        seed: int = 0,
        buffer: int = 16,
        span: int = 4,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        if order not in ORDERS:
            raise InputError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
        if not is_integer(seed) or not 0 <= int(seed) < 2**63:
            raise InputError(f"seed must be an integer in [0, 2**63), got {seed!r}")
        for name, value in (("batch_size", batch_size), ("buffer", buffer), ("span", span)):
            if not is_integer(value) or int(value) < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        default_rank, default_world = _distributed()
        rank = default_rank if rank is None else rank
        world_size = default_world if world_size is None else world_size
        if not is_integer(world_size) or int(world_size) < 1:
            raise InputError(f"world_size must be a positive integer, got {world_size!r}")
        if not is_integer(rank) or not 0 <= int(rank) < int(world_size):
            raise InputError(f"rank must be an integer in range(0, {world_size}), got {rank!r}")
        if not isinstance(drop_last, bool | np.bool_):
            raise InputError(f"drop_last must be True or False, got {drop_last!r}")
        self.reader = reader
        # Plain Python values: they go into state_dict(), and a numpy integer or bool there
        # neither loads with weights_only=True nor goes into JSON.
        self.batch_size = int(batch_size)
        self.order: Order = order
        self.seed = int(seed)
        self.buffer = int(buffer)
        self.span = int(span)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        #: this rank's batches of the current epoch that are already consumed (None: none).
        self.consumed: npt.NDArray[np.bool_] | None = None
        self._groups: I64 | None = None
        self._plan: EpochPlan | None = None
        self._plan_epoch = -1
        self._passes = 0  # whole passes made by this copy in a DataLoader worker
        self.plan()  # validates the arguments now rather than in a worker

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` (its own order) with nothing consumed."""
        if not is_integer(epoch) or not 0 <= int(epoch) < 2**63:
            raise InputError(f"epoch must be an integer in [0, 2**63), got {epoch!r}")
        self.epoch = int(epoch)
        self.consumed = None

    def groups(self) -> I64:
        """(N,) the reader's chunk group of each window, read once."""
        if self._groups is None:
            self._groups = self.reader.groups()
        return self._groups

    def plan(self) -> EpochPlan:
        """This rank's batches of the current epoch."""
        if self._plan is None or self._plan_epoch != self.epoch:
            self._plan = plan_epoch(
                self.groups(),
                order=self.order,
                seed=self.seed,
                epoch=self.epoch,
                buffer=self.buffer,
                span=self.span,
                batch_size=self.batch_size,
                rank=self.rank,
                world_size=self.world_size,
                drop_last=self.drop_last,
            )
            self._plan_epoch = self.epoch
        return self._plan

    def __len__(self) -> int:
        return self.plan().count

    def remaining(self) -> I64:
        """This rank's batch numbers not consumed yet, in order."""
        plan = self.plan()
        if self.consumed is None:
            return np.arange(plan.count, dtype=np.int64)
        return np.flatnonzero(~self.consumed).astype(np.int64)

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        if info is not None and self._passes:
            # A persistent worker (DataLoader(persistent_workers=True)) keeps the copy it
            # started with, which set_epoch in the main process never reaches: each further
            # pass is the next epoch, as set_epoch(epoch + 1) there makes it.
            self.set_epoch(self.epoch + 1)
        plan = self.plan()
        batches = self.remaining()
        if info is not None:
            _single_threaded()
            batches = worker_share(batches, info.id, info.num_workers)
        for number in batches.tolist():
            yield _to_batch(self.reader.read(plan.windows(number)), number)
        if info is not None:
            self._passes += 1


def _in_background(batches: Iterator[Batch], depth: int, *, pin: bool) -> Iterator[Batch]:
    """``batches``, read on a background thread up to ``depth`` batches ahead, in order.

    Reading (files, checksums, blosc decoding, copies) runs without the GIL, so the thread
    reads the next batches while the caller composes images and trains on this one — the
    same overlap as worker processes, without copying every batch between processes.
    """
    ready: queue.Queue[tuple[Batch | None, BaseException | None]] = queue.Queue(depth)
    stop = threading.Event()

    def put(item: tuple[Batch | None, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for batch in batches:
                if not put((_pinned(batch) if pin else batch, None)):
                    return
            put((None, None))
        except BaseException as e:  # handed to the consumer, which raises it
            put((None, e))

    thread = threading.Thread(target=read, name="tsfs-reader", daemon=True)
    thread.start()
    try:
        while True:
            batch, error = ready.get()
            if error is not None:
                raise error
            if batch is None:
                return
            yield batch
    finally:
        stop.set()
        thread.join()


def _pinned(batch: Batch) -> Batch:
    out: Batch = {"index": batch["index"], "batch": batch["batch"]}
    for name in ("x", "y", "x_mark", "y_mark", "labels", "images"):
        if name in batch:
            out[name] = batch[name].pin_memory()
    if "features" in batch:
        out["features"] = {k: v.pin_memory() for k, v in batch["features"].items()}
    return out


def _single_threaded() -> None:
    """One thread per worker process: threads on top of processes oversubscribe the cores.

    Ctrl-C is left to the main process, which stops the run and then its workers in order: a
    worker stopped by the terminal's SIGINT would fail the main process's next read.
    """
    import signal

    from numcodecs import blosc

    torch.set_num_threads(1)
    blosc.set_nthreads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StoreLoader:
    """The training loop's loader: store batches on ``device``, chunk-aware, resumable.

    Iterating yields :class:`Batch` dicts; images are composed from the stored masks on
    ``device`` (on a GPU by :func:`~tsfs.pipeline.compose.compose_torch` after the copy — masks
    are a third of the RGB bytes; on the CPU by an exact sparse table lookup). A full pass
    advances :attr:`epoch`, so each pass has its own order; :meth:`set_epoch` sets it. Breaking
    out of a pass and iterating again continues the same epoch where it stopped.

    :meth:`state_dict` records the epoch and which of this rank's batches were handed out;
    :meth:`load_state_dict` in a fresh process (same data, seed, batch size and world size —
    the number of workers may differ) continues with exactly the batches not yet seen.

    Args:
        reader: what to read.
        batch_size, order, seed, buffer, span, rank, world_size, drop_last: see
            :class:`ChunkedWindows`.
        num_workers: DataLoader worker processes; 0 (the default, usually fastest) reads on
            one background thread of this process, so batches are never copied between
            processes (decoding and copying run without the GIL).
        prefetch_factor: batches each worker (or the reader thread) reads ahead.
        device: where batches go (and images are composed).
        pin_memory: pin host memory for faster copies (default: when ``device`` is CUDA).
    """

    def __init__(
        self,
        reader: WindowReader,
        *,
        batch_size: int = 64,
        order: Order = "chunks",
        seed: int = 0,
        buffer: int = 16,
        span: int = 4,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
        num_workers: int = 0,
        prefetch_factor: int = 2,
        device: torch.device | str = "cpu",
        pin_memory: bool | None = None,
    ) -> None:
        if not is_integer(num_workers) or int(num_workers) < 0:
            raise InputError(f"num_workers must be an integer ≥ 0, got {num_workers!r}")
        if not is_integer(prefetch_factor) or int(prefetch_factor) < 1:
            raise InputError(f"prefetch_factor must be a positive integer, got {prefetch_factor!r}")
        if pin_memory is not None and not isinstance(pin_memory, bool | np.bool_):
            raise InputError(f"pin_memory must be True, False or None, got {pin_memory!r}")
        try:
            device = torch.device(device)
        except RuntimeError as e:
            raise InputError(f"unknown device {device!r} ({e}); use cpu or cuda") from None
        if device.type not in ("cpu", "cuda"):
            raise InputError(f"device {device} is not one tsfs loads onto; use cpu or cuda")
        if (device.type == "cuda" or pin_memory) and not torch.cuda.is_available():
            asked = f"device {device}" if device.type == "cuda" else "pin_memory=True"
            raise InputError(f"{asked} needs CUDA, and torch sees no CUDA device here")
        self.dataset = ChunkedWindows(
            reader,
            batch_size=batch_size,
            order=order,
            seed=seed,
            buffer=buffer,
            span=span,
            rank=rank,
            world_size=world_size,
            drop_last=drop_last,
        )
        self.reader = reader
        self.num_workers = int(num_workers)
        self.prefetch_factor = int(prefetch_factor)
        self.device = torch.device(device)
        self.pin_memory = self.device.type == "cuda" if pin_memory is None else bool(pin_memory)
        self.samples = 0

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning."""
        self.dataset.set_epoch(epoch)
        self.samples = 0

    def __len__(self) -> int:
        """This rank's batches per epoch."""
        return len(self.dataset)

    def __iter__(self) -> Iterator[Batch]:
        ds = self.dataset
        plan = ds.plan()
        if ds.consumed is None:
            ds.consumed = np.zeros(plan.count, dtype=bool)
        batches: Iterator[Batch]
        composer = self.reader.composer
        composed = not self.num_workers and self.device.type == "cpu"
        # batch number → compose jobs still filling its images
        pending: dict[int, list[Future[None]]] = {}

        def compose(batch: Batch) -> Batch:
            if "images" not in batch:
                return batch
            if not composer.composes_on_cpu or self.pin_memory:  # pinning copies at once
                batch["images"] = composer(batch["images"], "cpu")
            else:  # the reader thread reads the next batch while this one is composed
                batch["images"], pending[batch["batch"]] = composer.start(batch["images"])
            return batch

        if self.num_workers:
            # Workers fork from here and read `consumed` as it is now: only batches not yet seen.
            batches = iter(
                DataLoader(
                    ds,
                    batch_size=None,
                    num_workers=self.num_workers,
                    prefetch_factor=self.prefetch_factor,
                    pin_memory=self.pin_memory,
                    # Its workers' seed from a generator of its own: drawn from torch's global
                    # one, it shifted the training noise, so --workers changed the model.
                    generator=torch.Generator().manual_seed(ds.seed),
                )
            )
        else:
            read: Iterator[Batch] = iter(ds)
            if composed:  # beside the training step, not in it
                read = map(compose, read)
            batches = _in_background(read, self.prefetch_factor, pin=self.pin_memory)
        for batch in batches:
            for job in pending.pop(batch["batch"], ()):
                job.result()
            ds.consumed[batch["batch"]] = True
            self.samples += len(batch["index"])
            yield self._to_device(batch, composed=composed)
        self.set_epoch(self.epoch + 1)

    def _to_device(self, batch: Batch, *, composed: bool) -> Batch:
        dev, nb = self.device, self.pin_memory
        out: Batch = {"index": batch["index"], "batch": batch["batch"]}
        for name in ("x", "y", "x_mark", "y_mark", "labels"):
            if name in batch:
                out[name] = batch[name].to(dev, non_blocking=nb)
        if "features" in batch:
            out["features"] = {k: v.to(dev, non_blocking=nb) for k, v in batch["features"].items()}
        if "images" in batch:
            images = batch["images"]
            out["images"] = images if composed else self.reader.composer(images, dev)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Where this rank stands: epoch, samples and batches consumed, and what fixes the order."""
        ds = self.dataset
        consumed = ds.consumed if ds.consumed is not None else np.zeros(len(ds), dtype=bool)
        return {
            "epoch": ds.epoch,
            "samples": self.samples,
            "batches": ranges_from_mask(consumed),
            "batch_count": len(ds),
            "windows": len(self.reader),
            "seed": ds.seed,
            "order": ds.order,
            "buffer": ds.buffer,
            "span": ds.span,
            "batch_size": ds.batch_size,
            "rank": ds.rank,
            "world_size": ds.world_size,
            "drop_last": ds.drop_last,
            "split": self.reader.split_name,
            "data": self.reader.dataset.fingerprint,
            "layout": self._layout(),
        }

    def _layout(self) -> str | None:
        """What the chunk order is made from: where each window's rows sit in the store (a
        compaction, or reading other namespaces, moves them). None for the other orders."""
        if self.dataset.order != "chunks":
            return None
        groups = np.ascontiguousarray(self.dataset.groups(), dtype="<i8")
        return hashlib.blake2b(groups.tobytes(), digest_size=8).hexdigest()

    def load_state_dict(
        self, state: Mapping[str, Any], *, if_moved: Literal["raise", "restart"] = "raise"
    ) -> bool:
        """Continue from :meth:`state_dict`'s record: the same epoch, minus consumed batches.

        The chunk order follows where the windows' rows sit in the store; if they moved since
        the record (a compaction) in the middle of an epoch, the consumed batch numbers name
        other windows. ``if_moved="raise"`` refuses; ``"restart"`` starts that epoch again
        from its beginning (windows already trained on are seen twice; none is lost).

        Returns:
            True where the epoch was restarted for that reason.

        Raises:
            InputError: the record was made with another order, seed, batch size, world size,
                split or data (the remaining batches would not be the ones left), or, with
                ``if_moved="raise"``, over another layout mid-epoch.
        """
        ds = self.dataset
        if not isinstance(state, Mapping):
            raise InputError("cannot resume: the loader state is not a StoreLoader.state_dict()")
        lacking = [k for k in ("epoch", "samples", "batches") if k not in state]
        if lacking:
            raise InputError(f"cannot resume: the loader state lacks {', '.join(lacking)}")
        mine = self.state_dict()
        fixed = ("windows", "seed", "order", "buffer", "span", "batch_size", "rank", "world_size")
        # (split and data are compared where the record has them: older ones do not)
        named = [k for k in ("split", "data") if k in state]
        differ = [k for k in (*fixed, "drop_last", *named) if state.get(k) != mine[k]]
        if differ:
            theirs = ", ".join(f"{k}={state.get(k)!r} (now {mine[k]!r})" for k in differ)
            raise InputError(f"cannot resume: the saved loader state has {theirs}")
        mid_epoch = bool(state["batches"])
        if mid_epoch and "layout" in state and state["layout"] != mine["layout"]:
            if if_moved == "restart":
                self.set_epoch(int(state["epoch"]))
                return True
            raise InputError(
                "cannot resume mid-epoch: the chunk order of the epoch's remaining windows "
                "follows where their rows sit in the store, and they moved since the state was "
                "saved (a `tsfs store compact`, or other namespaces read); resume with the store "
                "and reader as they were, or start the epoch again"
            )
        ds.set_epoch(int(state["epoch"]))
        ds.consumed = mask_from_ranges(state["batches"], len(ds))
        self.samples = int(state["samples"])
        return False
