"""A deployed model pickled by another scikit-learn version (issue 10, item 7), end to end on the real steps.

Policy (scoring/model_store.py): refused at load, before unpickling, for any
difference of the version string (patch releases too); the target fails with
``ModelVersionError`` naming both versions and the way out, the other targets
are scored, and the failure reaches the receipt, the interval manifest's
``reason`` and the run report.
"""
from __future__ import annotations

import html
import io
import json

import pandas as pd
import pytest
import sklearn

from batch_scoring.errors import PipelineError

from batch_scoring.scoring.layout import part_blob
from tests.reliability.conftest import TARGETS, interval

IV = interval()
RUNNING = sklearn.__version__
MAJOR, MINOR, PATCH = (RUNNING.split(".") + ["0", "0"])[:3]
OTHER = {
    "minor": f"{MAJOR}.{int(MINOR) - 1 if int(MINOR) else int(MINOR) + 1}.0",
    "patch": f"{MAJOR}.{MINOR}.{int(''.join(c for c in PATCH if c.isdigit()) or 0) + 1}",
}


@pytest.mark.parametrize("kind", sorted(OTHER))
def test_a_model_of_another_sklearn_version_fails_its_target_by_name_and_redeploying_recovers(world, kind):
    from batch_scoring.report import write_report
    from batch_scoring.scoring.layout import report_blob

    other = OTHER[kind]
    clean = world.run()
    good = world.predictions()
    # the manifest is not hashed (the model file is): a model trained elsewhere arrives with its own manifest
    name = "dev001/s2/manifest.json"
    manifest = json.loads(world.store.download_bytes("models", name))
    world.store.upload_bytes("models", name, json.dumps({**manifest, "sklearn_version": other}).encode())

    plan = world.snapshot()
    assert plan["targets"] == TARGETS  # planning does not unpickle: the scoring environment decides
    errors = world.score(plan)
    assert list(errors) == ["dev001/s2"]
    cause = (f"ModelVersionError: model for target dev001/s2 was pickled by scikit-learn {other}, "
             f"this environment runs scikit-learn {RUNNING}: refusing to load ")
    assert cause in errors["dev001/s2"]
    with pytest.raises(PipelineError, match=r"1 of 4 targets failed validation \(coverage 75.0% < 100%\): dev001/s2: "
                                            r"scoring failed: ModelVersionError: model for "
                                            rf"target dev001/s2 was pickled by scikit-learn {other}"):
        world.collect(plan)

    result = world.manifest()
    assert result["counts"] == {"ok": 3, "failed": 1, "skipped": 0}
    entry = result["targets"]["dev001/s2"]
    assert entry["status"] == "failed"
    assert entry["reason"].startswith(f"scoring failed: {cause}")
    assert entry["reason"].endswith(
        "(scikit-learn does not support loading a model pickled by another version: "
        f"https://scikit-learn.org/stable/model_persistence.html); retrain the target with scikit-learn {RUNNING} "
        f"(python -m batch_scoring.scoring.train) and redeploy the model, or score in an environment with scikit-learn {other}")
    after = world.predictions()
    assert pd.read_parquet(io.BytesIO(after[part_blob(IV, ["dev001/s2"])])).empty  # no prediction from a model we refused
    for t in ("dev001/s1", "dev002/s1", "dev002/s2"):
        assert result["targets"][t]["status"] == "ok"
        assert after[part_blob(IV, [t])] == good[part_blob(IV, [t])]
    # the run report (written by the collect task, also after a failed collect) shows the reason
    write_report(world.store, world.settings, IV, result)
    report = world.store.download_bytes("predictions", report_blob(IV)).decode()
    assert html.escape(entry["reason"]) in report

    # the way out: redeploy the model trained with this version (here: the one trained locally), rerun
    world.store.upload_bytes("models", name, (world.models_dir / name).read_bytes())
    assert world.run() == clean
    rerun = world.predictions()
    assert all(rerun[part_blob(IV, [t])] == good[part_blob(IV, [t])] for t in TARGETS)
