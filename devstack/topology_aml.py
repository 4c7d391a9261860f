"""The Azure ML emulator as a process of the production topology (``make prod-local --backend azureml``).

    topo = Topology(state_dir, venv)
    topo.start_services()                    # PostgreSQL, Redis, Azurite
    em = start_emulator(topo)                # adopted: stopped with the topology
    topo.start_airflow()                     # every Airflow process reaches Azure ML at em.url

:func:`start_emulator` stages the code asset with the *installed* package
(``batch_scoring.scoring.azure_setup.stage_code`` run by the topology venv's
Python), registers the datastores (over the topology's Azurite containers),
environment and compute that the DAG's settings name (read in the topology's
own environment), starts ``devstack.aml_emulator`` and puts into
``topo.extra_env`` what every Airflow process needs: ``AIRFLOW_CONN_<AZUREML
CONN ID>`` (the emulator's custom cloud), ``REQUESTS_CA_BUNDLE`` (its
certificate), ``BATCH_SCORING_BACKEND=azureml`` (unless ``backend=None``) and deferrable waits
(``AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE`` / ``BATCH_SCORING_AZUREML_DEFERRABLE``
true), so job polling happens in the separate triggerer process.

The emulator itself runs on this checkout's interpreter (it needs FastAPI and
uvicorn, which the product's wheel does not); so do the jobs' commands, as on a
node whose environment has the scoring stack but only the code snapshot of the
code asset (``devstack/aml_emulator/cluster.py``).
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from devstack import aml_emulator, services
from devstack.topology import Topology, TopologyError

#: Run by the topology venv's Python, in the Airflow processes' environment: stage the code asset from the
#: installed package and print the Azure ML names the DAG's settings use.
_STAGE = """
import json, sys
from batch_scoring.config import settings
from batch_scoring.scoring.azure_setup import stage_code
s = settings()
stage_code(sys.argv[1])
print(json.dumps({"datastores": {s.azureml_aggregates_datastore: s.aggregates_container,
                                 s.azureml_models_datastore: s.models_container,
                                 s.azureml_predictions_datastore: s.predictions_container},
                  "code": s.azureml_code.removeprefix("azureml:"),
                  "environment": s.azureml_environment.removeprefix("azureml:"),
                  "compute": s.azureml_compute, "conn_id": s.azureml_conn_id}))
"""


def azureml_env(backend: str | None = "azureml") -> dict[str, str]:
    """Deferrable Azure ML waits (polled in the triggerer) and, unless ``backend`` is None, the DAG's default
    backend (``BATCH_SCORING_BACKEND``; a run's ``backend`` param still chooses per run)."""
    return {"AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True", "BATCH_SCORING_AZUREML_DEFERRABLE": "true",
            **({"BATCH_SCORING_BACKEND": backend} if backend else {})}


def stage_installed_code(topo: Topology, dest: Path) -> dict:
    """Stage the code asset into ``dest`` with the topology venv's installed package; returns the names the
    settings use (``datastores`` name -> container, ``code``, ``environment``, ``compute``, ``conn_id``).

    :raises TopologyError: when the venv's Python fails (its output in the message).
    """
    env = topo.airflow_env(**azureml_env())
    res = subprocess.run([str(topo.venv / "bin" / "python"), "-c", _STAGE, str(dest)], env=env,
                         capture_output=True, text=True, timeout=120)
    if res.returncode:
        raise TopologyError(f"staging the code asset from {topo.venv} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def start_emulator(topo: Topology, step_seconds: float = 0.2, nodes: int = 4,
                   backend: str | None = "azureml") -> aml_emulator.Emulator:
    """Start the emulator after ``topo.start_services()`` and before ``topo.start_airflow()``; returns it.

    :param backend: the DAG's default backend in every Airflow process (``azureml``), or None to keep the
        shared file's (``local``) and choose ``azureml`` per run with the ``backend`` param (the tests).
    :param step_seconds: how long each short job state lasts in the emulator (its ``--step-seconds``).
    :param nodes: nodes of the compute (jobs running at once; more wait in ``Queued``).
    :raises TopologyError: staging failed; ``TimeoutError``: the emulator did not answer in 30 s.
    """
    state = topo.state_dir / "aml-emulator"
    state.mkdir(parents=True, exist_ok=True)
    names = stage_installed_code(topo, state / "code")
    em = aml_emulator.start(services.free_port(), state / "state", topo.blob_conn_str,
                            datastores=names["datastores"], codes={names["code"]: state / "code"},
                            environments=(names["environment"],), computes={names["compute"]: nodes},
                            step_seconds=step_seconds)
    topo.adopt("aml-emulator", em.proc)
    topo.extra_env.update(azureml_env(backend))
    topo.extra_env[f"AIRFLOW_CONN_{names['conn_id'].upper()}"] = em.connection_json()
    topo.extra_env["REQUESTS_CA_BUNDLE"] = str(em.ca_bundle)
    return em
