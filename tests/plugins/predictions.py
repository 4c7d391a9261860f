"""A small prediction blob and its snapshot windows, shared by the validation and collector tests."""
from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pandas as pd

from batch_scoring.scoring.layout import Interval

START = dt.datetime(2026, 5, 1, 10)
INTERVAL = Interval(START, START + dt.timedelta(hours=1))
WINDOWS = list(pd.date_range(START, periods=12, freq="5min"))


def prediction(windows, **overrides) -> bytes:
    """Parquet bytes of a d1/s1 prediction over ``windows``; a column set to None is dropped."""
    frame = pd.DataFrame({
        "device_id": "d1", "sensor_id": "s1", "window_start": windows,
        "window_end": [w + pd.Timedelta(minutes=5) for w in windows],
        "decision_score": np.linspace(-1, 1, len(windows)), "is_anomaly": [False] * len(windows),
        "model_sha256": "ab" * 32,
    })
    for column, value in overrides.items():
        if value is None:
            frame = frame.drop(columns=column)
        else:
            frame[column] = value
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()
