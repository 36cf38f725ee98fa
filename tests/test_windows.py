"""TSLib forecasting windows against a re-statement of Time-Series-Library's data loaders.

The oracle below restates ``Dataset_ETT_hour`` / ``Dataset_Custom`` (``__read_data__`` and
``__getitem__``) with the csv module and plain numpy: a hand-fitted StandardScaler (population
std) on the training rows, ``x = data_x[i:i+T]``, ``y = data_x[i+T-label_len:i+T+pred_len]``.
"""

from __future__ import annotations

import csv
import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pytest

from tsfs.errors import DataError, InputError
from tsfs.pipeline.sources import load
from tsfs.pipeline.windows import (
    fit_standard_scaler,
    forecast_borders,
    window_count,
)
from tsfs.specs import WindowSpec

ETTH1 = Path(__file__).parents[1] / "data" / "ETTh1.csv"


def read_csv(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [r[0] for r in rows[1:]], np.array([r[1:] for r in rows[1:]], dtype=float)


@pytest.fixture(scope="module")
def etth1() -> tuple[list[str], list[str], np.ndarray]:
    return read_csv(ETTH1)


class TslibOracle:
    """Dataset_ETT_hour / Dataset_Custom restated: one split's ``__getitem__`` and ``__len__``."""

    def __init__(self, data: np.ndarray, b1s: list[int], b2s: list[int], flag: int, size: tuple):
        self.seq_len, self.label_len, self.pred_len = size
        train = data[b1s[0] : b2s[0]]
        mean, std = train.mean(axis=0), train.std(axis=0)
        scaled = (data - mean) / std
        self.data_x = scaled[b1s[flag] : b2s[flag]]

    def __len__(self) -> int:
        return len(self.data_x) - self.seq_len - self.pred_len + 1

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        s_end = index + self.seq_len
        r_begin = s_end - self.label_len
        r_end = r_begin + self.label_len + self.pred_len
        return self.data_x[index:s_end], self.data_x[r_begin:r_end]


ETT_HOUR_B1 = [0, 12 * 30 * 24, 12 * 30 * 24 + 4 * 30 * 24]  # minus seq_len for val/test
ETT_HOUR_B2 = [12 * 30 * 24, 12 * 30 * 24 + 4 * 30 * 24, 12 * 30 * 24 + 8 * 30 * 24]


def ett_oracle(data: np.ndarray, flag: int, size: tuple[int, int, int]) -> TslibOracle:
    b1s = [ETT_HOUR_B1[0], ETT_HOUR_B1[1] - size[0], ETT_HOUR_B1[2] - size[0]]
    return TslibOracle(data, b1s, ETT_HOUR_B2, flag, size)


def assert_float32_close(got: np.ndarray, want: np.ndarray) -> None:
    # Scaling is float64 then one rounding to float32 on both sides; the scalers' variance
    # formulas differ in the last float64 bits, which can move a value by one float32 ulp.
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want.astype(np.float32), rtol=2e-7, atol=1e-7)


@pytest.mark.parametrize(
    ("seq_len", "counts"), [(96, (8449, 2785, 2785)), (512, (8033, 2785, 2785))]
)
def test_etth1_window_counts(seq_len: int, counts: tuple[int, int, int]) -> None:
    ds = load(ETTH1, WindowSpec(seq_len=seq_len, label_len=48, pred_len=96))
    assert ds.preset == "ett_hour"
    assert tuple(len(s) for s in ds.splits.values()) == counts
    assert list(ds.splits) == ["train", "val", "test"]


@pytest.mark.parametrize("size", [(96, 48, 96), (512, 48, 96), (336, 0, 720)])
def test_etth1_windows_equal_tslib(etth1, size: tuple[int, int, int]) -> None:
    header, _, data = etth1
    seq_len, label_len, pred_len = size
    ds = load(ETTH1, WindowSpec(seq_len=seq_len, label_len=label_len, pred_len=pred_len))
    assert ds.variables == tuple(header[1:])
    train = data[: ETT_HOUR_B2[0]]
    np.testing.assert_array_equal(ds.scaler_mean, train.mean(axis=0))
    np.testing.assert_allclose(ds.scaler_scale, train.std(axis=0), rtol=1e-13)
    rng = np.random.default_rng(1)
    for flag, split in enumerate(ds.splits.values()):
        oracle = ett_oracle(data, flag, size)
        assert len(split) == len(oracle)
        for i in [0, 1, len(oracle) - 1, *rng.integers(0, len(oracle), 20)]:
            seq_x, seq_y = oracle[int(i)]
            assert_float32_close(split.x[i], seq_x)
            assert_float32_close(split.y[i], seq_y)
        b1 = ETT_HOUR_B1[flag] - (seq_len if flag else 0)
        np.testing.assert_array_equal(split.starts, b1 + np.arange(len(oracle)))
        np.testing.assert_array_equal(split.lengths, seq_len)


