"""sensor_db.frames: the vectorised conversion of fetched rows gives what the per-value conversion gave.

The oracle is the per-value conversion it replaced, kept here only for that comparison.
"""
from __future__ import annotations

import datetime as dt
import decimal

import pandas as pd
import pytest

from batch_scoring.sensor_db import frames, schema


def _old_typed_frame(rows, description, types, columns) -> pd.DataFrame:
    """The per-value conversion chunks_frame replaced (the oracle)."""
    names = [d[0].lower() for d in description]
    raw = list(zip(*rows)) if rows else [() for _ in names]
    data = {}
    for name, values in zip(names, raw):
        logical = types.get(name)
        if logical == "ts":
            data[name] = pd.Series([schema.to_datetime(v) for v in values], dtype="datetime64[us]")
        elif logical == "float":
            data[name] = pd.Series([schema.to_float(v) for v in values], dtype="float64")
        elif logical == "int":
            data[name] = pd.Series([int(v) for v in values], dtype="int64")
        else:
            data[name] = pd.Series([None if v is None else str(v) for v in values], dtype="str")
    return pd.DataFrame(data, columns=list(columns))


TYPES = {"id": "id", "ts": "ts", "f": "float", "n": "int"}
DESCRIPTION = [(name,) for name in TYPES]
D = dt.datetime(2024, 5, 6, 7, 8, 9, 123000)


@pytest.mark.parametrize("rows", [
    pytest.param([("a", D, "0.30000000000000004", 3), ("b", None, None, 4), ("c", D, "-0", 5),
                  ("d", D, "Inf", 6), ("e", D, "4.9406564584124654e-324", 7)], id="sqlite-text-floats"),
    pytest.param([("a", D, 0.1, 3), ("b", D, None, 4), (None, D, float("nan"), 5)], id="native-floats"),
    pytest.param([("a", D, decimal.Decimal("0.1"), 3), ("b", D, decimal.Decimal("1E+400"), 4)], id="decimals"),
    pytest.param([("a", D, " 1.5 ", 3), ("b", D, "1_000", 4), ("c", D, "2.5", 5)], id="text-only-float-parses"),
    pytest.param([("a", "2024-05-06 07:08:09.123", "1", 3), ("b", " 2024-05-06T07:08:09 ", "2", 4),
                  ("c", dt.date(2024, 5, 6), "3", 5), ("d", None, "4", 6)], id="text-and-date-timestamps"),
    pytest.param([(1, D, "1", "7"), (2.5, D, "2", decimal.Decimal("8")), ("x", D, "3", True)], id="odd-ids-and-ints"),
    pytest.param([], id="empty"),
])
def test_typed_frame_matches_the_per_value_conversion(rows):
    got = frames.chunks_frame([rows], DESCRIPTION, TYPES, list(TYPES))
    pd.testing.assert_frame_equal(got, _old_typed_frame(rows, DESCRIPTION, TYPES, list(TYPES)), check_exact=True)
    assert got.dtypes.astype(str).tolist() == ["str", "datetime64[us]", "float64", "int64"]


@pytest.mark.parametrize("rows, error", [
    ([("a", D, "1", None)], TypeError),  # NULL count
    ([("a", D, "x", 1)], ValueError),  # unparseable float
    ([("a", "not a time", "1", 1)], ValueError),
    ([("a", dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), "1", 1)], ValueError),  # aware timestamp
])
def test_typed_frame_fails_like_the_per_value_conversion(rows, error):
    with pytest.raises(error):
        _old_typed_frame(rows, DESCRIPTION, TYPES, list(TYPES))
    with pytest.raises(error):
        frames.chunks_frame([rows], DESCRIPTION, TYPES, list(TYPES))


@pytest.mark.parametrize("batch_rows", [1, 5, 100_000])
def test_select_batches_streams_the_rows_select_reads(conn, batch_rows):
    """Same rows, types and order as one select; no frame above batch_rows; no rows: one empty typed frame."""
    from batch_scoring.ingest_sim import loads
    from tests.sensor_db.test_reads import _grid

    args = (conn, schema.AGGREGATES, list(schema.column_types(schema.AGGREGATES)), "device_id <> ?", ["d3"],
            "device_id, sensor_id, window_start")
    empty = list(frames.select_batches(*args, batch_rows=batch_rows))
    assert len(empty) == 1 and empty[0].empty
    pd.testing.assert_frame_equal(empty[0], frames.select(*args), check_exact=True)
    loads.upsert_aggregates(conn, _grid(hours=1))
    whole = frames.select(*args)
    batches = list(frames.select_batches(*args, batch_rows=batch_rows))
    assert len(whole) == 5 * 12 and len(batches) == -(-len(whole) // batch_rows)
    assert all(len(b) <= batch_rows and b.index[0] == 0 for b in batches)
    pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), whole, check_exact=True)
    with pytest.raises(ValueError, match="batch_rows must be at least 1, got -1"):
        next(frames.select_batches(*args, batch_rows=-1))


SQLITE_ROWS = 300_000  # 1,000 targets x 300 windows


