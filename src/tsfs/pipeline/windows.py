"""Time-Series-Library windows: split borders, train-fitted scaling, zero-copy window views.

A forecasting file of L rows × V variables becomes, per split, the windows TSLib's
``Dataset_ETT_hour`` / ``Dataset_ETT_minute`` / ``Dataset_Custom`` ``__getitem__`` returns::

    s = border1 + i * stride            (i = 0 … N-1; TSLib itself has stride 1)
    x      = data[s : s + T]                                  (T, V)
    y      = data[s + T - label_len : s + T + pred_len]       (label_len + pred_len, V)
    x_mark, y_mark = the same rows of the timeenc=1 time features

with ``N = (border2 - border1 - T - pred_len) // stride + 1`` and ``data`` standardised by a
scaler fitted on the training rows ``data[0 : border2s[0]]`` only. ``x``, ``y`` and the marks are
read-only strided views of one float32 array (:func:`numpy.lib.stride_tricks.sliding_window_view`),
so windowing a data set costs no memory beyond the scaled data itself.

Sample data sets (UEA ``.ts``, ``.npy``) have one window per sample instead; see
:func:`sample_splits`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from tsfs.errors import DataError, InputError
from tsfs.specs import SPLITS, Preset, WindowSpec

__all__ = [
    "VALUE_LIMIT",
    "Dataset",
    "Kind",
    "Split",
    "fit_standard_scaler",
    "forecast_borders",
    "forecast_splits",
    "sample_splits",
    "window_count",
]

Kind = Literal["forecast", "classification", "unlabelled"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_A = TypeVar("_A", bound=np.ndarray[Any, Any])

# Dataset_ETT_hour: 12 months train, 4 months val, 4 months test, 30-day months of hours.
_ETT_HOUR_BORDERS = (12 * 30 * 24, 16 * 30 * 24, 20 * 30 * 24)
_ETT_MINUTE_FACTOR = 4  # Dataset_ETT_minute: the same months in 15-minute rows

#: The largest magnitude a stored value may have. A window's RevIN subtracts its mean in
#: float32, where a row spanning ±1.7e38 overflows; 1e38 leaves that room.
VALUE_LIMIT: Final = 1e38


@dataclass(frozen=True, kw_only=True, eq=False)
class Split:
    """One split's windows (all arrays read-only).

    Attributes:
        name: ``train``, ``val`` or ``test``.
        x: (N, T, V) float32 input windows.
        starts: (N,) int64. Forecasting: the absolute row (0-based, header and date column not
            counted) where each window starts in the file. Samples: the sample's index in its file.
        lengths: (N,) int64 rows of real data per window: T for forecasting; for samples the
            original length of the sample's longest dimension (before padding or truncation).
        series: forecasting only: (L, V) float32 scaled rows ``border1:border2`` the windows are
            views of, so ``x[i] == series[starts[i] - starts[0]:][:T]``; None for samples.
        y: forecasting only: (N, label_len + pred_len, V) float32 decoder windows.
        x_mark, y_mark: forecasting only: (N, T, F) / (N, label_len + pred_len, F) float32
            timeenc=1 time features of the same rows.
        labels: classification only: (N,) int64 class codes (index into ``Dataset.classes``).
    """

    name: str
    x: F32
    starts: I64
    lengths: I64
    series: F32 | None = None
    y: F32 | None = None
    x_mark: F32 | None = None
    y_mark: F32 | None = None
    labels: I64 | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True, kw_only=True, eq=False)
class Dataset:
    """A loaded data set: its windows per split and what is needed to undo the scaling.

    Attributes:
        path: the path it was loaded from.
        preset: the resolved preset (``spec.preset`` after inference).
        spec: the WindowSpec it was loaded with, ``preset`` filled in.
        kind: ``forecast`` (TSLib windows), ``classification`` (labelled samples) or
            ``unlabelled`` (samples without labels).
        variables: (V,) column names in window order.
        splits: the splits asked for in ``spec.splits`` that the data has, in train/val/test order.
        scaler_mean, scaler_scale: (V,) float64; ``scaled = (raw - mean) / scale``; zeros and ones
            when ``spec.scale`` is False.
        classes: class names, in code order, for labelled data; otherwise None.
        fingerprint: 16 hex digits naming the data content and the spec (for persisted views).
    """

    path: Path
    preset: Preset
    spec: WindowSpec
    kind: Kind
    variables: tuple[str, ...]
    splits: dict[str, Split]
    scaler_mean: F64
    scaler_scale: F64
    classes: tuple[str, ...] | None
    fingerprint: str

    def inverse_transform(self, values: npt.ArrayLike) -> F64:
        """Undo the scaling: (..., V) scaled values → (..., V) float64 in the file's units.

        With ``--features MS`` a model forecasts the target alone: (..., 1) values take the
        target's (the last variable's) scaling. Any other width is an error — broadcasting
        the (V,) scaling over it would be a silent wrong answer (scikit-learn's
        StandardScaler, which TSLib uses, refuses it too).
        """
        x = np.asarray(values, dtype=np.float64)
        n = len(self.variables)
        if x.ndim and x.shape[-1] == n:
            return x * self.scaler_scale + self.scaler_mean
        if x.ndim and x.shape[-1] == 1 and self.spec.features == "MS":
            target: F64 = x * self.scaler_scale[-1] + self.scaler_mean[-1]
            return target
        alone = ", or (..., 1) for the MS target" if self.spec.features == "MS" else ""
        raise InputError(
            f"inverse_transform takes (..., {n}) values, one per variable{alone}; got shape "
            f"{x.shape}"
        )


def forecast_borders(
    preset: Preset, n_rows: int, seq_len: int
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """TSLib's ``(border1s, border2s)`` for train, val, test.

    ``ett_hour``: ``[0, 8640-T, 11520-T] / [8640, 11520, 14400]``; ``ett_minute``: the same ×4;
    ``custom``: ``num_train = int(0.7 L)``, ``num_test = int(0.2 L)``, the rest val, and
    ``[0, num_train-T, L-num_test-T] / [num_train, num_train+num_val, L]``. Borders may be
    negative or beyond ``n_rows``; :func:`forecast_splits` says what is missing.
    """
    if preset in ("ett_hour", "ett_minute"):
        factor = _ETT_MINUTE_FACTOR if preset == "ett_minute" else 1
        train, val, test = (b * factor for b in _ETT_HOUR_BORDERS)
        return (0, train - seq_len, val - seq_len), (train, val, test)
    if preset == "custom":
        # int() truncates like TSLib's int(len(df_raw) * 0.7), float rounding included.
        num_train = int(n_rows * 0.7)
        num_test = int(n_rows * 0.2)
        num_val = n_rows - num_train - num_test
        return (
            (0, num_train - seq_len, n_rows - num_test - seq_len),
            (num_train, num_train + num_val, n_rows),
        )
    raise ValueError(f"preset {preset!r} has no forecasting borders")


def window_count(n_rows: int, seq_len: int, pred_len: int, stride: int = 1) -> int:
    """Windows of ``seq_len + pred_len`` rows, starting every ``stride`` rows, in ``n_rows``."""
    return max(0, (n_rows - seq_len - pred_len) // stride + 1)


def fit_standard_scaler(rows: npt.ArrayLike) -> tuple[F64, F64]:
    """scikit-learn ``StandardScaler().fit(rows)``: per-column mean and population std.

    Args:
        rows: (R, V) training rows.

    Returns:
        ``(mean, scale)``, each (V,) float64. As scikit-learn does, the variance carries the
        two-pass correction term, and a column that is constant up to float rounding gets
        scale 1.0 (so scaling it gives zeros rather than a division by zero).
    """
    x = np.asarray(rows, dtype=np.float64)
    n = x.shape[0]
    mean = x.sum(axis=0) / n
    centred = x - mean
    correction = centred.sum(axis=0)
    var = (np.square(centred).sum(axis=0) - correction**2 / n) / n
    eps = np.finfo(np.float64).eps
    constant = var <= n * eps * var + (n * mean * eps) ** 2
    scale = np.where(constant, 1.0, np.sqrt(var))
    return mean, scale


def _standardise(values: F64, mean: F64, scale: F64) -> F32:
    """Scale in float64 (sklearn's ``transform``), round once to float32 (torch ``.float()``)."""
    with np.errstate(over="ignore", invalid="ignore"):  # reported by _check_float32
        return ((values - mean) / scale).astype(np.float32)


def _as_float32(values: npt.NDArray[np.floating[Any]]) -> F32:
    with np.errstate(over="ignore"):  # reported by _check_float32
        return values.astype(np.float32, copy=False)


def _check_scaler(mean: F64, scale: F64, source: str) -> None:
    """Refuse a column whose training values overflow the scaler's float64 sums."""
    bad = ~(np.isfinite(mean) & np.isfinite(scale))
    if bad.any():
        raise DataError(
            f"{source}: variable {int(np.flatnonzero(bad)[0])} has values too large to "
            "standardise (their sum of squares overflows float64); rescale the data or pass "
            "--no-scale"
        )


def _check_float32(data: F32, raw: npt.ArrayLike, source: str, what: str, axes: str) -> None:
    """Refuse finite values that scaling or float32 (the stored type) cannot hold, or that
    leave a window's RevIN no room in float32 (``x − mean`` of a row spanning ±2e38 is inf:
    its features were stored as inf and NaN, and its images refused mid-run).

    ``axes`` names the positions of ``data``'s dimensions for the message, e.g.
    ``"row {0}, variable {1}"``.
    """
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(data) <= VALUE_LIMIT)  # NaN and inf too
    if not bad.any():
        return
    where = tuple(int(i) for i in np.argwhere(bad)[0])
    value = float(np.asarray(raw)[where])
    raise DataError(
        f"{source}: {axes.format(*where)}: {value:g} {what}; rescale the data (tsfs keeps "
        f"rows in float32 and normalises each window there: values must stay within "
        f"±{VALUE_LIMIT:g})"
    )


