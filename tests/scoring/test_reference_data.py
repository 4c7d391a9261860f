"""The approach on the reference's real sensor data (no labels: few windows may be flagged)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from batch_scoring.ingest_sim.aggregator import aggregate_readings
from batch_scoring.scoring.score import score_unit
from batch_scoring.scoring.train import train_models

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "sensor_data.csv"


@pytest.mark.skipif(not REFERENCE.exists(), reason="reference data not available")
def test_reference_train_two_hours_score_the_rest(tmp_path):
    raw = pd.read_csv(REFERENCE, parse_dates=["TS"])
    readings = pd.DataFrame({
        "ts": raw["TS"], "device_id": raw["Device"].astype(str),
        "sensor_id": raw["Sensor"].astype(str), "value": raw["Value"].astype(float),
    })
    aggs = aggregate_readings(readings)
    split = pd.Timestamp("2018-08-29 01:00")
    manifests = train_models(aggs, tmp_path / "m", "2018-08-28 23:00", split)
    assert len(manifests) == 15
    assert all(m["training"]["n_windows"] == 24 for m in manifests)
    rest = aggs[aggs.window_start >= split]
    receipts = score_unit(rest, tmp_path / "m", tmp_path / "o", [m["target"] for m in manifests])
    assert all(r["status"] == "ok" for r in receipts), receipts
    preds = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "o").rglob("*.parquet")))
    complete = preds[preds.window_end <= pd.Timestamp("2018-08-29 03:10")]  # data end 03:12:30
    flagged = int(complete["is_anomaly"].sum())
    print(f"\nreference: {flagged}/{len(complete)} complete windows flagged, "
          f"{int(preds['is_anomaly'].sum())}/{len(preds)} incl. the half-filled last window")
    assert flagged / len(complete) <= 0.05
