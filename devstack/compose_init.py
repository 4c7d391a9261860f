"""Set-up steps of docker-compose.yaml's ``airflow-init`` service, against given connection strings.

    python -m devstack.compose_init --odbc ODBC create-database
    python -m devstack.compose_init --blob CONNSTR containers
    python -m devstack.compose_init --odbc ODBC --blob CONNSTR demo-data [--devices N --sensors M]

* ``create-database``: waits for the SQL server to accept logins, then creates the
  database named in the ODBC string (``Database=``) if it does not exist (SQL
  Server; on other engines it only waits).
* ``containers``: creates the blob containers named by ``BATCH_SCORING_*_CONTAINER``.
* ``demo-data``: unless models are already deployed (``--force`` to redo), builds
  the demo world of ``devstack.world.simulate_world``: a normal history day and a
  scoring day with injected anomalies, both ending at the current hour;
  aggregates; one model per device/sensor trained on the history and deployed to
  the models container. So the scheduler's first runs find fresh data.
"""
from __future__ import annotations

import datetime as dt
import re
import sys
import time
from pathlib import Path

from batch_scoring.scoring.cli import HelpFormatter, make_parser

# What the CLI reads from the environment (through batch_scoring.config): (name, default, what).
ENV = (("BATCH_SCORING_AGGREGATES_CONTAINER", "aggregates", "blob container of the snapshots"),
       ("BATCH_SCORING_MODELS_CONTAINER", "models", "blob container of the models"),
       ("BATCH_SCORING_PREDICTIONS_CONTAINER", "predictions", "blob container of the predictions"))


def _say(message: str) -> None:
    print(f"[compose_init] {message}", flush=True)


def _without_database(odbc: str) -> tuple[str, str | None]:
    """(the ODBC string without its Database= part, the database name)."""
    parts = [p for p in odbc.split(";") if p.strip()]
    database = None
    kept = []
    for part in parts:
        key, _, value = part.partition("=")
        if key.strip().lower() in ("database", "initial catalog"):
            database = value.strip().strip("{}")
        else:
            kept.append(part)
    return ";".join(kept) + ";", database


def wait_for_sql(odbc: str, timeout: float = 180.0):
    """A pyodbc connection (autocommit) once the server accepts it."""
    import pyodbc

    deadline = time.monotonic() + timeout
    while True:
        try:
            return pyodbc.connect(odbc, autocommit=True, timeout=10)
        except pyodbc.Error as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"SQL server not reachable after {timeout:.0f}s: {exc}") from None
            time.sleep(3)


def _is_file_database(odbc: str) -> bool:
    """Whether the ODBC string's driver is SQLite's: a file, no server (``Database=`` is the file's path)."""
    return any(key.strip().lower() == "driver" and "sqlite" in value.lower()
               for key, _, value in (part.partition("=") for part in odbc.split(";")))


def create_database(odbc: str) -> str:
    """Wait for the server of ``odbc`` and create its ``Database=`` if missing (SQL Server only); returns what it did.

    A SQLite string is opened as given: without its ``Database=`` the SQLite
    driver would take the rest of the string for a file name and create a file
    named like ``Driver=SQLite3;`` in the working directory. Raises
    ``SystemExit`` when the server stays unreachable (180 s) or the name is unsafe.
    """
    server_odbc, database = _without_database(odbc)
    conn = wait_for_sql(odbc if _is_file_database(odbc) else server_odbc)
    try:
        from batch_scoring.sensor_db.schema import dialect

        if dialect(conn) != "mssql" or not database:
            return f"server reachable ({dialect(conn)}); nothing to create"
        if not re.fullmatch(r"[A-Za-z0-9_]+", database):
            raise SystemExit(f"database name {database!r}: use letters, digits and _ only")
        exists = conn.execute("SELECT DB_ID(?)", database).fetchone()[0] is not None
        if not exists:
            conn.execute(f"CREATE DATABASE [{database}]")
        return f"database {database} {'exists' if exists else 'created'}"
    finally:
        conn.close()


