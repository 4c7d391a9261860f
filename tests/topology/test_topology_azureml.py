"""The production topology on the Azure ML backend: jobs in the local emulator, waits in the triggerer.

One topology for the module (devstack.topology + devstack.topology_aml): the wheel in a clean venv,
PostgreSQL, Redis, Azurite, the Azure ML emulator (code asset staged from the installed package),
api-server, scheduler, dag-processor, triggerer and two Celery workers, with
``BATCH_SCORING_BACKEND=azureml`` and deferrable waits. A small world (2 devices x 2 sensors, one
target per unit) covers ten hourly intervals; each test backfills its own intervals and asserts
that every one ends validated (manifest: all ok), and that the emulator's own ledger holds exactly
one job per (interval, unit, model set), plus only the ``-rN`` resubmissions the test explains.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from devstack.prod_local import load_world
from devstack.services import wait_until
from devstack.topology import DAG_ID, Topology
from devstack.topology_aml import restart_component, start_emulator, stop_component

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

END = dt.datetime(2026, 3, 2, 10)
HOURS = 10
DEVICES, SENSORS = 2, 2
UNITS = DEVICES * SENSORS
# BATCH_SCORING_AZUREML_TIMEOUT_SECONDS: on a loaded 2-core machine a job's command (pandas, scikit-learn
# imports) took over 60 s with four running at once, so the first draft's 60 s timed every job out.
TIMEOUT_S = 900
SETTINGS = {"BATCH_SCORING_AZUREML_POLL_SECONDS": "2", "BATCH_SCORING_AZUREML_TIMEOUT_SECONDS": str(TIMEOUT_S),
            "BATCH_SCORING_RETRY_DELAY_SECONDS": "5"}


def hours(first: int, n: int) -> list[dt.datetime]:
    """Interval starts ``first``..``first+n-1`` hours after the world's scoring period begins."""
    return [END - dt.timedelta(hours=HOURS - first - h) for h in range(n)]


@pytest.fixture(scope="module")
def aml_topology(tmp_path_factory):
    """``(topology, emulator)`` running with the world loaded; stopped (emulator too) afterwards."""
    from devstack.wheel_venv import TOPOLOGY_EXTRAS, build_wheel, install_venv

    state = Path(tempfile.mkdtemp(prefix="prod-topology-aml-"))
    state.chmod(0o755)
    t0 = time.monotonic()
    try:
        build = tmp_path_factory.mktemp("topology-aml-venv")
        venv = install_venv(build / "venv", build_wheel(build / "dist"), TOPOLOGY_EXTRAS)
        topo = Topology(state, venv, durable=False, extra_env=SETTINGS)
        topo.timings["wheel+venv"] = round(time.monotonic() - t0, 1)
        try:
            topo.start_services()
            em = start_emulator(topo, step_seconds=0.3)
            topo.start_airflow()
            topo.timings["total start-up"] = round(time.monotonic() - t0, 1)
            print(f"\ntopology (azureml) start-up: {topo.timings}")
            world = load_world(topo, state / "models", devices=DEVICES, sensors=SENSORS, end=END,
                               scoring_hours=HOURS, reading_seconds=60, seed=13)
            assert world.models == UNITS
            topo.api.set_paused(DAG_ID, True)
            yield topo, em
        finally:
            topo.stop()
    finally:
        shutil.rmtree(state, ignore_errors=True)


def backfill(topo: Topology, starts: list[dt.datetime], timeout: float = 600, during=None) -> dict:
    """Backfill ``starts`` (consecutive hours), unpause, call ``during()`` once, wait until every run ended.

    Waits first until the previous test's backfill is marked completed (the scheduler does that a little
    after its last run ends; until then the API refuses a new one with 409)."""
    wait_until(lambda: all(b.get("completed_at") for b in
                           topo.api._request("GET", f"/api/v2/backfills?dag_id={DAG_ID}")["backfills"]) or None,
               120, 2, lambda: "the previous backfill is not marked completed")
    topo.api.set_paused(DAG_ID, True)
    topo.api.create_backfill(DAG_ID, starts[0], starts[-1])
    topo.api.unpause(DAG_ID)
    if during is not None:
        during()

    def finished():
        topo.check_alive()
        runs = topo.api.latest_runs(DAG_ID, starts)
        return runs if len(runs) == len(starts) and all(r["state"] in ("success", "failed") for r in runs.values()) else None

    return wait_until(finished, timeout, 2, lambda: f"backfill not finished: {topo.api.latest_runs(DAG_ID, starts)}")


