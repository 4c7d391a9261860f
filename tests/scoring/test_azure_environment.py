"""scoring.azure_environment: the job's base image and package pins (real SDK entity; no Azure calls)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from batch_scoring.scoring import azure_environment as environment

REPO = Path(__file__).resolve().parents[2]


def test_base_image_is_pinned():
    image, _, tag = environment.BASE_IMAGE.rpartition(":")
    assert image == "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04"
    assert re.fullmatch(r"\d{8}\.v\d+", tag), tag  # a dated tag, never "latest"


def test_environment_pins_come_from_the_lock(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("\n".join(f"{p}==1.{i}  # via x" for i, p in enumerate(environment.JOB_PACKAGES)) + "\nother==9\n")
    env = environment.build_environment("batch-scoring-env:3", lock)
    d = json.loads(json.dumps(env._to_dict(), default=str))
    assert (d["name"], d["version"], d["image"]) == ("batch-scoring-env", "3", environment.BASE_IMAGE)
    deps = d["conda_file"]["dependencies"]
    assert deps[:2] == ["python=3.11", "pip"]
    assert deps[2]["pip"] == [f"{p}==1.{i}" for i, p in enumerate(environment.JOB_PACKAGES)]
    lock.write_text("numpy==1\n")
    with pytest.raises(SystemExit, match="no pin for"):
        environment.build_environment("e:1", lock)


def test_environment_pins_default_to_the_installed_versions():
    pins = dict(p.split("==") for p in environment.installed_pins())
    import pandas
    import sklearn

    assert list(pins) == list(environment.JOB_PACKAGES)
    assert pins["scikit-learn"] == sklearn.__version__ and pins["pandas"] == pandas.__version__
    env = environment.build_environment("batch-scoring-env:4")  # no lock file read: the installed versions
    assert env.conda_file["dependencies"][2]["pip"] == environment.installed_pins()
    # the repository's lock pins the same versions (the job runs what the tests ran)
    assert environment.lock_pins(REPO / "requirements.lock") == environment.installed_pins()


def test_installed_pins_name_what_is_missing():
    with pytest.raises(SystemExit, match=r"not installed here.*no-such-package-xyz"):
        environment.installed_pins(("pandas", "no-such-package-xyz"))
