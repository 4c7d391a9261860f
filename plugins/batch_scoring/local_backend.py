"""The local scoring backend: one scoring unit run in the Airflow worker, the way an Azure ML job runs it.

Fetches the unit's models (from this worker's ``model_cache`` when unchanged, else
downloaded) and the snapshot's row groups of its devices,
runs ``scoring.score.score_targets`` on local paths, validates each prediction
where it was written (``batch_scoring.validation``) and uploads predictions and
receipts under the interval's prefix. Decides which failed targets retrying
cannot fix (``PermanentPipelineError``) and names the blobs and the way out.
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from batch_scoring.scoring.config import parse_target
from batch_scoring.scoring.layout import (
    Interval,
    interval_prefix,
    model_manifest_blob,
    prediction_blob,
    prediction_name,
    receipt_blob,
    receipt_name,
    snapshot_blob,
)

from batch_scoring.config import Containers
from batch_scoring.errors import PermanentPipelineError, PipelineError
from batch_scoring.model_cache import ModelCache, unit_model_versions
from batch_scoring.permanent import permanent_cause, way_out
from batch_scoring.snapshot import require_snapshot
from batch_scoring.validation import validate_prediction, windows_by_target

log = logging.getLogger(__name__)

UNIT_RECEIPT_KEYS = ("target", "status", "rows_out", "anomalies", "anomaly_window_starts", "model_sha256",
                     "output_sha256", "output_md5", "validated", "error")  # what a score task returns per target (XCom)


def score_unit_local(store, containers: Containers, interval: Interval, targets: list[str],
                     cache: ModelCache | None = None) -> list[dict]:
    """Score one unit as an Azure ML job would: download inputs, run the CLI's code on local paths, upload outputs.

    ``containers``: the deployment's (``Settings.containers``); ``cache``: where models come from when
    unchanged (default: ``ModelCache.from_settings()``, this worker's folder). Returns the receipts (one per target). Errors in receipts, uploaded and raised, name blobs
    (``models/<device>/<sensor>/model.joblib``), never this worker's temporary folder. Raises
    ``PermanentPipelineError`` when a target failed for a reason retrying cannot fix (any
    ``scoring.model_store.ModelStoreError``: a model or manifest missing, tampered, corrupt or
    incompatible; or a target without rows in the snapshot), naming the blobs and the way out;
    ``PipelineError`` when targets failed otherwise or the snapshot is missing or unreadable;
    ``BlobStoreUnavailable`` when storage does not answer (transient: retried).
    """
    import pyarrow.parquet as pq

    from batch_scoring.scoring.score import score_targets

    with tempfile.TemporaryDirectory(prefix="score-unit-") as tmp:
        tmp = Path(tmp)
        require_snapshot(store, containers.aggregates, interval)
        models = tmp / "models"
        # from this worker's cache where a listing made now says a model is unchanged, else downloaded;
        # a missing model is left out and fails its target in scoring, by name
        cache = cache if cache is not None else ModelCache.from_settings()
        counts = cache.fill(store, containers.models, unit_model_versions(store, containers.models, targets), models)
        log.info("interval %s: %d model(s) from the cache, %d downloaded (%d cached copies failed their check)",
                 interval.key, counts["cached"], counts["downloaded"], counts["refetched"])
        out = tmp / "out"
        try:
            # only the row groups holding this unit's devices (the snapshot is sorted by device)
            devices = sorted({parse_target(t)[0] for t in targets})
            with store.open_reader(containers.aggregates, snapshot_blob(interval)) as fh:
                aggregates = pq.read_table(fh, filters=[("device_id", "in", devices)]).to_pandas()
        except Exception as exc:  # truncated/corrupt: name the blob and the way out
            raise PipelineError(
                f"interval {interval.key}: snapshot {containers.aggregates}/{snapshot_blob(interval)} "
                f"is unreadable ({type(exc).__name__}: {exc}); clear the snapshot task (and its downstream) "
                "to rewrite it from SQL"
            ) from exc
        receipts = score_targets(aggregates, models, out, targets)
        # the scoring code names the local copies it read; what an operator can act on is the blob
        _name_blobs_in_errors(receipts, out, {f"{models}/": f"{containers.models}/",
                                              f"{out}/": f"{containers.predictions}/{interval_prefix(interval)}"})
        _validate_written(receipts, aggregates, models, out)
        upload_outputs(store, containers.predictions, interval, out, targets)
    failed = [r for r in receipts if r.get("status") != "ok"]
    if failed:
        message = (f"interval {interval.key}: scoring failed for "
                   + "; ".join(f"{r['target']}: {r.get('error', r.get('status'))}" for r in failed))
        permanent = [r for r in failed if permanent_cause(r)]
        if permanent:
            raise PermanentPipelineError(message + "; " + way_out(permanent, containers, interval))
        raise PipelineError(message)
    return receipts


def _name_blobs_in_errors(receipts: list[dict], out: Path, local_to_blob: dict[str, str]) -> None:
    """Rewrite each failed receipt's error (returned and written) so it names blobs, not this worker's temp paths."""
    from batch_scoring.scoring.score import receipt_path, write_receipt

    for receipt in receipts:
        error = receipt.get("error")
        if not error:
            continue
        named = error
        for local, blob in local_to_blob.items():
            named = named.replace(local, blob)
        if named != error:
            receipt["error"] = named
            if receipt.get("device_id") and receipt.get("sensor_id"):
                write_receipt(receipt, receipt_path(out, receipt["device_id"], receipt["sensor_id"]))


def _validate_written(receipts: list[dict], aggregates, models: Path, out: Path) -> None:
    """Run the collector's checks on each prediction where it was written, before it is uploaded.

    A receipt marked ``validated`` lets the collector confirm the blob by the
    MD5 blob storage records (one listing call per 5,000 blobs) instead of
    downloading and parsing every prediction again. A prediction that fails is
    not uploaded and its target fails, naming why.
    """
    from batch_scoring.scoring.score import prediction_path, receipt_path, write_receipt

    windows = windows_by_target(aggregates)
    for receipt in receipts:
        if receipt.get("status") != "ok":
            continue
        device, sensor = receipt["device_id"], receipt["sensor_id"]
        written = prediction_path(out, device, sensor)
        manifest = json.loads((models / model_manifest_blob(receipt["target"])).read_text())
        summary, problem = validate_prediction(written.read_bytes(), receipt["target"],
                                               windows.get(receipt["target"], []), manifest, receipt)
        if problem:
            written.unlink()
            receipt.update(status="failed", error=f"the prediction written failed validation: {problem}")
            write_receipt(receipt, receipt_path(out, device, sensor))
        else:
            receipt["validated"] = True


def upload_outputs(store, predictions_container: str, interval: Interval, out_dir: Path, targets: list[str]) -> None:
    """Upload each target's prediction and receipt that the scoring step produced.

    Mirrors the output folder like Azure ML's rw_mount does: a prediction the
    scoring step removed (its target failed this time) is deleted from blob
    too, so a stale prediction of an earlier run never passes for this one.
    Each blob upload is atomic (a killed worker leaves the old blob or the
    new one, never half of one), and a retry rewrites the same bytes.
    """
    produced, absent = [], []
    for target in targets:
        for local, blob in (
            (out_dir / prediction_name(target), prediction_blob(interval, target)),
            (out_dir / receipt_name(target), receipt_blob(interval, target)),
        ):
            (produced if local.exists() else absent).append((blob, local))
    store.upload_many(predictions_container, produced)
    for blob, _ in absent:
        if store.exists(predictions_container, blob):
            log.info("removing %s/%s: not produced by this attempt", predictions_container, blob)
            store.delete(predictions_container, blob)
