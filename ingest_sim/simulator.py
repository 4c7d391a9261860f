"""Device/sensor reading simulator with labelled anomalies (pure: no SQL, no I/O).

``simulate(devices, sensors, start, end, ...)`` returns ``(readings, labels)``.

Normal behaviour
----------------
Every device/sensor pair has its own base level, noise level ``sigma`` and
AR(1) coefficient ``phi``, drawn from ``(seed, device, sensor)`` only, so a
history day and a scoring day simulated by two calls share them. Sensor ``k``
lives in the reference's bands: s1 10-15, s2 30-40, s3 60-65, s4 80-85,
s5 100-110, s6+ 120-130, 140-150, ... The base level is drawn in the middle
of the band; ``sigma`` is 10-20 % of the band width; ``phi`` is 0.3-0.7
(stationary AR(1) noise with marginal standard deviation ``sigma``).
Readings sit on a grid of ``reading_seconds`` aligned to the epoch; 2 % of
them are lost at random (``NORMAL_LOSS``) so ``n_readings`` varies a little
even in normal windows.

Injected anomalies (only at or after ``anomaly_start``; sizes in units of the
pair's reading noise ``sigma``; ``magnitude`` in the labels is in those units)
---------------------------------------------------------------------------
Events never overlap; they are separated by 3-60 normal windows (uniform),
their kinds cycle through a per-pair random permutation of the five kinds, and
their boundaries (except spikes) fall on ``window_minutes`` boundaries so a
labelled window is affected over its whole length. With the defaults about
12 % of the 5-minute windows after ``anomaly_start`` overlap a label.

* ``spike``: 1-3 consecutive readings offset by +/-5..8 sigma, inside one window.
  Label: from the first spiked reading to just after the last one.
* ``level_shift``: the level jumps by +/-2..4 sigma for 3-12 windows.
  Label: the whole shift.
* ``drift``: the level ramps linearly at 0.4-0.8 sigma per window (+/-). The
  anomaly is *present* once the offset has reached 1 sigma: the label starts
  there (a window boundary) and lasts 4-8 windows, ending at an offset of
  about 2.6-7.4 sigma; then the sensor is recalibrated (offset back to 0).
  The ramp below 1 sigma (1-3 windows) is unlabelled.
* ``stuck``: the value freezes at the last reading before the event for 2-8
  windows (value_std == 0 in those windows). Label: the frozen span.
* ``dropout``: 50-90 % of the readings are missing for 2-6 windows (the
  windows still exist, with fewer readings: at least 2 are kept in each).
  Label: the span.

Reproducibility: the noise depends on ``(seed, device, sensor, start, end)``,
the anomalies on that plus ``anomaly_start``; nothing reads the clock.
"""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from batch_scoring.scoring.config import WINDOW_MINUTES
from batch_scoring.scoring.times import utc_timestamp

KINDS = ("spike", "level_shift", "drift", "stuck", "dropout")
NORMAL_LOSS = 0.02  # fraction of readings lost at random in normal operation

SPIKE_SIGMA = (5.0, 8.0)
SPIKE_READINGS = (1, 3)
SHIFT_SIGMA = (2.0, 4.0)
SHIFT_WINDOWS = (3, 12)
DRIFT_RATE_SIGMA_PER_WINDOW = (0.4, 0.8)
DRIFT_LABEL_AT_SIGMA = 1.0
DRIFT_WINDOWS = (4, 8)
STUCK_WINDOWS = (2, 8)
DROPOUT_FRACTION = (0.5, 0.9)
DROPOUT_WINDOWS = (2, 6)
GAP_WINDOWS = (3, 60)

_BANDS = ((10.0, 15.0), (30.0, 40.0), (60.0, 65.0), (80.0, 85.0), (100.0, 110.0))

LABEL_COLUMNS = ("device_id", "sensor_id", "kind", "start_ts", "end_ts", "magnitude")
TS_DTYPE = "datetime64[us]"


def device_ids(devices: int) -> list[str]:
    """The ids of ``devices`` simulated devices: ``dev001``, ``dev002``, ... (empty for 0)."""
    return [f"dev{i:03d}" for i in range(1, devices + 1)]


def sensor_ids(sensors: int) -> list[str]:
    """The ids of ``sensors`` sensors per device: ``s1``, ``s2``, ... (empty for 0)."""
    return [f"s{k}" for k in range(1, sensors + 1)]


