"""What the demo shows: a per-zone table, redrawn in place on a terminal and
printed as plain periodic blocks otherwise (CI logs, pipes)."""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from typing import TextIO

from zonal_core.stats import PoolStats
from zonal_lab.demo_workload import Record

__all__ = ["Screen", "format_ms", "percentile", "table"]

_HEADER = ("zone", "state", "open", "in use", "waiting", "req/s", "p50", "p99", "errors",
           "failovers")
_WIDTHS = (8, 9, 4, 6, 7, 5, 7, 7, 6, 9)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of ``values``, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def format_ms(seconds: float | None) -> str:
    """``1.2ms``, ``48ms``, ``1.01s``; ``-`` for None."""
    if seconds is None:
        return "-"
    ms = seconds * 1000
    if ms < 10:
        return f"{ms:.1f}ms"
    if ms < 1000:
        return f"{ms:.0f}ms"
    return f"{seconds:.2f}s"


def _row(cells: Sequence[str]) -> str:
    return "  ".join(c.rjust(w) if i > 1 else c.ljust(w)
                     for i, (c, w) in enumerate(zip(cells, _WIDTHS, strict=True))).rstrip()


def table(stats: PoolStats, records: Sequence[Record], now: float,
          window: float = 2.0) -> list[str]:
    """The per-zone table: pool state from ``stats``; req/s and p50/p99 latency of
    the requests each zone served in the last ``window`` seconds; errors since the
    start, by the zone whose connection failed."""
    lines = [_row(_HEADER)]
    recent: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    unplaced = 0
    since = now - window
    for r in records:
        if r.error is not None:
            if r.zone is None:
                unplaced += 1
            else:
                errors[r.zone] = errors.get(r.zone, 0) + 1
        elif r.zone is not None and r.end >= since:
            recent.setdefault(r.zone, []).append(r.end - r.start)
    span = max(min(window, now), 1e-3)
    for name, z in stats.zones.items():
        mark = ("*" if z.preferred else " ") + (" local" if name == stats.local_zone else "")
        took = recent.get(name, [])
        lines.append(_row((
            f"{name}{mark}", z.state, str(z.open), str(z.in_use), str(z.waiting),
            f"{len(took) / span:.0f}", format_ms(percentile(took, 0.5)),
            format_ms(percentile(took, 0.99)), str(errors.get(name, 0)), str(z.failovers),
        )))
    total = len(records)
    failed = sum(1 for r in records if r.error is not None)
    lines.append(f"* new connections go here. waiting: {stats.waiting}. requests: {total}, "
                 f"errors: {failed}" + (f" ({unplaced} with no connection)" if unplaced else ""))
    return lines


class Screen:
    """Draws blocks of lines: in place on a terminal (cursor up, clear below), or
    appended as plain text, one block per call, otherwise."""

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self._drawn = 0

    def event(self, line: str) -> None:
        """A line that stays (above the live block on a terminal)."""
        if self.tty and self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0
        self.out.write(line + "\n")
        self.out.flush()

    def draw(self, lines: Sequence[str]) -> None:
        """Replace the live block (terminal) or print it (plain)."""
        if self.tty:
            if self._drawn:
                self.out.write(f"\x1b[{self._drawn}F\x1b[J")
            # a wrapped line would throw the cursor-up count off
            width = shutil.get_terminal_size().columns - 1
            lines = [line[:width] for line in lines]
            self._drawn = len(lines)
        self.out.write("\n".join(lines) + "\n")
        if not self.tty:
            self.out.write("\n")
        self.out.flush()

    def keep(self) -> None:
        """Leave the live block on screen as it is (before the summary)."""
        self._drawn = 0
