"""python -m batch_scoring.ingest_sim: subprocess smoke on SQLite, plus simulate with a stand-in simulator."""
from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pandas as pd
import pytest

from batch_scoring.ingest_sim import __main__ as cli
from batch_scoring.sensor_db import reads, schema

REFERENCE_CSV = Path(__file__).resolve().parents[3] / "shared" / "reference" / "sensor_data.csv"


def run(*args, odbc):
    return subprocess.run(
        [sys.executable, "-m", "batch_scoring.ingest_sim", "--odbc", odbc, *args], capture_output=True, text=True, timeout=120
    )


def test_cli_init_load_aggregate_export(sqlite_conn_str, tmp_path):
    r = run("init-db", odbc=sqlite_conn_str)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("init-db:") and len(r.stdout.strip().splitlines()) == 1

    r = run("load-csv", str(REFERENCE_CSV), "--aggregate", odbc=sqlite_conn_str)
    assert r.returncode == 0, r.stderr
    assert "17768 readings" in r.stdout and "17768 new, 0 changed, 0 already stored; 765 aggregate window(s) written" in r.stdout

    out = tmp_path / "exp" / "train.parquet"
    r = run("export", "--start", "2018-08-28T23:00:00Z", "--end", "2018-08-29T01:00:00", "--out", str(out),
            "--targets", "1/1", "3/5", odbc=sqlite_conn_str)
    assert r.returncode == 0, r.stderr
    df = pd.read_parquet(out)
    assert len(df) == 2 * 24 and "48 aggregates" in r.stdout
    assert sorted(set(zip(df.device_id, df.sensor_id))) == [("1", "1"), ("3", "5")]
    assert df["window_start"].min() == pd.Timestamp("2018-08-28 23:00") and df["window_end"].max() == pd.Timestamp("2018-08-29 01:00")

    r = run("aggregate", "--start", "2018-08-28T23:00", "--end", "2018-08-29T00:00", odbc=sqlite_conn_str)
    assert r.returncode == 0 and "180 aggregates" in r.stdout


def test_init_db_creates_the_folder_of_a_new_sqlite_database(tmp_path):
    """A fresh clone has no .local/: the README's first command must not fail on it."""
    path = tmp_path / "not" / "made" / "yet.db"
    r = run("init-db", odbc=f"Driver=SQLite3;Database={path}")
    assert r.returncode == 0, r.stderr
    assert path.is_file() and "aggregate_revisions" in r.stdout


def test_cli_errors_exit_2_with_one_line(sqlite_conn_str, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("TS,Device,Sensor,Value\n2018-08-28 23:00:05.000,1,1,x\n")
    r = run("load-csv", str(bad), odbc=sqlite_conn_str)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "line 2" in r.stderr and "Traceback" not in r.stderr
    r = run("aggregate", "--start", "2024-01-02", "--end", "2024-01-01", odbc=sqlite_conn_str)
    assert r.returncode == 2 and "not after" in r.stderr
    r = run("init-db", odbc="Driver={No Such Driver};Database=x")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_simulate_stores_readings_and_replaces_labels(sqlite_conn_str, monkeypatch, capsys):
    calls = []

    def fake_simulate(devices, sensors, start, end, reading_seconds, seed, anomalies=True):
        calls.append(dict(devices=devices, sensors=sensors, start=start, end=end,
                          reading_seconds=reading_seconds, seed=seed, anomalies=anomalies))
        ts = pd.date_range(start, end, freq=f"{int(reading_seconds)}s", inclusive="left")
        readings = pd.concat(
            [pd.DataFrame({"ts": ts, "device_id": f"d{d}", "sensor_id": f"s{s}", "value": 1.0})
             for d in range(devices) for s in range(sensors)], ignore_index=True)
        labels = pd.DataFrame({"device_id": ["d0"], "sensor_id": ["s0"], "kind": ["spike"],
                               "start_ts": [ts[60]], "end_ts": [ts[120]], "magnitude": [5.0]})
        return readings, labels.iloc[0:0] if not anomalies else labels

    monkeypatch.setitem(sys.modules, "batch_scoring.ingest_sim.simulator", types.SimpleNamespace(simulate=fake_simulate))
    base = ["--odbc", sqlite_conn_str, "simulate", "--devices", "2", "--sensors", "2",
            "--start", "2024-01-01T00:00:00Z", "--end", "2024-01-01T01:00:00Z", "--reading-seconds", "5", "--seed", "7"]
    assert cli.main(base + ["--aggregate"]) == 0
    out = capsys.readouterr().out
    assert "2880 readings" in out and "1 anomaly labels" in out and "48 aggregates" in out
    assert calls[0]["seed"] == 7 and calls[0]["anomalies"] is True and calls[0]["start"].tzinfo is None

    conn = schema.connect(sqlite_conn_str)
    try:
        assert len(reads.read_labels(conn)) == 1
        assert cli.main(base + ["--no-anomalies"]) == 0  # same range again: readings replaced, labels cleared
        assert calls[-1]["anomalies"] is False
        assert reads.read_labels(conn).empty
        assert len(reads.read_readings(conn, "2024-01-01", "2024-01-02")) == 2880
    finally:
        conn.close()


def test_timestamp_arguments_read_as_utc_and_keep_their_error_text():
    import argparse
    import datetime as dt

    assert cli._utc("2024-01-01T01:30:00+01:00") == dt.datetime(2024, 1, 1, 0, 30)
    assert cli._utc("2024-01-01T00:30") == dt.datetime(2024, 1, 1, 0, 30)
    try:
        pd.Timestamp("not-a-time")
    except ValueError as exc:
        why = str(exc)
    with pytest.raises(argparse.ArgumentTypeError) as err:
        cli._utc("not-a-time")
    assert str(err.value) == f"not an ISO timestamp: 'not-a-time' ({why})"
    with pytest.raises(argparse.ArgumentTypeError) as err:
        cli._utc("NaT")
    assert str(err.value) == "not an ISO timestamp: 'NaT'"


def test_load_csv_missing_file_is_one_line_exit_2(sqlite_conn_str, tmp_path, capsys):
    path = tmp_path / "nope.csv"
    assert cli.main(["--odbc", sqlite_conn_str, "load-csv", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {path}: No such file or directory (expected a TS,Device,Sensor,Value CSV file)\n"
    assert captured.out == ""


def test_help_names_the_real_invocation_and_the_environment(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m batch_scoring.ingest_sim ")
    assert "SENSOR_SQL_ODBC" in out and "BATCH_SCORING_SCHEDULE" in out
