"""The physical floor: the work itself, with no blob store and no orchestration around it (issue 14).

``python -m bench.physical --sql-odbc ODBC --interval KEY --targets-file F --models-dir D``

One plain process, one thread: read the interval's aggregates from SQL through the same ODBC path as the
DAG's snapshot task (``sensor_db.schema.connect`` + ``sensor_db.reads.read_aggregates``), load every
target's model from local files (integrity-checked by the production loader), score every target with
``scoring.score.score_unit`` (the production code) and write the predictions as one part file (receipts
in its footer) to a local folder. That is what a run cannot avoid doing; the blob-store floor (``bench.floor``) adds the model
downloads and the uploads, the DAG adds Airflow. Interpreter start-up and imports are excluded (reported
apart), as for ``bench.floor``. Prints one JSON line: ``targets``, ``ok``, ``rows``, ``wall`` and ``cpu``
(seconds), ``peak_rss`` (bytes), ``import_seconds``, ``phases`` (seconds: ``sql_read``,
``score_and_write``).
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

T_IMPORT = time.perf_counter()

from batch_scoring.scoring.cli import make_parser  # noqa: E402
from bench.procs import own_usage  # noqa: E402
from batch_scoring.scoring.layout import Interval  # noqa: E402
from batch_scoring.scoring.score import score_unit  # noqa: E402
from batch_scoring.sensor_db.reads import read_aggregates  # noqa: E402
from batch_scoring.sensor_db.schema import connect  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - T_IMPORT


def measure(sql_odbc: str, interval: Interval, targets: list[str], models_dir: Path, out_dir: Path) -> dict:
    """Read, score and write one interval (see the module docstring); returns the JSON line's fields."""
    phases = {}
    w0, c0 = time.perf_counter(), own_usage()[0]
    t = time.perf_counter()
    conn = connect(sql_odbc)
    try:
        frame = read_aggregates(conn, interval.start, interval.end)
    finally:
        conn.close()
    phases["sql_read"] = time.perf_counter() - t
    t = time.perf_counter()
    receipts = score_unit(frame, models_dir, out_dir, targets)
    phases["score_and_write"] = time.perf_counter() - t
    return {"targets": len(targets), "ok": sum(r["status"] == "ok" for r in receipts), "rows": len(frame),
            "wall": time.perf_counter() - w0, "cpu": own_usage()[0] - c0, "peak_rss": own_usage()[1],
            "import_seconds": IMPORT_SECONDS, "phases": phases}


def main(argv=None) -> int:
    """Prints the JSON line; returns 0 if every target scored ok, else 1."""
    parser = make_parser("python -m bench.physical", __doc__.splitlines()[0])
    parser.add_argument("--sql-odbc", required=True, help="ODBC connection string of the aggregates database")
    parser.add_argument("--interval", required=True, help="interval key, e.g. 20260101T0000Z_20260102T0000Z")
    parser.add_argument("--targets-file", required=True, type=Path, help="one device/sensor per line")
    parser.add_argument("--models-dir", required=True, type=Path, help="<device>/<sensor>/model.joblib + manifest.json")
    parser.add_argument("--out-dir", type=Path, help="where predictions go (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    targets = args.targets_file.read_text().split()
    interval = Interval.from_key(args.interval)
    if args.out_dir:
        out = measure(args.sql_odbc, interval, targets, args.models_dir, args.out_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-physical-") as tmp:
            out = measure(args.sql_odbc, interval, targets, args.models_dir, Path(tmp))
    print(json.dumps(out))
    return 0 if out["ok"] == len(targets) else 1


if __name__ == "__main__":
    sys.exit(main())
