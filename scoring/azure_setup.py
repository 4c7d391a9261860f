"""Provision an Azure ML workspace for the batch_scoring DAG (no Airflow here).

    python -m batch_scoring.scoring.azure_setup --subscription-id S --resource-group RG --workspace WS \\
        --storage-account ACCOUNT [--models DIR] [--dry-run]

Creates or updates, idempotently:

1. the ``AmlCompute`` cluster the scoring jobs run on (scales to zero by default),
   with a managed identity (system-assigned, or ``--compute-identity <ARM id>`` of a
   user-assigned one): every job runs as it;
2. the environment: a conda spec (python 3.11 + pip pins of exactly the packages
   ``batch_scoring.scoring`` imports, at the versions installed where this runs, or
   those of ``--lock FILE``) on Microsoft's Ubuntu base image: Azure ML builds the
   image once per version. Models are unpickled by the job, so its scikit-learn
   must be the one that trained them (``model_store`` refuses any other);
3. the code asset: a staged copy of the ``batch_scoring.scoring`` package, registered once
   per version so parallel jobs reference it instead of racing to upload a
   snapshot each (bump ``--code`` when scoring changes: a registered version is
   immutable; the content hash is in its tags);
4. one blob datastore per container (aggregates, models, predictions), with
   identity-based access by default (no keys stored in the workspace);
5. optionally the models folder (``<device>/<sensor>/model.joblib`` +
   ``manifest.json``), uploaded to the models container.

Then it prints the role assignments each identity needs (``scoring.azure_roles``):
Azure ML grants none of them. ``--dry-run`` prints every entity as Azure ML YAML
and the roles, and calls nothing.
Names and versions default to the DAG's settings (the same
``BATCH_SCORING_AZUREML_*`` environment variables), so the two agree.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from batch_scoring.scoring.azure_environment import build_environment, name_version
from batch_scoring.scoring.azure_roles import roles_text
from batch_scoring.scoring.cli import input_path, make_parser, progress, run

#: This package's folder (installed or checked out): the code asset is staged from it.
SCORING_DIR = Path(__file__).resolve().parent
COST_HELP = """
cost guidance:
  You pay for cluster nodes while they exist, not per job. With --min-instances 0
  (the default) an idle cluster costs nothing, but the first job of a run waits
  for nodes to start (typically 3-5 min, plus the image pull on a new node).
  * infrequent runs (hourly or rarer): keep --min-instances 0 and a short
    --idle-seconds (e.g. 120-300) so nodes go away soon after a run;
  * runs minutes apart, or many small units: keep nodes warm, either with
    --idle-seconds longer than the gap between runs or --min-instances N
    (billed around the clock);
  * --max-instances caps both spend and parallelism: units beyond it queue;
  * --tier low_priority is much cheaper but nodes can be pre-empted; the DAG's
    retries resubmit a pre-empted unit's job under a new deterministic name;
  * each job carries minutes of fixed overhead and scores a target in
    milliseconds: raise the DAG's targets_per_unit to batch targets per job.
