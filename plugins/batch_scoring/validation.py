"""Are a target's predictions what its scoring should have written? The checks, and the window keys they compare.

Used twice with the same result: by the local scoring backend on each target
of a unit's part file where it was written (before upload), and by the
collector on each part file it reads back (``validate_part``: one file per
scoring unit, issue 14, checked target by target; ``validate_rows`` per target). Window starts are compared as sorted int64 microseconds
since the epoch (naive UTC), the form ``window_keys`` gives.
"""
from __future__ import annotations

import hashlib
import io

from batch_scoring.scoring.config import parse_target


PREDICTION_REQUIRED_COLUMNS = ("device_id", "sensor_id", "window_start", "window_end", "decision_score", "is_anomaly", "model_sha256")


def validate_prediction(data: bytes, target: str, expected_windows, model_manifest: dict | None = None,
                        receipt: dict | None = None) -> tuple[dict | None, str | None]:
    """Check one prediction blob; returns (summary, None) or (None, what is wrong).

    ``data``: the parquet bytes; ``target``: ``device/sensor``; ``expected_windows``: the snapshot's window
    starts of the target (anything ``window_keys`` reads). The summary holds ``rows``, ``anomalies``,
    ``model_sha256`` and ``anomaly_starts`` (sorted int64 µs). Never raises for a bad blob: every fault
    (unreadable parquet, missing columns, other ids, windows, scores, flags, hashes) is the returned reason.

    Beyond the blob itself: with the deployed model's manifest, the rows must
    carry that model's sha256 and every ``is_anomaly`` flag must agree with
    ``decision_score < threshold``; with the scoring step's receipt, rows,
    anomaly count and model hash must match what the scoring step reported
    (and its ``output_sha256``, when the receipt carries one, the blob's bytes).
    """
    import pyarrow.parquet as pq

    # pyarrow and numpy, not pandas: the collector runs this once per target, thousands of times.
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # a truncated or corrupt file: say so, do not crash the collector
        return None, f"unreadable parquet ({type(exc).__name__}: {exc})"
    summary, problem = validate_rows(table, target, expected_windows, model_manifest, receipt)
    if problem is None and receipt is not None and receipt.get("output_sha256") \
            and receipt["output_sha256"] != hashlib.sha256(data).hexdigest():
        return None, "blob's sha256 differs from the one the scoring step recorded"
    return summary, problem


