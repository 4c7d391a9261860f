"""Train and score one anomaly model per device/sensor on local paths.

Pure Python with no Airflow import: this folder is what an Azure ML command job
uploads as its code, and every entry point is a plain CLI runnable by hand.
"""
