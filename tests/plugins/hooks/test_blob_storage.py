"""BlobStore against a real Azurite."""
from __future__ import annotations

from batch_scoring.hooks.blob_storage import BlobStore


def test_round_trip_overwrite_list_delete(blob_store, tmp_path):
    blob_store.upload_bytes("predictions", "k/a/s1.parquet", b"one")
    blob_store.upload_bytes("predictions", "k/a/s1.parquet", b"two")  # overwrite is the idempotency mechanism
    blob_store.upload_bytes("predictions", "other/x", b"x")
    assert blob_store.download_bytes("predictions", "k/a/s1.parquet") == b"two"
    assert blob_store.list_names("predictions", "k/") == ["k/a/s1.parquet"]
    path = blob_store.download_file("predictions", "k/a/s1.parquet", tmp_path / "deep" / "f")
    assert path.read_bytes() == b"two"
    blob_store.delete("predictions", "k/a/s1.parquet")
    assert not blob_store.exists("predictions", "k/a/s1.parquet")
    assert blob_store.list_names("predictions") == ["other/x"]


def test_upload_folder_keeps_relative_paths(blob_store, tmp_path):
    (tmp_path / "d1" / "s1").mkdir(parents=True)
    (tmp_path / "d1" / "s1" / "model.joblib").write_bytes(b"m")
    (tmp_path / "d1" / "s1" / "manifest.json").write_text("{}")
    names = blob_store.upload_folder("models", "", tmp_path)
    assert names == ["d1/s1/manifest.json", "d1/s1/model.joblib"]
    assert blob_store.list_names("models") == names


def test_ensure_containers_is_idempotent(blob_conn_str):
    store = BlobStore.from_connection_string(blob_conn_str)
    store.ensure_containers(["test-a", "test-a", "test-b"])
    store.ensure_containers(["test-a"])
    assert store.list_names("test-a") == []


def test_from_airflow_connection(airflow_db, monkeypatch, blob_conn_str):
    from devstack.airflow_env import blob_connection_json

    monkeypatch.setenv("AIRFLOW_CONN_SOME_BLOB", blob_connection_json(blob_conn_str))
    store = BlobStore.from_conn_id("some_blob")
    store.ensure_containers(["viaconn"])
    store.upload_bytes("viaconn", "x", b"1")
    assert BlobStore.from_connection_string(blob_conn_str).download_bytes("viaconn", "x") == b"1"


def test_many_at_once_in_order_with_missing_as_none(blob_store, tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"from-file")
    items = [(f"k/{i:03d}", str(i).encode()) for i in range(40)] + [("k/file", path)]
    blob_store.upload_many("predictions", items)
    got = blob_store.download_many("predictions", ["k/039", "k/000", "k/missing", "k/file"])
    assert list(got) == ["k/039", "k/000", "k/missing", "k/file"]
    assert got == {"k/039": b"39", "k/000": b"0", "k/missing": None, "k/file": b"from-file"}
    assert len(blob_store.list_names("predictions", "k/")) == 41
