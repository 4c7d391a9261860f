"""What the emulated workspace holds: registered assets, jobs, injected faults and the job ledger.

All of it lives in memory in the emulator process, guarded by one lock; the request log and the job
ledger are also appended to files in the state folder so tests and the topology can read them:

* ``requests.log``: one line per request, ``<iso time> <METHOD> <path> <status>``;
* ``ledger.jsonl``: one JSON object per job created, ``{"name", "tags", "experiment", "created_at"}``.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import threading
from pathlib import Path
from typing import Any

#: Azure ML's terminal job states (azure-ai-ml ``RunHistoryConstants.TERMINAL_STATUSES`` plus Paused).
TERMINAL = frozenset({"Completed", "Failed", "Canceled", "NotResponding", "Paused"})
_ARM_ASSET = re.compile(r"/(codes|environments)/([^/]+)/versions/([^/]+)$", re.I)


class Refused(Exception):
    """A request Azure ML would refuse: ``status`` (HTTP), ``code`` (ARM error code) and a message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def now_iso() -> str:
    """The current UTC time as the service writes it (``2026-11-30T06:00:00.123456+00:00``)."""
    return dt.datetime.now(dt.timezone.utc).isoformat()


@dataclasses.dataclass
class Job:
    """One submitted job: the stored REST body (as the service returns it), its log and its controls."""

    name: str
    body: dict[str, Any]
    fault: dict[str, Any]
    code: tuple[str, str] = ("", "")
    log: str = ""
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)

    @property
    def status(self) -> str:
        """Current state name (``NotStarted`` ... ``Completed``)."""
        return self.body["properties"]["status"]


