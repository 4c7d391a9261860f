"""sensor_db.frames: the vectorised conversion of fetched rows gives what the per-value conversion gave.

The oracle is the per-value conversion it replaced, kept here only for that comparison.
"""
from __future__ import annotations

import datetime as dt
import decimal

import pandas as pd
import pytest

from batch_scoring.sensor_db import frames, schema


def _old_typed_frame(rows, description, types, columns) -> pd.DataFrame:
    """The per-value conversion chunks_frame replaced (the oracle)."""
    names = [d[0].lower() for d in description]
    raw = list(zip(*rows)) if rows else [() for _ in names]
    data = {}
    for name, values in zip(names, raw):
        logical = types.get(name)
        if logical == "ts":
            data[name] = pd.Series([schema.to_datetime(v) for v in values], dtype="datetime64[us]")
        elif logical == "float":
            data[name] = pd.Series([schema.to_float(v) for v in values], dtype="float64")
        elif logical == "int":
            data[name] = pd.Series([int(v) for v in values], dtype="int64")
        else:
            data[name] = pd.Series([None if v is None else str(v) for v in values], dtype="str")
    return pd.DataFrame(data, columns=list(columns))


TYPES = {"id": "id", "ts": "ts", "f": "float", "n": "int"}
DESCRIPTION = [(name,) for name in TYPES]
D = dt.datetime(2024, 5, 6, 7, 8, 9, 123000)


@pytest.mark.parametrize("rows", [
    pytest.param([("a", D, "0.30000000000000004", 3), ("b", None, None, 4), ("c", D, "-0", 5),
                  ("d", D, "Inf", 6), ("e", D, "4.9406564584124654e-324", 7)], id="sqlite-text-floats"),
    pytest.param([("a", D, 0.1, 3), ("b", D, None, 4), (None, D, float("nan"), 5)], id="native-floats"),
    pytest.param([("a", D, decimal.Decimal("0.1"), 3), ("b", D, decimal.Decimal("1E+400"), 4)], id="decimals"),
    pytest.param([("a", D, " 1.5 ", 3), ("b", D, "1_000", 4), ("c", D, "2.5", 5)], id="text-only-float-parses"),
    pytest.param([("a", "2024-05-06 07:08:09.123", "1", 3), ("b", " 2024-05-06T07:08:09 ", "2", 4),
                  ("c", dt.date(2024, 5, 6), "3", 5), ("d", None, "4", 6)], id="text-and-date-timestamps"),
    pytest.param([(1, D, "1", "7"), (2.5, D, "2", decimal.Decimal("8")), ("x", D, "3", True)], id="odd-ids-and-ints"),
    pytest.param([], id="empty"),
])
def test_typed_frame_matches_the_per_value_conversion(rows):
    got = frames.chunks_frame([rows], DESCRIPTION, TYPES, list(TYPES))
    pd.testing.assert_frame_equal(got, _old_typed_frame(rows, DESCRIPTION, TYPES, list(TYPES)), check_exact=True)
    assert got.dtypes.astype(str).tolist() == ["str", "datetime64[us]", "float64", "int64"]


@pytest.mark.parametrize("rows, error", [
    ([("a", D, "1", None)], TypeError),  # NULL count
    ([("a", D, "x", 1)], ValueError),  # unparseable float
    ([("a", "not a time", "1", 1)], ValueError),
    ([("a", dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), "1", 1)], ValueError),  # aware timestamp
])
def test_typed_frame_fails_like_the_per_value_conversion(rows, error):
    with pytest.raises(error):
        _old_typed_frame(rows, DESCRIPTION, TYPES, list(TYPES))
    with pytest.raises(error):
        frames.chunks_frame([rows], DESCRIPTION, TYPES, list(TYPES))


@pytest.mark.parametrize("batch_rows", [1, 5, 100_000])
def test_select_batches_streams_the_rows_select_reads(conn, batch_rows):
    """Same rows, types and order as one select; no frame above batch_rows; no rows: one empty typed frame."""
    from batch_scoring.ingest_sim import loads
    from tests.sensor_db.test_reads import _grid

    args = (conn, schema.AGGREGATES, list(schema.column_types(schema.AGGREGATES)), "device_id <> ?", ["d3"],
            "device_id, sensor_id, window_start")
    empty = list(frames.select_batches(*args, batch_rows=batch_rows))
    assert len(empty) == 1 and empty[0].empty
    pd.testing.assert_frame_equal(empty[0], frames.select(*args), check_exact=True)
    loads.upsert_aggregates(conn, _grid(hours=1))
    whole = frames.select(*args)
    batches = list(frames.select_batches(*args, batch_rows=batch_rows))
    assert len(whole) == 5 * 12 and len(batches) == -(-len(whole) // batch_rows)
    assert all(len(b) <= batch_rows and b.index[0] == 0 for b in batches)
    pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), whole, check_exact=True)
    with pytest.raises(ValueError, match="batch_rows must be at least 1, got -1"):
        next(frames.select_batches(*args, batch_rows=-1))
