"""Typed SELECTs: SQL rows of the sensor database into typed pandas frames.

Frames are built from ``cursor.fetchmany()`` batches + ``cursor.description``
and typed explicitly (by arrow / numpy, not per value): ids ``str``, timestamps
``datetime64[us]``, floats ``float64`` (NULL → NaN), counts ``int64``. Also the
argument rules every query shares: an interval is half-open ``[start, end)`` in
naive UTC, targets are 'device/sensor' names or (device, sensor) pairs.
No Airflow import; every function takes an open pyodbc connection.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from batch_scoring.scoring.config import parse_target
from batch_scoring.scoring.times import utc_naive
from batch_scoring.sensor_db import schema


def interval(start: Any, end: Any) -> tuple[dt.datetime, dt.datetime]:
    """``(start, end)`` as naive UTC ``datetime`` (anything :func:`scoring.times.utc_naive` reads).

    Raises ``ValueError`` when ``end`` is not after ``start`` ("empty interval: ...")
    or a bound is not a timestamp.
    """
    s, e = utc_naive(start), utc_naive(end)
    if e <= s:
        raise ValueError(f"empty interval: end {e.isoformat()} is not after start {s.isoformat()}")
    return s, e


def target_pairs(targets: Iterable[Any] | None) -> list[tuple[str, str]] | None:
    """'device/sensor' names or (device, sensor) pairs → sorted distinct ``(device, sensor)`` str pairs.

    ``None`` stays ``None`` (all targets). Raises ``ValueError`` for a malformed name.
    """
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
        return pd.Series([schema.to_datetime(v) for v in values], dtype="datetime64[us]").to_numpy()
    if logical == "float":
        return pd.Series([schema.to_float(v) for v in values], dtype="float64").to_numpy()
    return pd.Series([int(v) for v in values], dtype="int64").to_numpy()


# SQLite: every FLOAT column of a row in ONE text cell (17 digits each, as schema.float_expr, '|'-joined,
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


def chunks_frame(chunks: Iterable[list], description, types: dict[str, str], columns: Sequence[str],
                 packed: Sequence[str] = ()) -> pd.DataFrame:
    """Typed frame from batches of fetched rows, each batch transposed and converted as it arrives.

    ``chunks``: lists of row tuples in ``description`` order (a DB-API cursor
    description: column name first); ``types``: logical type per lower-case
    column name ('ts', 'float', 'int'; anything else is text); ``columns``: the
    frame's columns, in order. ``packed``: the float columns fetched as one
    ``_PACKED`` text cell. Raises ``ValueError`` / ``TypeError`` for a value its
    type cannot hold (e.g. NULL in an int column).
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

    return chunks_frame(chunks(), cur.description, types, columns, packed)


def _select_sql(conn, table: str, columns: Sequence[str], where: str, order: str,
                extra: Sequence[tuple[str, str]]) -> tuple[str, dict[str, str], list[str], list[str]]:
    """``(sql, types, packed, frame columns)`` of :func:`select` / :func:`select_batches`."""
    types = schema.column_types(table)
    d = schema.dialect(conn)
    floats = [c for c in columns if types[c] == "float"]
    packed = floats if d == "sqlite" and len(floats) > 1 and PACK_SQLITE_FLOATS else []
    exprs = [schema.float_expr(d, c) if types[c] == "float" else c for c in columns if c not in packed]
    exprs += [_packed_floats_expr(packed)] if packed else []
    exprs += [f"{expr} AS {name}" for name, expr in extra]
    sql = f"SELECT {', '.join(exprs)} FROM {table}"
    if where:
        sql += f" WHERE {where}"
    if order:
        sql += f" ORDER BY {order}"
    types = {**types, **{name: "int" for name, _ in extra}}
    return sql, types, packed, [*columns, *(name for name, _ in extra)]


def select(conn, table: str, columns: Sequence[str], where: str, params: Sequence[Any], order: str,
           extra: Sequence[tuple[str, str]] = ()) -> pd.DataFrame:
    """SELECT ``columns`` of ``table`` as a typed frame, plus ``extra`` (name, SQL int expression) pairs as int64 columns.

    ``where`` / ``order``: SQL fragments with ``?`` placeholders for ``params`` (empty: none).
    Ends the read transaction afterwards (:func:`end_read`). Raises pyodbc errors as they come.
    """
    sql, types, packed, names = _select_sql(conn, table, columns, where, order, extra)
    cur = conn.cursor()
    try:
        cur.execute(sql, list(params))
        return _fetch_frame(cur, types, names, packed)
    finally:
        cur.close()
        end_read(conn)


