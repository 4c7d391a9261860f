"""What one DAG run does for its data interval, as plain functions.

The DAG file wires these together; the operators and tasks only fetch clients
from Airflow connections and hand them in, so every step can be run and tested
without a scheduler. Every blob written here lives under the interval's own
prefix, which is what makes reruns and backfills overwrite instead of pile up.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from scoring.config import (
    MODEL_FILE,
    MODEL_MANIFEST,
    PREDICTIONS_MANIFEST,
    RECEIPT_SUFFIX,
    SNAPSHOT_FILE,
    interval_key,
    parse_target,
    target_name,
)

log = logging.getLogger(__name__)


class PipelineError(RuntimeError):
    """A run-stopping problem whose message names the interval and what is at fault."""


class PermanentPipelineError(PipelineError):
    """A fault that retrying the same task cannot fix: a missing, corrupt or incompatible model blob, a
    target the snapshot does not hold, a ``targets`` param that selects nothing.

    The DAG's tasks raise it as Airflow's ``AirflowFailException``, so the task fails at once instead of
    spending its retries; transient faults (``BlobStoreUnavailable``, SQL down) stay plain errors and retry.
    """


@dataclass(frozen=True)
class Interval:
    """A data interval [start, end) in naive UTC."""

    start: dt.datetime
    end: dt.datetime

    @property
    def key(self) -> str:
        return interval_key(self.start, self.end)

    @classmethod
    def from_context(cls, context) -> "Interval":
        start, end = context.get("data_interval_start"), context.get("data_interval_end")
        if start is None or end is None or start >= end:
            raise PipelineError(
                f"run {context.get('run_id')} has no data interval ({start} to {end}); "
                "trigger runs with a logical date so the interval is defined"
            )
        return cls(_naive_utc(start), _naive_utc(end))

    @classmethod
    def from_key(cls, key: str) -> "Interval":
        start, end = (dt.datetime.strptime(p, "%Y%m%dT%H%MZ") for p in key.split("_"))
        return cls(start, end)


def _naive_utc(ts) -> dt.datetime:
    ts = dt.datetime.fromisoformat(str(ts)) if not isinstance(ts, dt.datetime) else ts
    if ts.tzinfo is not None:
        ts = ts.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return ts


def snapshot_blob(interval: Interval) -> str:
    return f"{interval.key}/{SNAPSHOT_FILE}"


def prediction_blob(interval: Interval, target: str) -> str:
    device, sensor = parse_target(target)
    return f"{interval.key}/{device}/{sensor}.parquet"


def receipt_blob(interval: Interval, target: str) -> str:
    device, sensor = parse_target(target)
    return f"{interval.key}/{device}/{sensor}{RECEIPT_SUFFIX}"


def model_targets(store, models_container: str) -> list[str]:
    """Targets with a deployed model: ``<device>/<sensor>/manifest.json`` blobs."""
    targets = []
    for name in store.list_names(models_container):
        parts = name.split("/")
        if len(parts) == 3 and parts[2] == MODEL_MANIFEST:
            targets.append(target_name(parts[0], parts[1]))
    return sorted(targets)


def chunk(items: list, size: int) -> list[list]:
    size = max(1, int(size))
    return [items[i : i + size] for i in range(0, len(items), size)]


def unit_label(unit: list[str]) -> str:
    """How a scoring unit is named in the UI: its target, or its first and last."""
    return unit[0] if len(unit) == 1 else f"{unit[0]} .. {unit[-1]} ({len(unit)})"


SNAPSHOT_ROW_GROUP = 20_000  # rows sorted by device: a unit's devices sit in one or two row groups


def frame_to_parquet_bytes(frame, row_group_size: int | None = None) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False, row_group_size=row_group_size)
    return buf.getvalue()


# --- snapshot -----------------------------------------------------------------

def snapshot_interval(sql_conn, store, settings, interval: Interval, targets_per_unit: int = 1) -> dict:
    """Export the interval's aggregates once to blob and decide what gets scored.

    Returns the plan the rest of the run follows: targets (have data and a
    model), skipped targets with the reason, and the targets grouped into units.
    """
    from sensor_db.reads import read_interval_aggregates

    from batch_scoring.late_data import interval_revised_at

    # Structural faults (duplicate, misaligned or straddling windows) mean the
    # upstream aggregation is broken: refuse the whole interval, before writing
    # anything, naming every target and window. Bad *values* (NaN/inf/NULL) are
    # per-target: scoring fails those targets naming their windows.
    frame, problems = read_interval_aggregates(sql_conn, interval.start, interval.end)  # one SQL read for both
    if problems:
        detail = "; ".join(f"{t}: {', '.join(p)}" for t, p in list(problems.items())[:20])
        more = f" (and {len(problems) - 20} more targets)" if len(problems) > 20 else ""
        raise PipelineError(
            f"interval {interval.key}: aggregates are malformed for {len(problems)} target(s), nothing was "
            f"snapshotted: {detail}{more}; fix the rows in sensor_aggregates (or re-aggregate) and clear the run"
        )
    store.upload_bytes(settings.aggregates_container, snapshot_blob(interval),
                       frame_to_parquet_bytes(frame, SNAPSHOT_ROW_GROUP))
    with_data = {target_name(d, s) for d, s in frame[["device_id", "sensor_id"]].drop_duplicates().itertuples(index=False)}
    with_model = set(model_targets(store, settings.models_container))
    targets = sorted(with_data & with_model)
    skipped = {t: "no model deployed" for t in sorted(with_data - with_model)}
    skipped.update({t: "no aggregates in the interval" for t in sorted(with_model - with_data)})
    revised_at = interval_revised_at(sql_conn, interval.start, interval.end)
    log.info("interval %s: %d windows, %d targets to score, %d skipped; latest late-data revision %s",
             interval.key, len(frame), len(targets), len(skipped), revised_at or "none")
    return {
        "interval": interval.key,
        "aggregates_revised_at": revised_at,
        "targets": targets,
        "skipped": dict(sorted(skipped.items())),
        "units": chunk(targets, targets_per_unit),
    }


# --- local scoring backend ------------------------------------------------------

def score_unit_local(store, settings, interval: Interval, targets: list[str]) -> list[dict]:
    """Score one unit as an Azure ML job would: download inputs, run the CLI's code on local paths, upload outputs.

    Returns the receipts (one per target). Errors in receipts, uploaded and raised, name blobs
    (``models/<device>/<sensor>/model.joblib``), never this worker's temporary folder. Raises
    ``PermanentPipelineError`` when a target failed for a reason retrying cannot fix (any
    ``scoring.model_store.ModelStoreError``: a model or manifest missing, tampered, corrupt or
    incompatible; or a target without rows in the snapshot), naming the blobs and the way out;
    ``PipelineError`` when targets failed otherwise or the snapshot is missing or unreadable;
    ``BlobStoreUnavailable`` when storage does not answer (transient: retried).
    """
    import pyarrow.parquet as pq

    from scoring.score import score_targets

    with tempfile.TemporaryDirectory(prefix="score-unit-") as tmp:
        tmp = Path(tmp)
        _require_snapshot(store, settings, interval)
        models = tmp / "models"
        wanted = [f"{d}/{s}/{name}" for d, s in map(parse_target, targets) for name in (MODEL_FILE, MODEL_MANIFEST)]
        for blob, data in store.download_many(settings.models_container, wanted).items():
            if data is not None:  # a missing model fails its target in scoring, by name
                (models / blob).parent.mkdir(parents=True, exist_ok=True)
                (models / blob).write_bytes(data)
        out = tmp / "out"
        try:
            # only the row groups holding this unit's devices (the snapshot is sorted by device)
            devices = sorted({parse_target(t)[0] for t in targets})
            with store.open_reader(settings.aggregates_container, snapshot_blob(interval)) as fh:
                aggregates = pq.read_table(fh, filters=[("device_id", "in", devices)]).to_pandas()
        except Exception as exc:  # truncated/corrupt: name the blob and the way out
            raise PipelineError(
                f"interval {interval.key}: snapshot {settings.aggregates_container}/{snapshot_blob(interval)} "
                f"is unreadable ({type(exc).__name__}: {exc}); clear the snapshot task (and its downstream) "
                "to rewrite it from SQL"
            ) from exc
        receipts = score_targets(aggregates, models, out, targets)
        # the scoring code names the local copies it read; what an operator can act on is the blob
        _name_blobs_in_errors(receipts, out, {f"{models}/": f"{settings.models_container}/",
                                              f"{out}/": f"{settings.predictions_container}/{interval.key}/"})
        _validate_written(receipts, aggregates, models, out)
        upload_outputs(store, settings, interval, out, targets)
    failed = [r for r in receipts if r.get("status") != "ok"]
    if failed:
        message = (f"interval {interval.key}: scoring failed for "
                   + "; ".join(f"{r['target']}: {r.get('error', r.get('status'))}" for r in failed))
        permanent = [r for r in failed if _permanent_cause(r)]
        if permanent:
            raise PermanentPipelineError(message + "; " + _way_out(permanent, settings, interval))
        raise PipelineError(message)
    return receipts


def _permanent_error_names() -> frozenset[str]:
    """Exception classes a receipt's error can start with that retrying the unit cannot fix.

    Every ``scoring.model_store.ModelStoreError`` (missing, tampered, corrupt or incompatible model, and
    any subclass added later) and ``UnknownTargetError`` (no rows in the snapshot).
    """
    from scoring.model_store import ModelStoreError
    from scoring.score import UnknownTargetError

    names, todo = {UnknownTargetError.__name__}, [ModelStoreError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(names)


def _permanent_cause(receipt: dict) -> str | None:
    """The exception class of a failed receipt (``error_type``, written by ``score_targets``) when retrying
    cannot fix it, else None."""
    name = receipt.get("error_type")
    return name if name in _permanent_error_names() else None


def _way_out(permanent: list[dict], settings, interval: Interval) -> str:
    """What to do about the unit's permanent failures: redeploy the models named, or replan the interval."""
    models = [r["target"] for r in permanent if _permanent_cause(r) != "UnknownTargetError"]
    unknown = [r["target"] for r in permanent if r["target"] not in models]
    steps = []
    if models:
        blobs = ", ".join(f"{settings.models_container}/{t}/{MODEL_FILE} and {MODEL_MANIFEST}" for t in models)
        steps.append(f"redeploy the model of {', '.join(models)} (blobs {blobs}; e.g. `python -m "
                     "devstack.deploy_models MODELS_DIR`, or upload both files again), then clear the failed "
                     "score task(s) and collect")
    if unknown:
        steps.append(f"{', '.join(unknown)} has no rows in the snapshot {settings.aggregates_container}/"
                     f"{snapshot_blob(interval)}: clear the snapshot task and its downstream to plan the interval again")
    return "retrying cannot fix this, so the task fails without retries: " + "; ".join(steps)


