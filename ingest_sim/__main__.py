"""``python -m batch_scoring.ingest_sim``: load readings into SQL and aggregate them.

Subcommands (global option ``--odbc CONNSTR``, default ``$SENSOR_SQL_ODBC`` or a
SQLite file under ``.local/``):

  init-db                                  create tables and indexes (idempotent)
  load-csv PATH [--aggregate]              upsert TS,Device,Sensor,Value readings (never deletes;
                                           exact duplicates stored once; late data reported)
  simulate --start T --end T [...]         simulated readings + anomaly labels (replaces that range)
  aggregate --start T --end T              (re)build the windows covering [start, end)
  export --start T --end T --out F.parquet [--targets d/s ...]

Times are ISO 8601, read as UTC when they carry no offset. Each command prints
one summary line (load-csv adds a late-data notice when it changed windows
behind data already aggregated); errors print one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from batch_scoring.scoring.cli import HelpFormatter, input_path, make_parser
from batch_scoring.scoring.config import WINDOW_MINUTES, parse_target
from batch_scoring.scoring.times import utc_now


# What the CLI reads from the environment: (name, default, what).
ENV = (
    ("SENSOR_SQL_ODBC", "Driver=SQLite3;Database=.local/sensors.db", "--odbc"),
    ("BATCH_SCORING_DAG_ID", "batch_scoring", "--dag-id: the DAG late data is reported for"),
    ("BATCH_SCORING_SCHEDULE", "0 * * * *", "--schedule: its cron schedule"),
)


class CliError(Exception):
    """An error reported as one line, exit code 2."""


def _utc(text: str) -> dt.datetime:
    from batch_scoring.scoring.times import utc_naive

    try:
        return utc_naive(text)
    except ValueError as exc:  # "not a timestamp: 'x' (why)" -> the CLI's own wording
        raise argparse.ArgumentTypeError(str(exc).replace("not a timestamp", "not an ISO timestamp", 1)) from None


def _target(text: str) -> str:
    try:
        parse_target(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _fmt(ts) -> str:
    return "-" if ts is None else ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def _connect(args):
    from batch_scoring.sensor_db import schema

    conn_str = args.odbc or schema.default_conn_str()
    schema.ensure_sqlite_folder(conn_str)  # a new SQLite database in a folder not made yet (e.g. .local/)
    conn = schema.connect(conn_str)
    schema.create_schema(conn)
    return conn


def cmd_init_db(args) -> str:
    """`init-db`: create the tables and indexes (idempotent) on ``--odbc``'s database.

    Makes the folder of a new SQLite file first. Returns the one-line report
    naming the dialect and the tables; ``pyodbc.Error`` when the database cannot
    be reached.
    """
    from batch_scoring.sensor_db import schema

    conn = _connect(args)
    try:
        return (f"init-db: schema ready on {schema.dialect(conn)} (tables {schema.READINGS}, {schema.AGGREGATES}, "
                f"{schema.REVISIONS}, {schema.LABELS})")
    finally:
        conn.close()


def cmd_load_csv(args) -> str:
    """`load-csv`: upsert a ``TS,Device,Sensor,Value`` CSV into the readings table.

    With ``--aggregate`` also re-aggregates the windows (``--window-minutes``)
    whose readings changed. Returns the report: readings read, targets, time
    span (naive UTC), new/changed/unchanged counts, duplicate lines, windows
    written or pending, and, when windows behind the watermark changed, the
    late-data message with the backfill command that rescores them.
    Raises ``CliError`` for a ``--schedule`` that is not a cron expression
    (before anything is loaded), ``InputError`` for a missing or unreadable
    file, the CSV loader's ``ValueError`` for a malformed
    file, ``pyodbc.Error`` for database failures.
    """
    from batch_scoring.ingest_sim import loads
    from batch_scoring.ingest_sim.csv_loader import load_csv

    _dag_settings(args)  # a bad --schedule is refused before anything is loaded
    df = load_csv(input_path(args.path, "a TS,Device,Sensor,Value CSV file"))
    conn = _connect(args)
    try:
        res = loads.load_readings(conn, df, aggregate=args.aggregate, window_minutes=args.window_minutes)
    finally:
        conn.close()
    duplicates = int(df.attrs.get("duplicate_lines", 0)) + res.duplicates
    if df.empty:
        return f"load-csv: 0 readings from {args.path}"
    lo, hi = df["ts"].min().to_pydatetime(), df["ts"].max().to_pydatetime()
    pairs = df[["device_id", "sensor_id"]].drop_duplicates().shape[0]
    msg = (f"load-csv: {len(df) + duplicates} readings, {pairs} targets, {_fmt(lo)} .. {_fmt(hi)} from {args.path}: "
           f"{res.inserted} new, {res.updated} changed, {res.unchanged} already stored"
           + (f", {duplicates} duplicate line(s) stored once" if duplicates else ""))
    if args.aggregate:
        msg += f"; {len(res.windows)} aggregate window(s) written"
    elif len(res.pending):
        msg += (f"; {len(res.pending)} window(s) of {res.pending[['device_id', 'sensor_id']].drop_duplicates().shape[0]}"
                " target(s) need aggregating (load with --aggregate)")
    if len(res.late):
        msg += "\n" + _late_data_message(args, res.late)
    return msg


def _late_data_message(args, late, what: str = "this load") -> str:
    """What a change of windows behind the watermark means for predictions, and the command that rescores."""
    from batch_scoring.ingest_sim.late_data import backfill_command, describe_windows, intervals_between, intervals_of

    dag_id, schedule = _dag_settings(args)
    intervals = intervals_of([t.to_pydatetime() for t in late["window_start"]], schedule)
    keys = [f"{s:%Y%m%dT%H%MZ}_{e:%Y%m%dT%H%MZ}" for s, e in intervals]
    shown = ", ".join(keys[:10]) + (f" and {len(keys) - 10} more" if len(keys) > 10 else "")
    spanned = intervals_between(intervals[0][0], intervals[-1][0], schedule)
    extra = (f" (it reprocesses the {spanned} intervals from the first to the last, {spanned - len(intervals)} of them "
             "unchanged: same blobs, same bytes)" if spanned > len(intervals) else "")
    return (f"late data: {len(late)} aggregate window(s) changed behind data already aggregated ({describe_windows(late)}); "
            f"recorded in {_revisions_table()}. Predictions of the {len(keys)} interval(s) holding them "
            f"(DAG {dag_id}, schedule '{schedule}': {shown}) are stale if they were scored before {what}; "
            f"the DAG's freshness check flags them, and this rescores them{extra}:\n  {backfill_command(dag_id, intervals)}")


def _revisions_table() -> str:
    from batch_scoring.sensor_db import schema

    return schema.REVISIONS


def _dag_settings(args) -> tuple[str, str]:
    """The DAG id and cron schedule late data is reported against (``--dag-id``/``--schedule``, else the DAG's settings)."""
    try:
        from batch_scoring.config import Settings, SettingsError
    except ImportError:  # the loader installed without the DAG package
        from batch_scoring.ingest_sim.late_data import DEFAULT_SCHEDULE

        dag_id, schedule = "batch_scoring", DEFAULT_SCHEDULE
    else:
        try:  # deferrable given: only dag_id and schedule matter here, so Airflow's configuration is not loaded
            s = Settings(azureml_deferrable=False)
        except SettingsError as exc:  # one line per refused variable after the heading
            lines = str(exc).splitlines()[1:]
            raise CliError("; ".join(line.strip() for line in lines) + "; nothing was loaded") from None
        dag_id, schedule = s.dag_id, s.schedule
    dag_id, schedule = getattr(args, "dag_id", None) or dag_id, getattr(args, "schedule", None) or schedule
    from croniter import croniter

    if not croniter.is_valid(schedule):
        source = "--schedule" if getattr(args, "schedule", None) else "BATCH_SCORING_SCHEDULE"
        raise CliError(f"{source} {schedule!r} is not a cron expression (e.g. '0 * * * *'); nothing was loaded")
    return dag_id, schedule


def cmd_simulate(args) -> str:
    """`simulate`: replace the readings and anomaly labels of ``[--start, --end)`` with simulated ones.

    ``--devices`` x ``--sensors`` targets, one reading every ``--reading-seconds``
    seconds, seeded by ``--seed``; anomalies unless ``--no-anomalies``; with
    ``--aggregate`` the range is aggregated too. Returns the one-line report
    (readings, targets, range, labels, aggregates).
    Raises ``CliError`` when the simulator cannot be imported or ``--end`` is
    not after ``--start``; ``pyodbc.Error`` for database failures.
    """
    from batch_scoring.ingest_sim import loads

    try:
        from batch_scoring.ingest_sim.simulator import simulate
    except ImportError as exc:
        raise CliError(f"simulator not available: {exc}") from None
    if args.end <= args.start:
        raise CliError(f"--end {_fmt(args.end)} is not after --start {_fmt(args.start)}")
    readings, labels = simulate(
        devices=args.devices,
        sensors=args.sensors,
        start=args.start,
        end=args.end,
        reading_seconds=args.reading_seconds,
        seed=args.seed,
        anomalies=not args.no_anomalies,
    )
    conn = _connect(args)
    try:
        n = loads.replace_readings_range(conn, readings, args.start, args.end)
        pairs = readings[["device_id", "sensor_id"]].drop_duplicates().itertuples(index=False, name=None)
        n_labels = loads.replace_labels(conn, labels, start=args.start, end=args.end, targets=list(pairs))
        msg = (
            f"simulate: {n} readings, {args.devices}x{args.sensors} targets, "
            f"[{_fmt(args.start)}, {_fmt(args.end)}), {n_labels} anomaly labels"
        )
        if args.aggregate:
            a = loads.aggregate_range(conn, args.start, args.end, args.window_minutes)
            msg += f"; {a} aggregates"
        return msg
    finally:
        conn.close()


def cmd_aggregate(args) -> str:
    """`aggregate`: (re)compute the aggregate windows covering ``[--start, --end)``.

    Windows are ``--window-minutes`` long; changed windows are recorded as
    revisions stamped with the current naive-UTC second. Returns the report
    (count and window bounds) plus the late-data message when this
    re-aggregation changed windows behind data already aggregated.
    Raises ``CliError`` when ``--end`` is not after ``--start`` or the schedule
    is not a cron expression; ``pyodbc.Error`` for database failures.
    """
    from batch_scoring.ingest_sim import loads
    from batch_scoring.sensor_db import reads

    if args.end <= args.start:
        raise CliError(f"--end {_fmt(args.end)} is not after --start {_fmt(args.start)}")
    _dag_settings(args)
    conn = _connect(args)
    revised_at = utc_now().replace(microsecond=0)
    try:
        n = loads.aggregate_range(conn, args.start, args.end, args.window_minutes, revised_at=revised_at)
        ws, we = reads.window_bounds(args.start, args.end, args.window_minutes)
        late = reads.read_revisions(conn, ws, we)
    finally:
        conn.close()
    late = late[late["revised_at"] == revised_at]
    msg = f"aggregate: {n} aggregates [{_fmt(ws)}, {_fmt(we)})"
    return msg + ("\n" + _late_data_message(args, late, "this re-aggregation") if len(late) else "")


def cmd_export(args) -> str:
    """`export`: write the aggregates of ``[--start, --end)`` (optionally only ``--targets``) to ``--out``.

    The parquet file is written to ``<out>.tmp`` then renamed, its folder made
    if missing. Returns the report (rows, targets, range, path).
    Raises ``CliError`` when ``--end`` is not after ``--start``; ``OSError``
    when the file cannot be written; ``pyodbc.Error`` for database failures.
    """
    from batch_scoring.sensor_db import reads

    if args.end <= args.start:
        raise CliError(f"--end {_fmt(args.end)} is not after --start {_fmt(args.start)}")
    out = Path(args.out)
    conn = _connect(args)
    try:
        df = reads.read_aggregates(conn, args.start, args.end, args.targets)
    finally:
        conn.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(out)
    n_targets = df[["device_id", "sensor_id"]].drop_duplicates().shape[0]
    return f"export: {len(df)} aggregates, {n_targets} targets, [{_fmt(args.start)}, {_fmt(args.end)}) -> {out}"


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m batch_scoring.ingest_sim`` argument parser: ``init-db``, ``load-csv``, ``simulate``, ``aggregate``, ``export``; each sub-command's ``func`` is its ``cmd_*``."""
    p = make_parser("python -m batch_scoring.ingest_sim", __doc__.split("\n\n")[0], env=ENV)
    p.add_argument("--odbc", metavar="CONNSTR", default=None, help="ODBC connection string (default: $SENSOR_SQL_ODBC or .local/sensors.db)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # --odbc is also accepted after the subcommand
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--odbc", metavar="CONNSTR", default=argparse.SUPPRESS, help="ODBC connection string")

    def interval(sp, required=True):
        sp.add_argument("--start", type=_utc, required=required, help="UTC ISO timestamp (inclusive)")
        sp.add_argument("--end", type=_utc, required=required, help="UTC ISO timestamp (exclusive)")

    def late_data_options(sp):
        sp.add_argument("--dag-id", default=None, help="DAG whose intervals late data is reported for (default: $BATCH_SCORING_DAG_ID)")
        sp.add_argument("--schedule", default=None, help="its cron schedule (default: $BATCH_SCORING_SCHEDULE, hourly)")

    def window(sp):
        sp.add_argument("--window-minutes", type=int, default=WINDOW_MINUTES, help=argparse.SUPPRESS)

    sp = sub.add_parser("init-db", parents=[common], help="create tables and indexes")
    sp.set_defaults(func=cmd_init_db)

    sp = sub.add_parser("load-csv", parents=[common], help="upsert a TS,Device,Sensor,Value CSV into sensor_readings")
    sp.add_argument("path")
    sp.add_argument("--aggregate", action="store_true", help="also re-aggregate the windows whose readings changed")
    late_data_options(sp)
    window(sp)
    sp.set_defaults(func=cmd_load_csv)

    sp = sub.add_parser("simulate", parents=[common], help="simulate readings (and anomaly labels) into SQL")
    interval(sp)
    sp.add_argument("--devices", type=int, default=3)
    sp.add_argument("--sensors", type=int, default=5)
    sp.add_argument("--reading-seconds", type=float, default=5.0)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--no-anomalies", action="store_true")
    sp.add_argument("--aggregate", action="store_true", help="also aggregate the simulated range")
    window(sp)
    sp.set_defaults(func=cmd_simulate)

    sp = sub.add_parser("aggregate", parents=[common], help="(re)aggregate the windows covering [start, end)")
    interval(sp)
    window(sp)
    late_data_options(sp)
    sp.set_defaults(func=cmd_aggregate)

    sp = sub.add_parser("export", parents=[common], help="write the aggregates of [start, end) to parquet")
    interval(sp)
    sp.add_argument("--out", required=True, help="FILE.parquet")
    sp.add_argument("--targets", nargs="+", type=_target, default=None, metavar="DEVICE/SENSOR")
    sp.set_defaults(func=cmd_export)
    for sp in sub.choices.values():
        sp.formatter_class = HelpFormatter
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``); print the command's report.

    Returns the exit code: 0 on success, 2 for any error (printed as one
    ``error: ...`` line on stderr, no traceback), 130 when interrupted. Usage
    errors exit 2 through argparse (``SystemExit``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors exit 2 via argparse
    try:
        print(args.func(args), flush=True)
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, no traceback
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
