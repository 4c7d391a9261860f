from batch_scoring.dag import dag  # the batch_scoring Airflow DAG, built from BATCH_SCORING_* settings
