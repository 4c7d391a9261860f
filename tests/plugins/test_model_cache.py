"""The worker's model cache on a real Azurite: requests counted as they leave the blob client, bytes checked."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import multiprocessing
from pathlib import Path

import pandas as pd
import pytest

from batch_scoring.config import Containers, Settings, settings
from batch_scoring.errors import PermanentPipelineError
from batch_scoring.local_backend import score_unit_local
from batch_scoring.model_cache import ModelCache, listing_prefixes, unit_model_versions
from batch_scoring.scoring.layout import Interval

HISTORY = ("2026-03-01 00:00", "2026-03-01 06:00")
FIRST = Interval(dt.datetime(2026, 3, 1, 6), dt.datetime(2026, 3, 1, 7))
SECOND = Interval(dt.datetime(2026, 3, 1, 7), dt.datetime(2026, 3, 1, 8))
CONTAINERS = Containers("aggregates", "models", "predictions")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Models of dev001..dev002 × s1..s2, the same targets retrained on other history, and two intervals' aggregates."""
    from batch_scoring.ingest_sim.aggregator import aggregate_readings
    from batch_scoring.ingest_sim.simulator import simulate
    from batch_scoring.scoring.train import train_models

    root = tmp_path_factory.mktemp("model-cache")
    for name, seed in (("models", 3), ("retrained", 4)):
        history, _ = simulate(2, 2, *HISTORY, seed=seed, anomalies=False)
        train_models(aggregate_readings(history), root / name, *HISTORY)
    frames = {}
    for interval in (FIRST, SECOND):
        readings, _ = simulate(2, 2, interval.start.isoformat(), interval.end.isoformat(), seed=3)
        frames[interval] = aggregate_readings(readings)
    return root / "models", root / "retrained", frames


class Requests:
    """Every request the blob client sends (``raw_request_hook``), as ``(method, path, query)``."""

    def __init__(self):
        self.seen = []

    def __call__(self, request):
        from urllib.parse import urlsplit

        url = urlsplit(request.http_request.url)
        self.seen.append((request.http_request.method, url.path, url.query))

    def model_downloads(self) -> list[str]:
        """Paths of the GETs of model blobs (listings excluded)."""
        return sorted(p.split("/models/", 1)[1] for m, p, q in self.seen
                      if m == "GET" and "/models/" in p and "comp=list" not in q)

    def listings(self, container: str) -> int:
        return sum(1 for m, p, q in self.seen if m == "GET" and p.endswith(f"/{container}") and "comp=list" in q)


@pytest.fixture
def world(blob_conn_str, blob_store, trained, tmp_path):
    """Models deployed and both intervals snapshotted; ``store`` counts its requests in ``requests``."""
    from batch_scoring.hooks.blob_storage import BlobStore
    from batch_scoring.snapshot import frame_to_parquet_bytes

    models, retrained, frames = trained
    blob_store.upload_folder("models", "", models)
    for interval, frame in frames.items():
        blob_store.upload_bytes("aggregates", f"{interval.key}/aggregates.parquet", frame_to_parquet_bytes(frame))
    requests = Requests()
    store = BlobStore.from_connection_string(blob_conn_str, raw_request_hook=requests)
    targets = sorted(f"{d}/{s}" for d, s in frames[FIRST][["device_id", "sensor_id"]].drop_duplicates()
                     .itertuples(index=False))
    cache = ModelCache(tmp_path / "cache", max_bytes=1 << 30)

    class World:
        pass

    w = World()
    w.__dict__.update(store=store, requests=requests, targets=targets, cache=cache, models=models,
                      retrained=retrained)
    return w


def predictions(store, interval, target) -> pd.DataFrame:
    """``target``'s rows in the interval's part file (the tests score the world's targets as one unit)."""
    import io

    from batch_scoring.scoring.layout import interval_folder

    (name,) = store.list_names("predictions", interval_folder(interval))
    frame = pd.read_parquet(io.BytesIO(store.download_bytes("predictions", name)))
    return frame[frame["device_id"] + "/" + frame["sensor_id"] == target].reset_index(drop=True)