def sqlite_aggregates(folder) -> str:
    """A SQLite sensor database (schema by ``schema.create_schema``) holding ``SQLITE_ROWS`` aggregates; its ODBC string."""
    import sqlite3

    from tests.fixtures.sql import SQLITE_DRIVER

    path = folder / "big.db"
    conn = schema.connect(f"Driver={SQLITE_DRIVER};Database={path}")
    schema.create_schema(conn)
    conn.close()
    with sqlite3.connect(path) as raw:  # bulk rows in one statement (the loader's path is tested elsewhere)
        raw.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO sensor_aggregates SELECT printf('dev%04d', i / 300), 's1', "
            "strftime('%Y-%m-%d %H:%M:%f', '2026-03-02', printf('+%d minutes', (i % 300) * 5)), "
            "strftime('%Y-%m-%d %H:%M:%f', '2026-03-02', printf('+%d minutes', (i % 300) * 5 + 5)), "
            "i * 0.5, i * 0.25, i * 0.75, 1.0, 30 FROM n", [SQLITE_ROWS - 1])
    return f"Driver={SQLITE_DRIVER};Database={path}"


_FIRST_BATCH = """
import os, sys
from batch_scoring.sensor_db import frames, schema
conn_str, through_hook = sys.argv[1], sys.argv[2] == "hook"
if through_hook:
    from batch_scoring.hooks.sql import sensor_sql
    from devstack.airflow_env import odbc_connection_uri_json
    os.environ["AIRFLOW_CONN_SENSOR_SQL"] = odbc_connection_uri_json(conn_str)
    os.environ["AIRFLOW__PROVIDERS_ODBC__ALLOW_DRIVER_IN_EXTRA"] = "True"
    opened = sensor_sql("sensor_sql")
else:
    import contextlib
    opened = contextlib.closing(schema.connect(conn_str))
with opened as conn:
    def resident():  # bytes now resident (the driver holds a buffered result until the cursor closes)
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    before = resident()
    batch = next(frames.select_batches(conn, schema.AGGREGATES, list(schema.column_types(schema.AGGREGATES)),
                                       "window_start >= ?", ["2026-03-01"], "device_id, sensor_id, window_start",
                                       batch_rows=1000))
    assert len(batch) == 1000 and batch["device_id"].iloc[0] == "dev0000", batch.head()
    print(resident() - before)
"""


def first_batch_memory(conn_str: str, through_hook: bool = False) -> int:
    """Bytes the process's resident memory grew by while ``select_batches`` fetched its first 1,000-row batch."""
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _FIRST_BATCH, conn_str, "hook" if through_hook else "direct"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0, out.stderr[-3000:]
    return int(out.stdout.split()[-1])


def test_a_sqlite_read_fetches_its_first_batch_without_reading_the_result(tmp_path):
    """With the step API (schema.connect's default) the first batch of 300,000 rows costs a batch; without, the result."""
    conn_str = sqlite_aggregates(tmp_path)
    stepped, whole = first_batch_memory(conn_str), first_batch_memory(conn_str + ";StepAPI=0")
    assert whole > SQLITE_ROWS * 100 and stepped * 4 < whole, (stepped, whole)  # measured: 10 MB vs 81 MB resident


def test_inline_parameters_compares_what_binding_compares(sqlite_conn_str):
    """Inlined literals select exactly the rows the bound parameters select (timestamps, quotes, numbers)."""
    from batch_scoring.ingest_sim import loads

    conn = schema.connect(sqlite_conn_str)
    schema.create_schema(conn)
    from tests.sensor_db.test_reads import _grid

    loads.upsert_aggregates(conn, _grid(hours=1))
    cur = conn.cursor()
    sql = "SELECT device_id, window_start FROM sensor_aggregates WHERE window_start >= ? AND device_id <> ? AND n_readings > ?"
    for params in ([dt.datetime(2024, 1, 1, 0, 20), "d2", 0], [dt.datetime(2024, 1, 1, 0, 20, 0, 1000), "it's", -1.5]):
        bound = cur.execute(sql, params).fetchall()
        inlined = frames.inline_parameters(conn, sql, params)
        assert "?" not in inlined and bound and cur.execute(inlined).fetchall() == bound
    with pytest.raises(ValueError, match="3 placeholders for 2 parameters"):
        frames.inline_parameters(conn, sql, [1, 2])


def test_a_stream_restores_the_connection_state_however_it_ends(conn):
    """Exhausted, closed early or failing: the connection is back in autocommit off, no read left open."""
    from batch_scoring.ingest_sim import loads
    from tests.sensor_db.test_reads import _grid

    loads.upsert_aggregates(conn, _grid(hours=1))
    args = (conn, schema.AGGREGATES, ["device_id", "window_start"], "device_id <> ?", ["x"], "device_id, window_start")
    assert sum(map(len, frames.select_batches(*args, batch_rows=7))) > 7 and conn.autocommit is False
    stream = frames.select_batches(*args, batch_rows=7)
    next(stream)
    stream.close()
    assert conn.autocommit is False
    with pytest.raises(Exception):
        next(frames.select_batches(conn, schema.AGGREGATES, ["device_id"], "no_such_column = ?", [1], ""))
    assert conn.autocommit is False
    assert len(frames.select(*args)) == 7 * 12  # the connection still reads
