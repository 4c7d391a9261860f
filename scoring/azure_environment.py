"""The Azure ML environment the scoring jobs run in: base image and pinned packages (no Airflow here).

The job unpickles models, so it must run the scikit-learn (and numpy, joblib, ...)
that trained them: ``model_store`` refuses any other scikit-learn version. The pins
are therefore the versions installed where ``batch_scoring.scoring.azure_setup`` runs
(the Airflow image, which trains and deploys with the same lock), or those of a lock
file given explicitly.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

# Pinned: a dated tag of Microsoft's Azure ML base image (tags listed at
# https://mcr.microsoft.com/v2/azureml/openmpi4.1.0-ubuntu22.04/tags/list). ":latest" would give
# each new environment version, and each node that rebuilds it, whatever was pushed last. Moving it is a
# deliberate change: bump the environment's version (--environment) with it.
BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:20250601.v1"
# What scoring/ imports at run time, and what those need (pins taken from the lock).
JOB_PACKAGES = ("numpy", "pandas", "pyarrow", "scikit-learn", "scipy", "joblib", "threadpoolctl", "python-dateutil", "six", "tzdata",
                "tqdm")  # tqdm: scoring.cli's progress bars


def name_version(ref: str) -> tuple[str, str]:
    """``(name, version)`` of an asset reference ``name:version`` or ``azureml:name:version``.

    :raises SystemExit: when either part is missing.
    """
    ref = ref.removeprefix("azureml:")
    name, _, version = ref.partition(":")
    if not name or not version:
        raise SystemExit(f"expected name:version, got {ref!r}")
    return name, version


def installed_pins(packages=JOB_PACKAGES) -> list[str]:
    """``pkg==version`` for the job's packages at the versions installed in this interpreter.

    :raises SystemExit: naming the packages that are not installed.
    """
    from importlib.metadata import PackageNotFoundError, version

    pins, missing = [], []
    for p in packages:
        try:
            pins.append(f"{p}=={version(p)}")
        except PackageNotFoundError:
            missing.append(p)
    if missing:
        raise SystemExit(f"not installed here, so no version to pin: {missing} (or give --lock FILE)")
    return pins


def lock_pins(lock: Path, packages=JOB_PACKAGES) -> list[str]:
    """``pkg==version`` lines from the lock file ``lock`` for the job's packages (fails if one is missing)."""
    pins = {}
    for line in Path(lock).read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    missing = [p for p in packages if p not in pins]
    if missing:
        raise SystemExit(f"{lock}: no pin for {missing}")
    return [f"{p}=={pins[p]}" for p in packages]


def conda_spec(lock: Path | None = None) -> dict:
    """The environment's conda file as a dict: Python 3.11 and pip with the job's pins.

    Pins from ``lock`` when given, else the installed versions (``installed_pins``); ``SystemExit`` when one is missing.
    """
    return {
        "name": "batch-scoring",
        "channels": ["conda-forge"],
        "dependencies": ["python=3.11", "pip", {"pip": lock_pins(lock) if lock else installed_pins()}],
    }


def build_environment(ref: str, lock: Path | None = None):
    """The ``Environment`` entity ``ref`` (``name:version``) on ``BASE_IMAGE`` with the job's pins.

    Pins from ``lock`` when given, else the versions installed here (see ``conda_spec``); tagged
    ``pins_sha256``, the first 16 hex digits of the SHA-256 of the pin lines. Raises ``SystemExit``
    when a pin is missing, ``OSError`` when ``lock`` cannot be read.
    """
    from azure.ai.ml.entities import Environment

    name, version = name_version(ref)
    conda = conda_spec(lock)
    pins = "\n".join(conda["dependencies"][2]["pip"])
    return Environment(
        name=name,
        version=version,
        image=BASE_IMAGE,
        conda_file=conda,
        description=f"Scoring runtime: pins from {Path(lock).name if lock else 'the installed packages'}",
        tags={"pins_sha256": hashlib.sha256(pins.encode()).hexdigest()[:16]},
    )
