# The one Airflow image every Airflow service in docker-compose.yaml runs
# (api-server, scheduler, dag-processor, triggerer, celery worker, init).
#
#   docker compose build          # or: docker build -t batch-scoring-airflow:local .
#
# Base: the official Airflow image at the version pinned in requirements.lock
# (tests/test_compose.py checks they agree). It already carries Airflow's Celery,
# Redis and PostgreSQL providers and psycopg2, which the compose deployment needs
# and the project's lock does not list.
#
# The project goes in as what it is, a wheel (airflow-provider-batch-scoring), installed
# the way Airflow's "Building the image" guide says: together with
# "apache-airflow==${AIRFLOW_VERSION}", so pip cannot up- or downgrade Airflow to suit it.
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11

# --- stage 1: build the wheel from the sources (the image below gets only the wheel) ----------
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION} AS wheel
COPY --chown=airflow:0 pyproject.toml README.md LICENSE /opt/airflow/src/
COPY --chown=airflow:0 scoring /opt/airflow/src/scoring
COPY --chown=airflow:0 sensor_db /opt/airflow/src/sensor_db
COPY --chown=airflow:0 ingest_sim /opt/airflow/src/ingest_sim
COPY --chown=airflow:0 plugins /opt/airflow/src/plugins
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /opt/airflow/dist /opt/airflow/src

# --- stage 2: the image ------------------------------------------------------------------------
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}
ARG AIRFLOW_VERSION

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

# --- The project: the wheel and its declared dependencies -----------------------------------
# --constraint requirements.lock: every dependency pip installs or changes gets the version the
# test suite ran with (constraints install nothing by themselves: no test tools reach the image).
# --compile (pip's default, spelled out): every process of the image imports Airflow, pandas,
# scikit-learn, pyarrow and the blob SDK; without bytecode each one compiles them again (BENCHMARKS.md).
USER airflow
COPY --chown=airflow:0 requirements.lock /opt/airflow/project/requirements.lock
COPY --from=wheel /opt/airflow/dist/ /opt/airflow/dist/
RUN pip install --no-cache-dir --compile --constraint /opt/airflow/project/requirements.lock \
        "apache-airflow==${AIRFLOW_VERSION}" /opt/airflow/dist/airflow_provider_batch_scoring-*.whl \
 && python -c "import batch_scoring.dag, batch_scoring.scoring.score, pyodbc" \
 && airflow providers list | grep -q airflow-provider-batch-scoring

# The DAG file (one line importing batch_scoring.dag). The compose demo's init service also
# uses the repository's devstack/ (database, containers, demo data); no Airflow process imports it.
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 devstack /opt/airflow/project/devstack
COPY --chown=airflow:0 compose/airflow-init.sh /opt/airflow/project/compose/airflow-init.sh
# The preload hook (BATCH_SCORING_PRELOAD=1 in compose/airflow.env): scheduler and workers import the scoring stack once.
COPY --chown=airflow:0 compose/airflow_local_settings.py /opt/airflow/config/airflow_local_settings.py

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
