"""Live smoke test against a real Azure ML workspace; skipped unless its credentials are set.

Environment (see docs/azure_ml.md):
    AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, AZUREML_WORKSPACE   the workspace
    AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET             a service principal
                                                                      (or omit the secret: DefaultAzureCredential)
    BATCH_SCORING_LIVE_JOB=1     also submit one scoring job (needs `python -m batch_scoring.scoring.azure_setup`
                                 run first and the interval in BATCH_SCORING_LIVE_INTERVAL already
                                 snapshotted to the aggregates container; costs cluster minutes)
    AIRFLOW_CONN_SENSOR_BLOB     for that job: a wasb connection to the datastores' storage account
                                 (the operator reads the model manifests and the snapshot through it
                                 to name the job)
"""
from __future__ import annotations

import json
import os

import pytest

REQUIRED = ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE")
pytestmark = [
    pytest.mark.skipif(not all(os.environ.get(v) for v in REQUIRED),
                       reason=f"live Azure ML test: set {', '.join(REQUIRED)} (+ credentials)"),
    pytest.mark.timeout(3600),
]


@pytest.fixture
def live_conn(monkeypatch):
    conn = {"conn_type": "generic", "extra": {
        "subscription_id": os.environ["AZURE_SUBSCRIPTION_ID"],
        "resource_group": os.environ["AZURE_RESOURCE_GROUP"],
        "workspace_name": os.environ["AZUREML_WORKSPACE"],
    }}
    if os.environ.get("AZURE_CLIENT_SECRET"):
        conn.update(login=os.environ["AZURE_CLIENT_ID"], password=os.environ["AZURE_CLIENT_SECRET"])
        conn["extra"]["tenant_id"] = os.environ["AZURE_TENANT_ID"]
    monkeypatch.setenv("AIRFLOW_CONN_AZURE_ML_LIVE", json.dumps(conn))
    return "azure_ml_live"


def test_connection_and_registered_assets(live_conn):
    from batch_scoring.config import settings
    from batch_scoring.hooks.azure_ml import AzureMLHook

    hook = AzureMLHook(live_conn)
    ok, msg = hook.test_connection()
    assert ok, msg
    client, s = hook.get_conn(), settings()
    assert client.compute.get(s.azureml_compute).min_instances >= 0
    for ds in (s.azureml_aggregates_datastore, s.azureml_models_datastore, s.azureml_predictions_datastore):
        assert client.datastores.get(ds).name == ds
    name, version = s.azureml_environment.removeprefix("azureml:").split(":")
    assert client.environments.get(name, version=version).version == version
    assert hook.find_job("batch-scoring-no-such-job-0000") is None


@pytest.mark.skipif(os.environ.get("BATCH_SCORING_LIVE_JOB") != "1", reason="set BATCH_SCORING_LIVE_JOB=1 to submit a job")
def test_one_scoring_job_round_trip(live_conn):
    import datetime as dt
    from types import SimpleNamespace

    from batch_scoring.config import settings
    from batch_scoring.operators.azure_ml import AzureMLScoringOperator, azureml_args
    from batch_scoring.scoring.layout import Interval

    interval = Interval.from_key(os.environ.get("BATCH_SCORING_LIVE_INTERVAL", "20180828T2300Z_20180829T0000Z"))
    xcom = {}
    ctx = {"data_interval_start": interval.start.replace(tzinfo=dt.timezone.utc),
           "data_interval_end": interval.end.replace(tzinfo=dt.timezone.utc), "run_id": "live-smoke",
           "dag": SimpleNamespace(dag_id="batch_scoring_live"),
           "ti": SimpleNamespace(xcom_push=lambda key, value: xcom.__setitem__(key, value), map_index=-1,
                                 xcom_pull=lambda **kw: xcom.get(kw.get("key")))}
    args = {**azureml_args(settings()), "azureml_conn_id": live_conn, "deferrable": False, "poll_interval": 20}
    op = AzureMLScoringOperator(task_id="score", unit=[os.environ.get("BATCH_SCORING_LIVE_TARGET", "1/1")], **args)
    result = op.execute(ctx)
    assert result["status"] == "Completed" and xcom["studio_url"].startswith("https://ml.azure.com/")
