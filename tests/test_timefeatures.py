"""timeenc=1 time features against Python's own calendar and GluonTS's table, restated."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from tsfs.errors import InputError
from tsfs.pipeline.timefeatures import time_feature_names, time_features

# Year ends, leap days, ISO week 53 / week 1 straddling new year, and dates before the epoch.
STAMPS = [
    dt.datetime(2016, 7, 1, 0, 0, 0),
    dt.datetime(2016, 2, 29, 13, 45, 30),
    dt.datetime(2016, 12, 31, 23, 59, 59),
    dt.datetime(2017, 1, 1, 0, 0, 0),
    dt.datetime(2018, 12, 31, 6, 15, 0),
    dt.datetime(2020, 12, 31, 12, 0, 1),
    dt.datetime(2021, 1, 3, 18, 30, 0),
    dt.datetime(2021, 1, 4, 0, 0, 0),
    dt.datetime(1969, 12, 31, 23, 59, 59),
    dt.datetime(1900, 3, 1, 1, 1, 1),
    dt.datetime(2099, 6, 15, 22, 7, 45),
]

# GluonTS's definitions (TSLib utils/timefeatures.py), restated on a datetime.datetime.
ORACLE = {
    "SecondOfMinute": lambda d: d.second / 59.0 - 0.5,
    "MinuteOfHour": lambda d: d.minute / 59.0 - 0.5,
    "HourOfDay": lambda d: d.hour / 23.0 - 0.5,
    "DayOfWeek": lambda d: d.weekday() / 6.0 - 0.5,
    "DayOfMonth": lambda d: (d.day - 1) / 30.0 - 0.5,
    "DayOfYear": lambda d: (d.timetuple().tm_yday - 1) / 365.0 - 0.5,
    "MonthOfYear": lambda d: (d.month - 1) / 11.0 - 0.5,
    "WeekOfYear": lambda d: (d.isocalendar().week - 1) / 52.0 - 0.5,
}

DAILY = ("DayOfWeek", "DayOfMonth", "DayOfYear")
TABLE = {
    "h": ("HourOfDay", *DAILY),
    "H": ("HourOfDay", *DAILY),
    "t": ("MinuteOfHour", "HourOfDay", *DAILY),
    "min": ("MinuteOfHour", "HourOfDay", *DAILY),
    "15min": ("MinuteOfHour", "HourOfDay", *DAILY),
    "s": ("SecondOfMinute", "MinuteOfHour", "HourOfDay", *DAILY),
    "d": DAILY,
    "b": DAILY,
    "w": ("DayOfMonth", "WeekOfYear"),
    "W-SUN": ("DayOfMonth", "WeekOfYear"),
    "m": ("MonthOfYear",),
    "ME": ("MonthOfYear",),
    "q": ("MonthOfYear",),
    "y": (),
    "A": (),
}


@pytest.mark.parametrize(("freq", "names"), TABLE.items())
def test_features_match_the_calendar(freq: str, names: tuple[str, ...]) -> None:
    assert time_feature_names(freq) == names
    got = time_features(np.array(STAMPS, dtype="datetime64[s]"), freq)
    expected = np.array(
        [[ORACLE[name](d) for name in names] for d in STAMPS], dtype=np.float64
    ).reshape(len(STAMPS), len(names))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected.astype(np.float32))


def test_iso_week_on_every_day_of_a_decade() -> None:
    days = [dt.date(2015, 1, 1) + dt.timedelta(days=i) for i in range(3653)]
    got = time_features(np.array(days, dtype="datetime64[D]"), "W")[:, 1]
    expected = np.array([(d.isocalendar().week - 1) / 52.0 - 0.5 for d in days])
    np.testing.assert_array_equal(got, expected.astype(np.float32))


def test_values_stay_in_half_unit_range() -> None:
    rng = np.random.default_rng(0)
    seconds = rng.integers(-(2**31), 2**32, size=5000)
    feats = time_features(seconds.astype("datetime64[s]"), "s")
    assert feats.min() >= -0.5
    assert feats.max() <= 0.5


def test_accepts_iso_strings() -> None:
    got = time_features(["2016-07-01 05:00:00"], "h")
    expected = ORACLE["HourOfDay"](dt.datetime(2016, 7, 1, 5))
    assert got[0, 0] == np.float32(expected)


@pytest.mark.parametrize("freq", ["ms", "MS", "BH", "L", "", "xyz", "h-SUN", "1.5h"])
def test_unsupported_frequency_is_an_input_error(freq: str) -> None:
    with pytest.raises(InputError, match="unsupported --freq"):
        time_feature_names(freq)
