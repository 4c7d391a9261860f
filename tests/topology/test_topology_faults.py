"""Faults in the production topology: processes of the Celery topology killed or restarted mid-run.

One topology (devstack.topology.Topology, the installed wheel, PostgreSQL,
Redis, Azurite, api-server, scheduler, dag-processor, triggerer, two Celery
workers) is shared by the module. A world of 2 devices x 2 sensors is loaded
and :data:`HOURS` hourly intervals are scored once, undisturbed: the
reference bytes. Each fault case then deletes the predictions of its own two
intervals, backfills them again (``reprocess_behavior completed``), breaks a
process while a score task runs, and asserts: the backfill's runs succeed,
every task instance ends ``success``, each interval's ``_manifest.json``
counts all four targets ok, and every prediction, receipt and manifest is
byte-identical to the reference. Each case prints its figures (recovery time,
tries per task) for RELIABILITY.md's "Production topology" section.

Backends: cases take the backend as a parameter (``BACKENDS``); the Azure ML
emulator adds ``azureml`` there once it is wired into the topology.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from devstack.prod_local import load_world
from devstack.services import wait_until
from devstack.topology import DAG_ID, Topology
from devstack.wheel_venv import TOPOLOGY_EXTRAS, build_wheel, install_venv

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

END = dt.datetime(2026, 3, 2, 8)
HOURS = 8  # two intervals per case, four cases
DEVICES, SENSORS = 2, 2
TARGETS = DEVICES * SENSORS
BACKENDS = ["local"]  # + "azureml" when the emulator joins the topology
FIGURES: dict[str, dict] = {}


def interval_starts(first: int, n: int = 2) -> list[dt.datetime]:
    """The starts of ``n`` hourly intervals from the ``first``-th of the world's scoring period."""
    start = END - dt.timedelta(hours=HOURS)
    return [start + dt.timedelta(hours=first + i) for i in range(n)]


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


def backfill(topo: Topology, starts: list[dt.datetime], backend: str = "local") -> dict:
    """Backfill the intervals starting at ``starts`` (reprocessing completed ones) on ``backend`` (the runs'
    ``backend`` param); returns the backfill."""
    body = {"dag_id": DAG_ID, "from_date": f"{min(starts):%Y-%m-%dT%H:%M:%SZ}", "to_date": f"{max(starts):%Y-%m-%dT%H:%M:%SZ}",
            "reprocess_behavior": "completed", "max_active_runs": 4, "dag_run_conf": {"backend": backend}}
    return topo.api._request("POST", "/api/v2/backfills", body)


def wait_backfill(topo: Topology, backfill_id, starts, timeout: float) -> dict:
    """Until the backfill is completed; returns the newest run of each interval."""
    def done():
        try:
            b = topo.api._request("GET", f"/api/v2/backfills/{backfill_id}")
        except OSError:  # the api-server is restarting (a fault case); ask again
            return None
        return True if b.get("completed_at") else None

    wait_until(done, timeout, 1, lambda: f"backfill {backfill_id} not completed after {timeout:.0f}s: "
               f"{ {str(k): r['state'] for k, r in topo.api.latest_runs(DAG_ID, starts).items()} }")
    return topo.api.latest_runs(DAG_ID, starts)


def running_score_tis(topo: Topology, runs: list[str], hostname: str | None = None) -> list[dict]:
    """The score task instances of ``runs`` now running (on ``hostname`` if given)."""
    out = []
    for run_id in runs:
        for ti in topo.api.all_task_instances(DAG_ID, run_id):
            if ti["task_id"] == "score" and ti["state"] == "running" and hostname in (None, ti["hostname"]):
                out.append(ti)
    return out


def case_run_ids(topo: Topology, starts, since: float) -> list[str]:
    """Run ids of the intervals' newest runs (the backfill's, once it has taken them over)."""
    return [r["dag_run_id"] for r in topo.api.latest_runs(DAG_ID, starts).values()]