def _check_spread(data: F32, raw: npt.NDArray[np.floating[Any]], source: str) -> None:
    """Refuse a variable whose values differ but all become one float32 value: values so
    small (|x| < 1e-38) or so tightly spread that scaling and float32 flatten them. Training
    would otherwise see a flat line in its place without a word.

    ``data`` and ``raw`` are (..., V), the stored values and the file's.
    """
    flat, before = data.reshape(-1, data.shape[-1]), raw.reshape(-1, raw.shape[-1])
    lo, hi = before.min(axis=0), before.max(axis=0)
    bad = (lo < hi) & (flat.min(axis=0) == flat.max(axis=0))
    if bad.any():
        v = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{source}: variable {v} varies from {lo[v]:g} to {hi[v]:g}, but float32 (in "
            f"which tsfs keeps rows, scaled or not) holds every value as {flat[0, v] + 0.0:g}; "
            "rescale the data, e.g. to values near 1"
        )


def _windows(rows: npt.NDArray[np.float32], length: int, count: int, stride: int) -> F32:
    """(L, C) rows → (count, length, C) read-only view of windows starting every ``stride`` rows."""
    view = sliding_window_view(rows, length, axis=0)  # (L - length + 1, C, length)
    return view.transpose(0, 2, 1)[: count * stride : stride]


