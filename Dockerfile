# The one Airflow image every Airflow service in docker-compose.yaml runs
# (api-server, scheduler, dag-processor, triggerer, celery worker, init).
#
#   docker compose build          # or: docker build -t batch-scoring-airflow:local .
#
# Base: the official Airflow image at the version pinned in requirements.lock
# (tests/test_compose.py checks they agree). It already carries Airflow's Celery,
# Redis and PostgreSQL providers and psycopg2, which the compose deployment needs
# and the project's lock does not list.
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}

# --- Microsoft ODBC Driver 18 for SQL Server (Azure SQL / SQL Server 2022) ---------
# From Microsoft's Debian repository for the base image's Debian release; the
# EULA must be accepted explicitly. unixodbc is the driver manager pyodbc loads.
USER root
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl gnupg; \
    . /etc/os-release; \
    curl -fsSL https://packages.microsoft.com/keys/microsoft.asc \
      | gpg --dearmor -o /usr/share/keyrings/microsoft-prod.gpg; \
    curl -fsSL "https://packages.microsoft.com/config/debian/${VERSION_ID}/prod.list" \
      -o /etc/apt/sources.list.d/mssql-release.list; \
    apt-get update; \
    ACCEPT_EULA=Y apt-get install -y --no-install-recommends msodbcsql18 unixodbc; \
    odbcinst -q -d -n "ODBC Driver 18 for SQL Server"; \
    apt-get purge -y --auto-remove gnupg; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*; \
    install -d -o airflow -g 0 -m 0770 /opt/airflow/auth   # the simple auth manager's password file (a volume)

# --- Python dependencies: exactly the project's pinned lock --------------------------
# --no-deps: the lock is complete for the project (Airflow's constraint files are
# not used); packages the image has and the lock does not name stay as shipped.
# --compile (pip's default, spelled out): every process of the image imports Airflow, pandas,
# scikit-learn, pyarrow and the blob SDK; without bytecode each one compiles them again (BENCHMARKS.md).
USER airflow
COPY --chown=airflow:0 requirements.lock /opt/airflow/project/requirements.lock
RUN pip install --no-cache-dir --no-deps -r /opt/airflow/project/requirements.lock --compile

# --- The project: packages (scoring, sensor_db, ingest_sim, batch_scoring, devstack), DAGs
COPY --chown=airflow:0 pyproject.toml /opt/airflow/project/
COPY --chown=airflow:0 scoring /opt/airflow/project/scoring
COPY --chown=airflow:0 sensor_db /opt/airflow/project/sensor_db
COPY --chown=airflow:0 ingest_sim /opt/airflow/project/ingest_sim
COPY --chown=airflow:0 plugins /opt/airflow/project/plugins
COPY --chown=airflow:0 devstack /opt/airflow/project/devstack
RUN pip install --no-cache-dir --compile --no-deps /opt/airflow/project \
 && python -c "import batch_scoring, scoring, sensor_db, ingest_sim, devstack.compose_init, pyodbc"
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
COPY --chown=airflow:0 compose/airflow-init.sh /opt/airflow/project/compose/airflow-init.sh

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airflow/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
