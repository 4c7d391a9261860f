"""Readings in, windowed aggregates out: simulator, CSV loader, aggregator, SQL store."""
