"""The content-addressed Zarr v3 store: namespaces, segments, commits and key lookups.

Layout (all JSON is plain data; nothing is pickled or executed)::

    STORE/
      zarr.json                       root group, attributes {"tsfs": {"format": 1, "key": ...}}
      features/<fingerprint>/         one namespace per spec; attributes hold the spec JSON
        zarr.json
        segments/<segment-id>/        a Zarr group written by exactly one writer:
          keys (R, 16) uint8            row keys
          <output> (R, ...)             one array per output, chunked along rows
        commits/<segment-id>.json     written last, atomically: rows, arrays, checksums
      images/<fingerprint>/ ...
      views/<fingerprint>/            persisted views (window → row keys)

Readers only see segments that have a commit record, so a crash at any moment leaves either a
complete segment or garbage that :meth:`Store.gc` removes — never a partial row. Writers never
share a segment, so two processes writing the same namespace cannot corrupt each other; a key
written twice is harmless (the earliest committed segment wins; ``compact`` drops the rest).
Every chunk carries a crc32c (Zarr's codec), and every commit records a crc32c of each whole
array, so a flipped byte is an error naming the file rather than a silently wrong number.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import crc32c
import numpy as np
import numpy.typing as npt

from tsfs.errors import (
    InputError,
    MissingRowsError,
    StoreAccessError,
    StoreCorruptError,
    StoreError,
    StoreFormatError,
    StoreReadOnlyError,
)
from tsfs.pipeline.hashing import KEY_ALGORITHMS, KEY_BYTES, key_order
from tsfs.specs import spec_version
from tsfs.stores.files import Files, LocalFiles, open_files

__all__ = [
    "CODECS",
    "FORMAT",
    "ChunkPlan",
    "Codec",
    "Commit",
    "GcReport",
    "KeyIndex",
    "Locations",
    "Namespace",
    "Problem",
    "Store",
    "chunk_rows_for",
]

FORMAT = 1
NAMESPACE_KINDS = ("features", "images")
Codec = Literal["raw", "lz4", "zstd"]
CODECS: tuple[str, ...] = ("raw", "lz4", "zstd")

_SEGMENT_ID = re.compile(r"^[0-9a-f]{24}$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")
_ARRAY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# A group document being written in place (local disks): `Files.write_atomic`'s temp name.
_TEMP_JSON = re.compile(r"^\.zarr\.json\.[0-9a-f]+\.tmp$")
_TEMP_JSON_GRACE_S = 60.0
# A view being persisted: `Store.save_view`'s temp directory (local disks).
_TEMP_VIEW = re.compile(r"^\.[0-9a-f]{16}\.[0-9a-f]{8}\.tmp$")
_TEMP_VIEW_GRACE_S = 3600.0
_DTYPES = frozenset(
    ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]
)
_ZARR_CODECS = frozenset(["bytes", "crc32c", "blosc", "zstd"])
_MAX_JSON_BYTES = 1 << 20
_CRC_BYTES = 4
_MAX_ROWS = 1 << 40
# Rows per chunk aim at this many uncompressed bytes: big enough that a loader reads few files,
# small enough that one chunk decodes in a few milliseconds.
_CHUNK_TARGET_BYTES = 4 << 20


def _array_json(
    shape: tuple[int, ...], chunk_rows: int, dtype: np.dtype[Any], codec: Codec
) -> bytes:
    """The Zarr v3 array metadata zarr-python writes for one of our arrays."""
    codecs: list[dict[str, Any]] = [
        {"name": "bytes", "configuration": {"endian": "little"}}
        if dtype.itemsize > 1
        else {"name": "bytes"}
    ]
    if codec != "raw":
        codecs.append(
            {
                "name": "blosc",
                "configuration": {
                    "typesize": dtype.itemsize,
                    "cname": codec,
                    "clevel": _BLOSC_LEVEL[codec],
                    "shuffle": "noshuffle",
                    "blocksize": 0,
                },
            }
        )
    codecs.append({"name": "crc32c"})
    fill: Any = False if dtype.kind == "b" else (0.0 if dtype.kind == "f" else 0)
    doc = {
        "shape": list(shape),
        "data_type": str(dtype),
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": [max(1, chunk_rows), *shape[1:]]},
        },
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill,
        "codecs": codecs,
        "attributes": {},
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }
    return json.dumps(doc, indent=2).encode()


# Blosc settings per codec, measured on 224² line-plot masks (T=512): no shuffle beats bit
# shuffle (~45% smaller). lz4 level 9: ~15.6 KB per mask, encodes in ~36 µs and decodes in
# ~8 µs; zstd level 1: ~11 KB, ~85 µs, ~42 µs (higher zstd levels save <3% at 2-5x the time).
_BLOSC_LEVEL = {"lz4": 9, "zstd": 1}


@functools.lru_cache(maxsize=2)
def _blosc(codec: str) -> Any:
    from numcodecs import Blosc

    return Blosc(cname=codec, clevel=_BLOSC_LEVEL[codec], shuffle=Blosc.NOSHUFFLE, blocksize=0)


def chunk_rows_for(rows: int, row_bytes: int, group: int = 1) -> int:
    """Rows per chunk of an array of ``rows`` rows of ``row_bytes`` bytes each.

    ``group``: rows that belong together (the V rows of a window, written window-major); the
    chunk size is a multiple of it when a chunk holds at least one group, so a window's rows
    never straddle two chunks and a loader decodes one chunk per window.

    The one place the chunk layout is decided, shared by writers and by the planner, so that
    predicted sizes follow the real layout.
    """
    n = max(1, min(rows, _CHUNK_TARGET_BYTES // max(1, row_bytes)))
    if n < rows and group > 1 and n >= group:
        n -= n % group
    return n


# --------------------------------------------------------------------------------------------
# small helpers


def _absent_chunk(
    files: Files, key: str, arr: Any, start: int = 0, stop: int | None = None
) -> str | None:
    """The key of the first chunk file of zarr array ``arr`` (at ``key``) that rows
    ``[start:stop]`` need and that is absent, or None. Zarr reads an absent chunk as its fill
    value: a lost file must be an error, not zeros."""
    if not arr.ndim:
        return None
    per_chunk = max(1, int(arr.metadata.chunk_grid.chunk_shape[0]))
    stop = arr.shape[0] if stop is None else stop
    for c in range(start // per_chunk, -(-stop // per_chunk)):
        chunk = f"{key}/{arr.metadata.encode_chunk_key((c,) + (0,) * (arr.ndim - 1))}"
        if not files.is_file(chunk):
            return chunk
    return None


Layout = Literal["raw", "blosc", "zarr"]
_BLOSC_HEADER = 16


@dataclass(frozen=True, kw_only=True)
class ChunkPlan:
    """How the chunks of one array of one committed segment decode.

    ``layout`` is ``raw`` (bytes + crc32c: the file is the rows' little-endian bytes, then the
    checksum), ``blosc`` (bytes, blosc, crc32c: the checksum covers the compressed frame) or,
    for metadata tsfs did not write itself, ``zarr`` (zarr-python's own reader: slower, but
    it reads whatever codec chain a Zarr v3 array may have).
    """

    layout: Layout
    chunk_rows: int
    row_shape: tuple[int, ...]
    dtype: np.dtype[Any]

    @property
    def chunk_nbytes(self) -> int:
        return self.chunk_rows * int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize


class _BadChunk(Exception):
    """A chunk file that is missing, fails its checksum or does not decode as its array's
    (the message says which)."""


class _MissingChunk(_BadChunk):
    def __init__(self) -> None:
        super().__init__("file missing")


def _zarr_layout(codecs: Sequence[Any]) -> Layout:
    """The direct decoder for a codec chain zarr-python parsed, or ``zarr`` when none fits."""
    names = [type(c).__name__ for c in codecs]
    endian = getattr(codecs[0], "endian", None) if codecs else "big"
    little = getattr(endian, "value", endian) in (None, "little")  # an Enum in zarr 3
    if names == ["BytesCodec", "Crc32cCodec"] and little:
        return "raw"
    if names == ["BytesCodec", "BloscCodec", "Crc32cCodec"] and little:
        return "blosc"
    return "zarr"


def _decode(payload: npt.NDArray[np.uint8], plan: ChunkPlan) -> npt.NDArray[Any]:
    """A whole chunk's rows from its checked payload (``raw`` or ``blosc`` layout)."""
    if plan.layout == "raw":
        if len(payload) != plan.chunk_nbytes:
            raise _BadChunk(f"{len(payload)} bytes, expected {plan.chunk_nbytes}")
        return payload.view(plan.dtype).reshape(plan.chunk_rows, *plan.row_shape)
    from numcodecs import blosc

    # Blosc's 16-byte header: version, codec version, flags, typesize, then little-endian
    # uint32 decoded bytes, block size and compressed bytes.
    header = payload[:_BLOSC_HEADER].tobytes()
    if len(header) < _BLOSC_HEADER or int.from_bytes(header[12:16], "little") != len(payload):
        raise _BadChunk("not a blosc frame")
    nbytes = int.from_bytes(header[4:8], "little")
    if nbytes != plan.chunk_nbytes:
        raise _BadChunk(f"decodes to {nbytes} bytes, expected {plan.chunk_nbytes}")
    out = np.empty(plan.chunk_nbytes, dtype=np.uint8)
    try:
        blosc.decompress(payload, out)
    except Exception as e:
        raise _BadChunk(f"blosc: {e}") from e
    return out.view(plan.dtype).reshape(plan.chunk_rows, *plan.row_shape)


