"""What the DAG (and the tools around it) read from the sensor database.

Aggregates for the snapshot (:func:`stream_interval_aggregates`, in bounded memory), watermarks and
missing windows for the freshness sensor (:func:`target_watermarks`,
:func:`stale_targets`, :func:`missing_windows`), late-data records
(:func:`read_revisions`, :func:`interval_revised_at`), readings and anomaly
labels. Every function takes an open pyodbc connection (``OdbcHook``'s in the
DAG) and ends its read transaction. Times are naive UTC (aware inputs are
converted); intervals are half-open ``[start, end)``; targets are
'device/sensor' names or (device, sensor) tuples. Raises ``ValueError`` for an
empty interval or a malformed target, pyodbc errors as they come.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable, Iterator

import pandas as pd

from batch_scoring.scoring.config import AGGREGATE_COLUMNS, WINDOW_MINUTES, target_name
from batch_scoring.scoring.times import utc_naive
from batch_scoring.sensor_db import schema
from batch_scoring.sensor_db.checks import by_target, window_problems
from batch_scoring.sensor_db.frames import (end_read, interval, pair_clause, select, select_batches, select_for_targets,
                                            target_pairs)


# window_end breaks ties between rows sharing a window_start (only possible without the primary key,
# which makes it free): otherwise two reads of the same rows may order them differently.
_AGG_ORDER = "device_id, sensor_id, window_start, window_end"


def read_aggregates(conn, start: Any, end: Any, targets: Iterable[Any] | None = None) -> pd.DataFrame:
    """Aggregates of windows inside [start, end) (window_start >= start, window_end <= end).

    Columns exactly ``AGGREGATE_COLUMNS``; sorted by device, sensor, window_start.
    ``targets``: 'device/sensor' names or (device, sensor) tuples; None = all.
    """
    s, e = interval(start, end)
    return select_for_targets(conn, schema.AGGREGATES, AGGREGATE_COLUMNS, "window_start >= ? AND window_end <= ?", [s, e],
                               _AGG_ORDER, targets)


def read_readings(conn, start: Any, end: Any, targets: Iterable[Any] | None = None) -> pd.DataFrame:
    """Readings with ``start <= ts < end`` (of ``targets``; None = all), sorted by device, sensor, ts.

    Columns ``ts`` (datetime64[us]), ``device_id``, ``sensor_id`` (str), ``value`` (float64, NULL → NaN).
    """
    s, e = interval(start, end)
    return select_for_targets(conn, schema.READINGS, schema.READING_COLUMNS, "ts >= ? AND ts < ?", [s, e],
                               "device_id, sensor_id, ts", targets)


def read_revisions(conn, start: Any = None, end: Any = None, since: Any = None) -> pd.DataFrame:
    """Late-data records (``aggregate_revisions``): windows starting in [start, end), revised after ``since``.

    Columns ``device_id, sensor_id, window_start, window_end, revised_at``;
    sorted by window_start, device, sensor. Each bound is optional.
    """
    where, params = [], []
    for cond, value in (("window_start >= ?", start), ("window_start < ?", end), ("revised_at > ?", since)):
        if value is not None:
            where.append(cond)
            params.append(utc_naive(value))
    return select(conn, schema.REVISIONS, schema.REVISION_COLUMNS, " AND ".join(where), params,
                   "window_start, device_id, sensor_id")


def interval_revised_at(conn, start: Any, end: Any) -> dt.datetime | None:
    """The last time late data changed a window starting in [start, end) (None: never).

    The snapshot records it: predictions are stale when a later revision of
    their interval exists (``read_revisions(..., since=that time)``).
    """
    s, e = interval(start, end)
    cur = conn.cursor()
    try:
        cur.execute(f"SELECT MAX(revised_at) FROM {schema.REVISIONS} WHERE window_start >= ? AND window_start < ?", s, e)
        row = cur.fetchone()
    finally:
        cur.close()
        end_read(conn)
    return schema.to_datetime(row[0]) if row else None


def target_watermarks(conn, targets: Iterable[Any] | None = None, since: Any = None) -> dict[str, dt.datetime | None]:
    """Last ``window_end`` per 'device/sensor' (None for a requested target with no aggregates).

    ``targets`` None → every target present in the table. ``since``: only rows whose ``window_start`` is at
    or after it (the schema indexes ``window_start``; SQLite still walks its primary key, checking it there,
    4x faster at 30 days of history): a target's last window when it has one starting then or later, else
    None; without it the whole table is grouped, which grows with the history kept.
    Values are naive UTC ``datetime``.
    """
    pairs = target_pairs(targets)
    sql = f"SELECT device_id, sensor_id, MAX(window_end) FROM {schema.AGGREGATES}"
    where, params = [], []
    if since is not None:
        where.append("window_start >= ?")
        params.append(utc_naive(since))
    if pairs is not None and 0 < len(pairs) <= 500:
        clause, pair_params = pair_clause(pairs)
        where.append(clause)
        params += pair_params
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " GROUP BY device_id, sensor_id"
    cur = conn.cursor()
    try:
        cur.execute(sql, params) if params else cur.execute(sql)
        found = {(str(d), str(s)): schema.to_datetime(m) for d, s, m in cur.fetchall()}
    finally:
        cur.close()
        end_read(conn)
    if pairs is None:
        return {target_name(d, s): found[(d, s)] for d, s in sorted(found)}
    return {target_name(d, s): found.get((d, s)) for d, s in pairs}


def stale_targets(conn, start: Any, end: Any, expected_targets: Iterable[Any]) -> dict[str, dt.datetime | None]:
    """Expected targets whose aggregates do not reach ``end`` (max window_end < end, or none).

    Returns {'device/sensor': last window_end or None}, sorted by name; empty
    when the interval [start, end) is fresh for every expected target. Raises
    ``ValueError`` for an empty interval.

    Each poke of the freshness sensor calls it, so it reads the rows from ``start`` on (a target whose
    data reaches ``end`` has its last window there), not the whole history; only the targets found
    behind are then looked up over all their rows (how far their data reaches, and a window that began
    before ``start`` yet ends at or after ``end``, with a schedule shorter than a window).
    """
    s, e = interval(start, end)
    recent = target_watermarks(conn, expected_targets, since=s)
    behind = [t for t, m in recent.items() if m is None or m < e]
    if not behind:
        return {}
    marks = target_watermarks(conn, behind)
    return {t: m for t, m in marks.items() if m is None or m < e}


def read_labels(conn, start: Any = None, end: Any = None) -> pd.DataFrame:
    """Anomaly labels overlapping [start, end) (each bound optional), sorted by device, sensor, start_ts, kind.

    Columns ``device_id, sensor_id, kind`` (str), ``start_ts, end_ts`` (datetime64[us]), ``magnitude`` (float64).
    """
    where, params = [], []
    if start is not None:
        where.append("end_ts > ?")
        params.append(utc_naive(start))
    if end is not None:
        where.append("start_ts < ?")
        params.append(utc_naive(end))
    return select(
        conn, schema.LABELS, schema.LABEL_COLUMNS, " AND ".join(where), params, "device_id, sensor_id, start_ts, kind"
    )


def window_bounds(start: Any, end: Any, window_minutes: int = WINDOW_MINUTES) -> tuple[dt.datetime, dt.datetime]:
    """The whole windows covering [start, end): ``(start floored, end ceiled)`` to the ``window_minutes`` grid.

    Naive UTC ``datetime`` pair. Raises ``ValueError`` for an empty interval.
    """
    s, e = interval(start, end)
    freq = f"{int(window_minutes)}min"
    return pd.Timestamp(s).floor(freq).to_pydatetime(), pd.Timestamp(e).ceil(freq).to_pydatetime()


# rows selected by read_interval_aggregates: touching [start, end) (checked) or inside it (read_aggregates')
_TOUCHING = "window_start < ? AND window_end > ?"
_INSIDE = "window_start >= ? AND window_end <= ?"


def stream_interval_aggregates(conn, start: Any, end: Any, window_minutes: int = WINDOW_MINUTES,
                               batch_rows: int | None = None) -> Iterator[tuple[pd.DataFrame, dict[str, list[str]]]]:
    """What the snapshot of [start, end) reads, as a stream of ``(aggregates, problems)`` blocks of whole targets.

    One SELECT of the rows touching or inside the interval (SQL flags which is
    which, ``part_of``, so each part has exactly the rows its own query would
    select: SQLite compares timestamps as text), fetched ``batch_rows`` at a
    time (default ``frames.FETCH_ROWS``). A target's rows may straddle two
    fetches: the last target of each fetch is carried into the next, so every
    target is checked whole and sits in one block. Per block: ``aggregates``
    are its rows inside the interval (columns exactly ``AGGREGATE_COLUMNS``,
    sorted by device, sensor, window_start, 0-based index) and ``problems`` its
    targets' structural faults (:func:`sensor_db.checks.window_problems` of the
    rows touching the interval). Memory is one fetch plus one target. At least
    one block (empty when there are no rows). Raises ``ValueError`` for an
    empty interval, pyodbc errors as they come.
    """
    s, e = interval(start, end)
    part = f"CASE WHEN {_TOUCHING} THEN 1 ELSE 0 END + CASE WHEN {_INSIDE} THEN 2 ELSE 0 END"
    tail = None
    for batch in select_batches(conn, schema.AGGREGATES, AGGREGATE_COLUMNS, f"({_TOUCHING}) OR ({_INSIDE})",
                                [e, s, s, e, e, s, s, e], _AGG_ORDER, extra=[("part_of", part)], batch_rows=batch_rows):
        block = batch if tail is None or tail.empty else pd.concat([tail, batch], ignore_index=True)
        if block.empty:
            tail = block
            continue
        dev, sen = block["device_id"].to_numpy(), block["sensor_id"].to_numpy()
        last = (dev == dev[-1]) & (sen == sen[-1])  # rows are ordered by target: the last one's rows are the end
        if not last.all():
            yield _checked_block(block[~last], s, e, window_minutes)
        tail = block[last].reset_index(drop=True)
    yield _checked_block(tail, s, e, window_minutes)


def _checked_block(block: pd.DataFrame, s: dt.datetime, e: dt.datetime, window_minutes: int):
    flags = block["part_of"].to_numpy()
    frame = block.drop(columns="part_of")
    touching, inside = (flags & 1).astype(bool), (flags & 2).astype(bool)
    problems = window_problems(frame if touching.all() else frame[touching], s, e, window_minutes)
    return (frame if inside.all() else frame[inside]).reset_index(drop=True), problems


def read_interval_aggregates(conn, start: Any, end: Any,
                             window_minutes: int = WINDOW_MINUTES) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """``(aggregates, problems)``: :func:`stream_interval_aggregates` gathered into one frame (small intervals, tools).

    ``aggregates``: exactly :func:`read_aggregates` ``(conn, start, end)``.
    ``problems``: {'device/sensor': [messages]} for the aggregates *touching*
    the interval, sorted by (device, sensor) (see
    :func:`sensor_db.checks.window_problems`): duplicate windows, windows not
    ``window_minutes`` long, off the grid, or straddling the interval's
    bounds; empty when the interval is clean. A snapshot built on those would
    silently drop or double windows. Raises ``ValueError`` for an empty interval.
    """
    frames, problems = [], {}
    for frame, found in stream_interval_aggregates(conn, start, end, window_minutes):
        frames.append(frame)
        problems.update(found)
    return (frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)), by_target(problems)


def missing_windows(conn, start: Any, end: Any, targets: Iterable[Any],
                    window_minutes: int = WINDOW_MINUTES) -> dict[str, list[dt.datetime]]:
    """Window starts of the grid over [start, end) that have no aggregate row, per 'device/sensor'.

    Only the requested targets; a target with every window present is left out.
    Lists are sorted naive UTC ``datetime``; see :func:`sensor_db.checks.describe_missing_windows`.
    """
    ws, we = window_bounds(start, end, window_minutes)
    grid = list(pd.date_range(ws, we, freq=f"{int(window_minutes)}min", inclusive="left").to_pydatetime())
    pairs = target_pairs(targets) or []
    if not pairs:
        return {}
    frame = read_aggregates(conn, ws, we, pairs)
    have: dict[str, set] = {}
    for d, s, w in frame[["device_id", "sensor_id", "window_start"]].itertuples(index=False):
        have.setdefault(target_name(d, s), set()).add(pd.Timestamp(w).to_pydatetime())
    out = {}
    for d, s in pairs:
        t = target_name(d, s)
        miss = [w for w in grid if w not in have.get(t, set())]
        if miss:
            out[t] = miss
    return out
