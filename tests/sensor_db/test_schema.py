"""sensor_db.schema on real SQLite and PostgreSQL through pyodbc."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from batch_scoring.sensor_db import schema


@pytest.fixture
def conn(sql_conn_str):
    c = schema.connect(sql_conn_str)
    yield c
    c.close()


def _tables(conn) -> set[str]:
    cur = conn.cursor()
    names = {row.table_name.lower() for row in cur.tables(tableType="TABLE")}
    cur.close()
    return names


def _count(conn, table: str) -> int:
    cur = conn.cursor()
    cur.execute(f"SELECT COUNT(*) FROM {table}")
    n = cur.fetchone()[0]
    cur.close()
    return int(n)


def test_dialect_detected(conn, sql_conn_str):
    expected = "sqlite" if "SQLite3" in sql_conn_str else "postgresql"
    assert schema.dialect(conn) == expected


def test_create_schema_is_idempotent(conn):
    schema.create_schema(conn)
    schema.create_schema(conn)
    assert {schema.READINGS, schema.AGGREGATES, schema.LABELS} <= _tables(conn)
    schema.insert_rows(conn, schema.READINGS, schema.READING_COLUMNS, [(dt.datetime(2024, 1, 1), "d", "s", 1.0)])
    conn.commit()
    schema.create_schema(conn)  # does not wipe data
    assert _count(conn, schema.READINGS) == 1


def test_aggregates_primary_key_rejects_duplicates(conn):
    schema.create_schema(conn)
    row = ("d", "s", dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, 0, 5), 1.0, 1.0, 1.0, 0.0, 1)
    schema.insert_rows(conn, schema.AGGREGATES, ("device_id", "sensor_id", "window_start", "window_end", "value_mean",
                                         "value_min", "value_max", "value_std", "n_readings"), [row])
    conn.commit()
    import pyodbc

    with pytest.raises(pyodbc.Error):
        schema.insert_rows(conn, schema.AGGREGATES, ("device_id", "sensor_id", "window_start", "window_end", "value_mean",
                                             "value_min", "value_max", "value_std", "n_readings"), [row])
    conn.rollback()


def test_insert_chunks_over_the_parameter_limit(conn):
    schema.create_schema(conn)
    base = dt.datetime(2024, 1, 1)
    rows = [(base + dt.timedelta(seconds=i), f"d{i % 7}", "s1", float(i)) for i in range(5000)]  # 20,000 params
    assert schema.insert_rows(conn, schema.READINGS, schema.READING_COLUMNS, rows) == 5000
    conn.commit()
    assert _count(conn, schema.READINGS) == 5000
    cur = conn.cursor()
    cur.execute(f"SELECT SUM(value), MIN(value), MAX(value) FROM {schema.READINGS}")
    total, lo, hi = cur.fetchone()
    assert (float(total), float(lo), float(hi)) == (sum(range(5000)), 0.0, 4999.0)


def test_statements_respect_sql_server_limits():
    # every statement carries at most 2,100 parameters and 1,000 rows
    assert schema.MAX_PARAMS <= 2100 and schema.MAX_ROWS <= 1000


def test_numpy_and_pandas_scalars_bind(conn):
    schema.create_schema(conn)
    rows = [
        (pd.Timestamp("2024-01-01 00:00:01"), np.str_("d1"), "s1", np.float64(1.5)),
        (np.datetime64("2024-01-01T00:00:02"), "d1", "s1", np.float32(2.5)),
        (pd.Timestamp("2024-01-01 01:00:03+01:00"), "d1", "s1", np.int64(3)),  # aware → UTC 00:00:03
        (dt.datetime(2024, 1, 1, 0, 0, 4), "d1", "s1", np.nan),  # NaN → NULL
    ]
    schema.insert_rows(conn, schema.READINGS, schema.READING_COLUMNS, rows)
    conn.commit()
    cur = conn.cursor()
    cur.execute(f"SELECT ts, value FROM {schema.READINGS} ORDER BY ts")
    got = [(schema.to_datetime(t), v) for t, v in cur.fetchall()]
    assert [t for t, _ in got] == [dt.datetime(2024, 1, 1, 0, 0, s) for s in (1, 2, 3, 4)]
    assert [v for _, v in got] == [1.5, 2.5, 3.0, None]


def test_float_keeps_8_bytes(conn):
    schema.create_schema(conn)
    x = 0.1 + 0.2
    assert x != 0.3
    tiny, big = 1.0000000000000002, 123456789.12345679
    schema.insert_rows(conn, schema.READINGS, schema.READING_COLUMNS,
                   [(dt.datetime(2024, 1, 1, 0, 0, i), "d", "s", v) for i, v in enumerate((x, tiny, big))])
    conn.commit()
    cur = conn.cursor()
    cur.execute(f"SELECT {schema.float_expr(conn, 'value')} FROM {schema.READINGS} ORDER BY ts")
    assert [schema.to_float(r[0]) for r in cur.fetchall()] == [x, tiny, big]


def test_timestamps_are_naive_utc_to_the_millisecond(conn):
    schema.create_schema(conn)
    aware = dt.datetime(2024, 6, 1, 12, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    schema.insert_rows(conn, schema.READINGS, schema.READING_COLUMNS, [(aware, "d", "s", 1.0)])
    conn.commit()
    cur = conn.cursor()
    cur.execute(f"SELECT ts, MAX(ts) FROM {schema.READINGS} GROUP BY ts")
    ts, mx = cur.fetchone()
    expected = dt.datetime(2024, 6, 1, 10, 0, 0, 123000)
    assert schema.to_datetime(ts) == expected
    assert schema.to_datetime(mx) == expected  # SQLite returns MAX(ts) as text: normalised


def test_mssql_ddl_is_guarded_and_uses_datetime2():
    stmts = schema.schema_statements("mssql")
    text = "\n".join(stmts)
    assert "IF OBJECT_ID(N'dbo.sensor_aggregates', N'U') IS NULL" in text
    assert "DATETIME2" in text and "TIMESTAMP" not in text and "REAL" not in text
    assert "IF NOT EXISTS" in text and "sys.indexes" in text
    assert "CONSTRAINT pk_sensor_aggregates PRIMARY KEY (device_id, sensor_id, window_start)" in text
    for d in ("sqlite", "postgresql"):
        ddl = "\n".join(schema.schema_statements(d))
        assert "IF NOT EXISTS" in ddl and "TIMESTAMP" in ddl and "FLOAT" in ddl and "REAL" not in ddl


def test_default_conn_str(monkeypatch, tmp_path):
    monkeypatch.setenv(schema.ENV_CONN_STR, "Driver=X;Database=y")
    assert schema.default_conn_str() == "Driver=X;Database=y"
    monkeypatch.delenv(schema.ENV_CONN_STR)
    # below the current directory, never inside the (possibly installed, read-only) package
    monkeypatch.chdir(tmp_path)
    assert schema.default_conn_str() == f"Driver=SQLite3;Database={tmp_path / '.local' / 'sensors.db'}"
    assert (tmp_path / ".local").is_dir()