def manifest(folder: Path, target: str) -> dict:
    return json.loads((folder / target / "manifest.json").read_text())


def test_a_second_unit_with_the_same_models_downloads_no_model_blob(world):
    world.requests.seen.clear()
    first = score_unit_local(world.store, CONTAINERS, FIRST, world.targets, cache=world.cache)
    assert world.requests.model_downloads() == sorted(f"{t}/{f}" for t in world.targets
                                                      for f in ("manifest.json", "model.joblib"))
    assert world.requests.listings("models") == 2  # one per device: dev001/ and dev002/
    objects = sorted(p.name for p in (world.cache.root / "objects").glob("*/*"))
    assert objects == sorted(manifest(world.models, t)["sha256"] for t in world.targets)
    before = {t: predictions(world.store, FIRST, t) for t in world.targets}

    world.requests.seen.clear()
    second = score_unit_local(world.store, CONTAINERS, SECOND, world.targets, cache=world.cache)
    assert world.requests.model_downloads() == [] and world.requests.listings("models") == 2
    assert [r["model_sha256"] for r in second] == [r["model_sha256"] for r in first] \
        == [manifest(world.models, t)["sha256"] for t in world.targets]
    # and a rerun of the first interval from the cache writes the bytes the downloaded models wrote
    score_unit_local(world.store, CONTAINERS, FIRST, world.targets, cache=world.cache)
    assert world.requests.model_downloads() == []
    for t in world.targets:
        pd.testing.assert_frame_equal(predictions(world.store, FIRST, t), before[t])


def test_a_unit_lists_its_own_devices_or_their_shared_name_starts():
    assert listing_prefixes(["dev002", "dev001", "dev001"]) == ["dev001/", "dev002/"]
    fleet = [f"dev{n:05d}" for n in range(1, 1251)]
    assert listing_prefixes(fleet) == ["dev00", "dev01"]  # 1,250 devices: two listings, ~2,000 devices' blobs
    assert listing_prefixes([f"dev{n:05d}" for n in range(9990, 10011)]) == ["dev0999", "dev1000", "dev1001"]
    assert listing_prefixes(["a1", "b2", "c3", "d4", "e5", "f6", "g7", "h8", "i9"]) == [""]  # no shared start
    assert listing_prefixes(["ab", "ab1", "ab2", "ab3", "ab4", "ab5", "ab6", "ab7", "ab8"], 8) == ["ab"]
    for devices in (fleet, ["ab", "ab1", "ab2", "ab3", "ab4", "ab5", "ab6", "ab7", "ab8"]):  # every device covered
        assert all(any(f"{d}/".startswith(p) for p in listing_prefixes(devices)) for d in devices)


def test_a_changed_model_is_downloaded_and_scored_with_its_new_sha256(world):
    score_unit_local(world.store, CONTAINERS, FIRST, world.targets, cache=world.cache)
    changed = world.targets[0]
    world.store.upload_folder("models", changed, world.retrained / changed)  # redeployed: new bytes, new sha256
    new_sha = manifest(world.retrained, changed)["sha256"]
    assert new_sha != manifest(world.models, changed)["sha256"]
    world.requests.seen.clear()
    receipts = score_unit_local(world.store, CONTAINERS, SECOND, world.targets, cache=world.cache)
    assert world.requests.model_downloads() == [f"{changed}/manifest.json", f"{changed}/model.joblib"]
    assert receipts[0]["model_sha256"] == new_sha
    assert set(predictions(world.store, SECOND, changed)["model_sha256"]) == {new_sha}
    assert set(predictions(world.store, SECOND, world.targets[1])["model_sha256"]) == \
        {manifest(world.models, world.targets[1])["sha256"]}
    assert world.cache.object_path(new_sha).read_bytes() == (world.retrained / changed / "model.joblib").read_bytes()


