"""Loads into the sensor database: readings upserts, simulated-range replaces, aggregation, labels.

Used by the ``python -m batch_scoring.ingest_sim`` CLI, devstack and bench; no Airflow
import. Every function takes an open pyodbc connection; each writer runs as
one transaction (commit on success, rollback on error). Times are naive UTC
(aware inputs are converted); intervals are half-open ``[start, end)``. What
the DAG reads back is in :mod:`sensor_db.reads`.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

from batch_scoring.ingest_sim.aggregator import aggregate_readings
from batch_scoring.scoring.cli import progress
from batch_scoring.ingest_sim.readings import describe_conflicts, find_duplicates
from batch_scoring.ingest_sim.revisions import changed_aggregates, insert_aggregates, late_upserts, revision_time, write_aggregates
from batch_scoring.ingest_sim.sql_writes import (delete_keys, delete_pairs_in_range, empty_windows, frame_rows, read_spans,
                                   require_columns, target_spans, transaction)
from batch_scoring.scoring.config import AGGREGATE_COLUMNS, WINDOW_MINUTES
from batch_scoring.scoring.times import utc_naive
from batch_scoring.sensor_db import schema
from batch_scoring.sensor_db.frames import interval, target_pairs
from batch_scoring.sensor_db.reads import read_readings, window_bounds
from batch_scoring.sensor_db.schema import stored_ts_series


@dataclass
class LoadResult:
    """What :func:`load_readings` did.

    Reading counts are rows of the frame: ``inserted`` (new keys), ``updated``
    (existing keys, another value), ``unchanged`` (already stored as they are),
    ``duplicates`` (exact repeats within the frame, stored once).
    ``windows``: the aggregate windows written (new or changed), as
    ``device_id, sensor_id, window_start, window_end`` rows; ``late``: those of
    them that are late data (behind the target's last window, or that last
    window changed a window length after its end: see ``changed_aggregates``),
    also recorded in ``aggregate_revisions``;
    ``pending``: windows whose readings changed but were not aggregated
    (``aggregate=False``). Empty frames when nothing applies.
    """

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    windows: pd.DataFrame = field(default_factory=lambda: empty_windows())
    late: pd.DataFrame = field(default_factory=lambda: empty_windows())
    pending: pd.DataFrame = field(default_factory=lambda: empty_windows())
    revised_at: dt.datetime | None = None


READING_KEY = ("ts", "device_id", "sensor_id")


def load_readings(conn, df: pd.DataFrame, *, aggregate: bool = True, window_minutes: int = WINDOW_MINUTES,
                  revised_at: Any = None) -> LoadResult:
    """Upsert readings by their key ``(ts, device_id, sensor_id)`` and re-aggregate exactly the windows they change.

    * No load deletes a reading it does not replace: a key already stored with
      the same value is left alone, with another value it is updated, a new
      key is inserted. Loading the same frame again changes nothing.
    * Exact duplicates within ``df`` are stored once; one key with two values
      raises ``ValueError`` naming both rows (nothing is written).
    * ``aggregate``: the windows (per device/sensor, never a whole time range)
      holding the frame's readings are re-aggregated from every stored reading
      of the window, and written only where the aggregate changed: the windows
      whose readings changed, plus any the frame covers whose aggregate is
      missing or out of date (a file first loaded without aggregating). Windows
      that change behind the target's watermark (its last window) are *late
      data*: recorded in ``aggregate_revisions`` with ``revised_at`` (naive UTC,
      default now), which is how the DAG learns that an interval it already
      scored is stale.

    Everything is one transaction. ``ts`` is stored floored to the millisecond.
    Raises ``ValueError`` for missing columns, conflicting duplicates, or stored
    aggregates that count readings the table does not hold (nothing is written).
    """
    require_columns(df, schema.READING_COLUMNS, "readings")
    frame = pd.DataFrame({"ts": stored_ts_series(df["ts"]).to_numpy(), "device_id": df["device_id"].astype(str).to_numpy(),
                          "sensor_id": df["sensor_id"].astype(str).to_numpy(),
                          "value": pd.to_numeric(df["value"], errors="raise").astype("float64").to_numpy()})
    dups = find_duplicates(frame)
    if dups.conflicts:
        raise ValueError(describe_conflicts(df, dups.conflicts) + "; nothing was loaded")
    if len(dups.exact):
        frame = frame.drop(index=dups.exact).reset_index(drop=True)
    result = LoadResult(duplicates=int(len(dups.exact)))
    if frame.empty:
        return result
    stored = read_spans(conn, schema.READINGS, schema.READING_COLUMNS, "ts", target_spans(frame, "ts", dt.timedelta(milliseconds=1)))
    merged = frame.merge(stored.rename(columns={"value": "stored"}), on=list(READING_KEY), how="left", indicator=True)
    known = (merged["_merge"] == "both").to_numpy()
    old, new = merged["stored"].to_numpy(), merged["value"].to_numpy()
    same = known & ((old == new) | (np.isnan(old) & np.isnan(new)))
    updated, inserted = known & ~same, ~known
    result.inserted, result.updated, result.unchanged = int(inserted.sum()), int(updated.sum()), int(same.sum())
    write = frame[updated | inserted].reset_index(drop=True)
    if write.empty and not aggregate:
        return result
    step = pd.Timedelta(minutes=int(window_minutes))
    # aggregating: every window of the file is recomputed (per target) and written only where its aggregate
    # changed, so a file loaded earlier without --aggregate gets its windows on a re-load with it
    touched = _windows_of(frame if aggregate else write, step)
    aggs, late = None, None
    if aggregate:
        # every stored reading of the touched windows, with this load's rows applied on top
        before = read_spans(conn, schema.READINGS, schema.READING_COLUMNS, "ts", target_spans(touched, "window_start", step))
        replaced = before.merge(write[list(READING_KEY)], on=list(READING_KEY), how="left", indicator=True)
        after = pd.concat([before[(replaced["_merge"] == "left_only").to_numpy()], write], ignore_index=True)
        after = after.sort_values(["device_id", "sensor_id", "ts"], kind="mergesort").reset_index(drop=True)
        stored_aggs = read_spans(conn, schema.AGGREGATES, AGGREGATE_COLUMNS, "window_start", target_spans(touched, "window_start", step))
        _refuse_foreign_aggregates(stored_aggs, before, step)
        aggs = _only_windows(aggregate_readings(after, window_minutes), touched)
        result.revised_at = revision_time(revised_at)
        aggs, late = changed_aggregates(conn, aggs, step, stored_aggs, result.revised_at)
        result.windows, result.late = aggs[list(empty_windows().columns)], late
    else:
        result.pending = touched
    if write.empty and not len(aggs):
        return result
    types = schema.column_types(schema.READINGS)
    with transaction(conn) as cur:
        delete_keys(cur, schema.READINGS, "ts", write.loc[updated[updated | inserted], ["device_id", "sensor_id", "ts"]])
        if len(write):
            schema.insert_rows(conn, schema.READINGS, schema.READING_COLUMNS, frame_rows(write, schema.READING_COLUMNS, types))
        if aggs is not None and len(aggs):
            write_aggregates(conn, cur, aggs, late, result.revised_at)
    return result


def replace_readings_range(conn, df: pd.DataFrame, start: Any, end: Any, targets: Iterable[Any] | None = None) -> int:
    """Replace the readings of ``targets`` in ``[start, end)`` by ``df``; returns rows inserted.

    For the simulator, which *generates* a range: re-simulating it must not
    leave readings of an earlier simulation behind. Only readings inside
    ``[start, end)`` of the given targets (default: the frame's) are deleted,
    and ``df`` must lie inside that range. Loads of real data use
    :func:`load_readings`, which never deletes. Raises ``ValueError`` for missing
    columns, an empty interval or a reading outside it (nothing is written).
    """
    require_columns(df, schema.READING_COLUMNS, "readings")
    lo, hi = interval(start, end)
    types = schema.column_types(schema.READINGS)
    rows = frame_rows(df, schema.READING_COLUMNS, types) if not df.empty else []
    outside = [r for r in rows if not (lo <= r[0] < hi)]
    if outside:
        raise ValueError(f"{len(outside)} reading(s) outside the range [{lo}, {hi}) being replaced, "
                         f"first at {outside[0][0]}")
    pairs = target_pairs(targets) if targets is not None else sorted({(r[1], r[2]) for r in rows})
    with transaction(conn) as cur:
        delete_pairs_in_range(cur, schema.READINGS, "ts", pairs, schema.to_db_value(lo), schema.to_db_value(hi), hi_inclusive=False)
        return schema.insert_rows(conn, schema.READINGS, schema.READING_COLUMNS, rows)


def _windows_of(readings: pd.DataFrame, step: pd.Timedelta) -> pd.DataFrame:
    """The distinct (device, sensor, window) of ``readings``, sorted."""
    starts = readings["ts"].dt.floor(step)
    out = pd.DataFrame({"device_id": readings["device_id"].to_numpy(), "sensor_id": readings["sensor_id"].to_numpy(),
                        "window_start": starts.to_numpy()}).drop_duplicates()
    out["window_end"] = out["window_start"] + step
    return out.sort_values(["device_id", "sensor_id", "window_start"]).reset_index(drop=True).astype(
        {"window_start": "datetime64[us]", "window_end": "datetime64[us]"})


def _only_windows(aggs: pd.DataFrame, windows: pd.DataFrame) -> pd.DataFrame:
    return aggs.merge(windows[["device_id", "sensor_id", "window_start"]], on=["device_id", "sensor_id", "window_start"],
                      how="inner")[list(AGGREGATE_COLUMNS)].reset_index(drop=True)


def _refuse_foreign_aggregates(stored_aggs: pd.DataFrame, readings: pd.DataFrame, step: pd.Timedelta) -> None:
    """Refuse to re-aggregate windows whose stored aggregate counts readings ``sensor_readings`` does not hold.

    Such aggregates were built elsewhere (another tool, readings purged);
    re-aggregating them from the readings here would silently replace, say, 30
    readings' statistics by 1 reading's.
    """
    if stored_aggs.empty:
        return
    have = readings.assign(window_start=readings["ts"].dt.floor(step)).groupby(
        ["device_id", "sensor_id", "window_start"]).size().rename("have")
    check = stored_aggs.merge(have.reset_index(), on=["device_id", "sensor_id", "window_start"], how="left")
    check["have"] = check["have"].fillna(0).astype("int64")
    bad = check[check["n_readings"] > check["have"]]
    if bad.empty:
        return
    shown = "; ".join(f"{r.device_id}/{r.sensor_id} {r.window_start:%Y-%m-%d %H:%M} ({r.n_readings} in the aggregate, "
                      f"{r.have} in {schema.READINGS})" for r in bad.head(5).itertuples(index=False))
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    raise ValueError(
        f"{len(bad)} aggregate window(s) count readings that {schema.READINGS} does not hold: {shown}{more}; they were "
        f"not built from this table's readings (another tool, or readings removed), so re-aggregating them would "
        f"lose their statistics. Nothing was loaded: load those windows' raw readings first, or load this file "
        f"without --aggregate")


def aggregate_range(conn, start: Any, end: Any, window_minutes: int = WINDOW_MINUTES, revised_at: Any = None) -> int:
    """(Re)aggregate every window overlapping [start, end); returns aggregate rows written.

    Reads the readings of the whole windows covering the range, aggregates them
    with :func:`aggregate_readings`, and in one transaction deletes every
    aggregate whose window starts in that span and inserts the new ones, so
    re-aggregating replaces a window (and drops windows that have no readings,
    e.g. aggregates written by another tool). Windows whose aggregate changes
    behind their target's watermark are recorded as late data in
    ``aggregate_revisions`` (see :func:`load_readings`). Raises ``ValueError`` for an empty interval.
    """
    ws, we = window_bounds(start, end, window_minutes)
    readings = read_readings(conn, ws, we)
    aggs = aggregate_readings(readings, window_minutes)
    revised_at = revision_time(revised_at)
    _, late = changed_aggregates(conn, aggs, pd.Timedelta(minutes=int(window_minutes)), revised_at=revised_at)
    types = schema.column_types(schema.AGGREGATES)
    rows = frame_rows(aggs, AGGREGATE_COLUMNS, types) if not aggs.empty else []
    with transaction(conn) as cur:
        cur.execute(f"DELETE FROM {schema.AGGREGATES} WHERE window_start >= ? AND window_start < ?", ws, we)
        return insert_aggregates(conn, cur, rows, late, revised_at)


def upsert_aggregates(conn, df: pd.DataFrame, revised_at: Any = None) -> int:
    """Insert or replace aggregate rows by (device_id, sensor_id, window_start); returns rows written.

    For aggregates computed elsewhere. Rows that change a stored window or
    fill one in behind the target's watermark are recorded as late data in
    ``aggregate_revisions`` (see :func:`load_readings`). Raises ``ValueError`` for missing
    columns or duplicate (device_id, sensor_id, window_start) keys.
    """
    require_columns(df, AGGREGATE_COLUMNS, "aggregates")
    if df.empty:
        return 0
    types = schema.column_types(schema.AGGREGATES)
    rows = frame_rows(df, AGGREGATE_COLUMNS, types)
    keys: dict[tuple[str, str], set] = {}
    for r in rows:
        keys.setdefault((r[0], r[1]), set()).add(schema.to_db_value(r[2]))
    if sum(len(v) for v in keys.values()) != len(rows):
        raise ValueError("aggregates frame has duplicate (device_id, sensor_id, window_start) keys")
    revised_at = revision_time(revised_at)
    late = late_upserts(conn, df, revised_at)
    chunk = schema.MAX_PARAMS - 2
    with transaction(conn) as cur:
        for (d, s), starts in progress(sorted(keys.items()), "aggregates", unit="target"):
            starts = sorted(starts)
            for i in range(0, len(starts), chunk):
                part = starts[i : i + chunk]
                marks = ", ".join("?" * len(part))
                cur.execute(
                    f"DELETE FROM {schema.AGGREGATES} WHERE device_id = ? AND sensor_id = ? AND window_start IN ({marks})",
                    [d, s, *part],
                )
        return insert_aggregates(conn, cur, rows, late, revised_at)


def replace_labels(
    conn,
    df: pd.DataFrame,
    start: Any = None,
    end: Any = None,
    targets: Iterable[Any] | None = None,
) -> int:
    """Replace the anomaly labels of a range; returns labels inserted.

    Deletes labels with ``start <= start_ts < end`` (default: the frame's
    min start_ts / max end_ts) for ``targets`` (default: the frame's pairs),
    then inserts the frame, in one transaction. Pass start/end/targets to
    clear a range that now has no anomalies (an empty frame). Raises ``ValueError``
    for missing columns or an empty interval.
    """
    require_columns(df, schema.LABEL_COLUMNS, "labels")
    types = schema.column_types(schema.LABELS)
    rows = frame_rows(df, schema.LABEL_COLUMNS, types) if not df.empty else []
    if start is None or end is None:
        if not rows:
            return 0
        lo = min(r[3] for r in rows) if start is None else utc_naive(start)
        hi = max(r[4] for r in rows) if end is None else utc_naive(end)
        hi = max(hi, lo + dt.timedelta(milliseconds=1))
    else:
        lo, hi = interval(start, end)
    pairs = target_pairs(targets) if targets is not None else sorted({(r[0], r[1]) for r in rows})
    lo, hi = schema.to_db_value(lo), schema.to_db_value(hi)
    with transaction(conn) as cur:
        delete_pairs_in_range(cur, schema.LABELS, "start_ts", pairs, lo, hi, hi_inclusive=False)
        return schema.insert_rows(conn, schema.LABELS, schema.LABEL_COLUMNS, rows)
