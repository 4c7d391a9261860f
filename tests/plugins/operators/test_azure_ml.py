"""AzureMLScoringOperator and AzureMLJobTrigger against the fake job service (real SDK, real Azurite, scoring run locally)."""
from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
from types import SimpleNamespace

import pandas as pd
import pytest

from batch_scoring.scoring.layout import interval_folder, part_blob
from devstack.world import simulate_world
from tests.fixtures.fake_azureml import expected_job_name

pytestmark = pytest.mark.timeout(120)

START = dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc)
KEY = "20260302T0000Z_20260302T0100Z"
FOLDER = interval_folder(KEY)  # the interval's predictions folder
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
        from batch_scoring.snapshot import snapshot_interval
        from batch_scoring.scoring.layout import Interval
        from batch_scoring.sensor_db.schema import connect

        conn = connect(sqlite_conn_str)
        try:
            simulate_world(conn, blob_store, s, tmp_path / "models", devices=1, sensors=2,
                           history=HISTORY, scoring=SCORING, reading_seconds=60, seed=5)
            _WORLD["plan"] = snapshot_interval(conn, blob_store, s, Interval(*SCORING))
            from batch_scoring.sensor_db.reads import read_aggregates

            _WORLD["history"] = read_aggregates(conn, *HISTORY)  # to retrain a model in a test
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
    """The operator as the DAG builds it (the deployment's settings as arguments), ``kw`` overriding."""
    from batch_scoring.config import settings
    from batch_scoring.operators.azure_ml import AzureMLScoringOperator, azureml_args

    return AzureMLScoringOperator(task_id="score", unit=list(unit), **{**azureml_args(settings()), **kw})


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


def target_rows(store, target) -> pd.DataFrame:
    """The rows of ``target`` in the interval's part files (the unit's file, whichever unit held it)."""
    from batch_scoring.scoring.layout import is_part_name

    frames = [pd.read_parquet(io.BytesIO(store.download_bytes("predictions", n)))
              for n in store.list_names("predictions", FOLDER) if is_part_name(n[len(FOLDER):])]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["device_id", "sensor_id"])
    return frame[(frame["device_id"] + "/" + frame["sensor_id"]) == target].reset_index(drop=True)


def test_deferrable_job_walks_the_states_and_writes_the_collectors_layout(fake_azureml, aml_world, blob_store):
    ctx = context()
    op = operator(["dev001/s1", "dev001/s2"])
    assert op.azureml.deferrable is True
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
    assert argv[1:3] == ["-m", "batch_scoring.scoring.score"] and argv[-3:] == ["--targets", "dev001/s1", "dev001/s2"]
    assert argv[argv.index("--aggregates") + 1].endswith("/inputs/aggregates/aggregates.parquet")
    names = set(blob_store.list_names("predictions"))
    assert names == {part_blob(KEY, ["dev001/s1", "dev001/s2"])}  # the unit's one part file
    assert len(target_rows(blob_store, "dev001/s1")) == len(target_rows(blob_store, "dev001/s2")) == 12


def test_synchronous_mode_polls_to_completion(fake_azureml, aml_world, blob_store):
    op = operator(deferrable=False, poll_interval=0.01)
    result = op.execute(context())
    assert result["status"] == "Completed" and len(fake_azureml.created) == 1
    assert len(target_rows(blob_store, "dev001/s1")) == 12


def test_failed_job_raises_with_status_url_and_log_tail(fake_azureml, aml_world, blob_store):
    from batch_scoring.operators.azure_ml import AzureMLJobError

    fake_azureml.script(["Queued", "Running", "Failed"])  # the node died: no receipt, nothing to judge
    with pytest.raises(AzureMLJobError) as err:
        run_deferrable(operator(["dev001/s2"]), context())
    (name,) = fake_azureml.created
    msg = str(err.value)
    assert msg.startswith(f"interval {KEY}: Azure ML job {name} for dev001/s2 did not complete: status Failed")
    assert f"studio: https://ml.azure.com/runs/{name}" in msg
    assert "last lines of the job's log" in msg and f"(job {name} produced no output)" in msg


