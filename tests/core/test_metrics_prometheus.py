"""The Prometheus collector: exposition text of a live fake pool, exact values."""

from __future__ import annotations

import gc
import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import DuplicateTimeseries

import zonal_core
from zonal_core import errors
from zonal_core.clock import FakeClock, Jitter
from zonal_core.metrics import StatsSource
from zonal_core.metrics.prometheus import ZonalCollector, cumulative_buckets, register
from zonal_core.pool import ZonedPool
from zonal_core.pool_async import AsyncZonedPool
from zonal_core.stats import HistogramSnapshot, PoolStats, ZoneStats
from zonal_core.testing import AsyncFakeDriver, FakeDriver

SECRET = "s3cr3t"
ZONES = {"a": f"app:{SECRET}@10.0.0.1:5432", "b": f"app:{SECRET}@10.0.0.2:5432"}


def busy_pool() -> ZonedPool:
    """Checkouts, a timeout, a suspend and a failover of zone a, on a fake clock.

    Ends with zone a ejected (one connection still in use) and zone b preferred,
    holding one idle and one used connection.
    """
    clock = FakeClock(1000.0)
    drv = FakeDriver(clock)
    drv.latency["a"] = 0.003  # every connect to a takes 3 ms, to b 20 ms
    drv.latency["b"] = 0.02
    pool = ZonedPool(drv, zones=ZONES, local_zone="a", name="orders", version="2024-06",
                     pool_size=2, max_total=4, clock=clock, jitter=Jitter(seed=7))
    held_a = pool.getconn()
    r = pool.getconn()
    clock.advance(0.2)
    pool.putconn(r)
    r = pool.getconn()  # the idle one: no wait
    with pytest.raises(errors.PoolTimeout):
        pool.getconn(timeout=1)  # a is full: the timeout counts against a
    clock.advance(0.5)
    pool.putconn(r)
    clock.advance(301)  # longer than max_idle: a suspend, the idle connection goes
    drv.set("a", "refuse")
    held_b = pool.getconn()  # a refuses once: b
    r = pool.getconn()  # a refuses again: ejected, failover to b
    clock.advance(0.05)
    pool.putconn(r)
    pool._held = (held_a, held_b)  # type: ignore[attr-defined]  # keep them in use
    return pool


