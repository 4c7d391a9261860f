"""A worker killed mid-score (local and Azure ML backends) and blob storage going away during collect.

Real processes are killed with SIGKILL, a dedicated Azurite is stopped and
restarted; Azure ML is the emulator process (devstack/aml_emulator) reached by the real SDK over HTTPS.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from batch_scoring.errors import PipelineError

from batch_scoring.scoring.layout import part_blob
from devstack import services
from tests.reliability.conftest import TARGETS, build_world, interval

IV = interval()
KEY = IV.key

CHILD = r"""
import json, sys, time
from batch_scoring.config import settings
from batch_scoring.hooks.blob_storage import BlobStore
from batch_scoring.local_backend import score_unit_local
from batch_scoring.scoring.layout import Interval

conn_str, key, marker, unit = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
import itertools
upload = BlobStore.upload_file
calls = itertools.count()

def hang_in_the_upload(self, container, name, path):
    with open(marker, "a") as fh:  # the unit's one blob (its part file) is being uploaded ...
        fh.write(name + "\n")
    time.sleep(300)  # ... when the worker is killed

BlobStore.upload_file = hang_in_the_upload
score_unit_local(BlobStore.from_connection_string(conn_str), settings().containers, Interval.from_key(key), unit)
"""


def test_local_worker_killed_mid_upload_then_the_retry_writes_identical_output(world, tmp_path):
    unit = ["dev001/s1", "dev001/s2"]
    plan = world.snapshot()
    plan = {**plan, "units": [unit] + [[t] for t in plan["targets"] if t not in unit]}
    assert world.score(plan) == {}  # the undisturbed run of this batching: the reference
    clean = world.collect(plan)
    good = world.predictions()
    for name in good:
        world.store.delete("predictions", name)
    marker = tmp_path / "uploaded.txt"
    child = subprocess.Popen([sys.executable, "-c", CHILD, world.blob, KEY, str(marker), json.dumps(unit)],
                             env={**os.environ, "PYTHONPATH": os.getcwd()}, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.1)
        assert marker.exists(), f"the scoring child never uploaded (exit {child.poll()})"
        os.kill(child.pid, signal.SIGKILL)  # the worker dies mid-unit
    finally:
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    assert marker.read_text().split() == [part_blob(IV, unit)]  # the unit's one blob ...
    assert world.predictions() == {}  # ... never half there: a blob upload is atomic
    # the other units and the collector: the killed unit's targets are named
    assert world.score({**plan, "units": [u for u in plan["units"] if u != unit]}) == {}
    with pytest.raises(PipelineError, match="2 of 4 targets failed validation .*dev001/s1: part file missing"):
        world.collect(plan)
    # Airflow's retry of the killed unit: same bytes as an undisturbed run
    assert world.score({**plan, "units": [unit]}) == {}
    assert world.collect(plan) == clean
    assert world.predictions() == good


class FakeTI:
    map_index = 0
    task_id = "score"

    def __init__(self):
        self.xcom = {}

    def xcom_push(self, key, value):
        self.xcom[key] = value

    def xcom_pull(self, task_ids=None, key="return_value", map_indexes=None):
        return self.xcom.get(key)


def _context():
    import datetime as dt

    return {"data_interval_start": IV.start.replace(tzinfo=dt.timezone.utc),
            "data_interval_end": IV.end.replace(tzinfo=dt.timezone.utc),
            "run_id": "scheduled__2026-06-01T08:00:00+00:00", "ti": FakeTI(),
            "dag": SimpleNamespace(dag_id="batch_scoring")}


def _attempt(unit):
    """One Airflow attempt of the mapped task: execute, and if it defers, the trigger, then execute_complete."""
    import asyncio
    import importlib

    from airflow.sdk.exceptions import TaskDeferred

    from batch_scoring.config import settings
    from batch_scoring.operators.azure_ml import AzureMLScoringOperator, azureml_args

    op = AzureMLScoringOperator(task_id="score", unit=list(unit), **azureml_args(settings()))
    ctx = _context()
    try:
        return op.execute(ctx)
    except TaskDeferred as deferred:
        path, kwargs = deferred.trigger.serialize()
        module, _, cls = path.rpartition(".")
        trigger = getattr(importlib.import_module(module), cls)(**kwargs)

        async def first_event():
            async for event in trigger.run():
                return event

        event = asyncio.run(first_event())
        return getattr(op, deferred.method_name)(ctx, event.payload)


def test_azureml_worker_killed_mid_job_retry_reattaches_and_a_lost_output_is_rescored(world, aml_emulator):
    from airflow.sdk.exceptions import TaskDeferred

    from batch_scoring.config import settings
    from batch_scoring.operators.azure_ml import AzureMLScoringOperator, azureml_args
    from tests.fixtures.aml_emulator import created, expected_job_name

    clean = world.run()  # the local backend's bytes are the reference
    good = world.predictions()
    for name in good:
        world.store.delete("predictions", name)
    target = "dev002/s1"
    # attempt 1 submits and defers; its worker dies then, while the job goes on on the cluster
    with pytest.raises(TaskDeferred):
        AzureMLScoringOperator(task_id="score", unit=[target], **azureml_args(settings())).execute(_context())
    (name,) = created(aml_emulator)
    assert name == expected_job_name(world.store, KEY, [target])
    # attempt 2 (Airflow's retry) re-attaches: no second job, the same bytes as the local backend
    result = _attempt([target])
    assert result["job_name"] == name and created(aml_emulator) == [name]
    blob = part_blob(IV, [target])  # receipts in its footer
    assert world.store.download_bytes("predictions", blob) == good[blob]
    # a rerun of the interval submits nothing while the outputs are there
    assert _attempt([target])["job_name"] == name and created(aml_emulator) == [name]
    # the prediction is deleted after scoring: the collector names it ...
    for blob, data in good.items():  # the other targets, as their own (local) units left them
        if blob != part_blob(IV, [target]) and not blob.endswith("_manifest.json"):
            world.store.upload_bytes("predictions", blob, data)
    world.store.delete("predictions", part_blob(IV, [target]))
    with pytest.raises(PipelineError, match=f"{target}: part file missing"):
        world.collect(world.snapshot())
    # ... and clearing the score task no longer re-attaches to the Completed job whose output is gone:
    # it submits the next deterministic name, which writes the same bytes again
    assert _attempt([target])["job_name"] == f"{name}-r1"
    assert world.collect(world.snapshot()) == clean
    assert world.predictions() == good
    assert created(aml_emulator) == [name, f"{name}-r1"]  # one job, plus the one re-score


@pytest.fixture
def own_azurite(tmp_path):
    """A dedicated Azurite (the session's is shared): (connection string, stop, start)."""
    port = services.free_port()
    location = tmp_path / "azurite"
    state = {"proc": services.start_azurite(location, port, log_path=tmp_path / "azurite.log")}

    def stop():
        services.stop(state["proc"])

    def start():
        state["proc"] = services.start_azurite(location, port, log_path=tmp_path / "azurite.log")

    try:
        yield services.azurite_connection_string(port), stop, start
    finally:
        stop()


@pytest.mark.parametrize("unit_receipts", [True, False], ids=["confirmed-by-md5", "read-back"])
def test_blob_storage_down_during_collect_is_named_and_the_retry_succeeds(sqlite_conn_str, own_azurite, tmp_path,
                                                                          unit_receipts):
    from batch_scoring.config import settings
    from batch_scoring.hooks.blob_storage import BlobStore, BlobStoreUnavailable

    conn_str, stop, start = own_azurite
    # no SDK retries: the test wants the failure now (the product keeps the SDK's default retries)
    store = BlobStore.from_connection_string(conn_str, retry_total=0)
    store.ensure_containers(settings().containers)
    world = build_world(sqlite_conn_str, conn_str, store, tmp_path / "models")
    clean = world.run()
    good = world.predictions()
    plan = world.snapshot()
    if not unit_receipts:  # as on the Azure ML backend: the collector reads every prediction back
        world.unit_receipts.clear()
    list_md5 = store.list_md5

    def list_then_outage(container, prefix=""):
        found = list_md5(container, prefix)
        stop()  # storage goes away in the middle of collecting: listed, the manifest not written yet
        return found

    store.list_md5 = list_then_outage
    with pytest.raises(BlobStoreUnavailable) as err:
        world.collect(plan)
    assert f"blob storage at {store.url} is unreachable" in str(err.value)
    assert "clear the task to retry" in str(err.value)
    store.list_md5 = list_md5
    start()  # storage is back (same data directory)
    assert world.collect(plan) == clean  # the retry
    assert world.predictions() == good