@pytest.mark.parametrize("fault", ["model deleted", "model tampered"])
def test_a_job_failed_by_a_bad_model_fails_the_task_at_once_naming_it(fake_azureml, aml_world, blob_store, fault):
    """Issue 12 item 5 on the Azure ML backend: the job's own receipts say retrying cannot fix it."""
    from airflow.sdk.exceptions import AirflowFailException

    from batch_scoring.operators.azure_ml import AzureMLPermanentJobError

    if fault == "model deleted":
        blob_store.delete("models", "dev001/s2/model.joblib")
        cause = "ModelNotFoundError"
    else:
        blob_store.upload_bytes("models", "dev001/s2/model.joblib", b"tampered")  # manifest unchanged
        cause = "ModelIntegrityError"
    with pytest.raises(AzureMLPermanentJobError) as err:
        run_deferrable(operator(["dev001/s1", "dev001/s2"]), context())
    assert isinstance(err.value, AirflowFailException)  # Airflow fails the task without spending retries
    (name,) = fake_azureml.created
    msg = str(err.value)
    assert msg.startswith(f"interval {KEY}: Azure ML job {name} for dev001/s1 dev001/s2 did not complete: status Failed")
    assert f"its receipts: dev001/s2: {cause}: " in msg and "dev001/s1:" not in msg.split("its receipts:")[1]
    assert msg.endswith("retrying cannot fix this, so the task fails without retries: redeploy the model of dev001/s2 "
                        "(blobs models/dev001/s2/model.joblib and manifest.json; e.g. `python -m devstack.deploy_models "
                        "MODELS_DIR` in the repository, or upload both files again), then clear the failed score "
                        "task(s) and collect")
    assert len(target_rows(blob_store, "dev001/s1")) == 12 and target_rows(blob_store, "dev001/s2").empty  # the good target's output stands


def test_an_earlier_jobs_receipts_never_condemn_a_later_failure(fake_azureml, aml_world, blob_store):
    """Receipts count only when written after the job was created: a node failure stays retryable."""
    from batch_scoring.operators.azure_ml import AzureMLJobError, AzureMLPermanentJobError

    good = blob_store.download_bytes("models", "dev001/s2/model.joblib")
    blob_store.upload_bytes("models", "dev001/s2/model.joblib", b"tampered")
    with pytest.raises(AzureMLPermanentJobError):
        run_deferrable(operator(["dev001/s2"]), context())
    blob_store.upload_bytes("models", "dev001/s2/model.joblib", good)  # repaired; same manifest, so the same job base name
    fake_azureml.script(["Queued", "Failed"])  # the resubmitted job dies before scoring anything
    with pytest.raises(AzureMLJobError) as err:
        run_deferrable(operator(["dev001/s2"]), context())
    assert not isinstance(err.value, AzureMLPermanentJobError)
    base = expected_job_name(blob_store, KEY, ["dev001/s2"])
    assert fake_azureml.created == [base, f"{base}-r1"]
    assert run_deferrable(operator(["dev001/s2"]), context())["status"] == "Completed"  # and the retry scores it


@pytest.mark.parametrize("final", ["Canceled", "NotResponding", "Paused"])
def test_jobs_ending_other_than_completed_fail_the_task(fake_azureml, aml_world, final):
    from batch_scoring.operators.azure_ml import AzureMLJobError

    fake_azureml.script(["NotStarted", "Queued", "Preparing", "Running", final])
    with pytest.raises(AzureMLJobError, match=f"did not complete: status {final}"):
        run_deferrable(operator(), context())
    assert fake_azureml.commands == []  # never ran


def test_retry_resubmits_failed_job_under_the_next_deterministic_name(fake_azureml, aml_world, blob_store):
    from batch_scoring.operators.azure_ml import AzureMLJobError

    fake_azureml.script(["Queued", "Failed"])
    fake_azureml.script(["Queued", "Canceled"])
    for _ in range(2):
        with pytest.raises(AzureMLJobError):
            run_deferrable(operator(), context())
    assert run_deferrable(operator(), context())["status"] == "Completed"  # third try: default path
    base = expected_job_name(blob_store, KEY, ["dev001/s1"])
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
    assert len(target_rows(blob_store, "dev001/s1")) == 12


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


