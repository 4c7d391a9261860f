"""Score one unit of targets as an Azure ML command job: the production backend.

``AzureMLScoringJob`` is the component that submits (or re-attaches to) a
unit's job and waits for it; ``AzureMLScoringOperator`` and the DAG's
``ScoringOperator`` (operators/score_unit.py) both delegate to it. The job's
spec and name live in ``batch_scoring.azure_ml_job``.

The job runs the same entry point as the local backend (``python -m
scoring.score``) on the registered code and environment, with the interval's
aggregates snapshot and the models container mounted read-only and the
interval's predictions folder mounted read-write, so the script sees local
paths and writes exactly the unit's ``part-<unit id>.parquet`` there.

Idempotency: ``execute`` looks the job's deterministic name up first and
re-attaches to a queued, running or completed job (an Airflow retry or a
crashed worker never submits a duplicate). A Failed/Canceled/NotResponding/Paused
job, or a Completed job whose part file has since disappeared or was
overwritten by a scoring with another model, is replaced by ``<name>-r1``,
``-r2``, ... (looked up in order and the last one judged, so still deterministic).
"""
from __future__ import annotations

import dataclasses
import time
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from batch_scoring.azure_ml_job import (
    AzureMLInputError,
    AzureMLJobConfig,
    JobInputs,
    attempt_name,
    build_scoring_job,
    job_base_name,
    read_job_inputs,
)
from batch_scoring.links.azure_ml import JOB_NAME_KEY, STUDIO_URL_KEY, AzureMLJobLink

MAX_RESUBMITS = 20
#: Constructor arguments that configure the Azure ML job (``AzureMLScoringJob.from_args``).
JOB_ARGS = ("azureml_conn_id", "blob_conn_id", "poll_interval", "timeout_seconds", "deferrable",
            *(f.name for f in dataclasses.fields(AzureMLJobConfig)))


def azureml_args(s) -> dict[str, Any]:
    """The deployment's settings (``batch_scoring.config.Settings``) as the scoring operators' ``JOB_ARGS``.

    For the DAG file, at parse time, and for tests; plain values only (they are the mapped operator's
    partial arguments, serialized with the DAG).
    """
    return {"azureml_conn_id": s.azureml_conn_id, "blob_conn_id": s.blob_conn_id,
            "poll_interval": s.azureml_poll_seconds, "timeout_seconds": s.azureml_timeout_seconds,
            "deferrable": s.azureml_deferrable, **dataclasses.asdict(AzureMLJobConfig.from_settings(s))}


class AzureMLJobError(RuntimeError):
    """An Azure ML job that did not complete: status, studio URL and the log's tail."""


class AzureMLPermanentJobError(AirflowFailException):
    """A failed Azure ML job whose own receipts show a fault retrying cannot fix (a missing, tampered,
    corrupt or incompatible model, a target the snapshot lacks): fails the task at once, no retries."""


