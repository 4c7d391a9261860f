"""Azure ML workspace client (``MLClient``) from an Airflow connection.

The microsoft-azure provider has no Azure ML hook, so this one follows its
conventions. Connection (any ``conn_type``, e.g. ``generic``)::

    login     service principal client id      (optional)
    password  service principal secret         (optional)
    extra     {"subscription_id": "...", "resource_group": "...", "workspace_name": "...",
               "tenant_id": "...",                       # with login/password
               "managed_identity_client_id": "..."}     # optional, user-assigned identity

With login/password (and tenant_id) the hook uses ``ClientSecretCredential``;
otherwise ``DefaultAzureCredential`` (workload identity on AKS, managed
identity on a VM, the Azure CLI login on a laptop).

``azure.ai.ml`` costs ~1.5 s to import: it is imported inside methods only,
never when a DAG file is parsed.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

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


class AzureMLHook(BaseHook):
    conn_name_attr = "azureml_conn_id"
    default_conn_name = "azure_ml"
    conn_type = "azure_ml"
    hook_name = "Azure ML workspace"

    REQUIRED_EXTRAS = ("subscription_id", "resource_group", "workspace_name")

    def __init__(self, azureml_conn_id: str = default_conn_name):
        super().__init__()
        self.azureml_conn_id = azureml_conn_id
        self._client = None

    @staticmethod
    def _extra(conn) -> dict:
        extra = dict(conn.extra_dejson or {})
        # Accept the provider-style prefixed keys too (extra__azure_ml__subscription_id).
        for key in list(extra):
            if key.startswith("extra__azure_ml__"):
                extra.setdefault(key[len("extra__azure_ml__"):], extra[key])
        return extra

    def get_credential(self, conn=None):
        conn = conn or self.get_connection(self.azureml_conn_id)
        extra = self._extra(conn)
        if conn.login and conn.password:
            from azure.identity import ClientSecretCredential

            tenant = extra.get("tenant_id")
            if not tenant:
                raise ValueError(f"connection {self.azureml_conn_id!r}: a service principal (login/password) needs extra 'tenant_id'")
            return ClientSecretCredential(tenant_id=tenant, client_id=conn.login, client_secret=conn.password)
        from azure.identity import DefaultAzureCredential

        kwargs = {}
        if extra.get("managed_identity_client_id"):
            kwargs["managed_identity_client_id"] = extra["managed_identity_client_id"]
            kwargs["workload_identity_client_id"] = extra["managed_identity_client_id"]
        return DefaultAzureCredential(**kwargs)

    def get_conn(self):
        """The workspace's ``MLClient`` (cached per hook instance)."""
        if self._client is None:
            from azure.ai.ml import MLClient

            conn = self.get_connection(self.azureml_conn_id)
            extra = self._extra(conn)
            missing = [k for k in self.REQUIRED_EXTRAS if not extra.get(k)]
            if missing:
                raise ValueError(f"connection {self.azureml_conn_id!r} lacks extra {missing} (see docs/azure_ml.md)")
            self._client = MLClient(
                credential=self.get_credential(conn),
                subscription_id=extra["subscription_id"],
                resource_group_name=extra["resource_group"],
                workspace_name=extra["workspace_name"],
            )
        return self._client

    def test_connection(self) -> tuple[bool, str]:
        try:
            client = self.get_conn()
            ws = client.workspaces.get(client.workspace_name)
            return True, f"workspace {ws.name} in {ws.location} reachable"
        except Exception as exc:  # report, never raise: this backs the UI's Test button
            return False, f"{type(exc).__name__}: {exc}"

    # --- jobs ------------------------------------------------------------------------

    def get_job(self, name: str):
        return self.get_conn().jobs.get(name)

    def get_job_status(self, name: str) -> str:
        return job_status(self.get_job(name))

    def find_job(self, name: str):
        """The job called ``name``, or None when there is none."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.get_job(name)
        except ResourceNotFoundError:
            return None

    def submit_job(self, job):
        return self.get_conn().jobs.create_or_update(job)

    def cancel_job(self, name: str) -> None:
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
