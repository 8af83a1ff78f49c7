"""``zonal bench`` output: the machine it ran on, and ``results.md`` from the results.

The markdown is written from ``results.json``'s content alone, so a table can be
regenerated (``python -m zonal_lab.bench.report DIR``) without running anything.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["machine", "render_markdown", "write_markdown"]

_PACKAGES = ("zonal", "sqlalchemy", "psycopg", "psycopg-binary", "psycopg-pool", "django",
             "matplotlib", "psutil")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _memory_total() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine(lab: Any = None) -> dict[str, Any]:
    """Cores, CPU, memory, OS, Python and the versions that matter to the figures."""
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gb": None,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "packages": {d: v for d in _PACKAGES if (v := _version(d)) is not None},
    }
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    mem = _memory_total()
    if mem:
        info["memory_gb"] = round(mem / (1 << 30), 1)
    try:
        import psycopg

        lv = psycopg.pq.version()
        info["libpq"] = f"{lv // 10000}.{lv % 100}" if lv >= 100000 else str(lv)
    except Exception:  # no psycopg: nothing to report
        pass
    if lab is not None:
        try:
            if lab.binaries is not None:
                info["postgresql"] = str(lab.binaries.version).split(")")[-1].strip()
            from zonal_lab.binaries import find_pgbouncer, pgbouncer_version

            program = find_pgbouncer() if lab.pgbouncer else None
            if program:
                info["pgbouncer"] = ".".join(map(str, pgbouncer_version(program)))
        except Exception:  # versions are a nicety; never fail a run for them
            pass
    return info


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == int(value) and abs(value) >= 100:
            return f"{int(value):,}"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(result: dict[str, Any]) -> list[str]:
    columns: list[list[str]] = result.get("columns") or [["label", "subject"]]
    rows: list[dict[str, Any]] = result.get("rows") or []
    measured = [r for r in rows if "skipped" not in r]
    skipped = [r for r in rows if "skipped" in r]
    out: list[str] = []
    keys = [k for k, _ in columns if k != "skipped"]
    heads = [h for k, h in columns if k != "skipped"]
    if measured:
        out.append("| " + " | ".join(heads) + " |")
        out.append("|" + "|".join("---" for _ in heads) + "|")
        for r in measured:
            out.append("| " + " | ".join(_cell(r.get(k)) for k in keys) + " |")
    said = set()
    for r in skipped:
        line = f"- {r.get('label', r.get('subject'))}: not measured — {r['skipped']}"
        if line not in said:  # one line per subject and reason, not per cell
            said.add(line)
            out.append(line)
    return out


def _machine_line(m: dict[str, Any]) -> str:
    pk = m.get("packages", {})
    parts = [
        f"{m.get('usable_cores')} usable cores ({m.get('cores')} online), {m.get('cpu')}",
        f"{m.get('memory_gb')} GB RAM" if m.get("memory_gb") else None,
        m.get("os"), m.get("python"),
        f"load average {m['load_average'][0]} at the start" if m.get("load_average") else None,
        f"PostgreSQL {m['postgresql']}" if m.get("postgresql") else None,
        f"PgBouncer {m['pgbouncer']}" if m.get("pgbouncer") else None,
        f"libpq {m['libpq']}" if m.get("libpq") else None,
        ", ".join(f"{k} {v}" for k, v in pk.items()),
    ]
    return "; ".join(p for p in parts if p)


def render_markdown(results: dict[str, Any]) -> str:
    """The whole ``results.md``: headline ratios first, then one table per scenario."""
    meta = results.get("meta", {})
    lines = [f"# zonal bench — {meta.get('started', '')}", ""]
    lines.append(f"Command: `{meta.get('command', 'zonal bench')}`  ")
    lines.append(f"Machine: {_machine_line(results.get('machine', {}))}  ")
    secs = meta.get("seconds")
    if secs is not None:
        load = meta.get("load_average_end")
        lines.append(f"Run time: {secs:.0f} s{' (--quick)' if meta.get('quick') else ''}"
                     + (f"; load average {load[0]} at the end" if load else "") + "  ")
    lines.append(f"Subjects: {', '.join(meta.get('subjects_labels', meta.get('subjects', [])))}")
    lines.append("")
    scenarios: dict[str, dict[str, Any]] = results.get("scenarios", {})
    heads = [h for s in scenarios.values() for h in s.get("headline", [])]
    if heads:
        lines += ["## The ratios that matter", ""]
        lines += [f"- {h}" for h in heads]
        lines.append("")
    for name, res in scenarios.items():
        lines += [f"## {res.get('title', name)}", ""]
        if res.get("error"):
            lines += [f"This scenario failed: `{res['error']}`", ""]
            continue
        if res.get("what"):
            lines += [res["what"], ""]
        lines += _table(res)
        lines.append("")
        for note in res.get("notes", []):
            lines.append(f"> {note}")
        if res.get("notes"):
            lines.append("")
        for png in res.get("plots", []):
            lines += [f"![{name}]({png})", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_markdown(folder: Path, results: dict[str, Any]) -> Path:
    path = folder / "results.md"
    path.write_text(render_markdown(results), encoding="utf-8")
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1])
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    print(write_markdown(out, data))
