"""Fault matrix on the run's real steps: real SQLite over ODBC, real Azurite, the real scoring code.

Each case: the error names what is at fault, earlier good output is intact,
and the natural action (retry, fix and rerun) recovers with identical bytes.
The DAG-level cases (Airflow retries, trigger rules, params) are in
test_dag_faults.py; the RELIABILITY.md table maps every case to its test.
"""
from __future__ import annotations

import datetime as dt
import io
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from batch_scoring.errors import PermanentPipelineError, PipelineError

from batch_scoring.scoring.layout import interval_folder, manifest_blob, part_blob, snapshot_blob
from batch_scoring.scoring.part_file import read_receipts
from tests.reliability.conftest import HOUR, SCORING, TARGETS, interval

IV = interval()
KEY = IV.key  # 20260601T0800Z_20260601T0900Z
NEXT = interval(SCORING[0] + HOUR)


def _poke_context(iv=IV):
    return {"data_interval_start": iv.start.replace(tzinfo=dt.timezone.utc),
            "data_interval_end": iv.end.replace(tzinfo=dt.timezone.utc)}


def _sensor():
    from batch_scoring.operators.freshness import AggregatesFreshnessSensor

    return AggregatesFreshnessSensor(task_id="wait_for_aggregates", sql_conn_id="sensor_sql",
                                     blob_conn_id="sensor_blob", models_container="models",
                                     poke_interval=1, timeout=1)


# --- freshness ------------------------------------------------------------------------

def test_stale_and_incomplete_aggregates_name_targets_and_missing_windows(world):
    from batch_scoring.ingest_sim.loads import aggregate_range

    world.execute("DELETE FROM sensor_aggregates WHERE device_id = 'dev002' AND sensor_id = 's1' "
                  "AND window_start >= ?", dt.datetime(2026, 6, 1, 8, 40))
    world.execute("DELETE FROM sensor_aggregates WHERE device_id = 'dev001' AND sensor_id = 's2' "
                  "AND window_start >= ?", dt.datetime(2026, 6, 1, 8, 0))
    sensor = _sensor()
    assert sensor.poke(_poke_context()) is False
    message = sensor.describe(*sensor._stale(_poke_context()))
    assert message.startswith(f"interval {KEY}: 2 of 4 targets stale:")
    assert ("dev001/s2 (data until 2026-06-01 08:00:00) missing 2026-06-01 08:00-09:00 (12 windows)") in message
    assert ("dev002/s1 (data until 2026-06-01 08:40:00) missing 2026-06-01 08:40-09:00 (4 windows)") in message
    assert "dev001/s1" not in message and "dev002/s2" not in message
    # the natural fix: the aggregator catches up (re-aggregating the readings), the next poke passes
    conn = world.connect()
    try:
        aggregate_range(conn, SCORING[0], SCORING[1])
    finally:
        conn.close()
    assert sensor.poke(_poke_context()) is True


# --- SQL unreachable ------------------------------------------------------------------------

def test_bad_sqlite_path_is_a_clear_error_and_fixing_the_connection_recovers(world, monkeypatch, tmp_path):
    from batch_scoring.hooks.sql import SensorSqlError
    from devstack.airflow_env import odbc_connection_uri_json

    monkeypatch.setenv("AIRFLOW_CONN_SENSOR_SQL", odbc_connection_uri_json("Driver=SQLite3;Database=/nonexistent/dir/sensors.db"))
    with pytest.raises(SensorSqlError) as err:
        _sensor().poke(_poke_context())
    assert "cannot connect to the aggregates database of Airflow connection 'sensor_sql'" in str(err.value)
    assert "database /nonexistent/dir/sensors.db" in str(err.value) and "connect failed" in str(err.value)
    # a path to an empty database: the query fails, naming the missing table
    monkeypatch.setenv("AIRFLOW_CONN_SENSOR_SQL", odbc_connection_uri_json(f"Driver=SQLite3;Database={tmp_path / 'empty.db'}"))
    with pytest.raises(SensorSqlError, match=r"query on the aggregates database .*empty\.db.*no such table: sensor_aggregates"):
        _sensor().poke(_poke_context())
    monkeypatch.setenv("AIRFLOW_CONN_SENSOR_SQL", odbc_connection_uri_json(world.sql))
    assert _sensor().poke(_poke_context()) is True


