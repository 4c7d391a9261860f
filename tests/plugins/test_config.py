"""batch_scoring.config: every BATCH_SCORING_* value is checked; a bad one is refused naming the variable."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from batch_scoring.config import Settings, SettingsError, settings
from devstack.services import REPO

# The values the hand-written parser read before issue 12 (deferrable aside: see below).
DEFAULTS = {
    "dag_id": "batch_scoring", "schedule": "0 * * * *", "start_date": "2018-08-28T00:00:00Z", "backend": "local",
    "sql_conn_id": "sensor_sql", "blob_conn_id": "sensor_blob", "aggregates_container": "aggregates",
    "models_container": "models", "predictions_container": "predictions", "freshness_poke_seconds": 60,
    "freshness_timeout_seconds": 3600, "late_data_lookback_days": 30.0, "retries": 2, "retry_delay_seconds": 30,
    "max_active_runs": 4, "auto_slots": 0, "auto_task_overhead_seconds": 1.0, "auto_target_seconds": 0.025,
    "auto_max_unit_seconds": 900.0, "auto_unit_memory_gib": 4.0, "azureml_max_nodes": 4, "azureml_job_overhead_seconds": 60.0, "azureml_conn_id": "azure_ml", "azureml_compute": "cpu-scoring",
    "azureml_environment": "batch-scoring-env:1", "azureml_code": "batch-scoring-code:1",
    "azureml_aggregates_datastore": "scoring_aggregates", "azureml_models_datastore": "scoring_models",
    "azureml_predictions_datastore": "scoring_predictions", "azureml_experiment": "batch-scoring",
    "azureml_poll_seconds": 30.0, "azureml_timeout_seconds": 7200.0, "azureml_job_generation": "1",
}

BAD = [  # (variable, value, what the message says it expects)
    ("AZUREML_DEFERRABLE", "ture", "a boolean (true/false/1/0/yes/no)"),
    ("RETRIES", "-1", "a whole number >= 0"),
    ("RETRIES", "two", "a whole number >= 0"),
    ("FRESHNESS_POKE_SECONDS", "0", "a whole number of seconds > 0"),
    ("FRESHNESS_TIMEOUT_SECONDS", "1h", "a whole number of seconds > 0"),
    ("MAX_ACTIVE_RUNS", "0", "a whole number >= 1"),
    ("AUTO_SLOTS", "1.5", "a whole number >= 0 (0 = from Airflow's parallelism)"),
    ("AUTO_TARGET_SECONDS", "0", "a number of seconds > 0"),
    ("AUTO_TASK_OVERHEAD_SECONDS", "inf", "a number of seconds >= 0"),
    ("AUTO_UNIT_MEMORY_GIB", "4G", "a number of GiB >= 0 (0 = not modelled)"),
    ("AUTO_UNIT_MEMORY_GIB", "-1", "a number of GiB >= 0 (0 = not modelled)"),
    ("AZUREML_MAX_NODES", "0", "a whole number >= 1"),
    ("LATE_DATA_LOOKBACK_DAYS", "-3", "a number of days > 0"),
    ("AZUREML_POLL_SECONDS", "nan", "a number of seconds > 0"),
    ("AZUREML_TIMEOUT_SECONDS", "-1", "a number of seconds >= 0 (0 = wait forever)"),
    ("BACKEND", "spark", "one of: local, azureml"),
    ("BACKEND", "Local", "one of: local, azureml"),
    ("SCHEDULE", "0 * * *", "a cron expression"),
    ("SCHEDULE", "@hourlyy", "a cron expression"),
    ("START_DATE", "28/08/2018", "an ISO 8601 date or time"),
    ("MODELS_CONTAINER", "Models", "an Azure blob container name"),
    ("PREDICTIONS_CONTAINER", "pr", "an Azure blob container name"),
    ("AGGREGATES_CONTAINER", "agg--regates", "an Azure blob container name"),
    ("AGGREGATES_CONTAINER", "a" * 64, "an Azure blob container name"),
    ("SQL_CONN_ID", "", "an Airflow connection id (non-empty, no spaces)"),
    ("BLOB_CONN_ID", "sensor blob", "an Airflow connection id (non-empty, no spaces)"),
    ("DAG_ID", "batch scoring", "an Airflow DAG id"),
    ("AZUREML_COMPUTE", "", "a non-empty name (no spaces)"),
    ("MODEL_CACHE_MAX_BYTES", "2GB", "a whole number of bytes >= 0 (0 = no cache)"),
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No BATCH_SCORING_* variable from the session leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("BATCH_SCORING_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_ones_read_before():
    s = settings()
    assert {k: getattr(s, k) for k in DEFAULTS} == DEFAULTS
    assert s.containers == ("aggregates", "models", "predictions")
    assert (s.model_cache_dir, s.model_cache_max_bytes) == ("", 2 * 1024 ** 3)  # issue 14: the model cache
    assert set(Settings.model_fields) == set(DEFAULTS) | {"azureml_deferrable", "model_cache_dir", "model_cache_max_bytes"}


@pytest.mark.parametrize("name, value, expects", BAD, ids=[f"{n}={v[:12]!r}" for n, v, _ in BAD])
def test_a_bad_value_is_refused_naming_the_variable_and_what_it_accepts(monkeypatch, name, value, expects):
    monkeypatch.setenv(f"BATCH_SCORING_{name}", value)
    with pytest.raises(SettingsError) as err:
        settings()
    assert f"BATCH_SCORING_{name}={value!r}: expected {expects}" in str(err.value)
    assert str(err.value).startswith("1 invalid batch_scoring setting (environment variables):")


def test_the_issues_example_is_refused_not_read_as_false(monkeypatch):
    monkeypatch.setenv("BATCH_SCORING_AZUREML_DEFERRABLE", "ture")
    with pytest.raises(ValueError, match=r"BATCH_SCORING_AZUREML_DEFERRABLE='ture': expected a boolean "
                                         r"\(true/false/1/0/yes/no\)$"):
        Settings()


def test_every_bad_variable_is_listed_at_once(monkeypatch):
    for name, value in (("AZUREML_DEFERRABLE", "ture"), ("RETRIES", "-1"), ("MODELS_CONTAINER", "Models"),
                        ("SCHEDULE", "every hour"), ("BACKEND", "spark")):
        monkeypatch.setenv(f"BATCH_SCORING_{name}", value)
    with pytest.raises(SettingsError) as err:
        settings()
    lines = str(err.value).splitlines()
    assert lines[0] == "5 invalid batch_scoring settings (environment variables):"
    assert [line.split("=", 1)[0].strip() for line in lines[1:]] == [
        "BATCH_SCORING_SCHEDULE", "BATCH_SCORING_BACKEND", "BATCH_SCORING_MODELS_CONTAINER", "BATCH_SCORING_RETRIES",
        "BATCH_SCORING_AZUREML_DEFERRABLE"]
    assert "validation error" not in str(err.value) and "pydantic" not in str(err.value)  # not pydantic's dump


@pytest.mark.parametrize("name, hint", [
    ("BATCH_SCORING_AZUREML_DEFERABLE", "did you mean BATCH_SCORING_AZUREML_DEFERRABLE?"),
    ("BATCH_SCORING_RETRY", "did you mean BATCH_SCORING_RETRIES?"),
    ("batch_scoring_schedul", "did you mean BATCH_SCORING_SCHEDULE?"),  # read case-insensitively, so checked so
    ("BATCH_SCORING_MODEL_CONTAINER", "did you mean BATCH_SCORING_MODELS_CONTAINER?"),
    ("BATCH_SCORING_SPARK_MASTER", "see batch_scoring.config.Settings"),
])
def test_a_misspelt_variable_name_is_refused_not_ignored(monkeypatch, name, hint):
    """A typo in a name would leave the setting at its default without a word: refused, naming the closest setting."""
    monkeypatch.setenv(name, "true")
    with pytest.raises(SettingsError) as err:
        settings()
    assert str(err.value) == f"1 invalid batch_scoring setting (environment variables):\n  {name}: no such setting ({hint})"


def test_a_removed_setting_is_refused_naming_what_replaced_it(monkeypatch):
    monkeypatch.setenv("BATCH_SCORING_AUTO_UNITS", "8")
    with pytest.raises(SettingsError) as err:
        settings()
    assert str(err.value) == ("1 invalid batch_scoring setting (environment variables):\n  BATCH_SCORING_AUTO_UNITS: no "
                              "longer a setting (targets_per_unit=auto now plans from costs: BATCH_SCORING_AUTO_SLOTS, "
                              "BATCH_SCORING_AUTO_TASK_OVERHEAD_SECONDS, BATCH_SCORING_AUTO_TARGET_SECONDS, "
                              "BATCH_SCORING_AUTO_MAX_UNIT_SECONDS; see the README's settings)")


def test_variables_of_other_parts_are_not_settings_and_not_refused(monkeypatch):
    monkeypatch.setenv("BATCH_SCORING_PRELOAD", "1")  # batch_scoring.preload
    monkeypatch.setenv("BATCH_SCORING_LIVE_JOB", "1")  # the live Azure tests
    monkeypatch.setenv("BATCH_SCORING_RETRIES", "-1")
    monkeypatch.setenv("BATCH_SCORING_RETRYS", "3")
    with pytest.raises(SettingsError) as err:
        settings()
    assert str(err.value).splitlines()[1:] == [
        "  BATCH_SCORING_RETRIES='-1': expected a whole number >= 0",
        "  BATCH_SCORING_RETRYS: no such setting (did you mean BATCH_SCORING_RETRIES?)"]


@pytest.mark.parametrize("name, value, attr, expected", [
    ("AZUREML_DEFERRABLE", "yes", "azureml_deferrable", True),
    ("AZUREML_DEFERRABLE", "0", "azureml_deferrable", False),
    ("AZUREML_DEFERRABLE", "FALSE", "azureml_deferrable", False),
    ("RETRIES", "0", "retries", 0),
    ("RETRY_DELAY_SECONDS", "0", "retry_delay_seconds", 0),
    ("AZUREML_TIMEOUT_SECONDS", "0", "azureml_timeout_seconds", 0.0),
    ("AZUREML_POLL_SECONDS", "0.01", "azureml_poll_seconds", 0.01),
    ("LATE_DATA_LOOKBACK_DAYS", "3650", "late_data_lookback_days", 3650.0),
    ("SCHEDULE", "@hourly", "schedule", "@hourly"),
    ("SCHEDULE", "*/5 * * * *", "schedule", "*/5 * * * *"),
    ("START_DATE", "2026-01-01", "start_date", "2026-01-01"),
    ("BACKEND", "azureml", "backend", "azureml"),
    ("MODELS_CONTAINER", "models-v2", "models_container", "models-v2"),
    ("AZUREML_ENVIRONMENT", "azureml:/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices/"
                            "workspaces/w/environments/e/versions/1", "azureml_environment", None),
])
def test_good_values_are_accepted(monkeypatch, name, value, attr, expected):
    monkeypatch.setenv(f"BATCH_SCORING_{name}", value)
    assert getattr(settings(), attr) == (value if expected is None else expected)


@pytest.mark.parametrize("airflow_default, expected", [("True", True), ("False", False), (None, False)])
def test_deferrable_unset_follows_airflows_default_deferrable(monkeypatch, airflow_default, expected):
    if airflow_default is None:
        monkeypatch.delenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", raising=False)
    else:
        monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", airflow_default)
    assert settings().azureml_deferrable is expected


@pytest.mark.parametrize("airflow_default", ["True", "False"])
@pytest.mark.parametrize("value, expected", [("true", True), ("false", False)])
def test_deferrable_set_wins_over_airflows_default(monkeypatch, airflow_default, value, expected):
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", airflow_default)
    monkeypatch.setenv("BATCH_SCORING_AZUREML_DEFERRABLE", value)
    assert settings().azureml_deferrable is expected


def test_settings_are_frozen():
    with pytest.raises(Exception):
        settings().retries = 5


def test_a_bad_value_is_a_dag_import_error_naming_the_variable():
    """In a fresh process, as the DAG processor parses: no DAG, and the import error names each bad variable."""
    code = textwrap.dedent(f"""
        import json
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(REPO / 'dags')!r})
        print(json.dumps({{"errors": [str(v) for v in bag.import_errors.values()], "dags": sorted(bag.dags)}}))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_SCORING_")}
    env.update(BATCH_SCORING_AZUREML_DEFERRABLE="ture", BATCH_SCORING_RETRIES="-1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["dags"] == []
    [error] = result["errors"]
    assert "BATCH_SCORING_AZUREML_DEFERRABLE='ture': expected a boolean (true/false/1/0/yes/no)" in error
    assert "BATCH_SCORING_RETRIES='-1': expected a whole number >= 0" in error
