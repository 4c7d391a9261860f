"""The Azure ML scoring job of one unit: what it computes from, its deterministic name and its ``command()`` spec.

No Airflow and no Azure SDK at import time (``azure.ai.ml`` is imported inside
``build_scoring_job``). Every blob and datastore path comes from ``scoring.layout``.

Idempotency: a job's name is fixed before submission from what the job would
compute: (dag, interval, unit, generation) and the job's inputs (``JobInputs``:
the code and environment assets, the content hash of the interval's aggregates
snapshot and the sha256 of each target's deployed model). A redeployed model or
a snapshot rewritten with other content gives a new name; a resubmission of a
failed job is ``<name>-r1``, ``-r2``, ... (``attempt_name``).

Identity and limits: every job runs as the compute cluster's managed identity
(``identity=ManagedIdentityConfiguration()``, given by ``scoring.azure_setup``)
and carries a server-side timeout (``limits.timeout``), so a job whose Airflow
task was cleared, or whose waiting worker died, still ends.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re

from airflow.sdk.exceptions import AirflowFailException

from batch_scoring.scoring.layout import interval_folder, model_manifest_blob, snapshot_blob

MAX_JOB_NAME = 255
#: The job's command, before its targets; part of every job name (a new command is a new computation).
SCORE_COMMAND = ("python -m batch_scoring.scoring.score --aggregates ${{inputs.aggregates}} --models ${{inputs.models}} "
                 "--out ${{outputs.predictions}} --targets ")
_UNSAFE = re.compile(r"[^a-z0-9_-]+")
#: Server-side limit (seconds) of a job whose operator waits for ever (``timeout_seconds=0``).
MAX_JOB_SECONDS = 24 * 3600


class AzureMLInputError(AirflowFailException):
    """A unit's job cannot be named or run: an input (model manifest, snapshot, blob connection) is missing.

    Fails the task at once (no Airflow retry: waiting does not bring a model
    back); the message names the blob and the way out.
    """


@dataclasses.dataclass(frozen=True)
class AzureMLJobConfig:
    """Where a scoring job runs and what it mounts: the workspace's assets, datastores and containers.

    :param compute: compute cluster name (``cpu-scoring``).
    :param environment: registered environment, ``name:version``, ``azureml:name:version`` or a full ARM id.
    :param code: registered code asset, ``name:version``, ``azureml:name:version`` or a full ARM id; the job
        references it by ARM id (``code_asset_id``).
    :param experiment_name: the Azure ML experiment the jobs are filed under.
    :param aggregates_datastore: blob datastore over ``aggregates_container``.
    :param models_datastore: blob datastore over ``models_container``.
    :param predictions_datastore: blob datastore over ``predictions_container``.
    :param job_generation: mixed into every job name; bump it only to force fresh jobs.
    :param aggregates_container: container of the interval snapshots (read through the blob connection).
    :param models_container: container of the deployed models and their manifests.
    :param predictions_container: container of the predictions dataset (part files, receipts in their footers).
    """

    compute: str = "cpu-scoring"
    environment: str = "batch-scoring-env:1"
    code: str = "batch-scoring-code:1"
    experiment_name: str = "batch-scoring"
    aggregates_datastore: str = "scoring_aggregates"
    models_datastore: str = "scoring_models"
    predictions_datastore: str = "scoring_predictions"
    job_generation: str = "1"
    aggregates_container: str = "aggregates"
    models_container: str = "models"
    predictions_container: str = "predictions"

    @property
    def containers(self):
        """The three containers as ``batch_scoring.config.Containers`` (what ``permanent.way_out`` names)."""
        from batch_scoring.config import Containers

        return Containers(self.aggregates_container, self.models_container, self.predictions_container)

    @classmethod
    def from_settings(cls, s) -> "AzureMLJobConfig":
        """The deployment's values from ``batch_scoring.config.Settings`` (for the DAG file and tests)."""
        return cls(compute=s.azureml_compute, environment=s.azureml_environment, code=s.azureml_code,
                   experiment_name=s.azureml_experiment, aggregates_datastore=s.azureml_aggregates_datastore,
                   models_datastore=s.azureml_models_datastore, predictions_datastore=s.azureml_predictions_datastore,
                   job_generation=str(s.azureml_job_generation), aggregates_container=s.aggregates_container,
                   models_container=s.models_container, predictions_container=s.predictions_container)


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
        """A copy with ``models`` (an iterable of ``(target, sha256)``) instead of these."""
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

    Letters, digits, ``-`` and ``_`` only, starting with a letter, at most 251
    characters (room for a ``-rNN`` suffix within Azure ML's 255). A hash of the
    exact identity (dag, interval, generation, unit and, when given, the job's
    ``inputs``) is always appended, so slugging (``a.b`` and ``a-b``) or
    shortening never makes two units collide, and a redeployed model or
    rewritten snapshot never re-attaches to the old job.
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
    """The name of submission number ``generation`` (0 = first) of the job ``base``: ``base``, ``base-r1``, ..."""
    return base if generation == 0 else f"{base}-r{generation}"


def datastore_uri(datastore: str, path: str = "") -> str:
    """``azureml://datastores/<datastore>/paths/<path>`` (``path`` relative to the datastore's container)."""
    return f"azureml://datastores/{datastore}/paths/{path}"


def read_job_inputs(store, config: AzureMLJobConfig, interval, unit: list[str]) -> JobInputs:
    """The unit's ``JobInputs``, read through the blob store: one listing call and one small read per target.

    :param store: ``BlobStore`` of the account the datastores cover.
    :param config: containers, code and environment of the job.
    :param interval: the data interval (anything with ``.key``).
    :param unit: ``device/sensor`` targets.
    :raises AzureMLInputError: naming the blob (container/name) and the way out, when the snapshot or a
        target's model manifest is missing, unreadable or has no sha256.
    """
    from batch_scoring.units import unit_label

    what = f"interval {interval.key}: the Azure ML job for {unit_label(list(unit))} cannot be named or run"
    snapshot = snapshot_blob(interval)
    listed = store.list_md5(config.aggregates_container, prefix=snapshot)
    if snapshot not in listed:
        raise AzureMLInputError(
            f"{what}: snapshot {config.aggregates_container}/{snapshot} does not exist; clear the snapshot task "
            "(and its downstream) to write it")
    if listed[snapshot]:
        aggregates = f"md5:{listed[snapshot]}"
    else:  # uploaded in blocks, so the service kept no MD5: hash the bytes (streamed)
        digest = hashlib.sha256()
        with store.open_reader(config.aggregates_container, snapshot) as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        aggregates = f"sha256:{digest.hexdigest()}"

    names = {t: model_manifest_blob(t) for t in unit}
    found = store.download_many(config.models_container, list(names.values()))
    models, problems = [], []
    for target, name in names.items():
        data, blob = found.get(name), f"{config.models_container}/{name}"
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
            f"{config.models_container}/<device>/<sensor>/, e.g. python -m batch_scoring.scoring.azure_setup --models ...) "
            "and clear this task, or, if the model was retired, clear the snapshot task (and its downstream) "
            "so the plan drops the target")
    return JobInputs(code=config.code, environment=config.environment, aggregates=aggregates, models=tuple(models))


