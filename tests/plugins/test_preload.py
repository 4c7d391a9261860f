"""preload: who imports the scoring stack, and that a preloaded parent leaves a task's heaviest imports done."""
from __future__ import annotations

import subprocess
import sys

from batch_scoring import preload


def test_only_a_scheduler_or_celery_worker_that_opted_in_preloads(monkeypatch):
    monkeypatch.setenv("BATCH_SCORING_PRELOAD", "1")
    assert preload.wanted(["airflow", "scheduler"])
    assert preload.wanted(["airflow", "celery", "worker"])
    assert not preload.wanted(["airflow", "api-server"])
    assert not preload.wanted(["airflow", "dag-processor"])
    monkeypatch.setenv("BATCH_SCORING_PRELOAD", "0")
    assert not preload.wanted(["airflow", "scheduler"])


def test_after_preload_the_report_heatmap_imports_nothing_new_and_draws_headless():
    # a fresh interpreter, no MPLBACKEND: what a forked collect task inherits from the scheduler
    code = """
import os, sys
os.environ.pop('MPLBACKEND', None)
from batch_scoring import preload
preload.preload()
import pandas as pd
from batch_scoring.report import heatmap_png
before = set(sys.modules)
png = heatmap_png(pd.DataFrame([[0, 1], [2, 0]], index=['d1', 'd2'], columns=pd.date_range('2026-01-01', periods=2, freq='5min')), 't')
import matplotlib
print(sorted(m for m in set(sys.modules) - before if m.startswith('matplotlib')), png[:4] == b'\\x89PNG', matplotlib.get_backend().lower())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["[]", "True", "agg"]