def forecast_splits(
    values: npt.ArrayLike,
    marks: npt.NDArray[np.float32],
    *,
    spec: WindowSpec,
    preset: Preset,
    source: str,
) -> tuple[dict[str, Split], F64, F64]:
    """TSLib forecasting windows of one file.

    Args:
        values: (L, V) raw values, in window column order, missing values already handled.
        marks: (L, F) float32 time features of every row.
        spec: windowing options (``seq_len``, ``label_len``, ``pred_len``, ``stride``,
            ``scale``, ``splits``).
        preset: ``ett_hour``, ``ett_minute`` or ``custom`` (selects the borders).
        source: the file's name, for error messages.

    Returns:
        ``(splits, scaler_mean, scaler_scale)``; splits in train/val/test order.

    Raises:
        DataError: the file has too few rows for the borders or for one window of a split.
    """
    if spec.label_len > spec.seq_len:
        raise InputError(
            f"--label-len {spec.label_len} exceeds --seq-len {spec.seq_len}; "
            "the decoder's known part is taken from the end of the input window"
        )
    raw = np.asarray(values, dtype=np.float64)
    n_rows, n_vars = raw.shape
    seq_len, pred_len, stride = spec.seq_len, spec.pred_len, spec.stride
    border1s, border2s = forecast_borders(preset, n_rows, seq_len)
    wanted = [SPLITS.index(name) for name in SPLITS if name in spec.splits]
    # The scaler is always fitted on the training rows, even when only val/test are asked for.
    needed = max(border2s[i] for i in [0, *wanted])
    if n_rows < needed:
        raise DataError(
            f"{source}: has {n_rows} data rows, but preset {preset!r} needs at least {needed} "
            f"(split borders {list(border2s)}); use --preset custom for a 70/10/20 split"
        )
    for i in wanted:
        # A val/test split starts seq_len rows before its border, inside the previous split.
        if border1s[i] < 0:
            raise DataError(
                f"{source}: split {SPLITS[i]!r} would start at row {border1s[i]} (its border "
                f"{border2s[i - 1]} minus --seq-len {seq_len}); use a shorter --seq-len"
            )
        have, need = border2s[i] - border1s[i], seq_len + pred_len
        if have < need:
            raise DataError(
                f"{source}: split {SPLITS[i]!r} has {have} rows but --seq-len {seq_len} + "
                f"--pred-len {pred_len} needs at least {need}; shorten the windows or use a "
                "longer file"
            )
    if spec.scale:
        with np.errstate(over="ignore", invalid="ignore"):
            mean, scale = fit_standard_scaler(raw[border1s[0] : border2s[0]])
        _check_scaler(mean, scale, source)
        data = _standardise(raw, mean, scale)
        what = "cannot be standardised in float64 or float32"
    else:
        mean, scale = np.zeros(n_vars), np.ones(n_vars)
        data = _as_float32(raw)
        what = f"is beyond ±{VALUE_LIMIT:g}"
    _check_float32(data, raw, source, what, "data row {0}, variable {1}")
    _check_spread(data, raw, source)
    data.flags.writeable = False
    marks = _read_only(np.asarray(marks, dtype=np.float32).view())  # the caller's array stays

    splits: dict[str, Split] = {}
    decoder = spec.label_len + pred_len
    for i in wanted:
        b1, b2 = border1s[i], border2s[i]
        count = window_count(b2 - b1, seq_len, pred_len, stride)
        series, stamps = data[b1:b2], marks[b1:b2]
        tail, tail_marks = series[seq_len - spec.label_len :], stamps[seq_len - spec.label_len :]
        splits[SPLITS[i]] = Split(
            name=SPLITS[i],
            x=_windows(series, seq_len, count, stride),
            starts=_read_only(b1 + stride * np.arange(count, dtype=np.int64)),
            lengths=_read_only(np.full(count, seq_len, dtype=np.int64)),
            series=series,
            y=_windows(tail, decoder, count, stride),
            x_mark=_windows(stamps, seq_len, count, stride),
            y_mark=_windows(tail_marks, decoder, count, stride),
        )
    return splits, mean, scale


