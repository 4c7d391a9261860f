"""CPU and memory of a process tree, sampled from /proc through psutil.

CPU of a tree over a period = the change of the sum, over the live processes
of the tree, of user + system + children_user + children_system. A process
that exits is reaped by its parent, and the kernel adds its CPU (and that of
its own reaped children) to the parent's ``children_*``: so short-lived task
processes are counted even though no sample ever sees them alive. (Only an
orphan re-parented outside the tree would be lost; Airflow's LocalExecutor
reaps its task processes.) Peak memory is the largest sum of RSS over the
tree's live processes among the samples (every ``interval`` seconds), so it
is a sampled peak, and RSS counts pages shared by forked workers once per
process (an over-estimate of physical memory).
"""
from __future__ import annotations

import resource
import threading
import time

import psutil


def own_usage() -> tuple[float, int]:
    """``(CPU seconds, peak RSS bytes)`` of this process so far (``getrusage(RUSAGE_SELF)``: user + system;
    ``ru_maxrss`` is in KiB on Linux)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_maxrss * 1024


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _tree_sum(pids, measure):
    """Sum of ``measure(process)`` over the live processes of the trees of ``pids`` (exited ones skipped)."""
    total = 0
    for pid in pids:
        for p in _tree(pid):
            try:
                total += measure(p)
            except psutil.NoSuchProcess:
                pass
    return total


def _cpu_seconds(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def tree_cpu(pids) -> float:
    """CPU seconds (user + system, own and reaped children's) of the live processes of the trees of ``pids``."""
    return float(_tree_sum(pids, _cpu_seconds))


def tree_rss(pids) -> int:
    """Resident memory in bytes, summed over the live processes of the trees of ``pids``."""
    return int(_tree_sum(pids, lambda p: p.memory_info().rss))


class TreeMeter:
    """``with TreeMeter([pid, ...]) as m: ...`` then ``m.cpu`` (s), ``m.wall`` (s), ``m.peak_rss`` (bytes)."""

    def __init__(self, pids, interval: float = 0.5):
        self.pids, self.interval = list(pids), interval
        self.cpu = self.wall = 0.0
        self.peak_rss = 0
        self._stop = threading.Event()

    def _sample(self):
        while not self._stop.wait(self.interval):
            self.peak_rss = max(self.peak_rss, tree_rss(self.pids))

    def __enter__(self):
        self._cpu0, self._t0 = tree_cpu(self.pids), time.perf_counter()
        self.peak_rss = tree_rss(self.pids)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.wall = time.perf_counter() - self._t0
        self.cpu = tree_cpu(self.pids) - self._cpu0
        return False
