"""A connection checked in while checkouts wait in line goes straight to the first
of them, its checkout counted in the same locked step: the fast checkin does what
``release`` does, and the woken checkout takes it without the lock. A checkout that
finds others in line joins the end of it in one step (``line_up``, what ``acquire``
does then) and, handed its connection in turn, returns without the checkout flow."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from zonal_core.backoff import Backoff
from zonal_core.clock import FakeClock, Jitter, SystemClock
from zonal_core.config import build_config
from zonal_core.errors import PoolClosed, PoolTimeout
from zonal_core.flow import Connect, Wait, checkout_flow
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


def _one_lent(zones: dict[str, str], **options: Any) -> tuple[PoolState, PooledConnection]:
    """A pool whose first connection, in zone a, was borrowed at t=0."""
    config = build_config(zones=zones, local_zone="a", environ={}, **options)
    state = PoolState(config, jitter=Jitter(seed=7), now=0.0)
    grant, _ = state.acquire(0.0, _Waiter(0.0))
    assert grant is not None and grant.slot is not None
    rec, _ = state.connected(grant.slot, object(), 0.0, 0.01)
    state.checked_out(rec, 0.0, 0.0)
    return state, rec


def _saturated(zones: dict[str, str], **options: Any
               ) -> tuple[PoolState, PooledConnection, list[_Waiter]]:
    """Zone a's one connection borrowed at t=0, two checkouts in line since t=1, 1.5."""
    state, rec = _one_lent(zones, pool_size=1, spillover=False, **options)
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

    if len(zones) == 1:
        assert fast.fast_checkin(fast_rec, 3.0) is True
    else:
        # the next in line may be served by another zone, which may close an idle
        # connection there: release() does it and returns what to close
        assert fast.fast_checkin(fast_rec, 3.0) is False
        assert fast.release(fast_rec, 3.0) == []
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


def test_no_hand_over_when_the_zone_has_room() -> None:
    # pool_size=2 with one connection open: release() would let the next in line
    # connect too, so the fast checkin leaves it to release().
    state, rec = _one_lent({"a": ZONES["a"]}, pool_size=2)
    state.waiters.append(_Waiter(1.0))  # (as after a connect failure in line)
    state.waiters[0].queued = True
    assert state.fast_checkin(rec, 2.0) is False
    assert rec.lent_at == 0.0  # untouched


def test_a_woken_checkout_returns_what_was_handed_over_counted_once() -> None:
    pool, held, got, first = _one_in_line()
    pool.putconn(held)
    first.join(30)
    assert got == [held]
    z = pool.stats().zones["a"]
    assert (z.checkouts, z.in_use, z.idle, z.waiting) == (2, 1, 0, 0)
    assert z.wait_time.count == 2 and z.wait_time.sum > 0
    pool.putconn(got[0])
    assert pool.stats().zones["a"].idle == 1
    pool.close()


def test_a_hand_over_given_back_by_a_cancelled_checkout_goes_back_idle() -> None:
    # (a task cancelled, or a thread interrupted, after the hand-over and before it
    # woke: the flow leaves the line; the checkout stays counted, as documented)
    state, rec, (first, second) = _saturated({"a": ZONES["a"]})
    assert state.fast_checkin(rec, 3.0) is True
    assert first.grant is not None and first.grant.counted
    assert state.leave(first, 3.5) == []
    assert first.grant is None
    # back from the cancelled checkout, it goes to the next in line, counted too
    assert second.grant is not None and second.grant.record is rec and second.woken == 1
    z = state.snapshot(3.5, "fake").zones["a"]
    assert (z.in_use, z.idle, z.checkouts, z.waiting) == (1, 0, 3, 0)
    assert z.wait_time.sum == pytest.approx(2.0 + 2.0)  # 3.0 - 1.0, then 3.5 - 1.5
    assert rec.lent_at == 3.5
    assert state.leave(second, 4.0) == []  # cancelled too: idle now, nobody in line
    z = state.snapshot(4.0, "fake").zones["a"]
    assert (z.in_use, z.idle, z.checkouts, z.waiting) == (0, 1, 3, 0)
    assert rec.lent_at is None


class _HookClock(FakeClock):
    """Runs ``hook`` (once) inside the next ``now()``: something that happens between
    two steps of a checkout flow."""

    def __init__(self, start: float) -> None:
        super().__init__(start)
        self.hook: Any = None

    def now(self) -> float:
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
        return super().now()


