"""A local Azure ML emulator: the REST endpoints the unmodified ``azure-ai-ml`` SDK calls, over TLS.

Start it as a process (``python -m devstack.aml_emulator --port P ...``, see ``__main__``) or from Python::

    em = start(port, state_dir, azurite_conn_str, datastores={"scoring_models": "models", ...},
               codes={"batch-scoring-code:1": code_folder})
    os.environ["REQUESTS_CA_BUNDLE"] = str(em.ca_bundle)     # trust its self-signed certificate
    os.environ["AIRFLOW_CONN_AZURE_ML"] = em.connection_json()
    ...
    em.stop()

The Airflow connection (``connection_json``) is a service principal whose tenant authority and cloud
endpoints (the ``cloud_metadata`` extra of ``AzureMLHook``) are the emulator's URL. What is and is not
emulated: docs/azure_ml.md, "The local Azure ML emulator".
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

#: The emulated workspace's scope (any values work; the connection must carry the same).
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP = "rg-local"
WORKSPACE = "ws-local"
TENANT = "00000000-0000-0000-0000-0000000000a1"


def cloud_metadata(url: str) -> dict[str, str]:
    """The ``MLClient`` ``cloud_metadata`` (azure-ai-ml ``EndpointURLS`` keys) of an emulator at ``url``."""
    host = url.split("://", 1)[-1].rstrip("/")
    return {"azure_portal": url + "/", "resource_manager": url + "/", "active_directory": url + "/",
            "aml_resource_id": url + "/", "storage_endpoint": host, "registry_discovery_endpoint": url + "/"}


def connection(url: str) -> dict:
    """The Airflow connection (dict, JSON form) reaching the emulator at ``url`` through ``AzureMLHook``.

    A service principal (login/password; the emulator accepts any) in tenant ``TENANT``, the workspace
    ``SUBSCRIPTION``/``RESOURCE_GROUP``/``WORKSPACE``, and a custom cloud named ``AzureMLEmulator`` whose
    endpoints are ``url``. Clients must trust the emulator's certificate (``REQUESTS_CA_BUNDLE``).
    """
    return {"conn_type": "azure_ml", "login": "00000000-0000-0000-0000-0000000000c1", "password": "emulator",
            "extra": {"subscription_id": SUBSCRIPTION, "resource_group": RESOURCE_GROUP, "workspace_name": WORKSPACE,
                      "tenant_id": TENANT, "cloud_environment": "AzureMLEmulator",
                      "cloud_metadata": cloud_metadata(url)}}


@dataclasses.dataclass
class Emulator:
    """A running emulator process: ``url`` (https), ``ca_bundle`` (PEM to trust), ``state_dir`` and ``proc``."""

    url: str
    ca_bundle: Path
    state_dir: Path
    proc: subprocess.Popen

    def connection_json(self) -> str:
        """``connection(self.url)`` as the JSON an ``AIRFLOW_CONN_<ID>`` variable holds."""
        return json.dumps(connection(self.url))

    def control(self, path: str, body: dict | None = None):
        """GET (or POST ``body`` to) ``/_emulator/<path>``; returns the decoded JSON (or text) answer."""
        import ssl

        req = urllib.request.Request(f"{self.url}/_emulator/{path}", method="POST" if body is not None else "GET",
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
        ctx = ssl.create_default_context(cafile=str(self.ca_bundle))
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            text = resp.read().decode()
        return json.loads(text) if resp.headers.get_content_type() == "application/json" else text

    def fault(self, **fault) -> dict:
        """Inject a fault (``state.Workspace.add_fault``), e.g. ``fault(kind="http", status=429, count=3, retry_after=1)``."""
        return self.control("faults", fault)

    def ledger(self) -> list[dict]:
        """Every job created: ``[{"name", "tags", "experiment", "created_at", "status", "last_modified_at"}]`` in
        creation order (``state.Workspace.ledger``)."""
        return self.control("ledger")

    def reset(self) -> None:
        """Cancel and forget every job and pending fault (the registry stays): a fresh workspace for a test."""
        self.control("reset", {})

    def log(self, job_name: str) -> str:
        """The job's captured output (the command line, its stdout/stderr, the exit code), as far as it ran."""
        return self.control(f"jobs/{job_name}/log")

    def requests(self) -> list[tuple[str, str, int]]:
        """``(method, path, status)`` of every request served so far (from ``requests.log``)."""
        path = self.state_dir / "requests.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [(m, p, int(s)) for _, m, p, s in (line.split(" ") for line in lines)]

    def stop(self) -> None:
        """Stop the process (SIGTERM to its group, SIGKILL after 10 s)."""
        from devstack import services

        services.stop(self.proc)


def start(port: int, state_dir: Path, azurite_conn_str: str, datastores: dict[str, str],
          codes: dict[str, Path], environments: tuple[str, ...] = ("batch-scoring-env:1",),
          computes: dict[str, int] | None = None, step_seconds: float = 0.2, timeout: float = 30.0) -> Emulator:
    """Start the emulator process on ``127.0.0.1:port`` and wait until it answers; returns its ``Emulator``.

    :param state_dir: its certificate, ``requests.log``, ``ledger.jsonl``, job logs and ``emulator.log``.
    :param azurite_conn_str: connection string of the account holding the datastores' containers.
    :param datastores: datastore name -> container.
    :param codes: ``name:version`` -> folder (what ``batch_scoring.scoring.azure_setup.stage_code`` writes).
    :param environments: registered ``name:version`` environments.
    :param computes: compute name -> node count (default ``{"cpu-scoring": 4}``).
    :param step_seconds: how long each short job state lasts.
    :raises TimeoutError: when it does not answer within ``timeout`` seconds (its log is in the message).
    """
    from devstack import services
    from devstack.aml_emulator.certs import make_certificate

    state_dir = Path(state_dir)
    cert, key = make_certificate(state_dir / "tls")
    argv = [sys.executable, "-m", "devstack.aml_emulator", "--port", str(port), "--state-dir", str(state_dir),
            "--cert", str(cert), "--key", str(key), "--step-seconds", str(step_seconds)]
    for name, container in datastores.items():
        argv += ["--datastore", f"{name}={container}"]
    for ref, folder in codes.items():
        argv += ["--code", f"{ref}={folder}"]
    for ref in environments:
        argv += ["--environment", ref]
    for name, nodes in (computes or {"cpu-scoring": 4}).items():
        argv += ["--compute", f"{name}={nodes}"]
    env = {**os.environ, "AML_EMULATOR_AZURITE": azurite_conn_str,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(services.REPO), os.environ.get("PYTHONPATH")]))}
    log = open(state_dir / "emulator.log", "ab")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    em = Emulator(url=f"https://127.0.0.1:{port}", ca_bundle=cert, state_dir=state_dir, proc=proc)

    def up():
        if proc.poll() is not None:
            raise RuntimeError(f"AML emulator exited {proc.returncode}: {(state_dir / 'emulator.log').read_text()[-2000:]}")
        try:
            return em.control("health")
        except OSError:
            return None

    services.wait_until(up, timeout, 0.1, lambda: f"AML emulator not up after {timeout}s: "
                        f"{(state_dir / 'emulator.log').read_text()[-2000:]}")
    return em
