"""`python -m devstack.airflow_cli ARGS`: the airflow CLI in the demo's environment.

For example, with `make airflow` running in another shell:
    .venv/bin/python -m devstack.airflow_cli dags unpause batch_scoring
    .venv/bin/python -m devstack.airflow_cli backfill create --dag-id batch_scoring \\
        --from-date 2018-08-29T01:00:00 --to-date 2018-08-29T02:00:00
"""
from __future__ import annotations

import os
import sys

from devstack import demo
from devstack.standalone import AIRFLOW, api_port_env


def main() -> int:
    """Replace this process by ``airflow ARGS`` in the demo's environment (does not return)."""
    env = {**os.environ, **demo.demo_env(), **api_port_env(demo.AIRFLOW_PORT)}
    os.execve(AIRFLOW, [AIRFLOW, *sys.argv[1:]], env)


if __name__ == "__main__":
    sys.exit(main())
