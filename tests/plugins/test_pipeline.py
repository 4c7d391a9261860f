"""Pipeline steps as plain functions, on real SQL and a real Azurite."""
from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pandas as pd
import pytest

from batch_scoring.config import settings
from batch_scoring.pipeline import (
    Interval,
    PipelineError,
    chunk,
    collect_interval,
    model_targets,
    snapshot_interval,
    unit_label,
    validate_prediction,
)

START = dt.datetime(2026, 5, 1, 10)
INTERVAL = Interval(START, START + dt.timedelta(hours=1))


def test_interval_key_round_trip_and_context():
    assert INTERVAL.key == "20260501T1000Z_20260501T1100Z"
    assert Interval.from_key(INTERVAL.key) == INTERVAL
    aware = {"data_interval_start": START.replace(tzinfo=dt.timezone.utc),
             "data_interval_end": dt.datetime(2026, 5, 1, 13, tzinfo=dt.timezone(dt.timedelta(hours=2)))}
    assert Interval.from_context(aware) == INTERVAL  # 13:00+02:00 is 11:00 UTC
    with pytest.raises(PipelineError, match="no data interval"):
        Interval.from_context({"data_interval_start": None, "data_interval_end": None, "run_id": "manual__x"})


def test_chunk_and_unit_label():
    assert chunk(list("abcde"), 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert chunk([], 3) == []
    assert unit_label(["d1/s1"]) == "d1/s1"
    assert unit_label(["d1/s1", "d1/s2", "d2/s1"]) == "d1/s1 .. d2/s1 (3)"


def _prediction(windows, **overrides) -> bytes:
    frame = pd.DataFrame({
        "device_id": "d1", "sensor_id": "s1", "window_start": windows,
        "window_end": [w + pd.Timedelta(minutes=5) for w in windows],
        "decision_score": np.linspace(-1, 1, len(windows)), "is_anomaly": [False] * len(windows),
        "model_sha256": "ab" * 32,
    })
    for column, value in overrides.items():
        if value is None:
            frame = frame.drop(columns=column)
        else:
            frame[column] = value
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


WINDOWS = list(pd.date_range(START, periods=12, freq="5min"))


@pytest.mark.parametrize("data, problem", [
    (b"PAR1 not really", "unreadable parquet"),
    (_prediction(WINDOWS)[:200], "unreadable parquet"),
    (_prediction(WINDOWS, decision_score=None), "missing columns ['decision_score']"),
    (_prediction(WINDOWS[:11]), "11 rows for 12 input windows"),
    (_prediction([w + pd.Timedelta(hours=1) for w in WINDOWS]), "windows differ"),
    (_prediction(WINDOWS, decision_score=[np.nan] + [0.0] * 11), "1 non-finite decision scores"),
    (_prediction(WINDOWS, sensor_id="s2"), "another device/sensor"),
    (_prediction(WINDOWS, model_sha256=["a"] * 6 + ["b"] * 6), "more than one model hash"),
])
def test_validate_prediction_names_each_problem(data, problem):
    summary, found = validate_prediction(data, "d1/s1", WINDOWS)
    assert summary is None and problem in found


def test_validate_prediction_accepts_a_good_blob():
    summary, problem = validate_prediction(_prediction(WINDOWS), "d1/s1", WINDOWS)
    starts = summary.pop("anomaly_starts")
    assert problem is None and summary == {"rows": 12, "anomalies": 0, "model_sha256": "ab" * 32}
    assert starts.dtype == "int64" and len(starts) == 0


@pytest.fixture
def seeded(sql_conn_str, blob_store):
    """Aggregates for d1/s1 and d1/s2 over the interval; models for d1/s1 and d9/s9."""
    from sensor_db.schema import connect, create_schema
    from ingest_sim.loads import upsert_aggregates

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


def test_collect_writes_manifest_and_fails_naming_missing_targets(seeded, blob_store):
    plan = snapshot_interval(seeded, blob_store, settings(), INTERVAL)
    plan["targets"] = ["d1/s1", "d1/s2"]  # as if d1/s2 had a model
    del plan["skipped"]["d1/s2"]
    blob_store.upload_bytes("predictions", f"{INTERVAL.key}/d1/s1.parquet", _prediction(WINDOWS))
    with pytest.raises(PipelineError, match=r"1 of 2 targets failed validation .*d1/s2: prediction blob missing"):
        collect_interval(blob_store, settings(), INTERVAL, plan)
    manifest = collect_interval(blob_store, settings(), INTERVAL, plan, min_coverage=0.5)
    assert manifest["counts"] == {"ok": 1, "failed": 1, "skipped": 1}
    assert manifest["targets"]["d1/s2"]["reason"] == "prediction blob missing"
    assert blob_store.exists("predictions", f"{INTERVAL.key}/_manifest.json")
