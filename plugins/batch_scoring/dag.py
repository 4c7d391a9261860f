"""The batch scoring DAG, shipped in the package: wiring only (logic lives in the modules it imports).

A deployment's DAG file is one line (``dags/batch_scoring_dag.py`` in the repository)::

    from batch_scoring.dag import dag  # the batch_scoring Airflow DAG

``dag`` is built by :func:`build_dag` on every import of that name (PEP 562), from the
``BATCH_SCORING_*`` settings of the process parsing the file, so each DAG parse sees
the environment it runs in. :func:`build_dag` takes a ``Settings`` for a DAG
built some other way.

Airflow finds the DAG in the DAG file's globals and records that file as its
``fileloc``; its DAG processor reads only files containing "airflow" and "dag"
(``[core] dag_discovery_safe_mode``), which the one line does.
"""
from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Asset, Param, task
from airflow.timetables.interval import CronDataIntervalTimetable

from batch_scoring.config import Settings, settings
from batch_scoring.operators.azure_ml import azureml_args
from batch_scoring.operators.freshness import AggregatesFreshnessSensor
from batch_scoring.operators.score_unit import BACKENDS, ScoringOperator


def predictions_asset(s: Settings) -> Asset:
    """The asset the collector updates: ``wasb://<predictions container>/``, named ``<dag_id>_predictions``."""
    return Asset(name=f"{s.dag_id}_predictions", uri=f"wasb://{s.predictions_container}/")


def doc_md(S: Settings) -> str:
    """The DAG's ``doc_md`` (markdown shown in the UI) for settings ``S``."""
    PREDICTIONS = predictions_asset(S)
    return f"""
# Batch scoring of per-device/sensor anomaly models

Each run scores its **data interval** `[data_interval_start, data_interval_end)`
(schedule `{S.schedule}`, UTC): the run stamped 10:00 scores 09:00–10:00.
Every output is keyed by that interval, so a rerun or backfill overwrites the
same blobs with the same content.

1. **wait_for_aggregates** (rescheduling sensor): every target with a deployed
   model has SQL aggregates reaching the interval's end; on timeout it names the
   stale `device/sensor` targets.
2. **snapshot**: exports the interval's aggregates once to
   `{S.aggregates_container}/<interval>/aggregates.parquet` and plans the targets
   (those with data and a model; the rest are listed as skipped).
3. **score** (mapped; one `device/sensor` per task by default; backend
   `{S.backend}` unless the run's `backend` param says otherwise): writes the unit's
   part file `{S.predictions_container}/date=<day>/interval=<interval>/part-<unit id>.parquet`
   (its targets' rows; their receipts in the parquet footer).
4. **collect**: validates every target's rows (exist, schema, one row per
   input window, finite scores), writes `_manifest.json` and the run report
   `_report.html` in the interval's folder, removes part files of an earlier
   batching, updates the asset `{PREDICTIONS.name}`, and fails listing what is
   missing or wrong.

## Backfill
Historical intervals are scored with a backfill. **The DAG must be unpaused**,
or the backfill's runs wait (queued) for ever:

    airflow dags unpause {S.dag_id}
    airflow backfill create --dag-id {S.dag_id} \\
        --from-date 2026-01-01T00:00:00 --to-date 2026-01-01T23:00:00

The dates are the runs' logical dates, i.e. interval *starts*: the example
scores the 24 hours of 1 January. Intervals that already succeeded are left
alone; add `--reprocess-behavior completed` to score them again (same blobs,
same bytes). The UI's *Trigger → Backfill* does the same.

## Params (manual runs)
- `targets`: globs such as `dev001/*` or `*/s2`; empty = every target. A
  selection that matches none of the interval's targets fails the snapshot at
  once, naming it; a glob that matches nothing among good ones is logged. The
  collector merges a subset's results into the interval's manifest: the other
  targets keep their earlier results (listed `not_selected` if they have none),
  and `min_coverage` judges the selected targets.
- `targets_per_unit`: targets per mapped task (1 = one task per `device/sensor`);
  `auto` picks the size a cost model finds quickest (per-task overhead, seconds
  per target, parallel slots: the `BATCH_SCORING_AUTO_*` settings; the snapshot
  task's log says what it chose and why). Grown automatically so a run never
  maps more than `max_map_length` units.
- `backend`: `local` or `azureml`.
- `min_coverage`: fraction of targets that must validate for the run to pass.
- `dry_run`: snapshot and plan only; nothing is scored.
"""


def build_dag(s: Settings | None = None) -> DAG:
    """The batch scoring DAG for settings ``s`` (default: :func:`batch_scoring.config.settings`, read now).

    :raises batch_scoring.config.SettingsError: naming every refused ``BATCH_SCORING_*`` variable
        (shown as the DAG file's import error in the UI).
    """
    S = s or settings()
    PREDICTIONS = predictions_asset(S)
    with DAG(
        dag_id=S.dag_id,
        schedule=CronDataIntervalTimetable(S.schedule, timezone="UTC"),
        start_date=dt.datetime.fromisoformat(S.start_date),
        catchup=False,
        max_active_runs=S.max_active_runs,
        doc_md=doc_md(S),
        tags=["scoring", "azure-ml", "iot"],
        default_args={
            "owner": "data-engineering",
            "retries": S.retries,
            "retry_delay": dt.timedelta(seconds=S.retry_delay_seconds),
        },
        params={
            "targets": Param([], type="array", items={"type": "string", "pattern": r"^[^/\s]+/[^/\s]+$"},
                             title="Targets", description="device/sensor globs, e.g. dev001/* or */s2; empty = all"),
            "targets_per_unit": Param(1, anyOf=[{"type": "integer", "minimum": 1}, {"type": "string", "enum": ["auto"]}],
                                      title="Targets per task", description="device/sensor targets per mapped task, or auto"),
            "backend": Param(S.backend, type="string", enum=list(BACKENDS), title="Backend"),
            "min_coverage": Param(1.0, type="number", minimum=0, maximum=1, title="Minimum coverage",
                                  description="fraction of targets that must validate"),
            "dry_run": Param(False, type="boolean", title="Dry run", description="snapshot and plan only; score nothing"),
        },
    ) as dag:
        wait_for_aggregates = AggregatesFreshnessSensor(
            task_id="wait_for_aggregates",
            sql_conn_id=S.sql_conn_id,
            blob_conn_id=S.blob_conn_id,
            models_container=S.models_container,
            poke_interval=S.freshness_poke_seconds,
            timeout=S.freshness_timeout_seconds,
        )

        @task
        def snapshot(**context):
            """Returns the scoring units to map over; the whole plan goes to XCom key 'plan'."""
            from batch_scoring.tasks import snapshot_task

            return snapshot_task(context)

        units = snapshot()

        score = ScoringOperator.partial(
            task_id="score", map_index_template="{{ unit_label }}", backend=S.backend, **azureml_args(S),
        ).expand(unit=units)

        @task(trigger_rule="all_done", outlets=[PREDICTIONS])
        def collect(unit_receipts, **context):
            """Validates the interval's predictions; ``unit_receipts`` is what each mapped score task returned."""
            from batch_scoring.tasks import collect_task

            return collect_task(context, PREDICTIONS, unit_receipts)

        wait_for_aggregates >> units
        collect(score.output)
    return dag


def __getattr__(name: str):
    """``dag``: a DAG freshly built from the current settings (PEP 562); any other name: AttributeError."""
    if name == "dag":
        return build_dag()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
