"""The project's one time convention: every timestamp is naive UTC.

Data intervals, aggregate windows, readings and blob keys are all compared as
naive datetimes meaning UTC (what SQL Server ``datetime2`` and SQLite text hold,
and what Airflow's aware ``data_interval_start`` becomes here). Every module
that takes a timestamp from outside (CLI text, Airflow context, pandas frames,
SQL rows) turns it into this convention with a function of this module; no
other module converts time zones.

Pure standard library for datetimes, so the DAG file can use it at parse time;
pandas is imported only when a pandas or numpy value or a series is given.
"""
from __future__ import annotations

import datetime as dt
from typing import Any


def utc_naive(value: Any) -> dt.datetime:
    """Any one timestamp -> naive UTC ``datetime.datetime``.

    Accepts ``datetime`` (aware ones converted to UTC, naive ones taken as UTC),
    ``pandas.Timestamp``, ``numpy.datetime64`` and ISO 8601 text (``Z`` or an
    offset allowed). Sub-microsecond digits are dropped (``datetime`` holds µs).

    Raises ``ValueError`` for ``None``, NaT, or text that is not a timestamp.
    """
    if value is None:
        raise ValueError("a timestamp is required")
    if type(value) is dt.datetime:
        return value if value.tzinfo is None else value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return utc_timestamp(value).to_pydatetime(warn=False)


def utc_now() -> dt.datetime:
    """The current time as a naive UTC ``datetime.datetime`` (microsecond resolution). Never raises."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def utc_from_epoch(seconds: float) -> dt.datetime:
    """Unix time (seconds since 1970-01-01 UTC, as ``time.time()`` gives) -> naive UTC ``datetime.datetime``.

    Raises ``OverflowError``/``OSError``/``ValueError`` for values outside what ``datetime`` holds.
    """
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).replace(tzinfo=None)


def utc_timestamp(value: Any):
    """Like :func:`utc_naive`, as a naive UTC ``pandas.Timestamp`` (nanoseconds kept).

    Raises ``ValueError`` for ``None``, NaT, or text that is not a timestamp.
    """
    import pandas as pd

    if value is None:
        raise ValueError("a timestamp is required")
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a timestamp: {value!r} ({exc})") from None
    if ts is pd.NaT:
        raise ValueError(f"not a timestamp: {value!r}")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


def utc_naive_series(values):
    """A column of timestamps (anything ``pandas.to_datetime`` reads) -> naive UTC ``datetime64`` series.

    Aware values are converted to UTC, naive ones taken as UTC; the resolution
    is whatever ``to_datetime`` gives (callers that store floor it themselves).
    Raises ``ValueError`` (pandas' own) for values that are not timestamps.
    """
    import pandas as pd

    s = pd.to_datetime(values)
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s
