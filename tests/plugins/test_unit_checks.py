"""The collector's per-target entries from part files on a real Azurite: confirmed by MD5, or read and checked."""
from __future__ import annotations

import hashlib
import io
import json

import pyarrow.parquet as pq
import pytest

from batch_scoring.config import settings
from batch_scoring.scoring.layout import model_manifest_blob, part_blob
from batch_scoring.scoring.part_file import part_bytes, rows_digest
from batch_scoring.unit_checks import confirmed_units, read_units
from batch_scoring.validation import window_keys
from tests.plugins.predictions import INTERVAL, WINDOWS, prediction

UNIT_A, UNIT_B = ["d1/s1", "d1/s2"], ["d2/s1"]
WINDOWS_BY_TARGET = {t: window_keys(WINDOWS) for t in UNIT_A + UNIT_B}


def rows(device, sensor, **overrides):
    return pq.read_table(io.BytesIO(prediction(WINDOWS, device_id=device, sensor_id=sensor, **overrides)))


def receipt(target, table=None, error=None):
    device, sensor = target.split("/")
    if table is None:
        return {"target": target, "device_id": device, "sensor_id": sensor, "status": "failed", "error": error}
    return {"target": target, "device_id": device, "sensor_id": sensor, "status": "ok", "rows_out": table.num_rows,
            "anomalies": 0, "model_sha256": "ab" * 32, "rows_sha256": rows_digest(table), "anomaly_window_starts": []}


def unit_a() -> tuple[bytes, list[dict]]:
    """d1/s1 scored, d1/s2 failed: the part file and the receipts its score task returned."""
    t1 = rows("d1", "s1")
    receipts = [receipt("d1/s1", t1), receipt("d1/s2", error="UnknownTargetError: no rows")]
    data = part_bytes([t1], receipts, t1.schema)
    hashes = {"output_sha256": hashlib.sha256(data).hexdigest(), "output_md5": hashlib.md5(data).hexdigest()}
    return data, [{**r, **(hashes if r["status"] == "ok" else {}), "validated": True} for r in receipts]


def test_read_units_checks_each_target_and_names_a_missing_file(blob_store):
    data, _ = unit_a()
    blob_store.upload_bytes("predictions", part_blob(INTERVAL, UNIT_A), data)
    blob_store.upload_bytes("models", model_manifest_blob("d1/s1"), json.dumps({"sha256": "ab" * 32}).encode())
    present = set(blob_store.list_names("predictions", prefix=""))
    keep = {}
    got = read_units(blob_store, settings(), INTERVAL, [UNIT_A, UNIT_B], present, WINDOWS_BY_TARGET, keep)
    blob = part_blob(INTERVAL, UNIT_A)
    assert got["d1/s1"] == {"status": "ok", "blob": blob, "sha256": hashlib.sha256(data).hexdigest(),
                            "md5": hashlib.md5(data).hexdigest(), "rows": 12, "anomalies": 0,
                            "model_sha256": "ab" * 32, "rows_sha256": rows_digest(rows("d1", "s1"))}
    assert got["d1/s2"] == {"status": "failed", "blob": blob, "reason": "scoring failed: UnknownTargetError: no rows"}
    assert got["d2/s1"] == {"status": "failed", "blob": part_blob(INTERVAL, UNIT_B), "reason": "part file missing"}
    assert list(keep) == ["d1/s1"]
    # the deployed model changed since: the file is checked against it
    blob_store.upload_bytes("models", model_manifest_blob("d1/s1"), json.dumps({"sha256": "cd" * 32}).encode())
    again = read_units(blob_store, settings(), INTERVAL, [UNIT_A], present, WINDOWS_BY_TARGET)
    assert again["d1/s1"]["status"] == "failed" and again["d1/s1"]["reason"].startswith("scored with model abab")