def test_a_corrupted_cached_model_is_evicted_and_downloaded_again(world):
    score_unit_local(world.store, CONTAINERS, FIRST, world.targets, cache=world.cache)
    target = world.targets[1]
    sha = manifest(world.models, target)["sha256"]
    good = world.cache.object_path(sha).read_bytes()
    world.cache.object_path(sha).write_bytes(good[:-10] + b"0123456789")  # flipped on the worker's disk
    world.requests.seen.clear()
    receipts = score_unit_local(world.store, CONTAINERS, FIRST, world.targets, cache=world.cache)
    assert all(r["status"] == "ok" for r in receipts)
    assert world.requests.model_downloads() == [f"{target}/manifest.json", f"{target}/model.joblib"]
    assert world.cache.object_path(sha).read_bytes() == good


def test_a_cached_manifest_edited_on_disk_is_not_used(world):
    score_unit_local(world.store, CONTAINERS, FIRST, world.targets, cache=world.cache)
    target = world.targets[0]
    path = world.cache.entry_path(target)
    entry = json.loads(path.read_text())
    entry["manifest"] = entry["manifest"].replace('"threshold"', '"threshold_"')  # still JSON, same sha256
    path.write_text(json.dumps(entry))
    world.requests.seen.clear()
    receipts = score_unit_local(world.store, CONTAINERS, FIRST, world.targets, cache=world.cache)
    assert all(r["status"] == "ok" for r in receipts)
    assert world.requests.model_downloads() == [f"{target}/manifest.json", f"{target}/model.joblib"]
    assert json.loads(path.read_text())["manifest"] == (world.models / target / "manifest.json").read_text()


def test_blobs_listed_by_etag_are_cached_by_etag(world, tmp_path):
    target = world.targets[0]
    world.requests.seen.clear()
    for n, listed in enumerate([("etag:1", "etag:2"), ("etag:1", "etag:2"), ("etag:3", "etag:2")]):
        counts = world.cache.fill(world.store, "models", {target: listed}, tmp_path / str(n))
        assert (tmp_path / str(n) / target / "model.joblib").read_bytes() == \
            (world.models / target / "model.joblib").read_bytes()
        assert counts["cached"] == (1 if n == 1 else 0)
    assert len(world.requests.model_downloads()) == 4


