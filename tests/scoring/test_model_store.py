"""Model store: layout, deterministic manifest, integrity before unpickling."""
from __future__ import annotations

import hashlib
import json
import pickle

import pytest
import sklearn

from batch_scoring.scoring.config import FEATURES, SVM_PARAMS
from batch_scoring.scoring.model_store import (
    ModelIntegrityError,
    ModelLoadError,
    ModelNotFoundError,
    load_model,
    save_model,
)
from batch_scoring.scoring.train import train_models


def test_layout_and_manifest_content(trained):
    models, manifests, _ = trained
    assert [m["target"] for m in manifests] == ["dev001/s1", "dev001/s2", "dev002/s1", "dev002/s2"]
    m = json.loads((models / "dev001" / "s1" / "manifest.json").read_text())
    data = (models / "dev001" / "s1" / "model.joblib").read_bytes()
    assert m["sha256"] == hashlib.sha256(data).hexdigest()
    assert m["features"] == list(FEATURES)
    assert m["model_params"] == SVM_PARAMS
    assert m["training"]["start"] == "2026-03-01T00:00:00"
    assert m["training"]["end"] == "2026-03-01T06:00:00"
    assert m["training"]["n_windows"] == 72
    assert m["sklearn_version"]
    assert m["threshold"] < 0
    assert set(m["created_from"]) == {"source", "training_data_sha256"}


def test_retraining_same_data_gives_identical_files(tmp_path, small_data):
    train_aggs = small_data[0]
    a = train_models(train_aggs, tmp_path / "a", "2026-03-01", "2026-03-01 06:00")
    b = train_models(train_aggs, tmp_path / "b", "2026-03-01", "2026-03-01 06:00")
    assert a == b
    for name in ("model.joblib", "manifest.json"):
        assert (tmp_path / "a/dev002/s2" / name).read_bytes() == (tmp_path / "b/dev002/s2" / name).read_bytes()


def test_load_roundtrip(trained):
    models, manifests, _ = trained
    model, manifest = load_model(models, "dev001", "s2")
    assert manifest == manifests[1]
    assert hasattr(model, "decision_function")


def test_missing_model(tmp_path, trained):
    models, _, _ = trained
    with pytest.raises(ModelNotFoundError, match="dev009/s1") as info:
        load_model(models, "dev009", "s1")
    assert "manifest.json" in str(info.value)
    (models / "dev001" / "s1" / "model.joblib").unlink()
    with pytest.raises(ModelNotFoundError, match=r"dev001/s1.*model.joblib"):
        load_model(models, "dev001", "s1")


def test_tampered_model_refused_before_unpickling(trained, monkeypatch):
    models, manifests, _ = trained
    path = models / "dev001" / "s1" / "model.joblib"
    path.write_bytes(path.read_bytes() + b"evil")
    import joblib

    def boom(*a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("unpickled a tampered file")

    monkeypatch.setattr(joblib, "load", boom)
    with pytest.raises(ModelIntegrityError) as info:
        load_model(models, "dev001", "s1")
    msg = str(info.value)
    assert "dev001/s1" in msg and manifests[0]["sha256"] in msg
    assert hashlib.sha256(path.read_bytes()).hexdigest() in msg


def test_truncated_model_names_the_path(trained):
    models, _, _ = trained
    path = models / "dev002" / "s1" / "model.joblib"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelIntegrityError, match="truncated") as info:
        load_model(models, "dev002", "s1")
    assert str(path) in str(info.value)


def test_corrupt_file_with_matching_hash_names_the_path(tmp_path):
    # a manifest that matches garbage: hash passes, unpickling fails cleanly
    save_model(tmp_path, "d", "s", {"x": 1}, {"features": list(FEATURES), "sklearn_version": sklearn.__version__})
    path = tmp_path / "d" / "s" / "model.joblib"
    garbage = path.read_bytes()[:20]
    path.write_bytes(garbage)
    manifest_path = tmp_path / "d" / "s" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(sha256=hashlib.sha256(garbage).hexdigest(), size_bytes=len(garbage))
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="corrupt or truncated") as info:
        load_model(tmp_path, "d", "s")
    assert str(path) in str(info.value)


