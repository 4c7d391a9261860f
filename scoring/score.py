"""Score an aggregates snapshot with each target's model (local paths only).

CLI::

    python -m batch_scoring.scoring.score --aggregates SNAPSHOT.parquet --models DIR --out DIR \\
        --targets d/s [d/s ...]   (or --targets-file FILE)

Writes the unit's targets into one part file ``<out>/part-<unit id>.parquet``
(``scoring.layout.part_name``; ``scoring.part_file``): device_id, sensor_id,
window_start, window_end, the FEATURES, decision_score, is_anomaly,
model_sha256; rows sorted by device_id, sensor_id, window_start; every
target's receipt (failed ones too) in its footer. ``--out`` is the interval's
folder of the predictions dataset (the Azure ML job mounts it).

Failure semantics: the snapshot is read once; each model is loaded (and its
sha256 verified) once. A failure of one target (no rows in the snapshot,
missing/tampered/corrupt model, ...) never stops the others: its receipt gets
``status: "failed"`` and the error, and the file holds no rows of it.
``score_unit`` never raises for a per-target failure: it returns the
receipts. The CLI exits 1 when any target failed (2 on bad arguments).
Outputs are deterministic: same snapshot + models -> byte-identical files.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import sklearn

from batch_scoring.scoring.cli import InputError, make_parser, progress, read_parquet, read_targets, run
from batch_scoring.scoring.config import FEATURES, parse_target
from batch_scoring.scoring.features import feature_matrix
from batch_scoring.scoring.layout import part_name
from batch_scoring.scoring.model_store import load_model
from batch_scoring.scoring.part_file import digest, sort_key, write_part
from batch_scoring.scoring.target_rows import target_ranges
from batch_scoring.scoring.train import normalise_aggregates

OUTPUT_COLUMNS = (
    ("device_id", "sensor_id", "window_start", "window_end") + tuple(FEATURES) + ("decision_score", "is_anomaly", "model_sha256")
)


class UnknownTargetError(LookupError):
    """The snapshot holds no rows of the target (unknown device/sensor, or no data in the interval)."""


def output_schema() -> pa.Schema:
    """The Arrow schema of a prediction file: ids, window bounds (timestamp[us], naive UTC), the features, ``decision_score``, ``is_anomaly`` and ``model_sha256``."""
    fields = [
        pa.field("device_id", pa.string()),
        pa.field("sensor_id", pa.string()),
        pa.field("window_start", pa.timestamp("us")),
        pa.field("window_end", pa.timestamp("us")),
    ]
    fields += [pa.field(f, pa.float64()) for f in FEATURES]
    fields += [
        pa.field("decision_score", pa.float64()),
        pa.field("is_anomaly", pa.bool_()),
        pa.field("model_sha256", pa.string()),
    ]
    return pa.schema(fields)


OUTPUT_SCHEMA = output_schema()  # built once; every prediction file uses it


def score_unit(aggregates: pd.DataFrame, models_dir, out_dir, targets, error_names: dict | None = None) -> list[dict]:
    """Score a unit's targets into one part file ``<out_dir>/part-<unit id>.parquet``; return the receipts.

    The file (``scoring.part_file``) holds the rows of the targets that scored, sorted by device_id,
    sensor_id, window_start, and in its footer every target's receipt (failed ones too; a unit whose
    targets all failed writes a zero-row file). Receipts are returned in the order given, duplicates
    removed. Receipt keys: target, device_id, sensor_id, status ("ok"/"failed"), rows_in, rows_out,
    anomalies, anomaly_window_starts (ISO, UTC), model_sha256, output, output_sha256, output_md5, error
    (None or message), error_type (None or the exception's class name, e.g. ``ModelNotFoundError``) and
    ``rows_sha256`` (``part_file.rows_digest`` of the target's rows; ``None`` when it failed); ``output``
    is the part file's name for a target that scored, and ``output_sha256``/``output_md5`` (of the whole
    file) are in the returned receipts only.
    The unit id comes from the path-safe targets (``layout.unit_id``); when none is path-safe nothing is
    written. Same snapshot + models + targets (in any order) -> a byte-identical file of the same name.
    ``error_names``: local path -> what an operator knows it as (``{"/tmp/x/models/": "models/"}``),
    replaced in failed receipts' errors before the footer is written (a worker's temporary folder means
    nothing to whoever reads the receipt).
    Never raises for a per-target failure; ``OSError`` when ``out_dir`` cannot be written.

    Fast path (the per-target fixed costs are what decide a batched unit's time): the snapshot is cut
    down to the requested devices before it is normalised, sorted and grouped once; each target then
    works on numpy slices of the columns (no per-target DataFrame), its model is loaded once, and its
    rows become a pyarrow table of one prebuilt schema.
    """
    results = score_tables(aggregates, models_dir, targets)
    receipts = [receipt for receipt, _ in results]
    for receipt in receipts:
        for local, known in (error_names or {}).items():
            if receipt["error"]:
                receipt["error"] = receipt["error"].replace(local, known)
    safe = [r["target"] for r in receipts if r["device_id"] is not None]
    if not safe:
        return receipts
    name = part_name(safe)
    for receipt, table in results:
        if table is not None:
            receipt["output"] = name
    ordered = sorted(results, key=lambda item: sort_key(item[0]))
    hashes = write_part(Path(out_dir) / name, [t for _, t in ordered if t is not None], receipts, OUTPUT_SCHEMA)
    for receipt in receipts:
        if receipt["status"] == "ok":
            receipt.update(hashes)
    return receipts


def score_tables(aggregates: pd.DataFrame, models_dir, targets,
                 with_digest: bool = True) -> list[tuple[dict, "pa.Table | None"]]:
    """(receipt, prediction table or ``None``) per target, in the order given, duplicates removed; no file written.

    What ``score_unit`` writes, for a caller that lays the tables out itself (bench/floor.py: one part
    file per target). ``with_digest``: receipts get ``rows_sha256`` (``part_file.digest`` of the rows;
    ``None`` when failed). Never raises for a per-target failure.
    """
    wanted = list(dict.fromkeys(targets))
    frame = normalise_aggregates(_rows_for(aggregates, wanted))
    columns = _Columns(frame)
    with sklearn.config_context(assume_finite=True):  # features are checked finite before scoring
        return [_score_one(raw, columns, models_dir, with_digest) for raw in progress(wanted, "scoring", unit="target")]


def _rows_for(aggregates: pd.DataFrame, targets: list[str]) -> pd.DataFrame:
    """The rows of the devices named in ``targets`` (all rows when that is most of them).

    A unit of a few targets reads a snapshot of the whole fleet: normalising and
    sorting millions of rows it does not score would be its biggest fixed cost.
    """
    if "device_id" not in aggregates.columns or not len(aggregates):
        return aggregates
    devices = {t.split("/", 1)[0] for t in targets if isinstance(t, str)}
    ids = aggregates["device_id"]
    if ids.dtype != object and not pd.api.types.is_string_dtype(ids):
        ids = ids.astype(str)
    keep = ids.isin(devices).to_numpy()
    return aggregates if keep.all() else aggregates[keep]


class _Columns:
    """A normalised, sorted frame as numpy columns plus each target's row range."""

    def __init__(self, frame: pd.DataFrame):
        self.n = len(frame)
        device = frame["device_id"].to_numpy(object)
        sensor = frame["sensor_id"].to_numpy(object)
        self.window_start = frame["window_start"].to_numpy("datetime64[us]")
        self.window_end = frame["window_end"].to_numpy("datetime64[us]")
        self.values = {c: frame[c].to_numpy(float) for c in ("value_mean", "value_min", "value_max", "value_std")}
        self.values["n_readings"] = frame["n_readings"].to_numpy(float)
        # rows are sorted by (device, sensor, window_start): each target is one contiguous range
        self.ranges: dict[str, tuple[int, int]] = target_ranges(device, sensor)


def _predict(columns: _Columns, a: int, b: int, model, manifest: dict):
    """(features, decision scores, is_anomaly) for rows [a, b)."""
    v = columns.values
    X = feature_matrix(v["value_mean"][a:b], v["value_min"][a:b], v["value_max"][a:b], v["value_std"][a:b],
                       v["n_readings"][a:b], manifest["feature_reference"])
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():
        bad = [pd.Timestamp(t) for t in columns.window_start[a:b][~finite][:3]]
        raise ValueError(f"non-finite features in windows starting {bad}")
    scores = np.asarray(model.decision_function(X), dtype="float64")
    return X, scores, scores < float(manifest["threshold"])


def _prediction_table(device_id: str, sensor_id: str, columns: _Columns, a: int, b: int, manifest: dict,
                      X: np.ndarray, scores: np.ndarray, flags: np.ndarray) -> pa.Table:
    n = b - a
    arrays = [
        pa.array([device_id] * n, pa.string()),
        pa.array([sensor_id] * n, pa.string()),
        pa.array(columns.window_start[a:b], pa.timestamp("us")),
        pa.array(columns.window_end[a:b], pa.timestamp("us")),
    ]
    arrays += [pa.array(np.ascontiguousarray(X[:, i]), pa.float64()) for i in range(len(FEATURES))]
    arrays += [
        pa.array(scores, pa.float64()),
        pa.array(flags, pa.bool_()),
        pa.array([manifest["sha256"]] * n, pa.string()),
    ]
    return pa.Table.from_arrays(arrays, schema=OUTPUT_SCHEMA)


def _score_one(raw: str, columns: _Columns, models_dir, with_digest: bool = False) -> tuple[dict, "pa.Table | None"]:
    """The target's receipt (``output`` and the hashes still ``None``) and its prediction table (``None`` when it failed)."""
    receipt = {
        "target": raw,
        "device_id": None,
        "sensor_id": None,
        "status": "failed",
        "rows_in": 0,
        "rows_out": 0,
        "anomalies": 0,
        "model_sha256": None,
        "output": None,
        "output_sha256": None,
        "output_md5": None,
        "anomaly_window_starts": [],
        "error": None,
        "error_type": None,
    }
    if with_digest:
        receipt["rows_sha256"] = None
    try:
        device_id, sensor_id = parse_target(raw)
    except ValueError as exc:
        receipt["error"] = str(exc)
        return receipt, None
    receipt.update(device_id=device_id, sensor_id=sensor_id)
    try:
        span = columns.ranges.get(raw)
        if span is None or span[0] == span[1]:
            raise UnknownTargetError(
                f"target {raw}: no rows for device {device_id!r} sensor {sensor_id!r} in the snapshot "
                f"(unknown device/sensor, or no data in this interval)"
            )
        a, b = span
        receipt["rows_in"] = b - a
        model, manifest = load_model(models_dir, device_id, sensor_id)
        receipt["model_sha256"] = manifest["sha256"]
        X, scores, flags = _predict(columns, a, b, model, manifest)
        table = _prediction_table(device_id, sensor_id, columns, a, b, manifest, X, scores, flags)
    except Exception as exc:  # one target's failure must not stop the others
        _fail(receipt, exc)
        return receipt, None
    receipt.update(
        status="ok",
        rows_out=b - a,
        anomalies=int(flags.sum()),
        anomaly_window_starts=[str(t) for t in columns.window_start[a:b][flags].astype("datetime64[s]")],
    )
    if with_digest:  # part_file.rows_digest of the table, from the arrays it was built of (columns in its order)
        receipt["rows_sha256"] = digest(
            (device_id, sensor_id, manifest["sha256"]),
            (columns.window_start[a:b], columns.window_end[a:b], *np.asarray(X, dtype="<f8").T, scores.astype("<f8"),
             flags.astype("u1")))
    return receipt, table


def _fail(receipt: dict, exc: Exception) -> None:
    receipt.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                   error_type=type(exc).__name__)  # what the caller decides on (retry or not), not the text


