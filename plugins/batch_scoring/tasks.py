"""Task bodies of the DAG: fetch clients from Airflow connections, call the pipeline."""
from __future__ import annotations

from batch_scoring.config import settings
from batch_scoring.pipeline import Interval, PipelineError, collect_interval, snapshot_interval


def snapshot_task(context, targets_per_unit: int) -> list[list[str]]:
    from batch_scoring.hooks.blob_storage import BlobStore
    from batch_scoring.hooks.sql import sensor_sql

    s = settings()
    with sensor_sql(s.sql_conn_id) as conn:
        plan = snapshot_interval(conn, BlobStore.from_conn_id(s.blob_conn_id), s, Interval.from_context(context), targets_per_unit)
    context["ti"].xcom_push(key="plan", value={k: plan[k] for k in ("interval", "targets", "skipped")})
    return plan["units"]


def collect_task(context, min_coverage: float, asset) -> dict:
    from batch_scoring.hooks.blob_storage import BlobStore

    plan = context["ti"].xcom_pull(task_ids="snapshot", key="plan")
    if plan is None:
        raise PipelineError("snapshot did not complete for this run: nothing to collect (see the snapshot task's log)")
    s = settings()
    interval = Interval.from_context(context)
    manifest = collect_interval(
        BlobStore.from_conn_id(s.blob_conn_id), s, interval, plan, min_coverage
    )
    context["outlet_events"][asset].extra = {
        "interval": interval.key,
        "manifest": f"{s.predictions_container}/{interval.key}/_manifest.json",
        "ok": manifest["counts"]["ok"],
        "anomalies": manifest["anomalies"],
    }
    return {k: manifest[k] for k in ("interval", "coverage", "counts", "rows", "anomalies")}
