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


class RowGroupWriter:
    """A parquet file written a frame at a time, with the bytes :func:`frame_to_parquet_bytes` gives the frames joined.

    ``write(frame)`` converts each frame to Arrow with the first frame's schema
    (pandas metadata included, no index) and writes whole row groups of
    ``row_group_size`` rows, carrying the rest to the next write: the file's row
    groups are those of one ``to_parquet`` of all rows. Memory: one frame plus
    less than one row group. ``close()`` writes the last, partial group; a
    writer that was never given a frame writes nothing. Raises pyarrow's errors
    for a frame that does not fit the schema.
    """

    def __init__(self, path, row_group_size: int):
        self.path, self.size = path, int(row_group_size)
        self.schema, self._writer, self._pending, self.rows = None, None, None, 0

    def write(self, frame) -> None:
        """Append ``frame`` (the first frame's columns and dtypes); whole row groups go to the file."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
        if self._writer is None:
            self.schema = table.schema
            self._writer = pq.ParquetWriter(self.path, self.schema)
        self.rows += table.num_rows
        table = table if self._pending is None else pa.concat_tables([self._pending, table])
        whole = table.num_rows - table.num_rows % self.size
        if whole:
            self._writer.write_table(table.slice(0, whole), row_group_size=self.size)
        self._pending = table.slice(whole)

    def close(self) -> None:
        """Write what is pending and the file's footer."""
        if self._writer is None:
            return
        if self._pending is not None and (self._pending.num_rows or not self.rows):
            self._writer.write_table(self._pending, row_group_size=self.size)
        self._writer.close()


def snapshot_interval(sql_conn, store, settings, interval: Interval, targets_per_unit: int = 1,
                      batch_rows: int | None = None) -> dict:
    """Export the interval's aggregates once to blob and decide what gets scored.

    Returns the plan the rest of the run follows: ``interval`` (key), ``aggregates_revised_at`` (ISO text of
    the latest late-data revision, or None), ``targets`` (sorted: have data and a model), ``skipped``
    (target -> reason) and ``units`` (the targets in lists of ``targets_per_unit``). Raises
    ``PermanentPipelineError`` (retrying cannot fix it) naming every target and window when the aggregates
    are structurally malformed (duplicate, misaligned or straddling windows), before anything is written.

    The read streams (``sensor_db.reads.stream_interval_aggregates``, ``batch_rows`` rows a fetch, default
    ``sensor_db.frames.FETCH_ROWS``) into a local parquet file of ``SNAPSHOT_ROW_GROUP``-row groups, uploaded
    whole once every target passed its checks: memory is bounded by the fetch, not the interval.
    """
    import contextlib
    import tempfile
    from pathlib import Path

    from batch_scoring.sensor_db.checks import by_target
    from batch_scoring.sensor_db.reads import stream_interval_aggregates

    # Structural faults (duplicate, misaligned or straddling windows) mean the
    # upstream aggregation is broken: refuse the whole interval, before writing
    # anything, naming every target and window. Bad *values* (NaN/inf/NULL) are
    # per-target: scoring fails those targets naming their windows.
    problems: dict[str, list[str]] = {}
    with_data: set[str] = set()
    # before the read: a revision the loader commits while the read streams (SQLite in WAL mode, PostgreSQL)
    # is then newer than the one recorded, and the freshness check of a later run finds the interval stale;
    # read after, it would be recorded without being in the snapshot, and never found
    revised_at = interval_revised_at(sql_conn, interval.start, interval.end)
    with tempfile.TemporaryDirectory(prefix="snapshot-") as tmp:
        path = Path(tmp) / "snapshot.parquet"
        writer = RowGroupWriter(path, SNAPSHOT_ROW_GROUP)
        stream = contextlib.closing(stream_interval_aggregates(sql_conn, interval.start, interval.end, batch_rows=batch_rows))
        with stream as blocks:  # closed on error too: the read ends and the connection's state is restored at once
            for frame, found in blocks:
                problems.update(found)
                if problems:  # keep reading, to name every malformed target; nothing more to write
                    continue
                writer.write(frame)
                pairs = frame[["device_id", "sensor_id"]].drop_duplicates().itertuples(index=False)
                with_data.update(target_name(d, s) for d, s in pairs)
        writer.close()
        if problems:
            problems = by_target(problems)
            detail = "; ".join(f"{t}: {', '.join(p)}" for t, p in list(problems.items())[:20])
            more = f" (and {len(problems) - 20} more targets)" if len(problems) > 20 else ""
            raise PermanentPipelineError(  # retrying reads the same rows: fail at once
                f"interval {interval.key}: aggregates are malformed for {len(problems)} target(s), nothing was "
                f"snapshotted: {detail}{more}; fix the rows in sensor_aggregates (or re-aggregate) and clear the run"
            )
        store.upload_file(settings.aggregates_container, snapshot_blob(interval), path)
    with_model = set(model_targets(store, settings.models_container))
    targets = sorted(with_data & with_model)
    skipped = {t: "no model deployed" for t in sorted(with_data - with_model)}
    skipped.update({t: "no aggregates in the interval" for t in sorted(with_model - with_data)})
    log.info("interval %s: %d windows, %d targets to score, %d skipped; latest late-data revision %s",
             interval.key, writer.rows, len(targets), len(skipped), revised_at or "none")
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
