"""score_unit: one part file per scoring unit, receipts in its footer, readable as a hive-partitioned dataset."""
from __future__ import annotations

import datetime as dt
import hashlib
import json

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from batch_scoring.scoring import layout
from batch_scoring.scoring.part_file import RECEIPTS_KEY, read_receipts, rows_digest
from batch_scoring.scoring.score import OUTPUT_COLUMNS, score_unit

TARGETS = ["dev001/s1", "dev001/s2", "dev002/s1", "dev002/s2"]
HASHES = ("output_sha256", "output_md5")


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_one_file_holds_every_target_sorted_with_the_receipts_in_its_footer(tmp_path, trained):
    models, manifests, score_aggs = trained
    out = tmp_path / "out"
    receipts = score_unit(score_aggs, models, out, ["dev002/s1", "dev001/s2", "dev002/s2", "dev001/s1"])
    name = layout.part_name(TARGETS)
    assert _files(out) == [name]
    data = (out / name).read_bytes()
    assert [r["target"] for r in receipts] == ["dev002/s1", "dev001/s2", "dev002/s2", "dev001/s1"]  # as given
    assert all(r["status"] == "ok" and r["output"] == name for r in receipts)
    assert {r["output_md5"] for r in receipts} == {hashlib.md5(data).hexdigest()}
    assert {r["output_sha256"] for r in receipts} == {hashlib.sha256(data).hexdigest()}

    table = pq.read_table(out / name)
    assert table.column_names == list(OUTPUT_COLUMNS)
    frame = table.to_pandas()
    assert len(frame) == 4 * 36
    assert frame.equals(frame.sort_values(["device_id", "sensor_id", "window_start"], kind="mergesort"))
    # the rows are exactly those of one-target units (a file per target), target by target
    by_target = {r["target"]: r for r in receipts}
    for target in TARGETS:
        device, sensor = target.split("/")
        score_unit(score_aggs, models, tmp_path / "per_target", [target])
        own = pq.read_table(tmp_path / "per_target" / layout.part_name([target])).replace_schema_metadata(None)
        mine = table.filter((pa.compute.field("device_id") == device) & (pa.compute.field("sensor_id") == sensor))
        assert mine.equals(own)
        assert by_target[target]["rows_sha256"] == rows_digest(own) == rows_digest(mine)
        assert by_target[target]["rows_out"] == own.num_rows == 36

    footer = read_receipts(out / name)
    assert [r["target"] for r in footer] == TARGETS  # sorted by device, sensor
    assert footer == [{k: v for k, v in by_target[t].items() if k not in HASHES} for t in TARGETS]
    assert read_receipts(data) == footer
    with open(out / name, "rb") as fh:
        assert read_receipts(fh) == footer


def test_same_unit_same_bytes_other_batching_other_names(tmp_path, trained):
    models, _, score_aggs = trained
    score_unit(score_aggs, models, tmp_path / "a", TARGETS)
    score_unit(score_aggs.sample(frac=1.0, random_state=4), models, tmp_path / "b", list(reversed(TARGETS)) + TARGETS)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    name = layout.part_name(TARGETS)
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    for unit in (TARGETS[:2], TARGETS[2:]):
        score_unit(score_aggs, models, tmp_path / "c", unit)
    assert _files(tmp_path / "c") == sorted([layout.part_name(TARGETS[:2]), layout.part_name(TARGETS[2:])])
    assert name not in _files(tmp_path / "c")
    # one target per unit: one file per target
    score_unit(score_aggs, models, tmp_path / "d", ["dev001/s1"])
    assert pq.read_table(tmp_path / "d" / layout.part_name(["dev001/s1"])).num_rows == 36


def test_failed_targets_have_receipts_and_no_rows(tmp_path, trained):
    models, _, score_aggs = trained
    path = models / "dev001" / "s2" / "model.joblib"
    path.write_bytes(b"X" + path.read_bytes()[1:])  # tampered
    unit = ["dev001/s2", "dev009/s1", "../etc", "dev002/s1"]
    receipts = {r["target"]: r for r in score_unit(score_aggs, models, tmp_path / "out", unit)}
    name = layout.part_name(["dev001/s2", "dev009/s1", "dev002/s1"])  # the path-safe targets name the unit
    assert _files(tmp_path / "out") == [name]
    assert receipts["dev002/s1"]["status"] == "ok"
    for target, error_type in (("dev001/s2", "ModelIntegrityError"), ("dev009/s1", "UnknownTargetError"), ("../etc", None)):
        r = receipts[target]
        assert r["status"] == "failed" and r["output"] is None and r["rows_sha256"] is None and r["error"], r
        assert r["output_md5"] is None
        if error_type:
            assert r["error_type"] == error_type
    frame = pd.read_parquet(tmp_path / "out" / name)
    assert set(zip(frame["device_id"], frame["sensor_id"])) == {("dev002", "s1")}
    footer = {r["target"]: r for r in read_receipts(tmp_path / "out" / name)}
    assert set(footer) == set(unit)
    assert footer["dev001/s2"]["error"] == receipts["dev001/s2"]["error"]


