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
    folder = f"date=2026-01-01/interval={KEY}/"  # every predictions blob of the interval sits in its hive folder
    assert layout.snapshot_blob(IV) == f"{KEY}/aggregates.parquet"
    assert layout.interval_prefix(IV) == folder == layout.interval_folder(IV)
    assert layout.part_blob(IV, ["dev001/s1"]) == f"{folder}{layout.part_name(['dev001/s1'])}"
    assert layout.manifest_blob(IV) == f"{folder}_manifest.json"
    assert layout.report_blob(IV) == f"{folder}_report.html"
    assert layout.heatmap_blob(IV) == f"{folder}_heatmap.png"
    assert layout.stale_marker_blob(IV) == f"{folder}_stale.json"
    assert layout.manifest_blob(KEY) == layout.manifest_blob(IV)  # a key names the same blobs
    with pytest.raises(ValueError, match="bad interval key"):
        layout.manifest_blob("<interval>")


def test_names_relative_to_a_folder():
    assert layout.model_blob("dev001/s1") == "dev001/s1/model.joblib"
    assert layout.model_manifest_blob("dev001/s1") == "dev001/s1/manifest.json"


def test_model_manifest_target():
    assert layout.model_manifest_target("dev001/s1/manifest.json") == "dev001/s1"
    for other in ("dev001/s1/model.joblib", "README.txt", "a/b/c/manifest.json", "dev001/manifest.json"):
        assert layout.model_manifest_target(other) is None


@pytest.mark.parametrize("bad", ["dev001", "dev001/s1/x", "../s1", "dev 1/s1"])
def test_ids_that_are_not_path_safe_are_refused(bad):
    with pytest.raises(ValueError, match=f"bad target {bad!r}"):
        layout.part_blob(IV, [bad])


# --------------------------------------------------------------------------- predictions dataset (issue 14)
FOLDER = f"date=2026-01-01/interval={KEY}/"


def test_interval_folder_is_a_hive_partition_of_the_start_date():
    assert layout.interval_folder(IV) == FOLDER == layout.interval_folder(KEY)
    late = Interval(dt.datetime(2026, 1, 1, 23), dt.datetime(2026, 1, 2, 0))  # the start's date, not the end's
    assert layout.interval_folder(late) == "date=2026-01-01/interval=20260101T2300Z_20260102T0000Z/"
    assert layout.parse_interval_folder(FOLDER) == IV == layout.parse_interval_folder(FOLDER.rstrip("/"))


@pytest.mark.parametrize("bad", [KEY, f"date=2026-01-02/interval={KEY}/", f"interval={KEY}/date=2026-01-01/",
                                 "date=2026-01-01/interval=x/", f"{FOLDER}part-a.parquet"])
def test_a_folder_not_written_by_interval_folder_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="bad interval"):
        layout.parse_interval_folder(bad)


def test_unit_id_is_deterministic_and_order_free():
    unit = ["dev002/s1", "dev001/s2", "dev001/s1"]
    uid = layout.unit_id(unit)
    assert uid.startswith("dev001_s1-") and len(uid.split("-")[-1]) == 12
    # the first target of the sorted list, then sha256 of the sorted list joined by newlines
    import hashlib
    assert uid == "dev001_s1-" + hashlib.sha256(b"dev001/s1\ndev001/s2\ndev002/s1").hexdigest()[:12]
    assert layout.unit_id(list(reversed(unit)) + ["dev001/s1"]) == uid  # order and duplicates do not matter
    assert layout.unit_id(unit[:2]) != uid  # other batching, other name
    assert layout.unit_id(["dev001/s1"]) != layout.unit_id(["dev001/s2"])  # one target per unit: a file per target
    assert layout.part_name(unit) == f"part-{uid}.parquet"
    assert layout.part_blob(IV, unit) == f"{FOLDER}part-{uid}.parquet" == layout.part_blob(KEY, unit)


@pytest.mark.parametrize("bad", [[], ["dev001/s1", "../etc"], ["dev 1/s1"]])
def test_a_unit_without_targets_or_with_unsafe_ids_is_refused(bad):
    with pytest.raises(ValueError, match="at least one target|bad target"):
        layout.unit_id(bad)


def test_part_names_and_day_globs():
    assert layout.is_part_name("part-dev001_s1-0123456789ab.parquet")
    for other in ("_manifest.json", "part-.parquet", "dev001/s1.parquet", "x/part-a.parquet", "part-a.json"):
        assert not layout.is_part_name(other)
    assert layout.day_glob("2026-03-02") == "date=2026-03-02/*/part-*.parquet"
    assert layout.day_glob(dt.date(2026, 3, 2)) == layout.day_glob(dt.datetime(2026, 3, 2, 5)) == layout.day_glob("2026-03-02")
    assert layout.day_glob("2026-03-*") == "date=2026-03-*/*/part-*.parquet"
    for bad in ("2026-3-2", "20260302", "2026-03-02/../x", "2026-03-2*"):
        with pytest.raises(ValueError, match="bad day"):
            layout.day_glob(bad)
