"""What Airflow learns about this package from its ``apache_airflow_provider`` entry point.

Airflow's ``ProvidersManager`` calls :func:`get_provider_info` in every process
that lists providers (``airflow providers list``, the API server building the
connection form and testing connections) and validates the
dict against ``airflow/provider_info.schema.json``. Registered here:

* the ``azure_ml`` connection type (``AzureMLHook``): its form fields
  (``conn-fields``, JSON-schema, Airflow 3.2+'s declarative form: no Flask or
  wtforms import) and field behaviour, so the UI offers the type and its *Test*
  button calls ``AzureMLHook.test_connection``;
* the Azure ML trigger module (the triggerer imports it by path from a trigger's
  serialized classpath; listing it documents the package's triggers);
* the "Azure ML job" extra link (``ProvidersManager.extra_links_class_names``;
  Airflow 3 serializes a task's links by name and XCom key, so the UI shows it
  from the serialized DAG either way).

Nothing is imported here beyond the standard library: providers are listed in
every Airflow process.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

#: The distribution's name (``pyproject.toml``); Airflow requires ``package-name`` to match it.
DISTRIBUTION = "airflow-provider-batch-scoring"
INTEGRATION = "Azure Machine Learning (batch scoring)"

_OPTIONAL = {"type": ["string", "null"]}


def _field(label: str, description: str) -> dict:
    """One optional text field of the connection form (``conn-fields`` entry)."""
    return {"label": label, "description": description, "schema": dict(_OPTIONAL)}


def get_provider_info() -> dict:
    """The provider info dict (``airflow/provider_info.schema.json``'s runtime shape).

    ``versions`` holds the installed distribution's version (empty when run from a
    checkout that was never installed).
    """
    try:
        versions = [version(DISTRIBUTION)]
    except PackageNotFoundError:
        versions = []
    return {
        "package-name": DISTRIBUTION,
        "name": "Batch scoring (Azure ML)",
        "description": "Scheduled many-model batch scoring on Azure ML: the batch scoring DAG, the Azure ML "
                       "workspace hook and connection type, the job trigger and its extra link.",
        "versions": versions,
        "integrations": [{"integration-name": INTEGRATION,
                          "external-doc-url": "https://learn.microsoft.com/azure/machine-learning/",
                          "tags": ["azure"]}],
        "hooks": [{"integration-name": INTEGRATION, "python-modules": ["batch_scoring.hooks.azure_ml",
                                                                       "batch_scoring.hooks.blob_storage",
                                                                       "batch_scoring.hooks.sql"]}],
        "operators": [{"integration-name": INTEGRATION, "python-modules": ["batch_scoring.operators.azure_ml",
                                                                           "batch_scoring.operators.score_unit",
                                                                           "batch_scoring.operators.freshness"]}],
        "triggers": [{"integration-name": INTEGRATION, "python-modules": ["batch_scoring.triggers.azure_ml"]}],
        "extra-links": ["batch_scoring.links.azure_ml.AzureMLJobLink"],
        "connection-types": [{
            "connection-type": "azure_ml",
            "hook-class-name": "batch_scoring.hooks.azure_ml.AzureMLHook",
            "hook-name": "Azure ML workspace",
            "ui-field-behaviour": {
                "hidden-fields": ["host", "schema", "port"],
                "relabeling": {"login": "Client ID (service principal)",
                               "password": "Client secret (service principal)"},
                "placeholders": {
                    "login": "empty: managed identity, workload identity or DefaultAzureCredential",
                    "subscription_id": "00000000-0000-0000-0000-000000000000",
                    "resource_group": "rg-scoring",
                    "workspace_name": "mlw-scoring",
                    "cloud_environment": "AzurePublicCloud (default) | AzureUSGovernment | AzureChinaCloud",
                },
            },
            "conn-fields": {
                "subscription_id": _field("Subscription ID", "Azure subscription of the workspace (required)"),
                "resource_group": _field("Resource group", "resource group of the workspace (required)"),
                "workspace_name": _field("Workspace name", "Azure ML workspace (required)"),
                "tenant_id": _field("Tenant ID", "Microsoft Entra tenant of the service principal"),
                "managed_identity_client_id": _field(
                    "Managed identity client ID", "user-assigned managed identity, or the workload identity's client"),
                "workload_identity_tenant_id": _field(
                    "Workload identity tenant ID", "with the client ID above: workload identity on AKS"),
                "cloud_environment": _field(
                    "Cloud environment", "AzurePublicCloud (default), AzureUSGovernment, AzureChinaCloud, or a custom "
                    "cloud's name"),
                "cloud_metadata": _field(
                    "Custom cloud endpoints (JSON)", "only for a custom cloud (Azure Stack, private, the local emulator): "
                    "resource_manager, active_directory, azure_portal, aml_resource_id, storage_endpoint, "
                    "registry_discovery_endpoint"),
            },
        }],
    }
