"""Task bodies of the DAG: fetch clients from Airflow connections, call the run's steps."""
from __future__ import annotations

from batch_scoring.scoring.layout import manifest_blob

from batch_scoring.collect import collect_interval
from batch_scoring.config import settings
from batch_scoring.context import interval_from_context
from batch_scoring.errors import PermanentPipelineError, PipelineError
from batch_scoring.snapshot import snapshot_interval

PLAN_KEYS = ("interval", "targets", "skipped", "selection", "unselected", "unselected_skipped", "targets_per_unit",
             "dry_run", "aggregates_revised_at")


def airflow_slots() -> int:
    """Task instances Airflow runs at once for one DAG: ``[core] parallelism`` capped by
    ``[core] max_active_tasks_per_dag`` (what ``targets_per_unit="auto"`` plans local units for)."""
    from airflow.configuration import conf

    return max(1, min(conf.getint("core", "parallelism"), conf.getint("core", "max_active_tasks_per_dag")))


def snapshot_task(context) -> list[list[str]]:
    """Snapshot the interval, plan it with the run's params; returns the units to map over.

    A ``targets`` param that selects nothing, or structurally malformed aggregates, fail the task at once
    (``AirflowFailException``: retrying the same params or the same rows cannot help), naming the selection
    and the targets it was matched against, or every malformed target and window.
    """
    from airflow.configuration import conf
    from airflow.sdk.exceptions import AirflowFailException

    from batch_scoring.hooks.blob_storage import BlobStore
    from batch_scoring.hooks.sql import sensor_sql
    from batch_scoring.units import apply_run_params, auto_costs

    s = settings()
    interval = interval_from_context(context)
    try:
        with sensor_sql(s.sql_conn_id) as conn:
            plan = snapshot_interval(conn, BlobStore.from_conn_id(s.blob_conn_id), s, interval)
        max_map = conf.getint("core", "max_map_length")
        costs = auto_costs(s, context["params"].get("backend") or s.backend, airflow_slots(), max_map,
                           (interval.end - interval.start).total_seconds())
        plan = apply_run_params(plan, context["params"], max_map, costs, s.auto_max_unit_seconds)
    except PermanentPipelineError as exc:
        raise AirflowFailException(str(exc)) from exc
    context["ti"].xcom_push(key="plan", value={k: plan[k] for k in PLAN_KEYS})
    if context["params"].get("targets_per_unit") == "auto" and plan["targets"]:
        from dataclasses import replace

        from batch_scoring.scoring.planner import estimate, max_targets_per_job

        e = estimate(replace(costs, targets=len(plan["targets"]), targets_per_job=plan["targets_per_unit"]))
        cap = max_targets_per_job(costs)
        memory = "" if cap is None else f"; at most {cap} targets per unit fit {costs.node_memory_gib:g} GiB"
        print(f"interval {interval.key}: targets_per_unit=auto: {plan['targets_per_unit']} per unit, {e.jobs} units in "
              f"{e.waves} wave(s) over {e.slots} slots; modelled {e.job_seconds:.1f} s per unit "
              f"({costs.job_overhead:g} s + {costs.per_target * 1000:g} ms per target){memory}")
    for note in plan["selection_notes"]:
        print(f"interval {interval.key}: {note}")
    print(
        f"interval {interval.key}: targets selection {plan['selection']}{' (all)' if not plan['selection'] else ''}: "
        f"{len(plan['targets'])} targets in {len(plan['units'])} units of up to "
        f"{plan['targets_per_unit']}; {len(plan['skipped'])} skipped"
        + (f"; {len(plan['unselected'])} not selected (their earlier results, if any, are kept)" if plan["unselected"] else "")
        + (" (dry run: nothing will be scored)" if plan["dry_run"] else "")
    )
    return plan["units"]


def collect_task(context, asset, unit_receipts) -> dict:
    """Validate the interval's predictions, write the manifest and the report, update the asset.

    :param context: the task's Airflow context (``ti``, ``params``, data interval, ``outlet_events``).
    :param asset: the predictions asset whose event gets the interval, manifest, report and counts.
    :param unit_receipts: what the mapped score tasks returned, one entry per map index that pushed one
        (a failed task instance has none): the local backend's receipts or the Azure ML result dicts;
        None or empty when nothing was scored.
    :return: the manifest's summary (interval, coverage, counts, rows, anomalies, selection) and ``verified``.
    :raises AirflowFailException: the snapshot never completed (nothing to collect).
    :raises AirflowSkipException: a dry run.
    :raises PipelineError: a prediction is missing or invalid, or coverage is below ``min_coverage``.
    """
    import json

    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from batch_scoring.hooks.blob_storage import BlobStore
    from batch_scoring.report import write_report

    plan = context["ti"].xcom_pull(task_ids="snapshot", key="plan")
    if plan is None:  # the snapshot task failed for good: a retry of collect cannot change that
        raise AirflowFailException("snapshot did not complete for this run: nothing to collect (see the snapshot "
                                   "task's log; clear it and its downstream once the cause is fixed)")
    if plan.get("dry_run"):
        raise AirflowSkipException(f"dry run: {len(plan['targets'])} targets would be scored, {len(plan['skipped'])} skipped")
    s = settings()
    interval = interval_from_context(context)
    store = BlobStore.from_conn_id(s.blob_conn_id)
    flags: dict = {}
    verified: dict = {}
    # what each score task returned: receipts of predictions its unit validated where it wrote them
    unit_receipts = None if unit_receipts is None else list(unit_receipts)
    try:
        manifest = collect_interval(store, s, interval, plan, float(context["params"]["min_coverage"]), keep=flags,
                                    unit_receipts=unit_receipts, verified=verified)
    except PipelineError:
        # the manifest is written before the collector fails: the report shows what went wrong
        name = manifest_blob(interval)
        if store.exists(s.predictions_container, name):
            write_report(store, s, interval, json.loads(store.download_bytes(s.predictions_container, name)))
        raise
    report = write_report(store, s, interval, manifest, flags)
    context["outlet_events"][asset].extra = {
        "interval": interval.key,
        "manifest": f"{s.predictions_container}/{manifest_blob(interval)}",
        "report": f"{s.predictions_container}/{report[-1]}",
        "ok": manifest["counts"]["ok"],
        "anomalies": manifest["anomalies"],
    }
    return {**{k: manifest[k] for k in ("interval", "coverage", "counts", "rows", "anomalies", "selection", "selected")},
            "verified": verified}
