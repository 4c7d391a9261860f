#!/usr/bin/env bash
# One-shot set-up run by the `airflow-init` service of docker-compose.yaml.
# Idempotent: running it again (docker compose up) keeps data and replaces the
# connections. Every secret comes from the environment (.env), none is written here.
set -euo pipefail

: "${MSSQL_SA_PASSWORD:?MSSQL_SA_PASSWORD is not set (see .env.example)}"
: "${AIRFLOW_ADMIN_PASSWORD:?AIRFLOW_ADMIN_PASSWORD is not set (see .env.example)}"
: "${AZURITE_CONNECTION_STRING:?}"
SENSOR_SQL_DATABASE="${SENSOR_SQL_DATABASE:-sensors}"
SQL_CONN_ID="${BATCH_SCORING_SQL_CONN_ID:-sensor_sql}"
BLOB_CONN_ID="${BATCH_SCORING_BLOB_CONN_ID:-sensor_blob}"
# devstack/ (this demo's database, container and demo-data set-up) is not part of the installed
# package; the image keeps it beside this script and `python -m devstack...` finds it from here.
cd /opt/airflow/project
ODBC_DRIVER="ODBC Driver 18 for SQL Server"
# The ODBC string the loaders use (the DAG builds the same from the sensor_sql connection).
# ODBC does not escape PWD: the password must not contain ';', '{' or '}'.
SENSOR_ODBC="Driver={${ODBC_DRIVER}};Server=mssql,1433;Database=${SENSOR_SQL_DATABASE};Uid=sa;Pwd=${MSSQL_SA_PASSWORD};Encrypt=yes;TrustServerCertificate=yes"

say() { echo "[airflow-init $(date -u +%H:%M:%S)] $*"; }

say "airflow db migrate"
airflow db migrate

say "simple auth manager password file (${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE})"
mkdir -p "$(dirname "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE}")"
python - <<'PY'
import json, os
users = [u.split(":")[0] for u in os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(",") if u]
path = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
with open(path, "w") as fh:
    json.dump({user: os.environ["AIRFLOW_ADMIN_PASSWORD"] for user in users}, fh)
os.chmod(path, 0o600)
PY

say "SQL Server: database ${SENSOR_SQL_DATABASE} and schema"
python -m devstack.compose_init --odbc "${SENSOR_ODBC}" create-database
python -m batch_scoring.ingest_sim --odbc "${SENSOR_ODBC}" init-db

say "blob containers on Azurite"
python -m devstack.compose_init --blob "${AZURITE_CONNECTION_STRING}" containers

say "Airflow connections ${SQL_CONN_ID} (odbc) and ${BLOB_CONN_ID} (wasb)"
airflow connections delete "${SQL_CONN_ID}" >/dev/null 2>&1 || true
airflow connections add "${SQL_CONN_ID}" \
    --conn-type odbc --conn-host "mssql,1433" --conn-schema "${SENSOR_SQL_DATABASE}" \
    --conn-login sa --conn-password "${MSSQL_SA_PASSWORD}" \
    --conn-extra "{\"driver\": \"${ODBC_DRIVER}\", \"placeholder\": \"?\", \"Encrypt\": \"yes\", \"TrustServerCertificate\": \"yes\"}"
airflow connections delete "${BLOB_CONN_ID}" >/dev/null 2>&1 || true
python - <<'PY'
import json, os, subprocess
extra = json.dumps({"connection_string": os.environ["AZURITE_CONNECTION_STRING"]})
conn_id = os.environ.get("BATCH_SCORING_BLOB_CONN_ID", "sensor_blob")
subprocess.run(["airflow", "connections", "add", conn_id, "--conn-type", "wasb", "--conn-extra", extra], check=True)
PY

if [ "${DEMO_DATA:-true}" = "true" ]; then
  say "demo data: simulate, aggregate, train and deploy (skipped if models are already deployed)"
  python -m devstack.compose_init --odbc "${SENSOR_ODBC}" --blob "${AZURITE_CONNECTION_STRING}" \
      demo-data --devices "${DEMO_DEVICES:-5}" --sensors "${DEMO_SENSORS:-3}" --models-dir /tmp/demo-models
fi
say "done"
