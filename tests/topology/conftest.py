"""One production topology for every test in tests/topology/ (a session fixture: it takes 2-3 minutes to start).

The wheel is built and installed into a clean venv with apache-airflow and the celery and postgres providers
(devstack.wheel_venv); devstack.topology.Topology then starts PostgreSQL (metadata DB and the ``sensors``
aggregates over ODBC), Redis, Azurite, the Azure ML emulator (devstack.topology_aml: the code asset staged by
the *installed* package), api-server, scheduler, dag-processor, triggerer and two Celery workers, with the
settings of compose/airflow.env. The DAG's default backend stays ``local``; a run's ``backend`` param chooses
``azureml`` (jobs in the emulator, waits deferred to the triggerer).

One world is loaded, as a data team's loaders would: 2 devices x 2 sensors, :data:`HOURS` hourly intervals.
Each test owns its own intervals (:data:`SLOTS`), so the modules can run in any order and never reprocess
another's interval by accident. The DAG is unpaused once; every scoring happens in a backfill
(tests/topology/backfills.py).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

import pytest

END = dt.datetime(2026, 3, 2, 22)
DEVICES, SENSORS = 2, 2
TARGETS = DEVICES * SENSORS
#: test -> (first hour of the world's scoring period, intervals). Disjoint.
SLOTS = {"celery": (0, 3), "faults": (3, 8), "faults-azureml": (11, 2),
         "aml-backfill": (13, 3), "aml-triggerer": (16, 3), "aml-throttled": (19, 2), "aml-queued": (21, 1)}
HOURS = 22
#: Azure ML waits: poll every 2 s; a job's timeout 900 s (four jobs' commands at once took 60-100 s on a loaded
#: 2-core machine, so a short one would time out healthy jobs; the stuck-Queued case sets its own on the
#: workers); Airflow retries after 5 s.
SETTINGS = {"BATCH_SCORING_AZUREML_POLL_SECONDS": "2", "BATCH_SCORING_AZUREML_TIMEOUT_SECONDS": "900",
            "BATCH_SCORING_RETRY_DELAY_SECONDS": "5"}
#: Sizing only (compose/airflow.env's value is 300): a worker killed while holding a reserved Celery message
#: leaves that task ``queued`` until this timeout (Redis redelivers only after the visibility timeout), so each
#: kill case lasts about this long plus the check interval; compose's 300 s measured 415-423 s per case
#: (RELIABILITY.md, "Production topology"). 90 s keeps the suite short and still exercises the path.
OVERRIDES = {"AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "90"}


def slot(name: str) -> list[dt.datetime]:
    """The interval starts (naive UTC) test ``name`` owns."""
    first, n = SLOTS[name]
    begin = END - dt.timedelta(hours=HOURS)
    return [begin + dt.timedelta(hours=first + i) for i in range(n)]


@dataclasses.dataclass
class Running:
    """The session's topology: its processes (``topo``), the emulator (``em``) and the loaded world."""
    topo: object
    em: object
    world: object


@pytest.fixture(scope="session")
def topology(tmp_path_factory) -> Running:
    """The running topology with the world loaded and the DAG unpaused; stopped (emulator too) afterwards.
    Its state (PostgreSQL, logs) in a fresh 0755 temp dir (PostgreSQL runs as its own user), removed after."""
    from devstack.prod_local import load_world
    from devstack.topology import DAG_ID, Topology
    from devstack.topology_aml import start_emulator
    from devstack.wheel_venv import TOPOLOGY_EXTRAS, build_wheel, install_venv

    assert sum(n for _, n in SLOTS.values()) == HOURS
    state = Path(tempfile.mkdtemp(prefix="prod-topology-"))
    state.chmod(0o755)
    t0 = time.monotonic()
    try:
        build = tmp_path_factory.mktemp("topology-venv")
        venv = install_venv(build / "venv", build_wheel(build / "dist"), TOPOLOGY_EXTRAS)
        topo = Topology(state, venv, durable=False, extra_env=SETTINGS, overrides=OVERRIDES)
        topo.timings["wheel+venv"] = round(time.monotonic() - t0, 1)
        try:
            topo.start_services()
            em = start_emulator(topo, step_seconds=0.3, backend=None)
            topo.start_airflow()
            topo.timings["total start-up"] = round(time.monotonic() - t0, 1)
            print(f"\ntopology start-up: {topo.timings}")
            world = load_world(topo, state / "models", devices=DEVICES, sensors=SENSORS, end=END,
                               scoring_hours=HOURS, reading_seconds=60, seed=13)
            assert world.models == TARGETS
            topo.api.unpause(DAG_ID)
            yield Running(topo, em, world)
            t1 = time.monotonic()
        finally:
            topo.stop()
        print(f"\ntopology stop: {time.monotonic() - t1:.0f} s")
    finally:
        shutil.rmtree(state, ignore_errors=True)
