"""The run's last step: validate every expected prediction, write the interval's manifest, fail naming what is wrong.

``collect_interval`` runs these steps in order:

1. list the interval's prefix once (names and MD5s) and flag blobs no target wrote;
2. confirm by MD5 the targets whose scoring unit validated the prediction where it wrote it;
3. for a run over a subset, sort the targets it left out by what the earlier manifest says of them
   (kept unchanged, checked again, or never scored);
4. read and check in full every target not confirmed, and those to check again;
5. merge the results into the manifest and upload it (``<interval>/_manifest.json``);
6. clear a late-data marker the new manifest makes obsolete, then fail when the run is short.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging

from batch_scoring.scoring.config import parse_target
from batch_scoring.scoring.layout import (
    Interval,
    interval_prefix,
    manifest_blob,
    model_manifest_blob,
    prediction_blob,
    receipt_blob,
    snapshot_blob,
    stale_marker_blob,
)

from batch_scoring.errors import PipelineError
from batch_scoring.hooks.blob_storage import read_json
from batch_scoring.late_data import clear_marker
from batch_scoring.validation import validate_prediction, window_keys, windows_by_target

log = logging.getLogger(__name__)


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
    listing = store.list_md5(settings.predictions_container, prefix=interval_prefix(interval))
    targets = list(plan["targets"])
    selection = list(plan.get("selection") or [])
    unselected = [t for t in plan.get("unselected") or [] if t not in set(targets)]
    unexpected = _unexpected_blobs(interval, set(listing), targets + unselected)

    results = _confirmed_by_md5(interval, targets, unit_receipts, listing, keep)
    n_confirmed = len(results)
    earlier_manifest = _earlier_manifest(store, settings, interval) if unselected else {}
    kept, recheck, not_selected = _sort_unselected(interval, unselected, earlier_manifest, listing)
    to_read = [t for t in targets if t not in results] + recheck
    if to_read:
        results.update(_read_and_check(store, settings, interval, to_read, set(listing), keep))
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
    revised_at = earlier_manifest.get("aggregates_revised_at") if unselected else plan.get("aggregates_revised_at")
    manifest = _manifest(interval, targets, unselected, len(not_selected), selection, results, unexpected,
                         min_coverage, revised_at)
    store.upload_bytes(settings.predictions_container, manifest_blob(interval),
                       json.dumps(manifest, indent=2, sort_keys=True).encode())
    # a subset run leaves other targets' predictions as old as they were (the listing says if there is a marker)
    if not unselected and stale_marker_blob(interval) in listing:
        clear_marker(store, settings, interval.key, revised_at)
    _fail_if_short(settings, interval, targets, selection, results, unexpected, min_coverage)
    return manifest


def _unexpected_blobs(interval: Interval, present: set[str], targets: list[str]) -> list[str]:
    """Blobs under the interval's prefix that none of ``targets`` wrote, sorted.

    Run-level files at the interval's root (``_manifest.json``, the run report's ``_*.html/png``) are the
    collector's own and never unexpected.
    """
    expected = {manifest_blob(interval)}
    for target in targets:
        expected.update((prediction_blob(interval, target), receipt_blob(interval, target)))
    root = len(interval_prefix(interval))
    return sorted(n for n in present - expected if not n[root:].startswith("_"))


def _confirmed_by_md5(interval: Interval, targets: list[str], unit_receipts, listing: dict,
                      keep: dict | None) -> dict[str, dict]:
    """Manifest entries of the targets whose unit validated the prediction and whose blob's listed MD5 is
    still the one the unit recorded; fills ``keep`` for them."""
    confirmed = {r["target"]: r for r in _flatten_receipts(unit_receipts)
                 if r.get("validated") and r.get("status") == "ok" and r.get("output_md5")}
    results = {}
    for target in targets:
        receipt, blob = confirmed.get(target), prediction_blob(interval, target)
        if receipt is None or listing.get(blob) != receipt["output_md5"]:
            continue
        if keep is not None:
            keep[target] = (parse_target(target)[0], window_keys(receipt.get("anomaly_window_starts") or []))
        results[target] = {"status": "ok", "blob": blob, "sha256": receipt["output_sha256"],
                           "md5": receipt["output_md5"], "rows": receipt["rows_out"],
                           "anomalies": receipt["anomalies"], "model_sha256": receipt["model_sha256"]}
    return results


def _sort_unselected(interval: Interval, unselected: list[str], earlier_manifest: dict,
                     listing: dict) -> tuple[dict[str, dict], list[str], list[str]]:
    """The targets a subset run left out, by their earlier manifest entry: (kept as they are, to check again,
    without an earlier result).

    Kept: an ``ok`` entry whose blob's listed MD5 is still the entry's. Checked again: any other ``ok`` or
    ``failed`` entry (blob changed or gone, no ``md5`` recorded).
    """
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
    return kept, recheck, not_selected


def _read_and_check(store, settings, interval: Interval, to_read: list[str], present: set[str],
                    keep: dict | None) -> dict[str, dict]:
    """Manifest entries of ``to_read``, each from its prediction, receipt and deployed model manifest read
    back and checked in full (``validate_prediction``); fills ``keep`` for the valid ones."""
    windows = _snapshot_windows(store, settings, interval)

    def check(target: str) -> dict:
        blob = prediction_blob(interval, target)
        receipt = read_json(store, settings.predictions_container, receipt_blob(interval, target)) \
            if receipt_blob(interval, target) in present else None
        if blob not in present:
            reason = "prediction blob missing"
            if receipt and receipt.get("status") != "ok":
                reason += f"; scoring failed: {receipt.get('error')}"
            return {"status": "failed", "reason": reason, "blob": blob}
        data = store.download_bytes(settings.predictions_container, blob)
        # Checked when present: a receipt can be missing after a worker died between the
        # two uploads (the prediction itself is whole: blob uploads are atomic), and a
        # model can be retired after scoring.
        model_manifest = read_json(store, settings.models_container, model_manifest_blob(target))
        summary, problem = validate_prediction(data, target, windows.get(target, []), model_manifest, receipt)
        if problem:
            return {"status": "failed", "reason": problem, "blob": blob}
        flagged = summary.pop("anomaly_starts")
        if keep is not None:
            keep[target] = (parse_target(target)[0], flagged)
        return {"status": "ok", "blob": blob, "sha256": hashlib.sha256(data).hexdigest(),
                "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(), **summary}

    # Each check is three small blob reads and a parquet parse: overlap them across targets.
    return dict(zip(to_read, store.parallel(check, to_read)))


def _manifest(interval: Interval, targets: list[str], unselected: list[str], n_not_selected: int, selection: list[str],
              results: dict[str, dict], unexpected: list[str], min_coverage: float, revised_at) -> dict:
    """The interval's manifest from the merged per-target results (see ``collect_interval``)."""
    run_ok = sorted(t for t in targets if results[t]["status"] == "ok")
    run_failed = sorted(t for t in targets if results[t]["status"] == "failed")
    expected = len(targets)
    coverage = len(run_ok) / expected if expected else 1.0  # this run's: what min_coverage judges
    ok = sorted(t for t, r in results.items() if r["status"] == "ok")
    scorable = expected + len(unselected)
    status_counts = {"ok": len(ok), "failed": sum(r["status"] == "failed" for r in results.values()),
                     "skipped": sum(r["status"] == "skipped" for r in results.values())}
    if n_not_selected:
        status_counts["not_selected"] = n_not_selected
    return {
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


def _fail_if_short(settings, interval: Interval, targets: list[str], selection: list[str], results: dict[str, dict],
                   unexpected: list[str], min_coverage: float) -> None:
    """Raise ``PipelineError`` when nothing was planned, this run's coverage is below ``min_coverage``, or
    (coverage being enough) blobs no target wrote are present."""
    run_failed = sorted(t for t in targets if results[t]["status"] == "failed")
    expected = len(targets)
    coverage = sum(results[t]["status"] == "ok" for t in targets) / expected if expected else 1.0
    if unexpected and expected and coverage >= min_coverage:
        raise PipelineError(
            f"interval {interval.key}: {len(unexpected)} unexpected blob(s) under {settings.predictions_container}/"
            f"{interval_prefix(interval)} that no planned target wrote: {', '.join(unexpected[:20])}"
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


def _earlier_manifest(store, settings, interval: Interval) -> dict:
    """The interval's current manifest ({} when there is none, it is unreadable or not this interval's)."""
    manifest = read_json(store, settings.predictions_container, manifest_blob(interval))
    if not manifest or manifest.get("interval") != interval.key or not isinstance(manifest.get("targets"), dict):
        return {}
    return manifest


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
