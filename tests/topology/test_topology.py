"""The production topology as local processes: the DAG scored through Celery on two workers, from the installed wheel.

The topology (tests/topology/conftest.py) runs the wheel in a clean venv with PostgreSQL, Redis, Azurite,
api-server, scheduler, dag-processor, triggerer and two Celery workers; this test backfills its three hourly
intervals on the local backend and checks that both workers scored.
"""
from __future__ import annotations

import time

import pytest

from devstack.topology import DAG_ID
from tests.topology.backfills import assert_validated, backfill
from tests.topology.conftest import TARGETS, slot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def test_celery_topology_scores_every_interval_on_both_workers(topology):
    topo = topology.topo
    starts = slot("celery")
    t0 = time.monotonic()
    runs = backfill(topo, starts)
    print(f"\nbackfill of {len(starts)} intervals x {TARGETS} targets: {time.monotonic() - t0:.0f} s")
    assert_validated(topo, runs, TARGETS)
    hosts: dict[str, list[str]] = {}
    for run in runs.values():
        for ti in topo.api.all_task_instances(DAG_ID, run["dag_run_id"]):
            hosts.setdefault(ti["hostname"] or "?", []).append(f"{ti['task_id']}[{ti['map_index']}]")
    score_hosts = {h for h, tasks in hosts.items() if any(t.startswith("score[") for t in tasks)}
    assert score_hosts == {"worker-1", "worker-2"}, hosts
    for worker in topo.workers:  # each worker's own log shows it received score workloads from the broker
        log = topo.log_tail(worker, 10**7)
        assert "Executing workload in Celery" in log and "task_id='score'" in log, worker
