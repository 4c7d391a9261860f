"""The snapshot step alone, at fleet scale: wall time and peak memory of ``snapshot_interval`` (issue 14 item 5).

``python -m bench.snapshot_step world --targets 10000 --sql sqlite|postgresql --workdir DIR``
  starts Azurite (and, for ``postgresql``, a throwaway PostgreSQL server) on loopback, loads
  ``targets`` x 288 five-minute windows of one day (``bench.world.synthetic_aggregates``, as
  ``make bench``) into a fresh schema, creates the containers (no models deployed: the step's
  model listing is then one empty listing), writes ``DIR/world.json`` (``sql_odbc``, ``blob``,
  ``interval``) and serves until SIGTERM / Ctrl-C, then stops what it started.
``python -m bench.snapshot_step measure --world DIR/world.json [--odbc-extra 'UseDeclareFetch=1;Fetch=10000']``
  runs the production step once (``batch_scoring.snapshot.snapshot_interval``: the SQL read, the
  structural checks, the parquet snapshot uploaded to Azurite, the plan) and prints one JSON line:
  ``wall`` and ``cpu`` (seconds, the step only), ``peak_rss`` (bytes, the whole process,
  ``getrusage``), ``import_seconds``, ``snapshot_bytes``, ``snapshot_sha256`` (read after the figures) and ``code``
  (the ``snapshot.py`` that ran).
  Run it with two installs of the package (before / after a change) against one world to compare.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

T_IMPORT = time.perf_counter()

from batch_scoring.scoring.cli import make_parser  # noqa: E402
from bench.procs import own_usage  # noqa: E402

DAY = dt.datetime(2026, 1, 1)


def measure(world: dict, odbc_extra: str = "") -> dict:
    """One ``snapshot_interval`` of ``world`` (the JSON :func:`serve_world` wrote); returns the JSON line's fields.

    ``odbc_extra``: ``key=value;...`` appended to the world's ODBC connection string (driver options,
    e.g. psqlODBC's ``UseDeclareFetch=1;Fetch=10000``).
    """
    import batch_scoring.snapshot as snapshot
    from batch_scoring.config import settings
    from batch_scoring.hooks.blob_storage import BlobStore
    from batch_scoring.scoring.layout import Interval, snapshot_blob
    from batch_scoring.sensor_db.schema import connect

    import_seconds = time.perf_counter() - T_IMPORT
    store = BlobStore.from_connection_string(world["blob"])
    interval, s = Interval.from_key(world["interval"]), settings()
    w0, c0 = time.perf_counter(), own_usage()[0]
    conn = connect(world["sql_odbc"].rstrip(";") + (";" + odbc_extra if odbc_extra else ""))
    try:
        plan = snapshot.snapshot_interval(conn, store, s, interval)
    finally:
        conn.close()
    out = {"wall": time.perf_counter() - w0, "cpu": own_usage()[0] - c0, "peak_rss": own_usage()[1],
           "import_seconds": import_seconds, "targets_without_model": len(plan["skipped"]), "code": snapshot.__file__}
    with tempfile.TemporaryDirectory(prefix="bench-snapshot-") as tmp:  # after the figures: streamed, small
        path = store.download_file(s.aggregates_container, snapshot_blob(interval), Path(tmp) / "s.parquet")
        out["snapshot_bytes"] = path.stat().st_size
        with open(path, "rb") as fh:
            out["snapshot_sha256"] = hashlib.file_digest(fh, "sha256").hexdigest()
    return out


def serve_world(targets: int, sql: str, workdir: Path) -> None:
    """Start the services, load the aggregates, write ``workdir/world.json``; serve until SIGTERM / SIGINT."""
    from batch_scoring.config import settings
    from batch_scoring.hooks.blob_storage import BlobStore
    from batch_scoring.scoring.layout import Interval
    from bench.world import load_aggregates, target_names
    from devstack import services

    workdir.mkdir(parents=True, exist_ok=True)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    azurite = services.start_azurite(workdir / "azurite", services.free_port(), log_path=workdir / "azurite.log")
    pg = None
    try:
        blob = services.azurite_connection_string(int(azurite.args[azurite.args.index("--blobPort") + 1]))
        BlobStore.from_connection_string(blob).ensure_containers(settings().containers)
        sql_odbc = f"Driver=SQLite3;Database={workdir / 'sensors.db'}"
        if sql == "postgresql":
            from devstack.postgres import create_database, start_postgres

            pg = start_postgres(workdir / "postgres", services.free_port())
            create_database(pg, "sensors")
            sql_odbc = pg.conn_str("sensors")
        t0 = time.perf_counter()
        load_aggregates(sql_odbc, target_names(targets), DAY)  # the rows `make bench` loads
        world = {"sql_odbc": sql_odbc, "blob": blob, "interval": Interval(DAY, DAY + dt.timedelta(days=1)).key,
                 "targets": targets, "sql": sql, "load_seconds": round(time.perf_counter() - t0, 1)}
        (workdir / "world.json").write_text(json.dumps(world))
        print(f"world ready: {targets * 288:,} rows on {sql} in {world['load_seconds']} s; {workdir / 'world.json'}",
              flush=True)
        while not stopping:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        services.stop(azurite)
        if pg is not None:
            from devstack.postgres import stop_postgres

            stop_postgres(pg, "immediate")


def main(argv=None) -> int:
    """``world`` serves until stopped (returns 0); ``measure`` prints the JSON line (returns 0)."""
    parser = make_parser("python -m bench.snapshot_step", __doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("world", help="start services, load the aggregates, serve until SIGTERM")
    w.add_argument("--targets", type=int, default=10_000)
    w.add_argument("--sql", choices=("sqlite", "postgresql"), default="sqlite")
    w.add_argument("--workdir", type=Path, required=True)
    m = sub.add_parser("measure", help="run the snapshot step once against a world; print one JSON line")
    m.add_argument("--world", type=Path, required=True, help="the world.json `world` wrote")
    m.add_argument("--odbc-extra", default="", help="driver options appended to the ODBC string, e.g. UseDeclareFetch=1")
    args = parser.parse_args(argv)
    if args.cmd == "world":
        serve_world(args.targets, args.sql, args.workdir)
    else:
        print(json.dumps(measure(json.loads(args.world.read_text()), args.odbc_extra)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
