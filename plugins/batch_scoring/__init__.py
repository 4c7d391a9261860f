"""Airflow-side integration for many-model batch scoring, laid out like a provider.

hooks/     blob storage (and, later, Azure ML) clients built from Airflow connections
operators/ freshness sensor and scoring operators, one module per service
triggers/  deferrable waits (importable by the triggerer; never from dags/)
links/     extra links to remote jobs
pipeline   the interval's snapshot and collection logic the DAG wires together
"""
