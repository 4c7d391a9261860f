"""Synthetic fleet for the benchmark: T targets x one day of 5-minute aggregates, one real model per target.

Aggregates are generated directly (no raw readings): level 50, noise sigma 1, 288 windows of ``value_mean ~ N(level, sigma/sqrt(30))``, a
window std around sigma, min/max a few std around the mean and ~30 readings
per window, with a few injected outliers so some windows get flagged.

Models: ONE ``Pipeline(FlooredStandardScaler, OneClassSVM)`` is trained (by
``scoring.train``, on a synthetic normal day of a template target); its
joblib bytes are copied to every target with the manifest's target fields
rewritten. The bytes, sha256 and load path are exactly those of a real model
(scoring verifies the hash and unpickles them), only the decision surface is
shared. Training 10,000 OCSVMs on 288 windows each would take ~10k x ~10 ms
plus writing, and measures nothing the benchmark is about.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd

from batch_scoring.scoring.config import AGGREGATE_COLUMNS, WINDOW_MINUTES, target_name
from batch_scoring.scoring.layout import MODEL_FILE, MODEL_MANIFEST, model_blob, model_manifest_blob

WINDOWS_PER_DAY = 24 * 60 // WINDOW_MINUTES  # 288
SENSORS_PER_DEVICE = 4


def target_names(n: int) -> list[str]:
    """``dNNNNN/sK``: 4 sensors per device, sorted like the pipeline sorts them."""
    return sorted(target_name(f"d{i // SENSORS_PER_DEVICE:05d}", f"s{i % SENSORS_PER_DEVICE + 1}") for i in range(n))


def synthetic_aggregates(targets: list[str], day_start: dt.datetime, seed: int = 1, anomalies: bool = True) -> pd.DataFrame:
    """Aggregates (``AGGREGATE_COLUMNS``) for every target over one day starting at ``day_start`` (naive UTC).

    One row per target and five-minute window (``len(targets) x 288`` rows, targets
    in the given order); ``seed`` makes it reproducible; ``anomalies`` adds spikes
    (~1 % of windows) and stuck sensors (~0.3 %).
    """
    rng = np.random.default_rng(seed)
    n_t, n_w = len(targets), WINDOWS_PER_DAY
    # every target shares the template model, so every target has the template's level and noise
    level = np.full((n_t, 1), 50.0)
    sigma = np.full((n_t, 1), 1.0)
    n_readings = np.full((n_t, n_w), 30, dtype="int64")
    mean = level + rng.normal(0, 1, (n_t, n_w)) * sigma / np.sqrt(30)
    std = sigma * rng.uniform(0.85, 1.15, (n_t, n_w))
    spread = rng.uniform(1.8, 2.4, (n_t, n_w))
    vmax = mean + spread * std
    vmin = mean - rng.uniform(1.8, 2.4, (n_t, n_w)) * std
    if anomalies:  # ~1 % of windows: a spike, or a stuck sensor
        hit = rng.random((n_t, n_w)) < 0.01
        vmax = np.where(hit, mean + 8 * sigma, vmax)
        stuck = rng.random((n_t, n_w)) < 0.003
        std, vmin, vmax = (np.where(stuck, 0.0, std), np.where(stuck, mean, vmin), np.where(stuck, mean, vmax))
    starts = pd.date_range(day_start, periods=n_w, freq=f"{WINDOW_MINUTES}min").as_unit("us")
    dev = np.repeat([t.split("/")[0] for t in targets], n_w)
    sen = np.repeat([t.split("/")[1] for t in targets], n_w)
    ws = np.tile(starts.to_numpy(), n_t)
    frame = pd.DataFrame({
        "device_id": dev,
        "sensor_id": sen,
        "window_start": ws,
        "window_end": ws + np.timedelta64(WINDOW_MINUTES, "m"),
        "value_mean": mean.ravel(),
        "value_min": vmin.ravel(),
        "value_max": vmax.ravel(),
        "value_std": std.ravel(),
        "n_readings": n_readings.ravel(),
    })
    return frame[list(AGGREGATE_COLUMNS)]


def load_aggregates(conn_str_sql: str, targets: list[str], day_start: dt.datetime) -> None:
    """A fresh sensor schema at ``conn_str_sql`` (ODBC) holding :func:`synthetic_aggregates` of ``targets``' day.

    Loaded 1,000 targets (288,000 rows) per upsert, seeded by position: the same rows every time.
    Raises pyodbc errors as they come.
    """
    from batch_scoring.ingest_sim.loads import upsert_aggregates
    from batch_scoring.sensor_db.schema import connect, create_schema

    conn = connect(conn_str_sql)
    try:
        create_schema(conn)
        for i in range(0, len(targets), 1000):  # bounded memory
            upsert_aggregates(conn, synthetic_aggregates(targets[i : i + 1000], day_start, seed=i + 1))
    finally:
        conn.close()


def train_template(work: Path, day_start: dt.datetime) -> Path:
    """Train one real model on a normal synthetic day; returns its folder (model.joblib + manifest.json)."""
    from batch_scoring.scoring.train import train_models

    template = "tpl/s1"
    history = synthetic_aggregates([template], day_start - dt.timedelta(days=1), seed=99, anomalies=False)
    models = work / "template"
    train_models(history, models, day_start - dt.timedelta(days=1), day_start, source="bench-synthetic")
    return (models / model_blob(template)).parent


def write_models(template_dir: Path, models_dir: Path, targets: list[str]) -> None:
    """Copy the template model to ``models_dir/<device>/<sensor>/`` for every target (manifest rewritten)."""
    data = (template_dir / MODEL_FILE).read_bytes()
    manifest = json.loads((template_dir / MODEL_MANIFEST).read_text())
    for t in targets:
        d, s = t.split("/")
        model = models_dir / model_blob(t)
        model.parent.mkdir(parents=True, exist_ok=True)
        model.write_bytes(data)
        m = {**manifest, "target": t, "device_id": d, "sensor_id": s}
        (models_dir / model_manifest_blob(t)).write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
