"""python -m batch_scoring.scoring.train / scoring.score as separate processes (how Azure ML runs them)."""
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
    res = run("batch_scoring.scoring.train", "--aggregates", str(history), "--models", str(models),
              "--start", "2026-03-01T00:00:00", "--end", "2026-03-01T06:00:00")
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert [x["target"] for x in lines] == ["dev001/s1", "dev001/s2", "dev002/s1", "dev002/s2"]
    manifest = json.loads((models / "dev001" / "s1" / "manifest.json").read_text())
    assert manifest["created_from"]["source"] == "history.parquet"

    targets_file = tmp_path / "targets.txt"
    targets_file.write_text("# two targets\ndev001/s1\n\ndev002/s2\n")
    res = run("batch_scoring.scoring.score", "--aggregates", str(snapshot), "--models", str(models), "--out", str(out),
              "--targets-file", str(targets_file))
    assert res.returncode == 0, res.stderr
    from batch_scoring.scoring.layout import part_name
    from batch_scoring.scoring.part_file import read_receipts

    both = part_name(["dev001/s1", "dev002/s2"])  # one part file of the unit's targets
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet")) == [both]
    frame = pd.read_parquet(out / both)
    assert len(frame) == 72 and len(frame[(frame.device_id == "dev001") & (frame.sensor_id == "s1")]) == 36

    # one tampered model and one unknown target: others still scored, exit code 1
    path = models / "dev001" / "s2" / "model.joblib"
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    res = run("batch_scoring.scoring.score", "--aggregates", str(snapshot), "--models", str(models), "--out", str(out),
              "--targets", "dev001/s2", "nope/s1", "dev002/s1")
    assert res.returncode == 1
    status = {json.loads(x)["target"]: json.loads(x)["status"] for x in res.stdout.splitlines()}
    assert status == {"dev001/s2": "failed", "nope/s1": "failed", "dev002/s1": "ok"}
    assert "failed: dev001/s2, nope/s1" in res.stderr
    mixed = out / part_name(["dev001/s2", "nope/s1", "dev002/s1"])
    assert set(pd.read_parquet(mixed)["sensor_id"] + pd.read_parquet(mixed)["device_id"]) == {"s1dev002"}  # ok rows only
    assert {r["target"]: r["status"] for r in read_receipts(mixed)} == status  # failed receipts in the footer too


