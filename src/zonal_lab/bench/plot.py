"""PNG plots of a ``zonal bench`` run (matplotlib, the ``bench`` extra).

A scenario's ``plot`` entry says what to draw: ``bars`` (groups x series) or
``timeline`` (latency of every request over time, the fault and the repair
marked, one panel per subject).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["available", "plot_scenario"]

_ZONE_COLORS = {"a": "#1f77b4", "b": "#ff7f0e"}


def available() -> bool:
    """True when matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_scenario(name: str, result: dict[str, Any], folder: Path) -> list[str]:
    """Draw ``result["plot"]`` into ``folder``; return the file names written."""
    spec = result.get("plot")
    if not spec:
        return []
    if spec.get("kind") == "bars":
        return [_bars(name, result.get("title", name), spec, folder)]
    if spec.get("kind") == "timeline":
        return _timelines(name, spec, folder)
    return []


def _bars(name: str, title: str, spec: dict[str, Any], folder: Path) -> str:
    plt = _pyplot()
    groups: list[str] = spec["groups"]
    series: dict[str, list[float]] = spec["series"]
    n = max(1, len(series))
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) * max(1, n / 2) + 2), 4.5))
    for i, (label, values) in enumerate(series.items()):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(xs, values, width, label=label)
        ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=1)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_ylabel(spec.get("ylabel", ""))
    ax.set_title(title, fontsize=10)
    if n > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fname = f"{name}.png"
    fig.savefig(folder / fname, dpi=110)
    plt.close(fig)
    return fname


def _timelines(name: str, spec: dict[str, Any], folder: Path) -> list[str]:
    plt = _pyplot()
    runs: list[dict[str, Any]] = spec["runs"]
    written: list[str] = []
    for fault in dict.fromkeys(r["fault"] for r in runs):
        chosen = [r for r in runs if r["fault"] == fault]
        fig, axes = plt.subplots(len(chosen), 1, figsize=(10, 2.0 * len(chosen) + 0.8),
                                 sharex=True, squeeze=False)
        for ax, run in zip(axes[:, 0], chosen, strict=True):
            samples = run["samples"]
            for zone, color in _ZONE_COLORS.items():
                pts = [(s[0], s[1]) for s in samples if s[3] is None and s[2] == zone]
                if pts:
                    ax.scatter(*zip(*pts, strict=True), s=3, color=color,
                               label=f"served by {zone}")
            errs = [(s[0], max(s[1], 0.01)) for s in samples if s[3] is not None]
            if errs:
                ax.scatter(*zip(*errs, strict=True), s=14, marker="x", color="red",
                           label="error")
            marks = run.get("marks", {})
            if "fault" in marks:
                ax.axvline(marks["fault"], color="red", linestyle="--", linewidth=1)
            if "restore" in marks:
                ax.axvline(marks["restore"], color="green", linestyle="--", linewidth=1)
            ax.set_yscale("log")
            ax.set_ylabel("ms", fontsize=8)
            ax.set_title(run["label"], fontsize=9, loc="left")
            ax.legend(fontsize=7, loc="upper right", markerscale=2)
        done = {"kill": "killed", "pause": "paused"}.get(fault, fault)
        axes[-1, 0].set_xlabel(
            f"start of the request, s (red line: zone a {done}; green: repaired)")
        fig.suptitle(f"Failover timeline: latency per request, zone a {done}", fontsize=11)
        fig.tight_layout()
        fname = f"{name}-{fault}.png"
        fig.savefig(folder / fname, dpi=110)
        plt.close(fig)
        written.append(fname)
    return written
