"""bench.blob_requests against a real Azurite: the requests a period made, from the service's access log."""
from __future__ import annotations

import pytest

from bench.blob_requests import BlobRequests, count_lines

pytestmark = pytest.mark.timeout(120)


def test_counts_exactly_the_requests_of_the_period_by_method_and_container(blob_store, azurite_log):
    blob_store.upload_bytes("models", "before/x.bin", b"not counted")
    with BlobRequests(azurite_log) as period:
        blob_store.upload_bytes("models", "dev1/s1/model.joblib", b"m" * 10)
        blob_store.upload_bytes("predictions", "k/dev1/s1.parquet", b"p" * 10)
        assert blob_store.download_bytes("models", "dev1/s1/model.joblib") == b"m" * 10
        assert blob_store.list_names("models") == ["before/x.bin", "dev1/s1/model.joblib"]
    assert period.counts == {"total": 4, "by_method": {"GET": 2, "PUT": 2},
                             "by_container": {"models": 3, "predictions": 1}}
    with BlobRequests(azurite_log) as idle:
        pass
    assert idle.counts["total"] == 0


def test_lines_that_are_not_requests_are_ignored():
    lines = ["Azurite Blob service is starting on 127.0.0.1:41321",
             '127.0.0.1 - - [30/Nov/2026:11:03:01 +0000] "DELETE /devstoreaccount1/aggregates?restype=container HTTP/1.1" 404 -',
             '127.0.0.1 - - [30/Nov/2026:11:03:02 +0000] "GET /devstoreaccount1?comp=list HTTP/1.1" 200 -',
             "Azurite Blob service is closing..."]
    assert count_lines(lines) == {"total": 2, "by_method": {"DELETE": 1, "GET": 1},
                                  "by_container": {"": 1, "aggregates": 1}}
