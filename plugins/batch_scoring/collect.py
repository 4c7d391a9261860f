"""The run's last step: validate every expected prediction, write the interval's manifest, fail naming what is wrong.

``collect_interval`` runs these steps in order:

1. list the interval's folder once (names and MD5s); sort its blobs (``stale_parts.tidy``): this run's
   part files, earlier ones to keep or delete, and blobs no unit wrote (unexpected);
2. confirm by MD5 the units that validated their part file where they wrote it (``unit_checks``);
3. for a run over a subset, sort the targets it left out by what the earlier manifest says of them
   (kept unchanged, checked again, or never scored);
4. read and check in full every unit not confirmed, and the files of those to check again (a target whose
   rows fail is taken out of the file it was read from, ``unit_checks.read_units``);
5. rewrite each earlier part file holding targets a subset run left out beside ones it rescored (those
   targets only, ``part_file.without_targets``, checked again), merge the results into the manifest and
   upload it (``<interval folder>/_manifest.json``), then delete the part files no target of the manifest
   is in (an earlier batching's, or the files just rewritten): the folder holds what the manifest names;
6. clear a late-data marker the new manifest makes obsolete, then fail when the run is short.
"""
from __future__ import annotations

import io
import json
import logging

from batch_scoring.scoring.layout import (
    Interval,
    interval_prefix,
    is_part_name,
    manifest_blob,
    part_blob,
    snapshot_blob,
    stale_marker_blob,
)

from batch_scoring.errors import PipelineError
from batch_scoring.hooks.blob_storage import read_json
from batch_scoring.late_data import clear_marker
from batch_scoring.stale_parts import tidy
from batch_scoring.unit_checks import confirmed_units, read_units
from batch_scoring.validation import windows_by_target

log = logging.getLogger(__name__)


