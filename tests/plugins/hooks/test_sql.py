"""hooks/sql.sensor_sql on real databases: PostgreSQL reads go through a server-side cursor, in bounded batches."""
from __future__ import annotations

import pytest

from batch_scoring.hooks.sql import PSQL_FETCH_ROWS, bounded_fetch_options, sensor_sql
from devstack.airflow_env import odbc_connection_uri_json

pytestmark = pytest.mark.timeout(120)


def _open_cursors(conn) -> list[str]:
    cur = conn.cursor()
    cur.execute("SELECT statement FROM pg_cursors")
    return [row[0] for row in cur.fetchall()]


def test_a_postgresql_read_is_fetched_through_a_cursor(pg_conn_str, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SENSOR_SQL", odbc_connection_uri_json(pg_conn_str))
    with sensor_sql("sensor_sql") as conn:
        big = conn.cursor()
        big.execute("SELECT g FROM generate_series(1, 50000) AS g")
        assert [r[0] for r in big.fetchmany(3)] == [1, 2, 3]
        # psqlODBC declared a cursor for the SELECT and holds the rest on the server
        assert any("generate_series" in s for s in _open_cursors(conn))
        assert len(big.fetchall()) == 50000 - 3


def test_a_connection_that_sets_usedeclarefetch_keeps_its_own_choice(pg_conn_str, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SENSOR_SQL", odbc_connection_uri_json(pg_conn_str + ";UseDeclareFetch=0"))
    with sensor_sql("sensor_sql") as conn:
        big = conn.cursor()
        big.execute("SELECT g FROM generate_series(1, 50000) AS g")
        big.fetchmany(3)
        assert not any("generate_series" in s for s in _open_cursors(conn))  # whole result fetched at once


@pytest.mark.parametrize("driver, extra, expected", [
    ("PostgreSQL Unicode", {}, {"UseDeclareFetch": "1", "Fetch": str(PSQL_FETCH_ROWS)}),
    ("PostgreSQL ANSI", {"usedeclarefetch": "0"}, {}),
    ("SQLite3", {}, {}),
    ("ODBC Driver 18 for SQL Server", {}, {}),
    (None, {}, {}),
])
def test_bounded_fetch_options(driver, extra, expected):
    assert bounded_fetch_options(driver, extra) == expected
