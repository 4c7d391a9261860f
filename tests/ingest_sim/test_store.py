"""ingest_sim.store on both engines: outcomes (rows, values, dtypes)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ingest_sim import db, store
from ingest_sim.aggregator import aggregate_readings
from ingest_sim.csv_loader import load_csv
from scoring.config import AGGREGATE_COLUMNS

REFERENCE_CSV = Path(__file__).resolve().parents[3] / "shared" / "reference" / "sensor_data.csv"
T0 = dt.datetime(2024, 1, 1)


def _count(conn, table):
    cur = conn.cursor()
    cur.execute(f"SELECT COUNT(*) FROM {table}")
    n = int(cur.fetchone()[0])
    cur.close()
    return n


def readings(minutes=60, step_s=10, targets=(("d1", "s1"), ("d1", "s2"), ("d2", "s1")), start=T0, seed=0):
    rng = np.random.default_rng(seed)
    ts = pd.date_range(start, start + dt.timedelta(minutes=minutes), freq=f"{step_s}s", inclusive="left")
    frames = [
        pd.DataFrame({"ts": ts, "device_id": d, "sensor_id": s, "value": rng.normal(10, 1, len(ts))})
        for d, s in targets
    ]
    return pd.concat(frames, ignore_index=True)


def test_load_readings_is_idempotent(conn):
    df = readings()
    first = store.load_readings(conn, df)
    assert (first.inserted, first.updated, first.unchanged) == (len(df), 0, 0)
    assert len(first.windows) == 3 * 12 and first.late.empty
    again = store.load_readings(conn, df)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, len(df)) and again.windows.empty
    assert _count(conn, db.READINGS) == len(df)
    back = store.read_readings(conn, T0, T0 + dt.timedelta(hours=1))
    assert list(back.columns) == ["ts", "device_id", "sensor_id", "value"]
    assert str(back["ts"].dtype) == "datetime64[us]" and back["value"].dtype == np.float64
    expected = df.sort_values(["device_id", "sensor_id", "ts"]).reset_index(drop=True)
    assert back["value"].tolist() == expected["value"].tolist()  # exact doubles on both engines
    assert (back["ts"].to_numpy() == expected["ts"].astype("datetime64[us]").to_numpy()).all()


def test_load_readings_only_touches_its_keys(conn):
    store.upsert_readings(conn, readings())
    # a second load for d1/s1 over 10 minutes with new values replaces just those rows
    part = readings(minutes=10, targets=(("d1", "s1"),), seed=1)
    assert store.upsert_readings(conn, part).updated == 60
    back = store.read_readings(conn, T0, T0 + dt.timedelta(hours=1), targets=["d1/s1"])
    assert len(back) == 360
    assert back["value"].head(60).tolist() == part["value"].tolist()
    assert len(store.read_readings(conn, T0, T0 + dt.timedelta(hours=1))) == 3 * 360


def test_aggregate_range_is_idempotent_and_replaces_windows(conn):
    df = readings()
    store.upsert_readings(conn, df)
    end = T0 + dt.timedelta(hours=1)
    n1 = store.aggregate_range(conn, T0, end)
    assert n1 == 3 * 12
    first = store.read_aggregates(conn, T0, end)
    n2 = store.aggregate_range(conn, T0, end)
    assert n2 == n1 and _count(conn, db.AGGREGATES) == n1
    pd.testing.assert_frame_equal(store.read_aggregates(conn, T0, end), first)
    expected = aggregate_readings(df, 5)
    np.testing.assert_allclose(first["value_mean"], expected["value_mean"], rtol=0, atol=1e-12)

    # change one reading in window 00:05-00:10 of d1/s1 and re-aggregate a sub-range
    changed = df[(df.device_id == "d1") & (df.sensor_id == "s1") & (df.ts == T0 + dt.timedelta(minutes=6))].copy()
    changed["value"] = 1000.0
    store.upsert_readings(conn, changed)
    assert store.aggregate_range(conn, T0 + dt.timedelta(minutes=6), T0 + dt.timedelta(minutes=7)) == 3
    after = store.read_aggregates(conn, T0, end, targets=["d1/s1"])
    assert _count(conn, db.AGGREGATES) == n1
    w = after.set_index("window_start").loc[pd.Timestamp(T0 + dt.timedelta(minutes=5))]
    assert w["value_max"] == 1000.0 and w["n_readings"] == 30
    other = after.set_index("window_start").loc[pd.Timestamp(T0)]
    assert other["value_max"] < 1000.0


def test_read_aggregates_boundaries_and_dtypes(conn):
    store.upsert_readings(conn, readings())
    store.aggregate_range(conn, T0, T0 + dt.timedelta(hours=1))
    # windows fully inside [00:10, 00:30): 00:10, 00:15, 00:20, 00:25
    got = store.read_aggregates(conn, T0 + dt.timedelta(minutes=10), T0 + dt.timedelta(minutes=30))
    assert list(got.columns) == list(AGGREGATE_COLUMNS)
    assert sorted(set(got["window_start"].dt.minute)) == [10, 15, 20, 25]
    assert len(got) == 3 * 4
    # a window straddling the interval edge is excluded
    straddle = store.read_aggregates(conn, T0 + dt.timedelta(minutes=12), T0 + dt.timedelta(minutes=30))
    assert sorted(set(straddle["window_start"].dt.minute)) == [15, 20, 25]
    assert got.dtypes.astype(str).to_dict() == {
        "device_id": "str", "sensor_id": "str",
        "window_start": "datetime64[us]", "window_end": "datetime64[us]",
        "value_mean": "float64", "value_min": "float64", "value_max": "float64", "value_std": "float64",
        "n_readings": "int64",
    }
    assert got[["device_id", "sensor_id", "window_start"]].equals(
        got.sort_values(["device_id", "sensor_id", "window_start"])[["device_id", "sensor_id", "window_start"]]
    )
    only = store.read_aggregates(conn, T0, T0 + dt.timedelta(hours=1), targets=[("d2", "s1"), "d1/s2"])
    assert sorted(set(zip(only.device_id, only.sensor_id))) == [("d1", "s2"), ("d2", "s1")]
    assert store.read_aggregates(conn, T0, T0 + dt.timedelta(hours=1), targets=[]).empty
    # timezone-aware bounds are converted to UTC
    aware = store.read_aggregates(conn, "2024-01-01T01:10:00+01:00", "2024-01-01T01:30:00+01:00")
    pd.testing.assert_frame_equal(aware, got)


def test_upsert_aggregates_and_nulls(conn):
    aggs = aggregate_readings(readings(minutes=10), 5)
    assert store.upsert_aggregates(conn, aggs) == len(aggs)
    changed = aggs.head(1).assign(value_mean=42.0, value_std=np.nan)
    assert store.upsert_aggregates(conn, changed) == 1
    back = store.read_aggregates(conn, T0, T0 + dt.timedelta(minutes=10))
    assert len(back) == len(aggs)
    assert back.loc[0, "value_mean"] == 42.0 and np.isnan(back.loc[0, "value_std"])
    assert back["value_std"].dtype == np.float64


def test_empty_reads_have_the_schema(conn):
    got = store.read_aggregates(conn, T0, T0 + dt.timedelta(hours=1))
    assert got.empty and list(got.columns) == list(AGGREGATE_COLUMNS)
    assert str(got["window_start"].dtype) == "datetime64[us]" and got["n_readings"].dtype == np.int64
    assert store.aggregate_range(conn, T0, T0 + dt.timedelta(hours=1)) == 0
    with pytest.raises(ValueError, match="empty interval"):
        store.read_aggregates(conn, T0, T0)


def test_stale_targets(conn):
    store.upsert_readings(conn, readings(minutes=60, targets=(("d1", "s1"),)))
    store.upsert_readings(conn, readings(minutes=30, targets=(("d1", "s2"),)))
    store.aggregate_range(conn, T0, T0 + dt.timedelta(hours=1))
    marks = store.target_watermarks(conn, ["d1/s1", "d1/s2", "d9/s9"])
    assert marks == {"d1/s1": T0 + dt.timedelta(hours=1), "d1/s2": T0 + dt.timedelta(minutes=30), "d9/s9": None}
    assert store.target_watermarks(conn) == {"d1/s1": T0 + dt.timedelta(hours=1), "d1/s2": T0 + dt.timedelta(minutes=30)}
    stale = store.stale_targets(conn, T0, T0 + dt.timedelta(hours=1), ["d1/s1", "d1/s2", "d9/s9"])
    assert stale == {"d1/s2": T0 + dt.timedelta(minutes=30), "d9/s9": None}
    assert store.stale_targets(conn, T0, T0 + dt.timedelta(minutes=30), ["d1/s1", "d1/s2"]) == {}


def test_labels_replace_and_read(conn):
    labels = pd.DataFrame({
        "device_id": ["d1", "d1"], "sensor_id": ["s1", "s1"], "kind": ["spike", "level_shift"],
        "start_ts": [T0 + dt.timedelta(minutes=5), T0 + dt.timedelta(minutes=30)],
        "end_ts": [T0 + dt.timedelta(minutes=10), T0 + dt.timedelta(minutes=50)],
        "magnitude": [6.0, 3.5],
    })
    assert store.replace_labels(conn, labels) == 2
    assert store.replace_labels(conn, labels) == 2
    got = store.read_labels(conn)
    assert len(got) == 2 and got["kind"].tolist() == ["spike", "level_shift"]
    assert str(got["start_ts"].dtype) == "datetime64[us]" and got["magnitude"].tolist() == [6.0, 3.5]
    assert store.read_labels(conn, T0 + dt.timedelta(minutes=10), T0 + dt.timedelta(minutes=30)).empty  # end exclusive
    assert len(store.read_labels(conn, T0 + dt.timedelta(minutes=9), T0 + dt.timedelta(minutes=31))) == 2
    # a re-simulation without anomalies clears the range
    assert store.replace_labels(conn, labels.iloc[0:0], start=T0, end=T0 + dt.timedelta(hours=1), targets=["d1/s1"]) == 0
    assert store.read_labels(conn).empty


def test_reference_csv_loads_and_aggregates(conn):
    df = load_csv(REFERENCE_CSV)
    assert store.upsert_readings(conn, df).inserted == 17768
    start, end = dt.datetime(2018, 8, 28, 23), dt.datetime(2018, 8, 29, 3, 15)
    back = store.read_readings(conn, start, end)
    assert len(back) == 17768
    assert back["value"].sum() == pytest.approx(df["value"].sum(), rel=1e-12)
    n = store.aggregate_range(conn, start, end)
    aggs = store.read_aggregates(conn, start, end)
    assert n == len(aggs) == 15 * 51  # 23:00 .. 03:10 → 51 five-minute windows per target
    assert aggs["n_readings"].sum() == 17768
    expected = aggregate_readings(df, 5)
    np.testing.assert_allclose(aggs["value_mean"].to_numpy(), expected["value_mean"].to_numpy(), rtol=0, atol=1e-9)
    assert store.stale_targets(conn, start, end, [f"{d}/{s}" for d in "123" for s in "12345"]) == {}


def test_reads_do_not_block_another_writer(conn, sql_conn_str):
    """A long-lived reader (the DAG's freshness sensor) must not lock out the loader."""
    import time

    store.upsert_readings(conn, readings(minutes=10))
    store.read_readings(conn, T0, T0 + dt.timedelta(hours=1))
    store.target_watermarks(conn)
    writer = db.connect(sql_conn_str)
    try:
        t0 = time.perf_counter()
        assert store.aggregate_range(writer, T0, T0 + dt.timedelta(minutes=10)) == 6
        assert time.perf_counter() - t0 < 5
    finally:
        writer.close()
    assert len(store.read_aggregates(conn, T0, T0 + dt.timedelta(minutes=10))) == 6
