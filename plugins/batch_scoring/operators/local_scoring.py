"""Score one unit of targets in a local process: the embedded default backend."""
from __future__ import annotations

from airflow.sdk import BaseOperator


class LocalScoringOperator(BaseOperator):
    """Runs the scoring entry point on downloaded inputs and uploads its outputs.

    Mapped once per unit (one ``device/sensor`` by default); the UI names each
    mapped instance after its targets through ``map_index_template``.
    """

    template_fields = ("unit",)
    ui_color = "#fdf2e8"

    def __init__(self, *, unit: list[str], blob_conn_id: str, **kwargs):
        super().__init__(**kwargs)
        self.unit = unit
        self.blob_conn_id = blob_conn_id

    def execute(self, context):
        from batch_scoring.config import settings
        from batch_scoring.hooks.blob_storage import BlobStore
        from batch_scoring.pipeline import Interval, score_unit_local, unit_label

        context["unit_label"] = unit_label(self.unit)
        receipts = score_unit_local(
            BlobStore.from_conn_id(self.blob_conn_id), settings(), Interval.from_context(context), list(self.unit)
        )
        return [{k: r.get(k) for k in ("target", "rows_out", "anomalies", "status")} for r in receipts]
