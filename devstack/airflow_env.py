"""The environment an isolated Airflow home needs to run the batch_scoring DAG here."""
from __future__ import annotations

import json
from pathlib import Path

from devstack.services import REPO


def odbc_connection_uri_json(odbc_conn_str: str) -> str:
    """An Airflow ``odbc`` connection (JSON form) that rebuilds ``odbc_conn_str``.

    OdbcHook copies every extra key into the ODBC string, so any driver's
    keywords pass through unchanged; the driver itself goes in ``driver``
    (honoured with ``[providers.odbc] allow_driver_in_extra``).
    """
    parts = dict(p.split("=", 1) for p in odbc_conn_str.split(";") if "=" in p)
    driver = None
    for key in list(parts):
        if key.lower() == "driver":
            driver = parts.pop(key).strip("{}")
    extra = {"placeholder": "?", **({"driver": driver} if driver else {}), **parts}
    return json.dumps({"conn_type": "odbc", "extra": extra})


def blob_connection_json(connection_string: str) -> str:
    """An Airflow ``wasb`` connection (JSON form) for a Blob Storage connection string."""
    return json.dumps({"conn_type": "wasb", "extra": {"connection_string": connection_string}})


def airflow_env(home: Path, sql_odbc: str, blob_connection_string: str, parallelism: int = 4) -> dict[str, str]:
    """Environment variables for an Airflow home wired to our DAG file, the installed package and our services."""
    home = Path(home)
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),  # none: the package registers as a provider
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__PROVIDERS_ODBC__ALLOW_DRIVER_IN_EXTRA": "True",
        # the local backend's model cache beside the home (not the machine-wide default): `make clean` clears it
        "BATCH_SCORING_MODEL_CACHE_DIR": str(home / "model-cache"),
        # the UI's connection Test button (off by default in Airflow 3: it runs hook code in the API server)
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        # Deferrable operators defer (the Azure ML score task follows this unless
        # BATCH_SCORING_AZUREML_DEFERRABLE is set); standalone runs a triggerer and dag.test() runs triggers inline.
        "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW_CONN_SENSOR_SQL": odbc_connection_uri_json(sql_odbc),
        "AIRFLOW_CONN_SENSOR_BLOB": blob_connection_json(blob_connection_string),
        "PYTHONPATH": str(REPO),
        "BATCH_SCORING_PRELOAD": "1",
    }


# the preload hook: the same file the compose image ships
LOCAL_SETTINGS = REPO / "compose" / "airflow_local_settings.py"


def write_local_settings(home: Path) -> None:
    """``$AIRFLOW_HOME/config/airflow_local_settings.py`` (Airflow imports it in every component)."""
    config = Path(home) / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "airflow_local_settings.py").write_text(LOCAL_SETTINGS.read_text())


def write_passwords_file(home: Path, password: str = "admin") -> None:
    """``$AIRFLOW_HOME/passwords.json``: the simple auth manager's ``admin`` password (home created if missing)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "passwords.json").write_text(json.dumps({"admin": password}))
