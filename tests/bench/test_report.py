"""bench/report.py: the table of one fleet, with and without the blob-store floor, with the no-op shape run."""
from __future__ import annotations

from bench.report import render


def fleet(floor: bool) -> dict:
    dag = {"mode": "auto", "state": "success", "wall": 30.0, "cpu": 33.0, "azurite_cpu": 2.0, "peak_rss": 2**30,
           "score_tasks": 4, "score_task_mean": 8.0, "validated": 1000,
           "blob_requests": {"total": 59, "by_method": {"GET": 43, "PUT": 8}, "by_container": {"predictions": 8}}}
    out = {"physical": {"ok": 1000, "wall": 10.0, "cpu": 9.0, "peak_rss": 2**29, "rows": 288_000,
                        "phases": {"sql_read": 4.0, "score_and_write": 6.0}},
           "dag": [dag], "idle_cpu_per_s": 0.1,
           "shape": {"units": 4, "state": "success", "wall": 9.5, "run_seconds": 7.2, "cpu": 5.0, "timeline": {}}}
    if floor:
        out["floor"] = {"ok": 1000, "wall": 40.0, "cpu": 20.0, "azurite_cpu": 15.0, "peak_rss": 2**29,
                        "phases": {"score": 2.0}, "import_seconds": 3.0}
    return out


def rows(floor: bool) -> dict[str, list[str]]:
    text = render({"started": "2026-11-30 20:00", "machine": "2 cores", "parallelism": 4, "fleets": {"1000": fleet(floor)}})
    table = [line.split(" | ") for line in text.splitlines() if line.startswith("| 1,000 |")]
    return {cells[1]: cells[2:] for cells in table}


def test_ratios_to_both_floors_and_the_shape_run():
    r = rows(floor=True)
    assert r["DAG, targets_per_unit=auto"][2:4] == ["0.75", "3.00"]  # wall / blob-store floor, wall / physical
    assert r["DAG, targets_per_unit=auto"][-3:-1] == ["-10.0", "13.0"]  # (DAG - floor) / T in ms, wall and CPU
    assert r["Airflow alone: no-op DAG of the same shape (4 mapped tasks)"][1:4] == ["9.5", "0.24", "0.95"]


def test_without_the_blob_store_floor_its_ratios_are_dashes_and_the_physical_ones_stay():
    r = rows(floor=False)
    assert not any(what.startswith("floor") for what in r)
    assert r["DAG, targets_per_unit=auto"][2:4] == ["-", "3.00"]
    assert r["DAG, targets_per_unit=auto"][-3:-1] == ["-", "-"]
    assert r["physical floor (SQL read, local models and files; 1 process)"][2:4] == ["-", "1.00"]
