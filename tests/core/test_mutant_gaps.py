"""Guarantees that a mutant of ``scripts/mutants`` once survived: each test here is
the one that kills it (named in its docstring). All pass on the real code."""

from __future__ import annotations

import json

from zonal_core.clock import FakeClock, Jitter
from zonal_core.config import build_config
from zonal_core.pool import ZonedPool
from zonal_core.state import PoolState, Waiter
from zonal_core.testing import FakeDriver

ZONES = {"a": "10.0.0.1:5432", "b": "10.0.0.2:5432", "c": "10.0.0.3:5432"}


def test_ping_errors_of_every_idle_connection_eject_nothing() -> None:
    """A thaw after every backend of a zone was terminated: each idle connection's
    pre-ping fails with an error (not a timeout). That says nothing about the zone:
    it stays healthy and serves the checkout with a new connection.
    (Mutant ``ping-error-ejects``: a ping error counted against the endpoint.)"""
    clock = FakeClock(1000.0)
    drv = FakeDriver(clock)
    pool = ZonedPool(drv, zones=ZONES, local_zone="a", clock=clock, jitter=Jitter(seed=7),
                     pre_ping=True)
    recs = [pool.getconn() for _ in range(3)]
    for r in recs:
        pool.putconn(r)
    for conn in drv.opened:
        conn.broken = True
    clock.advance(5)
    got = pool.getconn()
    assert got.endpoint.zone == "a" and got not in recs
    s = pool.stats().zones["a"]
    assert s.ping_failures == 3 and s.closes["ping_failed"] == 3
    assert s.state == "healthy" and s.ejections == 0
    pool.putconn(got)
    pool.close()


class _Waiter(Waiter):
    __slots__ = ("woken",)

    def __init__(self) -> None:
        super().__init__()
        self.woken = 0

    def notify(self) -> None:
        self.woken += 1


def test_a_newcomer_never_overtakes_a_checkout_in_line() -> None:
    """Something becomes available with nobody giving anything back (an ejection
    ran out: a probe of the local zone is due) while a checkout waits in line: the
    checkout in line gets it, not a newcomer.
    (Mutant ``newcomer-overtakes``: a newcomer tried the route before queueing.)"""
    config = build_config(zones={"a": ZONES["a"], "b": ZONES["b"]}, local_zone="a",
                          pool_size=1, max_total=2, environ={})
    state = PoolState(config, jitter=Jitter(seed=7), now=0.0)
    now = 0.0
    for _ in range(2):  # two failed connects eject zone a
        grant, _ = state.acquire(now, _Waiter())
        assert grant is not None and grant.slot is not None
        assert grant.slot.endpoint.zone == "a"
        state.connect_failed(grant.slot, now, "failure")
    assert state.zones["a"].health_state().value == "ejected"
    grant, _ = state.acquire(now, _Waiter())  # b's only connection, kept borrowed
    assert grant is not None and grant.slot is not None
    assert grant.slot.endpoint.zone == "b"
    state.connected(grant.slot, object(), now, 0.01)

    waiting = _Waiter()
    got, _ = state.acquire(now, waiting)  # b is full, a ejected: in line
    assert got is None and waiting.queued

    now = state.zones["a"].endpoints[0].ejected_until + 0.1  # a probe of a is due
    newcomer = _Waiter()
    got, _ = state.acquire(now, newcomer)
    assert got is None and newcomer.queued  # behind the one in line...
    assert waiting.grant is not None and waiting.grant.slot is not None  # ...which got it
    assert waiting.grant.slot.endpoint.zone == "a" and waiting.woken == 1


def test_the_password_option_is_masked_in_repr_str_and_as_dict() -> None:
    """``password=`` (the option, not a password inside ``zones``) is shown as
    ``***`` and never in clear.
    (Mutant ``password-in-config-repr``.)"""
    secret = "pw-s3cret-option"
    c = build_config(zones={"a": "app@h:1"}, password=secret, environ={})
    assert c.password == secret  # kept for the connections themselves
    for text in (repr(c), str(c), json.dumps(c.as_dict())):
        assert secret not in text
    assert "password=***" in repr(c)
