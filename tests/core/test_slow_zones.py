"""Slow is not dead: panic routing, hedged connects, and errors by what they mean.

A zone whose connects are merely slow (a paused server, a loaded machine) must not
become an outage: ejection orders the route but never empties it, a checkout keeps
trying within its own timeout, and a slow connect is raced by one to the next zone.
Errors that say nothing about a zone (a misspelled option, a hook's bug) eject
nothing and reach the caller as themselves.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from zonal_core import errors
from zonal_core.backoff import Backoff
from zonal_core.clock import FakeClock, Jitter, SystemClock
from zonal_core.config import build_config
from zonal_core.flow import Attempt, Start, Wait, checkout_flow, not_a_zone_failure
from zonal_core.health import EndpointHealth, HealthState, hedge_delay
from zonal_core.pool import ZonedPool
from zonal_core.pool_async import AsyncZonedPool
from zonal_core.routing import RouteMode, rank_zones
from zonal_core.state import PoolState
from zonal_core.testing import AsyncFakeDriver, FakeConnection, FakeDBError, FakeDriver

ONE = {"a": "10.0.0.1:5432"}
TWO = {"a": "10.0.0.1:5432", "b": "10.0.0.2:5432"}
THREE = {"a": "10.0.0.1:5432", "b": "10.0.0.2:5432", "c": "10.0.0.3:5432"}


def make(zones: dict[str, str], **opts: Any) -> tuple[ZonedPool, FakeDriver, FakeClock]:
    clock = FakeClock(1000.0)
    drv = FakeDriver(clock)
    opts.setdefault("local_zone", "a")
    return ZonedPool(drv, zones=zones, clock=clock, jitter=Jitter(seed=5), **opts), drv, clock


# -- panic routing: ejection never empties the route ------------------------------


def test_one_zone_paused_longer_than_connect_timeout_fails_no_checkout() -> None:
    """The busy-machine defect: one zone, timeout 8 s, connect_timeout 2 s, the
    server paused for 3 connects' worth: the checkout waits it out, no error."""
    pool, drv, clock = make(ONE, timeout=8, connect_timeout=2)
    drv.script("a", ["hang", "hang", "hang"])
    t0 = clock.now()
    rec = pool.getconn()
    took = clock.now() - t0
    assert rec.endpoint.zone == "a"
    assert 6 <= took < 8  # three bounded attempts plus backoff, inside the timeout
    st = pool.stats().zones["a"]
    assert st.connect_errors == 3
    assert st.state == "healthy" and st.ejections == 0  # the only zone is never ejected


def test_one_zone_pool_always_makes_a_connect_attempt() -> None:
    pool, drv, _ = make(ONE, timeout=5, connect_timeout=1)
    drv.set("a", "refuse")
    for _ in range(5):
        before = drv.connect_attempts
        with pytest.raises(errors.NoHealthyZone, match="every zone was tried"):
            pool.getconn()
        assert drv.connect_attempts > before
    assert pool.stats().zones["a"].ejections == 0


def test_the_last_capacity_is_never_ejected_but_other_zones_are() -> None:
    pool, drv, _ = make(TWO, timeout=5, connect_timeout=1)
    drv.set("a", "refuse")
    for _ in range(2):
        assert pool.getconn().endpoint.zone == "b"
    assert pool.stats().zones["a"].state == "ejected"
    drv.set("b", "refuse")
    with pytest.raises(errors.NoHealthyZone):
        pool.getconn()
    st = pool.stats()
    assert st.zones["b"].state == "healthy" and st.zones["b"].ejections == 0
    assert st.zones["b"].connect_errors >= 2
    drv.set("b", "ok")
    assert pool.getconn().endpoint.zone == "b"


def test_rank_zones_in_panic_orders_ejection_over_then_oldest() -> None:
    cfg = build_config(zones=THREE, local_zone="a", environ={})
    healths = {z.name: EndpointHealth(z.endpoints[0]) for z in cfg.topology.zones}
    for name, at, until in (("a", 30.0, 90.0), ("b", 10.0, 70.0), ("c", 20.0, 45.0)):
        h = healths[name]
        h.state, h.ejected_at, h.ejected_until = HealthState.EJECTED, at, until
    route, _ = rank_zones([(z, [healths[z.name]]) for z in cfg.topology.zones],
                          local_zone="a", now=50.0, failback_after=30)
    # c's ejection ran out; then b (ejected longest ago), then a
    assert [(e.zone.name, e.mode) for e in route] == [
        ("c", RouteMode.PANIC), ("b", RouteMode.PANIC), ("a", RouteMode.PANIC)]
    assert all(e.serves for e in route)


