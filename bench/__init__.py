"""`make bench`: fleet-scale benchmark of the batch_scoring DAG against a single-process floor (see BENCHMARKS.md)."""
