"""OpenTelemetry exporter: instruments named per the database client semconv.

Needs ``pip install "zonal[otel]"`` (``opentelemetry-api`` only; bring your own SDK).

>>> from opentelemetry.sdk.metrics import MeterProvider
>>> from opentelemetry.sdk.metrics.export import InMemoryMetricReader
>>> from zonal_core.pool import CorePool
>>> from zonal_core.testing import FakeDriver
>>> reader = InMemoryMetricReader()
>>> provider = MeterProvider(metric_readers=[reader])
>>> pool = CorePool(FakeDriver(), zones={"a": "10.0.0.1:5432"}, name="orders")
>>> handle = instrument(pool, meter_provider=provider)
>>> pool.putconn(pool.getconn())
>>> data = reader.get_metrics_data()     # the pool is read now, at collection time
>>> handle.stop()                        # the pool is no longer reported

Instruments (attributes on every data point: ``db.client.connection.pool.name`` = the
pool's name and ``zonal.zone`` = the zone, except where noted):

==========================================  ===========================  ==============
name                                        kind                         unit
==========================================  ===========================  ==============
``db.client.connection.count``              ObservableUpDownCounter      ``{connection}``
                                            (+ ``db.client.connection.state`` = idle|used)
``db.client.connection.max``                ObservableUpDownCounter      ``{connection}``
``db.client.connection.pending_requests``   ObservableUpDownCounter      ``{request}``
``db.client.connection.timeouts``           ObservableCounter            ``{timeout}``
``db.client.connection.create_time``        Histogram                    ``s``
``db.client.connection.wait_time``          Histogram                    ``s``
``db.client.connection.use_time``           Histogram                    ``s``
``zonal.checkouts``                         ObservableCounter            ``{checkout}``
``zonal.connects``                          ObservableCounter            ``{connection}``
``zonal.connect_errors``                    ObservableCounter            ``{error}``
``zonal.retries``                           ObservableCounter            ``{retry}``
``zonal.pings``                             ObservableCounter            ``{ping}``
``zonal.ping_failures``                     ObservableCounter            ``{ping}``
``zonal.failovers``                         ObservableCounter            ``{failover}``
``zonal.ejections``                         ObservableCounter            ``{ejection}``
``zonal.leaks``                             ObservableCounter            ``{connection}``
``zonal.closes``                            ObservableCounter            ``{connection}``
                                            (+ ``zonal.close.reason``)
``zonal.connections.opening``               ObservableUpDownCounter      ``{connection}``
``zonal.zone.state``                        ObservableGauge (0 or 1)     ``1``
                                            (+ ``zonal.zone.state``, ``zonal.topology.version``)
``zonal.zone.preferred``                    ObservableGauge (0 or 1)     ``1``
                                            (+ ``zonal.topology.version``)
``zonal.suspends``                          ObservableCounter, no zone   ``{suspend}``
==========================================  ===========================  ==============

How snapshots become measurements, without double counting:

- Gauges and counters are observable: their callbacks read ``pool.stats()`` at each
  collection and report the current value (counters: the cumulative total since the
  pool started), which is exactly what observable instruments mean.
- The three histograms are synchronous ``Histogram`` instruments, because the API has
  no observable histogram. At each collection (in the callback of
  ``db.client.connection.count``, which the SDK runs before it aggregates) only what
  is new since the previous collection is recorded: per bucket, the difference in
  counts, replayed as that many values inside the bucket, spread so that their sum is
  the difference in ``sum``. The bucket boundaries are passed as the instruments'
  advisory (the pool's own, in seconds), so an SDK that honours it reports the pool's
  histograms exactly: same buckets, same count, same sum. The first collection
  reports the pool's whole history, in line with the cumulative counters. The cost
  is one ``record()`` per new observation at collection time (a few microseconds
  each, off the pool's hot path).
- ``version`` (the topology's) is an attribute of the zone routing gauges only, so a
  topology change does not split the counters' and histograms' series.

Instruments are shared: every pool instrumented against one meter provider is
reported by the same instruments (one data point per pool and zone), because an SDK
keeps one instrument per name and would drop a second pool's callbacks. Pool names
must therefore differ. The OpenTelemetry API cannot unregister callbacks;
:meth:`Instrumentation.stop` makes them skip the pool instead. Instrument after the
SDK's meter provider is set, or pass ``meter_provider``.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry.metrics import CallbackOptions, Histogram, Meter, MeterProvider, Observation
except ImportError as exc:  # tested by hiding opentelemetry
    raise ImportError(
        'zonal_core.metrics.otel needs opentelemetry-api: pip install "zonal[otel]"'
    ) from exc

from zonal_core.metrics import ZONE_STATES, PoolSet, StatsSource, label
from zonal_core.stats import DEFAULT_BUCKETS, HistogramSnapshot, PoolStats, ZoneStats

__all__ = ["METER_NAME", "Instrumentation", "instrument", "replay"]

#: The instrumentation scope name of every zonal instrument.
METER_NAME = "zonal"

POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"
ZONE = "zonal.zone"
CLOSE_REASON = "zonal.close.reason"
ZONE_STATE = "zonal.zone.state"
VERSION = "zonal.topology.version"

_Attrs = dict[str, str]

# (name, ZoneStats field, unit, description)
_ZONE_COUNTERS: tuple[tuple[str, str, str, str], ...] = (
    ("db.client.connection.timeouts", "timeouts", "{timeout}",
     "The number of connection timeouts that have occurred trying to obtain a "
     "connection from the pool."),
    ("zonal.checkouts", "checkouts", "{checkout}", "Connections handed out."),
    ("zonal.connects", "connects", "{connection}", "Connections opened."),
    ("zonal.connect_errors", "connect_errors", "{error}", "Connection attempts that failed."),
    ("zonal.retries", "retries", "{retry}",
     "Connection attempts retried after 'server full' or 'starting up'."),
    ("zonal.pings", "pings", "{ping}", "Pre-pings sent."),
    ("zonal.ping_failures", "ping_failures", "{ping}", "Pre-pings that failed or timed out."),
    ("zonal.failovers", "failovers", "{failover}", "Times traffic left this zone for another."),
    ("zonal.ejections", "ejections", "{ejection}",
     "Times an endpoint of this zone was ejected."),
    ("zonal.leaks", "leaks", "{connection}",
     "Connections borrowed longer than leak_threshold (each counted once)."),
)

# (name, ZoneStats field, description)
_HISTOGRAMS: tuple[tuple[str, str, str], ...] = (
    ("db.client.connection.create_time", "connect_time",
     "The time it took to create a new connection."),
    ("db.client.connection.wait_time", "wait_time",
     "The time it took to obtain an open connection from the pool."),
    ("db.client.connection.use_time", "use_time",
     "The time between borrowing a connection and returning it to the pool."),
)


def replay(h: HistogramSnapshot, since: HistogramSnapshot | None = None
           ) -> list[tuple[float, int]]:
    """Values that, recorded, add what ``h`` holds beyond ``since`` to a histogram.

    Returns ``(value, times)`` pairs: per bucket, its new observations at one value
    inside that bucket, chosen so that the values sum to the new ``sum``. Recorded
    into a histogram with the same boundaries, this gives the same bucket counts,
    count and sum as the pool's. If ``h`` went backwards (its pool was reset),
    all of ``h`` is new.

    >>> from zonal_core.stats import HistogramSnapshot
    >>> before = HistogramSnapshot((1.0, 2.0), (1, 0, 0), 1, 0.5)
    >>> after = HistogramSnapshot((1.0, 2.0), (1, 2, 0), 3, 3.5)
    >>> replay(after, before)        # two new values in (1, 2], summing to 3.0
    [(1.5, 2)]
    """
    counts, total = list(h.counts), h.sum
    if since is not None and since.buckets == h.buckets:
        diff = [a - b for a, b in zip(h.counts, since.counts, strict=True)]
        if min(diff, default=0) >= 0:
            counts, total = diff, h.sum - since.sum
    if not any(counts):
        return []
    bounds = h.buckets
    # Bucket i holds values in (lo, hi]; the first starts at 0 (durations).
    finite = [(bounds[i - 1] if i else 0.0, bounds[i], n)
              for i, n in enumerate(counts[:-1]) if n]
    over = counts[-1]
    top = bounds[-1] if bounds else 0.0
    low = sum(lo * n for lo, _, n in finite)
    high = sum(hi * n for _, hi, n in finite)
    # What the finite buckets should sum to; the overflow bucket takes the rest.
    target = total - over * top if over else total
    target = min(max(target, low), high)
    t = (target - low) / (high - low) if high > low else 1.0
    out: list[tuple[float, int]] = []
    for lo, hi, n in finite:
        v = lo + t * (hi - lo)
        if lo > 0 and v <= lo:  # keep it out of the bucket below
            v = math.nextafter(lo, math.inf)
        out.append((v, n))
    if over:
        rest = total - sum(v * n for v, n in out)
        out.append((max(rest / over, math.nextafter(top, math.inf)), over))
    return out


class _Exporter:
    """The instruments of one meter provider and the pools they report."""

    def __init__(self, meter: Meter) -> None:
        self.pools = PoolSet()
        self._lock = threading.Lock()
        # Per pool (by identity) and (zone, histogram name): what was recorded so far.
        self._recorded: weakref.WeakKeyDictionary[Any, dict[tuple[str, str],
                                                            HistogramSnapshot]] = (
            weakref.WeakKeyDictionary())
        self._strong: dict[int, dict[tuple[str, str], HistogramSnapshot]] = {}
        self.histograms: list[tuple[Histogram, str]] = [
            (_histogram(meter, name, doc), field) for name, field, doc in _HISTOGRAMS]

        meter.create_observable_up_down_counter(
            "db.client.connection.count", [self._count], unit="{connection}",
            description="The number of connections that are currently in state "
                        "described by the state attribute.")
        meter.create_observable_up_down_counter(
            "db.client.connection.max", [self._zone_value("max")], unit="{connection}",
            description="The maximum number of open connections allowed.")
        meter.create_observable_up_down_counter(
            "db.client.connection.pending_requests", [self._zone_value("waiting")],
            unit="{request}",
            description="The number of current pending requests for an open connection.")
        for name, field, unit, doc in _ZONE_COUNTERS:
            meter.create_observable_counter(
                name, [self._zone_value(field)], unit=unit, description=doc)
        meter.create_observable_counter(
            "zonal.closes", [self._closes], unit="{connection}",
            description="Connections closed, by reason.")
        meter.create_observable_up_down_counter(
            "zonal.connections.opening", [self._zone_value("opening")], unit="{connection}",
            description="Connections being opened now.")
        meter.create_observable_gauge(
            "zonal.zone.state", [self._state], unit="1",
            description="1 for the zone's health state (healthy, probation, ejected), "
                        "0 for the others.")
        meter.create_observable_gauge(
            "zonal.zone.preferred", [self._preferred], unit="1",
            description="1 for the zone new checkouts go to now, else 0.")
        meter.create_observable_counter(
            "zonal.suspends", [self._suspends], unit="{suspend}",
            description="Times the process was found frozen or asleep "
                        "(idle connections dropped).")

    # -- callbacks ------------------------------------------------------------

    def _zones(self) -> Iterable[tuple[PoolStats, ZoneStats, _Attrs]]:
        for stats in self.pools.snapshots():
            pool = label(stats.name)
            for zs in stats.zones.values():
                yield stats, zs, {POOL_NAME: pool, ZONE: label(zs.zone)}

    def _count(self, _options: CallbackOptions) -> Iterable[Observation]:
        self.record_histograms()
        out = []
        for _, zs, attrs in self._zones():
            out.append(Observation(zs.idle, {**attrs, STATE: "idle"}))
            out.append(Observation(zs.in_use, {**attrs, STATE: "used"}))
        return out

    def _zone_value(self, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(getattr(zs, field), attrs) for _, zs, attrs in self._zones()]
        return callback

    def _closes(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {**attrs, CLOSE_REASON: label(reason)})
                for _, zs, attrs in self._zones() for reason, n in sorted(zs.closes.items())]

    def _state(self, _options: CallbackOptions) -> Iterable[Observation]:
        out = []
        for stats, zs, attrs in self._zones():
            states = ZONE_STATES if zs.state in ZONE_STATES else (*ZONE_STATES, zs.state)
            for st in states:
                out.append(Observation(1 if st == zs.state else 0, {
                    **attrs, ZONE_STATE: label(st), VERSION: label(stats.version)}))
        return out

    def _preferred(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(1 if zs.preferred else 0, {**attrs, VERSION: label(stats.version)})
                for stats, zs, attrs in self._zones()]

    def _suspends(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s.suspends, {POOL_NAME: label(s.name)})
                for s in self.pools.snapshots()]

    # -- histograms -----------------------------------------------------------

    def _memory(self, source: StatsSource) -> dict[tuple[str, str], HistogramSnapshot]:
        try:
            return self._recorded.setdefault(source, {})
        except TypeError:  # not weakly referenceable
            return self._strong.setdefault(id(source), {})

    def record_histograms(self) -> None:
        """Record into the histograms what each pool observed since the last call."""
        with self._lock:
            for source in self.pools.sources():
                stats = source.stats()
                memory = self._memory(source)
                pool = label(stats.name)
                for zs in stats.zones.values():
                    attrs = {POOL_NAME: pool, ZONE: label(zs.zone)}
                    for hist, field in self.histograms:
                        snap: HistogramSnapshot = getattr(zs, field)
                        key = (zs.zone, field)
                        for value, times in replay(snap, memory.get(key)):
                            for _ in range(times):
                                hist.record(value, attrs)
                        memory[key] = snap

    def forget(self, source: StatsSource) -> None:
        with self._lock:
            try:
                self._recorded.pop(source, None)
            except TypeError:
                self._strong.pop(id(source), None)


def _histogram(meter: Meter, name: str, description: str) -> Histogram:
    try:
        return meter.create_histogram(
            name, unit="s", description=description,
            explicit_bucket_boundaries_advisory=list(DEFAULT_BUCKETS))
    except TypeError:  # pragma: no cover - opentelemetry-api older than 1.23
        return meter.create_histogram(name, unit="s", description=description)


_LOCK = threading.Lock()
_EXPORTERS: weakref.WeakKeyDictionary[MeterProvider, _Exporter] = weakref.WeakKeyDictionary()
_EXPORTERS_STRONG: dict[int, tuple[MeterProvider, _Exporter]] = {}


def _exporter_for(provider: MeterProvider) -> _Exporter:
    with _LOCK:
        try:
            found = _EXPORTERS.get(provider)
        except TypeError:  # pragma: no cover - a provider without weak references
            pair = _EXPORTERS_STRONG.get(id(provider))
            found = pair[1] if pair else None
        if found is None:
            found = _Exporter(provider.get_meter(METER_NAME, _version()))
            try:
                _EXPORTERS[provider] = found
            except TypeError:  # pragma: no cover
                _EXPORTERS_STRONG[id(provider)] = (provider, found)
        return found


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zonal")
    except PackageNotFoundError:  # a source checkout, not installed
        return None


class Instrumentation:
    """What :func:`instrument` returns: stop reporting the pool with :meth:`stop`.

    Also a context manager that stops on exit. It holds the pool weakly (where the
    pool allows), like the instruments do: a dropped pool stops being reported.
    """

    def __init__(self, exporter: _Exporter, pool: StatsSource) -> None:
        self._exporter = exporter
        self._pool: Callable[[], StatsSource | None] | None
        try:
            self._pool = weakref.ref(pool)
        except TypeError:  # no weak references: hold it
            self._pool = lambda: pool

    @property
    def active(self) -> bool:
        """True until :meth:`stop` (or until the pool is garbage-collected)."""
        pool = self._pool() if self._pool is not None else None
        return pool is not None and pool in self._exporter.pools

    def stop(self) -> None:
        """Stop reporting the pool (its callbacks skip it from now on); idempotent."""
        ref, self._pool = self._pool, None
        pool = ref() if ref is not None else None
        if pool is not None:
            self._exporter.pools.discard(pool)
            self._exporter.forget(pool)

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def instrument(pool: StatsSource, meter_provider: MeterProvider | None = None
               ) -> Instrumentation:
    """Report ``pool`` through OpenTelemetry instruments of ``meter_provider``.

    ``meter_provider`` defaults to the global one. ``pool`` is anything with a
    ``stats()`` returning :class:`~zonal_core.stats.PoolStats`. Instrumenting the same
    pool twice is a no-op; another live pool of the same name is a
    :class:`~zonal_core.errors.ZonalConfigError`.

    >>> from opentelemetry.sdk.metrics import MeterProvider
    >>> from zonal_core.pool import CorePool
    >>> from zonal_core.testing import FakeDriver
    >>> pool = CorePool(FakeDriver(), zones={"a": "10.0.0.1:5432"}, name="orders")
    >>> with instrument(pool, MeterProvider()) as handle:
    ...     handle.active
    True
    """
    exporter = _exporter_for(meter_provider or otel_metrics.get_meter_provider())
    exporter.pools.add(pool)
    return Instrumentation(exporter, pool)
