"""A scoring unit's part file: its targets' prediction rows and, in the parquet footer, their receipts.

One parquet file per scoring unit (``part-<unit id>.parquet``, named by
``scoring.layout.part_name``) in the interval's folder of the predictions
dataset. Rows are sorted by ``device_id``, ``sensor_id``, ``window_start``, so
one target's rows sit together. The footer's key-value metadata holds
``batch_scoring.receipts``: a JSON list with one receipt per target of the unit,
failed targets included (a unit whose targets all failed writes a zero-row file
so that its receipts exist). A reader gets the receipts from the footer alone
(``read_receipts``: a few range reads of a blob, not the rows).

A receipt in the footer cannot hold the hash of the file it is part of:
``output_sha256``/``output_md5`` are absent there (``None``); the writer returns
them beside the receipts. ``rows_sha256`` (``digest``/``rows_digest``) lets a reader tell a
target's rows altered after scoring from the rows written.

Pure pyarrow and the standard library: the scoring job and the collector both use it.
"""
from __future__ import annotations

import hashlib
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

from batch_scoring.scoring.atomic import write_atomic
from batch_scoring.scoring.layout import part_name

RECEIPTS_KEY = b"batch_scoring.receipts"
FILE_HASH_KEYS = ("output_sha256", "output_md5")  # of the whole file: returned by the writer, never in its footer


def sort_key(receipt: dict) -> tuple[str, str, str]:
    """The order of receipts in a footer and of targets in the rows: device_id, sensor_id (``""`` when the
    target did not parse), then the target as given."""
    return (receipt.get("device_id") or "", receipt.get("sensor_id") or "", str(receipt.get("target")))


def digest(texts, arrays) -> str:
    """sha256 (hex) over ``texts`` (UTF-8, each ended by NUL) then ``arrays`` (numpy, their bytes, each ended by NUL).

    The one definition of a target's ``rows_sha256``: ``rows_digest`` feeds it a table, the scoring
    step the arrays it wrote the table from (cheap: no conversion per column).
    """
    import numpy as np

    h = hashlib.sha256()
    for text in texts:
        h.update(str(text).encode() + b"\0")
    for array in arrays:
        h.update(np.ascontiguousarray(array).tobytes() + b"\0")
    return h.hexdigest()


def rows_digest(table: pa.Table) -> str:
    """A target's ``rows_sha256`` from its rows: ``digest`` over the distinct values of each text column
    (sorted, joined by U+001F; a target's ids and model hash are one value each), then each other column
    in order: timestamps as little-endian int64 µs, integers int64, floats float64, booleans uint8.

    Raises ``TypeError`` for a column of another type.
    """
    import numpy as np
    import pyarrow.compute as pc

    texts, arrays = [], []
    for name in table.column_names:
        column, t = table[name], table[name].type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            texts.append("\x1f".join(sorted(str(v) for v in pc.unique(column).to_pylist())))
        elif pa.types.is_timestamp(t):
            arrays.append(column.cast(pa.timestamp("us")).to_numpy().astype("<M8[us]", copy=False))
        elif pa.types.is_boolean(t):
            arrays.append(column.to_numpy().astype("u1"))
        elif pa.types.is_integer(t):
            arrays.append(column.to_numpy().astype("<i8", copy=False))
        elif pa.types.is_floating(t):
            arrays.append(column.to_numpy().astype("<f8", copy=False))
        else:
            raise TypeError(f"rows_digest: column {name!r} has type {t}, not text, a timestamp, a boolean or a number")
    return digest(texts, arrays)


def part_bytes(tables: list[pa.Table], receipts: list[dict], schema: pa.Schema) -> bytes:
    """The part file's bytes: ``tables`` (each target's rows, ``schema``) concatenated in the given order,
    zstd-compressed, with ``receipts`` (without the file hashes) as JSON in the footer.

    ``receipts`` are written sorted by ``sort_key``, as sorted compact JSON; the caller gives the tables in
    that order. Deterministic: the same rows and receipts give the same bytes.
    """
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    footer = [{k: v for k, v in r.items() if k not in FILE_HASH_KEYS} for r in sorted(receipts, key=sort_key)]
    table = table.replace_schema_metadata({RECEIPTS_KEY: json.dumps(footer, sort_keys=True, separators=(",", ":"))})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_part(path, tables: list[pa.Table], receipts: list[dict], schema: pa.Schema) -> dict:
    """Write ``part_bytes`` to ``path`` atomically; returns ``{"output_sha256", "output_md5"}`` of the file.

    The MD5 is what blob storage records for an upload, so a listing can confirm the blob without a
    download. Raises ``OSError`` when the folder cannot be written.
    """
    data = part_bytes(tables, receipts, schema)
    write_atomic(path, data)
    return file_hashes(data)


