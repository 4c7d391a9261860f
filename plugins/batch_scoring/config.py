"""Airflow-side settings of the batch_scoring DAG, read and validated from the environment.

Everything here is a plain value read at parse time from ``BATCH_SCORING_*``
environment variables (no Airflow Variables, no I/O), so the DAG file stays
cheap to parse and one deployment is configured in one place. Every value is
checked when the settings are built: a misspelt or out-of-range value fails the
DAG's parse (an import error in the UI) naming the variable, the value and what
it accepts, every bad variable at once. Product constants shared with the
scoring jobs come from ``scoring.config``.
"""
from __future__ import annotations

import datetime as dt
import difflib
import os
from typing import Literal, NamedTuple

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "BATCH_SCORING_"

# What each kind of value accepts, as the error message and the README say it.
_BOOLEAN = "a boolean (true/false/1/0/yes/no)"
_CONTAINER = "an Azure blob container name (3-63 characters: lowercase letters, digits and single hyphens, " \
             "starting and ending with a letter or digit)"
_CONN_ID = "an Airflow connection id (non-empty, no spaces)"
_NAME = "a non-empty name (no spaces)"
_CONTAINER_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"  # plus 3-63 characters (min/max_length)
_NO_SPACES = r"^\S+$"
#: settings that were removed, and what replaced them (a deployment still setting one is told so).
REMOVED = {"BATCH_SCORING_AUTO_UNITS": "targets_per_unit=auto now plans from costs: BATCH_SCORING_AUTO_SLOTS, "
                                      "BATCH_SCORING_AUTO_TASK_OVERHEAD_SECONDS, BATCH_SCORING_AUTO_TARGET_SECONDS, "
                                      "BATCH_SCORING_AUTO_MAX_UNIT_SECONDS; see the README's settings"}
#: ``BATCH_SCORING_*`` variables that are not settings of this object: read by other parts
#: (``batch_scoring.preload``) or by the live Azure tests (``BATCH_SCORING_LIVE_*``).
OTHER_VARIABLES = ("BATCH_SCORING_PRELOAD",)
OTHER_PREFIXES = ("BATCH_SCORING_LIVE_",)


class Containers(NamedTuple):
    """The deployment's three blob containers (a tuple, so ``ensure_containers(s.containers)`` takes it whole)."""

    aggregates: str
    models: str
    predictions: str


class SettingsError(ValueError):
    """One or more ``BATCH_SCORING_*`` variables hold a value their setting refuses.

    The message has one line per bad variable: ``BATCH_SCORING_<NAME>='<value>': expected <what it accepts>``.
    """


def _airflow_default_deferrable() -> bool:
    """Airflow's ``[operators] default_deferrable`` (False when unset, or when Airflow is not installed)."""
    try:
        from airflow.configuration import conf
    except ImportError:  # e.g. the ingest_sim CLI installed without Airflow: only dag_id/schedule matter there
        return False
    return conf.getboolean("operators", "default_deferrable", fallback=False)


def _accepts(text: str, **kw):
    """A field whose refusal message says it expects ``text`` (pydantic ``Field`` keywords pass through)."""
    return Field(description=text, **kw)