@pytest.fixture
def own_pg():
    """A PostgreSQL server of this test's own (the session's is shared): (conn_str, stop, start)."""
    import shutil
    import tempfile
    from pathlib import Path

    from devstack.postgres import start_postgres, stop_postgres
    from devstack.services import free_port

    base, port = Path(tempfile.mkdtemp(prefix="pg-reliability-")), free_port()
    server = start_postgres(base, port)
    try:
        yield (server.conn_str("postgres"), lambda: stop_postgres(server, "fast"), lambda: start_postgres(base, port))
    finally:
        stop_postgres(server, "immediate")
        shutil.rmtree(base, ignore_errors=True)


def test_postgresql_stopped_is_a_clear_error_and_a_retry_after_restart_succeeds(
        airflow_db, monkeypatch, own_pg, blob_conn_str, blob_store, tmp_path):
    from batch_scoring.hooks.sql import SensorSqlError, sensor_sql
    from batch_scoring.snapshot import snapshot_interval
    from devstack.airflow_env import blob_connection_json, odbc_connection_uri_json
    from tests.reliability.conftest import build_world

    pg, stop, start = own_pg
    monkeypatch.setenv("AIRFLOW_CONN_SENSOR_SQL", odbc_connection_uri_json(pg))
    monkeypatch.setenv("AIRFLOW_CONN_SENSOR_BLOB", blob_connection_json(blob_conn_str))
    world = build_world(pg, blob_conn_str, blob_store, tmp_path / "models")
    first = world.snapshot()
    good = world.store.download_bytes("aggregates", snapshot_blob(IV))
    stop()
    with pytest.raises(SensorSqlError) as err:
        with sensor_sql("sensor_sql") as conn:
            snapshot_interval(conn, world.store, world.settings, IV)
    message = str(err.value)
    assert "cannot connect to the aggregates database of Airflow connection 'sensor_sql'" in message
    assert "server 127.0.0.1:" in message and "Connection refused" in message
    assert world.store.download_bytes("aggregates", snapshot_blob(IV)) == good  # earlier output intact
    start()
    with sensor_sql("sensor_sql") as conn:  # the retry
        assert snapshot_interval(conn, world.store, world.settings, IV) == first
    assert world.store.download_bytes("aggregates", snapshot_blob(IV)) == good


# --- models ------------------------------------------------------------------------------

def _model(world, target, name="model.joblib") -> str:
    return f"{target}/{name}"


