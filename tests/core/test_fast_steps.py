"""The fast steps (``PoolState.fast_checkout`` / ``fast_checkin``: one locked step
each, guarded by one deadline kept for them) must never show: a pool that takes them
ends every sequence of operations, failures and clock moves exactly as a pool that
always takes the full checkout and checkin flow."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zonal_core import errors
from zonal_core.clock import FakeClock, Jitter
from zonal_core.config import build_config
from zonal_core.pool import ZonedPool
from zonal_core.state import PooledConnection, PoolState, Waiter
from zonal_core.testing import FakeDBError, FakeDriver

ALL_ZONES = {"a": "10.0.0.1:5432", "b": "10.0.0.2:5432"}
EXPECTED = (errors.PoolTimeout, errors.NoHealthyZone, errors.PoolClosed, FakeDBError)
OPTIONS: dict[str, Any] = dict(
    local_zone="a", pool_size=2, max_total=3, connect_timeout=2, timeout=5, failback_after=10,
    ping_bypass=1.0, spillover=True)


class _Twin:
    """One pool, its driver and clock, and what its checkouts hold."""

    def __init__(self, fast: bool, options: dict[str, Any]) -> None:
        self.clock = FakeClock(10_000)
        self.drv = FakeDriver(self.clock)
        self.pool = ZonedPool(self.drv, zones=ALL_ZONES, clock=self.clock, jitter=Jitter(0),
                              **options)
        self.fast_taken = 0
        state = self.pool._state
        if fast:
            take, give = state.fast_checkout, state.fast_checkin

            def counted_take(now: float | None = None) -> PooledConnection | None:
                rec = take(now)
                self.fast_taken += rec is not None
                return rec

            def counted_give(rec: PooledConnection, now: float | None = None) -> bool:
                done = give(rec, now)
                self.fast_taken += done
                return done

            state.fast_checkout, state.fast_checkin = counted_take, counted_give  # type: ignore[method-assign]
        else:  # the reference: never a fast step
            state.fast_checkout = lambda now=None: None  # type: ignore[method-assign]
            state.fast_checkin = lambda rec, now=None: False  # type: ignore[method-assign]
        self.lent: list[PooledConnection] = []

    def call(self, method: str, *args: Any, **kwargs: Any) -> str:
        try:
            getattr(self.pool, method)(*args, **kwargs)
        except EXPECTED as exc:
            return type(exc).__name__
        return "ok"

    def checkout(self, timeout: float) -> str:
        try:
            rec = self.pool.getconn(timeout=timeout)
        except EXPECTED as exc:
            return type(exc).__name__
        self.lent.append(rec)
        return f"#{rec.id} {rec.zone}"

    def checkin(self, i: int, how: str) -> str:
        rec = self.lent.pop(i)
        if how == "put":
            return self.call("putconn", rec)
        if how == "put_noreset":
            return self.call("putconn", rec, reset=False)
        if how == "invalidate":
            return self.call("invalidate", rec)
        return self.call("invalidate", rec, FakeDBError("server closed the connection", "57P01"))

    def seen(self) -> tuple[Any, ...]:
        s = self.pool.stats()
        zones = []
        for z in s.zones.values():
            d = dataclasses.asdict(z)
            hists = tuple(_hist(d.pop(h)) for h in ("use_time", "wait_time", "connect_time"))
            zones.append((tuple(sorted(d.items(), key=lambda kv: kv[0])), hists))
        st_ = self.pool._state
        idle = tuple((z.name, tuple(r.id for r in z.idle)) for z in st_.zones.values())
        return (tuple(zones), idle, tuple(r.id for r in self.lent), s.suspends,
                st_.preferred_zone, len(self.drv.open_connections), self.clock.now())


def _hist(h: dict[str, Any]) -> tuple[Any, ...]:
    # (the fast checkin's values are summed in a batch: the sum may differ in the
    # last bits from one added value by value)
    return tuple(h["counts"]), round(h["sum"], 6)


def _deadlines(twin: _Twin, past: float) -> list[float]:
    """The connections' next idle and lifetime deadlines (+ ``past``), soonest first."""
    state = twin.pool._state
    recs = [r for z in state.zones.values() for r in z.idle] + twin.lent
    now = twin.clock.now()
    return sorted({t + past for r in recs
                   for t in (r.last_used + state.config.max_idle, r.expires_at)
                   if t + past > now})


