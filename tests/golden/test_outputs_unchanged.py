"""The bytes a run leaves behind, pinned: snapshot, part files (predictions, receipts in their footers), manifest, report and heatmap.

One simulated world (3 devices x 2 sensors, one target's model withdrawn so the
manifest lists a skip) is scored for one hour on the local backend, then again
on the Azure ML backend (the Azure ML emulator process over HTTPS, devstack/aml_emulator).
Both must leave exactly the blobs whose SHA-256 digests are recorded in
``outputs.json``. A refactor must keep this test green without touching the
file; a change that means to alter outputs regenerates it with
``GOLDEN_UPDATE=1 pytest tests/golden`` and says so in its commit.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path

import pytest

from batch_scoring.scoring.layout import interval_prefix
from tests.fixtures.aml_emulator import created
from tests.plugins.test_azure_ml_e2e import HISTORY, SCORING, parse_dag, run_interval, run_key, simulated_world

pytestmark = pytest.mark.timeout(400)

GOLDEN = Path(__file__).with_name("outputs.json")
KEY = "20260302T0000Z_20260302T0100Z"  # dag.test(logical_date=00:00, run_after=01:00)
WITHDRAWN = "dev003/s2"


@pytest.fixture
def world(airflow_db, monkeypatch, sqlite_conn_str, blob_conn_str, blob_store, tmp_path):
    from batch_scoring.config import settings

    s = settings()
    simulated_world(monkeypatch, sqlite_conn_str, blob_conn_str, blob_store, tmp_path / "models", devices=3)
    for name in blob_store.list_names(s.models_container, f"{WITHDRAWN}/"):
        blob_store.delete(s.models_container, name)
    return s


def outputs(store, s) -> dict[str, str]:
    digests = {}
    for container, prefix in ((s.aggregates_container, f"{KEY}/"), (s.predictions_container, interval_prefix(KEY))):
        for name in sorted(store.list_names(container, prefix)):
            digests[f"{container}/{name}"] = hashlib.sha256(store.download_bytes(container, name)).hexdigest()
    return digests


def clear(store, s) -> None:
    for container, prefix in ((s.aggregates_container, f"{KEY}/"), (s.predictions_container, interval_prefix(KEY))):
        for name in store.list_names(container, prefix):
            store.delete(container, name)


def test_both_backends_leave_the_recorded_bytes(monkeypatch, world, aml_emulator, blob_store):
    s = world
    run, ok = run_interval(parse_dag(monkeypatch, "local"), SCORING[0] + dt.timedelta(hours=1))
    assert ok, run.state
    assert run_key(run) == KEY
    local = outputs(blob_store, s)
    assert len(local) == 1 + 5 + 3  # snapshot; 5 part files (one target each, receipts in them); manifest, report, heatmap
    assert not any(WITHDRAWN in name for name in local)
    clear(blob_store, s)

    run, ok = run_interval(parse_dag(monkeypatch, "azureml"), SCORING[0] + dt.timedelta(hours=1))
    assert ok, run.state
    assert run_key(run) == KEY
    assert len(created(aml_emulator)) == 5
    remote = outputs(blob_store, s)
    assert remote == local

    if os.environ.get("GOLDEN_UPDATE"):
        GOLDEN.write_text(json.dumps(local, indent=1, sort_keys=True) + "\n")
    assert local == json.loads(GOLDEN.read_text())
