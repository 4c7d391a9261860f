"""One model per device/sensor on a local directory tree.

Layout: ``<models>/<device>/<sensor>/model.joblib`` + ``manifest.json``.
The manifest holds the sha256 of the joblib file; ``load_model`` hashes the
bytes it read and compares BEFORE unpickling them (unpickling runs code), and
unpickles exactly the bytes it hashed. The manifest carries no wall-clock time,
so retraining on the same data writes the same manifest.

The file is a plain pickle (protocol 5), which ``joblib.load`` also reads:
``pickle.loads`` runs in C and loads a model ~10x faster than joblib's
pure-Python unpickler, which matters when one unit loads thousands of models.

scikit-learn versions: a model is only loaded by the exact scikit-learn
version that pickled it. scikit-learn's documentation
(https://scikit-learn.org/stable/model_persistence.html, "Security &
Maintainability Limitations"): "there are no supported ways to load a model
trained with a different version of scikit-learn ... models saved using one
version of scikit-learn might load in other versions, however, this is
entirely unsupported and inadvisable", and its own check on unpickling
(``InconsistentVersionWarning``, only a warning) fires on any difference of
the version string, patch releases included. ``load_model`` compares the
manifest's ``sklearn_version`` with the running ``sklearn.__version__``
BEFORE unpickling, and turns that warning into the same error while
unpickling (a pickle whose manifest names the running version although
another version wrote it). Both raise ``ModelVersionError`` (a
ModelLoadError), naming the target, the model file, both versions and the way
out: retrain and redeploy the model with the running version, or score in an
environment with the model's version. A patch difference is refused too, not
recorded and accepted: training and scoring take scikit-learn from the same
``requirements.lock`` (the Azure ML environment is built from it), so a
difference means an environment changed without retraining, and retraining
is cheap and deterministic (same data -> same model bytes).
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import warnings
from pathlib import Path

import sklearn
from sklearn.exceptions import InconsistentVersionWarning

from batch_scoring.scoring.atomic import write_atomic
from batch_scoring.scoring.config import FEATURES, target_name
from batch_scoring.scoring.layout import MODEL_FILE, MODEL_MANIFEST, target_path

MANIFEST_VERSION = 1


class ModelStoreError(Exception):
    """Base class: every model-store problem names the target and the path."""


class ModelNotFoundError(ModelStoreError, FileNotFoundError):
    """A target's manifest or model file does not exist (also a ``FileNotFoundError``)."""
    pass


class ModelIntegrityError(ModelStoreError):
    """A model file's SHA-256 does not match its manifest (corrupt, truncated or replaced): refused, never unpickled."""
    pass


class ModelLoadError(ModelStoreError):
    """A manifest is unreadable or lacks ``sha256``, or a model was trained on other features or cannot be unpickled."""
    pass


class ModelVersionError(ModelLoadError):
    """The model was pickled by another scikit-learn version than the running one (refused, never unpickled)."""


PERSISTENCE_DOC = "https://scikit-learn.org/stable/model_persistence.html"


def model_dir(models_dir, device_id: str, sensor_id: str) -> Path:
    """A target's model folder below ``models_dir``: ``<device>/<sensor>`` (``ValueError`` for ids not path-safe)."""
    return Path(models_dir) / target_path(target_name(device_id, sensor_id))


