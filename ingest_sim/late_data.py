"""Late data: which scheduled data intervals a change of aggregates touches, and how to rescore them.

A load that changes aggregate windows behind a target's watermark (see
``ingest_sim.loads.load_readings``) makes the predictions of every interval
holding those windows stale, if that interval was already scored. The DAG's
intervals are those of Airflow's ``CronDataIntervalTimetable`` for the DAG's
cron schedule (UTC): the interval holding a window starts at the last cron
tick at or before the window's start and ends at the next tick. Airflow
rescores intervals that already succeeded with one command::

    airflow backfill create --dag-id DAG --from-date FIRST --to-date LAST --reprocess-behavior completed

whose dates are the runs' logical dates, i.e. the interval starts
(https://airflow.apache.org/docs/apache-airflow/stable/core-concepts/backfill.html).

Used by the loader's CLI (to say so right after a load) and by the DAG's
freshness check (to find scored intervals that are stale). No Airflow import.
"""
from __future__ import annotations

import datetime as dt
from typing import Iterable

from batch_scoring.scoring.times import utc_naive

DEFAULT_SCHEDULE = "0 * * * *"


def interval_of(ts: dt.datetime, schedule: str = DEFAULT_SCHEDULE) -> tuple[dt.datetime, dt.datetime]:
    """The data interval ``[start, end)`` of ``schedule`` (a cron, UTC) that holds ``ts``.

    ``ts``: naive UTC, or aware (converted to UTC first). Raises ``ValueError`` when ``ts`` is not a timestamp.
    """
    from croniter import croniter

    ts = utc_naive(ts)
    if croniter.match(schedule, ts) and ts.second == 0 and ts.microsecond == 0:
        start = ts
    else:
        start = croniter(schedule, ts).get_prev(dt.datetime)
    end = croniter(schedule, start).get_next(dt.datetime)
    return start, end


def intervals_of(window_starts: Iterable[dt.datetime], schedule: str = DEFAULT_SCHEDULE) -> list[tuple[dt.datetime, dt.datetime]]:
    """The distinct data intervals holding these window starts, sorted."""
    seen: list[tuple[dt.datetime, dt.datetime]] = []
    for ts in sorted(set(window_starts)):
        # sorted: the windows of one interval are consecutive, so only the last interval can hold this one
        if seen and seen[-1][0] <= ts < seen[-1][1]:
            continue
        seen.append(interval_of(ts, schedule))
    return seen


def intervals_between(first_start: dt.datetime, last_start: dt.datetime, schedule: str = DEFAULT_SCHEDULE,
                      limit: int = 1_000_000) -> int:
    """How many intervals of ``schedule`` start in ``[first_start, last_start]`` (what a backfill over them runs)."""
    from croniter import croniter

    it, n, ts = croniter(schedule, first_start), 1, first_start
    while n < limit:
        ts = it.get_next(dt.datetime)
        if ts > last_start:
            break
        n += 1
    return n


def backfill_command(dag_id: str, intervals: list[tuple[dt.datetime, dt.datetime]]) -> str:
    """The one Airflow command that rescores ``intervals`` (and any succeeded interval between them)."""
    first, last = min(s for s, _ in intervals), max(s for s, _ in intervals)
    return (f"airflow backfill create --dag-id {dag_id} --from-date {first:%Y-%m-%dT%H:%M:%S} "
            f"--to-date {last:%Y-%m-%dT%H:%M:%S} --reprocess-behavior completed")


def describe_windows(late, limit: int = 8) -> str:
    """``d1/s1 2024-01-01 00:10, 00:50; d2/s1 ...`` for a frame of late windows (device_id, sensor_id, window_start)."""
    parts = []
    groups = late.groupby(["device_id", "sensor_id"], sort=True)["window_start"]
    for i, ((device, sensor), starts) in enumerate(groups):
        if i == limit:
            parts.append(f"and {groups.ngroups - limit} more targets")
            break
        starts = sorted(starts)
        shown = [f"{starts[0]:%Y-%m-%d %H:%M}"] + [f"{t:%H:%M}" if t.date() == starts[0].date() else f"{t:%Y-%m-%d %H:%M}"
                                                   for t in starts[1:6]]
        more = f" (+{len(starts) - 6})" if len(starts) > 6 else ""
        parts.append(f"{device}/{sensor} {', '.join(shown)}{more}")
    return "; ".join(parts)
