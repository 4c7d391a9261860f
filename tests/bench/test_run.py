"""bench/run.py's pure parts (the timeline of a run's task instances, the settings every benchmark sets) and
the checks of `--reuse-world` (the last against a real Azurite)."""
from __future__ import annotations

import pytest

from bench.run import timeline


def test_timeline_gives_each_task_its_first_times_and_last_end_from_the_run_start():
    tis = [
        {"task_id": "snapshot", "scheduled_when": "2026-01-01T00:00:01Z", "queued_when": "2026-01-01T00:00:02.5Z",
         "start_date": "2026-01-01T00:00:03Z", "end_date": "2026-01-01T00:00:05Z"},
        {"task_id": "score", "queued_when": None, "start_date": "2026-01-01T00:00:07Z", "end_date": "2026-01-01T00:00:09Z"},
        {"task_id": "score", "queued_when": "2026-01-01T00:00:05.5Z", "start_date": "2026-01-01T00:00:06Z",
         "end_date": "2026-01-01T00:00:11.25Z"},
    ]
    assert timeline(tis, "2026-01-01T00:00:00Z") == {
        "score": {"queued": 5.5, "started": 6.0, "ended": 11.25},
        "snapshot": {"scheduled": 1.0, "queued": 2.5, "started": 3.0, "ended": 5.0},
    }
    assert timeline(tis, None) == {}


def test_the_bench_gives_a_unit_this_machines_memory_over_its_parallelism():
    import psutil

    from batch_scoring.config import Settings
    from bench.run import bench_settings

    env = bench_settings(4)
    gib = float(env["BATCH_SCORING_AUTO_UNIT_MEMORY_GIB"])
    assert gib == pytest.approx(psutil.virtual_memory().total / 2**30 / 4, abs=0.01)
    assert Settings.model_validate({"auto_unit_memory_gib": env["BATCH_SCORING_AUTO_UNIT_MEMORY_GIB"]}).auto_unit_memory_gib == gib


def test_reuse_world_refuses_an_incomplete_world_and_names_what_is_missing(tmp_path, monkeypatch):
    import bench.run as run

    monkeypatch.setattr(run, "WORK", tmp_path)
    with pytest.raises(SystemExit, match="no complete world for T=3: missing .*targets.txt"):
        run.check_world([3], "sqlite")
    (tmp_path / "T3").mkdir()
    (tmp_path / "T3" / "targets.txt").write_text("d0/s0\nd0/s1\nd0/s2\n")
    (tmp_path / "T3" / "sensors.db").write_bytes(b"")
    with pytest.raises(SystemExit, match=r"missing .*azurite$"):
        run.check_world([3], "sqlite")
    (tmp_path / "azurite").mkdir()
    run.check_world([3], "sqlite")  # complete: no error
    with pytest.raises(SystemExit, match="does not list 4 targets"):
        (tmp_path / "T4").mkdir()
        (tmp_path / "T4" / "targets.txt").write_text("d0/s0\n")
        (tmp_path / "T4" / "sensors.db").write_bytes(b"")
        run.check_world([3, 4], "sqlite")
    with pytest.raises(SystemExit, match="SQLite worlds only"):
        run.check_world([3], "postgresql")


def test_a_reused_world_needs_every_model_deployed_and_the_snapshot_blob(blob_store, tmp_path):
    import datetime as dt
    import time

    from batch_scoring.config import settings
    from batch_scoring.scoring.layout import Interval, snapshot_blob
    from bench.run import reused_world

    s = settings()
    interval = Interval(dt.datetime(2031, 5, 5), dt.datetime(2031, 5, 6))  # no other test writes this day
    (tmp_path / "targets.txt").write_text("rw0/s0\nrw0/s1\n")
    for target in ("rw0/s0", "rw0/s1"):
        (tmp_path / "models" / target).mkdir(parents=True)
        (tmp_path / "models" / target / "model.joblib").write_bytes(target.encode())
    blob_store.upload_bytes(s.models_container, "rw0/s0/model.joblib", b"rw0/s0")
    with pytest.raises(SystemExit, match=r"1 of 2 model files are not deployed as written \(first: \['rw0/s1/model.joblib'\]\)"):
        reused_world(2, blob_store, s, interval, tmp_path)
    blob_store.upload_bytes(s.models_container, "rw0/s1/model.joblib", b"another model")  # there, other bytes
    with pytest.raises(SystemExit, match=r"1 of 2 .*\['rw0/s1/model.joblib'\]"):
        reused_world(2, blob_store, s, interval, tmp_path)
    blob_store.upload_bytes(s.models_container, "rw0/s1/model.joblib", b"rw0/s1")
    with pytest.raises(SystemExit, match=f"snapshot blob {snapshot_blob(interval)} is missing"):
        reused_world(2, blob_store, s, interval, tmp_path)
    blob_store.upload_bytes(s.aggregates_container, snapshot_blob(interval), b"parquet")
    built = time.strftime("%Y-%m-%d %H:%M", time.localtime((tmp_path / "targets.txt").stat().st_mtime))
    assert reused_world(2, blob_store, s, interval, tmp_path) == built
