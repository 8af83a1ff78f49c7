"""Hypothesis drives the zoned pool, the thread one and the asyncio one, through
random operations and failures.

Whatever happens: a connection is never lent twice, caps hold at every step (beyond
them only connections lent before a reconfigure that lowered them), the counts of
``stats()`` add up, every open driver connection is either idle in the pool or lent,
and nothing is left open after ``close()``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from zonal_core import errors
from zonal_core.clock import FakeClock, Jitter
from zonal_core.pool import ZonedPool
from zonal_core.pool_async import AsyncZonedPool
from zonal_core.state import PooledConnection
from zonal_core.testing import AsyncFakeDriver, FakeDBError, FakeDriver

ALL_ZONES = {"a": "10.0.0.1:5432", "b": "10.0.0.2:5432", "c": "10.0.0.3:5432"}
EXPECTED = (errors.PoolTimeout, errors.NoHealthyZone, FakeDBError)


OPTIONS: dict[str, Any] = dict(
    local_zone="a", jitter=Jitter(0), pool_size=3, max_total=5, pre_ping=True, max_idle=60,
    max_lifetime=300, connect_timeout=2, timeout=5, failback_after=10)


class PoolMachine(RuleBasedStateMachine):
    """Drives the thread pool; :class:`AsyncPoolMachine` the asyncio one, same rules."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(10_000)
        self.drv = FakeDriver(self.clock)
        self.pool: Any = ZonedPool(self.drv, zones=ALL_ZONES, clock=self.clock, **OPTIONS)
        self.lent: list[PooledConnection] = []
        # connections lent when a reconfigure lowered pool_size: they may exceed it
        self.grandfathered: set[int] = set()

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.pool, method)(*args, **kwargs)

    # -- operations -------------------------------------------------------------

    @rule(timeout=st.sampled_from([0.0, 0.5, 5.0]))
    def checkout(self, timeout: float) -> None:
        try:
            rec = self.call("getconn", timeout=timeout)
        except EXPECTED:
            return
        assert all(rec is not r for r in self.lent), "lent twice"
        assert not rec.raw.closed, "a closed connection was handed out"
        self.lent.append(rec)

    @precondition(lambda self: self.lent)
    @rule(data=st.data(), how=st.sampled_from(["put", "put_noreset", "invalidate",
                                               "disconnect"]))
    def checkin(self, data: st.DataObject, how: str) -> None:
        rec = self.lent.pop(data.draw(st.integers(0, len(self.lent) - 1)))
        self.grandfathered.discard(rec.id)
        if how == "put":
            self.call("putconn", rec)
        elif how == "put_noreset":
            self.call("putconn", rec, reset=False)
        elif how == "invalidate":
            self.call("invalidate", rec)
        else:
            self.call("invalidate", rec, FakeDBError("server closed the connection", "57P01"))

    @rule(zone=st.sampled_from(sorted(ALL_ZONES)),
          behaviour=st.sampled_from(["ok", "ok", "refuse", "hang", "busy"]))
    def zone_behaves(self, zone: str, behaviour: str) -> None:
        self.drv.set(zone, behaviour)

    @rule(zone=st.sampled_from(sorted(ALL_ZONES)), behaviour=st.sampled_from(["ok", "error",
                                                                              "hang"]))
    def pings_behave(self, zone: str, behaviour: str) -> None:
        self.drv.set_ping(zone, behaviour)

    @rule(data=st.data())
    def backend_dies(self, data: st.DataObject) -> None:
        alive = self.drv.open_connections
        if alive:
            data.draw(st.sampled_from(alive)).broken = True

    @rule(seconds=st.sampled_from([0.1, 1.0, 5.0, 20.0, 61.0, 400.0, 600.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(min_idle=st.sampled_from([None, 0, 1, 2]))
    def trim(self, min_idle: int | None) -> None:
        self.call("trim", min_idle)

    @rule(zones=st.sets(st.sampled_from(sorted(ALL_ZONES)), min_size=1),
          pool_size=st.integers(1, 4), spillover=st.booleans())
    def reconfigure(self, zones: set[str], pool_size: int, spillover: bool) -> None:
        local = "a" if "a" in zones else sorted(zones)[0]
        self.grandfathered |= {r.id for r in self.lent}
        self.call("reconfigure", self.pool.config, zones={z: ALL_ZONES[z] for z in zones},
                  local_zone=local, pool_size=pool_size, max_total=pool_size + 2,
                  spillover=spillover)

    # -- invariants ---------------------------------------------------------------

    @invariant()
    def counts_add_up(self) -> None:
        s = self.pool.stats()
        cfg = self.pool.config
        old = {z: sum(1 for r in self.lent if r.zone == z and r.id in self.grandfathered)
               for z in s.zones}
        for z in s.zones.values():
            assert z.open == z.idle + z.in_use + z.opening
            assert z.opening == 0  # single-threaded: nothing is half-connected between steps
            # at every step, not only when something idles
            assert z.open - old[z.zone] <= cfg.pool_size, "zone cap exceeded"
        assert s.open - sum(old.values()) <= cfg.max_total, "total cap exceeded"
        assert s.in_use == len(self.lent)

    @invariant()
    def nothing_leaks(self) -> None:
        st_ = self.pool._state
        idle = [r.raw for z in st_.zones.values() for r in z.idle]
        lent = [r.raw for r in self.lent]
        held = idle + lent
        assert len({id(c) for c in held}) == len(held), "one connection in two places"
        assert not any(c.closed for c in held)
        assert {id(c) for c in self.drv.open_connections} == {id(c) for c in held}

    def teardown(self) -> None:
        for rec in self.lent:
            self.call("putconn", rec)
        self.call("close")
        assert self.drv.open_connections == []


class AsyncPoolMachine(PoolMachine):
    """The same rules and invariants, on the asyncio pool (one loop per example)."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.adrv = AsyncFakeDriver(self.clock)
        self.drv = self.adrv.sync  # the rules script (and count) the same fake
        self.pool = AsyncZonedPool(self.adrv, zones=ALL_ZONES, clock=self.clock, **OPTIONS)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.pool, method)(*args, **kwargs)
        if asyncio.iscoroutine(result):
            return self.loop.run_until_complete(result)
        return result

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            self.loop.close()


TestZonedPool = PoolMachine.TestCase
TestZonedPool.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                  suppress_health_check=[HealthCheck.too_slow])

TestAsyncZonedPool = AsyncPoolMachine.TestCase
TestAsyncZonedPool.settings = settings(TestZonedPool.settings, max_examples=100)

# ZONAL_HYPOTHESIS_EXAMPLES=2000 for a longer hunt than CI's.
if n := os.environ.get("ZONAL_HYPOTHESIS_EXAMPLES"):
    for case in (TestZonedPool, TestAsyncZonedPool):
        case.settings = settings(case.settings, max_examples=int(n))
