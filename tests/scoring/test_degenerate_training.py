"""Degenerate training data (issue 10, item 4): a feature that never varied in training still sees what it should.

A frozen or status-like sensor, or one that always delivers exactly the same
number of readings, gives features with zero (or ~zero) training variance;
StandardScaler divides those by 1, so the RBF kernel saw them in raw units and
e.g. a window with 3 of 30 readings scored -0.0095 against a threshold of
-0.072 (not flagged). Training now floors each feature's scale
(``scoring.scaler.FlooredStandardScaler``, floors from ``scoring.features.scale_floor``)
and reports the target (manifest ``training.degenerate``/``warnings``, the CLI).

Follow-up from a user's trial: a constant reading count (complete delivery, a
healthy sensor) is recorded (``training.constant_features``) but no longer
warned about; and a 0/1 status sensor that flips in under half of its windows
(median window std 0) no longer gets ``std_ref`` = the resolution floor (1e-6):
``std_ref`` comes from the windows that varied, its scales too, the fallback is
reported, and readings off its two states (2.0, 0.5) are flagged.
"""
from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from batch_scoring.scoring.config import FEATURES, MIN_TRAINING_WINDOWS, SVM_PARAMS, THRESHOLD_FRACTION
from batch_scoring.scoring.features import compute_features, feature_reference, scale_floor, std_reference
from batch_scoring.scoring.model_store import load_model, save_model
from batch_scoring.scoring.scaler import FlooredStandardScaler
from batch_scoring.scoring.score import score_unit
from batch_scoring.scoring.train import TrainingError, train_models

T0 = pd.Timestamp("2026-01-01")
SCORE_T0 = pd.Timestamp("2026-01-02")
N = 30  # readings per window


def window(device: str, start: pd.Timestamp, readings, sensor: str = "s1") -> dict:
    """One aggregate row from the window's readings (value_std: sample std, missing for one reading)."""
    x = np.asarray(readings, dtype=float)
    return dict(device_id=device, sensor_id=sensor, window_start=start, window_end=start + pd.Timedelta(minutes=5),
                value_mean=float(x.mean()), value_min=float(x.min()), value_max=float(x.max()),
                value_std=float(x.std(ddof=1)) if len(x) > 1 else np.nan, n_readings=len(x))


def at(t0: pd.Timestamp, i: int) -> pd.Timestamp:
    return t0 + pd.Timedelta(minutes=5 * i)


# --- the sensors: how each one's ordinary windows look --------------------------------

STATUS = [0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0]


def ordinary(kind: str, i: int, rng) -> list[float]:
    """The readings of window ``i`` of an ordinary day of sensor ``kind`` (always N readings)."""
    if kind == "const":      # frozen or set-point sensor (the issue's example)
        return [20.0] * N
    if kind == "zero":       # constant at 0.0 (the level floor takes 1.0 as the level)
        return [0.0] * N
    if kind == "noisy":      # ordinary noise, but always exactly N readings: coverage never varied
        return list(20.0 + rng.normal(0, 1, N))
    if kind == "tiny":       # near-constant: std 1e-9 at level 20, below the std resolution (1e-6 x level)
        return list(20.0 + rng.normal(0, 1e-9, N))
    if kind == "tiny0":      # the same noise at level 0: an ordinary sensor at its own (tiny) scale
        return list(rng.normal(0, 1e-9, N))
    if kind == "status":     # 0/1 status: mostly constant windows, a few switching ones
        state, prev = STATUS[i % len(STATUS)], STATUS[i % len(STATUS) - 1]
        if state != prev:
            k = (7, 12, 20, 25, 15, 9, 18, 22)[i % 8]
            return [float(prev)] * k + [float(state)] * (N - k)
        return [float(state)] * N
    raise ValueError(kind)


KINDS = ("const", "zero", "noisy", "tiny", "tiny0", "status")


def train_world(tmp_path, kinds=KINDS, windows: int = 24, seed: int = 1):
    rng = np.random.default_rng(seed)
    rows = [window(k, at(T0, i), ordinary(k, i, rng)) for k in kinds for i in range(windows)]
    models = tmp_path / "models"
    manifests = {m["target"]: m for m in train_models(pd.DataFrame(rows), models)}
    return models, manifests


