"""scoring.planner: the arithmetic on hand-computed cases."""
from __future__ import annotations

import json

import pytest

from batch_scoring.scoring.planner import Params, auto_targets_per_unit, effective_targets_per_job, estimate, idle_advice, main, \
    recommend

# 1,000 targets, 100 per job, 4 nodes; a price of 3.6 per node-hour = 0.001 per node-second
BASE = dict(targets=1000, targets_per_job=100, max_nodes=4, node_startup=300, job_overhead=60,
            per_target=0.1, vm_price=3.6, idle=120, period=3600)


def test_azureml_cold_and_warm():
    e = estimate(Params(**BASE))
    # 10 jobs of 60 + 100 * 0.1 = 70 s; 4 slots -> 3 waves -> 210 s busy
    assert (e.jobs, e.targets_per_job, e.nodes, e.slots, e.waves) == (10, 100, 4, 4, 3)
    assert e.job_seconds == pytest.approx(70)
    assert e.duration_cold == pytest.approx(300 + 210)
    assert e.duration_warm == pytest.approx(210)
    assert e.node_seconds_cold == pytest.approx(4 * (300 + 210 + 120))  # 2,520
    assert e.cost_cold == pytest.approx(2.52)
    assert e.node_seconds_warm == pytest.approx(4 * 3600)
    assert e.cost_warm == pytest.approx(14.4)
    assert e.overhead_fraction == pytest.approx(600 / 700)


def test_fewer_jobs_than_nodes_uses_only_the_nodes_it_needs():
    e = estimate(Params(**{**BASE, "targets_per_job": 500}))
    # 2 jobs of 60 + 50 = 110 s on 2 of the 4 nodes, one wave
    assert (e.jobs, e.nodes, e.waves) == (2, 2, 1)
    assert e.node_seconds_cold == pytest.approx(2 * (300 + 110 + 120))


def test_max_map_length_grows_targets_per_job():
    assert effective_targets_per_job(5000, 1, 1024) == 5  # ceil(5000 / 1024)
    e = estimate(Params(targets=5000, targets_per_job=1))
    assert (e.targets_per_job, e.jobs) == (5, 1000)
    assert effective_targets_per_job(1024, 1, 1024) == 1
    assert effective_targets_per_job(1025, 1, 1024) == 2


def test_local_mode():
    e = estimate(Params(targets=1000, targets_per_job=10, mode="local", workers=2, job_overhead=1.5,
                        per_target=0.02, run_overhead=10))
    # 100 tasks of 1.5 + 0.2 = 1.7 s on 2 workers: 50 waves -> 85 s, + 10 s per run
    assert (e.jobs, e.waves) == (100, 50)
    assert e.duration_cold == pytest.approx(95) and e.duration_warm == pytest.approx(95)
    assert e.cost_cold == 0 and e.node_seconds_cold == 0


def test_idle_advice():
    p = Params(**{**BASE, "period": 600})
    warm = idle_advice(p, duration=510, nodes=4)  # gap 90 s < 120 + 300
    assert warm["policy"] == "keep warm" and warm["idle_seconds"] == 150
    cold = idle_advice(Params(**BASE), duration=510, nodes=4)  # gap 3,090 s
    assert cold["policy"] == "scale to zero" and cold["idle_seconds"] == 120
    assert cold["node_seconds_between_runs"] == pytest.approx(4 * 420)


def test_recommend_cheapest_within_deadline():
    p = Params(**{**BASE, "max_nodes": 2})
    r = recommend(p)  # deadline = period: one node, one job of 1,000 targets: 60 + 100 = 160 s
    assert (r["max_nodes"], r["targets_per_job"], r["meets_deadline"]) == (1, 1000, True)
    assert r["estimate"]["node_seconds_cold"] == pytest.approx(300 + 160 + 120)
    r = recommend(p, deadline=420)  # 1 node: 460 s; 2 nodes x 500 targets: 300 + 110 = 410 s
    assert (r["max_nodes"], r["targets_per_job"], r["meets_deadline"]) == (2, 500, True)
    assert r["estimate"]["cost_cold"] == pytest.approx(2 * (300 + 110 + 120) * 0.001)
    r = recommend(p, deadline=400)  # nothing fits: the fastest plan
    assert (r["max_nodes"], r["targets_per_job"], r["meets_deadline"]) == (2, 500, False)


