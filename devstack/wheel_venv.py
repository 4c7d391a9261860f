"""The distribution as a user installs it: ``uv build`` of the checkout, then a fresh venv with Airflow and the wheel.

One home for the rule, shared by the installed-wheel test and the production
topology (``devstack.topology``): the venv holds ``apache-airflow`` at the
version pinned in ``requirements.lock``, any ``extra`` requirements (e.g. the
celery and postgres providers) and the wheel, every dependency resolved with the
lock as constraints. A dependency missing from ``pyproject.toml`` is therefore
missing there too.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable

from devstack.services import REPO

LOCK = REPO / "requirements.lock"
UV = Path(sys.executable).parent / "uv"
# what the production topology adds to the user's venv: the executor and the metadata DB's driver
TOPOLOGY_EXTRAS = ("apache-airflow-providers-celery", "apache-airflow-providers-postgres")


def _run(cmd: list, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``cmd``; ``RuntimeError`` naming it, with its output's end, if it fails."""
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    if res.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def airflow_version() -> str:
    """The ``apache-airflow`` version pinned in ``requirements.lock`` (e.g. ``3.3.2``)."""
    return re.search(r"^apache-airflow==(\S+)$", LOCK.read_text(), re.M).group(1)


def build_wheel(out_dir: Path) -> Path:
    """``uv build`` of the checkout into ``out_dir``: the sdist, then the wheel built from the unpacked sdist
    (so a file missing from the sdist is missing from the wheel). Returns the wheel's path.

    Raises ``RuntimeError`` if the build fails or does not leave exactly one wheel.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*"):
        old.unlink()
    _run([UV, "build", "--quiet", "--out-dir", out_dir, REPO])
    wheels = list(out_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"uv build left {len(wheels)} wheels in {out_dir}: {wheels}")
    return wheels[0]


def install_venv(root: Path, wheel: Path, extras: Iterable[str] = ()) -> Path:
    """A fresh venv at ``root`` (replaced if present): ``apache-airflow==<lock>``, ``extras`` and ``wheel``,
    constrained by ``requirements.lock``. Returns ``root``; its ``bin/airflow`` is the user's Airflow.

    Raises ``RuntimeError`` (with uv's output) if the venv or the install fails.
    """
    root = Path(root)
    shutil.rmtree(root, ignore_errors=True)
    _run([UV, "venv", "--quiet", "--python", sys.executable, root])
    _run([UV, "pip", "install", "--quiet", "--python", root / "bin" / "python", "--constraint", LOCK,
          f"apache-airflow=={airflow_version()}", *extras, wheel])
    return root


def _fingerprint(extras: Iterable[str]) -> str:
    """What a cached venv must match: the lock, pyproject and every file of the packaged source."""
    h = hashlib.sha256()
    h.update("\n".join(extras).encode())
    for path in [LOCK, REPO / "pyproject.toml"] + sorted(
            p for d in ("plugins/batch_scoring", "scoring", "sensor_db", "ingest_sim")
            for p in (REPO / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(REPO)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def cached_venv(state_dir: Path, extras: Iterable[str] = TOPOLOGY_EXTRAS) -> Path:
    """``state_dir/venv`` built with :func:`build_wheel` + :func:`install_venv` unless one built from the
    same lock, pyproject and packaged source is already there (``make prod-local`` restarts in seconds).
    Returns the venv's root.
    """
    state_dir = Path(state_dir)
    extras = tuple(extras)
    root, stamp = state_dir / "venv", state_dir / "venv.fingerprint"
    want = _fingerprint(extras)
    if (root / "bin" / "airflow").exists() and stamp.exists() and stamp.read_text() == want:
        return root
    stamp.unlink(missing_ok=True)
    install_venv(root, build_wheel(state_dir / "dist"), extras)
    stamp.write_text(want)
    return root
