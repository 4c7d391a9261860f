"""Faults in the production topology: processes of the Celery topology killed or restarted mid-run.

The session's topology (tests/topology/conftest.py) scores this module's :data:`SLOTS` ``faults`` intervals
(2 devices x 2 sensors) once, undisturbed, on the local backend: the reference bytes. Each local case then
deletes the predictions of its own two intervals, backfills them again (``reprocess_behavior completed``),
breaks a process while a score task runs, and asserts: the backfill's runs succeed, every task instance ends
``success``, each interval's ``_manifest.json`` counts all four targets ok, and every prediction, receipt and
manifest is byte-identical to the reference. The Azure ML case kills a worker while its submission is in
flight and counts the jobs in the emulator's ledger. Each case prints its figures (recovery time, tries per
task) for RELIABILITY.md's "Production topology" section.
"""
from __future__ import annotations

import datetime as dt
import json
import signal
import time

import pytest

from devstack.topology import DAG_ID, Topology
from tests.topology.backfills import (assert_one_job_each, assert_validated, backfill, tries,
                                      wait_for_running_score)
from tests.topology.conftest import TARGETS, slot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

FIGURES: dict[str, dict] = {}


def interval_starts(first: int, n: int = 2) -> list[dt.datetime]:
    """The starts of ``n`` hourly intervals from the ``first``-th of this module's reference intervals."""
    return slot("faults")[first:first + n]


def interval_blobs(topo: Topology, begin: dt.datetime) -> dict[str, bytes]:
    """Every blob under the interval's predictions prefix, by name (the HTML report and heatmap excepted:
    they are views of the manifest)."""
    from batch_scoring.config import settings
    from batch_scoring.hooks.blob_storage import BlobStore
    from batch_scoring.scoring.layout import Interval, interval_prefix

    store = BlobStore.from_connection_string(topo.blob_conn_str)
    container = settings().predictions_container
    names = [n for n in store.list_names(container, interval_prefix(Interval(begin, begin + dt.timedelta(hours=1))))
             if not n.endswith((".html", ".png", ".svg"))]
    return {n: store.download_bytes(container, n) for n in names}


def delete_interval(topo: Topology, begin: dt.datetime) -> int:
    """Delete the interval's predictions, receipts and manifest, so only the faulted run can write them back."""
    from batch_scoring.config import settings
    from batch_scoring.hooks.blob_storage import BlobStore

    store = BlobStore.from_connection_string(topo.blob_conn_str)
    names = list(interval_blobs(topo, begin))
    for name in names:
        store.delete(settings().predictions_container, name)
    return len(names)


def check_case(topo: Topology, reference, starts, runs, since: dt.datetime) -> dict:
    """Assert every run validated and the interval's blobs equal the reference; returns the figures (tries
    after ``since``, per state)."""
    assert_validated(topo, runs, TARGETS)
    figures = {"intervals": len(starts), "targets": TARGETS * len(starts), "task instances": 0,
               "retries": 0, "failed tries": []}
    for begin in starts:
        blobs = interval_blobs(topo, begin)
        assert set(blobs) == set(reference[begin]), (sorted(blobs), sorted(reference[begin]))
        assert [n for n in blobs if blobs[n] != reference[begin][n]] == [], "bytes differ from the undisturbed run"
        add_tries(figures, topo, runs[begin]["dag_run_id"], since)
    return figures


def add_tries(figures: dict, topo: Topology, run_id: str, since: dt.datetime) -> None:
    """Add the run's task instances, retries and failed tries (those started after ``since``) to ``figures``."""
    for ti in topo.api.all_task_instances(DAG_ID, run_id):
        figures["task instances"] += 1
        mine = [t for t in tries(topo, run_id, ti)
                if t.get("start_date") and dt.datetime.fromisoformat(t["start_date"]) >= since]
        figures["retries"] += max(0, len(mine) - 1)
        figures["failed tries"] += [f"{ti['task_id']}[{ti['map_index']}] try {t['try_number']} on {t['hostname']}: "
                                    f"{t['state']}" for t in mine if t["state"] != "success"]


@pytest.fixture(scope="module")
def reference(topology):
    """``{interval start: {blob name: bytes}}`` of this module's intervals, scored once undisturbed."""
    topo = topology.topo
    starts = slot("faults")
    t0 = time.monotonic()
    runs = backfill(topo, starts)
    assert_validated(topo, runs, TARGETS)
    durations = [ti["duration"] for r in runs.values() for ti in topo.api.all_task_instances(DAG_ID, r["dag_run_id"])
                 if ti["task_id"] == "score"]
    print(f"\nreference run: {len(starts)} intervals x {TARGETS} targets in {time.monotonic() - t0:.0f} s; "
          f"score task durations {min(durations):.1f}..{max(durations):.1f} s")
    yield {begin: interval_blobs(topo, begin) for begin in starts}
    print("\nfigures:\n" + json.dumps(FIGURES, indent=1, default=str))


def run_with_fault(topology, reference, name: str, first: int, fault, timeout: float = 900) -> dict:
    """Delete the intervals' outputs, backfill them, run ``fault(topo, starts) -> restart time or None``
    once the backfill exists, wait, check; returns (and records) the case's figures."""
    topo = topology.topo
    starts = interval_starts(first)
    for begin in starts:
        assert delete_interval(topo, begin) > 0
    since = dt.datetime.now(dt.timezone.utc)
    restarted = []
    runs = backfill(topo, starts, during=lambda: restarted.append(fault(topo, starts)), timeout=timeout)
    finished = max(dt.datetime.fromisoformat(r["end_date"]) for r in runs.values())
    figures = check_case(topo, reference, starts, runs, since)
    if restarted[0] is not None:
        figures["recovery s"] = round(finished.timestamp() - restarted[0], 1)
    FIGURES[name] = figures
    print(f"\n{name}: {json.dumps(figures, default=str)}")
    return figures


