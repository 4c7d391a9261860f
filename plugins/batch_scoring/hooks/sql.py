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

    On PostgreSQL's ODBC driver (psqlODBC) reads are fetched through a server-side cursor,
    ``PSQL_FETCH_ROWS`` rows at a time (:func:`bounded_fetch_options`), unless the connection's
    extra sets ``UseDeclareFetch`` itself: psqlODBC otherwise holds a query's whole result in
    memory before the first row is fetched (~2.5 GB for an interval of 10,000 targets; BENCHMARKS §8.1).

    A server that cannot be reached, or a query that fails (a database without
    the ``sensor_aggregates`` table, e.g. a wrong SQLite path), raises
    ``SensorSqlError`` naming the Airflow connection, driver, server and
    database (never the login or password) with the driver's message.
    """
    import pyodbc
    from airflow.providers.odbc.hooks.odbc import OdbcHook

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


#: rows per round trip of psqlODBC's server-side cursor (its ``Fetch`` option; the driver's default is 100).
PSQL_FETCH_ROWS = 10_000


def bounded_fetch_options(driver: str | None, extra: dict) -> dict[str, str]:
    """ODBC connection-string options that make the driver fetch a result in bounded batches, or ``{}``.

    psqlODBC (a driver named ``PostgreSQL …``): ``UseDeclareFetch=1`` and ``Fetch=PSQL_FETCH_ROWS``
    (psqlODBC's configuration reference: "UseDeclareFetch … use a cursor to fetch rows in blocks of
    Fetch"), unless ``extra`` already names ``UseDeclareFetch`` (any case). Other drivers: ``{}``
    (SQLite's driver steps through the result itself; SQL Server's streams).
    """
    if not driver or "postgres" not in driver.lower():
        return {}
    if any(key.lower() == "usedeclarefetch" for key in extra):
        return {}
    return {"UseDeclareFetch": "1", "Fetch": str(PSQL_FETCH_ROWS)}


def _driver_message(exc) -> str:
    args = getattr(exc, "args", ())
    text = args[1] if len(args) > 1 else str(exc)
    return " ".join(str(text).split())
