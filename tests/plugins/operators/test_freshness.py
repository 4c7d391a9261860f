"""The freshness sensor against real SQL and Azurite, and its message when data is stale."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from batch_scoring.operators.freshness import AggregatesFreshnessSensor

START = dt.datetime(2026, 5, 1, 10)
CONTEXT = {"data_interval_start": START.replace(tzinfo=dt.timezone.utc),
           "data_interval_end": (START + dt.timedelta(hours=1)).replace(tzinfo=dt.timezone.utc)}


def _aggregates(device, sensor, until):
    windows = pd.date_range(START, until, freq="5min", inclusive="left")
    return pd.DataFrame({"device_id": device, "sensor_id": sensor, "window_start": windows,
                         "window_end": windows + pd.Timedelta(minutes=5), "value_mean": 1.0, "value_min": 0.0,
                         "value_max": 2.0, "value_std": 0.5, "n_readings": 30})


@pytest.fixture
def sensor(airflow_db, airflow_connections, blob_store):
    from batch_scoring.sensor_db.schema import connect, create_schema
    from batch_scoring.ingest_sim.loads import upsert_aggregates

    conn = connect(airflow_connections[0])
    create_schema(conn)
    upsert_aggregates(conn, _aggregates("d1", "s1", START + dt.timedelta(hours=1)))
    upsert_aggregates(conn, _aggregates("d1", "s2", START + dt.timedelta(minutes=40)))
    conn.close()
    for target in ("d1/s1", "d1/s2", "d2/s1"):
        blob_store.upload_bytes("models", f"{target}/manifest.json", b"{}")
    return AggregatesFreshnessSensor(task_id="wait", sql_conn_id="sensor_sql", blob_conn_id="sensor_blob",
                                     models_container="models", poke_interval=1, timeout=1)


def test_stale_targets_are_named_with_how_far_their_data_reaches(sensor, blob_store):
    key, found = sensor._stale(CONTEXT)
    message = sensor.describe(key, found)
    assert message.startswith("interval 20260501T1000Z_20260501T1100Z: 2 of 3 targets stale:")
    assert "d1/s2 (data until 2026-05-01 10:40:00)" in message
    assert "d2/s1 (data until never)" in message
    assert "d1/s1" not in message
    assert sensor.poke(CONTEXT) is False


def test_fresh_once_every_model_target_reaches_the_end(sensor, blob_store):
    for name in ("d1/s2/manifest.json", "d2/s1/manifest.json"):
        blob_store.delete("models", name)
    assert sensor.poke(CONTEXT) is True


def test_no_models_is_never_fresh(sensor, blob_store):
    for name in blob_store.list_names("models"):
        blob_store.delete("models", name)
    assert sensor.poke(CONTEXT) is False
    assert "no targets have a deployed model" in sensor.describe(*sensor._stale(CONTEXT))