def test_unreadable_manifest(trained):
    models, _, _ = trained
    (models / "dev002" / "s2" / "manifest.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="dev002/s2"):
        load_model(models, "dev002", "s2")


def test_unsafe_ids_refused(tmp_path):
    with pytest.raises(ValueError):
        load_model(tmp_path, "..", "s1")


# --- scikit-learn version policy (issue 10, item 7): refuse a model pickled by another version ---------------

def _other_versions() -> dict[str, str]:
    """Versions unlike the running one: another minor, another major, another patch, a pre-release tag."""
    major, minor, patch = (sklearn.__version__.split(".") + ["0", "0"])[:3]
    patch = "".join(ch for ch in patch if ch.isdigit()) or "0"
    return {
        "minor": f"{major}.{int(minor) - 1 if int(minor) else int(minor) + 1}.0",
        "major": f"{int(major) + 1}.0.0",
        "patch": f"{major}.{minor}.{int(patch) + 1}",
        "pre-release": f"{major}.{minor}.{patch}rc1",
    }


def _rewrite_manifest(models, device, sensor, **fields):
    path = models / device / sensor / "manifest.json"
    manifest = json.loads(path.read_text())
    for k, v in fields.items():
        if v is None:
            manifest.pop(k, None)
        else:
            manifest[k] = v
    path.write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize("kind", ["minor", "major", "patch", "pre-release"])
def test_model_pickled_by_another_sklearn_version_is_refused_naming_both_versions(trained, kind, monkeypatch):
    from batch_scoring.scoring.model_store import ModelVersionError

    models, manifests, _ = trained
    other = _other_versions()[kind]
    _rewrite_manifest(models, "dev001", "s2", sklearn_version=other)
    unpickled = []
    monkeypatch.setattr("batch_scoring.scoring.model_store.unpickle", lambda data: unpickled.append(1))
    with pytest.raises(ModelVersionError) as info:
        load_model(models, "dev001", "s2")
    assert isinstance(info.value, ModelLoadError) and unpickled == []  # refused before unpickling
    path = models / "dev001" / "s2" / "model.joblib"
    assert str(info.value) == (
        f"model for target dev001/s2 was pickled by scikit-learn {other}, this environment runs scikit-learn "
        f"{sklearn.__version__}: refusing to load {path} (scikit-learn does not support loading a model pickled "
        "by another version: https://scikit-learn.org/stable/model_persistence.html); retrain the target with "
        f"scikit-learn {sklearn.__version__} (python -m batch_scoring.scoring.train) and redeploy the model, or score in an "
        f"environment with scikit-learn {other}"
    )


def test_model_whose_manifest_records_no_sklearn_version_is_refused(trained):
    from batch_scoring.scoring.model_store import ModelVersionError

    models, _, _ = trained
    _rewrite_manifest(models, "dev002", "s1", sklearn_version=None)
    with pytest.raises(ModelVersionError, match=r"model for target dev002/s1 does not record the scikit-learn version "
                                                r"that pickled it \(no sklearn_version in its manifest\)"):
        load_model(models, "dev002", "s1")


def test_pickle_written_by_another_version_is_refused_even_when_its_manifest_names_this_one(tmp_path, trained, monkeypatch):
    """scikit-learn stamps each estimator's pickle with its version: a manifest edited to match does not pass."""
    from batch_scoring.scoring.model_store import ModelVersionError

    models, _, _ = trained
    model, manifest = load_model(models, "dev001", "s1")
    other = _other_versions()["minor"]
    with monkeypatch.context() as m:
        m.setattr("sklearn.base.__version__", other)  # what sklearn.base stamps into __getstate__
        data = pickle.dumps(model, protocol=5)
    assert other.encode() in data
    path = models / "dev001" / "s1" / "model.joblib"
    path.write_bytes(data)
    _rewrite_manifest(models, "dev001", "s1", sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    with pytest.raises(ModelVersionError, match=rf"model for target dev001/s1 was pickled by scikit-learn {other} "
                                                rf"\(its manifest says {sklearn.__version__}, but the pickled \w+ says "
                                                rf"otherwise\), this environment runs scikit-learn {sklearn.__version__}"):
        load_model(models, "dev001", "s1")


def test_version_mismatch_fails_only_its_target_in_the_receipt(tmp_path, trained):
    import pandas as pd

    from batch_scoring.scoring.layout import part_name
    from batch_scoring.scoring.score import score_unit

    models, _, score_aggs = trained
    other = _other_versions()["minor"]
    _rewrite_manifest(models, "dev002", "s2", sklearn_version=other)
    receipts = {r["target"]: r for r in score_unit(score_aggs, models, tmp_path / "out",
                                                      ["dev001/s1", "dev002/s2"])}
    assert receipts["dev001/s1"]["status"] == "ok"
    bad = receipts["dev002/s2"]
    assert bad["status"] == "failed" and bad["model_sha256"] is None
    assert bad["error"].startswith(f"ModelVersionError: model for target dev002/s2 was pickled by scikit-learn {other}, "
                                   f"this environment runs scikit-learn {sklearn.__version__}")
    rows = pd.read_parquet(tmp_path / "out" / part_name(["dev001/s1", "dev002/s2"]))
    assert set(rows["device_id"]) == {"dev001"}  # no rows of the target that failed


def test_a_model_pickled_under_the_old_module_names_still_loads(trained, monkeypatch):
    """Models deployed before 0.2 name ``scoring.scaler`` (the package's import name before it became batch_scoring)."""
    import pickle
    import sys

    from batch_scoring.scoring import scaler
    from batch_scoring.scoring.model_store import unpickle

    models, _, _ = trained
    model = load_model(models, "dev001", "s1")[0]
    monkeypatch.setattr(scaler.FlooredStandardScaler, "__module__", "scoring.scaler")
    monkeypatch.setitem(sys.modules, "scoring.scaler", scaler)
    old = pickle.dumps(model, protocol=5)
    monkeypatch.undo()
    assert b"scoring.scaler" in old and b"batch_scoring.scoring.scaler" not in old
    again = unpickle(old)
    steps = [type(step).__module__ + "." + type(step).__name__ for _, step in again.steps]
    assert "batch_scoring.scoring.scaler.FlooredStandardScaler" in steps, steps
    assert pickle.dumps(again, protocol=5) == pickle.dumps(model, protocol=5)
