"""Hourly many-model batch scoring: wiring only (logic lives in plugins/batch_scoring)."""
from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Asset, Param, task
from airflow.timetables.interval import CronDataIntervalTimetable

from batch_scoring.config import settings
from batch_scoring.operators.freshness import AggregatesFreshnessSensor
from batch_scoring.operators.local_scoring import LocalScoringOperator

S = settings()
PREDICTIONS = Asset(name=f"{S.dag_id}_predictions", uri=f"wasb://{S.predictions_container}/")

DOC = f"""
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
3. **score** (mapped, one `device/sensor` per task by default, backend
   `{S.backend}`): writes `{S.predictions_container}/<interval>/<device>/<sensor>.parquet`.
4. **collect**: validates every prediction blob (exists, schema, one row per
   input window, finite scores), writes `<interval>/_manifest.json`, updates the
   asset `{PREDICTIONS.name}`, and fails listing what is missing or wrong.

**Backfill** historical intervals (the DAG must be unpaused, or the runs wait):

    airflow dags unpause {S.dag_id}
    airflow backfill create --dag-id {S.dag_id} --from-date 2026-01-01T00:00:00 --to-date 2026-01-01T06:00:00

Add `--reprocess-behavior completed` to redo intervals that already succeeded.

**Params** (manual runs): `targets_per_unit` groups targets into one task,
`min_coverage` is the fraction of targets that must validate.
"""

with DAG(
    dag_id=S.dag_id,
    schedule=CronDataIntervalTimetable(S.schedule, timezone="UTC"),
    start_date=dt.datetime.fromisoformat(S.start_date),
    catchup=False,
    max_active_runs=S.max_active_runs,
    doc_md=DOC,
    tags=["scoring", "azure-ml", "iot"],
    default_args={
        "owner": "data-engineering",
        "retries": S.retries,
        "retry_delay": dt.timedelta(seconds=S.retry_delay_seconds),
    },
    params={
        "targets_per_unit": Param(1, type="integer", minimum=1, description="device/sensor targets scored per task"),
        "min_coverage": Param(1.0, type="number", minimum=0, maximum=1, description="fraction of targets that must validate"),
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
    def snapshot(params=None, **context):
        """Returns the scoring units to map over; the whole plan goes to XCom key 'plan'."""
        from batch_scoring.tasks import snapshot_task

        return snapshot_task(context, int(params["targets_per_unit"]))

    units = snapshot()

    if S.backend == "azureml":
        from batch_scoring.operators.azure_ml import AzureMLScoringOperator  # cheap: azure.ai.ml loads in the task

        score = AzureMLScoringOperator.partial(
            task_id="score", azureml_conn_id=S.azureml_conn_id, map_index_template="{{ unit_label }}"
        ).expand(unit=units)
    elif S.backend == "local":
        score = LocalScoringOperator.partial(
            task_id="score", blob_conn_id=S.blob_conn_id, map_index_template="{{ unit_label }}"
        ).expand(unit=units)
    else:
        raise ValueError(f"BATCH_SCORING_BACKEND={S.backend!r}: supported backends are 'local' and 'azureml'")

    @task(trigger_rule="all_done", outlets=[PREDICTIONS])
    def collect(params=None, **context):
        from batch_scoring.tasks import collect_task

        return collect_task(context, float(params["min_coverage"]), PREDICTIONS)

    wait_for_aggregates >> units
    score >> collect()