def test_every_endpoint_ejected_means_all_are_tried_concurrently() -> None:
    # Ejected everywhere is reached by a reconfigure that removes the last healthy zone.
    pool, drv, clock = make(THREE, timeout=5, connect_timeout=1)
    drv.set("a", "refuse")
    drv.set("b", "refuse")
    for _ in range(2):
        pool.getconn()  # a, then b fail twice each -> ejected; c serves
    assert [pool.stats().zones[z].state for z in "ab"] == ["ejected", "ejected"]
    pool.reconfigure(zones={"a": THREE["a"], "b": THREE["b"]}, local_zone="a")
    route = pool._state.route(clock.now())
    assert {e.mode for e in route} == {RouteMode.PANIC}
    drv.set("a", "ok")
    drv.set("b", "ok")
    held = [pool.getconn() for _ in range(3)]  # no single-flight probe: all connect
    assert len(held) == 3 and pool.stats().zones["a"].state == "probation"


# -- errors that are not about the zone -------------------------------------------


@pytest.mark.parametrize("exc", [
    FakeDBError('invalid connection option "sslmdoe"'),
    FakeDBError('connection failed: FATAL:  database "nope" does not exist'),
    FakeDBError("connection is bad: invalid sslmode value: \"requir\""),
    FakeDBError("connection failed: FATAL:  unsupported startup parameter: options"),
    TypeError("'<' not supported between instances of 'str' and 'int'"),
    not_a_zone_failure(RuntimeError("a user's connect hook failed")),
])
def test_config_errors_eject_nothing_and_surface_as_themselves(exc: Exception) -> None:
    pool, drv, _ = make(TWO, timeout=5)
    calls: list[str] = []

    def connect(endpoint: Any, timeout: float) -> Any:
        calls.append(endpoint.zone)
        raise exc

    drv.connect = connect  # type: ignore[method-assign]
    for _ in range(3):
        with pytest.raises(type(exc)) as ei:
            pool.getconn()
        assert ei.value is exc  # the error itself, not NoHealthyZone
    assert calls == ["a", "a", "a"]  # no failover: the same settings fail everywhere
    st = pool.stats()
    assert all(z.state == "healthy" and z.ejections == 0 for z in st.zones.values())
    assert st.zones["a"].connect_errors == 3


def test_a_disconnect_after_connect_still_counts_against_the_zone() -> None:
    pool, drv, _ = make(TWO, timeout=5)

    def connect(endpoint: Any, timeout: float) -> Any:
        if endpoint.zone == "a":
            raise not_a_zone_failure(FakeDBError("server closed the connection unexpectedly"))
        return FakeConnection(1, endpoint)

    drv.connect = connect  # type: ignore[method-assign]
    assert pool.getconn().endpoint.zone == "b"  # failed over, as for any zone failure


def test_an_attempt_cut_off_at_the_deadline_does_not_hide_why_the_zones_failed() -> None:
    """Both zones reject every connection (a read-only server, say) after 0.7 s; the
    checkout's 3 s run out during an attempt given what was left of them (less than
    connect_timeout): the error names the rejection, not that last attempt's timeout."""
    pool, drv, clock = make(TWO, timeout=3, connect_timeout=2)
    for z in TWO:
        drv.set(z, "error")
        drv.latency[z] = 0.7
    with pytest.raises(errors.ZonalError) as ei:
        pool.getconn()
    assert clock.now() == pytest.approx(1003)  # the last attempt ran into the deadline
    assert "something else went wrong" in str(ei.value), str(ei.value)
    assert "timed out" not in str(ei.value), str(ei.value)
    assert isinstance(ei.value.__cause__, FakeDBError)


@pytest.mark.parametrize(("timeout", "connect_timeout"), [(3, 2), (1, 2)])
def test_a_zone_that_only_times_out_is_named_for_it(timeout: float,
                                                     connect_timeout: float) -> None:
    """The negative control: with no other error to name, a timeout is named, cut
    off by the checkout's deadline (timeout 1 < connect_timeout 2) or not."""
    pool, drv, _clock = make(ONE, timeout=timeout, connect_timeout=connect_timeout)
    drv.set("a", "hang")
    with pytest.raises(errors.ZonalError, match="timed out"):
        pool.getconn()


# -- hedged connects ----------------------------------------------------------------


