"""Which targets a run scores and how they are grouped into mapped scoring units.

One unit per ``device/sensor`` by default, so the UI shows a task per target;
larger units trade that visibility for less per-task overhead. Whatever is
asked, a run never maps more units than Airflow's ``max_map_length``: units
grow until they fit.
"""
from __future__ import annotations

import fnmatch
import math

from batch_scoring.errors import PermanentPipelineError


def chunk(items: list, size: int) -> list[list]:
    """``items`` cut into consecutive lists of ``size`` (the last may be shorter; a size below 1 counts as 1)."""
    size = max(1, int(size))
    return [items[i : i + size] for i in range(0, len(items), size)]


def unit_label(unit: list[str]) -> str:
    """How a scoring unit (a list of ``device/sensor``) is named in the UI: its target, or its first and last
    with the count (``dev001/s1 .. dev004/s2 (8)``)."""
    return unit[0] if len(unit) == 1 else f"{unit[0]} .. {unit[-1]} ({len(unit)})"


def select_targets(targets: list[str], patterns: list[str] | None) -> list[str]:
    """Targets matching any of the globs (``dev001/*``, ``*/s2``); all of them when none are given."""
    if not patterns:
        return list(targets)
    return [t for t in targets if any(fnmatch.fnmatchcase(t, p) for p in patterns)]


def auto_costs(settings, backend: str, airflow_slots: int, max_map_length: int, period_seconds: float):
    """The ``scoring.planner.Params`` (for 0 targets: fill in ``targets``) that ``auto`` plans a run with.

    ``backend`` ``local``: ``settings.auto_slots`` task slots (0 = ``airflow_slots``, the Airflow side's
    parallel task capacity), ``auto_task_overhead_seconds`` per task; ``azureml``: ``auto_slots`` (0 =
    ``azureml_max_nodes``) nodes of one job each, ``azureml_job_overhead_seconds`` per job. Both:
    ``auto_target_seconds`` per target, ``max_map_length`` as the cap on units, and
    ``auto_unit_memory_gib`` as the memory a unit may hold for an interval of ``period_seconds``
    (the run's data interval: its windows are what a unit holds).
    """
    from batch_scoring.scoring.planner import Params

    common = dict(per_target=settings.auto_target_seconds, max_jobs=max_map_length,
                  node_memory_gib=settings.auto_unit_memory_gib, period=period_seconds)
    if backend == "azureml":
        return Params(0, max_nodes=settings.auto_slots or settings.azureml_max_nodes, jobs_per_node=1,
                      job_overhead=settings.azureml_job_overhead_seconds, mode="azureml", **common)
    return Params(0, workers=settings.auto_slots or max(1, airflow_slots), job_overhead=settings.auto_task_overhead_seconds,
                  mode="local", **common)


def unit_size(n_targets: int, requested, max_map_length: int, costs=None, max_unit_seconds: float = math.inf) -> int:
    """Targets per unit: the requested whole number, grown to fit ``max_map_length``; or, for ``"auto"``,
    ``scoring.planner.auto_targets_per_unit`` for ``costs`` (:func:`auto_costs`) and ``max_unit_seconds``.

    Raises ``ValueError`` for a size below 1, or ``auto`` without ``costs``.
    """
    if n_targets == 0:
        return 1
    if requested == "auto":
        from dataclasses import replace

        from batch_scoring.scoring.planner import auto_targets_per_unit

        if costs is None:
            raise ValueError("targets_per_unit='auto' needs the cost model (auto_costs)")
        return auto_targets_per_unit(replace(costs, targets=n_targets, max_jobs=max_map_length), max_unit_seconds)
    size = int(requested)
    if size < 1:
        raise ValueError(f"targets_per_unit must be >= 1 or 'auto', got {requested!r}")
    return max(size, math.ceil(n_targets / max_map_length))


def _some(items, limit: int = 10) -> str:
    items = list(items)
    more = f", ... and {len(items) - limit:,} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def check_selection(plan: dict, patterns: list[str]) -> list[str]:
    """What the run's ``targets`` globs matched in the snapshot's plan, as log lines (none for no globs).

    ``plan``: the snapshot's plan (``interval``, ``targets`` with aggregates and a model, ``skipped``
    target -> reason). Raises ``PermanentPipelineError`` when the globs select none of the targets: the
    message names the selection, how many targets it was matched against, and the skipped targets it
    matched, if any. A glob that matches nothing, or only skipped targets, among globs that do select
    targets is reported in the returned lines, and the run goes on with what was selected.
    """
    if not patterns:
        return []
    targets, skipped = plan["targets"], plan["skipped"]
    against = f"{len(targets)} targets with aggregates and a model" + (f" ({_some(targets)})" if targets else "")
    lines = []
    for pattern in patterns:
        hits = select_targets(targets, [pattern])
        if hits:
            continue
        skipped_hits = select_targets(list(skipped), [pattern])
        if skipped_hits:
            lines.append(f"targets pattern {pattern!r} matched only skipped targets: "
                         + _some(f"{t} ({skipped[t]})" for t in skipped_hits))
        else:
            lines.append(f"targets pattern {pattern!r} matched none of the {against} nor any skipped target; "
                         "check it for a typo")
    selected = select_targets(targets, patterns)
    if not selected:
        skipped_hits = select_targets(list(skipped), patterns)
        why = ("; it matched only skipped targets: " + _some(f"{t} ({skipped[t]})" for t in skipped_hits)
               if skipped_hits else "")
        raise PermanentPipelineError(
            f"interval {plan['interval']}: the run's targets selection {list(patterns)} matched none of the "
            f"{against}{why}; fix the `targets` param (globs such as dev001/* or */s2; empty = every target) "
            "and trigger the run again"
        )
    return [f"targets selection {list(patterns)}: {len(selected)} of the {len(targets)} targets with aggregates "
            "and a model selected"] + lines


def apply_run_params(plan: dict, params: dict, max_map_length: int, costs=None,
                     max_unit_seconds: float = math.inf) -> dict:
    """Narrow the snapshot's plan to the run's ``targets`` and group it into units (none for a dry run).

    ``costs``/``max_unit_seconds``: what ``targets_per_unit="auto"`` plans with (:func:`unit_size`).

    Adds ``selection`` (the globs; ``[]`` = every target), ``unselected`` (targets with aggregates and a
    model the globs left out: the collector keeps their earlier results), ``unselected_skipped`` (skipped
    targets the globs left out: still listed as skipped) and ``selection_notes`` (log lines). Raises
    ``PermanentPipelineError`` when the globs select no target (see ``check_selection``).
    """
    patterns = list(params.get("targets") or [])
    notes = check_selection(plan, patterns)
    targets = select_targets(plan["targets"], patterns)
    chosen_skipped = set(select_targets(list(plan["skipped"]), patterns))
    skipped = {t: why for t, why in plan["skipped"].items() if t in chosen_skipped}
    size = unit_size(len(targets), params.get("targets_per_unit", 1), max_map_length, costs, max_unit_seconds)
    units = [] if params.get("dry_run") else chunk(targets, size)
    chosen = set(targets)
    return {**plan, "targets": targets, "skipped": skipped, "units": units, "targets_per_unit": size,
            "selection": patterns, "dry_run": bool(params.get("dry_run")),
            "unselected": [t for t in plan["targets"] if t not in chosen],
            "unselected_skipped": {t: why for t, why in plan["skipped"].items() if t not in chosen_skipped},
            "selection_notes": notes}
