from __future__ import annotations

import numpy as np
import pandas as pd

from batch_scoring.scoring.config import FEATURES
from batch_scoring.scoring.features import compute_features, feature_reference


def test_features_react_to_each_anomaly_kind():
    base = dict(value_mean=10.0, value_min=8.0, value_max=12.0, value_std=1.0, n_readings=30)
    rows = pd.DataFrame([
        base,
        {**base, "value_std": 0.0, "value_min": 10.0, "value_max": 10.0},  # stuck
        {**base, "value_max": 17.0, "value_std": 1.4},  # spike
        {**base, "n_readings": 6},  # dropout
        {**base, "value_mean": 13.0, "value_min": 11.0, "value_max": 15.0},  # shift
    ])
    ref = feature_reference(pd.DataFrame([base] * 5))
    assert ref == {"std_ref": 1.0, "n_ref": 30.0}
    f = compute_features(rows, ref)
    assert list(f.columns) == list(FEATURES)
    assert np.isclose(f.loc[0, "log_std_ratio"], np.log(1.01))
    assert f.loc[1, "log_std_ratio"] == np.log(0.01) and f.loc[1, "peak_ratio"] == 0
    assert f.loc[2, "peak_ratio"] == 7.0
    assert f.loc[3, "coverage"] == 0.2
    assert f.loc[4, "value_mean"] == 13.0


def test_frozen_training_data_does_not_divide_by_zero():
    frozen = pd.DataFrame([dict(value_mean=5.0, value_min=5.0, value_max=5.0, value_std=0.0, n_readings=10)] * 3)
    f = compute_features(frozen, feature_reference(frozen))
    assert np.isfinite(f.to_numpy()).all()
