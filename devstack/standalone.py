"""Run ``airflow standalone`` (scheduler, dag-processor, triggerer, api-server) and talk to its REST API.

The one place that starts Airflow and waits on its runs: ``make demo``,
``make airflow``, the benchmark and the test fixtures all go through
:func:`start_ready` / :func:`running_standalone` and :class:`AirflowApi`.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import quote

from devstack.airflow_env import write_local_settings, write_passwords_file
from devstack.services import port_open, stop, wait_for_port, wait_until
from batch_scoring.scoring.times import utc_naive

AIRFLOW = str(Path(sys.executable).parent / "airflow")
FINISHED = ("success", "failed")  # dag run states after which a run no longer changes
# variables of this process that an isolated Airflow must not inherit (its settings come from ``env`` only)
_OWN_SETTINGS = ("AIRFLOW_CONN_", "AIRFLOW__", "AIRFLOW_HOME", "BATCH_SCORING_")


def process_env(env: dict, isolated: bool = False) -> dict[str, str]:
    """The full environment of an Airflow process: this process's, then ``env``, with this venv first on PATH.

    Standalone starts its components as ``airflow ...`` from PATH, hence the venv.
    ``isolated``: drop this process's own Airflow and batch-scoring settings
    (``AIRFLOW__*``, ``AIRFLOW_CONN_*``, ``AIRFLOW_HOME``, ``BATCH_SCORING_*``) first,
    so that only ``env`` configures it (the test session sets some of its own).
    """
    base = {k: v for k, v in os.environ.items() if not (isolated and k.startswith(_OWN_SETTINGS))}
    bin_dir = str(Path(sys.executable).parent)
    return {**base, **env, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}


def airflow_cli(env: dict, *args: str, check: bool = True, isolated: bool = False) -> subprocess.CompletedProcess:
    """Run ``airflow ARGS`` in :func:`process_env` ``(env, isolated)``; output captured as text.

    Raises ``RuntimeError`` with the command's exit code and the end of its
    stderr when it fails and ``check`` is true.
    """
    result = subprocess.run([AIRFLOW, *args], env=process_env(env, isolated), capture_output=True, text=True)
    if check and result.returncode:
        raise RuntimeError(f"airflow {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return result


def api_port_env(port: int) -> dict[str, str]:
    """The API server's port, and where task processes reach its execution API."""
    return {"AIRFLOW__API__PORT": str(port), "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/"}


def start_standalone(env: dict, port: int, log_path: Path, isolated: bool = False,
                     port_timeout: float = 120) -> subprocess.Popen:
    """Migrate the metadata DB of ``env["AIRFLOW_HOME"]`` and start ``airflow standalone`` with its API on ``port``.

    Writes the home's passwords file (``admin``/``admin``) and local settings
    first; output is appended to ``log_path``; the process leads its own
    session (stop it with :func:`stop_standalone`). Returns once the API port
    is open. Raises ``RuntimeError`` if ``port`` is already taken (another
    Airflow, an earlier run left behind: its API would answer in ours' stead), the
    migration fails or the process exits first, ``TimeoutError`` after
    ``port_timeout`` seconds (the process is stopped before either error is raised).
    """
    if port_open(port):
        raise RuntimeError(f"port {port} is already in use on 127.0.0.1, so Airflow's API cannot listen there: "
                           f"stop what holds it (`ss -ltnp 'sport = :{port}'` names the process; an earlier "
                           "`make airflow` or demo left running is the usual one) and try again")
    home = Path(env["AIRFLOW_HOME"])
    write_passwords_file(home)
    write_local_settings(home)
    airflow_cli(env, "db", "migrate", isolated=isolated)
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [AIRFLOW, "standalone"],
        env={**process_env(env, isolated), **api_port_env(port)},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_for_port(port, timeout=port_timeout, proc=proc)
    except BaseException:
        stop_standalone(proc)
        raise
    return proc


def start_ready(env: dict, port: int, log_path: Path, dag_id: str, isolated: bool = False,
                port_timeout: float = 120, ready_timeout: float = 180) -> tuple[subprocess.Popen, "AirflowApi"]:
    """:func:`start_standalone`, then wait until the scheduler is healthy and ``dag_id`` is parsed.

    Returns (the standalone process, an :class:`AirflowApi` on it). On any
    failure the process is stopped and the error raised (``RuntimeError``,
    ``TimeoutError`` after ``ready_timeout`` s per wait, ``urllib.error.HTTPError``).
    """
    proc = start_standalone(env, port, log_path, isolated=isolated, port_timeout=port_timeout)
    try:
        api = AirflowApi(port)
        api.wait_healthy(ready_timeout)
        api.wait_for_dag(dag_id, ready_timeout)
    except BaseException:
        stop_standalone(proc)
        raise
    return proc, api


