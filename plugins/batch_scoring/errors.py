"""The two errors a run's steps raise: one Airflow retries, one it must not."""
from __future__ import annotations


class PipelineError(RuntimeError):
    """A run-stopping problem whose message names the interval and what is at fault."""


class PermanentPipelineError(PipelineError):
    """A fault that retrying the same task cannot fix: a missing, corrupt or incompatible model blob, a
    target the snapshot does not hold, a ``targets`` param that selects nothing, structurally malformed
    aggregates (duplicate, off-grid or straddling windows).

    The DAG's tasks raise it as Airflow's ``AirflowFailException``, so the task fails at once instead of
    spending its retries; transient faults (``BlobStoreUnavailable``, SQL down) stay plain errors and retry.
    """
