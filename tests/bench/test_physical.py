"""bench.physical on a real SQLite database over ODBC and real model files (a fleet of 6 targets)."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pandas as pd
import pytest

from devstack.services import REPO

pytestmark = pytest.mark.timeout(300)

DAY = dt.datetime(2026, 1, 1)


@pytest.fixture
def fleet(tmp_path):
    """``(odbc, interval, targets file, models dir)`` of 6 targets x one day, one model each."""
    from bench.world import synthetic_aggregates, target_names, train_template, write_models
    from batch_scoring.ingest_sim.loads import upsert_aggregates
    from batch_scoring.scoring.layout import Interval
    from batch_scoring.sensor_db.schema import connect, create_schema

    targets = target_names(6)
    odbc = f"Driver=SQLite3;Database={tmp_path / 'sensors.db'}"
    conn = connect(odbc)
    create_schema(conn)
    upsert_aggregates(conn, synthetic_aggregates(targets, DAY))
    upsert_aggregates(conn, synthetic_aggregates(targets, DAY + dt.timedelta(days=1), seed=2))  # not this interval
    conn.close()
    write_models(train_template(tmp_path, DAY), tmp_path / "models", targets)
    (tmp_path / "targets.txt").write_text("\n".join(targets) + "\n")
    return odbc, Interval(DAY, DAY + dt.timedelta(days=1)), tmp_path / "targets.txt", tmp_path / "models", targets


def run(*args):
    return subprocess.run([sys.executable, "-m", "bench.physical", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=240)


def test_the_physical_floor_reads_scores_and_writes_the_interval(fleet, tmp_path):
    from batch_scoring.scoring.layout import part_name
    from batch_scoring.scoring.part_file import read_receipts

    odbc, interval, targets_file, models, targets = fleet
    res = run("--sql-odbc", odbc, "--interval", interval.key, "--targets-file", targets_file, "--models-dir", models,
              "--out-dir", tmp_path / "out")
    assert res.returncode == 0, res.stderr[-2000:]
    line = json.loads(res.stdout.strip().splitlines()[-1])
    assert (line["targets"], line["ok"], line["rows"]) == (6, 6, 6 * 288)  # the interval's rows only
    assert set(line["phases"]) == {"sql_read", "score_and_write"} and line["wall"] >= sum(line["phases"].values())
    part = tmp_path / "out" / part_name(targets)  # one file of the run's targets, receipts in its footer
    frame = pd.read_parquet(part)
    for t in targets:
        device, sensor = t.split("/")
        assert ((frame["device_id"] == device) & (frame["sensor_id"] == sensor)).sum() == 288
    assert sorted(r["target"] for r in read_receipts(part) if r["status"] == "ok") == sorted(targets)


def test_a_missing_model_fails_the_run_and_names_it(fleet, tmp_path):
    odbc, interval, targets_file, models, targets = fleet
    (models / targets[2] / "model.joblib").unlink()
    res = run("--sql-odbc", odbc, "--interval", interval.key, "--targets-file", targets_file, "--models-dir", models,
              "--out-dir", tmp_path / "out")
    assert res.returncode == 1
    assert json.loads(res.stdout.strip().splitlines()[-1])["ok"] == 5
