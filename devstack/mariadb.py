"""A throwaway MariaDB server on this machine, as Azurite's SQL metadata store for fleet-scale benchmarks.

Azurite keeps blob metadata in LokiJS by default, which looks a blob up by
scanning: measured here (``make setup``'s Azurite 3.35, 30 KB blobs, 10
parallel uploads) uploads ran at 380/s for the first 8,000 blobs of an
account and at 191/s for the next 8,000, so the 200,000 model blobs of
100,000 targets would take about two hours to deploy and as long again to
download. With ``AZURITE_DB`` (Azurite's documented SQL metadata store,
MySQL/MariaDB through Sequelize) the rate stayed at 155-169/s over the same
16,000. Real Blob Storage does not slow with the blobs in a container; this
keeps an emulator's artefact out of the benchmark at that scale.

Debian's ``mariadb-server`` (``mariadb-install-db``, ``mariadbd``). Listens on
127.0.0.1 only; the data, socket and log live in ``base_dir``; no durability
(the benchmark rebuilds its world every run).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devstack import services

DATABASE = "azurite_blob"


class MariaDbError(RuntimeError):
    """MariaDB could not be found, initialised or started (the message says which, with its log's end)."""


@dataclass
class MariaDbServer:
    """A running server: its port, base directory and process."""

    port: int
    base_dir: Path
    proc: subprocess.Popen

    def azurite_db(self, database: str = DATABASE) -> str:
        """The ``AZURITE_DB`` value for ``database`` (user ``root``, no password, 127.0.0.1 only)."""
        return f"mysql://root:@127.0.0.1:{self.port}/{database}"


def _binary(name: str) -> str:
    found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if not found:
        raise MariaDbError(f"{name} not found: `apt-get install mariadb-server` (`make setup` installs it as root)")
    return found


def start_mariadb(base_dir: Path, port: int, databases=(DATABASE,), timeout: float = 60.0) -> MariaDbServer:
    """Initialise ``base_dir/data`` (once) and start ``mariadbd`` on 127.0.0.1:``port`` with ``databases`` created.

    Runs as the current user (``--user=root`` when that is root). Binary log off, log
    flushed about once a second (``innodb_flush_log_at_trx_commit=0``). The log is
    ``base_dir/mariadb.log``. Raises ``MariaDbError`` when the binaries are missing
    the port is taken, or initialisation, start-up (within ``timeout`` s) or ``CREATE DATABASE`` fail.
    Stop it with :func:`stop_mariadb`.
    """
    if services.port_open(port):
        raise MariaDbError(f"port {port} is already in use: MariaDB cannot listen there")
    base = Path(base_dir)
    base.mkdir(parents=True, exist_ok=True)
    data, log, sock = base / "data", base / "mariadb.log", base / "mariadb.sock"
    user = ["--user=root"] if os.geteuid() == 0 else []
    if not (data / "mysql").exists():
        init = subprocess.run([_binary("mariadb-install-db"), "--no-defaults", f"--datadir={data}", *user,
                               "--auth-root-authentication-method=normal", "--skip-test-db"],
                              capture_output=True, text=True, timeout=300)
        if init.returncode:
            raise MariaDbError(f"mariadb-install-db failed ({init.returncode}): {init.stderr.strip()[-2000:]}")
    proc = subprocess.Popen(
        [_binary("mariadbd"), "--no-defaults", f"--datadir={data}", *user, f"--port={port}", "--bind-address=127.0.0.1",
         f"--socket={sock}", "--skip-log-bin", "--innodb-flush-log-at-trx-commit=0", f"--log-error={log}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        services.wait_for_port(port, timeout=timeout, proc=proc)
        for name in databases:
            _sql(sock, f"CREATE DATABASE IF NOT EXISTS `{name}`")
    except (RuntimeError, TimeoutError, MariaDbError) as exc:
        services.stop(proc)
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise MariaDbError(f"MariaDB did not start on port {port}: {exc}\n{tail}") from exc
    return MariaDbServer(port, base, proc)


def stop_mariadb(server: MariaDbServer, timeout: float = 30.0) -> None:
    """Stop the server (SIGTERM, SIGKILL after ``timeout`` s); its data stays in ``base_dir``."""
    services.stop(server.proc, timeout)


def _sql(sock: Path, statement: str) -> None:
    client = shutil.which("mariadb") or shutil.which("mysql")
    if not client:
        raise MariaDbError("the mariadb client was not found: `apt-get install mariadb-server` brings it")
    done = subprocess.run([client, "--no-defaults", "-S", str(sock), "-u", "root", "-e", statement],
                          capture_output=True, text=True, timeout=60)
    if done.returncode:
        raise MariaDbError(f"{statement!r} failed: {done.stderr.strip()}")

