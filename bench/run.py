"""`make bench` / `python -m bench`: the DAG through the real scheduler vs. the single-process floor.

For each fleet size T (default 100, 1000, 10000) it builds a synthetic fleet
(``bench/world.py``: T targets x 288 five-minute windows of one day, straight
into a fresh SQLite database through ``ingest_sim.loads.upsert_aggregates``;
one real trained model copied per target, deployed to Azurite), then in one run:

* **physical floor**: ``bench/physical.py`` in its own process: the interval's
  SQL read through the same ODBC path -> every model from local files ->
  ``score_unit`` -> one part file (receipts in its footer) to a local folder (the work itself);
* **floor**: ``bench/floor.py`` in its own process: snapshot blob -> every
  model -> ``score_tables`` -> one part file per target uploaded, one
  thread, same Azurite;
* **DAG**: ``airflow standalone`` (LocalExecutor, parallelism ``--parallelism``,
  fresh metadata DB per T, scoring stack preloaded in the scheduler),
  ``BATCH_SCORING_SCHEDULE="0 0 * * *"``, the scheduler's own cron runs off
  (``use_job_schedule=False``), one manual run per mode triggered through the
  REST API with the day as its data interval and ``conf={"targets_per_unit": N}``,
  prediction blobs deleted before each run so the collector sees only this
  run's output.

Measured per mode: wall (trigger -> run finished, polled every 0.5 s; and the
run's own start -> end from Airflow), CPU of the standalone's process tree
and of Azurite (``bench/procs.py``), sampled peak RSS of the tree, the score
task count and mean duration, and the collector's validated target count.
Results: ``.local/bench/results.json`` and the generated section of
``BENCHMARKS.md`` (between the ``bench:results`` markers).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from devstack import services
from devstack.services import REPO
from bench.report import render, write_markdown
from batch_scoring.scoring.cli import make_parser
from batch_scoring.scoring.layout import manifest_blob
from batch_scoring.scoring.times import utc_naive

WORK = REPO / ".local" / "bench"
AZURITE_LOG = WORK / "azurite.log"  # its access log: one line per blob request (bench/blob_requests.py)
DAY = dt.datetime(2026, 1, 1)
DAG_ID = "batch_scoring"


def log(msg: str) -> None:
    """Print one progress line of the benchmark, stamped with the local wall-clock time."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- world -------------------------------------------------------------------------

def build_world(T: int, store, conn_str_sql: str, workdir: Path, settings) -> list[str]:
    """Fleet of ``T`` targets: a day of aggregates into a fresh SQL schema, one model per target deployed.

    Empties every container first; writes ``workdir/models`` and ``workdir/targets.txt``
    (one ``device/sensor`` a line); returns the target names, sorted.
    """
    from bench.world import load_aggregates, target_names, train_template, write_models

    t0 = time.perf_counter()
    targets = target_names(T)
    load_aggregates(conn_str_sql, targets, DAY)
    t_sql = time.perf_counter() - t0
    models = workdir / "models"
    shutil.rmtree(models, ignore_errors=True)
    write_models(train_template(workdir, DAY), models, targets)
    for c in settings.containers:
        store.delete_container(c)
    _ensure_containers(store, settings.containers)
    files = sorted(p for p in models.rglob("*") if p.is_file())
    # the store's own pool: more threads than azure-core's 10 pooled connections discard connections (a warning each)
    store.parallel(lambda p: store.upload_file(settings.models_container, p.relative_to(models).as_posix(), p), files)
    (workdir / "targets.txt").write_text("\n".join(targets) + "\n")
    log(f"T={T}: {T * 288:,} aggregate rows into {conn_str_sql.split(';')[0]} in {t_sql:.1f}s; {len(files)} model files deployed "
        f"({time.perf_counter() - t0:.1f}s in all)")
    return targets


def check_world(fleets, sql: str) -> None:
    """Refuse ``--reuse-world`` unless every fleet size in ``fleets`` has a world under ``WORK``: ``T<T>/targets.txt``
    of ``T`` lines (written last by :func:`build_world`), its SQLite file and Azurite's data. Raises ``SystemExit``."""
    if sql != "sqlite":
        raise SystemExit("--reuse-world keeps SQLite worlds only (the PostgreSQL server is throwaway)")
    for T in fleets:
        targets = WORK / f"T{T}" / "targets.txt"
        missing = [p for p in (targets, WORK / f"T{T}" / "sensors.db", WORK / "azurite") if not p.exists()]
        if missing:
            raise SystemExit(f"--reuse-world: no complete world for T={T}: missing {', '.join(map(str, missing))}")
        if len(targets.read_text().split()) != T:
            raise SystemExit(f"--reuse-world: {targets} does not list {T} targets")


