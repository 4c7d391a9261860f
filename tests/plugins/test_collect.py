"""The collector on a real Azurite: manifest, coverage, unexpected blobs, MD5 confirmation, stale part files."""
from __future__ import annotations

import hashlib
import io
import json

import pandas as pd
import pytest

from batch_scoring.collect import collect_interval
from batch_scoring.config import settings
from batch_scoring.errors import PipelineError
from batch_scoring.scoring.layout import interval_folder, manifest_blob, part_blob
from batch_scoring.scoring.part_file import part_bytes
from tests.plugins.predictions import INTERVAL, WINDOWS
from tests.plugins.test_unit_checks import receipt, rows

FOLDER = interval_folder(INTERVAL)  # the interval's predictions folder


def part(unit: list[str]) -> tuple[bytes, list[dict]]:
    """The part file of ``unit`` (every target scored) and the validated receipts its score task returns."""
    tables = [rows(*t.split("/")) for t in sorted(unit)]
    receipts = [receipt(t, table) for t, table in zip(sorted(unit), tables)]
    data = part_bytes(tables, receipts, tables[0].schema)
    hashes = {"output_sha256": hashlib.sha256(data).hexdigest(), "output_md5": hashlib.md5(data).hexdigest()}
    return data, [{**r, **hashes, "validated": True} for r in receipts]


@pytest.fixture
def planned(blob_store):
    """The snapshot of d1/s1 and d1/s2 over the interval, and a plan scoring both, one unit each."""
    snapshot = pd.DataFrame({"device_id": "d1", "sensor_id": ["s1"] * 12 + ["s2"] * 12, "window_start": WINDOWS * 2})
    buf = io.BytesIO()
    snapshot.to_parquet(buf, index=False)
    blob_store.upload_bytes("aggregates", f"{INTERVAL.key}/aggregates.parquet", buf.getvalue())
    return {"interval": INTERVAL.key, "targets": ["d1/s1", "d1/s2"], "units": [["d1/s1"], ["d1/s2"]],
            "skipped": {"d9/s9": "no aggregates in the interval"}}


def test_collect_writes_manifest_and_fails_naming_missing_targets(planned, blob_store):
    data, _ = part(["d1/s1"])
    blob_store.upload_bytes("predictions", part_blob(INTERVAL, ["d1/s1"]), data)
    with pytest.raises(PipelineError, match=r"1 of 2 targets failed validation .*d1/s2: part file missing"):
        collect_interval(blob_store, settings(), INTERVAL, planned)
    verified = {}
    manifest = collect_interval(blob_store, settings(), INTERVAL, planned, min_coverage=0.5, verified=verified)
    assert manifest["counts"] == {"ok": 1, "failed": 1, "skipped": 1}
    assert manifest["targets"]["d1/s2"] == {"status": "failed", "reason": "part file missing",
                                            "blob": part_blob(INTERVAL, ["d1/s2"])}
    assert manifest["targets"]["d1/s1"]["blob"] == part_blob(INTERVAL, ["d1/s1"])
    assert manifest["targets"]["d1/s1"]["md5"] == hashlib.md5(data).hexdigest()
    assert manifest["selected"] == {"targets": 2, "ok": 1, "failed": 1, "coverage": 0.5}
    assert verified == {"confirmed": 0, "read": 2}
    assert json.loads(blob_store.download_bytes("predictions", manifest_blob(INTERVAL))) == manifest


def test_collect_confirms_validated_receipts_by_md5_and_flags_unexpected_blobs(planned, blob_store):
    # as the DAG's XCom holds it: no units, they follow from targets_per_unit
    plan = {**{k: v for k, v in planned.items() if k != "units"}, "targets_per_unit": 2}
    data, receipts = part(["d1/s1", "d1/s2"])
    blob_store.upload_bytes("predictions", part_blob(INTERVAL, ["d1/s1", "d1/s2"]), data)
    blob_store.upload_bytes("predictions", f"{FOLDER}d7/s7.parquet", b"stray")
    blob_store.upload_bytes("predictions", f"{FOLDER}_report.html", b"the collector's own")
    keep, verified = {}, {}
    with pytest.raises(PipelineError, match=rf"1 unexpected blob\(s\) under predictions/{FOLDER} .*"
                                            rf"{FOLDER}d7/s7.parquet"):
        collect_interval(blob_store, settings(), INTERVAL, plan, unit_receipts=[receipts],
                         keep=keep, verified=verified)
    assert verified == {"confirmed": 2, "read": 0} and sorted(keep) == ["d1/s1", "d1/s2"]
    manifest = json.loads(blob_store.download_bytes("predictions", manifest_blob(INTERVAL)))
    assert manifest["counts"] == {"ok": 2, "failed": 0, "skipped": 1}
    assert manifest["unexpected_blobs"] == [f"{FOLDER}d7/s7.parquet"]
    assert {e["blob"] for e in manifest["targets"].values() if e["status"] == "ok"} == \
        {part_blob(INTERVAL, ["d1/s1", "d1/s2"])}


