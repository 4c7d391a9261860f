"""Every blob and file name, and the interval key, exactly as they are stored."""
from __future__ import annotations

import datetime as dt

import pytest

from batch_scoring.scoring import layout
from batch_scoring.scoring.layout import Interval

IV = Interval(dt.datetime(2026, 1, 1, 0), dt.datetime(2026, 1, 1, 1))
KEY = "20260101T0000Z_20260101T0100Z"


def test_interval_key_and_its_parse():
    assert IV.key == KEY == layout.interval_key(IV.start, IV.end)
    aware = dt.datetime(2026, 1, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=2)))  # 00:00 UTC
    assert layout.interval_key(aware, "2026-01-01T01:00:00Z") == KEY
    assert layout.interval_key(dt.datetime(2026, 1, 1, 0, 0, 59), IV.end) == KEY  # minutes are the resolution
    assert layout.parse_interval_key(KEY) == (IV.start, IV.end)
    assert Interval.from_key(KEY) == IV


@pytest.mark.parametrize("bad", ["", "20260101T0000Z", "20260101T0000Z_20260101T0100Z_x", "2026-01-01_2026-01-02"])
def test_a_malformed_key_is_refused_by_name(bad):
    with pytest.raises(ValueError, match=f"bad interval key {bad!r}"):
        layout.parse_interval_key(bad)


def test_interval_blob_names():
    assert layout.snapshot_blob(IV) == f"{KEY}/aggregates.parquet"
    assert layout.interval_prefix(IV) == f"{KEY}/"
    assert layout.prediction_blob(IV, "dev001/s1") == f"{KEY}/dev001/s1.parquet"
    assert layout.receipt_blob(IV, "dev001/s1") == f"{KEY}/dev001/s1.receipt.json"
    assert layout.manifest_blob(IV) == f"{KEY}/_manifest.json"
    assert layout.report_blob(IV) == f"{KEY}/_report.html"
    assert layout.heatmap_blob(IV) == f"{KEY}/_heatmap.png"
    assert layout.stale_marker_blob(IV) == f"{KEY}/_stale.json"
    assert layout.manifest_blob(KEY) == layout.manifest_blob(IV)  # a key names the same blobs


def test_names_relative_to_a_folder():
    assert layout.prediction_name("dev001/s1") == "dev001/s1.parquet"
    assert layout.receipt_name("dev001/s1") == "dev001/s1.receipt.json"
    assert layout.model_blob("dev001/s1") == "dev001/s1/model.joblib"
    assert layout.model_manifest_blob("dev001/s1") == "dev001/s1/manifest.json"


def test_model_manifest_target():
    assert layout.model_manifest_target("dev001/s1/manifest.json") == "dev001/s1"
    for other in ("dev001/s1/model.joblib", "README.txt", "a/b/c/manifest.json", "dev001/manifest.json"):
        assert layout.model_manifest_target(other) is None


@pytest.mark.parametrize("bad", ["dev001", "dev001/s1/x", "../s1", "dev 1/s1"])
def test_ids_that_are_not_path_safe_are_refused(bad):
    with pytest.raises(ValueError, match=f"bad target {bad!r}"):
        layout.prediction_blob(IV, bad)
