"""`make prod-local`: the production topology as local processes, with a small simulated world, until Ctrl-C.

Builds the wheel and a clean venv with it (cached in ``.local/prod/venv`` while
the source and lock are unchanged), starts :class:`devstack.topology.Topology`
in ``.local/prod`` (PostgreSQL, Redis, Azurite, Airflow's api-server,
scheduler, dag-processor, triggerer, two Celery workers), simulates a history
day and a scoring day ending at the current hour into the ``sensors`` database
on PostgreSQL, aggregates, trains and deploys one model per device/sensor,
backfills the last hours, unpauses the DAG and prints where to look.
"""
from __future__ import annotations

import datetime as dt
import signal
import sys
import time
from pathlib import Path

from devstack.services import REPO
from devstack.topology import DAG_ID, Topology

STATE = REPO / ".local" / "prod"


def say(message: str) -> None:
    """One progress line, stamped with the local wall-clock time."""
    print(f"[prod-local {time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_world(topo: Topology, models_dir: Path, *, devices: int, sensors: int, end: dt.datetime,
               scoring_hours: int = 24, reading_seconds: float = 30.0, seed: int = 7):
    """Simulate, aggregate, train and deploy into the topology's ``sensors`` database and Azurite, as a data
    team's loaders would (from this checkout): a normal history day before a scoring period of
    ``scoring_hours`` ending at ``end`` (naive UTC). Returns the :class:`devstack.world.World`."""
    from batch_scoring.config import settings
    from batch_scoring.hooks.blob_storage import BlobStore
    from batch_scoring.sensor_db.schema import connect
    from devstack.world import simulate_world

    scoring = (end - dt.timedelta(hours=scoring_hours), end)
    history = (scoring[0] - dt.timedelta(days=1), scoring[0])
    conn = connect(topo.sensors_odbc)
    try:
        return simulate_world(conn, BlobStore.from_connection_string(topo.blob_conn_str), settings(), models_dir,
                              devices=devices, sensors=sensors, history=history, scoring=scoring,
                              reading_seconds=reading_seconds, seed=seed)
    finally:
        conn.close()


def main(argv=None) -> int:
    """`make prod-local`; returns 0 after Ctrl-C (or SIGTERM), 1 if a process of the topology died."""
    import argparse

    from devstack.wheel_venv import cached_venv
    from devstack.world import current_hour

    parser = argparse.ArgumentParser(prog="python -m devstack.prod_local", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=5)
    parser.add_argument("--sensors", type=int, default=3)
    parser.add_argument("--hours", type=int, default=3, help="hourly intervals to backfill before the current hour")
    parser.add_argument("--backend", choices=("local", "azureml"), default="local",
                        help="azureml: score through the local Azure ML emulator (devstack/topology_aml.py), "
                             "jobs polled by the triggerer")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop everything on kill too

    t0 = time.monotonic()
    say("building the wheel and its venv (apache-airflow, celery and postgres providers, the wheel; cached)")
    venv = cached_venv(STATE)
    say(f"venv ready in {time.monotonic() - t0:.0f} s: {venv}")
    topo = Topology(STATE, venv)
    try:
        em = None
        if args.backend == "azureml":
            from devstack.topology_aml import start_emulator

            topo.start_services()
            em = start_emulator(topo, step_seconds=1.0)
            topo.start_airflow()
        else:
            topo.start()
        say(f"topology up in {time.monotonic() - t0:.0f} s ({topo.timings}); logs: {topo.logs}/<process>.log")
        end = current_hour()
        world = load_world(topo, STATE / "models", devices=args.devices, sensors=args.sensors, end=end)
        say(f"world: {world.readings:,} readings, {world.windows:,} aggregates in PostgreSQL ({topo.sensors_odbc.split(';Uid')[0]}), "
            f"{world.models} models deployed to Azurite")
        topo.api.set_paused(DAG_ID, True)
        start = end - dt.timedelta(hours=args.hours)
        topo.api.create_backfill(DAG_ID, start, end - dt.timedelta(hours=1))
        topo.api.unpause(DAG_ID)
        say(f"backfill of {start:%H:%M}..{end:%H:%M} UTC created and {DAG_ID} unpaused: two Celery workers score it")
        print(f"\n  Airflow UI   {topo.url}   login admin, password: admin_password in {STATE / 'secrets.json'}\n"
              f"               (python3 -c \"import json; print(json.load(open('{STATE / 'secrets.json'}'))['admin_password'])\")\n"
              f"  DAG          {topo.url}/dags/{DAG_ID}  (grid: runs; a score task's details show its worker as hostname)\n"
              f"  processes    {', '.join(topo.procs)} + PostgreSQL on 127.0.0.1:{topo.ports.postgres}\n"
              + (f"  Azure ML     emulator {em.url}: jobs in {em.state_dir / 'ledger.jsonl'}, their logs in "
                 f"{em.state_dir / 'jobs'}; waits polled by the triggerer (in each score task's Logs tab, files "
                 f"{topo.home / 'logs'}/.../attempt=N.log.trigger.<triggerer id>.log)\n" if em else "")
              +
              f"  Ctrl-C stops them all.\n", flush=True)
        while True:
            topo.check_alive()
            time.sleep(2)
    except KeyboardInterrupt:
        say("Ctrl-C: stopping")
        return 0
    except RuntimeError as exc:
        say(f"stopping: {exc}")
        return 1
    finally:
        topo.stop()
        say("stopped")


if __name__ == "__main__":
    sys.exit(main())
