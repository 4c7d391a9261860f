"""BlobStore against a real Azurite."""
from __future__ import annotations

import pytest

from batch_scoring.hooks.blob_storage import BlobStore
from devstack.services import AZURITE_KEY


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


@pytest.mark.parametrize("kind", ["connection_string", "account_key", "sas_token"])
def test_from_airflow_connection_of_each_kind(airflow_db, monkeypatch, azurite, blob_conn_str, kind):
    """Every kind goes through the provider's WasbHook; the client ends up with that kind's credential."""
    from azure.core.credentials import AzureSasCredential
    from azure.storage.blob._shared.authentication import SharedKeyCredentialPolicy

    from tests.fixtures.azurite import wasb_connection_json

    monkeypatch.setenv("AIRFLOW_CONN_SOME_BLOB", wasb_connection_json(azurite[1], kind))
    store = BlobStore.from_conn_id("some_blob")
    assert store.hook.conn_id == "some_blob" and store.hook.blob_service_client is store._client  # built once
    assert store.url == f"http://127.0.0.1:{azurite[1]}/devstoreaccount1/"
    credential = store._client.credential
    if kind == "sas_token":
        assert isinstance(credential, AzureSasCredential) and "sig=" in credential.signature
    else:  # a connection string and login/password both sign with the account key
        assert isinstance(credential, SharedKeyCredentialPolicy)
        assert (credential.account_name, credential.account_key) == ("devstoreaccount1", AZURITE_KEY)
    store.ensure_containers(["viaconn"])
    store.upload_many("viaconn", [(f"x{i}", str(i).encode()) for i in range(12)])  # the thread pool shares the client
    assert BlobStore.from_connection_string(blob_conn_str).download_bytes("viaconn", "x7") == b"7"
    assert store.list_names("viaconn") == sorted(f"x{i}" for i in range(12))


def test_service_principal_connection_gets_a_client_secret_credential(airflow_db, monkeypatch):
    """login = client id, password = secret, extra tenant_id, host = account URL (no network: nothing is called)."""
    import json

    from azure.identity import ClientSecretCredential

    monkeypatch.setenv("AIRFLOW_CONN_SP_BLOB", json.dumps({
        "conn_type": "wasb", "host": "https://acct.blob.core.windows.net/", "login": "app-id", "password": "secret",
        "extra": {"tenant_id": "tenant-1"}}))
    store = BlobStore.from_conn_id("sp_blob")
    credential = store._client.credential
    assert isinstance(credential, ClientSecretCredential)
    assert (credential._client_id, credential._tenant_id) == ("app-id", "tenant-1")
    assert store.url == "https://acct.blob.core.windows.net/"


def test_connection_without_secret_gets_default_azure_credential(airflow_db, monkeypatch):
    """No key, token or secret: DefaultAzureCredential (managed or workload identity).

    The provider passes a user-assigned identity's client id on only together with a workload identity tenant."""
    import json

    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    monkeypatch.setenv("AIRFLOW_CONN_MI_BLOB", json.dumps({
        "conn_type": "wasb", "host": "https://acct.blob.core.windows.net/",
        "extra": {"managed_identity_client_id": "mi-client-id", "workload_identity_tenant_id": "tenant-1"}}))
    store = BlobStore.from_conn_id("mi_blob")
    credential = store._client.credential
    assert isinstance(credential, DefaultAzureCredential)
    (managed,) = [c for c in credential.credentials if isinstance(c, ManagedIdentityCredential)]
    assert managed._credential._settings["client_id"] == "mi-client-id"  # azure-identity's private state


def test_many_at_once_in_order_with_missing_as_none(blob_store, tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"from-file")
    items = [(f"k/{i:03d}", str(i).encode()) for i in range(40)] + [("k/file", path)]
    blob_store.upload_many("predictions", items)
    got = blob_store.download_many("predictions", ["k/039", "k/000", "k/missing", "k/file"])
    assert list(got) == ["k/039", "k/000", "k/missing", "k/file"]
    assert got == {"k/039": b"39", "k/000": b"0", "k/missing": None, "k/file": b"from-file"}
    assert len(blob_store.list_names("predictions", "k/")) == 41


@pytest.mark.parametrize("how", ["file", "bytes"])
def test_a_blob_written_in_blocks_lists_its_md5(blob_conn_str, tmp_path, how):
    """Over max_single_put_size the SDK writes blocks, and the service records no Content-MD5 of its own: the
    upload sets it, so a listing confirms a part file of any size (at 100,000 targets each is over 64 MiB)."""
    import hashlib
    import os

    store = BlobStore.from_connection_string(blob_conn_str, max_single_put_size=4096, max_block_size=1024)
    store.ensure_containers(["big"])
    data = os.urandom(10_000)  # 10 blocks
    path = tmp_path / "part.parquet"
    path.write_bytes(data)
    if how == "file":
        store.upload_file("big", "a/part.parquet", path)
    else:
        store.upload_bytes("big", "a/part.parquet", data)
    assert store.download_bytes("big", "a/part.parquet") == data
    assert store.list_md5("big") == {"a/part.parquet": hashlib.md5(data).hexdigest()}
    # a one-request write of other bytes replaces the MD5 too
    small = b"small"
    store.upload_bytes("big", "a/part.parquet", small)
    assert store.list_md5("big") == {"a/part.parquet": hashlib.md5(small).hexdigest()}
