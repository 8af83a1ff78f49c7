"""Metrics exporters for zonal pools: Prometheus and OpenTelemetry.

Both exporters read :meth:`pool.stats() <zonal_core.pool.CorePool.stats>` when they
are collected (a scrape, an export interval), never on a pool's hot path: the pool
only bumps plain integers under its lock.

- :mod:`zonal_core.metrics.prometheus` -- a ``prometheus_client`` collector
  (``pip install "zonal[prometheus]"``).
- :mod:`zonal_core.metrics.otel` -- OpenTelemetry instruments named per the database
  client semantic conventions (``pip install "zonal[otel]"``).

This package imports neither library; only the exporter modules do.

Anything with a ``stats()`` method returning :class:`~zonal_core.stats.PoolStats` can
be exported (:class:`StatsSource`): the core pools and the adapters' pools alike.

>>> from zonal_core.pool import CorePool
>>> from zonal_core.testing import FakeDriver
>>> pool = CorePool(FakeDriver(), zones={"a": "10.0.0.1:5432"}, name="orders")
>>> isinstance(pool, StatsSource)
True

Label and attribute values are the pool name, zone names, the topology version,
connection states and close reasons: never an endpoint, never a credential (each value
also goes through :func:`zonal_core.secrets.mask` as a last line of defence).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

from zonal_core.errors import ZonalConfigError
from zonal_core.secrets import mask
from zonal_core.stats import PoolStats

__all__ = ["ZONE_STATES", "PoolSet", "StatsSource", "label"]

#: Every value of ``ZoneStats.state``; the state gauges report each of them (0 or 1).
ZONE_STATES = ("healthy", "probation", "ejected")


@runtime_checkable
class StatsSource(Protocol):
    """What an exporter needs from a pool: a :class:`PoolStats` snapshot on demand."""

    def stats(self) -> PoolStats:
        """A snapshot of the pool, taken now."""
        ...


def label(value: object) -> str:
    """A label/attribute value: ``""`` for None, anything password-shaped masked.

    >>> label("eu-west-1a"), label(None), label("app:s3cr3t@10.0.0.1:5432")
    ('eu-west-1a', '', 'app:***@10.0.0.1:5432')
    """
    return "" if value is None else mask(str(value))


class _Entry:
    """One exported pool: held weakly where it can be, so a dropped pool drops out."""

    __slots__ = ("_ref", "name")

    def __init__(self, source: StatsSource, name: str) -> None:
        self.name = name
        try:
            self._ref: Callable[[], StatsSource | None] = weakref.ref(source)
        except TypeError:  # no __weakref__ slot: hold it strongly
            self._ref = lambda: source

    def get(self) -> StatsSource | None:
        return self._ref()


class PoolSet:
    """The pools one exporter reports, by name; thread-safe.

    A pool is held weakly (when it allows weak references): once the application
    drops it, it leaves the metrics. Two live pools with the same name would give
    the same label set twice, so :meth:`add` refuses that.

    >>> from zonal_core.pool import CorePool
    >>> from zonal_core.testing import FakeDriver
    >>> pools = PoolSet()
    >>> pool = CorePool(FakeDriver(), zones={"a": "10.0.0.1:5432"}, name="orders")
    >>> pools.add(pool)
    >>> [s.name for s in pools.snapshots()]
    ['orders']
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[_Entry] = []

    def _live(self) -> list[tuple[_Entry, StatsSource]]:
        out: list[tuple[_Entry, StatsSource]] = []
        for entry in self._entries:
            source = entry.get()
            if source is not None:
                out.append((entry, source))
        return out

    def add(self, source: StatsSource) -> None:
        """Export ``source`` too (a no-op if it is already exported).

        Raises :class:`~zonal_core.errors.ZonalConfigError` if another live pool of
        the same name is exported already.
        """
        if not callable(getattr(source, "stats", None)):
            raise TypeError(f"{type(source).__name__} has no stats() method")
        name = source.stats().name
        with self._lock:
            live = self._live()
            if any(s is source for _, s in live):
                return
            if any(e.name == name for e, _ in live):
                raise ZonalConfigError(
                    "name",
                    f"another pool named {label(name)!r} is exported here already; "
                    "metrics tell pools apart by name",
                    fix="give each pool its own name, e.g. name='orders'",
                )
            self._entries = [e for e, _ in live]
            self._entries.append(_Entry(source, name))

    def discard(self, source: StatsSource) -> bool:
        """Stop exporting ``source``; True if it was exported."""
        with self._lock:
            live = self._live()
            self._entries = [e for e, s in live if s is not source]
            return len(self._entries) != len(live)

    def sources(self) -> list[StatsSource]:
        """The live pools, in the order they were added."""
        with self._lock:
            return [s for _, s in self._live()]

    def snapshots(self) -> list[PoolStats]:
        """One fresh ``stats()`` of each live pool."""
        return [s.stats() for s in self.sources()]

    def __contains__(self, source: object) -> bool:
        return any(s is source for s in self.sources())

    def __len__(self) -> int:
        return len(self.sources())

    def __iter__(self) -> Iterator[StatsSource]:
        return iter(self.sources())
