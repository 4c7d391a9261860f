"""Runs over a subset of targets (the `targets` param) on the run's real steps (issue 10, items 5 and 8).

A selection that matches nothing fails at the snapshot, naming itself; a run over a subset merges its
fresh results into the interval's manifest and never turns a complete interval into a partial one.
"""
from __future__ import annotations

import io

import pytest

from batch_scoring.errors import PermanentPipelineError, PipelineError

from batch_scoring.scoring.layout import heatmap_blob, interval_folder, manifest_blob, part_blob, report_blob
from batch_scoring.units import apply_run_params
from tests.reliability.conftest import interval

IV = interval()
KEY = IV.key
FOLDER = interval_folder(IV)
MANIFEST = manifest_blob(IV)


def plan_for(world, patterns=None) -> dict:
    """The snapshot's plan narrowed by the run's `targets` param, as the snapshot task does."""
    return apply_run_params(world.snapshot(), {"targets": patterns or []}, 1024)


def run(world, patterns=None, min_coverage: float = 1.0) -> dict:
    plan = plan_for(world, patterns)
    world.score(plan)
    return world.collect(plan, min_coverage=min_coverage)


def manifest_bytes(world) -> bytes:
    return world.store.download_bytes("predictions", MANIFEST)


def without_run_fields(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k not in ("selection", "selected")}


