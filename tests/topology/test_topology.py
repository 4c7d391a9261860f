"""The production topology as local processes: the DAG scored through Celery on two workers, from the installed wheel.

The fixture builds the wheel, installs it into a clean venv with apache-airflow
and the celery and postgres providers (devstack.wheel_venv), and starts
devstack.topology.Topology: PostgreSQL (metadata DB and the ``sensors``
aggregates over ODBC), Redis, Azurite, api-server, scheduler, dag-processor,
triggerer and two Celery workers, with the settings of compose/airflow.env.
A small world (2 devices x 2 sensors) is loaded from the checkout, as a data
team's loaders would; three hourly intervals are backfilled on the local backend.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from devstack.prod_local import load_world
from devstack.topology import DAG_ID, Topology
from devstack.wheel_venv import TOPOLOGY_EXTRAS, build_wheel, install_venv

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

END = dt.datetime(2026, 3, 2, 3)
HOURS = 3
DEVICES, SENSORS = 2, 2


@pytest.fixture(scope="module")
def topology(tmp_path_factory):
    """A running topology, stopped afterwards. Its state (PostgreSQL, logs) in a fresh 0755 temp dir
    (PostgreSQL runs as its own user), removed afterwards; the venv in pytest's tmp (cleaned by pytest)."""
    state = Path(tempfile.mkdtemp(prefix="prod-topology-"))
    state.chmod(0o755)
    t0 = time.monotonic()
    try:
        build = tmp_path_factory.mktemp("topology-venv")
        venv = install_venv(build / "venv", build_wheel(build / "dist"), TOPOLOGY_EXTRAS)
        topo = Topology(state, venv, durable=False)
        topo.timings["wheel+venv"] = round(time.monotonic() - t0, 1)
        with topo:
            topo.timings["total start-up"] = round(time.monotonic() - t0, 1)
            print(f"\ntopology start-up: {topo.timings}")
            yield topo
            t1 = time.monotonic()
        print(f"\ntopology stop: {time.monotonic() - t1:.0f} s")
    finally:
        shutil.rmtree(state, ignore_errors=True)


def test_celery_topology_scores_every_interval_on_both_workers(topology):
    from batch_scoring.config import settings
    from batch_scoring.hooks.blob_storage import BlobStore
    from batch_scoring.scoring.layout import Interval, manifest_blob

    topo = topology
    world = load_world(topo, topo.state_dir / "models", devices=DEVICES, sensors=SENSORS, end=END,
                       scoring_hours=HOURS, reading_seconds=60, seed=11)
    assert world.models == DEVICES * SENSORS
    start = END - dt.timedelta(hours=HOURS)
    t0 = time.monotonic()
    topo.api.set_paused(DAG_ID, True)
    topo.api.create_backfill(DAG_ID, start, END - dt.timedelta(hours=1))
    topo.api.unpause(DAG_ID)
    starts = {start + dt.timedelta(hours=h) for h in range(HOURS)}

    def finished():
        topo.check_alive()
        runs = topo.api.latest_runs(DAG_ID, starts)
        return runs if len(runs) == HOURS and all(r["state"] in ("success", "failed") for r in runs.values()) else None

    from devstack.services import wait_until
    runs = wait_until(finished, 600, 2, lambda: f"backfill not finished: {topo.api.latest_runs(DAG_ID, starts)}")
    print(f"\nbackfill of {HOURS} intervals x {world.models} targets: {time.monotonic() - t0:.0f} s")
    assert {k: r["state"] for k, r in runs.items()} == {k: "success" for k in starts}

    store = BlobStore.from_connection_string(topo.blob_conn_str)
    s = settings()
    hosts: dict[str, list[str]] = {}
    for begin, run in sorted(runs.items()):
        manifest = json.loads(store.download_bytes(s.predictions_container,
                                                   manifest_blob(Interval(begin, begin + dt.timedelta(hours=1)))))
        assert manifest["counts"] == {"ok": DEVICES * SENSORS, "failed": 0, "skipped": 0}, manifest
        assert {e["status"] for e in manifest["targets"].values()} == {"ok"}
        for ti in topo.api.all_task_instances(DAG_ID, run["dag_run_id"]):
            hosts.setdefault(ti["hostname"] or "?", []).append(f"{ti['task_id']}[{ti['map_index']}]")
            assert ti["state"] == "success", ti
    score_hosts = {h for h, tasks in hosts.items() if any(t.startswith("score[") for t in tasks)}
    assert score_hosts == {"worker-1", "worker-2"}, hosts
    for worker in topo.workers:  # each worker's own log shows it received score workloads from the broker
        assert "Executing workload in Celery" in topo.log_tail(worker, 10**7) and "task_id='score'" in topo.log_tail(worker, 10**7), worker
