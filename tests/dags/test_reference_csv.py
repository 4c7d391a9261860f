"""The reference implementation's real sensor data, as it is, through the whole product."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from batch_scoring.scoring.layout import part_blob
from tests.dags.conftest import read_manifest, read_parquet_blob, run_interval

REFERENCE_CSV = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "sensor_data.csv"
TRAIN = (dt.datetime(2018, 8, 28, 23), dt.datetime(2018, 8, 29, 1))
TARGETS = [f"{d}/{s}" for d in (1, 2, 3) for s in (1, 2, 3, 4, 5)]


@pytest.fixture
def reference_world(airflow_db, airflow_connections, blob_store, tmp_path):
    from batch_scoring.config import settings
    from devstack.world import train_and_deploy
    from batch_scoring.ingest_sim.csv_loader import load_csv
    from batch_scoring.sensor_db.schema import connect, create_schema
    from batch_scoring.ingest_sim.loads import aggregate_range, load_readings

    assert REFERENCE_CSV.exists(), f"reference data missing at {REFERENCE_CSV}"
    readings = load_csv(REFERENCE_CSV)
    conn = connect(airflow_connections[0])
    try:
        create_schema(conn)
        load_readings(conn, readings, aggregate=False)
        windows = aggregate_range(conn, readings["ts"].min(), readings["ts"].max() + dt.timedelta(seconds=1))
        models = train_and_deploy(conn, blob_store, settings(), tmp_path / "models", TRAIN)
    finally:
        conn.close()
    return len(readings), windows, models


def test_reference_csv_trains_on_two_hours_and_scores_the_rest(dag, reference_world, blob_store):
    readings, windows, models = reference_world
    assert readings == 17_768
    assert models == 15
    # The file covers 23:00:05 to 03:12:30: after the two training hours, the
    # complete hourly intervals are 01:00-02:00 and 02:00-03:00.
    for start, key in ((dt.datetime(2018, 8, 29, 1), "20180829T0100Z_20180829T0200Z"),
                       (dt.datetime(2018, 8, 29, 2), "20180829T0200Z_20180829T0300Z")):
        run, ok = run_interval(dag, start)
        assert ok, f"run for {key} ended {run.state}"
        manifest = read_manifest(blob_store, key)
        assert sorted(manifest["targets"]) == sorted(TARGETS)
        assert manifest["counts"] == {"ok": 15, "failed": 0, "skipped": 0}
        for target in TARGETS:
            frame = read_parquet_blob(blob_store, "predictions", part_blob(key, [target]))  # one target per unit
            assert len(frame) == 12, target
            assert frame["decision_score"].notna().all()
        # real data without injected anomalies: few windows flagged
        assert manifest["anomalies"] <= 0.1 * manifest["rows"]
