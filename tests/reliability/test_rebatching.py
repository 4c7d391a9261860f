"""Through real Airflow (dag.test): the interval's folder holds exactly the part files its manifest names.

Issue 14 item 2 ("a rerun with other batching leaves no stale file behind"): a rerun with another
``targets_per_unit`` writes other part files and the collector removes the earlier ones; a run over a
subset whose earlier unit also held targets it left out rewrites that file with those targets only
(``part_file.without_targets``). Each target's rows stay exactly once in the folder, the same as before.
"""
from __future__ import annotations

import io

import pandas as pd

from batch_scoring.scoring.layout import interval_prefix, is_part_name, part_blob
from tests.dags.conftest import read_manifest, run_interval, task_states
from tests.reliability.conftest import SCORING, TARGETS, interval
from tests.reliability.test_dag_faults import parse_dag

KEY = interval().key


def parts(world) -> set[str]:
    prefix = interval_prefix(KEY)
    return {n for n in world.store.list_names("predictions", prefix) if is_part_name(n[len(prefix):])}


def named(manifest: dict) -> set[str]:
    """The part files the manifest's entries name (ok and failed)."""
    return {e["blob"] for e in manifest["targets"].values() if e.get("blob")}


def rows_by_target(world) -> dict[str, pd.DataFrame]:
    """Every part file's rows, by target (a target in two files would show twice its rows)."""
    frame = pd.concat([pd.read_parquet(io.BytesIO(world.store.download_bytes("predictions", n))) for n in sorted(parts(world))],
                      ignore_index=True)
    ids = frame["device_id"] + "/" + frame["sensor_id"]
    return {t: frame[ids == t].sort_values("window_start").reset_index(drop=True) for t in sorted(set(ids))}


def run(dag, **params):
    """A manual run of the interval passing every param the test relies on (dag.test keeps an earlier run's)."""
    run_, ok = run_interval(dag, SCORING[0], **{"targets": [], "dry_run": False, **params})
    assert ok, task_states(run_)


def test_a_rerun_with_other_batching_leaves_exactly_the_files_its_manifest_names(world, monkeypatch):
    dag = parse_dag(monkeypatch)
    run(dag, targets_per_unit=1)
    first = read_manifest(world.store, KEY)
    assert parts(world) == named(first) == {part_blob(KEY, [t]) for t in TARGETS}
    before = rows_by_target(world)
    run(dag, targets_per_unit=3)
    second = read_manifest(world.store, KEY)
    assert second["counts"] == {"ok": 4, "failed": 0, "skipped": 0}
    assert parts(world) == named(second) == {part_blob(KEY, TARGETS[:3]), part_blob(KEY, TARGETS[3:])}
    after = rows_by_target(world)
    assert sorted(after) == TARGETS and all(len(after[t]) == 12 and after[t].equals(before[t]) for t in TARGETS)


def test_a_subset_run_rewrites_the_earlier_file_that_held_the_targets_it_left_out(world, monkeypatch):
    dag = parse_dag(monkeypatch)
    run(dag, targets_per_unit=4)
    assert parts(world) == {part_blob(KEY, TARGETS)}
    before = rows_by_target(world)
    run(dag, targets=["dev001/*"], targets_per_unit=1)
    manifest = read_manifest(world.store, KEY)
    left_out = part_blob(KEY, ["dev002/s1", "dev002/s2"])  # the earlier file without the targets rescored
    assert parts(world) == named(manifest) == {part_blob(KEY, ["dev001/s1"]), part_blob(KEY, ["dev001/s2"]), left_out}
    assert manifest["counts"] == {"ok": 4, "failed": 0, "skipped": 0}
    assert {t: e["blob"] for t, e in manifest["targets"].items() if t.startswith("dev002/")} == \
        {"dev002/s1": left_out, "dev002/s2": left_out}
    after = rows_by_target(world)
    assert sorted(after) == TARGETS and all(after[t].equals(before[t]) for t in TARGETS)
