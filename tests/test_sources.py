"""Reading data files: presets, UEA .ts, arrays, and every malformed-input error."""

from __future__ import annotations

import dataclasses
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from tsfs.errors import DataError, InputError
from tsfs.pipeline.normalize import revin
from tsfs.pipeline.sources import infer_preset, load
from tsfs.specs import WindowSpec

REPO = Path(__file__).parents[1]
ETTH1 = REPO / "data" / "ETTh1.csv"
SHARED_DATA = REPO.parent / "shared" / "data"
BASIC_TRAIN = SHARED_DATA / "BasicMotions_TRAIN.ts"
needs_basic_motions = pytest.mark.skipif(
    not BASIC_TRAIN.exists(), reason="BasicMotions .ts files not available"
)

SMALL = WindowSpec(seq_len=8, label_len=4, pred_len=4)


def write_csv(path: Path, rows: int = 100, *, header: str = "date,a,OT", edit=None) -> Path:
    """A 10-minute custom CSV; ``edit(lines)`` may change the text lines before writing."""
    start = np.datetime64("2021-03-01T00:00")
    lines = [header]
    for i in range(rows):
        stamp = str(start + np.timedelta64(10 * i, "m")).replace("T", " ")
        lines.append(f"{stamp}:00,{np.sin(i / 5):.6f},{i * 0.5:.1f}")
    if edit is not None:
        edit(lines)
    path.write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------- presets


@pytest.mark.parametrize(
    ("name", "preset"),
    [
        ("ETTh1.csv", "ett_hour"),
        ("ETTh2.csv", "ett_hour"),
        ("ETTm1.csv", "ett_minute"),
        ("weather.csv", "custom"),
        ("x_TRAIN.ts", "uea"),
        ("x.npy", "array"),
        ("x.npz", "array"),
    ],
)
def test_infer_preset(name: str, preset: str) -> None:
    assert infer_preset(name) == preset


def test_infer_preset_of_a_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"directory without \.ts files"):
        infer_preset(tmp_path)
    (tmp_path / "a_TRAIN.ts").write_text("")
    assert infer_preset(tmp_path) == "uea"


def test_infer_preset_unknown_suffix() -> None:
    with pytest.raises(DataError, match=r"data\.parquet.*pass --preset"):
        infer_preset("data.parquet")


def test_explicit_preset_overrides_the_name(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "ETTh9.csv")
    ds = load(path, WindowSpec(preset="custom", seq_len=8, label_len=4, pred_len=4))
    assert ds.preset == "custom"
    assert ds.spec.preset == "custom"


# ----------------------------------------------------------------------------- CSV input


def test_bom_crlf_and_trailing_blank_lines_load(tmp_path: Path) -> None:
    plain = write_csv(tmp_path / "plain.csv")
    messy = tmp_path / "messy.csv"
    text = plain.read_text()
    messy.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode() + b"\r\n\r\n  \n")
    a, b = load(plain, SMALL), load(messy, SMALL)
    assert a.variables == b.variables == ("a", "OT")
    np.testing.assert_array_equal(a.splits["test"].x, b.splits["test"].x)
    assert a.fingerprint == b.fingerprint


def test_loose_date_spellings(tmp_path: Path) -> None:
    iso = write_csv(tmp_path / "iso.csv")

    def slashes(lines: list[str]) -> None:
        for i in range(1, len(lines)):
            stamp, rest = lines[i].split(",", 1)
            day, time = stamp.split(" ")
            y, m, d = (int(p) for p in day.split("-"))
            h, mi, _ = (int(p) for p in time.split(":"))
            lines[i] = f"{y}/{m}/{d} {h}:{mi:02d},{rest}"

    loose = write_csv(tmp_path / "loose.csv", edit=slashes)
    assert loose.read_text().splitlines()[1].startswith("2021/3/1 0:00,")
    a, b = load(iso, SMALL), load(loose, SMALL)
    np.testing.assert_array_equal(a.splits["train"].x_mark, b.splits["train"].x_mark)


@pytest.mark.parametrize("offset", ["Z", "+05:00", "-0330"])
def test_utc_offsets_keep_the_wall_clock_time(tmp_path: Path, offset: str) -> None:
    """As pandas' ``to_datetime(...).dt.hour`` (TSLib's time features) reads them."""
    iso = write_csv(tmp_path / "iso.csv")

    def zoned(lines: list[str]) -> None:
        for i in range(1, len(lines)):
            stamp, rest = lines[i].split(",", 1)
            lines[i] = f"{stamp.replace(' ', 'T')}{offset},{rest}"

    path = write_csv(tmp_path / "zoned.csv", edit=zoned)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a, b = load(iso, SMALL), load(path, SMALL)
    np.testing.assert_array_equal(a.splits["train"].x_mark, b.splits["train"].x_mark)