def test_a_checkout_in_line_when_the_pool_closes_gives_back_what_was_handed_over() -> None:
    state, rec = _one_lent({"a": ZONES["a"]}, pool_size=1)
    clock = _HookClock(1.0)
    waiter = _Waiter(0.0)
    closing: list[PooledConnection] = []
    flow = checkout_flow(state, clock, waiter, 5.0, closing, backoff=Backoff())
    assert isinstance(next(flow), Wait) and waiter.queued

    def checkin_then_close() -> None:
        # after the woken flow found no grant (its wait timed out), before its next
        # locked step: a checkin hands it the connection, then the pool closes
        assert state.fast_checkin(rec, 1.0) is True
        assert waiter.grant is not None and waiter.grant.record is rec
        state.close(1.0)

    clock.hook = checkin_then_close
    with pytest.raises(PoolClosed):
        flow.send(False)
    assert closing == [rec]  # given back, and closed by the runner (never lent twice)
    assert state.lent_total == 0 and waiter.grant is None and not waiter.queued


def _line_ids(state: PoolState) -> list[int]:
    return [id(w) for w in state.waiters]


def test_line_up_is_what_acquire_does_behind_a_line() -> None:
    lined, lined_rec, lined_line = _saturated({"a": ZONES["a"]})
    acq, acq_rec, acq_line = _saturated({"a": ZONES["a"]})
    newcomers = (_Waiter(2.0), _Waiter(2.0))
    assert lined.line_up(2.0, newcomers[0]) == []
    assert acq.acquire(2.0, newcomers[1]) == (None, [])
    for st, line, new in ((lined, lined_line, newcomers[0]), (acq, acq_line, newcomers[1])):
        assert _line_ids(st) == [id(line[0]), id(line[1]), id(new)]  # at the end
        assert new.queued and new.grant is None and new.woken == 0
    assert lined.snapshot(2.0, "fake").as_dict() == acq.snapshot(2.0, "fake").as_dict()
    # the connection checked in goes to the first in line, then the second: never
    # to the newcomer before them
    for st, rec, line, new in ((lined, lined_rec, lined_line, newcomers[0]),
                               (acq, acq_rec, acq_line, newcomers[1])):
        for i, first in enumerate(line):
            assert st.fast_checkin(rec, 3.0 + i) is True
            assert first.grant is not None and first.grant.record is rec
            assert new.grant is None and new.queued
            first.grant = None
        assert st.fast_checkin(rec, 5.0) is True
        assert new.grant is not None and new.grant.counted and not new.queued
        assert st.snapshot(5.0, "fake").zones["a"].wait_time.sum == pytest.approx(
            (3.0 - 1.0) + (4.0 - 1.5) + (5.0 - 2.0))


def test_line_up_leaves_the_checkout_to_acquire_with_nobody_in_line_or_closed() -> None:
    state, _rec = _one_lent({"a": ZONES["a"]}, pool_size=1)
    newcomer = _Waiter(1.0)
    assert state.line_up(1.0, newcomer) is None  # nobody in line: acquire() decides
    assert not newcomer.queued and not state.waiters
    closed, _, _ = _saturated({"a": ZONES["a"]})
    closed.close(2.0)
    assert closed.line_up(2.0, newcomer) is None and not newcomer.queued


def test_a_newcomer_served_a_slot_in_line_up_connects_through_the_flow() -> None:
    # One connection of two lent; the checkout in line already failed on the only
    # endpoint (it avoids it), so the slot goes to the newcomer behind it, which the
    # flow then takes on from where line_up left it.
    state, _rec = _one_lent({"a": ZONES["a"]}, pool_size=2, spillover=False,
                            connect_timeout=10)
    stuck = _Waiter(1.0)
    stuck.avoid.add(state.zones["a"].endpoints[0].endpoint.key)
    state._enqueue(stuck, front=False)
    newcomer = _Waiter(2.0)
    assert state.line_up(2.0, newcomer) == []
    assert newcomer.grant is not None and newcomer.grant.slot is not None
    assert not newcomer.queued and newcomer.woken == 1
    closing: list[PooledConnection] = []
    flow = checkout_flow(state, FakeClock(2.5), newcomer, 5.0, closing, backoff=Backoff(),
                         concurrent=False, start=2.0)
    action = next(flow)
    assert isinstance(action, Connect) and action.endpoint.zone == "a"
    assert action.timeout == pytest.approx(4.5)  # what is left of 5 s from t=2, not t=2.5
    with pytest.raises(StopIteration) as done:
        flow.send(object())
    rec = done.value.value
    assert rec.lent_at == 2.5 and newcomer.since == 2.0
    z = state.snapshot(2.5, "fake").zones["a"]
    assert (z.in_use, z.checkouts, z.waiting) == (2, 2, 1)
    assert z.wait_time.sum == pytest.approx(0.5)  # since the newcomer came: t=2