def test_job_stuck_in_queued_times_out_is_cancelled_and_a_retry_recovers(aml_emulator, aml_world, blob_store):
    """On the emulator (real SDK over HTTPS): a job that stays Queued past the timeout is cancelled through the
    SDK's long-running cancel, the task fails naming the job; the retry submits -r1, which scores the unit."""
    from batch_scoring.operators.azure_ml import AzureMLJobError
    from tests.fixtures.aml_emulator import created

    aml_emulator.fault(kind="job", stay="Queued")
    with pytest.raises(AzureMLJobError, match=rf"^interval {KEY}: Azure ML job \S+ for \S+ did not complete: status Queued "
                                              r"\(Azure ML job \S+ still Queued after 3s\)"):
        run_deferrable(operator(timeout_seconds=3), context())
    (name,) = created(aml_emulator)
    assert aml_emulator.ledger()[0]["status"] == "Canceled"
    assert any(m == "POST" and p.endswith(f"/jobs/{name}/cancel") for m, p, _ in aml_emulator.requests())
    result = run_deferrable(operator(timeout_seconds=120), context())
    assert result["status"] == "Completed" and result["job_name"] == f"{name}-r1"
    assert created(aml_emulator) == [name, f"{name}-r1"]
    assert len(target_rows(blob_store, "dev001/s1")) == 12


def test_fake_refuses_to_recreate_an_existing_name(fake_azureml, aml_world):
    from azure.core.exceptions import HttpResponseError

    from batch_scoring.config import settings
    from batch_scoring.hooks.azure_ml import AzureMLHook
    from batch_scoring.azure_ml_job import AzureMLJobConfig, build_scoring_job

    hook = AzureMLHook()
    spec = build_scoring_job(AzureMLJobConfig.from_settings(settings()), KEY, ["dev001/s1"], "dup", dag_id="d", run_id=None,
                             workspace_id=hook.workspace_id(), timeout_seconds=60)
    hook.submit_job(spec)
    with pytest.raises(HttpResponseError, match="already exists"):
        hook.submit_job(spec)


# --- the job's name follows what it computes: models, snapshot content, code and environment ---------------

def retrain_and_deploy(store, target: str, folder, start: dt.datetime) -> str:
    """A real retrain of ``target`` on another training range, deployed as azure_setup does; returns its sha256."""
    from batch_scoring.config import settings
    from batch_scoring.scoring.train import train_models

    (manifest,) = train_models(_WORLD["history"], folder, start, HISTORY[1], targets=[target])
    store.upload_folder(settings().models_container, "", folder)
    return manifest["sha256"]


def deployed_sha(store, target: str) -> str:
    return json.loads(store.download_bytes("models", f"{target}/manifest.json"))["sha256"]


def run_units(units) -> dict[str, str]:
    """One attempt of each unit's task (a rerun of the interval's score tasks): target -> job name."""
    return {u[0]: run_deferrable(operator(u), context())["job_name"] for u in units}


def collect(store, plan):
    from batch_scoring.config import settings
    from batch_scoring.collect import collect_interval
    from batch_scoring.scoring.layout import Interval

    return collect_interval(store, settings(), Interval(*SCORING), plan)


UNITS = [["dev001/s1"], ["dev001/s2"]]


@pytest.mark.timeout(300)
def test_redeployed_model_gets_a_new_job_and_the_collector_validates_it(fake_azureml, aml_world, blob_store,
                                                                         tmp_path, capfd):
    from batch_scoring.errors import PipelineError

    first = run_units(UNITS)
    assert collect(blob_store, aml_world)["counts"] == {"ok": 2, "failed": 0, "skipped": 0}
    old = deployed_sha(blob_store, "dev001/s1")
    new = retrain_and_deploy(blob_store, "dev001/s1", tmp_path / "retrained", HISTORY[0] + dt.timedelta(hours=3))
    assert new != old and deployed_sha(blob_store, "dev001/s1") == new
    # the interval's predictions predate the deployed model (what a re-attaching rerun left behind)
    with pytest.raises(PipelineError, match=f"dev001/s1: scored with model {old[:12]}, but the deployed model is {new[:12]}"):
        collect(blob_store, aml_world)
    capfd.readouterr()

    again = run_units(UNITS)  # the rerun of the interval
    assert again["dev001/s2"] == first["dev001/s2"]  # nothing changed for it: re-attached
    assert again["dev001/s1"] == expected_job_name(blob_store, KEY, ["dev001/s1"]) != first["dev001/s1"]
    assert fake_azureml.created == [first["dev001/s1"], first["dev001/s2"], again["dev001/s1"]]
    out = capfd.readouterr().out
    assert (f"models changed since job {first['dev001/s1']} (dev001/s1 {old[:12]} -> {new[:12]}): "
            f"submitting {again['dev001/s1']}") in out
    assert f"re-attaching to Azure ML job {first['dev001/s2']} (Completed)" in out
    tags = fake_azureml.get(again["dev001/s1"]).tags
    assert tags["model_sha256"] == new and tags["aggregates"].startswith("md5:")
    assert fake_azureml.get(first["dev001/s1"]).tags["model_sha256"] == old
    manifest = collect(blob_store, aml_world)
    assert manifest["counts"] == {"ok": 2, "failed": 0, "skipped": 0}
    assert manifest["targets"]["dev001/s1"]["model_sha256"] == new
    assert target_rows(blob_store, "dev001/s1")["model_sha256"].unique().tolist() == [new]


