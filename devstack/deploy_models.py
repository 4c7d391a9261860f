"""`python -m devstack.deploy_models DIR`: deploy trained models to the local blob store (Azurite).

Replaces every model in the ``models`` container with ``DIR/<device>/<sensor>/``
(model.joblib + manifest.json), starting Azurite on the demo port if it is not
running. Production deploys with `python -m batch_scoring.scoring.azure_setup` or any blob upload.
"""
from __future__ import annotations

import sys
from pathlib import Path

from devstack import demo, services
from batch_scoring.scoring.cli import input_path, make_parser, run

ENV = (("BATCH_SCORING_MODELS_CONTAINER", "models", "the blob container the models replace"),)


def main(argv=None) -> int:
    """The CLI (see the module docstring); returns 0, or 2 when DIR is missing (one ``error:`` line);
    exits with a usage error when DIR holds no models."""
    parser = make_parser("python -m devstack.deploy_models", __doc__, env=ENV)
    parser.add_argument("models", type=Path, help="folder written by `python -m batch_scoring.scoring.train`")
    args = parser.parse_args(argv)
    return run(_deploy, parser, args)


def _deploy(parser, args) -> int:
    input_path(args.models, "a models folder written by `python -m batch_scoring.scoring.train`", directory=True)
    if not any(args.models.glob("*/*/manifest.json")):
        parser.error(f"{args.models}: no <device>/<sensor>/manifest.json inside; train models first")

    from batch_scoring.config import settings
    from batch_scoring.hooks.blob_storage import BlobStore
    from devstack.world import deploy_models

    azurite = demo.ensure_azurite()
    try:
        s = settings()
        store = BlobStore.from_connection_string(services.azurite_connection_string(demo.AZURITE_PORT))
        store.ensure_containers(s.containers)
        names = deploy_models(store, s.models_container, args.models)
        print(f"deployed {len(names) // 2} models ({len(names)} files) to container '{s.models_container}'")
    finally:
        if azurite is not None:
            services.stop(azurite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
