"""End to end under dag.test(): real Airflow, real Azurite, real SQL over ODBC, local backend."""
from __future__ import annotations

import datetime as dt
import pandas as pd
import pytest

from batch_scoring.scoring.layout import interval_prefix, part_blob, snapshot_blob
from batch_scoring.unit_checks import part_receipts
from tests.dags.conftest import build_world, collect_result, HOUR, read_manifest, read_parquet_blob, run_interval

HISTORY = (dt.datetime(2026, 3, 1), dt.datetime(2026, 3, 2))
SCORING = (dt.datetime(2026, 3, 2), dt.datetime(2026, 3, 2, 2))


@pytest.fixture
def world(airflow_db, airflow_connections, blob_store, tmp_path):
    return build_world(airflow_connections[0], blob_store, tmp_path / "models", devices=3, sensors=2,
                       history=HISTORY, scoring=SCORING, reading_seconds=30, seed=3)


def test_one_interval_writes_every_prediction_and_the_manifest(dag, world, blob_store):
    run, ok = run_interval(dag, SCORING[0])
    assert ok, run.state
    key = "20260302T0000Z_20260302T0100Z"
    targets = [f"dev{d:03d}/s{s}" for d in (1, 2, 3) for s in (1, 2)]
    names = set(blob_store.list_names("predictions", interval_prefix(key)))
    for target in targets:  # targets_per_unit=1 (the default): one part file per target, its receipt in the footer
        assert part_blob(key, [target]) in names
        assert [r["status"] for r in part_receipts(blob_store, "predictions", part_blob(key, [target]))] == ["ok"]
        frame = read_parquet_blob(blob_store, "predictions", part_blob(key, [target]))
        assert len(frame) == 12  # one row per five-minute window of the hour
        assert frame["window_start"].min() == pd.Timestamp("2026-03-02 00:00")
        assert frame["window_end"].max() == pd.Timestamp("2026-03-02 01:00")
    manifest = read_manifest(blob_store, key)
    assert manifest["counts"] == {"ok": 6, "failed": 0, "skipped": 0}
    assert sorted(manifest["targets"]) == targets
    assert manifest["rows"] == 72
    snapshot = read_parquet_blob(blob_store, "aggregates", snapshot_blob(key))
    assert len(snapshot) == 72 and snapshot["window_start"].min() == pd.Timestamp("2026-03-02 00:00")
    # the units validated what they wrote, so the collector confirmed every blob by its MD5 instead of reading it
    assert collect_result(run)["verified"] == {"confirmed": 6, "read": 0}


def test_rerun_overwrites_with_identical_bytes(dag, world, blob_store):
    key = "20260302T0100Z_20260302T0200Z"
    assert run_interval(dag, SCORING[0] + HOUR)[1]
    first = {n: blob_store.download_bytes("predictions", n) for n in blob_store.list_names("predictions", interval_prefix(key))}
    assert run_interval(dag, SCORING[0] + HOUR)[1]
    second = {n: blob_store.download_bytes("predictions", n) for n in blob_store.list_names("predictions", interval_prefix(key))}
    assert first == second and len(first) == 9  # 6 part files (one target each) + manifest + report + heatmap
