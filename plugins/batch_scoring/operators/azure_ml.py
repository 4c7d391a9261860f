"""Score one unit of targets as an Azure ML command job: the production backend.

Same mapped interface as the local path of ``ScoringOperator``: ``unit`` is a list of
``device/sensor`` targets, the data interval comes from the task context.

The job runs the same entry point as the local backend
(``python -m scoring.score``) on the registered code and environment, with
the interval's aggregates snapshot and the models container mounted read-only
and the interval's predictions folder mounted read-write, so the script sees
local paths and writes exactly ``<interval>/<device>/<sensor>.parquet``.

Idempotency: the job name is fixed before submission from (dag, interval,
unit, generation). ``execute`` looks the name up first and re-attaches to a
queued, running or completed job (an Airflow retry or a crashed worker never
submits a duplicate); a Failed/Canceled/NotResponding/Paused job, or a
Completed job whose prediction blobs have since disappeared, is replaced
by ``<name>-r1``, ``-r2``, ... (probed in order, so still deterministic).
"""
from __future__ import annotations

import hashlib
import re
import time
from typing import Any

from airflow.sdk import BaseOperator

from batch_scoring.links.azure_ml import JOB_NAME_KEY, STUDIO_URL_KEY, AzureMLJobLink

MAX_JOB_NAME = 255
MAX_RESUBMITS = 20
_UNSAFE = re.compile(r"[^a-z0-9_-]+")


class AzureMLJobError(RuntimeError):
    """An Azure ML job that did not complete: status, studio URL and the log's tail."""


def _slug(text: str) -> str:
    return _UNSAFE.sub("-", text.lower()).strip("-_") or "x"


def job_base_name(dag_id: str, interval_key: str, unit: list[str], generation: str = "1") -> str:
    """Deterministic Azure ML job name for one unit of one interval.

    Letters, digits, ``-`` and ``_`` only, starting with a letter, at most 255
    characters. A hash of the exact identity is always appended, so slugging
    (``a.b`` and ``a-b``) or shortening never makes two units collide.
    """
    identity = "\n".join([dag_id, interval_key, generation, *unit])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    what = _slug(unit[0].replace("/", "_")) if len(unit) == 1 else f"{_slug(unit[0].replace('/', '_'))}-{len(unit)}t"
    parts = [_slug(dag_id)[:60], _slug(interval_key), what[:80]]
    # room for "-<digest>" and a "-r<NN>" resubmission suffix
    head = "-".join(parts)[: MAX_JOB_NAME - len(digest) - 1 - 4]
    name = f"{head}-{digest}"
    return name if name[0].isalpha() else f"j{name}"[:MAX_JOB_NAME - 4]


def attempt_name(base: str, generation: int) -> str:
    return base if generation == 0 else f"{base}-r{generation}"


def datastore_uri(datastore: str, path: str = "") -> str:
    return f"azureml://datastores/{datastore}/paths/{path}"


def build_scoring_job(settings, interval_key: str, unit: list[str], name: str, *, dag_id: str, run_id: str | None):
    """The ``command()`` job that scores ``unit`` for one interval."""
    from azure.ai.ml import Input, Output, command
    from azure.ai.ml.constants import AssetTypes, InputOutputModes

    from scoring.config import SNAPSHOT_FILE
    from batch_scoring.pipeline import unit_label

    targets = " ".join(unit)
    tags = {
        "dag": dag_id,
        "run": str(run_id or ""),
        "interval": interval_key,
        "targets": targets if len(targets) <= 256 else f"{unit_label(unit)}",
    }
    if len(unit) == 1:
        tags["device"], tags["sensor"] = unit[0].split("/")
    return command(
        name=name,
        display_name=f"score {unit_label(unit)} {interval_key}",
        description=f"Batch scoring of {len(unit)} target(s) for data interval {interval_key} (Airflow DAG {dag_id})",
        experiment_name=settings.azureml_experiment,
        tags=tags,
        code=_asset_ref(settings.azureml_code),
        environment=_asset_ref(settings.azureml_environment),
        compute=settings.azureml_compute,
        command=(
            "python -m scoring.score --aggregates ${{inputs.aggregates}} --models ${{inputs.models}} "
            "--out ${{outputs.predictions}} --targets " + targets
        ),
        inputs={
            "aggregates": Input(
                type=AssetTypes.URI_FILE,
                path=datastore_uri(settings.azureml_aggregates_datastore, f"{interval_key}/{SNAPSHOT_FILE}"),
                mode=InputOutputModes.RO_MOUNT,
            ),
            "models": Input(
                type=AssetTypes.URI_FOLDER,
                path=datastore_uri(settings.azureml_models_datastore),
                mode=InputOutputModes.RO_MOUNT,
            ),
        },
        outputs={
            "predictions": Output(
                type=AssetTypes.URI_FOLDER,
                path=datastore_uri(settings.azureml_predictions_datastore, f"{interval_key}/"),
                mode=InputOutputModes.RW_MOUNT,
            ),
        },
    )


