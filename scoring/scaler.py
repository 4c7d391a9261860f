"""``FlooredStandardScaler``: the models' first step, a StandardScaler with a floor on each feature's scale.

scikit-learn's ``StandardScaler`` divides each feature by its training
standard deviation, except where that is (numerically) zero: there it divides
by 1 (``sklearn.preprocessing._data._handle_zeros_in_scale``), so the feature
reaches the next step in its raw units. Behind an RBF ``OneClassSVM`` with a
fixed ``gamma`` that makes the model's sensitivity to the feature depend on
its units: a sensor whose readings never moved cannot see its mean move by 1 %,
and one that always delivered 30 readings per window cannot see 27 of them go
missing (coverage 0.1 is 0.9 raw units away from 1.0: ``exp(-0.05 * 0.81)``
~ 0.96 of the kernel's full similarity).

This class keeps ``StandardScaler``'s behaviour and only raises ``scale_`` to
``scale_floor`` per feature where the training standard deviation is smaller.
The floors themselves are the features' business (``scoring.features.scale_floor``).
``sample_weight`` works as in ``StandardScaler`` (the mean and std are
weighted, then floored): training gives the constant windows of a target that
also has varying ones weight 0 (``scoring.train``).
Models pickle a reference to this class: the scoring job imports it from
``scoring.scaler`` (a model trained before this class existed holds a plain
``StandardScaler`` and still loads).
"""
from __future__ import annotations

import numpy as np
from sklearn.preprocessing import StandardScaler


class FlooredStandardScaler(StandardScaler):
    """``StandardScaler`` whose ``scale_`` is ``max(sqrt(var_), scale_floor)`` per feature.

    Parameters
    ----------
    scale_floor : sequence of ``n_features`` finite floats > 0, in the units of
        each feature, or None (then this is exactly ``StandardScaler``).
    copy, with_mean, with_std : as ``StandardScaler``.

    Attributes (besides ``StandardScaler``'s)
    -----------------------------------------
    floored_ : bool array of shape ``(n_features,)``: True where the training
        standard deviation ``sqrt(var_)`` was below the floor, so ``scale_`` is the floor.

    Raises ValueError from ``fit``/``partial_fit`` when ``scale_floor`` does
    not have one finite positive value per feature.
    """

    _parameter_constraints: dict = {**StandardScaler._parameter_constraints, "scale_floor": ["array-like", None]}

    def __init__(self, *, scale_floor=None, copy=True, with_mean=True, with_std=True):
        super().__init__(copy=copy, with_mean=with_mean, with_std=with_std)
        self.scale_floor = scale_floor

    def partial_fit(self, X, y=None, sample_weight=None):
        """Update the mean and variance with ``X`` (n_samples, n_features), then floor ``scale_``.

        ``fit`` resets and calls this, so both apply the floor. Sets ``floored_``;
        returns ``self``. Raises ``ValueError`` when ``scale_floor`` does not hold one
        finite value > 0 per feature.
        """
        # StandardScaler.fit resets and calls partial_fit: flooring here covers both.
        super().partial_fit(X, y, sample_weight)
        self.floored_ = np.zeros(self.n_features_in_, dtype=bool)
        if self.with_std and self.scale_floor is not None:
            floor = np.asarray(self.scale_floor, dtype="float64")
            if floor.shape != (self.n_features_in_,) or not (np.isfinite(floor).all() and (floor > 0).all()):
                raise ValueError(
                    f"scale_floor must hold {self.n_features_in_} finite values > 0, got {self.scale_floor!r}"
                )
            std = np.sqrt(self.var_)
            self.floored_ = std < floor
            self.scale_ = np.where(self.floored_, floor, std)
        return self
