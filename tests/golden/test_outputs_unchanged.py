"""What a run leaves behind, pinned: snapshot, part files (predictions, receipts in their footers), manifest, report and heatmap.

One simulated world (3 devices x 2 sensors, one target's model withdrawn so the
manifest lists a skip) is scored for one hour on the local backend, then again
on the Azure ML backend (the Azure ML emulator process over HTTPS, devstack/aml_emulator).
Both must leave byte-identical blobs (same machine, same bytes), and those blobs
must match what ``outputs.json`` records:

- the snapshot, report and heatmap by SHA-256 of their bytes;
- each part file by its content: schema, every row (text, timestamps and flags
  exactly, floats to a relative 1e-9) and the receipts in its footer;
- the manifest by its JSON, floats to a relative 1e-9.

Why not every blob by SHA-256: the decision scores' last bits depend on the CPU
the scoring ran on. NumPy picks AVX-512 versions of ``log`` where the CPU has
them and OpenBLAS (through scikit-learn's libsvm) picks a kernel per CPU; on a
Sapphire Rapids machine three of five part files differed from an AVX2
machine's in the last bits of their scores (flags, report and heatmap equal),
and with ``OPENBLAS_CORETYPE=Haswell NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL
AVX512_SPR"`` they were byte-identical again (2026-12-01). The digests that hash
those floats (a part file's ``sha256``/``md5`` in the manifest, a receipt's
``rows_sha256``) are therefore not compared with the record but checked against
the blobs and rows they describe.

A refactor must keep this test green without touching the file; a change that
means to alter outputs regenerates it with ``GOLDEN_UPDATE=1 pytest tests/golden``
and says so in its commit.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import math
import os
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from batch_scoring.scoring.layout import interval_prefix
from batch_scoring.scoring.part_file import read_receipts, rows_digest
from tests.fixtures.aml_emulator import created
from tests.plugins.test_azure_ml_e2e import HISTORY, SCORING, parse_dag, run_interval, run_key, simulated_world

pytestmark = pytest.mark.timeout(400)

GOLDEN = Path(__file__).with_name("outputs.json")
KEY = "20260302T0000Z_20260302T0100Z"  # dag.test(logical_date=00:00, run_after=01:00)
WITHDRAWN = "dev003/s2"
FLOAT_DIGESTS = ("sha256", "md5", "rows_sha256", "output_sha256", "output_md5")  # of bytes that hold scores


@pytest.fixture
def world(airflow_db, monkeypatch, sqlite_conn_str, blob_conn_str, blob_store, tmp_path):
    from batch_scoring.config import settings

    s = settings()
    simulated_world(monkeypatch, sqlite_conn_str, blob_conn_str, blob_store, tmp_path / "models", devices=3)
    for name in blob_store.list_names(s.models_container, f"{WITHDRAWN}/"):
        blob_store.delete(s.models_container, name)
    return s


def outputs(store, s) -> dict[str, bytes]:
    """Every blob the interval left: ``{"<container>/<name>": bytes}``."""
    blobs = {}
    for container, prefix in ((s.aggregates_container, f"{KEY}/"), (s.predictions_container, interval_prefix(KEY))):
        for name in sorted(store.list_names(container, prefix)):
            blobs[f"{container}/{name}"] = store.download_bytes(container, name)
    return blobs


def float_digests_hold(blobs: dict[str, bytes], container: str) -> None:
    """The digests of float bytes describe what is there: each ``ok`` manifest entry's ``sha256``/``md5``
    are its part file's (``blob`` names it in ``container``), and every receipt's ``rows_sha256`` is that of the target's rows in the file."""
    manifest_name = next(n for n in blobs if n.endswith("/_manifest.json"))
    entries = [e for e in _entries(json.loads(blobs[manifest_name])) if e.get("status") == "ok"]
    assert entries, "the manifest lists no ok target"
    for entry in entries:
        data = blobs[f"{container}/{entry['blob']}"]
        assert entry["sha256"] == hashlib.sha256(data).hexdigest(), entry
        assert entry["md5"] == hashlib.md5(data).hexdigest(), entry
    for name, data in blobs.items():
        if name.endswith(".parquet") and "/part-" in name:
            table = pq.read_table(io.BytesIO(data))
            for receipt in read_receipts(data):
                rows = table.filter(pc.and_(pc.equal(table["device_id"], receipt["device_id"]),
                                            pc.equal(table["sensor_id"], receipt["sensor_id"])))
                assert receipt["rows_sha256"] == rows_digest(rows), (name, receipt["target"])


def _entries(manifest: dict) -> list[dict]:
    return [e for e in manifest.get("targets", {}).values() if isinstance(e, dict)]


def record(blobs: dict[str, bytes]) -> dict:
    """``outputs.json``'s form of ``blobs``: ``{"sha256": {name: hex}, "content": {name: JSON}}``."""
    sha, content = {}, {}
    for name, data in blobs.items():
        if name.endswith(".parquet") and "/part-" in name:
            table = pq.read_table(io.BytesIO(data))
            content[name] = {"schema": table.schema.remove_metadata().to_string(),
                             "rows": {c: [_plain(v) for v in table[c].to_pylist()] for c in table.column_names},
                             "receipts": [_scrub(r) for r in read_receipts(data)]}
        elif name.endswith("/_manifest.json"):
            content[name] = _scrub(json.loads(data))
        else:
            sha[name] = hashlib.sha256(data).hexdigest()
    return {"sha256": sha, "content": content}


def _plain(value):
    return value.isoformat() if isinstance(value, dt.datetime) else value


def _scrub(value):
    """``value`` with the digests of float bytes (checked by ``float_digests_hold``) left out."""
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in FLOAT_DIGESTS}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def assert_matches(actual, expected, where: str = "") -> None:
    """``actual == expected`` with floats compared to a relative 1e-9; names the first place they differ."""
    if isinstance(expected, float) and isinstance(actual, (float, int)) and not isinstance(actual, bool):
        assert math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12), f"{where}: {actual!r} != {expected!r}"
    elif isinstance(expected, dict) and isinstance(actual, dict):
        assert sorted(actual) == sorted(expected), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for k in expected:
            assert_matches(actual[k], expected[k], f"{where}/{k}")
    elif isinstance(expected, list) and isinstance(actual, list):
        assert len(actual) == len(expected), f"{where}: {len(actual)} items != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_matches(a, e, f"{where}[{i}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def clear(store, s) -> None:
    for container, prefix in ((s.aggregates_container, f"{KEY}/"), (s.predictions_container, interval_prefix(KEY))):
        for name in store.list_names(container, prefix):
            store.delete(container, name)


def test_both_backends_leave_the_same_bytes_and_the_recorded_outputs(monkeypatch, world, aml_emulator, blob_store):
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

    float_digests_hold(local, s.predictions_container)
    if os.environ.get("GOLDEN_UPDATE"):
        GOLDEN.write_text(json.dumps(record(local), indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert_matches(record(local), golden)
