"""Counters, histograms and the ``stats()`` snapshot of a pool.

The pool updates plain integers under its lock; exporters read a snapshot at scrape
time, so nothing on the hot path touches a metrics library.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "CLOSE_REASONS",
    "DEFAULT_BUCKETS",
    "Histogram",
    "HistogramSnapshot",
    "PoolStats",
    "ZoneCounters",
    "ZoneStats",
]

#: Why a connection was closed; every close counts under exactly one of these.
CLOSE_REASONS = (
    "lifetime",
    "idle",
    "suspend",
    "ping_failed",
    "invalidated",
    "trim",
    "failback",
    "shutdown",
    "reconfigure",
    "fork",
)

#: Histogram bucket upper bounds, seconds (Prometheus' defaults, a little finer low).
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Cumulative-free bucket counts (last bucket is +Inf), count and sum."""

    buckets: tuple[float, ...]
    counts: tuple[int, ...]
    count: int
    sum: float

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding quantile ``q`` (None when empty)."""
        if self.count == 0:
            return None
        rank = q * self.count
        seen = 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            seen += n
            if seen >= rank and n:
                return bound
        return float("inf")  # pragma: no cover - rank <= count always lands above


class Histogram:
    """A fixed-bucket histogram; ``observe`` is a bisect and two additions (the count
    is the buckets' sum, added up when read).

    A hot path appends its values to ``pending`` instead (a list append, no call of
    ours) and calls :meth:`fold` once ``len(pending)`` reaches :attr:`FOLD_AT`; a
    snapshot folds what is left first, so it reads every value either way."""

    __slots__ = ("_bounds", "_counts", "_sum", "pending")

    #: How many values a hot path leaves in ``pending`` before folding them in.
    FOLD_AT = 256

    def __init__(self, buckets: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        self._bounds = buckets
        self._counts = [0] * (len(buckets) + 1)
        self._sum = 0.0
        self.pending: list[float] = []

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def fold(self) -> None:
        """Count the values left in ``pending``: sorted, then split at each bound
        (a sort and a bisect per bucket in C, rather than a bisect per value)."""
        pending = self.pending
        if not pending:
            return
        pending.sort()
        counts = self._counts
        below = 0
        for i, bound in enumerate(self._bounds):
            upto = bisect_right(pending, bound, below)  # values <= bound
            counts[i] += upto - below
            below = upto
        counts[-1] += len(pending) - below
        self._sum = sum(pending, self._sum)
        pending.clear()

    @property
    def count(self) -> int:
        return sum(self._counts) + len(self.pending)

    def snapshot(self, zeros: int = 0) -> HistogramSnapshot:
        """The counts now, plus ``zeros`` observations of 0.0 counted elsewhere (the
        pool's immediate checkouts, which skip the histogram on their hot path)."""
        self.fold()
        counts = self._counts
        if zeros:
            counts = [counts[0] + zeros, *counts[1:]]
        return HistogramSnapshot(self._bounds, tuple(counts), sum(counts), self._sum)


class ZoneCounters:
    """Monotonic counters and histograms of one zone; guarded by the pool's lock.

    ``wait_time`` observes the checkouts that waited; those served at once are the
    ``checkouts`` it did not observe, added as zeros by its snapshot."""

    __slots__ = (
        "checkouts",
        "closes",
        "connect_errors",
        "connect_time",
        "connects",
        "ejections",
        "failovers",
        "leaks",
        "ping_failures",
        "pings",
        "retries",
        "timeouts",
        "use_time",
        "wait_time",
    )

    def __init__(self) -> None:
        self.checkouts = 0
        self.timeouts = 0
        self.connects = 0
        self.connect_errors = 0
        self.retries = 0
        self.pings = 0
        self.ping_failures = 0
        self.failovers = 0
        self.ejections = 0
        self.leaks = 0
        self.closes: dict[str, int] = dict.fromkeys(CLOSE_REASONS, 0)
        self.wait_time = Histogram()
        self.connect_time = Histogram()
        self.use_time = Histogram()


@dataclass(frozen=True)
class ZoneStats:
    """One zone's state and counters at the moment of the snapshot."""

    zone: str
    state: str  # healthy | probation | ejected
    preferred: bool  # first in the route order now
    open: int
    idle: int
    in_use: int
    opening: int
    waiting: int
    max: int
    checkouts: int
    timeouts: int
    connects: int
    connect_errors: int
    retries: int
    pings: int
    ping_failures: int
    failovers: int
    ejections: int
    closes: dict[str, int]
    wait_time: HistogramSnapshot
    connect_time: HistogramSnapshot
    use_time: HistogramSnapshot
    ejected_for: float | None = None  # seconds of ejection left, when ejected
    leaks: int = 0  # borrowed longer than leak_threshold (each reported once)


@dataclass(frozen=True)
class PoolStats:
    """Snapshot of a pool: ``.zones`` per zone, plus pool-wide figures."""

    name: str
    version: str | None
    local_zone: str
    preferred_zone: str | None
    max_total: int
    waiting: int
    suspends: int
    clock: str
    zones: dict[str, ZoneStats] = field(default_factory=dict)

    @property
    def open(self) -> int:
        return sum(z.open for z in self.zones.values())

    @property
    def in_use(self) -> int:
        return sum(z.in_use for z in self.zones.values())

    @property
    def idle(self) -> int:
        return sum(z.idle for z in self.zones.values())

    def as_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready), histograms as bucket lists."""
        d = asdict(self)
        d["open"], d["in_use"], d["idle"] = self.open, self.in_use, self.idle
        return d
