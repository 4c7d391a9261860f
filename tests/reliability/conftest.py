"""Small worlds and helpers for the reliability tests (real SQLite/PostgreSQL over ODBC, real Azurite)."""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from batch_scoring.scoring.layout import interval_prefix, manifest_blob

HOUR = dt.timedelta(hours=1)
HISTORY = (dt.datetime(2026, 6, 1, 0), dt.datetime(2026, 6, 1, 8))
SCORING = (dt.datetime(2026, 6, 1, 8), dt.datetime(2026, 6, 1, 10))
TARGETS = ["dev001/s1", "dev001/s2", "dev002/s1", "dev002/s2"]


def interval(start: dt.datetime = SCORING[0]):
    from batch_scoring.scoring.layout import Interval

    return Interval(start, start + HOUR)


@pytest.fixture
def sql_conn_str(sqlite_conn_str):
    """Reliability tests run on SQLite unless they ask for PostgreSQL themselves."""
    return sqlite_conn_str


@dataclass
class World:
    sql: str
    blob: str
    store: object
    settings: object
    models_dir: Path
    # what the score tasks returned, per interval: the collector confirms these by MD5, like in the DAG
    unit_receipts: dict = field(default_factory=dict)

    def connect(self):
        from batch_scoring.sensor_db.schema import connect

        return connect(self.sql)

    def execute(self, sql: str, *params) -> None:
        conn = self.connect()
        try:
            conn.execute(sql, *params)
            conn.commit()
        finally:
            conn.close()

    # --- the run's steps, as the DAG's tasks call them -------------------------------

    def snapshot(self, iv=None) -> dict:
        from batch_scoring.snapshot import snapshot_interval

        conn = self.connect()
        try:
            return snapshot_interval(conn, self.store, self.settings, iv or interval())
        finally:
            conn.close()

    def score(self, plan: dict, iv=None) -> dict[str, str]:
        """Score every unit like the mapped tasks; returns {unit label: error} of the units that failed."""
        from batch_scoring.errors import PipelineError
        from batch_scoring.local_backend import score_unit_local
        from batch_scoring.units import unit_label

        errors = {}
        returned = self.unit_receipts[(iv or interval()).key] = []
        for unit in plan["units"]:
            try:
                returned.append(score_unit_local(self.store, self.settings.containers, iv or interval(), unit))
            except PipelineError as exc:
                errors[unit_label(unit)] = str(exc)
        return errors

    def collect(self, plan: dict, iv=None, min_coverage: float = 1.0) -> dict:
        from batch_scoring.collect import collect_interval

        iv = iv or interval()
        return collect_interval(self.store, self.settings, iv, plan, min_coverage, unit_receipts=self.unit_receipts.get(iv.key))

    def run(self, iv=None) -> dict:
        plan = self.snapshot(iv)
        assert self.score(plan, iv) == {}
        return self.collect(plan, iv)

    def predictions(self, iv=None) -> dict[str, bytes]:
        return {n: self.store.download_bytes("predictions", n)
                for n in self.store.list_names("predictions", interval_prefix(iv or interval()))}

    def manifest(self, iv=None) -> dict:
        return json.loads(self.store.download_bytes("predictions", manifest_blob(iv or interval())))


def build_world(sql: str, blob: str, store, models_dir: Path, seed: int = 5) -> World:
    from batch_scoring.config import settings
    from devstack.world import simulate_world
    from batch_scoring.sensor_db.schema import connect

    conn = connect(sql)
    try:
        simulate_world(conn, store, settings(), models_dir, devices=2, sensors=2,
                       history=HISTORY, scoring=SCORING, reading_seconds=30, seed=seed)
    finally:
        conn.close()
    return World(sql, blob, store, settings(), models_dir)


@pytest.fixture
def world(airflow_db, airflow_connections, blob_store, tmp_path) -> World:
    """2 devices x 2 sensors, 30-second readings: 8 h of history (models), 2 h to score; SQLite + Azurite."""
    sql, blob = airflow_connections
    return build_world(sql, blob, blob_store, tmp_path / "models")
