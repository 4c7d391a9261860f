"""Helpers shared by the DAG tests."""
from __future__ import annotations

import datetime as dt
import io
import json

import pandas as pd
import pytest

from batch_scoring.scoring.layout import manifest_blob

HOUR = dt.timedelta(hours=1)


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    from devstack.services import REPO

    return DagBag(dag_folder=str(REPO / "dags")).dags["batch_scoring"]


def run_interval(dag, start: dt.datetime, **conf):
    """dag.test() of the run whose data interval is [start, start + 1h) (UTC); returns (run, succeeded)."""
    from airflow.utils.state import DagRunState

    start = start.replace(tzinfo=dt.timezone.utc)
    # A manual run infers its interval as the one ending at its logical date.
    run = dag.test(logical_date=start + HOUR, run_conf=conf or None)
    assert run.data_interval_start == start and run.data_interval_end == start + HOUR
    return run, run.state == DagRunState.SUCCESS


def task_states(run) -> dict[tuple[str, int], str]:
    from airflow.settings import Session
    from airflow.models import TaskInstance

    with Session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id).all()
        return {(ti.task_id, ti.map_index): ti.state for ti in tis}


def collect_result(run) -> dict:
    """What the run's collect task returned (its XCom)."""
    from airflow.models.xcom import XComModel
    from airflow.settings import Session

    with Session() as session:
        query = XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, task_ids="collect", key="return_value")
        return XComModel.deserialize_value(session.scalars(query).first())


def read_parquet_blob(store, container, name) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(store.download_bytes(container, name)))


def read_manifest(store, interval_key: str) -> dict:
    return json.loads(store.download_bytes("predictions", manifest_blob(interval_key)))


def build_world(sql_conn_str: str, store, models_dir, **kwargs):
    """Simulate, aggregate, train and deploy a small world on this test's SQL database and Azurite."""
    from batch_scoring.config import settings
    from devstack.world import simulate_world
    from batch_scoring.sensor_db.schema import connect

    conn = connect(sql_conn_str)
    try:
        return simulate_world(conn, store, settings(), models_dir, **kwargs)
    finally:
        conn.close()
