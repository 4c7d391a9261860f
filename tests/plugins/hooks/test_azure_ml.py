"""AzureMLHook without a service: credentials, one cached MLClient, the shared status->event decision and the wait."""
from __future__ import annotations

import json

import pytest


def _conn(monkeypatch, **fields):
    monkeypatch.setenv("AIRFLOW_CONN_AML_TEST", json.dumps({"conn_type": "generic", **fields}))


EXTRA = {"subscription_id": "sub-1", "resource_group": "rg-1", "workspace_name": "ws-1"}


def test_hook_service_principal(monkeypatch):
    """login/password + tenant -> ClientSecretCredential on the public cloud (the provider's tenantId works too)."""
    from azure.identity import ClientSecretCredential

    from batch_scoring.hooks.azure_ml import AzureMLHook

    for tenant_key in ("tenant_id", "tenantId", "extra__azure_ml__tenant_id"):
        _conn(monkeypatch, login="client-1", password="secret-1", extra={**EXTRA, tenant_key: "tenant-1"})
        hook = AzureMLHook("aml_test")
        assert hook.credential_kind() == "service_principal"
        client = hook.get_conn()
        assert (client.subscription_id, client.resource_group_name, client.workspace_name) == ("sub-1", "rg-1", "ws-1")
        cred = client._credential
        assert isinstance(cred, ClientSecretCredential)
        assert cred._client_id == "client-1" and cred._tenant_id == "tenant-1"
        assert cred._authority == "https://login.microsoftonline.com"
        assert client._cloud == "AzureCloud"


@pytest.mark.parametrize("cloud,authority,aml_cloud,arm", [
    ("AzureUSGovernment", "https://login.microsoftonline.us", "AzureUSGovernment", "https://management.usgovcloudapi.net"),
    ("AzureChinaCloud", "https://login.chinacloudapi.cn", "AzureChinaCloud", "https://management.chinacloudapi.cn"),
])
def test_hook_sovereign_cloud(monkeypatch, cloud, authority, aml_cloud, arm):
    """The provider's cloud_environment extra -> the service principal's authority and the MLClient's cloud."""
    from batch_scoring.hooks.azure_ml import AzureMLHook

    _conn(monkeypatch, login="c", password="p", extra={**EXTRA, "tenant_id": "t", "cloud_environment": cloud})
    client = AzureMLHook("aml_test").get_conn()
    assert client._credential._authority == authority
    assert client._cloud == aml_cloud and client._base_url.startswith(arm)


def test_hook_refuses_an_unknown_cloud(monkeypatch):
    from batch_scoring.hooks.azure_ml import AzureMLHook

    _conn(monkeypatch, extra={**EXTRA, "cloud_environment": "AzureGermanCloud"})
    with pytest.raises(ValueError, match="cloud_environment 'AzureGermanCloud' is not one of"):
        AzureMLHook("aml_test").get_conn()


CUSTOM = {"azure_portal": "https://portal.stack.example/", "resource_manager": "https://management.stack.example/",
          "active_directory": "https://login.stack.example/", "aml_resource_id": "https://ml.stack.example/",
          "storage_endpoint": "stack.example", "registry_discovery_endpoint": "https://registry.stack.example/"}


