"""batch_scoring.permanent: which failed receipts retrying cannot fix, and only those written since a time."""
from __future__ import annotations

import datetime as dt
import time

from batch_scoring.config import Containers
from batch_scoring.permanent import permanent_cause, permanent_receipts, way_out
from batch_scoring.scoring.layout import Interval, part_blob
from batch_scoring.scoring.part_file import part_bytes

IV = Interval(dt.datetime(2026, 3, 2), dt.datetime(2026, 3, 2, 1))


def _receipt(target, status="failed", error_type=None):
    return {"target": target, "status": status, "error_type": error_type,
            "error": f"{error_type}: something about {target}" if error_type else None}


def _part(*receipts) -> bytes:
    """A part file with no rows and these receipts in its footer (what a unit whose targets all failed writes)."""
    import pyarrow as pa

    schema = pa.schema([("device_id", pa.string()), ("sensor_id", pa.string())])
    return part_bytes([], list(receipts), schema)


def test_causes_retrying_cannot_fix():
    assert permanent_cause({"error_type": "ModelIntegrityError"}) == "ModelIntegrityError"
    assert permanent_cause({"error_type": "ModelVersionError"}) == "ModelVersionError"  # a subclass, found too
    assert permanent_cause({"error_type": "UnknownTargetError"}) == "UnknownTargetError"
    assert permanent_cause({"error_type": "OSError"}) is None and permanent_cause({}) is None


def test_only_receipts_written_since_count(blob_store):
    old_unit, unit = ["d1/s1"], ["d1/s1", "d1/s2", "d1/s3", "d1/s4", "d1/s5"]  # s5: no receipt at all
    blob_store.upload_bytes("predictions", part_blob(IV, old_unit), _part(_receipt("d1/s1", error_type="ModelNotFoundError")))
    time.sleep(1.1)  # blob times have a one-second resolution
    since = dt.datetime.now(dt.timezone.utc)
    time.sleep(1.1)
    blob_store.upload_bytes("predictions", part_blob(IV, unit), _part(
        _receipt("d1/s1", error_type="ModelNotFoundError"), _receipt("d1/s2", error_type="ModelIntegrityError"),
        _receipt("d1/s3", error_type="OSError"), _receipt("d1/s4", status="ok"),
        _receipt("d9/s9", error_type="ModelNotFoundError")))  # not of the unit: never counted
    found = permanent_receipts(blob_store, "predictions", IV, unit, since)
    assert [r["target"] for r in found] == ["d1/s1", "d1/s2"]  # from the footer of the unit's own file
    assert permanent_receipts(blob_store, "predictions", IV, old_unit, since) == []  # older than the job: an earlier run's
    assert [r["target"] for r in permanent_receipts(blob_store, "predictions", IV, old_unit,
                                                    since - dt.timedelta(hours=1))] == ["d1/s1"]
    blob_store.upload_bytes("predictions", part_blob(IV, ["d2/s1"]), b"{not parquet")
    assert permanent_receipts(blob_store, "predictions", IV, ["d2/s1"], since) == []  # unreadable: none
    assert permanent_receipts(blob_store, "predictions", IV, ["d3/s1"], since) == []  # absent: none


def test_way_out_names_the_model_blobs_and_the_snapshot():
    text = way_out([{"target": "d1/s2", "error_type": "ModelIntegrityError"},
                    {"target": "d9/s1", "error_type": "UnknownTargetError"}], Containers("agg", "mod", "pred"), IV)
    assert text.startswith("retrying cannot fix this, so the task fails without retries: redeploy the model of d1/s2 "
                           "(blobs mod/d1/s2/model.joblib and manifest.json;")
    assert "d9/s1 has no rows in the snapshot agg/20260302T0000Z_20260302T0100Z/aggregates.parquet" in text
