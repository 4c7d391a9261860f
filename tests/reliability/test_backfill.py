"""Backfill through the real scheduler: 24 hourly intervals, rerun, and a scheduled run, all byte-identical.

Own ``airflow standalone`` (scheduler + LocalExecutor, parallelism 4, a
PostgreSQL metadata DB as in production: on SQLite the API server and the
scheduler lock each other out under load, "database is locked" 5xx on the
backfill insert; tests/fixtures/standalone.py's StandaloneStarter), SQLite over
ODBC, the session's Azurite. A world of 2 devices x 2 sensors whose scoring
data runs from 24 hours before the current hour to 2 hours after it (so the
scheduler's own runs, including one started if the hour turns during the test,
find fresh data).

1. Unpausing makes the scheduler run the latest interval [H-1h, H): its
   predictions are the "scheduled" reference.
2. ``backfill`` H-24h .. H-1h (reprocess completed), created while the DAG
   is paused (its runs only wait: the documented trap), then unpaused: 24 runs,
   24 manifests, every target ok; the scheduled interval's blobs are byte-identical.
3. The same backfill again: every part file (receipts in its footer) and
   manifest byte-identical to step 2.
4. Every blob in the predictions and aggregates containers lies under the
   folder of an interval that a run covered (``date=<day>/interval=<key>/`` for
   predictions, ``<key>/`` for the snapshot).
"""
from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from batch_scoring.scoring.layout import interval_prefix, manifest_blob, snapshot_blob
from batch_scoring.scoring.times import utc_naive
from tests.fixtures.standalone import StandaloneStarter

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
HOUR = dt.timedelta(hours=1)
INTERVALS = 24


def _key(start: dt.datetime) -> str:
    from batch_scoring.scoring.layout import interval_key

    return interval_key(start, start + HOUR)


def _outputs(store, keys) -> dict[str, bytes]:
    """Part files (predictions, receipts in their footers) and manifests (run reports are HTML for people, not compared)."""
    out = {}
    for key in keys:
        for name in store.list_names("predictions", interval_prefix(key)):
            base = name.rsplit("/", 1)[-1]
            if base.startswith("_") and base != "_manifest.json":
                continue
            out[name] = store.download_bytes("predictions", name)
    return out


def _wait(airflow, predicate, what: str, timeout: float = 1200) -> list[dict]:
    deadline = time.monotonic() + timeout
    runs: list[dict] = []
    while time.monotonic() < deadline:
        runs = airflow.api.dag_runs("batch_scoring")
        if predicate(runs):
            return runs
        if airflow.proc.poll() is not None:
            raise RuntimeError(f"standalone exited:\n{airflow.log_tail()}")
        if "ObjectDeletedError" in airflow.log_path.read_text(errors="replace"):
            raise RuntimeError(f"the scheduler died (metadata DB race, see the log):\n{airflow.log_tail()}")
        time.sleep(2)
    raise TimeoutError(f"{what} not reached after {timeout:.0f}s: "
                       f"{[(r['dag_run_id'], r['state']) for r in runs]}\n{airflow.log_tail()}")


def _set_paused(airflow, paused: bool) -> None:
    airflow.api._request("PATCH", "/api/v2/dags/batch_scoring", {"is_paused": paused})


def _backfill_while_paused(airflow, first, last, in_range, check_trap: bool = False) -> int:
    """Create the backfill with the DAG paused, then unpause.

    With a SQLite metadata DB, a scheduler busy starting the backfill's first
    runs while the API server is still inserting the rest can hit a
    "database is locked" 503 that rolls the insert back under it (seen here:
    FOREIGN KEY failure, ObjectDeletedError, scheduler dead). Paused, the
    scheduler leaves the runs alone until they all exist. This is also the
    documented trap: while paused, the backfill's runs only wait.
    """
    _set_paused(airflow, True)
    backfill_id = airflow.backfill(first, last, reprocess="completed", leave_paused=True)
    if check_trap:
        time.sleep(8)
        waiting = in_range(airflow.api.dag_runs("batch_scoring"))
        assert waiting and all(r["state"] == "queued" for r in waiting), \
            [(r["dag_run_id"], r["state"]) for r in waiting]  # paused: nothing starts
    _set_paused(airflow, False)
    return backfill_id


