"""Train one Pipeline(FlooredStandardScaler, OneClassSVM) per device/sensor on normal history.

CLI::

    python -m batch_scoring.scoring.train --aggregates FILE.parquet --models DIR \\
        [--start ISO --end ISO] [--targets d/s ...] [--skip-insufficient]

Training windows are those with ``start <= window_start`` and
``window_end <= end``. Windows that cannot be trained on (a missing or
non-finite value_mean/value_min/value_max/value_std/n_readings, or no
readings; a missing std alone is a one-reading window and counts as 0) are
left out and listed in the manifest. A target with fewer than
``MIN_TRAINING_WINDOWS`` usable windows is refused: by default nothing is
trained and the error lists every such target (with its excluded windows);
with ``skip_insufficient=True`` (``--skip-insufficient``) those are reported
on stderr and the rest are trained.

Degenerate training data (see ``scoring.features``): each feature is scaled by
``max(training std, floor)`` (``scoring.features.scale_floor``) instead of
StandardScaler's rule (its std, or 1 when that is ~0), so a sensor that never
varied in a feature still sees that feature move. When some training windows
were constant (std not above the resolution, ``scoring.features.varied_windows``)
and others varied - a 0/1 status, a set-point that changes now and then - the
training std is taken over the windows that varied only (StandardScaler's
``sample_weight``, 0 for the constant windows; the model is still fitted on
every window): over all windows the std of ``log_std_ratio`` and
``peak_ratio`` measures how often the sensor moved, not how it moved, and at
that scale a reading of 0.5 or 2.0 in a 0/1 sensor's window looked like an
ordinary flip to 0. A target with no constant window (every ordinary,
noisy one) is fitted without ``sample_weight``, exactly as before.

Per target the manifest records ``scale_floor``, ``scale``,
``training.feature_std`` (per feature, over every training window),
``training.std_ref`` (``scoring.features.std_reference``: value, source -
``"median window std"``, or the fallbacks ``"median std of the windows that
varied"`` and ``"resolution floor"`` - median window std, resolution, windows
that varied), ``training.scale_fit_windows`` (the windows the scales were
fitted on), ``training.scale_floored`` (every feature scaled by its floor: the
std it was fitted on, floor, rule, whether it had ~zero variance),
``training.constant_features`` (every feature with ~zero variance over the
training windows: a fact, kept for the record), ``training.degenerate`` (those
of them whose constancy means the sensor itself did not vary: value_mean,
log_std_ratio, peak_ratio; a constant ``coverage``, the same number of readings
in every window, is what a sensor that delivers every reading does and is not
listed), ``training.excluded_windows`` (count and first starts) and
``training.warnings`` (one line per finding: degenerate features, a std_ref
fallback, excluded windows; empty for an ordinary target, complete delivery
included). The CLI prints one JSON line per target on stdout (target, sha256,
n_windows, degenerate, constant_features, std_ref_source, scale_floored,
excluded_windows, warnings), each warning as ``warning: <target>: <text>`` on
stderr, and a summary naming the targets with warnings. Exit 0 when trained
(warnings included), 1 on an error.
"""
from __future__ import annotations

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

from batch_scoring.scoring.config import (
    AGGREGATE_COLUMNS,
    FEATURES,
    MIN_TRAINING_WINDOWS,
    SCALE_FLOOR_FRACTION,
    STD_FLOOR_RELATIVE,
    SVM_PARAMS,
    THRESHOLD_FRACTION,
    ZERO_VARIANCE_FRACTION,
    parse_target,
    target_name,
)
from batch_scoring.scoring.features import (
    SCALE_FLOOR_RULES,
    STD_REF_FLOOR,
    STD_REF_VARIED,
    compute_features,
    feature_reference,
    scale_floor,
    std_reference,
    varied_windows,
)
from batch_scoring.scoring.cli import make_parser, progress, read_parquet, read_targets, run
from batch_scoring.scoring.model_store import save_model
from batch_scoring.scoring.scaler import FlooredStandardScaler
from batch_scoring.scoring.times import utc_naive_series, utc_timestamp

