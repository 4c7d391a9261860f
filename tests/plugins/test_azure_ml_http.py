"""The real azure-ai-ml SDK against the Azure ML emulator process, over HTTPS: nothing of the SDK is replaced.

Submission of the product's job, error mapping (404 -> ResourceNotFoundError), the SDK's own retries on
429/503/500 with Retry-After, the long-running cancel, what the service refuses, the cluster's states and
mount semantics, and the faults the topology tests use.
"""
from __future__ import annotations

import datetime as dt
import time

import pytest

from tests.fixtures.aml_emulator import created

pytestmark = pytest.mark.timeout(300)

KEY = "20260302T0000Z_20260302T0100Z"
FOLDER = "date=2026-03-02/interval=20260302T0000Z_20260302T0100Z/"  # layout.interval_folder(KEY), the job's output


def _hook():
    from batch_scoring.config import settings
    from batch_scoring.hooks.azure_ml import AzureMLHook

    return AzureMLHook(settings().azureml_conn_id)


def _wait(hook, name: str, until=("Completed", "Failed", "Canceled"), timeout: float = 120) -> list[str]:
    """Poll ``name`` until a state in ``until``; returns the distinct states seen, in order."""
    seen, end = [], time.time() + timeout
    while time.time() < end:
        status = hook.get_job_status(name)
        if not seen or seen[-1] != status:
            seen.append(status)
        if status in until:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"{name} still {seen[-1]} after {timeout}s: {seen}")


def _command_job(hook, name: str, cmd: str, *, outputs: bool = True, code: str | None = None,
                 environment: str = "azureml:batch-scoring-env:1", compute: str = "cpu-scoring"):
    """A small command job on the registered code, with the predictions datastore's interval folder as rw_mount output."""
    from azure.ai.ml import Input, Output, command

    from batch_scoring.azure_ml_job import code_asset_id, datastore_uri

    return command(
        name=name, command=cmd, code=code or code_asset_id(hook.workspace_id(), "batch-scoring-code:1"),
        environment=environment, compute=compute,
        inputs={"models": Input(type="uri_folder", path=datastore_uri("scoring_models"), mode="ro_mount")},
        outputs={"out": Output(type="uri_folder", path=datastore_uri("scoring_predictions", FOLDER),
                               mode="rw_mount")} if outputs else {})


@pytest.fixture
def world(sqlite_conn_str, blob_conn_str, blob_store, monkeypatch, tmp_path):
    """One device, two sensors: the interval's snapshot and both models deployed in Azurite."""
    from batch_scoring.config import settings
    from batch_scoring.scoring.layout import Interval
    from batch_scoring.sensor_db.schema import connect
    from batch_scoring.snapshot import snapshot_interval
    from tests.plugins.test_azure_ml_e2e import SCORING, simulated_world

    simulated_world(monkeypatch, sqlite_conn_str, blob_conn_str, blob_store, tmp_path / "models", devices=1)
    conn = connect(sqlite_conn_str)
    try:
        return snapshot_interval(conn, blob_store, settings(), Interval(*SCORING))
    finally:
        conn.close()


def test_the_products_job_is_submitted_runs_and_writes_its_predictions(aml_emulator, world, blob_store):
    from batch_scoring.azure_ml_job import AzureMLJobConfig, build_scoring_job, read_job_inputs
    from batch_scoring.config import settings
    from batch_scoring.scoring.layout import Interval

    hook, cfg = _hook(), AzureMLJobConfig.from_settings(settings())
    unit = ["dev001/s1", "dev001/s2"]
    inputs = read_job_inputs(blob_store, cfg, Interval.from_key(KEY), unit)
    job = build_scoring_job(cfg, KEY, unit, "score-it", dag_id="batch_scoring", run_id="manual", timeout_seconds=600,
                            workspace_id=hook.workspace_id(), inputs=inputs)
    before = dt.datetime.now(dt.timezone.utc)
    submitted = hook.submit_job(job)
    assert submitted.name == "score-it" and submitted.status == "NotStarted"
    assert before - dt.timedelta(seconds=5) <= submitted.creation_context.created_at <= dt.datetime.now(dt.timezone.utc)
    assert submitted.studio_url and "score-it" in submitted.studio_url
    seen = _wait(hook, "score-it")
    assert seen[-1] == "Completed", aml_emulator.log("score-it")
    assert set(seen) <= {"NotStarted", "Queued", "Preparing", "Running", "Finalizing", "Completed"}
    assert seen == sorted(seen, key=["NotStarted", "Queued", "Preparing", "Running", "Finalizing", "Completed"].index)
    got = hook.get_job("score-it")
    assert got.tags["models_digest"] == inputs.models_digest and got.tags["interval"] == KEY
    assert str(got.compute).endswith("cpu-scoring")
    from batch_scoring.scoring.layout import part_blob
    from batch_scoring.unit_checks import part_receipts

    assert set(blob_store.list_names("predictions", FOLDER)) == {part_blob(KEY, unit)}  # the unit's one part file
    assert [r["status"] for r in part_receipts(blob_store, "predictions", part_blob(KEY, unit))] == ["ok", "ok"]
    ledger = aml_emulator.ledger()
    assert [j["name"] for j in ledger] == ["score-it"] and ledger[0]["tags"]["interval"] == KEY
    methods = [(m, p.rsplit("/", 2)[-2:]) for m, p, s in aml_emulator.requests() if s < 300 and "/jobs/score-it" in p]
    assert ("PUT", ["jobs", "score-it"]) in methods


