"""The pure window aggregator."""
from __future__ import annotations

import numpy as np
import pandas as pd

from batch_scoring.ingest_sim.aggregator import aggregate_readings
from batch_scoring.scoring.config import AGGREGATE_COLUMNS


def frame(rows):
    return pd.DataFrame(rows, columns=["ts", "device_id", "sensor_id", "value"]).assign(
        ts=lambda f: pd.to_datetime(f["ts"])
    )


def test_windows_stats_and_alignment():
    readings = frame([
        ("2026-01-01 00:00:00", "d1", "s1", 1.0),
        ("2026-01-01 00:02:00", "d1", "s1", 3.0),
        ("2026-01-01 00:04:59", "d1", "s1", 5.0),
        ("2026-01-01 00:05:00", "d1", "s1", 7.0),
        ("2026-01-01 00:01:00", "d1", "s2", 2.0),
    ])
    out = aggregate_readings(readings)
    assert list(out.columns) == list(AGGREGATE_COLUMNS)
    first = out[(out.sensor_id == "s1") & (out.window_start == pd.Timestamp("2026-01-01 00:00"))].iloc[0]
    assert first.window_end == pd.Timestamp("2026-01-01 00:05")
    assert (first.value_mean, first.value_min, first.value_max, first.n_readings) == (3.0, 1.0, 5.0, 3)
    assert np.isclose(first.value_std, np.std([1.0, 3.0, 5.0]))  # population std
    single = out[out.sensor_id == "s2"].iloc[0]
    assert single.value_std == 0 and single.n_readings == 1
    assert len(out) == 3


def test_frozen_values_give_zero_std_and_empty_input_keeps_schema():
    readings = frame([(f"2026-01-01 00:00:{s:02d}", "d", "s", 4.2) for s in range(0, 60, 10)])
    out = aggregate_readings(readings)
    assert out["value_std"].iloc[0] == 0
    empty = aggregate_readings(readings.iloc[:0])
    assert list(empty.columns) == list(AGGREGATE_COLUMNS) and empty.empty


def test_same_reading_same_window_whatever_the_range():
    readings = frame([(f"2026-01-01 00:{m:02d}:30", "d", "s", float(m)) for m in range(20)])
    whole = aggregate_readings(readings)
    part = aggregate_readings(readings.iloc[7:])
    merged = part.merge(whole, on=["device_id", "sensor_id", "window_start"], suffixes=("_p", "_w"))
    full = merged[merged.window_start >= pd.Timestamp("2026-01-01 00:10")]
    assert (full.value_mean_p == full.value_mean_w).all()
