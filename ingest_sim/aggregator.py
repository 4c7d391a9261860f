"""Tumbling-window aggregation of raw readings (what Stream Analytics does in the reference).

``aggregate_readings`` is pure (a DataFrame in, a DataFrame out) so the simulator,
the tests and the SQL loader share one definition of a window.
"""
from __future__ import annotations

import pandas as pd

from batch_scoring.scoring.config import AGGREGATE_COLUMNS, WINDOW_MINUTES


def aggregate_readings(readings: pd.DataFrame, window_minutes: int = WINDOW_MINUTES) -> pd.DataFrame:
    """Aggregate ``ts, device_id, sensor_id, value`` rows into tumbling windows.

    A window is [window_start, window_end) aligned to the epoch, so the same
    reading always lands in the same window whichever range is re-aggregated.
    ``value_std`` is the population standard deviation (0 for a single reading),
    which keeps a frozen sensor at exactly 0.
    """
    if readings.empty:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in AGGREGATE_COLUMNS})
    freq = f"{window_minutes}min"
    frame = readings.assign(window_start=pd.to_datetime(readings["ts"]).dt.floor(freq))
    grouped = frame.groupby(["device_id", "sensor_id", "window_start"], sort=True)["value"]
    out = grouped.agg(
        value_mean="mean",
        value_min="min",
        value_max="max",
        n_readings="count",
    )
    out["value_std"] = grouped.std(ddof=0)
    out = out.reset_index()
    out["window_end"] = out["window_start"] + pd.Timedelta(minutes=window_minutes)
    out["n_readings"] = out["n_readings"].astype("int64")
    return out[list(AGGREGATE_COLUMNS)]


def _dtype(column: str) -> str:
    if column in ("device_id", "sensor_id"):
        return "object"
    if column in ("window_start", "window_end"):
        return "datetime64[us]"
    if column == "n_readings":
        return "int64"
    return "float64"
