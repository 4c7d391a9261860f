"""Build a complete scoring world: readings and ground truth in SQL, aggregates, trained models in blob.

One function used by ``make demo`` and the tests, so both exercise the same path
a user takes: simulate (or load CSV) → aggregate → train on history → deploy models.
"""
from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path


def current_hour() -> dt.datetime:
    """The start of the current hour, naive UTC: where the demo worlds end, so the latest interval is fresh."""
    from batch_scoring.scoring.times import utc_naive

    return utc_naive(dt.datetime.now(dt.timezone.utc)).replace(minute=0, second=0, microsecond=0)


@dataclass
class World:
    """What :func:`simulate_world` built: the two periods ([start, end) naive UTC) and row/model counts."""

    history: tuple[dt.datetime, dt.datetime]
    scoring: tuple[dt.datetime, dt.datetime]
    readings: int
    labels: int
    windows: int
    models: int


def deploy_models(store, models_container: str, models_dir: Path) -> list[str]:
    """Replace every model in the container with the contents of ``models_dir``; returns the blob names uploaded."""
    for name in store.list_names(models_container):
        store.delete(models_container, name)
    return store.upload_folder(models_container, "", models_dir)


def train_and_deploy(conn, store, settings, models_dir: Path, history) -> int:
    """Train one model per target on the aggregates of ``history`` ([start, end) naive UTC) into
    ``models_dir`` (emptied first), create the containers, deploy the models; returns how many were trained.
    """
    from batch_scoring.sensor_db.reads import read_aggregates
    from batch_scoring.scoring.train import train_models

    shutil.rmtree(models_dir, ignore_errors=True)
    manifests = train_models(read_aggregates(conn, *history), models_dir, *history)
    store.ensure_containers(settings.containers)
    deploy_models(store, settings.models_container, models_dir)
    return len(manifests)


def simulate_world(conn, store, settings, models_dir: Path, *, devices: int, sensors: int,
                   history, scoring, reading_seconds: float = 10.0, seed: int = 7) -> World:
    """Simulate a normal history and an anomalous scoring period, aggregate both, train, deploy.

    ``history``/``scoring``: [start, end) naive UTC; readings every ``reading_seconds`` for
    ``devices`` x ``sensors`` targets. Replaces the readings of both periods and the labels;
    the models go to ``models_dir`` and the settings' models container.
    """
    from batch_scoring.sensor_db.schema import create_schema
    from batch_scoring.ingest_sim.simulator import simulate
    from batch_scoring.ingest_sim.loads import aggregate_range, replace_labels, replace_readings_range

    create_schema(conn)
    n_readings = n_labels = 0
    for (start, end), anomalies in ((history, False), (scoring, True)):
        readings, labels = simulate(devices, sensors, start, end, reading_seconds=reading_seconds, seed=seed, anomalies=anomalies)
        replace_readings_range(conn, readings, start, end)
        n_readings += len(readings)
        if anomalies:
            replace_labels(conn, labels)
            n_labels = len(labels)
    windows = aggregate_range(conn, history[0], scoring[1])
    models = train_and_deploy(conn, store, settings, models_dir, history)
    return World(history, scoring, n_readings, n_labels, windows, models)
