"""`python -m bench.executors`: the same fleet through CeleryExecutor (two workers) and LocalExecutor, in one run.

Issue 13. Two production topologies (``devstack.topology.Topology``, from the
installed wheel in a clean venv, settings of ``compose/airflow.env``) run side by
side under ``.local/bench/executors/<executor>``, each with its own ports,
PostgreSQL (Airflow's metadata DB and the ``sensors`` aggregates over ODBC),
Redis and Azurite:

* ``celery``: CeleryExecutor, two Celery workers of concurrency 4 (8 task slots);
* ``local``: ``AIRFLOW__CORE__EXECUTOR=LocalExecutor``, no Celery worker, the
  file's parallelism 8 (the same 8 task slots, run by the scheduler's workers).
  Its Redis runs too, unused, so the two differ in the executor only.

Both get :func:`bench.run.bench_settings` (daily schedule, retries 0, no
scheduler cron) and the same fleet (:func:`bench.run.build_world`, same seeds:
the same aggregates, models and day). Runs are sequential, never concurrent:
per repetition and mode one run on each topology, the order alternating
(ABBA: celery-local, local-celery, ...) so a drift of the machine's load falls
on both alike; one warm-up run per topology first (reported, left out of the
means). A run is :func:`bench.run.run_dag_mode` (trigger, wait, read task
instances and the collector's manifest); reads of the REST API are retried on
time-outs (:func:`patient_api`) and a run left by an error is waited for and
deleted before the next (:func:`clear_runs`). Measured per run: wall and Airflow's start -> end
(s), CPU-s of the Airflow processes (api-server, scheduler, dag-processor,
triggerer, workers, with their reaped task processes: ``bench.procs``), CPU-s
of PostgreSQL + Redis and of Azurite apart, sampled peak RSS of the Airflow
processes, score tasks, validated targets, the 1-minute load average before
the run. Results: ``.local/bench/executors/results.json`` and the section of
``BENCHMARKS.md`` between the ``bench:executors`` markers.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from statistics import mean

from bench.report import write_section
from bench.run import DAY, DAG_ID, WORK as BENCH_WORK, bench_settings, build_world, idle_cpu, log, measure_floor, \
    run_dag_mode
from devstack.services import REPO

WORK = BENCH_WORK / "executors"
MARK_BEGIN, MARK_END = "<!-- bench:executors:begin -->", "<!-- bench:executors:end -->"
PARALLELISM = 8  # compose/airflow.env: AIRFLOW__CORE__PARALLELISM=8 = 2 workers x concurrency 4
# executor -> (Celery workers, settings over compose/airflow.env besides bench_settings)
EXECUTORS = {
    "celery": (2, {}),
    "local": (0, {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}),
}


def patient_api(port: int, password: str):
    """A :class:`devstack.standalone.AirflowApi` whose reads survive a slow api-server on a loaded machine:
    a GET that times out (30 s) or finds nothing listening is tried again, up to 10 times, 5 s apart.
    Writes are not repeated (a timed-out trigger may have created its run: :func:`clear_runs` removes it)."""
    import urllib.error

    from devstack.standalone import AirflowApi

    class PatientApi(AirflowApi):
        def _request(self, method, path, body=None, auth=True, attempts=None):
            for i in range(10):
                try:
                    return super()._request(method, path, body, auth, attempts)
                except urllib.error.HTTPError:
                    raise
                except OSError:
                    if method != "GET" or i == 9:
                        raise
                    time.sleep(5)

    return PatientApi(port, password=password, attempts=6)


def clear_runs(api, timeout: float = 1800) -> int:
    """Wait for every run of the DAG to finish, then delete it (the next run reuses the logical date).
    Returns the number of runs deleted; ``TimeoutError`` after ``timeout`` s per run."""
    runs = api.dag_runs(DAG_ID)
    for r in runs:
        api.wait_for_run(DAG_ID, r["dag_run_id"], timeout, every=2)
        api.delete_dag_run(DAG_ID, r["dag_run_id"])
    return len(runs)


class Side:
    """One topology of the comparison: its :class:`devstack.topology.Topology`, blob store and fleet folder."""

    def __init__(self, name: str, venv: Path):
        from devstack.topology import Topology

        workers, overrides = EXECUTORS[name]
        self.name, self.state = name, WORK / name
        shutil.rmtree(self.state, ignore_errors=True)
        self.state.mkdir(parents=True)
        self.state.chmod(0o755)  # PostgreSQL runs as its own user when we are root
        self.workdir = self.state / "fleet"
        self.workdir.mkdir()
        self.topo = Topology(self.state, venv, workers=workers, durable=False,
                             overrides={**bench_settings(PARALLELISM), **overrides})
        self.topo.api = patient_api(self.topo.ports.api, self.topo.secrets["admin_password"])
        self.store = None

    def start(self) -> None:
        """Start the topology (``TopologyError``/``TimeoutError`` if a process does not come up) and unpause the DAG."""
        from batch_scoring.hooks.blob_storage import BlobStore

        self.topo.start()
        self.store = BlobStore.from_connection_string(self.topo.blob_conn_str)
        self.topo.api.unpause(DAG_ID)

    def airflow_pids(self) -> list[int]:
        """The Airflow processes: api-server, scheduler, dag-processor, triggerer and the Celery workers."""
        return [p.pid for n, p in self.topo.procs.items() if n not in ("redis", "azurite")]

    def service_pids(self) -> list[int]:
        """PostgreSQL's postmaster (its backends are its children) and Redis."""
        pid_file = self.topo.pg.base_dir / "data" / "postmaster.pid"
        return [int(pid_file.read_text().split()[0]), self.topo.procs["redis"].pid]


