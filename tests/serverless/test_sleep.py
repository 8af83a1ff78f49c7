"""3. Sleep: the clock jump of a sleeping machine, on a fake clock and on CLOCK_BOOTTIME."""

from __future__ import annotations

import sys
import time

import pytest

from zonal_core.clock import FakeClock, SystemClock, boottime_available
from zonal_core.pool import ZonedPool
from zonal_core.testing import FakeDriver

ZONES = {"a": "10.0.0.1:5432", "b": "10.0.0.2:5432"}


def make_pool(**options: object) -> tuple[ZonedPool, FakeDriver, FakeClock]:
    clock = FakeClock(1000.0)
    driver = FakeDriver(clock)
    options.setdefault("serverless", True)
    pool = ZonedPool(driver, zones=ZONES, local_zone="a", clock=clock, **options)
    return pool, driver, clock


def hold_idle(pool: ZonedPool, n: int) -> list[object]:
    """Check ``n`` connections out together and back in: ``n`` idle ones."""
    recs = [pool.getconn() for _ in range(n)]
    raws = [r.raw for r in recs]
    for r in recs:
        pool.putconn(r)
    return raws


@pytest.mark.parametrize("slept", [31.0, 3600.0, 7 * 86400.0])
def test_machine_sleep_longer_than_max_idle_is_a_suspend(slept: float) -> None:
    """The machine slept (the boot-time clock jumped): on the first checkout after,
    every idle connection is closed as 'suspend' and a new one is opened."""
    pool, _, clock = make_pool(min_idle=3)  # serverless: max_idle 30
    old = hold_idle(pool, 3)
    assert pool.stats().idle == 3
    clock.advance(slept)
    rec = pool.getconn()
    assert rec.raw not in old
    assert all(c.closed for c in old)  # type: ignore[attr-defined]
    s = pool.stats()
    assert s.suspends == 1
    assert s.zones["a"].closes["suspend"] == 3
    assert s.zones["a"].connects == 4
    pool.putconn(rec)


def test_sleep_shorter_than_max_idle_keeps_connections() -> None:
    pool, _, clock = make_pool(min_idle=2)
    old = hold_idle(pool, 2)
    clock.advance(29.0)
    rec = pool.getconn()
    assert rec.raw is old[-1]  # LIFO, reused
    assert pool.stats().suspends == 0
    pool.putconn(rec)


def test_trim_after_a_sleep_counts_the_suspend_too() -> None:
    """The request middleware's trim is a pool operation: it notices the jump."""
    pool, _, clock = make_pool(min_idle=2)
    hold_idle(pool, 2)
    clock.advance(120.0)
    pool.trim()
    s = pool.stats()
    assert s.suspends == 1 and s.zones["a"].closes["suspend"] == 2 and s.idle == 0


def test_sleep_is_one_suspend_however_long() -> None:
    pool, _, clock = make_pool(min_idle=1)
    hold_idle(pool, 1)
    clock.advance(1e6)
    pool.putconn(pool.getconn())
    pool.putconn(pool.getconn())
    assert pool.stats().suspends == 1


def test_lifetime_is_counted_across_the_sleep() -> None:
    """A lent connection that outlived max_lifetime during a sleep retires at checkin."""
    pool, _, clock = make_pool(max_lifetime=100.0)
    rec = pool.getconn()
    clock.advance(500.0)
    pool.putconn(rec)
    s = pool.stats()
    assert s.idle == 0 and s.zones["a"].closes["lifetime"] == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CLOCK_BOOTTIME is Linux's")
def test_system_clock_reads_clock_boottime_on_linux() -> None:
    assert boottime_available()
    clock = SystemClock()
    assert clock.source == "boottime"
    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    now = clock.now()
    after = time.clock_gettime(time.CLOCK_BOOTTIME)
    assert before <= now <= after
    # CLOCK_BOOTTIME = CLOCK_MONOTONIC + time spent suspended, never less
    assert now >= time.monotonic() - 0.001
    pool = ZonedPool(FakeDriver(), zones=ZONES)
    assert pool.stats().clock == "boottime"


def test_system_clock_falls_back_to_monotonic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(time, "CLOCK_BOOTTIME", raising=False)
    clock = SystemClock()
    assert clock.source == "monotonic"
    assert abs(clock.now() - time.monotonic()) < 0.5