def _name_blobs_in_errors(receipts: list[dict], out: Path, local_to_blob: dict[str, str]) -> None:
    """Rewrite each failed receipt's error (returned and written) so it names blobs, not this worker's temp paths."""
    from scoring.score import receipt_path, write_receipt

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


UNIT_RECEIPT_KEYS = ("target", "status", "rows_out", "anomalies", "anomaly_window_starts", "model_sha256",
                     "output_sha256", "output_md5", "validated", "error")


def _validate_written(receipts: list[dict], aggregates, models: Path, out: Path) -> None:
    """Run the collector's checks on each prediction where it was written, before it is uploaded.

    A receipt marked ``validated`` lets the collector confirm the blob by the
    MD5 blob storage records (one listing call per 5,000 blobs) instead of
    downloading and parsing every prediction again. A prediction that fails is
    not uploaded and its target fails, naming why.
    """
    from scoring.score import receipt_path, write_receipt

    windows = windows_by_target(aggregates)
    for receipt in receipts:
        if receipt.get("status") != "ok":
            continue
        device, sensor = receipt["device_id"], receipt["sensor_id"]
        written = out / device / f"{sensor}.parquet"
        manifest = json.loads((models / device / sensor / MODEL_MANIFEST).read_text())
        summary, problem = validate_prediction(written.read_bytes(), receipt["target"],
                                               windows.get(receipt["target"], []), manifest, receipt)
        if problem:
            written.unlink()
            receipt.update(status="failed", error=f"the prediction written failed validation: {problem}")
            write_receipt(receipt, receipt_path(out, device, sensor))
        else:
            receipt["validated"] = True