def order(modes: list[str], repeats: int) -> list[tuple[int, str, str]]:
    """``(repetition, mode, executor)`` in run order: per repetition and mode both executors, the first of
    the pair alternating from one pair to the next (celery-local, local-celery, ...)."""
    out, k = [], 0
    for rep in range(1, repeats + 1):
        for mode in modes:
            pair = ["celery", "local"] if k % 2 == 0 else ["local", "celery"]
            out += [(rep, mode, ex) for ex in pair]
            k += 1
    return out


def measure(side: Side, settings, interval, T: int, mode: str, rep, timeout: float) -> dict:
    """One run of ``mode`` on ``side`` (:func:`bench.run.run_dag_mode`) plus the CPU-s of PostgreSQL + Redis
    (``services_cpu``), the 1-minute load average before it (``load1``), ``executor`` and ``rep``."""
    from bench.procs import TreeMeter

    side.topo.check_alive()
    left = clear_runs(side.topo.api)  # a run left by a failed measurement would hold the logical date
    if left:
        log(f"{side.name}: {left} run(s) left by an earlier error finished and deleted")
    load1 = os.getloadavg()[0]
    try:
        with TreeMeter(side.service_pids()) as sv:
            m = run_dag_mode(side.topo.api, side.store, settings, interval, T, mode, side.airflow_pids(),
                             side.topo.procs["azurite"].pid, timeout)
        m["services_cpu"] = sv.cpu
    except Exception as exc:  # record it and go on with the other runs
        m = {"mode": str(mode), "error": f"{type(exc).__name__}: {exc}"}
    m.update(executor=side.name, rep=rep, load1=load1)
    log(f"{side.name} rep {rep} targets_per_unit={mode}: " + json.dumps(
        {k: (round(v, 2) if isinstance(v, float) else v) for k, v in m.items() if k != "stage_seconds"}))
    return m


# --- report --------------------------------------------------------------------------