def sha256_bytes(data: bytes) -> str:
    """SHA-256 of ``data`` as 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()


def save_model(models_dir, device_id: str, sensor_id: str, model, manifest_fields: dict) -> dict:
    """Write model.joblib then manifest.json (each atomically); return the manifest."""
    folder = model_dir(models_dir, device_id, sensor_id)
    folder.mkdir(parents=True, exist_ok=True)
    data = pickle.dumps(model, protocol=5)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "target": target_name(device_id, sensor_id),
        "device_id": device_id,
        "sensor_id": sensor_id,
        "model_file": MODEL_FILE,
        "sha256": sha256_bytes(data),
        "size_bytes": len(data),
        **manifest_fields,
    }
    write_atomic(folder / MODEL_FILE, data)
    write_atomic(folder / MODEL_MANIFEST, manifest_json(manifest).encode())
    return manifest


def manifest_json(manifest: dict) -> str:
    """``manifest`` as the stored text: indented, keys sorted, newline-terminated (``ValueError`` for NaN or infinity)."""
    return json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n"


def read_manifest(models_dir, device_id: str, sensor_id: str) -> dict:
    """A target's ``manifest.json`` below ``models_dir``, as a dict (the model file is not read).

    Raises ``ModelNotFoundError`` when it does not exist, ``ModelLoadError`` when
    it is unreadable, not JSON or has no ``sha256``, ``ValueError`` for ids not
    path-safe.
    """
    target = target_name(device_id, sensor_id)
    path = model_dir(models_dir, device_id, sensor_id) / MODEL_MANIFEST
    if not path.is_file():
        raise ModelNotFoundError(f"no model for target {target}: manifest {path} does not exist")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model manifest for target {target} is unreadable: {path}: {exc}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("sha256"), str):
        raise ModelLoadError(f"model manifest for target {target} has no sha256: {path}")
    return manifest


def load_model(models_dir, device_id: str, sensor_id: str):
    """Return ``(model, manifest)`` after verifying the file's sha256 against the manifest.

    Raises ModelNotFoundError (no manifest or model file), ModelIntegrityError
    (hash mismatch: nothing is unpickled), ModelVersionError (a ModelLoadError:
    the manifest's ``sklearn_version`` is missing or is not the running
    scikit-learn's, or the pickle itself says another version), ModelLoadError
    (corrupt or truncated file, unreadable manifest, or a feature list that is
    not this code's ``FEATURES``).
    """
    target = target_name(device_id, sensor_id)
    manifest = read_manifest(models_dir, device_id, sensor_id)
    path = model_dir(models_dir, device_id, sensor_id) / manifest.get("model_file", MODEL_FILE)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelNotFoundError(f"no model for target {target}: model file {path} does not exist") from exc
    actual = sha256_bytes(data)
    if actual != manifest["sha256"]:
        expected_size = manifest.get("size_bytes")
        hint = ""
        if isinstance(expected_size, int) and len(data) < expected_size:
            hint = f" (file is truncated: {len(data)} of {expected_size} bytes)"
        raise ModelIntegrityError(
            f"model for target {target} failed its integrity check: {path} has sha256 {actual}, "
            f"manifest expects {manifest['sha256']}{hint}; refusing to load it"
        )
    if list(manifest.get("features", [])) != list(FEATURES):
        raise ModelLoadError(
            f"model for target {target} was trained on features {manifest.get('features')}, "
            f"this code computes {list(FEATURES)}: retrain it ({path})"
        )
    trained_with = manifest.get("sklearn_version")
    if trained_with != sklearn.__version__:
        raise ModelVersionError(_version_message(target, path, trained_with))
    try:
        with warnings.catch_warnings():
            # scikit-learn's own check (on every estimator in the pickle): a warning by default, refused here
            warnings.simplefilter("error", InconsistentVersionWarning)
            model = unpickle(data)
    except InconsistentVersionWarning as exc:
        raise ModelVersionError(
            _version_message(target, path, exc.original_sklearn_version,
                             f" (its manifest says {trained_with}, but the pickled {exc.estimator_name} says otherwise)")
        ) from None
    except Exception as exc:  # truncated/corrupt pickle: EOFError, UnpicklingError, ValueError...
        raise ModelLoadError(f"model file for target {target} is corrupt or truncated: {path}: {exc!r}") from exc
    return model, manifest


class _RenamingUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that reads the pre-0.2 module paths (``scoring.scaler``) as ``batch_scoring.scoring.scaler``."""

    def find_class(self, module: str, name: str):
        """The class ``module.name``, with a ``scoring`` module path of releases before 0.2 moved under ``batch_scoring``."""
        if module == "scoring" or module.startswith("scoring."):
            module = f"batch_scoring.{module}"
        return super().find_class(module, name)


def unpickle(data: bytes):
    """The object pickled in ``data``; models pickled before the package took its one import name
    (0.2: ``scoring.*`` became ``batch_scoring.scoring.*``) load too, so deployed models need no retraining.

    Raises what ``pickle.loads`` raises for corrupt data (``UnpicklingError``, ``EOFError``, ...).
    """
    return _RenamingUnpickler(io.BytesIO(data)).load()


def _version_message(target: str, path: Path, trained_with, detail: str = "") -> str:
    running = sklearn.__version__
    if not trained_with:
        what = f"model for target {target} does not record the scikit-learn version that pickled it (no sklearn_version in its manifest)"
        other = "the model's version"
    else:
        what = f"model for target {target} was pickled by scikit-learn {trained_with}{detail}"
        other = f"scikit-learn {trained_with}"
    return (
        f"{what}, this environment runs scikit-learn {running}: refusing to load {path} (scikit-learn does not "
        f"support loading a model pickled by another version: {PERSISTENCE_DOC}); retrain the target with "
        f"scikit-learn {running} (python -m batch_scoring.scoring.train) and redeploy the model, or score in an environment "
        f"with {other}"
    )
