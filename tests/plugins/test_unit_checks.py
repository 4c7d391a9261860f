"""The collector's per-target entries from part files on a real Azurite: confirmed by MD5, or read and checked."""
from __future__ import annotations

import hashlib
import io
import json

import pyarrow.parquet as pq

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