def test_hedge_delay_follows_measured_latency_within_bounds() -> None:
    h = EndpointHealth(build_config(zones=ONE, environ={}).topology.endpoints[0])
    assert hedge_delay(h, 2.0, None) == 1.0  # unmeasured: half the connect timeout
    h.recent.extend([0.01, 0.02, 0.03])
    assert hedge_delay(h, 2.0, None) == 0.25  # floor
    h.recent.append(0.2)
    assert hedge_delay(h, 2.0, None) == pytest.approx(0.8)  # 4 x the slowest recent
    h.recent.append(0.9)
    assert hedge_delay(h, 2.0, None) == 1.0  # at most half the connect timeout
    assert hedge_delay(h, 2.0, 0.3) == 0.3 and hedge_delay(h, 2.0, 0.0) == 0.0


def _flow(zones: dict[str, str], **opts: Any) -> tuple[Any, PoolState, FakeClock, list[Any]]:
    clock = FakeClock(100.0)
    state = PoolState(build_config(zones=zones, local_zone="a", environ={}, **opts),
                      jitter=Jitter(seed=1), now=clock.now())

    class W:
        avoid: set[str] = set()

    from zonal_core.pool import _ThreadWaiter

    closing: list[Any] = []
    gen = checkout_flow(state, clock, _ThreadWaiter(), state.config.timeout, closing,
                        backoff=Backoff(), concurrent=True)
    return gen, state, clock, closing


def test_flow_hedges_after_the_delay_and_the_first_to_complete_serves() -> None:
    gen, state, clock, _ = _flow(TWO, connect_timeout=2, timeout=2)
    first = next(gen)
    assert isinstance(first, Start) and first.attempt.endpoint.zone == "a"
    wait = gen.send(None)
    assert isinstance(wait, Wait) and wait.timeout == pytest.approx(1.0)  # ct / 2
    clock.advance(1.0)
    second = gen.send(False)  # a still pending: the next zone starts too
    assert isinstance(second, Start) and second.attempt.endpoint.zone == "b"
    assert isinstance(gen.send(None), Wait)
    clock.advance(0.01)
    b: Attempt = second.attempt
    assert b.finish(FakeConnection(2, b.endpoint), None) == []
    with pytest.raises(StopIteration) as stop:
        gen.send(True)
    assert stop.value.value.endpoint.zone == "b"
    # the loser completes later and joins its zone's idle stack (a is preferred)
    a: Attempt = first.attempt
    clock.advance(0.5)
    assert a.finish(FakeConnection(1, a.endpoint), None) == []
    st = state.snapshot(clock.now(), "fake")
    assert (st.zones["a"].idle, st.zones["a"].opening, st.zones["b"].in_use) == (1, 0, 1)


def test_flow_loser_that_fails_counts_against_its_zone_and_leaks_nothing() -> None:
    gen, state, clock, _ = _flow(TWO, connect_timeout=2, timeout=2)
    first = next(gen)
    gen.send(None)
    clock.advance(1.0)
    second = gen.send(False)
    gen.send(None)
    second.attempt.finish(FakeConnection(2, second.attempt.endpoint), None)
    with pytest.raises(StopIteration):
        gen.send(True)
    clock.advance(1.0)
    first.attempt.finish(None, TimeoutError("connect timed out"))
    st = state.snapshot(clock.now(), "fake")
    assert (st.zones["a"].connect_errors, st.zones["a"].open) == (1, 0)


def test_flow_without_another_zone_connects_without_a_racer() -> None:
    gen, _state, _clock, _ = _flow(ONE)
    action = next(gen)
    assert type(action).__name__ == "Connect"


def _real(zones: dict[str, str], **opts: Any) -> tuple[ZonedPool, FakeDriver]:
    drv = FakeDriver()  # real time: a hang sleeps
    return ZonedPool(drv, zones=zones, local_zone="a", clock=SystemClock(), **opts), drv


def test_thread_runner_hedges_a_black_holed_local_zone() -> None:
    cfg = {"connect_timeout": 2.0, "timeout": 2.0, "hedge_after": 0.2}
    pool, drv = _real(TWO, **cfg)
    drv.set("a", "hang")
    t0 = time.monotonic()
    rec = pool.getconn()
    took = time.monotonic() - t0
    assert rec.endpoint.zone == "b"
    # the hedge started after hedge_after, and the checkout never waited out the
    # local zone's whole connect timeout
    assert cfg["hedge_after"] <= took < cfg["connect_timeout"]
    pool.putconn(rec)
    deadline = time.monotonic() + 2 * cfg["connect_timeout"]
    while pool.stats().zones["a"].opening and time.monotonic() < deadline:
        time.sleep(0.05)
    st = pool.stats().zones["a"]
    assert (st.opening, st.open, st.connect_errors) == (0, 0, 1)  # the loser settled


