"""The one time convention: every input becomes naive UTC."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from batch_scoring.scoring.times import utc_naive, utc_naive_series, utc_timestamp

UTC_NOON = dt.datetime(2026, 1, 1, 12)


@pytest.mark.parametrize("value", [
    UTC_NOON,                                                                     # naive: taken as UTC
    UTC_NOON.replace(tzinfo=dt.timezone.utc),                                     # aware UTC
    dt.datetime(2026, 1, 1, 14, tzinfo=dt.timezone(dt.timedelta(hours=2))),       # aware, another offset
    "2026-01-01T12:00:00Z",
    "2026-01-01T07:00:00-05:00",                                                  # ISO with an offset
    "2026-01-01 12:00",
    pd.Timestamp("2026-01-01 12:00"),
    pd.Timestamp("2026-01-01 13:00", tz="Europe/Paris"),
    np.datetime64("2026-01-01T12:00:00"),
])
def test_utc_naive_accepts_every_spelling(value):
    got = utc_naive(value)
    assert type(got) is dt.datetime and got.tzinfo is None and got == UTC_NOON
    ts = utc_timestamp(value)
    assert isinstance(ts, pd.Timestamp) and ts.tzinfo is None and ts == pd.Timestamp(UTC_NOON)


def test_sub_microseconds_are_dropped_by_utc_naive_only():
    assert utc_naive("2026-01-01T12:00:00.123456789") == UTC_NOON.replace(microsecond=123456)
    assert utc_timestamp("2026-01-01T12:00:00.123456789").nanosecond == 789


@pytest.mark.parametrize("bad, message", [
    (None, "a timestamp is required"),
    ("not a time", "not a timestamp: 'not a time'"),
    ("2026-13-45", "not a timestamp: '2026-13-45'"),
    (pd.NaT, "not a timestamp: NaT"),
    (np.datetime64("NaT"), "not a timestamp: np.datetime64('NaT'"),
    (object, "not a timestamp: <class 'object'>"),
])
def test_bad_input_is_a_value_error_naming_it(bad, message):
    for convert in (utc_naive, utc_timestamp):
        with pytest.raises(ValueError) as err:
            convert(bad)
        assert message in str(err.value)


def test_utc_naive_series():
    aware = pd.Series(pd.to_datetime(["2026-01-01 13:00", "2026-01-01 14:00"]).tz_localize("Europe/Paris"))
    got = utc_naive_series(aware)
    assert got.dt.tz is None and got.tolist() == [pd.Timestamp(UTC_NOON), pd.Timestamp("2026-01-01 13:00")]
    naive = utc_naive_series(pd.Series(["2026-01-01 12:00", "2026-01-01 13:00"]))
    assert naive.dt.tz is None and naive.tolist() == got.tolist()
    with pytest.raises(ValueError, match="nope"):
        utc_naive_series(pd.Series(["2026-01-01", "nope"]))


def test_utc_now_is_the_current_naive_utc_time():
    from batch_scoring.scoring.times import utc_now

    before = dt.datetime.now(dt.timezone.utc)
    got = utc_now()
    after = dt.datetime.now(dt.timezone.utc)
    assert type(got) is dt.datetime and got.tzinfo is None
    assert before <= got.replace(tzinfo=dt.timezone.utc) <= after


def test_utc_from_epoch():
    import datetime as dt

    from batch_scoring.scoring.times import utc_from_epoch

    assert utc_from_epoch(0) == dt.datetime(1970, 1, 1)
    assert utc_from_epoch(1_900_000_000.5) == dt.datetime(2030, 3, 17, 17, 46, 40, 500000)
    assert utc_from_epoch(1_900_000_000.5).tzinfo is None
