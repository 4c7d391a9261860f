"""Check the planner's local mode against the benchmark: ``python -m bench.calibrate [results.json]``.

Fits the planner's four local unknowns — run overhead R (scheduling latency
and the fixed part of sensor, snapshot and collector), the run's serial time
per target r (snapshot's SQL read, collector's listing), per-task overhead O
and per-target time p inside a task — by least squares on the measured run
times of the fit set (default: every DAG mode at T <= 1,000), with ``workers`` = the CPU count (the tasks are
CPU-bound: measured task durations at parallelism 4 on 2 cores are ~2x a lone
task's), then predicts every measured run with ``scoring.planner.estimate``
and prints a markdown table of predicted vs measured.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from batch_scoring.scoring.cli import make_parser
from batch_scoring.scoring.planner import Params, auto_targets_per_unit, estimate

RESULTS = Path(__file__).resolve().parent.parent / ".local" / "bench" / "results.json"


def _units(T: int, mode: str, n_tasks: int | None) -> int:
    """Targets per task as the run actually used it (auto: from the task count)."""
    if mode == "auto" or not mode.isdigit():
        return math.ceil(T / max(1, n_tasks or 1))
    return int(mode)


def rows(results: dict):
    """(T, mode, targets per task, run seconds) of every successful DAG run in ``results`` (results.json shape)."""
    for T, fleet in results["fleets"].items():
        for m in fleet["dag"]:
            if m.get("state") == "success" and m.get("run_seconds"):
                yield int(T), m["mode"], _units(int(T), m["mode"], m.get("score_tasks")), m["run_seconds"]


def fit(samples, workers: int):
    """Least squares for run = R + r T + waves * (O + k p), waves = ceil(ceil(T/k) / workers)."""
    A, b = [], []
    for T, _mode, k, run in samples:
        waves = math.ceil(math.ceil(T / k) / workers)
        A.append([1.0, T, waves, waves * k])
        b.append(run)
    (R, r, O, p), *_ = np.linalg.lstsq(np.array(A), np.array(b), rcond=None)
    return float(R), float(r), float(O), float(p)


def table(results: dict, fit_max_T: int = 1000, workers: int | None = None) -> str:
    """Fit on the runs with T <= ``fit_max_T``; markdown of the fitted values and predicted vs measured run seconds.

    ``workers`` defaults to the CPU count. Raises ``numpy.linalg.LinAlgError`` if the fit fails.
    """
    workers = workers or os.cpu_count() or 2
    samples = list(rows(results))
    fit_set = [s for s in samples if s[0] <= fit_max_T] or samples
    R, r, O, p = fit(fit_set, workers)
    out = [f"Fitted on the runs with T <= {fit_max_T:,}, workers = {workers}: run overhead R = {R:.1f} s, "
           f"run's serial time per target r = {1000 * r:.2f} ms, per-task overhead O = {O:.2f} s, "
           f"per-target p in a task = {1000 * p:.1f} ms.", "",
           "| T | targets_per_unit | tasks | predicted s | measured s | error | in fit set |", "|---:|---|---:|---:|---:|---:|---|"]
    for T, mode, k, run in samples:
        e = estimate(Params(targets=T, targets_per_job=k, mode="local", workers=workers, job_overhead=O,
                            per_target=p, run_overhead=R, run_per_target=r))
        out.append(f"| {T:,} | {mode} ({k}/task) | {e.jobs} | {e.duration_cold:.1f} | {run:.1f} "
                   f"| {100 * (e.duration_cold - run) / run:+.0f} % | {'yes' if (T, mode, k, run) in fit_set else 'no'} |")
    out += ["", "As settings (what `targets_per_unit=auto` plans with; the fit's slots are its workers):",
            f"BATCH_SCORING_AUTO_SLOTS={workers} BATCH_SCORING_AUTO_TASK_OVERHEAD_SECONDS={max(0.0, O):.2f} "
            f"BATCH_SCORING_AUTO_TARGET_SECONDS={max(p, 1e-4):.4f}"]
    for T in sorted({s[0] for s in samples}):
        k = auto_targets_per_unit(Params(targets=T, mode="local", workers=workers, job_overhead=max(0.0, O),
                                         per_target=max(p, 1e-4)))
        out.append(f"- T={T:,}: auto would take {k:,} targets per unit ({math.ceil(T / k)} units)")
    return "\n".join(out)


def main(argv=None) -> int:
    """`python -m bench.calibrate`: print :func:`table` of a results.json; returns 0."""
    parser = make_parser("python -m bench.calibrate", __doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS)
    parser.add_argument("--fit-max-targets", type=int, default=1000, help="fit on the runs with T up to this")
    parser.add_argument("--workers", type=int)
    args = parser.parse_args(argv)
    print(table(json.loads(args.results.read_text()), args.fit_max_targets, args.workers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
