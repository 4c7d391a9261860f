"""The Azure role assignments the batch_scoring identities need, as ``az role assignment create`` commands.

``scoring.azure_setup`` prints them after creating (or, with ``--dry-run``,
instead of creating) the workspace's entities: Azure ML does not grant them,
and a missing one only shows when the first job fails to mount a datastore.

Who needs what:

* the compute cluster's managed identity (every job runs as it, ``identity=managed``):
  **Storage Blob Data Reader** on the aggregates and models containers and
  **Storage Blob Data Contributor** on the predictions container, when the
  datastores are identity-based (the default; account-key datastores need none);
* Airflow's identity (the ``azure_ml`` connection): **AzureML Data Scientist**
  on the workspace (submit, get, cancel jobs, read the datastores);
* the workspace's own managed identity: **Storage Blob Data Reader** on the
  storage account (studio previews of identity-based datastores).

No Azure SDK and no Airflow here: plain text from the names.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RoleAssignment:
    """One role an identity needs on one scope.

    :param who: the identity in words (printed as a comment).
    :param principal: its principal (object) id, or a ``<placeholder>`` saying where to find it.
    :param role: the built-in role's name.
    :param scope: the ARM id the role is granted on.
    """

    who: str
    principal: str
    role: str
    scope: str

    def command(self) -> str:
        """The ``az role assignment create`` command granting it."""
        return (f'az role assignment create --assignee-object-id {self.principal} '
                f'--assignee-principal-type ServicePrincipal --role "{self.role}" --scope {self.scope}')


def workspace_scope(subscription: str | None, resource_group: str | None, workspace: str | None) -> str:
    """The Azure ML workspace's ARM id (``<placeholders>`` for names not given)."""
    return (f"/subscriptions/{subscription or '<subscription-id>'}/resourceGroups/{resource_group or '<resource-group>'}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{workspace or '<workspace>'}")


def storage_scope(subscription: str | None, resource_group: str | None, account: str | None,
                  container: str | None = None) -> str:
    """The storage account's ARM id, or one container's when ``container`` is given (``<placeholders>`` as above)."""
    scope = (f"/subscriptions/{subscription or '<subscription-id>'}/resourceGroups/{resource_group or '<resource-group>'}"
             f"/providers/Microsoft.Storage/storageAccounts/{account or '<storage-account>'}")
    return f"{scope}/blobServices/default/containers/{container}" if container else scope


def role_assignments(*, subscription: str | None, resource_group: str | None, workspace: str | None,
                     storage_account: str | None, storage_resource_group: str | None, compute: str,
                     compute_identity: str, compute_principal: str | None, containers: dict[str, str],
                     identity_datastores: bool) -> list[RoleAssignment]:
    """Every role the batch_scoring identities need (see the module docstring), compute's first.

    :param compute_identity: ``system_assigned`` or the ARM id of the cluster's user-assigned identity.
    :param compute_principal: the cluster identity's principal id when known (after creating it), else None.
    :param containers: ``{"aggregates": name, "models": name, "predictions": name}``.
    :param identity_datastores: False for account-key datastores: the jobs then need no storage role.
    """
    storage_rg = storage_resource_group or resource_group
    if compute_principal:
        principal = compute_principal
    elif compute_identity == "system_assigned":
        principal = f"<principal id: az ml compute show -n {compute} --query identity.principal_id>"
    else:
        principal = f"<principal id: az identity show --ids {compute_identity} --query principalId>"
    who = f"compute cluster {compute} ({'system-assigned' if compute_identity == 'system_assigned' else 'user-assigned'} identity: the jobs)"
    roles = []
    if identity_datastores:
        for kind, role in (("aggregates", "Storage Blob Data Reader"), ("models", "Storage Blob Data Reader"),
                           ("predictions", "Storage Blob Data Contributor")):
            roles.append(RoleAssignment(who, principal, role,
                                        storage_scope(subscription, storage_rg, storage_account, containers[kind])))
    roles.append(RoleAssignment("Airflow (the azure_ml connection's identity)",
                                "<principal id of the azure_ml connection's service principal or managed identity>",
                                "AzureML Data Scientist", workspace_scope(subscription, resource_group, workspace)))
    roles.append(RoleAssignment(f"workspace {workspace or '<workspace>'}'s managed identity (studio previews)",
                                f"<principal id: az ml workspace show -n {workspace or '<workspace>'} --query identity.principal_id>",
                                "Storage Blob Data Reader", storage_scope(subscription, storage_rg, storage_account)))
    return roles


def format_roles(roles: list[RoleAssignment]) -> str:
    """The roles as text: per assignment a ``# <who>: <role>`` comment and its ``az`` command."""
    return "".join(f"# {r.who}: {r.role}\n{r.command()}\n" for r in roles)


def roles_text(args, compute_principal: str | None = None) -> str:
    """The role assignments the identities of ``scoring.azure_setup``'s ``args`` need, as ``format_roles`` text.

    :param compute_principal: the cluster identity's principal id, once created (None: a placeholder).
    """
    return format_roles(role_assignments(
        subscription=args.subscription_id, resource_group=args.resource_group, workspace=args.workspace,
        storage_account=args.storage_account, storage_resource_group=args.storage_resource_group,
        compute=args.compute, compute_identity=args.compute_identity, compute_principal=compute_principal,
        containers={k: getattr(args, f"{k}_container") for k in ("aggregates", "models", "predictions")},
        identity_datastores=args.datastore_auth == "identity"))