def _read_json(files: Files, key: str) -> dict[str, Any]:
    """Read a small JSON object from an untrusted store, bounding its size."""
    where = files.where(key)
    raw = files.read(key, _MAX_JSON_BYTES + 1)
    if len(raw) > _MAX_JSON_BYTES:
        raise StoreCorruptError(f"{where}: record larger than {_MAX_JSON_BYTES} bytes")
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreCorruptError(f"{where}: not valid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise StoreCorruptError(f"{where}: expected a JSON object")
    return obj


def _group_json(attributes: Mapping[str, Any]) -> bytes:
    doc = {"zarr_format": 3, "node_type": "group", "attributes": dict(attributes)}
    return json.dumps(doc, indent=2, sort_keys=True).encode()


def _new_segment_id() -> str:
    # Time-ordered (so listing order is commit-ish order; object stores read a segment's age
    # from it) plus randomness (so two writers never pick the same id, even in the same
    # nanosecond).
    return f"{time.time_ns():016x}{secrets.token_hex(4)}"


# --------------------------------------------------------------------------------------------
# records


@dataclass(frozen=True, kw_only=True)
class ArrayRecord:
    """One array of a segment as its commit record describes it."""

    shape: tuple[int, ...]
    dtype: str
    chunk_rows: int
    codec: Codec
    crc32c: int


@dataclass(frozen=True, kw_only=True)
class Commit:
    """A committed segment: the only kind of segment readers ever see."""

    segment: str
    rows: int
    arrays: dict[str, ArrayRecord]
    replaces: tuple[str, ...] = ()
    created: float = 0.0

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "segment": self.segment,
            "rows": self.rows,
            "created": self.created,
            "replaces": list(self.replaces),
            "arrays": {
                name: {
                    "shape": list(a.shape),
                    "dtype": a.dtype,
                    "chunk_rows": a.chunk_rows,
                    "codec": a.codec,
                    "crc32c": a.crc32c,
                }
                for name, a in self.arrays.items()
            },
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def parse(cls, files: Files, key: str) -> Commit:
        """Read and validate the commit record at ``key`` (``…/commits/<segment>.json``);
        any deviation is a :class:`StoreCorruptError`."""
        doc = _read_json(files, key)
        where = files.where(key)

        def bad(why: str) -> StoreCorruptError:
            return StoreCorruptError(f"{where}: invalid commit record ({why})")

        if not isinstance(doc.get("format"), int):  # every tsfs writes one: damage, not age
            raise bad("format")
        if doc.get("format") != FORMAT:
            raise StoreFormatError(
                f"{where}: commit record of format {doc.get('format')!r}; this tsfs reads "
                f"format {FORMAT}"
            )
        seg = doc.get("segment")
        stem = key.rsplit("/", 1)[-1].removesuffix(".json")
        if not isinstance(seg, str) or not _SEGMENT_ID.match(seg) or stem != seg:
            raise bad("segment id does not match the file name")
        rows = doc.get("rows")
        if not isinstance(rows, int) or not 0 <= rows <= _MAX_ROWS:
            raise bad("rows")
        replaces = doc.get("replaces", [])
        if not isinstance(replaces, list) or not all(
            isinstance(r, str) and _SEGMENT_ID.match(r) for r in replaces
        ):
            raise bad("replaces")
        created = doc.get("created", 0.0)
        if not isinstance(created, int | float):
            raise bad("created")
        arrays_doc = doc.get("arrays")
        if not isinstance(arrays_doc, dict) or "keys" not in arrays_doc:
            raise bad("arrays")
        arrays: dict[str, ArrayRecord] = {}
        for name, a in arrays_doc.items():
            if not isinstance(name, str) or not _ARRAY_NAME.match(name) or not isinstance(a, dict):
                raise bad(f"array name {name!r}")
            shape = a.get("shape")
            if (
                not isinstance(shape, list)
                or not shape
                or not all(isinstance(s, int) and 0 <= s <= _MAX_ROWS for s in shape)
                or shape[0] != rows
            ):
                raise bad(f"shape of {name}")
            if a.get("dtype") not in _DTYPES or a.get("codec") not in CODECS:
                raise bad(f"dtype or codec of {name}")
            chunk_rows, crc = a.get("chunk_rows"), a.get("crc32c")
            if not isinstance(chunk_rows, int) or chunk_rows < 1:
                raise bad(f"chunk_rows of {name}")
            if not isinstance(crc, int) or not 0 <= crc < 1 << 32:
                raise bad(f"crc32c of {name}")
            arrays[name] = ArrayRecord(
                shape=tuple(shape),
                dtype=a["dtype"],
                chunk_rows=chunk_rows,
                codec=a["codec"],
                crc32c=crc,
            )
        if arrays["keys"].shape != (rows, KEY_BYTES) or arrays["keys"].dtype != "uint8":
            raise bad("keys must be (rows, 16) uint8")
        return cls(
            segment=seg,
            rows=rows,
            arrays=arrays,
            replaces=tuple(replaces),
            created=float(created),
        )


@dataclass(frozen=True)
class Problem:
    """One finding of :meth:`Store.verify`: the file concerned (path or URL) and what is
    wrong with it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


# --------------------------------------------------------------------------------------------
# key index


@dataclass(frozen=True, kw_only=True)
class Locations:
    """Where rows live. ``segment[i] == -1`` marks a key that is not in the namespace.

    Attributes:
        segment: (N,) int32 index into :attr:`KeyIndex.segments`.
        row: (N,) int64 row within that segment.
    """

    segment: npt.NDArray[np.int32]
    row: npt.NDArray[np.int64]

    @property
    def found(self) -> npt.NDArray[np.bool_]:
        """(N,) bool: which keys are present."""
        return self.segment >= 0


def _split_keys(keys: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.uint64], ...]:
    k = np.ascontiguousarray(keys, dtype=np.uint8).reshape(-1, KEY_BYTES)
    hi = k[:, :8].copy().view(">u8").ravel().astype(np.uint64)
    lo = k[:, 8:].copy().view(">u8").ravel().astype(np.uint64)
    return hi, lo


@dataclass(frozen=True, kw_only=True)
class KeyIndex:
    """A sorted, de-duplicated index of every committed key of one namespace.

    Keys are split into two big-endian uint64 halves and sorted lexicographically, so a lookup
    of N keys is two ``searchsorted`` calls — no Python loop per key.
    """

    segments: tuple[Commit, ...]
    hi: npt.NDArray[np.uint64]
    lo: npt.NDArray[np.uint64]
    seg: npt.NDArray[np.int32]
    row: npt.NDArray[np.int64]

    @classmethod
    def build(cls, segments: Sequence[Commit], keys: Sequence[npt.NDArray[np.uint8]]) -> KeyIndex:
        """Index ``keys[i]`` (R_i, 16) of ``segments[i]``; the earliest segment wins duplicates."""
        if keys:
            hi, lo = _split_keys(np.concatenate(keys))
            seg = np.concatenate([np.full(len(k), i, dtype=np.int32) for i, k in enumerate(keys)])
            row = np.concatenate([np.arange(len(k), dtype=np.int64) for k in keys])
        else:
            hi = lo = np.empty(0, np.uint64)
            seg, row = np.empty(0, np.int32), np.empty(0, np.int64)
        # keys come in (segment, row) order, so a stable order keeps the earliest copy first
        order = key_order(hi, lo)
        hi, lo, seg, row = hi[order], lo[order], seg[order], row[order]
        keep = np.ones(len(hi), dtype=bool)
        keep[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
        return cls(segments=tuple(segments), hi=hi[keep], lo=lo[keep], seg=seg[keep], row=row[keep])

    def __len__(self) -> int:
        return len(self.hi)

    def lookup(self, keys: npt.NDArray[np.uint8]) -> Locations:
        """Locations of (N, 16) keys (any leading shape is flattened)."""
        qhi, qlo = _split_keys(keys)
        n = len(self.hi)
        out_seg = np.full(len(qhi), -1, dtype=np.int32)
        out_row = np.full(len(qhi), -1, dtype=np.int64)
        if n == 0 or len(qhi) == 0:
            return Locations(segment=out_seg, row=out_row)
        # Searching with sorted queries walks the index in order (cache-friendly): ~2x faster
        # than searching in the queries' own order for a million keys.
        order = np.argsort(qhi, kind="stable")
        left = np.empty(len(qhi), dtype=np.intp)
        left[order] = np.searchsorted(self.hi, qhi[order], side="left")
        pos = np.minimum(left, n - 1)
        hit = (self.hi[pos] == qhi) & (self.lo[pos] == qlo)
        # Rare case: several keys share the upper 64 bits; search the lower half within the run.
        shared = (~hit) & (self.hi[pos] == qhi) & (pos + 1 < n)
        shared[shared] &= self.hi[np.minimum(pos[shared] + 1, n - 1)] == qhi[shared]
        for q in np.flatnonzero(shared):
            a = int(left[q])
            b = int(np.searchsorted(self.hi, qhi[q], side="right"))
            j = a + int(np.searchsorted(self.lo[a:b], qlo[q]))
            if j < b and self.lo[j] == qlo[q]:
                hit[q], pos[q] = True, j
        out_seg[hit] = self.seg[pos[hit]]
        out_row[hit] = self.row[pos[hit]]
        return Locations(segment=out_seg, row=out_row)


# --------------------------------------------------------------------------------------------
# namespaces


class Namespace:
    """One spec's rows in a store: committed segments, their key index, reads and writes.

    Everything is addressed by keys relative to the store's root (``<kind>/<fingerprint>/…``)
    through the store's :class:`~tsfs.stores.files.Files`, so the same code reads and writes
    a local directory or an object store.
    """

    def __init__(self, store: Store, kind: str, fingerprint: str) -> None:
        if kind not in NAMESPACE_KINDS or not _FINGERPRINT.match(fingerprint):
            raise StoreFormatError(f"invalid namespace {kind}/{fingerprint} in {store.url}")
        self.store = store
        self.kind = kind
        self.fingerprint = fingerprint
        self.key = f"{kind}/{fingerprint}"
        self._index: KeyIndex | None = None
        self._index_commits: tuple[str, ...] = ()
        # Committed segments never change, so how their arrays decode is learnt once.
        self._plans: dict[tuple[str, str], ChunkPlan] = {}

    def __repr__(self) -> str:
        return f"Namespace({self.key})"

    @property
    def files(self) -> Files:
        return self.store.files

    @property
    def path(self) -> Path:
        """The namespace's directory (local stores only)."""
        return self.store.path / self.kind / self.fingerprint

    @property
    def url(self) -> str:
        """The namespace's path or URL, for messages."""
        return self.files.where(self.key)

    def exists(self) -> bool:
        """Whether the namespace has been created (by a prep run)."""
        return self.files.exists(f"{self.key}/zarr.json")

    @property
    def attributes(self) -> dict[str, Any]:
        doc = _read_json(self.files, f"{self.key}/zarr.json")
        attrs = doc.get("attributes", {})
        tsfs = attrs.get("tsfs", {}) if isinstance(attrs, dict) else {}
        return tsfs if isinstance(tsfs, dict) else {}

    @property
    def spec(self) -> dict[str, Any]:
        spec = self.attributes.get("spec", {})
        return spec if isinstance(spec, dict) else {}

    def document_readable(self) -> bool:
        """Whether the namespace's own document (zarr.json) parses."""
        try:
            _read_json(self.files, f"{self.key}/zarr.json")
        except (FileNotFoundError, StoreCorruptError):
            return False
        return True

    @property
    def current(self) -> bool:
        """Whether this tsfs reads the namespace: its document parses and names the version
        of its spec that this tsfs computes (an older tsfs's rows are values computed
        otherwise, never mixed in)."""
        try:
            return self.spec.get("version") == spec_version(self.kind)
        except StoreCorruptError:
            return False

    # ---- commits ---------------------------------------------------------------------------

    def _commit_keys(self) -> list[str]:
        d = f"{self.key}/commits"
        # Only names a commit can have: a stray copy ("<id> (copy).json") is no record of ours.
        return sorted(
            f"{d}/{n}"
            for n in self.files.list(d)
            if n.endswith(".json") and _SEGMENT_ID.match(n.removesuffix(".json"))
        )

    def commits(self) -> list[Commit]:
        """Committed segments visible to readers, oldest first (replaced ones hidden)."""
        try:
            commits = [Commit.parse(self.files, k) for k in self._commit_keys()]
        except StoreCorruptError as e:
            raise self._repairable(e) from e
        replaced = {r for c in commits for r in c.replaces}
        return [c for c in commits if c.segment not in replaced]

    def segment_key(self, segment: str) -> str:
        """The key of a segment's directory, after checking the id (ids come from records)."""
        if not _SEGMENT_ID.match(segment):
            raise StoreFormatError(f"invalid segment id {segment!r} in {self.url}")
        return f"{self.key}/segments/{segment}"

    def segment_path(self, segment: str) -> Path:
        """A segment's directory (local stores only)."""
        return self.store.path / self.segment_key(segment)

    def segment_bytes(self, segment: str) -> int:
        """Bytes a segment's arrays take in the store."""
        return self.files.usage(self.segment_key(segment))[0]

    # ---- index and lookup ------------------------------------------------------------------

    def index(self, *, refresh: bool = False) -> KeyIndex:
        """The key index over all committed segments (rebuilt when commits change)."""
        commits = self.commits()
        ids = tuple(c.segment for c in commits)
        if self._index is None or refresh or ids != self._index_commits:
            try:
                keys = [self.read_array(c, "keys") for c in commits]
            except StoreCorruptError as e:
                raise self._repairable(e) from e
            self._index = KeyIndex.build(commits, keys)
            self._index_commits = ids
        return self._index

    def lookup(self, keys: npt.NDArray[np.uint8]) -> Locations:
        """Vectorized lookup of (..., 16) keys; see :class:`Locations`."""
        return self.index().lookup(keys)

    def __len__(self) -> int:
        return len(self.index())

    def count_rows(self) -> tuple[int, int]:
        """(segments, distinct keys) committed, reading one segment's keys at a time.

        What :meth:`index` would say, in 8 bytes per row rather than the index's ~80: the
        upper halves of the keys, sorted. Only keys whose upper half repeats (rows that two
        writers both stored, until ``compact``) are then read whole to tell them apart.
        """
        commits = self.commits()
        if self._index is not None and self._index_commits == tuple(c.segment for c in commits):
            return len(commits), len(self._index)
        try:
            upper = np.concatenate([np.empty(0, np.uint64), *map(self._upper, commits)])
            upper.sort()
            same = upper[1:] == upper[:-1]
            repeated = np.unique(upper[1:][same])
            distinct = len(upper) - int(same.sum())
            del upper, same
            if len(repeated):  # each repeated upper half counted once so far: count them whole
                whole = np.concatenate(
                    [
                        keys[np.isin(self._upper(c, keys), repeated)]
                        for c in commits
                        for keys in [self.read_array(c, "keys")]
                    ]
                )
                pairs = np.unique(whole.reshape(-1, KEY_BYTES), axis=0)
                distinct += len(pairs) - len(repeated)
        except StoreCorruptError as e:
            raise self._repairable(e) from e
        return len(commits), distinct

    def _upper(
        self, commit: Commit, keys: npt.NDArray[np.uint8] | None = None
    ) -> npt.NDArray[np.uint64]:
        """(R,) the first 8 bytes of each key of a segment, as big-endian integers."""
        k = self.read_array(commit, "keys") if keys is None else keys
        return np.ascontiguousarray(k.reshape(-1, KEY_BYTES)[:, :8]).view(">u8").ravel()

    # ---- reads -----------------------------------------------------------------------------

    def array(self, commit: Commit, name: str) -> Any:
        """A committed segment's array ``name``, opened read-only with zarr after checking
        its metadata against the commit record (shape, dtype, known codecs)."""
        import zarr

        meta = self._array_meta(commit, name)
        rec = commit.arrays[name]
        akey = f"{self.segment_key(commit.segment)}/{name}"
        where = self.files.where(f"{akey}/zarr.json")
        codecs = meta.get("codecs")
        if not isinstance(codecs, list) or not all(
            isinstance(c, dict) and c.get("name") in _ZARR_CODECS for c in codecs
        ):
            raise StoreCorruptError(f"{where}: unknown or missing codecs")
        try:
            arr = zarr.open_array(self.files.zarr_store(), path=akey, mode="r")
        except OSError:
            raise  # the disk or the network, not the metadata
        except Exception as e:  # untrusted metadata: zarr's errors for it have no common base
            raise StoreCorruptError(f"{where}: invalid array metadata ({e})") from e
        if tuple(arr.shape) != rec.shape or str(arr.dtype) != rec.dtype:
            raise StoreCorruptError(
                f"{where}: shape/dtype {arr.shape}/{arr.dtype} differ from the commit record"
            )
        # Chunks are where the writer put them, rows per chunk as recorded: metadata that
        # points zarr elsewhere would read absent chunks as fill values, not fail.
        chunks = tuple(getattr(arr.metadata.chunk_grid, "chunk_shape", ()))
        try:
            first = arr.metadata.encode_chunk_key((0,) * arr.ndim)
        except Exception:  # untrusted metadata, as above
            first = None
        if chunks != (rec.chunk_rows, *rec.shape[1:]) or first != self.chunk_key(
            commit, name, 0
        ).removeprefix(f"{akey}/"):
            raise StoreCorruptError(
                f"{where}: its chunk grid or chunk keys differ from the chunks written"
            )
        return arr

    def _array_meta(self, commit: Commit, name: str) -> dict[str, Any]:
        """A committed array's zarr.json, read as untrusted JSON."""
        if name not in commit.arrays:
            raise StoreError(f"segment {commit.segment} of {self} has no array {name!r}")
        key = f"{self.segment_key(commit.segment)}/{name}/zarr.json"
        try:
            return _read_json(self.files, key)
        except FileNotFoundError as e:
            raise self._gone(commit) or StoreCorruptError(
                f"{self.files.where(key)}: missing (committed array)"
            ) from e

    def chunk_plan(self, commit: Commit, name: str) -> ChunkPlan:
        """How the chunks of a committed array decode (learnt once per array).

        Metadata equal to what tsfs writes for the commit record's shape, dtype, rows per
        chunk and codec is decoded directly; anything else is opened with zarr, which checks
        it against the record (:meth:`array`), and read the way its codecs say.
        """
        plan = self._plans.get((commit.segment, name))
        if plan is None:
            meta = self._array_meta(commit, name)
            rec = commit.arrays[name]
            dtype = np.dtype(rec.dtype)
            ours = json.loads(_array_json(rec.shape, rec.chunk_rows, dtype, rec.codec))
            if meta == ours:
                layout: Layout = "raw" if rec.codec == "raw" else "blosc"
            else:
                layout = _zarr_layout(self.array(commit, name).metadata.codecs)
            plan = ChunkPlan(
                layout=layout,
                chunk_rows=rec.chunk_rows,
                row_shape=tuple(rec.shape[1:]),
                dtype=dtype.newbyteorder("<"),
            )
            self._plans[commit.segment, name] = plan
        return plan

    def read_chunk_rows(self, commit: Commit, name: str, chunk: int) -> npt.NDArray[Any]:
        """(n, ...) rows of chunk ``chunk`` of a committed array, checksum checked (the last
        chunk of a segment may hold fewer rows than the others). A missing or bad chunk
        file raises naming it and the repair."""
        plan = self.chunk_plan(commit, name)
        start = chunk * plan.chunk_rows
        stop = min(start + plan.chunk_rows, commit.rows)
        if not 0 <= start < stop:
            raise StoreError(f"chunk {chunk} of {name!r} is outside segment {commit.segment}")
        if plan.layout == "zarr":
            return self._read_with_zarr(commit, name, start, stop)
        try:
            return self._decoded_chunk(commit, name, chunk, plan)[: stop - start]
        except _BadChunk as e:
            where = self.files.where(self.chunk_key(commit, name, chunk))
            gone = self._gone(commit) if isinstance(e, _MissingChunk) else None
            raise gone or self.corrupt_chunk(where, str(e)) from None

    def _decoded_chunk(
        self, commit: Commit, name: str, chunk: int, plan: ChunkPlan
    ) -> npt.NDArray[Any]:
        """A whole chunk's rows (``raw`` or ``blosc`` layout), or :class:`_BadChunk`."""
        key = self.chunk_key(commit, name, chunk)
        try:
            buf = self.files.read_array(key)
        except FileNotFoundError:
            raise _MissingChunk from None
        if len(buf) < _CRC_BYTES:
            raise _BadChunk("truncated")
        # tsfs's codec chains end in crc32c: a 4-byte little-endian trailer over the rest.
        payload = buf[:-_CRC_BYTES]
        stored = int.from_bytes(buf[-_CRC_BYTES:].tobytes(), "little")
        if crc32c.crc32c(payload.data) != stored:
            raise _BadChunk("checksum mismatch")
        return _decode(payload, plan)

    def chunk_key(self, commit: Commit, name: str, chunk: int) -> str:
        """The key of chunk ``chunk`` (along rows) of a segment's array ``name``."""
        ndim = len(commit.arrays[name].shape)
        inner = "/0" * (ndim - 1)
        return f"{self.segment_key(commit.segment)}/{name}/c/{chunk}{inner}"

    def _gone(self, commit: Commit) -> StoreError | None:
        """The error for a segment whose files vanished because it was dropped on purpose
        (its commit record is gone too) after the caller listed it; None if it was not."""
        if self.files.exists(f"{self.key}/commits/{commit.segment}.json"):
            return None
        return StoreError(
            f"segment {commit.segment} of {self.store.url} was removed after this run opened "
            "the store (by `tsfs store compact`, whose merged segments hold its rows, or by "
            "`tsfs store gc --drop-corrupt`); restart the run to read the store as it is now"
        )

    def _repairable(self, e: StoreCorruptError) -> StoreCorruptError:
        """``e`` with the way out, where a segment's damage stops a whole namespace."""
        if "drop-corrupt" in str(e):
            return e
        url = self.store.url
        return StoreCorruptError(
            f"{e}; `tsfs store verify {url}` lists the damage and `tsfs store gc "
            f"--drop-corrupt {url}` removes it (prep then recomputes those rows)"
        )

    def corrupt_chunk(self, where: str, why: str) -> StoreCorruptError:
        """The error for a bad chunk: names it and says how to repair the store."""
        return StoreCorruptError(
            f"corrupt chunk {where} ({why}); run `tsfs store gc --drop-corrupt "
            f"{self.store.url}` and re-run the prep command to recompute its rows"
        )

    def read_array(
        self, commit: Commit, name: str, start: int = 0, stop: int | None = None
    ) -> npt.NDArray[Any]:
        """Rows ``[start:stop]`` of one array of a committed segment (bounds as in slicing);
        a bad or missing chunk raises naming its file."""
        plan = self.chunk_plan(commit, name)
        start, stop, _ = slice(start, stop).indices(commit.rows)
        if stop <= start:
            return np.empty((0, *plan.row_shape), plan.dtype)
        if plan.layout == "zarr":
            return self._read_with_zarr(commit, name, start, stop)
        per = plan.chunk_rows
        first, last = start // per, -(-stop // per)
        parts = [self.read_chunk_rows(commit, name, c) for c in range(first, last)]
        rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return rows[start - first * per : stop - first * per]

    def _read_with_zarr(self, commit: Commit, name: str, start: int, stop: int) -> npt.NDArray[Any]:
        """:meth:`read_array` through zarr-python, for metadata tsfs did not write."""
        arr = self.array(commit, name)
        rec = commit.arrays[name]
        absent = _absent_chunk(
            self.files, f"{self.segment_key(commit.segment)}/{name}", arr, start, stop
        )
        if absent is not None:
            raise self._gone(commit) or self.corrupt_chunk(self.files.where(absent), "file missing")
        try:
            return np.asarray(arr[start:stop])
        except Exception as e:
            # Find the chunk(s) at fault so the message names a file a person can look at.
            bad = []
            for c in range(start // rec.chunk_rows, -(-stop // rec.chunk_rows)):
                try:
                    arr[c * rec.chunk_rows : (c + 1) * rec.chunk_rows]
                except Exception:
                    bad.append(self.files.where(self.chunk_key(commit, name, c)))
            where = ", ".join(bad) or self.files.where(f"{self.segment_key(commit.segment)}/{name}")
            raise self.corrupt_chunk(where, str(e)) from e

    def read(
        self,
        locations: Locations,
        names: Sequence[str] | None = None,
        *,
        index: KeyIndex | None = None,
    ) -> dict[str, npt.NDArray[Any]]:
        """Gather rows at ``locations`` for each array in ``names`` (default: all outputs).

        ``locations`` refer to ``index`` (default: the current index). Reads go segment by
        segment, one contiguous row range per segment and array, so each chunk is decoded once
        however many of its rows are asked for.
        """
        index = self.index() if index is None else index
        if not locations.found.all():
            raise MissingRowsError(
                f"{int((~locations.found).sum())} of {len(locations.segment)} rows are not in "
                f"{self.kind} namespace {self.fingerprint}; run `tsfs prep {self.kind}` first"
            )
        if names is None:
            names = [n for n in index.segments[0].arrays if n != "keys"] if index.segments else []
        out: dict[str, npt.NDArray[Any]] = {}
        if not index.segments:
            return out
        for name in names:
            first = index.segments[0].arrays.get(name)
            if first is None:
                raise MissingRowsError(f"{self} has no output {name!r}")
            res = np.empty((len(locations.row), *first.shape[1:]), dtype=first.dtype)
            for s in np.unique(locations.segment):
                sel = np.flatnonzero(locations.segment == s)
                rows = locations.row[sel]
                lo, hi = int(rows.min()), int(rows.max()) + 1
                block = self.read_array(index.segments[int(s)], name, lo, hi)
                res[sel] = block[rows - lo]
            out[name] = res
        return out

    def read_keys(
        self, keys: npt.NDArray[np.uint8], names: Sequence[str] | None = None
    ) -> dict[str, npt.NDArray[Any]]:
        """Rows for (N, 16) keys; raises :class:`MissingRowsError` naming the fill command."""
        return self.read(self.lookup(keys), names)

    # ---- writes ----------------------------------------------------------------------------

    def write_segment(
        self,
        keys: npt.NDArray[np.uint8],
        arrays: Mapping[str, npt.NDArray[Any]],
        *,
        codecs: Mapping[str, Codec] | None = None,
        replaces: Sequence[str] = (),
        group: int = 1,
    ) -> Commit:
        """Write one immutable segment and commit it. Returns its commit record.

        Args:
            keys: (R, 16) uint8 row keys.
            arrays: name → (R, ...) array, one per output.
            codecs: name → "raw" (uncompressed, memory-mappable), "lz4" (blosc-lz4: fast to
                read) or "zstd" (blosc-zstd: smaller);
                default raw.
            replaces: segments this one supersedes (used by compaction).
            group: rows that belong together (see :func:`chunk_rows_for`).

        On a local disk the segment directory is locked (``flock``) while it is written, so
        ``gc`` never removes a segment that a live writer is still producing; on an object
        store the segment stays invisible until its commit object is written, last.
        """
        self.store._require_writable()
        keys = np.ascontiguousarray(keys, dtype=np.uint8)
        if keys.ndim != 2 or keys.shape[1] != KEY_BYTES:
            raise ValueError(f"keys must be (R, {KEY_BYTES}) uint8, got {keys.shape}")
        rows = len(keys)
        for name, a in arrays.items():
            if not _ARRAY_NAME.match(name) or name == "keys":
                raise ValueError(f"invalid array name {name!r}")
            if a.shape[:1] != (rows,):
                raise ValueError(f"array {name} has {a.shape[0]} rows, keys have {rows}")
            if str(a.dtype) not in _DTYPES:
                raise ValueError(f"array {name} has unsupported dtype {a.dtype}")
        codecs = dict(codecs or {})
        seg = _new_segment_id()
        seg_key = self.segment_key(seg)
        try:
            with self.files.new_segment(seg_key):
                self.files.write(f"{seg_key}/zarr.json", _group_json({}))
                records: dict[str, ArrayRecord] = {}
                for name, a in {"keys": keys, **arrays}.items():
                    records[name] = _write_array(
                        self.files, f"{seg_key}/{name}", a, codecs.get(name, "raw"), group
                    )
                self.files.sync_tree(seg_key)
                commit = Commit(
                    segment=seg,
                    rows=rows,
                    arrays=records,
                    replaces=tuple(replaces),
                    created=time.time(),
                )
                # commits/ may have been dropped as an empty folder (git, sync tools, find
                # -empty) while the namespace had no commit yet: make it again.
                self.files.mkdir(f"{self.key}/commits")
                self.files.write_atomic(f"{self.key}/commits/{seg}.json", commit.to_json())
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise StoreError(
                    f"the disk holding {self.store.url} is full; the store is consistent "
                    "(the unfinished segment is not committed). Free space, run "
                    f"`tsfs store gc {self.store.url}`, then re-run to resume"
                ) from e
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise StoreReadOnlyError(f"cannot write to store {self.store.url}: {e}") from e
            raise
        return commit

    # ---- maintenance -----------------------------------------------------------------------

    def uncommitted(self) -> list[str]:
        """Segment directories with no commit record (in progress, or left by a crash)."""
        committed = {k.rsplit("/", 1)[-1].removesuffix(".json") for k in self._commit_keys()}
        return sorted(
            n
            for n in self.files.list(f"{self.key}/segments")
            if _SEGMENT_ID.match(n) and n not in committed
        )

    def verify(self) -> list[Problem]:
        """Read every chunk and commit record; report each bad file."""
        problems: list[Problem] = []
        for key in self._commit_keys():
            try:
                commit = Commit.parse(self.files, key)
            except StoreError as e:
                where = self.files.where(key)
                problems.append(Problem(where, str(e).removeprefix(f"{where}: ")))
                continue
            problems.extend(self._verify_segment(commit))
        return problems

    def _verify_segment(self, commit: Commit) -> list[Problem]:
        problems: list[Problem] = []
        seg_key = self.segment_key(commit.segment)
        if not self.files.exists(seg_key):
            return [
                Problem(
                    self.files.where(seg_key), "segment directory missing for a committed segment"
                )
            ]
        for name, rec in commit.arrays.items():
            try:
                plan = self.chunk_plan(commit, name)
                arr = self.array(commit, name) if plan.layout == "zarr" else None
            except StoreError as e:
                problems.append(Problem(self.files.where(f"{seg_key}/{name}"), str(e)))
                continue
            crc = 0
            ok = True
            for c in range(-(-rec.shape[0] // rec.chunk_rows)):
                f = self.chunk_key(commit, name, c)
                lo, hi = c * rec.chunk_rows, min((c + 1) * rec.chunk_rows, rec.shape[0])
                try:
                    if arr is None:
                        block = self._decoded_chunk(commit, name, c, plan)[: hi - lo]
                    elif not self.files.is_file(f):  # zarr would read fill values
                        raise _MissingChunk
                    else:
                        block = arr[lo:hi]
                except Exception as e:  # _BadChunk, or zarr's errors for a bad chunk
                    why = (
                        "chunk file missing"
                        if isinstance(e, _MissingChunk)
                        else f"unreadable chunk ({e})"
                    )
                    problems.append(Problem(self.files.where(f), why))
                    ok = False
                    continue
                block = np.ascontiguousarray(block)
                crc = crc32c.crc32c(block.data.cast("B"), crc) if block.nbytes else crc
            if ok and crc != rec.crc32c:
                problems.append(
                    Problem(
                        self.files.where(f"{seg_key}/{name}"),
                        "array checksum differs from its commit record",
                    )
                )
        return problems

    def drop_segment(self, segment: str) -> None:
        """Remove a segment: its commit record first (readers stop seeing it), then its data."""
        self.files.remove(f"{self.key}/commits/{segment}.json")
        self.files.remove_tree(self.segment_key(segment))
        self._index = None


def _write_array(
    files: Files, key: str, data: npt.NDArray[Any], codec: Codec, group: int
) -> ArrayRecord:
    """Write one array as a standard Zarr v3 array, chunk files straight from memory.

    The metadata is what zarr-python writes for the same array, and each chunk file is the
    codec chain's output (bytes → optional blosc → crc32c), so any Zarr v3 reader reads it.
    Writing the files directly skips zarr's per-array set-up (~5 ms each), which dominated
    small feature segments. Nothing is fsynced here: the segment's writer syncs all of its
    files at once (:meth:`Files.sync_tree`) before writing the commit record.
    """
    data = np.ascontiguousarray(data)
    if data.dtype.byteorder == ">":
        data = data.astype(data.dtype.newbyteorder("<"))
    rows = len(data)
    row_bytes = int(np.prod(data.shape[1:], dtype=np.int64)) * data.itemsize
    chunk_rows = chunk_rows_for(rows, row_bytes, group)
    files.mkdir(key)
    files.write(f"{key}/zarr.json", _array_json(data.shape, chunk_rows, data.dtype, codec))
    blosc = _blosc(codec) if codec != "raw" else None
    flat = data.reshape(rows, -1).view(np.uint8).reshape(rows, row_bytes) if rows else data
    inner = "/0" * (data.ndim - 1)
    for c in range(-(-rows // chunk_rows) if rows else 0):
        part = flat[c * chunk_rows : (c + 1) * chunk_rows]
        if len(part) < chunk_rows:  # Zarr stores edge chunks at full size, padded
            pad = np.zeros((chunk_rows, row_bytes), np.uint8)
            pad[: len(part)] = part
            part = pad
        raw = part.data.cast("B") if part.flags.c_contiguous else part.tobytes()
        encoded = blosc.encode(raw) if blosc is not None else raw
        crc = crc32c.crc32c(encoded).to_bytes(4, "little")
        files.write(f"{key}/c/{c}{inner}", encoded, crc)
    return ArrayRecord(
        shape=tuple(data.shape),
        dtype=str(data.dtype),
        chunk_rows=chunk_rows,
        codec=codec,
        crc32c=crc32c.crc32c(data.data.cast("B")) if data.nbytes else 0,
    )


# --------------------------------------------------------------------------------------------
# the store


@dataclass(kw_only=True)
class GcReport:
    """What :meth:`Store.gc` removed (or would remove, with ``dry_run``): paths or URLs."""

    uncommitted: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    temp_files: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)  # namespaces whose creation failed
    skipped_active: int = 0  # uncommitted segments a live writer holds
    skipped_recent: int = 0  # uncommitted segments younger than the grace period
    bytes_freed: int = 0


class Store:
    """A tsfs store in a local directory or at an fsspec URL.

    Args:
        location: the store directory, or a URL (``s3://bucket/store``, ``gs://…``,
            ``memory://…``; ``file://`` URLs are local directories). See
            :mod:`tsfs.stores.files` for what differs on object stores.
        mode: ``"r"`` to read an existing store; ``"a"`` to read and write, creating the store
            when it does not exist (unless ``create`` is False).
        key: key algorithm for a new store (an existing store keeps its own).
        create: with ``mode="a"``, make the store when it does not exist; ``"on_write"``
            makes it only when a namespace is first created (a run refused before it writes
            leaves no store behind); False for work that only makes sense on an existing store
            (maintenance), where a mistyped path must be an error, not a new empty store.
        missing_ok: with ``mode="r"``, a store that does not exist yet reads as empty (for
            planning a run before anything is written).
    """

    def __init__(
        self,
        location: str | os.PathLike[str],
        *,
        mode: Literal["r", "a"] = "r",
        key: str = "xxh3-128",
        missing_ok: bool = False,
        create: bool | Literal["on_write"] = True,
    ) -> None:
        if not isinstance(location, str | os.PathLike):
            raise InputError(f"a store location is a path or URL, got {location!r}")
        if not os.fspath(location).strip():
            raise InputError("the store path is empty; give a directory or URL, e.g. tsfs-store")
        if mode not in ("r", "a"):
            raise InputError(f"mode must be 'r' (read) or 'a' (read and write), got {mode!r}")
        self.files = open_files(location)
        self.url = self.files.url
        self.mode = mode
        self.format: int = FORMAT
        self.key: str = key
        # the key of a store made on the first write (create="on_write"), until it is made
        self._pending_key: str | None = None
        files = self.files
        if files.is_file(""):
            raise InputError(
                f"store path {self.url} is a file, not a directory; give another store path"
            )
        if not files.exists("zarr.json"):
            if mode == "r" and missing_ok and not files.list(""):
                return
            others = [n for n in files.list("") if not _TEMP_JSON.match(n)]
            # (a zarr.json that appeared since the first look is another creator's store)
            if others and not files.exists("zarr.json"):
                raise InputError(
                    f"{self.url} is a non-empty directory that is not a tsfs store; check the "
                    "store path (a new store needs an empty or new directory)"
                )
        if not files.exists("zarr.json"):
            if mode == "r" or not create:
                raise InputError(
                    f"no tsfs store at {self.url} (no zarr.json); check the store path, or create "
                    "one with a `tsfs prep` command"
                )
            if create == "on_write":
                self._check_creatable(key)
                self._pending_key = key
                return
            self._create(key)
        attrs = _read_json(files, "zarr.json").get("attributes", {})
        meta = attrs.get("tsfs") if isinstance(attrs, dict) else None
        if not isinstance(meta, dict) or not isinstance(meta.get("format"), int):
            raise StoreFormatError(f"{self.url} is a Zarr group but not a tsfs store")
        if meta["format"] > FORMAT:
            raise StoreFormatError(
                f"store {self.url} has format {meta['format']}, newer than this tsfs reads "
                f"(format {FORMAT}); upgrade tsfs to use it"
            )
        if meta.get("key") not in KEY_ALGORITHMS:
            raise StoreFormatError(
                f"store {self.url} uses unknown key algorithm {meta.get('key')!r}"
            )
        self.format = meta["format"]
        self.key = meta["key"]
        if mode == "a":
            self._require_writable()

    def check_creatable(self) -> None:
        """Where no store exists yet, refuse a path where none could be made, as a prep run
        would (``tsfs plan`` checks this before estimating anything)."""
        if not self.files.exists("zarr.json"):
            self._check_creatable(self.key)

    def _check_creatable(self, key: str) -> None:
        """Refuse, before any work, a store that :meth:`_create` could not make here (a
        non-empty directory was refused already)."""
        if key not in KEY_ALGORITHMS:
            raise InputError(f"unknown key algorithm {key!r}")
        if isinstance(self.files, LocalFiles):
            parent = self.files.root
            while not parent.exists() and parent != parent.parent:
                parent = parent.parent
            # A directory made and removed at once: permission bits alone do not tell (root
            # may write anywhere, yet not into /proc or onto a read-only mount).
            try:
                os.rmdir(tempfile.mkdtemp(prefix=".tsfs-probe-", dir=parent))
            except OSError as e:
                raise StoreReadOnlyError(
                    f"cannot create store {self.url}: {parent} takes no new directories "
                    f"({e.strerror}); give another store path"
                ) from None

    def _create(self, key: str) -> None:
        """Make a new store here, or join the one another process is making right now.

        Two runs started together on a new ``--store`` both get here. A creation in flight
        (or one killed before its rename) shows only a temp ``.zarr.json.*.tmp``: not data,
        and never removed here, where it may be another process's (``gc`` removes old ones).
        Both creators rename identical documents into place, so either rename may win.
        """
        files = self.files
        if key not in KEY_ALGORITHMS:
            raise InputError(f"unknown key algorithm {key!r}")
        others = [n for n in files.list("") if not _TEMP_JSON.match(n)]
        # What another creator made after our first look is that store's, not foreign data.
        if others and not files.exists("zarr.json"):
            raise InputError(
                f"{self.url} is a non-empty directory that is not a tsfs store; "
                "give an empty or new directory for the store"
            )
        try:
            files.mkdir("")
        except OSError as e:
            raise StoreReadOnlyError(f"cannot create store {self.url}: {e.strerror}") from e
        self._require_writable()
        if not files.exists("zarr.json"):
            files.write_atomic("zarr.json", _group_json({"tsfs": {"format": FORMAT, "key": key}}))

    def __repr__(self) -> str:
        return f"Store({self.url!r}, mode={self.mode!r})"

    @property
    def local(self) -> bool:
        """Whether the store is a local directory (not at a remote URL)."""
        return isinstance(self.files, LocalFiles)

    @property
    def path(self) -> Path:
        """The store's directory; a :class:`StoreError` for a store at a remote URL."""
        if isinstance(self.files, LocalFiles):
            return self.files.root
        raise StoreAccessError(f"store {self.url} is not a local directory")

    def _require_writable(self) -> None:
        if self.mode != "a":
            raise StoreReadOnlyError(f"store {self.url} was opened read-only")
        if not self.files.writable():
            raise StoreReadOnlyError(
                f"store {self.url} is read-only (no write permission); make it writable "
                "(chmod u+w) or give another store path"
            )

    # ---- namespaces ------------------------------------------------------------------------

    def namespace(self, kind: str, spec: Mapping[str, Any], fingerprint: str) -> Namespace:
        """The namespace for ``spec`` (created, in write mode, when missing)."""
        ns = Namespace(self, kind, fingerprint)
        if not ns.exists() or (self.mode == "a" and not ns.document_readable()):
            # Missing or damaged, the document is rewritten from the spec it names: the
            # segments and commits beside it are the data, and stay as they are.
            if self.mode != "a":
                raise MissingRowsError(
                    f"store {self.url} has no {kind} for this spec ({fingerprint}); "
                    f"run `tsfs prep {kind}` first"
                )
            try:
                self._make_namespace(ns, spec)
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    raise StoreError(
                        f"the disk holding {self.url} is full: no room to create the {kind} "
                        "namespace; free space and re-run"
                    ) from e
                raise
        return ns

    def _make_namespace(self, ns: Namespace, spec: Mapping[str, Any]) -> None:
        if self._pending_key is not None:  # the first write: make the store now
            self._create(self._pending_key)
            self._pending_key = None
        self._require_writable()
        from tsfs import __version__

        kind = ns.kind
        if not self.files.exists(f"{kind}/zarr.json"):
            self.files.mkdir(kind)
            self.files.write_atomic(f"{kind}/zarr.json", _group_json({}))
        for sub in ("segments", "commits"):
            self.files.mkdir(f"{ns.key}/{sub}")
        self.files.write_atomic(f"{ns.key}/segments/zarr.json", _group_json({}))
        attrs = {"tsfs": {"kind": kind, "spec": dict(spec), "versions": _versions(__version__)}}
        # Equal specs give equal bytes, so two writers racing here write the same file.
        self.files.write_atomic(f"{ns.key}/zarr.json", _group_json(attrs))

    def namespaces(self, *, current: bool = False) -> list[Namespace]:
        """The store's namespaces; ``current``: only those this tsfs reads
        (:attr:`Namespace.current`)."""
        out = []
        for kind in NAMESPACE_KINDS:
            for fp in sorted(self.files.list(kind)):
                if _FINGERPRINT.match(fp) and self.files.is_file(f"{kind}/{fp}/zarr.json"):
                    ns = Namespace(self, kind, fp)
                    if not current or ns.current:
                        out.append(ns)
        return out

    # ---- maintenance -----------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """A JSON-able summary: namespaces, specs, rows, segments, bytes and files stored."""
        total_bytes, total_files = self.files.usage("")
        spaces = []
        for ns in self.namespaces():
            nbytes, nfiles = self.files.usage(ns.key)
            try:
                spec: dict[str, Any] | None = ns.spec
            except StoreCorruptError:
                spec = None  # `verify` names the damage; the rows are still counted
            # A damaged segment leaves the namespace's rows uncountable, not the store unshown.
            damaged: str | None = None
            rows: int | None = None
            segments: int | None = None
            try:
                segments, rows = ns.count_rows()
            except StoreCorruptError as e:
                damaged = str(e)
            spaces.append(
                {
                    "kind": ns.kind,
                    "fingerprint": ns.fingerprint,
                    "spec": spec,
                    "current": ns.current,
                    "rows": rows,
                    "segments": segments,
                    "uncommitted_segments": len(ns.uncommitted()),
                    "bytes": nbytes,
                    "files": nfiles,
                    "damaged": damaged,
                }
            )
        return {
            "path": self.url,
            "format": self.format,
            "key": self.key,
            "namespaces": spaces,
            "bytes": total_bytes,
            "files": total_files,
        }

    def verify(self) -> list[Problem]:
        """Every namespace's problems (:meth:`Namespace.verify`), and namespaces holding
        commits whose own document is missing or unreadable (``tsfs prep`` rewrites it)."""
        problems: list[Problem] = []
        for ns in self.namespaces():
            problems.extend(ns.verify())
        for kind in NAMESPACE_KINDS:
            for fp in sorted(self.files.list(kind)):
                if not _FINGERPRINT.match(fp):
                    continue
                ns = Namespace(self, kind, fp)
                if not ns._commit_keys():
                    continue
                where = self.files.where(f"{ns.key}/zarr.json")
                try:
                    _read_json(self.files, f"{ns.key}/zarr.json")
                except FileNotFoundError:
                    problems.append(Problem(where, "missing; the prep command rewrites it"))
                    problems.extend(ns.verify())  # its segments, which namespaces() skipped
                except StoreError as e:
                    why = str(e).removeprefix(f"{where}: ")
                    problems.append(Problem(where, f"{why}; the prep command rewrites it"))
        return problems

    # ---- views -----------------------------------------------------------------------------

    def save_view(
        self,
        fingerprint: str,
        arrays: Mapping[str, npt.NDArray[Any]],
        attributes: Mapping[str, Any],
    ) -> None:
        """Persist a view (e.g. ``{"train": (N, V, 16) keys, …}``) under ``views/<fp>``.

        Readers see all of a view or nothing: on a local disk it is written into a private
        temporary directory and renamed into place; on an object store its group record
        (what :meth:`load_view` looks for) is written last. If another process saved the same
        view first, either copy serves (equal fingerprints mean equal contents).
        """
        self._require_writable()
        if not _FINGERPRINT.match(fingerprint):
            raise ValueError(f"invalid view fingerprint {fingerprint!r}")
        for name, data in arrays.items():
            if not _ARRAY_NAME.match(name) or str(data.dtype) not in _DTYPES:
                raise ValueError(f"invalid view array {name!r} ({data.dtype})")
        final = f"views/{fingerprint}"
        if self.files.exists(f"{final}/zarr.json"):
            return
        if not self.files.exists("views/zarr.json"):
            self.files.mkdir("views")
            self.files.write_atomic("views/zarr.json", _group_json({}))
        files = self.files
        local = isinstance(files, LocalFiles)
        target = f"views/.{fingerprint}.{secrets.token_hex(4)}.tmp" if local else final
        try:
            for name, data in arrays.items():
                _write_array(files, f"{target}/{name}", data, "raw", 1)
            files.write(f"{target}/zarr.json", _group_json({"tsfs": dict(attributes)}))
            files.sync_tree(target)
            if isinstance(files, LocalFiles):
                try:
                    files.path(target).rename(files.path(final))
                except OSError as e:
                    if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
        finally:
            if local:
                files.remove_tree(target)

    def drop_view(self, fingerprint: str) -> None:
        """Remove a persisted view (a cache of keys: a reader hashes the rows again)."""
        self._require_writable()
        if not _FINGERPRINT.match(fingerprint):
            raise ValueError(f"invalid view fingerprint {fingerprint!r}")
        self.files.remove_tree(f"views/{fingerprint}")

    def load_view(
        self, fingerprint: str
    ) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]] | None:
        """A persisted view's arrays and attributes, or None when there is none."""
        import zarr

        if not _FINGERPRINT.match(fingerprint):
            raise ValueError(f"invalid view fingerprint {fingerprint!r}")
        key = f"views/{fingerprint}"
        try:
            attrs = _read_json(self.files, f"{key}/zarr.json").get("attributes", {})
        except FileNotFoundError:
            return None
        tsfs_attrs = attrs.get("tsfs", {}) if isinstance(attrs, dict) else {}
        arrays: dict[str, npt.NDArray[Any]] = {}
        for name in sorted(self.files.list(key)):
            if _ARRAY_NAME.match(name) and self.files.is_file(f"{key}/{name}/zarr.json"):
                where = self.files.where(f"{key}/{name}")
                try:
                    arr = zarr.open_array(self.files.zarr_store(), path=f"{key}/{name}", mode="r")
                    absent = _absent_chunk(self.files, f"{key}/{name}", arr)
                    if absent is not None:
                        raise StoreCorruptError(f"chunk {absent} missing")
                    arrays[name] = np.asarray(arr[...])
                except Exception as e:
                    raise StoreCorruptError(f"view array {where}: unreadable ({e})") from e
        return arrays, tsfs_attrs if isinstance(tsfs_attrs, dict) else {}

    def gc(
        self,
        *,
        dry_run: bool = False,
        drop_corrupt: bool = False,
        grace_s: float | None = None,
    ) -> GcReport:
        """Remove what no reader can see: uncommitted segments of dead writers, segments a
        compaction replaced, stray temp files; with ``drop_corrupt``, committed segments that
        fail verification (re-running prep recomputes their rows).

        On a local disk, segments still locked by a live writer, or younger than ``grace_s``
        seconds (default 10), are kept. Object stores have no locks: there an uncommitted
        segment is removed only once it was created more than ``grace_s`` ago (default an
        hour), which must exceed the time a writer takes to upload one segment.
        """
        if not dry_run:
            self._require_writable()
        files = self.files
        grace = files.grace_s if grace_s is None else grace_s
        report = GcReport()
        now = time.time()
        to_remove: list[tuple[Namespace, str, bool]] = []  # (…, found uncommitted)
        temp_files: list[str] = []
        # Group documents whose writer died before renaming them into place: a live writer
        # renames its own within milliseconds, so one a minute old, whatever the grace, is
        # garbage (removing a younger one could fail a writer's rename).
        groups = ["", "views", *NAMESPACE_KINDS]
        for kind in NAMESPACE_KINDS:
            fps = [fp for fp in files.list(kind) if _FINGERPRINT.match(fp)]
            groups += [g for fp in fps for g in (f"{kind}/{fp}", f"{kind}/{fp}/segments")]
        for group in groups:
            for n in files.list(group):
                key = f"{group}/{n}" if group else n
                age = files.age(key, now) if _TEMP_JSON.match(n) else None
                if age is not None and age >= max(grace, _TEMP_JSON_GRACE_S):
                    temp_files.append(key)
        # A view being persisted (`views/.<fingerprint>.<token>.tmp`, local disks) is renamed
        # into place when whole; writing a large one takes a while, hence the longer floor.
        temp_dirs = []
        for n in files.list("views"):
            age = files.age(f"views/{n}", now) if _TEMP_VIEW.match(n) else None
            if age is not None and age >= max(grace, _TEMP_VIEW_GRACE_S):
                temp_dirs.append(f"views/{n}")
        # A namespace folder with neither its document nor a commit: its creation failed (a
        # full disk) before it held anything. Creating one takes milliseconds, so one older
        # than the temp documents' floor is garbage.
        unfinished = []
        for kind in NAMESPACE_KINDS:
            for fp in files.list(kind):
                key = f"{kind}/{fp}"
                if not _FINGERPRINT.match(fp) or files.exists(f"{key}/zarr.json"):
                    continue
                segments = files.list(f"{key}/segments")
                if files.list(f"{key}/commits") or any(
                    _SEGMENT_ID.match(n.removeprefix(".")) for n in segments
                ):
                    continue  # rows or a writer: prep rewrites the document, verify names it
                age = files.age(key, now)
                if age is not None and age >= max(grace, _TEMP_JSON_GRACE_S):
                    unfinished.append(key)
        for key in unfinished:
            report.unfinished.append(files.where(key))
            if not dry_run:
                files.remove_tree(key)
        for ns in self.namespaces():
            for seg in ns.uncommitted():
                key = ns.segment_key(seg)
                age = files.age(key, now)
                if age is None:
                    continue
                if files.is_locked(key):
                    report.skipped_active += 1
                    continue
                if age < grace:
                    report.skipped_recent += 1
                    continue
                report.uncommitted.append(files.where(key))
                to_remove.append((ns, seg, True))
            # Hidden `.<id>` directories (local disks only): a writer died between creating
            # and locking its segment (a window of microseconds), so an unlocked one older
            # than a few seconds is garbage.
            seg_root = f"{ns.key}/segments"
            for n in files.list(seg_root):
                key = f"{seg_root}/{n}"
                if not (n.startswith(".") and _SEGMENT_ID.match(n[1:])):
                    continue
                age = files.age(key, now)
                if age is not None and age >= max(grace, 5.0) and not files.is_locked(key):
                    report.uncommitted.append(files.where(key))
                    if not dry_run:
                        files.remove_tree(key)
            bad_segments: set[str] = set()
            if drop_corrupt:
                prefix = files.where(ns.key) + "/"
                for prob in ns.verify():
                    rel = prob.path.removeprefix(prefix).split("/")
                    if len(rel) >= 2 and rel[0] in ("segments", "commits"):
                        bad_segments.add(rel[1].removesuffix(".json"))
                for seg in sorted(bad_segments):
                    if _SEGMENT_ID.match(seg):
                        report.corrupt.append(files.where(ns.segment_key(seg)))
                        to_remove.append((ns, seg, False))
            all_commits = []
            for k in ns._commit_keys():
                with contextlib.suppress(StoreError):
                    all_commits.append(Commit.parse(files, k))
            # What a dropped corrupt segment replaced (a compaction cut short before removing
            # its originals) is visible again once it goes: keep it.
            replacing = [c for c in all_commits if c.segment not in bad_segments]
            for seg in sorted({r for c in replacing for r in c.replaces} - bad_segments):
                key = ns.segment_key(seg)
                if files.exists(key) or files.exists(f"{ns.key}/commits/{seg}.json"):
                    report.replaced.append(files.where(key))
                    to_remove.append((ns, seg, False))
            # `.<segment>.json.<token>.tmp` (local disks only): a commit being written; keep
            # it while its writer (who holds the segment's lock) lives.
            cdir = f"{ns.key}/commits"
            for n in files.list(cdir):
                if not n.endswith(".tmp"):
                    continue
                seg = n[1:].split(".", 1)[0]
                if _SEGMENT_ID.match(seg) and files.is_locked(ns.segment_key(seg)):
                    report.skipped_active += 1
                    continue
                age = files.age(f"{cdir}/{n}", now)
                if age is not None and age >= grace:  # None: renamed into place meanwhile
                    temp_files.append(f"{cdir}/{n}")
        for key in [*temp_files, *temp_dirs]:
            nbytes, nfiles = files.usage(key)
            if nfiles:
                report.temp_files.append(files.where(key))
                report.bytes_freed += nbytes
                if not dry_run:
                    (files.remove_tree if key in temp_dirs else files.remove)(key)

        def settle(item: tuple[Namespace, str, bool]) -> int | None:
            """Bytes freed by dropping one segment; None where it must stay."""
            ns, seg, uncommitted = item
            key = ns.segment_key(seg)
            if files.is_locked(key):  # a writer took it up meanwhile
                return None
            # A writer commits before it lets go of its lock: a segment found uncommitted
            # and then unlocked may have committed in between. Checked after the lock, a
            # record that is still missing stays missing (its writer is gone).
            if uncommitted and files.exists(f"{ns.key}/commits/{seg}.json"):
                report.uncommitted.remove(files.where(key))
                return None
            nbytes = files.usage(key)[0]
            if not dry_run:
                ns.drop_segment(seg)
            return nbytes

        report.bytes_freed += sum(n for n in _concurrently(settle, to_remove) if n is not None)
        return report

    def compact(
        self, *, max_rows_per_segment: int = 1 << 20, max_segment_bytes: int = 512 << 20
    ) -> dict[str, int]:
        """Merge each namespace's segments into as few as possible, dropping duplicate keys.

        The merged segments are committed first (the last one names every segment it
        replaces); only then are the old ones removed, so readers always see every row. Each
        array keeps the codec of the newest segment: the last ``--codec`` a prep run chose.
        A merged segment holds at most ``max_segment_bytes`` of decoded rows: what compaction
        holds in memory at once, and what one damaged chunk costs when ``gc --drop-corrupt``
        drops its segment (224² images: ~10,000 rows, not a million).
        Returns namespace path or URL → rows kept.
        """
        self._require_writable()
        kept: dict[str, int] = {}
        for ns in self.namespaces():
            # Two compactions of one namespace take turns (on a local disk): working from
            # one snapshot, both kept every row, and the store ended with each one twice.
            with ns.files.exclusive(ns.key):
                kept[ns.url] = self._compact(ns, max_rows_per_segment, max_segment_bytes)
        return kept

    def _compact(self, ns: Namespace, max_rows_per_segment: int, max_segment_bytes: int) -> int:
        """:meth:`compact` of one namespace; returns the rows it keeps."""
        index = ns.index(refresh=True)
        commits = index.segments
        per_segment = _merged_rows(commits, max_rows_per_segment, max_segment_bytes)
        if len(index) == sum(c.rows for c in commits) and len(commits) <= max(
            1, math.ceil(len(index) / per_segment)
        ):
            return len(index)  # no duplicates, and as few segments as allowed
        # Keep rows in segment order so the merged layout follows the original writes.
        order = np.lexsort((index.row, index.seg))
        seg, row = index.seg[order], index.row[order]
        keys = np.concatenate(
            [
                index.hi[order].astype(">u8").view(np.uint8).reshape(-1, 8),
                index.lo[order].astype(">u8").view(np.uint8).reshape(-1, 8),
            ],
            axis=1,
        )
        # Merging a damaged segment would give its damage a fresh checksum: refuse.
        for commit in commits:
            problems = ns._verify_segment(commit)
            if problems:
                raise StoreCorruptError(
                    f"cannot compact {ns.url}: {problems[0].path}: {problems[0].message}"
                    f"{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; "
                    f"run `tsfs store gc --drop-corrupt {self.url}`, re-run the prep "
                    "command to recompute those rows, then compact"
                )
        names = [n for n in commits[0].arrays if n != "keys"]
        codecs = {n: commits[-1].arrays[n].codec for n in names}
        starts = list(range(0, len(seg), per_segment)) or [0]
        for i, a in enumerate(starts):
            b = min(a + per_segment, len(seg))
            loc = Locations(segment=seg[a:b], row=row[a:b])
            data = ns.read(loc, names, index=index)
            last = i == len(starts) - 1
            try:
                ns.write_segment(
                    keys[a:b],
                    data,
                    codecs=codecs,
                    replaces=[c.segment for c in commits] if last else (),
                )
            except StoreError as e:
                cause = e.__cause__
                if not (isinstance(cause, OSError) and cause.errno == errno.ENOSPC):
                    raise
                raise StoreError(
                    f"the disk holding {self.url} is full; compaction stopped and every row "
                    f"is still readable as before. Free space, run `tsfs store gc "
                    f"{self.url}` to remove the unfinished segments, then compact again"
                ) from cause
        _concurrently(ns.drop_segment, [c.segment for c in commits])
        return len(seg)


def _merged_rows(commits: Sequence[Commit], max_rows: int, max_bytes: int) -> int:
    """Rows per segment that compaction writes: at most ``max_rows``, and at most
    ``max_bytes`` of decoded rows (by the newest segment's arrays)."""
    if not commits:
        return max_rows
    newest = commits[-1].arrays
    row_bytes = sum(math.prod(a.shape[1:]) * np.dtype(a.dtype).itemsize for a in newest.values())
    return max(1, min(max_rows, max_bytes // max(row_bytes, 1)))


_T = TypeVar("_T")
_R = TypeVar("_R")
# Removing a file or directory waits on the file system (or an object store's round trip);
# many at once hide that wait (193 segment trees: 1.1 s instead of 1.6 s on a local disk,
# bench_store.py; more where each removal is a network round trip).
_REMOVAL_THREADS = 8


def _concurrently(fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    """``[fn(x) for x in items]`` on a few threads, for calls that wait on storage; the
    first exception raised is re-raised once every call has ended."""
    if len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(min(_REMOVAL_THREADS, len(items))) as pool:
        futures = [pool.submit(fn, x) for x in items]
    return [f.result() for f in futures]


def _versions(tsfs_version: str) -> dict[str, str]:
    import zarr

    return {"tsfs": tsfs_version, "zarr": zarr.__version__, "numpy": np.__version__}
