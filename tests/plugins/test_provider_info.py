"""The provider entry point: what Airflow's ProvidersManager, DAG serializer and REST API make of it.

The checkout is installed (editable) like the wheel, so the entry point is the
real one; tests/packaging/test_installed_wheel.py checks the same from the wheel.
"""
from __future__ import annotations

import json

import pytest

AZUREML_EXTRA = {"subscription_id": "00000000-0000-0000-0000-000000000000", "resource_group": "rg", "workspace_name": "ws"}


@pytest.fixture(scope="module")
def providers():
    from airflow.providers_manager import ProvidersManager

    return ProvidersManager()


def test_provider_info_passes_airflows_schema_and_names_the_distribution(providers):
    from importlib.metadata import version

    from batch_scoring.provider_info import DISTRIBUTION, get_provider_info

    info = providers.providers[DISTRIBUTION]  # listed only if it validated against provider_info.schema.json
    assert info.version == version(DISTRIBUTION) == get_provider_info()["versions"][0]
    assert info.data["package-name"] == DISTRIBUTION
    assert info.data["triggers"] == [{"integration-name": "Azure Machine Learning (batch scoring)",
                                      "python-modules": ["batch_scoring.triggers.azure_ml"]}]


def test_azure_ml_connection_type_maps_to_our_hook_with_its_form(providers):
    hook = providers.hooks["azure_ml"]
    assert hook.hook_class_name == "batch_scoring.hooks.azure_ml.AzureMLHook"
    assert hook.connection_testable and hook.hook_name == "Azure ML workspace"
    fields = {k.removeprefix("extra__azure_ml__"): v for k, v in providers.connection_form_widgets.items()
              if k.startswith("extra__azure_ml__")}
    assert set(fields) == {"subscription_id", "resource_group", "workspace_name", "tenant_id",
                           "managed_identity_client_id", "workload_identity_tenant_id", "cloud_environment",
                           "cloud_metadata"}
    assert fields["workspace_name"].field["schema"]["title"] == "Workspace name"
    assert not any(f.is_sensitive for f in fields.values())  # no secret in an extra; the secret is the password
    behaviour = providers.field_behaviours["azure_ml"]
    assert behaviour["hidden_fields"] == ["host", "schema", "port"]
    assert behaviour["relabeling"]["password"] == "Client secret (service principal)"


def test_the_connections_fields_are_the_ones_the_hook_reads():
    """The form may not offer a field the hook ignores, nor miss one it needs."""
    from batch_scoring.hooks.azure_ml import AzureMLHook
    from batch_scoring.provider_info import get_provider_info

    (conn_type,) = get_provider_info()["connection-types"]
    source = __import__("inspect").getsource(AzureMLHook)
    for name in conn_type["conn-fields"]:
        assert f'"{name}"' in source, name
    assert set(AzureMLHook.REQUIRED_EXTRAS) <= set(conn_type["conn-fields"])


def test_extra_link_is_registered_and_survives_dag_serialization(providers, airflow_db):
    """Listed by the provider, and in the serialized DAG the API server reads the task's links from."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    from devstack.services import REPO

    assert "batch_scoring.links.azure_ml.AzureMLJobLink" in providers.extra_links_class_names
    dag = DagBag(dag_folder=str(REPO / "dags")).dags["batch_scoring"]
    again = DagSerialization.from_dict(json.loads(json.dumps(DagSerialization.to_dict(dag))))
    assert list(again.get_task("score").extra_links) == ["Azure ML job"]


def test_the_test_button_runs_our_hooks_test_connection(monkeypatch, airflow_db):
    """``Connection.test_connection`` (what the API's /connections/test calls) resolves azure_ml to AzureMLHook."""
    from types import SimpleNamespace

    from airflow.models.connection import Connection
    from azure.ai.ml.operations import WorkspaceOperations

    monkeypatch.setattr(WorkspaceOperations, "get",
                        lambda self, name=None, **kw: SimpleNamespace(name=name, location="westeurope"))
    conn = Connection(conn_id="aml_button", conn_type="azure_ml", login="client", password="secret",
                      extra=json.dumps({**AZUREML_EXTRA, "tenant_id": "t"}))
    monkeypatch.setenv("AIRFLOW_CONN_AML_BUTTON", conn.as_json())
    assert conn.test_connection() == (True, "workspace ws in westeurope reachable")
    bad = Connection(conn_id="aml_button", conn_type="azure_ml", extra=json.dumps({"subscription_id": "s"}))
    monkeypatch.setenv("AIRFLOW_CONN_AML_BUTTON", bad.as_json())
    ok, message = bad.test_connection()
    assert not ok and message == ("ValueError: connection 'aml_button' lacks extra ['resource_group', 'workspace_name'] "
                                  "(see docs/azure_ml.md)")


@pytest.mark.slow
def test_the_rest_apis_connection_test_reaches_our_hook(standalone_airflow):
    """POST /api/v2/connections/test on the running api-server, as the UI's Test button sends it (no Azure reached)."""
    res = standalone_airflow.request("POST", "/api/v2/connections/test", {
        "connection_id": "aml_ui", "conn_type": "azure_ml", "extra": json.dumps({"subscription_id": "s"})})
    assert res["status"] is False
    assert "lacks extra ['resource_group', 'workspace_name']" in res["message"], res
