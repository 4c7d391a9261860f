"""docker-compose.yaml, Dockerfile and .env.example, checked offline (no Docker engine here).

* the compose file validates against the compose-spec JSON schema vendored in
  ``compose/compose-spec.json`` (``check-jsonschema``);
* Debian's ``docker-compose`` 1.29 accepts it (``config -q``) with the values of
  ``.env.example`` filled in, and refuses it while a required secret is unset;
  a missing ``docker-compose`` FAILS (``make setup`` installs it);
* structure: every long-running service has a health check, the only one-shot
  is ``airflow-init`` and every Airflow service waits for it to succeed; the
  Airflow services share one image, the ``x-airflow-common`` environment (hosts,
  ports, paths, secrets) and ``compose/airflow.env`` (everything else), the file
  the native topology (``make prod-local``) runs with: its own environment has
  the compose file's keys plus only what containers get from being separate hosts;
  no secret literal (only ``${VAR:?}`` references and Azurite's published dev key);
* the Dockerfile's base image matches the Airflow pinned in requirements.lock,
  installs ODBC Driver 18 and the lock with ``--no-deps``, copies only files that exist;
* ``devstack.compose_init`` (what ``airflow-init`` runs) on SQLite + Azurite.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devstack.services import AZURITE_KEY, REPO
from devstack.topology_env import SHARED_ENV_FILE as SHARED_ENV, read_env_file

COMPOSE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"
SCHEMA = REPO / "compose" / "compose-spec.json"
INIT_SCRIPT = REPO / "compose" / "airflow-init.sh"
ONE_SHOT = {"airflow-init"}
AIRFLOW_SERVICES = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker"}
REQUIRED_SECRETS = {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "MSSQL_SA_PASSWORD", "AIRFLOW_ADMIN_PASSWORD",
                    "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|_KEY$|REDISCLI_AUTH", re.I)
REQUIRED_REF = re.compile(r"^\$\{([A-Z0-9_]+):\?[^}]*\}$")


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


def _filled_env_file(tmp_path: Path) -> Path:
    """.env.example with a placeholder in every empty (required) value."""
    lines = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        if re.fullmatch(r"[A-Z0-9_]+=", line):
            line += "Test-only-value-1"
        lines.append(line)
    path = tmp_path / ".env"
    path.write_text("\n".join(lines) + "\n")
    return path


def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose not found: `make setup` installs it (apt-get install docker-compose)", pytrace=False)
    return exe


def _clean_env() -> dict[str, str]:
    """No compose variables from this process: only .env / --env-file may set them."""
    return {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}


# --- schema and docker-compose ------------------------------------------------------------

def test_compose_file_matches_compose_spec_schema():
    exe = Path(sys.executable).parent / "check-jsonschema"
    assert exe.exists(), "check-jsonschema missing from the venv: `make setup` installs requirements.lock"
    proc = subprocess.run([str(exe), "--schemafile", str(SCHEMA), str(COMPOSE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_vendored_schema_is_the_compose_spec_with_its_licence():
    import json

    schema = json.loads(SCHEMA.read_text())
    assert schema["title"] == "Compose Specification"
    assert "services" in schema["properties"]
    assert "Apache License" in (REPO / "compose" / "LICENSE.compose-spec").read_text()
    assert "compose-spec.json" in (REPO / "compose" / "README.md").read_text()


def test_docker_compose_config_accepts_the_file(tmp_path):
    env_file = _filled_env_file(tmp_path)
    proc = subprocess.run([_docker_compose(), "--env-file", str(env_file), "-f", str(COMPOSE), "config"],
                          capture_output=True, text=True, cwd=REPO, env=_clean_env())
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    services = resolved["services"]
    assert set(services) == {"postgres", "redis", "mssql", "azurite"} | AIRFLOW_SERVICES
    assert services["mssql"]["image"] == "mcr.microsoft.com/mssql/server:2022-latest"
    # the secrets reach the services from the env file
    assert services["airflow-scheduler"]["environment"]["AIRFLOW__CORE__FERNET_KEY"] == "Test-only-value-1"
    assert services["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    # every setting of the shared env file reaches every Airflow service, unchanged
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert {k: env.get(k) for k in read_env_file()} == read_env_file(), name


@pytest.mark.parametrize("secret", sorted(REQUIRED_SECRETS))
def test_docker_compose_refuses_to_start_without_each_secret(tmp_path, secret):
    env_file = _filled_env_file(tmp_path)
    env_file.write_text(re.sub(rf"^{secret}=.*$", f"{secret}=", env_file.read_text(), flags=re.M))
    proc = subprocess.run([_docker_compose(), "--env-file", str(env_file), "-f", str(COMPOSE), "config", "-q"],
                          capture_output=True, text=True, cwd=REPO, env=_clean_env())
    assert proc.returncode != 0
    assert f"set {secret} in .env" in proc.stderr


# --- structure ---------------------------------------------------------------------------

def test_every_service_has_a_healthcheck_or_is_the_one_shot_init():
    services = _compose()["services"]
    for name, svc in services.items():
        if name in ONE_SHOT:
            assert svc.get("restart") == "no" and "healthcheck" not in svc
            continue
        check = svc.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name} has no health check"
        assert svc.get("restart") == "unless-stopped", name
    for name in AIRFLOW_SERVICES - ONE_SHOT:
        deps = services[name]["depends_on"]
        assert deps["airflow-init"] == {"condition": "service_completed_successfully"}, name
        assert deps["postgres"]["condition"] == deps["redis"]["condition"] == "service_healthy", name
    init_deps = services["airflow-init"]["depends_on"]
    assert {k for k, v in init_deps.items() if v == {"condition": "service_healthy"}} == {"postgres", "redis", "mssql", "azurite"}


def test_airflow_services_share_one_image_and_the_common_env():
    text = COMPOSE.read_text()
    doc = _compose()
    common = doc["x-airflow-common"]
    services = doc["services"]
    assert {n for n in services if n.startswith("airflow-")} == AIRFLOW_SERVICES
    for name in AIRFLOW_SERVICES:
        svc = services[name]
        assert svc["image"] == common["image"] and svc["build"] == common["build"], name
        assert svc["env_file"] == [SHARED_ENV.relative_to(REPO).as_posix()], name
        env = svc["environment"]
        missing = {k for k, v in common["environment"].items() if env.get(k) != v}
        assert not missing, f"{name} lacks common settings {missing}"
        assert not set(env) & set(read_env_file()), f"{name} overrides the shared env file"
    # the anchors themselves, not copies
    assert text.count("<<: *airflow-common\n") == len(AIRFLOW_SERVICES)
    shared = read_env_file()
    assert shared["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert shared["AIRFLOW__PROVIDERS_ODBC__ALLOW_DRIVER_IN_EXTRA"] == "True"
    for other in ("postgres", "redis", "mssql", "azurite"):
        assert services[other]["image"] != common["image"]
        assert "env_file" not in services[other], other


# --- one environment for compose and the native topology (make prod-local) -----------------

def test_shared_env_file_is_literal_secret_free_and_bounds_crash_recovery(tmp_path):
    shared = read_env_file()  # raises on anything but literal KEY=value lines
    for key, value in shared.items():
        assert not SECRET_NAME.search(key), f"{key}: secrets belong in .env / the topology's secrets.json"
        assert "://" not in value and "127.0.0.1" not in value and "localhost" not in value, f"{key}: a host belongs beside"
        assert not key.endswith(("_CONN", "_URL", "_FOLDER", "_FILE", "_PORT", "_HOST")), key
    # what bounds the recovery after a scheduler/worker crash is set, and below Airflow's defaults
    assert int(shared["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"]) < 300
    assert float(shared["AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL"]) < 300
    assert float(shared["AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT"]) < 600
    assert int(shared["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"]) >= 3600  # > the longest task
    bad = tmp_path / "bad.env"
    bad.write_text("# c\nAIRFLOW__X=${Y}\n")
    with pytest.raises(ValueError, match="bad.env:2"):  # docker-compose would pass it literally
        read_env_file(bad)


def test_native_topology_sets_the_compose_keys_and_only_native_extras(tmp_path):
    """The native run's own env (hosts, ports, paths, secrets) has exactly the compose file's keys, plus
    what containers get from being separate hosts; the shared file is the rest, the same for both."""
    from devstack.topology_env import NATIVE_ONLY, Ports, host_env

    compose_keys = set(_compose()["x-airflow-common"]["environment"])
    native = host_env(tmp_path, tmp_path / "dags", Ports(1, 2, 3, 4, 5), {k: "x" for k in (
        "postgres_password", "redis_password", "fernet_key", "jwt_secret", "api_secret_key")}, "airflow")
    assert set(native) - NATIVE_ONLY == compose_keys
    assert not set(native) & set(read_env_file())
    assert all("127.0.0.1" in v for k, v in native.items() if k.endswith(("_CONN", "_URL", "_BACKEND", "_HOST")))


def test_native_topology_reads_the_shared_file_into_every_airflow_process(tmp_path):
    from devstack.topology import Topology

    topo = Topology(tmp_path / "state", tmp_path / "venv")
    env = topo.airflow_env()
    for key, value in read_env_file().items():
        assert env[key] == value, key
    assert env["PATH"].startswith(str((tmp_path / "venv" / "bin").resolve()))
    assert not any(k.startswith(("PYTHON", "VIRTUAL_ENV")) for k in env)  # the installed wheel, not the checkout
    assert (tmp_path / "state" / "secrets.json").stat().st_mode & 0o077 == 0


def _walk_strings(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk_strings(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk_strings(v, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def test_no_secret_literals():
    doc = _compose()
    for path, value in _walk_strings(doc):
        key = path.rsplit(".", 1)[-1]
        if SECRET_NAME.search(key) and not key.endswith("_FILE"):  # _FILE: a path, not a secret
            assert REQUIRED_REF.match(value), f"{path} must be a required ${{VAR:?...}} reference, not {value!r}"
            assert REQUIRED_REF.match(value).group(1) in REQUIRED_SECRETS, path
        # credentials inside URLs and connection strings
        for cred in re.findall(r"://[^:/@\s]+:([^@\s]+)@", value):
            assert REQUIRED_REF.match(cred), f"{path}: literal credential in a URL"
        for cred in re.findall(r"(?i)(?:pwd|password)=([^;\s]+)", value):
            assert REQUIRED_REF.match(cred), f"{path}: literal password"
        for cred in re.findall(r"AccountKey=([^;]+)", value):
            assert cred == AZURITE_KEY, f"{path}: only Azurite's public dev key may appear"
    for name, svc in doc["services"].items():  # passwords given as command arguments
        cmd = svc.get("command")
        if isinstance(cmd, list) and "--requirepass" in cmd:
            assert REQUIRED_REF.match(cmd[cmd.index("--requirepass") + 1]), f"{name}: literal password argument"
    # the only key literal is marked local-only where it appears
    text = COMPOSE.read_text()
    line = next(i for i, l in enumerate(text.splitlines()) if AZURITE_KEY in l)
    assert "LOCAL ONLY" in text.splitlines()[line - 1]
    # .env.example documents every variable the compose file reads, and ships no secret value
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))  # $${X}: the container's own
    example = _env_example()
    assert referenced <= set(example), f"undocumented in .env.example: {referenced - set(example)}"
    assert all(example[s] == "" for s in REQUIRED_SECRETS)
    assert ".env" in (REPO / ".gitignore").read_text().split()


# --- Dockerfile and init script ----------------------------------------------------------------

def test_dockerfile_matches_the_lock_and_installs_odbc_driver_18():
    text = DOCKERFILE.read_text()
    lock = (REPO / "requirements.lock").read_text()
    airflow = re.search(r"^apache-airflow==(\S+)$", lock, re.M).group(1)
    assert re.search(rf"^ARG AIRFLOW_VERSION={re.escape(airflow)}$", text, re.M), f"Dockerfile base must be Airflow {airflow}"
    assert re.search(r"^ARG PYTHON_VERSION=3\.11$", text, re.M)
    assert re.search(r"^FROM apache/airflow:\$\{AIRFLOW_VERSION\}-python\$\{PYTHON_VERSION\}$", text, re.M)
    assert "ACCEPT_EULA=Y apt-get install" in text and "msodbcsql18" in text


def test_dockerfile_installs_the_wheel_with_the_pinned_airflow_and_no_test_tools():
    """Airflow's documented way: pip install "apache-airflow==${AIRFLOW_VERSION}" plus the package (a wheel)."""
    text = DOCKERFILE.read_text()
    final = text.rsplit("\nFROM ", 1)[1]  # the image's stage; the first only builds the wheel
    install = re.search(r"^RUN pip install (.*?)(?:&&|$)", final.replace("\\\n", " "), re.M).group(1)
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in install
    assert "/opt/airflow/dist/airflow_provider_batch_scoring-*.whl" in install
    assert "--compile" in install and "--constraint /opt/airflow/project/requirements.lock" in install
    assert " -r " not in install and "--no-deps" not in install  # dependencies come from the wheel's metadata
    assert "python -m pip wheel --no-cache-dir --no-deps --wheel-dir /opt/airflow/dist" in text
    code = "\n".join(line for line in final.splitlines() if not line.lstrip().startswith("#"))
    for tool in ("pytest", "requirements-dev", "[test]", "tests"):
        assert tool not in code, tool
    assert "airflow providers list | grep -q airflow-provider-batch-scoring" in final
    assert "PLUGINS_FOLDER" not in text  # the package registers as a provider; no plugins folder
    for src in re.findall(r"^COPY (?!--from=)(?:--chown=\S+ )?(\S+) ", text, re.M):  # --from: another stage
        assert (REPO / src).exists(), f"Dockerfile copies {src}, which does not exist"
    assert INIT_SCRIPT.relative_to(REPO).as_posix() in text


