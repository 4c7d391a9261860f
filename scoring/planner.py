"""Plan a scoring run: duration, node-minutes and cost for a given batching, and what to choose.

CLI::

    python -m batch_scoring.scoring.planner --targets 10000 --targets-per-job 100 --max-nodes 4 \\
        --node-startup 300 --job-overhead 60 --per-target 0.01 --vm-price 0.20 --period 3600
    python -m batch_scoring.scoring.planner --mode local --targets 1000 --targets-per-job 10 --workers 2 \\
        --job-overhead 1.6 --per-target 0.025 --run-overhead 12 --run-per-target 0.003

The model (every quantity in seconds; a "slot" runs one job at a time)::

    tpj   = targets per job, raised if needed so that jobs <= max_jobs (Airflow's
            max_map_length, 1024): tpj = max(tpj, ceil(targets / max_jobs))
    jobs  = ceil(targets / tpj)
    job   = job_overhead + tpj * per_target          (the longest job: a full one)
    slots = max_nodes * jobs_per_node                (azureml)   |  workers (local)
    nodes = min(max_nodes, ceil(jobs / jobs_per_node))   nodes the run actually scales to
    waves = ceil(jobs / slots)
    busy  = waves * job                              (jobs of a wave run side by side)

    azureml, scale-to-zero (min_instances=0, every run starts cold):
        duration     = node_startup + busy
        node_seconds = nodes * (node_startup + busy + idle)   billed from allocation
                       until the idle timeout after the last job (an upper bound:
                       a node whose last wave is empty goes idle earlier)
    azureml, warm (nodes already up, e.g. min_instances=nodes or idle >= the gap):
        duration     = busy
        node_seconds = nodes * period                 the nodes are billed round the clock
    run   = run_overhead + run_per_target * targets  the run's own steps around the jobs
    local (LocalExecutor on one machine): duration = run + busy, no cost.
    cost = node_seconds / 3600 * vm_price_per_hour

Assumptions: jobs are independent and equal-sized; all nodes of a cold
cluster come up together (Azure provisions them in parallel; node_startup is
allocation + image pull + job preparation of the first job on a node, the
dominant term is minutes); job_overhead is the fixed cost of one job once a
node is up (scheduling, mounting, Python start and imports, a mapped Airflow
task's own bookkeeping), per_target the variable cost of one target inside a
job (download its model, score, write: milliseconds). The run-level fixed work
(freshness sensor, snapshot, collector, scheduling) is ``run_overhead`` plus
``run_per_target`` per target: the snapshot's SQL read and the collector's
listing grow with the fleet, and they run before and after the jobs, not
beside them. The azureml durations include it too. The defaults for
Azure ML are typical published magnitudes, not measurements: measure yours
(a job's ``Preparing``/``Running`` timestamps in studio) and pass them.

Recommendation: among targets-per-job candidates and 1..max_nodes nodes, the
cheapest cold plan that finishes within the deadline (default: the schedule
period), ties to the fastest; with one wave it uses ``tpj = ceil(targets /
(nodes * jobs_per_node))``, so every node gets one job and the per-job
overhead is paid once per slot. Idle time: keeping nodes up through the gap
between runs (gap = period - duration) costs ``nodes * gap``; scaling to zero
costs ``nodes * (idle + node_startup)`` and ``node_startup`` of latency. So
warm is cheaper when ``gap < idle_min + node_startup``: then set
``idle_time_before_scale_down`` above the gap; otherwise scale to zero with a
short idle time (``idle_min``, default 120 s).

Memory (when ``node_memory_gib`` is given): a job holds its targets' rows and
predictions, about ``window_bytes`` per target and window (windows = period / 5
minutes), so a job may take at most ``max_targets_per_job`` =
``MEMORY_SHARE * memory / (window_bytes * windows)`` targets, where memory is a
node's (azureml: one job per node) or, local, what one scoring task may use (a
worker's memory over the tasks it runs at once). ``auto_targets_per_unit`` and
the recommendation keep to it (``fits_memory`` says whether any plan did). The
default ``window_bytes`` is measured: ``bench.physical`` peaked at 1,880 MiB for
10,000 targets x 288 windows, 333 MiB of which is the interpreter and libraries
(its 20-target run), so (1,880 - 333) MiB / 2,880,000 = 563 bytes. ``MEMORY_SHARE``
(0.8: the rest for the OS and the job's runtime) is our choice, not a measurement.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass

from batch_scoring.scoring.cli import make_parser

MAX_MAP_LENGTH = 1024
WINDOW_BYTES = 563.0  # peak bytes per target-window of a scoring job (bench.physical, see the module docstring)
MEMORY_SHARE = 0.8  # of a node's memory a job may use


@dataclass(frozen=True)
class Params:
    """What the plan is estimated for: the target count and the cost model's assumptions.

    Times in seconds (``node_startup``, ``job_overhead``, ``per_target``,
    ``idle``, ``period``, ``run_overhead``, ``run_per_target``), ``vm_price`` per
    node-hour, ``mode`` ``azureml`` or ``local`` (``workers`` task slots);
    ``max_jobs`` caps the mapped jobs of one run; ``node_memory_gib`` (0: not modelled) and
    ``window_bytes`` bound a job's targets (:func:`max_targets_per_job`).
    """
    targets: int
    targets_per_job: int = 1
    max_nodes: int = 4
    node_startup: float = 300.0  # s, cold node to first job running
    job_overhead: float = 60.0  # s per job once the node is up
    per_target: float = 0.01  # s per target inside a job
    vm_price: float = 0.20  # per node-hour
    idle: float = 120.0  # s, idle_time_before_scale_down
    period: float = 3600.0  # s between scheduled runs
    jobs_per_node: int = 1
    max_jobs: int = MAX_MAP_LENGTH
    mode: str = "azureml"  # or "local"
    workers: int = 4  # local: task slots (parallelism)
    run_overhead: float = 0.0  # s, fixed per run (sensor, snapshot, collect)
    run_per_target: float = 0.0  # s per target in the run's serial steps (snapshot's SQL read, collector)
    node_memory_gib: float = 0.0  # GiB a job may hold: a node's (azureml), one task's (local); 0: not modelled
    window_bytes: float = WINDOW_BYTES  # peak bytes of a job per target and window


@dataclass(frozen=True)
class Estimate:
    """One plan's estimate: the job split, node and slot counts, waves, one job's seconds, run duration (s)
    from a cold and a warm cluster, node-seconds and cost (``vm_price`` units) per run cold and per period warm,
    and the share of job time that is per-job overhead (0..1).
    """
    targets_per_job: int
    jobs: int
    nodes: int
    slots: int
    waves: int
    job_seconds: float
    duration_cold: float
    duration_warm: float
    node_seconds_cold: float
    node_seconds_warm: float
    cost_cold: float
    cost_warm: float
    overhead_fraction: float  # share of job-seconds that is per-job overhead


def effective_targets_per_job(targets: int, targets_per_job: int, max_jobs: int = MAX_MAP_LENGTH) -> int:
    """Targets per job after growing it so that no run maps more than ``max_jobs`` jobs."""
    if targets <= 0:
        return max(1, targets_per_job)
    return max(1, int(targets_per_job), math.ceil(targets / max_jobs))


def max_targets_per_job(p: Params) -> int | None:
    """The most targets one job's memory holds (see the module docstring), at least 1; ``None`` when
    ``p.node_memory_gib`` is 0 (not modelled)."""
    from batch_scoring.scoring.config import WINDOW_MINUTES

    if p.node_memory_gib <= 0:
        return None
    windows = max(1, math.ceil(p.period / (WINDOW_MINUTES * 60)))
    return max(1, int(MEMORY_SHARE * p.node_memory_gib * 2**30 // (p.window_bytes * windows)))


def estimate(p: Params) -> Estimate:
    """The ``Estimate`` of running ``p.targets`` targets under ``p``'s assumptions.

    Targets per job grow so that no run maps more than ``p.max_jobs`` jobs;
    jobs run in waves of ``slots`` (nodes x jobs per node, or local workers).
    Local runs have no node cost (zeros). Zero targets give zero jobs.
    """
    tpj = effective_targets_per_job(p.targets, p.targets_per_job, p.max_jobs)
    jobs = math.ceil(p.targets / tpj) if p.targets > 0 else 0
    job = p.job_overhead + min(tpj, p.targets) * p.per_target
    if p.mode == "local":
        slots = max(1, p.workers)
        nodes = 1
    else:
        slots = max(1, p.max_nodes * p.jobs_per_node)
        nodes = min(p.max_nodes, math.ceil(jobs / p.jobs_per_node)) if jobs else 0
    waves = math.ceil(jobs / slots) if jobs else 0
    busy = waves * job
    total_job_seconds = jobs * p.job_overhead + p.targets * p.per_target
    overhead_fraction = (jobs * p.job_overhead / total_job_seconds) if total_job_seconds else 0.0
    run = p.run_overhead + p.run_per_target * max(0, p.targets)
    if p.mode == "local":
        duration = run + busy
        return Estimate(tpj, jobs, nodes, slots, waves, job, duration, duration, 0.0, 0.0, 0.0, 0.0, overhead_fraction)
    duration_cold = run + p.node_startup + busy
    duration_warm = run + busy
    ns_cold = nodes * (p.node_startup + busy + p.idle)
    ns_warm = nodes * p.period
    price = p.vm_price / 3600.0
    return Estimate(tpj, jobs, nodes, slots, waves, job, duration_cold, duration_warm, ns_cold, ns_warm,
                    ns_cold * price, ns_warm * price, overhead_fraction)


def auto_targets_per_unit(p: Params, max_unit_seconds: float = math.inf) -> int:
    """Targets per unit for ``targets_per_unit="auto"``: the size whose :func:`estimate` is the shortest run.

    Candidates are the smallest sizes giving 1, 2, 3, ... waves over ``p``'s slots (``ceil(targets / (waves *
    slots))``), kept when one unit's modelled time (``job_overhead + size * per_target``, seconds) is at most
    ``max_unit_seconds`` (a failed unit is retried whole: the cap bounds what a retry redoes) and at most
    :func:`max_targets_per_job` targets when memory is modelled (memory first: a unit over it fails, one
    over the time cap only retries more); ties go to the smaller size (more units: finer retries and more
    tasks to look at). With a positive per-unit overhead the model's optimum is one wave,
    ``ceil(targets / slots)``, unless a cap asks for more. The size is grown so that no run maps more than
    ``p.max_jobs`` units (that growth wins over both caps). Returns 1 for no targets. The DAG's ``auto``
    and :func:`recommend` both choose through this function.
    """
    if p.targets <= 0:
        return 1
    slots = max(1, p.workers if p.mode == "local" else p.max_nodes * p.jobs_per_node)
    sizes = sorted({math.ceil(p.targets / (waves * slots)) for waves in range(1, math.ceil(p.targets / slots) + 1)})
    sizes = [effective_targets_per_job(p.targets, k, p.max_jobs) for k in sizes]
    cap = max_targets_per_job(p)
    fitting = [k for k in sizes if cap is None or k <= cap] or [min(sizes)]
    within = [k for k in fitting if p.job_overhead + k * p.per_target <= max_unit_seconds] or [min(fitting)]
    return min(within, key=lambda k: (estimate(Params(**{**asdict(p), "targets_per_job": k})).duration_cold, k))


def idle_advice(p: Params, duration: float, nodes: int, idle_min: float = 120.0) -> dict:
    """Scale to zero or keep warm between runs, and the idle time to set (see the module docstring)."""
    gap = max(0.0, p.period - duration)
    warm_cost = nodes * gap
    cold_cost = nodes * (idle_min + p.node_startup)
    if gap < idle_min + p.node_startup:
        return {"policy": "keep warm", "idle_seconds": math.ceil(gap) + 60, "gap_seconds": gap,
                "node_seconds_between_runs": warm_cost,
                "why": f"the gap between runs ({gap:.0f}s) is shorter than idle + node start-up "
                       f"({idle_min + p.node_startup:.0f}s): idling through it is cheaper and saves the start-up"}
    return {"policy": "scale to zero", "idle_seconds": idle_min, "gap_seconds": gap,
            "node_seconds_between_runs": cold_cost,
            "why": f"the gap between runs ({gap:.0f}s) exceeds idle + node start-up ({idle_min + p.node_startup:.0f}s): "
                   f"release the nodes after {idle_min:.0f}s idle"}


def recommend(p: Params, deadline: float | None = None) -> dict:
    """Cheapest cold plan (nodes, targets per job) finishing within ``deadline`` (default: the period), among
    those whose jobs fit a node's memory when it is modelled (then ``max_targets_per_job`` and
    ``fits_memory`` are in the result)."""
    deadline = p.period if deadline is None else deadline
    candidates = []
    max_nodes = 1 if p.mode == "local" else max(1, p.max_nodes)
    for nodes in range(1, max_nodes + 1):
        slots = (p.workers if p.mode == "local" else nodes * p.jobs_per_node)
        auto = auto_targets_per_unit(Params(**{**asdict(p), "max_nodes": nodes}))
        cap = max_targets_per_job(p)  # with a cap: the fewest jobs that keep to it, of equal size
        even = {math.ceil(p.targets / math.ceil(p.targets / cap))} if cap and p.targets > 0 else set()
        for tpj in sorted({1, 10, 100, 1000, math.ceil(p.targets / max(1, slots)), auto} | even):
            e = estimate(Params(**{**asdict(p), "max_nodes": nodes, "targets_per_job": tpj}))
            candidates.append((e, nodes))
    cap = max_targets_per_job(p)
    fitting = [c for c in candidates if cap is None or c[0].targets_per_job <= cap]
    candidates = fitting or candidates  # none fits (max_jobs forces bigger jobs): the plans as they are
    feasible = [(e, n) for e, n in candidates if e.duration_cold <= deadline]
    pool = feasible or candidates
    best, nodes = min(pool, key=lambda c: (c[0].cost_cold, c[0].duration_cold) if feasible else (c[0].duration_cold, c[0].cost_cold))
    out = {"max_nodes": nodes, "targets_per_job": best.targets_per_job, "meets_deadline": bool(feasible),
           "deadline_seconds": deadline, "estimate": asdict(best)}
    if cap is not None:
        out["max_targets_per_job"], out["fits_memory"] = cap, bool(fitting)
    if p.mode != "local":
        out["idle"] = idle_advice(p, best.duration_cold, best.nodes)
    return out


def _fmt(e: Estimate, mode: str) -> str:
    if mode == "local":
        return (f"{e.jobs} tasks of {e.targets_per_job} targets, {e.slots} workers, {e.waves} wave(s) of "
                f"{e.job_seconds:.1f}s: run {e.duration_cold:.1f}s (overhead {e.overhead_fraction:.0%} of task time)")
    return (f"{e.jobs} jobs of {e.targets_per_job} targets on {e.nodes} node(s), {e.waves} wave(s) of {e.job_seconds:.1f}s\n"
            f"  scale-to-zero: run {e.duration_cold / 60:.1f} min, {e.node_seconds_cold / 60:.1f} node-min, cost {e.cost_cold:.3f}\n"
            f"  warm cluster:  run {e.duration_warm / 60:.1f} min, {e.node_seconds_warm / 60:.1f} node-min per period, cost {e.cost_warm:.3f}\n"
            f"  per-job overhead is {e.overhead_fraction:.0%} of job time")


def main(argv=None) -> int:
    """Run the planner CLI on ``argv``: print the estimate and the recommended plan (or JSON with ``--json``).

    Returns 0; usage errors (including negative or zero counts) exit 2 via argparse.
    """
    parser = make_parser("python -m batch_scoring.scoring.planner", __doc__.splitlines()[0],
                         epilog="Model and assumptions: see the module docstring (python -c 'import batch_scoring.scoring.planner; help(batch_scoring.scoring.planner)').")
    d = Params(targets=0)
    parser.add_argument("--targets", type=int, required=True)
    parser.add_argument("--targets-per-job", type=int, default=d.targets_per_job)
    parser.add_argument("--max-nodes", type=int, default=d.max_nodes)
    parser.add_argument("--node-startup", type=float, default=d.node_startup, help="seconds (cold node to first job)")
    parser.add_argument("--job-overhead", type=float, default=d.job_overhead, help="seconds per job")
    parser.add_argument("--per-target", type=float, default=d.per_target, help="seconds per target inside a job")
    parser.add_argument("--vm-price", type=float, default=d.vm_price, help="price per node-hour")
    parser.add_argument("--idle", type=float, default=d.idle, help="idle_time_before_scale_down, seconds")
    parser.add_argument("--period", type=float, default=d.period, help="seconds between runs (the schedule)")
    parser.add_argument("--deadline", type=float, help="seconds a run may take (default: the period)")
    parser.add_argument("--jobs-per-node", type=int, default=d.jobs_per_node)
    parser.add_argument("--max-jobs", type=int, default=d.max_jobs, help="max_map_length")
    parser.add_argument("--mode", choices=("azureml", "local"), default=d.mode)
    parser.add_argument("--workers", type=int, default=d.workers, help="local: parallel task slots")
    parser.add_argument("--run-overhead", type=float, default=d.run_overhead, help="seconds per run outside the jobs")
    parser.add_argument("--run-per-target", type=float, default=d.run_per_target,
                        help="seconds per target in the run's serial steps (snapshot, collector)")
    parser.add_argument("--node-memory-gib", type=float, default=d.node_memory_gib,
                        help="a node's memory in GiB (local: what one task may use); jobs are kept small enough for it "
                             "(default: not modelled)")
    parser.add_argument("--window-bytes", type=float, default=d.window_bytes,
                        help="a job's peak bytes per target and window (default: measured, see the module docstring)")
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args(argv)
    if a.targets < 0 or a.targets_per_job < 1 or a.max_nodes < 1 or a.jobs_per_node < 1 or a.workers < 1:
        parser.error("targets >= 0; targets-per-job, max-nodes, jobs-per-node, workers >= 1")
    p = Params(a.targets, a.targets_per_job, a.max_nodes, a.node_startup, a.job_overhead, a.per_target, a.vm_price,
               a.idle, a.period, a.jobs_per_node, a.max_jobs, a.mode, a.workers, a.run_overhead, a.run_per_target,
               a.node_memory_gib, a.window_bytes)
    e = estimate(p)
    rec = recommend(p, a.deadline)
    if a.json:
        print(json.dumps({"params": asdict(p), "estimate": asdict(e), "recommendation": rec}, indent=2))
        return 0
    print(f"estimate for {a.targets} targets, {a.targets_per_job} per job ({a.mode}):\n  " + _fmt(e, a.mode))
    r = Estimate(**rec["estimate"])
    where = f", {a.workers} workers" if a.mode == "local" else f", max nodes {rec['max_nodes']}"
    print(f"recommended: targets_per_unit={rec['targets_per_job']}{where}"
          f"{'' if rec['meets_deadline'] else ' (no plan meets the deadline: fastest shown)'}\n  " + _fmt(r, a.mode))
    if "fits_memory" in rec:
        print(f"  memory: at most {rec['max_targets_per_job']} targets per job fit {a.node_memory_gib:g} GiB"
              + ("" if rec["fits_memory"] else f" (no plan keeps to it within max_jobs {a.max_jobs})"))
    if "idle" in rec:
        print(f"  between runs: {rec['idle']['policy']}, idle_time_before_scale_down={rec['idle']['idle_seconds']}s "
              f"({rec['idle']['why']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
