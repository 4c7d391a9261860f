"""Target selection and unit sizing."""
from __future__ import annotations

import pytest

from batch_scoring.units import apply_run_params, select_targets, unit_size

TARGETS = [f"dev{d:03d}/s{s}" for d in range(1, 4) for s in range(1, 3)]


def test_select_targets_by_globs():
    assert select_targets(TARGETS, []) == TARGETS
    assert select_targets(TARGETS, ["dev002/*"]) == ["dev002/s1", "dev002/s2"]
    assert select_targets(TARGETS, ["*/s2", "dev001/s1"]) == ["dev001/s1", "dev001/s2", "dev002/s2", "dev003/s2"]
    assert select_targets(TARGETS, ["nope/*"]) == []


@pytest.mark.parametrize("n, requested, max_map, auto, expected", [
    (10, 1, 1024, 8, 1),
    (10, 3, 1024, 8, 3),
    (10_000, 1, 1024, 8, 10),     # 10,000 one-target units would exceed max_map_length: grow to 10
    (1025, 1, 1024, 8, 2),
    (1024, 1, 1024, 8, 1),
    (10_000, "auto", 1024, 8, 1250),
    (5, "auto", 1024, 8, 1),
    (0, "auto", 1024, 8, 1),
])
def test_unit_size(n, requested, max_map, auto, expected):
    size = unit_size(n, requested, max_map, auto)
    assert size == expected
    assert -(-n // size) <= max_map


def test_unit_size_rejects_nonsense():
    with pytest.raises(ValueError, match="targets_per_unit"):
        unit_size(5, 0, 1024, 8)


def test_apply_run_params_filters_groups_and_dry_runs():
    plan = {"interval": "k", "targets": TARGETS, "skipped": {"dev009/s1": "no model deployed", "dev001/s9": "no model deployed"}}
    out = apply_run_params(plan, {"targets": ["dev001/*"], "targets_per_unit": 2}, 1024, 8)
    assert out["targets"] == ["dev001/s1", "dev001/s2"]
    assert out["units"] == [["dev001/s1", "dev001/s2"]]
    assert out["skipped"] == {"dev001/s9": "no model deployed"}
    assert out["selection"] == ["dev001/*"]
    dry = apply_run_params(plan, {"dry_run": True}, 1024, 8)
    assert dry["units"] == [] and dry["targets"] == TARGETS and dry["dry_run"] is True
    sharded = apply_run_params(plan, {"targets_per_unit": 1}, 4, 8)
    assert len(sharded["units"]) <= 4 and sum(sharded["units"], []) == TARGETS
