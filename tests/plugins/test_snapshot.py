"""The snapshot step on real SQL and a real Azurite."""
from __future__ import annotations

import io

import pandas as pd
import pytest

from batch_scoring.config import settings
from batch_scoring.errors import PipelineError
from batch_scoring import snapshot as snapshot_module
from batch_scoring.errors import PermanentPipelineError
from batch_scoring.snapshot import (RowGroupWriter, frame_to_parquet_bytes, model_targets, require_snapshot,
                                    snapshot_interval)
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


SNAPSHOT = f"{INTERVAL.key}/aggregates.parquet"


def test_a_read_of_many_batches_gives_the_bytes_of_a_one_batch_read(seeded, blob_store, monkeypatch):
    """Issue 14 item 5: streamed in fetches of 5 rows (24 rows, 2 targets) = one fetch = the whole-frame parquet."""
    import pyarrow.parquet as pq
    from batch_scoring.sensor_db.reads import read_aggregates

    monkeypatch.setattr(snapshot_module, "SNAPSHOT_ROW_GROUP", 7)  # several row groups, one straddling the targets
    streamed = snapshot_interval(seeded, blob_store, settings(), INTERVAL, batch_rows=5)
    streamed_bytes = blob_store.download_bytes("aggregates", SNAPSHOT)
    one = snapshot_interval(seeded, blob_store, settings(), INTERVAL)
    one_bytes = blob_store.download_bytes("aggregates", SNAPSHOT)
    whole = frame_to_parquet_bytes(read_aggregates(seeded, INTERVAL.start, INTERVAL.end), 7)  # the read before streaming
    assert streamed == one and streamed["targets"] == ["d1/s1"]
    assert streamed_bytes == one_bytes == whole
    meta = pq.ParquetFile(io.BytesIO(streamed_bytes)).metadata
    assert meta.num_rows == 24 and [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [7, 7, 7, 3]


def test_a_malformed_target_straddling_a_fetch_boundary_is_named_and_nothing_written(seeded, blob_store):
    """d1/s1's duplicate window falls across fetches of 5 rows: the carried tail checks the target whole."""
    from tests.sensor_db.test_reads import _drop_primary_key, _execute

    snapshot_interval(seeded, blob_store, settings(), INTERVAL)
    good = blob_store.download_bytes("aggregates", SNAPSHOT)
    _drop_primary_key(seeded)
    _execute(seeded, "INSERT INTO sensor_aggregates SELECT * FROM sensor_aggregates WHERE device_id = 'd1' AND "
                     "sensor_id = 's1' AND window_start = ?", WINDOWS[4].to_pydatetime())  # rows 5 and 6 of d1/s1
    with pytest.raises(PermanentPipelineError) as err:
        snapshot_interval(seeded, blob_store, settings(), INTERVAL, batch_rows=5)
    assert str(err.value).startswith(
        f"interval {INTERVAL.key}: aggregates are malformed for 1 target(s), nothing was snapshotted: "
        "d1/s1: duplicate windows starting 2026-05-01 10:20; fix the rows"), str(err.value)
    assert blob_store.download_bytes("aggregates", SNAPSHOT) == good  # the earlier snapshot intact


def test_row_group_writer_writes_the_bytes_of_one_frame(tmp_path):
    """Frames of 3, 7, 0 and 1 rows in groups of 4 = to_parquet of the 11 rows joined; no frame: no file."""
    frame = pd.DataFrame({"device_id": [f"d{i}" for i in range(11)], "value": [i / 3 for i in range(11)],
                          "ts": pd.date_range("2026-01-01", periods=11, freq="5min", unit="us")})
    writer = RowGroupWriter(tmp_path / "a.parquet", 4)
    for lo, hi in ((0, 3), (3, 10), (10, 10), (10, 11)):
        writer.write(frame.iloc[lo:hi])
    writer.close()
    assert writer.rows == 11
    assert (tmp_path / "a.parquet").read_bytes() == frame_to_parquet_bytes(frame, 4)
    RowGroupWriter(tmp_path / "none.parquet", 4).close()
    assert not (tmp_path / "none.parquet").exists()


def test_a_revision_committed_while_the_read_streams_is_newer_than_the_one_recorded(seeded, blob_store, sql_conn_str,
                                                                                     monkeypatch):
    """The plan records the interval's latest revision as it was before the read: a late-data revision the loader
    commits mid-read is then newer than the recorded one, so a later freshness check finds the interval stale."""
    import datetime as dt

    from batch_scoring.ingest_sim.loads import upsert_aggregates
    from batch_scoring.sensor_db import reads
    from batch_scoring.sensor_db.schema import connect

    streamed = reads.stream_interval_aggregates

    def stream_then_revise(*args, **kwargs):
        for n, block in enumerate(streamed(*args, **kwargs)):
            if n == 1:  # mid-read: the loader rewrites a window of d1/s1 (late data)
                writer = connect(sql_conn_str)
                try:
                    late = pd.DataFrame([("d1", "s1", WINDOWS[0], WINDOWS[0] + pd.Timedelta(minutes=5),
                                          99.0, 9.0, 11.0, 0.5, 30)],
                                        columns=["device_id", "sensor_id", "window_start", "window_end", "value_mean",
                                                 "value_min", "value_max", "value_std", "n_readings"])
                    upsert_aggregates(writer, late, revised_at=dt.datetime(2030, 1, 1))
                finally:
                    writer.close()
            yield block

    monkeypatch.setattr(reads, "stream_interval_aggregates", stream_then_revise)
    plan = snapshot_interval(seeded, blob_store, settings(), INTERVAL, targets_per_unit=1, batch_rows=5)
    assert plan["aggregates_revised_at"] is None  # nothing was revised when the read began
    assert reads.interval_revised_at(seeded, INTERVAL.start, INTERVAL.end) == dt.datetime(2030, 1, 1)
