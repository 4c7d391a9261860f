"""What a load does to stored readings and aggregates: upsert by key, duplicates, late data (issue 10, cases 1-3).

Real SQLite and PostgreSQL through pyodbc (``conn`` and ``sql_conn_str`` run a test on both engines), the
real CLI in a subprocess (on SQLite only where the test is about the CLI rather than the SQL).
"""
from __future__ import annotations

import datetime as dt
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ingest_sim import db, store
from ingest_sim.aggregator import aggregate_readings
from ingest_sim.csv_loader import CsvFormatError, load_csv

T0 = dt.datetime(2024, 1, 1)
H1 = T0 + dt.timedelta(hours=1)


def _csv(path, rows):
    path.write_text("TS,Device,Sensor,Value\n" + "".join(f"{t:%Y-%m-%d %H:%M:%S.%f}"[:-3] + f",{d},{s},{v}\n"
                                                       for t, d, s, v in rows))
    return path


def _hour(device="d1", sensor="s1", start=T0, minutes=60, step=10, seed=0):
    rng = np.random.default_rng(seed)
    n = minutes * 60 // step
    return [(start + dt.timedelta(seconds=step * i), device, sensor, round(float(rng.normal(20, 1)), 6)) for i in range(n)]


def _count(conn, table, where="", *params):
    cur = conn.cursor()
    cur.execute(f"SELECT COUNT(*) FROM {table} {where}", *params)
    n = int(cur.fetchone()[0])
    cur.close()
    conn.commit()
    return n


def _cli(odbc, *args):
    return subprocess.run([sys.executable, "-m", "ingest_sim", "--odbc", odbc, *args],
                          capture_output=True, text=True, timeout=120)


# --- case 1: a late or partial load never deletes readings it does not replace -------------------

def test_late_readings_are_added_not_swapped_for_the_files_span(sql_conn_str, tmp_path):
    """The issue's example: 360 readings, then a file of two late ones at 00:10:05 and 00:50:05."""
    assert _cli(sql_conn_str, "load-csv", str(_csv(tmp_path / "hour.csv", _hour())), "--aggregate").returncode == 0
    r = _cli(sql_conn_str, "load-csv", str(_csv(tmp_path / "late.csv", [
        (T0 + dt.timedelta(minutes=10, seconds=5), "d1", "s1", 21.5),
        (T0 + dt.timedelta(minutes=50, seconds=5), "d1", "s1", 18.25)])), "--aggregate")
    assert r.returncode == 0, r.stderr
    assert "2 new, 0 changed, 0 already stored; 2 aggregate window(s) written" in r.stdout
    conn = db.connect(sql_conn_str)
    try:
        assert _count(conn, db.READINGS) == 362
        aggs = store.read_aggregates(conn, T0, H1).set_index("window_start")
        assert len(aggs) == 12
        assert aggs["n_readings"].to_dict() == {pd.Timestamp(T0 + dt.timedelta(minutes=5 * i)):
                                                (31 if i in (2, 10) else 30) for i in range(12)}
        # every window equals the aggregate of all 362 readings: nothing lost, nothing stale
        expected = aggregate_readings(store.read_readings(conn, T0, H1)).set_index("window_start")
        pd.testing.assert_frame_equal(aggs, expected, check_exact=False, rtol=1e-12)
    finally:
        conn.close()


def test_a_partial_reload_of_one_target_keeps_the_others_and_the_rest_of_its_span(conn):
    """Own case: a file with every 3rd reading of d1/s1 (values corrected) and nothing of d1/s2."""
    full = pd.DataFrame(_hour("d1", "s1") + _hour("d1", "s2", seed=1), columns=["ts", "device_id", "sensor_id", "value"])
    assert store.load_readings(conn, full).inserted == 720
    before = store.read_aggregates(conn, T0, H1)
    part = full[(full.device_id == "d1") & (full.sensor_id == "s1")].iloc[::3].copy()
    part.loc[part.index[:4], "value"] += 100.0  # 4 corrections in the first window
    res = store.load_readings(conn, part)
    assert (res.inserted, res.updated, res.unchanged) == (0, 4, len(part) - 4)
    assert _count(conn, db.READINGS) == 720
    # exactly one window was re-aggregated: the one whose readings changed, of that target only
    assert res.windows[["device_id", "sensor_id", "window_start"]].values.tolist() == [["d1", "s1", pd.Timestamp(T0)]]
    after = store.read_aggregates(conn, T0, H1)
    changed = (after[["value_mean", "value_max"]] != before[["value_mean", "value_max"]]).any(axis=1)
    assert after.loc[changed, ["device_id", "sensor_id", "window_start"]].values.tolist() == [["d1", "s1", pd.Timestamp(T0)]]
    assert after["n_readings"].tolist() == [30] * 24


