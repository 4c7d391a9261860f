"""Local stand-ins for the Azure services and the Airflow environment around them.

Used by ``make demo``, ``make airflow`` and the tests, so all three run the
product against the same Azurite, SQL and Airflow settings. Production never
imports this package.
"""
