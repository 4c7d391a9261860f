"""Score one unit of targets as an Azure ML command job: the production backend.

Same mapped interface as the local path of ``ScoringOperator``: ``unit`` is a list of
``device/sensor`` targets, the data interval comes from the task context.

The job runs the same entry point as the local backend
(``python -m scoring.score``) on the registered code and environment, with
the interval's aggregates snapshot and the models container mounted read-only
and the interval's predictions folder mounted read-write, so the script sees
local paths and writes exactly ``<interval>/<device>/<sensor>.parquet``.

Idempotency: the job name is fixed before submission from what the job would
compute: (dag, interval, unit, generation) and the job's inputs (``JobInputs``:
the code and environment assets, the content hash of the interval's aggregates
snapshot and the sha256 of each target's deployed model). ``execute`` looks the
name up first and re-attaches to a queued, running or completed job (an Airflow
retry or a crashed worker never submits a duplicate); a redeployed model or a
snapshot rewritten with other content gives a new name, so a rerun scores with what is deployed now.
A Failed/Canceled/NotResponding/Paused job, or a Completed job whose prediction
blobs have since disappeared or were overwritten by a scoring with another model,
is replaced by ``<name>-r1``, ``-r2``, ... (looked up in order and the last one judged, so
still deterministic).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from batch_scoring.links.azure_ml import JOB_NAME_KEY, STUDIO_URL_KEY, AzureMLJobLink

MAX_JOB_NAME = 255
#: The job's command, before its targets; part of every job name (a new command is a new computation).
SCORE_COMMAND = ("python -m scoring.score --aggregates ${{inputs.aggregates}} --models ${{inputs.models}} "
                 "--out ${{outputs.predictions}} --targets ")
MAX_RESUBMITS = 20
_UNSAFE = re.compile(r"[^a-z0-9_-]+")


class AzureMLJobError(RuntimeError):
    """An Azure ML job that did not complete: status, studio URL and the log's tail."""


class AzureMLInputError(AirflowFailException):
    """A unit's job cannot be named or run: an input (model manifest, snapshot, blob connection) is missing.

    Fails the task at once (no Airflow retry: waiting does not bring a model
    back); the message names the blob and the way out.
    """


@dataclasses.dataclass(frozen=True)
class JobInputs:
    """What a unit's job computes from, besides the interval and its targets.

    Part of the job's name: a change in any of these (a model retrained and
    redeployed, the snapshot rewritten with other content, another code or
    environment asset version; the command, ``SCORE_COMMAND``, is covered too)
    names a new job, and nothing else does.

    ``aggregates``: content hash of the interval's snapshot blob, ``md5:<hex>``
    (the Content-MD5 blob storage records) or ``sha256:<hex>`` (of its bytes,
    for a blob stored without one). ``models``: ``(target, sha256)`` of each
    target's deployed model (its ``manifest.json``), in unit order.
    """

    code: str
    environment: str
    aggregates: str
    models: tuple[tuple[str, str], ...]

    def lines(self) -> list[str]:
        """The canonical text the job name's hash covers (one line each)."""
        return [f"command={SCORE_COMMAND}", f"code={self.code}", f"environment={self.environment}",
                f"aggregates={self.aggregates}", *(f"model {t}={sha}" for t, sha in self.models)]

    @property
    def models_digest(self) -> str:
        """16 hex digits of sha256 over the ``target sha256`` lines: one short tag for any unit size."""
        text = "".join(f"{t} {sha}\n" for t, sha in self.models)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def with_models(self, models) -> "JobInputs":
        return dataclasses.replace(self, models=tuple(models))

    def tags(self) -> dict[str, str]:
        """The inputs as Azure ML job tags (each value at most 256 characters), so the studio shows why a job exists."""
        tags = {"code": self.code, "environment": self.environment, "aggregates": self.aggregates,
                "models_digest": self.models_digest}
        if len(self.models) == 1:
            tags["model_sha256"] = self.models[0][1]
        else:
            pairs = " ".join(f"{t}={sha[:12]}" for t, sha in self.models)
            if len(pairs) <= 256:
                tags["models"] = pairs
        return {k: v[:256] for k, v in tags.items()}


def _slug(text: str) -> str:
    return _UNSAFE.sub("-", text.lower()).strip("-_") or "x"


def job_base_name(dag_id: str, interval_key: str, unit: list[str], generation: str = "1",
                  inputs: JobInputs | None = None) -> str:
    """Deterministic Azure ML job name for one unit of one interval.

    Letters, digits, ``-`` and ``_`` only, starting with a letter, at most 255
    characters. A hash of the exact identity (dag, interval, generation, unit
    and, when given, the job's ``inputs``) is always appended, so slugging
    (``a.b`` and ``a-b``) or shortening never makes two units collide, and a
    redeployed model or rewritten snapshot never re-attaches to the old job.
    """
    identity = "\n".join([dag_id, interval_key, generation, *unit, *(inputs.lines() if inputs else ())])
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