def _step(twins: list[_Twin], op: tuple[str, Any]) -> list[str]:
    """Apply ``op`` to each twin alike; what each saw."""
    kind, arg = op
    fast = twins[0]
    if kind == "checkout":
        if len(fast.lent) >= fast.pool.config.max_total:
            # (single-threaded, a checkout in line waits for a checkin that cannot
            # come: it times out on the fake clock; the other tests cover waits)
            return []
        return [t.checkout(arg) for t in twins]
    if kind == "checkin":
        if not fast.lent:
            return []
        i, how = arg
        i %= len(fast.lent)
        return [t.checkin(i, how) for t in twins]
    if kind == "advance":
        for t in twins:
            t.clock.advance(arg)
    elif kind == "deadline":
        # the moments the fast steps must stop at: (just before, at, just past) a
        # connection's idle or lifetime deadline
        which, past = arg
        dues = _deadlines(fast, past)
        if dues:
            due = dues[which % min(3, len(dues))]
            for t in twins:
                t.clock.advance(due - t.clock.now())
    elif kind == "zone":
        zone, behaviour, ping = arg
        for t in twins:
            t.drv.set(zone, behaviour, ping=ping)
    elif kind == "backend_dies":
        for t in twins:
            idle = [r for z in t.pool._state.zones.values() for r in z.idle]
            if idle:
                idle[arg % len(idle)].raw.broken = True
    elif kind == "invalidate_zone":
        return [t.call("invalidate_zone", arg) for t in twins]
    elif kind == "trim":
        return [t.call("trim", arg) for t in twins]
    elif kind == "reconfigure":
        size, leaks = arg
        return [t.call("reconfigure", t.pool.config, pool_size=size, max_total=size + 1,
                       leak_threshold=30.0 if leaks else None) for t in twins]
    return []


_ZONE = st.sampled_from(sorted(ALL_ZONES))
_ARGS: dict[str, st.SearchStrategy[Any]] = {
    "checkout": st.sampled_from([5.0, 0.5, 0.0]),
    "checkin": st.tuples(st.integers(0, 3), st.sampled_from(
        ["put"] * 5 + ["put_noreset", "invalidate", "disconnect"])),
    "advance": st.sampled_from([0.1, 0.1, 0.25, 0.5, 0.5, 1.2, 2.0, 12.0, 61.0, 290.0]),
    "deadline": st.tuples(st.integers(0, 2), st.sampled_from([-0.01, 0.0, 0.01])),
    "zone": st.tuples(_ZONE, st.sampled_from(["ok", "refuse", "hang"]),
                      st.sampled_from(["ok", "error"])),
    "backend_dies": st.integers(0, 3),
    "invalidate_zone": _ZONE,
    "trim": st.sampled_from([None, 0, 1]),
    "reconfigure": st.tuples(st.integers(1, 3), st.sampled_from([False] * 4 + [True])),
}
# Checkouts and checkins the common steps (the fast steps need a pool that works
# most of the time); everything else together about as likely as one checkout.
_KINDS = ["checkout"] * 5 + ["checkin"] * 6 + ["advance"] * 3 + ["deadline"] * 2 + [
    "zone", "backend_dies", "invalidate_zone", "trim", "reconfigure"]
OPS = st.sampled_from(_KINDS).flatmap(lambda kind: _ARGS[kind].map(lambda a: (kind, a)))


def test_the_fast_steps_are_taken_and_stop_when_the_pool_closes() -> None:
    """The comparison below compares something: its fast pool takes the fast steps,
    and a closed pool takes none."""
    twin = _Twin(True, dict(OPTIONS, pre_ping=False, max_idle=60.0, max_lifetime=300.0))
    rec = twin.pool.getconn()  # (connects: the flow)
    twin.pool.putconn(rec)
    for _ in range(3):
        twin.pool.putconn(twin.pool.getconn())
    assert twin.fast_taken == 7  # the first checkin and three pairs
    assert twin.pool.stats().zones["a"].use_time.count == 4
    held = twin.pool.getconn()
    assert twin.fast_taken == 8
    twin.pool.close()
    twin.pool.putconn(held)  # closed by the flow, not put back idle
    assert twin.fast_taken == 8 and twin.drv.open_connections == []
    with pytest.raises(errors.PoolClosed):
        twin.pool.getconn(timeout=0.5)
    assert twin.fast_taken == 8