def sample_splits(
    samples: dict[str, F64],
    lengths: dict[str, I64],
    labels: dict[str, I64] | None,
    *,
    spec: WindowSpec,
    source: str,
) -> tuple[dict[str, Split], F64, F64]:
    """One window per sample (UEA ``.ts``, ``.npy``), standardised with training statistics.

    ``seq_len``, ``label_len``, ``pred_len``, ``stride``, ``features`` and ``target`` do not
    apply: a window is a whole sample. With ``spec.scale``, each variable is standardised with
    the mean and population std of every real (unpadded) training value of that variable — unlike
    TSLib's UEA loader, which standardises each split with its own statistics (and pandas'
    sample std), so test data leak into their own scaling there and not here.

    Args:
        samples: split name → (N, T, V) float64 values (equal T across splits, missing values
            already handled).
        lengths: split name → (N, V) int64 original length of each sample's series (values
            past it are padding and do not enter the scaler fit).
        labels: split name → (N,) int64 class codes, or None.
        spec: ``scale`` and ``splits`` are read.
        source: the file's name, for error messages.

    Returns:
        ``(splits, scaler_mean, scaler_scale)``; the splits of ``spec.splits`` present in
        ``samples``, in train/val/test order.

    Raises:
        DataError: scaling asked for but no training samples to fit it on, or no asked-for
            split in the data.
    """
    names = [name for name in SPLITS if name in spec.splits and name in samples]
    if not names:
        raise DataError(
            f"{source}: has split(s) {', '.join(samples)} but --splits asked for "
            f"{','.join(spec.splits)}; ask for one the data has"
        )
    n_vars = next(iter(samples.values())).shape[2]
    if spec.scale:
        if "train" not in samples:
            raise DataError(
                f"{source}: no training samples to fit the scaler on; load the UEA _TRAIN file "
                "(its _TEST sibling comes along), give arrays 'x' or 'train_x', or turn scaling "
                "off (scale=False, --no-scale)"
            )
        train = samples["train"]
        real = np.arange(train.shape[1])[:, None] < lengths["train"][:, None, :]  # (N, T, V)
        with np.errstate(over="ignore", invalid="ignore"):
            fits = [fit_standard_scaler(train[..., v][real[..., v], None]) for v in range(n_vars)]
        mean = np.concatenate([m for m, _ in fits])
        scale = np.concatenate([s for _, s in fits])
        _check_scaler(mean, scale, source)
    else:
        mean, scale = np.zeros(n_vars), np.ones(n_vars)
    splits = {}
    for name in names:
        raw = samples[name]
        x = _standardise(raw, mean, scale) if spec.scale else _as_float32(raw)
        what = "cannot be standardised" if spec.scale else f"is beyond ±{VALUE_LIMIT:g}"
        _check_float32(x, raw, source, what, f"{name} sample {{0}}, step {{1}}, variable {{2}}")
        _check_spread(x, raw, source)
        splits[name] = Split(
            name=name,
            x=_read_only(x),
            starts=_read_only(np.arange(x.shape[0], dtype=np.int64)),
            lengths=_read_only(lengths[name].max(axis=1).astype(np.int64)),
            labels=None if labels is None else _read_only(labels[name].astype(np.int64)),
        )
    return splits, mean, scale


def _read_only(array: _A) -> _A:
    array.flags.writeable = False
    return array