def _wait_for(pool: ZonedPool, waiting: int) -> None:
    deadline = time.monotonic() + 30
    while pool.stats().waiting < waiting:
        assert time.monotonic() < deadline, f"never saw {waiting} in line"
        time.sleep(0.001)


def _one_in_line(pool_class: type[ZonedPool] = ZonedPool
                 ) -> tuple[ZonedPool, PooledConnection, list[PooledConnection],
                            threading.Thread]:
    """A pool of one connection, borrowed (``held``), and a thread's checkout in line
    for it; what that checkout gets lands in the list."""
    pool = pool_class(FakeDriver(), zones={"a": ZONES["a"]}, clock=SystemClock(),
                      pool_size=1)
    held = pool.getconn()
    got: list[PooledConnection] = []
    first = threading.Thread(target=lambda: got.append(pool.getconn(timeout=30)))
    first.start()
    _wait_for(pool, 1)
    return pool, held, got, first


def test_checkouts_in_line_are_served_in_order_through_the_pool() -> None:
    pool = ZonedPool(FakeDriver(), zones={"a": ZONES["a"]}, clock=SystemClock(),
                     pool_size=1)
    held = pool.getconn()
    got: list[str] = []
    done = {name: threading.Event() for name in ("first", "second", "third")}

    def checkout(name: str) -> None:
        rec = pool.getconn(timeout=30)
        got.append(name)
        done[name].wait(30)  # (held until the test lets go)
        pool.putconn(rec)

    threads = []
    for i, name in enumerate(done):  # the second and third join a line: line_up
        threads.append(threading.Thread(target=checkout, args=(name,)))
        threads[-1].start()
        _wait_for(pool, i + 1)
    pool.putconn(held)
    for name, release in done.items():
        deadline = time.monotonic() + 30
        while name not in got:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        release.set()
    for t in threads:
        t.join(30)
    assert got == ["first", "second", "third"]
    z = pool.stats().zones["a"]
    assert (z.checkouts, z.in_use, z.idle, z.waiting, z.open) == (4, 0, 1, 0, 1)
    assert z.wait_time.count == 4
    pool.close()


def test_a_checkout_behind_a_line_times_out_and_leaves_it() -> None:
    pool, held, got, first = _one_in_line()
    with pytest.raises(PoolTimeout, match="1 waiting"):
        pool.getconn(timeout=0.05)  # behind the first: line_up, then its wait ends
    assert pool.stats().waiting == 1  # it left; the first is still in line
    pool.putconn(held)
    first.join(30)
    assert got == [held]
    z = pool.stats().zones["a"]
    assert (z.checkouts, z.timeouts, z.waiting) == (2, 1, 0)
    pool.close()


class _Interrupted(BaseException):
    """Stands for KeyboardInterrupt (or a greenlet killed) in the middle of a wait."""


class _InterruptiblePool(ZonedPool):
    interrupt = False

    def _wait(self, waiter: Waiter, timeout: float) -> bool:
        if self.interrupt:
            raise _Interrupted
        return super()._wait(waiter, timeout)


def test_a_checkout_interrupted_behind_a_line_leaves_it() -> None:
    pool, held, got, first = _one_in_line(_InterruptiblePool)
    assert isinstance(pool, _InterruptiblePool)
    pool.interrupt = True  # (the first is already waiting: only the next is hit)
    with pytest.raises(_Interrupted):
        pool.getconn(timeout=30)  # behind the first: line_up, then interrupted
    waiting = pool.stats().waiting
    pool.putconn(held)  # (before any assert: the first must not wait out its timeout)
    first.join(30)
    assert waiting == 1  # it left the line: nothing is handed to it
    assert got == [held]
    z = pool.stats().zones["a"]
    assert (z.checkouts, z.in_use, z.waiting, z.open) == (2, 1, 0, 1)
    pool.putconn(held)
    assert pool.stats().zones["a"].idle == 1
    pool.close()


def test_a_zero_timeout_behind_a_line_fails_at_once() -> None:
    pool, held, got, first = _one_in_line()
    with pytest.raises(PoolTimeout):
        pool.getconn(timeout=0)
    assert pool.stats().waiting == 1
    pool.putconn(held)
    first.join(30)
    assert got == [held]
    pool.putconn(held)
    z = pool.stats().zones["a"]
    assert (z.checkouts, z.timeouts, z.waiting, z.idle) == (2, 1, 0, 1)
    pool.close()
