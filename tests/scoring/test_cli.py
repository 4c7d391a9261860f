"""python -m scoring.train / scoring.score as separate processes (how Azure ML runs them)."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_train_then_score_cli(tmp_path, small_data, snapshot):
    history = tmp_path / "history.parquet"
    small_data[0].to_parquet(history, index=False)
    models, out = tmp_path / "models", tmp_path / "out"
    res = run("scoring.train", "--aggregates", str(history), "--models", str(models),
              "--start", "2026-03-01T00:00:00", "--end", "2026-03-01T06:00:00")
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert [x["target"] for x in lines] == ["dev001/s1", "dev001/s2", "dev002/s1", "dev002/s2"]
    manifest = json.loads((models / "dev001" / "s1" / "manifest.json").read_text())
    assert manifest["created_from"]["source"] == "history.parquet"

    targets_file = tmp_path / "targets.txt"
    targets_file.write_text("# two targets\ndev001/s1\n\ndev002/s2\n")
    res = run("scoring.score", "--aggregates", str(snapshot), "--models", str(models), "--out", str(out),
              "--targets-file", str(targets_file))
    assert res.returncode == 0, res.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet")) == [
        "dev001/s1.parquet", "dev002/s2.parquet"]
    assert len(pd.read_parquet(out / "dev001" / "s1.parquet")) == 36

    # one tampered model and one unknown target: others still scored, exit code 1
    path = models / "dev001" / "s2" / "model.joblib"
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    res = run("scoring.score", "--aggregates", str(snapshot), "--models", str(models), "--out", str(out),
              "--targets", "dev001/s2", "nope/s1", "dev002/s1")
    assert res.returncode == 1
    status = {json.loads(x)["target"]: json.loads(x)["status"] for x in res.stdout.splitlines()}
    assert status == {"dev001/s2": "failed", "nope/s1": "failed", "dev002/s1": "ok"}
    assert "failed: dev001/s2, nope/s1" in res.stderr
    assert not (out / "dev001" / "s2.parquet").exists()


def test_cli_errors(tmp_path, small_data, snapshot):
    history = tmp_path / "h.parquet"
    small_data[0].iloc[:10].to_parquet(history, index=False)
    res = run("scoring.train", "--aggregates", str(history), "--models", str(tmp_path / "m"))
    assert res.returncode == 1 and "too few training windows" in res.stderr
    res = run("scoring.score", "--aggregates", str(snapshot), "--models", str(tmp_path / "m"),
              "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "--targets" in res.stderr
