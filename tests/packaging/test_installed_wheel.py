"""The distribution as a user gets it: the wheel, installed into a fresh venv, used from outside the repository.

The venv holds ``apache-airflow`` (the lock's version) and the wheel, with the
dependencies the wheel declares resolved against ``requirements.lock`` as
constraints: a dependency missing from ``pyproject.toml`` is missing there.
Airflow runs from a directory outside the checkout with ``PYTHONPATH`` unset,
its own home and a DAG folder holding only the one-line DAG file a user writes.
What the test world needs (SQLite sensor data, models in Azurite) is set up by
the checkout, as a data team's loaders would; everything Airflow does runs in
the installed venv.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from devstack.wheel_venv import build_wheel, install_venv
from tests.plugins.test_azure_ml_e2e import SCORING, simulated_world

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
USER_DAG = "from batch_scoring.dag import dag  # our Airflow DAG\n"

CHECK = r"""
import datetime as dt, json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
out = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dags)}
if "batch_scoring" in bag.dags:
    dag = bag.dags["batch_scoring"]
    start = dt.datetime.fromisoformat(sys.argv[2]).replace(tzinfo=dt.timezone.utc)
    run = dag.test(logical_date=start, run_after=start + dt.timedelta(hours=1))
    out.update(state=str(run.state), fileloc=dag.fileloc)
import batch_scoring
out["package"] = batch_scoring.__file__
out["modules_from"] = sorted({m.__file__.rsplit("/", 2)[0] for m in list(sys.modules.values())
                              if getattr(m, "__file__", None) and m.__name__.startswith("batch_scoring")})
print("RESULT " + json.dumps(out))
"""


def _run(cmd, **kw):
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert res.returncode == 0, f"{cmd}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``uv build`` of the checkout: the sdist, then the wheel from the unpacked sdist (so the sdist is complete)."""
    return build_wheel(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv: apache-airflow at the lock's version and the wheel, constrained by the lock."""
    return install_venv(tmp_path_factory.mktemp("user-venv") / "venv", wheel)


def test_wheel_holds_the_package_its_dependencies_and_the_entry_point(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"batch_scoring"}  # one import name; no tests, devstack, bench, dags folder
    for module in ("batch_scoring/dag.py", "batch_scoring/provider_info.py", "batch_scoring/scoring/score.py",
                   "batch_scoring/sensor_db/reads.py", "batch_scoring/ingest_sim/__main__.py",
                   "batch_scoring/hooks/azure_ml.py", "batch_scoring/triggers/azure_ml.py"):
        assert module in names, module
    requires = re.findall(r"^Requires-Dist: ([A-Za-z0-9_.-]+)(.*)$", meta, re.M)
    runtime = {name.lower() for name, rest in requires if "extra ==" not in rest}
    assert {"apache-airflow", "apache-airflow-providers-microsoft-azure", "azure-ai-ml", "pandas", "scikit-learn",
            "pyodbc", "pydantic-settings"} <= runtime
    assert not {"pytest", "pytest-timeout"} & runtime  # test tools only in the `test` extra
    python = SpecifierSet(re.search(r"^Requires-Python: (.+)$", meta, re.M).group(1))
    assert [v for v in ("3.10", "3.11", "3.12", "3.13", "3.14", "3.15") if v in python] == ["3.11", "3.12", "3.13", "3.14"]
    assert re.search(r"^License-Expression: Apache-2\.0$", meta, re.M)
    assert "[apache_airflow_provider]" in entry_points
    assert "provider_info = batch_scoring.provider_info:get_provider_info" in entry_points


def test_installed_wheel_is_a_provider_and_its_dag_scores_an_interval(venv, tmp_path, monkeypatch, sqlite_conn_str,
                                                                       blob_conn_str, blob_store):
    from batch_scoring.config import settings
    from batch_scoring.scoring.layout import interval_folder, interval_key, manifest_blob, part_blob

    s = settings()
    simulated_world(monkeypatch, sqlite_conn_str, blob_conn_str, blob_store, tmp_path / "models", devices=2)
    home, dags, work = tmp_path / "airflow-home", tmp_path / "dags", tmp_path / "work"
    for d in (home, dags, work):
        d.mkdir()
    (dags / "scoring_dag.py").write_text(USER_DAG)  # the user's own one-line DAG file
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "BATCH_SCORING", "PYTHON", "VIRTUAL_ENV"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__PROVIDERS_ODBC__ALLOW_DRIVER_IN_EXTRA": "True",
        f"AIRFLOW_CONN_{s.sql_conn_id.upper()}": os.environ[f"AIRFLOW_CONN_{s.sql_conn_id.upper()}"],
        f"AIRFLOW_CONN_{s.blob_conn_id.upper()}": os.environ[f"AIRFLOW_CONN_{s.blob_conn_id.upper()}"],
        "BATCH_SCORING_BACKEND": "local",
    })
    bin_ = venv / "bin"
    run = lambda *cmd: _run(cmd, cwd=work, env=env, timeout=600)  # noqa: E731

    providers = json.loads(run(bin_ / "airflow", "providers", "list", "--output", "json").stdout)
    ours = [p for p in providers if p["package_name"] == "airflow-provider-batch-scoring"]
    assert ours and ours[0]["version"] == "0.2.0", providers
    run(bin_ / "airflow", "db", "migrate")
    (work / "check.py").write_text(CHECK)
    # logical date 01:00: the cron timetable's run stamped 01:00 scores 00:00-01:00, the world's scoring hour
    out = run(bin_ / "python", work / "check.py", dags, (SCORING[0] + dt.timedelta(hours=1)).isoformat()).stdout
    result = json.loads(out.split("RESULT ", 1)[1])

    assert result["import_errors"] == {} and result["dags"] == ["batch_scoring"]
    assert result["fileloc"] == str(dags / "scoring_dag.py")
    assert result["package"].startswith(str(venv)), result["package"]
    assert all(path.startswith(str(venv)) for path in result["modules_from"]), result["modules_from"]
    assert result["state"] == "success", out[-3000:]
    key = interval_key(SCORING[0], SCORING[0] + dt.timedelta(hours=1))
    folder = interval_folder(key)  # this checkout's layout: the wheel is built from it
    manifest = json.loads(blob_store.download_bytes(s.predictions_container, manifest_blob(key)))
    assert manifest["counts"] == {"ok": 4, "failed": 0, "skipped": 0}
    names = set(blob_store.list_names(s.predictions_container, folder))
    assert {part_blob(key, ["dev001/s1"]), part_blob(key, ["dev002/s2"])} <= names  # one target per unit
    assert sorted(p.name for p in work.iterdir()) == ["check.py"]  # nothing written to the working directory