def collect_interval(store, settings, interval: Interval, plan: dict, min_coverage: float = 1.0,
                     keep: dict | None = None, unit_receipts=None, verified: dict | None = None) -> dict:
    """Validate every expected prediction blob, write the interval's manifest, fail naming what is wrong.

    Two ways to validate a target, same result in the manifest:

    * *confirmed*: its scoring unit validated its part file where it wrote it
      (``unit_receipts``: the score tasks' returned receipts, marked
      ``validated``) and the blob's MD5 in the container listing equals the one
      the unit recorded, so the blob holds exactly the bytes that passed;
    * *read*: otherwise (no such receipt, e.g. the Azure ML backend; or the
      blob changed since) the unit's part file (receipts in its footer) and the
      deployed models' manifests are downloaded and checked in full.

    The units are ``plan["units"]`` (a target of ``plan["targets"]`` in none is
    its own unit); each target's manifest entry names the part file holding it
    (``blob``, with that file's ``sha256``/``md5``).

    A run over a subset (``plan["selection"]``: the run's ``targets`` globs;
    ``plan["unselected"]``: the interval's targets with aggregates and a model
    that the globs left out) is merged into the interval's manifest, never
    turning a complete one into a partial one: an unselected target whose
    earlier entry is ``ok`` is kept as it is when its blob's MD5 in the listing
    still equals the entry's ``md5`` (the very bytes validated then), and is
    read and checked in full otherwise (blob changed or gone, an earlier entry
    without ``md5`` or ``failed``); one without an earlier result is listed as
    ``not_selected``. Part files are never "unexpected": once the manifest is
    written, those that are neither this run's nor hold an unselected target
    kept from before are deleted (``stale_parts.tidy``); an earlier part file
    holding kept targets beside rescored ones is first rewritten with the kept
    ones only, named by them, and their entries checked against it.
    ``counts`` (plus ``not_selected`` when there are any), ``coverage``,
    ``rows`` and ``anomalies`` describe the merged entries; ``selected`` holds
    this run's own targets, ok, failed and coverage, and ``min_coverage`` is
    judged on that coverage.

    ``keep``: a dict that receives each valid target's (device_id, anomalous
    window starts as int64 µs) for the targets validated here (not those kept
    unchanged), for the run report; ``verified``: a dict that receives how many
    targets were confirmed by MD5 (kept ones included) and how many read.
    Returns the manifest written to ``<interval folder>/_manifest.json``; raises
    ``PipelineError`` after writing it when this run's coverage is below
    ``min_coverage``, when nothing was planned, or when blobs that no target of
    the interval wrote are present.
    """
    listing = store.list_md5(settings.predictions_container, prefix=interval_prefix(interval))
    targets = list(plan["targets"])
    selection = list(plan.get("selection") or [])
    unselected = [t for t in plan.get("unselected") or [] if t not in set(targets)]
    units = _units(plan, targets)
    earlier_manifest = _earlier_manifest(store, settings, interval) if unselected else {}
    earlier = {t: e for t, e in earlier_manifest.get("targets", {}).items() if isinstance(e, dict)}
    folder = tidy(interval, listing, [part_blob(interval, u) for u in units], earlier, unselected)
    unexpected = folder.unexpected

    results = confirmed_units(interval, units, unit_receipts, listing, keep)
    n_confirmed = len(results)
    kept, recheck, not_selected = _sort_unselected(interval, unselected, earlier, listing)
    unread = [u for u in units if any(t not in results for t in u)]
    windows = _snapshot_windows(store, settings, interval) if unread or recheck or folder.rewrite else {}
    if unread or recheck:
        results.update(read_units(store, settings, interval, unread, set(listing), windows, keep))
        results.update(_recheck(store, settings, interval, recheck, earlier, set(listing), windows, keep))
    counts = {"confirmed": n_confirmed + len(kept), "read": sum(len(u) for u in unread) + len(recheck)}
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
    _rewrite_mixed(store, settings, interval, folder, results, set(listing), windows, keep)

    # Late data (batch_scoring.late_data): the revision these predictions were computed from. A subset
    # run keeps the earlier manifest's, since the targets it left out were scored from those aggregates.
    revised_at = earlier_manifest.get("aggregates_revised_at") if unselected else plan.get("aggregates_revised_at")
    manifest = _manifest(interval, targets, unselected, len(not_selected), selection, results, unexpected,
                         min_coverage, revised_at)
    store.upload_bytes(settings.predictions_container, manifest_blob(interval),
                       json.dumps(manifest, indent=2, sort_keys=True).encode())
    _remove_stale(store, settings, interval, folder, results)
    # a subset run leaves other targets' predictions as old as they were (the listing says if there is a marker)
    if not unselected and stale_marker_blob(interval) in listing:
        clear_marker(store, settings, interval.key, revised_at)
    _fail_if_short(settings, interval, targets, selection, results, unexpected, min_coverage)
    return manifest


def _units(plan: dict, targets: list[str]) -> list[list[str]]:
    """This run's units: ``plan["units"]``, else ``units.chunk(targets, plan["targets_per_unit"])`` (what the
    snapshot task planned: the plan in XCom leaves the units out, they follow from these two); a target
    that no unit holds is its own unit."""
    from batch_scoring.units import chunk

    if "units" in plan:
        units = [list(u) for u in plan["units"] or []]
    else:
        units = chunk(targets, int(plan.get("targets_per_unit") or 1)) if targets else []
    covered = {t for u in units for t in u}
    return units + [[t] for t in targets if t not in covered]


def _remove_stale(store, settings, interval: Interval, folder, results: dict[str, dict]) -> None:
    """Delete the part files of an earlier batching (``folder.delete``) that no manifest entry names."""
    named = {r.get("blob") for r in results.values()}
    for blob in folder.delete:
        if blob not in named:
            log.info("interval %s: removing %s/%s: a part file of an earlier run that no target of the manifest is in",
                     interval.key, settings.predictions_container, blob)
            store.delete(settings.predictions_container, blob)


