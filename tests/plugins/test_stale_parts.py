"""tidy: after a run the interval folder holds exactly the part files its manifest lists."""
from __future__ import annotations

from batch_scoring.scoring.layout import interval_folder, manifest_blob, part_blob, report_blob
from batch_scoring.stale_parts import tidy
from tests.plugins.predictions import INTERVAL

FOLDER = interval_folder(INTERVAL)
T = [f"d{i}/s1" for i in range(1, 7)]


def blob(unit):
    return part_blob(INTERVAL, unit)


def earlier(*units):
    """An earlier manifest's targets for a run batched as ``units``."""
    return {t: {"status": "ok", "blob": blob(u)} for u in units for t in u}


def test_a_rerun_with_other_batching_deletes_the_earlier_files():
    old = [T[:3], T[3:]]
    new = [T[:2], T[2:4], T[4:]]
    present = [blob(u) for u in old + new] + [manifest_blob(INTERVAL), report_blob(INTERVAL)]
    got = tidy(INTERVAL, present, [blob(u) for u in new], earlier(*old), unselected=[])
    assert got.delete == sorted(blob(u) for u in old)
    assert got.rewrite == {} and got.keep == [] and got.unexpected == []
    # the same batching again: nothing to do
    same = tidy(INTERVAL, [blob(u) for u in new], [blob(u) for u in new], earlier(*new), unselected=[])
    assert (same.delete, same.rewrite, same.keep) == ([], {}, [])


def test_a_subset_run_keeps_rewrites_or_deletes_by_what_each_file_holds():
    old = [T[:2], T[2:4], T[4:]]  # d1,d2 | d3,d4 | d5,d6
    rescored = [T[1], T[2], T[3]]  # d2, d3, d4 in one unit this time
    present = [blob(u) for u in old] + [blob(rescored), f"{FOLDER}part-orphan.parquet"]
    got = tidy(INTERVAL, present, [blob(rescored)], earlier(*old), unselected=[T[0], T[4], T[5]])
    assert got.keep == [blob(T[4:])]  # only unselected targets in it
    assert got.rewrite == {blob(T[:2]): [T[0]]}  # d1 kept, d2's rows go
    assert got.delete == sorted([blob(T[2:4]), f"{FOLDER}part-orphan.parquet"])  # all rescored / nobody's
    assert got.unexpected == []


def test_other_blobs_are_unexpected_and_never_deleted():
    present = [f"{FOLDER}notes.txt", f"{FOLDER}d1/s1.parquet", f"{FOLDER}_heatmap.png", "elsewhere/part-x.parquet"]
    got = tidy(INTERVAL, present, [], {}, unselected=[])
    assert got.unexpected == sorted([f"{FOLDER}notes.txt", f"{FOLDER}d1/s1.parquet", "elsewhere/part-x.parquet"])
    assert got.delete == []