def test_reloading_the_same_file_changes_nothing(sqlite_conn_str, tmp_path):
    path = _csv(tmp_path / "hour.csv", _hour())
    assert _cli(sqlite_conn_str, "load-csv", str(path), "--aggregate").returncode == 0
    r = _cli(sqlite_conn_str, "load-csv", str(path), "--aggregate")
    assert r.returncode == 0, r.stderr
    assert "0 new, 0 changed, 360 already stored; 0 aggregate window(s) written" in r.stdout
    assert "late data" not in r.stdout


def test_a_file_loaded_without_aggregating_gets_its_windows_when_loaded_again_with(sqlite_conn_str, tmp_path):
    """Own case: `load-csv` then `load-csv --aggregate` of the same file must not leave the windows missing."""
    path = _csv(tmp_path / "hour.csv", _hour())
    r = _cli(sqlite_conn_str, "load-csv", str(path))
    assert "360 new, 0 changed, 0 already stored; 12 window(s) of 1 target(s) need aggregating" in r.stdout
    r = _cli(sqlite_conn_str, "load-csv", str(path), "--aggregate")
    assert "0 new, 0 changed, 360 already stored; 12 aggregate window(s) written" in r.stdout
    assert "late data" not in r.stdout
    r = _cli(sqlite_conn_str, "load-csv", str(path), "--aggregate")
    assert "0 aggregate window(s) written" in r.stdout


# --- case 2: duplicate readings --------------------------------------------------------------