def test_init_script_is_valid_bash_and_does_what_the_compose_file_promises():
    proc = subprocess.run(["bash", "-n", str(INIT_SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = INIT_SCRIPT.read_text()
    for needle in ("airflow db migrate", "python -m batch_scoring.ingest_sim --odbc", "init-db",
                   "Driver={${ODBC_DRIVER}};Server=mssql,1433;", "TrustServerCertificate=yes",
                   "devstack.compose_init", "containers", "demo-data",
                   "--conn-type odbc", "--conn-type\", \"wasb\"", '\\"driver\\": \\"${ODBC_DRIVER}\\"'):
        assert needle in text, needle
    assert 'ODBC_DRIVER="ODBC Driver 18 for SQL Server"' in text
    services = _compose()["services"]
    assert services["airflow-init"]["command"] == ["/opt/airflow/project/compose/airflow-init.sh"]


# --- compose_init against real engines here --------------------------------------------------

def test_compose_init_builds_the_demo_world(sqlite_conn_str, blob_conn_str, tmp_path):
    from batch_scoring.config import settings
    from batch_scoring.hooks.blob_storage import BlobStore
    from devstack import compose_init
    from batch_scoring.sensor_db.schema import connect

    assert "nothing to create" in compose_init.create_database(sqlite_conn_str)
    assert "containers ready" in compose_init.ensure_containers(blob_conn_str)
    message = compose_init.demo_data(sqlite_conn_str, blob_conn_str, devices=2, sensors=1,
                                     models_dir=tmp_path / "models", history_hours=6, scoring_hours=2)
    assert "2 models deployed" in message, message
    store = BlobStore.from_connection_string(blob_conn_str)
    assert len([n for n in store.list_names(settings().models_container) if n.endswith("model.joblib")]) == 2
    conn = connect(sqlite_conn_str)
    try:
        assert conn.execute("SELECT COUNT(*) FROM sensor_aggregates").fetchone()[0] > 0
    finally:
        conn.close()
    # idempotent: a second `docker compose up` keeps what is there
    again = compose_init.demo_data(sqlite_conn_str, blob_conn_str, devices=2, sensors=1, models_dir=tmp_path / "m2")
    assert "already deployed" in again


def test_odbc_string_without_database():
    from devstack.compose_init import _without_database

    server, db = _without_database("Driver={ODBC Driver 18 for SQL Server};Server=mssql,1433;Database=sensors;Uid=sa;Pwd=x;")
    assert db == "sensors" and "Database" not in server and server.startswith("Driver={ODBC Driver 18")


def test_create_database_never_takes_a_sqlite_connection_string_for_a_file_name(tmp_path, monkeypatch):
    """Without its ``Database=``, the SQLite ODBC driver opens the rest of the string as a file
    (``./Driver=SQLite3;``): create-database must open a SQLite string as given."""
    from devstack.compose_init import create_database

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    db = tmp_path / "sensors.db"
    assert "nothing to create" in create_database(f"Driver=SQLite3;Database={db}")
    assert list(cwd.iterdir()) == [], [p.name for p in cwd.iterdir()]
    assert not any(p.name.startswith("Driver=") for p in REPO.iterdir())