# Features whose ~zero training variance is expected of a healthy sensor: a sensor that delivers every
# reading has a constant reading count. Recorded (training.constant_features), not warned about.
EXPECTED_CONSTANT = ("coverage",)

# How many excluded window starts a manifest lists (the count is always complete).
EXCLUDED_LISTED = 10


class TrainingError(ValueError):
    """A target cannot be trained: too few windows in the range, or non-finite features."""
    pass


def build_pipeline(scale_floor=None) -> Pipeline:
    """``Pipeline(FlooredStandardScaler(scale_floor), OneClassSVM(**SVM_PARAMS))`` (unfitted).

    ``scale_floor``: one float > 0 per feature (``FEATURES`` order), or None
    for no floor (a plain StandardScaler's behaviour).
    """
    return Pipeline([
        ("scaler", FlooredStandardScaler(scale_floor=scale_floor)),
        ("svm", OneClassSVM(**SVM_PARAMS)),
    ])


def normalise_aggregates(aggregates: pd.DataFrame) -> pd.DataFrame:
    """Check the columns; ids as str; naive-UTC datetime64[us] windows; sorted."""
    missing = [c for c in AGGREGATE_COLUMNS if c not in aggregates.columns]
    if missing:
        raise ValueError(f"aggregates lack columns {missing}")
    frame = aggregates[list(AGGREGATE_COLUMNS)].copy()
    frame["device_id"] = frame["device_id"].astype(str)
    frame["sensor_id"] = frame["sensor_id"].astype(str)
    for col in ("window_start", "window_end"):
        frame[col] = utc_naive_series(frame[col]).astype("datetime64[us]")
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
    ``aggregates``. Windows that cannot be trained on (``unusable_windows``:
    a missing or non-finite mean/min/max/std/n_readings, or no readings) are
    left out and listed in the manifest (``training.excluded_windows``,
    ``training.warnings``). Raises TrainingError naming every target that has
    fewer than MIN_TRAINING_WINDOWS usable windows in [start, end) (unless
    ``skip_insufficient``), before writing anything.
    """
    frame = normalise_aggregates(_missing_counts_as_zero(aggregates))
    start_ts = utc_timestamp(start) if start is not None else None
    end_ts = utc_timestamp(end) if end is not None else None
    if start_ts is not None:
        frame = frame[frame["window_start"] >= start_ts]
    if end_ts is not None:
        frame = frame[frame["window_end"] <= end_ts]
    bad = unusable_windows(frame)
    excluded = {target_name(d, s): g["window_start"].tolist()
                for (d, s), g in frame[bad].groupby(["device_id", "sensor_id"], sort=True)}
    frame = frame[~bad]
    groups = {target_name(d, s): g for (d, s), g in frame.groupby(["device_id", "sensor_id"], sort=True)}
    if targets is None:
        wanted = sorted(set(groups) | set(excluded))
    else:
        wanted = sorted({target_name(*parse_target(t)) for t in targets})
    short = {t: len(groups[t]) if t in groups else 0 for t in wanted if len(groups.get(t, ())) < MIN_TRAINING_WINDOWS}
    if short:
        detail = ", ".join(
            f"{t} ({n} windows{f'; {len(excluded[t])} more excluded: {_EXCLUDED_WHY}' if excluded.get(t) else ''})"
            for t, n in short.items()
        )
        msg = (
            f"too few training windows (need >= {MIN_TRAINING_WINDOWS}) in "
            f"[{start_ts or 'beginning'}, {end_ts or 'end'}): {detail}"
        )
        if not skip_insufficient:
            raise TrainingError(msg)
        print(f"skipping: {msg}", file=sys.stderr)
    manifests = []
    for name in progress([t for t in wanted if t not in short], "training", unit="target"):
        device_id, sensor_id = parse_target(name)
        manifests.append(_train_one(groups[name], models_dir, device_id, sensor_id, start_ts, end_ts, source,
                                    excluded.get(name, [])))
    return manifests


_EXCLUDED_WHY = "missing or non-finite value_mean/value_min/value_max/value_std/n_readings, or no readings"


def unusable_windows(frame: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the normalised windows training leaves out.

    A window is unusable when its value_mean, value_min or value_max is missing
    or non-finite, its value_std is infinite (a missing std is a one-reading
    window and counts as 0, as in scoring), or it has no readings (n_readings
    < 1, or missing: see ``_missing_counts_as_zero``).
    """
    finite = np.ones(len(frame), dtype=bool)
    for col in ("value_mean", "value_min", "value_max"):
        finite &= np.isfinite(frame[col].to_numpy(float))
    std = frame["value_std"].to_numpy(float)
    finite &= ~np.isinf(std)
    finite &= frame["n_readings"].to_numpy() >= 1
    return ~finite