@pytest.mark.parametrize("stamp", ["1614556800", "20210301"])
def test_digits_alone_are_no_date(tmp_path: Path, stamp: str) -> None:
    """numpy would read a Unix time or a compact date as a year far in the future."""

    def digits(lines: list[str]) -> None:
        lines[2] = stamp + "," + lines[2].split(",", 1)[1]

    path = write_csv(tmp_path / "digits.csv", edit=digits)
    with pytest.raises(DataError, match=rf"digits\.csv line 3, column 'date': .*{stamp}"):
        load(path, SMALL)


def test_values_beyond_float32_are_refused_where_they_are(tmp_path: Path) -> None:
    def huge(lines: list[str]) -> None:
        lines[5] = lines[5].rsplit(",", 1)[0] + ",1e39"

    path = write_csv(tmp_path / "huge.csv", edit=huge)
    raw = WindowSpec(seq_len=8, label_len=4, pred_len=4, scale=False, splits=("train",))
    with pytest.raises(DataError, match=r"huge\.csv line 6, column 'OT': 1e\+39 is beyond"):
        load(path, raw)


def test_missing_cells_follow_the_nan_policy(tmp_path: Path) -> None:
    def holes(lines: list[str]) -> None:
        lines[3] = lines[3].rsplit(",", 1)[0] + ","  # empty OT in data row 3 (file line 4)
        lines[4] = lines[4].rsplit(",", 1)[0] + ",NA"  # pandas NA string, line 5

    path = write_csv(tmp_path / "holes.csv", edit=holes)
    with pytest.raises(DataError, match=r"holes\.csv line 4, column 'OT': missing value"):
        load(path, SMALL)
    raw = WindowSpec(seq_len=8, label_len=4, pred_len=4, scale=False, splits=("train",))
    filled = load(path, WindowSpec(**{**raw.__dict__, "nan": "interpolate"}))
    ot = filled.splits["train"].series[:, 1]
    # rows 2 and 3 (0-based data rows) lie between 0.5 (row 1) and 2.0 (row 4): 1.0 and 1.5
    np.testing.assert_array_equal(ot[:6], np.float32([0.0, 0.5, 1.0, 1.5, 2.0, 2.5]))
    zeroed = load(path, WindowSpec(**{**raw.__dict__, "nan": "zero"}))
    np.testing.assert_array_equal(zeroed.splits["train"].series[2:4, 1], 0.0)


def test_interpolation_holds_the_edges(tmp_path: Path) -> None:
    def edges(lines: list[str]) -> None:
        for i in (1, 2, len(lines) - 1):
            lines[i] = lines[i].rsplit(",", 1)[0] + ",nan"

    path = write_csv(tmp_path / "edges.csv", edit=edges)
    spec = WindowSpec(seq_len=8, label_len=4, pred_len=4, scale=False, nan="interpolate")
    ds = load(path, spec)
    ot_all = np.concatenate([ds.splits["train"].series[:, 1], ds.splits["test"].series[-1:, 1]])
    assert ot_all[0] == ot_all[1] == 1.0  # first real value (row 2) held backwards
    assert ot_all[-1] == np.float32(98 * 0.5)  # last real value held forwards


def test_infinite_cell_is_named(tmp_path: Path) -> None:
    def inf(lines: list[str]) -> None:
        lines[10] = lines[10].split(",")[0] + ",inf,1.0"

    path = write_csv(tmp_path / "inf.csv", edit=inf)
    with pytest.raises(DataError, match=r"line 11, column 'a': infinite value \(inf\)"):
        load(path, SMALL)