class Settings(BaseSettings):
    """The deployment's settings, each read from ``BATCH_SCORING_<FIELD>`` (upper case) when built.

    Identity and schedule (``dag_id``, ``schedule`` a UTC cron over data
    intervals, ``start_date`` ISO 8601), the scoring ``backend`` (``local`` or
    ``azureml``), Airflow connection ids, the three blob containers, the
    freshness sensor's poke interval and timeout (seconds), the late-data
    lookback (days), retries and their delay (seconds), ``max_active_runs``,
    the costs ``targets_per_unit="auto"`` plans for (``auto_*``), the local backend's model cache (folder, size cap
    in bytes) and the Azure ML job's settings (compute, environment, code,
    datastores, experiment, poll interval and timeout in seconds, deferrable,
    job generation). Each field's ``description`` says what it accepts.
    Building it raises ``SettingsError`` (a ``ValueError``) listing every
    variable whose value is refused.
    """
    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, validate_default=False)

    dag_id: str = _accepts("an Airflow DAG id (letters, digits, '_', '.', '-'; at most 250 characters)",
                           default="batch_scoring", pattern=r"^[A-Za-z0-9_.\-]{1,250}$")
    # Cron over data intervals: the run at 10:00 scores [09:00, 10:00).
    schedule: str = _accepts("a cron expression (e.g. '0 * * * *' or '@hourly')", default="0 * * * *")
    start_date: str = _accepts("an ISO 8601 date or time (e.g. 2018-08-28T00:00:00Z)",
                               default="2018-08-28T00:00:00Z")
    backend: Literal["local", "azureml"] = _accepts("one of: local, azureml", default="local")
    sql_conn_id: str = _accepts(_CONN_ID, default="sensor_sql", pattern=_NO_SPACES)
    blob_conn_id: str = _accepts(_CONN_ID, default="sensor_blob", pattern=_NO_SPACES)
    aggregates_container: str = _accepts(_CONTAINER, default="aggregates",
                                         pattern=_CONTAINER_PATTERN, min_length=3, max_length=63)
    models_container: str = _accepts(_CONTAINER, default="models",
                                         pattern=_CONTAINER_PATTERN, min_length=3, max_length=63)
    predictions_container: str = _accepts(_CONTAINER, default="predictions",
                                         pattern=_CONTAINER_PATTERN, min_length=3, max_length=63)
    # Freshness sensor: how often to look, and how long to wait before failing.
    freshness_poke_seconds: int = _accepts("a whole number of seconds > 0", default=60, gt=0)
    freshness_timeout_seconds: int = _accepts("a whole number of seconds > 0", default=3600, gt=0)
    # Late data: how far back (by when it was loaded) the freshness check looks for revised
    # aggregates of intervals already scored (batch_scoring.late_data).
    late_data_lookback_days: float = _accepts("a number of days > 0", default=30.0, gt=0, allow_inf_nan=False)
    retries: int = _accepts("a whole number >= 0", default=2, ge=0)
    retry_delay_seconds: int = _accepts("a whole number of seconds >= 0", default=30, ge=0)
    max_active_runs: int = _accepts("a whole number >= 1", default=4, ge=1)
    # targets_per_unit="auto": the unit size the cost model (scoring.planner.auto_targets_per_unit) finds
    # quickest for these costs. Defaults for the local backend: fitted on this project's benchmark
    # (BENCHMARKS.md §5, `python -m bench.calibrate` prints yours).
    # Parallel scoring slots; 0 = Airflow's [core] parallelism capped by max_active_tasks_per_dag (local),
    # azureml_max_nodes (azureml).
    auto_slots: int = _accepts("a whole number >= 0 (0 = from Airflow's parallelism)", default=0, ge=0)
    auto_task_overhead_seconds: float = _accepts("a number of seconds >= 0", default=1.0, ge=0, allow_inf_nan=False)
    auto_target_seconds: float = _accepts("a number of seconds > 0", default=0.025, gt=0, allow_inf_nan=False)
    # A failed unit is retried whole: auto keeps one unit's modelled time under this.
    auto_max_unit_seconds: float = _accepts("a number of seconds > 0", default=900.0, gt=0, allow_inf_nan=False)
    # The memory one scoring unit may hold (local: a worker's memory over the tasks it runs at once; azureml: a
    # node's): auto keeps a unit to 0.8 of it at 563 bytes per target-window (scoring.planner). 4 GiB is our
    # choice, a small Celery worker or pod's share; 0 = not modelled.
    auto_unit_memory_gib: float = _accepts("a number of GiB >= 0 (0 = not modelled)", default=4.0, ge=0,
                                           allow_inf_nan=False)
    # Local backend: the worker's cache of models by sha256 (batch_scoring.model_cache); "" = <system temp>/batch-scoring-model-cache.
    model_cache_dir: str = _accepts("a folder path (empty: a folder under the system temp dir)", default="")
    # Least recently used models are evicted above this size; 0 turns the cache off (every unit downloads its models).
    model_cache_max_bytes: int = _accepts("a whole number of bytes >= 0 (0 = no cache)", default=2 * 1024 ** 3, ge=0)
    # --- Azure ML backend (BATCH_SCORING_BACKEND=azureml); see docs/azure_ml.md ------------
    azureml_conn_id: str = _accepts(_CONN_ID, default="azure_ml", pattern=_NO_SPACES)
    azureml_compute: str = _accepts(_NAME, default="cpu-scoring", pattern=_NO_SPACES)
    # Registered once per version by `python -m batch_scoring.scoring.azure_setup` (never per job).
    azureml_environment: str = _accepts(_NAME, default="batch-scoring-env:1", pattern=_NO_SPACES)
    azureml_code: str = _accepts(_NAME, default="batch-scoring-code:1", pattern=_NO_SPACES)
    # Blob datastores registered over the three containers.
    azureml_aggregates_datastore: str = _accepts(_NAME, default="scoring_aggregates", pattern=_NO_SPACES)
    azureml_models_datastore: str = _accepts(_NAME, default="scoring_models", pattern=_NO_SPACES)
    azureml_predictions_datastore: str = _accepts(_NAME, default="scoring_predictions", pattern=_NO_SPACES)
    azureml_experiment: str = _accepts(_NAME, default="batch-scoring", pattern=_NO_SPACES)
    # What `auto` plans Azure ML jobs for: the cluster's max_instances (azure_setup --max-instances) and the
    # fixed cost of one job once its node is up (seconds; measure yours: a job's Preparing -> Running in studio).
    azureml_max_nodes: int = _accepts("a whole number >= 1", default=4, ge=1)
    azureml_job_overhead_seconds: float = _accepts("a number of seconds >= 0", default=60.0, ge=0, allow_inf_nan=False)
    azureml_poll_seconds: float = _accepts("a number of seconds > 0", default=30.0, gt=0, allow_inf_nan=False)
    # Give up waiting (and cancel the job) after this long; 0 = wait forever.
    azureml_timeout_seconds: float = _accepts("a number of seconds >= 0 (0 = wait forever)", default=7200.0, ge=0,
                                              allow_inf_nan=False)
    # Unset: Airflow's own [operators] default_deferrable (AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE), read now.
    azureml_deferrable: bool = _accepts(_BOOLEAN, default_factory=_airflow_default_deferrable)
    # Mixed into every job name. Job names already follow the deployed models, the snapshot's
    # content and the code/environment versions; bump this only to force fresh jobs otherwise.
    azureml_job_generation: str = _accepts(_NAME, default="1", pattern=_NO_SPACES)

    def __init__(self, **values):
        """Read and check every ``BATCH_SCORING_*`` variable; ``SettingsError`` lists each refused one.

        A ``BATCH_SCORING_*`` variable that names no setting (a misspelt name, which would
        otherwise leave the setting at its default without a word) is refused too, with the
        closest setting's name.
        """
        lines = unknown_variables(os.environ)
        try:
            super().__init__(**values)
        except ValidationError as exc:
            lines = _describe(exc) + lines
        if lines:
            raise SettingsError(f"{len(lines)} invalid batch_scoring setting{'s' if len(lines) > 1 else ''} "
                                f"(environment variables):\n  " + "\n  ".join(lines))

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError("not a cron expression")
        return value

    @field_validator("start_date")
    @classmethod
    def _iso(cls, value: str) -> str:
        dt.datetime.fromisoformat(value)  # ValueError for anything else
        return value

    @property
    def containers(self) -> Containers:
        """The (aggregates, models, predictions) container names."""
        return Containers(self.aggregates_container, self.models_container, self.predictions_container)


