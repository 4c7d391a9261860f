"""The markdown of ``python -m bench``'s results: a table per fleet and mode, floor phases, blob requests.

``render`` reads the ``.local/bench/results.json`` shape that ``bench/run.py`` writes; ``write_section``
replaces the generated part of BENCHMARKS.md between two markers.
"""
from __future__ import annotations

from pathlib import Path

MARK_BEGIN, MARK_END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"


def render(results: dict) -> str:
    """The markdown of ``results`` (the ``results.json`` shape): a table per fleet and mode, floor phases, idle CPU."""
    lines = [
        f"Run {results['started']} on {results['machine']}; parallelism {results['parallelism']}; "
        f"aggregates on {results.get('sql', 'sqlite')}; Azurite metadata in {results.get('azurite_metadata', 'loki')}; "
        f"synthetic fleet, 288 windows per target (one day at 5 minutes).",
        "",
        "| T | what | state | wall s | ratio to floor | ratio to physical | CPU s (Airflow tree) | CPU s Azurite "
        "| blob requests | peak RSS MiB | score tasks | mean task s | overhead ms/target (wall) | overhead ms/target (CPU) | validated |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for T, r in results["fleets"].items():
        f, p = r.get("floor"), r.get("physical")  # the blob-store floor is skipped over --blob-floor-max
        phys = (lambda wall: f"{wall / p['wall']:.2f}") if p else (lambda wall: "-")
        to_floor = (lambda wall: f"{wall / f['wall']:.2f}") if f else (lambda wall: "-")
        over = (lambda m, k: f"{1000 * (m[k] - f[k]) / int(T):.1f}") if f else (lambda m, k: "-")
        if p:
            lines.append(
                f"| {int(T):,} | physical floor (SQL read, local models and files; 1 process) | ok {p['ok']} "
                f"| {p['wall']:.1f} | {to_floor(p['wall'])} | 1.00 | {p['cpu']:.1f} (own) | - | 0 "
                f"| {p['peak_rss'] / 2**20:.0f} | - | - | {1000 * p['wall'] / int(T):.2f} per target "
                f"| {1000 * p['cpu'] / int(T):.2f} per target | - |")
        if f:
            lines.append(
                f"| {int(T):,} | floor (1 process, 1 thread) | ok {f['ok']} | {f['wall']:.1f} | 1.00 | {phys(f['wall'])} | {f['cpu']:.1f} (own) "
                f"| {f['azurite_cpu']:.1f} | {_requests(f)} | {f['peak_rss'] / 2**20:.0f} | - | - | {1000 * f['wall'] / int(T):.2f} per target "
                f"| {1000 * f['cpu'] / int(T):.2f} per target | - |"
            )
        for m in r["dag"]:
            if "error" in m:
                lines.append(f"| {int(T):,} | DAG, targets_per_unit={m['mode']} | error | | | | | | | | | | | | {m['error'][:80]} |")
                continue
            lines.append(
                f"| {int(T):,} | DAG, targets_per_unit={m['mode']} | {m['state']} | {m['wall']:.1f} "
                f"| {to_floor(m['wall'])} | {phys(m['wall'])} | {m['cpu']:.1f} | {m['azurite_cpu']:.1f} | {_requests(m)} | {m['peak_rss'] / 2**20:.0f} "
                f"| {m['score_tasks']} | {m['score_task_mean'] or 0:.2f} | {over(m, 'wall')} "
                f"| {over(m, 'cpu')} | {m['validated']} |"
            )
        sh = r.get("shape")
        if sh and "error" not in sh:
            lines.append(
                f"| {int(T):,} | Airflow alone: no-op DAG of the same shape ({sh['units']} mapped tasks) | {sh['state']} "
                f"| {sh['wall']:.1f} | {to_floor(sh['wall'])} | {phys(sh['wall'])} | {sh['cpu']:.1f} | - | 0 | - "
                f"| {sh['units']} | - | - | - | - |")
        elif sh:
            lines.append(f"| {int(T):,} | Airflow alone: no-op DAG of the same shape | error | | | | | | | | | | | | {sh['error'][:80]} |")
    lines.append("")
    lines.append("Blob requests by container (Azurite's access log): " + "; ".join(
        f"T={int(T):,} {what}: " + ", ".join(f"{c or '(account)'} {n:,}" for c, n in m["blob_requests"]["by_container"].items())
        for T, r in results["fleets"].items()
        for what, m in [("floor", r.get("floor") or {})] + [(f"DAG {d['mode']}", d) for d in r["dag"]] if "blob_requests" in m))
    lines.append("")
    lines.append("Floor phases (s): " + "; ".join(
        f"T={int(T):,}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["floor"]["phases"].items())
        + f" (imports {r['floor']['import_seconds']:.2f}, not counted)"
        for T, r in results["fleets"].items() if r.get("floor")))
    lines.append("")
    lines.append("Physical floor phases (s): " + "; ".join(
        f"T={int(T):,}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["physical"]["phases"].items())
        + f" ({r['physical']['rows']:,} aggregate rows)" for T, r in results["fleets"].items() if "physical" in r))
    lines.append("")
    lines.append("Idle CPU of the standalone (scheduler, dag-processor, triggerer, api-server), measured before the runs: "
                 + "; ".join(f"T={int(T):,}: {r['idle_cpu_per_s']:.2f} CPU-s/s" for T, r in results["fleets"].items()))
    return "\n".join(lines)


def write_markdown(results: dict, path: Path) -> None:
    """Replace the text between the ``bench:results`` markers of ``path`` by :func:`render` (file or markers created if missing)."""
    write_section(path, render(results), MARK_BEGIN, MARK_END)


def write_section(path: Path, body: str, begin: str, end: str) -> None:
    """Replace the text between the markers ``begin`` and ``end`` of ``path`` by ``body`` (file or markers
    appended if missing)."""
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{begin}\n{end}\n"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{body}\n{end}{tail}")


def _requests(m: dict) -> str:
    """A measure's blob request count as ``total (GET g, PUT p)``, or ``-`` when it was not counted."""
    req = m.get("blob_requests")
    if not req:
        return "-"
    methods = req["by_method"]
    return f"{req['total']:,} (GET {methods.get('GET', 0):,}, PUT {methods.get('PUT', 0):,})"
