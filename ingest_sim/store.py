"""Readings, aggregates and anomaly labels in SQL: the one module that reads and writes them.

Used by the ``python -m ingest_sim`` CLI and by the Airflow DAG (which passes a
pyodbc connection from ``OdbcHook``): no Airflow import here. Every function
takes an open pyodbc connection; writers run as one transaction (commit on
success, rollback on error). Times are naive UTC (aware inputs are converted);
intervals are half-open ``[start, end)``.

Frames are built from ``cursor.fetchmany()`` batches + ``cursor.description``
and typed explicitly (by arrow / numpy, not per value): ids ``str``, timestamps
``datetime64[us]``, floats ``float64`` (NULL → NaN), counts ``int64``.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ingest_sim import db
from ingest_sim.aggregator import aggregate_readings
from ingest_sim.readings import describe_conflicts, find_duplicates, key_ts
from scoring.config import AGGREGATE_COLUMNS, WINDOW_MINUTES, parse_target, target_name



# --------------------------------------------------------------------------- helpers
def utc_naive(value: Any) -> dt.datetime:
    """datetime / Timestamp / ISO string → naive UTC ``datetime`` (aware values converted)."""
    if value is None:
        raise ValueError("a timestamp is required")
    ts = pd.Timestamp(value)
    if ts is pd.NaT:
        raise ValueError(f"not a timestamp: {value!r}")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.to_pydatetime(warn=False)


def _interval(start: Any, end: Any) -> tuple[dt.datetime, dt.datetime]:
    s, e = utc_naive(start), utc_naive(end)
    if e <= s:
        raise ValueError(f"empty interval: end {e.isoformat()} is not after start {s.isoformat()}")
    return s, e


def _utc_series(s: pd.Series) -> pd.Series:
    s = pd.to_datetime(s)
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.dt.floor("ms").astype("datetime64[us]")


def _as_pairs(targets: Iterable[Any] | None) -> list[tuple[str, str]] | None:
    if targets is None:
        return None
    pairs = []
    for t in targets:
        if isinstance(t, str):
            pairs.append(parse_target(t))
        else:
            d, s = t
            pairs.append((str(d), str(s)))
    return sorted(set(pairs))


_DTYPES = {"ts": "datetime64[us]", "float": "float64", "int": "int64"}
FETCH_ROWS = 100_000  # rows per fetchmany, converted as they arrive: pyodbc Rows never pile up (memory)


def _arrow_values(values: Sequence[Any], logical: str | None) -> np.ndarray | None:
    """The fast path: arrow infers the fetched type and converts in C++; None when it does not apply.

    Arrow parses only a subset of what ``float()`` accepts (no spaces, no '_'),
    always to the same correctly rounded double; anything else goes the numpy way.
    """
    try:
        a = pa.array(values)
    except pa.ArrowException:
        return None
    t = a.type
    if logical == "float" and (pa.types.is_string(t) or pa.types.is_floating(t) or pa.types.is_null(t)):
        try:
            return a.cast(pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowException:
            return None
    if logical == "ts" and pa.types.is_timestamp(t) and t.tz is None:
        return a.cast(pa.timestamp("us")).to_numpy(zero_copy_only=False)
    if logical == "int" and pa.types.is_integer(t) and a.null_count == 0:
        return a.cast(pa.int64()).to_numpy()
    return None


def _column_values(values: Sequence[Any], logical: str | None) -> np.ndarray | pa.Array:
    """One fetched column, typed without a Python call per value (that took 17 s at 2.88M rows).

    A numpy array (floats, ints, timestamps) or an arrow string array. Same
    values as the per-value conversion it replaced, which stays as the last
    resort for anything unusual (and then fails or converts exactly as before).
    """
    if logical not in _DTYPES:  # ids / kinds: arrow strings when they are all str (as fetched), else str(v)
        try:
            return pa.array(values, type=pa.string())
        except pa.ArrowException:
            return pa.array([None if v is None else str(v) for v in values], type=pa.string())
    if len(values):
        fast = _arrow_values(values, logical)
        if fast is not None:
            return fast
    arr = np.array(values, dtype=object) if len(values) else np.empty(0, dtype=object)
    try:
        if logical == "float":  # float(v) per element, None → NaN (Decimals, odd text)
            return arr.astype(np.float64)
        if logical == "int":  # int(v) per element; None raises, as before
            return arr.astype(np.int64)
        out = pd.to_datetime(arr, format="ISO8601")  # ts: ISO text (SQLite aggregates), dates
        if out.tz is None:
            return out.as_unit("us").to_numpy()
    except (TypeError, ValueError, OverflowError):
        pass
    if logical == "ts":
        return pd.Series([db.to_datetime(v) for v in values], dtype="datetime64[us]").to_numpy()
    if logical == "float":
        return pd.Series([db.to_float(v) for v in values], dtype="float64").to_numpy()
    return pd.Series([int(v) for v in values], dtype="int64").to_numpy()


# SQLite: every FLOAT column of a row in ONE text cell (17 digits each, as db.float_expr, '|'-joined,
# 'nan' for NULL: SQLite stores no NaN). The ODBC driver's cost is per cell: at 2.88M aggregate rows
# this halves the fetch (15 s → 8 s). PACK_SQLITE_FLOATS = False: one cell per column (tests compare).
_PACKED = "packed_floats"
PACK_SQLITE_FLOATS = True


def _packed_floats_expr(columns: Sequence[str]) -> str:
    cells = [f"CASE WHEN {c} IS NULL THEN 'nan' ELSE printf('%!.17g', {c}) END" for c in columns]
    return " || '|' || ".join(cells) + f" AS {_PACKED}"


def _unpack_floats(values: Sequence[Any], n: int) -> np.ndarray:
    """'|'-joined texts → float64 array of shape (rows, n), each text parsed as ``float()`` would."""
    flat = pc.list_flatten(pc.split_pattern(pa.array(values, type=pa.string()), "|"))
    if len(flat) != n * len(values):
        raise ValueError(f"packed floats: expected {n} values per row")
    try:
        out = flat.cast(pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowException:
        out = np.array(flat.to_pylist(), dtype=object).astype(np.float64)
    return out.reshape(len(values), n)


def _typed_frame(rows: list, description, types: dict[str, str], columns: Sequence[str]) -> pd.DataFrame:
    return _chunks_frame([rows], description, types, columns)


def _chunks_frame(chunks: Iterable[list], description, types: dict[str, str], columns: Sequence[str],
                  packed: Sequence[str] = ()) -> pd.DataFrame:
    """Typed frame from batches of fetched rows, each batch transposed and converted as it arrives.

    ``packed``: the float columns fetched as one ``_PACKED`` text cell.
    """
    names = [d[0].lower() for d in description]
    parts: dict[str, list] = {n: [] for n in names}
    for rows in chunks:
        if rows:
            for name, values in zip(names, zip(*rows)):
                parts[name].append(_unpack_floats(values, len(packed)) if name == _PACKED
                                   else _column_values(values, types.get(name)))
    data = {}
    for name in names:
        logical = types.get(name)
        arrs = parts[name]
        if name == _PACKED:
            block = np.concatenate(arrs) if arrs else np.empty((0, len(packed)))
            data.update({c: pd.Series(block[:, i], dtype="float64") for i, c in enumerate(packed)})
            continue
        arrs = arrs or [_column_values((), logical)]
        if logical in _DTYPES:
            data[name] = pd.Series(arrs[0] if len(arrs) == 1 else np.concatenate(arrs), dtype=_DTYPES[logical])
        else:
            data[name] = pd.Series(pa.chunked_array(arrs, type=pa.string()), dtype="str")
    return pd.DataFrame(data, columns=list(columns))


def _fetch_frame(cur, types: dict[str, str], columns: Sequence[str], packed: Sequence[str] = ()) -> pd.DataFrame:
    def chunks():
        while rows := cur.fetchmany(FETCH_ROWS):
            yield rows

    return _chunks_frame(chunks(), cur.description, types, columns, packed)


def _select(conn, table: str, columns: Sequence[str], where: str, params: Sequence[Any], order: str,
            extra: Sequence[tuple[str, str]] = ()) -> pd.DataFrame:
    """SELECT ``columns``, plus ``extra`` (name, SQL int expression) pairs as int64 columns."""
    types = db.column_types(table)
    d = db.dialect(conn)
    floats = [c for c in columns if types[c] == "float"]
    packed = floats if d == "sqlite" and len(floats) > 1 and PACK_SQLITE_FLOATS else []
    exprs = [db.float_expr(d, c) if types[c] == "float" else c for c in columns if c not in packed]
    exprs += [_packed_floats_expr(packed)] if packed else []
    exprs += [f"{expr} AS {name}" for name, expr in extra]
    sql = f"SELECT {', '.join(exprs)} FROM {table}"
    if where:
        sql += f" WHERE {where}"
    if order:
        sql += f" ORDER BY {order}"
    types = {**types, **{name: "int" for name, _ in extra}}
    cur = conn.cursor()
    try:
        cur.execute(sql, list(params))
        return _fetch_frame(cur, types, [*columns, *(name for name, _ in extra)], packed)
    finally:
        cur.close()
        _end_read(conn)


def _end_read(conn) -> None:
    """End the implicit read transaction (autocommit is off).

    On SQLite an open read transaction keeps a SHARED lock, and every writer
    (the CLI, another task) then waits for ``busy_timeout`` and fails with
    "database is locked"; on PostgreSQL it leaves the session idle in
    transaction. Store writers always commit their own work, so committing
    here never publishes a half-done write of ours.
    """
    if not conn.autocommit:
        conn.commit()


def _pair_clause(pairs: list[tuple[str, str]]) -> tuple[str, list[str]]:
    clause = " OR ".join(["(device_id = ? AND sensor_id = ?)"] * len(pairs))
    return f"({clause})", [v for p in pairs for v in p]


def _filter_pairs(df: pd.DataFrame, pairs: list[tuple[str, str]] | None) -> pd.DataFrame:
    if pairs is None:
        return df
    keys = pd.MultiIndex.from_frame(df[["device_id", "sensor_id"]])
    return df[keys.isin(pairs)].reset_index(drop=True)


def _frame_rows(df: pd.DataFrame, columns: Sequence[str], types: dict[str, str]) -> list[tuple]:
    cols = []
    for c in columns:
        s = df[c]
        if types[c] == "ts":
            cols.append(_utc_series(s).dt.to_pydatetime().tolist())
        elif types[c] == "float":
            cols.append(pd.to_numeric(s, errors="raise").astype("float64").tolist())
        elif types[c] == "int":
            cols.append(s.astype("int64").tolist())
        else:
            cols.append(s.astype(str).tolist())
    return list(zip(*cols))


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} frame lacks columns {missing} (has {list(df.columns)})")


class _transaction:
    """Commit on success, rollback on error; yields a cursor."""

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


def _delete_pairs_in_range(cur, table: str, ts_col: str, pairs, lo, hi, hi_inclusive: bool) -> None:
    op = "<=" if hi_inclusive else "<"
    sql = f"DELETE FROM {table} WHERE device_id = ? AND sensor_id = ? AND {ts_col} >= ? AND {ts_col} {op} ?"
    for d, s in pairs:
        cur.execute(sql, d, s, lo, hi)


# --------------------------------------------------------------------------- readings
@dataclass
class LoadResult:
    """What :func:`load_readings` did.

    Reading counts are rows of the frame: ``inserted`` (new keys), ``updated``
    (existing keys, another value), ``unchanged`` (already stored as they are),
    ``duplicates`` (exact repeats within the frame, stored once).
    ``windows``: the aggregate windows written (new or changed), as
    ``device_id, sensor_id, window_start, window_end`` rows; ``late``: those of
    them that are late data (behind the target's last window, or that last
    window changed a window length after its end: see ``_changed_aggregates``),
    also recorded in ``aggregate_revisions``;
    ``pending``: windows whose readings changed but were not aggregated
    (``aggregate=False``). Empty frames when nothing applies.
    """

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    windows: pd.DataFrame = field(default_factory=lambda: _empty_windows())
    late: pd.DataFrame = field(default_factory=lambda: _empty_windows())
    pending: pd.DataFrame = field(default_factory=lambda: _empty_windows())
    revised_at: dt.datetime | None = None


def _empty_windows() -> pd.DataFrame:
    return pd.DataFrame({"device_id": pd.Series(dtype="str"), "sensor_id": pd.Series(dtype="str"),
                         "window_start": pd.Series(dtype="datetime64[us]"),
                         "window_end": pd.Series(dtype="datetime64[us]")})


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
    """
    _require(df, db.READING_COLUMNS, "readings")
    frame = pd.DataFrame({"ts": key_ts(df["ts"]).to_numpy(), "device_id": df["device_id"].astype(str).to_numpy(),
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
    stored = _read_spans(conn, db.READINGS, db.READING_COLUMNS, "ts", _spans(frame, "ts", dt.timedelta(milliseconds=1)))
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
        before = _read_spans(conn, db.READINGS, db.READING_COLUMNS, "ts", _spans(touched, "window_start", step))
        replaced = before.merge(write[list(READING_KEY)], on=list(READING_KEY), how="left", indicator=True)
        after = pd.concat([before[(replaced["_merge"] == "left_only").to_numpy()], write], ignore_index=True)
        after = after.sort_values(["device_id", "sensor_id", "ts"], kind="mergesort").reset_index(drop=True)
        stored_aggs = _read_spans(conn, db.AGGREGATES, AGGREGATE_COLUMNS, "window_start", _spans(touched, "window_start", step))
        _refuse_foreign_aggregates(stored_aggs, before, step)
        aggs = _only_windows(aggregate_readings(after, window_minutes), touched)
        result.revised_at = _revision_time(revised_at)
        aggs, late = _changed_aggregates(conn, aggs, step, stored_aggs, result.revised_at)
        result.windows, result.late = aggs[list(_empty_windows().columns)], late
    else:
        result.pending = touched
    if write.empty and not len(aggs):
        return result
    types = db.column_types(db.READINGS)
    with _transaction(conn) as cur:
        _delete_keys(cur, db.READINGS, "ts", write.loc[updated[updated | inserted], ["device_id", "sensor_id", "ts"]])
        if len(write):
            db.insert_rows(conn, db.READINGS, db.READING_COLUMNS, _frame_rows(write, db.READING_COLUMNS, types))
        if aggs is not None and len(aggs):
            _write_aggregates(conn, cur, aggs, late, result.revised_at)
    return result


READING_KEY = ("ts", "device_id", "sensor_id")


def upsert_readings(conn, df: pd.DataFrame) -> LoadResult:
    """:func:`load_readings` without aggregating (``result.pending``: the windows to aggregate)."""
    return load_readings(conn, df, aggregate=False)


def replace_readings_range(conn, df: pd.DataFrame, start: Any, end: Any, targets: Iterable[Any] | None = None) -> int:
    """Replace the readings of ``targets`` in ``[start, end)`` by ``df``; returns rows inserted.

    For the simulator, which *generates* a range: re-simulating it must not
    leave readings of an earlier simulation behind. Only readings inside
    ``[start, end)`` of the given targets (default: the frame's) are deleted,
    and ``df`` must lie inside that range. Loads of real data use
    :func:`load_readings`, which never deletes.
    """
    _require(df, db.READING_COLUMNS, "readings")
    lo, hi = _interval(start, end)
    types = db.column_types(db.READINGS)
    rows = _frame_rows(df, db.READING_COLUMNS, types) if not df.empty else []
    outside = [r for r in rows if not (lo <= r[0] < hi)]
    if outside:
        raise ValueError(f"{len(outside)} reading(s) outside the range [{lo}, {hi}) being replaced, "
                         f"first at {outside[0][0]}")
    pairs = _as_pairs(targets) if targets is not None else sorted({(r[1], r[2]) for r in rows})
    with _transaction(conn) as cur:
        _delete_pairs_in_range(cur, db.READINGS, "ts", pairs, db.to_db_value(lo), db.to_db_value(hi), hi_inclusive=False)
        return db.insert_rows(conn, db.READINGS, db.READING_COLUMNS, rows)


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


def _spans(frame: pd.DataFrame, ts_col: str, tail: dt.timedelta) -> dict[tuple[str, str], tuple[dt.datetime, dt.datetime]]:
    """Per (device, sensor): [first ts, last ts + tail) of ``frame``."""
    g = frame.groupby(["device_id", "sensor_id"], sort=True)[ts_col]
    lo, hi = g.min(), g.max()
    return {k: (lo[k].to_pydatetime(), (hi[k] + pd.Timedelta(tail)).to_pydatetime()) for k in lo.index}


def _read_spans(conn, table: str, columns: Sequence[str], ts_col: str,
                spans: dict[tuple[str, str], tuple[dt.datetime, dt.datetime]]) -> pd.DataFrame:
    """Rows of ``table`` with ``lo <= ts_col < hi`` for each (device, sensor) span.

    One query per target for a few targets (a late file touches a few); one
    query over the common span, narrowed to the targets, when they are many.
    """
    if not spans:
        return _select(conn, table, columns, "1 = 0", [], "")
    if len(spans) <= 20:
        parts = [_select(conn, table, columns, f"device_id = ? AND sensor_id = ? AND {ts_col} >= ? AND {ts_col} < ?",
                         [d, s, lo, hi], "") for (d, s), (lo, hi) in spans.items()]
        frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    else:
        lo, hi = min(v[0] for v in spans.values()), max(v[1] for v in spans.values())
        frame = _select_for_targets(conn, table, columns, f"{ts_col} >= ? AND {ts_col} < ?", [lo, hi], "", list(spans))
    if frame.empty:
        return frame
    key = list(zip(frame["device_id"], frame["sensor_id"]))
    los = np.array([np.datetime64(spans[k][0], "us") for k in key])
    his = np.array([np.datetime64(spans[k][1], "us") for k in key])
    ts = frame[ts_col].to_numpy("datetime64[us]")
    return frame[(ts >= los) & (ts < his)].reset_index(drop=True)


def _delete_keys(cur, table: str, ts_col: str, keys: pd.DataFrame) -> None:
    """DELETE rows by (device_id, sensor_id, ts_col) keys, a few hundred per statement."""
    chunk = db.MAX_PARAMS - 2
    for (d, s), g in keys.groupby(["device_id", "sensor_id"], sort=True):
        values = [db.to_db_value(v) for v in pd.to_datetime(g[ts_col]).dt.to_pydatetime()]
        for i in range(0, len(values), chunk):
            part = values[i: i + chunk]
            cur.execute(f"DELETE FROM {table} WHERE device_id = ? AND sensor_id = ? AND {ts_col} IN "
                        f"({', '.join('?' * len(part))})", [d, s, *part])


def _revision_time(value: Any) -> dt.datetime:
    if value is None:
        value = dt.datetime.now(dt.timezone.utc)
    return db.to_db_value(utc_naive(value))


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
                      f"{r.have} in {db.READINGS})" for r in bad.head(5).itertuples(index=False))
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    raise ValueError(
        f"{len(bad)} aggregate window(s) count readings that {db.READINGS} does not hold: {shown}{more}; they were "
        f"not built from this table's readings (another tool, or readings removed), so re-aggregating them would "
        f"lose their statistics. Nothing was loaded: load those windows' raw readings first, or load this file "
        f"without --aggregate")


def _changed_aggregates(conn, aggs: pd.DataFrame, step: pd.Timedelta, stored: pd.DataFrame | None = None,
                        revised_at: dt.datetime | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(rows of aggs that differ from what is stored, the late ones among them)``.

    Late: the window ends before its target's watermark (the last stored
    window_end), whether it existed or fills a gap; or it is the target's last
    window, already stored, changed more than one window length after its end
    (``revised_at``; a stream completing its last window is not late data).
    ``stored``: the stored aggregates of those windows, when the caller read them already.
    """
    if aggs.empty:
        return aggs, _empty_windows()
    if stored is None:
        stored = _read_spans(conn, db.AGGREGATES, AGGREGATE_COLUMNS, "window_start", _spans(aggs, "window_start", step))
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
    marks = target_watermarks(conn, sorted({(d, s) for d, s in zip(aggs["device_id"], aggs["sensor_id"])}))
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
    return out, aggs.loc[late, list(_empty_windows().columns)].reset_index(drop=True)


def _write_aggregates(conn, cur, aggs: pd.DataFrame, late: pd.DataFrame, revised_at) -> None:
    """Replace ``aggs`` by key and record ``late`` in ``aggregate_revisions`` (inside the caller's transaction)."""
    _delete_keys(cur, db.AGGREGATES, "window_start", aggs[["device_id", "sensor_id", "window_start"]])
    db.insert_rows(conn, db.AGGREGATES, AGGREGATE_COLUMNS, _frame_rows(aggs, AGGREGATE_COLUMNS, db.column_types(db.AGGREGATES)))
    if len(late):
        _write_revisions(conn, cur, late, revised_at)


def _write_revisions(conn, cur, late: pd.DataFrame, revised_at: dt.datetime) -> None:
    """Upsert ``late`` windows into ``aggregate_revisions`` with ``revised_at`` (caller's transaction)."""
    revisions = late.assign(revised_at=revised_at)
    _delete_keys(cur, db.REVISIONS, "window_start", revisions[["device_id", "sensor_id", "window_start"]])
    db.insert_rows(conn, db.REVISIONS, db.REVISION_COLUMNS,
                   _frame_rows(revisions, db.REVISION_COLUMNS, db.column_types(db.REVISIONS)))


def read_readings(conn, start: Any, end: Any, targets: Iterable[Any] | None = None) -> pd.DataFrame:
    """Readings with ``start <= ts < end``, sorted by device, sensor, ts."""
    s, e = _interval(start, end)
    return _select_for_targets(conn, db.READINGS, db.READING_COLUMNS, "ts >= ? AND ts < ?", [s, e],
                               "device_id, sensor_id, ts", targets)


def _select_for_targets(conn, table, columns, where, params, order, targets) -> pd.DataFrame:
    """Rows matching ``where``, narrowed to ``targets`` (in SQL up to 500 pairs, beyond that in pandas)."""
    pairs = _as_pairs(targets)
    if pairs is not None and len(pairs) <= 500:
        clause, extra = _pair_clause(pairs) if pairs else ("1 = 0", [])
        where, params = f"{where} AND {clause}", list(params) + extra
    return _filter_pairs(_select(conn, table, columns, where, params, order), pairs)


# --------------------------------------------------------------------------- aggregates
def window_bounds(start: Any, end: Any, window_minutes: int = WINDOW_MINUTES) -> tuple[dt.datetime, dt.datetime]:
    """The whole windows covering [start, end): start floored, end ceiled to the window grid."""
    s, e = _interval(start, end)
    freq = f"{int(window_minutes)}min"
    return pd.Timestamp(s).floor(freq).to_pydatetime(), pd.Timestamp(e).ceil(freq).to_pydatetime()


def aggregate_range(conn, start: Any, end: Any, window_minutes: int = WINDOW_MINUTES, revised_at: Any = None) -> int:
    """(Re)aggregate every window overlapping [start, end); returns aggregate rows written.

    Reads the readings of the whole windows covering the range, aggregates them
    with :func:`aggregate_readings`, and in one transaction deletes every
    aggregate whose window starts in that span and inserts the new ones, so
    re-aggregating replaces a window (and drops windows that have no readings,
    e.g. aggregates written by another tool). Windows whose aggregate changes
    behind their target's watermark are recorded as late data in
    ``aggregate_revisions`` (see :func:`load_readings`).
    """
    ws, we = window_bounds(start, end, window_minutes)
    readings = read_readings(conn, ws, we)
    aggs = aggregate_readings(readings, window_minutes)
    revised_at = _revision_time(revised_at)
    _, late = _changed_aggregates(conn, aggs, pd.Timedelta(minutes=int(window_minutes)), revised_at=revised_at)
    types = db.column_types(db.AGGREGATES)
    rows = _frame_rows(aggs, AGGREGATE_COLUMNS, types) if not aggs.empty else []
    with _transaction(conn) as cur:
        cur.execute(f"DELETE FROM {db.AGGREGATES} WHERE window_start >= ? AND window_start < ?", ws, we)
        n = db.insert_rows(conn, db.AGGREGATES, AGGREGATE_COLUMNS, rows)
        if len(late):
            _write_revisions(conn, cur, late, revised_at)
        return n


def upsert_aggregates(conn, df: pd.DataFrame, revised_at: Any = None) -> int:
    """Insert or replace aggregate rows by (device_id, sensor_id, window_start); returns rows written.

    For aggregates computed elsewhere. Rows that change a stored window or
    fill one in behind the target's watermark are recorded as late data in
    ``aggregate_revisions`` (see :func:`load_readings`).
    """
    _require(df, AGGREGATE_COLUMNS, "aggregates")
    if df.empty:
        return 0
    types = db.column_types(db.AGGREGATES)
    rows = _frame_rows(df, AGGREGATE_COLUMNS, types)
    keys: dict[tuple[str, str], set] = {}
    for r in rows:
        keys.setdefault((r[0], r[1]), set()).add(db.to_db_value(r[2]))
    if sum(len(v) for v in keys.values()) != len(rows):
        raise ValueError("aggregates frame has duplicate (device_id, sensor_id, window_start) keys")
    revised_at = _revision_time(revised_at)
    late = _late_upserts(conn, df, revised_at)
    chunk = db.MAX_PARAMS - 2
    with _transaction(conn) as cur:
        for (d, s), starts in sorted(keys.items()):
            starts = sorted(starts)
            for i in range(0, len(starts), chunk):
                part = starts[i : i + chunk]
                marks = ", ".join("?" * len(part))
                cur.execute(
                    f"DELETE FROM {db.AGGREGATES} WHERE device_id = ? AND sensor_id = ? AND window_start IN ({marks})",
                    [d, s, *part],
                )
        n = db.insert_rows(conn, db.AGGREGATES, AGGREGATE_COLUMNS, rows)
        if len(late):
            _write_revisions(conn, cur, late, revised_at)
        return n


def _late_upserts(conn, df: pd.DataFrame, revised_at: dt.datetime) -> pd.DataFrame:
    """The late rows of an aggregates upsert, reading back only the targets that write behind their watermark."""
    frame = df[list(AGGREGATE_COLUMNS)].copy()
    frame["device_id"], frame["sensor_id"] = frame["device_id"].astype(str), frame["sensor_id"].astype(str)
    for col in ("window_start", "window_end"):
        frame[col] = _utc_series(frame[col])
    marks = target_watermarks(conn, sorted(set(zip(frame["device_id"], frame["sensor_id"]))))
    first_end = frame.groupby(["device_id", "sensor_id"])["window_end"].min()
    behind = [k for k, e in first_end.items() if marks.get(target_name(*k)) is not None and e <= marks[target_name(*k)]]
    if not behind:
        return _empty_windows()
    keys = pd.MultiIndex.from_frame(frame[["device_id", "sensor_id"]])
    part = frame[keys.isin(behind)].reset_index(drop=True)
    step = (part["window_end"] - part["window_start"]).max()
    return _changed_aggregates(conn, part, step, revised_at=revised_at)[1]


# window_end breaks ties between rows sharing a window_start (only possible without the primary key,
# which makes it free): otherwise two reads of the same rows may order them differently.
_AGG_ORDER = "device_id, sensor_id, window_start, window_end"


def read_aggregates(conn, start: Any, end: Any, targets: Iterable[Any] | None = None) -> pd.DataFrame:
    """Aggregates of windows inside [start, end) (window_start >= start, window_end <= end).

    Columns exactly ``AGGREGATE_COLUMNS``; sorted by device, sensor, window_start.
    ``targets``: 'device/sensor' names or (device, sensor) tuples; None = all.
    """
    s, e = _interval(start, end)
    return _select_for_targets(conn, db.AGGREGATES, AGGREGATE_COLUMNS, "window_start >= ? AND window_end <= ?", [s, e],
                               _AGG_ORDER, targets)


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
    return _select(conn, db.REVISIONS, db.REVISION_COLUMNS, " AND ".join(where), params,
                   "window_start, device_id, sensor_id")


def interval_revised_at(conn, start: Any, end: Any) -> dt.datetime | None:
    """The last time late data changed a window starting in [start, end) (None: never).

    The snapshot records it: predictions are stale when a later revision of
    their interval exists (``read_revisions(..., since=that time)``).
    """
    s, e = _interval(start, end)
    cur = conn.cursor()
    try:
        cur.execute(f"SELECT MAX(revised_at) FROM {db.REVISIONS} WHERE window_start >= ? AND window_start < ?", s, e)
        row = cur.fetchone()
    finally:
        cur.close()
        _end_read(conn)
    return db.to_datetime(row[0]) if row else None


def target_watermarks(conn, targets: Iterable[Any] | None = None) -> dict[str, dt.datetime | None]:
    """Last ``window_end`` per 'device/sensor' (None for a requested target with no aggregates).

    ``targets`` None → every target present in the table.
    """
    pairs = _as_pairs(targets)
    sql = f"SELECT device_id, sensor_id, MAX(window_end) FROM {db.AGGREGATES}"
    params: list[Any] = []
    if pairs is not None and 0 < len(pairs) <= 500:
        clause, params = _pair_clause(pairs)
        sql += f" WHERE {clause}"
    sql += " GROUP BY device_id, sensor_id"
    cur = conn.cursor()
    try:
        cur.execute(sql, params) if params else cur.execute(sql)
        found = {(str(d), str(s)): db.to_datetime(m) for d, s, m in cur.fetchall()}
    finally:
        cur.close()
        _end_read(conn)
    if pairs is None:
        return {target_name(d, s): found[(d, s)] for d, s in sorted(found)}
    return {target_name(d, s): found.get((d, s)) for d, s in pairs}


def stale_targets(conn, start: Any, end: Any, expected_targets: Iterable[Any]) -> dict[str, dt.datetime | None]:
    """Expected targets whose aggregates do not reach ``end`` (max window_end < end, or none).

    Returns {'device/sensor': last window_end or None}, sorted by name; empty
    when the interval [start, end) is fresh for every expected target.
    """
    _, e = _interval(start, end)
    marks = target_watermarks(conn, expected_targets)
    return {t: m for t, m in marks.items() if m is None or m < e}


# --------------------------------------------------------------------------- labels
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
    clear a range that now has no anomalies (an empty frame).
    """
    _require(df, db.LABEL_COLUMNS, "labels")
    types = db.column_types(db.LABELS)
    rows = _frame_rows(df, db.LABEL_COLUMNS, types) if not df.empty else []
    if start is None or end is None:
        if not rows:
            return 0
        lo = min(r[3] for r in rows) if start is None else utc_naive(start)
        hi = max(r[4] for r in rows) if end is None else utc_naive(end)
        hi = max(hi, lo + dt.timedelta(milliseconds=1))
    else:
        lo, hi = _interval(start, end)
    pairs = _as_pairs(targets) if targets is not None else sorted({(r[0], r[1]) for r in rows})
    lo, hi = db.to_db_value(lo), db.to_db_value(hi)
    with _transaction(conn) as cur:
        _delete_pairs_in_range(cur, db.LABELS, "start_ts", pairs, lo, hi, hi_inclusive=False)
        return db.insert_rows(conn, db.LABELS, db.LABEL_COLUMNS, rows)


def read_labels(conn, start: Any = None, end: Any = None) -> pd.DataFrame:
    """Labels overlapping [start, end) (all if unbounded), sorted by device, sensor, start_ts."""
    where, params = [], []
    if start is not None:
        where.append("end_ts > ?")
        params.append(utc_naive(start))
    if end is not None:
        where.append("start_ts < ?")
        params.append(utc_naive(end))
    return _select(
        conn, db.LABELS, db.LABEL_COLUMNS, " AND ".join(where), params, "device_id, sensor_id, start_ts, kind"
    )


# --------------------------------------------------------------------------- interval checks
def _fmt_windows(starts: Sequence[dt.datetime], window_minutes: int, limit: int = 6) -> str:
    """'10:40-11:00 (4 windows)'-style runs of consecutive window starts."""
    step = dt.timedelta(minutes=window_minutes)
    runs: list[list[dt.datetime]] = []
    for s in sorted(starts):
        if runs and s - runs[-1][1] == step:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    parts = []
    for lo, hi in runs[:limit]:
        n = int((hi - lo) / step) + 1
        parts.append(f"{lo:%Y-%m-%d %H:%M}-{hi + step:%H:%M} ({n} window{'s' if n > 1 else ''})")
    more = f" and {len(runs) - limit} more gaps" if len(runs) > limit else ""
    return ", ".join(parts) + more


def missing_windows(conn, start: Any, end: Any, targets: Iterable[Any],
                    window_minutes: int = WINDOW_MINUTES) -> dict[str, list[dt.datetime]]:
    """Window starts of the grid over [start, end) that have no aggregate row, per 'device/sensor'.

    Only the requested targets; a target with every window present is left out.
    """
    ws, we = window_bounds(start, end, window_minutes)
    grid = list(pd.date_range(ws, we, freq=f"{int(window_minutes)}min", inclusive="left").to_pydatetime())
    pairs = _as_pairs(targets) or []
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


def describe_missing_windows(missing: list[dt.datetime], window_minutes: int = WINDOW_MINUTES) -> str:
    return _fmt_windows(missing, window_minutes)


def interval_aggregate_problems(conn, start: Any, end: Any, window_minutes: int = WINDOW_MINUTES) -> dict[str, list[str]]:
    """Structural problems of the aggregates touching [start, end), per 'device/sensor'.

    A snapshot built on these would silently drop or double windows, so the
    snapshot refuses them: duplicate windows (same device, sensor and
    window_start: possible when the table lacks its primary key), windows whose
    length is not ``window_minutes``, windows not on the window grid, and
    windows that straddle the interval's bounds.
    """
    return read_interval_aggregates(conn, start, end, window_minutes)[1]


# rows selected by read_interval_aggregates: touching [start, end) (checked) or inside it (read_aggregates')
_TOUCHING = "window_start < ? AND window_end > ?"
_INSIDE = "window_start >= ? AND window_end <= ?"


def read_interval_aggregates(conn, start: Any, end: Any,
                             window_minutes: int = WINDOW_MINUTES) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """``(read_aggregates(conn, start, end), interval_aggregate_problems(conn, start, end, window_minutes))``.

    The snapshot needs both, and at fleet scale (2.88M windows) each was a full
    read: here one SELECT of the rows touching or inside the interval serves
    both. SQL flags which is which (``part_of``), so each part has exactly the
    rows its own query would select (SQLite compares timestamps as text).
    """
    s, e = _interval(start, end)
    part = f"CASE WHEN {_TOUCHING} THEN 1 ELSE 0 END + CASE WHEN {_INSIDE} THEN 2 ELSE 0 END"
    frame = _select(conn, db.AGGREGATES, AGGREGATE_COLUMNS, f"({_TOUCHING}) OR ({_INSIDE})", [e, s, s, e, e, s, s, e],
                    _AGG_ORDER, extra=[("part_of", part)])
    flags = frame.pop("part_of").to_numpy()
    touching, inside = (flags & 1).astype(bool), (flags & 2).astype(bool)
    problems = _window_problems(frame if touching.all() else frame[touching], s, e, window_minutes)
    return (frame if inside.all() else frame[inside].reset_index(drop=True)), problems


def _window_problems(frame: pd.DataFrame, start: dt.datetime, end: dt.datetime,
                     window_minutes: int) -> dict[str, list[str]]:
    """The checks of :func:`interval_aggregate_problems` on every row at once (frame sorted by target, window_start).

    Only the targets with a problem are visited in Python, so a clean fleet costs one vectorised pass.
    """
    if frame.empty:
        return {}
    step = pd.Timedelta(minutes=window_minutes)
    starts, ends = frame["window_start"], frame["window_end"]
    checks = pd.DataFrame({
        "dup": frame.duplicated(["device_id", "sensor_id", "window_start"], keep=False),
        "bad_len": (ends - starts) != step,
        "off_grid": starts != starts.dt.floor(step),
        "outside": (starts < pd.Timestamp(start)) | (ends > pd.Timestamp(end)),
    })
    bad = checks.any(axis=1).to_numpy()
    if not bad.any():
        return {}
    rows = pd.concat([frame.loc[bad, ["device_id", "sensor_id", "window_start"]], checks[bad]], axis=1)
    problems: dict[str, list[str]] = {}
    for (d, sen), g in rows.groupby(["device_id", "sensor_id"], sort=True):
        found = []
        dup = g.loc[g["dup"], "window_start"].drop_duplicates()
        if len(dup):
            found.append(f"duplicate windows starting {', '.join(f'{w:%Y-%m-%d %H:%M}' for w in dup.iloc[:5])}"
                         + (f" (+{len(dup) - 5})" if len(dup) > 5 else ""))
        for col, what in (("bad_len", f"not {window_minutes} minutes long"),
                          ("off_grid", f"off the {window_minutes}-minute grid"),
                          ("outside", "straddling the interval's bounds")):
            hit = g.loc[g[col], "window_start"]
            if len(hit):
                found.append(f"{len(hit)} window(s) {what}, starting "
                             + ", ".join(f"{w:%Y-%m-%d %H:%M:%S}" for w in hit.iloc[:5]))
        problems[target_name(d, sen)] = found
    return problems
