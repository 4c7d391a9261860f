"""The floor: the whole interval scored by one plain Python process, one thread (so one core).

``python -m bench.floor --connection-string CS --interval KEY --targets-file F``

Same blob store and same work as the DAG's score step, with nothing around it:
download the interval's snapshot blob once, download each target's model and
manifest, score every target with ``scoring.score.score_tables`` (the
production code), write and upload one part file per target (what the DAG
writes with one target per unit: the receipt in the file's footer).
Interpreter start-up
and imports are excluded (reported apart): the DAG's task processes are
forked from a scheduler that preloaded them. Prints one JSON line.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time

T_IMPORT = time.perf_counter()

import pandas as pd  # noqa: E402

from bench.procs import own_usage  # noqa: E402

from batch_scoring.hooks.blob_storage import BlobStore  # noqa: E402
from batch_scoring.scoring.layout import (SNAPSHOT_FILE, model_blob, model_manifest_blob, part_blob,  # noqa: E402
                                          part_name, snapshot_blob)
from batch_scoring.scoring.part_file import write_part  # noqa: E402
from batch_scoring.scoring.score import OUTPUT_SCHEMA, score_tables  # noqa: E402
from batch_scoring.scoring.cli import make_parser  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - T_IMPORT


def main(argv=None) -> int:
    """The floor run (see the module docstring); prints one JSON line and returns 0 if every target scored ok, else 1."""
    parser = make_parser("python -m bench.floor", __doc__.splitlines()[0])
    parser.add_argument("--connection-string", required=True)
    parser.add_argument("--interval", required=True)
    parser.add_argument("--targets-file", required=True)
    parser.add_argument("--aggregates-container", default="aggregates")
    parser.add_argument("--models-container", default="models")
    parser.add_argument("--out-container", default="floor-predictions")
    args = parser.parse_args(argv)
    targets = open(args.targets_file).read().split()
    from pathlib import Path

    store = BlobStore.from_connection_string(args.connection_string)
    store.ensure_containers([args.out_container])
    phases = {}
    w0, c0 = time.perf_counter(), own_usage()[0]
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        snap = store.download_file(args.aggregates_container, snapshot_blob(args.interval), tmp / SNAPSHOT_FILE)
        frame = pd.read_parquet(snap)
        phases["snapshot"] = time.perf_counter() - t
        t = time.perf_counter()
        for target in targets:
            for name in (model_blob(target), model_manifest_blob(target)):
                store.download_file(args.models_container, name, tmp / "models" / name)
        phases["download_models"] = time.perf_counter() - t
        t = time.perf_counter()
        results = score_tables(frame, tmp / "models", targets)
        receipts = [receipt for receipt, _ in results]
        for receipt, table in results:
            if receipt["device_id"] is not None:
                write_part(tmp / "out" / part_name([receipt["target"]]), [table] if table is not None else [],
                           [{**receipt, "output": part_name([receipt["target"]]) if table is not None else None}],
                           OUTPUT_SCHEMA)
        phases["score"] = time.perf_counter() - t
        t = time.perf_counter()
        for target in targets:
            store.upload_file(args.out_container, part_blob(args.interval, [target]), tmp / "out" / part_name([target]))
        phases["upload"] = time.perf_counter() - t
    wall, cpu = time.perf_counter() - w0, own_usage()[0] - c0
    ok = sum(r["status"] == "ok" for r in receipts)
    peak = own_usage()[1]
    print(json.dumps({"targets": len(targets), "ok": ok, "wall": wall, "cpu": cpu, "peak_rss": peak,
                      "import_seconds": IMPORT_SECONDS, "phases": phases}))
    return 0 if ok == len(targets) else 1


if __name__ == "__main__":
    sys.exit(main())