def reused_world(T: int, store, settings, interval, workdir: Path) -> str:
    """When the world kept at ``workdir`` (``--reuse-world``) was built (``YYYY-MM-DD HH:MM``, local time), after
    checking that Azurite holds every file of ``workdir/models`` with the same bytes (its MD5 against one
    ``BlobStore.list_md5`` listing) and the interval's snapshot blob. Raises ``SystemExit`` naming what is missing."""
    import hashlib

    from batch_scoring.scoring.layout import snapshot_blob

    models = workdir / "models"
    deployed = store.list_md5(settings.models_container)
    files = sorted(p for p in models.rglob("*") if p.is_file())
    wrong = [n for n in (p.relative_to(models).as_posix() for p in files)
             if deployed.get(n) != hashlib.md5((models / n).read_bytes()).hexdigest()]
    if not files or wrong:
        raise SystemExit(f"--reuse-world: {len(wrong):,} of {len(files):,} model files are not deployed as written "
                         f"(first: {wrong[:1]}): rebuild without --reuse-world")
    if not store.exists(settings.aggregates_container, snapshot_blob(interval)):
        raise SystemExit(f"--reuse-world: the snapshot blob {snapshot_blob(interval)} is missing: rebuild without --reuse-world")
    built = time.strftime("%Y-%m-%d %H:%M", time.localtime((workdir / "targets.txt").stat().st_mtime))
    log(f"T={T}: reusing the world built {built}: {T * 288:,} aggregate rows in {workdir / 'sensors.db'}, "
        f"{len(files):,} model files and the snapshot blob in Azurite")
    return built


def _ensure_containers(store, names, attempts: int = 30) -> None:
    from azure.core.exceptions import ResourceExistsError

    for name in names:  # a just-deleted container can refuse re-creation for a moment
        for i in range(attempts):
            try:
                store.ensure_containers([name])
                break
            except ResourceExistsError:
                time.sleep(1)


def write_snapshot(store, conn_str_sql: str, settings, interval) -> None:
    """The snapshot blob of ``interval``, written by the DAG's own snapshot step (``snapshot.snapshot_interval``:
    the streamed read, its checks, its row groups); the floor reads it."""
    from batch_scoring.snapshot import snapshot_interval
    from batch_scoring.sensor_db.schema import connect

    conn = connect(conn_str_sql)
    try:
        snapshot_interval(conn, store, settings, interval)
    finally:
        conn.close()


# --- floor ---------------------------------------------------------------------------

FLOOR_CONTAINER = "floor-predictions"