def test_cli_json(capsys):
    assert main(["--targets", "1000", "--targets-per-job", "100", "--max-nodes", "4", "--node-startup", "300",
                 "--job-overhead", "60", "--per-target", "0.1", "--vm-price", "3.6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["estimate"]["duration_cold"] == pytest.approx(510)
    assert main(["--mode", "local", "--targets", "1000", "--workers", "2", "--job-overhead", "1", "--per-target",
                 "0.025", "--targets-per-job", "100"]) == 0
    out = capsys.readouterr().out
    assert "10 tasks of 100 targets, 2 workers, 5 wave(s) of 3.5s: run 17.5s" in out
    assert "recommended: targets_per_unit=500, 2 workers\n  2 tasks of 500 targets, 2 workers, 1 wave(s)" in out
    assert "node" not in out  # local mode has task slots, no Azure ML nodes


def test_local_mode_run_steps_grow_with_the_fleet():
    e = estimate(Params(targets=1000, targets_per_job=10, mode="local", workers=2, job_overhead=1.5,
                        per_target=0.02, run_overhead=10, run_per_target=0.005))
    # as above, + 5 ms per target of snapshot and collector: 95 + 5 = 100 s
    assert e.duration_cold == pytest.approx(100)
    cold = estimate(Params(**{**BASE, "run_per_target": 0.001}))
    assert cold.duration_cold == pytest.approx(estimate(Params(**BASE)).duration_cold + BASE["targets"] * 0.001)


@pytest.mark.parametrize("targets, mode, slots, overhead, per_target, cap", [
    (1000, "local", 4, 1.0, 0.025, float("inf")),
    (1000, "local", 3, 0.0, 0.025, float("inf")),   # no overhead: every one-wave size ties; the smallest wins
    (997, "local", 4, 2.0, 0.01, 3.0),              # the cap forces several waves
    (500, "azureml", 4, 60.0, 0.01, float("inf")),
    (50, "local", 8, 0.5, 0.2, 1.2),                # the cap allows at most 3 targets per unit
])
def test_auto_is_the_quickest_size_of_all_within_the_cap(targets, mode, slots, overhead, per_target, cap):
    p = Params(targets, mode=mode, workers=slots, max_nodes=slots, job_overhead=overhead, per_target=per_target)

    def run(k):
        return estimate(Params(**{**p.__dict__, "targets_per_job": k})).duration_cold

    k = auto_targets_per_unit(p, cap)
    allowed = [j for j in range(1, targets + 1) if overhead + j * per_target <= cap] or [1]
    assert k in allowed
    best = min(run(j) for j in allowed)
    assert run(k) == pytest.approx(best)
    assert k == min(j for j in allowed if run(j) == pytest.approx(best))  # ties: the smaller size


def test_recommend_considers_auto():
    p = Params(1000, mode="local", workers=3, job_overhead=1.0, per_target=0.025)
    assert recommend(p)["targets_per_job"] == auto_targets_per_unit(p) == 334


def test_memory_bounds_the_targets_of_a_job():
    from batch_scoring.scoring.planner import max_targets_per_job, recommend

    daily = Params(targets=100_000, period=86_400, per_target=0.0027, node_memory_gib=16)
    # 0.8 x 16 GiB / (563 bytes x 288 windows of a day)
    assert max_targets_per_job(daily) == int(0.8 * 16 * 2**30 // (563 * 288)) == 84_763
    rec = recommend(daily)
    assert rec["fits_memory"] and rec["max_targets_per_job"] == 84_763
    assert rec["targets_per_job"] == 50_000 and rec["estimate"]["jobs"] == 2  # the fewest jobs that fit, even
    unbounded = recommend(Params(targets=100_000, period=86_400, per_target=0.0027))
    assert unbounded["targets_per_job"] == 100_000 and "fits_memory" not in unbounded
    hourly = Params(targets=100_000, node_memory_gib=16)  # 12 windows a job-target: one job holds them all
    assert max_targets_per_job(hourly) == 2_034_324 and recommend(hourly)["targets_per_job"] == 100_000
    # local: the memory one task may use, the same rule
    assert max_targets_per_job(Params(targets=10, mode="local", period=86_400, node_memory_gib=16)) == 84_763
    assert max_targets_per_job(Params(targets=10, mode="local")) is None


@pytest.mark.parametrize("mode, memory, expected", [
    ("local", 0.0, 25_000),    # not modelled: one wave of 4 units of 25,000 (about 4 GB each)
    ("local", 4.0, 12_500),    # 4 GiB holds 21,190 targets of a day: two waves of 4 units
    ("local", 0.5, 2_500),     # 0.5 GiB holds 2,648: the first size of 4 x k units under it is 10 waves of 2,500
    ("azureml", 4.0, 12_500),  # 4 nodes of one job each: the same bound per job
])
def test_auto_keeps_a_unit_within_memory(mode, memory, expected):
    from batch_scoring.scoring.planner import max_targets_per_job

    p = Params(100_000, mode=mode, workers=4, max_nodes=4, job_overhead=1.0, per_target=0.0027, period=86_400,
               node_memory_gib=memory)
    k = auto_targets_per_unit(p)
    assert k == expected
    cap = max_targets_per_job(p)
    if cap is not None:
        assert k <= cap
        fitting = [j for j in range(1, 100_001) if j <= cap]  # quickest of every size that fits, ties to the smaller
        runs = {j: estimate(Params(**{**p.__dict__, "targets_per_job": j})).duration_cold for j in fitting[::50] + [k]}
        assert runs[k] == pytest.approx(min(runs.values()))


def test_memory_wins_over_the_time_cap_and_max_jobs_over_both():
    p = Params(1000, mode="local", workers=2, job_overhead=1.0, per_target=0.025, period=86_400, node_memory_gib=0.01)
    # memory: 0.8 x 0.01 GiB / (563 x 288) = 52 targets; a 1.5 s cap would want 20 per unit: both kept
    assert auto_targets_per_unit(p, max_unit_seconds=1.5) == 20
    # a 3 s cap alone would allow 80; memory keeps it to 50 (ceil(1000 / (2 x 10 waves)))
    assert auto_targets_per_unit(p, max_unit_seconds=3.0) == 50
    # at most 4 units: 250 each, over both caps (the only way to map the run)
    assert auto_targets_per_unit(Params(**{**p.__dict__, "max_jobs": 4}), max_unit_seconds=1.5) == 250


def test_when_max_jobs_forces_jobs_over_the_memory_bound_the_plan_says_it_does_not_fit():
    from batch_scoring.scoring.planner import recommend

    rec = recommend(Params(targets=100_000, period=86_400, node_memory_gib=0.01, max_jobs=10))
    assert rec["max_targets_per_job"] == 52 and rec["fits_memory"] is False
    assert rec["targets_per_job"] >= 10_000  # 100,000 targets in at most 10 jobs
