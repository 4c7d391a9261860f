"""Through real Airflow (dag.test): the `targets` selection and model blobs that vanish (issue 10, items 5, 8, 9).

* a selection that matches nothing fails the snapshot at once (no retries), naming itself; a typo among
  good globs is logged and the run goes on;
* a run over a subset after a complete one passes and leaves the interval's manifest and report complete;
* a model blob gone while the run scores fails its score task after one try although retries > 0, naming
  the blob; a transient fault (blob storage unreachable) in the same run is still retried.
"""
from __future__ import annotations

import json

from batch_scoring.scoring.layout import interval_prefix
from tests.dags.conftest import collect_result, run_interval, task_states
from tests.reliability.conftest import SCORING, interval
from tests.reliability.test_dag_faults import parse_dag

KEY = interval().key


def task_tries(run) -> dict[tuple[str, int], tuple[str, int]]:
    """(task_id, map_index) -> (state, try_number) of the run's task instances."""
    from airflow.models import TaskInstance
    from airflow.settings import Session

    with Session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id).all()
        return {(ti.task_id, ti.map_index): (ti.state, ti.try_number) for ti in tis}


def _blobs(world, *names) -> dict[str, bytes]:
    return {n: world.store.download_bytes("predictions", f"{interval_prefix(KEY)}{n}") for n in names}


def test_selection_matching_nothing_fails_at_once_and_a_subset_run_keeps_the_interval_complete(world, monkeypatch,
                                                                                                capfd):
    dag = parse_dag(monkeypatch, RETRIES=2, RETRY_DELAY_SECONDS=1)
    run, ok = run_interval(dag, SCORING[0])
    assert ok, task_states(run)
    full = _blobs(world, "_manifest.json", "_heatmap.png")
    predictions = world.predictions()
    capfd.readouterr()

    # item 5: before the fix the collector blamed the data ("nothing to score"), after the retries
    run, ok = run_interval(dag, SCORING[0], targets=["nosuch/*"])
    assert not ok
    tries = task_tries(run)
    assert tries[("snapshot", -1)] == ("failed", 1)  # retries=2, but retrying the same params cannot help
    assert tries[("collect", -1)] == ("failed", 1)
    assert not any(state == "success" for (task, _), (state, _) in tries.items() if task == "score")
    out = capfd.readouterr()
    assert (f"interval {KEY}: the run's targets selection ['nosuch/*'] matched none of the 4 targets with aggregates "
            "and a model (dev001/s1, dev001/s2, dev002/s1, dev002/s2); fix the `targets` param (globs such as dev001/* "
            "or */s2; empty = every target) and trigger the run again") in out.out + out.err
    assert world.predictions() == predictions  # the complete interval is untouched

    # item 8 (and a typo among good globs): before the fix "12 unexpected blob(s) ... remove them" and a
    # 2-target manifest; now the run passes and the interval stays complete
    run, ok = run_interval(dag, SCORING[0], targets=["dev001/*", "dev01/*"])
    assert ok, task_states(run)
    out = capfd.readouterr()
    text = out.out + out.err
    assert (f"interval {KEY}: targets pattern 'dev01/*' matched none of the 4 targets with aggregates and a model "
            "(dev001/s1, dev001/s2, dev002/s1, dev002/s2) nor any skipped target; check it for a typo") in text
    assert (f"interval {KEY}: targets selection ['dev001/*', 'dev01/*']: 2 targets in 2 units of up to 1; 0 skipped; "
            "2 not selected (their earlier results, if any, are kept)") in text
    assert sorted(k for k in task_states(run) if k[0] == "score") == [("score", 0), ("score", 1)]
    merged = world.manifest()
    assert merged["selection"] == ["dev001/*", "dev01/*"]
    assert merged["selected"] == {"targets": 2, "ok": 2, "failed": 0, "coverage": 1.0}
    first = json.loads(full["_manifest.json"])
    assert {k: v for k, v in merged.items() if k not in ("selection", "selected")} == \
        {k: v for k, v in first.items() if k not in ("selection", "selected")}
    assert first["selection"] == [] and merged["counts"] == {"ok": 4, "failed": 0, "skipped": 0}
    assert _blobs(world, "_heatmap.png") == {"_heatmap.png": full["_heatmap.png"]}  # every target in the heatmap
    assert collect_result(run)["selected"] == merged["selected"]
    assert world.predictions().keys() == predictions.keys()
    assert all(world.predictions()[n] == b for n, b in predictions.items() if "/_" not in n)

    # the same subset run again: the same manifest, byte for byte
    once = _blobs(world, "_manifest.json")
    run, ok = run_interval(dag, SCORING[0], targets=["dev001/*", "dev01/*"])
    assert ok and _blobs(world, "_manifest.json") == once


