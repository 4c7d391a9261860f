from __future__ import annotations

import pandas as pd

from batch_scoring.scoring.evaluate import precision_recall, window_labels


def test_window_labels_and_metrics():
    ws = pd.date_range("2026-01-01", periods=4, freq="5min")
    preds = pd.DataFrame({
        "device_id": ["d"] * 4 + ["e"] * 4,
        "sensor_id": ["s"] * 8,
        "window_start": list(ws) * 2,
        "window_end": list(ws + pd.Timedelta("5min")) * 2,
        "is_anomaly": [True, True, False, False, False, True, False, False],
    })
    labels = pd.DataFrame({
        "device_id": ["d", "d"],
        "sensor_id": ["s", "s"],
        "kind": ["stuck", "spike"],
        "start_ts": [pd.Timestamp("2026-01-01 00:00"), pd.Timestamp("2026-01-01 00:12")],
        "end_ts": [pd.Timestamp("2026-01-01 00:05"), pd.Timestamp("2026-01-01 00:12:10")],
        "magnitude": [0.0, 6.0],
    })
    truth = window_labels(preds, labels)
    assert truth["label"].tolist() == [True, False, True, False] + [False] * 4
    assert truth["kind"].tolist()[:3] == ["stuck", None, "spike"]
    m = precision_recall(preds, labels)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (1, 2, 1, 4)
    assert m["precision"] == 1 / 3 and m["recall"] == 0.5
    assert m["by_kind"]["stuck"]["recall"] == 1.0 and m["by_kind"]["spike"]["recall"] == 0.0
