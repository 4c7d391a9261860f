"""The interval's run report: a PNG heatmap of anomalies (devices × windows) and a per-target table.

Written by the collector next to the manifest in the interval folder
(``date=<day>/interval=<interval>/_report.html`` with the heatmap embedded, and
``_heatmap.png`` beside it) so what a run found can be seen at a glance, not
only in logs. Deterministic for the same predictions, like everything else in
the interval folder.
"""
from __future__ import annotations

import base64
import html
import io

from batch_scoring.scoring.layout import heatmap_blob, report_blob

MAX_HEATMAP_DEVICES = 60


def anomaly_matrix(flags: dict, interval):
    """devices × the interval's windows: how many of a device's sensors were flagged in each window.

    ``flags``: target → (device_id, its flagged window starts as int64 µs).
    """
    import numpy as np
    import pandas as pd

    from batch_scoring.scoring.config import WINDOW_MINUTES

    if not flags:
        return pd.DataFrame()
    grid = pd.date_range(interval.start, interval.end, freq=f"{WINDOW_MINUTES}min", inclusive="left").as_unit("us")
    edges = grid.asi8
    devices = sorted({device for device, _ in flags.values()})
    row = {d: i for i, d in enumerate(devices)}
    counts = np.zeros((len(devices), len(grid)), dtype="int64")
    for device, starts in flags.values():
        cols = np.searchsorted(edges, np.asarray(starts, dtype="int64"))
        on_grid = (cols < len(edges)) & (edges[np.minimum(cols, len(edges) - 1)] == starts)
        np.add.at(counts[row[device]], cols[on_grid], 1)
    return pd.DataFrame(counts, index=pd.Index(devices, name="device_id"), columns=grid)


def heatmap_png(matrix, title: str) -> bytes:
    """PNG bytes of ``matrix`` (devices × windows, flagged sensors per cell, from ``anomaly_matrix``) titled ``title``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = matrix
    note = ""
    if len(matrix) > MAX_HEATMAP_DEVICES:  # keep it readable: the devices with the most flags
        keep = matrix.sum(axis=1).sort_values(ascending=False, kind="mergesort").index[:MAX_HEATMAP_DEVICES]
        shown = matrix.loc[sorted(keep)]
        note = f" (top {MAX_HEATMAP_DEVICES} of {len(matrix)} devices by flags)"
    fig, ax = plt.subplots(figsize=(10, max(2.5, 0.22 * len(shown) + 1.5)), dpi=100)
    if shown.empty:
        ax.text(0.5, 0.5, "no predictions", ha="center", va="center")
        ax.set_axis_off()
    else:
        top = max(1, int(shown.to_numpy().max()))
        image = ax.imshow(shown.to_numpy(float), aspect="auto", cmap="Reds", vmin=0, vmax=top, interpolation="nearest")
        ax.set_yticks(range(len(shown)), [str(d) for d in shown.index], fontsize=7)
        step = max(1, len(shown.columns) // 12)
        ax.set_xticks(range(0, len(shown.columns), step),
                      [c.strftime("%H:%M") for c in shown.columns[::step]], fontsize=7, rotation=45)
        ax.set_xlabel("window start (UTC)")
        fig.colorbar(image, ax=ax, label="sensors flagged", ticks=range(0, top + 1, max(1, top // 8)))
    ax.set_title(title + note, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def report_html(manifest: dict, png: bytes) -> str:
    """The report page: the manifest's totals and a per-target table (failed first), the heatmap ``png`` embedded."""
    rows = []
    order = {"failed": 0, "skipped": 1, "not_selected": 2, "ok": 3}
    for target, entry in sorted(manifest["targets"].items(), key=lambda kv: (order.get(kv[1]["status"], 3), kv[0])):
        rows.append(
            "<tr class='{s}'><td>{t}</td><td>{s}</td><td>{r}</td><td>{a}</td><td><code>{h}</code></td><td>{why}</td></tr>".format(
                s=html.escape(entry["status"]), t=html.escape(target), r=entry.get("rows", ""), a=entry.get("anomalies", ""),
                h=html.escape(str(entry.get("model_sha256", ""))[:12]), why=html.escape(entry.get("reason", "")),
            )
        )
    counts = manifest["counts"]
    image = base64.b64encode(png).decode()
    not_selected = f", {counts['not_selected']} not selected" if counts.get("not_selected") else ""
    selection, selected = manifest.get("selection") or [], manifest.get("selected") or {}
    judged = f"coverage {manifest['coverage']:.1%} (required {manifest['min_coverage']:.0%})"
    if selection:
        judged = (f"coverage of the interval {manifest['coverage']:.1%}; this run scored the "
                  f"{selected.get('targets', 0)} targets selected by <code>{html.escape(str(selection))}</code>: "
                  f"{selected.get('ok', 0)} validated, {selected.get('failed', 0)} failed, coverage "
                  f"{selected.get('coverage', 0):.1%} (required {manifest['min_coverage']:.0%}); the other targets' "
                  "results are those of earlier runs, kept while their predictions are unchanged")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>batch_scoring {html.escape(manifest['interval'])}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }} table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; font-size: 13px; }} th {{ background: #eee; }}
tr.failed td {{ background: #fde2e2; }} tr.skipped td, tr.not_selected td {{ background: #f3f3f3; color: #666; }}
</style></head><body>
<h1>Interval {html.escape(manifest['start'])} to {html.escape(manifest['end'])} (UTC)</h1>
<p>{counts['ok']} targets validated, {counts['failed']} failed, {counts['skipped']} skipped{not_selected};
{judged};
{manifest['rows']} windows scored, {manifest['anomalies']} flagged as anomalies.</p>
<h2>Anomalies by device and window</h2>
<img alt="heatmap of anomalies, devices by windows" src="data:image/png;base64,{image}">
<h2>Targets</h2>
<table><tr><th>target</th><th>status</th><th>windows</th><th>anomalies</th><th>model</th><th>reason</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""


def write_report(store, settings, interval, manifest: dict, flags: dict | None = None) -> list[str]:
    """Build the report from the interval's validated predictions and upload it; returns blob names.

    ``flags``: the collector's (device_id, flagged window starts) per target
    it validated. The heatmap covers every ``ok`` target of the manifest: the
    flags of those not in ``flags`` (all of them after a failed collect; the
    targets a subset run kept from earlier runs) are read from their blobs, each blob downloaded once
    and each target's flags taken from its own rows (a part file holds a unit's targets).
    """
    from batch_scoring.validation import anomaly_starts

    flags = dict(flags or {})
    ok = [(t, e["blob"]) for t, e in manifest["targets"].items() if e["status"] == "ok" and t not in flags]
    if ok:
        blobs = store.download_many(settings.predictions_container, sorted({b for _, b in ok}))
        flags.update({t: (t.split("/")[0], anomaly_starts(blobs[b], t)) for t, b in ok if blobs[b] is not None})
    png = heatmap_png(anomaly_matrix(flags, interval), f"anomalies flagged, {manifest['start']} to {manifest['end']} UTC")
    names = [heatmap_blob(interval), report_blob(interval)]
    store.upload_bytes(settings.predictions_container, names[0], png)
    store.upload_bytes(settings.predictions_container, names[1], report_html(manifest, png).encode())
    return names