def _missing_counts_as_zero(aggregates: pd.DataFrame) -> pd.DataFrame:
    """A missing or non-finite n_readings becomes 0 (so the window is excluded, by name, not a crash)."""
    if "n_readings" not in aggregates.columns:
        return aggregates  # normalise_aggregates names the missing column
    n = pd.to_numeric(aggregates["n_readings"], errors="coerce").astype("float64")
    if np.isfinite(n.to_numpy()).all():
        return aggregates
    return aggregates.assign(n_readings=n.where(np.isfinite(n), 0.0))


def _train_one(train: pd.DataFrame, models_dir, device_id, sensor_id, start_ts, end_ts, source,
               excluded: list) -> dict:
    target = target_name(device_id, sensor_id)
    std_ref = std_reference(train)
    reference = feature_reference(train)
    X = compute_features(train, reference).to_numpy(float)
    if not np.isfinite(X).all():  # unusable windows are excluded above: not expected
        raise TrainingError(f"non-finite features in the training windows of {target}")
    floors = scale_floor(reference)
    # Scales from the windows that varied when some did not (see the module docstring); an ordinary
    # target has no constant window and is fitted exactly as before (no sample_weight at all).
    varied = varied_windows(train["value_std"].to_numpy(float), std_ref["resolution"])
    fit_params = {}
    if 0 < varied.sum() < len(train):
        fit_params["scaler__sample_weight"] = varied.astype("float64")
    model = build_pipeline([floors[f] for f in FEATURES]).fit(X, **fit_params)
    scaler = model.named_steps["scaler"]
    # Constancy is judged over every training window (StandardScaler's std, as the model had it before
    # any weighting); the floors are compared with the std the scaler was fitted on.
    feature_std = {f: float(v) for f, v in zip(FEATURES, np.sqrt(StandardScaler().fit(X).var_))}
    fit_std = {f: float(v) for f, v in zip(FEATURES, np.sqrt(scaler.var_))}
    constant = [f for f in FEATURES if feature_std[f] < ZERO_VARIANCE_FRACTION * floors[f]]
    floored, warnings = [], []
    for i, name in enumerate(FEATURES):
        if scaler.floored_[i]:
            floored.append({"feature": name, "training_std": fit_std[name], "scale_floor": floors[name],
                            "floor_rule": f"{SCALE_FLOOR_FRACTION} x {SCALE_FLOOR_RULES[name]}",
                            "zero_variance": name in constant})
    degenerate = [f for f in constant if f not in EXPECTED_CONSTANT]
    if degenerate:
        detail = ", ".join(f"{f} (std {feature_std[f]:.3g}, floor {floors[f]:.3g})" for f in degenerate)
        warnings.append(
            f"~zero variance over the {len(train)} training windows in {detail}: scaled by the floor instead "
            "of StandardScaler's 1 (rules in training.scale_floored)"
        )
    if std_ref["source"] == STD_REF_VARIED:
        warnings.append(
            f"std_ref fallback: the median window std ({std_ref['median_window_std']:.3g}) is not above the "
            f"resolution {std_ref['resolution']:.3g}: {len(train) - std_ref['varied_windows']} of {len(train)} "
            "training windows are constant, as for a status or set-point sensor; std_ref is "
            f"{std_ref['value']:.3g}, the median std of the {std_ref['varied_windows']} windows that varied, "
            "and the feature scales come from those windows (training.std_ref)"
        )
    elif std_ref["source"] == STD_REF_FLOOR:
        why = (f"every training window has one reading (no window std), so std_ref is the resolution "
               f"{std_ref['resolution']:.3g}" if train["value_std"].isna().all()
               else f"no training window's std is above the resolution {std_ref['resolution']:.3g} "
                    f"({STD_FLOOR_RELATIVE:g} x the median level), so std_ref is that resolution")
        warnings.append(
            f"std_ref fallback: {why} and a stuck window cannot be told from an ordinary one (training.std_ref)"
        )
    if excluded:
        warnings.append(
            f"{len(excluded)} training window(s) excluded ({_EXCLUDED_WHY}), first at {_iso(min(excluded))}: "
            f"trained on the other {len(train)}"
        )
    rho = float(model[-1].offset_[0])
    threshold = -THRESHOLD_FRACTION * rho
    train_scores = model.decision_function(X)
    fields = {
        "features": list(FEATURES),
        "feature_reference": reference,
        "model": "Pipeline(FlooredStandardScaler, OneClassSVM)",
        "model_params": dict(SVM_PARAMS),
        "scale_floor": floors,
        "scale": {f: float(v) for f, v in zip(FEATURES, scaler.scale_)},
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
            "feature_std": feature_std,
            "scale_fit_windows": int(varied.sum()) if fit_params else int(len(train)),
            "std_ref": std_ref,
            "scale_floored": floored,
            "constant_features": constant,
            "degenerate": degenerate,
            "excluded_windows": {"count": len(excluded),
                                 "window_starts": [_iso(t) for t in sorted(excluded)[:EXCLUDED_LISTED]]},
            "warnings": warnings,
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


def _iso(value) -> str:
    return pd.Timestamp(value).isoformat()


def main(argv=None) -> int:
    """Run ``python -m batch_scoring.scoring.train`` on ``argv``: train one model per target into ``--models``.

    Prints one JSON line per manifest, each training warning, and a summary on
    stderr. Returns 0, 1 for a ``TrainingError``/``ValueError`` (printed as
    ``error: ...``), 2 for a missing or unreadable ``--aggregates`` or
    ``--targets-file`` (one ``error: <path>: ...`` line); usage errors exit 2 via argparse.
    """
    parser = make_parser("python -m batch_scoring.scoring.train", __doc__.splitlines()[0])
    parser.add_argument("--aggregates", required=True, help="parquet file with the aggregate columns")
    parser.add_argument("--models", required=True, help="models directory (written)")
    parser.add_argument("--start", help="training range start (ISO, UTC), inclusive; default: the first window")
    parser.add_argument("--end", help="training range end (ISO, UTC), exclusive; default: the last window")
    parser.add_argument("--targets", nargs="+", metavar="DEVICE/SENSOR", help="default: every target in --aggregates")
    parser.add_argument("--targets-file", help="one device/sensor per line (or a JSON list), added to --targets")
    parser.add_argument("--skip-insufficient", action="store_true", help="skip targets with too few windows")
    return run(_main, parser.parse_args(argv))


def _main(args) -> int:
    aggregates = read_parquet(args.aggregates, "--aggregates: parquet file with the aggregate columns")
    targets = read_targets(args.targets, args.targets_file) or None
    try:
        manifests = train_models(
            aggregates,
            args.models,
            start=args.start,
            end=args.end,
            targets=targets,
            skip_insufficient=args.skip_insufficient,
            source=Path(args.aggregates).name,
        )
    except (TrainingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for m in manifests:
        training = m["training"]
        print(json.dumps({"target": m["target"], "sha256": m["sha256"], "n_windows": training["n_windows"],
                          "degenerate": training["degenerate"],
                          "constant_features": training["constant_features"],
                          "std_ref_source": training["std_ref"]["source"],
                          "scale_floored": [f["feature"] for f in training["scale_floored"]],
                          "excluded_windows": training["excluded_windows"]["count"],
                          "warnings": training["warnings"]}))
        for warning in training["warnings"]:
            print(f"warning: {m['target']}: {warning}", file=sys.stderr)
    flagged = [m["target"] for m in manifests if m["training"]["warnings"]]
    print(f"trained {len(manifests)} model(s) into {args.models}"
          + (f"; {len(flagged)} with warnings (training.warnings in their manifest.json): {', '.join(flagged)}"
             if flagged else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
