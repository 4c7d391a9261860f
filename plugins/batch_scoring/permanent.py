"""Which failed targets retrying cannot fix, and what to do about them: one rule for both backends.

A failed target's receipt (written by ``scoring.score.score_unit`` into the footer of
the unit's part file, on a worker or in an Azure ML job) carries the exception class as ``error_type``; a model
that is missing, tampered, corrupt or incompatible, or a target the snapshot does
not hold, fails the same way on every retry, so the task fails at once naming
the blobs and the way out.
"""
from __future__ import annotations

from batch_scoring.scoring.layout import MODEL_MANIFEST, Interval, model_blob, part_blob, snapshot_blob

from batch_scoring.config import Containers


def permanent_error_names() -> frozenset[str]:
    """Exception classes a receipt's error can start with that retrying the unit cannot fix.

    Every ``scoring.model_store.ModelStoreError`` (missing, tampered, corrupt or incompatible model, and
    any subclass added later) and ``UnknownTargetError`` (no rows in the snapshot).
    """
    from batch_scoring.scoring.model_store import ModelStoreError
    from batch_scoring.scoring.score import UnknownTargetError

    names, todo = {UnknownTargetError.__name__}, [ModelStoreError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(names)


def permanent_cause(receipt: dict) -> str | None:
    """The exception class of a failed receipt (``error_type``, written by ``score_unit``) when retrying
    cannot fix it, else None."""
    name = receipt.get("error_type")
    return name if name in permanent_error_names() else None


def way_out(permanent: list[dict], containers: Containers, interval: Interval) -> str:
    """What to do about the unit's permanent failures: redeploy the models named, or replan the interval."""
    models = [r["target"] for r in permanent if permanent_cause(r) != "UnknownTargetError"]
    unknown = [r["target"] for r in permanent if r["target"] not in models]
    steps = []
    if models:
        blobs = ", ".join(f"{containers.models}/{model_blob(t)} and {MODEL_MANIFEST}" for t in models)
        steps.append(f"redeploy the model of {', '.join(models)} (blobs {blobs}; e.g. `python -m "
                     "devstack.deploy_models MODELS_DIR` in the repository, or upload both files again), then clear the failed "
                     "score task(s) and collect")
    if unknown:
        steps.append(f"{', '.join(unknown)} has no rows in the snapshot {containers.aggregates}/"
                     f"{snapshot_blob(interval)}: clear the snapshot task and its downstream to plan the interval again")
    return "retrying cannot fix this, so the task fails without retries: " + "; ".join(steps)


def permanent_receipts(store, predictions_container: str, interval: Interval, unit: list[str], since) -> list[dict]:
    """The failed receipts of ``unit``'s targets for ``interval`` whose cause retrying cannot fix.

    Read from the footer of the unit's part file (``unit_checks.part_receipts``: range reads), and only
    when that blob was written at or after ``since`` (an aware ``datetime``: the job's creation time), so
    an earlier run's file never condemns a later failure; a file that is absent or no part file counts as
    none. Raises what the ``BlobStore`` raises (``BlobStoreUnavailable``).
    """
    from batch_scoring.unit_checks import part_receipts

    blob = part_blob(interval, unit)
    modified = store.last_modified_many(predictions_container, [blob]).get(blob)
    if modified is None or modified < since:
        return []
    try:
        footer = part_receipts(store, predictions_container, blob) or []
    except ValueError:
        return []
    wanted = set(unit)
    return [r for r in footer if r.get("target") in wanted and r.get("status") != "ok" and permanent_cause(r)]
