"""Shared fixtures: real SQL engines, real Azurite, an isolated Airflow home, a model cache per test."""
import pytest

pytest_plugins = [
    "tests.fixtures.sql",
    "tests.fixtures.azurite",
    "tests.fixtures.airflow_env",
    "tests.fixtures.aml_emulator",
    "tests.fixtures.fake_azureml",
    "tests.fixtures.standalone",
]


@pytest.fixture(autouse=True)
def model_cache_dir(tmp_path_factory, monkeypatch):
    """Each test's own local-backend model cache (the default, under the system temp dir, would carry one
    test's models into the next: tests train the same deterministic models)."""
    folder = tmp_path_factory.mktemp("model-cache")
    monkeypatch.setenv("BATCH_SCORING_MODEL_CACHE_DIR", str(folder))
    return folder
