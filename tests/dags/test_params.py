"""Run params through dag.test(): target filter, batching, dry run, validation."""
from __future__ import annotations

import datetime as dt

import pytest

from batch_scoring.scoring.layout import interval_prefix
from tests.dags.conftest import build_world, read_manifest, run_interval, task_states

HISTORY = (dt.datetime(2026, 6, 1), dt.datetime(2026, 6, 2))
SCORING = (dt.datetime(2026, 6, 2), dt.datetime(2026, 6, 2, 1))
KEY = "20260602T0000Z_20260602T0100Z"


@pytest.fixture
def world(airflow_db, airflow_connections, blob_store, tmp_path):
    return build_world(airflow_connections[0], blob_store, tmp_path / "models", devices=2, sensors=2,
                       history=HISTORY, scoring=SCORING, reading_seconds=60, seed=11)


@pytest.mark.parametrize("bad", [
    {"targets_per_unit": 0}, {"targets_per_unit": "many"}, {"backend": "spark"},
    {"min_coverage": 1.5}, {"targets": ["no-slash"]}, {"dry_run": "yes"},
])
def test_invalid_params_are_refused(dag, bad):
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    (key, value), = bad.items()
    with pytest.raises(ParamValidationError, match=f"Invalid input for param {key}"):
        params = ParamsDict(dag.params)
        params[key] = value  # a manual run's conf is validated like this before the run is created
        params.validate()


def test_default_params_validate(dag):
    from airflow.sdk.definitions.param import ParamsDict

    assert ParamsDict(dag.params).validate()["targets_per_unit"] == 1


@pytest.mark.parametrize("sql_conn_str", ["sqlite"], indirect=True)
def test_target_filter_and_batching(dag, world, blob_store):
    run, ok = run_interval(dag, SCORING[0], targets=["dev001/*"], targets_per_unit=2)
    assert ok, run.state
    states = task_states(run)
    assert [k for k in states if k[0] == "score"] == [("score", 0)]  # one unit holding both targets
    manifest = read_manifest(blob_store, KEY)
    # no earlier manifest: the targets the selection left out are listed as not selected (issue 10, item 8)
    assert {t: e["status"] for t, e in manifest["targets"].items()} == {
        "dev001/s1": "ok", "dev001/s2": "ok", "dev002/s1": "not_selected", "dev002/s2": "not_selected"}
    assert manifest["counts"] == {"ok": 2, "failed": 0, "skipped": 0, "not_selected": 2}
    assert manifest["selection"] == ["dev001/*"] and manifest["coverage"] == 0.5
    assert manifest["selected"] == {"targets": 2, "ok": 2, "failed": 0, "coverage": 1.0}
    names = blob_store.list_names("predictions", interval_prefix(KEY))
    assert not any("dev002" in n for n in names)


@pytest.mark.parametrize("sql_conn_str", ["sqlite"], indirect=True)
@pytest.mark.parametrize("slots, units", [("3", [("score", 0), ("score", 1)]), ("1", [("score", 0)])])
def test_auto_batching_plans_units_from_the_cost_model(dag, world, blob_store, monkeypatch, capsys, slots, units):
    """4 targets, 1 s per task + 25 ms per target: one wave over the slots (3 slots: 2 units of 2; 1 slot: 1 of 4);
    the snapshot's log says what auto chose and from which costs."""
    monkeypatch.setenv("BATCH_SCORING_AUTO_SLOTS", slots)
    run, ok = run_interval(dag, SCORING[0], targets=[], targets_per_unit="auto")  # every param this test relies on:
    # dag.test() of a logical date an earlier test ran keeps that run's other params
    assert ok, run.state
    assert [k for k in task_states(run) if k[0] == "score"] == units
    assert read_manifest(blob_store, KEY)["counts"]["ok"] == 4
    assert (f"targets_per_unit=auto: {4 // len(units)} per unit, {len(units)} units in 1 wave(s) over {slots} slots; "
            f"modelled {1 + 0.025 * (4 // len(units)):.1f} s per unit (1 s + 25 ms per target)") in capsys.readouterr().out


@pytest.mark.parametrize("sql_conn_str", ["sqlite"], indirect=True)
def test_auto_keeps_a_unit_within_the_memory_a_unit_may_hold(dag, world, blob_store, monkeypatch, capsys):
    """1 slot would take all 4 targets in one unit; 2e-05 GiB holds 2 targets of an hour (0.8 x 2e-05 GiB /
    (563 bytes x 12 windows) = 2.5; a day's 288 windows would allow 1): 2 units of 2, in 2 waves."""
    monkeypatch.setenv("BATCH_SCORING_AUTO_SLOTS", "1")
    monkeypatch.setenv("BATCH_SCORING_AUTO_UNIT_MEMORY_GIB", "0.00002")
    run, ok = run_interval(dag, SCORING[0], targets=[], targets_per_unit="auto")
    assert ok, run.state
    assert [k for k in task_states(run) if k[0] == "score"] == [("score", 0), ("score", 1)]
    assert read_manifest(blob_store, KEY)["counts"]["ok"] == 4
    assert ("targets_per_unit=auto: 2 per unit, 2 units in 2 wave(s) over 1 slots; modelled 1.1 s per unit "
            "(1 s + 25 ms per target); at most 2 targets per unit fit 2e-05 GiB") in capsys.readouterr().out


@pytest.mark.parametrize("sql_conn_str", ["sqlite"], indirect=True)
def test_dry_run_scores_nothing(dag, world, blob_store):
    run, ok = run_interval(dag, SCORING[0], dry_run=True)
    assert ok, run.state
    states = task_states(run)
    assert states[("snapshot", -1)] == "success"
    assert states[("collect", -1)] == "skipped"
    assert blob_store.list_names("predictions", interval_prefix(KEY)) == []
    assert blob_store.exists("aggregates", f"{KEY}/aggregates.parquet")
