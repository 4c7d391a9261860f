"""What a load does to stored readings and aggregates: upsert by key, duplicates, late data (issue 10, cases 1-3).

Real SQLite and PostgreSQL through pyodbc (``conn`` and ``sql_conn_str`` run a test on both engines), the
real CLI in a subprocess (on SQLite only where the test is about the CLI rather than the SQL).
"""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from batch_scoring.ingest_sim import loads
from batch_scoring.ingest_sim.aggregator import aggregate_readings
from batch_scoring.ingest_sim.csv_loader import CsvFormatError, load_csv
from batch_scoring.sensor_db import reads, schema
from tests.fixtures.sensor_data import count_rows, readings

T0 = dt.datetime(2024, 1, 1)
H1 = T0 + dt.timedelta(hours=1)
REFERENCE_CSV = Path(__file__).resolve().parents[3] / "shared" / "reference" / "sensor_data.csv"


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
    return subprocess.run([sys.executable, "-m", "batch_scoring.ingest_sim", "--odbc", odbc, *args],
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
    conn = schema.connect(sql_conn_str)
    try:
        assert _count(conn, schema.READINGS) == 362
        aggs = reads.read_aggregates(conn, T0, H1).set_index("window_start")
        assert len(aggs) == 12
        assert aggs["n_readings"].to_dict() == {pd.Timestamp(T0 + dt.timedelta(minutes=5 * i)):
                                                (31 if i in (2, 10) else 30) for i in range(12)}
        # every window equals the aggregate of all 362 readings: nothing lost, nothing stale
        expected = aggregate_readings(reads.read_readings(conn, T0, H1)).set_index("window_start")
        pd.testing.assert_frame_equal(aggs, expected, check_exact=False, rtol=1e-12)
    finally:
        conn.close()


def test_a_partial_reload_of_one_target_keeps_the_others_and_the_rest_of_its_span(conn):
    """Own case: a file with every 3rd reading of d1/s1 (values corrected) and nothing of d1/s2."""
    full = pd.DataFrame(_hour("d1", "s1") + _hour("d1", "s2", seed=1), columns=["ts", "device_id", "sensor_id", "value"])
    assert loads.load_readings(conn, full).inserted == 720
    before = reads.read_aggregates(conn, T0, H1)
    part = full[(full.device_id == "d1") & (full.sensor_id == "s1")].iloc[::3].copy()
    part.loc[part.index[:4], "value"] += 100.0  # 4 corrections in the first window
    res = loads.load_readings(conn, part)
    assert (res.inserted, res.updated, res.unchanged) == (0, 4, len(part) - 4)
    assert _count(conn, schema.READINGS) == 720
    # exactly one window was re-aggregated: the one whose readings changed, of that target only
    assert res.windows[["device_id", "sensor_id", "window_start"]].values.tolist() == [["d1", "s1", pd.Timestamp(T0)]]
    after = reads.read_aggregates(conn, T0, H1)
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
    res = loads.load_readings(conn, frame)
    assert res.inserted == 360
    once = aggregate_readings(pd.DataFrame(rows, columns=["ts", "device_id", "sensor_id", "value"]))
    got = reads.read_aggregates(conn, T0, H1)
    assert got["n_readings"].tolist() == [30] * 12
    np.testing.assert_allclose(got["value_mean"], once["value_mean"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["value_std"], once["value_std"], rtol=0, atol=1e-12)


def test_redelivering_stored_readings_inside_a_new_file_is_idempotent(conn):
    """Own case: the at-least-once source re-sends the last 10 minutes with the next batch."""
    rows = _hour(minutes=70)
    first = pd.DataFrame(rows[:360], columns=["ts", "device_id", "sensor_id", "value"])
    second = pd.DataFrame(rows[300:], columns=["ts", "device_id", "sensor_id", "value"])
    loads.load_readings(conn, first)
    res = loads.load_readings(conn, second)
    assert (res.inserted, res.updated, res.unchanged) == (60, 0, 60)
    assert _count(conn, schema.READINGS) == 420
    assert reads.read_aggregates(conn, T0, H1 + dt.timedelta(minutes=10))["n_readings"].tolist() == [30] * 14


def test_the_same_key_with_another_value_refuses_the_file_naming_both_lines(sqlite_conn_str, tmp_path):
    rows = _hour()
    clash = rows + [(rows[7][0], "d1", "s1", rows[7][3] + 1.0)]
    assert _cli(sqlite_conn_str, "load-csv", str(_csv(tmp_path / "ok.csv", rows[:5]))).returncode == 0
    r = _cli(sqlite_conn_str, "load-csv", str(_csv(tmp_path / "clash.csv", clash)), "--aggregate")
    assert r.returncode == 2
    assert "clash.csv, line 362: reading d1/s1 at 2024-01-01 00:01:10.000 has two different values: " \
           f"line 9 has {rows[7][3]!r}, line 362 has {rows[7][3] + 1.0!r}; nothing of this file was loaded" in r.stderr
    conn = schema.connect(sqlite_conn_str)
    try:
        assert _count(conn, schema.READINGS) == 5  # the earlier good load, untouched
    finally:
        conn.close()


def test_a_frame_with_conflicting_keys_is_refused_before_writing(conn):
    """Own case: the same rule for frames loaded without a CSV (timestamps equal to the millisecond)."""
    frame = pd.DataFrame({"ts": [T0, T0 + dt.timedelta(microseconds=400)], "device_id": ["d9", "d9"],
                          "sensor_id": ["s1", "s1"], "value": [1.0, 2.0]})
    with pytest.raises(ValueError, match=r"reading d9/s1 at 2024-01-01 00:00:00.000 \(written 00:00:00.000000, "
                                         r"00:00:00.000400: readings are kept to the millisecond\) has two different "
                                         r"values: row 0 has 1.0, row 1 has 2.0; nothing was loaded"):
        loads.load_readings(conn, frame)
    assert _count(conn, schema.READINGS) == 0


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
    conn = schema.connect(sql_conn_str)
    try:
        rev = reads.read_revisions(conn)
        assert rev[["device_id", "sensor_id", "window_start"]].values.tolist() == [
            ["d1", "s1", pd.Timestamp("2024-01-01 00:10")], ["d1", "s1", pd.Timestamp("2024-01-01 01:10")]]
        assert reads.interval_revised_at(conn, T0, H1) == rev["revised_at"].iloc[0].to_pydatetime()
        assert reads.interval_revised_at(conn, H1 + dt.timedelta(hours=1), H1 + dt.timedelta(hours=2)) is None
    finally:
        conn.close()


def test_on_time_data_is_not_late_but_a_gap_filled_behind_the_watermark_is(conn):
    """Own case: appending the next windows is not late; filling a hole behind the watermark is."""
    rows = _hour(minutes=60)
    hole = [r for r in rows if not (T0 + dt.timedelta(minutes=20) <= r[0] < T0 + dt.timedelta(minutes=30))]
    frame = lambda rs: pd.DataFrame(rs, columns=["ts", "device_id", "sensor_id", "value"])
    assert loads.load_readings(conn, frame(hole)).late.empty  # first load: nothing was there
    nxt = loads.load_readings(conn, frame(_hour(start=H1, minutes=10, seed=3)))
    assert len(nxt.windows) == 2 and nxt.late.empty  # on time: beyond the watermark
    fill = loads.load_readings(conn, frame([r for r in rows if r not in hole]), revised_at=dt.datetime(2024, 1, 2, 12))
    assert fill.late["window_start"].tolist() == [pd.Timestamp(T0 + dt.timedelta(minutes=20)),
                                                  pd.Timestamp(T0 + dt.timedelta(minutes=25))]
    assert reads.read_revisions(conn)["revised_at"].tolist() == [pd.Timestamp(2024, 1, 2, 12)] * 2


def test_a_stream_completing_its_last_window_is_not_late_but_a_change_to_it_much_later_is(conn):
    """Own case: micro-batches fill the last window in two loads (not late data); a reading for that window an
    hour after it ended is."""
    frame = lambda rs: pd.DataFrame(rs, columns=["ts", "device_id", "sensor_id", "value"])  # noqa: E731
    rows = _hour(minutes=60)
    assert loads.load_readings(conn, frame(rows[:345]), revised_at=H1 - dt.timedelta(seconds=30)).late.empty  # 00:57:30
    done = loads.load_readings(conn, frame(rows[345:]), revised_at=H1 + dt.timedelta(seconds=30))
    assert done.windows["window_start"].tolist() == [pd.Timestamp(T0 + dt.timedelta(minutes=55))] and done.late.empty
    late = loads.load_readings(conn, frame([(H1 - dt.timedelta(seconds=5), "d1", "s1", 3.0)]),
                               revised_at=H1 + dt.timedelta(hours=1))
    assert late.late["window_start"].tolist() == [pd.Timestamp(T0 + dt.timedelta(minutes=55))]
    assert reads.read_revisions(conn)["revised_at"].tolist() == [pd.Timestamp(H1 + dt.timedelta(hours=1))]


def test_interval_of_follows_the_cron_schedule():
    from batch_scoring.ingest_sim.late_data import backfill_command, interval_of, intervals_of

    assert interval_of(dt.datetime(2024, 1, 1, 0, 10)) == (T0, H1)
    assert interval_of(T0) == (T0, H1)
    assert interval_of(dt.datetime(2024, 1, 1, 7, 55), "0 */6 * * *") == (dt.datetime(2024, 1, 1, 6), dt.datetime(2024, 1, 1, 12))
    ivs = intervals_of([dt.datetime(2024, 1, 1, 0, 10), dt.datetime(2024, 1, 1, 0, 50), dt.datetime(2024, 1, 3, 5)])
    assert ivs == [(T0, H1), (dt.datetime(2024, 1, 3, 5), dt.datetime(2024, 1, 3, 6))]
    assert backfill_command("d", ivs) == ("airflow backfill create --dag-id d --from-date 2024-01-01T00:00:00 "
                                          "--to-date 2024-01-03T05:00:00 --reprocess-behavior completed")


def test_interval_of_takes_a_naive_or_an_aware_time_converted_to_utc():
    from batch_scoring.ingest_sim.late_data import interval_of

    assert interval_of(dt.datetime(2024, 1, 1, 0, 10)) == (T0, H1)                            # naive: UTC
    assert interval_of(dt.datetime(2024, 1, 1, 0, 10, tzinfo=dt.timezone.utc)) == (T0, H1)   # aware UTC
    # an aware time of another zone is converted: 02:10+02:00 is 00:10 UTC (it once kept its wall clock, 02:10)
    plus2 = dt.timezone(dt.timedelta(hours=2))
    assert interval_of(dt.datetime(2024, 1, 1, 2, 10, tzinfo=plus2)) == (T0, H1)
    assert interval_of(dt.datetime(2024, 1, 1, 0, 10, tzinfo=plus2)) == (T0 - dt.timedelta(hours=2), H1 - dt.timedelta(hours=2))


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
    assert r.returncode == 2 and r.stderr.strip() == ("error: BATCH_SCORING_SCHEDULE='@hourlyy': expected a cron "
                                                      "expression (e.g. '0 * * * *' or '@hourly'); nothing was loaded")
    conn = schema.connect(sqlite_conn_str)
    try:
        assert _count(conn, schema.READINGS) == 0 and _count(conn, schema.REVISIONS) == 0
    finally:
        conn.close()


def test_aggregates_built_elsewhere_are_not_replaced_by_fewer_readings(conn):
    """Aggregates whose readings this table does not hold (another tool wrote them, or readings were purged):
    a late reading must not turn a 30-reading window into a 1-reading one."""
    full = pd.DataFrame(_hour(), columns=["ts", "device_id", "sensor_id", "value"])
    loads.upsert_aggregates(conn, aggregate_readings(full))
    before = reads.read_aggregates(conn, T0, H1)
    late = pd.DataFrame({"ts": [T0 + dt.timedelta(minutes=10, seconds=5)], "device_id": ["d1"], "sensor_id": ["s1"],
                         "value": [21.5]})
    with pytest.raises(ValueError, match=r"^1 aggregate window\(s\) count readings that sensor_readings does not hold: "
                                         r"d1/s1 2024-01-01 00:10 \(30 in the aggregate, 0 in sensor_readings\); .*"
                                         r"Nothing was loaded: load those windows' raw readings first, or load this "
                                         r"file without --aggregate$"):
        loads.load_readings(conn, late)
    pd.testing.assert_frame_equal(reads.read_aggregates(conn, T0, H1), before)
    assert _count(conn, schema.READINGS) == 0
    assert loads.load_readings(conn, late, aggregate=False).inserted == 1  # without aggregating: stored, windows left alone


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


# --- loads, labels, the reference file --------------------------------------------------------------

def test_load_readings_is_idempotent(conn):
    df = readings()
    first = loads.load_readings(conn, df)
    assert (first.inserted, first.updated, first.unchanged) == (len(df), 0, 0)
    assert len(first.windows) == 3 * 12 and first.late.empty
    again = loads.load_readings(conn, df)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, len(df)) and again.windows.empty
    assert count_rows(conn, schema.READINGS) == len(df)
    back = reads.read_readings(conn, T0, T0 + dt.timedelta(hours=1))
    assert list(back.columns) == ["ts", "device_id", "sensor_id", "value"]
    assert str(back["ts"].dtype) == "datetime64[us]" and back["value"].dtype == np.float64
    expected = df.sort_values(["device_id", "sensor_id", "ts"]).reset_index(drop=True)
    assert back["value"].tolist() == expected["value"].tolist()  # exact doubles on both engines
    assert (back["ts"].to_numpy() == expected["ts"].astype("datetime64[us]").to_numpy()).all()


def test_load_readings_only_touches_its_keys(conn):
    loads.load_readings(conn, readings(), aggregate=False)
    # a second load for d1/s1 over 10 minutes with new values replaces just those rows
    part = readings(minutes=10, targets=(("d1", "s1"),), seed=1)
    assert loads.load_readings(conn, part, aggregate=False).updated == 60
    back = reads.read_readings(conn, T0, T0 + dt.timedelta(hours=1), targets=["d1/s1"])
    assert len(back) == 360
    assert back["value"].head(60).tolist() == part["value"].tolist()
    assert len(reads.read_readings(conn, T0, T0 + dt.timedelta(hours=1))) == 3 * 360


def test_aggregate_range_is_idempotent_and_replaces_windows(conn):
    df = readings()
    loads.load_readings(conn, df, aggregate=False)
    end = T0 + dt.timedelta(hours=1)
    n1 = loads.aggregate_range(conn, T0, end)
    assert n1 == 3 * 12
    first = reads.read_aggregates(conn, T0, end)
    n2 = loads.aggregate_range(conn, T0, end)
    assert n2 == n1 and count_rows(conn, schema.AGGREGATES) == n1
    pd.testing.assert_frame_equal(reads.read_aggregates(conn, T0, end), first)
    expected = aggregate_readings(df, 5)
    np.testing.assert_allclose(first["value_mean"], expected["value_mean"], rtol=0, atol=1e-12)

    # change one reading in window 00:05-00:10 of d1/s1 and re-aggregate a sub-range
    changed = df[(df.device_id == "d1") & (df.sensor_id == "s1") & (df.ts == T0 + dt.timedelta(minutes=6))].copy()
    changed["value"] = 1000.0
    loads.load_readings(conn, changed, aggregate=False)
    assert loads.aggregate_range(conn, T0 + dt.timedelta(minutes=6), T0 + dt.timedelta(minutes=7)) == 3
    after = reads.read_aggregates(conn, T0, end, targets=["d1/s1"])
    assert count_rows(conn, schema.AGGREGATES) == n1
    w = after.set_index("window_start").loc[pd.Timestamp(T0 + dt.timedelta(minutes=5))]
    assert w["value_max"] == 1000.0 and w["n_readings"] == 30
    other = after.set_index("window_start").loc[pd.Timestamp(T0)]
    assert other["value_max"] < 1000.0


def test_upsert_aggregates_and_nulls(conn):
    aggs = aggregate_readings(readings(minutes=10), 5)
    assert loads.upsert_aggregates(conn, aggs) == len(aggs)
    changed = aggs.head(1).assign(value_mean=42.0, value_std=np.nan)
    assert loads.upsert_aggregates(conn, changed) == 1
    back = reads.read_aggregates(conn, T0, T0 + dt.timedelta(minutes=10))
    assert len(back) == len(aggs)
    assert back.loc[0, "value_mean"] == 42.0 and np.isnan(back.loc[0, "value_std"])
    assert back["value_std"].dtype == np.float64


def test_labels_replace_and_read(conn):
    labels = pd.DataFrame({
        "device_id": ["d1", "d1"], "sensor_id": ["s1", "s1"], "kind": ["spike", "level_shift"],
        "start_ts": [T0 + dt.timedelta(minutes=5), T0 + dt.timedelta(minutes=30)],
        "end_ts": [T0 + dt.timedelta(minutes=10), T0 + dt.timedelta(minutes=50)],
        "magnitude": [6.0, 3.5],
    })
    assert loads.replace_labels(conn, labels) == 2
    assert loads.replace_labels(conn, labels) == 2
    got = reads.read_labels(conn)
    assert len(got) == 2 and got["kind"].tolist() == ["spike", "level_shift"]
    assert str(got["start_ts"].dtype) == "datetime64[us]" and got["magnitude"].tolist() == [6.0, 3.5]
    assert reads.read_labels(conn, T0 + dt.timedelta(minutes=10), T0 + dt.timedelta(minutes=30)).empty  # end exclusive
    assert len(reads.read_labels(conn, T0 + dt.timedelta(minutes=9), T0 + dt.timedelta(minutes=31))) == 2
    # a re-simulation without anomalies clears the range
    assert loads.replace_labels(conn, labels.iloc[0:0], start=T0, end=T0 + dt.timedelta(hours=1), targets=["d1/s1"]) == 0
    assert reads.read_labels(conn).empty


def test_reference_csv_loads_and_aggregates(conn):
    df = load_csv(REFERENCE_CSV)
    assert loads.load_readings(conn, df, aggregate=False).inserted == 17768
    start, end = dt.datetime(2018, 8, 28, 23), dt.datetime(2018, 8, 29, 3, 15)
    back = reads.read_readings(conn, start, end)
    assert len(back) == 17768
    assert back["value"].sum() == pytest.approx(df["value"].sum(), rel=1e-12)
    n = loads.aggregate_range(conn, start, end)
    aggs = reads.read_aggregates(conn, start, end)
    assert n == len(aggs) == 15 * 51  # 23:00 .. 03:10 → 51 five-minute windows per target
    assert aggs["n_readings"].sum() == 17768
    expected = aggregate_readings(df, 5)
    np.testing.assert_allclose(aggs["value_mean"].to_numpy(), expected["value_mean"].to_numpy(), rtol=0, atol=1e-9)
    assert reads.stale_targets(conn, start, end, [f"{d}/{s}" for d in "123" for s in "12345"]) == {}
