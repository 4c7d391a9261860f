"""Deferrable wait for an Azure ML job: polls ``jobs.get`` in a thread until a terminal state.

The SDK has no async client, so each poll runs the synchronous call through
``asyncio.to_thread`` (the pattern of the microsoft-azure provider's batch
trigger). The trigger only reads: submitting and cancelling stay in the operator.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent

from batch_scoring.hooks.azure_ml import TERMINAL_STATES


class AzureMLJobTrigger(BaseTrigger):
    """Fires once with ``{"status": "success"|"error"|"timeout", "job_name", "job_status", "message"}``."""

    def __init__(self, azureml_conn_id: str, job_name: str, poll_interval: float = 30.0, timeout: float = 0.0):
        super().__init__()
        self.azureml_conn_id = azureml_conn_id
        self.job_name = job_name
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{self.__class__.__module__}.{self.__class__.__qualname__}",
            {
                "azureml_conn_id": self.azureml_conn_id,
                "job_name": self.job_name,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
            },
        )

    def _status(self, hook) -> str:
        return hook.get_job_status(self.job_name)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from batch_scoring.hooks.azure_ml import AzureMLHook

        hook = AzureMLHook(self.azureml_conn_id)
        deadline = time.monotonic() + self.timeout if self.timeout > 0 else None
        last = None
        try:
            while True:
                status = await asyncio.to_thread(self._status, hook)
                if status != last:
                    self.log.info("Azure ML job %s: %s", self.job_name, status)
                    last = status
                if status in TERMINAL_STATES:
                    yield TriggerEvent({
                        "status": "success" if status == "Completed" else "error",
                        "job_name": self.job_name,
                        "job_status": status,
                        "message": f"Azure ML job {self.job_name} ended {status}",
                    })
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    yield TriggerEvent({
                        "status": "timeout",
                        "job_name": self.job_name,
                        "job_status": status,
                        "message": f"Azure ML job {self.job_name} still {status} after {self.timeout:.0f}s",
                    })
                    return
                await asyncio.sleep(self.poll_interval)
        except Exception as exc:  # surface SDK/auth errors as an event, so execute_complete can explain them
            yield TriggerEvent({
                "status": "error",
                "job_name": self.job_name,
                "job_status": last,
                "message": f"polling Azure ML job {self.job_name} failed: {type(exc).__name__}: {exc}",
            })
