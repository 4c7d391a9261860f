"""The sensor database shared by the loader (ingest_sim) and the DAG: schema, typed reads, window checks."""