def _flip_first_flag(world, target):
    """Flip the first anomaly flag in the target's part file (one target per unit), its footer kept."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = part_blob(IV, [target])
    table = pq.read_table(io.BytesIO(world.store.download_bytes("predictions", name)))
    frame = table.to_pandas()
    frame.loc[0, "is_anomaly"] = not frame.loc[0, "is_anomaly"]
    changed = pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(changed.replace_schema_metadata(table.schema.metadata), buf, compression="zstd")
    world.store.upload_bytes("predictions", name, buf.getvalue())


# --- item 5: a selection that matches nothing --------------------------------------------------------

@pytest.mark.parametrize("patterns", [["nosuch/*"], ["dev1/*", "*/s9"]])
def test_a_selection_matching_nothing_fails_at_the_snapshot_and_touches_no_prediction(world, patterns):
    full = world.run()
    before = world.predictions()
    with pytest.raises(PermanentPipelineError) as err:
        plan_for(world, patterns)
    assert str(err.value) == (
        f"interval {KEY}: the run's targets selection {patterns} matched none of the 4 targets with aggregates "
        "and a model (dev001/s1, dev001/s2, dev002/s1, dev002/s2); fix the `targets` param (globs such as "
        "dev001/* or */s2; empty = every target) and trigger the run again")
    assert world.predictions() == before and world.manifest() == full


def test_a_selection_of_targets_without_a_model_says_they_are_skipped(world):
    for name in ("dev002/s1/model.joblib", "dev002/s1/manifest.json"):
        world.store.delete("models", name)
    with pytest.raises(PermanentPipelineError, match=r"selection \['dev002/s1'\] matched none of the 3 targets with "
                       r"aggregates and a model \(dev001/s1, dev001/s2, dev002/s2\); it matched only skipped targets: "
                       r"dev002/s1 \(no model deployed\); fix the `targets` param"):
        plan_for(world, ["dev002/s1"])


def test_the_manifest_records_the_selection_also_when_every_target_is_selected(world):
    manifest = run(world)
    assert manifest["selection"] == [] and manifest["selected"] == {"targets": 4, "ok": 4, "failed": 0, "coverage": 1.0}
    plan = plan_for(world, ["dev001/*", "dev01/*"])  # a typo among good globs: logged, the run goes on
    assert plan["selection_notes"][1] == (
        "targets pattern 'dev01/*' matched none of the 4 targets with aggregates and a model (dev001/s1, dev001/s2, "
        "dev002/s1, dev002/s2) nor any skipped target; check it for a typo")
    world.score(plan)
    assert world.collect(plan)["selection"] == ["dev001/*", "dev01/*"]


# --- item 8: a run over a subset merges into the interval's manifest ----------------------------------

@pytest.mark.parametrize("patterns, selected", [(["dev001/*"], ["dev001/s1", "dev001/s2"]),
                                                (["*/s2"], ["dev001/s2", "dev002/s2"])])
def test_a_subset_run_after_a_complete_one_keeps_the_interval_complete(world, patterns, selected):
    full = world.run()
    full_bytes = manifest_bytes(world)
    good = world.predictions()
    merged = run(world, patterns)  # before the fix: "N unexpected blob(s) ... remove them", a 2-target manifest
    assert sorted(r["target"] for unit in world.unit_receipts[KEY] for r in unit) == selected  # only these scored
    assert merged["unexpected_blobs"] == []
    assert without_run_fields(merged) == without_run_fields(full)  # every entry, count and sum as complete
    assert merged["counts"] == {"ok": 4, "failed": 0, "skipped": 0} and merged["coverage"] == 1.0
    assert merged["selection"] == patterns
    assert merged["selected"] == {"targets": 2, "ok": 2, "failed": 0, "coverage": 1.0}
    assert {n: b for n, b in world.predictions().items() if "/_" not in n} == \
        {n: b for n, b in good.items() if "/_" not in n}
    # idempotent: the same subset run again writes the same manifest bytes
    once = manifest_bytes(world)
    run(world, patterns)
    assert manifest_bytes(world) == once
    # a full run afterwards gives back the full run's manifest, byte for byte
    run(world)
    assert manifest_bytes(world) == full_bytes


def test_a_subset_run_without_an_earlier_manifest_lists_the_rest_as_not_selected(world):
    manifest = run(world, ["dev002/s1"])
    t = manifest["targets"]
    assert {k: v["status"] for k, v in t.items()} == {
        "dev001/s1": "not_selected", "dev001/s2": "not_selected", "dev002/s1": "ok", "dev002/s2": "not_selected"}
    assert t["dev001/s1"] == {"status": "not_selected",
                              "reason": "not in this run's targets selection ['dev002/s1']; no earlier result"}
    assert manifest["counts"] == {"ok": 1, "failed": 0, "skipped": 0, "not_selected": 3}
    assert manifest["coverage"] == 0.25 and manifest["rows"] == 12 and manifest["rows"] == t["dev002/s1"]["rows"]
    assert manifest["selected"] == {"targets": 1, "ok": 1, "failed": 0, "coverage": 1.0}  # min_coverage judged here
    once = manifest_bytes(world)
    run(world, ["dev002/s1"])
    assert manifest_bytes(world) == once
    # a second subset adds to the first; a full run then equals a full run alone
    second = run(world, ["dev001/*"])
    assert {k: v["status"] for k, v in second["targets"].items()} == {
        "dev001/s1": "ok", "dev001/s2": "ok", "dev002/s1": "ok", "dev002/s2": "not_selected"}
    assert second["targets"]["dev002/s1"] == manifest["targets"]["dev002/s1"]
    after_subsets = run(world)
    subset_then_full = manifest_bytes(world)
    for name in world.store.list_names("predictions", FOLDER):
        world.store.delete("predictions", name)
    assert run(world) == after_subsets and manifest_bytes(world) == subset_then_full


def test_a_kept_target_whose_blob_changed_since_is_checked_again_and_the_run_judges_only_its_selection(world):
    world.run()
    _flip_first_flag(world, "dev002/s1")  # altered after it was validated
    world.store.delete("predictions", part_blob(IV, ["dev002/s2"]))  # and one gone
    merged = run(world, ["dev001/*"])  # this run's targets are whole: it passes
    t = merged["targets"]
    assert t["dev002/s1"]["status"] == "failed"
    assert t["dev002/s1"]["reason"].startswith("1 anomaly flag(s) disagree with decision_score < threshold")
    assert t["dev002/s2"] == {"status": "failed", "reason": "part file missing", "blob": part_blob(IV, ["dev002/s2"])}
    assert merged["counts"] == {"ok": 2, "failed": 2, "skipped": 0} and merged["coverage"] == 0.5
    assert merged["rows"] == 24 and merged["selected"]["coverage"] == 1.0
    # a failing selected target fails the run, counted against the selection only
    world.store.upload_bytes("models", "dev001/s2/model.joblib", b"tampered")
    plan = plan_for(world, ["dev001/*"])
    world.score(plan)
    with pytest.raises(PipelineError, match=r"^interval [^:]+: 1 of 2 targets selected by \['dev001/\*'\] failed "
                       r"validation \(coverage 50\.0% < 100%\): dev001/s2: scoring failed: "
                       r"ModelIntegrityError"):
        world.collect(plan)


def test_predictions_of_a_target_whose_model_was_removed_are_removed_in_a_subset_run(world):
    world.run()
    for name in ("dev002/s2/model.joblib", "dev002/s2/manifest.json"):
        world.store.delete("models", name)
    plan = plan_for(world, ["dev001/*"])
    assert plan["unselected"] == ["dev002/s1"] and plan["unselected_skipped"] == {"dev002/s2": "no model deployed"}
    world.score(plan)
    stale = part_blob(IV, ["dev002/s2"])
    assert stale in world.predictions()
    m = world.collect(plan)  # its part file holds no target the manifest keeps: removed, not trusted
    assert m["unexpected_blobs"] == [] and stale not in world.predictions()
    assert m["targets"]["dev002/s2"] == {"status": "skipped", "reason": "no model deployed"}
    assert m["targets"]["dev002/s1"]["status"] == "ok" and m["counts"] == {"ok": 3, "failed": 0, "skipped": 1}


def test_the_report_of_a_merged_manifest_shows_every_target(world):
    from batch_scoring.report import write_report

    world.run()
    write_report(world.store, world.settings, IV, world.manifest())  # the full run's report
    full_png = world.store.download_bytes("predictions", heatmap_blob(IV))
    plan = plan_for(world, ["dev001/*"])
    world.score(plan)
    flags = {}
    from batch_scoring.collect import collect_interval

    manifest = collect_interval(world.store, world.settings, IV, plan, keep=flags,
                                unit_receipts=world.unit_receipts[KEY])
    assert sorted(flags) == ["dev001/s1", "dev001/s2"]  # the collector validated only these
    write_report(world.store, world.settings, IV, manifest, flags)
    # the kept targets' flags are read from their blobs: the heatmap is the complete interval's
    assert world.store.download_bytes("predictions", heatmap_blob(IV)) == full_png
    page = world.store.download_bytes("predictions", report_blob(IV)).decode()
    assert "4 targets validated, 0 failed, 0 skipped;" in page
    assert ("coverage of the interval 100.0%; this run scored the 2 targets selected by <code>[&#x27;dev001/*&#x27;]"
            "</code>: 2 validated, 0 failed, coverage 100.0% (required 100%)") in page
