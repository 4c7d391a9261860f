"""Run ``airflow standalone`` (scheduler, dag-processor, triggerer, api-server) and talk to its REST API."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from devstack.airflow_env import write_local_settings, write_passwords_file
from devstack.services import stop, wait_for_port

AIRFLOW = str(Path(sys.executable).parent / "airflow")


def _with_venv_path(env: dict) -> dict:
    """Standalone starts its components as `airflow ...` from PATH: put this venv first."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, **env, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}


def airflow_cli(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([AIRFLOW, *args], env=_with_venv_path(env), capture_output=True, text=True)
    if check and result.returncode:
        raise RuntimeError(f"airflow {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return result


def api_port_env(port: int) -> dict[str, str]:
    """The API server's port, and where task processes reach its execution API."""
    return {"AIRFLOW__API__PORT": str(port), "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/"}


def start_standalone(env: dict, port: int, log_path: Path) -> subprocess.Popen:
    home = Path(env["AIRFLOW_HOME"])
    write_passwords_file(home)
    write_local_settings(home)
    airflow_cli(env, "db", "migrate")
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [AIRFLOW, "standalone"],
        env={**_with_venv_path(env), **api_port_env(port)},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    wait_for_port(port, timeout=120, proc=proc)
    return proc


class AirflowApi:
    """Just enough of the Airflow 3 REST API for the demo and the tests."""

    def __init__(self, port: int, user: str = "admin", password: str = "admin"):
        self.base = f"http://127.0.0.1:{port}"
        self.user, self.password = user, password
        self._token = None

    def _request(self, method: str, path: str, body=None, auth: bool = True, attempts: int = 4):
        """One REST call; 5xx answers are retried, since a SQLite metadata DB can be briefly locked."""
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(1, attempts + 1):
            req = urllib.request.Request(self.base + path, data=data, method=method, headers={"Content-Type": "application/json"})
            if auth:
                req.add_header("Authorization", f"Bearer {self.token()}")
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    return json.loads(resp.read() or b"null")
            except urllib.error.HTTPError as exc:
                if exc.code < 500 or attempt == attempts:
                    detail = exc.read()[:500].decode(errors="replace")
                    raise urllib.error.HTTPError(exc.url, exc.code, f"{exc.reason}: {detail}", exc.headers, None) from exc
                time.sleep(min(2 * attempt, 6))

    def token(self) -> str:
        if self._token is None:
            self._token = self._request("POST", "/auth/token", {"username": self.user, "password": self.password}, auth=False)["access_token"]
        return self._token

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                health = self._request("GET", "/api/v2/monitor/health", auth=False)
                if health.get("scheduler", {}).get("status") == "healthy":
                    return
            except OSError:
                pass
            time.sleep(1)
        raise TimeoutError(f"Airflow at {self.base} not healthy after {timeout:.0f}s")

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._request("GET", f"/api/v2/dags/{dag_id}")
                return
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
            time.sleep(1)
        raise TimeoutError(f"DAG {dag_id} not parsed after {timeout:.0f}s (see the dag-processor log)")

    def create_backfill(self, dag_id: str, from_date, to_date, reprocess: str = "completed") -> dict:
        """Like `airflow backfill create`: runs for logical dates from_date..to_date (interval starts)."""
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
            wanted = (_parse_utc(body["from_date"]), _parse_utc(body["to_date"]))
            for b in self._request("GET", f"/api/v2/backfills?dag_id={dag_id}").get("backfills", []):
                if not b.get("completed_at") and (_parse_utc(b["from_date"]), _parse_utc(b["to_date"])) == wanted:
                    return b
            raise

    def unpause(self, dag_id: str) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def dag_runs(self, dag_id: str) -> list[dict]:
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=1000&order_by=logical_date")["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        from urllib.parse import quote

        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id)}/taskInstances?limit=10000")["task_instances"]

    def trigger_dag_run(self, dag_id: str, run_id: str, start, end, conf: dict | None = None) -> dict:
        """Trigger a manual run for the data interval [start, end) (logical date = start), with ``conf``."""
        body = {"dag_run_id": run_id, "logical_date": _iso_utc(start), "data_interval_start": _iso_utc(start),
                "data_interval_end": _iso_utc(end), "conf": conf or {}}
        return self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        from urllib.parse import quote

        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id)}")

    def all_task_instances(self, dag_id: str, run_id: str, page: int = 100) -> list[dict]:
        """Every task instance of a run (the API caps a page at ``[api] maximum_page_limit``, 100 by default)."""
        from urllib.parse import quote

        out: list[dict] = []
        while True:
            batch = self._request(
                "GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id)}/taskInstances?limit={page}&offset={len(out)}&order_by=map_index"
            )["task_instances"]
            out += batch
            if len(batch) < page:
                return out

    def delete_dag_run(self, dag_id: str, run_id: str) -> None:
        from urllib.parse import quote

        self._request("DELETE", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id)}")


def _parse_utc(text: str) -> dt.datetime:
    ts = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.timezone.utc)


def _iso_utc(ts) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def stop_standalone(proc: subprocess.Popen) -> None:
    stop(proc, timeout=30)
