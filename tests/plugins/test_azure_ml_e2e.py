"""The whole DAG under dag.test() with BATCH_SCORING_BACKEND=azureml on the Azure ML emulator (real SDK, HTTPS).

Same interval, same data, same models: the Azure ML backend must leave
byte-identical prediction blobs (and manifest) to the local backend's.
"""
from __future__ import annotations

import datetime as dt
import json

import pytest

from tests.fixtures.aml_emulator import created

from batch_scoring.scoring.layout import interval_prefix, manifest_blob
from devstack.airflow_env import blob_connection_json, odbc_connection_uri_json
from devstack.world import simulate_world

pytestmark = pytest.mark.timeout(300)

HOUR = dt.timedelta(hours=1)
HISTORY = (dt.datetime(2026, 3, 1, 12), dt.datetime(2026, 3, 2))
SCORING = (dt.datetime(2026, 3, 2), dt.datetime(2026, 3, 2, 1))


def parse_dag(monkeypatch, backend: str):
    """A fresh DagBag: the DAG file reads BATCH_SCORING_BACKEND when it is parsed."""
    from airflow.dag_processing.dagbag import DagBag

    from devstack.services import REPO

    monkeypatch.setenv("BATCH_SCORING_BACKEND", backend)
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.dags["batch_scoring"]


def run_interval(dag, start: dt.datetime):
    from airflow.utils.state import DagRunState

    start = start.replace(tzinfo=dt.timezone.utc)
    run = dag.test(logical_date=start, run_after=start + HOUR)
    return run, run.state == DagRunState.SUCCESS


def simulated_world(monkeypatch, sqlite_conn_str, blob_conn_str, blob_store, models_dir, *, devices: int):
    """Point the DAG's connections at this test's SQLite and Azurite and simulate a world there (seed 11)."""
    from batch_scoring.config import settings
    from batch_scoring.sensor_db.schema import connect

    s = settings()
    monkeypatch.setenv(f"AIRFLOW_CONN_{s.sql_conn_id.upper()}", odbc_connection_uri_json(sqlite_conn_str))
    monkeypatch.setenv(f"AIRFLOW_CONN_{s.blob_conn_id.upper()}", blob_connection_json(blob_conn_str))
    conn = connect(sqlite_conn_str)
    try:
        return simulate_world(conn, blob_store, s, models_dir, devices=devices, sensors=2,
                              history=HISTORY, scoring=SCORING, reading_seconds=60, seed=11)
    finally:
        conn.close()


@pytest.fixture
def sqlite_world(airflow_db, monkeypatch, sqlite_conn_str, blob_conn_str, blob_store, tmp_path):
    return simulated_world(monkeypatch, sqlite_conn_str, blob_conn_str, blob_store, tmp_path / "models", devices=2)


def predictions(store, key) -> dict[str, bytes]:
    return {n: store.download_bytes("predictions", n) for n in store.list_names("predictions", interval_prefix(key))}


def run_key(run) -> str:
    from batch_scoring.scoring.layout import interval_key

    return interval_key(run.data_interval_start, run.data_interval_end)


def test_azureml_backend_matches_local_backend_byte_for_byte(monkeypatch, sqlite_world, aml_emulator, blob_store):
    from tests.fixtures.aml_emulator import expected_job_name

    local_dag = parse_dag(monkeypatch, "local")
    assert local_dag.get_task("score").operator_class.__name__ == "ScoringOperator"
    assert local_dag.params["backend"] == "local"
    run, ok = run_interval(local_dag, SCORING[0])
    assert ok, run.state
    key = run_key(run)
    local = predictions(blob_store, key)
    assert len(local) == 7  # 4 part files (one target each, receipts in them) + manifest + report + heatmap
    for name in local:
        blob_store.delete("predictions", name)
    assert created(aml_emulator) == []

    aml_dag = parse_dag(monkeypatch, "azureml")
    score = aml_dag.get_task("score")
    assert score.operator_class.__name__ == "ScoringOperator"
    assert aml_dag.params["backend"] == "azureml"
    assert score.map_index_template == "{{ unit_label }}"
    run, ok = run_interval(aml_dag, SCORING[0])
    assert ok, run.state
    assert run_key(run) == key
    remote = predictions(blob_store, key)

    targets = [f"dev{d:03d}/s{s}" for d in (1, 2) for s in (1, 2)]
    assert sorted(created(aml_emulator)) == sorted(expected_job_name(blob_store, key, [t]) for t in targets)
    assert remote.keys() == local.keys()
    for name in local:
        assert remote[name] == local[name], name
    manifest = json.loads(remote[manifest_blob(key)])
    assert manifest["counts"] == {"ok": 4, "failed": 0, "skipped": 0}

    tis = [ti for ti in run.get_task_instances() if ti.task_id == "score"]
    assert sorted(ti.rendered_map_index for ti in tis) == targets
    # a rerun of the same interval re-attaches to the completed jobs: nothing new is submitted
    run, ok = run_interval(aml_dag, SCORING[0])
    assert ok and len(created(aml_emulator)) == 4
    assert predictions(blob_store, key) == remote


def test_azureml_rerun_after_a_redeploy_submits_a_job_for_the_changed_model_only(monkeypatch, sqlite_world, aml_emulator,
                                                                                  blob_store, sqlite_conn_str, tmp_path):
    """Issue 10 item 6, under dag.test(): retrain and redeploy one model, rerun the interval; the collect task validates."""
    from batch_scoring.sensor_db.schema import connect
    from batch_scoring.sensor_db.reads import read_aggregates
    from batch_scoring.scoring.train import train_models
    from tests.fixtures.aml_emulator import expected_job_name

    dag = parse_dag(monkeypatch, "azureml")
    run, ok = run_interval(dag, SCORING[0])
    assert ok, run.state
    key = run_key(run)
    first = list(created(aml_emulator))
    assert len(first) == 4
    old = json.loads(blob_store.download_bytes("models", "dev002/s1/manifest.json"))["sha256"]
    conn = connect(sqlite_conn_str)
    try:  # a real retrain of dev002/s1 on the last 9 hours of its history, redeployed
        history = read_aggregates(conn, HISTORY[0] + dt.timedelta(hours=3), HISTORY[1], targets=["dev002/s1"])
    finally:
        conn.close()
    (manifest,) = train_models(history, tmp_path / "retrained", targets=["dev002/s1"])
    blob_store.upload_folder("models", "", tmp_path / "retrained")
    assert manifest["sha256"] != old

    run, ok = run_interval(dag, SCORING[0])  # the rerun: succeeds by itself, no generation bump
    assert ok, run.state
    new_job = expected_job_name(blob_store, key, ["dev002/s1"])
    assert new_job not in first and created(aml_emulator) == [*first, new_job]
    result = json.loads(blob_store.download_bytes("predictions", manifest_blob(key)))
    assert result["counts"] == {"ok": 4, "failed": 0, "skipped": 0}
    assert result["targets"]["dev002/s1"]["model_sha256"] == manifest["sha256"]
    assert result["targets"]["dev001/s1"]["model_sha256"] != manifest["sha256"]
