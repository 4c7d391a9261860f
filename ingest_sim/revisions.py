"""Late data: which aggregate windows a load changes, and the ``aggregate_revisions`` records of the late ones.

A window is late when it changes behind its target's watermark (the last
stored ``window_end``); the DAG reads these records (``sensor_db.reads``) to
learn that an interval it already scored is stale.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from batch_scoring.ingest_sim.sql_writes import delete_keys, empty_windows, frame_rows, read_spans, target_spans
from batch_scoring.scoring.config import AGGREGATE_COLUMNS, target_name
from batch_scoring.scoring.times import utc_naive
from batch_scoring.sensor_db import schema
from batch_scoring.sensor_db.reads import target_watermarks
from batch_scoring.sensor_db.schema import stored_ts_series


def revision_time(value: Any) -> dt.datetime:
    """The ``revised_at`` a load records: ``value`` (default now) as stored, naive UTC floored to the ms."""
    if value is None:
        value = dt.datetime.now(dt.timezone.utc)
    return schema.to_db_value(utc_naive(value))


def load_watermarks(conn, aggs: pd.DataFrame, step: pd.Timedelta) -> dict[str, dt.datetime | None]:
    """Each target's watermark as far as a load of ``aggs`` (windows ``step`` long) can tell late from on time.

    Reads only the stored rows starting at or after ``S - step``, S the load's earliest ``window_start``
    (:func:`target_watermarks` ``since``), not the whole history. A stored row starting before that ends
    before S when ``step`` long (before S + step when up to twice that), so before every window of the load
    ends: it can neither put a load window behind the watermark (ends < mark) nor be the last window the load
    changes (ends == mark), whether or not it is its target's last row. The decisions are those of the whole
    history as long as no stored window is longer than twice ``step``; the snapshot's checks refuse windows
    that are not ``window_minutes`` long. A longer one starting before ``S - step`` is not seen, so load
    windows ending before it does count as on time: making that case exact would cost a read of every
    target's whole history in the normal case (a load ahead of its watermarks), the very read this avoids.
    Values as :func:`target_watermarks` (None: no such row); no query for an empty ``aggs``.
    """
    if aggs.empty:
        return {}
    since = aggs["window_start"].min() - step
    return target_watermarks(conn, sorted(set(zip(aggs["device_id"], aggs["sensor_id"]))), since=since)


def changed_aggregates(conn, aggs: pd.DataFrame, step: pd.Timedelta, stored: pd.DataFrame | None = None,
                       revised_at: dt.datetime | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(rows of aggs that differ from what is stored, the late ones among them)``.

    Late: the window ends before its target's watermark (the last stored
    window_end), whether it existed or fills a gap; or it is the target's last
    window, already stored, changed more than one window length after its end
    (``revised_at``; a stream completing its last window is not late data).
    ``stored``: the stored aggregates of those windows, when the caller read them already.
    Watermarks are read with :func:`load_watermarks` (rows near the load only).
    """
    if aggs.empty:
        return aggs, empty_windows()
    if stored is None:
        stored = read_spans(conn, schema.AGGREGATES, AGGREGATE_COLUMNS, "window_start", target_spans(aggs, "window_start", step))
    keys = ["device_id", "sensor_id", "window_start"]
    merged = aggs.merge(stored, on=keys, how="left", suffixes=("", "_old"), indicator=True)
    existed = (merged["_merge"] == "both").to_numpy()
    same = existed.copy()
    for col in AGGREGATE_COLUMNS:
        if col in keys:
            continue
        a, b = merged[col].to_numpy(), merged[f"{col}_old"].to_numpy()
        if col == "window_end":
            eq = a == b
        else:
            a, b = a.astype("float64"), b.astype("float64")
            eq = (a == b) | (np.isnan(a) & np.isnan(b))
        same &= eq
    changed = ~same
    marks = load_watermarks(conn, aggs, step)
    mark = np.array([np.datetime64(marks.get(target_name(d, s)) or "NaT", "us")
                     for d, s in zip(merged["device_id"], merged["sensor_id"])], dtype="datetime64[us]")
    ends = merged["window_end"].to_numpy("datetime64[us]")
    # Late: behind the target's last window. The last window itself is completed by the next load of a stream
    # in the normal course; a change to it counts only once a whole window length has passed since its end.
    behind = ~np.isnat(mark) & (ends < mark)
    last = ~np.isnat(mark) & (ends == mark) & existed
    if revised_at is not None:
        last &= np.datetime64(revised_at, "us") > ends + np.timedelta64(step.to_timedelta64().astype("timedelta64[us]"))
    late = changed & (behind | last)
    out = aggs[changed].reset_index(drop=True)
    return out, aggs.loc[late, list(empty_windows().columns)].reset_index(drop=True)


