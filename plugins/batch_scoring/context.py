"""What the DAG's tasks and operators read from an Airflow task context (no other imports: operators use it)."""
from __future__ import annotations

from batch_scoring.errors import PipelineError
from batch_scoring.scoring.layout import Interval
from batch_scoring.scoring.times import utc_naive


def interval_from_context(context) -> Interval:
    """The run's data interval from an Airflow task context, as naive UTC ``Interval``.

    ``context["data_interval_start"]``/``["data_interval_end"]``: aware datetimes (or ISO text), converted
    to UTC. Raises ``PipelineError`` naming the run when either is missing or the interval is empty.
    """
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or end is None or start >= end:
        raise PipelineError(
            f"run {context.get('run_id')} has no data interval ({start} to {end}); "
            "trigger runs with a logical date so the interval is defined"
        )
    return Interval(utc_naive(start), utc_naive(end))