def test_custom_needs_its_target(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", header="date,a,b")
    with pytest.raises(DataError, match=r"no target column 'OT' .*variables are a, b"):
        load(path, SMALL)


def test_ett_m_does_not_need_the_target_but_s_does(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "ETTh1.csv", 14400, header="date,a,b")
    assert load(path, WindowSpec(splits=("test",))).variables == ("a", "b")
    with pytest.raises(DataError, match=r"no target column 'OT' \(option --target\)"):
        load(path, WindowSpec(features="S"))


# ----------------------------------------------------------------------------- CSV errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: no such file"):
        load(tmp_path / "nope.csv")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("\n\n")
    with pytest.raises(DataError, match=r"empty\.csv: the file is empty"):
        load(path)


def test_header_only(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("date,a,OT\n")
    with pytest.raises(DataError, match=r"h\.csv: has a header \(line 1\) but no data rows"):
        load(path)


def test_no_date_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", header="time,a,OT")
    with pytest.raises(DataError, match=r"d\.csv: no 'date' column \(columns: time, a, OT\)"):
        load(path, SMALL)


@pytest.mark.parametrize("preset", ["ett_hour", "custom"])
def test_only_a_date_column(tmp_path: Path, preset: str) -> None:
    path = tmp_path / "dates.csv"
    path.write_text("date\n" + "\n".join(f"2020-01-01 {h:02d}:00:00" for h in range(24)) + "\n")
    spec = dataclasses.replace(SMALL, preset=preset)
    with pytest.raises(DataError, match=r"dates\.csv line 1: no variable columns besides 'date'"):
        load(path, spec)


def test_non_numeric_cell_names_line_and_column(tmp_path: Path) -> None:
    def bad(lines: list[str]) -> None:
        lines[42] = lines[42].split(",")[0] + ",0.5,abc"

    path = write_csv(tmp_path / "n.csv", edit=bad)
    with pytest.raises(DataError, match=r"n\.csv line 43, column 'OT': 'abc' is not a number"):
        load(path, SMALL)


def test_unparseable_date_names_the_line(tmp_path: Path) -> None:
    def bad(lines: list[str]) -> None:
        lines[7] = "yesterday," + lines[7].split(",", 1)[1]

    path = write_csv(tmp_path / "dt.csv", edit=bad)
    with pytest.raises(DataError, match=r"dt\.csv line 8, column 'date': cannot read 'yesterday'"):
        load(path, SMALL)


def test_empty_date_names_the_line(tmp_path: Path) -> None:
    def bad(lines: list[str]) -> None:
        lines[5] = "," + lines[5].split(",", 1)[1]

    path = write_csv(tmp_path / "dt.csv", edit=bad)
    with pytest.raises(DataError, match=r"dt\.csv line 6, column 'date': '' is not a date"):
        load(path, SMALL)


def test_ragged_row(tmp_path: Path) -> None:
    def bad(lines: list[str]) -> None:
        lines[9] += ",7"

    path = write_csv(tmp_path / "r.csv", edit=bad)
    with pytest.raises(DataError, match=r"r\.csv line 10: 4 fields, but the header has 3"):
        load(path, SMALL)


def test_duplicate_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "dup.csv", header="date,OT,OT")
    with pytest.raises(DataError, match=r"line 1: duplicate column name\(s\) OT"):
        load(path, SMALL)


def test_too_few_rows_for_ett_borders(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "ETTh1.csv", 1000)
    with pytest.raises(
        DataError, match=r"has 1000 data rows, but preset 'ett_hour' needs at least"
    ):
        load(path)
    # only the training border matters when only train is asked for — still 8640 rows
    with pytest.raises(DataError, match="needs at least 8640"):
        load(path, WindowSpec(splits=("train",)))


def test_too_few_rows_for_one_window(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", 100)
    # custom: test split = 20 + seq_len rows
    with pytest.raises(DataError, match=r"split 'test' has 60 rows .* needs at least 90"):
        load(path, WindowSpec(seq_len=40, label_len=0, pred_len=50, splits=("test",)))


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("date,température\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 text"):
        load(path, SMALL)


def test_unsupported_freq_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unsupported --freq 'fortnight'"):
        load(ETTH1, WindowSpec(freq="fortnight"))


# ----------------------------------------------------------------------------- UEA .ts


def parse_ts_independently(path: Path) -> tuple[list[str], list[list[list[float]]], list[str]]:
    """Classes, per-sample per-dimension values and labels, by plain string handling."""
    classes: list[str] = []
    samples, labels = [], []
    in_data = False
    for line in path.read_text().splitlines():
        if line.lower().startswith("@classlabel"):
            classes = line.split()[2:]
        elif line.lower().startswith("@data"):
            in_data = True
        elif in_data and line.strip():
            *dims, label = line.split(":")
            samples.append([[float(v) for v in d.split(",")] for d in dims])
            labels.append(label)
    return classes, samples, labels


@needs_basic_motions
def test_basic_motions() -> None:
    ds = load(BASIC_TRAIN, WindowSpec(scale=False))
    assert ds.preset == "uea"
    assert ds.kind == "classification"
    assert list(ds.splits) == ["train", "test"]
    assert ds.variables == tuple(f"dim_{d}" for d in range(6))
    for name, file in [("train", BASIC_TRAIN), ("test", SHARED_DATA / "BasicMotions_TEST.ts")]:
        classes, samples, labels = parse_ts_independently(file)
        split = ds.splits[name]
        assert ds.classes == tuple(classes)
        assert split.x.shape == (40, 100, 6)
        assert len(set(labels)) == 4
        np.testing.assert_array_equal(split.labels, [classes.index(c) for c in labels])
        want = np.array(samples).transpose(0, 2, 1).astype(np.float32)
        np.testing.assert_array_equal(split.x, want)
        np.testing.assert_array_equal(split.lengths, 100)
        np.testing.assert_array_equal(split.starts, np.arange(40))
        assert split.y is split.x_mark is split.series is None


@needs_basic_motions
def test_basic_motions_scaling_uses_train_statistics() -> None:
    _, samples, _ = parse_ts_independently(BASIC_TRAIN)
    _, test_samples, _ = parse_ts_independently(SHARED_DATA / "BasicMotions_TEST.ts")
    train = np.array(samples).transpose(0, 2, 1).reshape(-1, 6)
    mean, std = train.mean(axis=0), train.std(axis=0)
    ds = load(BASIC_TRAIN, WindowSpec())
    np.testing.assert_allclose(ds.scaler_mean, mean, rtol=1e-12)
    np.testing.assert_allclose(ds.scaler_scale, std, rtol=1e-12)
    want = (np.array(test_samples).transpose(0, 2, 1) - mean) / std
    np.testing.assert_allclose(ds.splits["test"].x, want, rtol=1e-6, atol=1e-6)


@needs_basic_motions
def test_basic_motions_by_test_file_or_directory(tmp_path: Path) -> None:
    by_train = load(BASIC_TRAIN)
    for path in [SHARED_DATA / "BasicMotions_TEST.ts", SHARED_DATA]:
        if path == SHARED_DATA:  # the shared folder may hold other pairs: copy this one alone
            for split in ("TRAIN", "TEST"):
                shutil.copy(SHARED_DATA / f"BasicMotions_{split}.ts", tmp_path)
            path = tmp_path
        ds = load(path)
        assert list(ds.splits) == ["train", "test"]
        np.testing.assert_array_equal(ds.splits["test"].x, by_train.splits["test"].x)
        assert ds.fingerprint == by_train.fingerprint
    only_test = load(BASIC_TRAIN, WindowSpec(splits=("test",)))
    assert list(only_test.splits) == ["test"]
    np.testing.assert_array_equal(only_test.splits["test"].x, by_train.splits["test"].x)
    with pytest.raises(DataError, match=r"has split\(s\) train, test but --splits asked for val"):
        load(BASIC_TRAIN, WindowSpec(splits=("val",)))


def write_ts(path: Path, rows: list[str], *, header: str | None = None) -> Path:
    head = header or (
        "# a comment\n@problemName Toy\n@timeStamps false\n@missing true\n@univariate false\n"
        "@dimensions 2\n@equalLength false\n@classLabel true b a c\n@data\n"
    )
    path.write_text(head + "\n".join(rows) + "\n")
    return path


def test_unequal_lengths_pad_or_truncate(tmp_path: Path) -> None:
    path = write_ts(
        tmp_path / "Toy_TRAIN.ts",
        ["1,2,3,4:5,6,7,8:a", "1,2:3,4,5:b", "9,8,7,6,5,4:1,2,3,4,5,6:c"],
    )
    padded = load(path, WindowSpec(scale=False))
    x = padded.splits["train"].x
    assert x.shape == (3, 6, 2)
    np.testing.assert_array_equal(x[1, :, 0], [1, 2, 2, 2, 2, 2])
    np.testing.assert_array_equal(x[1, :, 1], [3, 4, 5, 5, 5, 5])
    np.testing.assert_array_equal(x[2, :, 0], [9, 8, 7, 6, 5, 4])
    np.testing.assert_array_equal(padded.splits["train"].lengths, [4, 3, 6])
    assert padded.classes == ("b", "a", "c")  # declaration order, not sorted
    np.testing.assert_array_equal(padded.splits["train"].labels, [1, 0, 2])
    cut = load(path, WindowSpec(scale=False, unequal="truncate")).splits["train"].x
    assert cut.shape == (3, 2, 2)
    np.testing.assert_array_equal(cut[2], [[9, 1], [8, 2]])


def test_scaler_ignores_padding(tmp_path: Path) -> None:
    path = write_ts(tmp_path / "Toy_TRAIN.ts", ["0,2:1,1,1,1:a", "4,4,4,4:3,3,3,3:b"])
    ds = load(path)
    real = np.array([0, 2, 4, 4, 4, 4.0])
    np.testing.assert_allclose(ds.scaler_mean[0], real.mean(), rtol=1e-15)
    np.testing.assert_allclose(ds.scaler_scale[0], real.std(), rtol=1e-14)


def test_ts_missing_values(tmp_path: Path) -> None:
    path = write_ts(tmp_path / "Toy_TRAIN.ts", ["1,2,3:1,1,1:a", "?,2,?,4,?:5,?,7,8,9:b"])
    with pytest.raises(DataError, match=r"Toy_TRAIN\.ts line 11, dimension dim_0, value index 0"):
        load(path)
    spec = WindowSpec(scale=False, nan="interpolate")
    x = load(path, spec).splits["train"].x
    np.testing.assert_array_equal(x[1, :, 0], np.interp(range(5), [1, 3], [2, 4]))
    np.testing.assert_array_equal(x[1, :, 1], [5, 6, 7, 8, 9])
    zero = load(path, WindowSpec(scale=False, nan="zero")).splits["train"].x
    np.testing.assert_array_equal(zero[1, :, 0], [0, 2, 0, 4, 0])


def test_ts_all_missing_cannot_be_interpolated(tmp_path: Path) -> None:
    path = write_ts(tmp_path / "Toy_TRAIN.ts", ["1,2:3,4:a", "?,?:1,2:b"])
    with pytest.raises(DataError, match=r"line 11, dimension dim_0: every value is missing"):
        load(path, WindowSpec(nan="interpolate"))


def test_unlabelled_ts(tmp_path: Path) -> None:
    header = "@problemName U\n@univariate true\n@classLabel false\n@data\n"
    ds = load(write_ts(tmp_path / "u.ts", ["1,2,3", "4,5,6"], header=header))
    assert ds.kind == "unlabelled"
    assert ds.classes is None
    assert ds.splits["train"].labels is None
    assert ds.splits["train"].x.shape == (2, 3, 1)


@pytest.mark.parametrize(
    ("rows", "header", "match"),
    [
        (["1,2:3,4:a", "1,2:b"], None, r"line 11: 1 dimension\(s\), expected 2"),
        (["1,2:3,4:z"], None, r"line 10: class label 'z' is not declared in @classLabel \(b a c\)"),
        (["1,2:3,x4:a"], None, r"line 10, dimension dim_1, value index 1: 'x4' is not a number"),
        (["1,,2:3,4,5:a"], None, r"line 10, dimension dim_0, value index 1: '' is not a number"),
        ([], "@problemName X\n@classLabel true a\n", r"no @data line"),
        (["1:a"], "@timeStamps true\n@classLabel true a\n@data\n", r"line 1: time-stamped"),
        (
            ["1,2,3:4,5,6:a", "1,2,3:4,5:b"],
            "@equalLength true\n@classLabel true a b\n@data\n",
            r"line 5, dimension dim_1: 2 values, but the header says @equalLength true and other "
            r"series have 3; complete the line, or declare @equalLength false",
        ),
        (  # every value agrees but the header: the header is what to correct
            ["1,2:4,5:a", "1,2:4,5:a"],
            "@equalLength true\n@seriesLength 3\n@classLabel true a\n@data\n",
            r"line 5: the first series has 2 values in every dimension, but the header says "
            r"@seriesLength 3; correct @seriesLength",
        ),
        (
            ["1,2,3:4,5,6:a", "1,2:4,5,6:a"],
            "@equalLength true\n@seriesLength 3\n@classLabel true a\n@data\n",
            r"line 6, dimension dim_0: 2 values, but the header says @equalLength true and "
            r"@seriesLength 3 and other series have 3; complete the line",
        ),
        (  # a file cut off inside its last line: values where the label should be
            ["1,2:3,4:a", "1,2:3,4:b", "1,2:3,"],
            "@dimensions 2\n@classLabel true a b\n@data\n",
            r"line 6: the line ends in values, not in its class label \(':<label>' after its 2 "
            r"dimensions\); the file looks cut off here",
        ),
        (["1:2.5"], "@targetLabel true\n@data\n", r"line 1: regression"),
        (["1:a"], "1,2,3\n@data\n", r"line 1: data before the @data line"),
        ([], None, r"no samples after the @data line"),
        (["1,2:3,4:a"], "@dimensions two\n@data\n", r"@dimensions needs a positive integer"),
        (["1,2:3,4:A"], "@classLabel true A B A\n@data\n", r"line 1: @classLabel names A twice"),
    ],
)
def test_malformed_ts(tmp_path: Path, rows: list[str], header: str | None, match: str) -> None:
    path = write_ts(tmp_path / "Bad_TRAIN.ts", rows, header=header)
    with pytest.raises(DataError, match=match):
        load(path)


def test_empty_ts(tmp_path: Path) -> None:
    path = tmp_path / "e.ts"
    path.write_text("\n")
    with pytest.raises(DataError, match=r"e\.ts: the file is empty"):
        load(path)


def test_ts_pair_must_agree(tmp_path: Path) -> None:
    write_ts(tmp_path / "P_TRAIN.ts", ["1,2:3,4:a"])
    test = write_ts(tmp_path / "P_TEST.ts", ["1,2:c"], header="@classLabel true a b c\n@data\n")
    with pytest.raises(DataError, match=r"P_TEST\.ts: 1 dimensions, but .*P_TRAIN\.ts has 2"):
        load(test)


def test_ts_test_labels_use_the_train_declaration(tmp_path: Path) -> None:
    write_ts(tmp_path / "P_TRAIN.ts", ["1,2:3,4:a", "1,2:3,4:c"])
    header = "@dimensions 2\n@classLabel true c a\n@data\n"
    write_ts(tmp_path / "P_TEST.ts", ["1,2:3,4:c", "5,6:7,8:a"], header=header)
    ds = load(tmp_path / "P_TRAIN.ts")
    assert ds.classes == ("b", "a", "c")
    np.testing.assert_array_equal(ds.splits["test"].labels, [2, 1])


# ----------------------------------------------------------------------------- arrays


def test_npy_is_one_unlabelled_train_split(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(5, 12, 3)).astype(np.float32)
    np.save(tmp_path / "w.npy", x)
    ds = load(tmp_path / "w.npy", WindowSpec(scale=False))
    assert ds.kind == "unlabelled"
    assert ds.variables == ("dim_0", "dim_1", "dim_2")
    np.testing.assert_array_equal(ds.splits["train"].x, x)
    np.testing.assert_array_equal(ds.splits["train"].lengths, 12)


def test_npz_with_string_labels(tmp_path: Path) -> None:
    x = np.arange(2 * 4 * 1, dtype=np.float64).reshape(2, 4, 1)
    np.savez(tmp_path / "l.npz", x=x, labels=np.array(["walk", "run"]))
    ds = load(tmp_path / "l.npz")
    assert ds.kind == "classification"
    assert ds.classes == ("run", "walk")
    np.testing.assert_array_equal(ds.splits["train"].labels, [1, 0])
    flat = x.reshape(-1)
    np.testing.assert_allclose(ds.splits["train"].x.reshape(-1), (flat - flat.mean()) / flat.std())


def test_npz_per_split_arrays(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    train, test = rng.normal(size=(6, 5, 2)), rng.normal(size=(3, 5, 2))
    np.savez(
        tmp_path / "s.npz", train_x=train, train_y=[3, 1, 3, 1, 1, 7], test_x=test, test_y=[7, 3, 3]
    )
    ds = load(tmp_path / "s.npz")
    assert list(ds.splits) == ["train", "test"]
    assert ds.classes == ("1", "3", "7")
    np.testing.assert_array_equal(ds.splits["test"].labels, [2, 1, 1])
    rows = train.reshape(-1, 2)
    want = (test - rows.mean(axis=0)) / rows.std(axis=0)
    np.testing.assert_allclose(ds.splits["test"].x, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"values": np.zeros((2, 3, 1))}, r"holds values; expected 'x' \(N, T, V\)"),
        (
            {"x": np.zeros((2, 3))},
            r"array 'x' is float64 \(2, 3\); expected non-empty numeric \(N, T, V\) samples "
            r"\(N univariate samples of length T: x\[\.\.\., None\]; one \(T, V\) multivariate "
            r"sample: x\[None\]\)",
        ),
        ({"x": np.zeros(5)}, r"\(5,\); .* \(one univariate sample: x\[None, :, None\]"),
        (  # labels under both names, or an array nothing reads: refused, never dropped
            {"x": np.zeros((2, 3, 1)), "labels": [0, 1], "y": [1, 0]},
            r"holds y besides labels, x, and tsfs would not read them",
        ),
        (
            {"train_x": np.zeros((2, 3, 1)), "tset_x": np.zeros((2, 3, 1))},
            r"holds tset_x besides train_x",
        ),
        ({"x": np.zeros((2, 3, 1)), "labels": np.zeros(3)}, r"labels 'labels' are float64 \(3,\)"),
        (
            {"train_x": np.zeros((2, 3, 1)), "test_x": np.zeros((2, 4, 1))},
            r"splits differ in \(T, V\)",
        ),
        (
            {"train_x": np.zeros((2, 3, 1)), "train_labels": [0, 1], "test_x": np.zeros((2, 3, 1))},
            r"labels for train but not for test",
        ),
        (
            {"x": np.zeros((2, 3, 1)), "train_x": np.zeros((2, 3, 1))},
            r"holds both 'x' and train_x; keep one layout",
        ),
        ({"test_x": np.ones((2, 3, 1))}, r"give arrays 'x' or 'train_x'"),
    ],
)
def test_bad_arrays(tmp_path: Path, arrays: dict, match: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=match):
        load(tmp_path / "bad.npz")