def late_upserts(conn, df: pd.DataFrame, revised_at: dt.datetime) -> pd.DataFrame:
    """The late windows (:func:`empty_windows` columns) of upserting aggregate rows ``df``.

    Reads back only the targets that write behind their watermark (a bulk
    upsert ahead of every watermark costs one watermark query, over the rows near
    the upsert only: :func:`load_watermarks`, with ``step`` the frame's longest window).
    """
    frame = df[list(AGGREGATE_COLUMNS)].copy()
    frame["device_id"], frame["sensor_id"] = frame["device_id"].astype(str), frame["sensor_id"].astype(str)
    for col in ("window_start", "window_end"):
        frame[col] = stored_ts_series(frame[col])
    step = (frame["window_end"] - frame["window_start"]).max()
    marks = load_watermarks(conn, frame, step)
    first_end = frame.groupby(["device_id", "sensor_id"])["window_end"].min()
    behind = [k for k, e in first_end.items() if marks.get(target_name(*k)) is not None and e <= marks[target_name(*k)]]
    if not behind:
        return empty_windows()
    keys = pd.MultiIndex.from_frame(frame[["device_id", "sensor_id"]])
    part = frame[keys.isin(behind)].reset_index(drop=True)
    return changed_aggregates(conn, part, step, revised_at=revised_at)[1]


def write_aggregates(conn, cur, aggs: pd.DataFrame, late: pd.DataFrame, revised_at) -> None:
    """Replace ``aggs`` by key and record ``late`` in ``aggregate_revisions`` (inside the caller's transaction)."""
    delete_keys(cur, schema.AGGREGATES, "window_start", aggs[["device_id", "sensor_id", "window_start"]])
    insert_aggregates(conn, cur, frame_rows(aggs, AGGREGATE_COLUMNS, schema.column_types(schema.AGGREGATES)),
                      late, revised_at)


def insert_aggregates(conn, cur, rows: list[tuple], late: pd.DataFrame, revised_at) -> int:
    """Insert aggregate ``rows`` (``AGGREGATE_COLUMNS`` order, keys already deleted) and record ``late`` windows
    in ``aggregate_revisions`` at ``revised_at``, inside the caller's transaction; returns the rows inserted."""
    n = schema.insert_rows(conn, schema.AGGREGATES, AGGREGATE_COLUMNS, rows)
    if len(late):
        write_revisions(conn, cur, late, revised_at)
    return n


def write_revisions(conn, cur, late: pd.DataFrame, revised_at: dt.datetime) -> None:
    """Upsert ``late`` windows into ``aggregate_revisions`` with ``revised_at`` (caller's transaction)."""
    revisions = late.assign(revised_at=revised_at)
    delete_keys(cur, schema.REVISIONS, "window_start", revisions[["device_id", "sensor_id", "window_start"]])
    schema.insert_rows(conn, schema.REVISIONS, schema.REVISION_COLUMNS,
                   frame_rows(revisions, schema.REVISION_COLUMNS, schema.column_types(schema.REVISIONS)))