def file_hashes(data: bytes) -> dict:
    """``{"output_sha256", "output_md5"}`` (hex) of a part file's bytes (``FILE_HASH_KEYS``; the MD5 is what
    blob storage lists for an upload)."""
    return {"output_sha256": hashlib.sha256(data).hexdigest(),
            "output_md5": hashlib.md5(data, usedforsecurity=False).hexdigest()}


def read_receipts(source) -> list[dict]:
    """The receipts in a part file's footer (a list of dicts, sorted by ``sort_key``).

    ``source``: a path, bytes, or a seekable binary file (``BlobStore.open_reader``: only the footer is
    read). Raises ``ValueError`` naming what is wrong when the file is not parquet or its footer holds no
    ``batch_scoring.receipts`` JSON list.
    """
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    try:
        meta = pq.read_metadata(source).metadata or {}
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"not a readable parquet file ({' '.join(str(exc).split())})") from None
    raw = meta.get(RECEIPTS_KEY)
    if raw is None:
        raise ValueError(f"no {RECEIPTS_KEY.decode()} in the parquet footer (not a part file of a scoring unit)")
    try:
        receipts = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{RECEIPTS_KEY.decode()} in the parquet footer is not JSON ({exc})") from None
    if not isinstance(receipts, list) or not all(isinstance(r, dict) and "target" in r for r in receipts):
        raise ValueError(f"{RECEIPTS_KEY.decode()} in the parquet footer is not a list of receipts")
    return receipts


def _target_ids(table: pa.Table):
    """Each row's ``device/sensor`` (text of either width)."""
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(table["device_id"].cast(pa.string()), table["sensor_id"].cast(pa.string()), "/")


def without_targets(data: bytes, drop) -> tuple[str | None, bytes | None]:
    """An earlier part file rewritten without the rows and receipts of the targets in ``drop``.

    For a run that rescored only some targets (a ``targets`` selection): an earlier unit's file that
    also holds targets this run left out keeps those, and only those. Returns ``(name, bytes)``: the
    file of the remaining targets, named by them (``layout.part_name``: a file's name always follows
    from the targets in its footer), or ``(None, None)`` when no target remains. Rows, their order and
    the remaining receipts are unchanged (their ``rows_sha256`` still holds) but for ``output``, the new name. Raises ``ValueError``
    (``read_receipts``) for a file that is not a part file.
    """
    import pyarrow.compute as pc

    drop = set(drop)
    receipts = read_receipts(data)
    keep = [r for r in receipts if r["target"] not in drop]
    if not keep:
        return None, None
    name = part_name([r["target"] for r in keep])
    keep = [{**r, "output": name} if r.get("output") else r for r in keep]  # a receipt names its file
    table = pq.read_table(io.BytesIO(data))
    ids = _target_ids(table)
    table = table.filter(pc.invert(pc.is_in(ids, value_set=pa.array(sorted(drop), pa.string()))))
    return name, part_bytes([table.replace_schema_metadata(None)], keep, table.schema.remove_metadata())


def fail_targets(data: bytes, reasons: dict) -> bytes:
    """A part file with the targets of ``reasons`` (target -> why) turned into failed ones: their rows
    removed, their receipts ``status: "failed"`` with ``error`` = the reason (and no rows, anomalies,
    output or ``rows_sha256``). Rows of targets without an ``ok`` receipt in the footer go too (nothing
    vouches for them). The other targets' rows and receipts are unchanged; the name stays (the unit's targets are the
    same). For a scoring unit whose file failed a check after it was written.

    Raises ``ValueError`` (``read_receipts``) for a file that is not a part file, and ``KeyError``
    naming a target of ``reasons`` the footer does not hold.
    """
    import pyarrow.compute as pc

    receipts = {r["target"]: r for r in read_receipts(data)}
    unknown = sorted(set(reasons) - set(receipts))
    if unknown:
        raise KeyError(f"not in the part file's footer: {', '.join(unknown)}")
    for target, why in reasons.items():
        receipts[target] = {**receipts[target], "status": "failed", "error": str(why), "rows_out": 0, "anomalies": 0,
                            "anomaly_window_starts": [], "output": None, "rows_sha256": None}
    table = pq.read_table(io.BytesIO(data))
    ids = _target_ids(table)
    vouched = sorted(t for t, r in receipts.items() if r.get("status") == "ok")  # after the update above
    table = table.filter(pc.is_in(ids, value_set=pa.array(vouched, pa.string())))
    return part_bytes([table.replace_schema_metadata(None)], list(receipts.values()), table.schema.remove_metadata())