def upload_outputs(store, settings, interval: Interval, out_dir: Path, targets: list[str]) -> None:
    """Upload each target's prediction and receipt that the scoring step produced.

    Mirrors the output folder like Azure ML's rw_mount does: a prediction the
    scoring step removed (its target failed this time) is deleted from blob
    too, so a stale prediction of an earlier run never passes for this one.
    Each blob upload is atomic (a killed worker leaves the old blob or the
    new one, never half of one), and a retry rewrites the same bytes.
    """
    produced, absent = [], []
    for target in targets:
        device, sensor = parse_target(target)
        for local, blob in (
            (out_dir / device / f"{sensor}.parquet", prediction_blob(interval, target)),
            (out_dir / device / f"{sensor}{RECEIPT_SUFFIX}", receipt_blob(interval, target)),
        ):
            (produced if local.exists() else absent).append((blob, local))
    store.upload_many(settings.predictions_container, produced)
    for blob, _ in absent:
        if store.exists(settings.predictions_container, blob):
            log.info("removing %s/%s: not produced by this attempt", settings.predictions_container, blob)
            store.delete(settings.predictions_container, blob)


# --- collect ----------------------------------------------------------------------

PREDICTION_REQUIRED_COLUMNS = ("device_id", "sensor_id", "window_start", "window_end", "decision_score", "is_anomaly", "model_sha256")