def _asset_ref(ref: str) -> str:
    """``name:version`` -> ``azureml:name:version``; full ARM ids and ``azureml:`` refs pass through."""
    return ref if ref.startswith(("azureml:", "/subscriptions/")) else f"azureml:{ref}"


class AzureMLScoringOperator(BaseOperator):
    """Submits (or re-attaches to) the unit's Azure ML job and waits for it; deferrable by default."""

    template_fields = ("unit",)
    ui_color = "#e8f0fd"
    operator_extra_links = (AzureMLJobLink(),)

    def __init__(
        self,
        *,
        unit: list[str],
        azureml_conn_id: str | None = None,
        deferrable: bool | None = None,
        poll_interval: float | None = None,
        timeout_seconds: float | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        from batch_scoring.config import settings

        s = settings()
        self.unit = unit
        self.azureml_conn_id = azureml_conn_id or s.azureml_conn_id
        self.deferrable = s.azureml_deferrable if deferrable is None else deferrable
        self.poll_interval = s.azureml_poll_seconds if poll_interval is None else poll_interval
        self.timeout_seconds = s.azureml_timeout_seconds if timeout_seconds is None else timeout_seconds
        self.job_name: str | None = None

    def hook(self):
        from batch_scoring.hooks.azure_ml import AzureMLHook

        return AzureMLHook(self.azureml_conn_id)

    # --- submit or re-attach ------------------------------------------------------

    def submit_or_attach(self, hook, context):
        """Returns the job for this unit: an existing live/completed one, or a new submission."""
        from batch_scoring.config import settings
        from batch_scoring.hooks.azure_ml import FAILED_STATES, job_status
        from batch_scoring.pipeline import Interval

        s = settings()
        interval = Interval.from_context(context)
        dag_id = context["dag"].dag_id if context.get("dag") else s.dag_id
        base = job_base_name(dag_id, interval.key, list(self.unit), s.azureml_job_generation)
        for generation in range(MAX_RESUBMITS + 1):
            name = attempt_name(base, generation)
            job = hook.find_job(name)
            if job is None:
                spec = build_scoring_job(s, interval.key, list(self.unit), name, dag_id=dag_id, run_id=context.get("run_id"))
                self.log.info("submitting Azure ML job %s for %s", name, " ".join(self.unit))
                return hook.submit_job(spec)
            if job_status(job) in FAILED_STATES:
                self.log.info("Azure ML job %s ended %s: trying the next name", name, job_status(job))
                continue
            if job_status(job) == "Completed":
                missing = self.missing_outputs(s, interval)
                if missing:
                    self.log.warning(
                        "Azure ML job %s is Completed but its outputs are gone (%s): submitting the next name",
                        name, ", ".join(missing[:10]))
                    continue
            self.log.info("re-attaching to Azure ML job %s (%s)", name, job_status(job))
            return job
        raise AzureMLJobError(f"{MAX_RESUBMITS + 1} jobs named {base}[-rN] all failed: not submitting another")

    def missing_outputs(self, s, interval) -> list[str]:
        """Prediction blobs of this unit that are not in the predictions container.

        A Completed job is only taken as done when its outputs are still there:
        a prediction deleted after scoring makes the retry or rerun submit a
        new job (``-rN``) instead of re-attaching to one whose results are lost.
        """
        from batch_scoring.hooks.blob_storage import BlobStore
        from batch_scoring.pipeline import prediction_blob

        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            store = BlobStore.from_conn_id(s.blob_conn_id)
        except AirflowNotFoundException:
            self.log.warning("no blob connection %r: cannot check the outputs of a Completed job; accepting it",
                             s.blob_conn_id)
            return []
        return [b for b in (prediction_blob(interval, t) for t in self.unit)
                if not store.exists(s.predictions_container, b)]

    def execute(self, context):
        from batch_scoring.hooks.azure_ml import job_status
        from batch_scoring.pipeline import unit_label

        context["unit_label"] = unit_label(list(self.unit))
        hook = self.hook()
        job = self.submit_or_attach(hook, context)
        status = job_status(job)
        self.job_name = job.name
        context["ti"].xcom_push(key=JOB_NAME_KEY, value=job.name)
        context["ti"].xcom_push(key=STUDIO_URL_KEY, value=job.studio_url)
        self.log.info("Azure ML job %s: %s (%s)", job.name, status, job.studio_url)
        if status == "Completed":
            return self._result(job.name, status, job.studio_url)
        if self.deferrable:
            from batch_scoring.triggers.azure_ml import AzureMLJobTrigger

            self.defer(
                trigger=AzureMLJobTrigger(self.azureml_conn_id, job.name, self.poll_interval, self.timeout_seconds),
                method_name="execute_complete",
            )
        return self._wait(hook, job.name, context)

    def _wait(self, hook, name: str, context):
        from batch_scoring.hooks.azure_ml import TERMINAL_STATES

        deadline = time.monotonic() + self.timeout_seconds if self.timeout_seconds > 0 else None
        last = None
        while True:
            status = hook.get_job_status(name)
            if status != last:
                self.log.info("Azure ML job %s: %s", name, status)
                last = status
            if status in TERMINAL_STATES:
                return self.execute_complete(context, {"status": "success" if status == "Completed" else "error",
                                                       "job_name": name, "job_status": status})
            if deadline is not None and time.monotonic() >= deadline:
                return self.execute_complete(context, {"status": "timeout", "job_name": name, "job_status": status,
                                                       "message": f"still {status} after {self.timeout_seconds:.0f}s"})
            time.sleep(self.poll_interval)

    def execute_complete(self, context, event: dict[str, Any]):
        from batch_scoring.pipeline import unit_label

        context["unit_label"] = unit_label(list(self.unit))
        name = event["job_name"]
        self.job_name = name
        hook = self.hook()
        status = event.get("job_status")
        if event.get("status") == "success" and status == "Completed":
            return self._result(name, status, context["ti"].xcom_pull(task_ids=self.task_id, key=STUDIO_URL_KEY, map_indexes=context["ti"].map_index))
        if event.get("status") == "timeout":
            self.log.warning("cancelling Azure ML job %s: %s", name, event.get("message"))
            hook.cancel_job(name)
        try:
            studio_url = hook.get_job(name).studio_url
        except Exception:  # the URL is a convenience in the message, not worth hiding the failure
            studio_url = None
        tail = hook.job_log_tail(name)
        raise AzureMLJobError(
            f"Azure ML job {name} for {' '.join(self.unit)} did not complete: status {status}"
            f"{' (' + event['message'] + ')' if event.get('message') else ''}; studio: {studio_url}\n"
            f"--- last lines of the job's log ---\n{tail}"
        )

    def _result(self, name: str, status: str, studio_url: str | None) -> dict:
        return {"job_name": name, "status": status, "studio_url": studio_url, "targets": list(self.unit)}

    def on_kill(self) -> None:
        if self.job_name:
            self.log.info("cancelling Azure ML job %s", self.job_name)
            self.hook().cancel_job(self.job_name)
