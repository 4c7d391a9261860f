"""`make demo`: the whole product once, on the embedded default.

Azurite + a SQLite database over ODBC; a day of normal history and a scoring
day with injected anomalies; aggregates; one model per device/sensor; then the
real Airflow scheduler (standalone, LocalExecutor) backfills the last hours of
the scoring day, and the report compares what was flagged with the ground truth.
The simulated days end at the current hour, so the scheduler's own latest
interval is fresh too. Re-running replaces everything it made.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from devstack import services
from devstack.airflow_env import airflow_env
from devstack.services import REPO
from devstack.world import current_hour
from batch_scoring.scoring.cli import make_parser, progress

LOCAL = REPO / ".local"
AIRFLOW_HOME = LOCAL / "airflow"
DEMO_DIR = LOCAL / "demo"
PREDICTIONS_COPY = DEMO_DIR / "predictions"
AZURITE_DIR = LOCAL / "azurite"
AZURITE_PORT = 10000
AIRFLOW_PORT = 8080
SQL_ODBC = f"Driver=SQLite3;Database={DEMO_DIR / 'sensors.db'}"


def demo_env(sql_odbc: str | None = None) -> dict[str, str]:
    """The Airflow environment shared by `make demo` and `make airflow`.

    ``make airflow`` and ``devstack.airflow_cli`` use the demo database unless
    ``SENSOR_SQL_ODBC`` names another (your own data); the demo always uses its own.
    """
    sql_odbc = sql_odbc or os.environ.get("SENSOR_SQL_ODBC") or SQL_ODBC
    env = airflow_env(AIRFLOW_HOME, sql_odbc, services.azurite_connection_string(AZURITE_PORT))
    env["BATCH_SCORING_FRESHNESS_TIMEOUT_SECONDS"] = "600"
    env["BATCH_SCORING_FRESHNESS_POKE_SECONDS"] = "30"
    return env


def ensure_azurite() -> "services.subprocess.Popen | None":
    """Start Azurite on the demo port unless one is already listening there."""
    if services.port_open(AZURITE_PORT):
        return None
    return services.start_azurite(AZURITE_DIR, AZURITE_PORT, log_path=LOCAL / "azurite.log")


def step(message: str) -> None:
    """Print one progress line of the demo, stamped with the local wall-clock time."""
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def prepare_data(args, end: dt.datetime):
    """Simulate, aggregate, train and deploy; returns the World built."""
    from batch_scoring.config import settings
    from batch_scoring.hooks.blob_storage import BlobStore
    from devstack.world import simulate_world
    from batch_scoring.sensor_db.schema import connect

    # Start from scratch: a new SQL database, empty containers, a new Airflow metadata DB.
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("sensors.db", "sensors.db-wal", "sensors.db-shm"):  # WAL mode: a stale log would replay into a new file
        (DEMO_DIR / name).unlink(missing_ok=True)
    (AIRFLOW_HOME / "airflow.db").unlink(missing_ok=True)
    shutil.rmtree(AIRFLOW_HOME / "logs", ignore_errors=True)
    store = BlobStore.from_connection_string(services.azurite_connection_string(AZURITE_PORT))
    for container in settings().containers:
        store.delete_container(container)
    step(f"simulating {args.devices} devices x {args.sensors} sensors for two days, aggregating, training "
         f"{args.devices * args.sensors} models (about a minute)")
    conn = connect(SQL_ODBC)
    try:
        world = simulate_world(
            conn, store, settings(), DEMO_DIR / "models", devices=args.devices, sensors=args.sensors,
            history=(end - dt.timedelta(days=2), end - dt.timedelta(days=1)),
            scoring=(end - dt.timedelta(days=1), end), reading_seconds=args.reading_seconds, seed=args.seed,
        )
    finally:
        conn.close()
    step(f"simulated {world.readings:,} readings ({args.devices} devices x {args.sensors} sensors, every "
         f"{args.reading_seconds:g} s): a normal day from {world.history[0]:%Y-%m-%d %H:%M} and a scoring day "
         f"with {world.labels} injected anomalies; {world.windows:,} five-minute aggregates in SQL")
    step(f"trained {world.models} models on the normal day and deployed them to blob storage")
    return world


def run_backfill(env: dict, start: dt.datetime, end: dt.datetime) -> list[dict]:
    """Backfill [start, end) (naive UTC, whole hours) through the real scheduler and wait for every run to finish.

    Returns the newest run of each hourly interval (REST form), oldest first.
    Raises ``TimeoutError`` if they are not all finished within 30 minutes.
    """
    from devstack.standalone import FINISHED, running_standalone, run_interval_start

    dag_id = "batch_scoring"
    step(f"starting airflow standalone (scheduler, API server, DAG processor, triggerer; about a minute), "
         f"log: {(AIRFLOW_HOME / 'standalone.log').relative_to(REPO)}")
    with running_standalone(env, AIRFLOW_PORT, AIRFLOW_HOME / "standalone.log", dag_id) as (_, api):
        last_logical = end - dt.timedelta(hours=1)
        # The same as `airflow backfill create --dag-id batch_scoring --from-date ... --to-date ...
        # --reprocess-behavior completed`, through the REST API. Created while the DAG is still
        # paused, then unpaused: on a SQLite metadata DB, creating a backfill while the scheduler
        # is busy can lock the DB under the scheduler (see RELIABILITY.md).
        api.create_backfill(dag_id, start, last_logical)
        api.unpause(dag_id)
        wanted = {start + dt.timedelta(hours=h) for h in range(int((end - start) / dt.timedelta(hours=1)))}
        step(f"backfill created for the {len(wanted)} hourly intervals from {start:%H:%M} to {end:%H:%M}; "
             f"the scheduler is running it (a few minutes on 2 cores; UI: make airflow). The runs go side by side, so they finish "
             f"near the end together; the task total grows as each run expands its mapped scoring tasks")
        last_done, last_tasks, last_print, finished_runs = -1, (-1, -1), 0.0, {}
        bar = progress(None, "  runs finished", total=len(wanted), unit="run")  # off a terminal: printed lines instead

        def all_finished() -> list[dict] | None:
            nonlocal last_done, last_tasks, last_print
            latest = api.latest_runs(dag_id, wanted)
            done = [r for r in latest.values() if r["state"] in FINISHED]
            tasks = tasks_finished(api, dag_id, latest.values(), finished_runs)
            if len(done) != last_done or tasks != last_tasks:
                bar.update(len(done) - max(last_done, 0))
                bar.set_postfix_str(f"tasks finished {tasks[0]}/{tasks[1]} so far")
                if bar.disable and (len(done) != last_done or time.monotonic() - last_print >= 20):
                    print(f"  runs finished {len(done)}/{len(wanted)}, tasks finished {tasks[0]}/{tasks[1]} so far",
                          flush=True)
                    last_print = time.monotonic()  # off a terminal: a line when a run ends, else at most every 20 s
                last_done, last_tasks = len(done), tasks
            if len(latest) == len(wanted) and len(done) == len(wanted):
                return sorted(latest.values(), key=run_interval_start)
            return None

        try:
            return services.wait_until(all_finished, 1800, 5,
                                       lambda: "backfill did not finish in 30 minutes; see .local/airflow/standalone.log")
        finally:
            bar.close()


def tasks_finished(api, dag_id: str, runs, done: dict) -> tuple[int, int]:
    """(finished, known) task instances over ``runs`` (REST form): the demo's progress inside the runs.

    A mapped task counts once until the scheduler expands it, so ``known`` grows as runs start.
    Finished: Airflow's own ``State.finished`` (success, failed, skipped, upstream_failed, removed).
    ``done``: run id -> counts of runs already finished, filled here, so a finished run is asked once.
    """
    from airflow.utils.state import State

    from devstack.standalone import FINISHED

    finished = known = 0
    for run in runs:
        counts = done.get(run["dag_run_id"])
        if counts is None:
            states = [ti["state"] for ti in api.all_task_instances(dag_id, run["dag_run_id"])]
            counts = (sum(state in State.finished for state in states), len(states))
            if run["state"] in FINISHED:
                done[run["dag_run_id"]] = counts
        finished, known = finished + counts[0], known + counts[1]
    return finished, known


def report(runs: list[dict], start: dt.datetime, end: dt.datetime) -> int:
    """Print the demo's report: runs, targets, windows scored and flagged, precision and recall against
    the injected anomalies, where the outputs are; copy each interval's run report to ``.local/demo/reports``.

    ``runs``: the REST form of the backfilled runs; [start, end): the backfilled hours.
    Returns the exit code: 0 when every run succeeded, else 1.
    """
    import pandas as pd

    from batch_scoring.config import settings
    from batch_scoring.hooks.blob_storage import BlobStore
    from devstack.standalone import run_interval_start
    from batch_scoring.sensor_db.reads import read_labels
    from batch_scoring.sensor_db.schema import connect
    from batch_scoring.scoring.evaluate import precision_recall
    from batch_scoring.scoring.layout import Interval, interval_folder, manifest_blob, report_blob

    s = settings()
    store = BlobStore.from_connection_string(services.azurite_connection_string(AZURITE_PORT))
    manifests = []
    shutil.rmtree(PREDICTIONS_COPY, ignore_errors=True)  # a copy of the runs' interval folders, read as one dataset
    for run in runs:
        interval = Interval(run_interval_start(run), run_interval_start(run) + dt.timedelta(hours=1))
        name = manifest_blob(interval)
        if store.exists(s.predictions_container, name):
            manifests.append(json.loads(store.download_bytes(s.predictions_container, name)))
        names = store.list_names(s.predictions_container, interval_folder(interval))
        store.parallel(lambda n: store.download_file(s.predictions_container, n, PREDICTIONS_COPY / n), names)
    # the README's "Reading the predictions": the part files hold the validated targets' rows only
    parts = list(PREDICTIONS_COPY.glob("*/*/part-*.parquet"))
    predictions = pd.read_parquet(PREDICTIONS_COPY) if parts else pd.DataFrame()
    conn = connect(SQL_ODBC)
    labels = read_labels(conn)
    conn.close()
    ok_runs = [r for r in runs if r["state"] == "success"]
    print("\n=== batch_scoring demo report ===")
    print(f"intervals      {len(runs)} hourly, {start:%Y-%m-%d %H:%M} to {end:%H:%M} UTC; {len(ok_runs)} succeeded")
    targets = sorted({t for m in manifests for t, e in m["targets"].items() if e["status"] == "ok"})
    print(f"targets        {len(targets)} device/sensor models scored per interval "
          f"({sum(m['counts']['ok'] for m in manifests)} target-intervals validated)")
    if not predictions.empty:
        pr = precision_recall(predictions, labels)
        print(f"windows        {len(predictions):,} scored, {int(predictions['is_anomaly'].sum()):,} flagged as anomalies")
        anomalous = pr["tp"] + pr["fn"]
        print(f"anomalous      {anomalous:,} of these windows in the ground truth ({100 * anomalous / len(predictions):.1f} %; "
              f"README: What the models catch)")
        print(f"precision      {pr['precision']:.3f}  (tp {pr['tp']}, fp {pr['fp']})")
        print(f"recall         {pr['recall']:.3f}  (fn {pr['fn']})")
        for kind, m in pr["by_kind"].items():
            print(f"  {kind:<12} recall {m['recall']:.3f} ({m['detected']}/{m['windows']} anomalous windows)")
    print(f"predictions    blob container '{s.predictions_container}' (Azurite, stopped with the demo; `make airflow` "
          f"starts it again), one hive folder per interval, e.g. "
          f"{interval_folder(manifests[0]['interval']) if manifests else 'date=<day>/interval=<interval>/'}")
    day = f"{start:%Y-%m-%d}"
    print(f"local copy     {PREDICTIONS_COPY.relative_to(REPO)}, one table with pandas (README: Reading the predictions):\n"
          f"               pd.read_parquet(\"{PREDICTIONS_COPY.relative_to(REPO)}\", filters=[(\"date\", \"=\", \"{day}\")])")
    if manifests:
        report_dir = DEMO_DIR / "reports"
        report_dir.mkdir(parents=True, exist_ok=True)
        for m in manifests:
            name = report_blob(m["interval"])
            if store.exists(s.predictions_container, name):
                (report_dir / f"{m['interval']}.html").write_bytes(store.download_bytes(s.predictions_container, name))
        print(f"run reports    blob {s.predictions_container}/{report_blob(manifests[0]['interval'])} and the like "
              "(heatmap + per-target table); "
              f"copies: {report_dir}/<interval>.html")
    print(f"Azurite data   {AZURITE_DIR}")
    print("Airflow UI     make airflow   (then http://localhost:8080, login admin / admin)")
    return 0 if len(ok_runs) == len(runs) and runs else 1


def main(argv=None) -> int:
    """`make demo`; returns the exit code of :func:`report` (1 if any run failed)."""
    parser = make_parser("python -m devstack.demo", __doc__)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--sensors", type=int, default=4)
    parser.add_argument("--hours", type=int, default=4, help="consecutive hourly intervals to backfill")
    parser.add_argument("--reading-seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop Airflow and Azurite on kill too
    end = current_hour()
    LOCAL.mkdir(exist_ok=True)
    azurite = ensure_azurite()
    try:
        step(f"Azurite on 127.0.0.1:{AZURITE_PORT}; SQL: {SQL_ODBC}")
        prepare_data(args, end)
        start = end - dt.timedelta(hours=args.hours)
        runs = run_backfill(demo_env(SQL_ODBC), start, end)
        return report(runs, start, end)
    finally:
        if azurite is not None:
            services.stop(azurite)


if __name__ == "__main__":
    sys.exit(main())
