"""Start Azurite (Blob Storage) on this machine, describe how to reach it, and wait for ports and conditions."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
AZURITE_BIN = REPO / "node_modules" / ".bin" / "azurite-blob"
# Azurite's published development account (documented by Microsoft, not a secret
# of any real account). Real deployments put their own in an Airflow connection.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_connection_string(port: int, host: str = "127.0.0.1") -> str:
    """The connection string of the Azurite development account listening on ``host:port`` (plain HTTP)."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://{host}:{port}/{AZURITE_ACCOUNT};"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it; another process may take it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port`` (0.2 s connect timeout)."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_until(check: Callable[[], T | None], timeout: float, every: float, timeout_message: Callable[[], str]) -> T:
    """Call ``check()`` every ``every`` seconds until it returns something other than ``None``; return that.

    ``check`` may raise to abort the wait (the exception propagates). After
    ``timeout`` seconds (monotonic clock) without a result: ``TimeoutError``
    with ``timeout_message()`` (called then, so it can show the last state seen).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result is not None:
            return result
        time.sleep(every)
    raise TimeoutError(timeout_message())


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until something listens on 127.0.0.1:``port`` (polled every 0.1 s).

    Raises ``RuntimeError`` if ``proc`` (the process meant to open it) exits
    first, ``TimeoutError`` after ``timeout`` seconds.
    """
    def opened() -> bool | None:
        if port_open(port):
            return True
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        return None

    wait_until(opened, timeout, 0.1, lambda: f"nothing listening on 127.0.0.1:{port} after {timeout:.0f}s")


def start_azurite(location: Path, port: int, log_path: Path | None = None,
                  metadata_db: str | None = None) -> subprocess.Popen:
    """Start azurite-blob on 127.0.0.1:``port`` with its files in ``location``; returns once the port is open.

    Uses the flags measured to work here (see PLATFORM-NOTES); output goes to
    ``log_path`` (appended) or nowhere. ``metadata_db``: Azurite's ``AZURITE_DB``, a
    ``mysql://`` URL of its SQL metadata store (``devstack.mariadb``: lookups that do not
    slow with the blobs held); None keeps its default LokiJS store in ``location``. Raises ``FileNotFoundError`` if Azurite
    is not installed (``make setup``), ``RuntimeError``/``TimeoutError`` if it
    does not start listening within 30 s. Stop it with :func:`stop`.
    """
    if not AZURITE_BIN.exists():
        raise FileNotFoundError(f"{AZURITE_BIN} not found: run `make setup` (npm ci installs Azurite)")
    location.mkdir(parents=True, exist_ok=True)
    log = open(log_path or os.devnull, "ab")
    proc = subprocess.Popen(
        [str(AZURITE_BIN), "--location", str(location), "--blobHost", "127.0.0.1", "--blobPort", str(port),
         "--skipApiVersionCheck", "--loose", "--disableTelemetry"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "AZURITE_DB": metadata_db} if metadata_db else None,
    )
    wait_for_port(port, proc=proc)
    return proc


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a process started in its own session (and its children): SIGTERM to the group, SIGKILL after ``timeout`` s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
