"""Target selection and unit sizing."""
from __future__ import annotations

import pytest

from batch_scoring.scoring.planner import Params
from batch_scoring.units import apply_run_params, auto_costs, chunk, select_targets, unit_label, unit_size

TARGETS = [f"dev{d:03d}/s{s}" for d in range(1, 4) for s in range(1, 3)]


def test_chunk_and_unit_label():
    assert chunk(list("abcde"), 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert chunk([], 3) == []
    assert chunk(list("ab"), 0) == [["a"], ["b"]]
    assert unit_label(["d1/s1"]) == "d1/s1"
    assert unit_label(["d1/s1", "d1/s2", "d2/s1"]) == "d1/s1 .. d2/s1 (3)"


def test_select_targets_by_globs():
    assert select_targets(TARGETS, []) == TARGETS
    assert select_targets(TARGETS, ["dev002/*"]) == ["dev002/s1", "dev002/s2"]
    assert select_targets(TARGETS, ["*/s2", "dev001/s1"]) == ["dev001/s1", "dev001/s2", "dev002/s2", "dev003/s2"]
    assert select_targets(TARGETS, ["nope/*"]) == []


LOCAL_4 = Params(0, workers=4, job_overhead=1.0, per_target=0.025, mode="local")  # 4 slots, 1 s + 25 ms/target


@pytest.mark.parametrize("n, requested, max_map, expected", [
    (10, 1, 1024, 1),
    (10, 3, 1024, 3),
    (10_000, 1, 1024, 10),     # 10,000 one-target units would exceed max_map_length: grow to 10
    (1025, 1, 1024, 2),
    (1024, 1, 1024, 1),
    (10_000, "auto", 1024, 2500),   # one wave over 4 slots: 4 units
    (10, "auto", 1024, 3),          # 4 units of 3, 3, 3, 1
    (3, "auto", 1024, 1),           # fewer targets than slots: one each
    (0, "auto", 1024, 1),
    (100_000, "auto", 8, 25_000),   # one wave: 4 units, within max_map_length 8 (no unit cap here)
])
def test_unit_size(n, requested, max_map, expected):
    size = unit_size(n, requested, max_map, LOCAL_4)
    assert size == expected
    assert -(-n // size) <= max_map


def test_auto_keeps_a_unit_under_the_cap_and_never_maps_more_than_max_map_length():
    # 10,000 targets at 25 ms: one wave would make units of 63 s; a 30 s cap takes the fewest waves within it
    size = unit_size(10_000, "auto", 1024, LOCAL_4, max_unit_seconds=30)
    assert size == 834  # 3 waves of 4 units: 1 + 834 * 0.025 = 21.9 s; 2 waves (1,250/unit) = 32.3 s > 30
    assert unit_size(10_000, "auto", 16, LOCAL_4, max_unit_seconds=1) == 625  # no size fits 1 s: max_map_length wins
    azure = auto_costs(_Settings(auto_slots=0, azureml_max_nodes=3), "azureml", 99, 1024, 3600)
    assert (azure.mode, azure.max_nodes, azure.job_overhead) == ("azureml", 3, 60.0)
    assert unit_size(900, "auto", 1024, azure) == 300  # one job per node
    local = auto_costs(_Settings(auto_slots=0), "local", 6, 1024, 3600)
    assert (local.mode, local.workers, local.job_overhead, local.per_target) == ("local", 6, 1.0, 0.025)
    assert auto_costs(_Settings(auto_slots=2), "local", 6, 1024, 3600).workers == 2


def test_auto_costs_carry_the_unit_memory_and_the_interval_length():
    day = auto_costs(_Settings(auto_slots=4), "local", 4, 1024, period_seconds=86_400)
    assert (day.node_memory_gib, day.period) == (4.0, 86_400)  # the default: 4 GiB
    assert unit_size(100_000, "auto", 1024, day) == 12_500  # 4 GiB holds 21,190 targets of a day: 2 waves of 4
    hour = auto_costs(_Settings(auto_slots=4), "local", 4, 1024, period_seconds=3_600)
    assert unit_size(100_000, "auto", 1024, hour) == 25_000  # 12 windows a target: one wave fits
    off = auto_costs(_Settings(auto_slots=4, auto_unit_memory_gib=0), "local", 4, 1024, period_seconds=86_400)
    assert unit_size(100_000, "auto", 1024, off) == 25_000
    azure = auto_costs(_Settings(azureml_max_nodes=4, auto_unit_memory_gib=16), "azureml", 1, 1024, 86_400)
    assert unit_size(200_000, "auto", 1024, azure) == 50_000  # 16 GiB holds 84,763: 4 nodes x 1 job of 50,000


def _Settings(**over):
    from batch_scoring.config import Settings

    return Settings().model_copy(update=over)


def test_unit_size_rejects_nonsense():
    with pytest.raises(ValueError, match="targets_per_unit"):
        unit_size(5, 0, 1024, LOCAL_4)
    with pytest.raises(ValueError, match="cost model"):
        unit_size(5, "auto", 1024)


def test_apply_run_params_filters_groups_and_dry_runs():
    plan = {"interval": "k", "targets": TARGETS, "skipped": {"dev009/s1": "no model deployed", "dev001/s9": "no model deployed"}}
    out = apply_run_params(plan, {"targets": ["dev001/*"], "targets_per_unit": 2}, 1024)
    assert out["targets"] == ["dev001/s1", "dev001/s2"]
    assert out["units"] == [["dev001/s1", "dev001/s2"]]
    assert out["skipped"] == {"dev001/s9": "no model deployed"}
    assert out["selection"] == ["dev001/*"]
    dry = apply_run_params(plan, {"dry_run": True}, 1024)
    assert dry["units"] == [] and dry["targets"] == TARGETS and dry["dry_run"] is True
    sharded = apply_run_params(plan, {"targets_per_unit": 1}, 4)
    assert len(sharded["units"]) <= 4 and sum(sharded["units"], []) == TARGETS


# --- a selection that matches nothing, or only part (issue 10, item 5) -------------------------------

FOUR = ["dev001/s1", "dev001/s2", "dev002/s1", "dev002/s2"]


@pytest.mark.parametrize("patterns", [["nosuch/*"], ["dev01/*", "*/s3"]])
def test_a_selection_matching_nothing_names_itself_and_what_it_was_matched_against(patterns):
    from batch_scoring.errors import PermanentPipelineError

    plan = {"interval": "k", "targets": FOUR, "skipped": {}}
    with pytest.raises(PermanentPipelineError) as err:
        apply_run_params(plan, {"targets": patterns}, 1024)
    assert str(err.value) == (
        f"interval k: the run's targets selection {patterns} matched none of the 4 targets with aggregates and a "
        "model (dev001/s1, dev001/s2, dev002/s1, dev002/s2); fix the `targets` param (globs such as dev001/* or "
        "*/s2; empty = every target) and trigger the run again")


def test_a_selection_matching_only_skipped_targets_says_so():
    from batch_scoring.errors import PermanentPipelineError

    plan = {"interval": "k", "targets": FOUR[:2], "skipped": {"dev002/s1": "no model deployed",
                                                               "dev002/s2": "no model deployed"}}
    with pytest.raises(PermanentPipelineError, match=r"^interval k: the run's targets selection \['dev002/\*'\] "
                       r"matched none of the 2 targets with aggregates and a model \(dev001/s1, dev001/s2\); it "
                       r"matched only skipped targets: dev002/s1 \(no model deployed\), dev002/s2 \(no model "
                       r"deployed\); fix the `targets` param"):
        apply_run_params(plan, {"targets": ["dev002/*"]}, 1024)


def test_a_long_target_list_is_cut_in_the_message():
    from batch_scoring.errors import PermanentPipelineError

    many = [f"dev{d:03d}/s1" for d in range(25)]
    with pytest.raises(PermanentPipelineError, match=r"matched none of the 25 targets with aggregates and a model "
                       r"\(dev000/s1, .*, dev009/s1, \.\.\. and 15 more\); fix"):
        apply_run_params({"interval": "k", "targets": many, "skipped": {}}, {"targets": ["x/*"]}, 1024)


def test_partial_matches_are_reported_and_the_run_goes_on_with_what_was_selected():
    plan = {"interval": "k", "targets": FOUR[:3], "skipped": {"dev002/s2": "no model deployed"}}
    out = apply_run_params(plan, {"targets": ["dev001/*", "dev01/*", "*/s2"]}, 1024)
    assert out["targets"] == ["dev001/s1", "dev001/s2"]
    assert out["skipped"] == {"dev002/s2": "no model deployed"}
    assert out["unselected"] == ["dev002/s1"] and out["unselected_skipped"] == {}
    assert out["selection"] == ["dev001/*", "dev01/*", "*/s2"]
    assert out["selection_notes"] == [
        "targets selection ['dev001/*', 'dev01/*', '*/s2']: 2 of the 3 targets with aggregates and a model selected",
        "targets pattern 'dev01/*' matched none of the 3 targets with aggregates and a model (dev001/s1, dev001/s2, "
        "dev002/s1) nor any skipped target; check it for a typo",
    ]
    only_skipped = apply_run_params(plan, {"targets": ["dev001/s1", "dev002/s2"]}, 1024)
    assert only_skipped["selection_notes"][1:] == [
        "targets pattern 'dev002/s2' matched only skipped targets: dev002/s2 (no model deployed)"]
    every = apply_run_params(plan, {"targets": []}, 1024)
    assert every["selection"] == [] and every["selection_notes"] == [] and every["unselected"] == []
    assert every["unselected_skipped"] == {} and every["skipped"] == plan["skipped"]