def validate_rows(table, target: str, expected_windows, model_manifest: dict | None = None,
                  receipt: dict | None = None) -> tuple[dict | None, str | None]:
    """``validate_prediction``'s checks on one target's rows already read (a ``pyarrow.Table``).

    Beyond them, a receipt carrying ``rows_sha256`` (a part file's, ``scoring.part_file.rows_digest``)
    must match the digest of these rows. Never raises for bad rows: returns (summary, None) or (None, reason).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    missing = [c for c in PREDICTION_REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        return None, f"missing columns {missing}"
    device, sensor = parse_target(target)
    ids = pc.and_(pc.equal(table["device_id"].cast(pa.string()), device), pc.equal(table["sensor_id"].cast(pa.string()), sensor))
    if not pc.all(pc.fill_null(ids, False)).as_py():
        return None, "rows for another device/sensor"
    expected = window_keys(expected_windows)
    if table.num_rows != len(expected):
        return None, f"{table.num_rows} rows for {len(expected)} input windows"
    try:
        raw_starts = table["window_start"].cast(pa.timestamp("us")).to_numpy(zero_copy_only=False).astype("int64")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError, ValueError):
        return None, "windows differ from the snapshot's (window_start is not a timestamp)"
    order = np.argsort(raw_starts, kind="stable")
    starts = raw_starts[order]
    if not np.array_equal(starts, expected):
        return None, "windows differ from the snapshot's"
    scores = table["decision_score"].to_numpy(zero_copy_only=False).astype(float)
    if not np.isfinite(scores).all():
        return None, f"{int((~np.isfinite(scores)).sum())} non-finite decision scores"
    hashes = pc.unique(table["model_sha256"]).to_pylist()
    if len(hashes) != 1:
        return None, "more than one model hash"
    flags = table["is_anomaly"].to_numpy(zero_copy_only=False).astype(bool)
    if model_manifest and model_manifest.get("sha256"):
        if str(hashes[0]) != model_manifest.get("sha256"):
            return None, (f"scored with model {str(hashes[0])[:12]}, but the deployed model is "
                          f"{str(model_manifest.get('sha256'))[:12]}")
        threshold = model_manifest.get("threshold")
        if threshold is not None:
            wrong = int(((scores < float(threshold)) != flags).sum())
            if wrong:
                return None, f"{wrong} anomaly flag(s) disagree with decision_score < threshold {float(threshold):.6g}"
    if receipt is not None:
        if receipt.get("status") != "ok":
            return None, f"the scoring step reported it failed: {receipt.get('error')}"
        expect = {"rows": receipt.get("rows_out"), "anomalies": receipt.get("anomalies"),
                  "model hash": receipt.get("model_sha256")}
        got = {"rows": table.num_rows, "anomalies": int(flags.sum()), "model hash": str(hashes[0])}
        diff = [f"{k} {got[k]} != receipt's {expect[k]}" for k in expect if expect[k] is not None and got[k] != expect[k]]
        if diff:
            return None, "blob differs from what the scoring step wrote: " + ", ".join(diff)
        if receipt.get("rows_sha256"):
            from batch_scoring.scoring.part_file import rows_digest

            if rows_digest(table) != receipt["rows_sha256"]:
                return None, "rows differ from those the scoring step wrote (rows_sha256)"
    return {"rows": table.num_rows, "anomalies": int(flags.sum()), "model_sha256": str(hashes[0]),
            "anomaly_starts": starts[flags[order]]}, None


def validate_part(data: bytes, unit: list[str], windows: dict, model_manifests: dict) -> dict[str, tuple]:
    """Check a scoring unit's part file target by target: ``target -> (summary, None) or (None, reason)``.

    ``data``: the part file's bytes (``scoring.part_file``); ``unit``: the unit's targets; ``windows``:
    target -> its snapshot window starts (``windows_by_target``); ``model_manifests``: target -> the
    deployed model's manifest (or ``None``). Each target's receipt comes from the file's footer and its
    rows are checked with ``validate_rows``; a target whose receipt says it failed gets ``scoring failed:
    <error>``. Faults of the whole file (unreadable, no receipts in the footer, missing columns, rows not
    sorted by device_id/sensor_id/window_start, rows of targets outside the unit) fail every target of
    the unit with that reason. Summaries are ``validate_prediction``'s plus the receipt's ``rows_sha256``.
    Never raises for a bad file.
    """
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from batch_scoring.scoring.part_file import read_receipts
    from batch_scoring.scoring.target_rows import target_ranges

    def every(reason: str) -> dict[str, tuple]:
        return {t: (None, reason) for t in unit}

    try:
        table = pq.read_table(io.BytesIO(data))
        receipts = {r["target"]: r for r in read_receipts(data)}
    except Exception as exc:  # truncated, corrupt, or no receipts: say so, do not crash the collector
        return every(f"unreadable part file ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})")
    missing = [c for c in PREDICTION_REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        return every(f"part file: missing columns {missing}")
    order = pc.sort_indices(table, sort_keys=[("device_id", "ascending"), ("sensor_id", "ascending"),
                                              ("window_start", "ascending")]).to_numpy()
    if not np.array_equal(order, np.arange(table.num_rows)):
        return every("part file: rows not sorted by device_id, sensor_id, window_start")
    ranges = target_ranges(table["device_id"].to_numpy(zero_copy_only=False),
                           table["sensor_id"].to_numpy(zero_copy_only=False))
    outside = sorted(set(ranges) - set(unit))
    if outside:
        return every(f"part file: rows of targets outside the unit: {', '.join(outside[:10])}")
    results = {}
    for target in unit:
        receipt = receipts.get(target)
        if receipt is None:
            results[target] = (None, "no receipt in the part file's footer")
        elif receipt.get("status") != "ok":
            results[target] = (None, f"scoring failed: {receipt.get('error')}")
        else:
            a, b = ranges.get(target, (0, 0))
            summary, problem = validate_rows(table.slice(a, b - a), target, windows.get(target, []),
                                             model_manifests.get(target), receipt)
            if summary is not None:
                summary["rows_sha256"] = receipt.get("rows_sha256")  # checked against the rows when present
            results[target] = (summary, problem)
    return results


def window_keys(windows):
    """Window starts as a sorted int64 array of microseconds since the epoch (naive UTC).

    ``windows``: datetimes, pandas Timestamps or ISO text (naive, taken as UTC), or an int64 array already
    in that form (returned as it is). Raises ``ValueError`` (pandas') for values that are not timestamps.

    The collector calls it once per target (10,000 receipts a run): numpy parses naive ISO text and
    datetimes at about a microsecond a value, where ``pandas.to_datetime`` costs ~0.4 ms a call; anything
    numpy refuses or warns about (an offset such as ``Z``, other spellings) goes through pandas as before.
    """
    import warnings

    import numpy as np
    import pandas as pd

    if isinstance(windows, np.ndarray) and windows.dtype == np.int64:
        return windows
    values = list(windows)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy only warns on a time zone offset: let pandas convert it
            parsed = np.array(values, dtype="datetime64[us]")
    except (ValueError, TypeError, DeprecationWarning, UserWarning):
        parsed = np.asarray(pd.to_datetime(values), dtype="datetime64[us]")
    return np.sort(parsed.astype("int64"))


def windows_by_target(snapshot) -> dict:
    """``device/sensor`` → its window starts (sorted int64 µs), in one pass over the snapshot.

    ``snapshot``: a DataFrame with at least ``device_id``, ``sensor_id`` and ``window_start`` (any order;
    ids of any type, compared as text). An empty frame gives ``{}``.
    """
    from batch_scoring.scoring.target_rows import target_ranges

    if snapshot.empty:
        return {}
    frame = snapshot.sort_values(["device_id", "sensor_id", "window_start"], kind="mergesort")
    starts = frame["window_start"].to_numpy(dtype="datetime64[us]").astype("int64")
    ranges = target_ranges(frame["device_id"].astype(str).to_numpy(), frame["sensor_id"].astype(str).to_numpy())
    return {target: starts[a:b] for target, (a, b) in ranges.items()}


def anomaly_starts(data: bytes, target: str | None = None) -> "np.ndarray":
    """A prediction blob's flagged window starts (sorted int64 µs), from its parquet bytes.

    ``target`` (``device/sensor``): only that target's rows (a part file holds a unit's targets);
    ``None``: every row. Raises pyarrow's ``ArrowInvalid`` for bytes that are not parquet and ``KeyError``
    when the columns ``window_start``/``is_anomaly`` (with ``target``: ``device_id``/``sensor_id``) are missing.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    ids = ["device_id", "sensor_id"] if target is not None else []
    table = pq.read_table(io.BytesIO(data), columns=ids + ["window_start", "is_anomaly"])
    if target is not None:
        device, sensor = parse_target(target)
        table = table.filter(pc.and_(pc.equal(table["device_id"].cast(pa.string()), device),
                                     pc.equal(table["sensor_id"].cast(pa.string()), sensor)))
    starts = table["window_start"].cast(pa.timestamp("us")).to_numpy(zero_copy_only=False).astype("int64")
    return np.sort(starts[table["is_anomaly"].to_numpy(zero_copy_only=False).astype(bool)])
