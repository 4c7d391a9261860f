"""Airflow-side settings of the batch_scoring DAG, read from the environment.

Everything here is a plain value read at parse time from environment variables
(no Airflow Variables, no I/O), so the DAG file stays cheap to parse and one
deployment is configured in one place. Product constants shared with the
scoring jobs come from ``scoring.config``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env(name: str, default: str, cast=str):
    """A setting read from ``BATCH_SCORING_<name>`` when Settings() is built."""
    return field(default_factory=lambda: cast(os.environ.get(f"BATCH_SCORING_{name}", default)))


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Settings:
    """The deployment's settings, each read from ``BATCH_SCORING_<FIELD>`` (upper case) when built.

    Identity and schedule (``dag_id``, ``schedule`` a UTC cron over data
    intervals, ``start_date`` ISO), the scoring ``backend`` (``local`` or
    ``azureml``), Airflow connection ids, the three blob containers, the
    freshness sensor's poke interval and timeout (seconds), the late-data
    lookback (days), retries, ``max_active_runs``, ``auto_units`` and the Azure ML
    job's settings (compute, environment, code, datastores, experiment, poll
    interval and timeout in seconds, deferrable). Building it raises
    ``ValueError`` when a numeric variable does not parse.
    """
    dag_id: str = _env("DAG_ID", "batch_scoring")
    # Cron over data intervals: the run at 10:00 scores [09:00, 10:00).
    schedule: str = _env("SCHEDULE", "0 * * * *")
    start_date: str = _env("START_DATE", "2018-08-28T00:00:00Z")
    backend: str = _env("BACKEND", "local")
    sql_conn_id: str = _env("SQL_CONN_ID", "sensor_sql")
    blob_conn_id: str = _env("BLOB_CONN_ID", "sensor_blob")
    aggregates_container: str = _env("AGGREGATES_CONTAINER", "aggregates")
    models_container: str = _env("MODELS_CONTAINER", "models")
    predictions_container: str = _env("PREDICTIONS_CONTAINER", "predictions")
    # Freshness sensor: how often to look, and how long to wait before failing.
    freshness_poke_seconds: int = _env("FRESHNESS_POKE_SECONDS", "60", int)
    freshness_timeout_seconds: int = _env("FRESHNESS_TIMEOUT_SECONDS", "3600", int)
    # Late data: how far back (by when it was loaded) the freshness check looks for revised
    # aggregates of intervals already scored (batch_scoring.late_data).
    late_data_lookback_days: float = _env("LATE_DATA_LOOKBACK_DAYS", "30", float)
    retries: int = _env("RETRIES", "2", int)
    retry_delay_seconds: int = _env("RETRY_DELAY_SECONDS", "30", int)
    max_active_runs: int = _env("MAX_ACTIVE_RUNS", "4", int)
    # targets_per_unit="auto" splits a run into about this many mapped units.
    auto_units: int = _env("AUTO_UNITS", "8", int)
    # --- Azure ML backend (BATCH_SCORING_BACKEND=azureml); see docs/azure_ml.md ------------
    azureml_conn_id: str = _env("AZUREML_CONN_ID", "azure_ml")
    azureml_compute: str = _env("AZUREML_COMPUTE", "cpu-scoring")
    # Registered once per version by `python -m scoring.azure_setup` (never per job).
    azureml_environment: str = _env("AZUREML_ENVIRONMENT", "batch-scoring-env:1")
    azureml_code: str = _env("AZUREML_CODE", "batch-scoring-code:1")
    # Blob datastores registered over the three containers.
    azureml_aggregates_datastore: str = _env("AZUREML_AGGREGATES_DATASTORE", "scoring_aggregates")
    azureml_models_datastore: str = _env("AZUREML_MODELS_DATASTORE", "scoring_models")
    azureml_predictions_datastore: str = _env("AZUREML_PREDICTIONS_DATASTORE", "scoring_predictions")
    azureml_experiment: str = _env("AZUREML_EXPERIMENT", "batch-scoring")
    azureml_poll_seconds: float = _env("AZUREML_POLL_SECONDS", "30", float)
    # Give up waiting (and cancel the job) after this long; 0 = wait forever.
    azureml_timeout_seconds: float = _env("AZUREML_TIMEOUT_SECONDS", "7200", float)
    azureml_deferrable: bool = _env("AZUREML_DEFERRABLE", "true", _flag)
    # Mixed into every job name. Job names already follow the deployed models, the snapshot's
    # content and the code/environment versions; bump this only to force fresh jobs otherwise.
    azureml_job_generation: str = _env("AZUREML_JOB_GENERATION", "1")

    @property
    def containers(self) -> tuple[str, str, str]:
        return (self.aggregates_container, self.models_container, self.predictions_container)


def settings() -> Settings:
    """Current settings (re-read each call so tests and workers see the environment)."""
    return Settings()
