"""Detection quality on simulated data: the product's point.

20 devices x 4 sensors: train on a normal history day, score a day with every
kind of injected anomaly, and require per-window precision and recall >= 0.9.
Per-kind recall is printed (run with -s to see it).
"""
from __future__ import annotations

import pandas as pd
import pytest

from batch_scoring.ingest_sim.aggregator import aggregate_readings
from batch_scoring.ingest_sim.simulator import KINDS, simulate
from batch_scoring.scoring.evaluate import format_report, precision_recall
from batch_scoring.scoring.layout import part_name
from batch_scoring.scoring.score import score_unit
from batch_scoring.scoring.train import train_models

HISTORY = ("2026-03-01", "2026-03-02")
SCORING = ("2026-03-02", "2026-03-03")


def run_experiment(tmp_path, seed: int, devices: int = 20, sensors: int = 4) -> dict:
    history, _ = simulate(devices, sensors, *HISTORY, seed=seed, anomalies=False)
    scoring, labels = simulate(devices, sensors, *SCORING, seed=seed, anomalies=True)
    train_aggs = aggregate_readings(history)
    score_aggs = aggregate_readings(scoring)
    models = tmp_path / f"models-{seed}"
    out = tmp_path / f"pred-{seed}"
    manifests = train_models(train_aggs, models, *HISTORY)
    targets = [m["target"] for m in manifests]
    receipts = score_unit(score_aggs, models, out, targets)
    assert all(r["status"] == "ok" for r in receipts), [r for r in receipts if r["status"] != "ok"]
    preds = pd.read_parquet(out / part_name(targets))  # the unit's one file
    assert len(preds) == len(score_aggs)
    return precision_recall(preds, labels)


@pytest.mark.parametrize("seed", [42, 7, 2026])
def test_precision_and_recall_at_least_0_9(tmp_path, seed):
    metrics = run_experiment(tmp_path, seed)
    print(f"\nseed {seed}:\n{format_report(metrics)}")
    assert set(metrics["by_kind"]) == set(KINDS), "every anomaly kind must be present"
    anomalous = metrics["tp"] + metrics["fn"]
    assert 0.08 <= anomalous / metrics["windows"] <= 0.2, "anomaly density out of the intended range"
    assert metrics["precision"] >= 0.9, format_report(metrics)
    assert metrics["recall"] >= 0.9, format_report(metrics)
    for kind, m in metrics["by_kind"].items():
        assert m["recall"] >= 0.8, f"{kind}: {format_report(metrics)}"
