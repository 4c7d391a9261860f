"""The collector on a real Azurite: manifest, coverage, unexpected blobs, MD5 confirmation."""
from __future__ import annotations

import hashlib
import io
import json

import pandas as pd
import pytest

from batch_scoring.collect import collect_interval
from batch_scoring.config import settings
from batch_scoring.errors import PipelineError
from batch_scoring.scoring.layout import interval_folder
from tests.plugins.predictions import INTERVAL, WINDOWS, prediction

FOLDER = interval_folder(INTERVAL)  # the interval's predictions folder


@pytest.fixture
def planned(blob_store):
    """The snapshot of d1/s1 and d1/s2 over the interval, and a plan scoring both."""
    snapshot = pd.DataFrame({"device_id": "d1", "sensor_id": ["s1"] * 12 + ["s2"] * 12, "window_start": WINDOWS * 2})
    buf = io.BytesIO()
    snapshot.to_parquet(buf, index=False)
    blob_store.upload_bytes("aggregates", f"{INTERVAL.key}/aggregates.parquet", buf.getvalue())
    return {"interval": INTERVAL.key, "targets": ["d1/s1", "d1/s2"], "skipped": {"d9/s9": "no aggregates in the interval"}}


def test_collect_writes_manifest_and_fails_naming_missing_targets(planned, blob_store):
    blob_store.upload_bytes("predictions", f"{FOLDER}d1/s1.parquet", prediction(WINDOWS))
    with pytest.raises(PipelineError, match=r"1 of 2 targets failed validation .*d1/s2: prediction blob missing"):
        collect_interval(blob_store, settings(), INTERVAL, planned)
    verified = {}
    manifest = collect_interval(blob_store, settings(), INTERVAL, planned, min_coverage=0.5, verified=verified)
    assert manifest["counts"] == {"ok": 1, "failed": 1, "skipped": 1}
    assert manifest["targets"]["d1/s2"]["reason"] == "prediction blob missing"
    assert manifest["selected"] == {"targets": 2, "ok": 1, "failed": 1, "coverage": 0.5}
    assert verified == {"confirmed": 0, "read": 2}
    assert json.loads(blob_store.download_bytes("predictions", f"{FOLDER}_manifest.json")) == manifest


def test_collect_confirms_validated_receipts_by_md5_and_flags_unexpected_blobs(planned, blob_store):
    data = prediction(WINDOWS)
    receipts = []
    for target in planned["targets"]:
        blob_store.upload_bytes("predictions", f"{FOLDER}{target}.parquet", data)
        receipts.append({"target": target, "status": "ok", "validated": True, "rows_out": 12, "anomalies": 0,
                         "model_sha256": "ab" * 32, "output_sha256": hashlib.sha256(data).hexdigest(),
                         "output_md5": hashlib.md5(data).hexdigest(), "anomaly_window_starts": []})
    blob_store.upload_bytes("predictions", f"{FOLDER}d7/s7.parquet", b"stray")
    blob_store.upload_bytes("predictions", f"{FOLDER}_report.html", b"the collector's own")
    keep, verified = {}, {}
    with pytest.raises(PipelineError, match=rf"1 unexpected blob\(s\) under predictions/{FOLDER} .*"
                                            rf"{FOLDER}d7/s7.parquet"):
        collect_interval(blob_store, settings(), INTERVAL, planned, unit_receipts=[receipts[:1], receipts[1:]],
                         keep=keep, verified=verified)
    assert verified == {"confirmed": 2, "read": 0} and sorted(keep) == ["d1/s1", "d1/s2"]
    manifest = json.loads(blob_store.download_bytes("predictions", f"{FOLDER}_manifest.json"))
    assert manifest["counts"] == {"ok": 2, "failed": 0, "skipped": 1}
    assert manifest["unexpected_blobs"] == [f"{FOLDER}d7/s7.parquet"]


def test_collect_fails_when_nothing_was_planned(blob_store):
    with pytest.raises(PipelineError, match="nothing to score"):
        collect_interval(blob_store, settings(), INTERVAL, {"targets": [], "skipped": {}})
