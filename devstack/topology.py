"""The production topology as local processes, from the installed wheel in a clean venv.

PostgreSQL (Airflow's metadata database, and the ``sensors`` database the
aggregates live in, reached over ODBC), Redis (the Celery broker), Azurite, and
Airflow's api-server, scheduler, dag-processor, triggerer and two Celery
workers (CeleryExecutor), each a process of its own with its log in
``<state>/logs/<name>.log``. The settings they share are ``compose/airflow.env``,
the file docker-compose.yaml loads too (``devstack.topology_env``).

    with Topology(state_dir, venv) as topo:   # start(); stop() on exit, also on Ctrl-C
        topo.api.unpause("batch_scoring")

Azure ML hook: the emulator (``devstack.aml_emulator``, built elsewhere) plugs in
as an extra process: start it after :meth:`Topology.start_services`, hand its
process to :meth:`Topology.adopt` (stopped with the rest) and its connection to
``extra_env`` as ``AIRFLOW_CONN_AZURE_ML`` (the ``azure_ml`` connection id of
``BATCH_SCORING_AZUREML_CONN_ID``) before :meth:`Topology.start_airflow`.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from devstack import services
from devstack.airflow_env import blob_connection_json
from devstack.postgres import PG_DRIVER, PgServer, create_database, start_postgres, stop_postgres
from devstack.standalone import AirflowApi
from devstack.topology_env import (Ports, base_env, host_env, load_secrets, prepare_home, read_env_file)

DAG_ID = "batch_scoring"
DB_USER = "airflow"
SENSORS_DB = "sensors"
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
WORKER_READY = re.compile(r"@\S+ ready\.")  # Celery's "worker-1@<host> ready."
SKIP_SERVE_LOGS = {"triggerer": ["--skip-serve-logs"]}


class TopologyError(RuntimeError):
    """A process of the topology did not start or died (the message names it and ends with its log's tail)."""


class Topology:
    """One topology under ``state_dir`` run from ``venv`` (see the module docstring).

    ``workers``: Celery workers (named ``worker-1``...; each reports that as its
    hostname); ``durable``: PostgreSQL with fsync (``make prod-local``) or without
    (tests); ``extra_env``: added to every Airflow process (e.g. the Azure ML
    connection); ``overrides``: settings of the shared file changed for this run
    (sizing only; say why where you pass them).
    """

    def __init__(self, state_dir: Path, venv: Path, workers: int = 2, durable: bool = True,
                 extra_env: dict[str, str] | None = None, overrides: dict[str, str] | None = None):
        self.state_dir, self.venv = Path(state_dir).resolve(), Path(venv).resolve()
        self.logs = self.state_dir / "logs"
        self.home, self.dags = self.state_dir / "airflow", self.state_dir / "dags"
        self.workers = [f"worker-{i}" for i in range(1, workers + 1)]
        self.durable = durable
        self.ports = Ports.free()
        self.secrets = load_secrets(self.state_dir)
        self.shared = {**read_env_file(), **(overrides or {})}
        self.extra_env = dict(extra_env or {})
        self.procs: dict[str, subprocess.Popen] = {}
        self.pg: PgServer | None = None
        self.api = AirflowApi(self.ports.api, password=self.secrets["admin_password"], attempts=6)
        self.timings: dict[str, float] = {}

    # --- what to reach ------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The UI and REST API."""
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def blob_conn_str(self) -> str:
        """Azurite's connection string."""
        return services.azurite_connection_string(self.ports.azurite)

    @property
    def sensors_odbc(self) -> str:
        """The ODBC string of the ``sensors`` database (what the loaders use; the DAG gets the same
        from the ``sensor_sql`` connection)."""
        return self.pg.conn_str(SENSORS_DB)

    def airflow_env(self, **extra: str) -> dict[str, str]:
        """The full environment of an Airflow process: clean base, shared file, native hosts/ports/paths."""
        return {**base_env(self.venv), **self.shared,
                **host_env(self.home, self.dags, self.ports, self.secrets, DB_USER), **self.extra_env, **extra}

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # --- start ------------------------------------------------------------------------------

    def __enter__(self) -> "Topology":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """:meth:`start_services`, then :meth:`start_airflow`; on any failure everything started is stopped."""
        try:
            self.start_services()
            self.start_airflow()
        except BaseException:
            self.stop()
            raise

    def _timed(self, name: str, t0: float) -> None:
        self.timings[name] = round(time.monotonic() - t0, 1)

    def start_services(self) -> None:
        """PostgreSQL (databases ``airflow`` and ``sensors``), Redis and Azurite."""
        self.logs.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        self.pg = start_postgres(self.state_dir / "postgres", self.ports.postgres, user=DB_USER,
                                 password=self.secrets["postgres_password"], durable=self.durable)
        for db in ("airflow", SENSORS_DB):
            create_database(self.pg, db)
        self._timed("postgres", t0)
        t0 = time.monotonic()
        self.procs["redis"] = self._start_redis()
        self.procs["azurite"] = services.start_azurite(self.state_dir / "azurite", self.ports.azurite,
                                                       log_path=self.log_path("azurite"))
        self._timed("redis+azurite", t0)

    def _start_redis(self) -> subprocess.Popen:
        """redis-server on 127.0.0.1 with its password in a 0600 config file (not on the command line)."""
        data = self.state_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        conf = data / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"bind 127.0.0.1\nport {self.ports.redis}\nrequirepass {self.secrets['redis_password']}\n"
                     f"dir {data}\nsave \"\"\nappendonly {'yes' if self.durable else 'no'}\ndaemonize no\n")
        proc = self._spawn("redis", ["redis-server", str(conf)], env=dict(os.environ))
        services.wait_for_port(self.ports.redis, timeout=30, proc=proc)
        return proc

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        """``cmd`` in its own session, output appended to its log, working directory ``<state>/work``."""
        work = self.state_dir / "work"
        work.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path(name), "ab")
        try:
            return subprocess.Popen(cmd, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()

    def _airflow(self, *args: str) -> None:
        """``airflow ARGS`` from the venv, to completion (output appended to ``logs/cli.log``)."""
        with open(self.log_path("cli"), "ab") as log:
            res = subprocess.run([str(self.venv / "bin" / "airflow"), *args], env=self.airflow_env(),
                                 cwd=self.state_dir, stdout=log, stderr=subprocess.STDOUT, timeout=600)
        if res.returncode:
            raise TopologyError(f"airflow {' '.join(args)} failed ({res.returncode}):\n{self.log_tail('cli')}")

    def start_airflow(self, timeout: float = 300) -> None:
        """Migrate the metadata DB, start the Airflow components and the workers, wait until all are healthy,
        the DAG is parsed and every worker is ready; then create the ``sensor_sql`` and ``sensor_blob``
        connections (in the metadata DB, encrypted with the Fernet key, as compose's airflow-init does).

        Raises ``TopologyError`` if a process exits, ``TimeoutError`` after ``timeout`` s per wait.
        """
        prepare_home(self.home, self.dags, self.secrets["admin_password"])
        t0 = time.monotonic()
        self._airflow("db", "migrate")
        self._timed("db migrate", t0)
        t0 = time.monotonic()
        for component in AIRFLOW_COMPONENTS:
            self.start_component(component)
        for worker in self.workers:
            self.start_worker(worker)
        self.wait_healthy(timeout)
        self._timed("airflow components healthy", t0)
        self.create_connections()

    def start_component(self, component: str) -> None:
        """Start (or restart, after a kill) ``component``, one of :data:`AIRFLOW_COMPONENTS`."""
        cmd = [str(self.venv / "bin" / "airflow"), component, *SKIP_SERVE_LOGS.get(component, [])]
        self.procs[component] = self._spawn(component, cmd, self.airflow_env())

    def start_worker(self, worker: str) -> None:
        """Start (or restart, after a kill) Celery worker ``worker``; it reports ``worker`` as its hostname."""
        cmd = [str(self.venv / "bin" / "airflow"), "celery", "worker", "--celery-hostname", f"{worker}@%h", "--skip-serve-logs"]
        self.procs[worker] = self._spawn(worker, cmd, self.airflow_env(TOPOLOGY_HOSTNAME=worker))

    def wait_healthy(self, timeout: float = 300) -> None:
        """Until the API reports the metadata DB, scheduler, triggerer and dag-processor healthy, the DAG
        is parsed and every worker's log says it is ready. ``TopologyError`` if a process exits first."""
        waiting: list[str] = ["api-server"]

        def check() -> bool | None:
            nonlocal waiting
            self.check_alive()
            try:
                health = self.api._request("GET", "/api/v2/monitor/health", auth=False, attempts=1)
            except OSError:
                return None
            waiting = [part for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                       if health.get(part, {}).get("status") != "healthy"]
            waiting += [w for w in self.workers if not WORKER_READY.search(self.log_tail(w, 200_000))]
            return None if waiting else True

        services.wait_until(check, timeout, 1, lambda: f"topology not healthy after {timeout:.0f}s, waiting for "
                            f"{', '.join(waiting)}; logs in {self.logs}")
        self.api.wait_for_dag(DAG_ID, timeout)

    def check_alive(self) -> None:
        """``TopologyError`` naming the first process that exited, with its log's tail."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise TopologyError(f"{name} exited with {proc.returncode}; {self.log_path(name)}:\n{self.log_tail(name)}")

    def create_connections(self) -> None:
        """``sensor_sql`` (odbc to the ``sensors`` database, psqlODBC) and ``sensor_blob`` (wasb to Azurite),
        replaced if present, through the REST API."""
        sql = {"connection_id": self.shared["BATCH_SCORING_SQL_CONN_ID"], "conn_type": "odbc", "host": self.pg.host,
               "port": self.pg.port, "schema": SENSORS_DB, "login": self.pg.user, "password": self.pg.password,
               "extra": json.dumps({"driver": PG_DRIVER, "placeholder": "?"})}
        blob = {"connection_id": self.shared["BATCH_SCORING_BLOB_CONN_ID"],
                **json.loads(blob_connection_json(self.blob_conn_str))}
        blob["extra"] = json.dumps(blob["extra"])
        for body in (sql, blob):
            existing = {c["connection_id"] for c in self.api._request("GET", "/api/v2/connections?limit=100")["connections"]}
            if body["connection_id"] in existing:
                self.api._request("DELETE", f"/api/v2/connections/{body['connection_id']}")
            self.api._request("POST", "/api/v2/connections", body)

    def adopt(self, name: str, proc: subprocess.Popen) -> None:
        """Stop ``proc`` (started in its own session) with the topology, e.g. the Azure ML emulator."""
        self.procs[name] = proc

    # --- stop ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything started: first the Airflow processes together (SIGTERM to each group; workers
        shut down warm, letting running tasks finish; SIGKILL after 30 s), then Azurite and Redis, then
        PostgreSQL. Safe to call twice."""
        services_last = [n for n in ("azurite", "redis") if n in self.procs]
        self._stop_together([n for n in self.procs if n not in services_last], 30)
        self._stop_together(services_last, 10)
        if self.pg is not None:
            stop_postgres(self.pg, "fast" if self.durable else "immediate")
            self.pg = None

    def _stop_together(self, names: list[str], timeout: float) -> None:
        procs = [self.procs.pop(n) for n in names]
        for proc in procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                services.stop(proc, timeout=1)  # SIGTERM again, SIGKILL to the group after 1 s

    def kill(self, name: str, sig: int) -> None:
        """Send ``sig`` to process ``name``'s whole group (the fault tests: e.g. SIGKILL a worker)."""
        os.killpg(self.procs[name].pid, sig)

    def stop_component(self, name: str, sig: int = signal.SIGTERM, timeout: float = 60) -> float:
        """Send ``sig`` to process ``name``'s group and wait until it has exited; it is then no longer one of
        ``procs`` (so :meth:`check_alive` does not count it) until started again. Returns the seconds taken."""
        t0 = time.monotonic()
        self.kill(name, sig)
        self.procs.pop(name).wait(timeout)
        return time.monotonic() - t0

    def restart(self, names: list[str], sig: int = signal.SIGTERM, grace: float = 10) -> float:
        """Stop processes ``names`` together as a container engine does (``sig`` to each group; SIGKILL to
        the group after ``grace`` s), then start each again (a service, Airflow component or worker).
        Returns the time (``time.monotonic()``) at which they were started again."""
        procs = {n: self.procs[n] for n in names}
        for proc in procs.values():
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        for proc in procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # what is left of the group (children of a leader that exited) goes with the container
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        restarted = time.monotonic()
        for name in names:
            if name == "redis":
                self.procs[name] = self._start_redis()
            elif name in self.workers:
                self.start_worker(name)
            elif name in AIRFLOW_COMPONENTS:
                self.start_component(name)
            else:
                raise ValueError(f"cannot restart {name!r}")
        return restarted
