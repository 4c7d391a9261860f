"""The sensor-aggregates database, reached through the provider's OdbcHook."""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def sensor_sql(conn_id: str):
    """A pyodbc connection from an Airflow ``odbc`` connection, closed on exit.

    The driver comes from the connection's extra (set
    ``[providers.odbc] allow_driver_in_extra = True``); every other extra key
    is passed through to the ODBC string, so SQLite, PostgreSQL and Azure SQL
    differ only in their connection, never in code.
    """
    from airflow.providers.odbc.hooks.odbc import OdbcHook

    conn = OdbcHook(odbc_conn_id=conn_id).get_conn()
    try:
        yield conn
    finally:
        conn.close()