def wait_for_running_score(topo: Topology, starts, hostname: str | None = None, timeout: float = 300) -> list[dict]:
    """Poll until a score task of the intervals runs (on ``hostname``); returns those running."""
    return wait_until(lambda: running_score_tis(topo, case_run_ids(topo, starts, 0), hostname) or None, timeout, 0.2,
                      lambda: f"no score task running on {hostname or 'any worker'} within {timeout:.0f}s")


def tries(topo: Topology, run_id: str, ti: dict) -> list[dict]:
    """Every try of one task instance (state, hostname, try_number), oldest first."""
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id)}/taskInstances/{ti['task_id']}/{ti['map_index']}/tries"
    return topo.api._request("GET", path)["task_instances"]


def check_case(topo: Topology, reference, starts, runs, since: dt.datetime) -> dict:
    """Assert every run succeeded, every task instance ended success, each manifest counts all targets ok
    and the interval's blobs equal the reference; returns the figures (tries after ``since``, per state)."""
    assert {k: r["state"] for k, r in runs.items()} == {k: "success" for k in starts}, runs
    figures = {"intervals": len(starts), "targets": TARGETS * len(starts), "task instances": 0,
               "retries": 0, "failed tries": []}
    for begin in starts:
        blobs = interval_blobs(topo, begin)
        manifest = json.loads(next(v for k, v in blobs.items() if k.endswith("_manifest.json")))
        assert manifest["counts"] == {"ok": TARGETS, "failed": 0, "skipped": 0}, manifest
        assert set(blobs) == set(reference[begin]), (sorted(blobs), sorted(reference[begin]))
        assert [n for n in blobs if blobs[n] != reference[begin][n]] == [], "bytes differ from the undisturbed run"
        run_id = runs[begin]["dag_run_id"]
        for ti in topo.api.all_task_instances(DAG_ID, run_id):
            assert ti["state"] == "success", ti
            figures["task instances"] += 1
            mine = [t for t in tries(topo, run_id, ti) if t.get("start_date") and dt.datetime.fromisoformat(t["start_date"]) >= since]
            figures["retries"] += max(0, len(mine) - 1)
            figures["failed tries"] += [f"{ti['task_id']}[{ti['map_index']}] try {t['try_number']} on {t['hostname']}: "
                                        f"{t['state']}" for t in mine if t["state"] != "success"]
    return figures


@pytest.fixture(scope="module")
def topology(tmp_path_factory):
    """A running topology with the world loaded and the reference run of every interval done:
    ``(topo, reference)``, reference = ``{interval start: {blob name: bytes}}``."""
    state = Path(tempfile.mkdtemp(prefix="prod-faults-"))
    state.chmod(0o755)
    t0 = time.monotonic()
    try:
        build = tmp_path_factory.mktemp("faults-venv")
        venv = install_venv(build / "venv", build_wheel(build / "dist"), TOPOLOGY_EXTRAS)
        with Topology(state, venv, durable=False) as topo:
            print(f"\ntopology up in {time.monotonic() - t0:.0f} s: {topo.timings}")
            load_world(topo, state / "models", devices=DEVICES, sensors=SENSORS, end=END, scoring_hours=HOURS,
                       reading_seconds=60, seed=13)
            starts = interval_starts(0, HOURS)
            topo.api.set_paused(DAG_ID, True)
            t1 = time.monotonic()
            b = backfill(topo, starts)
            topo.api.unpause(DAG_ID)
            runs = wait_backfill(topo, b["id"], starts, 900)
            assert {k: r["state"] for k, r in runs.items()} == {k: "success" for k in starts}, runs
            reference = {begin: interval_blobs(topo, begin) for begin in starts}
            durations = [ti["duration"] for r in runs.values() for ti in topo.api.all_task_instances(DAG_ID, r["dag_run_id"])
                         if ti["task_id"] == "score"]
            print(f"\nreference run: {HOURS} intervals x {TARGETS} targets in {time.monotonic() - t1:.0f} s; "
                  f"score task durations {min(durations):.1f}..{max(durations):.1f} s")
            yield topo, reference
        print("\nfigures:\n" + json.dumps(FIGURES, indent=1, default=str))
    finally:
        shutil.rmtree(state, ignore_errors=True)