def _f(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def summary(results: dict) -> list[dict]:
    """Per mode: the means over the measured (not warm-up) successful runs of each executor, the ratio
    celery/local of those means, and the range of the per-repetition ratios of wall (paired runs)."""
    out = []
    runs = [r for r in results["runs"] if r["rep"] != "warm-up" and r.get("state") == "success"]
    for mode in results["modes"]:
        row = {"mode": mode}
        for key in ("wall", "run_seconds", "cpu", "services_cpu", "azurite_cpu"):
            c = [r[key] for r in runs if r["mode"] == mode and r["executor"] == "celery" and r.get(key) is not None]
            lo = [r[key] for r in runs if r["mode"] == mode and r["executor"] == "local" and r.get(key) is not None]
            row[key] = (mean(c) if c else None, mean(lo) if lo else None,
                        mean(c) / mean(lo) if c and lo and mean(lo) else None)
        pairs = {}
        for r in runs:
            if r["mode"] == mode:
                pairs.setdefault(r["rep"], {})[r["executor"]] = r["wall"]
        ratios = [p["celery"] / p["local"] for p in pairs.values() if len(p) == 2]
        row["wall_pair_ratios"] = (min(ratios), max(ratios)) if ratios else None
        out.append(row)
    return out


def render(results: dict) -> str:
    """The markdown of ``results`` (the ``results.json`` shape): every run, then the means and ratios per mode."""
    T = results["targets"]
    lines = [
        f"Run {results['started']} to {results.get('ended', '?')} on {results['machine']}; T = {T:,} targets x 288 "
        f"windows; 8 task slots each; {results['repeats']} repetitions + 1 warm-up per executor.",
        f"Machine load (`uptime`) at the start: {results['uptime_start']}; at the end: {results.get('uptime_end', '?')}. "
        f"Kernel `sched_autogroup_enabled`: {results.get('autogroup', '?')}.",
        "",
        "| # | repetition | targets_per_unit | executor | state | wall s | Airflow run s | CPU s Airflow "
        "| CPU s PostgreSQL+Redis | CPU s Azurite | peak RSS MiB Airflow | score tasks | validated | load (1 min) |",
        "|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(results["runs"], 1):
        if "error" in r:
            lines.append(f"| {i} | {r['rep']} | {r['mode']} | {r['executor']} | error | | | | | | | | | "
                         f"{r['load1']:.1f} {r['error'][:80]} |")
            continue
        lines.append(
            f"| {i} | {r['rep']} | {r['mode']} | {r['executor']} | {r['state']} | {_f(r['wall'])} | {_f(r['run_seconds'])} "
            f"| {_f(r['cpu'])} | {_f(r['services_cpu'])} | {_f(r['azurite_cpu'])} | {r['peak_rss'] / 2**20:,.0f} "
            f"| {r['score_tasks']} | {r['validated']} | {r['load1']:.1f} |")
    lines += [
        "",
        "Means over the repetitions (warm-ups excluded) and the ratio Celery / Local of the means; last "
        "column: the wall ratio of each repetition's pair.",
        "",
        "| targets_per_unit | wall s Celery | wall s Local | ratio | run s Celery | run s Local | ratio "
        "| CPU s Airflow Celery | CPU s Airflow Local | ratio | CPU s PG+Redis Celery | CPU s PG+Redis Local "
        "| wall ratio per pair |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in summary(results):
        w, rs, c, sv = s["wall"], s["run_seconds"], s["cpu"], s["services_cpu"]
        pr = s["wall_pair_ratios"]
        lines.append(
            f"| {s['mode']} | {_f(w[0])} | {_f(w[1])} | {_f(w[2], 2)} | {_f(rs[0])} | {_f(rs[1])} | {_f(rs[2], 2)} "
            f"| {_f(c[0])} | {_f(c[1])} | {_f(c[2], 2)} | {_f(sv[0])} | {_f(sv[1])} "
            f"| {'-' if pr is None else f'{pr[0]:.2f} - {pr[1]:.2f}'} |")
    lines.append("")
    sides = results["sides"]
    lines.append("Idle CPU of the Airflow processes before the runs: " + "; ".join(
        f"{n} {s['idle_cpu_per_s']:.2f} CPU-s/s" for n, s in sides.items() if "idle_cpu_per_s" in s) + ".")
    floors = {n: s["floor"] for n, s in sides.items() if s.get("floor")}
    if floors:
        lines.append("")
        lines.append("Floor (`bench/floor.py`: the same work in one process, one thread, against that topology's "
                     "Azurite): " + "; ".join(
                         f"{n} side {f['wall']:.1f} s wall, {f['cpu']:.1f} CPU-s (Azurite {f['azurite_cpu']:.1f} CPU-s), "
                         f"{f['ok']} targets" for n, f in floors.items()) + ".")
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------

def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _autogroup() -> str:
    """``1``: the kernel shares CPU fairly between sessions (each topology process is one), then between
    the processes of a session; read for the record, since it weighs on wall times under load."""
    path = Path("/proc/sys/kernel/sched_autogroup_enabled")
    return path.read_text().strip() if path.exists() else "n/a"


def main(argv=None) -> int:
    """`python -m bench.executors`; returns 0 when every measured run succeeded, else 1."""
    from batch_scoring.scoring.cli import make_parser

    parser = make_parser("python -m bench.executors", __doc__)
    parser.add_argument("--targets", type=int, default=1000, help="fleet size T")
    parser.add_argument("--modes", nargs="+", default=["auto", "100"], help="targets_per_unit values")
    parser.add_argument("--repeats", type=int, default=2, help="measured runs per executor and mode")
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up run on each topology")
    parser.add_argument("--no-floor", action="store_true", help="skip the single-process floor on each topology")
    parser.add_argument("--run-timeout", type=float, default=3600, help="seconds per DAG run")
    parser.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md", help="file whose executors section is replaced")
    parser.add_argument("--no-markdown", action="store_true")
    parser.add_argument("--render-only", action="store_true", help="only re-render .local/bench/executors/results.json")
    args = parser.parse_args(argv)
    if args.render_only:
        write_section(args.markdown, render(json.loads((WORK / "results.json").read_text())), MARK_BEGIN, MARK_END)
        return 0

    from batch_scoring.config import settings as get_settings
    from batch_scoring.scoring.layout import Interval
    from devstack.wheel_venv import cached_venv

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop both topologies on kill too
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # build_world's 16 upload threads
    WORK.mkdir(parents=True, exist_ok=True)
    settings, interval, T = get_settings(), Interval(DAY, DAY + dt.timedelta(days=1)), args.targets
    results = {"started": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{os.cpu_count()} cores, {platform.python_version()}",
               "uptime_start": _uptime(), "autogroup": _autogroup(), "targets": T, "modes": args.modes, "repeats": args.repeats,
               "sides": {}, "runs": []}

    def save():
        (WORK / "results.json").write_text(json.dumps(results, indent=2))

    t0 = time.monotonic()
    venv = cached_venv(WORK)  # the wheel and its clean venv (cached), shared by both topologies
    log(f"venv ready in {time.monotonic() - t0:.0f} s: {venv}")
    with ExitStack() as stack:
        sides = {}
        for name in EXECUTORS:  # one after the other: start-up is the heaviest part for the machine
            side = Side(name, venv)
            stack.callback(side.topo.stop)
            side.start()
            sides[name] = side
            results["sides"][name] = {"timings": side.topo.timings}
            log(f"{name}: topology up ({side.topo.timings}); logs in {side.topo.logs}")
        for name, side in sides.items():
            build_world(T, side.store, side.topo.sensors_odbc, side.workdir, settings)
            if not args.no_floor:
                f = measure_floor(side.store, side.topo.blob_conn_str, side.topo.sensors_odbc, settings, interval,
                                  side.workdir, side.topo.procs["azurite"].pid)
                results["sides"][name]["floor"] = f
                log(f"{name}: floor {f['wall']:.1f}s wall, {f['cpu']:.1f}s CPU, {f['ok']} targets")
            save()
        for name, side in sides.items():
            results["sides"][name]["idle_cpu_per_s"] = idle_cpu(side.airflow_pids())
        warm = [] if args.no_warmup else [("warm-up", args.modes[0], n) for n in EXECUTORS]
        for rep, mode, name in warm + order(args.modes, args.repeats):
            results["runs"].append(measure(sides[name], settings, interval, T, mode, rep, args.run_timeout))
            save()
        results["uptime_end"], results["ended"] = _uptime(), time.strftime("%H:%M")
        save()
    log("both topologies stopped")
    print(render(results))
    if not args.no_markdown:
        write_section(args.markdown, render(results), MARK_BEGIN, MARK_END)
    measured = [r for r in results["runs"] if r["rep"] != "warm-up"]
    return 0 if measured and all(r.get("state") == "success" for r in measured) else 1


if __name__ == "__main__":
    sys.exit(main())