def test_thread_runner_without_hedging_waits_for_the_connect_timeout() -> None:
    cfg = {"connect_timeout": 0.5, "timeout": 3.0, "hedge_after": 0}
    pool, drv = _real(TWO, **cfg)
    drv.set("a", "hang")
    t0 = time.monotonic()
    assert pool.getconn().endpoint.zone == "b"
    assert time.monotonic() - t0 >= cfg["connect_timeout"]  # the negative control


def test_asyncio_runner_hedges_a_black_holed_local_zone() -> None:
    cfg = {"connect_timeout": 2.0, "timeout": 2.0, "hedge_after": 0.2}

    async def main() -> float:
        drv = AsyncFakeDriver()
        drv.set("a", "hang")
        pool = AsyncZonedPool(drv, zones=TWO, local_zone="a", clock=SystemClock(), **cfg)
        t0 = time.monotonic()
        rec = await pool.getconn()
        took = time.monotonic() - t0
        assert rec.endpoint.zone == "b"
        await pool.putconn(rec)
        await asyncio.sleep(cfg["connect_timeout"])
        for _ in range(100):
            if not pool.stats().zones["a"].opening:
                break
            await asyncio.sleep(0.02)
        assert pool.stats().zones["a"].opening == 0
        return took

    took = asyncio.run(main())
    assert cfg["hedge_after"] <= took < cfg["connect_timeout"]


def test_a_waiter_notified_once_does_not_spin() -> None:
    pool, drv = _real(ONE, pool_size=1, timeout=0.6, connect_timeout=0.2)
    held = pool.getconn()
    waits = 0
    original = pool._wait

    def counting(waiter: Any, timeout: float) -> bool:
        nonlocal waits
        waits += 1
        return original(waiter, timeout)

    pool._wait = counting  # type: ignore[method-assign]
    drv.set("a", "refuse")
    import threading

    threading.Timer(0.1, pool.putconn, args=(held,), kwargs={"discard": "invalidated"}).start()
    with pytest.raises((errors.NoHealthyZone, errors.PoolTimeout)):
        pool.getconn()
    # handed a slot, its connect refused, it waits in line again: a handful of
    # waits (backoff rounds), not a busy loop on an event left set
    assert waits < 50


def test_a_server_starting_up_is_retried_with_backoff_not_ejected() -> None:
    """57P03 "the database system is starting up" (as psycopg reports it at connect:
    the message, no SQLSTATE) is waited out inside the timeout, never a zone failure."""
    pool, drv, clock = make(TWO, timeout=5)
    drv.script("a", ["starting", "starting", "busy", "starting"])
    t0 = clock.now()
    assert pool.getconn().endpoint.zone == "a"  # no failover: the zone is fine
    st = pool.stats().zones["a"]
    assert (st.retries, st.connect_errors, st.ejections, st.state) == (4, 4, 0, "healthy")
    assert clock.now() - t0 < 5
    assert pool.stats().zones["b"].connects == 0


def test_a_hedged_attempt_cut_off_at_the_deadline_keeps_the_error_before_it() -> None:
    gen, _state, clock, _ = _flow(THREE, connect_timeout=3, timeout=2)
    first = next(gen)  # a, given the whole 2 s left (less than connect_timeout)
    assert isinstance(first, Start) and first.attempt.timeout == pytest.approx(2)
    assert isinstance(gen.send(None), Wait)
    clock.advance(0.5)
    first.attempt.finish(None, FakeDBError("server is read-only"))
    second = gen.send(True)  # a failed: b races (c could follow), with the 1.5 s left
    assert isinstance(second, Start) and second.attempt.endpoint.zone == "b"
    assert second.attempt.timeout == pytest.approx(1.5)
    assert isinstance(gen.send(None), Wait)
    clock.advance(1.5)
    second.attempt.finish(None, TimeoutError("connect timed out"))
    with pytest.raises(errors.ZonalError) as ei:
        gen.send(True)
    assert "server is read-only" in str(ei.value), str(ei.value)
    assert "timed out" not in str(ei.value), str(ei.value)
