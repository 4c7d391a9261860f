"""devstack.mariadb: a throwaway MariaDB as Azurite's SQL metadata store (what `python -m bench --azurite-metadata
mariadb` runs on)."""
from __future__ import annotations

import hashlib

import pytest

from batch_scoring.hooks.blob_storage import BlobStore
from devstack import services
from devstack.mariadb import MariaDbError, start_mariadb, stop_mariadb


def test_azurite_keeps_blob_metadata_in_mariadb(tmp_path):
    maria = start_mariadb(tmp_path / "mariadb", services.free_port())
    try:
        port = services.free_port()
        azurite = services.start_azurite(tmp_path / "azurite", port, log_path=tmp_path / "azurite.log",
                                         metadata_db=maria.azurite_db())
        try:
            store = BlobStore.from_connection_string(services.azurite_connection_string(port))
            store.ensure_containers(["models"])
            blobs = {f"d{i:05d}/s1/model.joblib": f"model {i}".encode() for i in range(30)}
            store.parallel(lambda item: store.upload_bytes("models", *item), list(blobs.items()))
            versions = store.list_versions("models", "d0001")
            assert versions == {name: f"md5:{hashlib.md5(data).hexdigest()}"
                                for name, data in blobs.items() if name.startswith("d0001")}
            assert store.list_names("models") == sorted(blobs)
        finally:
            services.stop(azurite)
        # the metadata is in MariaDB, not in Azurite's own LokiJS files
        assert not list((tmp_path / "azurite").glob("__azurite_db_blob__*"))
        assert (tmp_path / "mariadb" / "data" / "azurite_blob").is_dir()
    finally:
        stop_mariadb(maria)
    assert maria.proc.poll() is not None


def test_a_taken_port_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(MariaDbError, match=f"port {port}"):
            start_mariadb(tmp_path / "mariadb", port, timeout=20)
