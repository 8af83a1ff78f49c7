"""A checkout that joins a line the last dispatch could not serve skips the dispatch
(``PoolState.line_up``): nothing changed, so it would stop at the head again. The skip
must never show, nor must the one-step checkin that hands a connection to the head of
the line (``PoolState.fast_checkin``): every sequence of checkouts, connects,
checkins, failures, timeouts and clock moves ends the same with them, counters and
reported leaks included, as with a pool that always dispatches and always checks in
through ``release``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from zonal_core.clock import Jitter
from zonal_core.config import build_config
from zonal_core.errors import NoHealthyZone, PoolClosed
from zonal_core.state import Grant, PooledConnection, PoolState, Waiter

ZONES = {"a": "10.0.0.1:5432", "b": "10.0.0.2:5432"}


class AlwaysDispatch(PoolState):
    """The reference: a newcomer behind a line always runs the dispatch, and every
    checkin takes the general step (``release``), never the one-step fast checkin."""

    def fast_checkin(self, rec: PooledConnection, now: float | None = None) -> bool:
        return False

    def line_up(self, now: float, waiter: Waiter) -> list[PooledConnection] | None:
        if self.closed or not self.waiters:
            return None
        self._tick(now)
        self._enqueue(waiter, front=False)
        self._dispatch(now)
        return self._flush()


class _Waiter(Waiter):
    __slots__ = ("name",)

    def __init__(self, name: int, since: float) -> None:
        super().__init__()
        self.name = name
        self.since = since

    def notify(self) -> None:
        pass


@dataclass
class World:
    """One pool and what its checkouts hold, driven by the same operations."""

    state: PoolState
    now: float = 0.0
    waiters: list[_Waiter] = field(default_factory=list)
    holding: list[tuple[_Waiter, Grant]] = field(default_factory=list)
    lent: list[PooledConnection] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    def closing(self, recs: list[PooledConnection] | None) -> None:
        self.closed.extend(r.id for r in recs or [])

    def collect(self) -> None:
        """Checkouts whose grant arrived in line take it, as a woken flow does."""
        for w in self.waiters:
            if w.grant is not None and not w.queued:
                g, w.grant = w.grant, None
                self.holding.append((w, g))

    def apply(self, op: tuple[Any, ...]) -> None:
        kind, arg = op
        st_ = self.state
        try:
            if kind == "advance":
                self.now += arg
            elif kind == "checkout":
                w = _Waiter(len(self.waiters), self.now)
                self.waiters.append(w)
                lined = st_.line_up(self.now, w)
                if lined is None:
                    got, closing = st_.acquire(self.now, w)
                    self.closing(closing)
                    if got is not None:
                        self.holding.append((w, got))
                else:
                    self.closing(lined)
            elif kind in ("connect", "fail_connect") and self.holding:
                w, g = self.holding.pop(arg % len(self.holding))
                if g.slot is not None:
                    if kind == "connect":
                        rec, closing = st_.connected(g.slot, object(), self.now, 0.01)
                        st_.checked_out(rec, self.now, self.now - w.since)
                        self.lent.append(rec)
                    else:
                        closing = st_.connect_failed(g.slot, self.now, "failure")
                    self.closing(closing)
                elif g.record is not None:
                    if not g.counted:
                        st_.checked_out(g.record, self.now, self.now - w.since)
                    self.lent.append(g.record)
            elif kind in ("checkin", "discard") and self.lent:
                rec = self.lent.pop(arg % len(self.lent))
                if kind == "discard":
                    self.closing(st_.release(rec, self.now, "invalidated"))
                elif not st_.fast_checkin(rec, self.now):
                    self.closing(st_.release(rec, self.now))
            elif kind == "leave":
                queued = [w for w in self.waiters if w.queued]
                if queued:
                    self.closing(st_.leave(queued[arg % len(queued)], self.now))
            elif kind == "endpoint_failed":
                zone = st_.config.topology.zones[arg % len(st_.config.topology.zones)]
                self.closing(st_.endpoint_failed(zone.endpoints[0], self.now))
        except (NoHealthyZone, PoolClosed) as exc:
            self.events.append(type(exc).__name__)
        self.collect()

    def seen(self) -> tuple[Any, ...]:
        st_ = self.state
        zones = tuple((z.name, len(z.idle), z.lent, z.opening,
                       tuple(h.state.value for h in z.endpoints),
                       z.counters.checkouts, z.counters.wait_time.snapshot().counts,
                       round(z.counters.wait_time.snapshot().sum, 9),
                       z.counters.use_time.snapshot().counts)
                      for z in st_.zones.values())
        line = tuple(w.name for w in st_.waiters)  # type: ignore[attr-defined]
        waiters = tuple((w.queued, w.no_route, w.grant is not None) for w in self.waiters)
        held = tuple((w.name, g.slot.endpoint.key if g.slot else None,
                      g.record.id if g.record else None, g.ping, g.counted)
                     for w, g in self.holding)
        return (zones, line, waiters, held, tuple(r.id for r in self.lent),
                tuple(self.closed), tuple(self.events), st_.suspends,
                tuple(rec.id for rec, _ in st_.leaks))


OPS = st.one_of(
    st.tuples(st.just("advance"), st.sampled_from([0.0, 0.05, 0.4, 1.1, 45.0])),
    st.tuples(st.just("checkout"), st.just(0)),
    st.tuples(st.sampled_from(["connect", "fail_connect", "checkin", "discard", "leave",
                               "endpoint_failed"]), st.integers(0, 7)),
)


@settings(max_examples=300, deadline=None)
@given(zones=st.sampled_from([{"a": ZONES["a"]}, ZONES]), pool_size=st.integers(1, 3),
       spillover=st.booleans(), pre_ping=st.booleans(),
       leak_threshold=st.sampled_from([None, 1.0]),
       ops=st.lists(st.one_of(OPS, st.tuples(st.just("checkout"), st.just(0))),
                    max_size=80))
def test_the_one_step_paths_end_every_sequence_as_the_general_ones_do(
        zones: dict[str, str], pool_size: int, spillover: bool, pre_ping: bool,
        leak_threshold: float | None, ops: list[tuple[Any, ...]]) -> None:
    config = build_config(zones=zones, local_zone="a", environ={}, pool_size=pool_size,
                          max_total=pool_size * len(zones), spillover=spillover,
                          pre_ping=pre_ping, max_idle=30, leak_threshold=leak_threshold)
    ours = World(PoolState(config, jitter=Jitter(seed=3), now=0.0))
    ref = World(AlwaysDispatch(config, jitter=Jitter(seed=3), now=0.0))
    for op in ops:
        ours.apply(op)
        ref.apply(op)
        assert ours.seen() == ref.seen(), op


def _one_connection_lent(**options: Any) -> tuple[PoolState, PooledConnection]:
    """A pool of one connection in zone a, lent at 0.0."""
    config = build_config(zones={"a": ZONES["a"]}, local_zone="a", environ={}, pool_size=1,
                          **options)
    state = PoolState(config, jitter=Jitter(seed=3), now=0.0)
    got, _ = state.acquire(0.0, _Waiter(0, 0.0))
    assert got is not None and got.slot is not None
    rec, _ = state.connected(got.slot, object(), 0.0, 0.01)
    state.checked_out(rec, 0.0, 0.0)
    return state, rec


def test_a_newcomer_behind_a_full_pool_skips_the_dispatch_until_something_changes(
        ) -> None:
    state, rec = _one_connection_lent()
    head = _Waiter(1, 0.1)
    assert state.acquire(0.1, head) == (None, [])  # waits: the first in line
    second = _Waiter(2, 0.2)
    assert state.line_up(0.2, second) == []  # dispatched: the head waits

    dispatched: list[float] = []
    real = state._dispatch
    state._dispatch = lambda now: (dispatched.append(now), real(now))[1]  # type: ignore[method-assign]
    assert state.line_up(0.3, _Waiter(3, 0.3)) == []
    assert dispatched == []  # nothing changed since the head was found waiting
    assert [w.name for w in state.waiters] == [1, 2, 3]  # type: ignore[attr-defined]
    # the route is due again: the next newcomer dispatches (and finds the same)
    assert state.line_up(1.4, _Waiter(4, 1.4)) == []
    assert dispatched == [1.4]
    # a checkin hands the connection to the head; the line is still full: skipped
    assert state.fast_checkin(rec, 1.5) is True and head.grant is not None
    assert state.line_up(1.6, _Waiter(5, 1.6)) == []
    assert dispatched == [1.4]
    # the head's connection discarded makes room: release's own dispatch gives the
    # next in line a slot to connect, which fills the pool again: skipped
    head_rec = head.grant.record
    assert head_rec is not None
    state.release(head_rec, 1.7, "invalidated")
    assert dispatched == [1.4, 1.7]
    assert second.grant is not None and second.grant.slot is not None
    assert state.line_up(1.8, _Waiter(6, 1.8)) == []
    assert dispatched == [1.4, 1.7]
    # that connect fails: its own dispatch hands the slot on (the pool is full again)
    slot, second.grant = second.grant.slot, None
    state.connect_failed(slot, 1.9, "failure")
    assert dispatched == [1.4, 1.7, 1.9]
    assert [w.name for w in state.waiters] == [4, 5, 6]  # type: ignore[attr-defined]


def test_a_skipped_dispatch_still_does_what_is_due() -> None:
    # A newcomer behind a stuck line skips the dispatch, never what _tick has due: a
    # leak check that falls due while the line is stuck is made by the next newcomer.
    state, rec = _one_connection_lent(leak_threshold=0.5)
    assert state.acquire(0.1, _Waiter(1, 0.1)) == (None, [])
    assert state.line_up(0.2, _Waiter(2, 0.2)) == []  # dispatched: stuck from here
    assert state.leaks == []
    assert state.line_up(0.6, _Waiter(3, 0.6)) == []  # stuck, but the leak check is due
    assert [(r.id, round(held, 6)) for r, held in state.leaks] == [(rec.id, 0.6)]
    assert state.zones["a"].counters.leaks == 1
