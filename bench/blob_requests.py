"""Blob requests of a period, counted from Azurite's access log (every request the service answered).

Azurite (without ``--silent``) prints one access-log line per request, e.g.::

    127.0.0.1 - - [30/Nov/2026:11:43:31 +0000] "GET /devstoreaccount1/predictions/<blob> HTTP/1.1" 206 376460

``devstack.services.start_azurite`` sends that output to a file; :class:`BlobRequests` notes the file's
size on entry and, on exit, counts the lines written since, by HTTP method and by container. Counting at
the service sees every process (scheduler, task processes, the floor) and every retry, with no hook in the
code under test.
"""
from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

_LINE = re.compile(r'"(?P<method>[A-Z]+) /[^/\s]+/?(?P<container>[^/?\s]*)[^"]*" (?P<status>\d{3})')


def count_lines(lines) -> dict:
    """``{"total": n, "by_method": {"GET": n, ...}, "by_container": {"models": n, ...}}`` of access-log lines
    (lines that are not requests, such as start-up messages, are ignored; account-level calls count under
    container ``""``)."""
    methods, containers = Counter(), Counter()
    for line in lines:
        m = _LINE.search(line)
        if m:
            methods[m["method"]] += 1
            containers[m["container"]] += 1
    return {"total": sum(methods.values()), "by_method": dict(sorted(methods.items())),
            "by_container": dict(sorted(containers.items()))}


class BlobRequests:
    """``with BlobRequests(log_path) as r: ...`` then ``r.counts`` (:func:`count_lines` of the period).

    Azurite logs a request when its response has finished, which can be just after the client has it: the
    start is noted ``settle`` seconds after entry (earlier requests' lines are in) and the count is read
    ``settle`` seconds after the measured work returned.
    """

    def __init__(self, log_path: Path, settle: float = 1.0):
        self.path = Path(log_path)
        self.settle = settle
        self.counts: dict = {}

    def __enter__(self) -> "BlobRequests":
        time.sleep(self.settle)
        self._start = self.path.stat().st_size if self.path.exists() else 0
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(self.settle)
        with open(self.path, "rb") as fh:
            fh.seek(self._start)
            self.counts = count_lines(fh.read().decode(errors="replace").splitlines())
