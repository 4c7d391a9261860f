"""Deferrable wait for an Azure ML job: polls ``jobs.get`` in a thread until a terminal state or a deadline.

Shaped like the microsoft-azure provider's ``AzureDataFactoryTrigger``: the
deadline is an absolute ``end_time`` (epoch seconds) fixed by the operator
before it defers, so a triggerer restart, which rebuilds the trigger from
``serialize()``, does not restart the clock. The SDK has no async client, so
each poll runs the synchronous call in a thread. The trigger only reads:
submitting and cancelling stay in the operator.
"""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent

from batch_scoring.hooks.azure_ml import job_event, poll_delay


class AzureMLJobTrigger(BaseTrigger):
    """Fires once with ``{"status": "success"|"error"|"timeout", "job_name", "job_status", "message"}``.

    The event is ``hooks.azure_ml.job_event``'s (the operator's synchronous wait ends with the same);
    an SDK or auth error while polling fires ``status: "error"`` naming it.

    :param azureml_conn_id: Airflow connection of the workspace.
    :param job_name: the Azure ML job to wait for.
    :param poll_interval: seconds between status reads.
    :param end_time: absolute deadline, epoch seconds (``time.time()`` based); 0 = wait for ever. A deadline
        already past fires the timeout event after one status read, without sleeping.
    :param timeout: the wait's length in seconds, only to word the timeout message.
    """

    def __init__(self, azureml_conn_id: str, job_name: str, poll_interval: float = 30.0, end_time: float = 0.0,
                 timeout: float = 0.0):
        super().__init__()
        self.azureml_conn_id = azureml_conn_id
        self.job_name = job_name
        self.poll_interval = float(poll_interval)
        self.end_time = float(end_time)
        self.timeout = float(timeout)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """``(classpath, kwargs)`` of plain values; rebuilding from them keeps the same ``end_time``."""
        return (
            f"{self.__class__.__module__}.{self.__class__.__qualname__}",
            {
                "azureml_conn_id": self.azureml_conn_id,
                "job_name": self.job_name,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "timeout": self.timeout,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until ``job_event`` decides, then yield that one event."""
        from batch_scoring.hooks.azure_ml import AzureMLHook

        hook = AzureMLHook(self.azureml_conn_id)
        last = None
        self.log.info("Azure ML job %s: polling every %s s; %s", self.job_name, self.poll_interval,
                      deadline_text(self.end_time))
        try:
            while True:
                status = await hook.get_job_status_async(self.job_name)
                if status != last:
                    self.log.info("Azure ML job %s: %s", self.job_name, status)
                    last = status
                event = job_event(self.job_name, status, end_time=self.end_time, timeout=self.timeout)
                if event is not None:
                    yield TriggerEvent(event)
                    return
                await asyncio.sleep(poll_delay(self.poll_interval, self.end_time))
        except Exception as exc:  # surface SDK/auth errors as an event, so execute_complete can explain them
            yield TriggerEvent({
                "status": "error",
                "job_name": self.job_name,
                "job_status": last,
                "message": f"polling Azure ML job {self.job_name} failed: {type(exc).__name__}: {exc}",
            })


def deadline_text(end_time: float) -> str:
    """``"deadline 2026-03-02 10:15:00 UTC (absolute: a restarted triggerer keeps it)"`` or ``"no deadline"``
    for ``end_time`` 0 (epoch seconds)."""
    from batch_scoring.scoring.times import utc_from_epoch

    if not end_time:
        return "no deadline"
    return f"deadline {utc_from_epoch(end_time):%Y-%m-%d %H:%M:%S} UTC (absolute: a restarted triggerer keeps it)"