def _rewrite_mixed(store, settings, interval: Interval, folder, results: dict[str, dict], present: set[str],
                   windows, keep: dict | None) -> None:
    """Rewrite each earlier part file holding targets this run left out beside ones it rescored
    (``folder.rewrite``): the left-out targets' rows and receipts only (``part_file.without_targets``), named by
    them, uploaded, then read back and checked like any unit (their entries name the new file); the old file
    joins ``folder.delete``. ``windows``: the snapshot's windows by target (``_snapshot_windows``).
    A file that is no part file fails its left-out targets and stays (the run names it)."""
    from batch_scoring.scoring.part_file import read_receipts, without_targets

    for blob, targets in sorted(folder.rewrite.items()):
        data = store.download_bytes(settings.predictions_container, blob)
        try:
            footer = {r["target"] for r in read_receipts(data)}
            _, new = without_targets(data, footer - set(targets))
        except ValueError as exc:
            for target in targets:
                results[target] = {"status": "failed", "blob": blob, "reason": f"unreadable part file ({exc})"}
            continue
        for target in sorted(set(targets) - footer):  # the file was replaced since the earlier manifest
            results[target] = {"status": "failed", "reason": f"not in {settings.predictions_container}/{blob}, the "
                               "part file its earlier manifest entry names (replaced since?): rescore it"}
        folder.delete.append(blob)  # what it holds besides those targets, this run rescored
        if new is None:
            continue
        new_blob = part_blob(interval, sorted(footer & set(targets)))  # without_targets names it the same way
        store.upload_bytes(settings.predictions_container, new_blob, new)
        log.info("interval %s: rewrote %s/%s as %s with the targets this run left out (%s)", interval.key,
                 settings.predictions_container, blob, new_blob, ", ".join(targets[:10]))
        results.update(read_units(store, settings, interval, [sorted(footer & set(targets))], present | {new_blob},
                                  windows, keep, blobs=[new_blob]))
        if new_blob == blob:
            folder.delete.remove(blob)


def _sort_unselected(interval: Interval, unselected: list[str], earlier: dict,
                     listing: dict) -> tuple[dict[str, dict], list[str], list[str]]:
    """The targets a subset run left out, by their earlier manifest entry: (kept as they are, to check again,
    without an earlier result).

    Kept: an ``ok`` entry whose part file (``blob``, in the interval's folder) still has the listed MD5 the
    entry recorded. Checked again: any other ``ok`` or ``failed`` entry (file changed or gone, no ``md5``
    recorded, a file of the per-target layout before issue 14).
    """
    prefix = interval_prefix(interval)
    kept, recheck, not_selected = {}, [], []
    for target in unselected:
        entry = earlier.get(target) or {}
        blob = entry.get("blob") or ""
        if entry.get("status") == "ok" and blob.startswith(prefix) and is_part_name(blob[len(prefix):]) \
                and entry.get("md5") and listing.get(blob) == entry["md5"]:
            kept[target] = entry
        elif entry.get("status") in ("ok", "failed"):
            recheck.append(target)
        else:
            not_selected.append(target)
    return kept, recheck, not_selected


def _recheck(store, settings, interval: Interval, recheck: list[str], earlier: dict, present: set[str],
             windows: dict, keep: dict | None) -> dict[str, dict]:
    """Entries of ``recheck`` (unselected targets whose earlier entry cannot be kept as it is), each part file
    they are in read and checked once (``unit_checks.read_units``) as the unit of the targets the earlier
    manifest places in it; a target recorded in no part file of the interval's folder fails."""
    prefix = interval_prefix(interval)
    holders: dict[str, list[str]] = {}
    for target, entry in earlier.items():
        holders.setdefault(entry.get("blob") or "", []).append(target)
    results, groups = {}, {}
    for target in recheck:
        blob = earlier[target].get("blob") or ""
        if blob.startswith(prefix) and is_part_name(blob[len(prefix):]):
            groups.setdefault(blob, []).append(target)
        else:
            results[target] = {"status": "failed", "blob": blob or None, "reason": "part file missing"}
    blobs = sorted(groups)
    read = read_units(store, settings, interval, [sorted(holders[b]) for b in blobs], present, windows, keep,
                      blobs=blobs)
    results.update({t: read[t] for b in blobs for t in groups[b]})
    return results


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
