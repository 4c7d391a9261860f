"""The production topology on the Azure ML backend: jobs in the local emulator, waits in the triggerer.

The session's topology (tests/topology/conftest.py) includes the Azure ML emulator (its code asset staged from
the installed package); these runs ask for ``backend: azureml`` and wait deferred, so job polling happens in the
separate triggerer process. Each test backfills its own intervals (2 devices x 2 sensors, one target per unit:
four jobs per interval) and asserts that every one ends validated (manifest: all ok) and that the emulator's
own ledger holds exactly one job per (interval, unit, model set), plus only the ``-rN`` resubmissions the test
explains.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import signal
import time

import pytest

from devstack.services import wait_until
from devstack.topology import DAG_ID, Topology
from tests.topology.backfills import assert_one_job_each, assert_validated, backfill
from tests.topology.conftest import TARGETS, slot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

UNITS = TARGETS  # one target per unit
#: the stuck-Queued case's job timeout, seconds: the workers run with it for that test only.
QUEUED_TIMEOUT_S = 60


def test_a_backfill_polled_by_the_triggerer(topology):
    topo, em = topology.topo, topology.em
    starts = slot("aml-backfill")
    t0 = time.monotonic()
    runs = backfill(topo, starts, "azureml")
    print(f"\n(a) {len(starts)} intervals x {UNITS} units on azureml: {time.monotonic() - t0:.0f} s")
    assert_validated(topo, runs, UNITS)
    groups = assert_one_job_each(em, starts, UNITS)
    print(f"(a) job run times (ledger, created to ended): {job_seconds(groups)}")
    fired = trigger_events(topo, runs)
    print(f"(a) jobs: {len(groups)}; trigger events in the triggerer's task logs: {len(fired)}")
    # Each event is read from a log the triggerer wrote under its own job id (``.log.trigger.<id>.log``): the
    # waits ran there, not in a worker. (Its once-a-minute "N triggers currently running" line is no proof:
    # jobs of 16-50 s can start and end between two of them, as one CI run showed.)
    assert sorted(fired.values()) == ["success"] * len(groups), fired


def trigger_logs(topo: Topology, runs: dict) -> dict[str, list[str]]:
    """``{"<run id>/map_index=N/attempt=K": [text of each trigger log]}`` of the runs' score tasks. The
    triggerer writes a deferral's log beside its task's, named for the triggerer that ran it
    (``attempt=K.log.trigger.<triggerer job id>.log``): a trigger resumed by a restarted triggerer has two."""
    out: dict[str, list[str]] = {}
    for run in runs.values():
        folder = topo.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run['dag_run_id']}" / "task_id=score"
        for path in sorted(folder.glob("map_index=*/attempt=*.log.trigger.*.log")):
            attempt = path.name.split(".log.trigger.")[0]
            out.setdefault(f"{run['dag_run_id']}/{path.parent.name}/{attempt}", []).append(
                path.read_text(errors="replace"))
    return out


FIRED = r"Trigger fired event.*?'status': '(\w+)'"  # the triggerer's line for an event a trigger yielded


def trigger_events(topo: Topology, runs: dict) -> dict[str, str]:
    """``{task try: status of the event its trigger fired}`` ("not fired" if none of its logs says
    "Trigger fired event")."""
    out = {}
    for key, texts in trigger_logs(topo, runs).items():
        fired = [m.group(1) for t in texts for m in [re.search(FIRED, t)] if m]
        out[key] = fired[0] if len(fired) == 1 else f"fired {len(fired)} times" if fired else "not fired"
    return out


def trigger_deadlines(topo: Topology, runs: dict) -> dict[str, list[str]]:
    """``{task try: [the deadline its trigger logged at each start]}``."""
    return {key: [d for t in texts for d in re.findall(r"deadline (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", t)]
            for key, texts in trigger_logs(topo, runs).items()}


def test_b_triggerer_stopped_while_jobs_are_deferred(topology):
    topo, em = topology.topo, topology.em
    starts = slot("aml-triggerer")
    stopped: dict[str, float] = {}

    def deferred_count(run_ids):
        return sum(1 for rid in run_ids for ti in topo.api.all_task_instances(DAG_ID, rid)
                   if ti["task_id"] == "score" and ti["state"] == "deferred")

    def stop_then_restart():
        def ten_deferred():
            runs = topo.api.latest_runs(DAG_ID, starts)
            n = deferred_count([r["dag_run_id"] for r in runs.values()])
            stopped["deferred"] = max(stopped.get("deferred", 0), n)
            return n if n >= 10 else None

        # ten waits handed to the running triggerer (twelve jobs on four emulated nodes: most are still
        # Queued or Running), then the triggerer is stopped, kept down past its health threshold, restarted
        wait_until(ten_deferred, 300, 0.5, lambda: f"only {stopped.get('deferred')} score tasks deferred")
        stopped["stop"] = topo.stop_component("triggerer", signal.SIGTERM)
        t_stop = time.monotonic()
        runs = topo.api.latest_runs(DAG_ID, starts)
        stopped["deferred while down"] = deferred_count([r["dag_run_id"] for r in runs.values()])
        time.sleep(30)  # down >= 30 s: past [triggerer] triggerer_health_check_threshold
        stopped["down"] = time.monotonic() - t_stop
        topo.start_component("triggerer")
        stopped["restarted"] = time.monotonic()

    t0 = time.monotonic()
    runs = backfill(topo, starts, "azureml", during=stop_then_restart)
    after = time.monotonic() - stopped["restarted"]
    print(f"\n(b) triggerer stopped with {stopped['deferred']} score tasks deferred, down {stopped['down']:.0f} s "
          f"with {stopped['deferred while down']} still deferred; all runs done {after:.0f} s after its restart; "
          f"total {time.monotonic() - t0:.0f} s")
    assert stopped["deferred"] >= 10 and stopped["deferred while down"] >= 5, stopped
    assert_validated(topo, runs, UNITS)
    groups = assert_one_job_each(em, starts, UNITS)
    # Each trigger fired success, once per triggerer that ran it: Airflow's deferring guide says "you must
    # assume that duplicates of your trigger instance may run", and a trigger the old triggerer fired just
    # before SIGTERM, its event not yet stored, is run and fired again by the new one (seen in CI on
    # 2026-12-01). The task still resumed once: one job each, every unit validated (above).
    fired = {key: [re.findall(FIRED, text) for text in texts] for key, texts in trigger_logs(topo, runs).items()}
    assert len(fired) == len(groups), fired
    assert all(1 <= sum(map(len, logs)) and all(len(one) <= 1 for one in logs) for logs in fired.values()), fired
    assert {status for logs in fired.values() for one in logs for status in one} == {"success"}, fired
    twice = sorted(key for key, logs in fired.items() if sum(map(len, logs)) > 1)
    # Each trigger logs its deadline when it starts: the one the restarted triggerer resumed logs it twice,
    # and the same (the operator fixed it at submission; a restart does not extend it).
    deadlines = trigger_deadlines(topo, runs)
    resumed = {f: d for f, d in deadlines.items() if len(d) > 1}
    # (a wait deferred just before the stop may not have reached the old triggerer yet: it starts once)
    assert len(resumed) >= max(1, stopped["deferred while down"] // 2), deadlines
    assert all(len(set(d)) == 1 for d in deadlines.values()), deadlines
    print(f"(b) jobs: {len(groups)}, duplicates: 0; triggers that fired: {len(fired)} "
          f"(on both triggerers: {len(twice)}{': ' + ', '.join(twice) if twice else ''}); "
          f"triggers resumed by the new triggerer with their original deadline: {len(resumed)}")


def test_c_throttled_then_recovered(topology):
    topo, em = topology.topo, topology.em
    starts = slot("aml-throttled")
    before = len([r for r in em.requests() if r[2] in (429, 503)])
    em.fault(kind="http", status=429, count=15, retry_after=2)
    em.fault(kind="http", status=503, count=15, retry_after=1)
    t0 = time.monotonic()
    runs = backfill(topo, starts, "azureml")
    throttled = [r for r in em.requests() if r[2] in (429, 503)][before:]
    print(f"\n(c) {len(throttled)} requests answered 429/503; {len(starts)} intervals done in {time.monotonic() - t0:.0f} s")
    assert len(throttled) == 30
    assert_validated(topo, runs, UNITS)
    assert_one_job_each(em, starts, UNITS)


def test_d_job_stuck_queued_times_out_is_cancelled_and_retried(topology):
    from batch_scoring.scoring.layout import Interval

    topo, em = topology.topo, topology.em
    starts = slot("aml-queued")
    key = Interval(starts[0], starts[0] + dt.timedelta(hours=1)).key
    em.fault(kind="job", stay="Queued", name=key.lower())  # the first of this interval's jobs
    # The job timeout is a setting the task reads where it runs: restart the workers with a short one (the
    # session's 900 s leaves room for slow healthy jobs) and give them the session's back afterwards.
    topo.extra_env["BATCH_SCORING_AZUREML_TIMEOUT_SECONDS"] = str(QUEUED_TIMEOUT_S)
    topo.restart(topo.workers)
    try:
        t0 = time.monotonic()
        runs = backfill(topo, starts, "azureml")
        print(f"\n(d) interval with a job stuck Queued done in {time.monotonic() - t0:.0f} s (timeout {QUEUED_TIMEOUT_S} s)")
    finally:
        del topo.extra_env["BATCH_SCORING_AZUREML_TIMEOUT_SECONDS"]
        topo.restart(topo.workers)
    assert_validated(topo, runs, UNITS)
    groups = assert_one_job_each(em, starts, UNITS, resubmitted=1)
    [(stuck, retry)] = [v for v in groups.values() if len(v) > 1]
    assert stuck["status"] == "Canceled" and retry["name"] == stuck["name"] + "-r1"
    cancels = [r for r in em.requests() if r[0] == "POST" and r[1].endswith(f"/jobs/{stuck['name']}/cancel")]
    assert cancels and cancels[0][2] == 202, cancels
    tis = [ti for ti in topo.api.all_task_instances(DAG_ID, runs[starts[0]]["dag_run_id"]) if ti["task_id"] == "score"]
    retried = [ti for ti in tis if ti["try_number"] > 1]
    assert len(retried) == 1 and retried[0]["state"] == "success", tis
    log = task_log(topo, runs[starts[0]]["dag_run_id"], "score", retried[0]["map_index"], 1)
    assert f"interval {key}: Azure ML job {stuck['name']} for " in log, log[-3000:]
    print(f"(d) {stuck['name']} Canceled after {QUEUED_TIMEOUT_S} s, {retry['name']} Completed")


def task_log(topo: Topology, run_id: str, task_id: str, map_index: int, try_number: int) -> str:
    """The text of one try's log through the REST API."""
    from urllib.parse import quote

    body = topo.api._request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id)}/taskInstances/{task_id}/logs/"
                                    f"{try_number}?map_index={map_index}&full_content=true")
    return json.dumps(body)


def job_seconds(groups: dict) -> str:
    """min..max seconds from creation to end of the groups' jobs (the ledger's ``created_at`` and
    ``last_modified_at``, which is the end of a terminal job)."""
    spans = [(dt.datetime.fromisoformat(j["last_modified_at"]) - dt.datetime.fromisoformat(j["created_at"])).total_seconds()
             for jobs in groups.values() for j in jobs]
    return f"{min(spans):.0f}..{max(spans):.0f} s"
