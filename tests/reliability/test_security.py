"""Secrets stay in Airflow connections: none shows up in task logs, XCom or rendered templates.

One dag.test() run on the Azure ML backend (the Azure ML emulator process, reached by the real SDK
over HTTPS: the service-principal secret really goes to its token endpoint) over
PostgreSQL and Azurite, with three secrets in play: a PostgreSQL password
(connection ``sensor_sql``), the Azurite account key (``sensor_blob``) and a
service-principal secret (``azure_ml``). Afterwards the captured task output,
every file under $AIRFLOW_HOME/logs, and the metadata DB itself (XCom values,
rendered template fields, everything else in the file) are searched for each.
That models load only after their hash is verified is proven in
tests/scoring/test_model_store.py (load_model refuses before unpickling).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from devstack.airflow_env import blob_connection_json
from devstack.services import AZURITE_KEY
from tests.dags.conftest import run_interval
from tests.fixtures.aml_emulator import created
from tests.reliability.conftest import SCORING, build_world

PG_PASSWORD = "pg-S3cret-7f3a9c1e"
SP_SECRET = "sp-S3cret-0d41b6e2~fake"


def test_no_secret_in_logs_xcom_or_rendered_templates(airflow_db, monkeypatch, pg_server, pg_conn_str,
                                                       blob_conn_str, blob_store, aml_emulator, tmp_path, capfd):
    import pyodbc
    from airflow.dag_processing.dagbag import DagBag

    from devstack.services import REPO

    admin = pyodbc.connect(pg_server.conn_str("postgres"), autocommit=True)
    admin.execute(f"ALTER ROLE \"{pg_server.user}\" PASSWORD '{PG_PASSWORD}'")
    admin.close()
    database = pg_conn_str.split("Database=")[1].split(";")[0]
    monkeypatch.setenv("AIRFLOW_CONN_SENSOR_SQL", json.dumps({
        "conn_type": "odbc", "host": pg_server.host, "port": pg_server.port, "schema": database,
        "login": pg_server.user, "password": PG_PASSWORD,
        "extra": {"driver": "PostgreSQL Unicode", "placeholder": "?"}}))
    monkeypatch.setenv("AIRFLOW_CONN_SENSOR_BLOB", blob_connection_json(blob_conn_str))
    from devstack.aml_emulator import connection

    monkeypatch.setenv("AIRFLOW_CONN_AZURE_ML", json.dumps({**connection(aml_emulator.url), "password": SP_SECRET}))
    assert AZURITE_KEY in blob_conn_str
    world = build_world(pg_conn_str, blob_conn_str, blob_store, tmp_path / "models")

    dag = DagBag(dag_folder=str(REPO / "dags")).dags["batch_scoring"]
    # one target keeps the run short: every connection is still used (sensor and snapshot: SQL;
    # every task: blob; the score task: Azure ML)
    run, ok = run_interval(dag, SCORING[0], backend="azureml", targets=["dev001/s1"])
    assert ok, run.state
    assert len(created(aml_emulator)) == 1 and world.manifest()["counts"]["ok"] == 1
    assert any(p.endswith("/oauth2/v2.0/token") and st == 200 for _, p, st in aml_emulator.requests())

    secrets = {"PostgreSQL password": PG_PASSWORD, "Azurite account key": AZURITE_KEY,
               "service-principal secret": SP_SECRET}
    out = capfd.readouterr()
    captured = out.out + out.err
    # the task runner's output was captured (its format depends on earlier tests' logging set-up)
    assert "Pushing xcom" in captured and "collect" in captured, captured[-2000:]
    home = Path(os.environ["AIRFLOW_HOME"])
    files = [p for p in (home / "logs").rglob("*") if p.is_file()] if (home / "logs").exists() else []
    files += [p for p in home.glob("airflow.db*") if p.is_file()]
    files += [p for p in aml_emulator.state_dir.rglob("*.log*") if p.is_file()]  # the emulator's own logs

    from airflow.models import TaskInstance
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.settings import Session

    with Session() as session:
        xcoms = session.query(XComModel).filter_by(dag_id=run.dag_id, run_id=run.run_id).all()
        rendered = session.query(RenderedTaskInstanceFields).filter_by(dag_id=run.dag_id, run_id=run.run_id).all()
        tis = session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id).all()
        xcom_text = json.dumps([str(x.value) for x in xcoms])
        rendered_text = json.dumps([str(r.rendered_fields) for r in rendered])
        ti_text = json.dumps([str(ti.rendered_map_index) + str(ti.executor_config) for ti in tis])
    assert len(xcoms) >= 4 and "azureml_job_name" in {x.key for x in xcoms}
    assert rendered  # the score tasks' rendered 'unit' fields are there to be searched
    for what, secret in secrets.items():
        assert secret not in captured, f"{what} in the task output"
        assert secret not in xcom_text, f"{what} in XCom"
        assert secret not in rendered_text, f"{what} in rendered templates"
        assert secret not in ti_text, f"{what} in task instances"
        for path in files:
            assert secret.encode() not in path.read_bytes(), f"{what} in {path}"