@pytest.mark.parametrize("fault, expected", [
    ("missing", r"dev001/s2: ModelNotFoundError: no model for target dev001/s2: model file .* does not exist"),
    ("other", r"dev001/s2: ModelIntegrityError: model for target dev001/s2 failed its integrity check: .* refusing to load it"),
    ("truncated", r"dev001/s2: ModelIntegrityError: .*file is truncated: \d+ of \d+ bytes"),
])
def test_bad_model_fails_its_target_only_and_redeploying_recovers(world, fault, expected):
    clean = world.run()
    good = world.predictions()
    blob = _model(world, "dev001/s2")
    original = world.store.download_bytes("models", blob)
    if fault == "missing":
        world.store.delete("models", blob)
    elif fault == "other":  # a valid model of another target: a pickle that does not match the manifest
        world.store.upload_bytes("models", blob, world.store.download_bytes("models", _model(world, "dev002/s2")))
    else:
        world.store.upload_bytes("models", blob, original[: len(original) // 2])
    plan = world.snapshot()
    errors = world.score(plan)
    assert list(errors) == ["dev001/s2"]
    assert pytest.approx(0) == 0 and __import__("re").search(expected, errors["dev001/s2"]), errors
    with pytest.raises(PipelineError, match=r"1 of 4 targets failed validation .*dev001/s2: scoring failed: Model"):
        world.collect(plan)
    after = world.predictions()
    # the unit's file holds no rows of it now (the good run's are gone), only its failed receipt
    assert pd.read_parquet(io.BytesIO(after[part_blob(IV, ["dev001/s2"])])).empty
    for t in ("dev001/s1", "dev002/s1", "dev002/s2"):
        assert after[part_blob(IV, [t])] == good[part_blob(IV, [t])]
    # redeploy the model, rerun: the interval is whole again, byte for byte
    world.store.upload_bytes("models", blob, original)
    assert world.run() == clean
    assert world.predictions() == good


def test_a_crashing_model_fails_its_target_and_the_others_finish(world):
    import hashlib

    import joblib

    from tests.reliability.exploding import ExplodingModel

    good_manifest = world.store.download_bytes("models", "dev002/s1/manifest.json")
    buf = io.BytesIO()
    joblib.dump(ExplodingModel(), buf)
    manifest = json.loads(good_manifest)
    manifest.update(sha256=hashlib.sha256(buf.getvalue()).hexdigest(), size_bytes=len(buf.getvalue()))
    world.store.upload_bytes("models", "dev002/s1/model.joblib", buf.getvalue())
    world.store.upload_bytes("models", "dev002/s1/manifest.json", json.dumps(manifest).encode())
    plan = world.snapshot()
    errors = world.score(plan)
    assert list(errors) == ["dev002/s1"] and "RuntimeError: model exploded while scoring" in errors["dev002/s1"]
    with pytest.raises(PipelineError, match="dev002/s1: scoring failed: RuntimeError: model exploded"):
        world.collect(plan)
    assert world.manifest()["counts"] == {"ok": 3, "failed": 1, "skipped": 0}


# --- snapshot ---------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_corrupt_or_missing_snapshot_is_named_and_rerunning_the_snapshot_recovers(world, damage):
    clean = world.run()
    good = world.predictions()
    name = snapshot_blob(IV)
    if damage == "truncated":
        data = world.store.download_bytes("aggregates", name)
        world.store.upload_bytes("aggregates", name, data[: len(data) // 3])
    else:
        world.store.delete("aggregates", name)
    plan = {"interval": KEY, "targets": TARGETS, "skipped": {}, "units": [[t] for t in TARGETS]}
    errors = world.score(plan)
    assert sorted(errors) == TARGETS
    what = "is unreadable" if damage == "truncated" else "does not exist"
    assert all(f"snapshot aggregates/{name} {what}" in e and "clear the snapshot task" in e for e in errors.values())
    with pytest.raises(PipelineError, match=f"cannot read the snapshot aggregates/{name}"):
        world.collect(plan)
    assert world.predictions() == good  # nothing overwritten by the failed attempts
    assert world.run() == clean and world.predictions() == good


# --- bad aggregate values and shapes -----------------------------------------------------------

@pytest.mark.parametrize("column, value", [("value_mean", None), ("value_min", float("nan")), ("value_max", float("inf"))])
def test_nan_inf_or_null_values_fail_only_their_target_naming_the_windows(world, column, value):
    from batch_scoring.ingest_sim.loads import aggregate_range

    clean = world.run()
    good = world.predictions()
    w = dt.datetime(2026, 6, 1, 8, 15)
    world.execute(f"UPDATE sensor_aggregates SET {column} = ? WHERE device_id = 'dev002' AND sensor_id = 's2' "
                  "AND window_start = ?", value, w)
    plan = world.snapshot()
    assert plan["targets"] == TARGETS  # values are per-target problems, the snapshot keeps the rest going
    errors = world.score(plan)
    assert list(errors) == ["dev002/s2"]
    assert "non-finite" in errors["dev002/s2"] and "2026-06-01 08:15:00" in errors["dev002/s2"], errors
    with pytest.raises(PipelineError, match=r"1 of 4 targets failed validation .*dev002/s2: scoring failed: .*non-finite"):
        world.collect(plan)
    manifest = world.manifest()
    assert manifest["targets"]["dev002/s2"]["status"] == "failed"
    assert "08:15" in manifest["targets"]["dev002/s2"]["reason"]
    assert all(world.predictions()[part_blob(IV, [t])] == good[part_blob(IV, [t])] for t in TARGETS[:3])
    # fix: re-aggregate the window from its readings (a revision of the window: late data), rerun
    conn = world.connect()
    try:
        aggregate_range(conn, w, w + dt.timedelta(minutes=5), revised_at=dt.datetime(2026, 6, 2))
    finally:
        conn.close()
    assert world.run() == {**clean, "aggregates_revised_at": "2026-06-02T00:00:00"}
    outputs = lambda blobs: {k: v for k, v in blobs.items() if not k.endswith("/_manifest.json")}  # noqa: E731
    assert outputs(world.predictions()) == outputs(good)


def test_null_std_is_a_single_reading_window_and_is_scored(world):
    """Documented choice: value_std NULL (a window with one reading has no std) is scored as std 0."""
    world.execute("UPDATE sensor_aggregates SET value_std = NULL WHERE device_id = 'dev002' AND sensor_id = 's2' "
                  "AND window_start = ?", dt.datetime(2026, 6, 1, 8, 15))
    manifest = world.run()
    assert manifest["counts"] == {"ok": 4, "failed": 0, "skipped": 0}


def _drop_primary_key(world):
    for sql in ("CREATE TABLE agg_nopk AS SELECT * FROM sensor_aggregates", "DROP TABLE sensor_aggregates",
                "ALTER TABLE agg_nopk RENAME TO sensor_aggregates"):
        world.execute(sql)


def _insert_window(world, target, start, minutes=5, mean=1.0):  # n_readings 7: the real rows have 10
    d, s = target.split("/")
    world.execute("INSERT INTO sensor_aggregates (device_id, sensor_id, window_start, window_end, value_mean, "
                  "value_min, value_max, value_std, n_readings) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  d, s, start, start + dt.timedelta(minutes=minutes), mean, mean - 1, mean + 1, 0.5, 7)


@pytest.mark.parametrize("case, message", [
    ("duplicate", "dev001/s1: duplicate windows starting 2026-06-01 08:10"),
    ("off_grid", "dev001/s1: 1 window(s) off the 5-minute grid, starting 2026-06-01 08:02:30"),
    ("wrong_length", "dev001/s1: 1 window(s) not 5 minutes long, starting 2026-06-01 08:55:00"),
    ("straddling", "dev001/s1: 1 window(s) off the 5-minute grid, starting 2026-06-01 08:57:30, "
                   "1 window(s) straddling the interval's bounds, starting 2026-06-01 08:57:30"),
])
def test_malformed_windows_stop_the_snapshot_naming_them(world, case, message):
    clean = world.run()
    good_snapshot = world.store.download_bytes("aggregates", snapshot_blob(IV))
    good = world.predictions()
    if case == "duplicate":  # only possible when the table lost its primary key
        _drop_primary_key(world)
        _insert_window(world, "dev001/s1", dt.datetime(2026, 6, 1, 8, 10))
        fix = "DELETE FROM sensor_aggregates WHERE device_id = 'dev001' AND sensor_id = 's1' AND window_start = ? AND n_readings = 7"
        at = dt.datetime(2026, 6, 1, 8, 10)
    elif case == "off_grid":
        at = dt.datetime(2026, 6, 1, 8, 2, 30)
        _insert_window(world, "dev001/s1", at)
    elif case == "wrong_length":
        world.execute("UPDATE sensor_aggregates SET window_end = ? WHERE device_id = 'dev001' AND sensor_id = 's1' "
                      "AND window_start = ?", dt.datetime(2026, 6, 1, 9, 5), dt.datetime(2026, 6, 1, 8, 55))
    else:
        at = dt.datetime(2026, 6, 1, 8, 57, 30)
        _insert_window(world, "dev001/s1", at)
    with pytest.raises(PermanentPipelineError) as err:  # retrying reads the same rows: the task fails at once
        world.snapshot()
    assert f"interval {KEY}: aggregates are malformed for 1 target(s), nothing was snapshotted" in str(err.value)
    assert message in str(err.value), str(err.value)
    assert world.store.download_bytes("aggregates", snapshot_blob(IV)) == good_snapshot
    assert world.predictions() == good
    # fix the rows, rerun
    if case == "duplicate":
        world.execute(fix, at)
    elif case == "wrong_length":
        world.execute("UPDATE sensor_aggregates SET window_end = ? WHERE device_id = 'dev001' AND sensor_id = 's1' "
                      "AND window_start = ?", dt.datetime(2026, 6, 1, 9, 0), dt.datetime(2026, 6, 1, 8, 55))
    else:
        world.execute("DELETE FROM sensor_aggregates WHERE window_start = ?", at)
    assert world.run() == clean and world.predictions() == good


def test_windows_outside_the_interval_are_never_read(world):
    _insert_window(world, "dev001/s1", dt.datetime(2026, 6, 1, 12, 0), mean=1e9)  # hours later
    for edge in (dt.datetime(2026, 6, 1, 7, 55), dt.datetime(2026, 6, 1, 9, 0)):  # the windows just before and after
        world.execute("UPDATE sensor_aggregates SET value_mean = 1e9 WHERE window_start = ?", edge)
    world.run()
    snap = pd.read_parquet(io.BytesIO(world.store.download_bytes("aggregates", snapshot_blob(IV))))
    assert snap["window_start"].min() == pd.Timestamp(IV.start) and snap["window_end"].max() == pd.Timestamp(IV.end)
    assert len(snap) == 48 and snap["value_mean"].max() < 1e9
    assert world.manifest()["rows"] == 48


def test_empty_interval_fails_clearly_and_leaves_other_intervals_alone(world):
    world.run(NEXT)
    good_next = world.predictions(NEXT)
    world.execute("DELETE FROM sensor_aggregates WHERE window_start >= ? AND window_start < ?", IV.start, IV.end)
    assert _sensor().poke(_poke_context()) is True  # watermarks reach past the interval: not stale, just empty
    plan = world.snapshot()
    assert plan["targets"] == [] and plan["skipped"] == {t: "no aggregates in the interval" for t in TARGETS}
    with pytest.raises(PipelineError, match=f"interval {KEY}: nothing to score \\(no targets with both aggregates and a model\\)"):
        world.collect(plan)
    assert world.manifest()["targets"] == {t: {"status": "skipped", "reason": "no aggregates in the interval"} for t in TARGETS}
    assert world.predictions(NEXT) == good_next


# --- predictions after scoring --------------------------------------------------------------

def _rewrite(world, name, change):
    """Alter a part file's rows (``change``: frame -> frame), keeping its schema and its footer (the receipts)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(world.store.download_bytes("predictions", name)))
    changed = pa.Table.from_pandas(change(table.to_pandas()), schema=table.schema, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(changed.replace_schema_metadata(table.schema.metadata), buf, compression="zstd")
    world.store.upload_bytes("predictions", name, buf.getvalue())


def test_collector_catches_every_deleted_truncated_or_altered_prediction(world):
    clean = world.run()
    good = world.predictions()
    p = {t: part_blob(IV, [t]) for t in TARGETS}  # one target per unit
    world.store.delete("predictions", p["dev001/s1"])
    world.store.upload_bytes("predictions", p["dev001/s2"], good[p["dev001/s2"]][:200])

    def flip(frame):
        frame.loc[0, "is_anomaly"] = not frame.loc[0, "is_anomaly"]
        return frame

    _rewrite(world, p["dev002/s1"], flip)
    _rewrite(world, p["dev002/s2"], lambda f: f.iloc[1:])
    with pytest.raises(PipelineError, match="4 of 4 targets failed validation"):
        world.collect(world.snapshot())
    reasons = {t: e["reason"] for t, e in world.manifest()["targets"].items()}
    assert reasons["dev001/s1"] == "part file missing"
    assert reasons["dev001/s2"].startswith("unreadable part file")
    assert reasons["dev002/s1"].startswith("1 anomaly flag(s) disagree with decision_score < threshold")
    assert reasons["dev002/s2"] == "11 rows for 12 input windows"
    # the rows that failed left the dataset (their receipts say why); the unreadable file is left as it is
    for target in ("dev002/s1", "dev002/s2"):
        left = world.store.download_bytes("predictions", p[target])
        assert pq.read_table(io.BytesIO(left)).num_rows == 0
        assert read_receipts(left)[0]["error"] == f"the collector's check failed: {reasons[target]}"
    assert world.store.download_bytes("predictions", p["dev001/s2"]) == good[p["dev001/s2"]][:200]
    # other alterations, one at a time
    for change, reason in [
        (lambda f: f.assign(model_sha256="0" * 64), "scored with model 000000000000, but the deployed model is"),
        (lambda f: f.assign(decision_score=f["decision_score"].where(f.index != 3, float("nan"))), "1 non-finite decision scores"),
        (lambda f: f.assign(device_id="dev009"), "part file: rows of targets outside the unit: dev009/s2"),
        # self-consistent edit (same side of the threshold): only the receipt's rows_sha256 can tell
        (lambda f: f.assign(decision_score=f["decision_score"] + 1e-9), "rows differ from those the scoring step wrote (rows_sha256)"),
    ]:
        world.store.upload_bytes("predictions", p["dev002/s2"], good[p["dev002/s2"]])
        _rewrite(world, p["dev002/s2"], change)
        with pytest.raises(PipelineError):
            world.collect(world.snapshot())
        assert world.manifest()["targets"]["dev002/s2"]["reason"].startswith(reason)
        assert pq.read_table(io.BytesIO(world.store.download_bytes("predictions", p["dev002/s2"]))).num_rows == 0
    # recovery with the local backend: rerun the scoring (clear the score tasks), same bytes
    assert world.run() == clean and world.predictions() == good


def test_collector_flags_an_unexpected_blob_in_the_interval_prefix(world):
    clean = world.run()
    good = world.predictions()
    stray = f"{interval_folder(IV)}dev009/s1.parquet"
    world.store.upload_bytes("predictions", stray, good[part_blob(IV, ["dev001/s1"])])
    with pytest.raises(PipelineError, match=f"1 unexpected blob\\(s\\) under predictions/{interval_folder(IV)} that no planned target wrote: {stray}"):
        world.collect(world.snapshot())
    manifest = world.manifest()
    assert manifest["unexpected_blobs"] == [stray] and manifest["counts"]["ok"] == 4
    world.store.delete("predictions", stray)
    assert world.collect(world.snapshot()) == clean


def test_prediction_of_a_target_now_skipped_is_removed_not_trusted(world):
    world.run()
    for name in ("dev002/s2/model.joblib", "dev002/s2/manifest.json"):
        world.store.delete("models", name)  # model retired: its old prediction must not linger unnoticed
    plan = world.snapshot()
    assert plan["skipped"] == {"dev002/s2": "no model deployed"}
    manifest = world.collect(plan)  # its part file is no unit's of this run: the collector removes it
    assert manifest["targets"]["dev002/s2"] == {"status": "skipped", "reason": "no model deployed"}
    assert sorted(world.predictions()) == sorted([part_blob(IV, [t]) for t in TARGETS[:3]] + [manifest_blob(IV)])


# --- coverage policy -------------------------------------------------------------------------

def test_coverage_policy_records_who_succeeded_failed_or_was_skipped_and_why(world):
    world.store.upload_bytes("models", "dev001/s1/model.joblib", b"tampered")
    for name in ("dev002/s2/model.joblib", "dev002/s2/manifest.json"):
        world.store.delete("models", name)
    plan = world.snapshot()
    world.score(plan)
    with pytest.raises(PipelineError, match=r"1 of 3 targets failed validation \(coverage 66.7% < 100%\): dev001/s1"):
        world.collect(plan)  # default: every target must validate
    manifest = world.collect(plan, min_coverage=0.6)  # a minimum fraction: passes, the misses listed
    assert manifest["min_coverage"] == 0.6 and manifest["coverage"] == pytest.approx(2 / 3, abs=1e-6)
    assert manifest["counts"] == {"ok": 2, "failed": 1, "skipped": 1}
    t = manifest["targets"]
    assert {k: v["status"] for k, v in t.items()} == {"dev001/s1": "failed", "dev001/s2": "ok", "dev002/s1": "ok", "dev002/s2": "skipped"}
    assert "integrity check" in t["dev001/s1"]["reason"]
    assert t["dev002/s2"] == {"status": "skipped", "reason": "no model deployed"}
    assert t["dev001/s2"]["rows"] == 12 and len(t["dev001/s2"]["sha256"]) == 64
    with pytest.raises(PipelineError, match="coverage 66.7% < 70%"):
        world.collect(plan, min_coverage=0.7)


def test_collector_confirms_what_the_units_validated_without_reading_it_back(world):
    clean = world.run()
    plan = world.snapshot()
    reads = []
    download = world.store.download_bytes
    world.store.download_bytes = lambda container, name: reads.append(f"{container}/{name}") or download(container, name)
    verified = {}
    from batch_scoring.collect import collect_interval

    manifest = collect_interval(world.store, world.settings, IV, plan, unit_receipts=world.unit_receipts[KEY], verified=verified)
    assert manifest == clean and verified == {"confirmed": 4, "read": 0} and reads == []
    # without the units' receipts (e.g. the Azure ML backend) every target is read back: the same manifest
    manifest = collect_interval(world.store, world.settings, IV, plan, verified=verified)
    assert manifest == clean and verified == {"confirmed": 0, "read": 4}
    assert sorted(r for r in reads if r.endswith(".parquet") and r.startswith("predictions/")) == \
        sorted(f"predictions/{part_blob(IV, [t])}" for t in TARGETS)
