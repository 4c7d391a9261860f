"""The run's first step: export the interval's aggregates once to blob and plan what gets scored.

Every later step reads the interval's aggregates from this snapshot
(``aggregates/<interval>/aggregates.parquet``, rows sorted by device), never
from SQL, so all units of a run score the same rows however late data arrives.
"""
from __future__ import annotations

import io
import logging

from batch_scoring.scoring.config import target_name
from batch_scoring.scoring.layout import Interval, model_manifest_target, snapshot_blob

from batch_scoring.errors import PermanentPipelineError, PipelineError
from batch_scoring.late_data import interval_revised_at
from batch_scoring.units import chunk

log = logging.getLogger(__name__)

SNAPSHOT_ROW_GROUP = 20_000  # rows sorted by device: a unit's devices sit in one or two row groups


def frame_to_parquet_bytes(frame, row_group_size: int | None = None) -> bytes:
    """A DataFrame as parquet bytes (no index; pyarrow's default compression; rows per group as given)."""
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False, row_group_size=row_group_size)
    return buf.getvalue()


def model_targets(store, models_container: str) -> list[str]:
    """Sorted ``device/sensor`` targets with a deployed model (a ``<device>/<sensor>/manifest.json`` blob).

    Raises ``BlobStoreUnavailable`` when storage does not answer.
    """
    return sorted(t for t in map(model_manifest_target, store.list_names(models_container)) if t is not None)


def snapshot_interval(sql_conn, store, settings, interval: Interval, targets_per_unit: int = 1) -> dict:
    """Export the interval's aggregates once to blob and decide what gets scored.

    Returns the plan the rest of the run follows: ``interval`` (key), ``aggregates_revised_at`` (ISO text of
    the latest late-data revision, or None), ``targets`` (sorted: have data and a model), ``skipped``
    (target -> reason) and ``units`` (the targets in lists of ``targets_per_unit``). Raises
    ``PermanentPipelineError`` (retrying cannot fix it) naming every target and window when the aggregates
    are structurally malformed (duplicate, misaligned or straddling windows), before anything is written.
    """
    from batch_scoring.sensor_db.reads import read_interval_aggregates

    # Structural faults (duplicate, misaligned or straddling windows) mean the
    # upstream aggregation is broken: refuse the whole interval, before writing
    # anything, naming every target and window. Bad *values* (NaN/inf/NULL) are
    # per-target: scoring fails those targets naming their windows.
    frame, problems = read_interval_aggregates(sql_conn, interval.start, interval.end)  # one SQL read for both
    if problems:
        detail = "; ".join(f"{t}: {', '.join(p)}" for t, p in list(problems.items())[:20])
        more = f" (and {len(problems) - 20} more targets)" if len(problems) > 20 else ""
        raise PermanentPipelineError(  # retrying reads the same rows: fail at once
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


def require_snapshot(store, aggregates_container: str, interval: Interval) -> None:
    """Raise ``PipelineError`` naming the interval's snapshot blob and the way out when it does not exist."""
    name = snapshot_blob(interval)
    if not store.exists(aggregates_container, name):
        raise PipelineError(
            f"interval {interval.key}: snapshot {aggregates_container}/{name} does not exist; "
            "clear the snapshot task (and its downstream) to write it"
        )
