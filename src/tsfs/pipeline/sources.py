"""Data files → :class:`~tsfs.pipeline.windows.Dataset`: TSLib CSVs, UEA ``.ts`` files, arrays.

Presets (``WindowSpec.preset``; ``None`` infers one from the name, see :func:`infer_preset`):

``ett_hour``, ``ett_minute``, ``custom``
    A TSLib-style CSV: a header line, a ``date`` column and one column per variable. Variables
    are, for ``features`` M/MS, every non-date column — in file order for the ETT presets and, as
    TSLib's ``Dataset_Custom`` reorders them, ``[*others, target]`` for ``custom``; for S only
    the target. ETT presets use TSLib's fixed month borders, ``custom`` its 70/10/20 split (see
    :mod:`tsfs.pipeline.windows`). Dates are ISO ``YYYY-MM-DD[ HH:MM[:SS]]``; ``/`` or ``.``
    between date parts and unpadded fields (``1990/1/1 0:00``) are accepted too. Empty cells and
    pandas' default NA strings (``NA``, ``NaN``, ``null`` …) are missing values. A UTF-8 byte
    order mark and blank lines are ignored.
``uea``
    An sktime/UEA ``.ts`` file. ``X_TRAIN.ts`` or ``X_TEST.ts`` loads both siblings that exist
    as splits ``train`` and ``test``; a directory loads the one ``*_TRAIN.ts``/``*_TEST.ts``
    pair in it; any other ``.ts`` file is split ``train``. One window per sample; class codes
    follow the ``@classLabel`` declaration order (TSLib instead codes the labels present in each
    file in sorted order: the two agree only when the declaration is sorted and every class
    occurs — not for BasicMotions, declared ``Standing Running Walking Badminton``). Samples of
    unequal length follow ``spec.unequal``: ``pad`` repeats each series' last value up to the
    longest series of the data set (TSLib pads with zeros and masks), ``truncate`` cuts every
    series to the shortest. ``?`` marks a missing value. Time stamps (``@timeStamps true``) and
    regression targets (``@targetLabel``) are not supported.
``array``
    ``.npy``: one (N, T, V) array, split ``train``. ``.npz``: ``x`` (N, T, V) with optional
    ``labels`` or ``y`` (N,) as split ``train``; or ``train_x``/``val_x``/``test_x`` with
    optional ``train_labels``/``train_y`` … as those splits. Labels (integers or strings) are
    coded in sorted order.

For ``uea`` and ``array`` a window is a whole sample: ``seq_len``, ``label_len``, ``pred_len``,
``stride``, ``features``, ``target`` and ``freq`` are ignored, and ``spec.splits`` selects
among the splits the data has.

Missing and non-finite values, in every preset, follow ``spec.nan``: ``error`` names the first
one, ``zero`` fills 0, ``interpolate`` interpolates linearly along time per series and holds the
end values at the edges (pandas ``interpolate(limit_direction='both')``, as TSLib does for UEA
data).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import operator
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tsfs.errors import DataError, InputError
from tsfs.pipeline.timefeatures import time_features
from tsfs.pipeline.windows import (
    VALUE_LIMIT,
    Dataset,
    Kind,
    forecast_splits,
    sample_splits,
)
from tsfs.specs import SPLITS, NanPolicy, Preset, WindowSpec, canonical_json

__all__ = ["infer_preset", "load"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_Where = Callable[[int | None, int], str]

# pandas.read_csv's default NA strings: TSLib reads its CSVs with pandas, so these are missing.
_NA_STRINGS = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)
# A UTC offset after a date's time: Z, +HH:MM, -HHMM, +HH.
_UTC_OFFSET = re.compile(r"(\d:\d\d(?::\d\d(?:\.\d*)?)?)\s*(?:Z|[+-]\d\d(?::?\d\d)?)$")
_LOOSE_DATE = re.compile(
    r"\s*(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})"
    r"(?:[ T]+(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.\d*)?)?)?\s*"
)
_BLOCK_CELLS = 1 << 19  # CSV cells converted per numpy call: bounds memory on wide files
_UEA_PAIR = re.compile(r"(?P<stem>.+)_(?P<split>TRAIN|TEST)\.ts", re.IGNORECASE)


def infer_preset(path: str | os.PathLike[str]) -> Preset:
    """The preset a file's name implies.

    ``.ts`` or a directory of ``.ts`` files → ``uea``; ``.npy``/``.npz`` → ``array``; a CSV
    whose name starts with ``ETTh`` → ``ett_hour``, ``ETTm`` → ``ett_minute``, any other
    ``.csv`` → ``custom``.

    Raises:
        DataError: nothing to infer from (another suffix, or a directory without ``.ts`` files).
    """
    p = Path(path)
    if p.is_dir():
        if any(p.glob("*.ts")):
            return "uea"
        raise DataError(f"{p}: a directory without .ts files; pass a data file instead")
    suffix = p.suffix.lower()
    if suffix == ".ts":
        return "uea"
    if suffix in (".npy", ".npz"):
        return "array"
    if suffix == ".csv":
        name = p.name.lower()
        if name.startswith("etth"):
            return "ett_hour"
        if name.startswith("ettm"):
            return "ett_minute"
        return "custom"
    raise DataError(
        f"{p}: cannot tell the preset from the suffix {suffix or '(none)'!r}; pass --preset "
        "(ett_hour, ett_minute, custom, uea or array)"
    )


def load(path: str | os.PathLike[str], spec: WindowSpec | None = None) -> Dataset:
    """Read a data file and window it as ``spec`` says (see the module docs for the presets).

    Raises:
        DataError: the file is missing, unreadable or malformed; the message names the file and,
            where it applies, the line and column, and says how to fix it.
        InputError: an option does not fit (e.g. an unsupported ``freq``).
    """
    spec = spec or WindowSpec()
    if not isinstance(spec, WindowSpec):
        raise InputError(f"load() takes a WindowSpec, got {type(spec).__name__}")
    if not isinstance(path, str | os.PathLike):
        raise InputError(f"load() takes a file path, got {path!r}")
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or directory; check the data path")
    preset = spec.preset or infer_preset(p)
    spec = dataclasses.replace(spec, preset=preset)
    if preset == "uea":
        return _load_uea(p, spec)
    if preset == "array":
        return _load_array(p, spec)
    return _load_csv(p, spec, preset)


# --------------------------------------------------------------------------- shared helpers


def _handle_missing(values: F64, policy: NanPolicy, where: _Where) -> F64:
    """Apply the missing-value policy to (T, C) values, along time, per column.

    ``where(t, c)`` names a cell (``t=None``: the whole column ``c``) for error messages.
    Returns ``values`` itself when every value is finite, else a filled copy.
    """
    bad = ~np.isfinite(values)
    if not bad.any():
        return values
    if policy == "error":
        t, c = (int(i) for i in np.argwhere(bad)[0])
        what = "missing value" if np.isnan(values[t, c]) else f"infinite value ({values[t, c]})"
        raise DataError(
            f"{where(t, c)}: {what}; fix the file or pass --nan interpolate (linear along "
            "time, edges held) or --nan zero"
        )
    filled = values.copy()
    if policy == "zero":
        filled[bad] = 0.0
        return filled
    positions = np.arange(values.shape[0])
    for column in np.flatnonzero(bad.any(axis=0)).tolist():
        good = ~bad[:, column]
        if not good.any():
            raise DataError(
                f"{where(None, column)}: every value is missing, so there is nothing to "
                "interpolate from; drop it or pass --nan zero"
            )
        filled[:, column] = np.interp(positions, positions[good], values[good, column])
    return filled


def _check_range(values: F64, where: _Where) -> None:
    """Refuse finite values beyond what unscaled rows may hold (:data:`VALUE_LIMIT`), naming
    the file's own cell (the windows' check after scaling can only name a data row)."""
    huge = np.isfinite(values) & (np.abs(values) > VALUE_LIMIT)
    if huge.any():
        t, c = (int(i) for i in np.argwhere(huge)[0])
        raise DataError(
            f"{where(t, c)}: {values[t, c]:g} is beyond ±{VALUE_LIMIT:g}, which unscaled rows "
            "(--no-scale) must stay within: tsfs keeps them in float32 and normalises each "
            "window there; rescale the column"
        )


def _read_error(path: Path, error: UnicodeDecodeError | OSError) -> DataError:
    if isinstance(error, UnicodeDecodeError):
        if error.object[:8].startswith(_ARRAY_MAGIC):
            return DataError(
                f"{path}: a numpy .npy/.npz file, not text; load it with --preset array"
            )
        return DataError(
            f"{path}: not UTF-8 text (byte {error.start}: {error.reason}); save it as UTF-8"
        )
    return DataError(f"{path}: cannot be read ({error.strerror})")


def _is_number(text: str) -> bool:
    """Whether numpy's float parser (the one the bulk conversions use) accepts ``text``."""
    try:
        np.array([text], dtype=np.float64)
    except ValueError:
        return False
    return True


