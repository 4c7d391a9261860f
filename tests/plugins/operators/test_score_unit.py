"""ScoringOperator: the backend chosen per run, composed of the local backend and the Azure ML job component."""
from __future__ import annotations

import pytest

from tests.plugins.operators.test_azure_ml import KEY, aml_world, context, operator, run_deferrable  # noqa: F401

pytestmark = pytest.mark.timeout(120)


def scoring_operator(unit=("dev001/s1",), **kw):
    """The DAG's ScoringOperator with the deployment's settings as arguments, ``kw`` overriding."""
    from batch_scoring.config import settings
    from batch_scoring.operators.azure_ml import azureml_args
    from batch_scoring.operators.score_unit import ScoringOperator

    return ScoringOperator(task_id="score", unit=list(unit), **{**azureml_args(settings()), **kw})


def test_backends_are_composed_not_inherited():
    from batch_scoring.operators.azure_ml import AzureMLScoringOperator, AzureMLScoringJob
    from batch_scoring.operators.score_unit import LocalScoring, ScoringOperator

    assert not issubclass(ScoringOperator, AzureMLScoringOperator)
    op = ScoringOperator(task_id="score", unit=["a/b"], blob_conn_id="b", models_container="m",
                         aggregates_container="a", predictions_container="p")
    assert isinstance(op.azureml, AzureMLScoringJob) and op.local == LocalScoring("b", "a", "m", "p")
    assert callable(getattr(op, "execute_complete"))  # the trigger's method_name exists on the operator that defers
    assert [link.name for link in ScoringOperator.operator_extra_links] == ["Azure ML job"]


def test_unknown_backend_is_refused():
    op = scoring_operator(backend="spark")
    with pytest.raises(ValueError, match="backend 'spark': expected one of"):
        op.execute(context())


def test_operator_reads_through_its_own_blob_connection(fake_azureml, aml_world, blob_conn_str, monkeypatch):
    from batch_scoring.azure_ml_job import AzureMLInputError
    from devstack.airflow_env import blob_connection_json

    monkeypatch.delenv("AIRFLOW_CONN_SENSOR_BLOB")
    monkeypatch.setenv("AIRFLOW_CONN_SCORING_BLOB", blob_connection_json(blob_conn_str))
    with pytest.raises(AzureMLInputError, match=r"^no blob connection 'sensor_blob': the Azure ML backend reads"):
        operator().execute(context())
    assert fake_azureml.created == []
    op = scoring_operator(blob_conn_id="scoring_blob", deferrable=False, poll_interval=0.01)
    assert op.azureml.blob_conn_id == "scoring_blob"
    ctx = {**context(), "params": {"backend": "azureml"}}
    assert op.execute(ctx)["status"] == "Completed" and len(fake_azureml.created) == 1
    assert operator(blob_conn_id="scoring_blob").execute(context())["job_name"] == fake_azureml.created[0]


def test_azureml_backend_defers_and_resumes_on_the_scoring_operator(fake_azureml, aml_world):
    ctx = {**context(), "params": {"backend": "azureml"}}
    result = run_deferrable(scoring_operator(), ctx)
    (name,) = fake_azureml.created
    assert result["job_name"] == name and result["status"] == "Completed"
    assert ctx["ti"].xcom["azureml_job_name"] == name and ctx["ti"].xcom["studio_url"] == result["studio_url"]


def test_constructor_arguments_shape_the_job(fake_azureml, aml_world):
    """Compute, experiment, generation: the operator's own arguments, not the deployment's settings."""
    op = scoring_operator(compute="gpu-big", experiment_name="exp-2", job_generation="7", deferrable=False)
    op.execute({**context(), "params": {"backend": "azureml"}})
    (name,) = fake_azureml.created
    job = fake_azureml.get(name)
    assert job.experiment_name == "exp-2" and "gpu-big" in str(job.compute) and job.tags["generation"] == "7"