def assert_validated(topo: Topology, runs: dict) -> None:
    """Every run succeeded and its manifest counts every target ok."""
    from batch_scoring.config import settings
    from batch_scoring.hooks.blob_storage import BlobStore
    from batch_scoring.scoring.layout import Interval, manifest_blob

    assert {k: r["state"] for k, r in runs.items()} == {k: "success" for k in runs}
    store = BlobStore.from_connection_string(topo.blob_conn_str)
    for begin in runs:
        manifest = json.loads(store.download_bytes(settings().predictions_container,
                                                   manifest_blob(Interval(begin, begin + dt.timedelta(hours=1)))))
        assert manifest["counts"] == {"ok": UNITS, "failed": 0, "skipped": 0}, manifest


def jobs_of(em, starts: list[dt.datetime]) -> dict[tuple, list[dict]]:
    """The emulator ledger's jobs of these intervals, grouped by (interval, unit, model set), in creation order."""
    from batch_scoring.scoring.layout import Interval

    keys = {Interval(s, s + dt.timedelta(hours=1)).key for s in starts}
    groups: dict[tuple, list[dict]] = {}
    for job in em.ledger():
        tags = job["tags"]
        if tags.get("interval") in keys:
            groups.setdefault((tags["interval"], tags["targets"], tags.get("model_sha256") or tags.get("models")), []).append(job)
    return groups


def assert_one_job_each(em, starts: list[dt.datetime], resubmitted: int = 0) -> dict[tuple, list[dict]]:
    """Exactly one job per (interval, unit, model set) plus ``resubmitted`` ``-r1`` jobs after a stopped one."""
    groups = jobs_of(em, starts)
    assert len(groups) == len(starts) * UNITS, sorted(groups)
    extra = {k: [j["name"] for j in v] for k, v in groups.items() if len(v) > 1}
    assert len(extra) == resubmitted, extra
    for key, jobs in groups.items():
        base = jobs[0]["name"]
        assert [j["name"] for j in jobs] == [base] + [f"{base}-r{i}" for i in range(1, len(jobs))], jobs
        assert all(j["status"] in ("Failed", "Canceled") for j in jobs[:-1]) and jobs[-1]["status"] == "Completed", jobs
    return groups


def test_a_backfill_polled_by_the_triggerer(aml_topology):
    topo, em = aml_topology
    starts = hours(0, 3)
    t0 = time.monotonic()
    runs = backfill(topo, starts)
    print(f"\n(a) {len(starts)} intervals x {UNITS} units on azureml: {time.monotonic() - t0:.0f} s")
    assert_validated(topo, runs)
    groups = assert_one_job_each(em, starts)
    fired = trigger_events(topo, runs)
    print(f"(a) jobs: {len(groups)}; trigger events in the triggerer's task logs: {len(fired)}")
    assert sorted(fired.values()) == ["success"] * len(groups), fired
    assert re.search(r"[1-9]\d* triggers currently running", topo.log_tail("triggerer", 10**7))


def trigger_events(topo: Topology, runs: dict) -> dict[str, str]:
    """``{trigger log file: event status}`` of the score tasks' deferrals: the triggerer writes each trigger's
    log beside its task's (``attempt=N.log.trigger.<id>.log``), ending with "Trigger fired event"."""
    out = {}
    for run in runs.values():
        folder = topo.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run['dag_run_id']}" / "task_id=score"
        for path in sorted(folder.glob("map_index=*/attempt=*.log.trigger.*.log")):
            text = path.read_text(errors="replace")
            m = re.search(r"Trigger fired event.*?'status': '(\w+)'", text)
            out[f"{run['dag_run_id']}/{path.relative_to(folder)}"] = m.group(1) if m else "not fired"
    return out


