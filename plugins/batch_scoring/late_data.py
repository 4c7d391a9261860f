"""Scored intervals made stale by late data: found by the freshness check, marked beside their manifest.

A load that changes aggregate windows behind a target's watermark records them
in the SQL table ``aggregate_revisions`` with the time of the change
(``ingest_sim.loads.load_readings``). Each snapshot records the interval's
latest revision it saw (``aggregates_revised_at`` in the plan and the
manifest). An interval whose manifest exists is *stale* when a revision of one
of its windows is newer than that (or the manifest records none).

The freshness check of every run looks at the revisions of the last
``late_data_lookback_days`` and, for each stale interval, logs a warning with
the one backfill command that rescores them and writes the marker
``date=<day>/interval=<interval>/_stale.json`` next to the interval's manifest (deterministic
content: what changed, when, and the command). The collector removes the
marker when it rewrites the manifest from aggregates at least that recent.
"""
from __future__ import annotations

import datetime as dt
import json
import logging

from batch_scoring.scoring.layout import STALE_MARKER, Interval, manifest_blob, stale_marker_blob
from batch_scoring.scoring.times import utc_naive

log = logging.getLogger(__name__)

MAX_LISTED_WINDOWS = 200


class RevisionsUnavailable(RuntimeError):
    """The ``aggregate_revisions`` table cannot be read (e.g. a database set up without ``ingest_sim init-db``)."""


def _iso(value) -> str | None:
    return None if value is None else utc_naive(value).isoformat()


def read_revisions_or_none(sql_conn, **bounds):
    """``sensor_db.reads.read_revisions``; raises :class:`RevisionsUnavailable` when the table is missing."""
    import pyodbc

    from batch_scoring.sensor_db.reads import read_revisions

    try:
        return read_revisions(sql_conn, **bounds)
    except pyodbc.Error as exc:
        sql_conn.rollback()
        raise RevisionsUnavailable(" ".join(str(exc).split())[:300]) from exc


def interval_revised_at(sql_conn, start, end) -> str | None:
    """The interval's latest late-data revision as ISO text (None: none, or revisions are not tracked here)."""
    import pyodbc

    from batch_scoring.sensor_db.reads import interval_revised_at as revised

    try:
        return _iso(revised(sql_conn, start, end))
    except pyodbc.Error as exc:
        sql_conn.rollback()
        log.warning("late-data tracking is off: cannot read aggregate_revisions (%s); create the table with "
                    "`python -m batch_scoring.ingest_sim init-db`", " ".join(str(exc).split())[:200])
        return None


def find_stale_intervals(sql_conn, store, settings, dag_id: str, now: dt.datetime) -> list[dict]:
    """Scored intervals with revisions newer than their manifest's ``aggregates_revised_at``.

    Returns one dict per stale interval, sorted by interval: ``interval``,
    ``scored_with_revision`` (the manifest's), ``revised_at`` (latest now),
    ``windows`` ({target: [window starts, ISO]}, at most ``MAX_LISTED_WINDOWS``
    in all) and ``rescore`` (the backfill command for that interval alone).
    Looks back ``settings.late_data_lookback_days`` from ``now`` (naive UTC).
    Raises :class:`RevisionsUnavailable` when revisions are not tracked.
    """
    from batch_scoring.ingest_sim.late_data import backfill_command, interval_of
    from batch_scoring.scoring.config import target_name

    from batch_scoring.hooks.blob_storage import read_json

    since = now - dt.timedelta(days=settings.late_data_lookback_days)
    revisions = read_revisions_or_none(sql_conn, since=since)
    if revisions.empty:
        return []
    by_interval: dict[tuple[dt.datetime, dt.datetime], list] = {}
    current = None
    for row in revisions.itertuples(index=False):  # sorted by window_start
        ws = row.window_start.to_pydatetime()
        if current is None or not (current[0] <= ws < current[1]):
            current = interval_of(ws, settings.schedule)
        by_interval.setdefault(current, []).append(row)
    stale = []
    for (start, end), rows in sorted(by_interval.items()):
        # a run scores its interval after the interval's end: a revision before it cannot postdate the scoring
        rows = [r for r in rows if r.revised_at.to_pydatetime() >= end]
        if not rows:
            continue
        key = Interval(start, end).key
        manifest = read_json(store, settings.predictions_container, manifest_blob(key))
        if manifest is None:
            continue  # never scored (or not yet): nothing is stale
        recorded = manifest.get("aggregates_revised_at")
        newer = [r for r in rows if recorded is None or r.revised_at.to_pydatetime() > dt.datetime.fromisoformat(recorded)]
        if not newer:
            continue
        windows: dict[str, list[str]] = {}
        for r in newer[:MAX_LISTED_WINDOWS]:
            windows.setdefault(target_name(r.device_id, r.sensor_id), []).append(r.window_start.isoformat())
        stale.append({
            "interval": key,
            "scored_with_revision": recorded,
            "revised_at": max(r.revised_at for r in newer).isoformat(),
            "changed_windows": len(newer),
            "windows": windows,
            "rescore": backfill_command(dag_id, [(start, end)]),
        })
    return stale


def mark_stale(store, settings, stale: list[dict]) -> None:
    """Write each stale interval's ``_stale.json`` marker (skipped when it already says the same)."""
    for entry in stale:
        data = json.dumps(entry, indent=2, sort_keys=True).encode()
        name = stale_marker_blob(entry["interval"])
        try:
            if store.download_bytes(settings.predictions_container, name) == data:
                continue
        except Exception:  # absent: write it
            pass
        store.upload_bytes(settings.predictions_container, name, data)


def describe(stale: list[dict], dag_id: str) -> str:
    """One warning for the task log: which scored intervals are stale and the one command that rescores them."""
    from batch_scoring.ingest_sim.late_data import backfill_command

    keys = [s["interval"] for s in stale]
    intervals = [(Interval.from_key(k).start, Interval.from_key(k).end) for k in keys]
    shown = "; ".join(f"{s['interval']} ({s['changed_windows']} window(s) revised at {s['revised_at']})" for s in stale[:10])
    more = f" and {len(stale) - 10} more" if len(stale) > 10 else ""
    return (f"late data: {len(stale)} scored interval(s) hold predictions computed from older aggregates: {shown}{more}; "
            f"each is marked with {STALE_MARKER} beside its manifest. Rescore them with: "
            f"{backfill_command(dag_id, intervals)}")


def clear_marker(store, settings, interval_key: str, aggregates_revised_at: str | None) -> None:
    """Remove the interval's stale marker once its predictions were computed from aggregates at least that recent."""
    from azure.core.exceptions import ResourceNotFoundError

    name = stale_marker_blob(interval_key)
    try:
        marker = json.loads(store.download_bytes(settings.predictions_container, name))
    except (ResourceNotFoundError, ValueError):
        return
    revised = marker.get("revised_at") if isinstance(marker, dict) else None
    if aggregates_revised_at is not None and revised is not None and \
            dt.datetime.fromisoformat(revised) <= dt.datetime.fromisoformat(aggregates_revised_at):
        store.delete(settings.predictions_container, name)
