"""Per-window evaluation of predictions against the simulator's labels.

A window [window_start, window_end) is *anomalous* when it overlaps a labelled
interval [start_ts, end_ts) of the same device/sensor (any overlap, however
short; the simulator aligns its long anomalies to window boundaries, so this
only matters for spikes, which are a few readings inside one window).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

KEYS = ["device_id", "sensor_id"]


def window_labels(predictions: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """``label`` (bool) and ``kind`` (str or None) for each row of ``predictions``.

    Same index as ``predictions``. When a window overlaps several labels,
    ``kind`` is the one that starts first.
    """
    out = pd.DataFrame({"label": np.zeros(len(predictions), bool), "kind": None}, index=predictions.index)
    if predictions.empty or labels is None or labels.empty:
        return out
    pred = predictions[KEYS + ["window_start", "window_end"]].copy()
    pred["_row"] = np.arange(len(pred))
    lab = labels[KEYS + ["kind", "start_ts", "end_ts"]]
    pred["device_id"] = pred["device_id"].astype(str)
    pred["sensor_id"] = pred["sensor_id"].astype(str)
    lab = lab.assign(device_id=lab["device_id"].astype(str), sensor_id=lab["sensor_id"].astype(str))
    merged = pred.merge(lab, on=KEYS, how="inner")
    hit = merged[(merged["window_start"] < merged["end_ts"]) & (merged["window_end"] > merged["start_ts"])]
    hit = hit.sort_values(["_row", "start_ts"]).drop_duplicates("_row")
    rows = hit["_row"].to_numpy()
    label = out["label"].to_numpy().copy()
    label[rows] = True
    kind = np.full(len(pred), None, dtype=object)
    kind[rows] = hit["kind"].to_numpy(dtype=object)
    out["label"] = label
    out["kind"] = pd.Series(kind, index=out.index, dtype=object)
    return out


def precision_recall(predictions: pd.DataFrame, labels: pd.DataFrame) -> dict:
    """Per-window confusion counts, precision, recall and recall by anomaly kind.

    ``predictions`` needs device_id, sensor_id, window_start, window_end and
    is_anomaly. ``by_kind`` maps kind -> {windows, detected, recall}.
    """
    truth = window_labels(predictions, labels)
    pred = predictions["is_anomaly"].to_numpy(bool)
    lab = truth["label"].to_numpy(bool)
    tp = int((pred & lab).sum())
    fp = int((pred & ~lab).sum())
    fn = int((~pred & lab).sum())
    tn = int((~pred & ~lab).sum())
    by_kind = {}
    kinds = np.array([k if isinstance(k, str) else None for k in truth["kind"]], dtype=object)
    for kind in sorted({k for k in kinds if isinstance(k, str)}):
        mask = kinds == kind
        windows = int(mask.sum())
        detected = int((pred & mask).sum())
        by_kind[kind] = {"windows": windows, "detected": detected, "recall": detected / windows if windows else float("nan")}
    return {
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "windows": len(pred),
        "by_kind": by_kind,
    }


def format_report(metrics: dict) -> str:
    """Human-readable one-block summary (the demo prints it)."""
    lines = [
        f"windows={metrics['windows']} precision={metrics['precision']:.3f} recall={metrics['recall']:.3f} "
        f"(tp={metrics['tp']} fp={metrics['fp']} fn={metrics['fn']} tn={metrics['tn']})"
    ]
    for kind, m in metrics["by_kind"].items():
        lines.append(f"  {kind:<12} recall={m['recall']:.3f} ({m['detected']}/{m['windows']} windows)")
    return "\n".join(lines)
