"""The collector's per-target entries from part files (issue 14: one file per scoring unit).

Two ways, same entries in the manifest:

* ``confirmed_units``: a unit whose score task validated its part file where
  it wrote it (the returned receipts are marked ``validated``) and whose blob's
  MD5 in the container listing equals the one recorded: no download;
* ``read_units``: otherwise (the Azure ML backend, or a blob changed since)
  the part file is downloaded and checked target by target
  (``validation.validate_part``, receipts from its footer).

An entry is ``{"status": "ok", "blob", "sha256", "md5", "rows", "anomalies",
"model_sha256", "rows_sha256"}`` (``blob``/``sha256``/``md5``: the part file's,
shared by the unit's targets) or ``{"status": "failed", "reason", "blob"}``.
"""
from __future__ import annotations

import logging

from batch_scoring.scoring.config import parse_target
from batch_scoring.scoring.layout import model_manifest_blob, part_blob
from batch_scoring.scoring.part_file import file_hashes

from batch_scoring.hooks.blob_storage import read_json
from batch_scoring.validation import validate_part, window_keys


log = logging.getLogger(__name__)

FOOTER_BUFFER = 64 << 10  # bytes fetched per range read: a part file's footer is usually within one or two


def part_receipts(store, container: str, blob: str) -> list[dict] | None:
    """The receipts in a part blob's footer, read by ranges (the rows are not downloaded); ``None`` when
    the blob does not exist.

    For the Azure ML operator and ``permanent`` (which receipts did a job write). Raises
    ``ValueError`` naming ``container/blob`` when it is no part file (``part_file.read_receipts``), and
    what the store raises when storage does not answer.
    """
    from azure.core.exceptions import ResourceNotFoundError

    from batch_scoring.scoring.part_file import read_receipts

    try:
        with store.open_reader(container, blob, buffer_size=FOOTER_BUFFER) as fh:
            return read_receipts(fh)
    except ResourceNotFoundError:
        return None
    except ValueError as exc:
        raise ValueError(f"{container}/{blob}: {exc}") from None


def _flatten(value) -> list[dict]:
    if isinstance(value, dict):
        return [value] if "target" in value else []
    if isinstance(value, (list, tuple)):
        return [r for item in value for r in _flatten(item)]
    return []


def confirmed_units(interval, units: list[list[str]], unit_receipts, listing: dict,
                    keep: dict | None = None) -> dict[str, dict]:
    """Entries of the targets of every unit confirmed by MD5 (see the module doc); others are left out.

    ``units``: this run's units (lists of ``device/sensor``); ``unit_receipts``: what the score tasks
    returned, however XCom nests it; ``listing``: blob -> MD5 of the interval folder. A unit counts only
    when each of its targets has a validated receipt naming the same part file MD5 (a failed target's
    receipt counts too: the check passed on what it recorded). ``keep`` receives each ok target's
    (device_id, anomalous window starts as int64 µs) for the run report.
    """
    receipts = {r["target"]: r for r in _flatten(unit_receipts)}
    entries = {}
    for unit in units:
        blob = part_blob(interval, unit)
        mine = [receipts.get(t) for t in unit]
        md5s = {r.get("output_md5") for r in mine if r is not None and r.get("status") == "ok"}
        if any(r is None or not r.get("validated") for r in mine) or len(md5s) > 1 \
                or listing.get(blob) is None or (md5s and listing[blob] not in md5s):
            continue
        for target, r in zip(unit, mine):
            if r.get("status") != "ok":
                entries[target] = {"status": "failed", "blob": blob, "reason": f"scoring failed: {r.get('error')}"}
                continue
            if keep is not None:
                keep[target] = (parse_target(target)[0], window_keys(r.get("anomaly_window_starts") or []))
            entries[target] = {"status": "ok", "blob": blob, "sha256": r["output_sha256"], "md5": r["output_md5"],
                               "rows": r["rows_out"], "anomalies": r["anomalies"], "model_sha256": r["model_sha256"],
                               "rows_sha256": r.get("rows_sha256")}
    return entries


def read_units(store, settings, interval, units: list[list[str]], present: set, windows: dict,
               keep: dict | None = None, blobs: list[str] | None = None) -> dict[str, dict]:
    """Entries of every target of ``units``, each unit's part file downloaded and checked in full.

    ``present``: the blob names listed under the interval folder; ``windows``: target -> its snapshot
    window starts (``validation.windows_by_target``); ``blobs``: each unit's part blob when it is not
    ``layout.part_blob(interval, unit)`` (an earlier file, for the targets a subset run left out). A unit
    whose part file is missing fails each of its targets with ``part file missing``. ``keep`` as in
    ``confirmed_units``. A target whose footer receipt says it scored but whose rows fail a
    check is taken out of the file (``part_file.fail_targets``: rows out, receipt failed with the reason,
    same name), which is uploaded again; the other targets' entries get the new file's hashes. So the
    dataset holds only rows the manifest calls ``ok``, as the local backend's check before upload does.
    Raises what the store raises (``BlobStoreUnavailable``); a bad file is never raised, it is each
    target's reason.
    """
    def check(item) -> dict[str, dict]:
        unit, blob = item
        if blob not in present:
            return {t: {"status": "failed", "blob": blob, "reason": "part file missing"} for t in unit}
        data = store.download_bytes(settings.predictions_container, blob)
        # a model can be retired after scoring: its manifest is then None and only the file itself is checked
        manifests = {t: read_json(store, settings.models_container, model_manifest_blob(t)) for t in unit}
        hashes = file_hashes(data)
        sha256, md5 = hashes["output_sha256"], hashes["output_md5"]
        entries = {}
        for target, (summary, problem) in validate_part(data, unit, windows, manifests).items():
            if problem:
                entries[target] = {"status": "failed", "blob": blob, "reason": problem}
                continue
            flagged = summary.pop("anomaly_starts")
            if keep is not None:
                keep[target] = (parse_target(target)[0], flagged)
            entries[target] = {"status": "ok", "blob": blob, "sha256": sha256, "md5": md5, **summary}
        new = _without_failed_rows(data, entries)
        if new is not None:
            store.upload_bytes(settings.predictions_container, blob, new)
            hashes = file_hashes(new)
            for entry in entries.values():
                if entry["status"] == "ok":
                    entry.update(sha256=hashes["output_sha256"], md5=hashes["output_md5"])
            log.info("interval %s: took the rows of %s out of %s/%s: they failed the collector's checks",
                     interval.key, ", ".join(sorted(t for t, e in entries.items() if e["status"] == "failed")[:20]),
                     settings.predictions_container, blob)
        return entries

    results = {}
    names = blobs if blobs is not None else [part_blob(interval, u) for u in units]
    for entries in store.parallel(check, list(zip(units, names))):
        results.update(entries)
    return results


def _without_failed_rows(data: bytes, entries: dict[str, dict]) -> bytes | None:
    """``data`` with the rows of each failed entry whose footer receipt says it scored taken out
    (``part_file.fail_targets``), or ``None`` when there are none (or the file has no readable footer)."""
    from batch_scoring.scoring.part_file import fail_targets, read_receipts

    try:
        footer = {r["target"]: r for r in read_receipts(data)}
    except ValueError:
        return None
    reasons = {t: f"the collector's check failed: {e['reason']}" for t, e in entries.items()
               if e["status"] == "failed" and footer.get(t, {}).get("status") == "ok"}
    return fail_targets(data, reasons) if reasons else None
