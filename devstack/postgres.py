"""A throwaway PostgreSQL server on this machine (initdb + pg_ctl), for the tests and the production topology.

Debian's ``postgresql`` package (server binaries under /usr/lib/postgresql/*/bin);
when we run as root the server runs as the ``postgres`` user (initdb refuses
root). Listens on 127.0.0.1 only, its socket in the data's own directory.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
PG_DRIVER = "PostgreSQL Unicode"  # Debian's odbc-postgresql


class PostgresError(RuntimeError):
    """PostgreSQL could not be found, initialised or started (the message says which, with its log's end)."""


@dataclass
class PgServer:
    """A running server: where it listens, its superuser and password (``""``: trust auth), its base directory."""

    host: str
    port: int
    user: str
    base_dir: Path
    password: str = ""

    def conn_str(self, database: str = "postgres") -> str:
        """An ODBC connection string (psqlODBC) to ``database``."""
        return (f"Driver={{{PG_DRIVER}}};Server={self.host};Port={self.port};"
                f"Database={database};Uid={self.user};Pwd={self.password};")

    def sqlalchemy_url(self, database: str, scheme: str = "postgresql+psycopg2") -> str:
        """A SQLAlchemy URL to ``database`` (the password must be URL-safe: letters, digits, ``-``, ``_``)."""
        return f"{scheme}://{self.user}:{self.password}@{self.host}:{self.port}/{database}"


def pg_bin() -> Path:
    """The directory of ``initdb`` and ``pg_ctl``: ``$PG_BIN_DIR``, Debian's newest version, or PATH.

    Raises ``PostgresError`` naming the package to install when none is found.
    """
    candidates = [os.environ["PG_BIN_DIR"]] if os.environ.get("PG_BIN_DIR") else []
    candidates += sorted((str(p) for p in Path("/").glob(PG_BIN_GLOB.lstrip("/"))), reverse=True)
    for d in candidates:
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    raise PostgresError(f"PostgreSQL server binaries (initdb, pg_ctl) not found in {PG_BIN_GLOB} or PATH: "
                        "`make setup` installs them (apt-get install postgresql odbc-postgresql), or set PG_BIN_DIR")


def _as_server_user(cmd: list[str]) -> list[str]:
    """``cmd`` run as ``postgres`` when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return cmd
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresError("running as root but there is no 'postgres' user to run initdb as") from None
    return ["runuser", "-u", "postgres", "--", *cmd]


def _give_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _run(cmd: list[str], what: str, log: Path | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode:
        tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
        raise PostgresError(f"{what} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}\n{tail}")


def start_postgres(base_dir: Path, port: int, user: str | None = None, password: str = "",
                   durable: bool = False) -> PgServer:
    """Start a server on 127.0.0.1:``port`` with its data in ``base_dir/data`` (initdb'd on first use).

    ``user``: the superuser (default: ``postgres`` as root, else the current
    user); ``password``: empty = trust auth, else scram-sha-256 with this
    password (set at initdb; an existing data directory keeps its own).
    ``durable=False`` turns fsync off (tests). The log is ``base_dir/pg.log``.
    Raises ``PostgresError`` when binaries are missing or initdb/start fail.
    """
    bin_dir = pg_bin()
    base = Path(base_dir)
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    _give_to_server_user(base)
    data, sock, log = base / "data", base / "sock", base / "pg.log"
    user = user or ("postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name)
    sock.mkdir(exist_ok=True)
    _give_to_server_user(sock)
    if not (data / "PG_VERSION").exists():
        data.mkdir(exist_ok=True)
        _give_to_server_user(data)
        auth = ["-A", "trust"]
        if password:
            pwfile = base / "pwfile"
            pwfile.write_text(password + "\n")
            _give_to_server_user(pwfile)
            auth = ["-A", "scram-sha-256", "--pwfile", str(pwfile)]
        try:
            _run(_as_server_user([str(bin_dir / "initdb"), "-D", str(data), *auth, "-U", user, "-E", "UTF8", "--no-sync"]), "initdb")
        finally:
            (base / "pwfile").unlink(missing_ok=True)
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {sock}"
    if not durable:
        opts += " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
    if not log.exists():
        log.touch()
        _give_to_server_user(log)
    _run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "start"]),
         "pg_ctl start", log)
    return PgServer(host="127.0.0.1", port=port, user=user, base_dir=base, password=password)


def stop_postgres(server: PgServer, mode: str = "fast") -> None:
    """``pg_ctl stop -m mode`` (``fast``: clean; ``immediate``: like a crash, for throwaway data). No error if down."""
    cmd = _as_server_user([str(pg_bin() / "pg_ctl"), "-D", str(server.base_dir / "data"), "-m", mode, "-w", "stop"])
    subprocess.run(cmd, capture_output=True, timeout=60)


def create_database(server: PgServer, name: str) -> None:
    """``CREATE DATABASE name`` unless it exists (over ODBC, as the superuser)."""
    import pyodbc

    conn = pyodbc.connect(server.conn_str("postgres"), autocommit=True)
    try:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = ?", name).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
