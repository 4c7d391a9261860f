"""sensor_db.reads on both engines: the snapshot's one read, boundaries, dtypes, watermarks, locking.

The problem oracle below is the per-target loop the vectorised checks
replaced, kept here only to prove the new code gives the same problem messages.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from batch_scoring.ingest_sim import loads
from batch_scoring.scoring.config import AGGREGATE_COLUMNS, target_name
from batch_scoring.sensor_db import checks, frames, reads, schema
from tests.fixtures.sensor_data import readings

T0 = dt.datetime(2024, 1, 1)
S, E = T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=2)
MIN = dt.timedelta(minutes=1)
TARGETS = [("d1", "s1"), ("d1", "s2"), ("d2", "s1"), ("d2", "s2"), ("d3", "s1"), ("d3", "s2"), ("D9", "s1")]


def _execute(conn, sql, *params):
    cur = conn.cursor()
    cur.execute(sql, *params)
    cur.close()
    conn.commit()


def _grid(targets=TARGETS, hours=4, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    starts = pd.date_range(T0, T0 + dt.timedelta(hours=hours), freq="5min", inclusive="left")
    frames = []
    for d, s in targets:
        v = rng.normal(10, 1, (len(starts), 4))
        frames.append(pd.DataFrame({
            "device_id": d, "sensor_id": s, "window_start": starts, "window_end": starts + pd.Timedelta(minutes=5),
            "value_mean": v[:, 0] + 0.1 + 0.2, "value_min": v[:, 1] - 3, "value_max": v[:, 2] + 3,
            "value_std": np.abs(v[:, 3]) / 3, "n_readings": rng.integers(1, 40, len(starts)),
        }))
    return pd.concat(frames, ignore_index=True)[list(AGGREGATE_COLUMNS)]


def _insert(conn, d, s, start, end, mean=1.0):
    _execute(conn, f"INSERT INTO {schema.AGGREGATES} ({', '.join(AGGREGATE_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
             d, s, start, end, mean, mean - 1, mean + 1, 0.5, 7)


def _drop_primary_key(conn):  # duplicate windows are only possible without it (as in tests/reliability)
    for sql in (f"CREATE TABLE agg_nopk AS SELECT * FROM {schema.AGGREGATES}", f"DROP TABLE {schema.AGGREGATES}",
                f"ALTER TABLE agg_nopk RENAME TO {schema.AGGREGATES}"):
        _execute(conn, sql)


def _malformed(conn):
    """Every problem kind, NULL values, and windows inside [S, E) that do not touch it."""
    loads.upsert_aggregates(conn, _grid())
    _drop_primary_key(conn)
    # d1/s1: 7 windows loaded twice (exact copies)
    _execute(conn, f"INSERT INTO {schema.AGGREGATES} SELECT * FROM {schema.AGGREGATES} WHERE device_id = 'd1' AND "
                   "sensor_id = 's1' AND window_start >= ? AND window_start < ?", S + 10 * MIN, S + 45 * MIN)
    # d1/s2: 6 windows 7 minutes long
    for k in range(6):
        w = S + (20 + 5 * k) * MIN
        _execute(conn, f"UPDATE {schema.AGGREGATES} SET window_end = ? WHERE device_id = 'd1' AND sensor_id = 's2' "
                       "AND window_start = ?", w + 7 * MIN, w)
    # d2/s1 and D9/s1: off the grid
    _insert(conn, "d2", "s1", S + 2.5 * MIN, S + 7.5 * MIN)
    _insert(conn, "D9", "s1", S + 31 * MIN, S + 36 * MIN)
    # d2/s2: straddling both bounds, one also too long
    _insert(conn, "d2", "s2", S - 2.5 * MIN, S + 2.5 * MIN)
    _execute(conn, f"UPDATE {schema.AGGREGATES} SET window_end = ? WHERE device_id = 'd2' AND sensor_id = 's2' "
                   "AND window_start = ?", E + 5 * MIN, E - 5 * MIN)
    # d3/s1: NULL values (not structural: carried through as NaN)
    _execute(conn, f"UPDATE {schema.AGGREGATES} SET value_mean = NULL, value_std = NULL WHERE device_id = 'd3' "
                   "AND sensor_id = 's1' AND window_start >= ? AND window_start < ?", S + 15 * MIN, S + 30 * MIN)
    _execute(conn, f"UPDATE {schema.AGGREGATES} SET value_min = NULL WHERE device_id = 'd3' AND window_start = ?", S)
    # d3/s2: zero-length windows at S and at E: inside [S, E) for read_aggregates, touching nothing
    _insert(conn, "d3", "s2", S, S)
    _insert(conn, "d3", "s2", E, E)


def _old_problems(conn, start, end, window_minutes=5) -> dict[str, list[str]]:
    """The per-target loop the interval problems used to come from (the oracle)."""
    s, e = frames.interval(start, end)
    frame = frames.select(conn, schema.AGGREGATES, AGGREGATE_COLUMNS, "window_start < ? AND window_end > ?", [e, s],
                          "device_id, sensor_id, window_start")
    if frame.empty:
        return {}
    step = pd.Timedelta(minutes=window_minutes)
    problems: dict[str, list[str]] = {}
    for (d, sen), g in frame.groupby(["device_id", "sensor_id"], sort=True):
        found = []
        starts = pd.to_datetime(g["window_start"])
        ends = pd.to_datetime(g["window_end"])
        dup = starts[starts.duplicated(keep=False)].drop_duplicates()
        if len(dup):
            found.append(f"duplicate windows starting {', '.join(f'{w:%Y-%m-%d %H:%M}' for w in dup[:5])}"
                         + (f" (+{len(dup) - 5})" if len(dup) > 5 else ""))
        bad_len = starts[(ends - starts) != step]
        if len(bad_len):
            found.append(f"{len(bad_len)} window(s) not {window_minutes} minutes long, starting "
                         + ", ".join(f"{w:%Y-%m-%d %H:%M:%S}" for w in bad_len[:5]))
        off_grid = starts[starts != starts.dt.floor(step)]
        if len(off_grid):
            found.append(f"{len(off_grid)} window(s) off the {window_minutes}-minute grid, starting "
                         + ", ".join(f"{w:%Y-%m-%d %H:%M:%S}" for w in off_grid[:5]))
        outside = starts[(starts < pd.Timestamp(s)) | (ends > pd.Timestamp(e))]
        if len(outside):
            found.append(f"{len(outside)} window(s) straddling the interval's bounds, starting "
                         + ", ".join(f"{w:%Y-%m-%d %H:%M:%S}" for w in outside[:5]))
        if found:
            problems[target_name(d, sen)] = found
    return problems


def _assert_same_as_separate_reads(conn, start, end, window_minutes=5):
    frame, problems = reads.read_interval_aggregates(conn, start, end, window_minutes)
    pd.testing.assert_frame_equal(frame, reads.read_aggregates(conn, start, end), check_exact=True)
    expected = _old_problems(conn, start, end, window_minutes)
    assert list(problems.items()) == list(expected.items())
    return frame, problems


@pytest.mark.parametrize("fetch_rows", [100_000, 7])  # 7: many fetch batches joined
def test_read_interval_aggregates_equals_the_separate_reads(conn, monkeypatch, fetch_rows):
    monkeypatch.setattr(frames, "FETCH_ROWS", fetch_rows)
    _malformed(conn)
    frame, problems = _assert_same_as_separate_reads(conn, S, E)
    assert problems == {
        "D9/s1": ["1 window(s) off the 5-minute grid, starting 2024-01-01 01:31:00"],
        "d1/s1": ["duplicate windows starting 2024-01-01 01:10, 2024-01-01 01:15, 2024-01-01 01:20, "
                  "2024-01-01 01:25, 2024-01-01 01:30 (+2)"],
        "d1/s2": ["6 window(s) not 5 minutes long, starting 2024-01-01 01:20:00, 2024-01-01 01:25:00, "
                  "2024-01-01 01:30:00, 2024-01-01 01:35:00, 2024-01-01 01:40:00"],
        "d2/s1": ["1 window(s) off the 5-minute grid, starting 2024-01-01 01:02:30"],
        "d2/s2": ["1 window(s) not 5 minutes long, starting 2024-01-01 01:55:00",
                  "1 window(s) off the 5-minute grid, starting 2024-01-01 00:57:30",
                  "2 window(s) straddling the interval's bounds, starting 2024-01-01 00:57:30, 2024-01-01 01:55:00"],
    }
    # the frame: windows inside [S, E) only (the zero-length ones at S and E too), NULLs as NaN
    assert len(frame) == 7 * 12 + 7 - 1 + 1 + 1 + 2  # grid + copies - d2/s2's stretched window + off-grid + zero-length
    assert frame["window_start"].min() == pd.Timestamp(S) and frame["window_end"].max() == pd.Timestamp(E)
    nulls = frame[(frame.device_id == "d3") & (frame.sensor_id == "s1")]
    assert nulls["value_mean"].isna().sum() == 3 and nulls["value_std"].isna().sum() == 3
    assert frame["value_min"].isna().sum() == 2
    assert frame.dtypes.astype(str).tolist() == ["str", "str", "datetime64[us]", "datetime64[us]",
                                                 "float64", "float64", "float64", "float64", "int64"]
    # other bounds and grids, including a window size nothing matches and an interval off the grid
    _assert_same_as_separate_reads(conn, T0, T0 + dt.timedelta(hours=4))
    _assert_same_as_separate_reads(conn, S + 2.5 * MIN, E - 2.5 * MIN)
    _assert_same_as_separate_reads(conn, S, E, window_minutes=10)


def test_read_interval_aggregates_clean_and_empty(conn):
    frame, problems = _assert_same_as_separate_reads(conn, S, E)
    assert frame.empty and list(frame.columns) == list(AGGREGATE_COLUMNS) and problems == {}
    loads.upsert_aggregates(conn, _grid())
    frame, problems = _assert_same_as_separate_reads(conn, S, E)
    assert len(frame) == len(TARGETS) * 12 and problems == {}
    expected = _grid().query("window_start >= @S and window_end <= @E").sort_values(
        ["device_id", "sensor_id", "window_start"]).reset_index(drop=True)
    assert frame[["value_mean", "value_min", "value_max", "value_std"]].equals(
        expected[["value_mean", "value_min", "value_max", "value_std"]])  # exact doubles on both engines


def test_sqlite_packed_floats_read_exactly(sqlite_conn_str, monkeypatch):
    """SQLite fetches the four FLOAT columns as one text cell: same doubles as one cell each."""
    conn = schema.connect(sqlite_conn_str)
    schema.create_schema(conn)
    try:
        aggs = _grid(hours=1).head(12).copy()
        specials = [0.1 + 0.2, -0.0, 5e-324, 1.7976931348623157e308, float("inf"), float("-inf"), 1e-300, np.nan,
                    123456789.12345679, -2.5, 1e22, 0.0]
        aggs["value_min"] = specials
        aggs["value_max"] = specials[::-1]
        aggs.loc[3, ["value_mean", "value_min", "value_max", "value_std"]] = np.nan
        loads.upsert_aggregates(conn, aggs)
        packed = reads.read_aggregates(conn, T0, T0 + dt.timedelta(hours=1))
        monkeypatch.setattr(frames, "PACK_SQLITE_FLOATS", False)
        plain = reads.read_aggregates(conn, T0, T0 + dt.timedelta(hours=1))
        pd.testing.assert_frame_equal(packed, plain, check_exact=True)
        got = packed["value_min"].to_numpy()
        want = aggs.sort_values("window_start")["value_min"].to_numpy()
        assert np.array_equal(got, want, equal_nan=True)
        assert got[0] == 0.1 + 0.2 and got[2] == 5e-324 and got[4] == np.inf
    finally:
        conn.close()


# --------------------------------------------------------------------------- reads around the loader
def test_read_aggregates_boundaries_and_dtypes(conn):
    loads.load_readings(conn, readings(), aggregate=False)
    loads.aggregate_range(conn, T0, T0 + dt.timedelta(hours=1))
    # windows fully inside [00:10, 00:30): 00:10, 00:15, 00:20, 00:25
    got = reads.read_aggregates(conn, T0 + dt.timedelta(minutes=10), T0 + dt.timedelta(minutes=30))
    assert list(got.columns) == list(AGGREGATE_COLUMNS)
    assert sorted(set(got["window_start"].dt.minute)) == [10, 15, 20, 25]
    assert len(got) == 3 * 4
    # a window straddling the interval edge is excluded
    straddle = reads.read_aggregates(conn, T0 + dt.timedelta(minutes=12), T0 + dt.timedelta(minutes=30))
    assert sorted(set(straddle["window_start"].dt.minute)) == [15, 20, 25]
    assert got.dtypes.astype(str).to_dict() == {
        "device_id": "str", "sensor_id": "str",
        "window_start": "datetime64[us]", "window_end": "datetime64[us]",
        "value_mean": "float64", "value_min": "float64", "value_max": "float64", "value_std": "float64",
        "n_readings": "int64",
    }
    assert got[["device_id", "sensor_id", "window_start"]].equals(
        got.sort_values(["device_id", "sensor_id", "window_start"])[["device_id", "sensor_id", "window_start"]]
    )
    only = reads.read_aggregates(conn, T0, T0 + dt.timedelta(hours=1), targets=[("d2", "s1"), "d1/s2"])
    assert sorted(set(zip(only.device_id, only.sensor_id))) == [("d1", "s2"), ("d2", "s1")]
    assert reads.read_aggregates(conn, T0, T0 + dt.timedelta(hours=1), targets=[]).empty
    # timezone-aware bounds are converted to UTC
    aware = reads.read_aggregates(conn, "2024-01-01T01:10:00+01:00", "2024-01-01T01:30:00+01:00")
    pd.testing.assert_frame_equal(aware, got)


def test_empty_reads_have_the_schema(conn):
    got = reads.read_aggregates(conn, T0, T0 + dt.timedelta(hours=1))
    assert got.empty and list(got.columns) == list(AGGREGATE_COLUMNS)
    assert str(got["window_start"].dtype) == "datetime64[us]" and got["n_readings"].dtype == np.int64
    assert loads.aggregate_range(conn, T0, T0 + dt.timedelta(hours=1)) == 0
    with pytest.raises(ValueError, match="empty interval"):
        reads.read_aggregates(conn, T0, T0)


def test_stale_targets(conn):
    loads.load_readings(conn, readings(minutes=60, targets=(("d1", "s1"),)), aggregate=False)
    loads.load_readings(conn, readings(minutes=30, targets=(("d1", "s2"),)), aggregate=False)
    loads.aggregate_range(conn, T0, T0 + dt.timedelta(hours=1))
    marks = reads.target_watermarks(conn, ["d1/s1", "d1/s2", "d9/s9"])
    assert marks == {"d1/s1": T0 + dt.timedelta(hours=1), "d1/s2": T0 + dt.timedelta(minutes=30), "d9/s9": None}
    assert reads.target_watermarks(conn) == {"d1/s1": T0 + dt.timedelta(hours=1), "d1/s2": T0 + dt.timedelta(minutes=30)}
    stale = reads.stale_targets(conn, T0, T0 + dt.timedelta(hours=1), ["d1/s1", "d1/s2", "d9/s9"])
    assert stale == {"d1/s2": T0 + dt.timedelta(minutes=30), "d9/s9": None}
    assert reads.stale_targets(conn, T0, T0 + dt.timedelta(minutes=30), ["d1/s1", "d1/s2"]) == {}


def test_reads_do_not_block_another_writer(conn, sql_conn_str):
    """A long-lived reader (the DAG's freshness sensor) must not lock out the loader."""
    import time

    loads.load_readings(conn, readings(minutes=10), aggregate=False)
    reads.read_readings(conn, T0, T0 + dt.timedelta(hours=1))
    reads.target_watermarks(conn)
    writer = schema.connect(sql_conn_str)
    try:
        t0 = time.perf_counter()
        assert loads.aggregate_range(writer, T0, T0 + dt.timedelta(minutes=10)) == 6
        assert time.perf_counter() - t0 < 5
    finally:
        writer.close()
    assert len(reads.read_aggregates(conn, T0, T0 + dt.timedelta(minutes=10))) == 6


@pytest.mark.parametrize("batch_rows", [1, 7, 13, 100_000])
def test_stream_interval_aggregates_yields_whole_targets_as_one_read_does(conn, batch_rows):
    """Every target checked whole in one block however the fetches split it; blocks join to the one-batch read."""
    _malformed(conn)
    whole, problems = reads.read_interval_aggregates(conn, S, E)  # FETCH_ROWS: one fetch
    blocks = list(reads.stream_interval_aggregates(conn, S, E, batch_rows=batch_rows))
    named, found = [], {}
    for frame, block_problems in blocks:
        named += sorted({target_name(d, s) for d, s in frame[["device_id", "sensor_id"]].itertuples(index=False)})
        assert not set(block_problems) & set(found)  # a target's problems come once, from one block
        found.update(block_problems)
        assert list(frame.index) == list(range(len(frame)))
    assert len(named) == len(set(named))  # no target split across blocks
    assert 2 <= len(blocks) <= len(TARGETS) and (batch_rows > 1 or len(blocks) == len(TARGETS))  # last target apart
    pd.testing.assert_frame_equal(pd.concat([f for f, _ in blocks], ignore_index=True), whole, check_exact=True)
    assert list(checks.by_target(found).items()) == list(problems.items()) and len(problems) == 5


def test_a_streamed_read_neither_blocks_a_writer_nor_sees_its_rows(conn, sql_conn_str):
    """The snapshot's stream stays open across batches: the loader still commits at once (SQLite in WAL mode),
    and the stream goes on reading the state it started from."""
    import time

    loads.upsert_aggregates(conn, _grid(hours=1))
    stream = reads.stream_interval_aggregates(conn, T0, T0 + dt.timedelta(hours=2), batch_rows=1)
    first, _ = next(stream)
    writer = schema.connect(sql_conn_str)
    try:
        t0 = time.perf_counter()
        grid = _grid(hours=2)
        later = grid[grid["window_start"] >= T0 + dt.timedelta(hours=1)]
        assert loads.upsert_aggregates(writer, later) == len(later) > 0
        assert time.perf_counter() - t0 < 10  # the busy timeout is 30 s: a blocked writer waits that long, then fails
    finally:
        writer.close()
    rest = [frame for frame, _ in stream]
    assert sum(map(len, [first, *rest])) == len(TARGETS) * 12  # one hour per target: the rows when the read began
    assert len(reads.read_aggregates(conn, T0, T0 + dt.timedelta(hours=2))) == len(TARGETS) * 24


def test_stale_targets_reads_from_the_interval_start_and_names_how_far_stale_data_reaches(conn):
    # history before the interval: d1/s1 reaches its end, d1/s2 stopped a day earlier, d2/s1 stops inside it
    loads.load_readings(conn, readings(minutes=60, targets=(("d1", "s1"), ("d1", "s2"), ("d2", "s1"))), aggregate=False)
    loads.load_readings(conn, readings(minutes=60, targets=(("d1", "s1"),), start=T0 + dt.timedelta(days=1)),
                        aggregate=False)
    loads.load_readings(conn, readings(minutes=25, targets=(("d2", "s1"),), start=T0 + dt.timedelta(days=1)),
                        aggregate=False)
    loads.aggregate_range(conn, T0, T0 + dt.timedelta(days=1, hours=1))
    start = T0 + dt.timedelta(days=1)
    expected = ["d1/s1", "d1/s2", "d2/s1", "d9/s9"]
    assert reads.target_watermarks(conn, expected, since=start) == {
        "d1/s1": start + dt.timedelta(hours=1), "d1/s2": None, "d2/s1": start + dt.timedelta(minutes=25), "d9/s9": None}
    assert reads.stale_targets(conn, start, start + dt.timedelta(hours=1), expected) == {
        "d1/s2": T0 + dt.timedelta(hours=1),  # from before the interval: how far its data reaches
        "d2/s1": start + dt.timedelta(minutes=25), "d9/s9": None}
    assert reads.stale_targets(conn, start, start + dt.timedelta(minutes=25), ["d1/s1", "d2/s1"]) == {}


def test_an_interval_shorter_than_a_window_is_fresh_when_a_window_covers_its_end(conn):
    loads.load_readings(conn, readings(minutes=5, targets=(("d1", "s1"),)), aggregate=False)
    loads.aggregate_range(conn, T0, T0 + dt.timedelta(minutes=5))  # one window, [T0, T0 + 5 min)
    start = T0 + dt.timedelta(minutes=1)  # the window began before the interval
    assert reads.stale_targets(conn, start, start + dt.timedelta(minutes=2), ["d1/s1"]) == {}
    assert reads.stale_targets(conn, start, start + dt.timedelta(minutes=5), ["d1/s1"]) == {
        "d1/s1": T0 + dt.timedelta(minutes=5)}
