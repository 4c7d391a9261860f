"""Train one Pipeline(StandardScaler, OneClassSVM) per device/sensor on normal history.

CLI::

    python -m scoring.train --aggregates FILE.parquet --models DIR \\
        [--start ISO --end ISO] [--targets d/s ...] [--skip-insufficient]

Training windows are those with ``start <= window_start`` and
``window_end <= end``. A target with fewer than ``MIN_TRAINING_WINDOWS``
windows is refused: by default nothing is trained and the error lists every
such target; with ``skip_insufficient=True`` (``--skip-insufficient``) those
are reported on stderr and the rest are trained.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from scoring.config import (
    AGGREGATE_COLUMNS,
    FEATURES,
    MIN_TRAINING_WINDOWS,
    SVM_PARAMS,
    THRESHOLD_FRACTION,
    parse_target,
    target_name,
)
from scoring.features import compute_features, feature_reference
from scoring.model_store import save_model


class TrainingError(ValueError):
    pass


def build_pipeline() -> Pipeline:
    return Pipeline([("scaler", StandardScaler()), ("svm", OneClassSVM(**SVM_PARAMS))])


def normalise_aggregates(aggregates: pd.DataFrame) -> pd.DataFrame:
    """Check the columns; ids as str; naive-UTC datetime64[us] windows; sorted."""
    missing = [c for c in AGGREGATE_COLUMNS if c not in aggregates.columns]
    if missing:
        raise ValueError(f"aggregates lack columns {missing}")
    frame = aggregates[list(AGGREGATE_COLUMNS)].copy()
    frame["device_id"] = frame["device_id"].astype(str)
    frame["sensor_id"] = frame["sensor_id"].astype(str)
    for col in ("window_start", "window_end"):
        ts = pd.to_datetime(frame[col])
        if getattr(ts.dt, "tz", None) is not None:
            ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
        frame[col] = ts.astype("datetime64[us]")
    frame["n_readings"] = frame["n_readings"].astype("int64")
    for col in ("value_mean", "value_min", "value_max", "value_std"):
        frame[col] = frame[col].astype("float64")
    return frame.sort_values(["device_id", "sensor_id", "window_start"], kind="mergesort").reset_index(drop=True)


def train_models(
    aggregates: pd.DataFrame,
    models_dir,
    start=None,
    end=None,
    targets=None,
    skip_insufficient: bool = False,
    source: str = "dataframe",
) -> list[dict]:
    """Train and store one model per target; return their manifests (sorted by target).

    ``targets``: iterable of ``device/sensor`` names; default every pair in
    ``aggregates``. Raises TrainingError naming every target that has fewer
    than MIN_TRAINING_WINDOWS windows in [start, end) (unless
    ``skip_insufficient``), before writing anything.
    """
    frame = normalise_aggregates(aggregates)
    start_ts = _ts(start) if start is not None else None
    end_ts = _ts(end) if end is not None else None
    if start_ts is not None:
        frame = frame[frame["window_start"] >= start_ts]
    if end_ts is not None:
        frame = frame[frame["window_end"] <= end_ts]
    groups = {target_name(d, s): g for (d, s), g in frame.groupby(["device_id", "sensor_id"], sort=True)}
    if targets is None:
        wanted = sorted(groups)
    else:
        wanted = sorted({target_name(*parse_target(t)) for t in targets})
    short = {t: len(groups[t]) if t in groups else 0 for t in wanted if len(groups.get(t, ())) < MIN_TRAINING_WINDOWS}
    if short:
        detail = ", ".join(f"{t} ({n} windows)" for t, n in short.items())
        msg = (
            f"too few training windows (need >= {MIN_TRAINING_WINDOWS}) in "
            f"[{start_ts or 'beginning'}, {end_ts or 'end'}): {detail}"
        )
        if not skip_insufficient:
            raise TrainingError(msg)
        print(f"skipping: {msg}", file=sys.stderr)
    manifests = []
    for name in wanted:
        if name in short:
            continue
        device_id, sensor_id = parse_target(name)
        manifests.append(
            _train_one(groups[name], models_dir, device_id, sensor_id, start_ts, end_ts, source)
        )
    return manifests


def _train_one(train: pd.DataFrame, models_dir, device_id, sensor_id, start_ts, end_ts, source) -> dict:
    reference = feature_reference(train)
    X = compute_features(train, reference).to_numpy(float)
    if not np.isfinite(X).all():
        raise TrainingError(f"non-finite features in the training windows of {target_name(device_id, sensor_id)}")
    model = build_pipeline().fit(X)
    rho = float(model[-1].offset_[0])
    threshold = -THRESHOLD_FRACTION * rho
    train_scores = model.decision_function(X)
    fields = {
        "features": list(FEATURES),
        "feature_reference": reference,
        "model": "Pipeline(StandardScaler, OneClassSVM)",
        "model_params": dict(SVM_PARAMS),
        "threshold": threshold,
        "threshold_rule": f"is_anomaly = decision_score < -{THRESHOLD_FRACTION} * rho (rho = OneClassSVM.offset_)",
        "threshold_fraction": THRESHOLD_FRACTION,
        "rho": rho,
        "sklearn_version": sklearn.__version__,
        "training": {
            "start": _iso(start_ts if start_ts is not None else train["window_start"].min()),
            "end": _iso(end_ts if end_ts is not None else train["window_end"].max()),
            "first_window_start": _iso(train["window_start"].min()),
            "last_window_end": _iso(train["window_end"].max()),
            "n_windows": int(len(train)),
            "flagged_windows": int((train_scores < threshold).sum()),
        },
        "created_from": {"source": source, "training_data_sha256": _frame_sha256(train)},
    }
    return save_model(models_dir, device_id, sensor_id, model, fields)


def _frame_sha256(frame: pd.DataFrame) -> str:
    h = hashlib.sha256()
    for col in AGGREGATE_COLUMNS:
        values = frame[col]
        if col in ("device_id", "sensor_id"):
            h.update("\x1f".join(values.astype(str)).encode())
        elif col in ("window_start", "window_end"):
            h.update(values.astype("datetime64[us]").to_numpy().astype("int64").tobytes())
        else:
            h.update(np.ascontiguousarray(values.to_numpy()).tobytes())
    return h.hexdigest()


def _ts(value) -> pd.Timestamp:
    t = pd.Timestamp(value)
    if t.tzinfo is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return t


def _iso(value) -> str:
    return pd.Timestamp(value).isoformat()


def _read_targets(args) -> list[str] | None:
    names = list(args.targets or [])
    if args.targets_file:
        names += read_targets_file(args.targets_file)
    return names or None


def read_targets_file(path) -> list[str]:
    """One ``device/sensor`` per line; blank lines and ``#`` comments ignored (a JSON list also works)."""
    text = Path(path).read_text()
    if text.lstrip().startswith("["):
        return [str(t) for t in json.loads(text)]
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scoring.train", description=__doc__.splitlines()[0])
    parser.add_argument("--aggregates", required=True, help="parquet file with the aggregate columns")
    parser.add_argument("--models", required=True, help="models directory (written)")
    parser.add_argument("--start", help="training range start (ISO, UTC), inclusive")
    parser.add_argument("--end", help="training range end (ISO, UTC), exclusive")
    parser.add_argument("--targets", nargs="+", metavar="DEVICE/SENSOR")
    parser.add_argument("--targets-file")
    parser.add_argument("--skip-insufficient", action="store_true", help="skip targets with too few windows")
    args = parser.parse_args(argv)
    aggregates = pd.read_parquet(args.aggregates)
    try:
        manifests = train_models(
            aggregates,
            args.models,
            start=args.start,
            end=args.end,
            targets=_read_targets(args),
            skip_insufficient=args.skip_insufficient,
            source=Path(args.aggregates).name,
        )
    except (TrainingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for m in manifests:
        print(json.dumps({"target": m["target"], "sha256": m["sha256"], "n_windows": m["training"]["n_windows"]}))
    print(f"trained {len(manifests)} model(s) into {args.models}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