def test_a_tampered_blob_still_fails_its_target_and_is_not_cached(world):
    score_unit_local(world.store, CONTAINERS, FIRST, world.targets, cache=world.cache)
    target = world.targets[0]
    good = (world.models / target / "model.joblib").read_bytes()
    world.store.upload_bytes("models", f"{target}/model.joblib", good[: len(good) // 2])
    with pytest.raises(PermanentPipelineError, match=rf"{target}: ModelIntegrityError: model for target {target} "
                                                     rf"failed its integrity check: models/{target}/model.joblib"):
        score_unit_local(world.store, CONTAINERS, SECOND, world.targets, cache=world.cache)
    sha = manifest(world.models, target)["sha256"]
    assert world.cache.object_path(sha).read_bytes() == good
    entry = json.loads(world.cache.entry_path(target).read_text())  # still the intact model's versions
    assert entry["model_version"] == f"md5:{hashlib.md5(good).hexdigest()}"
    # redeployed intact: the cache serves it again without a download
    world.store.upload_bytes("models", f"{target}/model.joblib", good)
    world.requests.seen.clear()
    score_unit_local(world.store, CONTAINERS, SECOND, world.targets, cache=world.cache)
    assert world.requests.model_downloads() == []


def test_the_cap_evicts_the_least_recently_used_models(world, tmp_path):
    size = len((world.models / world.targets[0] / "model.joblib").read_bytes())
    cache = ModelCache(tmp_path / "small", max_bytes=int(size * 2.5))  # room for two models
    versions = unit_model_versions(world.store, "models", world.targets)
    cache.fill(world.store, "models", {t: versions[t] for t in world.targets[:2]}, tmp_path / "a")
    cache.fill(world.store, "models", {t: versions[t] for t in world.targets[2:3]}, tmp_path / "b")
    kept = {p.name for p in (cache.root / "objects").glob("*/*")}
    assert kept == {manifest(world.models, t)["sha256"] for t in world.targets[1:3]}
    counts = cache.fill(world.store, "models", versions, tmp_path / "c")
    assert counts == {"cached": 2, "downloaded": 2, "refetched": 0}
    for t in world.targets:  # the unit's folder is whole whatever was evicted
        assert (tmp_path / "c" / t / "model.joblib").read_bytes() == (world.models / t / "model.joblib").read_bytes()


def test_a_cache_of_zero_bytes_downloads_every_time_and_writes_nothing(world, tmp_path):
    cache = ModelCache(tmp_path / "off", max_bytes=0)
    for interval in (FIRST, FIRST):
        world.requests.seen.clear()
        score_unit_local(world.store, CONTAINERS, interval, world.targets[:1], cache=cache)
        assert len(world.requests.model_downloads()) == 2
    assert not cache.root.exists()


def test_the_default_cache_is_the_settings_folder(monkeypatch, tmp_path):
    import tempfile

    monkeypatch.delenv("BATCH_SCORING_MODEL_CACHE_DIR")
    cache = ModelCache.from_settings()
    assert cache.root == Path(tempfile.gettempdir()) / "batch-scoring-model-cache" and cache.max_bytes == 2 * 1024 ** 3
    monkeypatch.setenv("BATCH_SCORING_MODEL_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("BATCH_SCORING_MODEL_CACHE_MAX_BYTES", "1000")
    assert ModelCache.from_settings(settings()).root == tmp_path and ModelCache.from_settings().max_bytes == 1000
    monkeypatch.setenv("BATCH_SCORING_MODEL_CACHE_MAX_BYTES", "-1")
    with pytest.raises(ValueError, match=r"BATCH_SCORING_MODEL_CACHE_MAX_BYTES='-1': expected a whole number of bytes"):
        Settings()


def _fill_rounds(conn_str: str, root: str, max_bytes: int, versions: dict, dest: str, rounds: int) -> None:
    """One worker process: fill ``rounds`` unit folders from the shared cache (a spawned process's target)."""
    from batch_scoring.hooks.blob_storage import BlobStore

    store = BlobStore.from_connection_string(conn_str)
    cache = ModelCache(root, max_bytes)
    for i in range(rounds):
        cache.fill(store, "models", {t: tuple(v) for t, v in versions.items()}, Path(dest) / str(i))


def test_two_processes_filling_one_cache_end_with_correct_files(world, blob_conn_str, tmp_path):
    from batch_scoring.scoring.model_store import load_model

    versions = unit_model_versions(world.store, "models", world.targets)
    size = len((world.models / world.targets[0] / "model.joblib").read_bytes())
    root, rounds = tmp_path / "shared", 6
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_fill_rounds, args=(blob_conn_str, str(root), int(size * 2.5), versions,
                                                    str(tmp_path / f"unit{n}"), rounds)) for n in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    for n in range(2):
        for i in range(rounds):
            for t in world.targets:  # every folder holds a pair that passes scoring's own check
                _, loaded = load_model(tmp_path / f"unit{n}" / str(i), *t.split("/"))
                assert loaded["sha256"] == manifest(world.models, t)["sha256"]
    left = [p for p in root.rglob("*") if p.is_file()]
    assert not [p for p in left if p.name.startswith(".")]  # no temporary file left behind
    for p in (root / "objects").glob("*/*"):
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name
    for t in world.targets:
        entry = json.loads(ModelCache(root, 1).entry_path(t).read_text())
        assert json.loads(entry["manifest"]) == manifest(world.models, t)