@pytest.mark.timeout(300)
def test_model_rolled_back_is_rescored_not_reattached_to_the_overwritten_job(fake_azureml, aml_world, blob_store,
                                                                              tmp_path, capfd):
    """A -> B -> A: the first job's name comes back, but its outputs were overwritten by B's job."""
    a = run_units(UNITS)
    original = {n: blob_store.download_bytes("models", n) for n in blob_store.list_names("models", "dev001/s1/")}
    sha_a = deployed_sha(blob_store, "dev001/s1")
    sha_b = retrain_and_deploy(blob_store, "dev001/s1", tmp_path / "b", HISTORY[0] + dt.timedelta(hours=6))
    b = run_units(UNITS)
    for name, data in original.items():  # roll back: the same bytes as before
        blob_store.upload_bytes("models", name, data)
    assert expected_job_name(blob_store, KEY, ["dev001/s1"]) == a["dev001/s1"]
    capfd.readouterr()
    rolled = run_units(UNITS)
    assert rolled == {"dev001/s1": f"{a['dev001/s1']}-r1", "dev001/s2": a["dev001/s2"]}
    assert fake_azureml.created == [a["dev001/s1"], a["dev001/s2"], b["dev001/s1"], f"{a['dev001/s1']}-r1"]
    assert (f"Azure ML job {a['dev001/s1']} is Completed but its outputs are gone or were overwritten since "
            f"(dev001/s1 was since scored with model {sha_b[:12]}, not this job's {sha_a[:12]}): "
            "submitting the next name") in capfd.readouterr().out
    manifest = collect(blob_store, aml_world)
    assert manifest["counts"]["ok"] == 2 and manifest["targets"]["dev001/s1"]["model_sha256"] == sha_a
    # and the next rerun re-attaches to the job that wrote what is there now
    assert run_units(UNITS) == rolled and len(fake_azureml.created) == 4


@pytest.mark.timeout(300)
def test_rerun_without_change_reattaches_even_after_identical_rewrites(fake_azureml, aml_world, blob_store):
    """The snapshot task rewrites the same bytes and a model is redeployed unchanged: same job, nothing submitted."""
    first = run_units(UNITS)
    snapshot = f"{KEY}/aggregates.parquet"
    etag = blob_store._blob("aggregates", snapshot).get_blob_properties().etag
    blob_store.upload_bytes("aggregates", snapshot, blob_store.download_bytes("aggregates", snapshot))
    assert blob_store._blob("aggregates", snapshot).get_blob_properties().etag != etag  # a new write, same bytes
    for name in blob_store.list_names("models", "dev001/s1/"):
        blob_store.upload_bytes("models", name, blob_store.download_bytes("models", name))
    assert run_units(UNITS) == first
    assert run_units(UNITS) == first
    assert fake_azureml.created == [first["dev001/s1"], first["dev001/s2"]]


@pytest.mark.timeout(300)
def test_snapshot_rewritten_with_late_data_gets_new_jobs_that_score_it(fake_azureml, aml_world, blob_store, capfd):
    """Late readings re-aggregated, the snapshot task cleared: the old Completed jobs scored the old aggregates."""
    from batch_scoring.snapshot import SNAPSHOT_ROW_GROUP, frame_to_parquet_bytes

    first = run_units(UNITS)
    before = target_rows(blob_store, "dev001/s1").sort_values("window_start")
    snapshot = f"{KEY}/aggregates.parquet"
    frame = pd.read_parquet(io.BytesIO(blob_store.download_bytes("aggregates", snapshot)))
    late = (frame["device_id"] == "dev001") & (frame["sensor_id"] == "s1") & (frame["window_start"] == frame["window_start"].min())
    assert late.sum() == 1
    frame.loc[late, ["value_mean", "value_max"]] += 5.0  # the re-aggregated window
    frame.loc[late, "n_readings"] += 1
    blob_store.upload_bytes("aggregates", snapshot, frame_to_parquet_bytes(frame, SNAPSHOT_ROW_GROUP))
    capfd.readouterr()

    again = run_units(UNITS)
    # every unit of the interval is rescored: its job mounts the whole snapshot
    assert set(again.values()).isdisjoint(first.values())
    assert fake_azureml.created == [*first.values(), *again.values()]
    out = capfd.readouterr().out
    assert ("no Azure ML job for these inputs yet: dev001/s1 was last scored with the same models, so the aggregates "
            "snapshot, code, environment or job generation changed since (or the local backend scored it); the job's "
            f"tags hold its inputs: submitting {again['dev001/s1']}") in out
    after = target_rows(blob_store, "dev001/s1").sort_values("window_start")
    assert after["decision_score"].iloc[0] != before["decision_score"].iloc[0]  # the late window, rescored
    assert after["decision_score"].iloc[1:].tolist() == before["decision_score"].iloc[1:].tolist()
    assert collect(blob_store, aml_world)["counts"] == {"ok": 2, "failed": 0, "skipped": 0}
    assert run_units(UNITS) == again and len(fake_azureml.created) == 4


