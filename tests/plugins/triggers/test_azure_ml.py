"""AzureMLJobTrigger: plain serialized kwargs, an absolute deadline that survives a triggerer restart."""
from __future__ import annotations

import asyncio
import importlib
import json
import time

import pytest

pytestmark = pytest.mark.timeout(60)


def rebuild(trigger):
    """What the triggerer does after a restart: a new trigger from the stored ``serialize()`` kwargs."""
    path, kwargs = trigger.serialize()
    module, _, cls = path.rpartition(".")
    return getattr(importlib.import_module(module), cls)(**kwargs)


def first_event(trigger):
    async def first():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(first())


@pytest.fixture
def running(monkeypatch):
    """Every job reads Running; returns the list of job names polled."""
    from batch_scoring.hooks.azure_ml import AzureMLHook

    polled = []

    def status(self, name):
        polled.append(name)
        return "Running"

    monkeypatch.setattr(AzureMLHook, "get_job_status", status)
    return polled


def test_trigger_serialize_round_trip():
    from batch_scoring.triggers.azure_ml import AzureMLJobTrigger

    trigger = AzureMLJobTrigger("azure_ml", "job-1", poll_interval=15, end_time=1_900_000_000.5, timeout=600)
    path, kwargs = trigger.serialize()
    assert path == "batch_scoring.triggers.azure_ml.AzureMLJobTrigger"
    assert kwargs == {"azureml_conn_id": "azure_ml", "job_name": "job-1", "poll_interval": 15.0,
                      "end_time": 1_900_000_000.5, "timeout": 600.0}
    json.dumps(kwargs)  # plain values only: the triggerer stores them in the metadata DB
    assert rebuild(trigger).serialize() == (path, kwargs)


def test_rebuilt_trigger_times_out_at_the_original_deadline(running):
    from batch_scoring.triggers.azure_ml import AzureMLJobTrigger

    deadline = time.time() + 0.6
    trigger = AzureMLJobTrigger("azure_ml", "job-1", poll_interval=0.05, end_time=deadline, timeout=0.6)
    time.sleep(0.4)  # the triggerer restarts 0.4 s into the wait
    event = first_event(rebuild(trigger))
    finished = time.time()
    assert event == {"status": "timeout", "job_name": "job-1", "job_status": "Running",
                     "message": "Azure ML job job-1 still Running after 1s"}
    assert deadline <= finished < deadline + 0.5  # not 0.6 s after the restart
    assert set(running) == {"job-1"}


def test_past_end_time_yields_a_timeout_event_at_once(running):
    from batch_scoring.triggers.azure_ml import AzureMLJobTrigger

    started = time.time()
    event = first_event(AzureMLJobTrigger("azure_ml", "job-1", poll_interval=3600, end_time=started - 10, timeout=5))
    assert event["status"] == "timeout" and event["job_status"] == "Running"
    assert time.time() - started < 5 and running == ["job-1"]  # one status read, no sleep


def test_no_end_time_waits_for_a_terminal_state(monkeypatch):
    from batch_scoring.hooks.azure_ml import AzureMLHook
    from batch_scoring.triggers.azure_ml import AzureMLJobTrigger

    states = iter(["Queued", "Running", "Failed"])
    monkeypatch.setattr(AzureMLHook, "get_job_status", lambda self, name: next(states))
    event = first_event(AzureMLJobTrigger("azure_ml", "job-1", poll_interval=0.01))
    assert event == {"status": "error", "job_name": "job-1", "job_status": "Failed",
                     "message": "Azure ML job job-1 ended Failed"}


def test_trigger_reports_polling_errors_as_events(fake_azureml):
    from batch_scoring.triggers.azure_ml import AzureMLJobTrigger

    payload = first_event(AzureMLJobTrigger("azure_ml", "no-such-job", 0.01))
    assert payload["status"] == "error" and "ResourceNotFoundError" in payload["message"]


def test_the_trigger_logs_its_absolute_deadline_and_a_rebuilt_one_the_same(running):
    from structlog.testing import capture_logs

    from batch_scoring.triggers.azure_ml import AzureMLJobTrigger, deadline_text

    trigger = AzureMLJobTrigger("azure_ml", "job-1", poll_interval=0.05, end_time=time.time() + 0.3, timeout=0.3)
    with capture_logs() as logs:
        first_event(trigger)
        first_event(rebuild(trigger))
    lines = [e["event"] % tuple(e.get("positional_args", ())) for e in logs if "deadline" in str(e)]
    assert len(lines) == 2 and lines[0] == lines[1], lines
    assert deadline_text(1_900_000_000.5) == "deadline 2030-03-17 17:46:40 UTC (absolute: a restarted triggerer keeps it)"
    assert deadline_text(0) == "no deadline"