def run_with_fault(topology, name: str, first: int, fault, backend: str, timeout: float = 900) -> dict:
    """Delete the intervals' outputs, backfill them, run ``fault(topo, starts) -> restart time or None``
    once the backfill runs, wait, check; returns (and records) the case's figures."""
    topo, reference = topology
    starts = interval_starts(first)
    for begin in starts:
        assert delete_interval(topo, begin) > 0
    since = dt.datetime.now(dt.timezone.utc)
    b = backfill(topo, starts, backend)
    restarted = fault(topo, starts)
    runs = wait_backfill(topo, b["id"], starts, timeout)
    finished = max(dt.datetime.fromisoformat(r["end_date"]) for r in runs.values())
    figures = check_case(topo, reference, starts, runs, since)
    if restarted is not None:
        figures["recovery s"] = round(finished.timestamp() - restarted, 1)
    FIGURES[name] = figures
    print(f"\n{name}: {json.dumps(figures, default=str)}")
    return figures


def wall_clock(monotonic: float) -> float:
    """A ``time.monotonic()`` instant as a Unix timestamp."""
    return time.time() - (time.monotonic() - monotonic)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_one_worker_mid_score_then_a_replacement_worker(topology, backend):
    def fault(topo, starts):
        victim = "worker-1"
        wait_for_running_score(topo, starts, hostname=victim)
        topo.kill(victim, signal.SIGKILL)
        topo.procs[victim].wait(30)
        restarted = time.monotonic()
        topo.start_worker(victim)
        return wall_clock(restarted)

    figures = run_with_fault(topology, f"SIGKILL worker-1 mid-score [{backend}]", 0, fault, backend)
    assert any("worker-1" in f for f in figures["failed tries"]), figures  # the killed try is on record


@pytest.mark.parametrize("backend", BACKENDS)
def test_scheduler_and_api_server_restarted_mid_run(topology, backend):
    def fault(topo, starts):
        wait_for_running_score(topo, starts)
        restarted = topo.restart(["scheduler", "api-server"])
        topo.wait_healthy()
        return wall_clock(restarted)

    run_with_fault(topology, f"restart scheduler + api-server [{backend}]", 2, fault, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scheduler_killed_with_its_workers_and_task_processes(topology, backend):
    def fault(topo, starts):
        wait_for_running_score(topo, starts)
        restarted = topo.restart(["scheduler", *topo.workers], sig=signal.SIGKILL, grace=0)
        return wall_clock(restarted)

    run_with_fault(topology, f"SIGKILL scheduler + both workers [{backend}]", 4, fault, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_redis_restarted_mid_run(topology, backend):
    def fault(topo, starts):
        wait_for_running_score(topo, starts)
        restarted = topo.restart(["redis"])
        return wall_clock(restarted)

    run_with_fault(topology, f"restart Redis [{backend}]", 6, fault, backend)


RECOVERY_SETTINGS = ["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT",
                     "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL",
                     "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL", "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD",
                     "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT", "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT",
                     "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD"]


def test_recovery_settings_are_airflow_options_and_in_effect(topology):
    """compose/airflow.env's recovery settings are options Airflow (and the celery provider) know, and the
    topology's processes read the file's values (``airflow config get-value`` fails on an unknown option)."""
    import subprocess

    topo, _ = topology
    for key in RECOVERY_SETTINGS:
        assert key in topo.shared, key
        section, option = key.removeprefix("AIRFLOW__").lower().split("__")
        res = subprocess.run([str(topo.venv / "bin" / "airflow"), "config", "get-value", section, option],
                             env=topo.airflow_env(), capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, (key, res.stderr[-500:])
        assert res.stdout.strip().splitlines()[-1] in (topo.shared[key], f"{topo.shared[key]}.0"), (key, res.stdout)