@pytest.mark.parametrize("as_text", [False, True])
def test_hook_custom_cloud_takes_every_endpoint_from_cloud_metadata(monkeypatch, as_text):
    """A cloud_environment outside CLOUDS + cloud_metadata: the MLClient's ARM base, the authority host, no
    instance discovery at login.microsoftonline.com (azure-identity's setting for Azure Stack-like authorities)."""
    from batch_scoring.hooks.azure_ml import AzureMLHook

    monkeypatch.setenv("AZUREML_CURRENT_CLOUD", "")  # recorded, so the test's value is undone after it
    monkeypatch.delenv("AZUREML_CURRENT_CLOUD")  # (every MLClient sets this process-wide variable)
    metadata = json.dumps(CUSTOM) if as_text else CUSTOM
    _conn(monkeypatch, login="c", password="p",
          extra={**EXTRA, "tenant_id": "t", "cloud_environment": "AzureStackLab", "cloud_metadata": metadata})
    hook = AzureMLHook("aml_test")
    assert hook.cloud()[0] == "login.stack.example"
    client = hook.get_conn()
    assert client._cloud.startswith("AzureStackLab-") and client._base_url.startswith("https://management.stack.example")
    assert client._credential._authority == "https://login.stack.example"
    assert client._credential._instance_discovery is False
    from azure.ai.ml._azure_environments import _get_cloud

    assert _get_cloud(client._cloud)["storage_endpoint"] == "stack.example"
    # other endpoints under the same name are another cloud: the SDK's process-wide registry never mixes them up
    _conn(monkeypatch, login="c", password="p", extra={**EXTRA, "tenant_id": "t", "cloud_environment": "AzureStackLab",
                                                       "cloud_metadata": {**CUSTOM, "resource_manager": "https://arm2.example/"}})
    other = AzureMLHook("aml_test").get_conn()
    assert other._cloud != client._cloud and other._base_url.startswith("https://arm2.example")


def test_hook_public_and_sovereign_clouds_ignore_cloud_metadata(monkeypatch):
    """Production paths unchanged: the three clouds never read cloud_metadata nor turn instance discovery off."""
    from batch_scoring.hooks.azure_ml import AzureMLHook

    for cloud, base in (("AzurePublicCloud", "https://management.azure.com"),
                        ("AzureUSGovernment", "https://management.usgovcloudapi.net")):
        monkeypatch.setenv("AZUREML_CURRENT_CLOUD", "")  # recorded, so the test's value is undone after it
        monkeypatch.delenv("AZUREML_CURRENT_CLOUD")  # (every MLClient sets this process-wide variable)
        _conn(monkeypatch, login="c", password="p",
              extra={**EXTRA, "tenant_id": "t", "cloud_environment": cloud, "cloud_metadata": {"junk": 1}})
        client = AzureMLHook("aml_test").get_conn()
        assert client._base_url.startswith(base)
        assert client._credential._instance_discovery is None


def test_hook_custom_cloud_needs_complete_metadata(monkeypatch):
    from batch_scoring.hooks.azure_ml import AzureMLHook

    _conn(monkeypatch, extra={**EXTRA, "cloud_environment": "AzureStackLab",
                              "cloud_metadata": {k: v for k, v in CUSTOM.items() if k != "active_directory"}})
    with pytest.raises(ValueError, match=r"cloud_metadata lacks \['active_directory'\]"):
        AzureMLHook("aml_test").get_conn()


