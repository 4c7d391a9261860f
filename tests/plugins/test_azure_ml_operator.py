"""AzureMLScoringOperator and AzureMLJobTrigger against the fake job service (real SDK, real Azurite, scoring run locally)."""
from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
from types import SimpleNamespace

import pandas as pd
import pytest

from devstack.world import simulate_world

pytestmark = pytest.mark.timeout(120)

START = dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc)
KEY = "20260302T0000Z_20260302T0100Z"
HISTORY = (dt.datetime(2026, 3, 1, 12), dt.datetime(2026, 3, 2))
SCORING = (dt.datetime(2026, 3, 2), dt.datetime(2026, 3, 2, 1))


_WORLD: dict = {}


@pytest.fixture
def aml_world(blob_store, sqlite_conn_str, tmp_path):
    """One device, two sensors: models deployed and the interval's snapshot exported.

    Built once per session (simulate, aggregate, train), then re-uploaded into
    each test's emptied Azurite containers.
    """
    from batch_scoring.config import settings

    s = settings()
    if not _WORLD:
        from batch_scoring.pipeline import Interval, snapshot_interval
        from ingest_sim.db import connect

        conn = connect(sqlite_conn_str)
        try:
            simulate_world(conn, blob_store, s, tmp_path / "models", devices=1, sensors=2,
                           history=HISTORY, scoring=SCORING, reading_seconds=60, seed=5)
            _WORLD["plan"] = snapshot_interval(conn, blob_store, s, Interval(*SCORING))
        finally:
            conn.close()
        _WORLD["blobs"] = {(c, n): blob_store.download_bytes(c, n)
                           for c in (s.models_container, s.aggregates_container) for n in blob_store.list_names(c)}
    else:
        for (container, name), data in _WORLD["blobs"].items():
            blob_store.upload_bytes(container, name, data)
    assert _WORLD["plan"]["targets"] == ["dev001/s1", "dev001/s2"]
    return _WORLD["plan"]


class FakeTI:
    def __init__(self):
        self.xcom = {}
        self.map_index = 0
        self.task_id = "score"

    def xcom_push(self, key, value):
        self.xcom[key] = value

    def xcom_pull(self, task_ids=None, key="return_value", map_indexes=None):
        return self.xcom.get(key)


def context(ti=None):
    return {"data_interval_start": START, "data_interval_end": START + dt.timedelta(hours=1),
            "run_id": "scheduled__2026-03-02T01:00:00+00:00", "ti": ti or FakeTI(),
            "dag": SimpleNamespace(dag_id="batch_scoring")}


def operator(unit=("dev001/s1",), **kw):
    from batch_scoring.operators.azure_ml import AzureMLScoringOperator

    return AzureMLScoringOperator(task_id="score", unit=list(unit), **kw)


def run_deferrable(op, ctx):
    """What Airflow does with a deferrable operator: execute, run the trigger until it fires, execute_complete."""
    from airflow.sdk.exceptions import TaskDeferred

    try:
        return op.execute(ctx)
    except TaskDeferred as deferred:
        path, kwargs = deferred.trigger.serialize()
        import importlib

        module, _, cls = path.rpartition(".")
        trigger = getattr(importlib.import_module(module), cls)(**kwargs)  # as the triggerer rebuilds it

        async def first_event():
            async for event in trigger.run():
                return event

        event = asyncio.run(first_event())
        ctx["trigger_event"] = event.payload
        return getattr(op, deferred.method_name)(ctx, event.payload)


def blob_parquet(store, name):
    return pd.read_parquet(io.BytesIO(store.download_bytes("predictions", name)))


def test_deferrable_job_walks_the_states_and_writes_the_collectors_layout(fake_azureml, aml_world, blob_store):
    ctx = context()
    op = operator(["dev001/s1", "dev001/s2"])
    assert op.deferrable is True
    result = run_deferrable(op, ctx)
    (name,) = fake_azureml.created
    assert result == {"job_name": name, "status": "Completed", "targets": ["dev001/s1", "dev001/s2"],
                      "studio_url": f"https://ml.azure.com/runs/{name}?wsid=/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg/workspaces/ws"}
    assert ctx["ti"].xcom == {"azureml_job_name": name, "studio_url": result["studio_url"]}
    assert ctx["unit_label"] == "dev001/s1 .. dev001/s2 (2)"
    assert ctx["trigger_event"]["job_status"] == "Completed"
    # every state was seen, in order
    assert fake_azureml.jobs[name].step == 5
    # the command ran with mounted local paths substituted
    argv = fake_azureml.commands[0]
    assert argv[1:3] == ["-m", "scoring.score"] and argv[-3:] == ["--targets", "dev001/s1", "dev001/s2"]
    assert argv[argv.index("--aggregates") + 1].endswith("/inputs/aggregates/aggregates.parquet")
    names = set(blob_store.list_names("predictions"))
    assert names == {f"{KEY}/dev001/s1.parquet", f"{KEY}/dev001/s1.receipt.json",
                     f"{KEY}/dev001/s2.parquet", f"{KEY}/dev001/s2.receipt.json"}
    assert len(blob_parquet(blob_store, f"{KEY}/dev001/s1.parquet")) == 12


