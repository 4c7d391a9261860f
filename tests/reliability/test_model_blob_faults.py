"""A model blob that vanishes or goes bad between the snapshot and scoring (issue 10, item 9), on the run's real steps.

The unit's error, its receipt and the collector's manifest name the blob in the models container (never
the worker's temporary folder) and the way out; the fault is a ``PermanentPipelineError`` (the DAG fails
the task without retries). The DAG-level proof is in test_dag_selection_and_model_faults.py.
"""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys

import pytest

from batch_scoring.errors import PermanentPipelineError, PipelineError

from batch_scoring.local_backend import score_unit_local
from batch_scoring.scoring.layout import part_blob, part_name
from batch_scoring.scoring.part_file import read_receipts
from batch_scoring.unit_checks import part_receipts
from tests.reliability.conftest import interval

IV = interval()
KEY = IV.key
WAY_OUT = ("retrying cannot fix this, so the task fails without retries: redeploy the model of dev002/s2 (blobs "
           "models/dev002/s2/model.joblib and manifest.json; e.g. `python -m devstack.deploy_models MODELS_DIR` in the repository, "
           "or upload both files again), then clear the failed score task(s) and collect")


def _manifest(world, target="dev002/s2") -> dict:
    return json.loads(world.store.download_bytes("models", f"{target}/manifest.json"))


def _delete_model(world):
    world.store.delete("models", "dev002/s2/model.joblib")


def _delete_manifest(world):
    world.store.delete("models", "dev002/s2/manifest.json")


def _truncate_model(world):
    data = world.store.download_bytes("models", "dev002/s2/model.joblib")
    world.store.upload_bytes("models", "dev002/s2/model.joblib", data[: len(data) // 2])


def _garble_manifest(world):
    world.store.upload_bytes("models", "dev002/s2/manifest.json", b"{not json")


def _other_features(world):
    world.store.upload_bytes("models", "dev002/s2/manifest.json",
                             json.dumps({**_manifest(world), "features": ["value_mean"]}).encode())


@pytest.mark.parametrize("damage, error", [
    (_delete_model, "ModelNotFoundError: no model for target dev002/s2: model file models/dev002/s2/model.joblib "
                    "does not exist"),
    (_delete_manifest, "ModelNotFoundError: no model for target dev002/s2: manifest models/dev002/s2/manifest.json "
                       "does not exist"),
    (_truncate_model, "ModelIntegrityError: model for target dev002/s2 failed its integrity check: "
                      "models/dev002/s2/model.joblib has sha256 "),
    (_garble_manifest, "ModelLoadError: model manifest for target dev002/s2 is unreadable: "
                       "models/dev002/s2/manifest.json: "),
    (_other_features, "ModelLoadError: model for target dev002/s2 was trained on features ['value_mean'], "),
], ids=["model-deleted", "manifest-deleted", "model-truncated", "manifest-garbled", "other-features"])
def test_a_model_blob_gone_bad_after_the_snapshot_is_named_by_blob_and_permanent(world, damage, error):
    clean = world.run()
    good = world.predictions()
    plan = world.snapshot()  # the model is still deployed when the run is planned
    damage(world)  # ... and vanishes or goes bad while it scores
    with pytest.raises(PermanentPipelineError) as err:
        score_unit_local(world.store, world.settings.containers, IV, ["dev002/s2"])
    message = str(err.value)
    assert message.startswith(f"interval {KEY}: scoring failed for dev002/s2: {error}"), message
    assert message.endswith("; " + WAY_OUT)
    assert "score-unit-" not in message and "/tmp" not in message
    # what is uploaded and what the collector records name the blob too
    (receipt,) = part_receipts(world.store, "predictions", part_blob(KEY, ["dev002/s2"]))  # its file's footer
    assert receipt["error"].startswith(error) and "score-unit-" not in receipt["error"]
    world.score({"units": [u for u in plan["units"] if u != ["dev002/s2"]]})
    with pytest.raises(PipelineError, match="1 of 4 targets failed validation"):
        world.collect(plan)
    reason = world.manifest()["targets"]["dev002/s2"]["reason"]
    assert reason.startswith(f"scoring failed: {error}") and "score-unit-" not in reason
    for name, data in good.items():  # the other targets' predictions are intact
        if name != part_blob(KEY, ["dev002/s2"]) and "/_" not in name:
            assert world.predictions()[name] == data
    assert clean["counts"]["ok"] == 4


def test_a_unit_with_a_bad_model_and_another_failure_fails_without_retries_naming_both(world):
    from tests.reliability.exploding import ExplodingModel

    import joblib

    world.snapshot()
    buf = io.BytesIO()
    joblib.dump(ExplodingModel(), buf)
    manifest = {**_manifest(world, "dev002/s1"), "sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
                "size_bytes": len(buf.getvalue())}
    world.store.upload_bytes("models", "dev002/s1/model.joblib", buf.getvalue())
    world.store.upload_bytes("models", "dev002/s1/manifest.json", json.dumps(manifest).encode())
    # a crashing model alone is not a model-store fault: it stays a plain (retried) error
    with pytest.raises(PipelineError) as err:
        score_unit_local(world.store, world.settings.containers, IV, ["dev002/s1"])
    assert type(err.value) is PipelineError and "RuntimeError: model exploded while scoring" in str(err.value)
    _delete_model(world)
    with pytest.raises(PermanentPipelineError) as err:  # one unit of two targets
        score_unit_local(world.store, world.settings.containers, IV, ["dev002/s1", "dev002/s2"])
    assert str(err.value).startswith(
        f"interval {KEY}: scoring failed for dev002/s1: RuntimeError: model exploded while scoring; dev002/s2: "
        "ModelNotFoundError: no model for target dev002/s2: model file models/dev002/s2/model.joblib does not exist; "
        "retrying cannot fix this")


def test_a_target_the_snapshot_does_not_hold_names_the_snapshot_and_is_permanent(world):
    world.snapshot()
    with pytest.raises(PermanentPipelineError) as err:
        score_unit_local(world.store, world.settings.containers, IV, ["dev009/s1"])
    assert str(err.value) == (
        f"interval {KEY}: scoring failed for dev009/s1: UnknownTargetError: target dev009/s1: no rows for device "
        "'dev009' sensor 's1' in the snapshot (unknown device/sensor, or no data in this interval); retrying cannot "
        f"fix this, so the task fails without retries: dev009/s1 has no rows in the snapshot aggregates/{KEY}/"
        "aggregates.parquet: clear the snapshot task and its downstream to plan the interval again")


def test_the_scoring_cli_keeps_naming_its_own_local_paths(world, tmp_path):
    """Run by hand, the CLI's receipts name the local model files it was given (no blob translation)."""
    world.snapshot()
    snapshot = tmp_path / "aggregates.parquet"
    snapshot.write_bytes(world.store.download_bytes("aggregates", f"{KEY}/aggregates.parquet"))
    (world.models_dir / "dev002" / "s2" / "model.joblib").unlink()
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "batch_scoring.scoring.score", "--aggregates", str(snapshot), "--models",
                           str(world.models_dir), "--out", str(out), "--targets", "dev002/s2"],
                          capture_output=True, text=True)
    assert done.returncode == 1
    (receipt,) = read_receipts(out / part_name(["dev002/s2"]))  # the part file's footer
    assert receipt["error"] == (f"ModelNotFoundError: no model for target dev002/s2: model file "
                                f"{world.models_dir / 'dev002' / 's2' / 'model.joblib'} does not exist")
