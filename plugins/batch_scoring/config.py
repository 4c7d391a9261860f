"""Airflow-side settings of the batch_scoring DAG, read from the environment.

Everything here is a plain value read at parse time from environment variables
(no Airflow Variables, no I/O), so the DAG file stays cheap to parse and one
deployment is configured in one place. Product constants shared with the
scoring jobs come from ``scoring.config``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env(name: str, default: str) -> str:
    return os.environ.get(f"BATCH_SCORING_{name}", default)


@dataclass(frozen=True)
class Settings:
    dag_id: str = field(default_factory=lambda: _env("DAG_ID", "batch_scoring"))
    # Cron over data intervals: the run at 10:00 scores [09:00, 10:00).
    schedule: str = field(default_factory=lambda: _env("SCHEDULE", "0 * * * *"))
    start_date: str = field(default_factory=lambda: _env("START_DATE", "2018-08-28T00:00:00Z"))
    backend: str = field(default_factory=lambda: _env("BACKEND", "local"))
    sql_conn_id: str = field(default_factory=lambda: _env("SQL_CONN_ID", "sensor_sql"))
    blob_conn_id: str = field(default_factory=lambda: _env("BLOB_CONN_ID", "sensor_blob"))
    aggregates_container: str = field(default_factory=lambda: _env("AGGREGATES_CONTAINER", "aggregates"))
    models_container: str = field(default_factory=lambda: _env("MODELS_CONTAINER", "models"))
    predictions_container: str = field(default_factory=lambda: _env("PREDICTIONS_CONTAINER", "predictions"))
    # Freshness sensor: how often to look, and how long to wait before failing.
    freshness_poke_seconds: int = field(default_factory=lambda: int(_env("FRESHNESS_POKE_SECONDS", "60")))
    freshness_timeout_seconds: int = field(default_factory=lambda: int(_env("FRESHNESS_TIMEOUT_SECONDS", "3600")))
    retries: int = field(default_factory=lambda: int(_env("RETRIES", "2")))
    retry_delay_seconds: int = field(default_factory=lambda: int(_env("RETRY_DELAY_SECONDS", "30")))
    max_active_runs: int = field(default_factory=lambda: int(_env("MAX_ACTIVE_RUNS", "4")))

    @property
    def containers(self) -> tuple[str, str, str]:
        return (self.aggregates_container, self.models_container, self.predictions_container)


def settings() -> Settings:
    """Current settings (re-read each call so tests and workers see the environment)."""
    return Settings()