def select_batches(conn, table: str, columns: Sequence[str], where: str, params: Sequence[Any], order: str,
                   extra: Sequence[tuple[str, str]] = (), batch_rows: int | None = None) -> Iterator[pd.DataFrame]:
    """:func:`select` as a stream: one typed frame per ``cursor.fetchmany(batch_rows)`` (default ``FETCH_ROWS``).

    Same columns, types and row order as :func:`select`; each frame has at
    most ``batch_rows`` rows and a fresh 0-based index, so memory is bounded by
    the batch, not the result. A result without rows yields one empty typed
    frame. The read transaction ends when the stream is exhausted or closed.

    On SQLite the statement runs with its parameters inlined (:func:`inline_parameters`) and in
    autocommit, the only way the driver steps through a result instead of reading it whole
    (with ``StepAPI=1``, :func:`batch_scoring.sensor_db.schema.bounded_fetch_options`); it is
    still one statement, so it reads one consistent state of the database.
    Raises pyodbc errors as they come, ``ValueError`` / ``TypeError`` as :func:`chunks_frame`.
    """
    size = int(batch_rows or FETCH_ROWS)
    if size < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    sql, types, packed, names = _select_sql(conn, table, columns, where, order, extra)
    stepped = schema.dialect(conn) == "sqlite"
    if stepped:  # SQLite's driver steps only through a statement without parameters, outside a transaction
        sql, params = inline_parameters(conn, sql, params), []
        end_read(conn)
    was, cur = conn.autocommit, None
    try:
        if stepped:
            conn.autocommit = True
        cur = conn.cursor()
        cur.execute(sql, list(params))
        description, yielded = cur.description, False
        while rows := cur.fetchmany(size):
            yield chunks_frame([rows], description, types, names, packed)
            yielded = True
        if not yielded:
            yield chunks_frame([], description, types, names, packed)
    finally:
        if cur is not None:
            cur.close()
        if stepped:
            conn.autocommit = was
        end_read(conn)


def inline_parameters(conn, sql: str, params: Sequence[Any]) -> str:
    """``sql`` with each ``?`` replaced by its parameter as a SQLite literal, for the step API.

    The literals come from SQLite itself: ``SELECT quote(?), ...`` with the parameters bound
    exactly as the query would bind them (timestamps as the driver writes them), so the inlined
    statement compares what the bound one would. ``sql`` must hold no ``?`` in a string literal
    (ours hold none). Raises ``ValueError`` when the ``?`` count differs from ``len(params)``.
    """
    pieces = sql.split("?")
    if len(pieces) - 1 != len(params):
        raise ValueError(f"{len(pieces) - 1} placeholders for {len(params)} parameters in {sql!r}")
    if not params:
        return sql
    cur = conn.cursor()
    try:
        cur.execute("SELECT " + ", ".join(["quote(?)"] * len(params)), list(params))
        literals = [str(v) for v in cur.fetchone()]
    finally:
        cur.close()
    return "".join(piece + literal for piece, literal in zip(pieces, literals)) + pieces[-1]


def end_read(conn) -> None:
    """End the implicit read transaction (autocommit is off).

    On SQLite an open read transaction keeps a SHARED lock, and every writer
    (the CLI, another task) then waits for ``busy_timeout`` and fails with
    "database is locked"; on PostgreSQL it leaves the session idle in
    transaction. The loader's writers always commit their own work, so committing
    here never publishes a half-done write of ours.
    """
    if not conn.autocommit:
        conn.commit()


def pair_clause(pairs: list[tuple[str, str]]) -> tuple[str, list[str]]:
    """``("((device_id = ? AND sensor_id = ?) OR ...)", [d1, s1, d2, s2, ...])`` for ``pairs`` (non-empty)."""
    clause = " OR ".join(["(device_id = ? AND sensor_id = ?)"] * len(pairs))
    return f"({clause})", [v for p in pairs for v in p]


def _filter_pairs(df: pd.DataFrame, pairs: list[tuple[str, str]] | None) -> pd.DataFrame:
    if pairs is None:
        return df
    keys = pd.MultiIndex.from_frame(df[["device_id", "sensor_id"]])
    return df[keys.isin(pairs)].reset_index(drop=True)


def select_for_targets(conn, table, columns, where, params, order, targets) -> pd.DataFrame:
    """:func:`select` narrowed to ``targets`` (see :func:`target_pairs`; None = all, [] = none).

    The narrowing is done in SQL up to 500 pairs, beyond that in pandas (same rows).
    """
    pairs = target_pairs(targets)
    if pairs is not None and len(pairs) <= 500:
        clause, extra = pair_clause(pairs) if pairs else ("1 = 0", [])
        where, params = f"{where} AND {clause}", list(params) + extra
    return _filter_pairs(select(conn, table, columns, where, params, order), pairs)