def test_cli_errors(tmp_path, small_data, snapshot):
    history = tmp_path / "h.parquet"
    small_data[0].iloc[:10].to_parquet(history, index=False)
    res = run("batch_scoring.scoring.train", "--aggregates", str(history), "--models", str(tmp_path / "m"))
    assert res.returncode == 1 and "too few training windows" in res.stderr
    res = run("batch_scoring.scoring.score", "--aggregates", str(snapshot), "--models", str(tmp_path / "m"),
              "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "--targets" in res.stderr


# --- scoring.cli: usage names, defaults, environment, missing inputs, progress ----------------------------
import pytest  # noqa: E402

from batch_scoring.scoring import azure_setup, cli, planner, score, train  # noqa: E402


@pytest.mark.parametrize("main, prog", [(train.main, "python -m batch_scoring.scoring.train"), (score.main, "python -m batch_scoring.scoring.score"),
                                        (planner.main, "python -m batch_scoring.scoring.planner"),
                                        (azure_setup.main, "python -m batch_scoring.scoring.azure_setup")])
def test_help_names_the_real_invocation_its_defaults_and_environment(main, prog, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out.startswith(f"usage: {prog} ")
    assert "environment variables" in out


def test_help_shows_defaults_and_environment_variables(capsys):
    with pytest.raises(SystemExit):
        azure_setup.main(["--help"])
    out = capsys.readouterr().out
    assert "(default: 300)" in out and "default: Standard_DS3_v2" in out and "(default: None)" not in out
    assert "AZURE_SUBSCRIPTION_ID" in out and "BATCH_SCORING_AZUREML_COMPUTE" in out


def missing_line(path, what):
    return f"error: {path}: No such file or directory (expected {what})\n"


def test_train_missing_aggregates_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "nope.parquet"
    assert train.main(["--aggregates", str(path), "--models", str(tmp_path / "m")]) == 2
    captured = capsys.readouterr()
    assert captured.err == missing_line(path, "--aggregates: parquet file with the aggregate columns")
    assert captured.out == ""


def test_train_unreadable_parquet_and_missing_targets_file(tmp_path, small_data, capsys):
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    assert train.main(["--aggregates", str(bad), "--models", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: not a readable parquet file") and err.count("\n") == 1
    history = tmp_path / "h.parquet"
    small_data[0].to_parquet(history, index=False)
    targets = tmp_path / "targets.txt"
    assert train.main(["--aggregates", str(history), "--models", str(tmp_path / "m"), "--targets-file", str(targets)]) == 2
    assert capsys.readouterr().err == missing_line(targets, "--targets-file: one device/sensor per line, or a JSON list")


def test_score_missing_inputs_are_one_line_exit_2(tmp_path, snapshot, capsys):
    path = tmp_path / "nope.parquet"
    args = ["--models", str(tmp_path / "m"), "--out", str(tmp_path / "o")]
    assert score.main(["--aggregates", str(path), *args, "--targets", "dev001/s1"]) == 2
    assert capsys.readouterr().err == missing_line(path, "--aggregates: snapshot parquet of the interval's aggregates")
    targets = tmp_path / "t.txt"
    assert score.main(["--aggregates", str(snapshot), *args, "--targets-file", str(targets)]) == 2
    assert capsys.readouterr().err == missing_line(targets, "--targets-file: one device/sensor per line, or a JSON list")
    targets.write_text("# none\n")
    assert score.main(["--aggregates", str(snapshot), *args, "--targets-file", str(targets)]) == 2
    assert capsys.readouterr().err == (f"error: {targets}: no targets inside "
                                       "(expected --targets-file: one device/sensor per line)\n")
    assert not (tmp_path / "o").exists()


def test_azure_setup_missing_lock_or_models_is_one_line_exit_2(tmp_path, capsys):
    lock = tmp_path / "requirements.lock"
    assert azure_setup.main(["--dry-run", "--lock", str(lock)]) == 2
    assert capsys.readouterr().err == missing_line(lock, "--lock: the pinned requirements.lock")
    models = tmp_path / "models"
    assert azure_setup.main(["--dry-run", "--models", str(models)]) == 2
    assert capsys.readouterr().err == missing_line(
        models, "--models: folder of <device>/<sensor>/{model.joblib,manifest.json}")


def test_input_path_names_what_is_wrong(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(cli.InputError, match=r"f: Not a directory \(expected a folder\)$"):
        cli.input_path(tmp_path / "f", "a folder", directory=True)
    with pytest.raises(cli.InputError, match=r": Is a directory \(expected a file\)$"):
        cli.input_path(tmp_path, "a file")
    assert cli.input_path(tmp_path / "f", "a file") == tmp_path / "f"


def test_read_targets_reads_lines_and_json(tmp_path):
    path = tmp_path / "t"
    path.write_text("# c\na/b\n\n c/d \n")
    assert cli.read_targets(["x/y"], path) == ["x/y", "a/b", "c/d"]
    path.write_text('["a/b", "e/f"]')
    assert cli.read_targets(None, path) == ["a/b", "e/f"]
    assert cli.read_targets(None) == []


def test_progress_is_silent_when_stderr_is_not_a_terminal(capsys):
    assert list(cli.progress(range(3), "work")) == [0, 1, 2]
    assert capsys.readouterr() == ("", "")


def test_cli_output_has_no_progress_bars(tmp_path, small_data, snapshot):
    history = tmp_path / "history.parquet"
    small_data[0].to_parquet(history, index=False)
    res = run("batch_scoring.scoring.train", "--aggregates", str(history), "--models", str(tmp_path / "m"))
    assert res.returncode == 0, res.stderr
    assert "training" not in res.stderr and "\r" not in res.stderr + res.stdout
    res = run("batch_scoring.scoring.score", "--aggregates", str(snapshot), "--models", str(tmp_path / "m"), "--out",
              str(tmp_path / "o"), "--targets", "dev001/s1")
    assert res.returncode == 0 and "\r" not in res.stderr + res.stdout and "it/s" not in res.stderr


def test_progress_is_silent_on_a_stream_without_isatty(monkeypatch):
    class LogStream:
        def __init__(self):
            self.text = ""

        def write(self, text):
            self.text += text

        def flush(self):
            pass

    stream = LogStream()
    monkeypatch.setattr("sys.stderr", stream)
    assert sum(cli.progress(range(5), "work")) == 10
    assert stream.text == ""


def test_read_targets_refuses_a_broken_json_list(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('["a/b",')
    with pytest.raises(cli.InputError, match=r"t\.json: not a JSON list \(Expecting value"):
        cli.read_targets(None, path)