@dataclasses.dataclass
class AzureMLScoringJob:
    """Submit-or-attach, wait and judge one unit's Azure ML job, for the operator that owns it.

    :param config: where the job runs and what it mounts.
    :param azureml_conn_id: Airflow connection of the workspace.
    :param blob_conn_id: Airflow ``wasb`` connection of the storage account the datastores cover: the model
        manifests, the snapshot and the outputs are read through it to name and judge the job.
    :param poll_interval: seconds between status reads.
    :param timeout_seconds: give up (and cancel the job) after this long; 0 = wait for ever.
    :param deferrable: wait in the triggerer (``AzureMLJobTrigger``) instead of the worker.
    :param log: the owning operator's logger.
    """

    config: AzureMLJobConfig
    azureml_conn_id: str
    blob_conn_id: str
    poll_interval: float
    timeout_seconds: float
    deferrable: bool
    log: Any
    job_name: str | None = None

    @classmethod
    def from_args(cls, args: dict[str, Any], log) -> "AzureMLScoringJob":
        """From an operator's ``JOB_ARGS`` values; None values of config fields take ``AzureMLJobConfig``'s defaults."""
        fields = {f.name for f in dataclasses.fields(AzureMLJobConfig)}
        config = AzureMLJobConfig(**{k: v for k, v in args.items() if k in fields and v is not None})
        return cls(config=config, log=log, **{k: v for k, v in args.items() if k not in fields})

    @cached_property
    def hook(self):
        """The workspace hook, one per job component (so one ``MLClient``)."""
        from batch_scoring.hooks.azure_ml import AzureMLHook

        return AzureMLHook(self.azureml_conn_id)

    def blob_store(self):
        """The ``BlobStore`` of ``blob_conn_id``; AzureMLInputError when that connection does not exist."""
        from airflow.sdk.exceptions import AirflowNotFoundException

        from batch_scoring.hooks.blob_storage import BlobStore

        try:
            return BlobStore.from_conn_id(self.blob_conn_id)
        except AirflowNotFoundException as exc:
            raise AzureMLInputError(
                f"no blob connection {self.blob_conn_id!r}: the Azure ML backend reads the unit's model manifests "
                "and the interval's snapshot through it to name the job; define it for the storage account the "
                "datastores cover (docs/azure_ml.md)") from exc

    # --- submit or re-attach ------------------------------------------------------

    def submit_or_attach(self, context, unit: list[str], dag_id: str):
        """Returns the job for ``unit``: an existing live/completed one, or a new submission.

        :raises AzureMLInputError: (see ``read_job_inputs``) before any job is looked up when the unit's
            inputs cannot be read.
        :raises AzureMLJobError: when ``MAX_RESUBMITS + 1`` jobs of the chain all failed.
        """
        from batch_scoring.hooks.azure_ml import FAILED_STATES, job_status
        from batch_scoring.context import interval_from_context

        cfg, hook = self.config, self.hook
        interval = interval_from_context(context)
        store = self.blob_store()
        inputs = read_job_inputs(store, cfg, interval, unit)
        base = job_base_name(dag_id, interval.key, unit, cfg.job_generation, inputs)
        # Only the last job of the chain counts: each earlier name ended failed, or its outputs were lost or
        # overwritten, when the next one was submitted.
        job, last = None, -1
        while last < MAX_RESUBMITS:
            found = hook.find_job(attempt_name(base, last + 1))
            if found is None:
                break
            job, last = found, last + 1
        if job is not None:
            name, status = job.name, job_status(job)
            if status in FAILED_STATES:
                self.log.info("Azure ML job %s ended %s: trying the next name", name, status)
            elif status == "Completed" and (stale := self.stale_outputs(store, interval, unit, inputs)):
                self.log.warning(
                    "Azure ML job %s is Completed but its outputs are gone or were overwritten since (%s): "
                    "submitting the next name", name, "; ".join(stale[:10]))
            else:
                self.log.info("re-attaching to Azure ML job %s (%s)", name, status)
                return job
            if last >= MAX_RESUBMITS:
                raise AzureMLJobError(f"{MAX_RESUBMITS + 1} jobs named {base}[-rN] all failed: not submitting another")
        name = attempt_name(base, last + 1)
        spec = build_scoring_job(cfg, interval.key, unit, name, dag_id=dag_id, run_id=context.get("run_id"),
                                 workspace_id=hook.workspace_id(), timeout_seconds=self.timeout_seconds, inputs=inputs)
        if job is None:
            self._log_what_changed(store, interval, unit, dag_id, inputs, name)
        self.log.info("submitting Azure ML job %s for %s (code %s, environment %s, aggregates %s, models %s)",
                      name, " ".join(unit), inputs.code, inputs.environment, inputs.aggregates, inputs.models_digest)
        return hook.submit_job(spec)

    def _scored_models(self, store, interval, unit: list[str], receipts: list[dict] | None = None) -> dict[str, str]:
        """``target -> model_sha256`` from the receipts in the footer of the unit's part file (where present).

        ``receipts``: that footer when the caller read it already (``_footer``)."""
        receipts = self._footer(store, interval, unit) if receipts is None else receipts
        scored = {}
        for receipt in receipts or []:
            sha = receipt.get("model_sha256")
            if receipt.get("target") in unit and isinstance(sha, str) and sha:
                scored[receipt["target"]] = sha
        return scored

    def _footer(self, store, interval, unit: list[str]) -> list[dict] | None:
        """The receipts in the unit's part file footer (range reads), ``None`` when the file is absent or no part file."""
        from batch_scoring.scoring.layout import part_blob
        from batch_scoring.unit_checks import part_receipts

        try:
            return part_receipts(store, self.config.predictions_container, part_blob(interval, unit))
        except ValueError as exc:
            self.log.warning("%s", exc)
            return None

    def stale_outputs(self, store, interval, unit: list[str], inputs: JobInputs) -> list[str]:
        """What is wrong with ``unit``'s outputs for a Completed job named for ``inputs``; empty when they are its own.

        A Completed job is only taken as done when its part file is still
        there, holds a scored receipt of each of its targets, and those receipts
        name the models it was named for: a file deleted after scoring, or
        overwritten by a later scoring with another model (e.g. a model rolled
        back to the version this job used), makes the retry or rerun submit a
        new job (``-rN``) instead of re-attaching to one whose results are lost.
        """
        from batch_scoring.scoring.layout import part_blob

        receipts = self._footer(store, interval, unit)
        if receipts is None:
            return [f"{self.config.predictions_container}/{part_blob(interval, unit)} is gone or not a part file"]
        ok = {r.get("target") for r in receipts if r.get("status") == "ok"}
        problems = [f"{t} has no scored rows in {part_blob(interval, unit)}" for t in unit if t not in ok]
        scored = self._scored_models(store, interval, unit, receipts)
        problems += [f"{t} was since scored with model {scored[t][:12]}, not this job's {sha[:12]}"
                     for t, sha in inputs.models if t in scored and scored[t] != sha]
        return problems

    def _log_what_changed(self, store, interval, unit: list[str], dag_id: str, inputs: JobInputs, name: str) -> None:
        """Say why a unit scored before gets a new job: its models changed (naming the job they were scored by), or other inputs."""
        scored = self._scored_models(store, interval, unit)
        if not scored:
            return  # never scored (or its outputs are gone): nothing to compare with
        changed = [(t, scored[t], sha) for t, sha in inputs.models if t in scored and scored[t] != sha]
        if not changed:
            self.log.info("no Azure ML job for these inputs yet: %s was last scored with the same models, so the "
                          "aggregates snapshot, code, environment or job generation changed since (or the local "
                          "backend scored it); the job's tags hold its inputs: submitting %s", " ".join(unit), name)
            return
        since = "the last scoring of this interval"
        if len(scored) == len(inputs.models):
            # the job those receipts came from, if only the models changed since (same snapshot, code, environment)
            before = job_base_name(dag_id, interval.key, unit, self.config.job_generation,
                                   inputs.with_models((t, scored[t]) for t, _ in inputs.models))
            if self.hook.find_job(before) is not None:
                since = f"job {before}"
        self.log.info("models changed since %s (%s): submitting %s", since,
                      "; ".join(f"{t} {old[:12]} -> {new[:12]}" for t, old, new in changed), name)

    # --- run, wait, judge -----------------------------------------------------------

    def execute(self, operator: BaseOperator, context) -> dict:
        """Submit or attach, push ``azureml_job_name`` and ``studio_url`` to XCom, then wait.

        Defers ``operator`` (to its ``execute_complete``) when deferrable, with the trigger's absolute
        deadline fixed now; otherwise polls here. Returns ``complete``'s result, raises as it does.
        """
        from batch_scoring.hooks.azure_ml import job_status
        from batch_scoring.units import unit_label

        unit = list(operator.unit)
        context["unit_label"] = unit_label(unit)
        dag_id = context["dag"].dag_id if context.get("dag") else operator.dag_id
        job = self.submit_or_attach(context, unit, dag_id)
        status = job_status(job)
        self.job_name = job.name
        context["ti"].xcom_push(key=JOB_NAME_KEY, value=job.name)
        context["ti"].xcom_push(key=STUDIO_URL_KEY, value=job.studio_url)
        self.log.info("Azure ML job %s: %s (%s)", job.name, status, job.studio_url)
        if status == "Completed":
            return self.result(unit, job.name, status, job.studio_url)
        end_time = time.time() + self.timeout_seconds if self.timeout_seconds > 0 else 0.0
        if self.deferrable:
            from batch_scoring.triggers.azure_ml import AzureMLJobTrigger

            operator.defer(
                trigger=AzureMLJobTrigger(self.azureml_conn_id, job.name, self.poll_interval, end_time,
                                          self.timeout_seconds),
                method_name="execute_complete",
            )
        event = self.hook.wait_for_job(job.name, self.poll_interval, end_time, self.timeout_seconds, log=self.log.info)
        return self.complete(operator, context, event)

    def complete(self, operator: BaseOperator, context, event: dict[str, Any]) -> dict:
        """The unit's result for a ``job_event`` payload: ``{"job_name", "status", "studio_url", "targets"}``.

        :raises AzureMLJobError: for any event but a Completed job (after cancelling a timed-out job),
            with the status, the event's message, the studio URL and the tail of the job's log.
        """
        from batch_scoring.units import unit_label

        unit = list(operator.unit)
        context["unit_label"] = unit_label(unit)
        name = event["job_name"]
        self.job_name = name
        hook = self.hook
        status = event.get("job_status")
        if event.get("status") == "success" and status == "Completed":
            ti = context["ti"]
            return self.result(unit, name, status, ti.xcom_pull(task_ids=operator.task_id, key=STUDIO_URL_KEY,
                                                                map_indexes=ti.map_index))
        if event.get("status") == "timeout":
            self.log.warning("cancelling Azure ML job %s: %s", name, event.get("message"))
            hook.cancel_job(name)
        try:
            job = hook.get_job(name)
        except Exception:  # the job is a convenience in the message, not worth hiding the failure
            job = None
        studio_url = getattr(job, "studio_url", None)
        tail = hook.job_log_tail(name)
        from batch_scoring.context import interval_from_context

        message = (f"interval {interval_from_context(context).key}: Azure ML job {name} for {' '.join(unit)} did "
                   f"not complete: status {status}"
                   f"{' (' + event['message'] + ')' if event.get('message') else ''}; studio: {studio_url}")
        if event.get("status") == "error" and job is not None:
            permanent = self.permanent_failures(context, unit, job)
            if permanent:
                from batch_scoring.permanent import way_out

                failed = "; ".join(f"{r['target']}: {r.get('error')}" for r in permanent)
                raise AzureMLPermanentJobError(
                    f"{message}; its receipts: {failed}; "
                    f"{way_out(permanent, self.config.containers, interval_from_context(context))}")
        raise AzureMLJobError(f"{message}\n--- last lines of the job's log ---\n{tail}")

    def permanent_failures(self, context, unit: list[str], job) -> list[dict]:
        """The failed receipts of ``unit`` that ``job`` wrote and retrying cannot fix (``permanent_receipts``,
        since the job's ``creation_context.created_at``; none without it). Storage errors read as none:
        the job then fails the ordinary, retried way."""
        from batch_scoring.context import interval_from_context
        from batch_scoring.permanent import permanent_receipts

        created = getattr(getattr(job, "creation_context", None), "created_at", None)
        if created is None:
            return []
        try:
            return permanent_receipts(self.blob_store(), self.config.predictions_container,
                                      interval_from_context(context), unit, created)
        except Exception as exc:  # noqa: BLE001 -- judging permanence is best effort; the failure stands either way
            self.log.warning("could not read the receipts of Azure ML job %s: %s", job.name, exc)
            return []

    @staticmethod
    def result(unit: list[str], name: str, status: str, studio_url: str | None) -> dict:
        """The task's return value (XCom) for a completed job."""
        return {"job_name": name, "status": status, "studio_url": studio_url, "targets": list(unit)}

    def cancel(self) -> None:
        """Cancel the job this component started or attached to, if any."""
        if self.job_name:
            self.log.info("cancelling Azure ML job %s", self.job_name)
            self.hook.cancel_job(self.job_name)


