"""Product-wide settings shared by the scoring jobs, the loaders and the DAG.

One place for every constant that more than one module needs. Airflow-side
settings (connection ids, schedule, backend) live in
``plugins/batch_scoring/config.py`` and import what they share from here.
"""
from __future__ import annotations

import re

# Aggregation: tumbling windows of this length feed the models.
WINDOW_MINUTES = 5

# Columns of the sensor_aggregates table and of every aggregates snapshot.
AGGREGATE_COLUMNS = (
    "device_id",
    "sensor_id",
    "window_start",
    "window_end",
    "value_mean",
    "value_min",
    "value_max",
    "value_std",
    "n_readings",
)

# Ids become blob path segments and UI names: keep them path-safe.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def target_name(device_id: str, sensor_id: str) -> str:
    """The one spelling of a target, used in the UI, receipts and manifests."""
    return f"{device_id}/{sensor_id}"


def parse_target(name: str) -> tuple[str, str]:
    """Split ``device/sensor`` and refuse ids that are not path-safe."""
    parts = name.split("/")
    if len(parts) != 2 or not all(ID_PATTERN.match(p) for p in parts):
        raise ValueError(f"bad target {name!r}: expected 'device/sensor' with ids matching {ID_PATTERN.pattern}")
    return parts[0], parts[1]


# ---------------------------------------------------------------------------
# Model: features and parameters (see scoring/features.py for the rationale).
# ---------------------------------------------------------------------------
# Per-window features, computed from the aggregate columns only (plus two
# per-target reference numbers fixed at training time, kept in the manifest).
FEATURES = ("value_mean", "log_std_ratio", "peak_ratio", "coverage")

# Pipeline(FlooredStandardScaler, OneClassSVM(**SVM_PARAMS)) per device/sensor.
SVM_PARAMS = {"kernel": "rbf", "gamma": 0.05, "nu": 0.01}

# A window is anomalous when decision_score < threshold, calibrated per target
# at training time and stored in the manifest:
#   threshold = -THRESHOLD_FRACTION * rho
# where rho is the fitted OneClassSVM's offset_: decision_function of a point
# far from every training window tends to -rho, so the threshold sits at a
# fixed fraction of the way from the learned boundary (0) to "nothing like
# training" (-rho), whatever the target's scale.
THRESHOLD_FRACTION = 0.3

# The resolution of a window std, relative to the target's median value: a
# window whose std is not above it counts as constant. std_ref is the median
# window std; when that is not above the resolution, the median std of the
# windows that varied; when no window varied, the resolution itself (so a
# target that was already frozen in training does not divide by zero).
# scoring.features.std_reference.
STD_FLOOR_RELATIVE = 1e-6
# log(std_ratio + LOG_STD_EPS): a frozen sensor (std == 0) maps to log(EPS).
LOG_STD_EPS = 0.01

# Floor on the scaler's per-feature scale, as a fraction of each feature's
# natural unit at the target's reference numbers (scoring.features.scale_floor):
# the standard error of a window mean (std_ref / sqrt(n_ref)) for value_mean,
# that of the log of a window std (1 / sqrt(2 (n_ref - 1))) for log_std_ratio
# and peak_ratio, one reading (1 / n_ref) for coverage. StandardScaler divides a
# feature with zero training variance by 1 (raw units: a frozen sensor could
# not see a dropout); a feature that varied less than its floor is divided by
# the floor instead. At 0.5 no floor applies to any ordinary simulated target
# (30 readings per window) nor to the reference data: their models are unchanged.
SCALE_FLOOR_FRACTION = 0.5
# A feature whose training std is below this fraction of its floor had ~zero
# variance (a constant mean, std or reading count): training records it per
# target (manifest training.constant_features) and warns (training.degenerate,
# training.warnings, the CLI's stderr) unless it is coverage alone, which is
# constant for every sensor that delivers all its readings.
ZERO_VARIANCE_FRACTION = 0.1

# Training refuses a target with fewer usable windows than this.
MIN_TRAINING_WINDOWS = 12
