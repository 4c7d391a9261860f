"""The local scoring backend: one scoring unit run in the Airflow worker, the way an Azure ML job runs it.

Fetches the unit's models (from this worker's ``model_cache`` when unchanged, else
downloaded) and the snapshot's row groups of its devices,
runs ``scoring.score.score_unit`` on local paths, validates the unit's part file
where it was written, target by target (``validation.validate_part``), and
uploads it to the interval's folder (one blob per unit; its receipts are in its
footer). Decides which failed targets retrying cannot fix
(``PermanentPipelineError``) and names the blobs and the way out.
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from batch_scoring.scoring.config import parse_target
from batch_scoring.scoring.layout import Interval, interval_folder, model_manifest_blob, part_blob, part_name, snapshot_blob

from batch_scoring.config import Containers
from batch_scoring.errors import PermanentPipelineError, PipelineError
from batch_scoring.model_cache import ModelCache, unit_model_versions
from batch_scoring.permanent import permanent_cause, way_out
from batch_scoring.snapshot import require_snapshot
from batch_scoring.validation import validate_part, windows_by_target

log = logging.getLogger(__name__)

UNIT_RECEIPT_KEYS = ("target", "status", "rows_out", "anomalies", "anomaly_window_starts", "model_sha256",
                     "output_sha256", "output_md5", "rows_sha256", "validated", "error")  # what a score task returns per target (XCom)


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

    from batch_scoring.scoring.score import score_unit

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
        # the scoring code names the local copies it read; what an operator can act on is the blob
        receipts = score_unit(aggregates, models, out, targets,
                              error_names={f"{models}/": f"{containers.models}/",
                                           f"{out}/": f"{containers.predictions}/{interval_folder(interval)}"})
        _validate_written(receipts, aggregates, models, out)
        upload_outputs(store, containers.predictions, interval, out, receipts)
    failed = [r for r in receipts if r.get("status") != "ok"]
    if failed:
        message = (f"interval {interval.key}: scoring failed for "
                   + "; ".join(f"{r['target']}: {r.get('error', r.get('status'))}" for r in failed))
        permanent = [r for r in failed if permanent_cause(r)]
        if permanent:
            raise PermanentPipelineError(message + "; " + way_out(permanent, containers, interval))
        raise PipelineError(message)
    return receipts


def _validate_written(receipts: list[dict], aggregates, models: Path, out: Path) -> None:
    """Run the collector's checks on the unit's part file where it was written, target by target, before upload.

    Receipts marked ``validated`` let the collector confirm the blob by the MD5
    blob storage records (one listing call per 5,000 blobs) instead of
    downloading and parsing the file again. A target whose rows fail is taken
    out of the file (``part_file.fail_targets``: rows out, receipt failed,
    same name) and fails, naming why; the others' receipts get the new file's
    hashes.
    """
    from batch_scoring.scoring.part_file import FILE_HASH_KEYS, fail_targets, file_hashes

    unit = [r["target"] for r in receipts if r.get("device_id") is not None]  # what the footer holds
    if not unit:
        return  # no target was path-safe: nothing was written
    path = out / part_name(unit)
    data = path.read_bytes()
    # a target that scored had a readable manifest (the loader read it); a failed one is not checked again
    manifests = {r["target"]: json.loads((models / model_manifest_blob(r["target"])).read_text())
                 for r in receipts if r.get("status") == "ok"}
    checked = validate_part(data, unit, windows_by_target(aggregates), manifests)
    reasons = {r["target"]: f"the prediction written failed validation: {checked[r['target']][1]}"
               for r in receipts if r.get("status") == "ok" and checked[r["target"]][1]}
    if reasons:
        from batch_scoring.scoring.atomic import write_atomic

        data = fail_targets(data, reasons)
        write_atomic(path, data)
        hashes = file_hashes(data)
        for receipt in receipts:
            if receipt["target"] in reasons:
                receipt.update(status="failed", error=reasons[receipt["target"]], rows_out=0, anomalies=0,
                               anomaly_window_starts=[], output=None, rows_sha256=None,
                               **dict.fromkeys(FILE_HASH_KEYS))
            elif receipt.get("status") == "ok":
                receipt.update(hashes)
    for receipt in receipts:
        if receipt.get("device_id") is not None:
            receipt["validated"] = True  # the file holds what this receipt says (rows, or none for a failure)


def upload_outputs(store, predictions_container: str, interval: Interval, out_dir: Path, receipts: list[dict]) -> None:
    """Upload the unit's part file (named for the targets of ``receipts`` that are path-safe) to the interval's folder.

    One atomic blob upload: a killed worker leaves the old blob or the new one, never half of one, and a
    retry rewrites the same bytes. Nothing per target is deleted: a file of an earlier batching is the
    collector's to remove (``stale_parts``). Nothing is uploaded when no target was path-safe.
    """
    unit = [r["target"] for r in receipts if r.get("device_id") is not None]
    if unit:
        store.upload_many(predictions_container, [(part_blob(interval, unit), out_dir / part_name(unit))])