def test_array_nan_is_named(tmp_path: Path) -> None:
    x = np.ones((3, 4, 2))
    x[2, 1, 0] = np.nan
    np.save(tmp_path / "n.npy", x)
    with pytest.raises(DataError, match=r"n\.npy: x\[2, 1, 0\]: missing value"):
        load(tmp_path / "n.npy")
    filled = load(tmp_path / "n.npy", WindowSpec(nan="interpolate", scale=False))
    np.testing.assert_array_equal(filled.splits["train"].x[2, :, 0], 1.0)


def test_values_scaling_or_float32_cannot_hold_are_named(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(6, 8, 2))
    x[4, 3, 1] = 1e39  # finite in float64, beyond float32
    np.save(tmp_path / "big.npy", x)
    with pytest.raises(DataError, match=r"big\.npy: train sample 4, step 3, variable 1: 1e\+39"):
        load(tmp_path / "big.npy", WindowSpec(scale=False))
    x[:, :, 1] *= 1e200  # the scaler's sums overflow float64
    np.save(tmp_path / "huge.npy", x)
    with pytest.raises(DataError, match=r"huge\.npy: variable 1 has values too large to stand"):
        load(tmp_path / "huge.npy")


def test_not_an_array_file(tmp_path: Path) -> None:
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match=r"junk\.npy: not a \.npy/\.npz array file") as info:
        load(tmp_path / "junk.npy")
    assert "pickle" not in str(info.value)  # numpy's refusal would advise allow_pickle
    csv = write_csv(tmp_path / "d.csv")
    with pytest.raises(DataError, match=r"d\.csv: not a \.npy/\.npz array file.*--preset"):
        load(csv, WindowSpec(preset="array"))


