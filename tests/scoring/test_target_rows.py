"""Each target's contiguous row range in rows sorted by device and sensor."""
from __future__ import annotations

import numpy as np

from batch_scoring.scoring.target_rows import target_ranges


def test_target_ranges():
    device = np.array(["d1", "d1", "d1", "d2", "d2"], dtype=object)
    sensor = np.array(["s1", "s1", "s2", "s1", "s1"], dtype=object)
    assert target_ranges(device, sensor) == {"d1/s1": (0, 2), "d1/s2": (2, 3), "d2/s1": (3, 5)}
    assert target_ranges(["d1"], ["s1"]) == {"d1/s1": (0, 1)}
    assert target_ranges([], []) == {}
