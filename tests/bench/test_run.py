"""bench/run.py's pure parts: the timeline of a run's task instances, the settings every benchmark sets."""
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
