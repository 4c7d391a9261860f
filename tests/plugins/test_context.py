"""The DAG-side step from an Airflow context to the run's data interval."""
from __future__ import annotations

import datetime as dt

import pytest

from batch_scoring.errors import PipelineError
from batch_scoring.context import interval_from_context
from batch_scoring.scoring.layout import Interval

START = dt.datetime(2026, 5, 1, 10)


def test_interval_from_context_converts_aware_ends_to_naive_utc():
    aware = {"data_interval_start": START.replace(tzinfo=dt.timezone.utc),
             "data_interval_end": dt.datetime(2026, 5, 1, 13, tzinfo=dt.timezone(dt.timedelta(hours=2)))}
    assert interval_from_context(aware) == Interval(START, START + dt.timedelta(hours=1))  # 13:00+02:00 is 11:00 UTC
    iso = {"data_interval_start": "2026-05-01T10:00:00+00:00", "data_interval_end": "2026-05-01T11:00:00Z"}
    assert interval_from_context(iso) == Interval(START, START + dt.timedelta(hours=1))


@pytest.mark.parametrize("start, end", [(None, None), (START, None), (START, START)])
def test_interval_from_context_refuses_a_run_without_an_interval(start, end):
    with pytest.raises(PipelineError, match=r"run manual__x has no data interval .*trigger runs with a logical date"):
        interval_from_context({"data_interval_start": start, "data_interval_end": end, "run_id": "manual__x"})
