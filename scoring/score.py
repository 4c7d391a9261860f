"""Score an aggregates snapshot with each target's model (local paths only).

CLI::

    python -m scoring.score --aggregates SNAPSHOT.parquet --models DIR --out DIR \\
        --targets d/s [d/s ...]   (or --targets-file FILE)

For each target writes ``<out>/<device>/<sensor>.parquet`` (device_id,
sensor_id, window_start, window_end, the FEATURES, decision_score, is_anomaly,
model_sha256; sorted by window_start) and ``<out>/<device>/<sensor>.receipt.json``.

Failure semantics: the snapshot is read once; each model is loaded (and its
sha256 verified) once. A failure of one target (no rows in the snapshot,
missing/tampered/corrupt model, ...) never stops the others: its receipt gets
``status: "failed"`` and the error, and any prediction file left at its path
by an earlier run is removed (so a collector sees it missing, not stale).
``score_targets`` never raises for a per-target failure: it returns the
receipts. The CLI exits 1 when any target failed (2 on bad arguments).
Outputs are deterministic: same snapshot + models -> byte-identical files.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scoring.config import FEATURES, RECEIPT_SUFFIX, parse_target, target_name
from scoring.features import compute_features
from scoring.model_store import load_model
from scoring.train import normalise_aggregates, read_targets_file

OUTPUT_COLUMNS = (
    ("device_id", "sensor_id", "window_start", "window_end") + tuple(FEATURES) + ("decision_score", "is_anomaly", "model_sha256")
)


class UnknownTargetError(LookupError):
    pass


def prediction_path(out_dir, device_id: str, sensor_id: str) -> Path:
    return Path(out_dir) / device_id / f"{sensor_id}.parquet"


def receipt_path(out_dir, device_id: str, sensor_id: str) -> Path:
    return Path(out_dir) / device_id / f"{sensor_id}{RECEIPT_SUFFIX}"


def output_schema() -> pa.Schema:
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


def score_targets(aggregates: pd.DataFrame, models_dir, out_dir, targets) -> list[dict]:
    """Score each target; return one receipt per target (in the order given, duplicates removed).

    Receipt keys: target, device_id, sensor_id, status ("ok"/"failed"),
    rows_in, rows_out, anomalies, model_sha256, output (relative path or
    None), error (None or message).
    """
    frame = normalise_aggregates(aggregates)
    groups = {target_name(d, s): g for (d, s), g in frame.groupby(["device_id", "sensor_id"], sort=True)}
    receipts = []
    seen = set()
    for raw in targets:
        if raw in seen:
            continue
        seen.add(raw)
        receipts.append(_score_one(raw, groups, models_dir, out_dir))
    return receipts


def score_frame(rows: pd.DataFrame, model, manifest: dict) -> pd.DataFrame:
    """Predictions for one target's windows (already normalised and sorted)."""
    feats = compute_features(rows, manifest["feature_reference"])
    X = feats.to_numpy(float)
    if not np.isfinite(X).all():
        bad = rows.loc[~np.isfinite(X).all(axis=1), "window_start"].head(3).tolist()
        raise ValueError(f"non-finite features in windows starting {bad}")
    scores = model.decision_function(X).astype("float64")
    out = rows[["device_id", "sensor_id", "window_start", "window_end"]].reset_index(drop=True)
    for col in FEATURES:
        out[col] = feats[col].to_numpy(float)
    out["decision_score"] = scores
    out["is_anomaly"] = scores < float(manifest["threshold"])
    out["model_sha256"] = manifest["sha256"]
    return out[list(OUTPUT_COLUMNS)]


def _score_one(raw: str, groups: dict, models_dir, out_dir) -> dict:
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
        "error": None,
    }
    try:
        device_id, sensor_id = parse_target(raw)
    except ValueError as exc:
        receipt["error"] = str(exc)
        return receipt
    receipt.update(device_id=device_id, sensor_id=sensor_id)
    pred_file = prediction_path(out_dir, device_id, sensor_id)
    try:
        rows = groups.get(raw)
        if rows is None or rows.empty:
            raise UnknownTargetError(
                f"target {raw}: no rows for device {device_id!r} sensor {sensor_id!r} in the snapshot "
                f"(unknown device/sensor, or no data in this interval)"
            )
        receipt["rows_in"] = int(len(rows))
        model, manifest = load_model(models_dir, device_id, sensor_id)
        receipt["model_sha256"] = manifest["sha256"]
        preds = score_frame(rows.sort_values("window_start", kind="mergesort"), model, manifest)
        _write_parquet(preds, pred_file)
        receipt.update(
            status="ok",
            rows_out=int(len(preds)),
            anomalies=int(preds["is_anomaly"].sum()),
            output=f"{device_id}/{pred_file.name}",
        )
    except Exception as exc:  # one target's failure must not stop the others
        receipt["error"] = f"{type(exc).__name__}: {exc}"
        if pred_file.exists():
            pred_file.unlink()
    _write_receipt(receipt, receipt_path(out_dir, device_id, sensor_id))
    return receipt


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(frame, schema=output_schema(), preserve_index=False)
    table = table.replace_schema_metadata(None)  # no pandas metadata: stable bytes across versions
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_receipt(receipt: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(receipt, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scoring.score", description=__doc__.splitlines()[0])
    parser.add_argument("--aggregates", required=True, help="snapshot parquet (the interval's aggregates)")
    parser.add_argument("--models", required=True, help="models directory")
    parser.add_argument("--out", required=True, help="predictions directory (written)")
    parser.add_argument("--targets", nargs="+", metavar="DEVICE/SENSOR")
    parser.add_argument("--targets-file", help="one device/sensor per line (or a JSON list)")
    args = parser.parse_args(argv)
    targets = list(args.targets or [])
    if args.targets_file:
        targets += read_targets_file(args.targets_file)
    if not targets:
        parser.error("give --targets or --targets-file")
    aggregates = pd.read_parquet(args.aggregates)
    receipts = score_targets(aggregates, args.models, args.out, targets)
    failed = [r for r in receipts if r["status"] != "ok"]
    for r in receipts:
        print(json.dumps({k: r[k] for k in ("target", "status", "rows_in", "rows_out", "anomalies", "error")}))
    print(f"scored {len(receipts) - len(failed)}/{len(receipts)} target(s); failed: "
          f"{', '.join(r['target'] for r in failed) or 'none'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
