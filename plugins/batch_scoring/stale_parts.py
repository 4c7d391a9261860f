"""After a run, an interval folder holds exactly the part files its manifest lists: what to delete or rewrite.

Issue 14 item 2 (docs/predictions-dataset.md). A rerun with
other batching writes other part files (``layout.part_name`` follows from a
unit's targets); the files of the earlier batching are then stale and go. A run
over a subset (a ``targets`` selection) keeps the targets it left out: an earlier
part file holding only such targets stays as it is; one holding them beside
targets this run rescored is rewritten with the left-out targets only
(``scoring.part_file.without_targets``); one holding none of them goes.

Pure: works on blob names and the earlier manifest; the collector does the I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from batch_scoring.scoring.layout import interval_folder, is_part_name


@dataclass
class Tidy:
    """What the collector does to the interval folder once this run's files are checked.

    ``delete``: part blobs to remove (sorted); ``rewrite``: part blob -> the targets to keep in it (the
    others' rows and receipts are dropped, the result is named by the kept targets and the old blob
    removed); ``keep``: earlier part blobs left as they are (sorted); ``unexpected``: blobs in the folder
    that are neither part files nor the collector's own ``_`` files (sorted; the run fails naming them,
    as before).
    """

    delete: list[str] = field(default_factory=list)
    rewrite: dict[str, list[str]] = field(default_factory=dict)
    keep: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def tidy(interval, present, written, earlier_targets: dict, unselected) -> Tidy:
    """Sort the blobs under the interval's folder by what becomes of them.

    ``present``: blob names listed under ``layout.interval_folder(interval)``; ``written``: the part
    blobs of this run's units; ``earlier_targets``: the earlier manifest's ``targets`` (target -> entry
    with ``blob``: the part file holding it), ``{}`` when there is none; ``unselected``: the targets this
    run left out (its ``targets`` selection), whose earlier results are kept. A part blob not written by
    this run is kept when every target the earlier manifest places in it is unselected, rewritten when
    some are and some are not (``rewrite[blob]``: the unselected ones, sorted), deleted when none is
    (files of an earlier batching, or of a run whose manifest was never written).
    """
    folder = interval_folder(interval)
    written, unselected = set(written), set(unselected)
    holders: dict[str, set[str]] = {}
    for target, entry in earlier_targets.items():
        blob = entry.get("blob") if isinstance(entry, dict) else None
        if blob:
            holders.setdefault(blob, set()).add(target)
    out = Tidy()
    for blob in sorted(present):
        name = blob[len(folder):] if blob.startswith(folder) else None
        if name is None or not is_part_name(name):
            if name is None or not name.startswith("_"):
                out.unexpected.append(blob)
            continue
        if blob in written:
            continue
        keep = holders.get(blob, set()) & unselected
        if not keep:
            out.delete.append(blob)
        elif keep == holders[blob]:
            out.keep.append(blob)
        else:
            out.rewrite[blob] = sorted(keep)
    return out
