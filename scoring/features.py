"""Per-window features for the one-class models: what they catch and how well.

Features (``scoring.config.FEATURES``), computed per 5-minute window from the
aggregate columns only, plus two per-target reference numbers fixed at training
time and stored in the manifest (``std_ref`` = median training window std, with
the fallbacks of ``std_reference`` when that is 0; ``n_ref`` = median training
readings per window):

==================  =====================================================  ==========================
feature             definition                                             catches
==================  =====================================================  ==========================
``value_mean``      window mean                                            level shift, drift
``log_std_ratio``   ``log(value_std / std_ref + 0.01)``                    stuck sensor (std == 0 ->
                                                                           log 0.01 = -4.6), spikes
``peak_ratio``      ``max(value_max - mean, mean - value_min) / std_ref``  spikes (either sign), stuck
``coverage``        ``n_readings / n_ref``                                 dropouts (missing readings)
==================  =====================================================  ==========================

Model per device/sensor: ``Pipeline(FlooredStandardScaler, OneClassSVM(kernel="rbf",
gamma=0.05, nu=0.01))`` on those four features (``SVM_PARAMS``;
``scoring.scaler.FlooredStandardScaler`` is StandardScaler with a floor on each
feature's scale, see "Degenerate training data" below), with a
per-target calibrated threshold kept in the manifest: a window is anomalous
when ``decision_score < -0.3 * rho`` (``THRESHOLD_FRACTION``; ``rho`` is the
fitted SVM's ``offset_``, so ``-rho`` is the score of a window unlike every
training window: the threshold is scale-free). The raw OCSVM boundary (score
< 0) flags ~3-5 % of normal windows on one day of training; the reference's
recipe (OneClassSVM(gamma=0.01, nu=0.0001) on the mean alone) cannot see a
stuck sensor or a dropout at all, since neither moves the mean.

Anomaly sizes (``ingest_sim.simulator``; sigma = the pair's reading noise,
AR(1) with phi 0.3-0.7, 10-second readings, 2 % random loss): spikes of 1-3
readings at +/-5..8 sigma; level shifts of +/-2..4 sigma for 3-12 windows;
drift at 0.4-0.8 sigma per window, labelled from 1 sigma on for 4-8 windows;
stuck sensor (frozen at its last reading) for 2-8 windows; dropouts of 50-90 %
of the readings for 2-6 windows. ~12-13 % of scored windows are anomalous.

Measured (tests/scoring/test_detection_quality.py: 20 devices x 4 sensors,
trained on one normal day = 288 windows per target, scored on the next day,
23,040 windows; per-window precision/recall, a window counts as anomalous when
it overlaps a label):

====  =========  ======  =====  =======  ===========  =====  =====
seed  precision  recall  drift  dropout  level_shift  spike  stuck
====  =========  ======  =====  =======  ===========  =====  =====
42    0.989      0.966   0.884  1.000    0.994        0.953  1.000
7     0.989      0.967   0.892  1.000    0.990        0.962  1.000
2026  0.992      0.966   0.888  1.000    0.997        0.931  1.000
====  =========  ======  =====  =======  ===========  =====  =====

Misses are mostly the first labelled window of a drift (offset 1-1.8 sigma,
i.e. ~3-4 standard deviations of a window mean under AR(1) noise) and spikes
at the small end whose reading happens to land against the noise.

Degenerate training data. A feature that did not vary over the training
windows - a frozen or set-point sensor (constant mean, std 0), a sensor that
always delivers exactly the same number of readings (constant ``coverage``),
or one whose noise is below the std floor (std 1e-9 at level 20) - has ~zero
training variance. ``StandardScaler`` divides such a feature by 1 (raw units),
so with a fixed ``gamma`` the model's sensitivity to it depended on its units:
a sensor that always had 30 readings scored a window with 3 of them at -0.0095
against its threshold -0.072 (not flagged). Training now divides each feature
by ``max(training std, floor)``, the floor being ``SCALE_FLOOR_FRACTION``
(0.5) times the feature's natural unit at the target's ``std_ref`` and
``n_ref`` (``scale_floor``): the standard error of a window mean for
``value_mean`` (s / sqrt(n), the textbook standard error of the mean), that
of the log of a window std for ``log_std_ratio`` (1 / sqrt(2 (n-1)): Var(s^2)
= 2 s^4 / (n-1) for normal readings, by the delta method), the same for
``peak_ratio`` (it is measured in units of that std), and one reading (1 / n)
for ``coverage``. Half of those units is below what every ordinary target
showed (minimum ratio of training std to floor, per feature: value_mean 2.6,
log_std_ratio 2.0, peak_ratio 6.3, coverage 1.3 over the 240 simulated
targets of the table below; 1.4 / 1.05 / 1.7 / 5.2 over the 15 reference
targets), so their models and the figures above are unchanged; with fewer
readings per window (10 or 5, at the simulator's 2 % random loss) the coverage
floor can apply to an ordinary target too, raising its coverage scale by up
to ~2x (recorded, not warned about). A model whose training had ~zero
variance in a feature (std below ``ZERO_VARIANCE_FRACTION`` = 0.1 of the
floor) behaves as a point in feature space: a window is flagged when it is
~2.7 floors away in that feature (``exp(-gamma d^2) < 1 -
THRESHOLD_FRACTION``). So a frozen sensor with 30 readings per window flags a
window with 28 readings or fewer (29 and 31 are not flagged), a level shift
from ~2.5e-7 of its level (2.5e-7 at level 0), any spike, and not its
ordinary windows; a sensor with ordinary noise whose reading count never
varied flags dropouts, stuck windows, 4-sigma level shifts and 8-sigma spikes
(tests/scoring/test_degenerate_training.py). A window std below
``STD_FLOOR_RELATIVE`` (1e-6) of the sensor's level counts as 0, so for noise
that small a stuck window is not an anomaly (the same noise at level 0 is an
ordinary sensor at its own scale).

Sensors whose typical window is constant but which move now and then (a 0/1
status that flips in under half of its windows, a set-point that changes): the
median window std is 0 (or below the resolution), and ``std_ref`` used to fall to the resolution (1e-6
of the level), which measured ordinary flips in millions. ``std_reference``
takes the median std of the windows that varied instead. And since over all
windows the std of ``log_std_ratio`` and ``peak_ratio`` measures how often the
sensor moved rather than how (a 0/1 sensor's flip windows sit at one value,
its constant windows at another, and StandardScaler's std spans the gap),
training fits the scales on the windows that varied whenever some windows
were constant and others were not (``sample_weight`` 0 for the constant
ones; ``scoring.train``); an ordinary target has no constant window and is
fitted exactly as before. Measured on a 0/1 sensor whose readings are 0 with
probability 0.02 (72 windows of 30 readings, 40 draws): every window with a
reading of 2.0, 0.5, 0.9, 5 or -3, or stuck at 0 for the whole window, is
flagged, and no window of all 1s or with one flip to 0; a window with more
flips than training ever showed (3 or 4) can be flagged. Before, a reading of
0.5 or 0.9 was never flagged and 2.0 was missed in 2 of the 40 draws. The
features see a window's excursion without its sign (``peak_ratio``), so a
reading one step above the usual state differs from an ordinary flip below it
only in the window mean:
with flips in most windows (probability 0.03-0.05, ~60-80 % of windows vary)
the 2.0 reading is missed in 5-31 of 40 draws (before: up to 40 of 40); the
other readings are still flagged.

Training reports what it found per target: ``training.constant_features``
(every feature with ~zero variance, for the record), ``training.degenerate``
(those whose constancy means the sensor did not vary: value_mean,
log_std_ratio, peak_ratio; never ``coverage`` alone, which is constant for
every sensor that delivers all its readings and is not a warning),
``training.std_ref`` (value and source: ``"median window std"``, or the
fallbacks ``"median std of the windows that varied"`` and ``"resolution
floor"``), ``training.scale_fit_windows``, ``scale_floor``, ``scale``,
``training.feature_std``, ``training.scale_floored``, and
``training.warnings`` (a degenerate feature or a std_ref fallback; the train
CLI's stdout line and stderr). Windows with a missing or non-finite
mean/min/max/std or no readings are left out of training and listed
(``training.excluded_windows``); a one-reading window's missing std counts as
0, as in scoring; a target with fewer than ``MIN_TRAINING_WINDOWS`` (12)
usable windows is refused.

Reference data (``reference/sensor_data.csv``, 3 x 5 pairs, irregular 5-30 s
readings): trained on the first two hours (24 windows per target), scoring the
remaining 27 windows per target flags 18 of 405 windows: 12 of the 390
(3 %) complete windows, and 6 of the 15 final
windows at 03:10, which are only half filled (the file ends at 03:12:30), so
``coverage`` is ~0.5 there.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from batch_scoring.scoring.config import FEATURES, LOG_STD_EPS, SCALE_FLOOR_FRACTION, STD_FLOOR_RELATIVE

REQUIRED_COLUMNS = ("value_mean", "value_min", "value_max", "value_std", "n_readings")


def feature_reference(train: pd.DataFrame) -> dict:
    """Per-target reference numbers fixed at training time (kept in the manifest).

    ``{"std_ref": float > 0, "n_ref": float >= 1}``: ``std_ref`` as
    ``std_reference`` (the median window std, with its fallbacks), ``n_ref``
    the median readings per window, at least 1. Raises ValueError when
    ``train`` lacks an aggregate column or has no rows.
    """
    ref = std_reference(train)
    n_ref = float(np.nanmedian(train["n_readings"].to_numpy(float)))
    return {"std_ref": ref["value"], "n_ref": max(n_ref, 1.0)}


# How std_ref was obtained (std_reference's "source"; manifest training.std_ref.source).
STD_REF_MEDIAN = "median window std"
STD_REF_VARIED = "median std of the windows that varied"
STD_REF_FLOOR = "resolution floor"


def std_resolution(train: pd.DataFrame) -> float:
    """The smallest window std that counts as variation: ``STD_FLOOR_RELATIVE`` x the median absolute mean.

    Times 1 when that median is 0, and at least 1e-12 (same units as the readings).
    """
    level = float(np.nanmedian(np.abs(train["value_mean"].to_numpy(float)))) or 1.0
    return max(STD_FLOOR_RELATIVE * level, 1e-12)


def varied_windows(std, resolution: float) -> np.ndarray:
    """Boolean mask of the windows whose std exceeds ``resolution`` (a missing std, one reading, counts as 0)."""
    return np.nan_to_num(np.asarray(std, dtype="float64"), nan=0.0) > resolution


def std_reference(train: pd.DataFrame) -> dict:
    """``std_ref``, the window std the std features are measured in, and the rule that gave it.

    In order: the median window std (missing stds, i.e. one-reading windows,
    left out) when it exceeds the resolution (``std_resolution``); else, when
    some windows varied (std above the resolution), the median std of those
    windows; else the resolution itself. The second rule is for a sensor whose
    typical window is constant but which moves now and then (a 0/1 status
    that flips in under half of the windows, a set-point that changes): the
    median window std is 0 there although the sensor varies, and dividing by the
    resolution (1e-6 of the level) would measure its ordinary flips in millions.
    The median of the windows that varied is the typical std of a window in
    which the sensor moved, the same statistic as the first rule, over the
    windows that carry it. Only the third rule means that no training window
    varied at all (frozen, set-point, noise below the resolution, one reading
    per window).

    Returns ``{"value": float > 0, "source": STD_REF_MEDIAN | STD_REF_VARIED |
    STD_REF_FLOOR, "median_window_std": float >= 0, "resolution": float > 0,
    "varied_windows": int, "windows": int}``. Raises ValueError when ``train``
    lacks an aggregate column or has no rows.
    """
    _check_columns(train)
    if train.empty:
        raise ValueError("no training windows")
    resolution = std_resolution(train)
    stds = train["value_std"].to_numpy(float)
    median = float(np.nanmedian(stds)) if np.isfinite(stds).any() else 0.0
    varied = varied_windows(stds, resolution)
    if median > resolution:
        value, source = median, STD_REF_MEDIAN
    elif varied.any():
        value, source = float(np.median(stds[varied])), STD_REF_VARIED
    else:
        value, source = resolution, STD_REF_FLOOR
    return {"value": value, "source": source, "median_window_std": median, "resolution": resolution,
            "varied_windows": int(varied.sum()), "windows": int(len(train))}


# Each feature's "natural unit" at the reference numbers (std_ref, n_ref), the
# floor on its scale being SCALE_FLOOR_FRACTION of it; the text goes into the
# manifest with every floor that was applied.
SCALE_FLOOR_RULES = {
    "value_mean": "standard error of a window mean, std_ref / sqrt(n_ref)",
    "log_std_ratio": "standard error of the log of a window std, 1 / sqrt(2 (n_ref - 1))",
    "peak_ratio": "relative standard error of the window std it is measured in, 1 / sqrt(2 (n_ref - 1))",
    "coverage": "one reading, 1 / n_ref",
}


def scale_floor(reference: dict) -> dict[str, float]:
    """Floor on the scaler's scale per feature (``{feature: float > 0}``, the feature's units).

    ``SCALE_FLOOR_FRACTION`` times each feature's natural unit at the target's
    ``reference`` (``SCALE_FLOOR_RULES``): with ``s = std_ref`` and ``n = n_ref``,
    ``value_mean`` s/sqrt(n) (the standard error of the mean of n readings of
    std s); ``log_std_ratio`` 1/sqrt(2 (n-1)) (the standard error of the log of
    a sample std of n normal readings, by the delta method on Var(s^2) =
    2 s^4 / (n-1)); ``peak_ratio`` the same (it is measured in units of that
    std, so it is at least as uncertain); ``coverage`` 1/n (one reading: a
    count cannot move by less). ``n - 1`` is taken as at least 1.
    """
    std_ref = float(reference["std_ref"])
    n_ref = max(float(reference["n_ref"]), 1.0)
    log_unit = 1.0 / np.sqrt(2.0 * max(n_ref - 1.0, 1.0))
    units = {
        "value_mean": std_ref / np.sqrt(n_ref),
        "log_std_ratio": log_unit,
        "peak_ratio": log_unit,
        "coverage": 1.0 / n_ref,
    }
    return {name: float(SCALE_FLOOR_FRACTION * units[name]) for name in FEATURES}


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
    matrix = feature_matrix(
        aggregates["value_mean"].to_numpy(float),
        aggregates["value_min"].to_numpy(float),
        aggregates["value_max"].to_numpy(float),
        aggregates["value_std"].to_numpy(float),
        aggregates["n_readings"].to_numpy(float),
        reference,
    )
    return pd.DataFrame(matrix, columns=list(FEATURES), index=aggregates.index)


def feature_matrix(mean, vmin, vmax, std, n, reference: dict) -> np.ndarray:
    """The same features as ``compute_features`` on plain float arrays: an ``(n_windows, 4)`` matrix.

    Columns in ``FEATURES`` order. The fast path of ``scoring.score`` calls this
    per target with slices of the snapshot's columns (no pandas objects per target).
    """
    std_ref = float(reference["std_ref"])
    n_ref = float(reference["n_ref"])
    std = np.nan_to_num(std, nan=0.0)
    out = np.empty((len(mean), len(FEATURES)), dtype="float64")
    columns = {
        "value_mean": mean,
        "log_std_ratio": np.log(std / std_ref + LOG_STD_EPS),
        "peak_ratio": np.maximum(vmax - mean, mean - vmin) / std_ref,
        "coverage": n / n_ref,
    }
    for i, name in enumerate(FEATURES):
        out[:, i] = columns[name]
    return out


def _check_columns(frame: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"aggregates lack columns {missing}")
