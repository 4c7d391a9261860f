"""ingest_sim.csv_loader: the reference file loads unchanged; bad files name file, line, column."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from batch_scoring.ingest_sim.csv_loader import CsvFormatError, load_csv

REFERENCE_CSV = Path(__file__).resolve().parents[3] / "shared" / "reference" / "sensor_data.csv"
GOOD = "2018-08-28 23:00:05.000,1,1,10.16\n"


def write(tmp_path, text, name="in.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_reference_file_loads_unchanged():
    df = load_csv(REFERENCE_CSV)
    assert len(df) == 17768
    assert list(df.columns) == ["ts", "device_id", "sensor_id", "value"]
    assert str(df["ts"].dtype) == "datetime64[us]" and df["value"].dtype == np.float64
    assert sorted(df["device_id"].unique()) == ["1", "2", "3"]
    assert sorted(df["sensor_id"].unique()) == ["1", "2", "3", "4", "5"]
    assert df.groupby(["device_id", "sensor_id"]).ngroups == 15
    assert df["ts"].iloc[0] == pd.Timestamp("2018-08-28 23:00:05")
    assert df["ts"].iloc[-1] == pd.Timestamp("2018-08-29 03:12:30")
    assert df["ts"].min() == pd.Timestamp("2018-08-28 23:00:05")
    assert df["ts"].max() == pd.Timestamp("2018-08-29 03:12:30")
    assert (df.iloc[0]["device_id"], df.iloc[0]["sensor_id"], df.iloc[0]["value"]) == ("1", "1", 10.16)
    assert (df.iloc[-1]["device_id"], df.iloc[-1]["sensor_id"], df.iloc[-1]["value"]) == ("3", "5", 101.65)
    # same values as a plain parse of the file
    plain = pd.read_csv(REFERENCE_CSV)
    assert df["value"].tolist() == plain["Value"].tolist()


def test_offsets_converted_to_utc_crlf_and_trailing_blank_lines(tmp_path):
    p = write(tmp_path, "TS,Device,Sensor,Value\r\n2018-08-28T23:00:05+02:00,dev-1,s_1,1e3\r\n2018-08-28 21:00:10, dev-1 ,s_1, -2.5\r\n\r\n")
    df = load_csv(p)
    assert df["ts"].tolist() == [pd.Timestamp("2018-08-28 21:00:05"), pd.Timestamp("2018-08-28 21:00:10")]
    assert df["device_id"].tolist() == ["dev-1", "dev-1"] and df["value"].tolist() == [1000.0, -2.5]


def test_header_only_gives_empty_frame(tmp_path):
    df = load_csv(write(tmp_path, "TS,Device,Sensor,Value\n"))
    assert df.empty and list(df.columns) == ["ts", "device_id", "sensor_id", "value"]


@pytest.mark.parametrize(
    "text, line, column, fragment",
    [
        ("Time,Device,Sensor,Value\n" + GOOD, 1, None, "header"),
        ("TS,Device,Sensor\n" + GOOD, 1, None, "header"),
        ("TS,Device,Sensor,Value\n" + GOOD + GOOD + "2018-08-28 25:00:05.000,1,1,1\n", 4, "TS", "unparseable timestamp"),
        ("TS,Device,Sensor,Value\n" + GOOD + "not-a-date,1,1,1\n", 3, "TS", "unparseable timestamp"),
        ("TS,Device,Sensor,Value\n" + GOOD + "2018-08-28 23:00:05.000,1,1,abc\n", 3, "Value", "not a finite number"),
        ("TS,Device,Sensor,Value\n" + GOOD + "2018-08-28 23:00:05.000,1,1,\n", 3, "Value", "not a finite number"),
        ("TS,Device,Sensor,Value\n" + GOOD + "2018-08-28 23:00:05.000,1,1,nan\n", 3, "Value", "not a finite number"),
        ("TS,Device,Sensor,Value\n" + GOOD + "2018-08-28 23:00:05.000,1,1,inf\n", 3, "Value", "not a finite number"),
        ("TS,Device,Sensor,Value\n" + GOOD + "2018-08-28 23:00:05.000,../x,1,1\n", 3, "Device", "bad id"),
        ("TS,Device,Sensor,Value\n" + GOOD + "2018-08-28 23:00:05.000,1,a/b,1\n", 3, "Sensor", "bad id"),
        ("TS,Device,Sensor,Value\n" + GOOD + "2018-08-28 23:00:05.000,,1,1\n", 3, "Device", "bad id"),
        ("TS,Device,Sensor,Value\n" + GOOD + "2018-08-28 23:00:05.000,1,1\n", 3, None, "expected 4 columns"),
        ("TS,Device,Sensor,Value\n" + GOOD + "2018-08-28 23:00:05.000,1,1,1,9\n", 3, None, "expected 4 columns"),
        ("TS,Device,Sensor,Value\n" + GOOD + "\n" + GOOD, 3, None, "expected 4 columns"),
    ],
)
def test_errors_name_file_line_and_column(tmp_path, text, line, column, fragment):
    p = write(tmp_path, text, name="bad_input.csv")
    with pytest.raises(CsvFormatError) as info:
        load_csv(p)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.line == line and err.column == column
    msg = str(err)
    assert str(p) in msg and f"line {line}" in msg and fragment in msg
    if column:
        assert f"column {column}" in msg


def test_error_counts_all_bad_lines_and_reports_the_first(tmp_path):
    body = GOOD * 5 + "2018-08-28 23:00:05.000,1,1,x\n" + GOOD + "bad,1,1,1\n" + "2018-08-28 23:00:05.000,1,1,y\n"
    with pytest.raises(CsvFormatError) as info:
        load_csv(write(tmp_path, "TS,Device,Sensor,Value\n" + body))
    assert info.value.line == 7 and info.value.column == "Value" and info.value.bad_lines == 3
    assert "3 bad lines in total" in str(info.value)


def test_missing_file_is_a_csv_error(tmp_path):
    with pytest.raises(CsvFormatError, match="cannot read file"):
        load_csv(tmp_path / "nope.csv")


def test_validation_is_vectorised(tmp_path):
    n = 300_000
    ts = pd.date_range("2024-01-01", periods=n, freq="1s").strftime("%Y-%m-%d %H:%M:%S.000")
    p = tmp_path / "big.csv"
    pd.DataFrame({"TS": ts, "Device": "7", "Sensor": "3", "Value": np.arange(n) / 7}).to_csv(p, index=False)
    with open(p, "a") as f:
        f.write("2024-01-05 00:00:00.000,7,3,oops\n")
    t0 = time.perf_counter()
    with pytest.raises(CsvFormatError) as info:
        load_csv(p)
    assert info.value.line == n + 2
    assert time.perf_counter() - t0 < 5