def score(tmp_path, models, cases: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, tuple[bool, float]]]:
    """Score named windows per sensor kind; returns {kind: {case: (is_anomaly, decision_score)}}."""
    rows, names = [], []
    for kind, windows in cases.items():
        for j, (name, readings) in enumerate(windows.items()):
            rows.append(window(kind, at(SCORE_T0, j), readings))
            names.append((kind, name))
    out = tmp_path / "out"
    receipts = score_unit(pd.DataFrame(rows), models, out, [f"{k}/s1" for k in cases])
    (part,) = out.glob("part-*.parquet")  # the unit's one file
    every = pd.read_parquet(part)
    assert all(r["status"] == "ok" for r in receipts), receipts
    result: dict = {k: {} for k in cases}
    for kind in cases:
        pred = every[every["device_id"] == kind]
        for name, flag, s in zip((n for k, n in names if k == kind), pred["is_anomaly"], pred["decision_score"]):
            result[kind][name] = (bool(flag), float(s))
    return result


# --- the issue's example ------------------------------------------------------------------

def test_issue_example_a_frozen_sensor_flags_a_dropout_like_a_noisy_one(tmp_path):
    models, manifests = train_world(tmp_path, kinds=("const", "noisy"))
    rng = np.random.default_rng(9)
    got = score(tmp_path, models, {"const": {"dropout": [20.0] * 3}, "noisy": {"dropout": list(20 + rng.normal(0, 1, 3))}})
    assert got["noisy"]["dropout"][0] is True
    flagged, decision = got["const"]["dropout"]
    # before: -0.0095 against -0.072, not flagged; now it scores like nothing in training (-rho)
    assert flagged is True and decision < manifests["const/s1"]["threshold"] == pytest.approx(-0.072)
    assert decision == pytest.approx(-manifests["const/s1"]["rho"], rel=1e-3)


def test_training_reports_the_degenerate_features_per_target(tmp_path):
    _, manifests = train_world(tmp_path)
    training = {t: m["training"] for t, m in manifests.items()}
    sensor_constant = ["value_mean", "log_std_ratio", "peak_ratio"]
    assert {t: tr["degenerate"] for t, tr in training.items()} == {
        "const/s1": sensor_constant, "zero/s1": sensor_constant, "tiny/s1": sensor_constant,
        "noisy/s1": [], "status/s1": [], "tiny0/s1": [],
    }
    # the full facts stay in the manifest: every target here had exactly 30 readings in every window
    assert {t: tr["constant_features"] for t, tr in training.items()} == {
        "const/s1": list(FEATURES), "zero/s1": list(FEATURES), "tiny/s1": list(FEATURES),
        "noisy/s1": ["coverage"], "status/s1": ["coverage"], "tiny0/s1": ["coverage"],
    }
    assert {t: tr["std_ref"]["source"] for t, tr in training.items()} == {
        "const/s1": "resolution floor", "zero/s1": "resolution floor", "tiny/s1": "resolution floor",
        "noisy/s1": "median window std", "tiny0/s1": "median window std",
        "status/s1": "median std of the windows that varied",
    }
    const = manifests["const/s1"]
    assert const["model"] == "Pipeline(FlooredStandardScaler, OneClassSVM)"
    assert const["scale"] == const["scale_floor"] == scale_floor(const["feature_reference"])
    assert const["scale_floor"]["coverage"] == pytest.approx(0.5 / 30)  # half a reading
    assert const["scale_floor"]["value_mean"] == pytest.approx(0.5 * 20e-6 / np.sqrt(30))  # std_ref = 1e-6 x level
    floored = {f["feature"]: f for f in const["training"]["scale_floored"]}
    assert floored["coverage"] == {"feature": "coverage", "training_std": 0.0, "scale_floor": pytest.approx(1 / 60),
                                   "floor_rule": "0.5 x one reading, 1 / n_ref", "zero_variance": True}
    assert const["training"]["std_ref"] == {
        "value": pytest.approx(2e-5), "source": "resolution floor", "median_window_std": 0.0,
        "resolution": pytest.approx(2e-5), "varied_windows": 0, "windows": 24}
    assert const["training"]["warnings"] == [
        "~zero variance over the 24 training windows in value_mean (std 0, floor 1.83e-06), log_std_ratio (std 0, "
        "floor 0.0657), peak_ratio (std 0, floor 0.0657): scaled by the floor instead of StandardScaler's 1 "
        "(rules in training.scale_floored)",
        "std_ref fallback: no training window's std is above the resolution 2e-05 (1e-06 x the median level), so "
        "std_ref is that resolution and a stuck window cannot be told from an ordinary one (training.std_ref)",
    ]
    noisy = manifests["noisy/s1"]
    assert noisy["training"]["warnings"] == []  # complete delivery is not a warning
    assert noisy["scale"]["coverage"] == noisy["scale_floor"]["coverage"]
    assert [(f["feature"], f["zero_variance"]) for f in noisy["training"]["scale_floored"]] == [("coverage", True)]
    for f in ("value_mean", "log_std_ratio", "peak_ratio"):  # varied: scaled by their own std, as before
        assert noisy["scale"][f] == noisy["training"]["feature_std"][f] > noisy["scale_floor"][f]
    assert noisy["training"]["scale_fit_windows"] == 24
    # near-constant is degenerate too: std 1.7e-10 in value_mean is not zero, but far below its floor
    tiny = manifests["tiny/s1"]["training"]
    assert 0 < tiny["feature_std"]["value_mean"] < 1e-9 and tiny["degenerate"] == sensor_constant
    # the switching status sensor: 18 of 24 windows constant; std_ref and the scales from the other 6
    status = manifests["status/s1"]
    assert status["training"]["scale_fit_windows"] == 6
    assert status["training"]["warnings"] == [
        "std_ref fallback: the median window std (0) is not above the resolution 5.5e-07: 18 of 24 training "
        "windows are constant, as for a status or set-point sensor; std_ref is 0.458, the median std of the 6 "
        "windows that varied, and the feature scales come from those windows (training.std_ref)"]


