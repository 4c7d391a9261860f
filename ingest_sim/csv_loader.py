"""Load readings from CSV in the reference format ``TS,Device,Sensor,Value``.

The reference file (``sensor_data.csv`` of Microsoft's AMLBatchScoringPipeline)
loads unchanged: ``TS`` like ``2018-08-28 23:00:05.000`` (naive = UTC; an ISO
offset is converted to UTC), ``Device``/``Sensor`` integers kept as strings
(``"1"``), ``Value`` a finite number.

Validation is vectorised (a million rows in about a second) and a bad file
raises :class:`CsvFormatError` naming the file, the 1-based line number and the
column of the first bad line, and how many lines are bad in total.

Repeated readings (``ingest_sim.readings``): a line that repeats an earlier
line's ``TS,Device,Sensor`` with the same value (at-least-once delivery) is
dropped, and counted in ``frame.attrs["duplicate_lines"]``; the same key with
another value refuses the whole file, naming both lines.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from batch_scoring.ingest_sim.readings import describe_conflicts, find_duplicates
from batch_scoring.scoring.config import ID_PATTERN
from batch_scoring.scoring.times import utc_naive_series

HEADER = ("TS", "Device", "Sensor", "Value")
COLUMNS = ("ts", "device_id", "sensor_id", "value")


class CsvFormatError(ValueError):
    """A CSV file that is not in the ``TS,Device,Sensor,Value`` format."""

    def __init__(self, path, line: int | None, column: str | None, reason: str, bad_lines: int = 1):
        self.path, self.line, self.column, self.reason, self.bad_lines = str(path), line, column, reason, bad_lines
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column}"
        more = f" ({bad_lines} bad lines in total)" if bad_lines > 1 else ""
        super().__init__(f"{where}: {reason}{more}")


def load_csv(path) -> pd.DataFrame:
    """Readings from ``path`` as ``ts`` (datetime64[us], naive UTC), ``device_id``,
    ``sensor_id`` (str) and ``value`` (float64), in file order.

    Exact duplicate readings are dropped (kept once, at their first line; the
    number dropped is ``frame.attrs["duplicate_lines"]``).

    Raises :class:`CsvFormatError` on a wrong header, a wrong number of columns,
    an unparseable timestamp, a non-numeric or non-finite value, an empty or
    non-path-safe id, or two lines with the same ``TS,Device,Sensor`` and
    different values (naming both lines).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CsvFormatError(path, None, None, f"cannot read file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CsvFormatError(path, line, None, "not UTF-8 text") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")
    if not text.strip():
        raise CsvFormatError(path, None, None, f"empty file: expected header {','.join(HEADER)}")
    first, _, body_text = text.partition("\n")
    header = [h.strip().strip('"').strip() for h in first.split(",")]
    if [h.lower() for h in header] != [h.lower() for h in HEADER]:
        raise CsvFormatError(path, 1, None, f"header is {first.strip()!r}, expected {','.join(HEADER)!r}")
    if not body_text:
        return pd.DataFrame(
            {
                "ts": pd.Series(dtype="datetime64[us]"),
                "device_id": pd.Series(dtype="str"),
                "sensor_id": pd.Series(dtype="str"),
                "value": pd.Series(dtype="float64"),
            }
        )

    # column count per line, vectorised on the bytes (a comma count per line)
    arr = np.frombuffer(body_text.encode("utf-8"), dtype=np.uint8)
    newlines = np.flatnonzero(arr == 10)
    nlines = len(newlines) + 1
    comma_line = np.searchsorted(newlines, np.flatnonzero(arr == 44))
    ncols = np.bincount(comma_line, minlength=nlines) + 1
    wrong = ncols != len(HEADER)
    if wrong.any():
        i = int(np.argmax(wrong))
        lo = 0 if i == 0 else newlines[i - 1] + 1
        hi = newlines[i] if i < len(newlines) else len(arr)
        line_text = arr[lo:hi].tobytes().decode("utf-8", "replace")
        raise CsvFormatError(
            path,
            i + 2,
            None,
            f"expected {len(HEADER)} columns ({','.join(HEADER)}), found {ncols[i]}: {line_text!r}",
            int(wrong.sum()),
        )
    parts = pd.read_csv(
        io.StringIO(body_text),
        header=None,
        names=list(HEADER),
        dtype="str",
        na_filter=False,
        skip_blank_lines=False,
        engine="c",
    )
    if len(parts) != nlines:  # pragma: no cover - guarded by the comma count above
        raise CsvFormatError(path, None, None, f"parsed {len(parts)} data lines, expected {nlines}")
    ts_txt, dev, sen, val_txt = (parts[c].astype("str").str.strip() for c in HEADER)

    ts = pd.to_datetime(ts_txt, format="ISO8601", errors="coerce", utc=True)
    value = pd.to_numeric(val_txt.where(val_txt != "", None), errors="coerce").astype("float64")
    id_re = ID_PATTERN.pattern
    checks = [
        ("TS", ts.isna().to_numpy(), ts_txt, "unparseable timestamp"),
        ("Device", ~dev.str.fullmatch(id_re).fillna(False).to_numpy(dtype=bool), dev, f"bad id (must match {id_re})"),
        ("Sensor", ~sen.str.fullmatch(id_re).fillna(False).to_numpy(dtype=bool), sen, f"bad id (must match {id_re})"),
        ("Value", ~np.isfinite(value.to_numpy()), val_txt, "not a finite number"),
    ]
    any_bad = np.zeros(len(parts), dtype=bool)
    for _, mask, _, _ in checks:
        any_bad |= mask
    if any_bad.any():
        i = int(np.argmax(any_bad))
        column, _, texts, reason = next(c for c in checks if c[1][i])
        raise CsvFormatError(path, i + 2, column, f"{reason}: {texts.iloc[i]!r}", int(any_bad.sum()))

    # duplicates are judged on the timestamps as written (to the µs), stored to the millisecond
    naive = utc_naive_series(ts)
    raw_ts = pd.DataFrame({"ts": naive.astype("datetime64[ns]"),
                           "device_id": dev.astype("str"), "sensor_id": sen.astype("str"), "value": value})
    frame = pd.DataFrame(
        {
            "ts": naive.astype("datetime64[us]"),
            "device_id": dev.astype("str"),
            "sensor_id": sen.astype("str"),
            "value": value,
        }
    ).reset_index(drop=True)
    dups = find_duplicates(raw_ts)
    if dups.conflicts:
        raise CsvFormatError(
            path, dups.conflicts[0][1] + 2, None,
            describe_conflicts(raw_ts, dups.conflicts, where=lambda i: f"line {i + 2}")
            + "; nothing of this file was loaded: fix the source and load it again",
        )
    if len(dups.exact):
        frame = frame.drop(index=dups.exact).reset_index(drop=True)
    frame.attrs["duplicate_lines"] = int(len(dups.exact))
    return frame