def test_an_exact_duplicate_is_stored_once_and_counted_once(conn, tmp_path):
    rows = _hour()
    twice = rows[:120] + rows[120:132] + rows[120:]  # 00:20-00:22 delivered twice
    frame = load_csv(_csv(tmp_path / "dup.csv", twice))
    assert frame.attrs["duplicate_lines"] == 12 and len(frame) == 360
    res = store.load_readings(conn, frame)
    assert res.inserted == 360
    once = aggregate_readings(pd.DataFrame(rows, columns=["ts", "device_id", "sensor_id", "value"]))
    got = store.read_aggregates(conn, T0, H1)
    assert got["n_readings"].tolist() == [30] * 12
    np.testing.assert_allclose(got["value_mean"], once["value_mean"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["value_std"], once["value_std"], rtol=0, atol=1e-12)


def test_redelivering_stored_readings_inside_a_new_file_is_idempotent(conn):
    """Own case: the at-least-once source re-sends the last 10 minutes with the next batch."""
    rows = _hour(minutes=70)
    first = pd.DataFrame(rows[:360], columns=["ts", "device_id", "sensor_id", "value"])
    second = pd.DataFrame(rows[300:], columns=["ts", "device_id", "sensor_id", "value"])
    store.load_readings(conn, first)
    res = store.load_readings(conn, second)
    assert (res.inserted, res.updated, res.unchanged) == (60, 0, 60)
    assert _count(conn, db.READINGS) == 420
    assert store.read_aggregates(conn, T0, H1 + dt.timedelta(minutes=10))["n_readings"].tolist() == [30] * 14


def test_the_same_key_with_another_value_refuses_the_file_naming_both_lines(sqlite_conn_str, tmp_path):
    rows = _hour()
    clash = rows + [(rows[7][0], "d1", "s1", rows[7][3] + 1.0)]
    assert _cli(sqlite_conn_str, "load-csv", str(_csv(tmp_path / "ok.csv", rows[:5]))).returncode == 0
    r = _cli(sqlite_conn_str, "load-csv", str(_csv(tmp_path / "clash.csv", clash)), "--aggregate")
    assert r.returncode == 2
    assert "clash.csv, line 362: reading d1/s1 at 2024-01-01 00:01:10.000 has two different values: " \
           f"line 9 has {rows[7][3]!r}, line 362 has {rows[7][3] + 1.0!r}; nothing of this file was loaded" in r.stderr
    conn = db.connect(sqlite_conn_str)
    try:
        assert _count(conn, db.READINGS) == 5  # the earlier good load, untouched
    finally:
        conn.close()


def test_a_frame_with_conflicting_keys_is_refused_before_writing(conn):
    """Own case: the same rule for frames loaded without a CSV (timestamps equal to the millisecond)."""
    frame = pd.DataFrame({"ts": [T0, T0 + dt.timedelta(microseconds=400)], "device_id": ["d9", "d9"],
                          "sensor_id": ["s1", "s1"], "value": [1.0, 2.0]})
    with pytest.raises(ValueError, match=r"reading d9/s1 at 2024-01-01 00:00:00.000 \(written 00:00:00.000000, "
                                         r"00:00:00.000400: readings are kept to the millisecond\) has two different "
                                         r"values: row 0 has 1.0, row 1 has 2.0; nothing was loaded"):
        store.load_readings(conn, frame)
    assert _count(conn, db.READINGS) == 0


# --- case 3: late data for an interval is recorded and reported -------------------------------

def test_late_data_is_reported_with_the_intervals_and_the_backfill_command(sql_conn_str, tmp_path, monkeypatch):
    monkeypatch.delenv("BATCH_SCORING_SCHEDULE", raising=False)
    monkeypatch.delenv("BATCH_SCORING_DAG_ID", raising=False)
    two_hours = _hour(minutes=120)
    assert _cli(sql_conn_str, "load-csv", str(_csv(tmp_path / "a.csv", two_hours)), "--aggregate").returncode == 0
    r = _cli(sql_conn_str, "load-csv", str(_csv(tmp_path / "late.csv", [
        (T0 + dt.timedelta(minutes=10, seconds=5), "d1", "s1", 21.5),
        (T0 + dt.timedelta(minutes=70, seconds=5), "d1", "s1", 18.25)])), "--aggregate")
    assert r.returncode == 0, r.stderr
    assert ("late data: 2 aggregate window(s) changed behind data already aggregated "
            "(d1/s1 2024-01-01 00:10, 01:10); recorded in aggregate_revisions.") in r.stdout
    assert ("(DAG batch_scoring, schedule '0 * * * *': 20240101T0000Z_20240101T0100Z, 20240101T0100Z_20240101T0200Z)"
            in r.stdout)
    assert r.stdout.rstrip().endswith("airflow backfill create --dag-id batch_scoring --from-date 2024-01-01T00:00:00 "
                                      "--to-date 2024-01-01T01:00:00 --reprocess-behavior completed")
    conn = db.connect(sql_conn_str)
    try:
        rev = store.read_revisions(conn)
        assert rev[["device_id", "sensor_id", "window_start"]].values.tolist() == [
            ["d1", "s1", pd.Timestamp("2024-01-01 00:10")], ["d1", "s1", pd.Timestamp("2024-01-01 01:10")]]
        assert store.interval_revised_at(conn, T0, H1) == rev["revised_at"].iloc[0].to_pydatetime()
        assert store.interval_revised_at(conn, H1 + dt.timedelta(hours=1), H1 + dt.timedelta(hours=2)) is None
    finally:
        conn.close()


def test_on_time_data_is_not_late_but_a_gap_filled_behind_the_watermark_is(conn):
    """Own case: appending the next windows is not late; filling a hole behind the watermark is."""
    rows = _hour(minutes=60)
    hole = [r for r in rows if not (T0 + dt.timedelta(minutes=20) <= r[0] < T0 + dt.timedelta(minutes=30))]
    frame = lambda rs: pd.DataFrame(rs, columns=["ts", "device_id", "sensor_id", "value"])
    assert store.load_readings(conn, frame(hole)).late.empty  # first load: nothing was there
    nxt = store.load_readings(conn, frame(_hour(start=H1, minutes=10, seed=3)))
    assert len(nxt.windows) == 2 and nxt.late.empty  # on time: beyond the watermark
    fill = store.load_readings(conn, frame([r for r in rows if r not in hole]), revised_at=dt.datetime(2024, 1, 2, 12))
    assert fill.late["window_start"].tolist() == [pd.Timestamp(T0 + dt.timedelta(minutes=20)),
                                                  pd.Timestamp(T0 + dt.timedelta(minutes=25))]
    assert store.read_revisions(conn)["revised_at"].tolist() == [pd.Timestamp(2024, 1, 2, 12)] * 2


def test_a_stream_completing_its_last_window_is_not_late_but_a_change_to_it_much_later_is(conn):
    """Own case: micro-batches fill the last window in two loads (not late data); a reading for that window an
    hour after it ended is."""
    frame = lambda rs: pd.DataFrame(rs, columns=["ts", "device_id", "sensor_id", "value"])  # noqa: E731
    rows = _hour(minutes=60)
    assert store.load_readings(conn, frame(rows[:345]), revised_at=H1 - dt.timedelta(seconds=30)).late.empty  # 00:57:30
    done = store.load_readings(conn, frame(rows[345:]), revised_at=H1 + dt.timedelta(seconds=30))
    assert done.windows["window_start"].tolist() == [pd.Timestamp(T0 + dt.timedelta(minutes=55))] and done.late.empty
    late = store.load_readings(conn, frame([(H1 - dt.timedelta(seconds=5), "d1", "s1", 3.0)]),
                               revised_at=H1 + dt.timedelta(hours=1))
    assert late.late["window_start"].tolist() == [pd.Timestamp(T0 + dt.timedelta(minutes=55))]
    assert store.read_revisions(conn)["revised_at"].tolist() == [pd.Timestamp(H1 + dt.timedelta(hours=1))]


def test_interval_of_follows_the_cron_schedule():
    from ingest_sim.late_data import backfill_command, interval_of, intervals_of

    assert interval_of(dt.datetime(2024, 1, 1, 0, 10)) == (T0, H1)
    assert interval_of(T0) == (T0, H1)
    assert interval_of(dt.datetime(2024, 1, 1, 7, 55), "0 */6 * * *") == (dt.datetime(2024, 1, 1, 6), dt.datetime(2024, 1, 1, 12))
    ivs = intervals_of([dt.datetime(2024, 1, 1, 0, 10), dt.datetime(2024, 1, 1, 0, 50), dt.datetime(2024, 1, 3, 5)])
    assert ivs == [(T0, H1), (dt.datetime(2024, 1, 3, 5), dt.datetime(2024, 1, 3, 6))]
    assert backfill_command("d", ivs) == ("airflow backfill create --dag-id d --from-date 2024-01-01T00:00:00 "
                                          "--to-date 2024-01-03T05:00:00 --reprocess-behavior completed")


# --- what a new user ran into (found by trying the CLI as one) ---------------------------------------

def test_the_cli_counts_duplicate_lines_it_stored_once(sqlite_conn_str, tmp_path):
    rows = _hour(minutes=10)
    path = _csv(tmp_path / "dup.csv", rows + rows[:3])
    path.write_text(path.read_text() + f"{rows[5][0]:%Y-%m-%dT%H:%M:%S}+00:00,d1,s1,{rows[5][3]}0\n")  # same instant, other spelling
    r = _cli(sqlite_conn_str, "load-csv", str(path), "--aggregate")
    assert r.returncode == 0, r.stderr
    assert "64 readings, 1 targets" in r.stdout and "60 new, 0 changed, 0 already stored, 4 duplicate line(s) stored once" in r.stdout


def test_a_bad_schedule_is_refused_before_anything_is_loaded(sqlite_conn_str, tmp_path, monkeypatch):
    path = _csv(tmp_path / "hour.csv", _hour(minutes=10))
    assert _cli(sqlite_conn_str, "init-db").returncode == 0
    r = _cli(sqlite_conn_str, "load-csv", str(path), "--aggregate", "--schedule", "not a cron")
    assert r.returncode == 2
    assert r.stderr.strip() == "error: --schedule 'not a cron' is not a cron expression (e.g. '0 * * * *'); nothing was loaded"
    monkeypatch.setenv("BATCH_SCORING_SCHEDULE", "@hourlyy")
    r = _cli(sqlite_conn_str, "load-csv", str(path))
    assert r.returncode == 2 and "BATCH_SCORING_SCHEDULE '@hourlyy' is not a cron expression" in r.stderr
    conn = db.connect(sqlite_conn_str)
    try:
        assert _count(conn, db.READINGS) == 0 and _count(conn, db.REVISIONS) == 0
    finally:
        conn.close()


def test_aggregates_built_elsewhere_are_not_replaced_by_fewer_readings(conn):
    """Aggregates whose readings this table does not hold (another tool wrote them, or readings were purged):
    a late reading must not turn a 30-reading window into a 1-reading one."""
    full = pd.DataFrame(_hour(), columns=["ts", "device_id", "sensor_id", "value"])
    store.upsert_aggregates(conn, aggregate_readings(full))
    before = store.read_aggregates(conn, T0, H1)
    late = pd.DataFrame({"ts": [T0 + dt.timedelta(minutes=10, seconds=5)], "device_id": ["d1"], "sensor_id": ["s1"],
                         "value": [21.5]})
    with pytest.raises(ValueError, match=r"^1 aggregate window\(s\) count readings that sensor_readings does not hold: "
                                         r"d1/s1 2024-01-01 00:10 \(30 in the aggregate, 0 in sensor_readings\); .*"
                                         r"Nothing was loaded: load those windows' raw readings first, or load this "
                                         r"file without --aggregate$"):
        store.load_readings(conn, late)
    pd.testing.assert_frame_equal(store.read_aggregates(conn, T0, H1), before)
    assert _count(conn, db.READINGS) == 0
    assert store.upsert_readings(conn, late).inserted == 1  # without aggregating: stored, windows left alone


def test_every_conflict_is_named_and_a_sub_millisecond_collision_shows_what_was_written(sqlite_conn_str, tmp_path):
    path = tmp_path / "clash.csv"
    path.write_text("TS,Device,Sensor,Value\n"
                    "2024-01-01 00:00:10.0004,d1,s1,26.0\n"
                    "2024-01-01 00:00:20.000,d1,s1,1.0\n"
                    "2024-01-01 00:00:10.0001,d1,s1,26.5\n"
                    "2024-01-01 00:00:20.000,d1,s1,1.01\n")
    r = _cli(sqlite_conn_str, "load-csv", str(path))
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"error: {path}, line 4: reading d1/s1 at 2024-01-01 00:00:10.000 (written 00:00:10.000400, 00:00:10.000100: "
        "readings are kept to the millisecond) has two different values: line 2 has 26.0, line 4 has 26.5; "
        "reading d1/s1 at 2024-01-01 00:00:20.000 has two different values: line 3 has 1.0, line 5 has 1.01 "
        "(2 conflicting keys); nothing of this file was loaded: fix the source and load it again")


