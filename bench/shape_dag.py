"""The batch_scoring DAG's shape with no work in it: what Airflow itself costs per run here.

``wait_for_aggregates`` -> ``snapshot`` (returns ``conf["units"]`` units, 4 by
default) -> ``score`` mapped over them -> ``collect``; every task returns at
once. ``python -m bench`` copies this file into its standalone's DAG folder and
runs it after the real DAG's modes, with the unit count of the last one, so a
run's orchestration floor (scheduling, queueing, task start-up, the API calls of
each task) is measured on the same machine and Airflow, not guessed. Not part
of the package: nothing here is installed or parsed outside the benchmark.
"""
from __future__ import annotations

from airflow.sdk import DAG, get_current_context, task

SHAPE_DAG_ID = "bench_shape"

with DAG(SHAPE_DAG_ID, schedule=None, catchup=False, tags=["bench"],
         doc_md="No-op tasks in the shape of batch_scoring (bench/shape_dag.py).",
         default_args={"retries": 0}) as dag:

    @task
    def wait_for_aggregates() -> None:
        """The sensor's place: its first poke succeeds."""

    @task
    def snapshot() -> list[list[int]]:
        """``conf["units"]`` units to map over."""
        return [[i] for i in range(int(get_current_context()["dag_run"].conf.get("units", 4)))]

    @task
    def score(unit: list[int]) -> list[int]:
        """One mapped task per unit, returning its unit (the receipts' place)."""
        return unit

    @task
    def collect(receipts) -> int:
        """Reads every mapped task's return value, as the collector does."""
        return len(list(receipts))

    units = snapshot()
    wait_for_aggregates() >> units
    collect(score.expand(unit=units))