def test_a_unit_whose_targets_all_failed_writes_a_zero_row_file(tmp_path, trained):
    models, _, score_aggs = trained
    receipts = score_unit(score_aggs, models, tmp_path / "out", ["dev009/s1", "dev009/s2"])
    assert [r["status"] for r in receipts] == ["failed", "failed"]
    path = tmp_path / "out" / layout.part_name(["dev009/s1", "dev009/s2"])
    table = pq.read_table(path)
    assert table.num_rows == 0 and table.column_names == list(OUTPUT_COLUMNS)
    assert [r["target"] for r in read_receipts(path)] == ["dev009/s1", "dev009/s2"]
    # no path-safe target: no name, nothing written
    assert score_unit(score_aggs, models, tmp_path / "none", ["../etc"])[0]["status"] == "failed"
    assert not (tmp_path / "none").exists()


def test_read_receipts_names_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="not a readable parquet file"):
        read_receipts(b"not parquet")
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"a": [1]}), plain)
    with pytest.raises(ValueError, match="no batch_scoring.receipts in the parquet footer"):
        read_receipts(plain)
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"a": [1]}).replace_schema_metadata({RECEIPTS_KEY: json.dumps({"x": 1})}), bad)
    with pytest.raises(ValueError, match="not a list of receipts"):
        read_receipts(bad)


def test_interval_folders_read_as_one_table_by_day(tmp_path, trained):
    """What the layout is for: pyarrow.dataset and pandas read a day of part files as one table."""
    models, _, score_aggs = trained
    root = tmp_path / "predictions"
    day1 = layout.Interval(dt.datetime(2026, 3, 1, 6), dt.datetime(2026, 3, 1, 9))
    day2 = layout.Interval(dt.datetime(2026, 3, 2, 6), dt.datetime(2026, 3, 2, 9))
    for iv in (day1, day2):
        for unit in (TARGETS[:3], TARGETS[3:]):
            score_unit(score_aggs, models, root / layout.interval_folder(iv), unit)
        (root / layout.interval_folder(iv) / "_manifest.json").write_text("{}")  # skipped by the readers
    dataset = ds.dataset(root, format="parquet", partitioning="hive")
    assert dataset.count_rows() == 2 * 4 * 36
    one_day = pd.read_parquet(root, filters=[("date", "=", "2026-03-02")])
    assert len(one_day) == 4 * 36 and set(one_day["interval"].astype(str)) == {day2.key}
    assert set(zip(one_day["device_id"], one_day["sensor_id"])) == {tuple(t.split("/")) for t in TARGETS}
    globbed = sorted(p.relative_to(root).as_posix() for p in root.glob(layout.day_glob("2026-03-02")))
    assert globbed == sorted(layout.part_blob(day2, u) for u in (TARGETS[:3], TARGETS[3:]))
    assert len(list(root.glob(layout.day_glob("2026-03-*")))) == 4


def test_an_earlier_part_file_without_the_rescored_targets(tmp_path, trained):
    """A run over a subset keeps the other targets of an earlier unit's file, and only those."""
    from batch_scoring.scoring.part_file import without_targets

    models, _, score_aggs = trained
    score_unit(score_aggs, models, tmp_path / "all", TARGETS)
    data = (tmp_path / "all" / layout.part_name(TARGETS)).read_bytes()
    name, rest = without_targets(data, {"dev001/s2", "dev002/s1", "dev009/s9"})
    kept = ["dev001/s1", "dev002/s2"]
    assert name == layout.part_name(kept)
    # the same bytes as a unit of just those targets would have written
    score_unit(score_aggs, models, tmp_path / "kept", kept)
    assert rest == (tmp_path / "kept" / name).read_bytes()
    assert [r["target"] for r in read_receipts(rest)] == kept
    assert without_targets(data, TARGETS) == (None, None)
    assert without_targets(data, []) == (layout.part_name(TARGETS), data)


def test_errors_name_what_an_operator_knows_not_the_local_folder(tmp_path, trained):
    models, _, score_aggs = trained
    (models / "dev001" / "s2" / "model.joblib").unlink()
    receipts = score_unit(score_aggs, models, tmp_path / "out", TARGETS[:2], error_names={f"{models}/": "models/"})
    failed = receipts[1]
    assert failed["status"] == "failed" and "models/dev001/s2/model.joblib" in failed["error"], failed["error"]
    assert str(models) not in failed["error"]
    footer = read_receipts(tmp_path / "out" / layout.part_name(TARGETS[:2]))
    assert footer[1]["error"] == failed["error"]
    plain = score_unit(score_aggs, models, tmp_path / "plain", TARGETS[:2])
    assert f"{models}/dev001/s2/model.joblib" in plain[1]["error"]  # without error_names: the path as it is
