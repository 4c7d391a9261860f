"""The snapshot step on real SQL and a real Azurite."""
from __future__ import annotations

import io

import pandas as pd
import pytest

from batch_scoring.config import settings
from batch_scoring.errors import PipelineError
from batch_scoring.snapshot import frame_to_parquet_bytes, model_targets, require_snapshot, snapshot_interval
from tests.plugins.predictions import INTERVAL, WINDOWS


@pytest.fixture
def seeded(sql_conn_str, blob_store):
    """Aggregates for d1/s1 and d1/s2 over the interval; models for d1/s1 and d9/s9."""
    from batch_scoring.sensor_db.schema import connect, create_schema
    from batch_scoring.ingest_sim.loads import upsert_aggregates

    rows = []
    for sensor in ("s1", "s2"):
        for w in WINDOWS:
            rows.append(("d1", sensor, w, w + pd.Timedelta(minutes=5), 10.0, 9.0, 11.0, 0.5, 30))
    frame = pd.DataFrame(rows, columns=["device_id", "sensor_id", "window_start", "window_end", "value_mean",
                                        "value_min", "value_max", "value_std", "n_readings"])
    conn = connect(sql_conn_str)
    create_schema(conn)
    upsert_aggregates(conn, frame)
    for target in ("d1/s1", "d9/s9"):
        blob_store.upload_bytes("models", f"{target}/manifest.json", b"{}")
        blob_store.upload_bytes("models", f"{target}/model.joblib", b"x")
    blob_store.upload_bytes("models", "README.txt", b"not a model")
    yield conn
    conn.close()


def test_snapshot_plans_targets_and_reports_the_rest(seeded, blob_store):
    assert model_targets(blob_store, "models") == ["d1/s1", "d9/s9"]
    plan = snapshot_interval(seeded, blob_store, settings(), INTERVAL, targets_per_unit=1)
    assert plan["targets"] == ["d1/s1"]
    assert plan["units"] == [["d1/s1"]]
    assert plan["skipped"] == {"d1/s2": "no model deployed", "d9/s9": "no aggregates in the interval"}
    snapshot = pd.read_parquet(io.BytesIO(blob_store.download_bytes("aggregates", f"{INTERVAL.key}/aggregates.parquet")))
    assert len(snapshot) == 24 and set(snapshot["sensor_id"]) == {"s1", "s2"}
    require_snapshot(blob_store, settings().aggregates_container, INTERVAL)  # written: no error


def test_require_snapshot_names_the_missing_blob(blob_store):
    with pytest.raises(PipelineError, match=rf"snapshot aggregates/{INTERVAL.key}/aggregates.parquet does not exist"):
        require_snapshot(blob_store, settings().aggregates_container, INTERVAL)


def test_frame_to_parquet_bytes_round_trips_without_the_index():
    frame = pd.DataFrame({"a": [1, 2, 3]}, index=[7, 8, 9])
    back = pd.read_parquet(io.BytesIO(frame_to_parquet_bytes(frame, row_group_size=2)))
    assert back["a"].tolist() == [1, 2, 3] and back.index.tolist() == [0, 1, 2]
