"""Late data against a long history: the watermark lookups read only the rows near the load, with the
decisions of the whole history (``ingest_sim.revisions.load_watermarks``).

Real SQLite and PostgreSQL through pyodbc (``conn`` runs a test on both engines); outcomes are the late
windows returned and recorded in ``aggregate_revisions``.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from batch_scoring.ingest_sim import loads, revisions
from batch_scoring.scoring.config import AGGREGATE_COLUMNS
from batch_scoring.sensor_db import reads, schema

T0 = dt.datetime(2024, 1, 1)
STEP = pd.Timedelta(minutes=5)
LATER = T0 + dt.timedelta(days=30)  # the loads below, a month after the oldest history
REVISED = dt.datetime(2024, 3, 1)   # long after every window: a change to a last window counts as late


def _windows(target: str, start: dt.datetime, n: int, mean: float = 1.0, minutes: int = 5) -> pd.DataFrame:
    """``n`` consecutive aggregate windows of ``target`` from ``start``, ``minutes`` long."""
    d, s = target.split("/")
    starts = pd.date_range(start, periods=n, freq=f"{minutes}min").as_unit("us")
    return pd.DataFrame({"device_id": d, "sensor_id": s, "window_start": starts,
                         "window_end": starts + pd.Timedelta(minutes=minutes), "value_mean": mean, "value_min": 0.0,
                         "value_max": 2.0, "value_std": 0.5, "n_readings": 30})[list(AGGREGATE_COLUMNS)]


def _recorded(conn) -> list[tuple[str, pd.Timestamp]]:
    rev = reads.read_revisions(conn)
    return [(f"{d}/{s}", w) for d, s, w in zip(rev["device_id"], rev["sensor_id"], rev["window_start"])]


def _history(conn) -> None:
    """d1/s1: a day a month before the loads, then an hour at LATER; d1/s2: only the old day."""
    old = pd.concat([_windows("d1/s1", T0, 288), _windows("d1/s2", T0, 288)], ignore_index=True)
    loads.upsert_aggregates(conn, old, revised_at=REVISED)
    loads.upsert_aggregates(conn, _windows("d1/s1", LATER, 12), revised_at=REVISED)
    assert _recorded(conn) == []


def test_a_late_window_inside_the_loaded_span_is_late_however_old_the_history(conn):
    _history(conn)
    changed = _windows("d1/s1", LATER + dt.timedelta(minutes=20), 1, mean=9.0)
    gap = _windows("d1/s1", LATER - dt.timedelta(days=1), 1)  # fills a hole behind the watermark, a day back
    assert loads.upsert_aggregates(conn, pd.concat([gap, changed], ignore_index=True), revised_at=REVISED) == 2
    assert _recorded(conn) == [("d1/s1", pd.Timestamp(LATER - dt.timedelta(days=1))),
                               ("d1/s1", pd.Timestamp(LATER + dt.timedelta(minutes=20)))]
    # the same decision on the aggregating path (load_readings, aggregate_range)
    _, late = revisions.changed_aggregates(conn, _windows("d1/s1", LATER + dt.timedelta(minutes=30), 2, mean=7.0),
                                           STEP, revised_at=REVISED)
    assert late["window_start"].tolist() == [pd.Timestamp(LATER + dt.timedelta(minutes=30)),
                                             pd.Timestamp(LATER + dt.timedelta(minutes=35))]


def test_a_load_ahead_of_every_watermark_records_nothing_late(conn):
    _history(conn)
    ahead = pd.concat([_windows("d1/s1", LATER + dt.timedelta(hours=1), 12),  # right after its last window
                       _windows("d1/s2", LATER, 12),                          # a month after its last window
                       _windows("d9/s9", LATER, 12)], ignore_index=True)      # a new target
    changed, late = revisions.changed_aggregates(conn, ahead, STEP, revised_at=REVISED)
    assert len(changed) == 36 and late.empty
    assert loads.upsert_aggregates(conn, ahead, revised_at=REVISED) == 36
    assert _recorded(conn) == []


def test_the_stored_last_window_changed_a_window_length_after_its_end_is_late(conn):
    _history(conn)
    last = LATER + dt.timedelta(minutes=55)  # d1/s1's last window, [00:55, 01:00) on LATER's day
    end = last + dt.timedelta(minutes=5)
    first = _windows("d1/s1", last, 3, mean=4.0)  # the load starts exactly at it, and goes on past it
    _, late = revisions.changed_aggregates(conn, first, STEP, revised_at=end + dt.timedelta(minutes=4))
    assert late.empty  # within a window length: a stream completing its last window
    loads.upsert_aggregates(conn, first, revised_at=end + dt.timedelta(minutes=5, seconds=1))
    assert _recorded(conn) == [("d1/s1", pd.Timestamp(last))]


def test_a_stored_window_over_twice_the_loads_is_not_seen_when_it_starts_a_window_before_the_load(conn):
    """The documented assumption (stored windows at most twice ``step`` long): an hour-long stored window that
    starts more than a load window before the load is not its target's watermark for it, so the load is on
    time (over all rows it would be late)."""
    loads.upsert_aggregates(conn, _windows("d1/s1", T0, 1, minutes=60), revised_at=REVISED)  # [00:00, 01:00)
    inside = _windows("d1/s1", T0 + dt.timedelta(minutes=30), 1)  # [00:30, 00:35): behind 01:00 over all rows
    assert revisions.changed_aggregates(conn, inside, STEP, revised_at=REVISED)[1].empty
    loads.upsert_aggregates(conn, inside, revised_at=REVISED)
    assert _recorded(conn) == []
    # one starting a window before the load is seen: [00:40, 01:40) makes [00:45, 00:50) late
    loads.upsert_aggregates(conn, _windows("d1/s2", T0 + dt.timedelta(minutes=40), 1, minutes=60), revised_at=REVISED)
    loads.upsert_aggregates(conn, _windows("d1/s2", T0 + dt.timedelta(minutes=45), 1), revised_at=REVISED)
    assert _recorded(conn) == [("d1/s2", pd.Timestamp(T0 + dt.timedelta(minutes=45)))]


class _Recording:
    """A connection whose cursors record every statement and its parameters (reads only)."""

    def __init__(self, conn, log):
        self._conn, self._log = conn, log

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def cursor(self):
        return _RecordingCursor(self._conn.cursor(), self._log)


class _RecordingCursor:
    def __init__(self, cur, log):
        self._cur, self._log = cur, log

    def __getattr__(self, name):
        return getattr(self._cur, name)

    def execute(self, sql, *params):
        self._log.append((sql, list(params[0]) if len(params) == 1 and isinstance(params[0], (list, tuple))
                          else list(params)))
        return self._cur.execute(sql, *params)


def test_the_watermark_queries_read_from_one_window_before_the_load_on(conn):
    """Over 500 targets the lookup has no target filter: without its bound it groups the whole table."""
    targets = [f"d{i}/s1" for i in range(501)]
    loads.upsert_aggregates(conn, pd.concat([_windows(t, T0, 12) for t in targets], ignore_index=True),
                            revised_at=REVISED)
    load = pd.concat([_windows(t, T0 + dt.timedelta(minutes=30), 3, mean=2.0) for t in targets], ignore_index=True)
    log: list = []
    late = revisions.late_upserts(_Recording(conn, log), load, REVISED)
    assert len(late) == 3 * 501  # every target behind: late_upserts then reads them back through changed_aggregates
    marks = [(sql, params) for sql, params in log if "MAX(window_end)" in sql and schema.AGGREGATES in sql]
    assert len(marks) == 2
    for sql, params in marks:
        assert "window_start >= ?" in sql and "device_id = ?" not in sql
        assert params == [T0 + dt.timedelta(minutes=25)]


@pytest.mark.parametrize("seed", range(4))
def test_the_bounded_lookups_decide_as_the_whole_history_does(sqlite_conn_str, monkeypatch, seed):
    """Random step-long histories with gaps over days and random loads (changes, gaps filled, windows ahead,
    revised soon or long after): the same late windows as with every target's watermark over all its rows."""
    rng = np.random.default_rng(seed)
    conn = schema.connect(sqlite_conn_str)
    schema.create_schema(conn)
    try:
        targets = [f"d{i}/s{j}" for i in range(4) for j in range(3)]
        stored = []
        for t in targets:
            for _ in range(int(rng.integers(0, 4))):
                start = T0 + dt.timedelta(minutes=5 * int(rng.integers(0, 3 * 288)))
                stored.append(_windows(t, start, int(rng.integers(1, 30))))
        if stored:
            loads.upsert_aggregates(conn, pd.concat(stored).drop_duplicates(list(AGGREGATE_COLUMNS[:3])),
                                    revised_at=REVISED)
        whole = revisions.target_watermarks

        def decide(load, revised_at):
            got = []
            for lookup in (whole, lambda c, ts, since=None: whole(c, ts)):  # bounded, then over all rows
                monkeypatch.setattr(revisions, "target_watermarks", lookup)
                got.append((revisions.late_upserts(conn, load, revised_at),
                            revisions.changed_aggregates(conn, load, STEP, revised_at=revised_at)[1]))
            monkeypatch.setattr(revisions, "target_watermarks", whole)
            return got

        late = 0
        def start(target):  # mostly around the target's last window, else anywhere in four days
            mark = whole(conn, [target])[target]
            if mark is None or rng.random() < 0.3:
                return T0 + dt.timedelta(minutes=5 * int(rng.integers(0, 4 * 288)))
            return mark + dt.timedelta(minutes=5 * int(rng.integers(-4, 2)))

        for _ in range(20):
            parts = [_windows(t, start(t), int(rng.integers(1, 6)), mean=float(rng.integers(1, 3)))
                     for t in rng.choice(targets, 3, replace=False)]
            load = pd.concat(parts, ignore_index=True).drop_duplicates(list(AGGREGATE_COLUMNS[:3]), ignore_index=True)
            revised_at = load["window_end"].min() + pd.Timedelta(minutes=int(rng.integers(0, 15)))
            (bounded_upsert, bounded_agg), (full_upsert, full_agg) = decide(load, revised_at)
            pd.testing.assert_frame_equal(bounded_upsert, full_upsert)
            pd.testing.assert_frame_equal(bounded_agg, full_agg)
            late += len(full_upsert) + len(full_agg)
            loads.upsert_aggregates(conn, load, revised_at=revised_at)
        assert late > 0  # the loads did land behind watermarks
    finally:
        conn.close()
