"""Small simulated data shared by the scoring tests."""
from __future__ import annotations

import pandas as pd
import pytest

from batch_scoring.ingest_sim.aggregator import aggregate_readings
from batch_scoring.ingest_sim.simulator import simulate

HISTORY = ("2026-03-01 00:00", "2026-03-01 06:00")
SCORING = ("2026-03-01 06:00", "2026-03-01 09:00")


@pytest.fixture(scope="session")
def small_data():
    history, _ = simulate(2, 2, *HISTORY, seed=3, anomalies=False)
    scoring, labels = simulate(2, 2, *SCORING, seed=3)
    return aggregate_readings(history), aggregate_readings(scoring), labels


@pytest.fixture
def trained(tmp_path, small_data):
    from batch_scoring.scoring.train import train_models

    train_aggs, score_aggs, labels = small_data
    models = tmp_path / "models"
    manifests = train_models(train_aggs, models, *HISTORY)
    return models, manifests, score_aggs


@pytest.fixture
def snapshot(tmp_path, small_data):
    path = tmp_path / "aggregates.parquet"
    small_data[1].to_parquet(path, index=False)
    return path