def _spy_default(monkeypatch):
    """Record the keyword arguments of every DefaultAzureCredential the provider's helper builds."""
    import azure.identity
    from airflow.providers.microsoft.azure import utils

    made = []

    class Spy(azure.identity.DefaultAzureCredential):
        def __init__(self, **kwargs):
            made.append(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(utils, "DefaultAzureCredential", Spy)
    return Spy, made


def test_hook_managed_identity(monkeypatch):
    """managed_identity_client_id alone (a user-assigned identity on a VM/cluster) -> ManagedIdentityCredential."""
    from azure.identity import ManagedIdentityCredential

    from batch_scoring.hooks.azure_ml import AzureMLHook

    _conn(monkeypatch, extra={**EXTRA, "managed_identity_client_id": "mi-1"})
    hook = AzureMLHook("aml_test")
    assert hook.credential_kind() == "managed_identity"
    cred = hook.get_conn()._credential
    assert isinstance(cred, ManagedIdentityCredential)
    assert cred._credential._settings["client_id"] == "mi-1"  # IMDS here; the AKS webhook's token file would switch it


def test_hook_workload_identity_uses_the_providers_helper(monkeypatch):
    """managed_identity_client_id + workload_identity_tenant_id (AKS) -> the provider's DefaultAzureCredential."""
    from batch_scoring.hooks.azure_ml import AzureMLHook

    spy, made = _spy_default(monkeypatch)
    _conn(monkeypatch, extra={**EXTRA, "managed_identity_client_id": "mi-1", "workload_identity_tenant_id": "ten-1"})
    hook = AzureMLHook("aml_test")
    assert hook.credential_kind() == "workload_identity"
    assert isinstance(hook.get_conn()._credential, spy)
    assert made == [{"managed_identity_client_id": "mi-1", "workload_identity_tenant_id": "ten-1",
                     "additionally_allowed_tenants": ["ten-1"]}]


def test_hook_default_credential_chain(monkeypatch):
    """No login, no identity named (the Azure CLI on a laptop, env vars, ...) -> DefaultAzureCredential()."""
    from batch_scoring.hooks.azure_ml import AzureMLHook

    spy, made = _spy_default(monkeypatch)
    for extra in (EXTRA, {**EXTRA, "workload_identity_tenant_id": "ten-1"}, {**EXTRA, "managed_identity_client_id": ""}):
        _conn(monkeypatch, extra=extra)
        hook = AzureMLHook("aml_test")
        assert hook.credential_kind() == "default"
        assert isinstance(hook.get_credential(), spy)
    assert made == [{}, {}, {}]


def test_hook_workspace_id_needs_no_client(monkeypatch):
    from batch_scoring.hooks.azure_ml import AzureMLHook

    _conn(monkeypatch, extra={"subscriptionId": "sub-1", "extra__azure_ml__resource_group": "rg-1",
                              "workspace_name": "ws-1"})
    assert AzureMLHook("aml_test").workspace_id() == (
        "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.MachineLearningServices/workspaces/ws-1")


def test_hook_refuses_incomplete_connections(monkeypatch):
    from batch_scoring.hooks.azure_ml import AzureMLHook

    _conn(monkeypatch, extra={"subscription_id": "s"})
    with pytest.raises(ValueError, match=r"lacks extra \['resource_group', 'workspace_name'\]"):
        AzureMLHook("aml_test").get_conn()
    _conn(monkeypatch, login="c", password="p", extra=EXTRA)
    with pytest.raises(ValueError, match="tenant_id"):
        AzureMLHook("aml_test").get_conn()


def test_hook_test_connection_reports_failure(monkeypatch):
    from azure.ai.ml.operations import WorkspaceOperations

    from batch_scoring.hooks.azure_ml import AzureMLHook

    _conn(monkeypatch, login="c", password="p", extra={**EXTRA, "tenant_id": "t"})

    def boom(self, name=None, **kw):
        raise PermissionError(f"no access to {name}")

    monkeypatch.setattr(WorkspaceOperations, "get", boom)
    ok, msg = AzureMLHook("aml_test").test_connection()
    assert not ok and msg == "PermissionError: no access to ws-1"

    from types import SimpleNamespace

    monkeypatch.setattr(WorkspaceOperations, "get", lambda self, name=None, **kw: SimpleNamespace(name=name, location="westeurope"))
    assert AzureMLHook("aml_test").test_connection() == (True, "workspace ws-1 in westeurope reachable")



def test_hook_builds_one_mlclient_per_hook(monkeypatch):
    import azure.ai.ml

    from batch_scoring.hooks.azure_ml import AzureMLHook

    made = []

    class Spy(azure.ai.ml.MLClient):
        def __init__(self, **kwargs):
            made.append(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(azure.ai.ml, "MLClient", Spy)
    _conn(monkeypatch, login="c", password="p", extra={**EXTRA, "tenant_id": "t"})
    hook = AzureMLHook("aml_test")
    assert hook.get_conn() is hook.get_conn() is hook.client
    assert len(made) == 1
    AzureMLHook("aml_test").get_conn()  # another hook, another client
    assert len(made) == 2


TERMINAL = {"Completed": "success", "Failed": "error", "Canceled": "error", "NotResponding": "error",
            "Paused": "error"}


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_job_event_for_every_terminal_state(status):
    from batch_scoring.hooks.azure_ml import FAILED_STATES, TERMINAL_STATES, job_event

    assert set(TERMINAL) == TERMINAL_STATES and FAILED_STATES == TERMINAL_STATES - {"Completed"}
    # terminal wins over a passed deadline: the job's outcome is known
    for end_time in (0.0, 1.0):
        assert job_event("j", status, end_time=end_time, timeout=5, now=100.0) == {
            "status": TERMINAL[status], "job_name": "j", "job_status": status,
            "message": f"Azure ML job j ended {status}"}


@pytest.mark.parametrize("status", ["NotStarted", "Queued", "Preparing", "Running", "CancelRequested", None])
def test_job_event_for_live_states_waits_until_the_deadline(status):
    from batch_scoring.hooks.azure_ml import job_event

    assert job_event("j", status, end_time=0.0, now=1e12) is None  # no deadline
    assert job_event("j", status, end_time=200.0, timeout=60, now=199.9) is None
    assert job_event("j", status, end_time=200.0, timeout=60, now=200.0) == {
        "status": "timeout", "job_name": "j", "job_status": status,
        "message": f"Azure ML job j still {status} after 60s"}


def test_wait_for_job_polls_until_terminal_and_logs_changes(monkeypatch):
    from batch_scoring.hooks import azure_ml

    states = iter(["Queued", "Queued", "Running", "Completed"])
    monkeypatch.setattr(azure_ml.AzureMLHook, "get_job_status", lambda self, name: next(states))
    seen = []
    event = azure_ml.AzureMLHook("x").wait_for_job("j", 0.001, log=lambda fmt, *a: seen.append(a))
    assert event["status"] == "success" and event["job_status"] == "Completed"
    assert seen == [("j", "Queued"), ("j", "Running"), ("j", "Completed")]


def test_wait_for_job_stops_at_the_absolute_end_time(monkeypatch):
    import time

    from batch_scoring.hooks import azure_ml

    monkeypatch.setattr(azure_ml.AzureMLHook, "get_job_status", lambda self, name: "Running")
    started = time.time()
    event = azure_ml.AzureMLHook("x").wait_for_job("j", 30.0, end_time=started + 0.2, timeout=0.2,
                                                  log=lambda *a: None)
    assert event["status"] == "timeout" and event["job_status"] == "Running"
    assert 0.2 <= time.time() - started < 5  # the sleep is cut short at the deadline, not a whole poll interval


def test_the_hook_quiets_the_sdks_chatty_loggers(monkeypatch):
    """Per-request headers and token lines (AZURE_HTTP_LOGGING_LEVEL, default WARNING, as WasbHook) and the SDK's
    'experimental class' notices (ERROR) stay out of task and trigger logs."""
    import logging

    from batch_scoring.hooks.azure_ml import SDK_CHATTY_LOGGERS, AzureMLHook

    monkeypatch.delenv("AZURE_HTTP_LOGGING_LEVEL", raising=False)
    for name in (*SDK_CHATTY_LOGGERS, "azure.ai.ml._utils._experimental"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    AzureMLHook("azure_ml")
    assert [logging.getLogger(n).level for n in SDK_CHATTY_LOGGERS] == [logging.WARNING] * len(SDK_CHATTY_LOGGERS)
    assert logging.getLogger("azure.ai.ml._utils._experimental").level == logging.ERROR
    monkeypatch.setenv("AZURE_HTTP_LOGGING_LEVEL", "DEBUG")
    AzureMLHook("azure_ml")
    assert [logging.getLogger(n).level for n in SDK_CHATTY_LOGGERS] == [logging.DEBUG] * len(SDK_CHATTY_LOGGERS)
