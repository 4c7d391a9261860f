"""Shared fixtures: real SQL engines, real Azurite, an isolated Airflow home."""
pytest_plugins = [
    "tests.fixtures.sql",
    "tests.fixtures.azurite",
    "tests.fixtures.airflow_env",
    "tests.fixtures.aml_emulator",
    "tests.fixtures.fake_azureml",
    "tests.fixtures.standalone",
]
