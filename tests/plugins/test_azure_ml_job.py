"""The Azure ML job spec without a service: job names, inputs, and the real SDK job entity."""
from __future__ import annotations

import json
import re

import pytest

KEY = "20260302T0000Z_20260302T0100Z"
WS = "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.MachineLearningServices/workspaces/ws-1"
#: Where and how long build_scoring_job's jobs run: the workspace (for the code asset's ARM id), the wait.
WHERE = {"workspace_id": WS, "timeout_seconds": 7200.0}
NAME_RULE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,254}$")


def config():
    """The job config the DAG passes: the deployment's settings as read now."""
    from batch_scoring.azure_ml_job import AzureMLJobConfig
    from batch_scoring.config import settings

    return AzureMLJobConfig.from_settings(settings())


def test_job_names_are_deterministic_valid_and_distinct():
    from batch_scoring.azure_ml_job import attempt_name, job_base_name

    a = job_base_name("batch_scoring", KEY, ["dev001/s1"])
    assert a == job_base_name("batch_scoring", KEY, ["dev001/s1"])  # same identity, same name
    assert a.startswith("batch_scoring-20260302t0000z_20260302t0100z-dev001_s1-") and NAME_RULE.match(a)
    others = {
        job_base_name("batch_scoring", KEY, ["dev001/s2"]),
        job_base_name("batch_scoring", "20260302T0100Z_20260302T0200Z", ["dev001/s1"]),
        job_base_name("other_dag", KEY, ["dev001/s1"]),
        job_base_name("batch_scoring", KEY, ["dev001/s1"], generation="2"),
        job_base_name("batch_scoring", KEY, ["dev.001/s1"]),  # slugs alike, hash differs
        job_base_name("batch_scoring", KEY, ["dev-001/s1"]),
        job_base_name("batch_scoring", KEY, ["DEV001/s1"]),
    }
    assert a not in others and len(others) == 7
    # a long DAG id and a big unit are shortened, still valid, still distinct, room left for -rNN
    unit = [f"device{i:05d}-with-a-long-name/sensor-{i}" for i in range(500)]
    long = job_base_name("d" * 300, KEY, unit)
    assert NAME_RULE.match(attempt_name(long, 99)) and len(attempt_name(long, 99)) <= 255
    assert long != job_base_name("d" * 300, KEY, unit[:-1])
    assert attempt_name(a, 0) == a and attempt_name(a, 2) == f"{a}-r2"
    assert NAME_RULE.match(job_base_name("9dag", KEY, ["1/2"]))


SHA = "a" * 64
INPUTS = dict(code="batch-scoring-code:1", environment="batch-scoring-env:1",
              aggregates="md5:00112233445566778899aabbccddeeff", models=(("dev001/s1", SHA),))


def test_job_name_changes_with_each_input_the_job_computes_from_and_nothing_else():
    """A redeployed model, a snapshot with other content, another code or environment version: another name."""
    import dataclasses

    from batch_scoring.azure_ml_job import JobInputs, attempt_name, job_base_name

    inputs = JobInputs(**INPUTS)
    a = job_base_name("batch_scoring", KEY, ["dev001/s1"], "1", inputs)
    assert a == job_base_name("batch_scoring", KEY, ["dev001/s1"], "1", JobInputs(**INPUTS))  # equal inputs, same job
    assert a.startswith("batch_scoring-20260302t0000z_20260302t0100z-dev001_s1-") and NAME_RULE.match(a)
    changed = [
        dataclasses.replace(inputs, models=(("dev001/s1", "b" * 64),)),  # retrained and redeployed
        dataclasses.replace(inputs, aggregates="md5:ffeeddccbbaa99887766554433221100"),  # snapshot rewritten
        dataclasses.replace(inputs, aggregates="sha256:" + SHA),  # same digits, another kind of hash
        dataclasses.replace(inputs, code="batch-scoring-code:2"),
        dataclasses.replace(inputs, environment="batch-scoring-env:2"),
    ]
    names = {job_base_name("batch_scoring", KEY, ["dev001/s1"], "1", c) for c in changed}
    assert a not in names and len(names) == len(changed)
    assert job_base_name("batch_scoring", KEY, ["dev001/s1"], "2", inputs) != a  # the manual generation bump stays
    # a model added to / removed from a unit changes both the unit and its models
    two = dataclasses.replace(inputs, models=(("dev001/s1", SHA), ("dev001/s2", SHA)))
    assert job_base_name("batch_scoring", KEY, ["dev001/s1", "dev001/s2"], "1", two) not in names | {a}
    # 500 targets' hashes: still a valid name with room for -rNN
    unit = [f"device{i:05d}-with-a-long-name/sensor-{i}" for i in range(500)]
    big = dataclasses.replace(inputs, models=tuple((t, SHA) for t in unit))
    longest = attempt_name(job_base_name("d" * 300, KEY, unit, "1", big), 99)
    assert NAME_RULE.match(longest) and len(longest) <= 255


