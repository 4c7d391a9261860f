"""The DAG's mapped scoring operator: one unit of targets on the backend the run selects."""
from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator

from batch_scoring.links.azure_ml import STUDIO_URL_KEY, AzureMLJobLink
from batch_scoring.operators.azure_ml import JOB_ARGS, AzureMLScoringJob

BACKENDS = ("local", "azureml")


@dataclasses.dataclass(frozen=True)
class LocalScoring:
    """The local backend: score a unit in this worker on downloaded inputs and upload its outputs.

    Called as ``LocalScoring(...)(interval, unit)``; returns the unit's receipts (``UNIT_RECEIPT_KEYS`` of
    each target), which the collector uses to confirm the blobs by MD5 instead of reading each one back.

    :param blob_conn_id: Airflow ``wasb`` connection of the three containers.
    :param aggregates_container: container of the interval snapshots.
    :param models_container: container of the deployed models.
    :param predictions_container: container the predictions and receipts are uploaded to.
    :raises AirflowFailException: (no retries) a target failed for a reason retrying cannot fix (a missing,
        corrupt or incompatible model blob, a target the snapshot lacks), naming the blobs and the way out.
    :raises PipelineError: other failures; ``BlobStoreUnavailable`` when storage is unreachable (both retried).
    """

    blob_conn_id: str
    aggregates_container: str
    models_container: str
    predictions_container: str

    def __call__(self, interval, unit: list[str]) -> list[dict]:
        from airflow.sdk.exceptions import AirflowFailException

        from batch_scoring.hooks.blob_storage import BlobStore
        from batch_scoring.errors import PermanentPipelineError
        from batch_scoring.local_backend import UNIT_RECEIPT_KEYS, score_unit_local

        from batch_scoring.config import Containers

        containers = Containers(self.aggregates_container, self.models_container, self.predictions_container)
        try:
            receipts = score_unit_local(BlobStore.from_conn_id(self.blob_conn_id), containers, interval, list(unit))
        except PermanentPipelineError as exc:
            raise AirflowFailException(str(exc)) from exc
        return [{k: r.get(k) for k in UNIT_RECEIPT_KEYS} for r in receipts]


class ScoringOperator(BaseOperator):
    """Scores one unit (one ``device/sensor`` by default) locally or as an Azure ML job.

    The backend comes from the run's ``backend`` param (default: this operator's ``backend``, the
    deployment's ``BATCH_SCORING_BACKEND`` in the DAG), so an interval can be rescored locally while the
    workspace is down, or one target tried on Azure ML, without another DAG. ``local`` runs
    ``LocalScoring`` (the scoring entry point in this worker, as an Azure ML job would with download/upload
    modes) and returns its receipts; ``azureml`` delegates to ``AzureMLScoringJob``, the component of
    ``AzureMLScoringOperator`` (deferrable, never a duplicate job), and returns its result.

    :param unit: ``device/sensor`` targets (templated).
    :param backend: ``local`` or ``azureml`` when the run's params name none (default ``local``).
    :raises ValueError: for a backend not in ``BACKENDS``.

    Every other argument is ``AzureMLScoringOperator``'s, with the same defaults and meaning;
    ``blob_conn_id`` and the three ``*_container`` arguments serve the local backend too.
    """

    template_fields = ("unit",)
    ui_color = "#e8f0fd"
    operator_extra_links = (AzureMLJobLink(),)

    def __init__(self, *, unit: list[str], backend: str = "local", azureml_conn_id: str = "azure_ml",
                 blob_conn_id: str = "sensor_blob", compute: str | None = None, environment: str | None = None,
                 code: str | None = None, experiment_name: str | None = None, aggregates_datastore: str | None = None,
                 models_datastore: str | None = None, predictions_datastore: str | None = None,
                 job_generation: str | None = None, aggregates_container: str | None = None,
                 models_container: str | None = None, predictions_container: str | None = None,
                 poll_interval: float = 30.0, timeout_seconds: float = 7200.0, deferrable: bool = True, **kwargs):
        given = locals()
        args = {k: given[k] for k in JOB_ARGS}
        super().__init__(**kwargs)
        self.unit = unit
        self.backend = backend
        self.azureml_args = args

    @cached_property
    def azureml(self) -> AzureMLScoringJob:
        """The Azure ML job component built from this operator's arguments."""
        return AzureMLScoringJob.from_args(self.azureml_args, self.log)

    @cached_property
    def local(self) -> LocalScoring:
        """The local backend, on the same blob connection and containers as the Azure ML job's."""
        config = self.azureml.config
        return LocalScoring(self.azureml.blob_conn_id, config.aggregates_container, config.models_container,
                            config.predictions_container)

    def execute(self, context):
        """Score the unit on the run's backend (the run's ``params["backend"]``, else ``backend``).

        ``azureml``: as ``AzureMLScoringOperator.execute`` (XCom ``azureml_job_name``
        and ``studio_url``, may defer). ``local``: scores in this worker with
        ``LocalScoring``, pushes an empty ``studio_url`` to XCom (no remote job), and
        returns the unit's receipts (list of dicts, one per target).
        Raises ``ValueError`` for a backend not in ``BACKENDS``; otherwise what the
        backend raises (``AirflowFailException``, ``PipelineError``,
        ``AzureMLInputError``, ``AzureMLJobError``).
        """
        backend = (context.get("params") or {}).get("backend") or self.backend
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: expected one of {BACKENDS}")
        if backend == "azureml":
            return self.azureml.execute(self, context)
        from batch_scoring.context import interval_from_context
        from batch_scoring.units import unit_label

        context["unit_label"] = unit_label(list(self.unit))
        # no remote job: an empty link, instead of the link's XCom lookup failing loudly after the task
        context["ti"].xcom_push(key=STUDIO_URL_KEY, value="")
        return self.local(interval_from_context(context), list(self.unit))

    def execute_complete(self, context, event: dict[str, Any]):
        """Called with the trigger's event after an Azure ML deferral; see ``AzureMLScoringJob.complete``."""
        return self.azureml.complete(self, context, event)

    def on_kill(self) -> None:
        """Cancel the Azure ML job this task submitted or attached to, if any; nothing to stop for the local backend."""
        self.azureml.cancel()
