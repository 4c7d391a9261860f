"""bench.snapshot_step: a real world (Azurite + SQLite over ODBC) served, the snapshot step measured against it."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import pytest

from devstack.services import REPO, port_open

pytestmark = pytest.mark.timeout(300)


def test_measure_runs_the_snapshot_step_and_the_world_stops_its_services(tmp_path):
    from batch_scoring.scoring.layout import Interval
    from batch_scoring.sensor_db.reads import read_aggregates
    from batch_scoring.sensor_db.schema import connect
    from batch_scoring.snapshot import SNAPSHOT_ROW_GROUP, frame_to_parquet_bytes

    world = subprocess.Popen([sys.executable, "-m", "bench.snapshot_step", "world", "--targets", "8", "--workdir",
                              tmp_path], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (tmp_path / "world.json").exists():
            assert world.poll() is None and time.monotonic() < deadline, world.stdout.read()[-2000:]
            time.sleep(0.5)
        spec = json.loads((tmp_path / "world.json").read_text())
        res = subprocess.run([sys.executable, "-m", "bench.snapshot_step", "measure", "--world", tmp_path / "world.json"],
                             cwd=REPO, capture_output=True, text=True, timeout=180)
        assert res.returncode == 0, res.stderr[-2000:]
        out = json.loads(res.stdout.strip().splitlines()[-1])
        conn = connect(spec["sql_odbc"])
        interval = Interval.from_key(spec["interval"])
        expected = frame_to_parquet_bytes(read_aggregates(conn, interval.start, interval.end), SNAPSHOT_ROW_GROUP)
        conn.close()
        assert out["snapshot_sha256"] == hashlib.sha256(expected).hexdigest()
        assert out["snapshot_bytes"] == len(expected) and out["targets_without_model"] == 8  # no model deployed
        assert out["wall"] > 0 and out["cpu"] > 0 and out["peak_rss"] > 50 * 2**20
    finally:
        world.terminate()
        world.wait(timeout=60)
    port = int(spec["blob"].split("127.0.0.1:")[1].split("/")[0])
    assert world.returncode == 0 and not port_open(port)  # Azurite stopped with the world