def main(argv=None) -> int:
    """Run ``python -m batch_scoring.scoring.score`` on ``argv``: score the targets of one snapshot into one part file in ``--out``.

    Prints one JSON line per target and a summary on stderr. Returns 0 when
    every target scored, 1 when one failed (its receipt says why), 2 for a
    missing or unreadable ``--aggregates`` or ``--targets-file``, or one with no
    targets (one ``error: <path>: ...`` line); usage errors (no targets) exit 2 via argparse.
    """
    parser = make_parser("python -m batch_scoring.scoring.score", __doc__.splitlines()[0])
    parser.add_argument("--aggregates", required=True, help="snapshot parquet (the interval's aggregates)")
    parser.add_argument("--models", required=True, help="models directory")
    parser.add_argument("--out", required=True, help="the interval's predictions folder (the unit's part file is written there)")
    parser.add_argument("--targets", nargs="+", metavar="DEVICE/SENSOR",
                        help="targets to score (this or --targets-file is required)")
    parser.add_argument("--targets-file", help="one device/sensor per line (or a JSON list); this or --targets is required")
    args = parser.parse_args(argv)
    if not args.targets and not args.targets_file:
        parser.error("give --targets or --targets-file")
    return run(_main, args)


def _main(args) -> int:
    targets = read_targets(args.targets, args.targets_file)
    if not targets:
        raise InputError(f"{args.targets_file}: no targets inside (expected --targets-file: one device/sensor per line)")
    # read only the row groups of the requested devices (snapshots are sorted by device)
    devices = sorted({t.split("/")[0] for t in targets if t.count("/") == 1})
    aggregates = read_parquet(args.aggregates, "--aggregates: snapshot parquet of the interval's aggregates",
                              filters=[("device_id", "in", devices)] if devices else None)
    receipts = score_unit(aggregates, args.models, args.out, targets)
    failed = [r for r in receipts if r["status"] != "ok"]
    for r in receipts:
        print(json.dumps({k: r[k] for k in ("target", "status", "rows_in", "rows_out", "anomalies", "error")}))
    print(f"scored {len(receipts) - len(failed)}/{len(receipts)} target(s); failed: "
          f"{', '.join(r['target'] for r in failed) or 'none'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