def read_job_inputs(store, settings, interval, unit: list[str]) -> JobInputs:
    """The unit's ``JobInputs``, read through the blob store: one listing call and one small read per target.

    Raises AzureMLInputError naming the blob (container/name) and the way out
    when the snapshot or a target's model manifest is missing, unreadable or
    has no sha256.
    """
    from batch_scoring.units import unit_label
    from scoring.layout import snapshot_blob
    from scoring.config import parse_target
    from scoring.layout import MODEL_MANIFEST

    what = f"interval {interval.key}: the Azure ML job for {unit_label(list(unit))} cannot be named or run"
    snapshot = snapshot_blob(interval)
    listed = store.list_md5(settings.aggregates_container, prefix=snapshot)
    if snapshot not in listed:
        raise AzureMLInputError(
            f"{what}: snapshot {settings.aggregates_container}/{snapshot} does not exist; clear the snapshot task "
            "(and its downstream) to write it")
    if listed[snapshot]:
        aggregates = f"md5:{listed[snapshot]}"
    else:  # uploaded in blocks, so the service kept no MD5: hash the bytes (streamed)
        digest = hashlib.sha256()
        with store.open_reader(settings.aggregates_container, snapshot) as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        aggregates = f"sha256:{digest.hexdigest()}"

    names = {t: "{}/{}/{}".format(*parse_target(t), MODEL_MANIFEST) for t in unit}
    found = store.download_many(settings.models_container, list(names.values()))
    models, problems = [], []
    for target, name in names.items():
        data, blob = found.get(name), f"{settings.models_container}/{name}"
        if data is None:
            problems.append(f"{target}: {blob} does not exist")
            continue
        try:
            sha = json.loads(data).get("sha256")
        except (ValueError, AttributeError) as exc:
            problems.append(f"{target}: {blob} is unreadable ({type(exc).__name__})")
            continue
        if not isinstance(sha, str) or not sha:
            problems.append(f"{target}: {blob} has no sha256")
            continue
        models.append((target, sha))
    if problems:
        raise AzureMLInputError(
            f"{what}: no usable deployed model for {len(problems)} target(s): {'; '.join(problems[:20])}"
            f"{' ...' if len(problems) > 20 else ''}; redeploy the model (model.joblib and manifest.json under "
            f"{settings.models_container}/<device>/<sensor>/, e.g. python -m scoring.azure_setup --models ...) "
            "and clear this task, or, if the model was retired, clear the snapshot task (and its downstream) "
            "so the plan drops the target")
    return JobInputs(code=settings.azureml_code, environment=settings.azureml_environment,
                     aggregates=aggregates, models=tuple(models))


