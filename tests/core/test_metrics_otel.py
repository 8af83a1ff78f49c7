"""The OpenTelemetry instruments, read through the SDK's InMemoryMetricReader."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.semconv._incubating.attributes import db_attributes
from opentelemetry.semconv._incubating.metrics import db_metrics

from zonal_core import errors
from zonal_core.clock import FakeClock, Jitter
from zonal_core.metrics.otel import METER_NAME, instrument, replay
from zonal_core.pool import ZonedPool
from zonal_core.stats import DEFAULT_BUCKETS, Histogram, HistogramSnapshot
from zonal_core.testing import FakeDriver

SECRET = "s3cr3t"
ZONES = {"a": f"app:{SECRET}@10.0.0.1:5432", "b": f"app:{SECRET}@10.0.0.2:5432"}
POOL = "db.client.connection.pool.name"


def busy_pool() -> tuple[ZonedPool, FakeClock]:
    """Checkouts, a timeout, a suspend and a failover of zone a, on a fake clock.

    The same story as in test_metrics_prometheus: zone a ends ejected with one
    connection in use; zone b is preferred, with one idle and one used connection.
    """
    clock = FakeClock(1000.0)
    drv = FakeDriver(clock)
    drv.latency["a"] = 0.003
    drv.latency["b"] = 0.02
    pool = ZonedPool(drv, zones=ZONES, local_zone="a", name="orders", version="2024-06",
                     pool_size=2, max_total=4, clock=clock, jitter=Jitter(seed=7))
    held_a = pool.getconn()
    r = pool.getconn()
    clock.advance(0.2)
    pool.putconn(r)
    r = pool.getconn()
    with pytest.raises(errors.PoolTimeout):
        pool.getconn(timeout=1)
    clock.advance(0.5)
    pool.putconn(r)
    clock.advance(301)
    drv.set("a", "refuse")
    held_b = pool.getconn()
    r = pool.getconn()
    clock.advance(0.05)
    pool.putconn(r)
    pool._held = (held_a, held_b)  # type: ignore[attr-defined]
    return pool, clock


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """Metric name -> its data points, from one collection."""
    data = reader.get_metrics_data()
    out: dict[str, list[Any]] = {}
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            assert sm.scope.name == METER_NAME
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


def units(reader: InMemoryMetricReader) -> dict[str, tuple[str | None, str]]:
    data = reader.get_metrics_data()
    assert data is not None
    return {m.name: (m.unit, type(m.data).__name__)
            for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


def at(pts: list[Any], **attrs: str) -> Any:
    """The one data point whose attributes include ``attrs`` (dots spelled as __)."""
    want = {k.replace("__", "."): v for k, v in attrs.items()}
    found = [p for p in pts if all(p.attributes.get(k) == v for k, v in want.items())]
    assert len(found) == 1, (want, [dict(p.attributes) for p in pts])
    return found[0]


def val(pts: list[Any], zone: str, **attrs: str) -> float:
    p = at(pts, zonal__zone=zone, **attrs)
    assert isinstance(p, NumberDataPoint)
    return p.value


@pytest.fixture
def setup() -> Iterator[tuple[ZonedPool, FakeClock, InMemoryMetricReader]]:
    pool, clock = busy_pool()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    handle = instrument(pool, meter_provider=provider)
    yield pool, clock, reader
    handle.stop()
    provider.shutdown()


def test_names_units_and_kinds_follow_the_semconv(
        setup: tuple[ZonedPool, FakeClock, InMemoryMetricReader]) -> None:
    _, _, reader = setup
    got = units(reader)
    assert got[db_metrics.DB_CLIENT_CONNECTION_COUNT] == ("{connection}", "Sum")
    assert got[db_metrics.DB_CLIENT_CONNECTION_MAX] == ("{connection}", "Sum")
    assert got[db_metrics.DB_CLIENT_CONNECTION_PENDING_REQUESTS] == ("{request}", "Sum")
    assert got[db_metrics.DB_CLIENT_CONNECTION_TIMEOUTS] == ("{timeout}", "Sum")
    for name in (db_metrics.DB_CLIENT_CONNECTION_CREATE_TIME,
                 db_metrics.DB_CLIENT_CONNECTION_WAIT_TIME,
                 db_metrics.DB_CLIENT_CONNECTION_USE_TIME):
        assert got[name] == ("s", "Histogram")
    for name in ("zonal.checkouts", "zonal.connects", "zonal.connect_errors", "zonal.retries",
                 "zonal.pings", "zonal.ping_failures", "zonal.failovers", "zonal.ejections",
                 "zonal.closes", "zonal.suspends", "zonal.connections.opening"):
        assert got[name][1] == "Sum", name
    assert got["zonal.zone.state"] == ("1", "Gauge")
    assert got["zonal.zone.preferred"] == ("1", "Gauge")
    assert POOL == db_attributes.DB_CLIENT_CONNECTION_POOL_NAME
    assert db_attributes.DB_CLIENT_CONNECTION_STATE == "db.client.connection.state"


def test_values_and_attributes(setup: tuple[ZonedPool, FakeClock, InMemoryMetricReader]
                               ) -> None:
    _, _, reader = setup
    p = points(reader)
    count = p["db.client.connection.count"]
    assert {frozenset(x.attributes) for x in count} == {
        frozenset({POOL, "zonal.zone", "db.client.connection.state"})}
    assert all(x.attributes[POOL] == "orders" for x in count)
    assert val(count, "b", db__client__connection__state="idle") == 1
    assert val(count, "b", db__client__connection__state="used") == 1
    assert val(count, "a", db__client__connection__state="idle") == 0
    assert val(count, "a", db__client__connection__state="used") == 1
    assert val(p["db.client.connection.max"], "a") == 2
    assert val(p["db.client.connection.pending_requests"], "b") == 0
    assert val(p["db.client.connection.timeouts"], "a") == 1
    assert val(p["db.client.connection.timeouts"], "b") == 0
    assert val(p["zonal.failovers"], "a") == 1
    assert val(p["zonal.ejections"], "a") == 1
    assert val(p["zonal.connect_errors"], "a") == 2
    assert val(p["zonal.checkouts"], "a") == 3
    assert val(p["zonal.checkouts"], "b") == 2
    assert val(p["zonal.connects"], "b") == 2
    assert val(p["zonal.closes"], "a", zonal__close__reason="suspend") == 1
    assert val(p["zonal.closes"], "a", zonal__close__reason="lifetime") == 0
    (suspends,) = p["zonal.suspends"]
    assert dict(suspends.attributes) == {POOL: "orders"} and suspends.value == 1
    state_a = {x.attributes["zonal.zone.state"]: x.value for x in p["zonal.zone.state"]
               if x.attributes["zonal.zone"] == "a"}
    assert state_a == {"healthy": 0, "probation": 0, "ejected": 1}
    pref = at(p["zonal.zone.preferred"], zonal__zone="b")
    assert pref.value == 1 and pref.attributes["zonal.topology.version"] == "2024-06"
    assert val(p["zonal.zone.preferred"], "a") == 0


def test_histograms_match_the_pool_exactly(
        setup: tuple[ZonedPool, FakeClock, InMemoryMetricReader]) -> None:
    pool, _, reader = setup
    p = points(reader)
    st = pool.stats()
    for name, field in (("db.client.connection.wait_time", "wait_time"),
                        ("db.client.connection.create_time", "connect_time"),
                        ("db.client.connection.use_time", "use_time")):
        for zone, zs in st.zones.items():
            snap: HistogramSnapshot = getattr(zs, field)
            dp = at(p[name], zonal__zone=zone)
            assert isinstance(dp, HistogramDataPoint)
            assert dict(dp.attributes or {}) == {POOL: "orders", "zonal.zone": zone}
            assert tuple(dp.explicit_bounds) == DEFAULT_BUCKETS
            assert tuple(dp.bucket_counts) == snap.counts, (name, zone)
            assert dp.count == snap.count
            assert dp.sum == pytest.approx(snap.sum, rel=1e-9, abs=1e-12)
    wait_a = at(p["db.client.connection.wait_time"], zonal__zone="a")
    assert wait_a.count == st.zones["a"].checkouts == 3
    create_a = at(p["db.client.connection.create_time"], zonal__zone="a")
    assert create_a.count == 2 and create_a.sum == pytest.approx(0.006)


def test_collecting_again_does_not_count_twice(
        setup: tuple[ZonedPool, FakeClock, InMemoryMetricReader]) -> None:
    pool, clock, reader = setup
    first = at(points(reader)["db.client.connection.wait_time"], zonal__zone="b")
    again = at(points(reader)["db.client.connection.wait_time"], zonal__zone="b")
    assert (again.count, again.sum) == (first.count, pytest.approx(first.sum))
    for _ in range(4):  # four more checkouts in b, each 0.3 s in use
        r = pool.getconn()
        clock.advance(0.3)
        pool.putconn(r)
    p = points(reader)
    wait = at(p["db.client.connection.wait_time"], zonal__zone="b")
    use = at(p["db.client.connection.use_time"], zonal__zone="b")
    assert wait.count == first.count + 4 == pool.stats().zones["b"].checkouts
    assert use.count == 5 and use.sum == pytest.approx(0.05 + 4 * 0.3)
    assert tuple(use.bucket_counts) == pool.stats().zones["b"].use_time.counts
    assert val(p["zonal.checkouts"], "b") == 6


def test_delta_temporality_reports_only_what_is_new() -> None:
    pool, clock = busy_pool()
    reader = InMemoryMetricReader(
        preferred_temporality={SdkHistogram: AggregationTemporality.DELTA})
    provider = MeterProvider(metric_readers=[reader])
    with instrument(pool, meter_provider=provider):
        first = at(points(reader)["db.client.connection.use_time"], zonal__zone="b")
        assert first.count == 1
        r = pool.getconn()
        clock.advance(2)
        pool.putconn(r)
        second = at(points(reader)["db.client.connection.use_time"], zonal__zone="b")
        assert second.count == 1 and second.sum == pytest.approx(2.0)
    provider.shutdown()


def test_two_pools_share_the_instruments_and_stop_unregisters() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    orders = ZonedPool(FakeDriver(), zones={"a": "10.0.0.1:5432"}, name="orders")
    users = ZonedPool(FakeDriver(), zones={"a": "10.0.0.1:5432"}, name="users")
    h1 = instrument(orders, provider)
    h2 = instrument(users, provider)
    assert instrument(users, provider).active  # the same pool again: a no-op
    users.putconn(users.getconn())
    p = points(reader)
    assert {x.attributes[POOL] for x in p["db.client.connection.max"]} == {"orders", "users"}
    assert at(p["zonal.checkouts"], **{"db.client.connection.pool.name": "users"}).value == 1
    with pytest.raises(errors.ZonalConfigError, match="orders"):
        instrument(ZonedPool(FakeDriver(), zones={"a": "10.0.0.1:5432"}, name="orders"),
                   provider)
    h2.stop()
    h2.stop()  # idempotent
    assert not h2.active and h1.active
    p = points(reader)
    assert {x.attributes[POOL] for x in p["db.client.connection.max"]} == {"orders"}
    h1.stop()
    assert "db.client.connection.max" not in points(reader)
    provider.shutdown()


def test_no_password_in_any_attribute(
        setup: tuple[ZonedPool, FakeClock, InMemoryMetricReader]) -> None:
    _, _, reader = setup
    data = reader.get_metrics_data()
    assert data is not None
    text = data.to_json()
    assert SECRET not in text and "10.0.0." not in text and "orders" in text


def test_without_an_sdk_nothing_breaks() -> None:
    pool = ZonedPool(FakeDriver(), zones={"a": "10.0.0.1:5432"}, name="no-sdk")
    with instrument(pool) as handle:  # the global (no-op or proxy) provider
        assert handle.active
        pool.putconn(pool.getconn())
    assert not handle.active


def test_missing_opentelemetry_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.setitem(sys.modules, "opentelemetry.metrics", None)
    monkeypatch.delitem(sys.modules, "zonal_core.metrics.otel")
    with pytest.raises(ImportError, match=r'pip install "zonal\[otel\]"'):
        importlib.import_module("zonal_core.metrics.otel")


# -- replay: per-bucket differences back into values -------------------------------


def record(values: list[tuple[float, int]], buckets: tuple[float, ...]) -> HistogramSnapshot:
    h = Histogram(buckets)
    for v, n in values:
        for _ in range(n):
            h.observe(v)
    return h.snapshot()


def test_replay_overflow_and_reset() -> None:
    b = (1.0, 2.0)
    after = HistogramSnapshot(b, (0, 1, 2), 3, 1.5 + 10.0)
    out = replay(after)
    assert record(out, b).counts == (0, 1, 2)
    assert sum(v * n for v, n in out) == pytest.approx(11.5)
    # Counts that went down (the pool was reset): everything counts as new.
    before = HistogramSnapshot(b, (5, 5, 5), 15, 20.0)
    assert replay(after, before) == replay(after)
    assert replay(after, after) == []


@given(st.lists(st.floats(0, 60, allow_nan=False), max_size=40),
       st.lists(st.floats(0, 60, allow_nan=False), max_size=40))
def test_replay_reproduces_counts_and_sum(old: list[float], new: list[float]) -> None:
    h = Histogram(DEFAULT_BUCKETS)
    for v in old:
        h.observe(v)
    before = h.snapshot()
    for v in new:
        h.observe(v)
    after = h.snapshot()
    out = replay(after, before)
    got = record(out, DEFAULT_BUCKETS)
    assert got.counts == tuple(a - b for a, b in zip(after.counts, before.counts, strict=True))
    assert got.count == len(new)
    assert got.sum == pytest.approx(sum(new), rel=1e-9, abs=1e-9)


def test_the_handle_does_not_keep_a_dropped_pool_alive() -> None:
    import gc

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    pool = ZonedPool(FakeDriver(), zones={"a": "10.0.0.1:5432"}, name="short-lived")
    handle = instrument(pool, provider)
    assert "db.client.connection.max" in points(reader)
    del pool
    gc.collect()
    assert not handle.active
    assert "db.client.connection.max" not in points(reader)
    handle.stop()
    provider.shutdown()
