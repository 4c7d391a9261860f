"""Bad input through the DAG: a clear error naming the target, and nothing else lost."""
from __future__ import annotations

import datetime as dt

import pytest

from batch_scoring.scoring.layout import part_blob
from batch_scoring.unit_checks import part_receipts
from tests.dags.conftest import build_world, read_manifest, read_parquet_blob, run_interval, task_states

HISTORY = (dt.datetime(2026, 4, 1), dt.datetime(2026, 4, 2))
SCORING = (dt.datetime(2026, 4, 2), dt.datetime(2026, 4, 2, 1))
KEY = "20260402T0000Z_20260402T0100Z"


@pytest.fixture
def world(airflow_db, airflow_connections, blob_store, tmp_path):
    return build_world(airflow_connections[0], blob_store, tmp_path / "models", devices=2, sensors=2,
                       history=HISTORY, scoring=SCORING, reading_seconds=30, seed=5)


@pytest.mark.parametrize("sql_conn_str", ["sqlite"], indirect=True)
def test_tampered_model_fails_only_its_target_and_names_it(dag, world, blob_store):
    model = blob_store.download_bytes("models", "dev002/s1/model.joblib")
    blob_store.upload_bytes("models", "dev002/s1/model.joblib", model[:-10] + b"0123456789")

    run, ok = run_interval(dag, SCORING[0])
    assert not ok
    states = task_states(run)
    assert [k for k, v in states.items() if k[0] == "score" and v != "success"] != []
    assert sum(1 for k, v in states.items() if k[0] == "score" and v == "success") == 3
    assert states[("collect", -1)] == "failed"

    manifest = read_manifest(blob_store, KEY)
    assert manifest["counts"] == {"ok": 3, "failed": 1, "skipped": 0}
    assert manifest["targets"]["dev002/s1"]["status"] == "failed"
    (receipt,) = part_receipts(blob_store, "predictions", part_blob(KEY, ["dev002/s1"]))  # its unit's file's footer
    assert receipt["status"] == "failed"
    assert "dev002/s1" in receipt["error"] and "sha256" in receipt["error"].lower()
    assert read_parquet_blob(blob_store, "predictions", part_blob(KEY, ["dev002/s1"])).empty  # no rows of it
    # the other targets' predictions are intact
    for target in ("dev001/s1", "dev001/s2", "dev002/s2"):
        assert manifest["targets"][target]["status"] == "ok"


@pytest.mark.parametrize("sql_conn_str", ["sqlite"], indirect=True)
def test_target_without_a_model_is_reported_as_skipped(dag, world, blob_store):
    for name in ("dev001/s2/model.joblib", "dev001/s2/manifest.json"):
        blob_store.delete("models", name)
    run, ok = run_interval(dag, SCORING[0])
    assert ok, run.state
    manifest = read_manifest(blob_store, KEY)
    assert manifest["targets"]["dev001/s2"] == {"status": "skipped", "reason": "no model deployed"}
    assert manifest["counts"] == {"ok": 3, "failed": 0, "skipped": 1}