def scrape(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


@pytest.fixture
def scraped() -> tuple[ZonedPool, CollectorRegistry, str]:
    pool = busy_pool()
    registry = CollectorRegistry(auto_describe=True)
    register(pool, registry)
    return pool, registry, scrape(registry)


def test_connection_counts_max_and_pending(scraped: tuple[ZonedPool, CollectorRegistry, str]
                                          ) -> None:
    _, reg, text = scraped
    assert 'db_client_connection_count{pool="orders",state="idle",zone="b"} 1.0' in text
    assert 'db_client_connection_count{pool="orders",state="used",zone="b"} 1.0' in text
    assert value(reg, "db_client_connection_count", pool="orders", zone="a", state="idle") == 0
    assert value(reg, "db_client_connection_count", pool="orders", zone="a", state="used") == 1
    assert value(reg, "db_client_connection_max", pool="orders", zone="a") == 2
    assert value(reg, "db_client_connection_pending_requests", pool="orders", zone="b") == 0
    assert value(reg, "zonal_pool_connection_limit", pool="orders") == 4
    assert value(reg, "zonal_connections_opening", pool="orders", zone="a") == 0


def test_counters_of_the_timeout_and_the_failover(
        scraped: tuple[ZonedPool, CollectorRegistry, str]) -> None:
    _, reg, text = scraped
    assert "# TYPE db_client_connection_timeouts_total counter" in text
    assert 'db_client_connection_timeouts_total{pool="orders",zone="a"} 1.0' in text
    assert 'zonal_failovers_total{pool="orders",zone="a"} 1.0' in text
    a = {"pool": "orders", "zone": "a"}
    b = {"pool": "orders", "zone": "b"}
    expected_a = {"zonal_checkouts_total": 3, "zonal_connects_total": 2,
                  "zonal_connect_errors_total": 2, "zonal_ejections_total": 1,
                  "zonal_failovers_total": 1, "zonal_retries_total": 0,
                  "zonal_pings_total": 0, "zonal_ping_failures_total": 0,
                  "db_client_connection_timeouts_total": 1}
    assert {n: reg.get_sample_value(n, a) for n in expected_a} == expected_a
    assert reg.get_sample_value("zonal_checkouts_total", b) == 2
    assert reg.get_sample_value("zonal_failovers_total", b) == 0
    assert reg.get_sample_value("db_client_connection_timeouts_total", b) == 0
    assert value(reg, "zonal_closes_total", pool="orders", zone="a", reason="suspend") == 1
    assert value(reg, "zonal_closes_total", pool="orders", zone="a", reason="idle") == 0
    assert value(reg, "zonal_suspends_total", pool="orders") == 1
    # No family name carries _total twice, and none but counters end in it.
    assert "_total_total" not in text
    for fam in text_string_to_metric_families(text):
        assert fam.name.endswith("_total") is False  # the parser strips it for counters
        if fam.type != "counter":
            assert not any(s.name.endswith("_total") for s in fam.samples)


def test_zone_health_and_preference(scraped: tuple[ZonedPool, CollectorRegistry, str]) -> None:
    pool, reg, _ = scraped
    va = {"pool": "orders", "zone": "a", "version": "2024-06"}
    vb = {"pool": "orders", "zone": "b", "version": "2024-06"}
    assert reg.get_sample_value("zonal_zone_healthy", va) == 0
    assert reg.get_sample_value("zonal_zone_healthy", vb) == 1
    assert reg.get_sample_value("zonal_zone_preferred", va) == 0
    assert reg.get_sample_value("zonal_zone_preferred", vb) == 1
    states_a = {st: reg.get_sample_value("zonal_zone_state", {**va, "state": st})
                for st in ("healthy", "probation", "ejected")}
    assert states_a == {"healthy": 0, "probation": 0, "ejected": 1}
    left = reg.get_sample_value("zonal_zone_ejection_remaining_seconds",
                                {"pool": "orders", "zone": "a"})
    assert left == pytest.approx(pool.stats().zones["a"].ejected_for) and (left or 0) > 0
    assert reg.get_sample_value("zonal_zone_ejection_remaining_seconds",
                                {"pool": "orders", "zone": "b"}) == 0
    info = {"pool": "orders", "version": "2024-06", "local_zone": "a",
            "clock": pool.stats().clock}
    assert reg.get_sample_value("zonal_pool_info", info) == 1


def test_histograms_are_cumulative_with_exact_count_and_sum(
        scraped: tuple[ZonedPool, CollectorRegistry, str]) -> None:
    pool, reg, text = scraped
    st = pool.stats()
    a = {"pool": "orders", "zone": "a"}
    b = {"pool": "orders", "zone": "b"}
    wait = "db_client_connection_wait_time_seconds"
    create = "db_client_connection_create_time_seconds"
    use = "db_client_connection_use_time_seconds"
    assert f"# TYPE {wait} histogram" in text
    # One wait per checkout; one create per connect; one use per return.
    assert reg.get_sample_value(f"{wait}_count", a) == st.zones["a"].checkouts == 3
    assert reg.get_sample_value(f"{wait}_count", b) == st.zones["b"].checkouts == 2
    assert reg.get_sample_value(f"{create}_count", a) == st.zones["a"].connects == 2
    assert reg.get_sample_value(f"{use}_count", a) == 2
    assert reg.get_sample_value(f"{use}_count", b) == 1
    # Connects to a took 3 ms: both in the 5 ms bucket, none at or below 2.5 ms.
    assert reg.get_sample_value(f"{create}_bucket", {**a, "le": "0.0025"}) == 0
    assert reg.get_sample_value(f"{create}_bucket", {**a, "le": "0.005"}) == 2
    assert reg.get_sample_value(f"{create}_bucket", {**a, "le": "+Inf"}) == 2
    assert reg.get_sample_value(f"{create}_sum", a) == pytest.approx(0.006)
    # Waits in b: 3 ms refused by a, then 20 ms connecting to b.
    assert reg.get_sample_value(f"{wait}_bucket", {**b, "le": "0.01"}) == 0
    assert reg.get_sample_value(f"{wait}_bucket", {**b, "le": "0.025"}) == 2
    assert reg.get_sample_value(f"{wait}_sum", b) == pytest.approx(0.046)
    # Uses in a: 0.2 s and 1.5 s (the second spans the 1 s timeout).
    assert reg.get_sample_value(f"{use}_bucket", {**a, "le": "0.1"}) == 0
    assert reg.get_sample_value(f"{use}_bucket", {**a, "le": "0.25"}) == 1
    assert reg.get_sample_value(f"{use}_bucket", {**a, "le": "1.0"}) == 1
    assert reg.get_sample_value(f"{use}_bucket", {**a, "le": "2.5"}) == 2
    assert reg.get_sample_value(f"{use}_sum", a) == pytest.approx(1.7)
    # Buckets never decrease, and +Inf equals _count, in every series.
    for fam in text_string_to_metric_families(text):
        if fam.type != "histogram":
            continue
        series: dict[tuple[str, str], list[float]] = {}
        counts: dict[tuple[str, str], float] = {}
        for s in fam.samples:
            key = (s.labels["pool"], s.labels["zone"])
            if s.name.endswith("_bucket"):
                series.setdefault(key, []).append(s.value)
            elif s.name.endswith("_count"):
                counts[key] = s.value
        for key, values in series.items():
            assert values == sorted(values) and values[-1] == counts[key]


def test_no_password_and_no_endpoint_anywhere(
        scraped: tuple[ZonedPool, CollectorRegistry, str]) -> None:
    _, reg, text = scraped
    assert SECRET not in text
    assert "10.0.0." not in text and "5432" not in text
    assert SECRET not in generate_openmetrics(reg).decode()


def test_a_password_shaped_name_is_masked() -> None:
    pool = ZonedPool(FakeDriver(), zones={"a": "10.0.0.1:5432"}, name=f"app:{SECRET}@db")
    reg = CollectorRegistry()
    ZonalCollector(pool, reg)
    text = scrape(reg)
    assert SECRET not in text and 'pool="app:***@db"' in text


def test_exposition_is_valid_text_and_openmetrics(
        scraped: tuple[ZonedPool, CollectorRegistry, str]) -> None:
    _, reg, text = scraped
    names = [f.name for f in text_string_to_metric_families(text)]
    assert len(names) == len(set(names))
    assert set(names) >= {
        "db_client_connection_count", "db_client_connection_max",
        "db_client_connection_pending_requests", "db_client_connection_timeouts",
        "db_client_connection_create_time_seconds", "db_client_connection_wait_time_seconds",
        "db_client_connection_use_time_seconds", "zonal_connects", "zonal_connect_errors",
        "zonal_retries", "zonal_pings", "zonal_ping_failures", "zonal_failovers",
        "zonal_ejections", "zonal_closes", "zonal_suspends", "zonal_zone_healthy",
        "zonal_zone_state", "zonal_zone_preferred", "zonal_pool_info",
    }
    om = generate_openmetrics(reg).decode()
    assert om.endswith("# EOF\n")
    assert 'zonal_failovers_total{pool="orders",zone="a"} 1.0' in om


def test_scrape_reads_the_pool_now() -> None:
    pool = ZonedPool(FakeDriver(), zones={"a": "10.0.0.1:5432"}, name="orders")
    reg = CollectorRegistry()
    register(pool, reg)
    idle = {"pool": "orders", "zone": "a", "state": "idle"}
    used = {**idle, "state": "used"}
    assert reg.get_sample_value("db_client_connection_count", idle) == 0
    rec = pool.getconn()
    assert reg.get_sample_value("db_client_connection_count", used) == 1
    pool.putconn(rec)
    assert reg.get_sample_value("db_client_connection_count", used) == 0
    assert reg.get_sample_value("db_client_connection_count", idle) == 1


class Counting:
    """A StatsSource that counts how often it is read."""

    def __init__(self, pool: ZonedPool) -> None:
        self.pool = pool
        self.calls = 0

    def stats(self) -> PoolStats:
        self.calls += 1
        return self.pool.stats()


def test_describe_does_not_read_the_pool_and_catches_a_second_collector() -> None:
    src = Counting(ZonedPool(FakeDriver(), zones={"a": "10.0.0.1:5432"}, name="orders"))
    assert isinstance(src, StatsSource)
    collector = ZonalCollector(src)
    calls = src.calls
    reg = CollectorRegistry(auto_describe=True)
    reg.register(collector)
    assert src.calls == calls  # registering describes; it does not scrape
    with pytest.raises(DuplicateTimeseries):
        ZonalCollector(src, reg)
    calls = src.calls
    scrape(reg)
    assert src.calls == calls + 1  # one stats() per pool per scrape


def test_register_shares_one_collector_per_registry() -> None:
    reg = CollectorRegistry(auto_describe=True)
    orders = ZonedPool(FakeDriver(), zones={"a": "10.0.0.1:5432"}, name="orders")
    users = ZonedPool(FakeDriver(), zones={"a": "10.0.0.1:5432", "b": "10.0.0.2:5432"},
                      name="users")
    c1 = register(orders, reg)
    assert register(users, reg) is c1
    assert register(users, reg) is c1  # again: a no-op
    text = scrape(reg)
    assert text.count("# TYPE db_client_connection_max gauge") == 1
    assert 'db_client_connection_max{pool="orders",zone="a"} 5.0' in text
    assert 'db_client_connection_max{pool="users",zone="b"} 5.0' in text
    other = ZonedPool(FakeDriver(), zones={"a": "10.0.0.1:5432"}, name="orders")
    with pytest.raises(errors.ZonalConfigError, match="orders"):
        register(other, reg)
    assert c1.remove(users) and not c1.remove(users)
    assert 'pool="users"' not in scrape(reg)
    c1.unregister()
    assert scrape(reg) == ""
    assert register(users, reg) is not c1  # a fresh collector after unregister


def test_a_dropped_pool_leaves_the_metrics() -> None:
    reg = CollectorRegistry()
    pool = ZonedPool(FakeDriver(), zones={"a": "10.0.0.1:5432"}, name="gone")
    collector = register(pool, reg)
    assert 'pool="gone"' in scrape(reg)
    del pool
    gc.collect()
    assert len(collector.pools) == 0
    assert scrape(reg) == ""
    # Its name is free again.
    again = ZonedPool(FakeDriver(), zones={"a": "10.0.0.1:5432"}, name="gone")
    register(again, reg)
    assert 'pool="gone"' in scrape(reg)


def test_async_pool_is_exported_too() -> None:
    pool = AsyncZonedPool(AsyncFakeDriver(), zones={"a": "10.0.0.1:5432"}, name="async")
    reg = CollectorRegistry()
    register(pool, reg)
    assert reg.get_sample_value("db_client_connection_max",
                                {"pool": "async", "zone": "a"}) == 5


def test_cumulative_buckets_from_per_bucket_counts() -> None:
    h = HistogramSnapshot((0.5, 1.0, 2.5), (1, 0, 3, 2), 6, 12.0)
    assert cumulative_buckets(h) == [("0.5", 1.0), ("1.0", 1.0), ("2.5", 4.0), ("+Inf", 6.0)]
    assert cumulative_buckets(HistogramSnapshot((), (0,), 0, 0.0)) == [("+Inf", 0.0)]


def test_any_stats_source_and_an_unknown_zone_state() -> None:
    h = HistogramSnapshot((1.0,), (2, 1), 3, 4.5)
    zs = ZoneStats(zone="z1", state="draining", preferred=True, open=3, idle=1, in_use=2,
                   opening=0, waiting=4, max=9, checkouts=3, timeouts=0, connects=3,
                   connect_errors=0, retries=0, pings=0, ping_failures=0, failovers=0,
                   ejections=0, closes={"trim": 2}, wait_time=h, connect_time=h, use_time=h)
    stats = PoolStats(name="adapter", version=None, local_zone="z1", preferred_zone="z1",
                      max_total=9, waiting=4, suspends=0, clock="monotonic", zones={"z1": zs})

    class Source:
        def stats(self) -> PoolStats:
            return stats

    src = Source()
    reg = CollectorRegistry()
    register(src, reg)
    key = {"pool": "adapter", "zone": "z1"}
    assert reg.get_sample_value("db_client_connection_pending_requests", key) == 4
    assert reg.get_sample_value("zonal_closes_total", {**key, "reason": "trim"}) == 2
    assert reg.get_sample_value("db_client_connection_use_time_seconds_bucket",
                                {**key, "le": "1.0"}) == 2
    assert reg.get_sample_value("db_client_connection_use_time_seconds_sum", key) == 4.5
    vkey = {**key, "version": ""}
    assert reg.get_sample_value("zonal_zone_state", {**vkey, "state": "draining"}) == 1
    assert reg.get_sample_value("zonal_zone_state", {**vkey, "state": "healthy"}) == 0
    with pytest.raises(TypeError):
        register(object(), reg)  # type: ignore[arg-type]


def test_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "zonal_core.metrics.prometheus")
    with pytest.raises(ImportError, match=r'pip install "zonal\[prometheus\]"'):
        importlib.import_module("zonal_core.metrics.prometheus")


def test_importing_zonal_core_imports_no_exporter_library() -> None:
    code = textwrap.dedent("""
        import sys
        import zonal_core, zonal_core.metrics, zonal_core.pool, zonal_core.pool_async
        bad = sorted(m for m in sys.modules
                     if m.split(".")[0] in {"prometheus_client", "opentelemetry"})
        assert not bad, bad
    """)
    src = str(Path(zonal_core.__file__ or "").resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": src}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
