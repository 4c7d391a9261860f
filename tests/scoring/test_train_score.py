"""train_models / score_unit round trip, receipts, determinism, per-target failures."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from batch_scoring.scoring.config import FEATURES, MIN_TRAINING_WINDOWS
from batch_scoring.scoring.layout import part_name
from batch_scoring.scoring.part_file import FILE_HASH_KEYS, read_receipts
from batch_scoring.scoring.score import OUTPUT_COLUMNS, score_unit
from batch_scoring.scoring.train import TrainingError, train_models

TARGETS = ["dev001/s1", "dev001/s2", "dev002/s1", "dev002/s2"]


def test_roundtrip_outputs_and_receipts(tmp_path, trained):
    models, manifests, score_aggs = trained
    out = tmp_path / "out"
    receipts = score_unit(score_aggs, models, out, TARGETS)
    assert [r["status"] for r in receipts] == ["ok"] * 4
    frame = pd.read_parquet(out / part_name(TARGETS))
    footer = {r["target"]: r for r in read_receipts(out / part_name(TARGETS))}
    for r, m in zip(receipts, manifests):
        pred = frame[(frame.device_id == r["device_id"]) & (frame.sensor_id == r["sensor_id"])].reset_index(drop=True)
        assert list(pred.columns) == list(OUTPUT_COLUMNS)
        assert len(pred) == r["rows_in"] == r["rows_out"] == 36
        assert pred["window_start"].is_monotonic_increasing
        assert pred["is_anomaly"].dtype == bool
        assert np.isfinite(pred["decision_score"]).all()
        assert (pred["model_sha256"] == m["sha256"]).all()
        assert r["anomalies"] == int(pred["is_anomaly"].sum())
        assert r["model_sha256"] == m["sha256"] and r["error"] is None
        assert footer[r["target"]] == {k: v for k, v in r.items() if k not in FILE_HASH_KEYS}
        assert set(FEATURES) <= set(pred.columns)


def test_byte_identical_outputs_across_runs(tmp_path, small_data):
    train_aggs, score_aggs, _ = small_data
    files = []
    for run in ("one", "two"):
        models = tmp_path / run / "models"
        train_models(train_aggs, models, "2026-03-01", "2026-03-01 06:00")
        # shuffled input must not change the output
        shuffled = score_aggs.sample(frac=1.0, random_state=1 if run == "one" else 2)
        score_unit(shuffled, models, tmp_path / run / "out", TARGETS)
        files.append(sorted(p for p in (tmp_path / run / "out").rglob("*") if p.is_file()))
    assert [p.relative_to(tmp_path / "one") for p in files[0]] == [p.relative_to(tmp_path / "two") for p in files[1]]
    for a, b in zip(*files):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_one_failure_does_not_stop_the_others(tmp_path, trained):
    models, _, score_aggs = trained
    out = tmp_path / "out"
    path = models / "dev001" / "s2" / "model.joblib"
    path.write_bytes(b"X" + path.read_bytes()[1:])  # tampered
    unit = ["dev001/s2", "dev009/s1", "dev002/s1"]
    receipts = score_unit(score_aggs, models, out, unit)
    rows = pd.read_parquet(out / part_name(unit))
    by = {r["target"]: r for r in receipts}
    assert by["dev001/s2"]["status"] == "failed"
    assert "ModelIntegrityError" in by["dev001/s2"]["error"] and "dev001/s2" in by["dev001/s2"]["error"]
    assert by["dev009/s1"]["status"] == "failed"
    assert "unknown device/sensor" in by["dev009/s1"]["error"] and "dev009/s1" in by["dev009/s1"]["error"]
    assert by["dev002/s1"]["status"] == "ok"
    # the file holds the rows of the target that scored only, and every receipt in its footer
    assert set(rows["device_id"] + "/" + rows["sensor_id"]) == {"dev002/s1"} and len(rows) == by["dev002/s1"]["rows_out"]
    assert {r["target"]: r["status"] for r in read_receipts(out / part_name(unit))} == \
        {"dev001/s2": "failed", "dev009/s1": "failed", "dev002/s1": "ok"}


def test_bad_target_name_is_a_failed_receipt(tmp_path, trained):
    models, _, score_aggs = trained
    receipts = score_unit(score_aggs, models, tmp_path / "out", ["../etc", "dev001/s1"])
    assert receipts[0]["status"] == "failed" and "bad target" in receipts[0]["error"]
    assert receipts[1]["status"] == "ok"


def test_training_refuses_too_few_windows(tmp_path, small_data):
    train_aggs = small_data[0]
    few = train_aggs[train_aggs.window_start < pd.Timestamp("2026-03-01 00:30")]
    with pytest.raises(TrainingError, match=rf"need >= {MIN_TRAINING_WINDOWS}.*dev001/s1 \(6 windows\)"):
        train_models(few, tmp_path / "m")
    assert not (tmp_path / "m").exists()
    with pytest.raises(TrainingError, match=r"dev404/s1 \(0 windows\)"):
        train_models(train_aggs, tmp_path / "m", targets=["dev404/s1"])
    mixed = pd.concat([train_aggs[train_aggs.device_id == "dev001"], few[few.device_id == "dev002"]])
    manifests = train_models(mixed, tmp_path / "m", skip_insufficient=True)
    assert [m["target"] for m in manifests] == ["dev001/s1", "dev001/s2"]


def test_training_range_and_targets(tmp_path, small_data):
    train_aggs = small_data[0]
    manifests = train_models(train_aggs, tmp_path / "m", "2026-03-01 01:00", "2026-03-01 03:00", targets=["dev002/s2"])
    assert len(manifests) == 1 and manifests[0]["training"]["n_windows"] == 24
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["dev002"]