ORDINARY_DAYS = 3  # ordinary windows scored per sensor, from a fresh draw (not the training windows)


def cases_for(kind: str, rng) -> dict[str, list[float]]:
    """Ordinary windows, plus the anomalies the sensor must show: dropout, stuck, level shift, spike."""
    base = {"const": 20.0, "zero": 0.0, "noisy": 20.0, "tiny": 20.0, "tiny0": 0.0, "status": 1.0}[kind]
    sigma = {"noisy": 1.0, "tiny": 1e-9, "tiny0": 1e-9}.get(kind, 0.0)
    noise = (lambda n: rng.normal(0, sigma, n)) if sigma else (lambda n: np.zeros(n))
    cases = {f"ordinary {i}": ordinary(kind, i, rng) for i in range(0, 24, 24 // 8)}
    cases["dropout 3 of 30"] = list(base + noise(3))
    cases["dropout 15 of 30"] = list(base + noise(15))
    cases["stuck"] = [base + float(noise(1)[0])] * N
    shift = {"noisy": 4.0, "tiny0": 4e-9, "status": 4.0}.get(kind, 1.0)  # 4 sigma, or 1 unit at ~zero sigma
    cases["level shift"] = list(base + shift + noise(N))
    spike = list(base + noise(N))
    spike[7] += {"noisy": 8.0, "tiny0": 8e-9, "status": 4.0}.get(kind, 1.0)
    cases["spike"] = spike
    return cases


# What each sensor must flag. "stuck" (std 0) is an anomaly only where training had a std the model can
# resolve: not for the constant sensors (std 0 is their ordinary), nor for the status sensor (mostly
# constant windows), nor for std 1e-9 at level 20 (below the std floor of 1e-6 x level, a documented choice:
# there such noise counts as 0); it is for ordinary noise, and for the same 1e-9 noise at level 0.
STUCK_IS_ANOMALY = {"const": False, "zero": False, "noisy": True, "tiny": False, "tiny0": True, "status": False}


@pytest.mark.parametrize("kind", KINDS)
def test_each_degenerate_sensor_flags_dropouts_shifts_spikes_and_not_its_ordinary_windows(tmp_path, kind):
    # 6 hours of training: with 24 windows a fresh ordinary window of a noisy sensor is flagged 1-6 % of the time
    models, manifests = train_world(tmp_path, windows=72)
    rng = np.random.default_rng(2026)
    cases = cases_for(kind, rng)
    got = score(tmp_path, models, {kind: cases})[kind]
    threshold = manifests[f"{kind}/s1"]["threshold"]
    expected = {name: not name.startswith("ordinary") for name in cases}
    expected["stuck"] = STUCK_IS_ANOMALY[kind]
    assert {name: flag for name, (flag, _) in got.items()} == expected, (threshold, got)


@pytest.mark.parametrize("kind", ["const", "noisy", "status"])
def test_a_sensor_that_always_had_every_reading_tolerates_one_missing_and_flags_two(tmp_path, kind):
    """The coverage floor is half a reading: one missing reading of 30 is 2 scale units, two are 4."""
    models, _ = train_world(tmp_path)
    rng = np.random.default_rng(5)
    base = ordinary(kind, 0, rng)
    got = score(tmp_path, models, {kind: {"29": base[:29], "31": base + [base[0]], "28": base[:28]}})[kind]
    assert (got["29"][0], got["31"][0], got["28"][0]) == (False, False, True), got


def test_one_reading_per_window_sensor_trains_and_scores(tmp_path):
    """Every std missing (one reading per window): std_ref falls back to the level floor, no NaN."""
    rng = np.random.default_rng(3)
    rows = [window("slow", at(T0, i), [20 + rng.normal(0, 0.5)]) for i in range(24)]
    models = tmp_path / "models"
    (m,) = train_models(pd.DataFrame(rows), models)
    assert m["feature_reference"] == {"std_ref": pytest.approx(20e-6, rel=0.1), "n_ref": 1.0}
    assert m["training"]["degenerate"] == ["log_std_ratio", "peak_ratio"]
    assert m["training"]["constant_features"] == ["log_std_ratio", "peak_ratio", "coverage"]
    assert m["training"]["warnings"][-1] == (
        f"std_ref fallback: every training window has one reading (no window std), so std_ref is the resolution "
        f"{m['feature_reference']['std_ref']:.3g} and a stuck window cannot be told from an ordinary one "
        "(training.std_ref)")
    got = score(tmp_path, models, {"slow": {"ordinary": [20.1], "shift": [25.0], "two readings": [20.0, 20.2]}})["slow"]
    assert {k: v[0] for k, v in got.items()} == {"ordinary": False, "shift": True, "two readings": True}


# --- missing values in training ------------------------------------------------------------

def test_windows_with_missing_or_non_finite_values_are_excluded_and_reported(tmp_path):
    rng = np.random.default_rng(4)
    rows = [window("noisy", at(T0, i), ordinary("noisy", i, rng)) for i in range(24)]
    rows[3]["value_mean"] = np.nan
    rows[8]["value_max"] = np.inf
    rows[15]["n_readings"] = None
    frame = pd.DataFrame(rows)
    (m,) = train_models(frame, tmp_path / "models")
    assert m["training"]["n_windows"] == 21
    assert m["training"]["excluded_windows"] == {
        "count": 3, "window_starts": ["2026-01-01T00:15:00", "2026-01-01T00:40:00", "2026-01-01T01:15:00"]}
    assert m["training"]["warnings"][-1] == (
        "3 training window(s) excluded (missing or non-finite value_mean/value_min/value_max/value_std/n_readings, "
        "or no readings), first at 2026-01-01T00:15:00: trained on the other 21")
    # too few usable windows: refused before anything is written, the exclusions named
    with pytest.raises(TrainingError, match=rf"need >= {MIN_TRAINING_WINDOWS}.*noisy/s1 \(11 windows; 2 more excluded: "
                                            r"missing or non-finite"):
        train_models(frame.iloc[:13], tmp_path / "m2")
    assert not (tmp_path / "m2").exists()


# --- the model: ordinary targets unchanged, deterministic, old models still load ------------------

def test_ordinary_targets_get_exactly_the_standard_scaler_model(tmp_path, small_data):
    """No floor applies to ordinary simulated targets: same scale_ and decision scores as StandardScaler."""
    train_aggs, score_aggs, _ = small_data
    manifests = train_models(train_aggs, tmp_path / "m", "2026-03-01", "2026-03-01 06:00")
    for m in manifests:
        assert m["training"]["scale_floored"] == [] and m["training"]["warnings"] == []
        model, _ = load_model(tmp_path / "m", m["device_id"], m["sensor_id"])
        rows = train_aggs[(train_aggs.device_id == m["device_id"]) & (train_aggs.sensor_id == m["sensor_id"])]
        X = compute_features(rows, feature_reference(rows)).to_numpy()
        plain = Pipeline([("scaler", StandardScaler()), ("svm", OneClassSVM(**SVM_PARAMS))]).fit(X)
        assert np.array_equal(model[0].scale_, plain[0].scale_)
        Y = compute_features(score_aggs[score_aggs.device_id == m["device_id"]], m["feature_reference"]).to_numpy()
        assert np.array_equal(model.decision_function(Y), plain.decision_function(Y))


def test_degenerate_models_are_byte_identical_across_retraining(tmp_path):
    a = train_world(tmp_path / "a")[1]
    b = train_world(tmp_path / "b")[1]
    assert a == b
    for t in ("const", "status"):
        assert (tmp_path / f"a/models/{t}/s1/model.joblib").read_bytes() == \
            (tmp_path / f"b/models/{t}/s1/model.joblib").read_bytes()


def test_a_model_trained_before_the_floor_still_loads_and_scores(tmp_path):
    """A manifest and pickle of the previous release (plain StandardScaler, no floor fields) keep working."""
    rng = np.random.default_rng(8)
    rows = pd.DataFrame([window("noisy", at(T0, i), ordinary("noisy", i, rng)) for i in range(24)])
    ref = feature_reference(rows)
    old = Pipeline([("scaler", StandardScaler()), ("svm", OneClassSVM(**SVM_PARAMS))])
    old.fit(compute_features(rows, ref).to_numpy())
    import sklearn

    save_model(tmp_path, "noisy", "s1", old, {
        "features": list(FEATURES), "feature_reference": ref, "model": "Pipeline(StandardScaler, OneClassSVM)",
        "threshold": -THRESHOLD_FRACTION * float(old[-1].offset_[0]), "sklearn_version": sklearn.__version__})
    model, manifest = load_model(tmp_path, "noisy", "s1")
    assert type(model[0]) is StandardScaler
    receipts = score_unit(rows, tmp_path, tmp_path / "out", ["noisy/s1"])
    assert receipts[0]["status"] == "ok" and receipts[0]["rows_out"] == 24


# --- the scaler ------------------------------------------------------------------------------

def test_floored_standard_scaler():
    X = np.array([[1.0, 5.0, 0.0], [3.0, 5.0, 0.001], [5.0, 5.0, 0.002]])
    plain = StandardScaler().fit(X)
    assert np.array_equal(FlooredStandardScaler().fit(X).scale_, plain.scale_)  # no floor: StandardScaler
    s = FlooredStandardScaler(scale_floor=[0.5, 0.1, 0.01]).fit(X)
    assert s.floored_.tolist() == [False, True, True]
    assert s.scale_.tolist() == [plain.scale_[0], 0.1, 0.01]  # StandardScaler would use 1 for the constant one
    assert np.allclose(s.transform([[3.0, 5.2, 0.011]]), [[0.0, 2.0, 1.0]])
    # sample_weight as in StandardScaler: weight 0 leaves a row out of the mean and std, then the floor applies
    w = FlooredStandardScaler(scale_floor=[0.5, 0.1, 0.01]).fit(X, sample_weight=[0.0, 1.0, 1.0])
    assert w.scale_.tolist() == [1.0, 0.1, 0.01] and w.floored_.tolist() == [False, True, True]
    assert clone(s).get_params()["scale_floor"] == [0.5, 0.1, 0.01]
    assert np.array_equal(pickle.loads(pickle.dumps(s)).scale_, s.scale_)
    for bad in ([1.0, 1.0], [1.0, 0.0, 1.0], [1.0, np.nan, 1.0]):
        with pytest.raises(ValueError, match="scale_floor must hold 3 finite values > 0"):
            FlooredStandardScaler(scale_floor=bad).fit(X)


# --- the CLI ---------------------------------------------------------------------------------

def test_train_cli_reports_degenerate_targets_on_stdout_and_stderr(tmp_path):
    rng = np.random.default_rng(1)
    rows = [window(k, at(T0, i), ordinary(k, i, rng)) for k in ("const", "noisy") for i in range(24)]
    rows += [window("plain", at(T0, i), list(20 + rng.normal(0, 1, N - int(rng.integers(0, 3))))) for i in range(24)]
    history = tmp_path / "history.parquet"
    pd.DataFrame(rows).to_parquet(history, index=False)
    res = subprocess.run([sys.executable, "-m", "batch_scoring.scoring.train", "--aggregates", str(history),
                          "--models", str(tmp_path / "models")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = {x["target"]: x for x in map(json.loads, res.stdout.splitlines())}
    assert {t: (x["degenerate"], x["constant_features"], x["scale_floored"]) for t, x in lines.items()} == {
        "const/s1": (["value_mean", "log_std_ratio", "peak_ratio"], list(FEATURES), list(FEATURES)),
        "noisy/s1": ([], ["coverage"], ["coverage"]), "plain/s1": ([], [], [])}
    assert {t: x["std_ref_source"] for t, x in lines.items()} == {
        "const/s1": "resolution floor", "noisy/s1": "median window std", "plain/s1": "median window std"}
    assert lines["plain/s1"]["warnings"] == lines["noisy/s1"]["warnings"] == []
    assert lines["const/s1"]["excluded_windows"] == 0
    assert lines["const/s1"]["warnings"] == json.loads(
        (tmp_path / "models/const/s1/manifest.json").read_text())["training"]["warnings"]
    assert "warning: const/s1: ~zero variance over the 24 training windows in value_mean (std 0, " in res.stderr
    assert "warning: const/s1: std_ref fallback: no training window's std is above the resolution" in res.stderr
    assert "noisy/s1" not in res.stderr  # a sensor that always delivered its 30 readings is healthy
    assert res.stderr.rstrip().endswith(
        f"trained 3 model(s) into {tmp_path / 'models'}; 1 with warnings (training.warnings in their "
        "manifest.json): const/s1")


# --- complete delivery is healthy: recorded, never warned about ------------------------------------

@pytest.mark.parametrize("n", [30, 10, 1])
def test_a_sensor_that_always_delivered_every_reading_gets_no_warning(tmp_path, n):
    """The user's report: every target with exactly 30 readings per window was warned about; 10 and 1 likewise."""
    rng = np.random.default_rng(11)
    rows = [window("full", at(T0, i), list(20 + rng.normal(0, 1, n))) for i in range(72)]
    history = tmp_path / "history.parquet"
    pd.DataFrame(rows).to_parquet(history, index=False)
    res = subprocess.run([sys.executable, "-m", "batch_scoring.scoring.train", "--aggregates", str(history),
                          "--models", str(tmp_path / "models")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    (line,) = map(json.loads, res.stdout.splitlines())
    manifest = json.loads((tmp_path / "models/full/s1/manifest.json").read_text())
    training = manifest["training"]
    if n > 1:
        assert line["warnings"] == training["warnings"] == [] and line["degenerate"] == training["degenerate"] == []
        assert res.stderr == f"trained 1 model(s) into {tmp_path / 'models'}\n"
    else:  # one reading per window: no window std to learn from, and that is said; the count is not
        assert training["degenerate"] == ["log_std_ratio", "peak_ratio"]
        assert [w.split(":")[0] for w in training["warnings"]] == ["~zero variance over the 72 training windows in "
                                                                    "log_std_ratio (std 0, floor 0.354), peak_ratio (std 0, floor 0.354)",
                                                                    "std_ref fallback"]
        assert "coverage" not in res.stderr
    # the fact itself is kept: coverage had zero variance and is scaled by its floor (half a reading)
    assert line["constant_features"][-1] == training["constant_features"][-1] == "coverage"
    assert training["scale_floored"][-1] == {
        "feature": "coverage", "training_std": 0.0, "scale_floor": pytest.approx(0.5 / n),
        "floor_rule": "0.5 x one reading, 1 / n_ref", "zero_variance": True}


# --- status-like sensors: mostly constant windows that move now and then --------------------------

def flipping(seed: int, p: float, windows: int, lo: float = 0.0, hi: float = 1.0, device: str = "status") -> list[dict]:
    """A two-state sensor at ``hi`` whose readings are ``lo`` with probability ``p`` each (N per window)."""
    rng = np.random.default_rng(seed)
    return [window(device, at(T0, i), list(np.where(rng.random(N) >= p, hi, lo))) for i in range(windows)]


def status_cases(lo: float = 0.0, hi: float = 1.0) -> dict[str, tuple[list[float], bool]]:
    """{case: (readings, is_anomaly)}: its ordinary windows, and readings off its two states."""
    H, step = [hi] * N, hi - lo
    return {
        f"all {hi:g}": (H, False),
        "one flip": (H[:-1] + [lo], False),
        "one flip, first reading": ([lo] + H[1:], False),
        "two flips": (H[:5] + [lo] + H[6:-1] + [lo], False),
        f"one reading {hi + step:g}": (H[:-1] + [hi + step], True),
        f"one reading {lo + step / 2:g}": (H[:-1] + [lo + step / 2], True),
        f"one reading {lo + 0.9 * step:g}": (H[:-1] + [lo + 0.9 * step], True),
        f"one reading {lo + 5 * step:g}": (H[:-1] + [lo + 5 * step], True),
        f"one reading {lo - 3 * step:g}": (H[:-1] + [lo - 3 * step], True),
        f"stuck at {lo:g}": ([lo] * N, True),
        "dropout 15 of 30": (H[:15], True),
    }


def score_cases(tmp_path, models, device: str, cases: dict) -> dict[str, tuple[bool, float]]:
    rows = [window(device, at(SCORE_T0, j), readings) for j, (readings, _) in enumerate(cases.values())]
    receipts = score_unit(pd.DataFrame(rows), models, tmp_path / "out", [f"{device}/s1"])
    assert receipts[0]["status"] == "ok", receipts
    pred = pd.read_parquet(tmp_path / "out" / receipts[0]["output"])
    return {name: (bool(f), float(s)) for name, f, s in zip(cases, pred["is_anomaly"], pred["decision_score"])}


def test_issue_example_a_status_sensor_flags_readings_off_its_two_states(tmp_path):
    """A 0/1 sensor, ~2 % of readings 0: 37 of 72 windows constant, so the median window std is 0.

    Before: std_ref = 1e-6 x level, peak_ratio scaled by ~4.7e5, a window with one reading of 2.0 or 0.5 not
    flagged, training reporting only coverage. Now std_ref is the std of a one-flip window, sqrt(1/30).
    """
    rows = pd.DataFrame(flipping(seed=10, p=0.02, windows=72))
    assert (rows["value_std"] > 0).sum() == 35 and rows["value_std"].median() == 0
    cases = status_cases()
    # the issue's model (std_ref at the resolution, StandardScaler's scales over all windows) missed both
    old_ref = {"std_ref": 1e-6, "n_ref": 30.0}
    old = Pipeline([("scaler", StandardScaler()), ("svm", OneClassSVM(**SVM_PARAMS))]).fit(
        compute_features(rows, old_ref).to_numpy())
    assert old[0].scale_[FEATURES.index("peak_ratio")] == pytest.approx(4.7e5, rel=0.05)
    old_scores = old.decision_function(compute_features(
        pd.DataFrame([window("status", at(SCORE_T0, 0), cases[k][0]) for k in ("one reading 2", "one reading 0.5")]),
        old_ref).to_numpy())
    assert (old_scores >= -THRESHOLD_FRACTION * old[-1].offset_[0]).all()

    (m,) = train_models(rows, tmp_path / "models")
    training = m["training"]
    assert m["feature_reference"] == {"std_ref": pytest.approx(np.sqrt(1 / 30)), "n_ref": 30.0}
    assert training["std_ref"] == {"value": pytest.approx(np.sqrt(1 / 30)),
                                   "source": "median std of the windows that varied", "median_window_std": 0.0,
                                   "resolution": 1e-6, "varied_windows": 35, "windows": 72}
    assert training["scale_fit_windows"] == 35
    assert m["scale"]["peak_ratio"] < 1 and m["scale"]["log_std_ratio"] < 1  # not ~4.7e5 and ~8
    assert training["degenerate"] == [] and training["constant_features"] == ["coverage"]
    assert training["warnings"] == [
        "std_ref fallback: the median window std (0) is not above the resolution 1e-06: 37 of 72 training windows "
        "are constant, as for a status or set-point sensor; std_ref is 0.183, the median std of the 35 windows "
        "that varied, and the feature scales come from those windows (training.std_ref)"]
    assert training["flagged_windows"] == 0
    got = score_cases(tmp_path, tmp_path / "models", "status", cases)
    assert {k: f for k, (f, _) in got.items()} == {k: want for k, (_, want) in cases.items()}, got


@pytest.mark.parametrize("seed, p, windows, lo, hi, source", [
    (1, 0.02, 72, 1.0, 0.0, "median std of the windows that varied"),    # reversed: at 0, flips to 1 (level 0)
    (1, 0.02, 72, 20.0, 20.5, "median std of the windows that varied"),  # a set-point with 0.5 steps, at 20.5
    (4, 0.01, 288, 0.0, 1.0, "median std of the windows that varied"),   # rarer flips, a whole day
    (0, 0.02, 72, 0.0, 1.0, "median window std"),  # 41 of 72 windows flip: the median is a flip's std
])
def test_status_like_sensors_flag_values_off_their_states_and_not_their_flips(tmp_path, seed, p, windows, lo, hi,
                                                                             source):
    rows = flipping(seed, p, windows, lo, hi)
    (m,) = train_models(pd.DataFrame(rows), tmp_path / "models")
    training = m["training"]
    varied = sum(r["value_std"] > 0 for r in rows)
    assert 0 < varied < windows and training["scale_fit_windows"] == varied
    assert training["std_ref"]["source"] == source
    assert m["feature_reference"]["std_ref"] == pytest.approx(np.sqrt(1 / 30) * abs(hi - lo))
    # a fallback is warned about; the median rule is the ordinary one
    assert [w.split(":")[0] for w in training["warnings"]] == (
        ["std_ref fallback"] if source != "median window std" else [])
    cases = status_cases(lo, hi)
    got = score_cases(tmp_path, tmp_path / "models", "status", cases)
    assert {k: f for k, (f, _) in got.items()} == {k: want for k, (_, want) in cases.items()}, got


def test_std_ref_rules():
    def frame(stds, means=None):
        return pd.DataFrame({"value_mean": means if means is not None else [10.0] * len(stds), "value_min": 0.0,
                             "value_max": 20.0, "value_std": stds, "n_readings": 30})

    ref = std_reference(frame([1.0, 2.0, 3.0]))
    assert ref == {"value": 2.0, "source": "median window std", "median_window_std": 2.0,
                   "resolution": pytest.approx(1e-5), "varied_windows": 3, "windows": 3}
    # median below the resolution (3 of 5 windows constant), two varied: their median
    ref = std_reference(frame([0.0, 0.0, 5e-6, 0.4, 0.2]))
    assert (ref["value"], ref["source"], ref["varied_windows"]) == (pytest.approx(0.3), "median std of the windows "
                                                                   "that varied", 2)
    # one-reading windows (no std) are left out of the median, and do not count as windows that varied
    assert std_reference(frame([np.nan, np.nan, np.nan, 0.0, 0.5]))["value"] == 0.25
    ref = std_reference(frame([np.nan, np.nan, 0.0, 0.0, 0.5]))
    assert (ref["value"], ref["source"], ref["varied_windows"]) == (0.5, "median std of the windows that varied", 1)
    assert std_reference(frame([np.nan, 4.0, 2.0]))["value"] == 3.0
    # nothing varied: the resolution, 1e-6 x the median |mean| (x 1 at level 0)
    assert std_reference(frame([0.0, 1e-9, np.nan]))["value"] == pytest.approx(1e-5)
    ref = std_reference(frame([0.0, 0.0], means=[0.0, 0.0]))
    assert (ref["value"], ref["source"]) == (1e-6, "resolution floor")
    assert feature_reference(frame([0.0, 0.0, 0.4, 0.2, 0.0])) == {"std_ref": pytest.approx(0.3), "n_ref": 30.0}


def test_a_status_model_trained_by_the_previous_release_still_loads_and_scores_as_before(tmp_path):
    """Its manifest has no std_ref/constant_features and its std_ref is 1e-6: scored as it was (retrain to fix)."""
    rows = pd.DataFrame(flipping(seed=10, p=0.02, windows=72))
    ref = {"std_ref": 1e-6, "n_ref": 30.0}
    X = compute_features(rows, ref).to_numpy()
    old = Pipeline([("scaler", FlooredStandardScaler(scale_floor=[scale_floor(ref)[f] for f in FEATURES])),
                    ("svm", OneClassSVM(**SVM_PARAMS))]).fit(X)
    import sklearn

    save_model(tmp_path / "models", "status", "s1", old, {
        "features": list(FEATURES), "feature_reference": ref, "model": "Pipeline(FlooredStandardScaler, OneClassSVM)",
        "threshold": -THRESHOLD_FRACTION * float(old[-1].offset_[0]), "sklearn_version": sklearn.__version__,
        "training": {"n_windows": 72, "degenerate": ["coverage"], "warnings": []}})
    got = score_cases(tmp_path, tmp_path / "models", "status", status_cases())
    want = old.decision_function(compute_features(
        pd.DataFrame([window("status", at(SCORE_T0, j), r) for j, (r, _) in enumerate(status_cases().values())]),
        ref).to_numpy())
    assert [s for _, s in got.values()] == pytest.approx(list(want), abs=1e-12)