def test_get_of_an_unknown_job_is_a_404_the_sdk_raises_as_resource_not_found(aml_emulator):
    from azure.core.exceptions import ResourceNotFoundError

    hook = _hook()
    with pytest.raises(ResourceNotFoundError, match="not found"):
        hook.get_job("no-such-job")
    assert hook.find_job("no-such-job") is None
    assert any(m == "GET" and p.endswith("/jobs/no-such-job") and s == 404 for m, p, s in aml_emulator.requests())


@pytest.mark.parametrize("status", [429, 503, 500])
def test_the_sdk_retries_throttling_and_transient_errors_honouring_retry_after(aml_emulator, status):
    from azure.core.exceptions import ResourceNotFoundError

    hook = _hook()
    hook.find_job("warm-up")  # token fetched, client built
    aml_emulator.fault(kind="http", status=status, count=2, retry_after=1, path=f"/jobs/probe-{status}")
    start = time.monotonic()
    with pytest.raises(ResourceNotFoundError):  # the third try reaches the (empty) workspace
        hook.get_job(f"probe-{status}")
    assert time.monotonic() - start >= 1.9  # two waits of Retry-After: 1
    statuses = [s for m, p, s in aml_emulator.requests() if p.endswith(f"/jobs/probe-{status}")]
    assert statuses == [status, status, 404]


def test_cancel_goes_through_the_long_running_operation_and_the_job_ends_canceled(aml_emulator):
    hook = _hook()
    aml_emulator.fault(kind="job", stay="Queued")
    hook.submit_job(_command_job(hook, "stuck", "python -c pass"))
    assert _wait(hook, "stuck", until=("Queued",))[-1] == "Queued"
    time.sleep(0.5)
    assert hook.get_job_status("stuck") == "Queued"  # stays there
    start = time.monotonic()
    hook.get_conn().jobs.begin_cancel("stuck").result()
    assert time.monotonic() - start < 10  # Retry-After: 1, not the SDK's 30 s default
    assert hook.get_job_status("stuck") == "Canceled"
    calls = [(m, s) for m, p, s in aml_emulator.requests() if "stuck" in p and ("cancel" in p or "mfeOperation" in p)]
    assert calls[0] == ("POST", 202) and calls[-1] == ("GET", 200)


@pytest.mark.parametrize("kind,override,match", [
    ("code", {"code": None}, "code asset batch-scoring-code:9 not found"),
    ("environment", {"environment": "azureml:batch-scoring-env:9"}, "environment asset batch-scoring-env:9 not found"),
    ("compute", {"compute": "gpu-cluster"}, "is not a compute of workspace"),
    ("compute verbatim", {"compute": "azureml:cpu-scoring"}, "computes/azureml:cpu-scoring' is not a compute"),
])
def test_the_emulator_refuses_references_the_service_would(aml_emulator, kind, override, match):
    from azure.core.exceptions import HttpResponseError

    from batch_scoring.azure_ml_job import code_asset_id

    hook = _hook()
    if "code" in override:
        override = {"code": code_asset_id(hook.workspace_id(), "batch-scoring-code:9")}
    with pytest.raises(HttpResponseError, match=match):
        hook.submit_job(_command_job(hook, f"bad-{kind.replace(' ', '-')}", "python -c pass", **override))
    assert created(aml_emulator) == []


def test_a_second_put_of_an_existing_name_is_refused(aml_emulator):
    from azure.core.exceptions import HttpResponseError

    hook = _hook()
    hook.submit_job(_command_job(hook, "once", "python -c pass"))
    with pytest.raises(HttpResponseError, match="already exists"):
        hook.submit_job(_command_job(hook, "once", "python -c 'print(1)'"))
    assert created(aml_emulator) == ["once"]


