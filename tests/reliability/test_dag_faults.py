"""Faults through real Airflow (dag.test): retries, the all_done collector, the coverage param, the sensor's timeout."""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json

import pytest

from tests.dags.conftest import run_interval, task_states
from tests.reliability.conftest import SCORING, interval

IV = interval()
KEY = IV.key


def parse_dag(monkeypatch, **env):
    """A fresh DagBag: the DAG file reads BATCH_SCORING_* settings at parse time."""
    from airflow.dag_processing.dagbag import DagBag

    from devstack.services import REPO

    for k, v in env.items():
        monkeypatch.setenv(f"BATCH_SCORING_{k}", str(v))
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.dags["batch_scoring"]


def test_one_crashing_target_others_finish_collector_lists_it_coverage_param_and_fix(world, monkeypatch):
    import joblib

    from tests.reliability.exploding import ExplodingModel

    dag = parse_dag(monkeypatch, RETRIES=1)
    good_model = world.store.download_bytes("models", "dev002/s1/model.joblib")
    good_manifest = world.store.download_bytes("models", "dev002/s1/manifest.json")
    buf = io.BytesIO()
    joblib.dump(ExplodingModel(), buf)
    manifest = {**json.loads(good_manifest), "sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
                "size_bytes": len(buf.getvalue())}
    world.store.upload_bytes("models", "dev002/s1/model.joblib", buf.getvalue())
    world.store.upload_bytes("models", "dev002/s1/manifest.json", json.dumps(manifest).encode())

    # default policy (every target): the run fails at the collector, after the other targets finished
    run, ok = run_interval(dag, SCORING[0])
    assert not ok
    states = task_states(run)
    score = {k[1]: v for k, v in states.items() if k[0] == "score"}
    assert sorted(score.values()) == ["failed", "success", "success", "success"]
    assert states[("collect", -1)] == "failed"
    m = world.manifest()
    assert m["counts"] == {"ok": 3, "failed": 1, "skipped": 0}
    assert m["targets"]["dev002/s1"]["status"] == "failed"
    assert "RuntimeError: model exploded while scoring" in m["targets"]["dev002/s1"]["reason"]
    blobs = world.predictions()
    good = {e["blob"]: blobs[e["blob"]] for e in m["targets"].values() if e["status"] == "ok"}  # the others' files
    assert len(good) == 3 and all(good.values())

    # min_coverage 0.75: the same interval passes, the miss listed in the manifest
    run, ok = run_interval(dag, SCORING[0], min_coverage=0.75)
    assert ok, task_states(run)
    m = world.manifest()
    assert m["min_coverage"] == 0.75 and m["coverage"] == 0.75 and m["counts"]["failed"] == 1

    # fix (redeploy the model) and rerun with the default policy: whole again, the others byte-identical
    world.store.upload_bytes("models", "dev002/s1/model.joblib", good_model)
    world.store.upload_bytes("models", "dev002/s1/manifest.json", good_manifest)
    run, ok = run_interval(dag, SCORING[0])
    assert ok
    assert world.manifest()["counts"] == {"ok": 4, "failed": 0, "skipped": 0}
    after = world.predictions()
    assert all(after[n] == b for n, b in good.items())


def test_stale_aggregates_time_the_sensor_out_naming_targets_and_windows(world, monkeypatch, capfd):
    from batch_scoring.ingest_sim.loads import aggregate_range

    dag = parse_dag(monkeypatch, FRESHNESS_POKE_SECONDS=1, FRESHNESS_TIMEOUT_SECONDS=2, RETRIES=0)
    earlier = world.run(interval(SCORING[0] + dt.timedelta(hours=1)))  # another interval's good output
    earlier_blobs = world.predictions(interval(SCORING[0] + dt.timedelta(hours=1)))
    world.execute("DELETE FROM sensor_aggregates WHERE device_id = 'dev002' AND sensor_id = 's1' AND window_start >= ?",
                  dt.datetime(2026, 6, 1, 8, 30))
    run, ok = run_interval(dag, SCORING[0])
    assert not ok
    states = task_states(run)
    assert states[("wait_for_aggregates", -1)] == "failed"
    assert world.store.list_names("aggregates", f"{KEY}/") == []  # nothing snapshotted, nothing scored
    out = capfd.readouterr()
    text = out.out + out.err
    assert "aggregates not fresh after 2s: interval 20260601T0800Z_20260601T0900Z: 1 of 4 targets stale: " \
           "dev002/s1 (data until 2026-06-01 08:30:00) missing 2026-06-01 08:30-09:00 (6 windows)" in text
    assert world.predictions(interval(SCORING[0] + dt.timedelta(hours=1))) == earlier_blobs
    # the aggregator catches up; the rerun passes
    conn = world.connect()
    try:
        aggregate_range(conn, SCORING[0], SCORING[1])
    finally:
        conn.close()
    run, ok = run_interval(dag, SCORING[0])
    assert ok and world.manifest()["counts"]["ok"] == 4
    assert earlier["counts"]["ok"] == 4
