"""The simulator: shape, normal behaviour, reproducibility, every anomaly kind, speed."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pandas.testing as pdt

from batch_scoring.ingest_sim.aggregator import aggregate_readings
from batch_scoring.ingest_sim.simulator import KINDS, LABEL_COLUMNS, pair_profile, sensor_band, simulate

DAY = ("2026-03-02", "2026-03-03")


def test_columns_ids_and_range():
    readings, labels = simulate(2, 3, "2026-03-02 00:00", "2026-03-02 01:00", anomalies=False)
    assert list(readings.columns) == ["ts", "device_id", "sensor_id", "value"]
    assert str(readings["ts"].dtype).startswith("datetime64")
    assert readings["ts"].dt.tz is None
    assert sorted(readings["device_id"].unique()) == ["dev001", "dev002"]
    assert sorted(readings["sensor_id"].unique()) == ["s1", "s2", "s3"]
    assert readings["ts"].min() >= pd.Timestamp("2026-03-02 00:00")
    assert readings["ts"].max() < pd.Timestamp("2026-03-02 01:00")
    # 360 slots per pair per hour, 2 % lost at random
    per_pair = readings.groupby(["device_id", "sensor_id"]).size()
    assert per_pair.between(330, 360).all()
    assert labels.empty and list(labels.columns) == list(LABEL_COLUMNS)


def test_normal_levels_follow_the_reference_bands():
    readings, _ = simulate(3, 6, *DAY, anomalies=False)
    for sensor, group in readings.groupby("sensor_id"):
        lo, hi = sensor_band(int(sensor[1:]))
        assert lo - 1 < group["value"].median() < hi + 1
    # stationary: the first and second half of the day have the same level
    one = readings[(readings.device_id == "dev001") & (readings.sensor_id == "s1")]
    prof = pair_profile(42, "dev001", "s1", 1)
    half = len(one) // 2
    assert abs(one["value"][:half].mean() - one["value"][half:].mean()) < prof["sigma"] / 2


def test_reproducible_and_profile_independent_of_range():
    a = simulate(2, 2, *DAY, seed=5)
    b = simulate(2, 2, *DAY, seed=5)
    pdt.assert_frame_equal(a[0], b[0])
    pdt.assert_frame_equal(a[1], b[1])
    c = simulate(2, 2, *DAY, seed=6)
    assert not np.allclose(a[0]["value"].to_numpy()[:100], c[0]["value"].to_numpy()[:100])
    # another range of the same pair: same base level (history and scoring days agree)
    other, _ = simulate(2, 2, "2026-03-01", "2026-03-02", seed=5, anomalies=False)
    m1 = a[0][(a[0].device_id == "dev001") & (a[0].sensor_id == "s2")]["value"].median()
    m2 = other[(other.device_id == "dev001") & (other.sensor_id == "s2")]["value"].median()
    assert abs(m1 - m2) < pair_profile(5, "dev001", "s2", 2)["sigma"]


def test_anomalies_only_after_anomaly_start_and_every_kind_present():
    start = pd.Timestamp("2026-03-02 12:00")
    readings, labels = simulate(10, 4, *DAY, anomaly_start=start)
    assert set(labels["kind"]) == set(KINDS)
    assert (labels["start_ts"] >= start).all()
    assert (labels["end_ts"] > labels["start_ts"]).all()
    assert (labels["end_ts"] <= pd.Timestamp(DAY[1])).all()
    # labels of one pair never overlap
    for _, g in labels.groupby(["device_id", "sensor_id"]):
        g = g.sort_values("start_ts")
        assert (g["start_ts"].to_numpy()[1:] >= g["end_ts"].to_numpy()[:-1]).all()
    # before anomaly_start the data equal... a normal simulation of the same range
    normal, _ = simulate(10, 4, *DAY, anomalies=False)
    early_a = readings[readings.ts < start - pd.Timedelta(minutes=30)].reset_index(drop=True)
    early_n = normal[normal.ts < start - pd.Timedelta(minutes=30)].reset_index(drop=True)
    pdt.assert_frame_equal(early_a, early_n)


def test_anomaly_signatures_in_the_aggregates():
    readings, labels = simulate(10, 4, *DAY, seed=3)
    aggs = aggregate_readings(readings)
    key = ["device_id", "sensor_id"]
    for row in labels.itertuples():
        w = aggs[(aggs.device_id == row.device_id) & (aggs.sensor_id == row.sensor_id)
                 & (aggs.window_start < row.end_ts) & (aggs.window_end > row.start_ts)]
        assert len(w) >= 1, row
        if row.kind == "stuck":
            assert (w["value_std"] == 0).all(), row
        elif row.kind == "dropout":
            assert (w["n_readings"] >= 2).all() and (w["n_readings"] <= 20).all(), row
        elif row.kind == "spike":
            assert len(w) == 1
            prof = pair_profile(3, row.device_id, row.sensor_id, int(row.sensor_id[1:]))
            assert (w["value_max"] - w["value_min"]).iloc[0] > 4 * prof["sigma"], row
    windows_per_pair = aggs.groupby(key).size()
    assert (windows_per_pair == 288).all()  # dropouts are partial: no window disappears
    sizes = labels.groupby("kind")["magnitude"]
    assert sizes.apply(lambda m: m.abs().min()).loc["spike"] >= 5
    assert sizes.apply(lambda m: m.abs().min()).loc["level_shift"] >= 2


def test_density_about_ten_to_fifteen_percent_of_windows():
    readings, labels = simulate(20, 4, *DAY, seed=11)
    aggs = aggregate_readings(readings)
    merged = aggs.merge(labels, on=["device_id", "sensor_id"])
    hit = merged[(merged.window_start < merged.end_ts) & (merged.window_end > merged.start_ts)]
    frac = hit[["device_id", "sensor_id", "window_start"]].drop_duplicates().shape[0] / len(aggs)
    assert 0.08 <= frac <= 0.18


def test_speed_twenty_devices_four_sensors_one_day():
    t0 = time.perf_counter()
    readings, _ = simulate(20, 4, *DAY)
    elapsed = time.perf_counter() - t0
    assert len(readings) > 600_000
    assert elapsed < 3.0, elapsed