def _fingerprint(spec: WindowSpec, meta: dict[str, object], arrays: Iterable[np.ndarray]) -> str:
    """BLAKE2b-64 of the spec, names and raw data: equal content and spec, equal fingerprint."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(canonical_json({"spec": dataclasses.asdict(spec), **meta}).encode())
    for array in arrays:
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


# --------------------------------------------------------------------------- TSLib CSV


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Non-blank CSV rows, each with the 1-based line it ends on; read errors as DataError."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            reader = csv.reader(file)
            start = 1
            try:
                for row in reader:
                    if reader.line_num > start and any("\n" in f or "\r" in f for f in row):
                        raise DataError(
                            f"{path} line {start}: a quoted field runs on to line "
                            f"{reader.line_num} (an unclosed quote?); close or remove the quote"
                        )
                    start = reader.line_num + 1
                    if len(row) > 1 or (row and row[0].strip()):
                        yield reader.line_num, row
            except csv.Error as error:
                if "field limit" in str(error):  # a quote left open swallows the lines after it
                    raise DataError(
                        f"{path} line {start}: a quoted field runs on past line "
                        f"{reader.line_num} (an unclosed quote?); close or remove the quote"
                    ) from None
                raise DataError(f"{path} line {reader.line_num}: {error}") from None
    except (UnicodeDecodeError, OSError) as error:
        raise _read_error(path, error) from None


def _parse_numbers(rows: list[Sequence[str]], first: int, where: _Where) -> F64:
    """(R, C) strings → float64; NA strings become NaN; names the first cell that is no number.

    ``first`` is the data-row index of ``rows[0]``, for ``where``.
    """
    try:
        # Straight from the strings: twice as fast as building a numpy string array first.
        return np.array(rows, dtype=np.float64)
    except ValueError:
        pass
    rows = [["nan" if cell in _NA_STRINGS else cell for cell in row] for row in rows]
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError:
        pass
    for t, row in enumerate(rows):  # slow path only to name the culprit
        for c, cell in enumerate(row):
            if not _is_number(cell):
                raise DataError(
                    f"{where(first + t, c)}: {cell!r} is not a number; fix or empty the cell "
                    "(empty cells are missing values, see --nan)"
                )
    raise AssertionError("unreachable: a cell failed to parse but none fails alone")


def _check_time_order(dates: npt.NDArray[np.datetime64], where: Callable[[int], str]) -> None:
    """Refuse rows out of time order: a window would span unrelated times without a word
    (Time-Series-Library's reader takes rows as they come)."""
    step = np.diff(dates)
    bad = np.flatnonzero(step <= np.timedelta64(0, "s"))
    if not bad.size:
        return
    t = int(bad[0]) + 1
    when = np.datetime_as_string(dates[t], unit="s").replace("T", " ")
    if dates[t] == dates[t - 1]:
        raise DataError(
            f"{where(t)}: date {when} repeats the row before's; rows must be one per time "
            "step (remove the duplicate rows)"
        )
    raise DataError(
        f"{where(t)}: date {when} is earlier than the row before's; sort the file by date"
    )


def _parse_dates(texts: list[str], where: Callable[[int], str]) -> npt.NDArray[np.datetime64]:
    """(L,) date strings → datetime64[s]: numpy's ISO parser, else the looser TSLib spellings.

    A UTC offset (``Z``, ``+05:00``) is dropped, keeping the wall-clock time, as the hour and
    day of pandas' ``to_datetime`` (TSLib's reader) are. Digits alone are read as a date only
    as a year (``2020``): numpy would read a Unix time or ``20200101`` as a far-future year.
    """
    for t, text in enumerate(texts):
        if text.isdigit() and len(text) > 4:
            raise DataError(
                f"{where(t)}: cannot read {text!r} as a date (digits alone are a year); write "
                "dates as YYYY-MM-DD[ HH:MM[:SS]], also for Unix times"
            )
    try:
        with warnings.catch_warnings():
            # numpy warns that it converts an offset to UTC; the offsets are dropped instead
            warnings.simplefilter("error", UserWarning)
            try:
                dates = np.array(texts, dtype="datetime64[s]")
            except UserWarning:
                local = [_UTC_OFFSET.sub(r"\1", text) for text in texts]
                dates = np.array(local, dtype="datetime64[s]")
    except (ValueError, UserWarning):
        pass
    else:
        # numpy reads an empty string or "NaT" as not-a-time instead of failing.
        missing = np.flatnonzero(np.isnat(dates))
        if missing.size:
            t = int(missing[0])
            raise DataError(f"{where(t)}: {texts[t]!r} is not a date; fill it in")
        return dates
    iso: list[str] = []
    for t, text in enumerate(texts):
        match = _LOOSE_DATE.fullmatch(text)
        stamp = None
        if match is not None:
            y, mo, d, h, mi, s = (int(g or 0) for g in match.groups())
            stamp = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"
            try:
                np.datetime64(stamp, "s")
            except ValueError:
                stamp = None
        if stamp is None:
            raise DataError(
                f"{where(t)}: cannot read {text!r} as a date; write dates as "
                "YYYY-MM-DD[ HH:MM[:SS]]"
            )
        iso.append(stamp)
    return np.array(iso, dtype="datetime64[s]")


def _picker(indices: list[int]) -> Callable[[list[str]], Sequence[str]]:
    """A fast ``row → [row[i] for i in indices]`` (itemgetter runs in C)."""
    if len(indices) == 1:
        (index,) = indices
        return lambda row: (row[index],)
    return operator.itemgetter(*indices)


def _csv_variables(
    path: Path, header: list[str], header_line: int, spec: WindowSpec, preset: Preset
) -> list[str]:
    """The window columns the header and options give (TSLib's column rules, module docs)."""
    if "" in header:
        raise DataError(
            f"{path} line {header_line}: column {header.index('') + 1} has no name (a trailing "
            "comma?); name the column or remove it"
        )
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataError(
            f"{path} line {header_line}: duplicate column name(s) {', '.join(duplicates)}"
        )
    if len(header) == 1 and any(sep in header[0] for sep in ";\t|"):
        sep = next(sep for sep in ";\t|" if sep in header[0])
        raise DataError(
            f"{path} line {header_line}: fields are separated by {sep!r}; tsfs reads "
            "comma-separated files (TSLib's format): convert the file, e.g. "
            f"pandas.read_csv(path, sep={sep!r}).to_csv(new_path, index=False)"
        )
    if "date" not in header:
        raise DataError(
            f"{path}: no 'date' column (columns: {', '.join(header)}); TSLib CSVs need one — "
            "rename the time column to 'date', or save the values as .npy (--preset array)"
        )
    others = [name for name in header if name != "date"]
    if not others:
        raise DataError(
            f"{path} line {header_line}: no variable columns besides 'date'; a TSLib CSV "
            "holds date,<variable>,<variable>,…"
        )
    if (spec.features != "M" or preset == "custom") and spec.target not in others:
        raise DataError(
            f"{path}: no target column {spec.target!r} (option --target); the variables are "
            + ", ".join(others)
        )
    if spec.features == "S":
        return [spec.target]
    if spec.features == "MS" and preset != "custom" and spec.target != others[-1]:
        # TSLib's ETT loader keeps the file's order and scores its last column: the target
        # asked for would be read and silently not forecast.
        raise DataError(
            f"{path}: --target {spec.target} with --features MS: the {preset} preset keeps the "
            f"file's column order, as Time-Series-Library's ETT loader does, and forecasts "
            f"its last column, {others[-1]}; use --features S for {spec.target} alone, or "
            f"--preset custom (70/10/20 borders) to move it last"
        )
    if preset == "custom":
        return [name for name in others if name != spec.target] + [spec.target]
    return others


def _load_csv(path: Path, spec: WindowSpec, preset: Preset) -> Dataset:
    rows = _csv_rows(path)
    first = next(rows, None)
    if first is None:
        raise DataError(f"{path}: the file is empty; expected a header line date,<variables…>")
    header_line, header = first[0], [name.strip() for name in first[1]]
    variables = _csv_variables(path, header, header_line, spec, preset)
    date_at = header.index("date")
    value_at = [header.index(name) for name in variables]
    lines: list[int] = []  # file line of each data row

    def cell(t: int | None, c: int) -> str:
        line = f" line {lines[t]}" if t is not None else ""
        return f"{path}{line}, column {variables[c]!r}"

    # Numbers are parsed a block of rows at a time, so that a wide file (Traffic: 862
    # columns) never exists as one array of strings.
    block_rows = max(1, _BLOCK_CELLS // len(value_at))
    date_texts: list[str] = []
    blocks: list[F64] = []
    block: list[Sequence[str]] = []
    pick = _picker(value_at)
    for line, row in rows:
        if len(row) != len(header):
            raise DataError(
                f"{path} line {line}: {len(row)} fields, but the header has {len(header)}"
            )
        lines.append(line)
        date_texts.append(row[date_at])
        block.append(pick(row))
        if len(block) == block_rows:
            blocks.append(_parse_numbers(block, len(lines) - len(block), cell))
            block = []
    if not lines:
        raise DataError(f"{path}: has a header (line {header_line}) but no data rows")
    if block:
        blocks.append(_parse_numbers(block, len(lines) - len(block), cell))
    dates = _parse_dates(date_texts, lambda t: f"{path} line {lines[t]}, column 'date'")
    values = _handle_missing(np.concatenate(blocks), spec.nan, cell)
    if not spec.scale:
        _check_range(values, cell)
    _check_time_order(dates, lambda t: f"{path} line {lines[t]}")
    marks = time_features(dates, spec.freq)
    splits, mean, scale = forecast_splits(values, marks, spec=spec, preset=preset, source=str(path))
    return Dataset(
        path=path,
        preset=preset,
        spec=spec,
        kind="forecast",
        variables=tuple(variables),
        splits=splits,
        scaler_mean=mean,
        scaler_scale=scale,
        classes=None,
        fingerprint=_fingerprint(spec, {"variables": variables}, [values, dates.astype(np.int64)]),
    )


# --------------------------------------------------------------------------- UEA .ts


@dataclasses.dataclass(frozen=True)
class _TsFile:
    """One parsed ``.ts`` file: per sample a list of 1-D float64 series, one per dimension."""

    path: Path
    samples: list[list[F64]]
    lines: list[int]  # 1-based line of each sample
    labels: list[str] | None
    classes: tuple[str, ...] | None


def _uea_files(path: Path) -> dict[str, Path]:
    """Split name → ``.ts`` file for a file or a directory (see the module docs)."""
    if path.is_dir():
        pairs = {m["stem"] for p in path.glob("*.ts") if (m := _UEA_PAIR.fullmatch(p.name))}
        if len(pairs) != 1:
            found = ", ".join(sorted(pairs)) or "none"
            raise DataError(
                f"{path}: expected one *_TRAIN.ts/*_TEST.ts pair in the directory (found: "
                f"{found}); pass the _TRAIN.ts file itself"
            )
        path = next(p for p in path.glob("*.ts") if _UEA_PAIR.fullmatch(p.name))
    match = _UEA_PAIR.fullmatch(path.name)
    if match is None:
        return {"train": path}
    # The pair is found whatever the case of its names (Foo_TRAIN.ts with Foo_Test.ts,
    # foo_train.ts with foo_test.ts); the file given is always one of the two.
    given = match["split"].lower()
    pair = {given: path}
    other = "test" if given == "train" else "train"
    want = f"{match['stem']}_{other}{path.suffix}".lower()
    for p in sorted(path.parent.iterdir()):
        if p.name.lower() == want and p.is_file():
            pair[other] = p
            break
    return {split: pair[split] for split in ("train", "test") if split in pair}


@dataclasses.dataclass(frozen=True)
class _TsHeader:
    first: int  # index of the first data line
    dims: int | None  # @dimensions
    classes: tuple[str, ...] | None  # @classLabel's names
    length: int | None  # what every series holds when @equalLength is true (@seriesLength)
    equal: bool  # @equalLength true


def _ts_header(path: Path, lines: list[str]) -> _TsHeader:
    """What a ``.ts`` header declares (see :class:`_TsHeader`)."""
    dims: int | None = None
    classes: tuple[str, ...] | None = None
    length: int | None = None
    equal = False
    for index, raw in enumerate(lines):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tag, _, rest = line.partition(" ")
        tag, words = tag.lower(), rest.split()
        if words and words[0].lower() in ("true", "false"):
            words[0] = words[0].lower()  # in any case, as sktime reads it; names keep theirs
        where = f"{path} line {index + 1}"
        if tag == "@data":
            return _TsHeader(
                first=index + 1, dims=dims, classes=classes, length=length, equal=equal
            )
        if tag == "@equallength":
            equal = words[:1] == ["true"]
        if tag == "@serieslength" and len(words) == 1 and words[0].isdigit():
            length = int(words[0])
        if not tag.startswith("@"):
            raise DataError(f"{where}: data before the @data line; header lines start with '@'")
        if tag == "@timestamps" and words[:1] == ["true"]:
            raise DataError(f"{where}: time-stamped .ts data is not supported")
        if tag == "@targetlabel" and words[:1] == ["true"]:
            raise DataError(f"{where}: regression .ts data (@targetLabel) is not supported")
        if tag == "@dimensions":
            if len(words) != 1 or not words[0].isdigit() or int(words[0]) < 1:
                raise DataError(f"{where}: @dimensions needs a positive integer")
            dims = int(words[0])
        if tag == "@classlabel" and words[:1] == ["true"]:
            if len(words) < 2:
                raise DataError(f"{where}: @classLabel true must list the class names")
            classes = tuple(words[1:])
            twice = sorted({c for c in classes if classes.count(c) > 1})
            if twice:
                raise DataError(f"{where}: @classLabel names {', '.join(twice)} twice")
    raise DataError(f"{path}: no @data line; is this an sktime/UEA .ts file?")


def _ts_series(field: str, where: str) -> F64:
    """One dimension's comma-separated values, ``?`` → NaN."""
    try:
        return np.array(field.replace("?", "nan").split(","), dtype=np.float64)
    except ValueError:
        parts = field.split(",")
        position = next(i for i, p in enumerate(parts) if p.strip() != "?" and not _is_number(p))
        raise DataError(
            f"{where}, value index {position}: {parts[position]!r} is not a number "
            "(values are separated by ',', dimensions by ':', '?' marks a missing value)"
        ) from None


def _read_ts(path: Path) -> _TsFile:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (UnicodeDecodeError, OSError) as error:
        raise _read_error(path, error) from None
    if not any(line.strip() for line in lines):
        raise DataError(f"{path}: the file is empty; expected an sktime/UEA .ts file")
    header = _ts_header(path, lines)
    first, dims, classes = header.first, header.dims, header.classes
    equal_to = header.length if header.equal else None  # the first series' length otherwise
    samples: list[list[F64]] = []
    sample_lines: list[int] = []
    labels: list[str] | None = None if classes is None else []
    last = max(i for i, line in enumerate(lines) if line.strip())
    for index in range(first, len(lines)):
        line = lines[index].strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path} line {index + 1}"
        fields = line.split(":")
        if labels is not None and classes is not None:
            label = fields.pop().strip()
            if "," in label:  # values where the label should be: the line lost its end
                cut = "; the file looks cut off here" if index == last else ""
                expected = f"its {dims} dimensions" if dims else "its dimensions"
                raise DataError(
                    f"{where}: the line ends in values, not in its class label (':<label>' "
                    f"after {expected}){cut}"
                )
            if label not in classes:
                raise DataError(
                    f"{where}: class label {label!r} is not declared in @classLabel "
                    f"({' '.join(classes)}); each line ends with ':<label>'"
                )
            labels.append(label)
        if not fields:
            raise DataError(f"{where}: no values before the class label")
        dims = dims or len(fields)
        if len(fields) != dims:
            raise DataError(
                f"{where}: {len(fields)} dimension(s), expected {dims}; a line is "
                "dim_0:dim_1:…" + (":label" if classes is not None else "")
            )
        sample = [_ts_series(f, f"{where}, dimension dim_{d}") for d, f in enumerate(fields)]
        if header.equal:
            lengths = {len(series) for series in sample}
            if not samples and header.length and lengths != {header.length} and len(lengths) == 1:
                raise DataError(
                    f"{where}: the first series has {lengths.pop()} values in every dimension, "
                    f"but the header says @seriesLength {header.length}; correct @seriesLength "
                    "(or declare @equalLength false to pad or truncate, --unequal)"
                )
            equal_to = equal_to or len(sample[0])
            for d, series in enumerate(sample):
                if len(series) != equal_to:
                    said = "@equalLength true" + (
                        f" and @seriesLength {header.length}" if header.length else ""
                    )
                    raise DataError(
                        f"{where}, dimension dim_{d}: {len(series)} values, but the header says "
                        f"{said} and other series have {equal_to}; complete the line, or "
                        "declare @equalLength false to pad or truncate (--unequal)"
                    )
        samples.append(sample)
        sample_lines.append(index + 1)
    if not samples:
        raise DataError(f"{path}: no samples after the @data line")
    return _TsFile(path=path, samples=samples, lines=sample_lines, labels=labels, classes=classes)


def _to_array(samples: list[list[F64]], length: int) -> F64:
    """Ragged samples → (N, length, V): longer series cut, shorter ones padded by last value."""
    if all(len(s) == length for dims in samples for s in dims):
        return np.asarray(samples, dtype=np.float64).transpose(0, 2, 1)
    out = np.empty((len(samples), length, len(samples[0])))
    for i, dims in enumerate(samples):
        for d, series in enumerate(dims):
            n = min(len(series), length)
            out[i, :n, d] = series[:n]
            out[i, n:, d] = series[-1]
    return out


def _fill_ts(ts: _TsFile, policy: NanPolicy) -> list[list[F64]]:
    """The file's series with the missing-value policy applied to each."""
    filled = []
    for i, dims in enumerate(ts.samples):
        sample = []
        for d, series in enumerate(dims):

            def where(t: int | None, _: int, i: int = i, d: int = d) -> str:
                at = "" if t is None else f", value index {t}"
                return f"{ts.path} line {ts.lines[i]}, dimension dim_{d}{at}"

            sample.append(_handle_missing(series[:, None], policy, where)[:, 0])
        filled.append(sample)
    return filled


def _load_uea(path: Path, spec: WindowSpec) -> Dataset:
    files = {name: _read_ts(p) for name, p in _uea_files(path).items()}
    if not files:
        raise DataError(f"{path}: no such .ts file; check the data path")
    reference = files.get("train", next(iter(files.values())))
    n_dims = len(reference.samples[0])
    classes = reference.classes
    for ts in files.values():
        if len(ts.samples[0]) != n_dims:
            raise DataError(
                f"{ts.path}: {len(ts.samples[0])} dimensions, but {reference.path} has {n_dims}"
            )
        if (ts.classes is None) != (classes is None):
            raise DataError(
                f"{ts.path}: @classLabel differs from {reference.path}; both files must be "
                "labelled or both unlabelled"
            )
    filled = {name: _fill_ts(ts, spec.nan) for name, ts in files.items()}
    lengths = {
        name: np.array([[len(s) for s in dims] for dims in ts.samples], dtype=np.int64)
        for name, ts in files.items()
    }
    all_lengths = [len(s) for ts in files.values() for dims in ts.samples for s in dims]
    length = max(all_lengths) if spec.unequal == "pad" else min(all_lengths)
    samples = {name: _to_array(series, length) for name, series in filled.items()}
    codes: dict[str, I64] | None = None
    if classes is not None:
        codes = {}
        for name, ts in files.items():
            assert ts.labels is not None  # files agree on being labelled (checked above)
            unknown = sorted(set(ts.labels) - set(classes))
            if unknown:
                raise DataError(
                    f"{ts.path}: class label(s) {', '.join(unknown)} are not among "
                    f"{reference.path}'s @classLabel ({' '.join(classes)})"
                )
            codes[name] = np.array([classes.index(c) for c in ts.labels], dtype=np.int64)
    return _sample_dataset(path, spec, samples, lengths, codes, classes)


# --------------------------------------------------------------------------- arrays


# How .npy and .npz (zip) files begin. Anything else would reach np.load's pickle path,
# whose refusal suggests allow_pickle: never advice to give for a data file.
_ARRAY_MAGIC = (b"\x93NUMPY", b"PK\x03\x04", b"PK\x05\x06")


def _load_array(path: Path, spec: WindowSpec) -> Dataset:
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror})") from None
    if not head.startswith(_ARRAY_MAGIC):
        raise DataError(
            f"{path}: not a .npy/.npz array file (it does not begin as one); for a CSV or a "
            "UEA .ts file, leave --preset out or pick the preset of that format"
        )
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                arrays = {key: loaded[key] for key in loaded.files}
        else:
            arrays = {"x": loaded}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npy/.npz array file ({error})") from None
    split_keys = sorted(k for k in arrays if k.endswith("_x"))
    if "x" in arrays and split_keys:
        raise DataError(
            f"{path}: holds both 'x' and {', '.join(split_keys)}; keep one layout (one 'x' as "
            "the train split, or per-split arrays)"
        )
    if "x" in arrays:
        keys = {"train": ("x", ("labels", "y"))}
    else:
        keys = {s: (f"{s}_x", (f"{s}_labels", f"{s}_y")) for s in SPLITS if f"{s}_x" in arrays}
    if not keys:
        raise DataError(
            f"{path}: holds {', '.join(arrays) or 'no arrays'}; expected 'x' (N, T, V) with "
            "optional 'labels' (N,), or 'train_x'/'val_x'/'test_x' with optional "
            "'train_labels'/'val_labels'/'test_labels'"
        )
    used = {x_key for x_key, _ in keys.values()}
    used |= {next((k for k in labels if k in arrays), "") for _, labels in keys.values()}
    unread = sorted(arrays.keys() - used)
    if unread:
        # e.g. labels saved under both names, or a misspelt split: never drop data silently
        raise DataError(
            f"{path}: holds {', '.join(unread)} besides {', '.join(sorted(used - {''}))}, and "
            "tsfs would not read them; remove them (labels go in 'labels' or 'y', one of them)"
        )
    samples: dict[str, F64] = {}
    raw_labels: dict[str, np.ndarray] = {}
    for split, (x_key, label_keys) in keys.items():
        x = arrays[x_key]
        if x.ndim != 3 or 0 in x.shape or not np.issubdtype(x.dtype, np.number):
            raise DataError(
                f"{path}: array {x_key!r} is {x.dtype} {x.shape}; expected non-empty numeric "
                f"(N, T, V) samples{_shape_hint(x)}"
            )
        if np.iscomplexobj(x):
            raise DataError(f"{path}: array {x_key!r} is complex; expected real values")
        x = x.astype(np.float64)
        if not np.isfinite(x).all():
            for i in range(x.shape[0]):

                def where(t: int | None, c: int, key: str = x_key, i: int = i) -> str:
                    return f"{path}: {key}[{i}, {':' if t is None else t}, {c}]"

                x[i] = _handle_missing(x[i], spec.nan, where)
        samples[split] = x
        label_key = next((k for k in label_keys if k in arrays), None)
        if label_key is not None:
            labels = arrays[label_key]
            if labels.shape != (x.shape[0],) or labels.dtype.kind not in "iuUb":
                raise DataError(
                    f"{path}: labels {label_key!r} are {labels.dtype} {labels.shape}; expected "
                    f"{x.shape[0]} integers or strings, one per sample of {x_key!r}"
                )
            raw_labels[split] = labels
    shapes = {x.shape[1:] for x in samples.values()}
    if len(shapes) > 1:
        raise DataError(f"{path}: splits differ in (T, V): {sorted(shapes)}; they must agree")
    if raw_labels and raw_labels.keys() != samples.keys():
        raise DataError(
            f"{path}: labels for {', '.join(raw_labels)} but not for "
            f"{', '.join(samples.keys() - raw_labels.keys())}; label every split or none"
        )
    kinds = {s: "strings" if lab.dtype.kind == "U" else "numbers" for s, lab in raw_labels.items()}
    if len(set(kinds.values())) > 1:
        said = ", ".join(f"{s} {k}" for s, k in kinds.items())
        raise DataError(
            f"{path}: labels are {said}; no label of one split could match the other's — "
            "write every split's labels the same way"
        )
    classes: tuple[str, ...] | None = None
    codes: dict[str, I64] | None = None
    if raw_labels:
        names = np.unique(np.concatenate(list(raw_labels.values())))
        classes = tuple(str(c) for c in names.tolist())
        codes = {s: np.searchsorted(names, lab).astype(np.int64) for s, lab in raw_labels.items()}
    lengths = {s: np.full((x.shape[0], x.shape[2]), x.shape[1]) for s, x in samples.items()}
    return _sample_dataset(path, spec, samples, lengths, codes, classes)


