"""The sensor-aggregates database, reached through the provider's OdbcHook."""
from __future__ import annotations

import contextlib


class SensorSqlError(RuntimeError):
    """The aggregates database could not be reached or queried; names the connection, never its secrets."""


def _where(hook, conn_id: str) -> str:
    """'Airflow connection sensor_sql (driver X, server H:P, database D)': no login, no password."""
    try:
        conn = hook.connection
        extra = {k.lower(): v for k, v in (conn.extra_dejson or {}).items()}
        parts = []
        driver = hook.connection_extra_lower.get("driver") if hasattr(hook, "connection_extra_lower") else None
        driver = driver or extra.get("driver")
        if driver:
            parts.append(f"driver {driver}")
        server = conn.host or extra.get("server") or extra.get("host")
        if server:
            port = conn.port or extra.get("port")
            parts.append(f"server {server}{':' + str(port) if port else ''}")
        database = conn.schema or extra.get("database")
        if database:
            parts.append(f"database {database}")
        return f"Airflow connection '{conn_id}'" + (f" ({', '.join(parts)})" if parts else "")
    except Exception:  # describing the connection must never hide the real error
        return f"Airflow connection '{conn_id}'"


@contextlib.contextmanager
def sensor_sql(conn_id: str):
    """A pyodbc connection from an Airflow ``odbc`` connection, closed on exit.

    The driver comes from the connection's extra (set
    ``[providers.odbc] allow_driver_in_extra = True``); every other extra key
    is passed through to the ODBC string, so SQLite, PostgreSQL and Azure SQL
    differ only in their connection, never in code.

    The driver is asked to hand over results in bounded batches
    (:func:`batch_scoring.sensor_db.schema.bounded_fetch_options`: psqlODBC's server-side cursor,
    SQLite's step API) unless the connection's extra sets that option itself.

    A server that cannot be reached, or a query that fails (a database without
    the ``sensor_aggregates`` table, e.g. a wrong SQLite path), raises
    ``SensorSqlError`` naming the Airflow connection, driver, server and
    database (never the login or password) with the driver's message.
    """
    import pyodbc
    from airflow.providers.odbc.hooks.odbc import OdbcHook

    from batch_scoring.sensor_db.schema import bounded_fetch_options

    hook = OdbcHook(odbc_conn_id=conn_id)
    bounded = bounded_fetch_options(hook.driver, hook.connection_extra)
    if bounded:
        hook = OdbcHook(odbc_conn_id=conn_id, connect_kwargs=bounded)  # pyodbc appends them to the ODBC string
    try:
        conn = hook.get_conn()
    except pyodbc.Error as exc:
        raise SensorSqlError(
            f"cannot connect to the aggregates database of {_where(hook, conn_id)}: {_driver_message(exc)}; "
            "check that the server is up and the connection is right, then clear the task to retry"
        ) from exc
    try:
        yield conn
    except pyodbc.Error as exc:
        raise SensorSqlError(
            f"query on the aggregates database of {_where(hook, conn_id)} failed: {_driver_message(exc)}"
        ) from exc
    finally:
        with contextlib.suppress(pyodbc.Error):
            conn.close()


def _driver_message(exc) -> str:
    args = getattr(exc, "args", ())
    text = args[1] if len(args) > 1 else str(exc)
    return " ".join(str(text).split())
