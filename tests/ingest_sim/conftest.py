"""A connection to this test's SQL database (SQLite or PostgreSQL) with the schema created."""
from __future__ import annotations

import pytest

from ingest_sim import db


@pytest.fixture
def conn(sql_conn_str):
    c = db.connect(sql_conn_str)
    db.create_schema(c)
    yield c
    c.close()