"""


# What the CLI reads from the environment: (name, default, what); the defaults of names and containers
# are the DAG's (batch_scoring.config), DefaultAzureCredential reads its own (AZURE_CLIENT_ID, ...).
ENV = (
    ("AZURE_SUBSCRIPTION_ID", "none", "--subscription-id"),
    ("AZURE_RESOURCE_GROUP", "none", "--resource-group"),
    ("AZUREML_WORKSPACE", "none", "--workspace"),
    ("AZURE_STORAGE_ACCOUNT", "none", "--storage-account"),
    ("AZURE_STORAGE_ACCOUNT_KEY", "none", "the key of --datastore-auth account-key"),
    ("AZURE_STORAGE_CONNECTION_STRING", "none", "--models upload target, instead of --storage-account"),
    ("BATCH_SCORING_AZUREML_COMPUTE", "cpu-scoring", "--compute"),
    ("BATCH_SCORING_AZUREML_ENVIRONMENT", "batch-scoring-env:1", "--environment"),
    ("BATCH_SCORING_AZUREML_CODE", "batch-scoring-code:1", "--code"),
    ("BATCH_SCORING_AZUREML_<KIND>_DATASTORE", "scoring_<kind>", "--<kind>-datastore (kind: aggregates, models, predictions)"),
    ("BATCH_SCORING_<KIND>_CONTAINER", "<kind>", "--<kind>-container"),
)


def _env(name: str, default: str) -> str:
    return os.environ.get(f"BATCH_SCORING_{name}", default)


def defaults() -> dict:
    """The names the DAG expects (same environment variables and defaults as batch_scoring.config)."""
    return {
        "compute": _env("AZUREML_COMPUTE", "cpu-scoring"),
        "environment": _env("AZUREML_ENVIRONMENT", "batch-scoring-env:1"),
        "code": _env("AZUREML_CODE", "batch-scoring-code:1"),
        "aggregates_datastore": _env("AZUREML_AGGREGATES_DATASTORE", "scoring_aggregates"),
        "models_datastore": _env("AZUREML_MODELS_DATASTORE", "scoring_models"),
        "predictions_datastore": _env("AZUREML_PREDICTIONS_DATASTORE", "scoring_predictions"),
        "aggregates_container": _env("AGGREGATES_CONTAINER", "aggregates"),
        "models_container": _env("MODELS_CONTAINER", "models"),
        "predictions_container": _env("PREDICTIONS_CONTAINER", "predictions"),
    }


# --- entities -----------------------------------------------------------------------

def build_compute(name: str, size: str, min_instances: int, max_instances: int, idle_seconds: int, tier: str,
                  identity: str = "system_assigned"):
    """The ``AmlCompute`` cluster entity (not created): VM ``size``, ``tier`` (``dedicated``/``low_priority``),
    ``min_instances``..``max_instances`` nodes, scale-down after ``idle_seconds`` seconds idle, and a managed
    ``identity`` the jobs run as: ``system_assigned`` or the ARM id of a user-assigned identity.
    """
    from azure.ai.ml.entities import AmlCompute, IdentityConfiguration, ManagedIdentityConfiguration

    if identity == "system_assigned":
        managed = IdentityConfiguration(type="system_assigned")
    else:
        managed = IdentityConfiguration(type="user_assigned",
                                        user_assigned_identities=[ManagedIdentityConfiguration(resource_id=identity)])

    return AmlCompute(
        name=name,
        size=size,
        tier=tier,
        min_instances=min_instances,
        max_instances=max_instances,
        idle_time_before_scale_down=idle_seconds,
        identity=managed,
        description="batch_scoring DAG: one command job per scoring unit",
    )


def stage_code(dest: Path) -> Path:
    """Copy ``batch_scoring/__init__.py`` and the ``batch_scoring.scoring`` sources to ``dest/batch_scoring/``; returns ``dest``.

    The job runs ``python -m batch_scoring.scoring.score`` from the code folder's root; nothing
    else of the package (no Airflow side) is uploaded.
    """
    import batch_scoring

    dest = Path(dest)
    if (dest / "batch_scoring").exists():
        shutil.rmtree(dest / "batch_scoring")
    (dest / "batch_scoring" / "scoring").mkdir(parents=True)
    shutil.copy2(batch_scoring.__file__, dest / "batch_scoring" / "__init__.py")
    for src in sorted(SCORING_DIR.glob("*.py")):
        shutil.copy2(src, dest / "batch_scoring" / "scoring" / src.name)
    return dest


def code_hash(folder: Path) -> str:
    """SHA-256 (hex) over the relative paths and bytes of every ``*.py`` below ``folder``, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*.py")):
        h.update(p.relative_to(folder).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def build_code(ref: str, folder: Path):
    """The code asset ``ref`` (``name:version``) over ``folder`` (see ``stage_code``), tagged with ``code_hash``'s first 16 hex digits."""
    # Code assets have no public entity/operations in azure-ai-ml 1.35 (MLClient._code, the
    # class below) although the service and CLI (`az ml code create`) support them.
    from azure.ai.ml.entities._assets._artifacts.code import Code

    name, version = name_version(ref)
    return Code(name=name, version=version, path=str(folder), description="batch_scoring.scoring for python -m batch_scoring.scoring.score",
                tags={"sha256": code_hash(folder)[:16]})


def build_datastore(name: str, account: str, container: str, account_key: str | None = None):
    """The blob datastore entity ``name`` over ``container`` of storage ``account``.

    With ``account_key`` it stores the key; with None access is identity-based
    (the job's identity needs a Storage Blob Data role).
    """
    from azure.ai.ml.entities import AccountKeyConfiguration, AzureBlobDatastore

    return AzureBlobDatastore(
        name=name,
        account_name=account,
        container_name=container,
        description=f"batch_scoring: container {container}",
        # None = identity-based access: the job's identity needs a Storage Blob Data role.
        credentials=AccountKeyConfiguration(account_key=account_key) if account_key else None,
    )


def build_all(args, code_dir: Path) -> list[tuple[str, object]]:
    """Every entity ``args`` asks for, as ``(kind, entity)`` pairs: compute, environment, code, three datastores.

    ``code_dir`` is the staged code folder. Raises ``SystemExit`` when
    ``--datastore-auth account-key`` lacks ``AZURE_STORAGE_ACCOUNT_KEY`` (unless
    ``--dry-run``) or the lock lacks a pin.
    """
    entities = [
        ("compute", build_compute(args.compute, args.vm_size, args.min_instances, args.max_instances, args.idle_seconds, args.tier,
                                  args.compute_identity)),
        ("environment", build_environment(args.environment, Path(args.lock) if args.lock else None)),
        ("code", build_code(args.code, code_dir)),
    ]
    key = os.environ.get("AZURE_STORAGE_ACCOUNT_KEY") if args.datastore_auth == "account-key" else None
    if args.datastore_auth == "account-key" and not key and not args.dry_run:
        raise SystemExit("--datastore-auth account-key needs AZURE_STORAGE_ACCOUNT_KEY in the environment")
    for kind in ("aggregates", "models", "predictions"):
        entities.append((f"datastore/{kind}", build_datastore(
            getattr(args, f"{kind}_datastore"), args.storage_account or "<storage-account>",
            getattr(args, f"{kind}_container"), key or ("<from AZURE_STORAGE_ACCOUNT_KEY>" if args.datastore_auth == "account-key" else None),
        )))
    return entities


def entity_yaml(entity) -> str:
    """An entity as Azure ML YAML text (what ``--dry-run`` prints), an account key masked as ``***``."""
    import json

    import yaml

    data = json.loads(json.dumps(entity._to_dict(), default=str))
    creds = data.get("credentials") or {}
    if isinstance(creds, dict) and creds.get("account_key"):
        creds["account_key"] = "***"
    return yaml.safe_dump(data, sort_keys=False)


# --- applying -------------------------------------------------------------------------

def ml_client(args):
    """An ``MLClient`` on ``args``' workspace with ``DefaultAzureCredential`` (``SystemExit`` when subscription, resource group or workspace is missing)."""
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    missing = [f for f in ("subscription_id", "resource_group", "workspace") if not getattr(args, f)]
    if missing:
        raise SystemExit(f"missing {missing} (flags or AZURE_SUBSCRIPTION_ID / AZURE_RESOURCE_GROUP / AZUREML_WORKSPACE)")
    return MLClient(DefaultAzureCredential(), args.subscription_id, args.resource_group, args.workspace)


def upload_models(account: str, container: str, folder: Path) -> int:
    """Upload every file below ``folder`` to ``container`` under its relative path (overwriting); returns how many.

    Uses ``AZURE_STORAGE_CONNECTION_STRING`` when set, else ``account`` with
    ``DefaultAzureCredential``; creates the container if missing. Raises the
    Azure SDK's errors (``azure.core.exceptions``) on failure.
    """
    from azure.identity import DefaultAzureCredential
    from azure.storage.blob import BlobServiceClient

    conn_str = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    service = (BlobServiceClient.from_connection_string(conn_str) if conn_str
               else BlobServiceClient(f"https://{account}.blob.core.windows.net", credential=DefaultAzureCredential()))
    client = service.get_container_client(container)
    if not client.exists():
        client.create_container()
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    for path in progress(files, "uploading models", unit="file"):
        with open(path, "rb") as fh:
            client.upload_blob(path.relative_to(folder).as_posix(), fh, overwrite=True)
    return len(files)


def apply(args, entities, out=sys.stdout) -> None:
    """Create or update each ``(kind, entity)`` in the workspace, then upload ``--models`` if given.

    Prints one line per entity and one for the upload to ``out``. Raises
    ``SystemExit`` from ``ml_client`` and the Azure SDK's errors on failure.
    """
    client = ml_client(args)
    principal = None
    for kind, entity in entities:
        if kind == "compute":
            created = client.compute.begin_create_or_update(entity).result()
            principal = getattr(getattr(created, "identity", None), "principal_id", None)
        elif kind == "environment":
            client.environments.create_or_update(entity)
        elif kind == "code":
            (client.code if hasattr(client, "code") else client._code).create_or_update(entity)
        else:
            client.datastores.create_or_update(entity)
        print(f"created/updated {kind} {entity.name}", file=out)
    if args.models:
        n = upload_models(args.storage_account, args.models_container, Path(args.models))
        print(f"uploaded {n} model files to {args.models_container}", file=out)
    print("# --- roles: grant these (Azure ML does not) ---", file=out)
    print(roles_text(args, principal), end="", file=out)


def parser():
    """The ``python -m batch_scoring.scoring.azure_setup`` argument parser; defaults from the environment and the DAG's settings."""
    d = defaults()
    p = make_parser("python -m batch_scoring.scoring.azure_setup",
                    __doc__.split("\n\n")[0] + ": cluster, environment, code, datastores, models.",
                    env=ENV, epilog=COST_HELP)
    p.add_argument("--subscription-id", default=os.environ.get("AZURE_SUBSCRIPTION_ID"))
    p.add_argument("--resource-group", default=os.environ.get("AZURE_RESOURCE_GROUP"))
    p.add_argument("--workspace", default=os.environ.get("AZUREML_WORKSPACE"))
    p.add_argument("--storage-account", default=os.environ.get("AZURE_STORAGE_ACCOUNT"), help="account holding the three containers")
    p.add_argument("--storage-resource-group", help="the storage account's resource group, for the printed role "
                                                    "scopes (default --resource-group)")
    p.add_argument("--compute", default=d["compute"], help="cluster name")
    p.add_argument("--vm-size", default="Standard_DS3_v2")
    p.add_argument("--tier", choices=("dedicated", "low_priority"), default="dedicated")
    p.add_argument("--min-instances", type=int, default=0, help="0 = scale to zero when idle")
    p.add_argument("--max-instances", type=int, default=4)
    p.add_argument("--idle-seconds", type=int, default=300, help="idle time before scale-down")
    p.add_argument("--compute-identity", default="system_assigned",
                   help="the cluster's managed identity the jobs run as: system_assigned, or a user-assigned "
                        "identity's ARM id (/subscriptions/.../userAssignedIdentities/NAME)")
    p.add_argument("--environment", default=d["environment"], help="name:version")
    p.add_argument("--code", default=d["code"], help="name:version of the scoring code asset")
    p.add_argument("--lock", default=None, metavar="FILE",
                   help="pip lock (name==version lines) to take the job's pins from (default: the versions installed here)")
    for kind in ("aggregates", "models", "predictions"):
        p.add_argument(f"--{kind}-datastore", default=d[f"{kind}_datastore"])
        p.add_argument(f"--{kind}-container", default=d[f"{kind}_container"])
    p.add_argument("--datastore-auth", choices=("identity", "account-key"), default="identity",
                   help="identity: no secret stored; account-key: AZURE_STORAGE_ACCOUNT_KEY")
    p.add_argument("--models", help="folder of <device>/<sensor>/{model.joblib,manifest.json} to upload")
    p.add_argument("--dry-run", action="store_true", help="print every entity as Azure ML YAML; call nothing")
    return p


def main(argv=None) -> int:
    """Run the setup CLI on ``argv``: stage the code, build the entities, and print them (``--dry-run``) or apply them.

    Returns 0, or 2 for a missing or unreadable ``--lock`` or ``--models`` (one
    ``error: <path>: ...`` line). Raises ``SystemExit`` for usage errors, a
    missing lock pin, account key or workspace; the Azure SDK's errors when applying fails.
    """
    return run(_main, parser().parse_args(argv))


def _main(args) -> int:
    if args.lock:
        input_path(args.lock, "--lock: the pinned requirements.lock")
    if args.models:
        input_path(args.models, "--models: folder of <device>/<sensor>/{model.joblib,manifest.json}", directory=True)
    with tempfile.TemporaryDirectory(prefix="scoring-code-") as tmp:
        code_dir = stage_code(Path(tmp))
        entities = build_all(args, code_dir)
        if args.dry_run:
            for kind, entity in entities:
                print(f"# --- {kind}: {entity.name} ---")
                print(entity_yaml(entity), end="")
            if args.models:
                files = sorted(p for p in Path(args.models).rglob("*") if p.is_file())
                print(f"# --- models: would upload {len(files)} files from {args.models} to container {args.models_container}")
            print("# --- roles: grant these (Azure ML does not) ---")
            print(roles_text(args), end="")
            return 0
        apply(args, entities)
    return 0


if __name__ == "__main__":
    sys.exit(main())