def _describe(exc: ValidationError) -> list[str]:
    """One line per refused variable: its name, the value as given and what the setting accepts."""
    lines = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "?"
        info = Settings.model_fields.get(field)
        accepts = info.description if info is not None and info.description else err["msg"]
        lines.append(f"{PREFIX}{field.upper()}={err['input']!r}: expected {accepts}")
    return lines


def unknown_variables(environ) -> list[str]:
    """One line per ``BATCH_SCORING_*`` name in ``environ`` (any case, as pydantic-settings reads them)
    that is no setting and not in ``OTHER_VARIABLES``/``OTHER_PREFIXES``, with the closest setting's name."""
    known = [PREFIX + name.upper() for name in Settings.model_fields]
    lines = []
    for name in sorted(environ):
        upper = name.upper()
        if upper.startswith(PREFIX) and upper not in known and upper not in OTHER_VARIABLES \
                and not upper.startswith(OTHER_PREFIXES):
            if upper in REMOVED:
                lines.append(f"{name}: no longer a setting ({REMOVED[upper]})")
                continue
            close = difflib.get_close_matches(upper.removeprefix(PREFIX), [k.removeprefix(PREFIX) for k in known],
                                              n=1, cutoff=0.6)
            hint = f"did you mean {PREFIX}{close[0]}?" if close else "see batch_scoring.config.Settings"
            lines.append(f"{name}: no such setting ({hint})")
    return lines


def settings() -> Settings:
    """Current settings (re-read each call so tests and workers see the environment).

    Raises ``SettingsError`` naming every ``BATCH_SCORING_*`` variable whose value is refused.
    """
    return Settings()