def ensure_containers(blob: str) -> str:
    """Create the settings' blob containers, retrying for 120 s while the service starts; returns a message.

    Raises ``SystemExit`` when the blob service stays unreachable.
    """
    from batch_scoring.config import settings
    from batch_scoring.hooks.blob_storage import BlobStore

    store = BlobStore.from_connection_string(blob)
    deadline = time.monotonic() + 120
    while True:
        try:
            store.ensure_containers(settings().containers)
            return f"containers ready: {', '.join(settings().containers)}"
        except Exception as exc:  # the blob service may still be starting
            if time.monotonic() > deadline:
                raise SystemExit(f"blob service not reachable: {exc}") from None
            time.sleep(2)


def demo_data(odbc: str, blob: str, devices: int, sensors: int, models_dir: Path, force: bool = False,
              end: dt.datetime | None = None, history_hours: int = 24, scoring_hours: int = 24) -> str:
    """Build the demo world (``devstack.world.simulate_world``) unless models are deployed; returns a message.

    The scoring period is the ``scoring_hours`` before ``end`` (naive UTC; default the
    current hour), the history the ``history_hours`` before that.
    """
    from batch_scoring.config import settings
    from batch_scoring.hooks.blob_storage import BlobStore
    from devstack.world import current_hour, simulate_world
    from batch_scoring.sensor_db.schema import connect

    s = settings()
    store = BlobStore.from_connection_string(blob)
    store.ensure_containers(s.containers)
    if not force and store.list_names(s.models_container):
        return "models already deployed: demo data kept (use --force to rebuild)"
    end = end or current_hour()
    scoring = (end - dt.timedelta(hours=scoring_hours), end)
    history = (scoring[0] - dt.timedelta(hours=history_hours), scoring[0])
    conn = connect(odbc)
    try:
        world = simulate_world(conn, store, s, models_dir, devices=devices, sensors=sensors,
                               history=history, scoring=scoring)
    finally:
        conn.close()
    return (f"{world.readings:,} readings, {world.windows:,} aggregates, {world.labels} injected anomalies, "
            f"{world.models} models deployed; scoring data {scoring[0]:%Y-%m-%d %H:%M} to {scoring[1]:%H:%M} UTC")


def main(argv=None) -> int:
    """The CLI (see the module docstring); exits with a message on errors."""
    parser = make_parser("python -m devstack.compose_init", __doc__, env=ENV)
    parser.add_argument("--odbc", help="ODBC connection string of the aggregates database")
    parser.add_argument("--blob", help="Blob Storage (Azurite) connection string")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("create-database")
    sub.add_parser("containers")
    demo = sub.add_parser("demo-data")
    demo.add_argument("--devices", type=int, default=5)
    demo.add_argument("--sensors", type=int, default=3)
    demo.add_argument("--history-hours", type=int, default=24)
    demo.add_argument("--scoring-hours", type=int, default=24)
    demo.add_argument("--models-dir", type=Path, default=Path("/tmp/demo-models"))
    demo.add_argument("--force", action="store_true", help="rebuild even if models are deployed")
    for sp in sub.choices.values():
        sp.formatter_class = HelpFormatter
    args = parser.parse_args(argv)

    need = {"create-database": ("odbc",), "containers": ("blob",), "demo-data": ("odbc", "blob")}[args.command]
    missing = [f"--{n}" for n in need if not getattr(args, n)]
    if missing:
        parser.error(f"{args.command} needs {' and '.join(missing)}")
    if args.command == "create-database":
        _say(create_database(args.odbc))
    elif args.command == "containers":
        _say(ensure_containers(args.blob))
    else:
        _say(demo_data(args.odbc, args.blob, args.devices, args.sensors, args.models_dir, args.force,
                       history_hours=args.history_hours, scoring_hours=args.scoring_hours))
    return 0


if __name__ == "__main__":
    sys.exit(main())