def _wait_backfill_completed(airflow, backfill_id: int, timeout: float = 180) -> None:
    """The scheduler marks a backfill completed some seconds after its last run ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if airflow.api._request("GET", f"/api/v2/backfills/{backfill_id}").get("completed_at"):
            time.sleep(5)  # let the scheduler finish the writes that go with it (SQLite: one writer at a time)
            return
        time.sleep(2)
    raise TimeoutError(f"backfill {backfill_id} not marked completed after {timeout:.0f}s")


def test_backfill_24_intervals_rerun_and_scheduled_run_are_byte_identical(tmp_path, sqlite_conn_str, blob_conn_str, blob_store,
                                                                         pg_server):
    from batch_scoring.config import settings
    from devstack import services
    from devstack.world import simulate_world
    from batch_scoring.sensor_db.schema import connect
    from tests.fixtures.sql import new_pg_database

    t0 = time.monotonic()
    metadata_db = pg_server.sqlalchemy_url(new_pg_database(pg_server))
    starter = StandaloneStarter(tmp_path / "airflow", services.free_port(), metadata_db)
    try:
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, minute=0, second=0, microsecond=0)
        first = now - INTERVALS * HOUR
        conn = connect(sqlite_conn_str)
        try:
            simulate_world(conn, blob_store, settings(), tmp_path / "models", devices=2, sensors=2,
                           history=(first - 8 * HOUR, first), scoring=(first, now + 2 * HOUR),
                           reading_seconds=30, seed=13)
        finally:
            conn.close()
        airflow = starter.ready()
        airflow.use_connections(sqlite_conn_str, blob_conn_str)

        # 1. the scheduler's own run of the latest interval
        airflow.unpause()
        latest = now - HOUR
        runs = _wait(airflow, lambda rs: any(r["run_type"] == "scheduled" and r["state"] in ("success", "failed")
                                             and utc_naive(r["data_interval_start"]) == latest for r in rs),
                     "the scheduled run of the latest interval")
        sched = [r for r in runs if r["run_type"] == "scheduled" and utc_naive(r["data_interval_start"]) == latest]
        assert [r["state"] for r in sched] == ["success"], airflow.log_tail()
        scheduled = _outputs(blob_store, [_key(latest)])
        t_sched = time.monotonic() - t0

        # 2. backfill 24 intervals (logical dates = interval starts)
        starts = [first + i * HOUR for i in range(INTERVALS)]
        in_range = lambda rs: [r for r in rs if r.get("logical_date") and first <= utc_naive(r["logical_date"]) <= latest]
        backfill_id = _backfill_while_paused(airflow, first, latest, in_range, check_trap=True)
        done = lambda rs: len(in_range(rs)) == INTERVALS and all(r["state"] in ("success", "failed") for r in in_range(rs))
        runs = in_range(_wait(airflow, done, "24 backfilled runs finished"))
        assert sorted(utc_naive(r["data_interval_start"]) for r in runs) == starts
        assert {r["state"] for r in runs} == {"success"}, [(r["dag_run_id"], r["state"]) for r in runs]
        keys = [_key(s) for s in starts]
        for key in keys:
            manifest = json.loads(blob_store.download_bytes("predictions", manifest_blob(key)))
            assert manifest["counts"] == {"ok": 4, "failed": 0, "skipped": 0}, (key, manifest)
            assert manifest["rows"] == 48
        backfilled = _outputs(blob_store, keys)
        assert len(backfilled) == INTERVALS * 5  # 4 part files (one target each, receipts in them) + manifest per interval
        assert {n: b for n, b in backfilled.items() if n.startswith(interval_prefix(_key(latest)))} == scheduled
        ends = {r["dag_run_id"]: r["end_date"] for r in runs}
        _wait_backfill_completed(airflow, backfill_id)  # a new backfill is refused while this one is open
        t_backfill = time.monotonic() - t0

        # 3. the same backfill again: everything reprocessed, the same bytes
        _backfill_while_paused(airflow, first, latest, in_range)
        redone = lambda rs: done(rs) and all(r["end_date"] != ends.get(r["dag_run_id"]) for r in in_range(rs))
        runs = in_range(_wait(airflow, redone, "24 reprocessed runs finished"))
        assert {r["state"] for r in runs} == {"success"}
        assert _outputs(blob_store, keys) == backfilled
        t_rerun = time.monotonic() - t0

        # 4. nothing outside the prefixes of intervals that were run
        airflow.wait_until_idle(timeout=300)
        ran = {_key(utc_naive(r["data_interval_start"]))
               for r in airflow.api.dag_runs("batch_scoring") if r.get("data_interval_start")}
        assert set(keys) <= ran
        folders = {"predictions": tuple(interval_prefix(k) for k in ran),  # date=<day>/interval=<key>/
                   "aggregates": tuple(snapshot_blob(k).rsplit("/", 1)[0] + "/" for k in ran)}  # <key>/
        for container, allowed in folders.items():
            names = blob_store.list_names(container)
            assert names, container
            stray = [n for n in names if not n.startswith(allowed)]
            assert stray == [], f"{container}: blobs outside every run's interval: {stray[:10]}"
        print(f"\n[backfill] scheduled run done {t_sched:.0f}s, backfill of {INTERVALS} done {t_backfill:.0f}s, "
              f"reprocessed {t_rerun:.0f}s (Airflow up in {airflow.startup_seconds:.0f}s)")
    finally:
        starter.stop()
