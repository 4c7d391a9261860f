"""The DAG's mapped scoring operator: one unit of targets on the backend the run selects."""
from __future__ import annotations

from batch_scoring.links.azure_ml import STUDIO_URL_KEY
from batch_scoring.operators.azure_ml import AzureMLScoringOperator

BACKENDS = ("local", "azureml")


class ScoringOperator(AzureMLScoringOperator):
    """Scores one unit (one ``device/sensor`` by default) locally or as an Azure ML job.

    The backend comes from the run's ``backend`` param (default: the deployment's
    ``BATCH_SCORING_BACKEND``), so an interval can be rescored locally while the
    workspace is down, or one target tried on Azure ML, without another DAG.
    ``local`` runs the scoring entry point in this worker on downloaded inputs
    and uploads its outputs, as an Azure ML job would with download/upload modes;
    ``azureml`` is ``AzureMLScoringOperator`` (deferrable, never a duplicate job).
    """

    def __init__(self, *, blob_conn_id: str, **kwargs):
        super().__init__(**kwargs)
        self.blob_conn_id = blob_conn_id

    def execute(self, context):
        from batch_scoring.config import settings

        backend = (context.get("params") or {}).get("backend") or settings().backend
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: expected one of {BACKENDS}")
        if backend == "azureml":
            return super().execute(context)
        return self.score_locally(context)

    def score_locally(self, context) -> list[dict]:
        """Score the unit in this worker; returns its receipts (``UNIT_RECEIPT_KEYS`` of each target).

        Raises ``AirflowFailException`` (no retries) when a target failed for a reason retrying cannot fix
        (a missing, corrupt or incompatible model blob, a target the snapshot lacks), naming the blobs and
        the way out; ``PipelineError`` for other failures and ``BlobStoreUnavailable`` when storage is
        unreachable, which Airflow retries.
        """
        from airflow.sdk.exceptions import AirflowFailException

        from batch_scoring.config import settings
        from batch_scoring.hooks.blob_storage import BlobStore
        from batch_scoring.errors import PermanentPipelineError
        from batch_scoring.local_backend import UNIT_RECEIPT_KEYS, score_unit_local
        from batch_scoring.tasks import interval_from_context
        from batch_scoring.units import unit_label

        context["unit_label"] = unit_label(list(self.unit))
        # no remote job: an empty link, instead of the link's XCom lookup failing loudly after the task
        context["ti"].xcom_push(key=STUDIO_URL_KEY, value="")
        try:
            receipts = score_unit_local(
                BlobStore.from_conn_id(self.blob_conn_id), settings(), interval_from_context(context), list(self.unit)
            )
        except PermanentPipelineError as exc:
            raise AirflowFailException(str(exc)) from exc
        # the collector confirms these targets' blobs by MD5 instead of reading each one back
        return [{k: r.get(k) for k in UNIT_RECEIPT_KEYS} for r in receipts]
