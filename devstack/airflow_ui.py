"""`make airflow`: Azurite + `airflow standalone` on the demo's data and runs, until Ctrl-C."""
from __future__ import annotations

import sys

from devstack import demo, services
from devstack.standalone import AirflowApi, start_standalone, stop_standalone


def main() -> int:
    """`make airflow`: run until Ctrl-C or the standalone exits, then stop what it started; returns 0."""
    demo.LOCAL.mkdir(exist_ok=True)
    azurite = demo.ensure_azurite()
    env = demo.demo_env()
    proc = start_standalone(env, demo.AIRFLOW_PORT, demo.AIRFLOW_HOME / "standalone.log")
    try:
        AirflowApi(demo.AIRFLOW_PORT).wait_healthy()
        print(f"Airflow UI: http://localhost:{demo.AIRFLOW_PORT}  (login admin / admin)")
        print(f"Logs: {demo.AIRFLOW_HOME / 'standalone.log'}. Ctrl-C stops Airflow and Azurite.", flush=True)
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_standalone(proc)
        if azurite is not None:
            services.stop(azurite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
