"""Issue 12 item 4: one interval under dag.test() (local backend) with a ``wasb`` connection that holds an account
key, then one that holds a SAS token, both against Azurite; the collector validates every prediction."""
from __future__ import annotations

import json

import pytest

from batch_scoring.scoring.layout import interval_prefix, manifest_blob
from tests.plugins.test_azure_ml_e2e import SCORING, parse_dag, run_interval, run_key, simulated_world

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("kind", ["account_key", "sas_token"])
def test_interval_runs_with_connection_of_kind(airflow_db, monkeypatch, sqlite_conn_str, azurite, blob_conn_str,
                                               blob_store, tmp_path, kind):
    from batch_scoring.config import settings
    from tests.fixtures.azurite import wasb_connection_json

    simulated_world(monkeypatch, sqlite_conn_str, blob_conn_str, blob_store, tmp_path / "models", devices=2)
    connection = wasb_connection_json(azurite[1], kind)
    assert "connection_string" not in connection and "AccountKey=" not in connection
    monkeypatch.setenv(f"AIRFLOW_CONN_{settings().blob_conn_id.upper()}", connection)

    run, ok = run_interval(parse_dag(monkeypatch, "local"), SCORING[0])
    assert ok, run.state
    key = run_key(run)
    manifest = json.loads(blob_store.download_bytes("predictions", manifest_blob(key)))
    assert manifest["counts"] == {"ok": 4, "failed": 0, "skipped": 0}
    assert len(blob_store.list_names("predictions", interval_prefix(key))) == 7  # 4 part files (one target each) + manifest, report, heatmap