def test_rw_mount_output_reaches_the_container_even_when_the_job_fails_and_inputs_are_read_only(aml_emulator,
                                                                                                  blob_store):
    hook = _hook()
    blob_store.upload_bytes("models", "dev001/s1/manifest.json", b"{}")
    blob_store.upload_bytes("predictions", f"{FOLDER}old.txt", b"old")
    script = ("import os, pathlib, sys; o = pathlib.Path(sys.argv[2]); m = pathlib.Path(sys.argv[1]); "
              "assert (o / 'old.txt').read_bytes() == b'old'; (o / 'partial.txt').write_text('half'); "
              "f = m / 'dev001/s1/manifest.json'; assert f.read_bytes() == b'{}'; "
              "print('ro', not f.stat().st_mode & 0o222); print('cwd', sorted(os.listdir('.'))); "
              "print('pp', os.environ.get('PYTHONPATH')); sys.exit(3)")
    hook.submit_job(_command_job(hook, "half", f'python -c "{script}" ${{{{inputs.models}}}} ${{{{outputs.out}}}}'))
    assert _wait(hook, "half")[-1] == "Failed"
    log = aml_emulator.log("half")
    assert "ro True" in log and "cwd ['batch_scoring']" in log and "pp None" in log and "exit code 3" in log
    assert blob_store.download_bytes("predictions", f"{FOLDER}partial.txt") == b"half"
    assert blob_store.download_bytes("predictions", f"{FOLDER}old.txt") == b"old"


def test_a_job_fault_fails_with_its_log_and_jobs_run_at_once(aml_emulator):
    hook = _hook()
    aml_emulator.fault(kind="job", name="doomed", fail_log="CUDA out of memory\n")
    hook.submit_job(_command_job(hook, "doomed", "python -c pass", outputs=False))
    for i in range(3):
        hook.submit_job(_command_job(hook, f"sleeper-{i}", "python -c 'import time; time.sleep(2)'", outputs=False))
    running, end = 0, time.time() + 60
    while time.time() < end and running < 2:
        running = sum(j["status"] == "Running" for j in aml_emulator.ledger())
        time.sleep(0.1)
    assert running >= 2  # several jobs on the cluster at once
    assert _wait(hook, "doomed")[-1] == "Failed" and aml_emulator.log("doomed") == "CUDA out of memory\n"
    # jobs.download is not emulated (docs/azure_ml.md): the hook's log tail says so instead of raising
    tail = hook.job_log_tail("doomed")
    assert tail.startswith("(could not fetch the job's log:") and "is not emulated" in tail, tail
    assert all(_wait(hook, f"sleeper-{i}")[-1] == "Completed" for i in range(3))
    assert created(aml_emulator) == ["doomed", "sleeper-0", "sleeper-1", "sleeper-2"]


def test_controls_answer_loopback_only_and_every_request_is_logged(aml_emulator):
    hook = _hook()
    hook.test_connection()
    reqs = aml_emulator.requests()
    assert any(m == "POST" and p.endswith("/oauth2/v2.0/token") and s == 200 for m, p, s in reqs)
    assert any(m == "GET" and p.endswith("/workspaces/ws-local") and s == 200 for m, p, s in reqs)


def test_a_delay_fault_serves_the_request_but_answers_late(aml_emulator):
    """The topology's "worker killed while submitting" case: the PUT creates the job, its answer is held back."""
    hook = _hook()
    hook.find_job("warm-up")
    aml_emulator.fault(kind="http", delay=2, method="PUT", path="/jobs/late")
    start = time.monotonic()
    hook.submit_job(_command_job(hook, "late", "python -c pass"))
    assert time.monotonic() - start >= 1.9
    assert created(aml_emulator) == ["late"]
    assert [s for m, p, s in aml_emulator.requests() if m == "PUT" and p.endswith("/jobs/late")] == [201]


@pytest.mark.parametrize("fault", [{"kind": "http"}, {"kind": "http", "status": 503, "delay": 1}, {"kind": "disk"}])
def test_a_fault_the_emulator_cannot_apply_is_refused(aml_emulator, fault):
    import urllib.error

    with pytest.raises(urllib.error.HTTPError, match="400"):
        aml_emulator.fault(**fault)


@pytest.mark.parametrize("level,logged", [(None, False), ("INFO", True), ("NOT-A-LEVEL", False)])
def test_the_sdks_per_request_logging_is_off_unless_asked_for(aml_emulator, monkeypatch, caplog, level, logged):
    """A job poll writes no request/response headers or token lines at INFO (AZURE_HTTP_LOGGING_LEVEL, as the
    provider's WasbHook)."""
    import logging

    if level:
        monkeypatch.setenv("AZURE_HTTP_LOGGING_LEVEL", level)
    else:
        monkeypatch.delenv("AZURE_HTTP_LOGGING_LEVEL", raising=False)
    hook = _hook()
    with caplog.at_level(logging.INFO):
        hook.find_job("quiet-please")
    http = [r for r in caplog.records if r.name.startswith(("azure.core.pipeline", "azure.identity"))]
    assert any("Request URL" in r.getMessage() for r in http) is logged, [r.getMessage()[:80] for r in http]
    if not logged:
        assert http == [], [r.getMessage()[:80] for r in http]