def sensor_band(sensor_index: int) -> tuple[float, float]:
    """Value band of sensor ``k`` (1-based), as in the reference data."""
    if sensor_index <= len(_BANDS):
        return _BANDS[sensor_index - 1]
    lo = 100.0 + 20.0 * (sensor_index - len(_BANDS))
    return lo, lo + 10.0


def pair_profile(seed: int, device_id: str, sensor_id: str, sensor_index: int) -> dict:
    """Base level, noise sigma and AR(1) phi of a pair: depends on (seed, device, sensor) only."""
    rng = _rng(seed, device_id, sensor_id, "profile")
    lo, hi = sensor_band(sensor_index)
    width = hi - lo
    return {
        "base": float(rng.uniform(lo + 0.35 * width, hi - 0.35 * width)),
        "sigma": float(width * rng.uniform(0.10, 0.20)),
        "phi": float(rng.uniform(0.3, 0.7)),
    }


def simulate(
    devices: int,
    sensors: int,
    start,
    end,
    reading_seconds: float = 10,
    seed: int = 42,
    anomalies: bool = True,
    anomaly_start=None,
    window_minutes: int = WINDOW_MINUTES,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate readings in [start, end) for ``devices`` x ``sensors`` pairs.

    Returns ``(readings, labels)``: readings ``ts`` (naive UTC), ``device_id``,
    ``sensor_id``, ``value`` sorted by (device, sensor, ts); labels
    ``device_id, sensor_id, kind, start_ts, end_ts`` (exclusive) and
    ``magnitude`` (in units of the pair's noise sigma; for dropout the
    fraction of readings missing). ``anomaly_start`` defaults to ``start``.
    """
    start, end = utc_timestamp(start), utc_timestamp(end)
    if end <= start:
        raise ValueError(f"empty range: start {start} >= end {end}")
    if reading_seconds <= 0:
        raise ValueError("reading_seconds must be > 0")
    a_start = start if anomaly_start is None else max(utc_timestamp(anomaly_start), start)

    step_us = int(round(reading_seconds * 1e6))
    start_us, end_us = _us(start), _us(end)
    first = -(-start_us // step_us) * step_us  # grid aligned to the epoch
    grid = np.arange(first, end_us, step_us, dtype=np.int64)
    n = grid.size
    window_us = window_minutes * 60 * 1_000_000
    per_window = window_us / step_us

    ts_parts, dev_parts, sen_parts, val_parts, label_rows = [], [], [], [], []
    for dev in device_ids(devices):
        for k, sen in enumerate(sensor_ids(sensors), start=1):
            prof = pair_profile(seed, dev, sen, k)
            rng = _rng(seed, dev, sen, "noise", start_us, end_us)
            sigma, phi = prof["sigma"], prof["phi"]
            innov = rng.standard_normal(n) * sigma * np.sqrt(1.0 - phi * phi)
            x0 = rng.standard_normal() * sigma
            noise = lfilter([1.0], [1.0, -phi], innov, zi=[phi * x0])[0] if n else innov
            values = prof["base"] + noise
            keep = rng.random(n) >= NORMAL_LOSS
            if anomalies and n:
                arng = _rng(seed, dev, sen, "anomalies", start_us, end_us, _us(a_start))
                label_rows.extend(
                    _inject(arng, grid, values, keep, sigma, _us(a_start), end_us, window_us, step_us,
                            per_window, dev, sen)
                )
            ts_parts.append(grid[keep])
            val_parts.append(values[keep])
            m = int(keep.sum())
            dev_parts.append(np.full(m, dev, dtype=object))
            sen_parts.append(np.full(m, sen, dtype=object))

    readings = pd.DataFrame(
        {
            "ts": np.concatenate(ts_parts).astype("datetime64[us]") if ts_parts else np.array([], TS_DTYPE),
            "device_id": np.concatenate(dev_parts) if dev_parts else np.array([], object),
            "sensor_id": np.concatenate(sen_parts) if sen_parts else np.array([], object),
            "value": np.concatenate(val_parts) if val_parts else np.array([], float),
        }
    )
    labels = pd.DataFrame(label_rows, columns=list(LABEL_COLUMNS))
    labels["start_ts"] = pd.to_datetime(labels["start_ts"]).astype(TS_DTYPE)
    labels["end_ts"] = pd.to_datetime(labels["end_ts"]).astype(TS_DTYPE)
    labels["magnitude"] = labels["magnitude"].astype("float64")
    return readings, labels


def _inject(rng, grid, values, keep, sigma, a_start_us, end_us, window_us, step_us, per_window, dev, sen):
    """Modify ``values``/``keep`` in place; return label rows."""
    rows = []
    order = list(rng.permutation(len(KINDS)))
    w = -(-a_start_us // window_us)  # first whole window at or after anomaly_start
    last_w = end_us // window_us  # windows [w, last_w) are whole
    pos = 0

    def idx(t0_us, t1_us):
        return np.searchsorted(grid, t0_us), np.searchsorted(grid, t1_us)

    def ts(us):
        return pd.Timestamp(int(us), unit="us")

    w += int(rng.integers(0, GAP_WINDOWS[1] // 2 + 1))
    while True:
        kind = KINDS[order[pos % len(KINDS)]]
        sign = 1.0 if rng.random() < 0.5 else -1.0
        if kind == "spike":
            span, lead = 1, 0
        elif kind == "level_shift":
            span, lead = int(rng.integers(SHIFT_WINDOWS[0], SHIFT_WINDOWS[1] + 1)), 0
        elif kind == "drift":
            rate = float(rng.uniform(*DRIFT_RATE_SIGMA_PER_WINDOW))
            lead = int(np.ceil(DRIFT_LABEL_AT_SIGMA / rate))  # ramp windows before the label
            span = int(rng.integers(DRIFT_WINDOWS[0], DRIFT_WINDOWS[1] + 1))
        elif kind == "stuck":
            span, lead = int(rng.integers(STUCK_WINDOWS[0], STUCK_WINDOWS[1] + 1)), 0
        else:
            span, lead = int(rng.integers(DROPOUT_WINDOWS[0], DROPOUT_WINDOWS[1] + 1)), 0
        if w + lead + span > last_w:
            break
        t0 = (w + lead) * window_us  # label start (window boundary)
        t1 = (w + lead + span) * window_us
        i0, i1 = idx(t0, t1)
        if kind == "spike":
            k = int(rng.integers(SPIKE_READINGS[0], SPIKE_READINGS[1] + 1))
            size = float(rng.uniform(*SPIKE_SIGMA))
            j0 = i0 + int(rng.integers(0, max(1, (i1 - i0) - k + 1)))
            j1 = min(j0 + k, i1)
            values[j0:j1] += sign * size * sigma
            keep[j0:j1] = True
            rows.append((dev, sen, kind, ts(grid[j0]), ts(grid[j1 - 1] + step_us), sign * size))
        elif kind == "level_shift":
            size = float(rng.uniform(*SHIFT_SIGMA))
            values[i0:i1] += sign * size * sigma
            rows.append((dev, sen, kind, ts(t0), ts(t1), sign * size))
        elif kind == "drift":
            r0 = (w + lead) * window_us - DRIFT_LABEL_AT_SIGMA / rate * window_us  # offset 0 here
            j0 = np.searchsorted(grid, int(np.ceil(r0)))
            offset = (grid[j0:i1] - r0) / window_us * rate  # in sigma
            values[j0:i1] += sign * offset * sigma
            rows.append((dev, sen, kind, ts(t0), ts(t1), sign * (DRIFT_LABEL_AT_SIGMA + rate * span)))
        elif kind == "stuck":
            before = np.flatnonzero(keep[:i0])
            frozen = values[before[-1]] if before.size else values[i0]
            values[i0:i1] = frozen
            rows.append((dev, sen, kind, ts(t0), ts(t1), 0.0))
        else:
            frac = float(rng.uniform(*DROPOUT_FRACTION))
            keep[i0:i1] &= rng.random(i1 - i0) >= frac
            for ww in range(w + lead, w + lead + span):  # partial: every window keeps >= 2 readings
                k0, k1 = idx(ww * window_us, (ww + 1) * window_us)
                if k1 - k0 >= 2 and keep[k0:k1].sum() < 2:
                    keep[k0 + rng.choice(k1 - k0, 2, replace=False)] = True
            rows.append((dev, sen, kind, ts(t0), ts(t1), frac))
        pos += 1
        w += lead + span + int(rng.integers(GAP_WINDOWS[0], GAP_WINDOWS[1] + 1))
    return rows


def _rng(seed: int, device_id: str, sensor_id: str, purpose: str, *extra: int) -> np.random.Generator:
    words = [int(seed) & 0xFFFFFFFF, zlib.crc32(device_id.encode()), zlib.crc32(sensor_id.encode()),
             zlib.crc32(purpose.encode())]
    words += [int(e) & 0xFFFFFFFFFFFFFFFF for e in extra]
    return np.random.default_rng(np.random.SeedSequence(words))


def _us(ts: pd.Timestamp) -> int:
    return int(pd.Timestamp(ts).value) // 1000  # .value is always in ns