@contextmanager
def running_standalone(env: dict, port: int, log_path: Path, dag_id: str) -> Iterator[tuple[subprocess.Popen, "AirflowApi"]]:
    """``with running_standalone(...) as (proc, api):`` a :func:`start_ready` standalone, stopped on exit."""
    proc, api = start_ready(env, port, log_path, dag_id)
    try:
        yield proc, api
    finally:
        stop_standalone(proc)


def stop_standalone(proc: subprocess.Popen) -> None:
    """Stop the standalone and every component it started (SIGTERM, SIGKILL after 30 s)."""
    stop(proc, timeout=30)


def run_interval_start(run: dict) -> dt.datetime:
    """A dag run's (REST form) data interval start as naive UTC."""
    return utc_naive(run["data_interval_start"])


def _iso_utc(ts) -> str:
    """A timestamp as the REST API wants it: ISO 8601 UTC with ``Z`` (naive values are taken as UTC)."""
    return utc_naive(ts).strftime("%Y-%m-%dT%H:%M:%SZ")


class AirflowApi:
    """Just enough of the Airflow 3 REST API for the demo, the benchmark and the tests.

    Every call authenticates with a JWT from ``/auth/token`` (simple auth
    manager, ``user``/``password``); answers are the API's JSON, decoded.
    Errors: ``urllib.error.HTTPError`` (4xx at once, 5xx after ``attempts``
    tries, the body's start in its message) and ``OSError`` when nothing listens
    (a GET or DELETE that times out or loses its connection is tried ``attempts`` times first).
    """

    def __init__(self, port: int, user: str = "admin", password: str = "admin", attempts: int = 4,
                 timeout: float = 30.0):
        self.base = f"http://127.0.0.1:{port}"
        self.user, self.password = user, password
        self.attempts = attempts
        self.timeout = timeout  # seconds one answer may take
        self._token = None

    def _request(self, method: str, path: str, body=None, auth: bool = True, attempts: int | None = None):
        """One REST call; 5xx answers are retried, since a SQLite metadata DB can be briefly locked."""
        attempts = attempts or self.attempts
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(1, attempts + 1):
            req = urllib.request.Request(self.base + path, data=data, method=method, headers={"Content-Type": "application/json"})
            if auth:
                req.add_header("Authorization", f"Bearer {self.token()}")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read() or b"null")
            except urllib.error.HTTPError as exc:
                if exc.code < 500 or attempt == attempts:
                    detail = exc.read()[:500].decode(errors="replace")
                    raise urllib.error.HTTPError(exc.url, exc.code, f"{exc.reason}: {detail}", exc.headers, None) from exc
                time.sleep(min(2 * attempt, 6))
            except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
                # a busy api-server (a thousand tasks on two cores) can take over 30 s to answer: ask again,
                # but only where asking twice does no harm (a POST may have been carried out)
                if method not in ("GET", "DELETE") or attempt == attempts:
                    raise
                time.sleep(min(2 * attempt, 6))

    def token(self) -> str:
        """The bearer token (fetched once, then reused)."""
        if self._token is None:
            self._token = self._request("POST", "/auth/token", {"username": self.user, "password": self.password}, auth=False)["access_token"]
        return self._token

    def wait_healthy(self, timeout: float = 180) -> None:
        """Wait until the API answers and reports the scheduler healthy; ``TimeoutError`` after ``timeout`` s."""
        def healthy() -> bool | None:
            try:
                health = self._request("GET", "/api/v2/monitor/health", auth=False)
            except OSError:
                return None
            return True if health.get("scheduler", {}).get("status") == "healthy" else None

        wait_until(healthy, timeout, 1, lambda: f"Airflow at {self.base} not healthy after {timeout:.0f}s")

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        """Wait until the dag-processor has parsed ``dag_id``; ``TimeoutError`` after ``timeout`` s."""
        def parsed() -> bool | None:
            try:
                self._request("GET", f"/api/v2/dags/{dag_id}")
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
                return None
            return True

        wait_until(parsed, timeout, 1, lambda: f"DAG {dag_id} not parsed after {timeout:.0f}s (see the dag-processor log)")

    def create_backfill(self, dag_id: str, from_date, to_date, reprocess: str = "completed") -> dict:
        """Like `airflow backfill create`: runs for logical dates from_date..to_date (interval starts).

        Dates are naive UTC (or aware); returns the backfill (its ``id``, ``from_date``...).
        """
        body = {"dag_id": dag_id, "from_date": _iso_utc(from_date), "to_date": _iso_utc(to_date),
                "reprocess_behavior": reprocess, "max_active_runs": 4}
        try:
            # creating 24 runs takes ~1 s on SQLite, and the scheduler or dag-processor may lock the DB meanwhile
            # (503/500 "database is locked", rolled back): retry more than the other calls
            return self._request("POST", "/api/v2/backfills", body, attempts=10)
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise
            # On a SQLite metadata DB the API can answer 5xx ("database is locked") after the backfill was
            # committed; the retry then gets 409 "already a running backfill". That open backfill of the same
            # range is the one asked for: return it rather than fail.
            wanted = (utc_naive(body["from_date"]), utc_naive(body["to_date"]))
            for b in self._request("GET", f"/api/v2/backfills?dag_id={dag_id}").get("backfills", []):
                if not b.get("completed_at") and (utc_naive(b["from_date"]), utc_naive(b["to_date"])) == wanted:
                    return b
            raise

    def set_paused(self, dag_id: str, paused: bool) -> None:
        """Pause or unpause ``dag_id``."""
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused})

    def unpause(self, dag_id: str) -> None:
        """Unpause ``dag_id`` (the scheduler then creates and runs its runs)."""
        self.set_paused(dag_id, False)

    def dag_runs(self, dag_id: str) -> list[dict]:
        """The DAG's runs (up to 1,000), oldest logical date first."""
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=1000&order_by=logical_date")["dag_runs"]

    def latest_runs(self, dag_id: str, starts: Iterable[dt.datetime]) -> dict[dt.datetime, dict]:
        """The newest run (by ``run_after``) of each data interval starting at one of ``starts`` (naive UTC).

        A backfill run and a scheduled run may share an interval; intervals with no run are absent.
        """
        starts = set(starts)
        latest: dict[dt.datetime, dict] = {}
        for r in self.dag_runs(dag_id):
            key = run_interval_start(r)
            if key in starts and (key not in latest or r["run_after"] > latest[key]["run_after"]):
                latest[key] = r
        return latest

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """The run's task instances (one page of up to 10,000; the server may cap it, see :meth:`all_task_instances`)."""
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id)}/taskInstances?limit=10000")["task_instances"]

    def trigger_dag_run(self, dag_id: str, run_id: str, start, end, conf: dict | None = None) -> dict:
        """Trigger a manual run for the data interval [start, end) (logical date = start), with ``conf``."""
        body = {"dag_run_id": run_id, "logical_date": _iso_utc(start), "data_interval_start": _iso_utc(start),
                "data_interval_end": _iso_utc(end), "conf": conf or {}}
        return self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        """One run (its ``state``, ``start_date``, ``end_date``...)."""
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id)}")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float, every: float = 0.5) -> dict:
        """Poll one run every ``every`` s until it is finished (``FINISHED``); returns it.

        Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        def finished() -> dict | None:
            run = self.dag_run(dag_id, run_id)
            return run if run["state"] in FINISHED else None

        return wait_until(finished, timeout, every, lambda: f"run {run_id} not finished after {timeout:.0f}s")

    def all_task_instances(self, dag_id: str, run_id: str, page: int = 100) -> list[dict]:
        """Every task instance of a run (the API caps a page at ``[api] maximum_page_limit``, 100 by default)."""
        out: list[dict] = []
        while True:
            batch = self._request(
                "GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id)}/taskInstances?limit={page}&offset={len(out)}&order_by=map_index"
            )["task_instances"]
            out += batch
            if len(batch) < page:
                return out

    def fail_dag_run(self, dag_id: str, run_id: str) -> None:
        """Mark a run failed (the UI's *Mark run as failed*: its running tasks are stopped)."""
        self._request("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id)}", {"state": "failed"})

    def delete_dag_run(self, dag_id: str, run_id: str) -> None:
        """Delete a run (and its task instances), so the same logical date can run again."""
        self._request("DELETE", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id)}")
