"""Which targets a run scores and how they are grouped into mapped scoring units.

One unit per ``device/sensor`` by default, so the UI shows a task per target;
larger units trade that visibility for less per-task overhead. Whatever is
asked, a run never maps more units than Airflow's ``max_map_length``: units
grow until they fit.
"""
from __future__ import annotations

import fnmatch
import math

from batch_scoring.pipeline import chunk


def select_targets(targets: list[str], patterns: list[str] | None) -> list[str]:
    """Targets matching any of the globs (``dev001/*``, ``*/s2``); all of them when none are given."""
    if not patterns:
        return list(targets)
    return [t for t in targets if any(fnmatch.fnmatchcase(t, p) for p in patterns)]


def unit_size(n_targets: int, requested, max_map_length: int, auto_units: int) -> int:
    """Targets per unit: the requested size (or ``auto``: about ``auto_units`` units), grown to fit ``max_map_length``."""
    if n_targets == 0:
        return 1
    if requested == "auto":
        size = math.ceil(n_targets / max(1, auto_units))
    else:
        size = int(requested)
        if size < 1:
            raise ValueError(f"targets_per_unit must be >= 1 or 'auto', got {requested!r}")
    return max(size, math.ceil(n_targets / max_map_length))


def apply_run_params(plan: dict, params: dict, max_map_length: int, auto_units: int) -> dict:
    """Narrow the snapshot's plan to the run's ``targets`` and group it into units (none for a dry run)."""
    patterns = params.get("targets") or []
    targets = select_targets(plan["targets"], patterns)
    skipped = {t: why for t, why in plan["skipped"].items() if t in set(select_targets(list(plan["skipped"]), patterns))}
    size = unit_size(len(targets), params.get("targets_per_unit", 1), max_map_length, auto_units)
    units = [] if params.get("dry_run") else chunk(targets, size)
    return {**plan, "targets": targets, "skipped": skipped, "units": units, "targets_per_unit": size,
            "selection": list(patterns), "dry_run": bool(params.get("dry_run"))}
