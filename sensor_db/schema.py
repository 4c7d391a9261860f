"""The sensor database's one SQL schema, connection and value rules, all through pyodbc.

Shared by the loader (``ingest_sim``) and the DAG (``sensor_db.reads``).

Engines: SQLite (driver ``SQLite3``, the embedded default), PostgreSQL
(``PostgreSQL Unicode``) and Azure SQL / SQL Server (T-SQL, e.g. ``ODBC Driver
18 for SQL Server``). Statements use ``?`` placeholders and only SQL that all
three accept; the DDL is the one place with dialect branches.

Measured driver facts this module absorbs (see PLATFORM-NOTES):

* ``fast_executemany`` segfaults the SQLite ODBC driver: never used; inserts are
  multi-row ``INSERT ... VALUES (?,..),(?,..)`` with at most ``MAX_PARAMS``
  parameters and ``MAX_ROWS`` rows per statement (SQL Server limits).
* numpy / pandas scalars fail to bind (``HY105``): converted to Python values.
* Timezone offsets are dropped on bind: every timestamp is stored as naive UTC.
  SQLite ODBC keeps milliseconds only, so timestamps are floored to the
  millisecond on every engine (same data whatever the engine).
* ``REAL`` is 4-byte on PostgreSQL / SQL Server: columns are ``FLOAT`` (8-byte).
* The SQLite ODBC driver returns doubles through a 15-digit text conversion
  (0.1+0.2 reads back as 0.3) and aggregates such as ``MAX(ts)`` as strings:
  :func:`float_expr` and :func:`to_datetime` undo both.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import pyodbc

from batch_scoring.scoring.times import utc_naive, utc_naive_series

log = logging.getLogger(__name__)

# SQL Server: at most 2,100 parameters per request (sp_executesql's own
# parameters count too, so stay a little under) and 1,000 rows per VALUES list.
MAX_PARAMS = 2000
MAX_ROWS = 1000

READINGS = "sensor_readings"
AGGREGATES = "sensor_aggregates"
LABELS = "anomaly_labels"
# late data: the last time each aggregate window was changed by a load after it was first written
# (or was filled in behind its target's watermark); see ingest_sim.revisions.changed_aggregates
REVISIONS = "aggregate_revisions"

READING_COLUMNS = ("ts", "device_id", "sensor_id", "value")
LABEL_COLUMNS = ("device_id", "sensor_id", "kind", "start_ts", "end_ts", "magnitude")
REVISION_COLUMNS = ("device_id", "sensor_id", "window_start", "window_end", "revised_at")

ENV_CONN_STR = "SENSOR_SQL_ODBC"

# column name -> logical type, per table (order = table column order)
_ID = "id"
_TS = "ts"
_FLOAT = "float"
_INT = "int"
_KIND = "kind"

TABLES: dict[str, tuple[tuple[str, str, bool], ...]] = {
    # (column, logical type, NOT NULL)
    READINGS: (
        ("ts", _TS, True),
        ("device_id", _ID, True),
        ("sensor_id", _ID, True),
        ("value", _FLOAT, False),
    ),
    AGGREGATES: (
        ("device_id", _ID, True),
        ("sensor_id", _ID, True),
        ("window_start", _TS, True),
        ("window_end", _TS, True),
        ("value_mean", _FLOAT, False),
        ("value_min", _FLOAT, False),
        ("value_max", _FLOAT, False),
        ("value_std", _FLOAT, False),
        ("n_readings", _INT, True),
    ),
    REVISIONS: (
        ("device_id", _ID, True),
        ("sensor_id", _ID, True),
        ("window_start", _TS, True),
        ("window_end", _TS, True),
        ("revised_at", _TS, True),
    ),
    LABELS: (
        ("device_id", _ID, True),
        ("sensor_id", _ID, True),
        ("kind", _KIND, True),
        ("start_ts", _TS, True),
        ("end_ts", _TS, True),
        ("magnitude", _FLOAT, False),
    ),
}
PRIMARY_KEYS = {AGGREGATES: ("device_id", "sensor_id", "window_start"),
                REVISIONS: ("device_id", "sensor_id", "window_start")}
INDEXES = (
    # (name, table, columns)
    ("ix_sensor_readings_ts", READINGS, ("ts",)),
    ("ix_sensor_readings_target_ts", READINGS, ("device_id", "sensor_id", "ts")),
    ("ix_sensor_aggregates_window_start", AGGREGATES, ("window_start",)),
    ("ix_aggregate_revisions_window_start", REVISIONS, ("window_start",)),
    ("ix_anomaly_labels_target_start", LABELS, ("device_id", "sensor_id", "start_ts")),
)


def _sql_type(logical: str, dialect_name: str) -> str:
    if logical == _ID:
        return "VARCHAR(64)"
    if logical == _KIND:
        return "VARCHAR(16)"
    if logical == _FLOAT:
        return "FLOAT"  # 8-byte everywhere (SQL Server FLOAT = FLOAT(53)); never REAL
    if logical == _INT:
        return "INTEGER"
    if logical == _TS:
        return "DATETIME2" if dialect_name == "mssql" else "TIMESTAMP"
    raise ValueError(logical)


def column_types(table: str) -> dict[str, str]:
    """Logical type ('id', 'ts', 'float', 'int', 'kind') of each column of ``table``."""
    return {name: logical for name, logical, _ in TABLES[table]}


# --------------------------------------------------------------------------- connection
def default_conn_str() -> str:
    """``$SENSOR_SQL_ODBC``, else the SQLite file ``.local/sensors.db`` below the current directory (folder created).

    The current directory, not the package's: an installed package has no checkout to write into
    (``make demo`` and the loaders run from the repository's root, so there it is ``<repo>/.local``).
    """
    env = os.environ.get(ENV_CONN_STR, "").strip()
    if env:
        return env
    path = Path.cwd() / ".local" / "sensors.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"Driver=SQLite3;Database={path}"


def ensure_sqlite_folder(conn_str: str) -> None:
    """For a SQLite ODBC string, create the folder of its ``Database=`` file if missing (SQLite creates the file, not folders)."""
    keys = _odbc_keys(conn_str)
    if "sqlite" in keys.get("driver", "").lower() and keys.get("database"):
        Path(keys["database"]).expanduser().parent.mkdir(parents=True, exist_ok=True)


def connect(conn_str: str | None = None) -> pyodbc.Connection:
    """Open a pyodbc connection with autocommit off (callers commit per unit of work).

    ``conn_str`` default: :func:`default_conn_str`, with :func:`bounded_fetch_options` appended
    for its driver. Raises ``pyodbc.Error`` when the database cannot be opened.
    """
    conn_str = conn_str or default_conn_str()
    keys = _odbc_keys(conn_str)
    options = bounded_fetch_options(keys.get("driver"), keys)
    if options:
        conn_str = conn_str.rstrip(";") + "".join(f";{k}={v}" for k, v in options.items())
    conn = pyodbc.connect(conn_str, autocommit=False)
    if dialect(conn) == "sqlite":
        # a writer (CLI) and a reader (Airflow sensor) may overlap: wait, don't fail
        cur = conn.cursor()
        cur.execute("PRAGMA busy_timeout = 30000")
        cur.close()
    return conn


#: rows per round trip of psqlODBC's server-side cursor (its ``Fetch`` option; the driver's default is 100).
PSQL_FETCH_ROWS = 10_000


def bounded_fetch_options(driver: str | None, extra: dict) -> dict[str, str]:
    """ODBC connection-string options that let the driver hand over a result in bounded batches, or ``{}``.

    Without them both drivers hold a query's whole result in memory before the first row is
    fetched (~2.5 GB for an interval of 10,000 targets on psqlODBC, BENCHMARKS §8.1; on SQLite's
    ~81 MB resident for 300,000 aggregate rows against ~10 MB stepped, measured by
    tests/sensor_db/test_frames.py::test_a_sqlite_read_fetches_its_first_batch_without_reading_the_result).

    * psqlODBC (a driver named ``PostgreSQL …``): ``UseDeclareFetch=1`` and ``Fetch=PSQL_FETCH_ROWS``
      (psqlODBC's configuration reference: "UseDeclareFetch … use a cursor to fetch rows in blocks
      of Fetch"), unless ``extra`` already names ``UseDeclareFetch`` (any case).
    * SQLite's driver (a driver named ``SQLite…``): ``StepAPI=1`` (its README: "if true, use
      sqlite3_step et.al."), unless ``extra`` names ``StepAPI``. The driver steps only through a
      statement without parameters run outside a transaction: :func:`batch_scoring.sensor_db.frames.select_batches`
      runs its reads that way.
    * Other drivers: ``{}`` (SQL Server's streams).
    """
    name = (driver or "").lower()
    named = {key.lower() for key in extra}
    if "postgres" in name and "usedeclarefetch" not in named:
        return {"UseDeclareFetch": "1", "Fetch": str(PSQL_FETCH_ROWS)}
    if "sqlite" in name and "stepapi" not in named:
        return {"StepAPI": "1"}
    return {}


def _odbc_keys(conn_str: str) -> dict[str, str]:
    """``{lower-case key: value}`` of an ODBC connection string (``{...}`` braces kept as written)."""
    parts = (p.split("=", 1) for p in conn_str.split(";") if "=" in p)
    return {k.strip().lower(): v.strip() for k, v in parts}


def dialect(conn: pyodbc.Connection) -> str:
    """'sqlite' | 'postgresql' | 'mssql' from the driver's SQL_DBMS_NAME; ``ValueError`` for another engine."""
    name = (conn.getinfo(pyodbc.SQL_DBMS_NAME) or "").lower()
    if "sqlite" in name:
        return "sqlite"
    if "postgres" in name:
        return "postgresql"
    if "sql server" in name or "microsoft" in name or "azure" in name:
        return "mssql"
    raise ValueError(f"unsupported database engine {name!r} (expected SQLite, PostgreSQL or SQL Server)")


# --------------------------------------------------------------------------- schema
def schema_statements(dialect_name: str) -> list[str]:
    """Idempotent DDL for ``dialect_name``: tables, primary key, indexes."""
    stmts = []
    for table, cols in TABLES.items():
        defs = [f"{name} {_sql_type(logical, dialect_name)}{' NOT NULL' if nn else ''}" for name, logical, nn in cols]
        if table in PRIMARY_KEYS:
            defs.append(f"CONSTRAINT pk_{table} PRIMARY KEY ({', '.join(PRIMARY_KEYS[table])})")
        body = ",\n    ".join(defs)
        if dialect_name == "mssql":
            stmts.append(f"IF OBJECT_ID(N'dbo.{table}', N'U') IS NULL\nCREATE TABLE dbo.{table} (\n    {body}\n)")
        else:
            stmts.append(f"CREATE TABLE IF NOT EXISTS {table} (\n    {body}\n)")
    for name, table, cols in INDEXES:
        collist = ", ".join(cols)
        if dialect_name == "mssql":
            stmts.append(
                f"IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'{name}' "
                f"AND object_id = OBJECT_ID(N'dbo.{table}'))\n"
                f"CREATE INDEX {name} ON dbo.{table} ({collist})"
            )
        else:
            stmts.append(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({collist})")
    return stmts


def create_schema(conn: pyodbc.Connection) -> None:
    """Create tables and indexes if missing (safe to run any number of times).

    On SQLite the database is also switched to write-ahead logging (``PRAGMA journal_mode=WAL``,
    kept in the file): the snapshot streams its read (:func:`bounded_fetch_options`), and in
    SQLite's default rollback journal an open read blocks every writer (the loader) until it ends;
    with WAL readers and the one writer do not wait for each other (sqlite.org/wal.html).
    """
    cur = conn.cursor()
    try:
        if dialect(conn) == "sqlite":
            conn.commit()
            was, conn.autocommit = conn.autocommit, True  # the journal mode cannot change inside a transaction
            try:
                cur.execute("PRAGMA journal_mode=WAL")
                mode = (cur.fetchone() or ["?"])[0]
            finally:
                conn.autocommit = was
            if str(mode).lower() != "wal":  # e.g. an in-memory database; SQLite keeps its mode without an error
                log.warning("the SQLite database stays in journal mode %r, not WAL: the snapshot's streamed read "
                            "holds a lock the loader waits for (busy timeout) until the read ends", mode)
        for stmt in schema_statements(dialect(conn)):
            cur.execute(stmt)
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    finally:
        cur.close()


# --------------------------------------------------------------------------- values
def to_db_value(v: Any) -> Any:
    """A Python value pyodbc binds on every engine.

    numpy/pandas scalars → ``.item()``; NaN/NaT/NA → None; timestamps → naive UTC
    ``datetime`` floored to the millisecond.
    """
    if v is None:
        return None
    t = type(v)
    if t is str or t is int or t is bool:
        return v
    if t is float:
        return None if v != v else v
    if isinstance(v, dt.datetime):  # includes pandas.Timestamp
        if v != v:  # NaT
            return None
        v = utc_naive(v)
        return v.replace(microsecond=v.microsecond // 1000 * 1000)
    # numpy / pandas scalars and missing markers
    try:
        import pandas as pd

        if v is pd.NaT or v is pd.NA:
            return None
        import numpy as np

        if isinstance(v, np.datetime64):
            return None if np.isnat(v) else to_db_value(pd.Timestamp(v))
        if isinstance(v, np.generic):
            return to_db_value(v.item())
    except ImportError:  # pragma: no cover - pandas is a project dependency
        pass
    if isinstance(v, float):
        return None if math.isnan(v) else float(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, dt.date):
        return dt.datetime(v.year, v.month, v.day)
    return v


def insert_rows(conn: pyodbc.Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Insert ``rows`` with multi-row parameterised INSERTs; returns rows inserted.

    Does not commit (the caller owns the transaction). Each statement carries at
    most ``MAX_PARAMS`` parameters and ``MAX_ROWS`` rows. Values go through
    :func:`to_db_value`. Raises ``ValueError`` for no columns, a bad table/column
    name or a row of the wrong length (pyodbc errors as they come).
    """
    columns = list(columns)
    ncols = len(columns)
    if ncols == 0:
        raise ValueError("insert_rows needs at least one column")
    if not all(c.isidentifier() for c in [table, *columns]):
        raise ValueError(f"bad table/column name in {table}{columns}")
    per_stmt = max(1, min(MAX_ROWS, MAX_PARAMS // ncols))
    head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
    one = "(" + ", ".join("?" * ncols) + ")"
    full_sql = head + ", ".join([one] * per_stmt)
    cur = conn.cursor()
    total = 0
    batch: list[Any] = []
    nbatch = 0
    try:
        for row in rows:
            if len(row) != ncols:
                raise ValueError(f"row has {len(row)} values, expected {ncols} ({columns})")
            batch.extend(to_db_value(v) for v in row)
            nbatch += 1
            if nbatch == per_stmt:
                cur.execute(full_sql, batch)
                total += nbatch
                batch, nbatch = [], 0
        if nbatch:
            cur.execute(head + ", ".join([one] * nbatch), batch)
            total += nbatch
    finally:
        cur.close()
    return total


# --------------------------------------------------------------------------- reading back
def float_expr(conn_or_dialect, column: str) -> str:
    """SELECT expression returning ``column`` (a FLOAT) without precision loss.

    The SQLite ODBC driver converts doubles through 15-significant-digit text;
    on SQLite the value is selected as 17-digit text instead (parsed back by
    :func:`to_float`). Other engines return the column unchanged.
    """
    d = conn_or_dialect if isinstance(conn_or_dialect, str) else dialect(conn_or_dialect)
    if d == "sqlite":
        return f"CASE WHEN {column} IS NULL THEN NULL ELSE printf('%!.17g', {column}) END AS {column}"
    return column


def to_float(v: Any) -> float:
    """A fetched float cell (number, 17-digit text, Decimal; None → NaN) as ``float``; ``ValueError`` for other text."""
    return math.nan if v is None else float(v)


def to_datetime(v: Any) -> dt.datetime | None:
    """A fetched timestamp (datetime, date, or ISO text from SQLite aggregates) as a ``datetime``.

    Parses only: no time-zone conversion (the engines return naive UTC; an aware
    value stays aware, and a typed frame then refuses it). None stays None;
    raises ``ValueError`` for text that is not ISO 8601, ``TypeError`` for any other type.
    """
    if v is None or isinstance(v, dt.datetime):
        return v
    if isinstance(v, str):
        return dt.datetime.fromisoformat(v.strip())
    if isinstance(v, dt.date):
        return dt.datetime(v.year, v.month, v.day)
    raise TypeError(f"cannot read {v!r} as a timestamp")


def stored_ts_series(values):
    """Timestamps as stored and compared: naive UTC ``datetime64[us]`` floored to the millisecond.

    The storage rule of every timestamp column (the SQLite ODBC driver keeps
    milliseconds only, so every engine stores milliseconds): two readings less
    than 1 ms apart are one key. ``values``: anything ``pandas.to_datetime``
    reads (aware values converted to UTC); raises ``ValueError`` otherwise.
    """
    return utc_naive_series(values).dt.floor("ms").astype("datetime64[us]")
