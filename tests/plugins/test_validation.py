"""The checks a prediction blob must pass, and the window keys they compare."""
from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pandas as pd
import pytest

from batch_scoring.validation import anomaly_starts, validate_prediction, window_keys, windows_by_target
from tests.plugins.predictions import WINDOWS, prediction


@pytest.mark.parametrize("data, problem", [
    (b"PAR1 not really", "unreadable parquet"),
    (prediction(WINDOWS)[:200], "unreadable parquet"),
    (prediction(WINDOWS, decision_score=None), "missing columns ['decision_score']"),
    (prediction(WINDOWS[:11]), "11 rows for 12 input windows"),
    (prediction([w + pd.Timedelta(hours=1) for w in WINDOWS]), "windows differ"),
    (prediction(WINDOWS, decision_score=[np.nan] + [0.0] * 11), "1 non-finite decision scores"),
    (prediction(WINDOWS, sensor_id="s2"), "another device/sensor"),
    (prediction(WINDOWS, model_sha256=["a"] * 6 + ["b"] * 6), "more than one model hash"),
])
def test_validate_prediction_names_each_problem(data, problem):
    summary, found = validate_prediction(data, "d1/s1", WINDOWS)
    assert summary is None and problem in found


def test_validate_prediction_accepts_a_good_blob():
    summary, problem = validate_prediction(prediction(WINDOWS), "d1/s1", WINDOWS)
    starts = summary.pop("anomaly_starts")
    assert problem is None and summary == {"rows": 12, "anomalies": 0, "model_sha256": "ab" * 32}
    assert starts.dtype == "int64" and len(starts) == 0


def test_validate_prediction_checks_the_model_manifest_and_the_receipt():
    data = prediction(WINDOWS, is_anomaly=[True] + [False] * 11)
    assert validate_prediction(data, "d1/s1", WINDOWS, {"sha256": "cd" * 32})[1].startswith("scored with model abab")
    assert "anomaly flag(s) disagree" in validate_prediction(data, "d1/s1", WINDOWS, {"sha256": "ab" * 32,
                                                                                     "threshold": 0.5})[1]
    receipt = {"status": "ok", "rows_out": 12, "anomalies": 2, "model_sha256": "ab" * 32}
    assert validate_prediction(data, "d1/s1", WINDOWS, None, receipt)[1] == \
        "blob differs from what the scoring step wrote: anomalies 1 != receipt's 2"
    summary, problem = validate_prediction(data, "d1/s1", WINDOWS, None, {**receipt, "anomalies": 1})
    assert problem is None and summary["anomaly_starts"].tolist() == window_keys(WINDOWS[:1]).tolist()


def test_window_keys_are_sorted_int64_microseconds():
    keys = window_keys([WINDOWS[1], WINDOWS[0]])
    assert keys.dtype == np.int64
    assert keys.tolist() == [int(pd.Timestamp(w).value // 1000) for w in WINDOWS[:2]]
    assert window_keys(keys) is keys


def test_windows_by_target_groups_each_target_s_sorted_starts():
    snapshot = pd.DataFrame({"device_id": ["d2", "d1", "d1", "d1"], "sensor_id": ["s1", "s2", "s1", "s1"],
                             "window_start": [WINDOWS[0], WINDOWS[0], WINDOWS[1], WINDOWS[0]]})
    got = windows_by_target(snapshot)
    assert list(got) == ["d1/s1", "d1/s2", "d2/s1"]
    assert got["d1/s1"].tolist() == window_keys(WINDOWS[:2]).tolist()
    assert windows_by_target(snapshot.iloc[:0]) == {}


def test_anomaly_starts_reads_the_flagged_windows():
    data = prediction(WINDOWS, is_anomaly=[False, True] * 6)
    assert anomaly_starts(data).tolist() == window_keys(WINDOWS[1::2]).tolist()


def test_anomaly_starts_of_one_target_in_a_part_file():
    import pyarrow.parquet as pq

    from batch_scoring.scoring.part_file import part_bytes

    def rows(sensor, flags):
        return pq.read_table(io.BytesIO(prediction(WINDOWS, sensor_id=sensor, is_anomaly=flags)))
    t1, t2 = rows("s1", [True] + [False] * 11), rows("s2", [False, True] * 6)
    receipts = [{"target": f"d1/{s}", "device_id": "d1", "sensor_id": s, "status": "ok"} for s in ("s1", "s2")]
    data = part_bytes([t1, t2], receipts, t1.schema)
    assert anomaly_starts(data, "d1/s1").tolist() == window_keys(WINDOWS[:1]).tolist()
    assert anomaly_starts(data, "d1/s2").tolist() == window_keys(WINDOWS[1::2]).tolist()
    assert anomaly_starts(data, "d1/s9").tolist() == []  # no rows of that target
    assert len(anomaly_starts(data)) == 7  # every row without a target


_US_0005 = 1767225900000000  # 2026-01-01 00:05 UTC in µs since the epoch


@pytest.mark.parametrize("windows, expected", [
    (["2026-01-01T00:05:00", "2026-01-01T00:00:00"], [_US_0005 - 300_000_000, _US_0005]),  # receipts' ISO text, sorted
    (["2026-01-01 00:05:00"], [_US_0005]),
    (["2026-01-01T00:05:00.123456"], [_US_0005 + 123456]),
    ([dt.datetime(2026, 1, 1, 0, 5)], [_US_0005]),
    ([pd.Timestamp("2026-01-01 00:05")], [_US_0005]),
    (["2026-01-01T00:05:00Z"], [_US_0005]),  # an offset: converted to UTC (pandas' path)
    (["2026-01-01T01:05:00+01:00"], [_US_0005]),
    ([dt.datetime(2026, 1, 1, 0, 5, tzinfo=dt.timezone.utc)], [_US_0005]),
    ([], []),
])
def test_window_keys_gives_sorted_utc_microseconds_for_every_spelling(windows, expected):
    got = window_keys(windows)
    assert got.dtype == np.int64 and got.tolist() == expected


@pytest.mark.parametrize("bad", [["nope"], ["2026-13-01T00:00:00"]])
def test_window_keys_refuses_what_is_no_timestamp(bad):
    with pytest.raises(ValueError):
        window_keys(bad)
