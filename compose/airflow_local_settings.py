# $AIRFLOW_HOME/config/airflow_local_settings.py of the production shape (Airflow imports it in
# every component): with BATCH_SCORING_PRELOAD=1 (compose/airflow.env) the scheduler and the
# Celery workers import the scoring stack once, so the task processes forked from them skip
# those imports (batch_scoring/preload.py). The Dockerfile copies this file into the image;
# devstack writes it into every Airflow home it makes.
from batch_scoring import preload as _preload

if _preload.wanted():
    _preload.preload()
