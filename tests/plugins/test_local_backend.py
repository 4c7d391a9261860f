"""The local scoring backend on a real Azurite: score a unit, upload, name blobs in errors, retry or not."""
from __future__ import annotations

import datetime as dt
import hashlib
import io

import pandas as pd
import pytest

from batch_scoring.config import settings
from batch_scoring.errors import PermanentPipelineError, PipelineError
from batch_scoring.local_backend import UNIT_RECEIPT_KEYS, score_unit_local, upload_outputs
from batch_scoring.scoring.layout import Interval, interval_folder, part_blob
from batch_scoring.unit_checks import part_receipts

HISTORY = ("2026-03-01 00:00", "2026-03-01 06:00")
INTERVAL = Interval(dt.datetime(2026, 3, 1, 6), dt.datetime(2026, 3, 1, 7))
FOLDER = interval_folder(INTERVAL)  # the interval's predictions folder


@pytest.fixture(scope="module")
def models_and_snapshot(tmp_path_factory):
    """Models of dev001..dev002 × s1..s2 trained on simulated history, and the interval's aggregates."""
    from batch_scoring.ingest_sim.aggregator import aggregate_readings
    from batch_scoring.ingest_sim.simulator import simulate
    from batch_scoring.scoring.train import train_models

    history, _ = simulate(2, 2, *HISTORY, seed=3, anomalies=False)
    scoring, _ = simulate(2, 2, INTERVAL.start.isoformat(), INTERVAL.end.isoformat(), seed=3)
    models = tmp_path_factory.mktemp("local-backend") / "models"
    train_models(aggregate_readings(history), models, *HISTORY)
    return models, aggregate_readings(scoring)


@pytest.fixture
def deployed(blob_store, models_and_snapshot):
    from batch_scoring.snapshot import frame_to_parquet_bytes

    models, aggregates = models_and_snapshot
    blob_store.upload_folder("models", "", models)
    blob_store.upload_bytes("aggregates", f"{INTERVAL.key}/aggregates.parquet", frame_to_parquet_bytes(aggregates))
    return sorted(f"{d}/{s}" for d, s in aggregates[["device_id", "sensor_id"]].drop_duplicates().itertuples(index=False))


def test_score_unit_local_uploads_one_validated_part_file(blob_store, deployed):
    receipts = score_unit_local(blob_store, settings().containers, INTERVAL, deployed[:2])
    assert [r["target"] for r in receipts] == deployed[:2]
    assert all(r["status"] == "ok" and r["validated"] for r in receipts)
    assert set(UNIT_RECEIPT_KEYS) <= set(receipts[0])
    blob = part_blob(INTERVAL, deployed[:2])
    assert blob_store.list_names("predictions", prefix=FOLDER) == [blob]  # one blob for the unit
    data = blob_store.download_bytes("predictions", blob)
    assert {r["output_md5"] for r in receipts} == {hashlib.md5(data).hexdigest()}
    assert [r["target"] for r in part_receipts(blob_store, "predictions", blob)] == deployed[:2]


def test_a_missing_model_fails_the_unit_for_good_naming_the_blobs(blob_store, deployed):
    target = deployed[0]
    blob_store.delete("models", f"{target}/model.joblib")
    with pytest.raises(PermanentPipelineError) as err:
        score_unit_local(blob_store, settings().containers, INTERVAL, [target, deployed[1]])
    message = str(err.value)
    assert f"scoring failed for {target}: ModelNotFoundError" in message
    assert f"redeploy the model of {target} (blobs models/{target}/model.joblib and manifest.json" in message
    assert "/tmp" not in message and "score-unit-" not in message  # blobs, not the worker's temporary folder
    blob = part_blob(INTERVAL, [target, deployed[1]])
    receipt = {r["target"]: r for r in part_receipts(blob_store, "predictions", blob)}[target]
    assert receipt["status"] == "failed" and "models/" in receipt["error"] and "/tmp" not in receipt["error"]
    rows = pd.read_parquet(io.BytesIO(blob_store.download_bytes("predictions", blob)))
    assert set(rows["device_id"] + "/" + rows["sensor_id"]) == {deployed[1]}  # the good target's rows only


def test_a_target_the_snapshot_lacks_says_to_replan(blob_store, deployed):
    with pytest.raises(PermanentPipelineError, match=r"dev009/s1 has no rows in the snapshot "
                                                     rf"aggregates/{INTERVAL.key}/aggregates.parquet"):
        score_unit_local(blob_store, settings().containers, INTERVAL, ["dev009/s1"])


def test_a_missing_or_unreadable_snapshot_is_retried(blob_store, deployed):
    blob_store.upload_bytes("aggregates", f"{INTERVAL.key}/aggregates.parquet", b"PAR1 truncated")
    with pytest.raises(PipelineError, match="is unreadable") as err:
        score_unit_local(blob_store, settings().containers, INTERVAL, deployed[:1])
    assert not isinstance(err.value, PermanentPipelineError)
    blob_store.delete("aggregates", f"{INTERVAL.key}/aggregates.parquet")
    with pytest.raises(PipelineError, match="does not exist; clear the snapshot task"):
        score_unit_local(blob_store, settings().containers, INTERVAL, deployed[:1])


def test_upload_outputs_uploads_the_units_part_file_and_deletes_nothing(blob_store, tmp_path):
    from batch_scoring.scoring.layout import part_name

    blob_store.upload_bytes("predictions", part_blob(INTERVAL, ["d1/s2"]), b"an earlier batching's")
    (tmp_path / part_name(["d1/s1", "d1/s2"])).write_bytes(b"new")
    receipts = [{"target": "d1/s1", "device_id": "d1"}, {"target": "d1/s2", "device_id": "d1"},
                {"target": "../x", "device_id": None}]  # not path-safe: not in the file's name
    upload_outputs(blob_store, settings().predictions_container, INTERVAL, tmp_path, receipts)
    assert blob_store.download_bytes("predictions", part_blob(INTERVAL, ["d1/s1", "d1/s2"])) == b"new"
    assert blob_store.exists("predictions", part_blob(INTERVAL, ["d1/s2"]))  # stale files are the collector's