def build_scoring_job(settings, interval_key: str, unit: list[str], name: str, *, dag_id: str, run_id: str | None,
                      inputs: JobInputs | None = None):
    """The ``command()`` job that scores ``unit`` for one interval; ``inputs`` are added to its tags."""
    from azure.ai.ml import Input, Output, command
    from azure.ai.ml.constants import AssetTypes, InputOutputModes

    from scoring.layout import SNAPSHOT_FILE
    from batch_scoring.units import unit_label

    targets = " ".join(unit)
    tags = {
        "dag": dag_id,
        "run": str(run_id or ""),
        "interval": interval_key,
        "targets": targets if len(targets) <= 256 else f"{unit_label(unit)}",
    }
    if len(unit) == 1:
        tags["device"], tags["sensor"] = unit[0].split("/")
    if inputs is not None:
        tags.update(inputs.tags(), generation=str(settings.azureml_job_generation))
    return command(
        name=name,
        display_name=f"score {unit_label(unit)} {interval_key}",
        description=f"Batch scoring of {len(unit)} target(s) for data interval {interval_key} (Airflow DAG {dag_id})",
        experiment_name=settings.azureml_experiment,
        tags=tags,
        code=_asset_ref(settings.azureml_code),
        environment=_asset_ref(settings.azureml_environment),
        compute=settings.azureml_compute,
        command=SCORE_COMMAND + targets,
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
        blob_conn_id: str | None = None,
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
        # the storage account the datastores cover: model manifests, snapshot and outputs are read through it
        self.blob_conn_id = blob_conn_id or s.blob_conn_id
        self.deferrable = s.azureml_deferrable if deferrable is None else deferrable
        self.poll_interval = s.azureml_poll_seconds if poll_interval is None else poll_interval
        self.timeout_seconds = s.azureml_timeout_seconds if timeout_seconds is None else timeout_seconds
        self.job_name: str | None = None

    def hook(self):
        from batch_scoring.hooks.azure_ml import AzureMLHook

        return AzureMLHook(self.azureml_conn_id)

    # --- submit or re-attach ------------------------------------------------------

    def blob_store(self):
        """The ``BlobStore`` of this operator's blob connection (``blob_conn_id``)."""
        from airflow.sdk.exceptions import AirflowNotFoundException

        from batch_scoring.hooks.blob_storage import BlobStore

        try:
            return BlobStore.from_conn_id(self.blob_conn_id)
        except AirflowNotFoundException as exc:
            raise AzureMLInputError(
                f"no blob connection {self.blob_conn_id!r}: the Azure ML backend reads the unit's model manifests "
                "and the interval's snapshot through it to name the job; define it for the storage account the "
                "datastores cover (docs/azure_ml.md)") from exc

    def submit_or_attach(self, hook, context):
        """Returns the job for this unit: an existing live/completed one, or a new submission.

        Raises AzureMLInputError (see ``read_job_inputs``) before any job is
        looked up when the unit's inputs cannot be read.
        """
        from batch_scoring.config import settings
        from batch_scoring.hooks.azure_ml import FAILED_STATES, job_status
        from batch_scoring.tasks import interval_from_context

        s = settings()
        interval = interval_from_context(context)
        dag_id = context["dag"].dag_id if context.get("dag") else s.dag_id
        unit = list(self.unit)
        store = self.blob_store()
        inputs = read_job_inputs(store, s, interval, unit)
        base = job_base_name(dag_id, interval.key, unit, s.azureml_job_generation, inputs)
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
            elif status == "Completed" and (stale := self.stale_outputs(store, s, interval, inputs)):
                self.log.warning(
                    "Azure ML job %s is Completed but its outputs are gone or were overwritten since (%s): "
                    "submitting the next name", name, "; ".join(stale[:10]))
            else:
                self.log.info("re-attaching to Azure ML job %s (%s)", name, status)
                return job
            if last >= MAX_RESUBMITS:
                raise AzureMLJobError(f"{MAX_RESUBMITS + 1} jobs named {base}[-rN] all failed: not submitting another")
        name = attempt_name(base, last + 1)
        spec = build_scoring_job(s, interval.key, unit, name, dag_id=dag_id, run_id=context.get("run_id"), inputs=inputs)
        if job is None:
            self._log_what_changed(hook, store, s, interval, dag_id, inputs, name)
        self.log.info("submitting Azure ML job %s for %s (code %s, environment %s, aggregates %s, models %s)",
                      name, " ".join(unit), inputs.code, inputs.environment, inputs.aggregates, inputs.models_digest)
        return hook.submit_job(spec)

    def _scored_models(self, store, s, interval) -> dict[str, str]:
        """``target -> model_sha256`` from the unit's prediction receipts in the predictions container (where present)."""
        from scoring.layout import receipt_blob

        blobs = {t: receipt_blob(interval, t) for t in self.unit}
        found = store.download_many(s.predictions_container, list(blobs.values()))
        scored = {}
        for target, blob in blobs.items():
            try:
                sha = json.loads(found[blob]).get("model_sha256") if found.get(blob) else None
            except (ValueError, AttributeError):
                sha = None
            if isinstance(sha, str) and sha:
                scored[target] = sha
        return scored

    def stale_outputs(self, store, s, interval, inputs: JobInputs) -> list[str]:
        """What is wrong with this unit's outputs for a Completed job named for ``inputs``; empty when they are its own.

        A Completed job is only taken as done when its prediction blobs are
        still there and their receipts name the models it was named for: a
        prediction deleted after scoring, or overwritten by a later scoring
        with another model (e.g. a model rolled back to the version this job
        used), makes the retry or rerun submit a new job (``-rN``) instead of
        re-attaching to one whose results are lost.
        """
        from scoring.layout import prediction_blob

        blobs = [prediction_blob(interval, t) for t in self.unit]
        present = store.parallel(lambda b: store.exists(s.predictions_container, b), blobs)
        problems = [f"{s.predictions_container}/{b} is gone" for b, ok in zip(blobs, present) if not ok]
        scored = self._scored_models(store, s, interval)
        problems += [f"{t} was since scored with model {scored[t][:12]}, not this job's {sha[:12]}"
                     for t, sha in inputs.models if t in scored and scored[t] != sha]
        return problems

    def _log_what_changed(self, hook, store, s, interval, dag_id: str, inputs: JobInputs, name: str) -> None:
        """Say why a unit scored before gets a new job: its models changed (naming the job they were scored by), or other inputs."""
        scored = self._scored_models(store, s, interval)
        if not scored:
            return  # never scored (or its outputs are gone): nothing to compare with
        changed = [(t, scored[t], sha) for t, sha in inputs.models if t in scored and scored[t] != sha]
        if not changed:
            self.log.info("no Azure ML job for these inputs yet: %s was last scored with the same models, so the "
                          "aggregates snapshot, code, environment or job generation changed since (or the local "
                          "backend scored it); the job's tags hold its inputs: submitting %s", " ".join(self.unit), name)
            return
        since = "the last scoring of this interval"
        if len(scored) == len(inputs.models):
            # the job those receipts came from, if only the models changed since (same snapshot, code, environment)
            before = job_base_name(dag_id, interval.key, list(self.unit), s.azureml_job_generation,
                                   inputs.with_models((t, scored[t]) for t, _ in inputs.models))
            if hook.find_job(before) is not None:
                since = f"job {before}"
        self.log.info("models changed since %s (%s): submitting %s", since,
                      "; ".join(f"{t} {old[:12]} -> {new[:12]}" for t, old, new in changed), name)

    def execute(self, context):
        from batch_scoring.hooks.azure_ml import job_status
        from batch_scoring.units import unit_label

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
        from batch_scoring.units import unit_label

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
