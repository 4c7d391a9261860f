"""The Airflow UI shows a backfilled run's mapped scoring tasks by their ``device/sensor`` names.

A real ``airflow standalone`` (scheduler, LocalExecutor) backfills one interval
of a small world (2 devices x 2 sensors, SQLite over ODBC, Azurite); then
Debian's headless Chromium, driven by ``playwright-core`` (``airflow_ui.mjs``
beside this file), logs in, opens the DAG, finds the run in its Runs tab and
checks that the mapped instances of task ``score`` are listed as ``dev001/s1``
etc. The screenshot goes to ``.local/artifacts/airflow_ui.png``.
Chromium, Node or playwright-core missing FAILS the test: ``make setup``
installs them.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from devstack.services import REPO

CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = Path(__file__).with_name("airflow_ui.mjs")
SCREENSHOT = REPO / ".local" / "artifacts" / "airflow_ui.png"
DEVICES, SENSORS = 2, 2


def _browser_prerequisites() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found: `make setup` installs nodejs", pytrace=False)
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: `make setup` installs Debian's chromium (apt-get install chromium)", pytrace=False)
    if not (REPO / "node_modules" / "playwright-core" / "package.json").exists():
        pytest.fail("node_modules/playwright-core missing: `make setup` runs npm ci", pytrace=False)
    return node


@pytest.mark.timeout(420)
def test_ui_names_mapped_tasks_device_sensor(standalone_starter, sqlite_conn_str, blob_store, blob_conn_str, tmp_path, capsys):
    from batch_scoring.config import settings
    from devstack.world import current_hour, simulate_world
    from batch_scoring.sensor_db.schema import connect
    from batch_scoring.ingest_sim.simulator import device_ids, sensor_ids

    node = _browser_prerequisites()
    t0 = time.monotonic()
    # The world ends at the current hour, so the scheduler's own latest run (it
    # starts one when the DAG is unpaused) finds fresh data too.
    end = current_hour()
    conn = connect(sqlite_conn_str)
    try:
        simulate_world(conn, blob_store, settings(), tmp_path / "models",
                       devices=DEVICES, sensors=SENSORS,
                       history=(end - dt.timedelta(hours=26), end - dt.timedelta(hours=2)),
                       scoring=(end - dt.timedelta(hours=2), end))
    finally:
        conn.close()
    t_world = time.monotonic() - t0

    airflow = standalone_starter.ready()  # started in the background while the world was built
    t_up = time.monotonic() - t0
    airflow.use_connections(sqlite_conn_str, blob_conn_str)
    interval_start = end - dt.timedelta(hours=2)  # hourly: logical date = interval start
    backfill_id = airflow.backfill(interval_start, interval_start)
    runs = airflow.wait_for_backfill(backfill_id, expected_runs=1, timeout=240)
    assert [r["state"] for r in runs] == ["success"], f"backfill run failed: {runs}\n{airflow.log_tail()}"
    run_id = runs[0]["dag_run_id"]
    t_backfill = time.monotonic() - t0

    expected = sorted(f"{d}/{s}" for d in device_ids(DEVICES) for s in sensor_ids(SENSORS))
    score_tis = [ti for ti in airflow.api.task_instances(settings().dag_id, run_id) if ti["task_id"] == "score"]
    assert sorted(ti["rendered_map_index"] for ti in score_tis) == expected
    assert {ti["state"] for ti in score_tis} == {"success"}

    cfg = {"base": airflow.url, "user": "admin", "password": "admin", "dagId": settings().dag_id,
           "runId": run_id, "taskId": "score", "labels": expected, "screenshot": str(SCREENSHOT),
           "executablePath": str(CHROMIUM)}
    proc = subprocess.run([node, str(SCRIPT), json.dumps(cfg)], cwd=REPO, capture_output=True, text=True, timeout=180)
    t_total = time.monotonic() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    with capsys.disabled():
        print(f"\n[ui] screenshot: {SCREENSHOT}  (world {t_world:.0f}s, Airflow up {t_up:.0f}s, "
              f"backfill done {t_backfill:.0f}s, browser done {t_total:.0f}s)")
    assert proc.returncode == 0 and result.get("ok"), (
        f"browser check failed (exit {proc.returncode}): missing labels {result.get('missing')}, "
        f"error {result.get('error')}, at {result.get('url')}; screenshot {SCREENSHOT}\n"
        f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}")
    assert result["labelsFound"] == expected
    assert SCREENSHOT.stat().st_size > 10_000
    # The scheduler's own run of the latest interval shares this world: let it end
    # before the next test points the connections elsewhere.
    airflow.wait_until_idle(timeout=120)

