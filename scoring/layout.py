"""Where everything lives: the interval key, ``Interval``, and every blob and file name.

The one home of the storage layout; no other module builds a blob name or a
path inside a models, aggregates or predictions folder. Container-relative
names (the container itself comes from the deployment's settings)::

    aggregates/<interval>/aggregates.parquet                 snapshot_blob
    predictions/<folder>/                                    interval_folder = interval_prefix
    predictions/<folder>/part-<unit id>.parquet              part_blob (part_name below the folder)
    predictions/<folder>/_manifest.json                      manifest_blob
    predictions/<folder>/_report.html, _heatmap.png          report_blob, heatmap_blob
    predictions/<folder>/_stale.json                         stale_marker_blob
    models/<device>/<sensor>/model.joblib, manifest.json     model_blob, model_manifest_blob

``<folder>`` is the interval's hive partition folder
``date=<YYYY-MM-DD>/interval=<interval>/`` (:func:`interval_folder`): the
predictions container is a hive-partitioned parquet dataset (issue 14 item 2),
one part file per scoring unit (its targets' rows; their receipts in its
footer, ``scoring.part_file``), named by the unit's targets (:func:`unit_id`).

``date`` is the interval start's UTC date. Everything else in an interval folder
starts with ``_`` (``_manifest.json``, ...): pyarrow.dataset and DuckDB skip
``_``/``.`` files, so a glob over the folders reads the part files only.

``<interval>`` is :func:`interval_key`: ``20260101T0000Z_20260101T0100Z`` for
[2026-01-01 00:00, 01:00) UTC. Keying every output by the data interval, never
by the clock, is what makes reruns and backfills overwrite the same blobs.
A local models or output folder has the same layout below it as its container
(the Azure ML job mounts the containers), so the relative names serve both.

Pure standard library: the DAG file and the scoring job both import it.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from batch_scoring.scoring.config import parse_target, target_name
from batch_scoring.scoring.times import utc_naive

INTERVAL_KEY_FORMAT = "%Y%m%dT%H%MZ"

SNAPSHOT_FILE = "aggregates.parquet"
MANIFEST_FILE = "_manifest.json"
REPORT_FILE = "_report.html"
HEATMAP_FILE = "_heatmap.png"
STALE_MARKER = "_stale.json"
PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"
DATE_PARTITION = "date"  # hive partition keys of the predictions dataset, in folder order
INTERVAL_PARTITION = "interval"
UNIT_HASH_CHARS = 12  # hex digits of sha256 in a unit id: 48 bits, no collision at any fleet size planned
MODEL_FILE = "model.joblib"
MODEL_MANIFEST = "manifest.json"


def interval_key(start, end) -> str:
    """The blob prefix of data interval [start, end): ``20260101T0000Z_20260101T0100Z``.

    ``start``/``end``: any timestamps :func:`scoring.times.utc_naive` reads
    (aware ones are converted to UTC). Minutes are the key's resolution.
    """
    return f"{utc_naive(start).strftime(INTERVAL_KEY_FORMAT)}_{utc_naive(end).strftime(INTERVAL_KEY_FORMAT)}"


def parse_interval_key(key: str) -> tuple[dt.datetime, dt.datetime]:
    """``20260101T0000Z_20260101T0100Z`` -> (start, end) as naive UTC datetimes.

    Raises ``ValueError`` naming the key when it is not two such stamps joined by ``_``.
    """
    parts = key.split("_")
    try:
        if len(parts) != 2:
            raise ValueError("expected two stamps joined by '_'")
        start, end = (dt.datetime.strptime(p, INTERVAL_KEY_FORMAT) for p in parts)
    except ValueError as exc:
        raise ValueError(f"bad interval key {key!r}: {exc}; expected e.g. 20260101T0000Z_20260101T0100Z") from None
    return start, end


@dataclass(frozen=True)
class Interval:
    """A data interval [start, end) as naive UTC datetimes; ``key`` names its blobs."""

    start: dt.datetime
    end: dt.datetime

    @property
    def key(self) -> str:
        return interval_key(self.start, self.end)

    @classmethod
    def from_key(cls, key: str) -> "Interval":
        """The interval a key names; ``ValueError`` for a malformed key."""
        return cls(*parse_interval_key(key))


def _key(interval: "Interval | str") -> str:
    return interval if isinstance(interval, str) else interval.key


def target_path(target: str) -> str:
    """``device/sensor`` -> ``device/sensor`` after checking both ids are path-safe (``ValueError`` if not)."""
    return "/".join(parse_target(target))


# --------------------------------------------------------------------------- aggregates container
def snapshot_blob(interval: "Interval | str") -> str:
    """The interval's snapshot of sensor aggregates (one parquet, rows sorted by device)."""
    return f"{_key(interval)}/{SNAPSHOT_FILE}"


# --------------------------------------------------------------------------- predictions container
def interval_prefix(interval: "Interval | str") -> str:
    """The prefix under which every output of the interval lives: its :func:`interval_folder`."""
    return interval_folder(interval)


def manifest_blob(interval: "Interval | str") -> str:
    """The interval's run manifest blob: ``<folder>/_manifest.json``."""
    return f"{interval_folder(interval)}{MANIFEST_FILE}"