@pytest.mark.parametrize("fault", ["manifest missing", "manifest without sha256", "snapshot missing"])
def test_unreadable_job_inputs_fail_at_once_naming_the_blob(fake_azureml, aml_world, blob_store, fault):
    from airflow.sdk.exceptions import AirflowFailException

    from batch_scoring.azure_ml_job import AzureMLInputError

    what = f"interval {KEY}: the Azure ML job for dev001/s1 .. dev001/s2 (2) cannot be named or run: "
    model_way_out = ("; redeploy the model (model.joblib and manifest.json under models/<device>/<sensor>/, e.g. "
                     "python -m batch_scoring.scoring.azure_setup --models ...) and clear this task, or, if the model was retired, "
                     "clear the snapshot task (and its downstream) so the plan drops the target")
    if fault == "manifest missing":
        blob_store.delete("models", "dev001/s2/manifest.json")
        expected = what + ("no usable deployed model for 1 target(s): dev001/s2: models/dev001/s2/manifest.json "
                           "does not exist") + model_way_out
    elif fault == "manifest without sha256":
        blob_store.upload_bytes("models", "dev001/s2/manifest.json", b'{"threshold": -0.1}')
        expected = what + ("no usable deployed model for 1 target(s): dev001/s2: models/dev001/s2/manifest.json "
                           "has no sha256") + model_way_out
    else:
        blob_store.delete("aggregates", f"{KEY}/aggregates.parquet")
        expected = what + (f"snapshot aggregates/{KEY}/aggregates.parquet does not exist; clear the snapshot task "
                           "(and its downstream) to write it")
    with pytest.raises(AzureMLInputError) as err:
        run_deferrable(operator(["dev001/s1", "dev001/s2"]), context())
    assert str(err.value) == expected
    assert isinstance(err.value, AirflowFailException)  # no retries spent on it
    assert fake_azureml.created == []


def test_snapshot_stored_without_a_content_md5_is_identified_by_the_sha256_of_its_bytes(aml_world, blob_store,
                                                                                       blob_conn_str):
    """Blob storage records no MD5 of its own for a blob uploaded in blocks: one written so by another tool
    (``BlobStore`` sets the MD5 itself) is identified by the hash of its bytes instead."""
    import hashlib

    from batch_scoring.config import settings
    from batch_scoring.azure_ml_job import AzureMLJobConfig, read_job_inputs
    from batch_scoring.scoring.layout import Interval

    s, interval, name = AzureMLJobConfig.from_settings(settings()), Interval(*SCORING), f"{KEY}/aggregates.parquet"
    data = blob_store.download_bytes("aggregates", name)
    single = read_job_inputs(blob_store, s, interval, ["dev001/s1", "dev001/s2"])
    assert single.aggregates == "md5:" + hashlib.md5(data).hexdigest()
    from azure.storage.blob import BlobServiceClient

    in_blocks = BlobServiceClient.from_connection_string(blob_conn_str, max_single_put_size=4096, max_block_size=4096)
    in_blocks.get_blob_client("aggregates", name).upload_blob(data, overwrite=True)
    assert blob_store.list_md5("aggregates", name) == {name: None}
    staged = read_job_inputs(blob_store, s, interval, ["dev001/s1", "dev001/s2"])
    assert staged.aggregates == "sha256:" + hashlib.sha256(data).hexdigest()
    assert staged.models == single.models == tuple((t, deployed_sha(blob_store, t)) for t in ("dev001/s1", "dev001/s2"))
