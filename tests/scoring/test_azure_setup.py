"""scoring.azure_setup: real SDK entities, their YAML and REST form, and the dry run (no Azure calls)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from batch_scoring.scoring import azure_environment as environment
from batch_scoring.scoring import azure_setup as setup

REPO = Path(__file__).resolve().parents[2]


def test_compute_cluster_scales_to_zero():
    c = setup.build_compute("cpu-scoring", "Standard_DS3_v2", 0, 8, 300, "low_priority")
    d = json.loads(json.dumps(c._to_dict(), default=str))
    assert d["name"] == "cpu-scoring" and d["type"] == "amlcompute" and d["size"] == "Standard_DS3_v2"
    assert (d["min_instances"], d["max_instances"], d["idle_time_before_scale_down"]) == (0, 8, 300)
    assert d["tier"] == "low_priority"
    props = c._to_rest_object().properties.properties
    assert props.scale_settings.min_node_count == 0 and props.scale_settings.max_node_count == 8
    assert props.scale_settings.node_idle_time_before_scale_down.total_seconds() == 300
    assert props.vm_priority == "LowPriority"
    # the jobs run as the cluster's managed identity (identity=managed): system-assigned by default
    assert d["identity"] == {"type": "system_assigned"}
    assert c._to_rest_object().identity.type == "SystemAssigned"


def test_compute_cluster_with_a_user_assigned_identity():
    uai = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/scoring"
    c = setup.build_compute("cpu-scoring", "Standard_DS3_v2", 0, 4, 300, "dedicated", identity=uai)
    d = json.loads(json.dumps(c._to_dict(), default=str))
    assert d["identity"] == {"type": "user_assigned", "user_assigned_identities": [{"resource_id": uai}]}
    rest = c._to_rest_object().identity
    assert rest.type == "UserAssigned" and list(rest.user_assigned_identities) == [uai]


def test_code_asset_is_the_scoring_package_alone(tmp_path):
    folder = setup.stage_code(tmp_path / "code")
    pkg = folder / "batch_scoring"
    assert sorted(p.name for p in (pkg / "scoring").iterdir()) == sorted(p.name for p in setup.SCORING_DIR.glob("*.py"))
    assert [p.name for p in folder.iterdir()] == ["batch_scoring"]
    assert sorted(p.name for p in pkg.iterdir()) == ["__init__.py", "scoring"]  # no Airflow side
    code = setup.build_code("batch-scoring-code:2", folder)
    d = json.loads(json.dumps(code._to_dict(), default=str))
    assert (d["name"], d["version"]) == ("batch-scoring-code", "2") and Path(d["path"]) == folder
    assert d["tags"]["sha256"] == setup.code_hash(folder)[:16]
    # the staged package runs the scoring CLI on its own (what the job does from the code root)
    out = subprocess.run([sys.executable, "-m", "batch_scoring.scoring.score", "--help"], cwd=folder, capture_output=True, text=True)
    assert out.returncode == 0 and "--aggregates" in out.stdout


def test_datastores_identity_based_by_default_and_keys_masked():
    ds = setup.build_datastore("scoring_models", "acct", "models")
    d = json.loads(json.dumps(ds._to_dict(), default=str))
    assert (d["name"], d["type"], d["account_name"], d["container_name"]) == ("scoring_models", "azure_blob", "acct", "models")
    assert d["credentials"] == {}
    rest = ds._to_rest_object().properties
    assert rest.credentials.credentials_type == "None" and rest.container_name == "models"
    keyed = setup.build_datastore("x", "acct", "models", account_key="s3cr3t")
    assert "s3cr3t" not in setup.entity_yaml(keyed) and "***" in setup.entity_yaml(keyed)


def test_defaults_agree_with_the_dag_settings(monkeypatch):
    from batch_scoring.config import Settings

    monkeypatch.setenv("BATCH_SCORING_AZUREML_COMPUTE", "gpu-x")
    s, d = Settings(), setup.defaults()
    assert d == {
        "compute": s.azureml_compute, "environment": s.azureml_environment, "code": s.azureml_code,
        "aggregates_datastore": s.azureml_aggregates_datastore, "models_datastore": s.azureml_models_datastore,
        "predictions_datastore": s.azureml_predictions_datastore, "aggregates_container": s.aggregates_container,
        "models_container": s.models_container, "predictions_container": s.predictions_container,
    }
    assert d["compute"] == "gpu-x"


def test_dry_run_prints_every_entity_as_yaml_without_azure(tmp_path):
    models = tmp_path / "models" / "dev001" / "s1"
    models.mkdir(parents=True)
    (models / "model.joblib").write_bytes(b"x")
    (models / "manifest.json").write_text("{}")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no Azure credentials at all
    proc = subprocess.run(
        [sys.executable, "-m", "batch_scoring.scoring.azure_setup", "--dry-run", "--storage-account", "acct",
         "--max-instances", "6", "--idle-seconds", "120", "--models", str(tmp_path / "models")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    docs = {}
    for block in proc.stdout.split("# --- ")[1:]:
        head, _, body = block.partition("\n")
        kind = head.split(":")[0]
        docs[kind] = body if kind == "roles" else yaml.safe_load(body) if body.strip() else head
    assert set(docs) == {"compute", "environment", "code", "datastore/aggregates", "datastore/models",
                         "datastore/predictions", "models", "roles"}
    assert docs["compute"]["identity"] == {"type": "system_assigned"}
    assert docs["environment"]["image"] == environment.BASE_IMAGE
    roles = [line for line in docs["roles"].splitlines() if line.startswith("az role assignment create")]
    assert len(roles) == 5 and all("<principal id" in r for r in roles)
    assert '--role "Storage Blob Data Contributor" --scope /subscriptions/<subscription-id>/resourceGroups/' \
           '<resource-group>/providers/Microsoft.Storage/storageAccounts/acct/blobServices/default/containers/predictions' \
           in docs["roles"]
    assert docs["compute"]["max_instances"] == 6 and docs["compute"]["min_instances"] == 0
    assert docs["compute"]["idle_time_before_scale_down"] == 120
    assert docs["environment"]["conda_file"]["dependencies"][0] == "python=3.11"
    assert docs["datastore/predictions"]["container_name"] == "predictions"
    assert "would upload 2 files" in docs["models"]
    assert "sys.modules" not in proc.stdout
    # no Airflow in the provisioning CLI
    code = "import sys, scoring.azure_setup as s; s.main(['--dry-run']); print('AIRFLOW', any(m.startswith('airflow') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stdout
    assert out.strip().endswith("AIRFLOW False")


def test_help_carries_cost_guidance():
    text = setup.parser().format_help()
    assert "scale to zero" in text and "--min-instances" in text and "keep nodes warm" in text


def test_dry_run_yaml_loads_back_through_the_sdk_schemas(tmp_path):
    """'Valid Azure ML YAML': each printed entity is accepted by the SDK's own loaders (its schemas)."""
    import azure.ai.ml as aml

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "batch_scoring.scoring.azure_setup", "--dry-run", "--storage-account", "acct"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaders = {"compute": aml.load_compute, "environment": aml.load_environment, "datastore": aml.load_datastore}
    loaded = {}
    for block in proc.stdout.split("# --- ")[1:]:
        head, _, body = block.partition("\n")
        kind = head.split(":")[0].split("/")[0]
        if kind in loaders:  # (roles: az commands, not an entity)
            path = tmp_path / f"{head.split(':')[0].replace('/', '_')}.yaml"
            path.write_text(body)
            loaded[head.split(":")[0]] = loaders[kind](source=path)
    assert set(loaded) == {"compute", "environment", "datastore/aggregates", "datastore/models", "datastore/predictions"}
    assert loaded["compute"].min_instances == 0 and loaded["compute"].type == "amlcompute"
    assert loaded["environment"].conda_file["dependencies"][0] == "python=3.11"
    assert {loaded[f"datastore/{c}"].container_name for c in ("aggregates", "models", "predictions")} == {"aggregates", "models", "predictions"}


