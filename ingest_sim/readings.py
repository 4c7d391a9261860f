"""The key of a reading, ``(ts, device_id, sensor_id)``, and what to do with two readings sharing it.

A reading is identified by its timestamp (naive UTC, stored to the millisecond:
see ``sensor_db.schema.stored_ts_series``), device and sensor. Sources that deliver at least once
(IoT hubs, retried uploads, re-sent files) repeat readings, so:

* an *exact duplicate* (same key, same value) is the same reading delivered
  twice: it is stored once;
* the same key with *another value* is a contradiction no loader can resolve
  by itself: the whole batch is refused, naming both rows.

One home for that rule: ``ingest_sim.csv_loader`` applies it with line numbers,
``ingest_sim.loads.load_readings`` to any frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from batch_scoring.sensor_db.schema import stored_ts_series

KEY = ("ts", "device_id", "sensor_id")


@dataclass(frozen=True)
class Duplicates:
    """Repeated keys of a readings frame (row positions, 0-based, in frame order).

    ``exact``: rows that repeat an earlier row's key *and* value (to drop);
    ``conflicts``: ``(first row, later row)`` pairs of one key with different values.
    """

    exact: np.ndarray
    conflicts: list[tuple[int, int]]


def find_duplicates(df: pd.DataFrame) -> Duplicates:
    """Exact duplicates and conflicting duplicates of ``df`` (columns ``ts, device_id, sensor_id, value``).

    Values compare as float64; two missing values (NaN) are equal. Vectorised:
    one sort of the keys, however large the frame.
    """
    if len(df) < 2:
        return Duplicates(np.empty(0, dtype=np.int64), [])
    keys = pd.DataFrame({"ts": stored_ts_series(df["ts"]).to_numpy(), "device_id": df["device_id"].astype(str).to_numpy(),
                         "sensor_id": df["sensor_id"].astype(str).to_numpy()})
    repeated = keys.duplicated(keep=False).to_numpy()
    if not repeated.any():
        return Duplicates(np.empty(0, dtype=np.int64), [])
    rows = np.flatnonzero(repeated)
    values = pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype="float64")[rows]
    group = keys.iloc[rows].groupby(list(KEY), sort=False).ngroup().to_numpy()
    first_row: dict[int, int] = {}
    exact, conflicts = [], []
    for g, row, value in zip(group.tolist(), rows.tolist(), values.tolist()):
        if g not in first_row:
            first_row[g] = row
            continue
        first_value = values[np.searchsorted(rows, first_row[g])]
        same = value == first_value or (value != value and first_value != first_value)
        if same:
            exact.append(row)
        else:
            conflicts.append((first_row[g], row))
    return Duplicates(np.asarray(exact, dtype=np.int64), conflicts)


def describe_conflicts(df: pd.DataFrame, conflicts: list[tuple[int, int]], where=lambda i: f"row {i}",
                       limit: int = 5) -> str:
    """The first ``limit`` conflicting keys, each naming both rows and values, e.g. for an error message.

    A timestamp finer than the millisecond is shown as written next to the
    key it was cut to, since two such readings can only collide through that cut.
    """
    parts = []
    for first, later in conflicts[:limit]:
        raw = pd.to_datetime(df["ts"].iloc[[first, later]])
        key = stored_ts_series(raw).iloc[0]
        device, sensor = df["device_id"].iloc[first], df["sensor_id"].iloc[first]
        text = f"reading {device}/{sensor} at {key:%Y-%m-%d %H:%M:%S.%f}"[:-3]
        if (raw != stored_ts_series(raw)).any():
            text += (f" (written {', '.join(f'{t:%H:%M:%S.%f}' for t in raw)}: readings are kept to the millisecond)")
        parts.append(text + f" has two different values: {where(first)} has {float(df['value'].iloc[first])!r}, "
                     f"{where(later)} has {float(df['value'].iloc[later])!r}")
    more = f" ({len(conflicts)} conflicting keys in total)" if len(conflicts) > limit else \
        (f" ({len(conflicts)} conflicting keys)" if len(conflicts) > 1 else "")
    return "; ".join(parts) + more