def test_b_triggerer_stopped_while_jobs_are_deferred(aml_topology):
    topo, em = aml_topology
    starts = hours(3, 3)
    stopped: dict[str, float] = {}

    def deferred_count(run_ids):
        return sum(1 for rid in run_ids for ti in topo.api.all_task_instances(DAG_ID, rid)
                   if ti["task_id"] == "score" and ti["state"] == "deferred")

    def stop_then_restart():
        stopped["stop"] = stop_component(topo, "triggerer", signal.SIGTERM)
        t_stop = time.monotonic()

        def ten_deferred():
            runs = topo.api.latest_runs(DAG_ID, starts)
            n = deferred_count([r["dag_run_id"] for r in runs.values()])
            stopped["deferred"] = max(stopped.get("deferred", 0), n)
            return n if n >= 10 else None

        wait_until(ten_deferred, 300, 2, lambda: f"only {stopped.get('deferred')} score tasks deferred")
        time.sleep(max(0.0, 30 - (time.monotonic() - t_stop)))  # down >= 30 s: past its health threshold
        stopped["down"] = time.monotonic() - t_stop
        restart_component(topo, "triggerer")
        stopped["restarted"] = time.monotonic()

    t0 = time.monotonic()
    runs = backfill(topo, starts, during=stop_then_restart)
    resumed = time.monotonic() - stopped["restarted"]
    print(f"\n(b) triggerer down {stopped['down']:.0f} s with {stopped['deferred']} score tasks deferred; "
          f"all runs done {resumed:.0f} s after its restart; total {time.monotonic() - t0:.0f} s")
    assert stopped["deferred"] >= 10
    assert_validated(topo, runs)
    groups = assert_one_job_each(em, starts)
    fired = trigger_events(topo, runs)
    assert sorted(fired.values()) == ["success"] * len(groups), fired
    print(f"(b) jobs: {len(groups)}, duplicates: 0; trigger events: {len(fired)}")


def test_c_throttled_then_recovered(aml_topology):
    topo, em = aml_topology
    starts = hours(6, 2)
    em.fault(kind="http", status=429, count=15, retry_after=2)
    em.fault(kind="http", status=503, count=15, retry_after=1)
    t0 = time.monotonic()
    runs = backfill(topo, starts)
    throttled = [r for r in em.requests() if r[2] in (429, 503)]
    print(f"\n(c) {len(throttled)} requests answered 429/503; {len(starts)} intervals done in {time.monotonic() - t0:.0f} s")
    assert len(throttled) == 30
    assert_validated(topo, runs)
    assert_one_job_each(em, starts)


@pytest.mark.skip(reason="needs a topology with a short BATCH_SCORING_AZUREML_TIMEOUT_SECONDS (jobs here take "
                         "over 60 s under load, so the module's is 900 s); not run yet in the topology")
def test_d_job_stuck_queued_times_out_is_cancelled_and_retried(aml_topology):
    from batch_scoring.scoring.layout import Interval

    topo, em = aml_topology
    starts = hours(8, 1)
    key = Interval(starts[0], starts[0] + dt.timedelta(hours=1)).key
    em.fault(kind="job", stay="Queued", name=key.lower())  # the first of this interval's jobs
    t0 = time.monotonic()
    runs = backfill(topo, starts)
    print(f"\n(d) interval with a job stuck Queued done in {time.monotonic() - t0:.0f} s (timeout {TIMEOUT_S} s)")
    assert_validated(topo, runs)
    groups = assert_one_job_each(em, starts, resubmitted=1)
    [(stuck, retry)] = [v for v in groups.values() if len(v) > 1]
    assert stuck["status"] == "Canceled" and retry["name"] == stuck["name"] + "-r1"
    cancels = [r for r in em.requests() if r[0] == "POST" and r[1].endswith(f"/jobs/{stuck['name']}/cancel")]
    assert cancels and cancels[0][2] == 202, cancels
    tis = [ti for ti in topo.api.all_task_instances(DAG_ID, runs[starts[0]]["dag_run_id"]) if ti["task_id"] == "score"]
    retried = [ti for ti in tis if ti["try_number"] > 1]
    assert len(retried) == 1 and retried[0]["state"] == "success", tis
    log = task_log(topo, runs[starts[0]]["dag_run_id"], "score", retried[0]["map_index"], 1)
    assert stuck["name"] in log and key in log, log[-3000:]
    print(f"(d) {stuck['name']} Canceled after {TIMEOUT_S} s, {retry['name']} Completed")


def task_log(topo: Topology, run_id: str, task_id: str, map_index: int, try_number: int) -> str:
    """The text of one try's log through the REST API."""
    from urllib.parse import quote

    body = topo.api._request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id)}/taskInstances/{task_id}/logs/"
                                    f"{try_number}?map_index={map_index}&full_content=true")
    return json.dumps(body)