def test_synchronous_mode_polls_to_completion(fake_azureml, aml_world, blob_store):
    op = operator(deferrable=False, poll_interval=0.01)
    result = op.execute(context())
    assert result["status"] == "Completed" and len(fake_azureml.created) == 1
    assert f"{KEY}/dev001/s1.parquet" in blob_store.list_names("predictions")


def test_failed_job_raises_with_status_url_and_log_tail(fake_azureml, aml_world, blob_store):
    from batch_scoring.operators.azure_ml import AzureMLJobError

    blob_store.delete("models", "dev001/s2/model.joblib")  # the job's scoring step fails for this target
    with pytest.raises(AzureMLJobError) as err:
        run_deferrable(operator(["dev001/s2"]), context())
    (name,) = fake_azureml.created
    msg = str(err.value)
    assert f"Azure ML job {name} for dev001/s2 did not complete: status Failed" in msg
    assert f"studio: https://ml.azure.com/runs/{name}" in msg
    assert "last lines of the job's log" in msg and "exit code 1" in msg


@pytest.mark.parametrize("final", ["Canceled", "NotResponding", "Paused"])
def test_jobs_ending_other_than_completed_fail_the_task(fake_azureml, aml_world, final):
    from batch_scoring.operators.azure_ml import AzureMLJobError

    fake_azureml.script(["NotStarted", "Queued", "Preparing", "Running", final])
    with pytest.raises(AzureMLJobError, match=f"did not complete: status {final}"):
        run_deferrable(operator(), context())
    assert fake_azureml.commands == []  # never ran


def test_retry_resubmits_failed_job_under_the_next_deterministic_name(fake_azureml, aml_world):
    from batch_scoring.operators.azure_ml import AzureMLJobError, job_base_name

    fake_azureml.script(["Queued", "Failed"])
    fake_azureml.script(["Queued", "Canceled"])
    for _ in range(2):
        with pytest.raises(AzureMLJobError):
            run_deferrable(operator(), context())
    assert run_deferrable(operator(), context())["status"] == "Completed"  # third try: default path
    base = job_base_name("batch_scoring", KEY, ["dev001/s1"])
    assert fake_azureml.created == [base, f"{base}-r1", f"{base}-r2"]
    # and another retry now re-attaches to the completed -r2 without submitting anything
    again = run_deferrable(operator(), context())
    assert again["job_name"] == f"{base}-r2" and len(fake_azureml.created) == 3


def test_retry_after_worker_crash_reattaches_to_the_running_job(fake_azureml, aml_world, blob_store):
    """Attempt 1 submits and its worker dies while the job runs; attempt 2 must not submit another."""
    from airflow.sdk.exceptions import TaskDeferred

    fake_azureml.script(["NotStarted", "Queued", "Running"])  # then stays Running until told
    first = operator()
    with pytest.raises(TaskDeferred):
        first.execute(context())  # ... and the worker is gone before the trigger fires
    (name,) = fake_azureml.created
    fake_azureml.get(name), fake_azureml.get(name), fake_azureml.get(name)
    assert fake_azureml.get(name).status == "Running"
    fake_azureml.jobs[name].path.append("RUN")  # the cluster finishes the job later
    result = run_deferrable(operator(), context())  # attempt 2, a fresh operator
    assert result["job_name"] == name and result["status"] == "Completed"
    assert fake_azureml.created == [name]  # exactly one job created
    assert f"{KEY}/dev001/s1.parquet" in blob_store.list_names("predictions")


def test_on_kill_cancels_the_job(fake_azureml, aml_world):
    from airflow.sdk.exceptions import TaskDeferred

    from batch_scoring.operators.azure_ml import AzureMLJobError

    op = operator()
    with pytest.raises(TaskDeferred):
        op.execute(context())
    op.on_kill()
    (name,) = fake_azureml.created
    assert fake_azureml.cancelled == [name]
    assert fake_azureml.get(name).status == "Canceled"
    with pytest.raises(AzureMLJobError, match="status Canceled"):
        op.execute_complete(context(), {"status": "error", "job_name": name, "job_status": "Canceled"})


def test_trigger_times_out_and_the_operator_cancels(fake_azureml, aml_world):
    from batch_scoring.operators.azure_ml import AzureMLJobError

    fake_azureml.script(["Queued"])  # stays Queued forever
    with pytest.raises(AzureMLJobError, match=r"status Queued \(Azure ML job .* still Queued after 0s\)"):
        run_deferrable(operator(timeout_seconds=0.05), context())
    assert fake_azureml.cancelled == fake_azureml.created


def test_trigger_reports_polling_errors_as_events(fake_azureml):
    from batch_scoring.triggers.azure_ml import AzureMLJobTrigger

    async def first():
        async for event in AzureMLJobTrigger("azure_ml", "no-such-job", 0.01).run():
            return event.payload

    payload = asyncio.run(first())
    assert payload["status"] == "error" and "ResourceNotFoundError" in payload["message"]


def test_fake_refuses_to_recreate_an_existing_name(fake_azureml, aml_world):
    from azure.core.exceptions import HttpResponseError

    from batch_scoring.config import settings
    from batch_scoring.hooks.azure_ml import AzureMLHook
    from batch_scoring.operators.azure_ml import build_scoring_job

    hook = AzureMLHook()
    spec = build_scoring_job(settings(), KEY, ["dev001/s1"], "dup", dag_id="d", run_id=None)
    hook.submit_job(spec)
    with pytest.raises(HttpResponseError, match="already exists"):
        hook.submit_job(spec)