def build_scoring_job(config: AzureMLJobConfig, interval_key: str, unit: list[str], name: str, *, dag_id: str,
                      run_id: str | None, workspace_id: str, timeout_seconds: float, inputs: JobInputs | None = None):
    """The ``azure.ai.ml`` ``command()`` job that scores ``unit`` for one interval.

    Mounts the interval's snapshot (uri_file) and the models container (uri_folder) read-only and the
    interval's predictions folder read-write; ``inputs`` (and the job generation) are added to its tags.
    Runs as the compute's managed identity, with a server-side timeout of ``job_timeout(timeout_seconds)``.

    :param workspace_id: the workspace's ARM id (``AzureMLHook.workspace_id``): the code asset is referenced
        under it (``code_asset_id``).
    :param timeout_seconds: the operator's wait, seconds (0 = for ever).
    :raises ValueError: a ``code`` reference without a version.
    """
    from azure.ai.ml import Input, Output, command
    from azure.ai.ml.constants import AssetTypes, InputOutputModes
    from azure.ai.ml.entities import ManagedIdentityConfiguration

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
        tags.update(inputs.tags(), generation=str(config.job_generation))
    return command(
        name=name,
        display_name=f"score {unit_label(unit)} {interval_key}",
        description=f"Batch scoring of {len(unit)} target(s) for data interval {interval_key} (Airflow DAG {dag_id})",
        experiment_name=config.experiment_name,
        tags=tags,
        code=code_asset_id(workspace_id, config.code),
        environment=_asset_ref(config.environment),
        compute=config.compute,
        identity=ManagedIdentityConfiguration(),
        timeout=job_timeout(timeout_seconds),
        command=SCORE_COMMAND + targets,
        inputs={
            "aggregates": Input(
                type=AssetTypes.URI_FILE,
                path=datastore_uri(config.aggregates_datastore, snapshot_blob(interval_key)),
                mode=InputOutputModes.RO_MOUNT,
            ),
            "models": Input(
                type=AssetTypes.URI_FOLDER,
                path=datastore_uri(config.models_datastore),
                mode=InputOutputModes.RO_MOUNT,
            ),
        },
        outputs={
            "predictions": Output(  # the interval's folder: the CLI writes part-<unit id>.parquet there
                type=AssetTypes.URI_FOLDER,
                path=datastore_uri(config.predictions_datastore, interval_folder(interval_key)),
                mode=InputOutputModes.RW_MOUNT,
            ),
        },
    )


def _asset_ref(ref: str) -> str:
    """``name:version`` -> ``azureml:name:version``; full ARM ids and ``azureml:`` refs pass through."""
    return ref if ref.startswith(("azureml:", "/subscriptions/")) else f"azureml:{ref}"


def code_asset_id(workspace_id: str, ref: str) -> str:
    """The ARM id of code asset ``ref`` (``name:version`` or ``azureml:name:version``) in ``workspace_id``.

    ``<workspace_id>/codes/<name>/versions/<version>``; a full ARM id (``azureml:``-prefixed or not) passes through. azure-ai-ml 1.35
    reads ``code="azureml:name:version"`` as a local folder and refuses to submit, so the job needs this form.

    :raises ValueError: when ``ref`` has no version.
    """
    ref = ref.removeprefix("azureml:")
    if ref.startswith("/subscriptions/"):
        return ref
    asset, _, version = ref.partition(":")
    if not asset or not version:
        raise ValueError(f"code asset {ref!r}: expected name:version (BATCH_SCORING_AZUREML_CODE)")
    return f"{workspace_id}/codes/{asset}/versions/{version}"


def job_timeout(timeout_seconds: float) -> int:
    """The job's server-side limit, whole seconds: the operator's wait rounded up, ``MAX_JOB_SECONDS`` when it waits for ever.

    Azure ML counts it from the start of the run (queueing excluded), so the operator's own timeout, which
    counts from submission and cancels the job, normally comes first; this one ends a job nobody waits for.
    """
    return math.ceil(timeout_seconds) if timeout_seconds > 0 else MAX_JOB_SECONDS
