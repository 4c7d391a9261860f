"""Checks of aggregate windows, without SQL: what makes an interval unfit to score, and how gaps read.

Pure functions on frames / lists that :mod:`sensor_db.reads` fetched; times are naive UTC.
"""
from __future__ import annotations

import datetime as dt
from typing import Sequence

import pandas as pd

from batch_scoring.scoring.config import WINDOW_MINUTES, target_name


def window_problems(frame: pd.DataFrame, start: dt.datetime, end: dt.datetime,
                     window_minutes: int) -> dict[str, list[str]]:
    """Structural problems of aggregate windows touching [start, end), as {'device/sensor': [messages]}.

    ``frame``: aggregate rows (``AGGREGATE_COLUMNS``, ``window_*`` datetime64)
    sorted by target, window_start. Flags duplicate windows (same device,
    sensor and window_start: possible when the table lacks its primary key),
    windows whose length is not ``window_minutes``, windows off the window
    grid, and windows that straddle ``start`` / ``end``; only targets with a
    problem are keys (empty dict: clean). All rows are checked at once; only
    the targets with a problem are visited in Python, so a clean fleet costs one
    vectorised pass.
    """
    if frame.empty:
        return {}
    step = pd.Timedelta(minutes=window_minutes)
    starts, ends = frame["window_start"], frame["window_end"]
    checks = pd.DataFrame({
        "dup": frame.duplicated(["device_id", "sensor_id", "window_start"], keep=False),
        "bad_len": (ends - starts) != step,
        "off_grid": starts != starts.dt.floor(step),
        "outside": (starts < pd.Timestamp(start)) | (ends > pd.Timestamp(end)),
    })
    bad = checks.any(axis=1).to_numpy()
    if not bad.any():
        return {}
    rows = pd.concat([frame.loc[bad, ["device_id", "sensor_id", "window_start"]], checks[bad]], axis=1)
    problems: dict[str, list[str]] = {}
    for (d, sen), g in rows.groupby(["device_id", "sensor_id"], sort=True):
        found = []
        dup = g.loc[g["dup"], "window_start"].drop_duplicates()
        if len(dup):
            found.append(f"duplicate windows starting {', '.join(f'{w:%Y-%m-%d %H:%M}' for w in dup.iloc[:5])}"
                         + (f" (+{len(dup) - 5})" if len(dup) > 5 else ""))
        for col, what in (("bad_len", f"not {window_minutes} minutes long"),
                          ("off_grid", f"off the {window_minutes}-minute grid"),
                          ("outside", "straddling the interval's bounds")):
            hit = g.loc[g[col], "window_start"]
            if len(hit):
                found.append(f"{len(hit)} window(s) {what}, starting "
                             + ", ".join(f"{w:%Y-%m-%d %H:%M:%S}" for w in hit.iloc[:5]))
        problems[target_name(d, sen)] = found
    return problems


def by_target(problems: dict[str, list[str]]) -> dict[str, list[str]]:
    """``problems`` ({'device/sensor': [messages]}) re-ordered by (device, sensor), as one frame's come.

    Blocks checked apart (:func:`window_problems` sorts within one frame) come
    back in SQL's order, whose collation may not be Python's.
    """
    return dict(sorted(problems.items(), key=lambda kv: kv[0].split("/", 1)))  # no validation: name any id


def describe_missing_windows(starts: Sequence[dt.datetime], window_minutes: int = WINDOW_MINUTES,
                             limit: int = 6) -> str:
    """Window starts as '2024-01-01 10:40-11:00 (4 windows)'-style runs of consecutive windows, comma-separated.

    At most ``limit`` runs, then " and N more gaps". ``starts``: naive datetimes
    (any order) on the ``window_minutes`` grid; empty gives "".
    """
    step = dt.timedelta(minutes=window_minutes)
    runs: list[list[dt.datetime]] = []
    for s in sorted(starts):
        if runs and s - runs[-1][1] == step:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    parts = []
    for lo, hi in runs[:limit]:
        n = int((hi - lo) / step) + 1
        parts.append(f"{lo:%Y-%m-%d %H:%M}-{hi + step:%H:%M} ({n} window{'s' if n > 1 else ''})")
    more = f" and {len(runs) - limit} more gaps" if len(runs) > limit else ""
    return ", ".join(parts) + more
