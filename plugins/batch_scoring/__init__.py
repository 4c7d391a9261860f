"""Many-model batch scoring with Airflow and Azure ML: the one import name of the distribution.

scoring/    (``batch_scoring.scoring``) training and scoring, no Airflow: also the Azure ML job's code
sensor_db/  (``batch_scoring.sensor_db``) the sensor-aggregates database: schema, typed reads, checks
ingest_sim/ (``batch_scoring.ingest_sim``) loaders and the simulator that fill that database
dag         the batch_scoring DAG (``from batch_scoring.dag import dag`` in a DAG file)
hooks/ operators/ triggers/ links/   the Airflow side, laid out like a provider
provider_info   what the ``apache_airflow_provider`` entry point tells Airflow

This file imports nothing: the Azure ML job imports ``batch_scoring.scoring`` without Airflow.
"""
