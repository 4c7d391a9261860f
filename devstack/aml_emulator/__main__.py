"""``python -m devstack.aml_emulator``: serve one emulated Azure ML workspace over https on 127.0.0.1.

Example::

    AML_EMULATOR_AZURITE='UseDevelopmentStorage=true' python -m devstack.aml_emulator --port 8443 \\
        --state-dir /tmp/aml --datastore scoring_models=models --datastore scoring_aggregates=aggregates \\
        --datastore scoring_predictions=predictions --code batch-scoring-code:1=/tmp/code \\
        --environment batch-scoring-env:1 --compute cpu-scoring=4

The Azurite connection string is read from ``AML_EMULATOR_AZURITE`` (or ``--azurite``), so it stays off
the process list. Without ``--cert``/``--key`` a self-signed certificate is made in ``<state-dir>/tls``.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def _pairs(values: list[str], what: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key or not val:
            raise SystemExit(f"--{what} {value!r}: expected NAME=VALUE")
        out[key] = val
    return out


def _ref(ref: str, what: str) -> tuple[str, str]:
    name, sep, version = ref.removeprefix("azureml:").partition(":")
    if not sep or not name or not version:
        raise SystemExit(f"--{what} {ref!r}: expected name:version")
    return name, version


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, build the workspace and cluster, and serve until SIGTERM."""
    import uvicorn

    from devstack.aml_emulator.app import build_app
    from devstack.aml_emulator.certs import make_certificate
    from devstack.aml_emulator.cluster import Cluster
    from devstack.aml_emulator.state import Workspace
    from devstack.aml_emulator import RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE

    p = argparse.ArgumentParser(prog="python -m devstack.aml_emulator", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--azurite", default=os.environ.get("AML_EMULATOR_AZURITE"),
                   help="Azurite connection string (default: $AML_EMULATOR_AZURITE)")
    p.add_argument("--datastore", action="append", default=[], help="NAME=CONTAINER (repeatable)")
    p.add_argument("--code", action="append", default=[], help="name:version=FOLDER (repeatable)")
    p.add_argument("--environment", action="append", default=[], help="name:version (repeatable)")
    p.add_argument("--compute", action="append", default=[], help="NAME=NODES (repeatable)")
    p.add_argument("--subscription", default=SUBSCRIPTION)
    p.add_argument("--resource-group", default=RESOURCE_GROUP)
    p.add_argument("--workspace", default=WORKSPACE)
    p.add_argument("--step-seconds", type=float, default=0.2)
    p.add_argument("--cert", type=Path)
    p.add_argument("--key", type=Path)
    args = p.parse_args(argv)
    if not args.azurite:
        raise SystemExit("no Azurite connection string: --azurite or AML_EMULATOR_AZURITE")
    cert, key = (args.cert, args.key) if args.cert and args.key else make_certificate(args.state_dir / "tls")
    codes = {_ref(ref, "code"): Path(folder).resolve() for ref, folder in _pairs(args.code, "code").items()}
    for (name, version), folder in codes.items():
        if not folder.is_dir():
            raise SystemExit(f"--code {name}:{version}: {folder} is not a folder")
    ws = Workspace(args.subscription, args.resource_group, args.workspace, _pairs(args.datastore, "datastore"), codes,
                   {_ref(e, "environment") for e in args.environment},
                   {k: int(v) for k, v in _pairs(args.compute, "compute").items()}, args.state_dir)
    url = f"https://127.0.0.1:{args.port}"
    app = build_app(ws, Cluster(ws, args.azurite, step_seconds=args.step_seconds), url)
    uvicorn.run(app, host="127.0.0.1", port=args.port, ssl_certfile=str(cert), ssl_keyfile=str(key),
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
