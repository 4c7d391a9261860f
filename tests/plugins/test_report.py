"""The run report: a heatmap PNG and an HTML page with a per-target table."""
from __future__ import annotations

import datetime as dt

import pandas as pd

from batch_scoring.scoring.layout import Interval

from batch_scoring.report import anomaly_matrix, heatmap_png, report_html


INTERVAL = Interval(dt.datetime(2026, 5, 1, 10), dt.datetime(2026, 5, 1, 11))


def _flags():
    windows = pd.date_range("2026-05-01 10:00", periods=12, freq="5min").as_unit("us").asi8
    return {f"{device}/{sensor}": (device, windows[3:5] if device == "dev002" else windows[:0])
            for device in ("dev001", "dev002") for sensor in ("s1", "s2")}


def test_matrix_counts_flagged_sensors_per_device_and_window():
    matrix = anomaly_matrix(_flags(), INTERVAL)
    assert list(matrix.index) == ["dev001", "dev002"]
    assert matrix.shape == (2, 12)  # every window of the interval, flagged or not
    assert matrix.loc["dev002"].tolist() == [0, 0, 0, 2, 2] + [0] * 7
    assert matrix.loc["dev001"].sum() == 0
    assert str(matrix.columns[0]) == "2026-05-01 10:00:00"


def test_heatmap_is_a_png_and_deterministic():
    matrix = anomaly_matrix(_flags(), INTERVAL)
    png = heatmap_png(matrix, "t")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000
    assert heatmap_png(matrix, "t") == png


def test_html_lists_failed_targets_first_with_reasons():
    manifest = {
        "interval": "20260501T1000Z_20260501T1100Z", "start": "2026-05-01T10:00:00", "end": "2026-05-01T11:00:00",
        "coverage": 0.5, "min_coverage": 1.0, "rows": 12, "anomalies": 2,
        "counts": {"ok": 1, "failed": 1, "skipped": 1},
        "targets": {
            "a/s1": {"status": "ok", "rows": 12, "anomalies": 2, "model_sha256": "f" * 64},
            "b/s1": {"status": "failed", "reason": "prediction blob missing"},
            "c/s1": {"status": "skipped", "reason": "no model deployed"},
        },
    }
    page = report_html(manifest, b"\x89PNG")
    assert page.index("b/s1") < page.index("c/s1") < page.index("a/s1")
    assert "prediction blob missing" in page and "data:image/png;base64," in page
    assert "1 targets validated, 1 failed, 1 skipped" in page


def test_html_of_a_subset_run_says_what_it_scored_and_lists_targets_not_selected():
    manifest = {
        "interval": "20260501T1000Z_20260501T1100Z", "start": "2026-05-01T10:00:00", "end": "2026-05-01T11:00:00",
        "coverage": 0.5, "min_coverage": 1.0, "rows": 24, "anomalies": 2,
        "counts": {"ok": 2, "failed": 0, "skipped": 0, "not_selected": 2},
        "selection": ["a/*"], "selected": {"targets": 2, "ok": 2, "failed": 0, "coverage": 1.0},
        "targets": {
            "a/s1": {"status": "ok", "rows": 12, "anomalies": 2, "model_sha256": "f" * 64},
            "a/s2": {"status": "ok", "rows": 12, "anomalies": 0, "model_sha256": "e" * 64},
            "b/s1": {"status": "not_selected", "reason": "not in this run's targets selection ['a/*']; no earlier result"},
            "b/s2": {"status": "not_selected", "reason": "not in this run's targets selection ['a/*']; no earlier result"},
        },
    }
    page = report_html(manifest, b"\x89PNG")
    assert "2 targets validated, 0 failed, 0 skipped, 2 not selected;" in page
    assert ("coverage of the interval 50.0%; this run scored the 2 targets selected by <code>[&#x27;a/*&#x27;]</code>: "
            "2 validated, 0 failed, coverage 100.0% (required 100%)") in page
    assert page.index("b/s2") < page.index("a/s1")  # not selected before ok
    assert "<tr class='not_selected'><td>b/s1</td><td>not_selected</td>" in page


def test_write_report_reads_each_blob_once_and_each_target_from_its_own_rows(blob_store, monkeypatch):
    """Two targets in one part file, one in a file of its own: each target's flags are its own rows'."""
    import io

    import pyarrow.parquet as pq

    from batch_scoring.config import settings
    from batch_scoring.report import write_report
    from batch_scoring.scoring.layout import heatmap_blob
    from batch_scoring.scoring.part_file import part_bytes
    from tests.plugins.predictions import WINDOWS, prediction

    def rows(device, sensor, flags):
        return pq.read_table(io.BytesIO(prediction(WINDOWS, device_id=device, sensor_id=sensor, is_anomaly=flags)))
    t1, t2 = rows("dev001", "s1", [False] * 12), rows("dev001", "s2", [False] * 3 + [True] * 2 + [False] * 7)
    solo = rows("dev002", "s1", [False] * 3 + [True] + [False] * 8)
    receipts = [{"target": f"dev001/{s}", "device_id": "dev001", "sensor_id": s, "status": "ok"} for s in ("s1", "s2")]
    blob_store.upload_bytes("predictions", "unit-a.parquet", part_bytes([t1, t2], receipts, t1.schema))
    blob_store.upload_bytes("predictions", "solo.parquet", part_bytes([solo], [], solo.schema))
    manifest = {"interval": INTERVAL.key, "start": "2026-05-01T10:00:00", "end": "2026-05-01T11:00:00",
                "coverage": 1.0, "min_coverage": 1.0, "rows": 36, "anomalies": 3,
                "counts": {"ok": 3, "failed": 0, "skipped": 0}, "targets": {
        "dev001/s1": {"status": "ok", "blob": "unit-a.parquet"}, "dev001/s2": {"status": "ok", "blob": "unit-a.parquet"},
        "dev002/s1": {"status": "ok", "blob": "solo.parquet"}}}
    asked = []
    download_many = blob_store.download_many
    monkeypatch.setattr(blob_store, "download_many", lambda c, names: asked.append(list(names)) or download_many(c, names))
    write_report(blob_store, settings(), INTERVAL, manifest)
    assert asked == [["solo.parquet", "unit-a.parquet"]]  # the part file once, not once per target
    windows = pd.date_range("2026-05-01 10:00", periods=12, freq="5min").as_unit("us").asi8
    expected = anomaly_matrix({"dev001/s1": ("dev001", windows[:0]), "dev001/s2": ("dev001", windows[3:5]),
                               "dev002/s1": ("dev002", windows[3:4])}, INTERVAL)
    assert expected.loc["dev001"].tolist() == [0, 0, 0, 1, 1] + [0] * 7
    png = blob_store.download_many("predictions", [heatmap_blob(INTERVAL)])[heatmap_blob(INTERVAL)]
    assert png == heatmap_png(expected, "anomalies flagged, 2026-05-01T10:00:00 to 2026-05-01T11:00:00 UTC")