def run_floor(conn_str: str, interval, workdir: Path, azurite_pid: int, requests_log: Path | None = None) -> dict:
    """Run ``bench.floor`` in its own process; returns its JSON line plus ``azurite_cpu`` (CPU-s of Azurite meanwhile)
    and, given Azurite's access log, ``blob_requests`` (``bench.blob_requests.count_lines`` of the period).

    Raises ``RuntimeError`` with the end of its stderr if it fails.
    """
    from bench.procs import TreeMeter

    cmd = [sys.executable, "-m", "bench.floor", "--connection-string", conn_str, "--interval", interval.key,
           "--targets-file", str(workdir / "targets.txt"), "--out-container", FLOOR_CONTAINER]
    with TreeMeter([azurite_pid]) as az, _requests(requests_log) as req:
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if res.returncode:
        raise RuntimeError(f"floor failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["azurite_cpu"] = az.cpu
    if req is not None:
        out["blob_requests"] = req.counts
    return out


def measure_floor(store, conn_str: str, sql_odbc: str, settings, interval, workdir: Path, azurite_pid: int,
                  requests_log: Path | None = None) -> dict:
    """The floor of a built fleet (:func:`build_world`): snapshot blob written, :func:`run_floor` into its own
    emptied container, which is deleted afterwards. Returns :func:`run_floor`'s measures (seconds, bytes)."""
    write_snapshot(store, sql_odbc, settings, interval)
    store.delete_container(FLOOR_CONTAINER)
    _ensure_containers(store, [FLOOR_CONTAINER])
    floor = run_floor(conn_str, interval, workdir, azurite_pid, requests_log)
    # Azurite's cost per request grows with the blobs in the account: the DAG runs must start
    # from the state the floor started from (models + snapshot), not with the floor's output too
    store.delete_container(FLOOR_CONTAINER)
    return floor


def run_physical(sql_odbc: str, interval, workdir: Path) -> dict:
    """Run ``bench.physical`` (SQL read + local models + local files: the work itself) in its own process;
    returns its JSON line (seconds, bytes). Raises ``RuntimeError`` with the end of its stderr if it fails."""
    cmd = [sys.executable, "-m", "bench.physical", "--sql-odbc", sql_odbc, "--interval", interval.key,
           "--targets-file", str(workdir / "targets.txt"), "--models-dir", str(workdir / "models")]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if res.returncode:
        raise RuntimeError(f"physical floor failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# --- DAG -----------------------------------------------------------------------------

def bench_settings(parallelism: int) -> dict[str, str]:
    """What every benchmark sets over a deployment's Airflow settings: daily schedule, no retries, only
    triggered runs, quick pokes, ``max(16, parallelism)`` task slots per DAG, and this machine's memory
    over ``parallelism`` as the memory one scoring unit may hold (``psutil.virtual_memory().total``)
    (environment variables)."""
    import psutil

    return {
        "BATCH_SCORING_AUTO_UNIT_MEMORY_GIB": f"{psutil.virtual_memory().total / 2**30 / max(1, parallelism):.2f}",
        "BATCH_SCORING_SCHEDULE": "0 0 * * *",  # a day: 288 five-minute windows per target
        "BATCH_SCORING_RETRIES": "0",  # a failure shows as a failure, not as a slow run
        "BATCH_SCORING_FRESHNESS_POKE_SECONDS": "5",
        "BATCH_SCORING_FRESHNESS_TIMEOUT_SECONDS": "300",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the runs we trigger
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(max(16, parallelism)),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }


def bench_env(home: Path, sql_odbc: str, conn_str: str, parallelism: int) -> dict:
    """The standalone's Airflow environment of one fleet: ``devstack.airflow_env`` plus :func:`bench_settings`;
    its model cache (``<home>/model-cache``) is emptied first: the fleet's first run downloads every model,
    later runs of the same models read them from the cache, as hourly runs do."""
    from devstack.airflow_env import airflow_env

    env = airflow_env(home, sql_odbc, conn_str, parallelism=parallelism)
    env.update(bench_settings(parallelism))
    shutil.rmtree(home / "model-cache", ignore_errors=True)
    dags = home / "dags"  # the deployment's one-line DAG file and the no-op shape DAG (bench/shape_dag.py)
    shutil.rmtree(dags, ignore_errors=True)
    dags.mkdir(parents=True)
    shutil.copy(Path(env["AIRFLOW__CORE__DAGS_FOLDER"]) / "batch_scoring_dag.py", dags)
    shutil.copy(REPO / "bench" / "shape_dag.py", dags)
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    return env


def run_dag_mode(api, store, settings, interval, T: int, mode, airflow_pids, azurite_pid: int,
                 timeout: float, requests_log: Path | None = None) -> dict:
    """One manual run of the DAG over ``interval`` with ``targets_per_unit=mode``; returns its measures.

    ``airflow_pids``: the root pid of the Airflow processes (the standalone) or a list
    of them (a topology's components and workers), metered as one tree. Wall and CPU
    in seconds, RSS in bytes (see the module docstring); the run is deleted
    afterwards. Given Azurite's access log, ``blob_requests`` counts the requests of the run (trigger to
    finished). Raises ``TimeoutError`` if it is not finished after ``timeout`` s.
    """
    from bench.procs import TreeMeter

    store.delete_container(settings.predictions_container)
    _ensure_containers(store, [settings.predictions_container])
    run_id = f"bench_T{T}_{mode}_{int(time.time())}"
    conf = {"targets_per_unit": mode if mode == "auto" else int(mode)}
    pids = [airflow_pids] if isinstance(airflow_pids, int) else list(airflow_pids)
    try:
        with TreeMeter([azurite_pid]) as az, TreeMeter(pids) as af, _requests(requests_log) as req:
            api.trigger_dag_run(DAG_ID, run_id, interval.start, interval.end, conf)
            run = api.wait_for_run(DAG_ID, run_id, timeout, every=0.5)
        tis = api.all_task_instances(DAG_ID, run_id)
    finally:  # the next mode scores the same interval (one run per logical date): never leave this one behind
        _end_run(api, run_id)
    score = [t for t in tis if t["task_id"] == "score"]
    durations = [t["duration"] for t in score if t.get("duration") is not None]
    manifest = _manifest(store, settings, interval)
    run_seconds = _run_seconds(run)
    return {
        "mode": str(mode), "state": run["state"], "wall": af.wall, "run_seconds": run_seconds, "cpu": af.cpu,
        "azurite_cpu": az.cpu, "peak_rss": af.peak_rss, "score_tasks": len(score),
        "score_task_mean": sum(durations) / len(durations) if durations else None,
        "validated": (manifest or {}).get("counts", {}).get("ok"),
        "task_states": {s: sum(t["state"] == s for t in tis) for s in {t["state"] for t in tis}},
        "stage_seconds": {t["task_id"]: t.get("duration") for t in tis if t["task_id"] != "score"},
        "timeline": timeline(tis, run.get("start_date")),
        **({"blob_requests": req.counts} if req is not None else {}),
    }


def run_shape(api, units: int, airflow_pids, timeout: float) -> dict:
    """One run of the no-op DAG of the same shape (``bench/shape_dag.py``) with ``units`` mapped tasks: Airflow's
    own floor per run. Returns wall (trigger -> finished), the run's own seconds, CPU of the Airflow tree,
    state and :func:`timeline`. Raises ``TimeoutError`` if it is not finished after ``timeout`` s."""
    from bench.procs import TreeMeter
    from bench.shape_dag import SHAPE_DAG_ID

    run_id = f"shape_{units}_{int(time.time())}"
    pids = [airflow_pids] if isinstance(airflow_pids, int) else list(airflow_pids)
    with TreeMeter(pids) as af:
        api.trigger_dag_run(SHAPE_DAG_ID, run_id, DAY, DAY + dt.timedelta(days=1), {"units": units})
        run = api.wait_for_run(SHAPE_DAG_ID, run_id, timeout, every=0.5)
    tis = api.all_task_instances(SHAPE_DAG_ID, run_id)
    run_seconds = _run_seconds(run)
    return {"units": units, "state": run["state"], "wall": af.wall, "run_seconds": run_seconds, "cpu": af.cpu,
            "timeline": timeline(tis, run.get("start_date"))}


def _run_seconds(run: dict) -> float | None:
    """A finished run's own start -> end in seconds (Airflow's dates), None while it has no end."""
    return (utc_naive(run["end_date"]) - utc_naive(run["start_date"])).total_seconds() if run.get("end_date") else None


def timeline(tis: list[dict], run_start: str | None) -> dict:
    """Per task id, seconds from the run's start to its first ``scheduled_when``, ``queued_when``,
    ``start_date`` and its last ``end_date`` (a mapped task's instances as one): where a run waits
    between tasks (scheduling, queueing, task start-up) rather than working. Empty without a start."""
    if not run_start:
        return {}
    t0 = utc_naive(run_start)
    fields = (("scheduled", "scheduled_when", min), ("queued", "queued_when", min), ("started", "start_date", min),
              ("ended", "end_date", max))
    out: dict = {}
    for task_id in sorted({t["task_id"] for t in tis}):
        mine = [t for t in tis if t["task_id"] == task_id]
        out[task_id] = {name: round((pick(utc_naive(t[key]) for t in mine if t.get(key)) - t0).total_seconds(), 2)
                        for name, key, pick in fields if any(t.get(key) for t in mine)}
    return out


def _end_run(api, run_id: str) -> None:
    """Mark the run failed if it is still going (its tasks stop) and delete it; best effort, logged."""
    try:
        if api.dag_run(DAG_ID, run_id)["state"] not in ("success", "failed"):
            api.fail_dag_run(DAG_ID, run_id)
            time.sleep(10)  # let the scheduler stop its running tasks
        api.delete_dag_run(DAG_ID, run_id)
    except Exception as exc:  # noqa: BLE001 - the measurement's own error is the one to report
        log(f"could not end run {run_id}: {type(exc).__name__}: {exc}")


def _requests(log_path: Path | None):
    """A ``bench.blob_requests.BlobRequests`` over Azurite's access log, or a context yielding None without one."""
    from contextlib import nullcontext

    from bench.blob_requests import BlobRequests

    return BlobRequests(log_path) if log_path is not None else nullcontext()


def _manifest(store, settings, interval):
    name = manifest_blob(interval)
    if store.exists(settings.predictions_container, name):
        return json.loads(store.download_bytes(settings.predictions_container, name))
    return None


def idle_cpu(pids, seconds: float = 15) -> float:
    """CPU-seconds per second used by the process tree of ``pids`` (one pid or a list) over ``seconds`` of waiting."""
    from bench.procs import TreeMeter

    with TreeMeter([pids] if isinstance(pids, int) else pids) as m:
        time.sleep(seconds)
    return m.cpu / m.wall


# --- main ----------------------------------------------------------------------------

def main(argv=None) -> int:
    """`python -m bench`; returns 0 when every DAG run of every fleet succeeded, else 1."""
    parser = make_parser("python -m bench", __doc__)
    parser.add_argument("--targets", type=int, nargs="+", default=[100, 1000, 10000], help="fleet sizes T")
    parser.add_argument("--modes", nargs="+", default=["1", "10", "100", "auto"], help="targets_per_unit values")
    parser.add_argument("--per-target-max", type=int, default=1000,
                        help="run targets_per_unit=1 only for T up to this (10,000 per-target tasks take ~1 h)")
    parser.add_argument("--blob-floor-max", type=int,
                        help="run the blob-store floor only for T up to this (it took 1,150 s at 10,000 targets); "
                             "the physical floor always runs")
    parser.add_argument("--parallelism", type=int, default=4, help="AIRFLOW__CORE__PARALLELISM (4 for 2 cores)")
    parser.add_argument("--run-timeout", type=float, default=3600)
    parser.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md", help="file whose generated section is replaced")
    parser.add_argument("--sql", choices=("sqlite", "postgresql"), default="sqlite",
                        help="the aggregates database: SQLite file (default) or a throwaway PostgreSQL server, over ODBC")
    parser.add_argument("--azurite-metadata", choices=("loki", "mariadb"), default="loki",
                        help="Azurite's metadata store: its default LokiJS, or a throwaway MariaDB (AZURITE_DB), whose "
                             "lookups do not slow with the blobs held (needed for 100,000 targets; devstack/mariadb.py)")
    parser.add_argument("--no-markdown", action="store_true")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results (default: keep fleet sizes not re-run)")
    parser.add_argument("--reuse-world", action="store_true",
                        help="keep the world an earlier run of the same T built (its SQL aggregates, deployed models, snapshot "
                             "blob, Azurite and MariaDB data: over an hour at 100,000 targets) and measure again; SQLite only")
    parser.add_argument("--render-only", action="store_true", help="only re-render .local/bench/results.json into the markdown")
    args = parser.parse_args(argv)
    if args.render_only:
        write_markdown(json.loads((WORK / "results.json").read_text()), args.markdown)
        return 0

    from batch_scoring.config import settings as get_settings
    from batch_scoring.hooks.blob_storage import BlobStore
    from batch_scoring.scoring.layout import Interval
    from devstack.standalone import running_standalone

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    WORK.mkdir(parents=True, exist_ok=True)
    if args.reuse_world:
        check_world(args.targets, args.sql)
    else:
        shutil.rmtree(WORK / "azurite", ignore_errors=True)
    az_port, af_port = services.free_port(), services.free_port()
    AZURITE_LOG.unlink(missing_ok=True)
    maria = None
    if args.azurite_metadata == "mariadb":
        from devstack.mariadb import start_mariadb

        if not args.reuse_world:
            shutil.rmtree(WORK / "mariadb", ignore_errors=True)
        maria = start_mariadb(WORK / "mariadb", services.free_port())
    azurite = services.start_azurite(WORK / "azurite", az_port, log_path=AZURITE_LOG,
                                     metadata_db=maria.azurite_db() if maria else None)
    conn_str = services.azurite_connection_string(az_port)
    store = BlobStore.from_connection_string(conn_str)
    settings = get_settings()
    interval = Interval(DAY, DAY + dt.timedelta(days=1))
    pg = None
    if args.sql == "postgresql":
        from devstack.postgres import start_postgres

        shutil.rmtree(WORK / "postgres", ignore_errors=True)
        (WORK / "postgres").mkdir(parents=True)
        (WORK / "postgres").chmod(0o755)  # the server runs as its own user when we are root
        pg = start_postgres(WORK / "postgres", services.free_port())
    results = {"started": time.strftime("%Y-%m-%d %H:%M"), "parallelism": args.parallelism, "sql": args.sql,
               "azurite_metadata": args.azurite_metadata,
               "machine": f"{os.cpu_count()} cores, {platform.python_version()}", "fleets": {}}
    if not args.fresh and (WORK / "results.json").exists():  # keep the fleet sizes this run does not redo
        results["fleets"] = {T: f for T, f in json.loads((WORK / "results.json").read_text())["fleets"].items()
                             if int(T) not in args.targets}
    try:
        for T in args.targets:
            workdir = WORK / f"T{T}"
            if args.reuse_world:  # the world stays; the standalone's home and log are new
                shutil.rmtree(workdir / "airflow", ignore_errors=True)
                (workdir / "standalone.log").unlink(missing_ok=True)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
                workdir.mkdir(parents=True)
            sql_odbc = f"Driver=SQLite3;Database={workdir / 'sensors.db'}"
            if pg is not None:
                from devstack.postgres import create_database

                create_database(pg, f"sensors_t{T}")
                sql_odbc = pg.conn_str(f"sensors_t{T}")
            reused = reused_world(T, store, settings, interval, workdir) if args.reuse_world else None
            if reused is None:
                build_world(T, store, sql_odbc, workdir, settings)
            if args.blob_floor_max is not None and T > args.blob_floor_max:
                if reused is None:  # a reused world keeps its snapshot blob
                    write_snapshot(store, sql_odbc, settings, interval)  # what measure_floor leaves for the DAG runs
                floor = None
                log(f"T={T}: blob-store floor skipped (over --blob-floor-max {args.blob_floor_max})")
            else:
                floor = measure_floor(store, conn_str, sql_odbc, settings, interval, workdir, azurite.pid, AZURITE_LOG)
                log(f"T={T}: floor {floor['wall']:.1f}s wall, {floor['cpu']:.1f}s CPU "
                    f"({1000 * floor['wall'] / T:.2f} ms/target; phases {json.dumps({k: round(v, 2) for k, v in floor['phases'].items()})})")
            physical = run_physical(sql_odbc, interval, workdir)
            log(f"T={T}: physical floor {physical['wall']:.1f}s wall, {physical['cpu']:.1f}s CPU "
                f"(phases {json.dumps({k: round(v, 2) for k, v in physical['phases'].items()})})")
            fleet = {"floor": floor, "physical": physical, "dag": []}
            if reused is not None:
                fleet["world_reused_from"] = reused
            results["fleets"][str(T)] = fleet
            env = bench_env(workdir / "airflow", sql_odbc, conn_str, args.parallelism)
            with running_standalone(env, af_port, workdir / "standalone.log", DAG_ID) as (proc, api):
                api.unpause(DAG_ID)
                time.sleep(10)  # let start-up settle (dag parsing, first scheduler loops)
                fleet["idle_cpu_per_s"] = idle_cpu(proc.pid)
                for mode in args.modes:
                    if mode == "1" and T > args.per_target_max:
                        log(f"T={T}: targets_per_unit=1 skipped (over --per-target-max {args.per_target_max})")
                        continue
                    try:
                        m = run_dag_mode(api, store, settings, interval, T, mode, proc.pid, azurite.pid, args.run_timeout,
                                         AZURITE_LOG)
                    except Exception as exc:  # record and go on with the other modes
                        m = {"mode": str(mode), "error": f"{type(exc).__name__}: {exc}"}
                    fleet["dag"].append(m)
                    log(f"T={T} targets_per_unit={mode}: " + json.dumps(
                        {k: (round(v, 2) if isinstance(v, float) else v) for k, v in m.items()}))
                    (WORK / "results.json").write_text(json.dumps(results, indent=2))
                units = next((m["score_tasks"] for m in reversed(fleet["dag"]) if m.get("score_tasks")), 4)
                try:
                    from bench.shape_dag import SHAPE_DAG_ID

                    api.wait_for_dag(SHAPE_DAG_ID)
                    api.unpause(SHAPE_DAG_ID)
                    fleet["shape"] = run_shape(api, units, proc.pid, 600)
                except Exception as exc:  # noqa: BLE001 - a missing floor is reported, the measured runs kept
                    fleet["shape"] = {"units": units, "error": f"{type(exc).__name__}: {exc}"}
                log(f"T={T}: no-op DAG of the same shape ({units} units): " + json.dumps(fleet["shape"]))
                (WORK / "results.json").write_text(json.dumps(results, indent=2))
    finally:
        services.stop(azurite)
        if maria is not None:
            from devstack.mariadb import stop_mariadb

            stop_mariadb(maria)
        if pg is not None:
            from devstack.postgres import stop_postgres

            stop_postgres(pg, "immediate")
        (WORK / "results.json").write_text(json.dumps(results, indent=2))
    print(render(results))
    if not args.no_markdown:
        write_markdown(results, args.markdown)
    return 0 if all(m.get("state") == "success" for f in results["fleets"].values() for m in f["dag"]) else 1