def test_late_data_far_apart_says_what_the_one_backfill_reprocesses(sqlite_conn_str, tmp_path):
    days = [r for h in range(26) for r in _hour(start=T0 + dt.timedelta(hours=h), minutes=60, step=60, seed=h)]
    assert _cli(sqlite_conn_str, "load-csv", str(_csv(tmp_path / "a.csv", days)), "--aggregate").returncode == 0
    r = _cli(sqlite_conn_str, "load-csv", str(_csv(tmp_path / "late.csv", [
        (T0 + dt.timedelta(minutes=10, seconds=5), "d1", "s1", 1.0),
        (T0 + dt.timedelta(hours=24, minutes=10, seconds=5), "d1", "s1", 1.0)])), "--aggregate")
    assert r.returncode == 0, r.stderr
    assert ("this rescores them (it reprocesses the 25 intervals from the first to the last, 23 of them unchanged: "
            "same blobs, same bytes):\n  airflow backfill create --dag-id batch_scoring --from-date 2024-01-01T00:00:00 "
            "--to-date 2024-01-02T00:00:00 --reprocess-behavior completed") in r.stdout


def test_the_aggregate_command_reports_late_data_too(sqlite_conn_str, tmp_path):
    """Own case: readings loaded without aggregating, then `aggregate` over a range already aggregated."""
    assert _cli(sqlite_conn_str, "load-csv", str(_csv(tmp_path / "a.csv", _hour())), "--aggregate").returncode == 0
    assert _cli(sqlite_conn_str, "load-csv", str(_csv(tmp_path / "late.csv", [
        (T0 + dt.timedelta(minutes=20, seconds=5), "d1", "s1", 99.0)]))).returncode == 0
    r = _cli(sqlite_conn_str, "aggregate", "--start", "2024-01-01T00:00", "--end", "2024-01-01T01:00")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("aggregate: 12 aggregates [2024-01-01T00:00:00Z, 2024-01-01T01:00:00Z)\n"
                               "late data: 1 aggregate window(s) changed behind data already aggregated "
                               "(d1/s1 2024-01-01 00:20)")
    assert "are stale if they were scored before this re-aggregation" in r.stdout