def test_truncated_array_files(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(8, 64, 3))
    np.savez(tmp_path / "z.npz", x=x)
    np.save(tmp_path / "z.npy", x)
    for name in ("z.npz", "z.npy"):
        whole = (tmp_path / name).read_bytes()
        (tmp_path / f"cut_{name}").write_bytes(whole[: len(whole) // 2])
        with pytest.raises(DataError, match=rf"cut_{name}: not a readable \.npy/\.npz array"):
            load(tmp_path / f"cut_{name}")


def test_sample_presets_need_train_to_scale(tmp_path: Path) -> None:
    np.savez(tmp_path / "t.npz", test_x=np.ones((2, 3, 1)))
    with pytest.raises(DataError, match="no training samples to fit the scaler"):
        load(tmp_path / "t.npz")
    assert len(load(tmp_path / "t.npz", WindowSpec(scale=False)).splits["test"]) == 2


def test_block_wise_parsing_matches_and_names_lines(tmp_path: Path, monkeypatch) -> None:
    from tsfs.pipeline import sources

    def bad(lines: list[str]) -> None:
        lines[77] = lines[77].split(",")[0] + ",x,1"

    path = write_csv(tmp_path / "b.csv")
    whole = load(path, SMALL)
    monkeypatch.setattr(sources, "_BLOCK_CELLS", 6)  # three rows of two columns per block
    blocks = load(path, SMALL)
    np.testing.assert_array_equal(whole.splits["train"].series, blocks.splits["train"].series)
    with pytest.raises(DataError, match=r"line 78, column 'a': 'x' is not a number"):
        load(write_csv(tmp_path / "bad.csv", edit=bad), SMALL)


def test_uea_pairs_are_found_whatever_the_case(tmp_path: Path) -> None:
    rows = ["1,2,3,4:5,6,7,8:a", "9,8,7,6:5,4,3,2:b"]
    for train, test in (("Foo_TRAIN.ts", "Foo_Test.ts"), ("bar_train.ts", "bar_test.ts")):
        write_ts(tmp_path / train, rows)
        write_ts(tmp_path / test, rows[:1])
        for given in (train, test):
            ds = load(tmp_path / given)
            assert {k: len(v) for k, v in ds.splits.items()} == {"train": 2, "test": 1}, given


def test_header_truth_values_in_any_case(tmp_path: Path) -> None:
    header = "@problemName C\n@dimensions 1\n@timeStamps False\n@classLabel True a b\n@data\n"
    ds = load(write_ts(tmp_path / "C_TRAIN.ts", ["1,2,3:a", "3,2,1:b"], header=header))
    assert ds.classes == ("a", "b")
    assert ds.splits["train"].x.shape == (2, 3, 1)


def test_npz_labels_of_different_kinds_across_splits(tmp_path: Path) -> None:
    x = np.ones((3, 5, 2))
    path = tmp_path / "c.npz"
    np.savez(path, train_x=x, train_labels=[0, 1, 2], test_x=x, test_labels=["dog", "cat", "emu"])
    with pytest.raises(DataError, match=r"c\.npz: labels are train numbers, test strings"):
        load(path)


@pytest.mark.parametrize(
    ("edit_line", "message"),
    [
        ("swap", r"t\.csv line 12: date .* is earlier than the row before's; sort the file"),
        ("repeat", r"t\.csv line 12: date .* repeats the row before's; .*remove the duplicate"),
    ],
)
def test_rows_out_of_time_order_are_refused(tmp_path: Path, edit_line: str, message: str) -> None:
    """Time-Series-Library takes rows as they come: shuffled or repeated times would put
    unrelated values in one window without a word."""

    def edit(lines: list[str]) -> None:
        if edit_line == "swap":
            lines[10], lines[11] = lines[11], lines[10]
        else:
            lines[11] = lines[10].split(",", 1)[0] + "," + lines[11].split(",", 1)[1]

    path = write_csv(tmp_path / "t.csv", edit=edit)
    with pytest.raises(DataError, match=message):
        load(path, SMALL)


@pytest.mark.parametrize("sep", [";", "\t"])
def test_another_field_separator_is_named(tmp_path: Path, sep: str) -> None:
    path = write_csv(tmp_path / "s.csv", header=sep.join(["date", "a", "OT"]))
    path.write_text(path.read_text().replace(",", sep))
    said = re.escape(repr(sep))
    with pytest.raises(DataError, match=rf"s\.csv line 1: fields are separated by {said}; "):
        load(path, SMALL)


# ----------------------------------------------------------------------------- edge values


@pytest.mark.parametrize("line", [30, 99])
def test_unclosed_quote_is_named_where_it_opens(tmp_path: Path, line: int) -> None:
    def open_quote(lines: list[str]) -> None:
        lines[line - 1] = lines[line - 1].replace(",", ',"', 1)

    # csv's reader runs on to the file's end, or past its field size limit far below
    many = 40_000 if line == 30 else 100
    path = write_csv(tmp_path / "q.csv", many, edit=open_quote)
    with pytest.raises(DataError, match=rf"q\.csv line {line}: a quoted field runs on") as info:
        load(path, WindowSpec(seq_len=8, label_len=4, pred_len=4))
    assert "close or remove the quote" in str(info.value)
    assert "field limit" not in str(info.value)


def test_values_float32_flattens_are_refused(tmp_path: Path) -> None:
    def shrink(lines: list[str]) -> None:
        for i in range(1, len(lines)):
            stamp, a, ot = lines[i].split(",")
            lines[i] = f"{stamp},{float(a) * 1e-300!r},{ot}"

    path = write_csv(tmp_path / "tiny.csv", edit=shrink)
    small = WindowSpec(seq_len=8, label_len=4, pred_len=4)
    for spec in (small, dataclasses.replace(small, scale=False)):
        with pytest.raises(DataError, match=r"tiny\.csv: variable 0 varies from -9\.9999e-301 to"):
            load(path, spec)
    x = np.random.default_rng(0).normal(size=(4, 8, 2))
    x[..., 1] *= 1e-300
    np.save(tmp_path / "tiny.npy", x)
    with pytest.raises(DataError, match=r"variable 1 varies .* holds every value as 0; rescale"):
        load(tmp_path / "tiny.npy")


def test_values_beyond_float32_are_standardised_like_any_other(tmp_path: Path) -> None:
    """As Time-Series-Library (float64 until scaled): a column in units of 1e40 gives the
    same standardised rows as the column itself; only unscaled rows must fit float32."""

    def grow(lines: list[str]) -> None:
        for i in range(1, len(lines)):
            stamp, a, ot = lines[i].split(",")
            lines[i] = f"{stamp},{float(a) * 1e40!r},{ot}"

    small = WindowSpec(seq_len=8, label_len=4, pred_len=4)
    plain = load(write_csv(tmp_path / "plain.csv"), small)
    big = load(write_csv(tmp_path / "big.csv", edit=grow), small)
    for name, split in plain.splits.items():
        np.testing.assert_allclose(big.splits[name].x, split.x, rtol=1e-6, atol=1e-6)
    with pytest.raises(DataError, match=r"big\.csv line 3, column 'a': 1\.98\d*e\+39 is beyond"):
        load(tmp_path / "big.csv", dataclasses.replace(small, scale=False))


def test_unscaled_values_leave_revin_room_in_float32(tmp_path: Path) -> None:
    """A row spanning ±2e38 fits float32, but its window's RevIN (x − mean in float32) does
    not: features were stored as inf and NaN and images refused mid-run. Such values are
    refused when the file is read, naming the file's cell or the array's position."""

    def grow(lines: list[str]) -> None:
        stamp, _a, ot = lines[7].split(",")
        lines[7] = f"{stamp},2e38,{ot}"

    raw = WindowSpec(seq_len=8, label_len=4, pred_len=4, scale=False)
    with pytest.raises(DataError, match=r"edge\.csv line 8, column 'a': 2e\+38 is beyond ±1e\+38"):
        load(write_csv(tmp_path / "edge.csv", edit=grow), raw)
    x = np.random.default_rng(0).normal(size=(6, 8, 2))
    x[2, 5, 0] = -3.0e38  # finite in float32
    np.save(tmp_path / "edge.npy", x)
    with pytest.raises(DataError, match=r"edge\.npy: train sample 2, step 5, variable 0: -3e\+38"):
        load(tmp_path / "edge.npy", WindowSpec(scale=False))
    x[2, 5, 0] = 0.99e38  # within the limit: its RevIN is finite
    np.save(tmp_path / "edge.npy", x)
    rows = load(tmp_path / "edge.npy", WindowSpec(scale=False)).splits["train"].x
    z, _, _ = revin(np.ascontiguousarray(rows[2].T))
    assert np.isfinite(z).all()
