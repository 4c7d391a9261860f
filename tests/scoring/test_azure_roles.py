"""scoring.azure_roles: which identity needs which role on which scope, as az commands (no Azure)."""
from __future__ import annotations

from batch_scoring.scoring.azure_roles import format_roles, role_assignments

CONTAINERS = {"aggregates": "aggregates", "models": "models", "predictions": "predictions"}
WHERE = dict(subscription="sub", resource_group="rg", workspace="ws", storage_account="acct",
             storage_resource_group=None, compute="cpu-scoring", containers=CONTAINERS)
STORAGE = "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct"
WORKSPACE = "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"


def test_roles_of_each_identity_for_identity_based_datastores():
    roles = role_assignments(**WHERE, compute_identity="system_assigned", compute_principal="pid-1",
                             identity_datastores=True)
    assert [(r.principal, r.role, r.scope) for r in roles] == [
        ("pid-1", "Storage Blob Data Reader", f"{STORAGE}/blobServices/default/containers/aggregates"),
        ("pid-1", "Storage Blob Data Reader", f"{STORAGE}/blobServices/default/containers/models"),
        ("pid-1", "Storage Blob Data Contributor", f"{STORAGE}/blobServices/default/containers/predictions"),
        ("<principal id of the azure_ml connection's service principal or managed identity>",
         "AzureML Data Scientist", WORKSPACE),
        ("<principal id: az ml workspace show -n ws --query identity.principal_id>", "Storage Blob Data Reader", STORAGE),
    ]
    text = format_roles(roles)
    assert text.splitlines()[:2] == [
        "# compute cluster cpu-scoring (system-assigned identity: the jobs): Storage Blob Data Reader",
        "az role assignment create --assignee-object-id pid-1 --assignee-principal-type ServicePrincipal "
        f'--role "Storage Blob Data Reader" --scope {STORAGE}/blobServices/default/containers/aggregates']


def test_account_key_datastores_need_no_storage_role_for_the_jobs_and_placeholders_say_where():
    uai = "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u"
    roles = role_assignments(**{**WHERE, "storage_resource_group": "rg-data"}, compute_identity=uai,
                             compute_principal=None, identity_datastores=False)
    assert [r.role for r in roles] == ["AzureML Data Scientist", "Storage Blob Data Reader"]
    assert roles[1].scope.startswith("/subscriptions/sub/resourceGroups/rg-data/")
    roles = role_assignments(**WHERE, compute_identity=uai, compute_principal=None, identity_datastores=True)
    assert roles[0].principal == f"<principal id: az identity show --ids {uai} --query principalId>"
    assert "user-assigned identity" in roles[0].who
