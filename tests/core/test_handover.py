"""A connection checked in while checkouts wait in line goes straight to the first
of them, its checkout counted in the same locked step: the fast checkin does what
``release`` does, and the woken checkout takes it without the lock."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from zonal_core.clock import Jitter, SystemClock
from zonal_core.config import build_config
from zonal_core.pool import ZonedPool
from zonal_core.state import PooledConnection, PoolState, Waiter
from zonal_core.testing import FakeDriver

ZONES = {"a": "10.0.0.1:5432", "b": "10.0.0.2:5432"}


class _Waiter(Waiter):
    __slots__ = ("woken",)

    def __init__(self, since: float) -> None:
        super().__init__()
        self.since = since
        self.woken = 0

    def notify(self) -> None:
        self.woken += 1


def _saturated(zones: dict[str, str], **options: Any
               ) -> tuple[PoolState, PooledConnection, list[_Waiter]]:
    """Zone a's one connection borrowed at t=0, two checkouts in line since t=1, 1.5."""
    config = build_config(zones=zones, local_zone="a", pool_size=1, spillover=False,
                          environ={}, **options)
    state = PoolState(config, jitter=Jitter(seed=7), now=0.0)
    grant, _ = state.acquire(0.0, _Waiter(0.0))
    assert grant is not None and grant.slot is not None
    rec, _ = state.connected(grant.slot, object(), 0.0, 0.01)
    state.checked_out(rec, 0.0, 0.0)
    line = [_Waiter(1.0), _Waiter(1.5)]
    for w in line:
        got, _ = state.acquire(w.since, w)
        assert got is None and w.queued
    return state, rec, line


@pytest.mark.parametrize("zones", [{"a": ZONES["a"]}, ZONES], ids=["one zone", "two zones"])
@pytest.mark.parametrize("pre_ping", [False, True])
def test_fast_checkin_hands_over_as_release_does(zones: dict[str, str], pre_ping: bool
                                                 ) -> None:
    fast, fast_rec, fast_line = _saturated(zones, pre_ping=pre_ping)
    slow, slow_rec, slow_line = _saturated(zones, pre_ping=pre_ping)

    assert fast.fast_checkin(fast_rec, 3.0) is True
    assert slow.release(slow_rec, 3.0) == []

    for st, rec, (first, second) in ((fast, fast_rec, fast_line),
                                     (slow, slow_rec, slow_line)):
        g = first.grant
        assert g is not None and g.record is rec and g.counted and not g.ping
        assert first.woken == 1 and not first.queued
        assert second.grant is None and second.queued and second.woken == 0
        assert rec.lent_at == 3.0 and rec.last_used == 3.0
        z = st.snapshot(3.0, "fake").zones["a"]
        assert (z.in_use, z.idle, z.checkouts, z.waiting) == (1, 0, 2, 1)
        assert z.wait_time.count == 2 and z.wait_time.sum == pytest.approx(2.0)  # 3.0 - 1.0
        assert z.use_time.count == 1 and z.use_time.sum == pytest.approx(3.0)
    assert fast.snapshot(3.0, "fake").as_dict() == slow.snapshot(3.0, "fake").as_dict()


def test_no_hand_over_when_the_zone_has_room_or_something_idles() -> None:
    # pool_size=2 with one connection open: release() would let the next in line
    # connect too, so the fast checkin leaves it to release().
    config = build_config(zones={"a": ZONES["a"]}, pool_size=2, environ={})
    state = PoolState(config, jitter=Jitter(seed=7), now=0.0)
    grant, _ = state.acquire(0.0, _Waiter(0.0))
    assert grant is not None and grant.slot is not None
    rec, _ = state.connected(grant.slot, object(), 0.0, 0.01)
    state.checked_out(rec, 0.0, 0.0)
    state.waiters.append(_Waiter(1.0))  # (as after a connect failure in line)
    state.waiters[0].queued = True
    assert state.fast_checkin(rec, 2.0) is False
    assert rec.lent_at == 0.0  # untouched


def test_a_woken_checkout_returns_what_was_handed_over_counted_once() -> None:
    pool = ZonedPool(FakeDriver(), zones={"a": ZONES["a"]}, clock=SystemClock(),
                     pool_size=1)
    held = pool.getconn()
    got: list[PooledConnection] = []
    t = threading.Thread(target=lambda: got.append(pool.getconn(timeout=30)))
    t.start()
    deadline = time.monotonic() + 30
    while pool.stats().waiting < 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    pool.putconn(held)
    t.join(30)
    assert got == [held]
    z = pool.stats().zones["a"]
    assert (z.checkouts, z.in_use, z.idle, z.waiting) == (2, 1, 0, 0)
    assert z.wait_time.count == 2 and z.wait_time.sum > 0
    pool.putconn(got[0])
    assert pool.stats().zones["a"].idle == 1
    pool.close()
