"""What the topology tests do and check through the REST API, the blobs and the emulator's own ledger."""
from __future__ import annotations

import datetime as dt
import json
from urllib.parse import quote

from devstack.services import wait_until
from devstack.topology import DAG_ID


def backfill(topo, starts: list[dt.datetime], backend: str = "local", during=None, timeout: float = 900) -> dict:
    """Backfill the intervals starting at ``starts`` (consecutive hours; completed ones reprocessed) with the
    runs' ``backend`` param, call ``during()`` once the backfill exists, and wait until it is completed.
    Returns the newest run of each interval, ``{start: run}``.

    First waits until any earlier backfill is marked completed (the scheduler does that shortly after its last
    run ends; until then the API refuses a new one with 409)."""
    def others_done():
        return all(b.get("completed_at") for b in topo.api._request(
            "GET", f"/api/v2/backfills?dag_id={DAG_ID}&limit=100")["backfills"]) or None

    wait_until(others_done, 180, 2, lambda: "an earlier backfill is not marked completed")
    body = {"dag_id": DAG_ID, "from_date": f"{min(starts):%Y-%m-%dT%H:%M:%SZ}",
            "to_date": f"{max(starts):%Y-%m-%dT%H:%M:%SZ}", "reprocess_behavior": "completed",
            "max_active_runs": 4, "dag_run_conf": {"backend": backend}}
    created = topo.api._request("POST", "/api/v2/backfills", body)
    if during is not None:
        during()

    def done():
        topo.check_alive()
        try:
            b = topo.api._request("GET", f"/api/v2/backfills/{created['id']}")
        except OSError:  # the api-server is restarting (a fault case); ask again
            return None
        return True if b.get("completed_at") else None

    wait_until(done, timeout, 1, lambda: f"backfill {created['id']} not completed after {timeout:.0f}s: "
               f"{ {str(k): r['state'] for k, r in topo.api.latest_runs(DAG_ID, starts).items()} }")
    return topo.api.latest_runs(DAG_ID, starts)


def manifest(topo, begin: dt.datetime) -> dict:
    """The interval's ``_manifest.json``."""
    from batch_scoring.config import settings
    from batch_scoring.hooks.blob_storage import BlobStore
    from batch_scoring.scoring.layout import Interval, manifest_blob

    store = BlobStore.from_connection_string(topo.blob_conn_str)
    return json.loads(store.download_bytes(settings().predictions_container,
                                           manifest_blob(Interval(begin, begin + dt.timedelta(hours=1)))))


def assert_validated(topo, runs: dict, targets: int) -> None:
    """Every run succeeded, every task instance of it ended success, and its manifest counts every target ok."""
    assert {k: r["state"] for k, r in runs.items()} == {k: "success" for k in runs}, runs
    for begin, run in runs.items():
        m = manifest(topo, begin)
        assert m["counts"] == {"ok": targets, "failed": 0, "skipped": 0}, m
        assert {e["status"] for e in m["targets"].values()} == {"ok"}, m
        for ti in topo.api.all_task_instances(DAG_ID, run["dag_run_id"]):
            assert ti["state"] == "success", ti


def tries(topo, run_id: str, ti: dict) -> list[dict]:
    """Every try of one task instance (state, hostname, try_number), oldest first."""
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id)}/taskInstances/{ti['task_id']}/{ti['map_index']}/tries"
    return topo.api._request("GET", path)["task_instances"]


def running_score_tis(topo, starts, hostname: str | None = None) -> list[dict]:
    """The score task instances of the intervals' newest runs now running (on ``hostname`` if given)."""
    out = []
    for run in topo.api.latest_runs(DAG_ID, starts).values():
        for ti in topo.api.all_task_instances(DAG_ID, run["dag_run_id"]):
            if ti["task_id"] == "score" and ti["state"] == "running" and hostname in (None, ti["hostname"]):
                out.append(ti)
    return out


def wait_for_running_score(topo, starts, hostname: str | None = None, timeout: float = 300) -> list[dict]:
    """Poll until a score task of the intervals runs (on ``hostname``); returns those running."""
    return wait_until(lambda: running_score_tis(topo, starts, hostname) or None, timeout, 0.2,
                      lambda: f"no score task running on {hostname or 'any worker'} within {timeout:.0f}s")


def jobs_of(em, starts: list[dt.datetime]) -> dict[tuple, list[dict]]:
    """The emulator ledger's jobs of these intervals, grouped by (interval, unit, model set), in creation order."""
    from batch_scoring.scoring.layout import Interval

    keys = {Interval(s, s + dt.timedelta(hours=1)).key for s in starts}
    groups: dict[tuple, list[dict]] = {}
    for job in em.ledger():
        tags = job["tags"]
        if tags.get("interval") in keys:
            groups.setdefault((tags["interval"], tags["targets"], tags.get("model_sha256") or tags.get("models")),
                              []).append(job)
    return groups


def assert_one_job_each(em, starts: list[dt.datetime], units: int, resubmitted: int = 0) -> dict[tuple, list[dict]]:
    """Exactly one job per (interval, unit, model set), counted from the emulator's ledger, plus ``resubmitted``
    groups with ``-r1``... jobs after a Failed or Canceled one."""
    groups = jobs_of(em, starts)
    assert len(groups) == len(starts) * units, sorted(groups)
    extra = {k: [j["name"] for j in v] for k, v in groups.items() if len(v) > 1}
    assert len(extra) == resubmitted, extra
    for jobs in groups.values():
        base = jobs[0]["name"]
        assert [j["name"] for j in jobs] == [base] + [f"{base}-r{i}" for i in range(1, len(jobs))], jobs
        assert all(j["status"] in ("Failed", "Canceled") for j in jobs[:-1]) and jobs[-1]["status"] == "Completed", jobs
    return groups