def test_a_model_blob_gone_fails_its_task_after_one_try_while_a_transient_outage_is_retried(world, monkeypatch,
                                                                                            capfd):
    from batch_scoring.hooks.blob_storage import BlobStore
    from devstack import services

    dag = parse_dag(monkeypatch, RETRIES=2, RETRY_DELAY_SECONDS=1)
    world.store.delete("models", "dev002/s2/model.joblib")  # its manifest is still deployed: planned, then gone
    # dev001/s1's first download goes to a blob endpoint nobody listens on: a real transport failure
    unreachable = BlobStore.from_connection_string(services.azurite_connection_string(services.free_port()),
                                                   retry_total=0)
    download_many = BlobStore.download_many
    outages = []

    def first_attempt_unreachable(self, container, names):
        names = list(names)
        if container == "models" and "dev001/s1/model.joblib" in names and not outages:
            outages.append(container)
            return download_many(unreachable, container, names)
        return download_many(self, container, names)

    monkeypatch.setattr(BlobStore, "download_many", first_attempt_unreachable)
    run, ok = run_interval(dag, SCORING[0])
    assert not ok and outages == ["models"]
    tries = task_tries(run)
    # units are the sorted targets: 0 dev001/s1, 1 dev001/s2, 2 dev002/s1, 3 dev002/s2
    assert tries[("score", 3)] == ("failed", 1)  # retries=2: a model that is gone fails at once
    assert tries[("score", 0)] == ("success", 2)  # storage unreachable: retried, then scored
    assert tries[("score", 1)] == ("success", 1) and tries[("score", 2)] == ("success", 1)
    assert tries[("collect", -1)][0] == "failed"
    out = capfd.readouterr()
    text = out.out + out.err
    assert "is unreachable (download_bytes models/dev001/s1/" in text
    assert (f"interval {KEY}: scoring failed for dev002/s2: ModelNotFoundError: no model for target dev002/s2: model "
            "file models/dev002/s2/model.joblib does not exist; retrying cannot fix this, so the task fails without "
            "retries: redeploy the model of dev002/s2 (blobs models/dev002/s2/model.joblib and manifest.json; e.g. "
            "`python -m devstack.deploy_models MODELS_DIR` in the repository, or upload both files again), then clear the failed score "
            "task(s) and collect") in text
    assert "score-unit-" not in text
    entry = world.manifest()["targets"]["dev002/s2"]
    assert entry["reason"] == ("scoring failed: ModelNotFoundError: no model for target "
                               "dev002/s2: model file models/dev002/s2/model.joblib does not exist")
    # the way out: redeploy, rerun (here: the whole run) -> whole again
    world.store.upload_bytes("models", "dev002/s2/model.joblib",
                             (world.models_dir / "dev002" / "s2" / "model.joblib").read_bytes())
    run, ok = run_interval(dag, SCORING[0])
    assert ok and world.manifest()["counts"] == {"ok": 4, "failed": 0, "skipped": 0}


def test_malformed_aggregates_fail_the_snapshot_after_one_try(world, monkeypatch, capfd):
    """Issue 12 item 5: retrying reads the same malformed rows, so the snapshot fails at once (retries=2)."""
    import datetime as dt

    from tests.reliability.test_faults import _insert_window

    dag = parse_dag(monkeypatch, RETRIES=2, RETRY_DELAY_SECONDS=1)
    _insert_window(world, "dev001/s1", dt.datetime(2026, 6, 1, 8, 2, 30))  # off the 5-minute grid
    capfd.readouterr()
    run, ok = run_interval(dag, SCORING[0])
    assert not ok
    tries = task_tries(run)
    assert tries[("snapshot", -1)] == ("failed", 1)  # before: three tries over the same rows
    assert not any(state == "success" for (task, _), (state, _) in tries.items() if task == "score")
    out = capfd.readouterr()
    assert (f"interval {KEY}: aggregates are malformed for 1 target(s), nothing was snapshotted: dev001/s1: 1 window(s) "
            "off the 5-minute grid, starting 2026-06-01 08:02:30") in out.out + out.err
