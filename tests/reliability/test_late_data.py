"""Late data for an interval already scored (issue 10, case 3): recorded by the load, found and marked by the
freshness check, cleared by the rescoring. Real SQLite over ODBC, real Azurite, the real sensor and pipeline."""
from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from batch_scoring.scoring.layout import part_blob, stale_marker_blob
from tests.reliability.conftest import HOUR, SCORING, interval

IV = interval()                      # 08:00-09:00, scored below
LATER = interval(SCORING[0] + HOUR)  # 09:00-10:00, the run whose freshness check notices


@pytest.fixture(autouse=True)
def _lookback(monkeypatch):
    """The world's revisions are dated June 2026: look back far enough from today's clock to see them."""
    monkeypatch.setenv("BATCH_SCORING_LATE_DATA_LOOKBACK_DAYS", "3650")


def _context(iv):
    return {"data_interval_start": iv.start.replace(tzinfo=dt.timezone.utc),
            "data_interval_end": iv.end.replace(tzinfo=dt.timezone.utc)}


def _sensor():
    from batch_scoring.operators.freshness import AggregatesFreshnessSensor

    return AggregatesFreshnessSensor(task_id="wait_for_aggregates", sql_conn_id="sensor_sql",
                                     blob_conn_id="sensor_blob", models_container="models", poke_interval=1, timeout=1)


def _late(world, target: str, at: dt.datetime, value: float, revised_at: dt.datetime):
    from batch_scoring.ingest_sim.loads import load_readings

    device, sensor = target.split("/")
    conn = world.connect()
    try:
        return load_readings(conn, pd.DataFrame({"ts": [at], "device_id": [device], "sensor_id": [sensor],
                                                 "value": [value]}), revised_at=revised_at)
    finally:
        conn.close()


def test_late_data_marks_the_scored_interval_stale_until_it_is_rescored(world):
    first = world.run(IV)
    assert first["counts"]["ok"] == 4 and first["aggregates_revised_at"] is None
    before = world.predictions(IV)
    # a late reading for 08:20:05 (readings are every 30 s: a new key) arrives after the interval was scored
    res = _late(world, "dev002/s1", dt.datetime(2026, 6, 1, 8, 20, 5), 1.0e3, dt.datetime(2026, 6, 1, 11, 30))
    assert res.inserted == 1 and res.late["window_start"].tolist() == [pd.Timestamp(2026, 6, 1, 8, 20)]

    stale = _sensor().check_late_data(_context(LATER))
    assert [s["interval"] for s in stale] == [IV.key]
    marker = json.loads(world.store.download_bytes("predictions", stale_marker_blob(IV)))
    assert marker == {
        "interval": IV.key, "scored_with_revision": None, "revised_at": "2026-06-01T11:30:00",
        "changed_windows": 1, "windows": {"dev002/s1": ["2026-06-01T08:20:00"]},
        "rescore": "airflow backfill create --dag-id batch_scoring --from-date 2026-06-01T08:00:00 "
                   "--to-date 2026-06-01T08:00:00 --reprocess-behavior completed",
    }
    assert world.predictions(IV)[part_blob(IV, ["dev002/s1"])] == before[part_blob(IV, ["dev002/s1"])]

    # the rescoring (what the backfill command runs) records the revision it scored and clears the marker
    again = world.run(IV)
    assert again["aggregates_revised_at"] == "2026-06-01T11:30:00"
    assert not world.store.exists("predictions", stale_marker_blob(IV))
    assert _sensor().check_late_data(_context(LATER)) == []
    assert world.predictions(IV)[part_blob(IV, ["dev002/s1"])] != before[part_blob(IV, ["dev002/s1"])]


def test_late_data_for_an_interval_not_yet_scored_or_already_rescored_is_not_stale(world):
    """Own cases: late data for 09:00-10:00 before it was ever scored; and a second revision of a rescored interval."""
    _late(world, "dev001/s1", dt.datetime(2026, 6, 1, 9, 40, 5), 5.0, dt.datetime(2026, 6, 1, 11, 0))
    assert _sensor().check_late_data(_context(LATER)) == []
    world.run(LATER)
    assert world.manifest(LATER)["aggregates_revised_at"] == "2026-06-01T11:00:00"
    assert _sensor().check_late_data(_context(LATER)) == []
    # the same window changed once more, later: stale again, naming only that revision
    res = _late(world, "dev001/s1", dt.datetime(2026, 6, 1, 9, 40, 5), 6.0, dt.datetime(2026, 6, 1, 12, 0))
    assert res.updated == 1
    stale = _sensor().check_late_data(_context(LATER))
    assert [(s["interval"], s["scored_with_revision"], s["revised_at"]) for s in stale] == [
        (LATER.key, "2026-06-01T11:00:00", "2026-06-01T12:00:00")]


def test_reloading_readings_already_stored_is_not_late_data(world):
    """Own case: re-delivering stored readings of a scored interval changes nothing and marks nothing."""
    from batch_scoring.ingest_sim.loads import load_readings
    from batch_scoring.sensor_db.reads import read_readings

    world.run(IV)
    conn = world.connect()
    try:
        stored = read_readings(conn, IV.start, IV.end, targets=["dev001/s2"])
        res = load_readings(conn, stored, revised_at=dt.datetime(2026, 6, 1, 13))
    finally:
        conn.close()
    assert (res.inserted, res.updated, res.unchanged, len(res.late)) == (0, 0, len(stored), 0)
    assert _sensor().check_late_data(_context(LATER)) == []


def test_a_database_without_the_revisions_table_still_scores_and_says_late_data_is_not_tracked(world, caplog, capsys):
    """Own case: aggregates written by other tooling (no `ingest_sim init-db`): nothing fails, the logs say why."""
    world.execute("DROP TABLE aggregate_revisions")
    assert _sensor().poke(_context(IV)) is True
    manifest = world.run(IV)
    assert manifest["counts"]["ok"] == 4 and manifest["aggregates_revised_at"] is None
    logged = caplog.text + capsys.readouterr().out  # the task logger (structlog) prints, the pipeline's logs
    assert "late-data check skipped: the table aggregate_revisions cannot be read" in logged
    assert "late-data tracking is off: cannot read aggregate_revisions" in logged


def test_a_subset_rescoring_leaves_the_interval_stale_until_every_target_is_rescored(world):
    """Own case (with case 8's merged manifests): rescoring only dev002/* after late data for dev001/s1 must not
    clear the staleness of dev001/s1's predictions."""
    from batch_scoring.units import apply_run_params

    world.run(IV)
    _late(world, "dev001/s1", dt.datetime(2026, 6, 1, 8, 5, 5), 50.0, dt.datetime(2026, 6, 1, 11, 0))
    assert [s["interval"] for s in _sensor().check_late_data(_context(LATER))] == [IV.key]
    plan = apply_run_params(world.snapshot(IV), {"targets": ["dev002/*"]}, 1024)
    assert plan["aggregates_revised_at"] == "2026-06-01T11:00:00"
    world.score(plan, IV)
    merged = world.collect(plan, IV)
    assert merged["counts"]["ok"] == 4 and merged["aggregates_revised_at"] is None
    assert world.store.exists("predictions", stale_marker_blob(IV))
    assert [s["windows"] for s in _sensor().check_late_data(_context(LATER))] == [{"dev001/s1": ["2026-06-01T08:05:00"]}]
    world.run(IV)  # every target
    assert not world.store.exists("predictions", stale_marker_blob(IV))
    assert _sensor().check_late_data(_context(LATER)) == []
