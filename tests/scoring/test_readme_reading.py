"""README "Reading the predictions": its pandas lines, run as written against part files the scoring CLI's
``score_unit`` wrote into interval folders of two days, read what the layout promises."""
from __future__ import annotations

import datetime as dt
import re

from batch_scoring.scoring import layout
from batch_scoring.scoring.score import score_unit
from devstack.services import REPO

TARGETS = ["dev001/s1", "dev001/s2", "dev002/s1", "dev002/s2"]


def _readme_lines() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Reading the predictions"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_lines_read_every_interval_and_one_day(tmp_path, trained, monkeypatch):
    models, _, score_aggs = trained
    root = tmp_path / ".local" / "demo" / "predictions"
    days = {"2026-03-01": dt.datetime(2026, 3, 1, 6), "2026-03-02": dt.datetime(2026, 3, 2, 6)}
    for start in days.values():
        for hour in range(2):
            iv = layout.Interval(start + dt.timedelta(hours=hour), start + dt.timedelta(hours=hour + 1))
            for unit in (TARGETS[:3], TARGETS[3:]):
                score_unit(score_aggs, models, root / layout.interval_folder(iv), unit)
            (root / layout.manifest_blob(iv)).write_text("{}")  # run-level files beside the parts are skipped
            (root / layout.report_blob(iv)).write_text("<html></html>")
    rows_per_interval = sum(len(score_aggs[(score_aggs["device_id"] == t.split("/")[0])
                                          & (score_aggs["sensor_id"] == t.split("/")[1])]) for t in TARGETS)
    assert rows_per_interval > 0
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_readme_lines(), "README.md", "exec"), scope)
    every, one_day = scope["predictions"], scope["one_day"]
    assert len(every) == 4 * rows_per_interval and len(one_day) == 2 * rows_per_interval
    assert set(one_day["date"].astype(str)) == {"2026-03-02"}
    assert set(every["date"].astype(str)) == set(days)
    assert set(zip(one_day["device_id"], one_day["sensor_id"])) == {tuple(t.split("/")) for t in TARGETS}
    assert one_day["interval"].astype(str).nunique() == 2
    # one target's rows sit together, in window order, within each file
    for _, frame in one_day.groupby(one_day["interval"].astype(str), observed=True):
        keys = list(zip(frame["device_id"], frame["sensor_id"], frame["window_start"]))
        assert keys == sorted(keys)