def test_job_tags_record_its_inputs():
    import dataclasses
    import hashlib

    from batch_scoring.azure_ml_job import JobInputs, build_scoring_job

    inputs = JobInputs(**INPUTS)
    job = build_scoring_job(config(), KEY, ["dev001/s1"], "j", dag_id="d", run_id=None, **WHERE, inputs=inputs)._to_job()
    digest = hashlib.sha256(f"dev001/s1 {SHA}\n".encode()).hexdigest()[:16]
    assert job.tags == {"dag": "d", "run": "", "interval": KEY, "targets": "dev001/s1", "device": "dev001",
                        "sensor": "s1", "code": "batch-scoring-code:1", "environment": "batch-scoring-env:1",
                        "aggregates": "md5:00112233445566778899aabbccddeeff", "models_digest": digest,
                        "model_sha256": SHA, "generation": "1"}
    three = dataclasses.replace(inputs, models=tuple((f"dev00{i}/s1", SHA) for i in (1, 2, 3)))
    tags = build_scoring_job(config(), KEY, [t for t, _ in three.models], "j", dag_id="d", run_id=None, **WHERE,
                             inputs=three)._to_job().tags
    assert tags["models"] == "dev001/s1=aaaaaaaaaaaa dev002/s1=aaaaaaaaaaaa dev003/s1=aaaaaaaaaaaa"
    assert "model_sha256" not in tags
    many = dataclasses.replace(inputs, models=tuple((f"dev{i:03d}/s1", SHA) for i in range(40)))
    tags = build_scoring_job(config(), KEY, [t for t, _ in many.models], "j", dag_id="d", run_id=None, **WHERE,
                             inputs=many)._to_job().tags
    assert "models" not in tags and tags["models_digest"] == many.models_digest  # too long for a tag: the digest
    assert all(len(v) <= 256 for v in tags.values())


def test_command_job_entity_yaml_and_rest_form():
    """The SDK's own serialisation of what the operator submits, field by field."""
    from azure.ai.ml.entities import CommandJob

    from batch_scoring.azure_ml_job import build_scoring_job

    spec = build_scoring_job(config(), KEY, ["dev001/s1"], "job-x", dag_id="batch_scoring", run_id="scheduled__2026",
                             **WHERE)
    job = spec._to_job()
    assert isinstance(job, CommandJob)
    y = json.loads(json.dumps(job._to_dict(), default=str))
    assert y["name"] == "job-x" and y["type"] == "command"
    assert y["experiment_name"] == "batch-scoring"
    assert y["display_name"] == f"score dev001/s1 {KEY}"
    assert y["tags"] == {"dag": "batch_scoring", "run": "scheduled__2026", "interval": KEY,
                         "targets": "dev001/s1", "device": "dev001", "sensor": "s1"}
    assert y["compute"] == "azureml:cpu-scoring"
    assert y["environment"] == "azureml:batch-scoring-env:1"
    assert y["code"] == f"azureml:{WS}/codes/batch-scoring-code/versions/1"  # the SDK's YAML form of an ARM id
    assert y["identity"] == {"type": "managed_identity"}
    assert y["limits"] == {"timeout": 7200}
    assert y["command"] == ("python -m batch_scoring.scoring.score --aggregates ${{inputs.aggregates}} --models ${{inputs.models}} "
                            "--out ${{outputs.predictions}} --targets dev001/s1")
    assert y["inputs"] == {
        "aggregates": {"type": "uri_file", "mode": "ro_mount",
                       "path": f"azureml://datastores/scoring_aggregates/paths/{KEY}/aggregates.parquet"},
        "models": {"type": "uri_folder", "mode": "ro_mount", "path": "azureml://datastores/scoring_models/paths/"},
    }
    assert y["outputs"] == {"predictions": {"type": "uri_folder", "mode": "rw_mount",
                                            "path": f"azureml://datastores/scoring_predictions/paths/date=2026-03-02/interval={KEY}/"}}

    rest = job._to_rest_object().properties.as_dict()
    assert rest["jobType"] == "Command" and rest["experimentName"] == "batch-scoring"
    assert rest["computeId"] == "cpu-scoring"
    assert rest["environmentId"] == "azureml:batch-scoring-env:1"
    assert rest["codeId"] == f"{WS}/codes/batch-scoring-code/versions/1"  # what the service is sent
    assert rest["identity"] == {"identityType": "Managed"}
    assert rest["limits"] == {"jobLimitsType": "Command", "timeout": "PT2H"}
    assert rest["inputs"]["aggregates"] == {"jobInputType": "uri_file", "mode": "ReadOnlyMount",
                                            "uri": f"azureml://datastores/scoring_aggregates/paths/{KEY}/aggregates.parquet"}
    assert rest["inputs"]["models"]["mode"] == "ReadOnlyMount" and rest["inputs"]["models"]["jobInputType"] == "uri_folder"
    assert rest["outputs"]["predictions"] == {"jobOutputType": "uri_folder", "mode": "ReadWriteMount",
                                              "uri": f"azureml://datastores/scoring_predictions/paths/date=2026-03-02/interval={KEY}/"}


