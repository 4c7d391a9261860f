"""The environment of the production topology's Airflow processes: the shared file plus what is native.

``compose/airflow.env`` holds what every Airflow component shares, in
docker-compose.yaml (``env_file:``) and here alike. :func:`host_env` adds what
differs between the two runs: the same keys as the compose file's
``x-airflow-common`` environment (hosts, ports, paths, secrets), plus
:data:`NATIVE_ONLY` (what containers get from being separate hosts: their own
ports, their own hostname, a home). tests/test_compose.py holds the two to that.
"""
from __future__ import annotations

import base64
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from devstack.airflow_env import write_local_settings
from devstack.services import REPO

SHARED_ENV_FILE = REPO / "compose" / "airflow.env"
USER_DAG = "from batch_scoring.dag import dag  # our Airflow DAG\n"
# Set natively but not in the compose file: containers get these from being separate hosts
# (each its own ports and hostname) or from the image (AIRFLOW_HOME); natively every server
# listens on 127.0.0.1 only. (Workers and triggerer do not serve logs natively,
# --skip-serve-logs: their log servers bind every interface, and the api-server reads
# the task logs from the one local disk.)
NATIVE_ONLY = frozenset({
    "AIRFLOW_HOME", "AIRFLOW__API__HOST", "AIRFLOW__API__PORT", "AIRFLOW__CORE__HOSTNAME_CALLABLE",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST", "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT",
})
# Two Celery workers on one host would report the same hostname; containers have their own.
# Airflow imports this from $AIRFLOW_HOME/config (on sys.path in every component).
HOSTNAME_MODULE = '''\
"""Written by devstack.topology: each local Celery worker reports its own name (TOPOLOGY_HOSTNAME),
as the containers of docker-compose.yaml do; every other component the machine's name."""
import os
import socket


def hostname() -> str:
    return os.environ.get("TOPOLOGY_HOSTNAME") or socket.getfqdn()
'''


def read_env_file(path: Path = SHARED_ENV_FILE) -> dict[str, str]:
    """``KEY=value`` lines of an env file (``#`` comments and blank lines skipped; values taken as is).

    Raises ``ValueError`` naming the file and line for anything else, or a
    quoted or ``${...}`` value (docker-compose would pass those literally).
    """
    out: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line)
        if not m or m.group(2)[:1] in ("'", '"') or "${" in m.group(2):
            raise ValueError(f"{path}:{n}: expected a literal KEY=value line, got {line!r}")
        out[m.group(1)] = m.group(2)
    return out


@dataclass
class Ports:
    """The TCP ports (127.0.0.1) of one topology; ``free()`` picks free ones."""

    api: int
    postgres: int
    redis: int
    azurite: int
    scheduler_health: int

    @classmethod
    def free(cls) -> "Ports":
        """Ports free a moment ago (another process may take one before it is bound)."""
        from devstack.services import free_port

        return cls(api=free_port(), postgres=free_port(), redis=free_port(), azurite=free_port(),
                   scheduler_health=free_port())


def _token() -> str:
    return secrets.token_urlsafe(24)


def load_secrets(state_dir: Path) -> dict[str, str]:
    """``state_dir/secrets.json`` (mode 0600), created with fresh random values on first use.

    Keys: ``postgres_password``, ``redis_password``, ``admin_password``,
    ``fernet_key``, ``jwt_secret``, ``api_secret_key`` (the compose file's .env
    secrets; URL-safe). Kept, because the metadata DB and its encrypted
    connections outlive one run.
    """
    path = Path(state_dir) / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    values = {"postgres_password": _token(), "redis_password": _token(), "admin_password": _token(),
              "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(), "jwt_secret": _token(),
              "api_secret_key": _token()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    return values


def host_env(home: Path, dags: Path, ports: Ports, secret: dict[str, str], db_user: str) -> dict[str, str]:
    """The hosts, ports, paths and secrets of the native run (the compose file's ``x-airflow-common``
    environment, same keys) plus :data:`NATIVE_ONLY`."""
    pg = f"{db_user}:{secret['postgres_password']}@127.0.0.1:{ports.postgres}/airflow"
    return {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{pg}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{pg}",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://:{secret['redis_password']}@127.0.0.1:{ports.redis}/0",
        "AIRFLOW__CORE__FERNET_KEY": secret["fernet_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": secret["jwt_secret"],
        "AIRFLOW__API__SECRET_KEY": secret["api_secret_key"],
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{ports.api}/execution/",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        # NATIVE_ONLY
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(ports.api),
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "topology_host.hostname",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(ports.scheduler_health),
    }


def prepare_home(home: Path, dags: Path, admin_password: str) -> None:
    """The Airflow home's files: the passwords file (0600, user ``admin``), the hostname module and
    the preload hook (``airflow_local_settings.py``) in ``config/``, and a DAG folder holding only the one-line DAG file a user writes."""
    (home / "config").mkdir(parents=True, exist_ok=True)
    dags.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / "passwords.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"admin": admin_password}, fh)
    (home / "config" / "topology_host.py").write_text(HOSTNAME_MODULE)
    write_local_settings(home)
    (dags / "batch_scoring_dag.py").write_text(USER_DAG)


def base_env(venv: Path) -> dict[str, str]:
    """This process's environment without Python or Airflow settings, the venv's ``bin`` first on PATH:
    the installed wheel, not the checkout, is what runs."""
    drop = ("AIRFLOW", "BATCH_SCORING", "PYTHON", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PATH"] = f"{venv / 'bin'}:{os.environ.get('PATH', '')}"
    return env
