"""Azure ML workspace client (``MLClient``) from an Airflow connection.

The microsoft-azure provider has no Azure ML hook, so this one follows the
conventions of its ``AzureBaseHook`` connection and builds credentials with its
helpers (``airflow.providers.microsoft.azure.utils``). Connection (any
``conn_type``, e.g. ``generic``; every extra may also carry the provider's
back-compat prefix ``extra__azure_ml__``)::

    login     service principal client id      (optional)
    password  service principal secret         (optional)
    extra     {"subscription_id": "...", "resource_group": "...", "workspace_name": "...",
               "tenant_id": "...",                     # with login/password (or the provider's "tenantId")
               "managed_identity_client_id": "...",    # user-assigned managed identity / workload identity
               "workload_identity_tenant_id": "...",   # with the above: workload identity on AKS
               "cloud_environment": "AzurePublicCloud",  # | AzureUSGovernment | AzureChinaCloud | <custom name>
               "cloud_metadata": {...}}                # only for a custom cloud (below)

Which credential (``credential_kind`` decides, ``get_credential`` builds):

* ``service_principal``: login + password (+ tenant) -> ``ClientSecretCredential`` with the cloud's authority;
* ``workload_identity``: managed_identity_client_id + workload_identity_tenant_id -> the provider's
  ``get_sync_default_azure_credential`` (``DefaultAzureCredential`` with both, the tenant allowed);
* ``managed_identity``: managed_identity_client_id alone -> ``ManagedIdentityCredential(client_id=...)``
  (IMDS on a VM/cluster; on AKS with the workload-identity webhook it exchanges the federated token);
* ``default``: nothing of the above -> the provider's ``get_sync_default_azure_credential()``, i.e.
  ``DefaultAzureCredential()`` (environment variables, workload identity, managed identity, the Azure CLI
  login on a laptop).

``cloud_environment`` (the provider's names) picks the sovereign cloud: the service principal's
authority host and the ``MLClient``'s ``cloud``.

A **custom cloud** (Azure Stack Hub, a private or air-gapped cloud, or the local emulator in
``devstack/aml_emulator``) is any other ``cloud_environment`` name together with extra ``cloud_metadata``:
the ``MLClient``'s ``cloud_metadata`` (azure-ai-ml's ``EndpointURLS`` keys: ``resource_manager``,
``active_directory``, ``azure_portal``, ``aml_resource_id``, ``storage_endpoint``,
``registry_discovery_endpoint``). The service principal then authenticates at the host of
``active_directory`` with ``disable_instance_discovery=True`` (azure-identity's setting for authorities
Microsoft's instance discovery does not know, e.g. Azure Stack's), and the ``MLClient`` gets the cloud
under the name ``<cloud_environment>-<8 hex of the metadata>`` (the SDK's cloud registry is
process-wide and keeps the first metadata given a name). The three public/sovereign clouds ignore
``cloud_metadata``; their code path is unchanged. Note that every ``MLClient`` also sets the SDK's
process-wide "current cloud" (environment variable ``AZUREML_CURRENT_CLOUD``), which a later
``MLClient`` built without ``cloud=`` (the public cloud here) follows: keep one cloud per process. The default chain takes its authority from the
environment as the provider's does (``AZURE_AUTHORITY_HOST``, set by the AKS workload-identity webhook;
``az cloud set`` for the CLI; managed identity needs none).

``azure.ai.ml`` costs ~1.5 s to import: it is imported inside methods only,
never when a DAG file is parsed.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
import time
from functools import cached_property
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from airflow.sdk.bases.hook import BaseHook

#: Job states after which Azure ML will not change the job any more.
TERMINAL_STATES = frozenset({"Completed", "Failed", "Canceled", "NotResponding", "Paused"})
#: Terminal states that mean "did not produce the outputs": a new job is needed.
FAILED_STATES = TERMINAL_STATES - {"Completed"}


def job_status(job) -> str:
    """A job's status as its plain name ("Completed").

    The SDK hands back a ``str``-based enum whose ``str()`` is "JobStatus.COMPLETED"
    and whose hash differs from the name's, so sets of names would not match it.
    """
    status = getattr(job, "status", job)
    return str(getattr(status, "value", status))


def job_event(job_name: str, status: str | None, *, end_time: float = 0.0, timeout: float = 0.0,
              now: float | None = None) -> dict[str, Any] | None:
    """What a wait for job ``job_name`` ends with, given its last ``status``; None while it may go on.

    The one place the wait is decided, for the operator's synchronous wait and the deferred trigger alike.

    :param job_name: the Azure ML job's name.
    :param status: its plain status name (``job_status``), None if never read.
    :param end_time: absolute deadline, epoch seconds (``time.time()``); 0 = none.
    :param timeout: the wait's length in seconds, only to word the timeout message.
    :param now: the current epoch time (default ``time.time()``).
    :return: ``{"status": "success"|"error"|"timeout", "job_name", "job_status", "message"}``: success for
        Completed, error for the other ``TERMINAL_STATES``, timeout when ``end_time`` has passed first;
        None when the job is still live and the deadline not reached.
    """
    if status in TERMINAL_STATES:
        return {"status": "success" if status == "Completed" else "error", "job_name": job_name,
                "job_status": status, "message": f"Azure ML job {job_name} ended {status}"}
    if end_time and (time.time() if now is None else now) >= end_time:
        return {"status": "timeout", "job_name": job_name, "job_status": status,
                "message": f"Azure ML job {job_name} still {status} after {timeout:.0f}s"}
    return None


def poll_delay(poll_interval: float, end_time: float = 0.0) -> float:
    """Seconds to sleep before the next status read: ``poll_interval``, cut short at ``end_time`` (epoch s; 0 = none)."""
    return poll_interval if not end_time else max(0.0, min(poll_interval, end_time - time.time()))


class AzureMLHook(BaseHook):
    """Azure ML workspace jobs through one cached ``MLClient`` per hook instance.

    :param azureml_conn_id: Airflow connection of the workspace (see the module docstring); default ``azure_ml``.
    :raises ValueError: (from ``get_conn``) when the connection lacks subscription/resource group/workspace
        extras, or a service principal lacks ``tenant_id``.
    """

    conn_name_attr = "azureml_conn_id"
    default_conn_name = "azure_ml"
    conn_type = "azure_ml"
    hook_name = "Azure ML workspace"

    REQUIRED_EXTRAS = ("subscription_id", "resource_group", "workspace_name")
    #: The provider's field name where it differs from ours (AzureBaseHook's camelCase extras).
    PROVIDER_ALIASES = {"subscription_id": "subscriptionId", "tenant_id": "tenantId"}
    #: ``cloud_environment`` (the provider's names) -> (``azure.identity`` authority host, ``MLClient`` cloud).
    CLOUDS = {
        "AzurePublicCloud": ("login.microsoftonline.com", "AzureCloud"),
        "AzureUSGovernment": ("login.microsoftonline.us", "AzureUSGovernment"),
        "AzureChinaCloud": ("login.chinacloudapi.cn", "AzureChinaCloud"),
    }

    def __init__(self, azureml_conn_id: str = default_conn_name):
        super().__init__()
        self.azureml_conn_id = azureml_conn_id
        quiet_sdk_logging()

    def _field(self, conn, name: str) -> str | None:
        """Extra ``name`` (or its provider alias), plain or ``extra__azure_ml__``-prefixed; "" counts as unset."""
        from airflow.providers.microsoft.azure.utils import get_field

        extras = conn.extra_dejson or {}
        for key in (name, self.PROVIDER_ALIASES.get(name)):
            if key and (value := get_field(conn_id=self.azureml_conn_id, conn_type="azure_ml", extras=extras,
                                           field_name=key)):
                return value
        return None

    def cloud(self, conn=None) -> tuple[str, str]:
        """``(authority host, MLClient cloud name)`` of the connection's ``cloud_environment`` (default public).

        A name not in ``CLOUDS`` is a custom cloud: ``(host of cloud_metadata's active_directory,
        "<name>-<8 hex of the metadata>")``.

        :raises ValueError: for a name not in ``CLOUDS`` without a usable ``cloud_metadata`` extra.
        """
        conn = conn or self.get_connection(self.azureml_conn_id)
        name = self._field(conn, "cloud_environment") or "AzurePublicCloud"
        if name in self.CLOUDS:
            return self.CLOUDS[name]
        metadata = self.cloud_metadata(conn)
        if metadata is None:
            raise ValueError(f"connection {self.azureml_conn_id!r}: cloud_environment {name!r} is not one of "
                             f"{sorted(self.CLOUDS)} and the connection has no 'cloud_metadata' extra for a custom cloud")
        digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()[:8]
        return urlsplit(metadata["active_directory"]).netloc, f"{name}-{digest}"

    #: The ``cloud_metadata`` keys azure-ai-ml requires of a custom cloud (its ``EndpointURLS``).
    CLOUD_METADATA_KEYS = ("azure_portal", "resource_manager", "active_directory", "aml_resource_id",
                           "storage_endpoint", "registry_discovery_endpoint")

    def cloud_metadata(self, conn=None) -> dict[str, str] | None:
        """The custom cloud's endpoints (extra ``cloud_metadata``, a dict or its JSON text), None when not set.

        Only read for a ``cloud_environment`` outside ``CLOUDS``.

        :raises ValueError: when it is not a JSON object or lacks one of ``CLOUD_METADATA_KEYS``.
        """
        conn = conn or self.get_connection(self.azureml_conn_id)
        raw = self._field(conn, "cloud_metadata")
        if not raw:
            return None
        metadata = json.loads(raw) if isinstance(raw, str) else raw
        missing = [k for k in self.CLOUD_METADATA_KEYS if not isinstance(metadata, dict) or not metadata.get(k)]
        if missing:
            raise ValueError(f"connection {self.azureml_conn_id!r}: cloud_metadata lacks {missing}")
        return {k: metadata[k] for k in self.CLOUD_METADATA_KEYS}

    def _custom_cloud(self, conn) -> bool:
        return (self._field(conn, "cloud_environment") or "AzurePublicCloud") not in self.CLOUDS

    def credential_kind(self, conn=None) -> str:
        """``service_principal``, ``workload_identity``, ``managed_identity`` or ``default`` (module docstring).

        :raises ValueError: login/password without a tenant (extra ``tenant_id`` or ``tenantId``).
        """
        conn = conn or self.get_connection(self.azureml_conn_id)
        if conn.login and conn.password:
            if not self._field(conn, "tenant_id"):
                raise ValueError(f"connection {self.azureml_conn_id!r}: a service principal (login/password) needs extra 'tenant_id'")
            return "service_principal"
        if self._field(conn, "managed_identity_client_id"):
            return "workload_identity" if self._field(conn, "workload_identity_tenant_id") else "managed_identity"
        return "default"

    def get_credential(self, conn=None):
        """The connection's ``azure.identity`` credential, by ``credential_kind`` (see the module docstring).

        :raises ValueError: as ``credential_kind`` and ``cloud``.
        """
        conn = conn or self.get_connection(self.azureml_conn_id)
        kind, (authority, _) = self.credential_kind(conn), self.cloud(conn)
        if kind == "service_principal":
            from azure.identity import ClientSecretCredential

            custom = {"disable_instance_discovery": True} if self._custom_cloud(conn) else {}
            return ClientSecretCredential(tenant_id=self._field(conn, "tenant_id"), client_id=conn.login,
                                          client_secret=conn.password, authority=authority, **custom)
        if kind == "managed_identity":
            from azure.identity import ManagedIdentityCredential

            return ManagedIdentityCredential(client_id=self._field(conn, "managed_identity_client_id"))
        from airflow.providers.microsoft.azure.utils import get_sync_default_azure_credential

        return get_sync_default_azure_credential(
            managed_identity_client_id=self._field(conn, "managed_identity_client_id"),
            workload_identity_tenant_id=self._field(conn, "workload_identity_tenant_id"))

    def workspace_id(self, conn=None) -> str:
        """The workspace's ARM id, ``/subscriptions/<s>/resourceGroups/<rg>/providers/Microsoft.MachineLearningServices/workspaces/<ws>``.

        Read from the connection only (no call, no ``azure.ai.ml`` import). ValueError when an extra is missing.
        """
        sub, rg, ws = self._scope(conn or self.get_connection(self.azureml_conn_id))
        return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}"

    def _scope(self, conn) -> tuple[str, str, str]:
        values = {k: self._field(conn, k) for k in self.REQUIRED_EXTRAS}
        missing = [k for k, v in values.items() if not v]
        if missing:
            raise ValueError(f"connection {self.azureml_conn_id!r} lacks extra {missing} (see docs/azure_ml.md)")
        return values["subscription_id"], values["resource_group"], values["workspace_name"]

    def get_conn(self):
        """The workspace's ``MLClient``, built once per hook instance (``client``)."""
        return self.client

    @cached_property
    def client(self):
        """The workspace's ``MLClient`` in the connection's cloud; ValueError when the connection lacks a required extra."""
        from azure.ai.ml import MLClient

        conn = self.get_connection(self.azureml_conn_id)
        sub, rg, ws = self._scope(conn)
        _, cloud = self.cloud(conn)
        if self._custom_cloud(conn):
            where = {"cloud": cloud, "cloud_metadata": self.cloud_metadata(conn)}
        else:
            where = {} if cloud == "AzureCloud" else {"cloud": cloud}
        return MLClient(credential=self.get_credential(conn), subscription_id=sub, resource_group_name=rg,
                        workspace_name=ws, **where)

    def test_connection(self) -> tuple[bool, str]:
        """``(ok, message)`` for the UI's Test button; never raises."""
        try:
            client = self.get_conn()
            ws = client.workspaces.get(client.workspace_name)
            return True, f"workspace {ws.name} in {ws.location} reachable"
        except Exception as exc:  # report, never raise: this backs the UI's Test button
            return False, f"{type(exc).__name__}: {exc}"

    # --- jobs ------------------------------------------------------------------------

    def get_job(self, name: str):
        """The job entity called ``name``; ``azure.core.exceptions.ResourceNotFoundError`` when there is none."""
        return self.get_conn().jobs.get(name)

    def get_job_status(self, name: str) -> str:
        """The job's plain status name (e.g. "Running"); raises as ``get_job``."""
        return job_status(self.get_job(name))

    async def get_job_status_async(self, name: str) -> str:
        """``get_job_status`` in a worker thread (the SDK has no async client), for the trigger."""
        return await asyncio.to_thread(self.get_job_status, name)

    def wait_for_job(self, name: str, poll_interval: float, end_time: float = 0.0, timeout: float = 0.0,
                     log: Callable[..., Any] | None = None) -> dict[str, Any]:
        """Poll job ``name`` every ``poll_interval`` seconds until ``job_event`` decides; returns that event.

        :param end_time: absolute deadline, epoch seconds; 0 = wait for ever.
        :param timeout: the wait's length in seconds, for the timeout message only.
        :param log: called as ``log(fmt, name, status)`` on each status change (default: this hook's log).
        :raises: whatever ``get_job`` raises (SDK/auth errors).
        """
        log = log or self.log.info
        last = None
        while True:
            status = self.get_job_status(name)
            if status != last:
                log("Azure ML job %s: %s", name, status)
                last = status
            event = job_event(name, status, end_time=end_time, timeout=timeout)
            if event is not None:
                return event
            time.sleep(poll_delay(poll_interval, end_time))

    def find_job(self, name: str):
        """The job called ``name``, or None when there is none."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.get_job(name)
        except ResourceNotFoundError:
            return None

    def submit_job(self, job):
        """Submit ``job`` (a ``command()`` node or job entity); returns the created job entity."""
        return self.get_conn().jobs.create_or_update(job)

    def cancel_job(self, name: str) -> None:
        """Ask Azure ML to cancel job ``name`` (does not wait for it to end)."""
        self.get_conn().jobs.begin_cancel(name)

    def job_log_tail(self, name: str, lines: int = 40) -> str:
        """The last ``lines`` of the job's user log (std_log*.txt), or why there is none.

        Uses ``jobs.download`` (logs and default outputs only, not the named
        outputs), which Azure ML allows for terminal jobs.
        """
        try:
            with tempfile.TemporaryDirectory(prefix="aml-logs-") as tmp:
                self.get_conn().jobs.download(name, download_path=tmp)
                logs = sorted(Path(tmp).rglob("std_log*.txt")) or sorted(Path(tmp).rglob("*.txt"))
                if not logs:
                    return "(no log files in the job's artifacts)"
                text = "\n".join(f"== {p.relative_to(tmp)} ==\n" + p.read_text(errors="replace") for p in logs)
                return "\n".join(text.splitlines()[-lines:])
        except Exception as exc:  # a missing log must not hide the job's real failure
            return f"(could not fetch the job's log: {type(exc).__name__}: {exc})"


#: The loggers that write several lines per Azure ML call at INFO: the SDK's HTTP logging policy (request and
#: response headers) and azure-identity's token cache ("get_token succeeded").
SDK_CHATTY_LOGGERS = ("azure.core.pipeline.policies.http_logging_policy", "azure.identity")


def quiet_sdk_logging() -> None:
    """Set :data:`SDK_CHATTY_LOGGERS` to ``$AZURE_HTTP_LOGGING_LEVEL`` (default WARNING), as the provider's
    ``WasbHook`` does for the first: otherwise every poll of a job writes ~4 INFO lines into the task and
    trigger logs. An invalid level falls back to WARNING."""
    import logging
    import os

    for name in SDK_CHATTY_LOGGERS:
        try:
            logging.getLogger(name).setLevel(os.environ.get("AZURE_HTTP_LOGGING_LEVEL", logging.WARNING))
        except ValueError:
            logging.getLogger(name).setLevel(logging.WARNING)
    # "Class AutoDeleteSettingSchema: This is an experimental class ..." once per class per job built: about
    # the SDK's own schema classes, nothing a DAG's user can act on
    logging.getLogger("azure.ai.ml._utils._experimental").setLevel(logging.ERROR)
