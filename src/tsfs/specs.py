"""Frozen, keyword-only descriptions of every computation tsfs performs.

A spec's canonical JSON (sorted keys, no whitespace, plus a ``kind`` and a ``version`` tag) is
hashed into a short fingerprint. The fingerprint names the store namespace that holds the spec's
results, so two runs with equal specs share rows and two runs with different specs never mix.
Only fields that change the *values* of a computation belong in a namespace spec: how many jobs
ran, or which split a window came from, does not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from tsfs.errors import InputError

__all__ = [
    "BoundaryMode",
    "FeatureSpec",
    "Features",
    "ImageSpec",
    "NanPolicy",
    "Preset",
    "Unequal",
    "WindowSpec",
    "canonical_json",
    "fingerprint",
    "is_integer",
    "spec_version",
    "strict_json",
]

Preset = Literal["ett_hour", "ett_minute", "custom", "uea", "array"]
Features = Literal["M", "S", "MS"]
NanPolicy = Literal["error", "interpolate", "zero"]
Unequal = Literal["pad", "truncate"]
BoundaryMode = Literal["reflect", "zero", "constant", "periodic", "symmetric"]

BOUNDARY_MODES: tuple[str, ...] = ("reflect", "zero", "constant", "periodic", "symmetric")
PRESETS: tuple[str, ...] = ("ett_hour", "ett_minute", "custom", "uea", "array")
SPLITS: tuple[str, ...] = ("train", "val", "test")


def canonical_json(obj: dict[str, Any]) -> str:
    """JSON with sorted keys and no whitespace: equal dicts give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def strict_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` whose output every parser takes: NaN and ±inf become ``null`` (Python
    would write the bare tokens ``NaN``/``Infinity``, which strict JSON parsers reject)."""

    def finite(o: Any) -> Any:
        if isinstance(o, float):
            return o if math.isfinite(o) else None
        if isinstance(o, dict):
            return {k: finite(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [finite(v) for v in o]
        return o

    return json.dumps(finite(obj), allow_nan=False, **kwargs)


def fingerprint(obj: dict[str, Any]) -> str:
    """16 hex characters of BLAKE2b over :func:`canonical_json` (64 bits: names, not security)."""
    return hashlib.blake2b(canonical_json(obj).encode(), digest_size=8).hexdigest()


def is_integer(value: object) -> bool:
    """An integer as a caller means one: Python's or numpy's, not a bool, not a whole float."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _typed(spec: object, **kinds: type) -> None:
    """Check and normalise the named fields of a frozen spec to one Python type each: ints
    (numpy integers too) to ``int``, real numbers to finite ``float``, booleans to ``bool``.

    A spec is identified by its JSON: ``linewidth=2`` and ``linewidth=2.0`` must give one
    fingerprint, and ``seq_len="96"`` or ``level=2.5`` must fail here, naming the field,
    rather than deep inside numpy. ``None`` stays where the field allows it.
    """
    name_of = type(spec).__name__
    for name, kind in kinds.items():
        value = getattr(spec, name)
        if value is None and name in _OPTIONAL:
            continue
        is_bool = (
            isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b"
        )
        if kind is bool:
            if not is_bool:
                raise InputError(f"{name_of}.{name} must be True or False, got {value!r}")
            value = bool(value)
        elif kind is int:
            if not is_integer(value):
                raise InputError(f"{name_of}.{name} must be an integer, got {value!r}")
            value = int(value)
        elif kind is float:
            if is_bool or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise InputError(f"{name_of}.{name} must be a finite number, got {value!r}")
            value = float(value)
        elif not isinstance(value, kind):
            raise InputError(f"{name_of}.{name} must be a {kind.__name__}, got {value!r}")
        object.__setattr__(spec, name, value)


# Fields whose None means "the default, resolved later".
_OPTIONAL = frozenset({"preset", "level"})


class _Spec:
    """Shared behaviour of the namespace specs: canonical dict, JSON and fingerprint."""

    kind: ClassVar[str]
    version: ClassVar[int]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {"kind": self.kind, "version": self.version, **d}

    def to_json(self) -> str:
        return canonical_json(self.to_dict())

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.to_dict())


@dataclass(frozen=True, kw_only=True)
class WindowSpec:
    """How a data file becomes windows (Time-Series-Library's conventions).

    Not a namespace spec: rows are content-addressed, so the same row reached through different
    windowing is stored once.

    ``preset=None`` means "infer from the file name" (:func:`tsfs.pipeline.sources.infer_preset`).
    ``unequal`` says how samples of unequal length (UEA ``.ts``) become one array: ``pad`` repeats
    each series' last value up to the longest sample, ``truncate`` cuts all to the shortest.
    """

    preset: Preset | None = None
    seq_len: int = 96
    label_len: int = 48
    pred_len: int = 96
    features: Features = "M"
    target: str = "OT"
    stride: int = 1
    freq: str = "h"
    scale: bool = True
    splits: tuple[str, ...] = SPLITS
    nan: NanPolicy = "error"
    unequal: Unequal = "pad"

    def __post_init__(self) -> None:
        _typed(
            self,
            preset=str,
            seq_len=int,
            label_len=int,
            pred_len=int,
            features=str,
            target=str,
            stride=int,
            freq=str,
            scale=bool,
            nan=str,
            unequal=str,
        )
        splits = self.splits
        if isinstance(splits, str) or not all(isinstance(s, str) for s in splits):
            raise InputError(f"WindowSpec.splits must be a tuple of split names, got {splits!r}")
        object.__setattr__(self, "splits", tuple(splits))  # a list would make it unhashable
        if len(set(self.splits)) != len(self.splits):
            raise InputError(f"--splits names a split twice: {','.join(self.splits)}")
        if self.preset is not None and self.preset not in PRESETS:
            raise InputError(
                f"unknown preset {self.preset!r} (option --preset); choose one of "
                + ", ".join(PRESETS)
            )
        for name in ("seq_len", "stride"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("label_len", "pred_len"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name.replace('_', '-')} must not be negative")
        # (--label-len beyond --seq-len is refused where windows are cut: sample data ignores
        # both, see tsfs.pipeline.windows.forecast_splits)
        if self.features not in ("M", "S", "MS"):
            raise InputError(f"unknown --features {self.features!r}; choose M, S or MS")
        if self.nan not in ("error", "interpolate", "zero"):
            raise InputError(f"unknown --nan {self.nan!r}; choose error, interpolate or zero")
        if self.unequal not in ("pad", "truncate"):
            raise InputError(f"unknown --unequal {self.unequal!r}; choose pad or truncate")
        bad = [s for s in self.splits if s not in SPLITS]
        if bad or not self.splits:
            raise InputError(
                f"unknown split(s) {', '.join(bad) or '(none)'} in --splits; "
                "use a comma-separated subset of train,val,test"
            )


@dataclass(frozen=True, kw_only=True)
class FeatureSpec(_Spec):
    """Per-row Time-LLM statistics and DWT prompt features.

    ``level=None`` means ``min(3, maximum)``, resolved per row length, the maximum being
    ``pywt.dwt_max_level(T, filter_len)`` capped so every band keeps two coefficients
    (``tsfs.pipeline.dwt.max_level``); the resolved level is part of what is stored, so the
    spec stays length-independent.
    ``wavelet`` is any PyWavelets discrete wavelet; ``mode`` one of ptwt's boundary modes (each
    means the same as PyWavelets' mode of that name).
    """

    kind: ClassVar[str] = "features"
    # 2: band stds (and trends' signs) within float32 rounding of zero are zero, so rows
    # stored by version 1 may differ on such bands and live in another namespace.
    # 3: independent rows are transformed from their float64 RevIN, as overlapping windows
    # are (the float32 z gave near-zero bands another std and SNR, up to 1e-4 relative).
    version: ClassVar[int] = 3

    wavelet: str = "db4"
    level: int | None = None
    mode: BoundaryMode = "reflect"
    top_k: int = 5
    store_coefficients: bool = False

    def __post_init__(self) -> None:
        import pywt  # deferred: only feature specs need it

        _typed(self, wavelet=str, level=int, mode=str, top_k=int, store_coefficients=bool)
        if self.wavelet not in pywt.wavelist(kind="discrete"):
            raise InputError(
                f"unknown --wavelet {self.wavelet!r}; use a PyWavelets discrete wavelet "
                "such as db4, sym5, coif2 or haar (pywt.wavelist(kind='discrete'))"
            )
        if self.mode not in BOUNDARY_MODES:
            raise InputError(
                f"unknown --mode {self.mode!r}; choose one of {', '.join(BOUNDARY_MODES)}"
            )
        if self.level is not None and self.level < 1:
            raise InputError("--level must be at least 1 (or omitted for min(3, maximum))")
        if self.top_k < 1:
            raise InputError("--top-k must be at least 1")


# Bounds of the y-limit settings (see ImageSpec.__post_init__).
_MAX_MARGIN = 1e3
_MAX_LINEWIDTH = 1e3
_MIN_SIGMA = 1e-3
_MAX_SIGMA = 1e6


@dataclass(frozen=True, kw_only=True)
class ImageSpec(_Spec):
    """One line-plot image per row, drawn by matplotlib's Agg (TimesCLIP convention).

    ``ylim="row"`` takes limits from the row with a ``margin`` fraction of its range on each
    side (±0.5 around a constant row); ``ylim="sigma"`` fixes them at ``±sigma`` (the row is
    RevIN-normalised first either way). ``linewidth`` is in points on a 100-dpi canvas
    (1.5 pt ≈ 2.08 px). ``rgb=False`` stores the line's coverage mask, coloured at read time;
    ``rgb=True`` stores the pixels drawn in ``color`` (``#rrggbb``, kept lower-case so equal
    colours give equal fingerprints).
    """

    kind: ClassVar[str] = "images"
    version: ClassVar[int] = 1

    size: int = 224
    linewidth: float = 1.5
    ylim: Literal["row", "sigma"] = "row"
    margin: float = 0.05
    sigma: float = 3.5
    antialiased: bool = True
    rgb: bool = False
    color: str = "#1f77b4"

    def __post_init__(self) -> None:
        _typed(
            self,
            size=int,
            linewidth=float,
            ylim=str,
            margin=float,
            sigma=float,
            antialiased=bool,
            rgb=bool,
            color=str,
        )
        if not 8 <= self.size <= 4096:
            raise InputError(f"--size {self.size} is out of range; use 8 to 4096 pixels")
        if not 0 < self.linewidth <= _MAX_LINEWIDTH:
            raise InputError(
                f"--linewidth must be a positive number of points, at most {_MAX_LINEWIDTH:g} "
                f"(wider than any canvas), got {self.linewidth:g}"
            )
        if self.ylim not in ("row", "sigma"):
            raise InputError("--ylim must be 'row' or 'sigma'")
        # Rows are RevIN-normalised (|z| is at most sqrt(T)): limits beyond these bounds would
        # overflow to ±inf (blank images) or be widened by matplotlib (other pixels than drawn).
        if not 0 <= self.margin <= _MAX_MARGIN:
            raise InputError(
                f"--margin must be a fraction of the row's range from 0 to {_MAX_MARGIN:g}, "
                f"got {self.margin}"
            )
        if not _MIN_SIGMA <= self.sigma <= _MAX_SIGMA:
            raise InputError(
                f"--sigma must be from {_MIN_SIGMA:g} to {_MAX_SIGMA:g} (RevIN units), got "
                f"{self.sigma}"
            )
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", self.color):
            raise InputError(f"--color {self.color!r} must be of the form #rrggbb (e.g. #1f77b4)")
        object.__setattr__(self, "color", self.color.lower())

    def to_dict(self) -> dict[str, Any]:
        # Fields that cannot change the stored values stay out of the namespace's identity,
        # so e.g. a different colour never re-renders masks (colour is applied at read time).
        d = super().to_dict()
        if not self.rgb:
            del d["color"]
        del d["sigma" if self.ylim == "row" else "margin"]
        return d


def spec_version(kind: str) -> int:
    """The version of the ``kind`` namespace spec (``features`` or ``images``) this tsfs
    writes and reads; a namespace of another version holds values computed otherwise."""
    specs: dict[str, type[_Spec]] = {FeatureSpec.kind: FeatureSpec, ImageSpec.kind: ImageSpec}
    if kind not in specs:
        raise InputError(f"unknown namespace kind {kind!r}; choose features or images")
    return specs[kind].version