@pytest.mark.parametrize("fault", ["model changed", "rows altered"])
def test_read_units_withdraws_the_rows_of_a_target_that_fails(blob_store, fault):
    """Azure ML wrote the file: a target whose rows fail the collector's check leaves the dataset (its rows
    out of the file, its footer receipt failed); the other target keeps its rows and gets the new hashes."""
    from batch_scoring.scoring.part_file import read_receipts

    unit = ["d1/s1", "d1/s2"]
    t1, t2 = rows("d1", "s1"), rows("d1", "s2")
    receipts = [receipt("d1/s1", t1), receipt("d1/s2", t2)]
    if fault == "rows altered":  # the rows in the file are not those the receipt's rows_sha256 was taken of
        t1 = rows("d1", "s1", decision_score=0.5)
    data = part_bytes([t1, t2], receipts, t1.schema)
    blob = part_blob(INTERVAL, unit)
    blob_store.upload_bytes("predictions", blob, data)
    for target in unit:
        changed = fault == "model changed" and target == "d1/s1"
        blob_store.upload_bytes("models", model_manifest_blob(target), json.dumps({"sha256": ("cd" if changed else "ab") * 32}).encode())
    present = set(blob_store.list_names("predictions", prefix=""))

    got = read_units(blob_store, settings(), INTERVAL, [unit], present, WINDOWS_BY_TARGET)
    reason = got["d1/s1"]["reason"]
    assert got["d1/s1"]["status"] == "failed"
    assert reason.startswith("scored with model abab" if fault == "model changed" else "rows differ")
    after = blob_store.download_bytes("predictions", blob)
    table = pq.read_table(io.BytesIO(after))
    assert set(table["sensor_id"].to_pylist()) == {"s2"} and table.num_rows == 12
    footer = {r["target"]: r for r in read_receipts(after)}
    assert footer["d1/s1"]["status"] == "failed" and footer["d1/s1"]["error"] == f"the collector's check failed: {reason}"
    assert footer["d1/s1"]["rows_sha256"] is None and footer["d1/s2"] == receipts[1]
    assert got["d1/s2"] == {**got["d1/s2"], "status": "ok", "sha256": hashlib.sha256(after).hexdigest(),
                            "md5": hashlib.md5(after).hexdigest(), "rows_sha256": rows_digest(t2)}
    # read again: the file now says d1/s1 failed, and nothing more is taken out
    again = read_units(blob_store, settings(), INTERVAL, [unit], present, WINDOWS_BY_TARGET)
    assert again["d1/s2"]["md5"] == hashlib.md5(after).hexdigest()
    assert blob_store.download_bytes("predictions", blob) == after


def test_confirmed_units_needs_every_receipt_validated_and_the_listed_md5():
    data, returned = unit_a()
    blob = part_blob(INTERVAL, UNIT_A)
    listing = {blob: hashlib.md5(data).hexdigest()}
    keep = {}
    got = confirmed_units(INTERVAL, [UNIT_A, UNIT_B], [returned], listing, keep)
    assert sorted(got) == UNIT_A and list(keep) == ["d1/s1"]  # UNIT_B: no receipts, left to read_units
    assert got["d1/s1"]["md5"] == listing[blob] and got["d1/s1"]["rows"] == 12
    assert got["d1/s2"]["status"] == "failed"
    assert confirmed_units(INTERVAL, [UNIT_A], [returned], {blob: "0" * 32}) == {}  # blob changed since
    assert confirmed_units(INTERVAL, [UNIT_A], [returned[:1]], listing) == {}  # a receipt missing
    assert confirmed_units(INTERVAL, [UNIT_A], [[{**returned[0], "validated": False}, returned[1]]], listing) == {}


def test_part_receipts_reads_the_footer_by_ranges(blob_store):
    from batch_scoring.unit_checks import part_receipts

    data, _ = unit_a()
    blob = part_blob(INTERVAL, UNIT_A)
    blob_store.upload_bytes("predictions", blob, data)
    footer = part_receipts(blob_store, "predictions", blob)
    assert [r["target"] for r in footer] == UNIT_A and footer[1]["error"] == "UnknownTargetError: no rows"
    assert part_receipts(blob_store, "predictions", part_blob(INTERVAL, UNIT_B)) is None
    blob_store.upload_bytes("predictions", part_blob(INTERVAL, UNIT_B), prediction(WINDOWS))  # parquet, no receipts
    with pytest.raises(ValueError, match=f"predictions/{part_blob(INTERVAL, UNIT_B)}: no batch_scoring.receipts"):
        part_receipts(blob_store, "predictions", part_blob(INTERVAL, UNIT_B))


def test_part_receipts_does_not_download_the_rows(blob_store, monkeypatch):
    import numpy as np
    import pyarrow as pa

    from batch_scoring.hooks import blob_storage
    from batch_scoring.unit_checks import part_receipts

    n = 300_000  # ~2.4 MB of random scores: far more than the footer
    table = pa.table({"device_id": ["d1"] * n, "sensor_id": ["s1"] * n,
                      "decision_score": np.random.default_rng(0).random(n)})
    data = part_bytes([table], [{"target": "d1/s1", "status": "ok"}], table.schema)
    blob = part_blob(INTERVAL, ["d1/s1"])
    blob_store.upload_bytes("predictions", blob, data)
    fetched = []
    real = blob_storage._BlobRangeFile.readinto

    def counting(self, buffer):
        got = real(self, buffer)
        fetched.append(got)
        return got

    monkeypatch.setattr(blob_storage._BlobRangeFile, "readinto", counting)
    assert [r["target"] for r in part_receipts(blob_store, "predictions", blob)] == ["d1/s1"]
    assert len(data) > 2_000_000 and 0 < sum(fetched) <= 2 * (64 << 10), (len(data), fetched)
