"""Where each target's rows are in a frame sorted by (device_id, sensor_id, ...).

Scoring slices its numpy columns by these ranges and the collector cuts a
snapshot's window starts by them: one pass over the id columns either way.
"""
from __future__ import annotations

import numpy as np

from batch_scoring.scoring.config import target_name


def target_ranges(device_ids, sensor_ids) -> dict[str, tuple[int, int]]:
    """``device/sensor`` -> its row range ``(first, past_last)`` in rows sorted by device and sensor.

    ``device_ids``/``sensor_ids``: equal-length 1-d arrays (numpy, object or str) of the ids, sorted so that
    each target's rows are contiguous; empty arrays give ``{}``. Ranges are positions, not index labels.
    """
    device, sensor = np.asarray(device_ids, dtype=object), np.asarray(sensor_ids, dtype=object)
    n = len(device)
    if not n:
        return {}
    change = np.flatnonzero((device[1:] != device[:-1]) | (sensor[1:] != sensor[:-1])) + 1
    bounds = np.concatenate(([0], change, [n]))
    return {target_name(device[a], sensor[a]): (a, b) for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())}