def test_batched_unit_lists_targets_and_skips_device_tags():
    from batch_scoring.azure_ml_job import build_scoring_job

    unit = ["dev001/s1", "dev001/s2", "dev002/s1"]
    job = build_scoring_job(config(), KEY, unit, "j", dag_id="d", run_id=None, **WHERE)._to_job()
    assert job.command.endswith("--targets dev001/s1 dev001/s2 dev002/s1")
    assert job.tags["targets"] == "dev001/s1 dev001/s2 dev002/s1" and "device" not in job.tags
    assert job.display_name == f"score dev001/s1 .. dev002/s1 (3) {KEY}"


def test_settings_switch_asset_references(monkeypatch):
    from batch_scoring.azure_ml_job import build_scoring_job

    arm = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w/environments/e/versions/3"
    monkeypatch.setenv("BATCH_SCORING_AZUREML_ENVIRONMENT", arm)
    monkeypatch.setenv("BATCH_SCORING_AZUREML_CODE", "azureml:code:7")
    monkeypatch.setenv("BATCH_SCORING_AZUREML_PREDICTIONS_DATASTORE", "preds")
    job = build_scoring_job(config(), KEY, ["a/b"], "j", dag_id="d", run_id=None, **WHERE)._to_job()
    assert job.environment == arm and job.code == f"{WS}/codes/code/versions/7"
    assert job.outputs["predictions"].path == f"azureml://datastores/preds/paths/date=2026-03-02/interval={KEY}/"


def test_code_asset_id_forms():
    from batch_scoring.azure_ml_job import code_asset_id

    for ref in ("batch-scoring-code:3", "azureml:batch-scoring-code:3"):
        assert code_asset_id(WS, ref) == f"{WS}/codes/batch-scoring-code/versions/3"
    arm = "/subscriptions/x/resourceGroups/y/providers/Microsoft.MachineLearningServices/workspaces/z/codes/c/versions/9"
    assert code_asset_id(WS, arm) == code_asset_id(WS, f"azureml:{arm}") == arm
    with pytest.raises(ValueError, match="expected name:version"):
        code_asset_id(WS, "batch-scoring-code")


def test_job_server_side_timeout_follows_the_wait():
    """A job whose Airflow task is cleared (nobody waits) still ends: its limit is the wait, or a day for an endless wait."""
    from batch_scoring.azure_ml_job import MAX_JOB_SECONDS, build_scoring_job, job_timeout

    assert job_timeout(7200.0) == 7200 and job_timeout(90.2) == 91 and job_timeout(0) == MAX_JOB_SECONDS == 86400
    job = build_scoring_job(config(), KEY, ["a/b"], "j", dag_id="d", run_id=None, workspace_id=WS,
                            timeout_seconds=0)._to_job()
    assert job._to_rest_object().properties.as_dict()["limits"]["timeout"] == "P1D"


def test_plugin_modules_import_no_azure_sdk():
    import subprocess
    import sys

    code = ("import sys, batch_scoring.azure_ml_job, batch_scoring.operators.azure_ml, batch_scoring.operators.score_unit, "
            "batch_scoring.triggers.azure_ml, "
            "batch_scoring.hooks.azure_ml, batch_scoring.links.azure_ml; "
            "print(any(m.startswith('azure.ai.ml') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