def test_apply_creates_each_entity_and_prints_the_roles_with_the_clusters_principal(monkeypatch, tmp_path):
    import io
    from types import SimpleNamespace

    calls = []

    def op(kind, result=None):
        return SimpleNamespace(create_or_update=lambda e: calls.append((kind, e.name)),
                               begin_create_or_update=lambda e: calls.append((kind, e.name)) or SimpleNamespace(
                                   result=lambda: result))

    created = SimpleNamespace(identity=SimpleNamespace(principal_id="11111111-aaaa"))
    client = SimpleNamespace(compute=op("compute", created), environments=op("environment"), _code=op("code"),
                             datastores=op("datastore"))
    monkeypatch.setattr(setup, "ml_client", lambda args: client)
    args = setup.parser().parse_args(["--subscription-id", "sub", "--resource-group", "rg", "--workspace", "ws",
                                      "--storage-account", "acct"])
    out = io.StringIO()
    setup.apply(args, setup.build_all(args, setup.stage_code(tmp_path / "code")), out=out)
    assert [k for k, _ in calls] == ["compute", "environment", "code", "datastore", "datastore", "datastore"]
    text = out.getvalue()
    assert "# --- roles: grant these (Azure ML does not) ---" in text
    assert text.count("--assignee-object-id 11111111-aaaa ") == 3  # the cluster's identity, on the 3 containers
    assert ('--role "AzureML Data Scientist" --scope /subscriptions/sub/resourceGroups/rg/providers/'
            'Microsoft.MachineLearningServices/workspaces/ws') in text