class AzureMLScoringOperator(BaseOperator):
    """Submits (or re-attaches to) the unit's Azure ML job and waits for it; deferrable by default.

    Pushes ``azureml_job_name`` and ``studio_url`` to XCom before it waits (the "Azure ML job" link reads
    the latter); returns ``{"job_name", "status", "studio_url", "targets"}``.

    :param unit: ``device/sensor`` targets scored by one job (templated).
    :param azureml_conn_id: Airflow connection of the workspace (default ``azure_ml``).
    :param blob_conn_id: Airflow ``wasb`` connection of the storage account the datastores cover
        (default ``sensor_blob``); the unit's model manifests, snapshot and outputs are read through it.
    :param compute: compute cluster; this and the following default to ``AzureMLJobConfig``'s values.
    :param environment: registered environment (``name:version``, ``azureml:...`` or an ARM id).
    :param code: registered code asset (same forms).
    :param experiment_name: experiment the jobs are filed under.
    :param aggregates_datastore: datastore over ``aggregates_container``.
    :param models_datastore: datastore over ``models_container``.
    :param predictions_datastore: datastore over ``predictions_container``.
    :param job_generation: mixed into every job name; bump only to force fresh jobs.
    :param aggregates_container: container of the interval snapshots.
    :param models_container: container of the deployed models.
    :param predictions_container: container of the predictions and receipts.
    :param poll_interval: seconds between status reads (default 30).
    :param timeout_seconds: cancel the job and fail after this long, seconds; 0 = wait for ever (default 7200).
    :param deferrable: wait in the triggerer instead of holding a worker slot (default True).
    :raises AzureMLInputError: (no retries) a model manifest, the snapshot or the blob connection is missing.
    :raises AzureMLJobError: the job ended other than Completed, or timed out.
    """

    template_fields = ("unit",)
    ui_color = "#e8f0fd"
    operator_extra_links = (AzureMLJobLink(),)

    def __init__(self, *, unit: list[str], azureml_conn_id: str = "azure_ml", blob_conn_id: str = "sensor_blob",
                 compute: str | None = None, environment: str | None = None, code: str | None = None,
                 experiment_name: str | None = None, aggregates_datastore: str | None = None,
                 models_datastore: str | None = None, predictions_datastore: str | None = None,
                 job_generation: str | None = None, aggregates_container: str | None = None,
                 models_container: str | None = None, predictions_container: str | None = None,
                 poll_interval: float = 30.0, timeout_seconds: float = 7200.0, deferrable: bool = True, **kwargs):
        given = locals()
        args = {k: given[k] for k in JOB_ARGS}
        super().__init__(**kwargs)
        self.unit = unit
        self.azureml_args = args

    @cached_property
    def azureml(self) -> AzureMLScoringJob:
        """The job component built from this operator's arguments."""
        return AzureMLScoringJob.from_args(self.azureml_args, self.log)

    def execute(self, context):
        """Submit (or attach to) the unit's Azure ML job and wait for it.

        Pushes ``azureml_job_name`` and ``studio_url`` to XCom first. When the job
        is already Completed returns ``{"job_name", "status", "studio_url",
        "targets"}`` at once (also the return value, i.e. XCom ``return_value``, after
        waiting); when deferrable, defers to the trigger (``TaskDeferred``) and
        finishes in ``execute_complete``; otherwise polls here.
        Raises ``AzureMLInputError`` (no retries) when a model manifest, the snapshot
        or the blob connection is missing, ``AzureMLJobError`` when the job ends
        other than Completed or times out (then it is cancelled first).
        """
        return self.azureml.execute(self, context)

    def execute_complete(self, context, event: dict[str, Any]):
        """Called with the trigger's event after a deferral; see ``AzureMLScoringJob.complete``."""
        return self.azureml.complete(self, context, event)

    def on_kill(self) -> None:
        """Cancel the Azure ML job this task submitted or attached to, if any (the task was killed or marked failed)."""
        self.azureml.cancel()