def test_etth1_time_marks_match_datetime(etth1) -> None:
    _, dates, _ = etth1
    ds = load(ETTH1, WindowSpec())
    test = ds.splits["test"]
    for i in [0, 7, 2784]:
        start = int(test.starts[i])
        for offset, mark in [(0, test.x_mark[i, 0]), (95, test.x_mark[i, 95])]:
            d = dt.datetime.fromisoformat(dates[start + offset])
            want = [
                d.hour / 23 - 0.5,
                d.weekday() / 6 - 0.5,
                (d.day - 1) / 30 - 0.5,
                (d.timetuple().tm_yday - 1) / 365 - 0.5,
            ]
            np.testing.assert_array_equal(mark, np.float32(want))
        # y_mark starts label_len rows before the end of the input window
        d = dt.datetime.fromisoformat(dates[start + 96 - 48])
        assert test.y_mark[i, 0, 0] == np.float32(d.hour / 23 - 0.5)


def test_windows_are_read_only_views_of_one_array() -> None:
    ds = load(ETTH1, WindowSpec())
    train, val = ds.splits["train"], ds.splits["val"]
    assert np.shares_memory(train.x, train.series)
    assert np.shares_memory(train.y, train.series)
    assert np.shares_memory(train.series, val.series)  # both slice the one scaled array
    assert not train.x.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        train.x[0, 0, 0] = 1.0
    np.testing.assert_array_equal(train.x[5], train.series[5:101])


def test_stride(etth1) -> None:
    _, _, data = etth1
    ds = load(ETTH1, WindowSpec(stride=7, splits=("val",)))
    val = ds.splits["val"]
    oracle = ett_oracle(data, 1, (96, 48, 96))
    assert len(val) == (len(oracle.data_x) - 96 - 96) // 7 + 1
    np.testing.assert_array_equal(val.starts, ETT_HOUR_B1[1] - 96 + 7 * np.arange(len(val)))
    for i in [0, 3, len(val) - 1]:
        seq_x, seq_y = oracle[7 * i]
        assert_float32_close(val.x[i], seq_x)
        assert_float32_close(val.y[i], seq_y)


def test_scaler_is_fitted_on_train_even_when_only_test_is_asked_for() -> None:
    full = load(ETTH1, WindowSpec())
    only = load(ETTH1, WindowSpec(splits=("test",)))
    assert list(only.splits) == ["test"]
    np.testing.assert_array_equal(only.splits["test"].x, full.splits["test"].x)
    np.testing.assert_array_equal(only.scaler_mean, full.scaler_mean)


def test_no_scaling_gives_raw_values(etth1) -> None:
    _, _, data = etth1
    ds = load(ETTH1, WindowSpec(scale=False, splits=("train",)))
    np.testing.assert_array_equal(ds.splits["train"].x[10], data[10:106].astype(np.float32))
    np.testing.assert_array_equal(ds.scaler_scale, 1.0)


def test_features_s_and_ms(etth1) -> None:
    header, _, data = etth1
    m = load(ETTH1, WindowSpec(features="M"))
    ms = load(ETTH1, WindowSpec(features="MS"))
    s = load(ETTH1, WindowSpec(features="S", target="OT"))
    assert ms.variables == m.variables
    np.testing.assert_array_equal(ms.splits["val"].x, m.splits["val"].x)
    assert s.variables == ("OT",)
    ot = data[:, header.index("OT") - 1 : header.index("OT")]
    oracle = ett_oracle(ot, 2, (96, 48, 96))
    seq_x, seq_y = oracle[100]
    assert s.splits["test"].x.shape[2] == 1
    assert_float32_close(s.splits["test"].x[100], seq_x)
    assert_float32_close(s.splits["test"].y[100], seq_y)
    s_hull = load(ETTH1, WindowSpec(features="S", target="HULL"))
    assert s_hull.variables == ("HULL",)
    # MS on ETT scores the file's last column, as TSLib: another target would be ignored
    with pytest.raises(DataError, match=r"--target HULL with --features MS: .* last column, OT"):
        load(ETTH1, WindowSpec(features="MS", target="HULL"))