class Workspace:
    """The workspace's registry and jobs.

    :param sub, rg, ws: the workspace's subscription, resource group and name (its ARM id is ``arm_id``).
    :param datastores: datastore name -> Azurite container.
    :param codes: ``(name, version)`` -> local folder (the code asset's snapshot).
    :param environments: registered ``(name, version)`` pairs.
    :param computes: compute name -> max node count (how many jobs run at once on it).
    :param state_dir: where ``requests.log`` and ``ledger.jsonl`` go.
    """

    def __init__(self, sub: str, rg: str, ws: str, datastores: dict[str, str], codes: dict[tuple[str, str], Path],
                 environments: set[tuple[str, str]], computes: dict[str, int], state_dir: Path):
        self.sub, self.rg, self.ws = sub, rg, ws
        self.datastores, self.codes, self.environments, self.computes = datastores, codes, environments, computes
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.jobs: dict[str, Job] = {}
        self.lock = threading.RLock()
        self.http_faults: list[dict[str, Any]] = []
        self.job_faults: list[dict[str, Any]] = []

    @property
    def arm_id(self) -> str:
        """``/subscriptions/<s>/resourceGroups/<rg>/providers/Microsoft.MachineLearningServices/workspaces/<ws>``."""
        return (f"/subscriptions/{self.sub}/resourceGroups/{self.rg}/providers/"
                f"Microsoft.MachineLearningServices/workspaces/{self.ws}")

    # --- logs -----------------------------------------------------------------------

    def log_request(self, method: str, path: str, status: int) -> None:
        """Append ``<time> <method> <path> <status>`` to ``requests.log``."""
        with self.lock, open(self.state_dir / "requests.log", "a") as fh:
            fh.write(f"{now_iso()} {method} {path} {status}\n")

    def ledger(self) -> list[dict[str, Any]]:
        """Every job created so far, in creation order: ``{"name", "tags", "experiment", "created_at", "status",
        "last_modified_at"}`` (ISO 8601 UTC; the last is when it reached its status, its end once terminal)."""
        with self.lock:
            return [{"name": j.name, "tags": j.body["properties"].get("tags") or {},
                     "experiment": j.body["properties"].get("experimentName"),
                     "created_at": j.body["systemData"]["createdAt"], "status": j.status,
                     "last_modified_at": j.body["systemData"].get("lastModifiedAt")} for j in self.jobs.values()]

    # --- faults ---------------------------------------------------------------------

    def add_fault(self, fault: dict[str, Any]) -> None:
        """Queue a fault.

        ``{"kind": "http", "status": 429|503|500, "count": N, "retry_after": s|None, "path": substring|None,
        "method": "GET"|None}`` answers the next N matching ARM requests with ``status``; with ``"delay": s``
        instead of ``status`` it serves them but holds each response back ``s`` seconds (the service acted, its
        answer is late: a client killed meanwhile never learns of it);
        ``{"kind": "job", "stay": "Queued"}`` or ``{"kind": "job", "fail_log": text}`` applies to the next job
        created (``"name": substring`` narrows it).

        :raises Refused: 400 for any other kind.
        """
        kind = fault.get("kind")
        with self.lock:
            if kind == "http":
                if (fault.get("status") is None) == (fault.get("delay") is None):
                    raise Refused(400, "BadFault", "an http fault needs exactly one of 'status' and 'delay'")
                self.http_faults.append({"count": 1, "retry_after": None, "path": None, "method": None, **fault})
            elif kind == "job":
                self.job_faults.append(dict(fault))
            else:
                raise Refused(400, "BadFault", f"unknown fault kind {kind!r}: 'http' or 'job'")

    def take_http_fault(self, method: str, path: str) -> dict[str, Any] | None:
        """The HTTP fault the request ``method path`` must get (one of its count used up), or None."""
        with self.lock:
            for fault in self.http_faults:
                if (fault["path"] is None or fault["path"] in path) and fault["method"] in (None, method):
                    fault["count"] -= 1
                    if fault["count"] <= 0:
                        self.http_faults.remove(fault)
                    return fault
        return None

    def _take_job_fault(self, name: str) -> dict[str, Any]:
        for fault in self.job_faults:
            if fault.get("name") is None or fault["name"] in name:
                self.job_faults.remove(fault)
                return fault
        return {}

    # --- references -----------------------------------------------------------------

    def _asset(self, ref: str | None, kind: str) -> tuple[str, str]:
        """``(name, version)`` of a code/environment reference, checked against the registry."""
        text = (ref or "").removeprefix("azureml:")
        m = _ARM_ASSET.search(text)
        if m and m.group(1).lower() == kind and text.lower().startswith(self.arm_id.lower() + "/"):
            pair = (m.group(2), m.group(3))
        elif not text.startswith("/") and text.count(":") == 1:
            pair = tuple(text.split(":"))  # type: ignore[assignment]
        else:
            raise Refused(400, "UserError", f"{kind[:-1]} reference {ref!r} is not an asset of workspace {self.ws}")
        registered = self.codes if kind == "codes" else self.environments
        if pair not in registered:
            raise Refused(404, "UserError", f"{kind[:-1]} asset {pair[0]}:{pair[1]} not found in workspace {self.ws}")
        return pair

    def _compute(self, compute_id: str | None) -> str:
        name = (compute_id or "").rsplit("/computes/", 1)[-1]
        if "/computes/" not in (compute_id or "") or name not in self.computes:
            raise Refused(400, "UserError", f"compute {compute_id!r} is not a compute of workspace {self.ws} "
                                            f"(registered: {sorted(self.computes)})")
        return name

    def datastore_path(self, uri: str) -> tuple[str, str]:
        """``azureml://datastores/<ds>/paths/<p>`` -> ``(container, p)``; Refused(400) for another datastore or form."""
        m = re.match(r"^azureml://datastores/([^/]+)/paths/(.*)$", uri or "")
        if not m or m.group(1) not in self.datastores:
            raise Refused(400, "UserError", f"{uri!r} is not a path on a datastore of workspace {self.ws} "
                                            f"(registered: {sorted(self.datastores)})")
        return self.datastores[m.group(1)], m.group(2)

    # --- jobs -----------------------------------------------------------------------

    def create_job(self, name: str, body: dict[str, Any], base_url: str) -> Job:
        """Validate and store a PUT job body as the service would; returns the new ``Job`` (status NotStarted).

        :raises Refused: 400 when a job called ``name`` exists, the job type is not Command, the compute, a
            datastore or a reference is not the workspace's; 404 for a code/environment version not registered.
        """
        props = dict(body.get("properties") or {})
        if props.get("jobType") != "Command":
            raise Refused(400, "UserError", f"job type {props.get('jobType')!r} is not emulated (Command only)")
        code = self._asset(props.get("codeId"), "codes")
        self._asset(props.get("environmentId"), "environments")
        self._compute(props.get("computeId"))
        for io in (*(props.get("inputs") or {}).values(), *(props.get("outputs") or {}).values()):
            if io and io.get("uri"):
                self.datastore_path(io["uri"])
        with self.lock:
            if name in self.jobs:
                raise Refused(400, "UserError", f"A job with name {name} already exists in workspace {self.ws}; "
                                                "its settings cannot be modified")
            created = now_iso()
            props.update(status="NotStarted", services={"Studio": {
                "jobServiceType": "Studio", "endpoint": f"{base_url}/studio/runs/{name}?wsid={self.arm_id}"}})
            job = Job(name=name, fault=self._take_job_fault(name), code=code, body={
                "id": f"{self.arm_id}/jobs/{name}", "name": name,
                "type": "Microsoft.MachineLearningServices/workspaces/jobs", "properties": props,
                "systemData": {"createdAt": created, "createdBy": "emulator", "createdByType": "Application",
                               "lastModifiedAt": created}})
            self.jobs[name] = job
            with open(self.state_dir / "ledger.jsonl", "a") as fh:
                fh.write(json.dumps({"name": name, "tags": props.get("tags") or {},
                                     "experiment": props.get("experimentName"), "created_at": created}) + "\n")
            return job

    def job(self, name: str) -> Job:
        """The job called ``name``; Refused(404) when there is none."""
        with self.lock:
            if name not in self.jobs:
                raise Refused(404, "UserError", f"Job {name} not found in workspace {self.ws}")
            return self.jobs[name]

    def set_status(self, job: Job, status: str) -> bool:
        """Move ``job`` to ``status`` unless it is terminal already (or cancel-requested and ``status`` is not
        Canceled); returns whether it moved."""
        with self.lock:
            if job.status in TERMINAL or (job.status == "CancelRequested" and status != "Canceled"):
                return False
            job.body["properties"]["status"] = status
            job.body["systemData"]["lastModifiedAt"] = now_iso()
            return True
