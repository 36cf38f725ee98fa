"""Calendar features of a time stamp, exactly as Time-Series-Library's ``timeenc=1``.

Time-Series-Library copies GluonTS's ``time_features_from_frequency_str``: the frequency string
picks a list of calendar features, each scaled to [-0.5, 0.5]:

==============  =================================
feature         formula (Monday = 0; ISO 8601 week)
==============  =================================
SecondOfMinute  ``second / 59 - 0.5``
MinuteOfHour    ``minute / 59 - 0.5``
HourOfDay       ``hour / 23 - 0.5``
DayOfWeek       ``weekday / 6 - 0.5``
DayOfMonth      ``(day - 1) / 30 - 0.5``
DayOfYear       ``(day_of_year - 1) / 365 - 0.5``
MonthOfYear     ``(month - 1) / 11 - 0.5``
WeekOfYear      ``(iso_week - 1) / 52 - 0.5``
==============  =================================

The frequency (a pandas offset alias with an optional leading multiple such as ``15min``,
case-insensitive as pandas 1.x treats it, so TSLib's ``h``, ``t``, ``m`` … work) selects them:

=============================  ==========================================================
frequency                      features, in this order
=============================  ==========================================================
``Y``/``A`` (yearly)           none (TSLib itself fails here: ``np.vstack`` of nothing)
``Q`` (quarterly), ``M``       MonthOfYear
``W`` (also ``W-SUN`` …)       DayOfMonth, WeekOfYear
``D``, ``B`` (business day)    DayOfWeek, DayOfMonth, DayOfYear
``H``                          HourOfDay, DayOfWeek, DayOfMonth, DayOfYear
``T``/``min``                  MinuteOfHour, HourOfDay, DayOfWeek, DayOfMonth, DayOfYear
``S``                          SecondOfMinute, MinuteOfHour, HourOfDay, DayOfWeek, DayOfMonth,
                               DayOfYear
=============================  ==========================================================

The values are computed in float64 (as pandas does) and rounded once to float32 (as TSLib's
``batch_x_mark.float()`` does). Dates are ``numpy.datetime64`` — no pandas needed.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from tsfs.errors import InputError

__all__ = ["time_feature_names", "time_features"]

_Feature = Callable[[npt.NDArray[np.datetime64]], npt.NDArray[np.float64]]


def _count(dates: npt.NDArray[np.datetime64], unit: str) -> npt.NDArray[np.int64]:
    """Whole ``unit``s since the epoch (numpy floors when it coarsens a datetime64)."""
    return dates.astype(f"datetime64[{unit}]").astype(np.int64)


def _since(dates: npt.NDArray[np.datetime64], unit: str, of: str) -> npt.NDArray[np.int64]:
    """Whole ``unit``s since the start of the enclosing ``of`` (e.g. minutes of the hour)."""
    start = dates.astype(f"datetime64[{of}]")
    return _count(dates, unit) - _count(start, unit)


def _weekday(dates: npt.NDArray[np.datetime64]) -> npt.NDArray[np.int64]:
    """Monday = 0 … Sunday = 6; day 0 of the epoch (1970-01-01) was a Thursday."""
    return (_count(dates, "D") + 3) % 7


def _iso_week(dates: npt.NDArray[np.datetime64]) -> npt.NDArray[np.int64]:
    """ISO 8601 week number: the week belongs to the year that holds its Thursday."""
    thursday = _count(dates, "D") + 3 - _weekday(dates)
    year_start = thursday.astype("datetime64[D]").astype("datetime64[Y]")
    return (thursday - _count(year_start, "D")) // 7 + 1


def _second_of_minute(d: npt.NDArray[np.datetime64]) -> npt.NDArray[np.float64]:
    return _since(d, "s", "m") / 59.0 - 0.5


def _minute_of_hour(d: npt.NDArray[np.datetime64]) -> npt.NDArray[np.float64]:
    return _since(d, "m", "h") / 59.0 - 0.5


def _hour_of_day(d: npt.NDArray[np.datetime64]) -> npt.NDArray[np.float64]:
    return _since(d, "h", "D") / 23.0 - 0.5


def _day_of_week(d: npt.NDArray[np.datetime64]) -> npt.NDArray[np.float64]:
    return _weekday(d) / 6.0 - 0.5


def _day_of_month(d: npt.NDArray[np.datetime64]) -> npt.NDArray[np.float64]:
    return _since(d, "D", "M") / 30.0 - 0.5


def _day_of_year(d: npt.NDArray[np.datetime64]) -> npt.NDArray[np.float64]:
    return _since(d, "D", "Y") / 365.0 - 0.5


def _month_of_year(d: npt.NDArray[np.datetime64]) -> npt.NDArray[np.float64]:
    return (d.astype("datetime64[M]").astype(np.int64) % 12) / 11.0 - 0.5


def _week_of_year(d: npt.NDArray[np.datetime64]) -> npt.NDArray[np.float64]:
    return (_iso_week(d) - 1) / 52.0 - 0.5


_FEATURES: dict[str, _Feature] = {
    "SecondOfMinute": _second_of_minute,
    "MinuteOfHour": _minute_of_hour,
    "HourOfDay": _hour_of_day,
    "DayOfWeek": _day_of_week,
    "DayOfMonth": _day_of_month,
    "DayOfYear": _day_of_year,
    "MonthOfYear": _month_of_year,
    "WeekOfYear": _week_of_year,
}

_DAILY = ("DayOfWeek", "DayOfMonth", "DayOfYear")
# Keyed by pandas 1.x's upper-cased offset alias (what TSLib's ``to_offset`` resolves).
_BY_GRANULARITY: dict[str, tuple[str, ...]] = {
    "A": (),
    "Y": (),
    "Q": ("MonthOfYear",),
    "M": ("MonthOfYear",),
    "W": ("DayOfMonth", "WeekOfYear"),
    "D": _DAILY,
    "B": _DAILY,
    "H": ("HourOfDay", *_DAILY),
    "T": ("MinuteOfHour", "HourOfDay", *_DAILY),
    "S": ("SecondOfMinute", "MinuteOfHour", "HourOfDay", *_DAILY),
}
# pandas >= 2.2 spells month/quarter/year ends ME/QE/YE; TSLib's pandas 1.x spelled them M/Q/A.
_ALIASES = {"MIN": "T", "ME": "M", "QE": "Q", "YE": "Y"}
_FREQ = re.compile(r"^\s*(\d*)\s*([A-Za-z]+)(-[A-Za-z]{3})?\s*$")


def time_feature_names(freq: str) -> tuple[str, ...]:
    """The GluonTS feature names ``freq`` selects, in column order.

    Raises:
        InputError: an unsupported frequency (the message lists the supported ones).
    """
    match = _FREQ.match(freq)
    # pandas keeps "ms" (milliseconds) and "MS" (month start) apart from "M"/"min"; neither is
    # a supported granularity, so they fall through to the error below.
    if match is not None and match.group(2) not in ("ms", "MS"):
        name = match.group(2).upper()
        name = _ALIASES.get(name, name)
        anchored_ok = match.group(3) is None or name in ("W", "Q", "A", "Y")
        if name in _BY_GRANULARITY and anchored_ok:
            return _BY_GRANULARITY[name]
    raise InputError(
        f"unsupported --freq {freq!r}; use [multiple]granularity with granularity one of "
        "Y/A (yearly), Q (quarterly), M (monthly), W (weekly), D (daily), B (business days), "
        "H (hourly), T/min (minutely), S (secondly), e.g. 'h' or '15min'"
    )


def time_features(dates: npt.ArrayLike, freq: str) -> npt.NDArray[np.float32]:
    """TSLib ``timeenc=1`` time marks of each date.

    Args:
        dates: (L,) anything ``numpy.datetime64`` accepts (datetime64 array, ISO strings).
        freq: frequency string selecting the features (see :func:`time_feature_names`).

    Returns:
        (L, F) float32, one column per feature of :func:`time_feature_names` ``(freq)``.
    """
    names = time_feature_names(freq)
    stamps = np.asarray(dates, dtype="datetime64[s]").reshape(-1)
    out = np.empty((stamps.shape[0], len(names)), dtype=np.float32)
    for column, name in enumerate(names):
        out[:, column] = _FEATURES[name](stamps)
    return out