def write_custom(path: Path, rows: int, seed: int = 0) -> np.ndarray:
    """date, a, OT, b with the target not last; returns the values in file column order."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(rows, 3)).cumsum(axis=0)
    start = dt.datetime(2020, 1, 1)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["date", "a", "OT", "b"])
        for i, row in enumerate(values):
            stamp = (start + dt.timedelta(minutes=10 * i)).strftime("%Y-%m-%d %H:%M:%S")
            w.writerow([stamp, *(repr(float(v)) for v in row)])
    return values


def test_custom_borders_and_reordering(tmp_path: Path) -> None:
    path = tmp_path / "weather.csv"
    values = write_custom(path, 1000)
    spec = WindowSpec(seq_len=24, label_len=12, pred_len=12, freq="10min")
    ds = load(path, spec)
    assert ds.preset == "custom"
    assert ds.variables == ("a", "b", "OT")  # Dataset_Custom: [date, *others, target]
    reordered = values[:, [0, 2, 1]]
    num_train, num_test = int(1000 * 0.7), int(1000 * 0.2)
    num_val = 1000 - num_train - num_test
    b1s = [0, num_train - 24, 1000 - num_test - 24]
    b2s = [num_train, num_train + num_val, 1000]
    assert forecast_borders("custom", 1000, 24) == (tuple(b1s), tuple(b2s))
    for flag, split in enumerate(ds.splits.values()):
        oracle = TslibOracle(reordered, b1s, b2s, flag, (24, 12, 12))
        assert len(split) == len(oracle) == b2s[flag] - b1s[flag] - 36 + 1
        for i in [0, len(oracle) // 2, len(oracle) - 1]:
            seq_x, seq_y = oracle[i]
            assert_float32_close(split.x[i], seq_x)
            assert_float32_close(split.y[i], seq_y)
        assert split.starts[0] == b1s[flag]
    assert ds.splits["train"].x_mark.shape == (665, 24, 5)  # 10min: five minute-level features


def test_ett_minute_borders(tmp_path: Path) -> None:
    rows = 4 * 20 * 30 * 24
    start = np.datetime64("2016-07-01T00:00")
    dates = start + np.arange(rows) * np.timedelta64(15, "m")
    path = tmp_path / "ETTm1.csv"
    with path.open("w") as f:
        f.write("date,OT\n")
        f.writelines(f"{str(d).replace('T', ' ')}:00,{i % 97}.5\n" for i, d in enumerate(dates))
    ds = load(path, WindowSpec(seq_len=96, pred_len=96, freq="15min"))
    assert ds.preset == "ett_minute"
    b1s, b2s = forecast_borders("ett_minute", rows, 96)
    assert b2s == (4 * 8640, 4 * 11520, 4 * 14400)
    assert b1s == (0, 4 * 8640 - 96, 4 * 11520 - 96)
    for (b1, b2), split in zip(zip(b1s, b2s, strict=True), ds.splits.values(), strict=True):
        assert len(split) == b2 - b1 - 192 + 1
        assert split.starts[0] == b1


def test_window_count() -> None:
    assert window_count(100, 10, 5) == 86
    assert window_count(100, 10, 5, stride=10) == 9  # starts 0, 10, …, 80
    assert window_count(14, 10, 5) == 0


def test_standard_scaler_matches_population_std_and_guards_constants() -> None:
    rng = np.random.default_rng(3)
    rows = np.column_stack([rng.normal(5, 2, 1000), np.full(1000, 0.1), rng.normal(0, 1e-3, 1000)])
    mean, scale = fit_standard_scaler(rows)
    np.testing.assert_allclose(mean, rows.mean(axis=0), rtol=1e-15)
    np.testing.assert_allclose(scale[[0, 2]], rows.std(axis=0)[[0, 2]], rtol=1e-12)
    # 0.1 is not exact in binary: np.std gives ~1e-17 here, scikit-learn's guard gives 1.0
    assert scale[1] == 1.0


def test_inverse_transform_restores_the_file_values(etth1) -> None:
    _, _, data = etth1
    ds = load(ETTH1, WindowSpec(splits=("train",)))
    back = ds.inverse_transform(ds.splits["train"].x[0])
    np.testing.assert_allclose(back, data[:96], rtol=1e-6, atol=1e-5)
    # another width would broadcast into a wrong answer: refused, as scikit-learn does
    with pytest.raises(InputError, match=r"takes \(\.\.\., 7\) values.*got shape \(96, 1\)"):
        ds.inverse_transform(ds.splits["train"].x[0][:, -1:])
    # MS: a model's target-only forecast takes the target's scaling
    ms = load(ETTH1, WindowSpec(splits=("train",), features="MS"))
    target = ms.inverse_transform(ms.splits["train"].x[0][:, -1:])
    np.testing.assert_allclose(target[:, 0], data[:96, -1], rtol=1e-6, atol=1e-5)


def test_fingerprint_follows_content_and_spec_not_path(tmp_path: Path) -> None:
    a = tmp_path / "a.csv"
    write_custom(a, 300)
    b = tmp_path / "copy.csv"
    shutil.copy(a, b)
    spec = WindowSpec(seq_len=24, label_len=12, pred_len=12)
    base = load(a, spec).fingerprint
    assert load(b, spec).fingerprint == base
    assert load(a, WindowSpec(seq_len=48, label_len=12, pred_len=12)).fingerprint != base
    write_custom(b, 300, seed=1)
    assert load(b, spec).fingerprint != base


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (WindowSpec(seq_len=9000, splits=("val",)), r"split 'val' would start at row -360"),
        (
            WindowSpec(seq_len=2000, label_len=0, pred_len=3000),
            r"split 'val' has 4880 rows but --seq-len 2000 \+ --pred-len 3000 needs at least 5000",
        ),
        (WindowSpec(seq_len=9000), r"split 'train' has 8640 rows"),
    ],
)
def test_windows_longer_than_a_split(spec: WindowSpec, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load(ETTH1, spec)