def _shape_hint(x: np.ndarray) -> str:
    """How a 1-D or 2-D array becomes (N, T, V) samples, for the shape error."""
    if x.ndim == 1:
        return (
            " (one univariate sample: x[None, :, None]; to cut a long series into windows, save "
            "it as a TSLib-style CSV)"
        )
    if x.ndim == 2:
        return (
            " (N univariate samples of length T: x[..., None]; one (T, V) multivariate sample: "
            "x[None])"
        )
    return ""


def _sample_dataset(
    path: Path,
    spec: WindowSpec,
    samples: dict[str, F64],
    lengths: dict[str, I64],
    codes: dict[str, I64] | None,
    classes: tuple[str, ...] | None,
) -> Dataset:
    """The Dataset of a sample preset from its splits: (N, T, V) samples, (N, V) lengths."""
    assert spec.preset is not None  # load() resolved it
    splits, mean, scale = sample_splits(samples, lengths, codes, spec=spec, source=str(path))
    n_vars = next(iter(samples.values())).shape[2]
    variables = tuple(f"dim_{d}" for d in range(n_vars))
    kind: Kind = "unlabelled" if classes is None else "classification"
    contents: list[np.ndarray] = []
    for name in samples:
        contents += [samples[name], lengths[name]] + ([codes[name]] if codes else [])
    return Dataset(
        path=path,
        preset=spec.preset,
        spec=spec,
        kind=kind,
        variables=variables,
        splits=splits,
        scaler_mean=mean,
        scaler_scale=scale,
        classes=classes,
        fingerprint=_fingerprint(
            spec,
            {"variables": list(variables), "classes": classes, "splits": list(samples)},
            contents,
        ),
    )
