"""The DAG file parses, has the expected shape, and imports nothing heavy."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from devstack.services import REPO

HEAVY = ["pandas", "numpy", "sklearn", "pyarrow", "pyodbc", "azure.ai.ml", "azure.storage.blob",
         "airflow.providers.microsoft.azure.hooks.wasb", "batch_scoring.sensor_db.reads", "batch_scoring.ingest_sim.loads", "batch_scoring.scoring.score"]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dags) == {"batch_scoring"}


def test_structure(dagbag):
    from airflow.timetables.interval import CronDataIntervalTimetable

    dag = dagbag.dags["batch_scoring"]
    assert set(dag.task_ids) == {"wait_for_aggregates", "snapshot", "score", "collect"}
    assert dag.get_task("wait_for_aggregates").downstream_task_ids == {"snapshot"}
    assert dag.get_task("snapshot").downstream_task_ids == {"score"}
    assert dag.get_task("score").downstream_task_ids == {"collect"}
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.summary == "0 * * * *"
    assert dag.catchup is False
    assert dag.doc_md and "backfill" in dag.doc_md
    assert {"scoring", "azure-ml"} <= set(dag.tags)
    assert set(dag.params) == {"targets", "targets_per_unit", "backend", "min_coverage", "dry_run"}
    assert dag.params["backend"] == "local" and dag.params["targets_per_unit"] == 1


def test_tasks_retry_and_score_is_mapped_with_names(dagbag):
    dag = dagbag.dags["batch_scoring"]
    for task in dag.tasks:
        assert task.retries >= 1, task.task_id
    score = dag.get_task("score")
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    assert isinstance(score, MappedOperator)
    assert score.operator_class.__name__ == "ScoringOperator"
    assert score.map_index_template == "{{ unit_label }}"
    assert dag.get_task("wait_for_aggregates").mode == "reschedule"
    assert dag.get_task("collect").trigger_rule == "all_done"
    assert [o.name for o in dag.get_task("collect").outlets] == ["batch_scoring_predictions"]


def _parse_in_fresh_process(extra_env=None):
    code = textwrap.dedent(f"""
        import json, sys, time
        t = time.perf_counter()
        from airflow.dag_processing.dagbag import DagBag
        before = set(sys.modules)
        bag = DagBag(dag_folder={str(REPO / 'dags')!r})
        print(json.dumps({{"errors": {{k: str(v)[-300:] for k, v in bag.import_errors.items()}},
                          "dags": sorted(bag.dags),
                          "heavy": [m for m in {HEAVY!r} if m in sys.modules and m not in before]}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **(extra_env or {})}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_parse_imports_nothing_heavy():
    result = _parse_in_fresh_process()
    assert result["errors"] == {}
    assert result["heavy"] == []


def test_unknown_backend_is_an_import_error_naming_it():
    result = _parse_in_fresh_process({"BATCH_SCORING_BACKEND": "spark"})
    assert result["dags"] == []
    assert "spark" in next(iter(result["errors"].values()))