def test_a_rerun_with_other_batching_leaves_only_the_files_the_manifest_names(planned, blob_store):
    for unit in planned["units"]:  # an earlier run: one target per unit
        blob_store.upload_bytes("predictions", part_blob(INTERVAL, unit), part(unit)[0])
    collect_interval(blob_store, settings(), INTERVAL, planned)
    plan = {**planned, "units": [["d1/s1", "d1/s2"]]}  # the rerun: both in one unit
    data, receipts = part(["d1/s1", "d1/s2"])
    blob_store.upload_bytes("predictions", part_blob(INTERVAL, ["d1/s1", "d1/s2"]), data)
    manifest = collect_interval(blob_store, settings(), INTERVAL, plan, unit_receipts=[receipts])
    names = {e["blob"] for e in manifest["targets"].values() if e.get("blob")}
    assert names == {part_blob(INTERVAL, ["d1/s1", "d1/s2"])}
    assert sorted(blob_store.list_names("predictions", FOLDER)) == sorted(names | {manifest_blob(INTERVAL)})
    assert manifest["unexpected_blobs"] == []


def test_collect_fails_when_nothing_was_planned(blob_store):
    with pytest.raises(PipelineError, match="nothing to score"):
        collect_interval(blob_store, settings(), INTERVAL, {"targets": [], "skipped": {}})


def test_a_subset_run_rewrites_the_earlier_file_that_held_a_target_it_left_out(planned, blob_store):
    both = ["d1/s1", "d1/s2"]
    data, receipts = part(both)
    blob_store.upload_bytes("predictions", part_blob(INTERVAL, both), data)
    collect_interval(blob_store, settings(), INTERVAL, {**planned, "units": [both]}, unit_receipts=[receipts])
    subset = {**planned, "targets": ["d1/s1"], "units": [["d1/s1"]], "selection": ["*/s1"], "unselected": ["d1/s2"]}
    data, receipts = part(["d1/s1"])
    blob_store.upload_bytes("predictions", part_blob(INTERVAL, ["d1/s1"]), data)
    manifest = collect_interval(blob_store, settings(), INTERVAL, subset, unit_receipts=[receipts])
    left_out = part_blob(INTERVAL, ["d1/s2"])  # the earlier file without d1/s1, named by what it holds now
    assert {t: (e["status"], e["blob"]) for t, e in manifest["targets"].items() if t.startswith("d1/")} == \
        {"d1/s1": ("ok", part_blob(INTERVAL, ["d1/s1"])), "d1/s2": ("ok", left_out)}
    assert sorted(blob_store.list_names("predictions", FOLDER)) == \
        sorted([part_blob(INTERVAL, ["d1/s1"]), left_out, manifest_blob(INTERVAL)])
    rows_left = pd.read_parquet(io.BytesIO(blob_store.download_bytes("predictions", left_out)))
    assert set(rows_left["sensor_id"]) == {"s2"} and len(rows_left) == 12
    assert manifest["targets"]["d1/s2"]["md5"] == hashlib.md5(blob_store.download_bytes("predictions", left_out)).hexdigest()


def test_a_subset_run_over_an_earlier_file_that_no_longer_holds_the_left_out_target(planned, blob_store):
    """The earlier manifest puts d1/s2 in a file whose footer (replaced since) holds only d1/s1, which this run
    rescored: d1/s2 fails naming the file, the manifest is written, and no file is left holding d1/s1 twice."""
    both = ["d1/s1", "d1/s2"]
    data, receipts = part(both)
    blob_store.upload_bytes("predictions", part_blob(INTERVAL, both), data)
    collect_interval(blob_store, settings(), INTERVAL, {**planned, "units": [both]}, unit_receipts=[receipts])
    blob_store.upload_bytes("predictions", part_blob(INTERVAL, both), part(["d1/s1"])[0])  # replaced by other bytes
    subset = {**planned, "targets": ["d1/s1"], "units": [["d1/s1"]], "selection": ["*/s1"], "unselected": ["d1/s2"]}
    data, receipts = part(["d1/s1"])
    blob_store.upload_bytes("predictions", part_blob(INTERVAL, ["d1/s1"]), data)
    manifest = collect_interval(blob_store, settings(), INTERVAL, subset, unit_receipts=[receipts])  # this run: ok
    assert manifest == json.loads(blob_store.download_bytes("predictions", manifest_blob(INTERVAL)))
    assert manifest["targets"]["d1/s1"]["status"] == "ok" and manifest["selected"]["coverage"] == 1.0
    entry = manifest["targets"]["d1/s2"]
    assert entry["status"] == "failed" and part_blob(INTERVAL, both) in entry["reason"], entry
    assert sorted(blob_store.list_names("predictions", FOLDER)) == \
        sorted([part_blob(INTERVAL, ["d1/s1"]), manifest_blob(INTERVAL)])
