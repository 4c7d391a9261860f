"""Write primitives of the loader: frames to rows, transactions, keyed deletes, the spans a load touches.

Every writer of :mod:`ingest_sim.loads` runs as one transaction
(:class:`transaction`); times follow the storage rule of :mod:`sensor_db.schema`.
"""
from __future__ import annotations

import datetime as dt
from typing import Sequence

import numpy as np
import pandas as pd

from batch_scoring.sensor_db import schema
from batch_scoring.sensor_db.frames import select, select_for_targets
from batch_scoring.sensor_db.schema import stored_ts_series


def frame_rows(df: pd.DataFrame, columns: Sequence[str], types: dict[str, str]) -> list[tuple]:
    """``df[columns]`` as row tuples of Python values to insert, typed by ``types`` (logical type per column).

    Timestamps follow the storage rule (:func:`sensor_db.schema.stored_ts_series`),
    floats ``float``, ints ``int``, anything else ``str``. Raises ``ValueError`` /
    ``TypeError`` for values their column cannot hold, ``KeyError`` for a missing column.
    """
    cols = []
    for c in columns:
        s = df[c]
        if types[c] == "ts":
            cols.append(stored_ts_series(s).dt.to_pydatetime().tolist())
        elif types[c] == "float":
            cols.append(pd.to_numeric(s, errors="raise").astype("float64").tolist())
        elif types[c] == "int":
            cols.append(s.astype("int64").tolist())
        else:
            cols.append(s.astype(str).tolist())
    return list(zip(*cols))


def require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Raise ``ValueError`` ("<what> frame lacks columns [...]") unless ``df`` has every one of ``columns``."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} frame lacks columns {missing} (has {list(df.columns)})")


class transaction:
    """``with transaction(conn) as cur``: one unit of work; commit on success, rollback on error, cursor closed."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.cur = self.conn.cursor()
        return self.cur

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.conn.commit()
            else:
                self.conn.rollback()
        finally:
            self.cur.close()
        return False


def delete_pairs_in_range(cur, table: str, ts_col: str, pairs, lo, hi, hi_inclusive: bool) -> None:
    """DELETE the rows of each (device, sensor) of ``pairs`` with ``lo <= ts_col < hi`` (``<= hi``: ``hi_inclusive``)."""
    op = "<=" if hi_inclusive else "<"
    sql = f"DELETE FROM {table} WHERE device_id = ? AND sensor_id = ? AND {ts_col} >= ? AND {ts_col} {op} ?"
    for d, s in pairs:
        cur.execute(sql, d, s, lo, hi)


def delete_keys(cur, table: str, ts_col: str, keys: pd.DataFrame) -> None:
    """DELETE rows by (device_id, sensor_id, ts_col) keys, a few hundred per statement."""
    chunk = schema.MAX_PARAMS - 2
    for (d, s), g in keys.groupby(["device_id", "sensor_id"], sort=True):
        values = [schema.to_db_value(v) for v in pd.to_datetime(g[ts_col]).dt.to_pydatetime()]
        for i in range(0, len(values), chunk):
            part = values[i: i + chunk]
            cur.execute(f"DELETE FROM {table} WHERE device_id = ? AND sensor_id = ? AND {ts_col} IN "
                        f"({', '.join('?' * len(part))})", [d, s, *part])


def target_spans(frame: pd.DataFrame, ts_col: str, tail: dt.timedelta) -> dict[tuple[str, str], tuple[dt.datetime, dt.datetime]]:
    """Per (device, sensor) of ``frame``: ``(first ts_col, last ts_col + tail)`` as naive datetimes."""
    g = frame.groupby(["device_id", "sensor_id"], sort=True)[ts_col]
    lo, hi = g.min(), g.max()
    return {k: (lo[k].to_pydatetime(), (hi[k] + pd.Timedelta(tail)).to_pydatetime()) for k in lo.index}


def read_spans(conn, table: str, columns: Sequence[str], ts_col: str,
               spans: dict[tuple[str, str], tuple[dt.datetime, dt.datetime]]) -> pd.DataFrame:
    """Rows of ``table`` with ``lo <= ts_col < hi`` for each (device, sensor) span.

    One query per target for a few targets (a late file touches a few); one
    query over the common span, narrowed to the targets, when they are many.
    """
    if not spans:
        return select(conn, table, columns, "1 = 0", [], "")
    if len(spans) <= 20:
        parts = [select(conn, table, columns, f"device_id = ? AND sensor_id = ? AND {ts_col} >= ? AND {ts_col} < ?",
                         [d, s, lo, hi], "") for (d, s), (lo, hi) in spans.items()]
        frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    else:
        lo, hi = min(v[0] for v in spans.values()), max(v[1] for v in spans.values())
        frame = select_for_targets(conn, table, columns, f"{ts_col} >= ? AND {ts_col} < ?", [lo, hi], "", list(spans))
    if frame.empty:
        return frame
    key = list(zip(frame["device_id"], frame["sensor_id"]))
    los = np.array([np.datetime64(spans[k][0], "us") for k in key])
    his = np.array([np.datetime64(spans[k][1], "us") for k in key])
    ts = frame[ts_col].to_numpy("datetime64[us]")
    return frame[(ts >= los) & (ts < his)].reset_index(drop=True)


def empty_windows() -> pd.DataFrame:
    """No windows: an empty frame of ``device_id, sensor_id`` (str), ``window_start, window_end`` (datetime64[us])."""
    return pd.DataFrame({"device_id": pd.Series(dtype="str"), "sensor_id": pd.Series(dtype="str"),
                         "window_start": pd.Series(dtype="datetime64[us]"),
                         "window_end": pd.Series(dtype="datetime64[us]")})