def report_blob(interval: "Interval | str") -> str:
    """The interval's HTML report blob: ``<folder>/_report.html``."""
    return f"{interval_folder(interval)}{REPORT_FILE}"


def heatmap_blob(interval: "Interval | str") -> str:
    """The interval's heatmap image blob: ``<folder>/_heatmap.png``."""
    return f"{interval_folder(interval)}{HEATMAP_FILE}"


def stale_marker_blob(interval: "Interval | str") -> str:
    """The marker written beside the manifest when the interval's aggregates changed after scoring: ``<folder>/_stale.json``."""
    return f"{interval_folder(interval)}{STALE_MARKER}"


# --------------------------------------------------------------------------- the predictions dataset
def interval_folder(interval: "Interval | str") -> str:
    """The interval's hive partition folder: ``date=2026-01-01/interval=20260101T0000Z_20260101T0100Z/``.

    ``date`` is the UTC date of the interval's start. Raises ``ValueError`` for a malformed key.
    """
    iv = Interval.from_key(interval) if isinstance(interval, str) else interval
    return f"{DATE_PARTITION}={iv.start:%Y-%m-%d}/{INTERVAL_PARTITION}={iv.key}/"


def parse_interval_folder(folder: str) -> "Interval":
    """``date=.../interval=<key>/`` (trailing ``/`` optional) -> its ``Interval``.

    Raises ``ValueError`` naming the folder when it is not one :func:`interval_folder` writes
    (other shape, bad key, or a date that is not the key's start date).
    """
    parts = folder.rstrip("/").split("/")
    names = [p.split("=", 1)[0] for p in parts]
    if len(parts) == 2 and names == [DATE_PARTITION, INTERVAL_PARTITION]:
        iv = Interval.from_key(parts[1].split("=", 1)[1])
        if interval_folder(iv) == folder.rstrip("/") + "/":
            return iv
    raise ValueError(f"bad interval folder {folder!r}: expected e.g. date=2026-01-01/interval=20260101T0000Z_20260101T0100Z/")


def unit_id(targets) -> str:
    """A scoring unit's id from its targets (``device/sensor``), independent of their order and duplicates.

    ``<first device>_<first sensor>-<12 hex>``: the sorted first target, then the start of
    sha256 over the sorted distinct targets joined by newlines. The same targets give the
    same id, other batching other ids. Raises ``ValueError`` for no targets or a target
    that is not path-safe.
    """
    names = sorted(set(targets))
    if not names:
        raise ValueError("a scoring unit needs at least one target")
    device, sensor = parse_target(names[0])
    for name in names[1:]:
        parse_target(name)
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:UNIT_HASH_CHARS]
    return f"{device}_{sensor}-{digest}"


def part_name(targets) -> str:
    """A unit's part file relative to its interval folder: ``part-<unit id>.parquet`` (see :func:`unit_id`)."""
    return f"{PART_PREFIX}{unit_id(targets)}{PART_SUFFIX}"


def part_blob(interval: "Interval | str", targets) -> str:
    """A unit's part file in the predictions container: ``date=.../interval=.../part-<unit id>.parquet``."""
    return f"{interval_folder(interval)}{part_name(targets)}"


def is_part_name(name: str) -> bool:
    """Whether ``name`` (relative to an interval folder) is a part file: ``part-*.parquet``, no sub-folder."""
    return "/" not in name and name.startswith(PART_PREFIX) and name.endswith(PART_SUFFIX) \
        and len(name) > len(PART_PREFIX) + len(PART_SUFFIX)


def day_glob(day) -> str:
    """The part files of one UTC day, as a glob DuckDB reads: ``date=2026-03-02/*/part-*.parquet``.

    ``day``: a ``date``/``datetime`` or ``YYYY-MM-DD`` text, or ``YYYY-MM-*`` for a month.
    Raises ``ValueError`` for other text.
    """
    text = day if isinstance(day, str) else f"{day:%Y-%m-%d}"
    day_part = text[8:]
    if not (len(text) in (9, 10) and text[4] == text[7] == "-" and text[:4].isdigit() and text[5:7].isdigit()
            and ((len(day_part) == 2 and day_part.isdigit()) or day_part == "*")):
        raise ValueError(f"bad day {day!r}: expected YYYY-MM-DD, or YYYY-MM-* for a month")
    return f"{DATE_PARTITION}={text}/*/{PART_PREFIX}*{PART_SUFFIX}"


# --------------------------------------------------------------------------- models container
def model_blob(target: str) -> str:
    """A deployed model: ``<device>/<sensor>/model.joblib``."""
    return f"{target_path(target)}/{MODEL_FILE}"


def model_manifest_blob(target: str) -> str:
    """A deployed model's manifest: ``<device>/<sensor>/manifest.json``."""
    return f"{target_path(target)}/{MODEL_MANIFEST}"


def model_manifest_target(name: str) -> str | None:
    """The target whose model manifest ``name`` is (``<device>/<sensor>/manifest.json``), else ``None``."""
    parts = name.split("/")
    if len(parts) == 3 and parts[2] == MODEL_MANIFEST:
        return target_name(parts[0], parts[1])
    return None
