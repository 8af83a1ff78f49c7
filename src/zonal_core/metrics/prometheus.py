"""Prometheus exporter: a ``prometheus_client`` collector read at scrape time.

Needs ``pip install "zonal[prometheus]"``.

>>> from prometheus_client import CollectorRegistry, generate_latest
>>> from zonal_core.pool import CorePool
>>> from zonal_core.testing import FakeDriver
>>> pool = CorePool(FakeDriver(), zones={"a": "10.0.0.1:5432"}, name="orders")
>>> registry = CollectorRegistry()
>>> collector = register(pool, registry)      # or ZonalCollector(pool, registry)
>>> pool.putconn(pool.getconn())
>>> text = generate_latest(registry).decode()  # what /metrics serves
>>> registry.get_sample_value(
...     "db_client_connection_count", {"pool": "orders", "zone": "a", "state": "idle"})
1.0

Nothing is updated on the pool's hot path: each scrape calls ``pool.stats()`` once per
pool and builds the families from that snapshot.

Metric families (the OpenTelemetry database client semantic conventions, translated
the way OpenTelemetry's own Prometheus exporter does: dots become underscores, the
unit ``s`` becomes a ``_seconds`` suffix, counters end in ``_total``):

=============================================  =========  ==========================
name                                           type       labels
=============================================  =========  ==========================
``db_client_connection_count``                 gauge      pool, zone, state=idle|used
``db_client_connection_max``                   gauge      pool, zone
``db_client_connection_pending_requests``      gauge      pool, zone
``db_client_connection_timeouts_total``        counter    pool, zone
``db_client_connection_create_time_seconds``   histogram  pool, zone
``db_client_connection_wait_time_seconds``     histogram  pool, zone
``db_client_connection_use_time_seconds``      histogram  pool, zone
``zonal_checkouts_total``                      counter    pool, zone
``zonal_connects_total``                       counter    pool, zone
``zonal_connect_errors_total``                 counter    pool, zone
``zonal_retries_total``                        counter    pool, zone
``zonal_pings_total``                          counter    pool, zone
``zonal_ping_failures_total``                  counter    pool, zone
``zonal_failovers_total``                      counter    pool, zone
``zonal_ejections_total``                      counter    pool, zone
``zonal_leaks_total``                          counter    pool, zone
``zonal_closes_total``                         counter    pool, zone, reason
``zonal_connections_opening``                  gauge      pool, zone
``zonal_zone_healthy``                         gauge      pool, zone, version
``zonal_zone_state``                           gauge      pool, zone, version, state
``zonal_zone_preferred``                       gauge      pool, zone, version
``zonal_zone_ejection_remaining_seconds``      gauge      pool, zone
``zonal_suspends_total``                       counter    pool
``zonal_pool_connection_limit``                gauge      pool
``zonal_pool_info``                            info       pool, version, local_zone, clock
=============================================  =========  ==========================

Choices:

- ``version`` (the topology's, ``""`` when it has none) is a label only of
  ``zonal_pool_info`` and of the zone routing gauges (healthy, state, preferred), whose
  meaning depends on the topology. Counters and histograms do not carry it, so a
  topology change does not break ``rate()`` over them; join on ``pool`` with
  ``zonal_pool_info`` to break anything down by version.
- ``db_client_connection_count`` counts open connections (idle + used); connections
  being opened are ``zonal_connections_opening``.
- ``db_client_connection_pending_requests`` of a zone is the checkouts waiting for it
  (they wait for the preferred zone).
- A timeout is counted against the zone that was preferred when it happened.
- Histograms are in seconds; their cumulative buckets are built from the pool's
  per-bucket counts, ``_count`` equals the ``+Inf`` bucket, ``_sum`` is exact.
- ``zonal_zone_state`` has one series per state (``healthy``, ``probation``,
  ``ejected``), 1 for the current one; ``zonal_zone_healthy`` is 1 only when healthy.
- No endpoint (host, port, user, password) is ever a label.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        InfoMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector
    from prometheus_client.utils import floatToGoString
except ImportError as exc:  # tested by hiding prometheus_client
    raise ImportError(
        "zonal_core.metrics.prometheus needs prometheus_client: "
        'pip install "zonal[prometheus]"'
    ) from exc

from zonal_core.metrics import ZONE_STATES, PoolSet, StatsSource, label
from zonal_core.stats import HistogramSnapshot, PoolStats, ZoneStats

__all__ = ["ZonalCollector", "cumulative_buckets", "register"]

_ZONE = ("pool", "zone")
_ZONE_VERSION = ("pool", "zone", "version")

# (name without _total, ZoneStats field, help)
_ZONE_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("db_client_connection_timeouts", "timeouts",
     "Checkouts that timed out waiting for a connection."),
    ("zonal_checkouts", "checkouts", "Connections handed out."),
    ("zonal_connects", "connects", "Connections opened."),
    ("zonal_connect_errors", "connect_errors", "Connection attempts that failed."),
    ("zonal_retries", "retries",
     "Connection attempts retried after 'server full' or 'starting up'."),
    ("zonal_pings", "pings", "Pre-pings sent."),
    ("zonal_ping_failures", "ping_failures", "Pre-pings that failed or timed out."),
    ("zonal_failovers", "failovers", "Times traffic left this zone for another."),
    ("zonal_ejections", "ejections", "Times an endpoint of this zone was ejected."),
    ("zonal_leaks", "leaks", "Connections borrowed longer than leak_threshold (once each)."),
)

# (name without the unit, ZoneStats field, help)
_HISTOGRAMS: tuple[tuple[str, str, str], ...] = (
    ("db_client_connection_create_time_seconds", "connect_time",
     "Time it took to create a new connection."),
    ("db_client_connection_wait_time_seconds", "wait_time",
     "Time it took to obtain an open connection from the pool."),
    ("db_client_connection_use_time_seconds", "use_time",
     "Time between borrowing a connection and returning it to the pool."),
)


def cumulative_buckets(h: HistogramSnapshot) -> list[tuple[str, float]]:
    """Prometheus buckets (``le``, cumulative count) from per-bucket counts.

    >>> from zonal_core.stats import HistogramSnapshot
    >>> cumulative_buckets(HistogramSnapshot((0.1, 1.0), (2, 0, 1), 3, 2.5))
    [('0.1', 2.0), ('1.0', 2.0), ('+Inf', 3.0)]
    """
    out: list[tuple[str, float]] = []
    seen = 0
    for bound, n in zip((*h.buckets, float("inf")), h.counts, strict=True):
        seen += n
        out.append((floatToGoString(bound), float(seen)))  # type: ignore[no-untyped-call]
    return out


class _Families:
    """The families of one scrape, filled pool by pool."""

    def __init__(self) -> None:
        self.count = GaugeMetricFamily(
            "db_client_connection_count",
            "Open connections by state: idle in the pool or used by the application.",
            labels=(*_ZONE, "state"))
        self.max = GaugeMetricFamily(
            "db_client_connection_max", "Most open connections allowed in the zone.",
            labels=_ZONE)
        self.pending = GaugeMetricFamily(
            "db_client_connection_pending_requests",
            "Checkouts waiting for a connection of the zone.", labels=_ZONE)
        self.counters = [
            (CounterMetricFamily(name, doc, labels=_ZONE), field)
            for name, field, doc in _ZONE_COUNTERS
        ]
        self.histograms = [
            (HistogramMetricFamily(name, doc, labels=_ZONE), field)
            for name, field, doc in _HISTOGRAMS
        ]
        self.closes = CounterMetricFamily(
            "zonal_closes", "Connections closed, by reason.", labels=(*_ZONE, "reason"))
        self.opening = GaugeMetricFamily(
            "zonal_connections_opening", "Connections being opened now.", labels=_ZONE)
        self.healthy = GaugeMetricFamily(
            "zonal_zone_healthy", "1 if every endpoint of the zone is healthy, else 0.",
            labels=_ZONE_VERSION)
        self.state = GaugeMetricFamily(
            "zonal_zone_state",
            "1 for the zone's health state (healthy, probation, ejected), 0 for the others.",
            labels=(*_ZONE_VERSION, "state"))
        self.preferred = GaugeMetricFamily(
            "zonal_zone_preferred", "1 for the zone new checkouts go to now, else 0.",
            labels=_ZONE_VERSION)
        self.ejected_for = GaugeMetricFamily(
            "zonal_zone_ejection_remaining_seconds",
            "Seconds until an ejected zone may be probed again (0 when not ejected).",
            labels=_ZONE)
        self.suspends = CounterMetricFamily(
            "zonal_suspends",
            "Times the process was found frozen or asleep (idle connections dropped).",
            labels=("pool",))
        self.limit = GaugeMetricFamily(
            "zonal_pool_connection_limit", "Most open connections across all zones.",
            labels=("pool",))
        self.info = InfoMetricFamily(
            "zonal_pool", "The pool's topology version, local zone and clock source.",
            labels=("pool",))

    def add_pool(self, stats: PoolStats) -> None:
        pool, version = label(stats.name), label(stats.version)
        for zs in stats.zones.values():
            self._add_zone(pool, version, zs)
        self.suspends.add_metric([pool], float(stats.suspends))
        self.limit.add_metric([pool], float(stats.max_total))
        self.info.add_metric([pool], {"version": version,
                                      "local_zone": label(stats.local_zone),
                                      "clock": label(stats.clock)})

    def _add_zone(self, pool: str, version: str, zs: ZoneStats) -> None:
        zone = label(zs.zone)
        key = [pool, zone]
        self.count.add_metric([*key, "idle"], float(zs.idle))
        self.count.add_metric([*key, "used"], float(zs.in_use))
        self.max.add_metric(key, float(zs.max))
        self.pending.add_metric(key, float(zs.waiting))
        for family, field in self.counters:
            family.add_metric(key, float(getattr(zs, field)))
        for hfamily, field in self.histograms:
            h: HistogramSnapshot = getattr(zs, field)
            hfamily.add_metric(key, cumulative_buckets(h), h.sum)
        for reason, n in sorted(zs.closes.items()):
            self.closes.add_metric([*key, label(reason)], float(n))
        self.opening.add_metric(key, float(zs.opening))
        vkey = [pool, zone, version]
        self.healthy.add_metric(vkey, 1.0 if zs.state == "healthy" else 0.0)
        states = ZONE_STATES if zs.state in ZONE_STATES else (*ZONE_STATES, zs.state)
        for st in states:
            self.state.add_metric([*vkey, label(st)], 1.0 if st == zs.state else 0.0)
        self.preferred.add_metric(vkey, 1.0 if zs.preferred else 0.0)
        self.ejected_for.add_metric(key, zs.ejected_for or 0.0)

    def __iter__(self) -> Iterator[Metric]:
        yield self.count
        yield self.max
        yield self.pending
        for family, _ in self.counters:
            yield family
        for hfamily, _ in self.histograms:
            yield hfamily
        yield from (self.closes, self.opening, self.healthy, self.state, self.preferred,
                    self.ejected_for, self.suspends, self.limit, self.info)


class ZonalCollector(Collector):
    """A custom collector reporting one or more zonal pools at scrape time.

    ``pool`` is anything with a ``stats()`` method returning
    :class:`~zonal_core.stats.PoolStats` (a core pool, ``engine.pool`` of a zonal
    SQLAlchemy engine, ...). With ``registry``, the collector registers itself there.
    More pools can join with :meth:`add`; each needs its own name.

    >>> from prometheus_client import CollectorRegistry
    >>> from zonal_core.pool import CorePool
    >>> from zonal_core.testing import FakeDriver
    >>> pool = CorePool(FakeDriver(), zones={"a": "10.0.0.1:5432"}, name="orders")
    >>> registry = CollectorRegistry()
    >>> collector = ZonalCollector(pool, registry)
    >>> registry.get_sample_value("zonal_pool_connection_limit", {"pool": "orders"})
    5.0
    >>> collector.unregister()
    """

    def __init__(self, pool: StatsSource | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.pools = PoolSet()
        self._registry: CollectorRegistry | None = None
        if pool is not None:
            self.pools.add(pool)
        if registry is not None:
            registry.register(self)
            self._registry = registry

    def add(self, pool: StatsSource) -> None:
        """Report ``pool`` too (its name must differ from the others')."""
        self.pools.add(pool)

    def remove(self, pool: StatsSource) -> bool:
        """Stop reporting ``pool``; True if it was reported."""
        return self.pools.discard(pool)

    def unregister(self) -> None:
        """Leave the registry this collector registered itself in, if any."""
        registry, self._registry = self._registry, None
        if registry is not None:
            registry.unregister(self)
            with _LOCK:
                if _BY_REGISTRY.get(registry) is self:
                    del _BY_REGISTRY[registry]

    def collect(self) -> Iterable[Metric]:
        """Build every family from one ``stats()`` snapshot per pool."""
        snapshots = self.pools.snapshots()
        if not snapshots:
            return []
        families = _Families()
        for stats in snapshots:
            families.add_pool(stats)
        return list(families)

    def describe(self) -> Iterable[Metric]:
        """The families without samples: lets a registry check names without a scrape."""
        return list(_Families())


_LOCK = threading.Lock()
_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, ZonalCollector] = (
    weakref.WeakKeyDictionary())


def register(pool: StatsSource, registry: CollectorRegistry = REGISTRY) -> ZonalCollector:
    """Report ``pool`` in ``registry``; returns the collector doing it.

    All pools registered in one registry share one collector (one family per metric
    name, one series per pool and zone), so calling this once per pool is right.

    >>> from prometheus_client import CollectorRegistry
    >>> from zonal_core.pool import CorePool
    >>> from zonal_core.testing import FakeDriver
    >>> registry = CollectorRegistry()
    >>> orders = CorePool(FakeDriver(), zones={"a": "10.0.0.1:5432"}, name="orders")
    >>> users = CorePool(FakeDriver(), zones={"a": "10.0.0.1:5432"}, name="users")
    >>> register(orders, registry) is register(users, registry)
    True
    """
    with _LOCK:
        collector = _BY_REGISTRY.get(registry)
        if collector is None:
            collector = ZonalCollector(pool, registry)
            _BY_REGISTRY[registry] = collector
            return collector
    collector.add(pool)
    return collector
