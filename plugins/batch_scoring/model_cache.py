"""A worker's cache of the models it loaded, content-addressed by sha256: a unit downloads only new or changed models.

**What changed comes from a listing, made by the unit when it starts.** A unit
lists the models container under its own devices' names (``listing_prefixes``)
and compares each model's two blob versions with its cache. Why the unit and not
the snapshot task (which lists the container anyway, to plan): a version recorded
at planning time would let a worker with a warm cache score a model that was
deleted or replaced after the run was planned, where it must fail its target
exactly as it always did (tests/reliability/test_model_blob_faults.py); listing
when the unit starts sees the blobs as a download would. What keeps it cheap:
units are runs of sorted targets, so a unit's devices share name prefixes, and a
unit lists at most ``MAX_PREFIXES`` prefixes (each one request per 5,000 blobs
under it), its exact devices when it has that few. A run then costs one to
``MAX_PREFIXES`` listing calls per unit, plus one per 5,000 blobs listed (about
the fleet's blobs / 5,000 over the run, as the snapshot's own listing), plus two
downloads per new or changed model: per target, nothing. The worst case is a
whole-container listing per unit (20 calls at 100,000 blobs), for device names
that share no prefix.

A blob's version is ``md5:<hex>`` (the Content-MD5 Blob Storage records for a blob
uploaded in one request) or ``etag:<etag>`` for a blob stored without one
(``BlobStore.list_versions``). An entry records the MD5 of the bytes actually
downloaded (not the listed one), so a blob rewritten between the listing and the
download is never cached under the older version; an etag is never reused.

**Layout below the cache folder.** ``objects/<sha256[:2]>/<sha256>``: model bytes,
named by the sha256 their manifest states (and checked against it).
``entries/<device>/<sensor>.json``: ``model_version``, ``manifest_version``, the
manifest's text and its MD5, of the target's last model this worker loaded. Both are written
by ``write_atomic`` (temporary file, then rename), so the worker's processes
sharing the folder see a whole file or none, and two processes caching the same
model write the same bytes. An object another process evicted meanwhile is a miss.

**Integrity exactly as before.** Every model still reaches ``scoring.score`` as a
``model.joblib`` + ``manifest.json`` pair whose sha256 ``load_model`` checks.
Downloaded bytes go to the unit's folder as they are (a tampered blob fails its
target as it always did) and are cached only when the model's sha256 equals its
manifest's. A cached pair is used only when the manifest text's MD5 equals the
listed one (or, for a blob listed by etag, the recorded one) and the object's
sha256 equals the manifest's; an object that fails
(corrupted on disk) is evicted and downloaded again, once, in the same unit.

**Bounded.** After a fill that downloaded, objects beyond ``max_bytes`` are evicted
least recently used first (a use touches the object's mtime). Entries (about one
kilobyte per target ever loaded) are not counted; one without its object is a miss.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path

from batch_scoring.scoring.atomic import write_atomic
from batch_scoring.scoring.config import parse_target
from batch_scoring.scoring.layout import model_blob, model_manifest_blob, target_path

log = logging.getLogger(__name__)

DEFAULT_FOLDER = "batch-scoring-model-cache"  # below tempfile.gettempdir() unless BATCH_SCORING_MODEL_CACHE_DIR
MAX_PREFIXES = 8  # at most this many listing prefixes per unit (each at least one request); see listing_prefixes


def listing_prefixes(devices, max_prefixes: int = MAX_PREFIXES) -> list[str]:
    """The blob-name prefixes a unit lists to see every model of ``devices``: ``<device>/`` each when there are
    at most ``max_prefixes`` devices, else the longest shared name starts (all of the same length) that number
    at most ``max_prefixes`` (``[""]``, the whole container, when even one character splits them further)."""
    devices = sorted(set(devices))
    if len(devices) <= max_prefixes:
        return [f"{d}/" for d in devices]
    best, depth = [""], 0
    while True:
        depth += 1
        prefixes = sorted({d[:depth] if len(d) >= depth else f"{d}/" for d in devices})
        if len(prefixes) > max_prefixes:
            return best
        best = prefixes


def unit_model_versions(store, models_container: str, targets: list[str]) -> dict[str, tuple[str | None, str | None]]:
    """``target -> (model blob version, manifest blob version)`` (``None`` for a blob that does not exist), from
    listings of ``models_container`` under ``listing_prefixes`` of the targets' devices, made in parallel.

    Raises ``BlobStoreUnavailable`` when storage does not answer.
    """
    prefixes = listing_prefixes(parse_target(t)[0] for t in targets)
    versions = {}
    for part in store.parallel(lambda prefix: store.list_versions(models_container, prefix), prefixes):
        versions.update(part)
    return {t: (versions.get(model_blob(t)), versions.get(model_manifest_blob(t))) for t in targets}


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ModelCache:
    """The models a worker loaded, in ``root``, at most ``max_bytes`` of model files (0: no cache at all)."""

    def __init__(self, root, max_bytes: int):
        """``root``: the cache folder (created on first write); ``max_bytes``: the size cap of model files."""
        self.root = Path(root)
        self.max_bytes = max_bytes

    @classmethod
    def from_settings(cls, s=None) -> "ModelCache":
        """From ``BATCH_SCORING_MODEL_CACHE_DIR`` (empty: ``<system temp>/batch-scoring-model-cache``) and
        ``BATCH_SCORING_MODEL_CACHE_MAX_BYTES``; raises ``SettingsError`` for refused values."""
        from batch_scoring.config import settings

        s = s or settings()
        return cls(s.model_cache_dir or Path(tempfile.gettempdir()) / DEFAULT_FOLDER, s.model_cache_max_bytes)

    @property
    def enabled(self) -> bool:
        """Whether models are cached at all (``max_bytes`` > 0)."""
        return self.max_bytes > 0

    def object_path(self, sha256: str) -> Path:
        """Where the model whose sha256 is ``sha256`` is kept; ``ValueError`` unless it is 64 lowercase hex digits
        (a manifest's text never becomes a path)."""
        if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / "objects" / sha256[:2] / sha256

    def entry_path(self, target: str) -> Path:
        """Where the target's entry (versions and manifest text of its last cached model) is kept."""
        return self.root / "entries" / f"{target_path(target)}.json"

    def fill(self, store, models_container: str, versions: dict, dest) -> dict[str, int]:
        """Put each target's ``model.joblib`` and ``manifest.json`` below ``dest`` (the models layout
        ``scoring.score`` reads), from the cache where the versions match, else downloaded.

        ``versions``: ``target -> (model version, manifest version)`` (``unit_model_versions``; ``None``:
        unknown, downloaded). A blob that does not exist is left out (scoring fails its target, naming it).
        Returns counts: ``cached`` (targets
        from the cache), ``downloaded`` (targets whose blobs were downloaded) and ``refetched`` (cached
        models that failed their check, evicted and downloaded). Raises ``BlobStoreUnavailable`` when
        storage does not answer; never for the cache (an unusable entry or object is a miss).
        """
        dest = Path(dest)
        counts = {"cached": 0, "downloaded": 0, "refetched": 0}
        misses = []
        for target, (model_version, manifest_version) in versions.items():
            hit = self._from_cache(target, model_version, manifest_version, dest, counts) if self.enabled else False
            if hit:
                counts["cached"] += 1
            else:
                misses.append(target)
        names = [blob for t in misses for blob in (model_blob(t), model_manifest_blob(t))]
        data = store.download_many(models_container, names)
        for target in misses:
            model, manifest = data[model_blob(target)], data[model_manifest_blob(target)]
            for blob, content in ((model_blob(target), model), (model_manifest_blob(target), manifest)):
                if content is not None:
                    (dest / blob).parent.mkdir(parents=True, exist_ok=True)
                    (dest / blob).write_bytes(content)
            if self.enabled and model is not None and manifest is not None:
                self._remember(target, model, manifest, versions[target])
        counts["downloaded"] = len(misses)
        if misses and self.enabled:
            self.evict()
        return counts

    def _from_cache(self, target, model_version, manifest_version, dest: Path, counts: dict) -> bool:
        """Copy the target's cached pair to ``dest`` when it is the listed version and passes its checks."""
        if model_version is None or manifest_version is None:
            return False
        try:
            entry = json.loads(self.entry_path(target).read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(entry, dict) or (entry.get("model_version"), entry.get("manifest_version")) \
                != (model_version, manifest_version):
            return False
        text = str(entry.get("manifest", "")).encode()
        listed_md5 = manifest_version[4:] if manifest_version.startswith("md5:") else entry.get("manifest_md5")
        if _md5(text) != listed_md5:
            log.warning("model cache: the cached manifest of %s does not match its MD5: downloading it", target)
            return False
        try:
            sha256 = json.loads(text)["sha256"]
            obj = self.object_path(sha256)
            data = obj.read_bytes()
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if _sha256(data) != sha256:
            log.warning("model cache: %s (model of %s) fails its sha256 check: evicted, downloading it again", obj, target)
            obj.unlink(missing_ok=True)
            counts["refetched"] += 1
            return False
        try:
            os.utime(obj)  # recently used: evicted last
        except OSError:  # evicted by another process since it was read: the bytes read are whole and checked
            pass
        for blob, content in ((model_blob(target), data), (model_manifest_blob(target), text)):
            (dest / blob).parent.mkdir(parents=True, exist_ok=True)
            (dest / blob).write_bytes(content)
        return True

    def _remember(self, target: str, model: bytes, manifest: bytes, listed: tuple) -> None:
        """Cache a downloaded pair whose model matches its manifest's sha256 (anything else is not cached)."""
        try:
            sha256 = json.loads(manifest)["sha256"]
            text = manifest.decode()
        except (ValueError, KeyError, TypeError):
            return
        if not isinstance(sha256, str) or _sha256(model) != sha256:
            return

        def version(content: bytes, listed_version) -> str:
            # the bytes' own MD5 unless the listing had only an etag (an etag never names other bytes)
            if listed_version and listed_version.startswith("etag:"):
                return listed_version
            return f"md5:{_md5(content)}"

        obj = self.object_path(sha256)
        try:
            if not obj.is_file():
                write_atomic(obj, model)
            entry = {"target": target, "model_version": version(model, listed[0]),
                     "manifest_version": version(manifest, listed[1]), "manifest": text,
                     "manifest_md5": _md5(manifest)}
            write_atomic(self.entry_path(target), json.dumps(entry, sort_keys=True).encode())
        except OSError as exc:  # a full or read-only disk costs downloads, never a target
            log.warning("model cache: could not cache the model of %s in %s: %s", target, self.root, exc)

    def evict(self) -> int:
        """Remove the least recently used model files until those left total at most ``max_bytes``; returns
        how many were removed (files another process removed first are skipped)."""
        files = []
        for path in (self.root / "objects").glob("*/*"):
            if path.name.startswith("."):  # write_atomic's temporary files
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            files.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        removed = 0
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
        if removed:
            log.info("model cache %s: evicted %d least recently used model(s), %d bytes kept", self.root, removed, total)
        return removed