def wall_clock(monotonic: float) -> float:
    """A ``time.monotonic()`` instant as a Unix timestamp."""
    return time.time() - (time.monotonic() - monotonic)


def test_sigkill_one_worker_mid_score_then_a_replacement_worker(topology, reference):
    def fault(topo, starts):
        victim = "worker-1"
        wait_for_running_score(topo, starts, hostname=victim)
        topo.kill(victim, signal.SIGKILL)
        topo.procs[victim].wait(30)
        restarted = time.monotonic()
        topo.start_worker(victim)
        return wall_clock(restarted)

    figures = run_with_fault(topology, reference, "SIGKILL worker-1 mid-score [local]", 0, fault)
    assert any("worker-1" in f for f in figures["failed tries"]), figures  # the killed try is on record


def test_scheduler_and_api_server_restarted_mid_run(topology, reference):
    def fault(topo, starts):
        wait_for_running_score(topo, starts)
        restarted = topo.restart(["scheduler", "api-server"])
        topo.wait_healthy()
        return wall_clock(restarted)

    run_with_fault(topology, reference, "restart scheduler + api-server [local]", 2, fault)


def test_scheduler_killed_with_its_workers_and_task_processes(topology, reference):
    def fault(topo, starts):
        wait_for_running_score(topo, starts)
        restarted = topo.restart(["scheduler", *topo.workers], sig=signal.SIGKILL, grace=0)
        return wall_clock(restarted)

    run_with_fault(topology, reference, "SIGKILL scheduler + both workers [local]", 4, fault)


def test_redis_restarted_mid_run(topology, reference):
    def fault(topo, starts):
        wait_for_running_score(topo, starts)
        restarted = topo.restart(["redis"])
        return wall_clock(restarted)

    run_with_fault(topology, reference, "restart Redis [local]", 6, fault)


def test_sigkill_one_worker_while_its_azureml_submission_is_in_flight(topology):
    """Azure ML backend: every job PUT of the two intervals is served at once but answered 20 s late, and
    worker-1 is killed 3 s into a score task of its own, so a job exists that no Airflow try knows of. The
    retry must re-attach to it: exactly one job per (interval, unit, model set) in the emulator's ledger."""
    from batch_scoring.scoring.layout import Interval

    topo, em = topology.topo, topology.em
    starts = slot("faults-azureml")
    for begin in starts:
        em.fault(kind="http", delay=20, method="PUT", count=TARGETS,
                 path=Interval(begin, begin + dt.timedelta(hours=1)).key.lower())
    since = dt.datetime.now(dt.timezone.utc)
    killed = {}

    def fault():
        victim = "worker-1"
        [ti, *_] = wait_for_running_score(topo, starts, hostname=victim)
        time.sleep(3)
        topo.kill(victim, signal.SIGKILL)
        topo.procs[victim].wait(30)
        killed.update(ti=ti, at=time.time())
        topo.start_worker(victim)

    runs = backfill(topo, starts, backend="azureml", during=fault)
    assert_validated(topo, runs, TARGETS)
    groups = assert_one_job_each(em, starts, TARGETS)
    figures = {"intervals": len(starts), "targets": TARGETS * len(starts), "jobs": len(groups), "duplicates": 0,
               "task instances": 0, "retries": 0, "failed tries": []}
    for run in runs.values():
        add_tries(figures, topo, run["dag_run_id"], since)
    finished = max(dt.datetime.fromisoformat(r["end_date"]) for r in runs.values())
    figures["recovery s"] = round(finished.timestamp() - killed["at"], 1)
    FIGURES["SIGKILL worker-1 mid-submit [azureml]"] = figures
    print(f"\nSIGKILL worker-1 mid-submit [azureml]: {json.dumps(figures, default=str)}")
    assert any("worker-1" in f for f in figures["failed tries"]), figures  # the killed try is on record
    puts = [r for r in em.requests() if r[0] == "PUT" and any(
        Interval(b, b + dt.timedelta(hours=1)).key.lower() in r[1] for b in starts) and "/jobs/" in r[1]]
    assert len(puts) == len(groups), puts  # the retry found the job and did not submit it again


RECOVERY_SETTINGS = ["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT",
                     "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL",
                     "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL", "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD",
                     "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT", "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL",
                     "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT",
                     "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD"]


def test_recovery_settings_are_airflow_options_and_in_effect(topology):
    """compose/airflow.env's recovery settings are options Airflow (and the celery provider) know, and the
    topology's processes read the file's values (``airflow config get-value`` fails on an unknown option)."""
    import subprocess

    topo = topology.topo
    for key in RECOVERY_SETTINGS:
        assert key in topo.shared, key
        section, option = key.removeprefix("AIRFLOW__").lower().split("__")
        res = subprocess.run([str(topo.venv / "bin" / "airflow"), "config", "get-value", section, option],
                             env=topo.airflow_env(), capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, (key, res.stderr[-500:])
        assert res.stdout.strip().splitlines()[-1] in (topo.shared[key], f"{topo.shared[key]}.0"), (key, res.stdout)
