"""devstack.demo.tasks_finished: the backfill's progress counts Airflow's finished task states and asks a
finished run's task instances once."""
from devstack.demo import tasks_finished


class _Api:
    """Answers all_task_instances from a dict (the REST client's shape) and counts the calls."""

    def __init__(self, states):
        self.states, self.calls = states, []

    def all_task_instances(self, dag_id, run_id):
        self.calls.append(run_id)
        return [{"state": s} for s in self.states[run_id]]


def test_counts_finished_states_and_asks_a_finished_run_once():
    api = _Api({"a": ["success", "upstream_failed", "skipped", "running"], "b": ["queued", None, "failed"]})
    runs = [{"dag_run_id": "a", "state": "success"}, {"dag_run_id": "b", "state": "running"}]
    done: dict = {}
    assert tasks_finished(api, "d", runs, done) == (4, 7)  # a: 3 of 4 finished, b: 1 of 3
    api.states["a"] = ["success"] * 9  # a finished run is not asked again
    assert tasks_finished(api, "d", runs, done) == (4, 7)
    assert api.calls == ["a", "b", "b"]
