"""validate_part: a scoring unit's part file checked target by target, receipts from its footer."""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_scoring.scoring.part_file import part_bytes, rows_digest
from batch_scoring.validation import validate_part, window_keys
from tests.plugins.predictions import WINDOWS, prediction

UNIT = ["d1/s1", "d1/s2"]
WINDOWS_BY_TARGET = {t: window_keys(WINDOWS) for t in UNIT}


def rows(sensor: str, **overrides) -> pa.Table:
    return pq.read_table(io.BytesIO(prediction(WINDOWS, sensor_id=sensor, **overrides)))


def receipt(target: str, table: pa.Table | None, **overrides) -> dict:
    ok = table is not None
    r = {"target": target, "device_id": target.split("/")[0], "sensor_id": target.split("/")[1],
         "status": "ok" if ok else "failed", "rows_out": table.num_rows if ok else 0,
         "anomalies": int(np.asarray(table["is_anomaly"]).sum()) if ok else 0,
         "model_sha256": "ab" * 32 if ok else None, "rows_sha256": rows_digest(table) if ok else None,
         "error": None if ok else "ModelIntegrityError: sha256 mismatch"}
    return {**r, **overrides}


def part(tables, receipts) -> bytes:
    return part_bytes(tables, receipts, tables[0].schema if tables else rows("s1").schema)


def test_a_good_part_file_passes_target_by_target():
    t1, t2 = rows("s1"), rows("s2", is_anomaly=[True] + [False] * 11)
    got = validate_part(part([t1, t2], [receipt("d1/s2", t2), receipt("d1/s1", t1)]), UNIT, WINDOWS_BY_TARGET,
                        {"d1/s1": {"sha256": "ab" * 32}, "d1/s2": None})
    assert set(got) == set(UNIT) and all(problem is None for _, problem in got.values())
    assert got["d1/s2"][0]["rows"] == 12 and got["d1/s2"][0]["anomalies"] == 1
    assert list(got["d1/s2"][0]["anomaly_starts"]) == [window_keys(WINDOWS)[0]]


def test_each_target_gets_its_own_reason():
    t1, t2 = rows("s1"), rows("s2")
    # d1/s2's rows altered after scoring (same count, same hash column): only the digest tells
    altered = t2.set_column(t2.column_names.index("decision_score"), "decision_score",
                            pa.array(np.linspace(-1, 1, 12)[::-1].copy()))
    got = validate_part(part([t1, altered], [receipt("d1/s1", t1), receipt("d1/s2", t2)]), UNIT + ["d1/s3"],
                        {**WINDOWS_BY_TARGET, "d1/s3": window_keys(WINDOWS)}, {})
    assert got["d1/s1"][1] is None
    assert got["d1/s2"] == (None, "rows differ from those the scoring step wrote (rows_sha256)")
    assert got["d1/s3"] == (None, "no receipt in the part file's footer")
    # a target that failed scoring: its receipt, no rows
    got = validate_part(part([t1], [receipt("d1/s1", t1), receipt("d1/s2", None)]), UNIT, WINDOWS_BY_TARGET, {})
    assert got["d1/s1"][1] is None
    assert got["d1/s2"] == (None, "scoring failed: ModelIntegrityError: sha256 mismatch")
    # a file all of whose targets failed: zero rows, receipts only
    got = validate_part(part([], [receipt(t, None) for t in UNIT]), UNIT, WINDOWS_BY_TARGET, {})
    assert {p for _, p in got.values()} == {"scoring failed: ModelIntegrityError: sha256 mismatch"}


@pytest.mark.parametrize("make, reason", [
    (lambda t1, t2: b"PAR1 not parquet", "unreadable part file"),
    (lambda t1, t2: prediction(WINDOWS), "unreadable part file (ValueError: no batch_scoring.receipts"),
    (lambda t1, t2: part([t2, t1], [receipt("d1/s1", t1), receipt("d1/s2", t2)]), "rows not sorted"),
    (lambda t1, t2: part([t1, rows("s9")], [receipt("d1/s1", t1)]), "rows of targets outside the unit: d1/s9"),
    (lambda t1, t2: part([t1.drop_columns(["is_anomaly"])], [receipt("d1/s1", t1)]), "missing columns ['is_anomaly']"),
])
def test_a_bad_file_fails_every_target_of_the_unit_naming_why(make, reason):
    got = validate_part(make(rows("s1"), rows("s2")), UNIT, WINDOWS_BY_TARGET, {})
    assert set(got) == set(UNIT)
    for summary, problem in got.values():
        assert summary is None and reason in problem, problem


def test_a_target_failed_after_writing_leaves_the_file_and_keeps_its_receipt():
    from batch_scoring.scoring.part_file import fail_targets, read_receipts

    t1, t2 = rows("s1"), rows("s2")
    data = part([t1, t2], [receipt("d1/s1", t1), receipt("d1/s2", t2)])
    fixed = fail_targets(data, {"d1/s2": "the prediction written failed validation: 12 rows for 11 input windows"})
    got = validate_part(fixed, UNIT, WINDOWS_BY_TARGET, {})
    assert got["d1/s1"][1] is None
    assert got["d1/s2"] == (None, "scoring failed: the prediction written failed validation: 12 rows for 11 input windows")
    assert pq.read_table(io.BytesIO(fixed)).num_rows == 12
    assert [r["status"] for r in read_receipts(fixed)] == ["ok", "failed"]
    assert fail_targets(data, {}) == data
    # rows of a target the footer does not hold (relabelled after writing) leave with the failed target's
    stray = part([t1, t2.set_column(0, "device_id", pa.array(["d9"] * 12, t2.schema.field("device_id").type))],
                 [receipt("d1/s1", t1), receipt("d1/s2", t2)])
    fixed = fail_targets(stray, {"d1/s2": "part file: rows of targets outside the unit: d9/s2"})
    assert pq.read_table(io.BytesIO(fixed))["device_id"].to_pylist() == ["d1"] * 12
    with pytest.raises(KeyError, match="d9/s9"):
        fail_targets(data, {"d9/s9": "x"})