def validate_prediction(data: bytes, target: str, expected_windows, model_manifest: dict | None = None,
                        receipt: dict | None = None) -> tuple[dict | None, str | None]:
    """Check one prediction blob; returns (summary, None) or (None, what is wrong).

    Beyond the blob itself: with the deployed model's manifest, the rows must
    carry that model's sha256 and every ``is_anomaly`` flag must agree with
    ``decision_score < threshold``; with the scoring step's receipt, rows,
    anomaly count and model hash must match what the scoring step reported
    (and its ``output_sha256``, when the receipt carries one, the blob's bytes).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    # pyarrow and numpy, not pandas: the collector runs this once per target, thousands of times.
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # a truncated or corrupt file: say so, do not crash the collector
        return None, f"unreadable parquet ({type(exc).__name__}: {exc})"
    missing = [c for c in PREDICTION_REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        return None, f"missing columns {missing}"
    device, sensor = parse_target(target)
    ids = pc.and_(pc.equal(table["device_id"].cast(pa.string()), device), pc.equal(table["sensor_id"].cast(pa.string()), sensor))
    if not pc.all(pc.fill_null(ids, False)).as_py():
        return None, "rows for another device/sensor"
    expected = window_keys(expected_windows)
    if table.num_rows != len(expected):
        return None, f"{table.num_rows} rows for {len(expected)} input windows"
    try:
        raw_starts = table["window_start"].cast(pa.timestamp("us")).to_numpy(zero_copy_only=False).astype("int64")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError, ValueError):
        return None, "windows differ from the snapshot's (window_start is not a timestamp)"
    order = np.argsort(raw_starts, kind="stable")
    starts = raw_starts[order]
    if not np.array_equal(starts, expected):
        return None, "windows differ from the snapshot's"
    scores = table["decision_score"].to_numpy(zero_copy_only=False).astype(float)
    if not np.isfinite(scores).all():
        return None, f"{int((~np.isfinite(scores)).sum())} non-finite decision scores"
    hashes = pc.unique(table["model_sha256"]).to_pylist()
    if len(hashes) != 1:
        return None, "more than one model hash"
    flags = table["is_anomaly"].to_numpy(zero_copy_only=False).astype(bool)
    if model_manifest and model_manifest.get("sha256"):
        if str(hashes[0]) != model_manifest.get("sha256"):
            return None, (f"scored with model {str(hashes[0])[:12]}, but the deployed model is "
                          f"{str(model_manifest.get('sha256'))[:12]}")
        threshold = model_manifest.get("threshold")
        if threshold is not None:
            wrong = int(((scores < float(threshold)) != flags).sum())
            if wrong:
                return None, f"{wrong} anomaly flag(s) disagree with decision_score < threshold {float(threshold):.6g}"
    if receipt is not None:
        if receipt.get("status") != "ok":
            return None, f"the scoring step reported it failed: {receipt.get('error')}"
        expect = {"rows": receipt.get("rows_out"), "anomalies": receipt.get("anomalies"),
                  "model hash": receipt.get("model_sha256")}
        got = {"rows": table.num_rows, "anomalies": int(flags.sum()), "model hash": str(hashes[0])}
        diff = [f"{k} {got[k]} != receipt's {expect[k]}" for k in expect if expect[k] is not None and got[k] != expect[k]]
        if diff:
            return None, "blob differs from what the scoring step wrote: " + ", ".join(diff)
        if receipt.get("output_sha256") and receipt["output_sha256"] != hashlib.sha256(data).hexdigest():
            return None, "blob's sha256 differs from the one the scoring step recorded"
    return {"rows": table.num_rows, "anomalies": int(flags.sum()), "model_sha256": str(hashes[0]),
            "anomaly_starts": starts[flags[order]]}, None


def collect_interval(store, settings, interval: Interval, plan: dict, min_coverage: float = 1.0,
                     keep: dict | None = None, unit_receipts=None, verified: dict | None = None) -> dict:
    """Validate every expected prediction blob, write the interval's manifest, fail naming what is wrong.

    Two ways to validate a target, same result in the manifest:

    * *confirmed*: its scoring unit validated the prediction where it wrote it
      (``unit_receipts``: the score tasks' returned receipts, marked
      ``validated``) and the blob's MD5 in the container listing equals the one
      the unit recorded, so the blob holds exactly the bytes that passed;
    * *read*: otherwise (no such receipt, e.g. the Azure ML backend; or the
      blob changed since) the blob, its receipt blob and the deployed model's
      manifest are downloaded and checked in full.

    A run over a subset (``plan["selection"]``: the run's ``targets`` globs;
    ``plan["unselected"]``: the interval's targets with aggregates and a model
    that the globs left out) is merged into the interval's manifest, never
    turning a complete one into a partial one: an unselected target whose
    earlier entry is ``ok`` is kept as it is when its blob's MD5 in the listing
    still equals the entry's ``md5`` (the very bytes validated then), and is
    read and checked in full otherwise (blob changed or gone, an earlier entry
    without ``md5`` or ``failed``); one without an earlier result is listed as
    ``not_selected``. Blobs of unselected targets are never "unexpected".
    ``counts`` (plus ``not_selected`` when there are any), ``coverage``,
    ``rows`` and ``anomalies`` describe the merged entries; ``selected`` holds
    this run's own targets, ok, failed and coverage, and ``min_coverage`` is
    judged on that coverage.

    ``keep``: a dict that receives each valid target's (device_id, anomalous
    window starts as int64 µs) for the targets validated here (not those kept
    unchanged), for the run report; ``verified``: a dict that receives how many
    targets were confirmed by MD5 (kept ones included) and how many read.
    Returns the manifest written to ``<interval>/_manifest.json``; raises
    ``PipelineError`` after writing it when this run's coverage is below
    ``min_coverage``, when nothing was planned, or when blobs that no target of
    the interval wrote are present.
    """
    listing = store.list_md5(settings.predictions_container, prefix=f"{interval.key}/")
    present = set(listing)
    targets = list(plan["targets"])
    selection = list(plan.get("selection") or [])
    unselected = [t for t in plan.get("unselected") or [] if t not in set(targets)]
    expected_blobs = {f"{interval.key}/{PREDICTIONS_MANIFEST}"}
    for target in targets + unselected:
        expected_blobs.update((prediction_blob(interval, target), receipt_blob(interval, target)))
    # Run-level files at the interval's root ("_manifest.json", the run report's "_*.html/png") are the
    # collector's own; anything else that no target of the interval wrote is flagged.
    unexpected = sorted(n for n in present - expected_blobs if not n[len(interval.key) + 1:].startswith("_"))
    confirmed = {r["target"]: r for r in _flatten_receipts(unit_receipts)
                 if r.get("validated") and r.get("status") == "ok" and r.get("output_md5")}

    def confirm(target: str) -> dict | None:
        receipt, blob = confirmed.get(target), prediction_blob(interval, target)
        if receipt is None or listing.get(blob) != receipt["output_md5"]:
            return None
        if keep is not None:
            keep[target] = (parse_target(target)[0], window_keys(receipt.get("anomaly_window_starts") or []))
        return {"status": "ok", "blob": blob, "sha256": receipt["output_sha256"], "md5": receipt["output_md5"],
                "rows": receipt["rows_out"], "anomalies": receipt["anomalies"], "model_sha256": receipt["model_sha256"]}

    results: dict[str, dict] = {}
    for target in targets:
        entry = confirm(target)
        if entry is not None:
            results[target] = entry
    n_confirmed = len(results)
    earlier_manifest = _earlier_manifest(store, settings, interval) if unselected else {}
    earlier = {t: e for t, e in earlier_manifest.get("targets", {}).items() if isinstance(e, dict)}
    kept, recheck, not_selected = {}, [], []
    for target in unselected:
        entry = earlier.get(target) or {}
        blob = prediction_blob(interval, target)
        if entry.get("status") == "ok" and entry.get("blob") == blob and entry.get("md5") \
                and listing.get(blob) == entry["md5"]:
            kept[target] = entry
        elif entry.get("status") in ("ok", "failed"):
            recheck.append(target)
        else:
            not_selected.append(target)
    to_read = [t for t in targets if t not in results] + recheck
    if to_read:
        windows = _snapshot_windows(store, settings, interval)

        def check(target: str) -> dict:
            blob = prediction_blob(interval, target)
            receipt = _read_json(store, settings.predictions_container, receipt_blob(interval, target)) \
                if receipt_blob(interval, target) in present else None
            if blob not in present:
                reason = "prediction blob missing"
                if receipt and receipt.get("status") != "ok":
                    reason += f"; scoring failed: {receipt.get('error')}"
                return {"status": "failed", "reason": reason, "blob": blob}
            data = store.download_bytes(settings.predictions_container, blob)
            device, sensor = parse_target(target)
            # Checked when present: a receipt can be missing after a worker died between the
            # two uploads (the prediction itself is whole: blob uploads are atomic), and a
            # model can be retired after scoring.
            model_manifest = _read_json(store, settings.models_container, f"{device}/{sensor}/{MODEL_MANIFEST}")
            summary, problem = validate_prediction(data, target, windows.get(target, []), model_manifest, receipt)
            if problem:
                return {"status": "failed", "reason": problem, "blob": blob}
            flagged = summary.pop("anomaly_starts")
            if keep is not None:
                keep[target] = (device, flagged)
            return {"status": "ok", "blob": blob, "sha256": hashlib.sha256(data).hexdigest(),
                    "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(), **summary}

        # Each check is three small blob reads and a parquet parse: overlap them across targets.
        results.update(zip(to_read, store.parallel(check, to_read)))
    counts = {"confirmed": n_confirmed + len(kept), "read": len(to_read)}
    if verified is not None:
        verified.update(counts)
    log.info("interval %s: %d predictions confirmed by the MD5 of what was validated, %d read and checked",
             interval.key, counts["confirmed"], counts["read"])
    if unselected:
        gone = sorted(t for t in recheck if results[t]["status"] != "ok")
        log.info("interval %s: targets selection %s: %d target(s) not selected: %d kept unchanged, %d checked again "
                 "(%d not valid: %s), %d without an earlier result", interval.key, selection, len(unselected),
                 len(kept), len(recheck), len(gone), ", ".join(gone[:20]) or "none", len(not_selected))
    results.update(kept)
    for target in not_selected:
        results[target] = {"status": "not_selected",
                           "reason": f"not in this run's targets selection {selection}; no earlier result"}
    for target, reason in {**plan.get("unselected_skipped", {}), **plan.get("skipped", {})}.items():
        results[target] = {"status": "skipped", "reason": reason}

    # Late data (batch_scoring.late_data): the revision these predictions were computed from. A subset
    # run keeps the earlier manifest's, since the targets it left out were scored from those aggregates.
    revised_at = plan.get("aggregates_revised_at")
    if unselected:
        revised_at = earlier_manifest.get("aggregates_revised_at")
    run_ok = sorted(t for t in targets if results[t]["status"] == "ok")
    run_failed = sorted(t for t in targets if results[t]["status"] == "failed")
    expected = len(targets)
    coverage = len(run_ok) / expected if expected else 1.0  # this run's: what min_coverage judges
    ok = sorted(t for t, r in results.items() if r["status"] == "ok")
    scorable = expected + len(unselected)
    status_counts = {"ok": len(ok), "failed": sum(r["status"] == "failed" for r in results.values()),
                     "skipped": sum(r["status"] == "skipped" for r in results.values())}
    if not_selected:
        status_counts["not_selected"] = len(not_selected)
    manifest = {
        "interval": interval.key,
        "start": interval.start.isoformat(),
        "end": interval.end.isoformat(),
        "coverage": round(len(ok) / scorable if scorable else 1.0, 6),
        "min_coverage": min_coverage,
        "counts": status_counts,
        "rows": sum(results[t]["rows"] for t in ok),
        "anomalies": sum(results[t]["anomalies"] for t in ok),
        "selection": selection,
        "selected": {"targets": expected, "ok": len(run_ok), "failed": len(run_failed), "coverage": round(coverage, 6)},
        "targets": dict(sorted(results.items())),
        "unexpected_blobs": unexpected,
        # the latest late-data revision of the interval's aggregates when they were snapshotted
        # (batch_scoring.late_data: a newer revision makes these predictions stale)
        "aggregates_revised_at": revised_at,
    }
    store.upload_bytes(
        settings.predictions_container,
        f"{interval.key}/{PREDICTIONS_MANIFEST}",
        json.dumps(manifest, indent=2, sort_keys=True).encode(),
    )
    from batch_scoring.late_data import clear_marker, stale_marker_blob

    # a subset run leaves other targets' predictions as old as they were (the listing says if there is a marker)
    if not unselected and stale_marker_blob(interval.key) in present:
        clear_marker(store, settings, interval.key, revised_at)
    if unexpected and expected and coverage >= min_coverage:
        raise PipelineError(
            f"interval {interval.key}: {len(unexpected)} unexpected blob(s) under {settings.predictions_container}/"
            f"{interval.key}/ that no planned target wrote: {', '.join(unexpected[:20])}"
            f"{' ...' if len(unexpected) > 20 else ''}; remove them (e.g. predictions of a target now skipped) "
            "and clear the collect task"
        )
    if expected == 0 or coverage < min_coverage:
        which = f"targets selected by {selection}" if selection else "targets"
        detail = "; ".join(f"{t}: {results[t]['reason']}" for t in run_failed[:20])
        more = f" (and {len(run_failed) - 20} more)" if len(run_failed) > 20 else ""
        if not expected:
            raise PipelineError(
                f"interval {interval.key}: the run's targets selection {selection} selects no target with both "
                "aggregates and a model; fix the `targets` param" if selection else
                f"interval {interval.key}: nothing to score (no targets with both aggregates and a model)"
            )
        raise PipelineError(
            f"interval {interval.key}: {len(run_failed)} of {expected} {which} failed validation "
            f"(coverage {coverage:.1%} < {min_coverage:.0%}): {detail}{more}"
            + (f"; also {len(unexpected)} unexpected blob(s): {', '.join(unexpected[:5])}" if unexpected else "")
        )
    return manifest


def _earlier_manifest(store, settings, interval: Interval) -> dict:
    """The interval's current manifest ({} when there is none, it is unreadable or not this interval's)."""
    manifest = _read_json(store, settings.predictions_container, f"{interval.key}/{PREDICTIONS_MANIFEST}")
    if not manifest or manifest.get("interval") != interval.key or not isinstance(manifest.get("targets"), dict):
        return {}
    return manifest


# --- helpers for the steps above (reliability) ---------------------------------------

def window_keys(windows):
    """Window starts as sorted int64 microseconds (from datetimes, Timestamps or such an array)."""
    import numpy as np
    import pandas as pd

    if isinstance(windows, np.ndarray) and windows.dtype == np.int64:
        return windows
    return np.sort(np.asarray(pd.to_datetime(list(windows)), dtype="datetime64[us]").astype("int64"))


def windows_by_target(snapshot) -> dict:
    """``device/sensor`` → its window starts (sorted int64 µs), in one pass over the snapshot."""
    import numpy as np

    if snapshot.empty:
        return {}
    frame = snapshot.sort_values(["device_id", "sensor_id", "window_start"], kind="mergesort")
    keys = (frame["device_id"].astype(str) + "/" + frame["sensor_id"].astype(str)).to_numpy()
    starts = frame["window_start"].to_numpy(dtype="datetime64[us]").astype("int64")
    bounds = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1], True])
    return {keys[a]: starts[a:b] for a, b in zip(bounds[:-1], bounds[1:])}


def _snapshot_windows(store, settings, interval: Interval) -> dict:
    """Each target's window starts in the interval's snapshot (what a prediction must have one row for)."""
    import pandas as pd

    snapshot_path = f"{settings.aggregates_container}/{snapshot_blob(interval)}"
    try:
        data = store.download_bytes(settings.aggregates_container, snapshot_blob(interval))
        snapshot = pd.read_parquet(io.BytesIO(data), columns=["device_id", "sensor_id", "window_start"])
    except Exception as exc:
        if type(exc).__name__ in ("BlobStoreUnavailable",):
            raise
        raise PipelineError(
            f"interval {interval.key}: cannot read the snapshot {snapshot_path} to validate predictions against "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); clear the snapshot task and its downstream"
        ) from exc
    return windows_by_target(snapshot)


def _flatten_receipts(value) -> list[dict]:
    """The score tasks' returned receipts, however XCom nests them (one list per unit, or one unit's list)."""
    if isinstance(value, dict):
        return [value] if "target" in value else []
    if isinstance(value, (list, tuple)):
        return [r for item in value for r in _flatten_receipts(item)]
    return []


def anomaly_starts(data: bytes) -> "np.ndarray":
    """A prediction blob's flagged window starts (sorted int64 µs)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data), columns=["window_start", "is_anomaly"])
    starts = table["window_start"].cast(pa.timestamp("us")).to_numpy(zero_copy_only=False).astype("int64")
    return np.sort(starts[table["is_anomaly"].to_numpy(zero_copy_only=False).astype(bool)])


def _require_snapshot(store, settings, interval: Interval) -> None:
    """Fail naming the interval's snapshot and the way out when it does not exist."""
    name = snapshot_blob(interval)
    if not store.exists(settings.aggregates_container, name):
        raise PipelineError(
            f"interval {interval.key}: snapshot {settings.aggregates_container}/{name} does not exist; "
            "clear the snapshot task (and its downstream) to write it"
        )


def _read_json(store, container: str, name: str) -> dict | None:
    """A small JSON blob (receipt, model manifest), or None if it is missing or unreadable."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        value = json.loads(store.download_bytes(container, name))
    except (ResourceNotFoundError, ValueError):
        return None
    return value if isinstance(value, dict) else None