def _one_connection(max_lifetime: float) -> tuple[PoolState, PooledConnection]:
    """A one-zone pool whose only connection is lent (at t=0)."""
    config = build_config(zones={"a": ALL_ZONES["a"]}, local_zone="a", environ={},
                          pool_size=1, max_idle=60, max_lifetime=max_lifetime)
    state = PoolState(config, jitter=Jitter(seed=3), now=0.0)
    waiter = Waiter()
    grant, _ = state.acquire(0.0, waiter)
    assert grant is not None and grant.slot is not None
    rec, _ = state.connected(grant.slot, object(), 0.0, 0.01)
    state.checked_out(rec, 0.0, 0.0)
    return state, rec


@pytest.mark.parametrize("checkin", ["flow", "fast"])
def test_the_fast_checkout_stops_at_a_deadline_within_the_routes_second(checkin: str
                                                                        ) -> None:
    """A checkin that brings the reaping deadline forward (here: the connection's
    own lifetime, due before the route is next refreshed) stops the fast checkout
    at it, through the flow's checkin or the fast one."""
    state, rec = _one_connection(max_lifetime=10.0)
    due = rec.expires_at
    state.route(due - 0.3)  # (the route is now kept until due + 0.7)
    if checkin == "flow":
        assert state.release(rec, due - 0.2) == []
    else:
        assert state.fast_checkin(rec, due - 0.2) is True
    assert [r.id for r in state.zones["a"].idle] == [rec.id]
    assert state.fast_checkout(due - 0.1) is rec  # still within its lifetime
    assert state.fast_checkin(rec, due - 0.05) is True
    assert state.fast_checkout(due + 0.1) is None  # past it: the flow's, which closes it
    got, closing = state.acquire(due + 0.1, Waiter())
    assert closing == [rec] and got is not None and got.slot is not None
    assert state.zones["a"].counters.closes["lifetime"] == 1


def test_a_pool_watching_for_leaks_takes_no_fast_step() -> None:
    """Every checkout is stamped and watched when ``leak_threshold`` is set: the
    flow's work, so the fast steps stand aside (and leaks are still found)."""
    twin = _Twin(True, dict(OPTIONS, pre_ping=False, max_idle=60.0, max_lifetime=300.0,
                            leak_threshold=30.0))
    for _ in range(3):
        twin.pool.putconn(twin.pool.getconn())
    held = twin.pool.getconn()
    assert held.stack  # where it was checked out, kept by the flow
    twin.clock.advance(31)
    twin.pool.putconn(twin.pool.getconn())
    assert twin.fast_taken == 0
    assert twin.pool.stats().zones["a"].leaks == 1
    twin.pool.putconn(held)


@settings(max_examples=int(os.environ.get("ZONAL_HYPOTHESIS_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(pre_ping=st.booleans(), leaks=st.sampled_from([False, False, False, True]),
       # (idle and lifetime deadlines shorter than a route's second, too)
       lives=st.sampled_from([(60.0, 300.0), (1.5, 2.5), (0.6, 1.7)]),
       ops=st.lists(OPS, min_size=10, max_size=80))
def test_a_pool_taking_the_fast_steps_ends_as_one_taking_the_flow(
        pre_ping: bool, leaks: bool, lives: tuple[float, float],
        ops: list[tuple[str, Any]]) -> None:
    max_idle, max_lifetime = lives
    options = dict(OPTIONS, pre_ping=pre_ping, leak_threshold=30.0 if leaks else None,
                   max_idle=max_idle, max_lifetime=max_lifetime)
    twins = [_Twin(True, options), _Twin(False, options)]
    try:
        for op in ops:
            saw = _step(twins, op)
            assert len(set(saw)) <= 1, (op, saw)
            assert twins[0].seen() == twins[1].seen(), op
        assert twins[1].fast_taken == 0
    finally:
        for t in twins:
            for rec in t.lent:
                t.call("putconn", rec)
            t.call("close")
    assert twins[0].seen() == twins[1].seen()
    assert all(t.drv.open_connections == [] for t in twins)
