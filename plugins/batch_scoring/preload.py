"""Import the scoring stack once in a long-lived parent so forked task processes inherit it.

Airflow's LocalExecutor (and Celery's prefork pool) fork each task from a
long-lived process. A scoring task spends most of its CPU importing pandas,
pyarrow, scikit-learn, the blob SDK and the provider's WasbHook (and the collector
about 0.7 s importing matplotlib for its heatmap); importing them once in the
parent makes that cost vanish from every task. Opt in with
``BATCH_SCORING_PRELOAD=1`` and call ``preload()`` from
``airflow_local_settings.py``; only the scheduler (the parent of LocalExecutor
workers) and Celery workers need it.
"""
from __future__ import annotations

import os
import sys

MODULES = ("pandas", "pyarrow.parquet", "sklearn.pipeline", "sklearn.svm", "sklearn.preprocessing",
           "joblib", "azure.storage.blob", "airflow.providers.microsoft.azure.hooks.wasb", "batch_scoring.scoring.score",
           "batch_scoring.sensor_db.reads", "matplotlib.pyplot", "matplotlib.backends.backend_agg")


def wanted(argv=None) -> bool:
    """True when ``BATCH_SCORING_PRELOAD=1`` and ``argv`` (default ``sys.argv``) is an Airflow scheduler or Celery worker."""
    argv = sys.argv if argv is None else argv
    role = " ".join(argv[1:3])
    return os.environ.get("BATCH_SCORING_PRELOAD") == "1" and ("scheduler" in role or "celery worker" in role)


def preload() -> None:
    """Import ``MODULES`` into this process; ``ImportError`` if one is not installed.

    Sets ``MPLBACKEND=Agg`` unless set: a scheduler or worker has no display, and the report draws to PNG.
    """
    import importlib

    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in MODULES:
        importlib.import_module(name)
