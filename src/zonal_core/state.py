"""The zoned pool's state machine, shared by the sync and the async pool.

Nothing here blocks or does I/O. Every public method is called with
:attr:`PoolState.lock` held, takes ``now`` from the caller, and returns the
connections the caller must close outside the lock. The I/O around it is written
once, in :mod:`zonal_core.flow`, and run by :mod:`zonal_core.pool` (threads) and
:mod:`zonal_core.pool_async` (asyncio).
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from zonal_core.clock import Jitter
from zonal_core.config import ZonalConfig
from zonal_core.errors import NoHealthyZone, PoolClosed, PoolTimeout
from zonal_core.health import EndpointHealth, HealthPolicy, HealthState, hedge_delay
from zonal_core.routing import RouteEntry, RouteMode, panic_key, rank_zones
from zonal_core.stats import Histogram, PoolStats, ZoneCounters, ZoneStats
from zonal_core.topology import Endpoint, Zone

__all__ = ["Grant", "PoolState", "PooledConnection", "Slot", "Waiter", "process_id"]

_INF = float("inf")
_FOLD_AT = Histogram.FOLD_AT

# Connections a forked child inherited from its parent. They stay referenced and are
# never closed: closing (or garbage collection, through the driver) would send a
# Terminate message on a socket the parent still uses.
_FORK_ORPHANS: list[Any] = []
_ALL_STATES: weakref.WeakSet[PoolState] = weakref.WeakSet()
# This process's id, kept by the fork hook at the end of this module: checkouts and
# checkins compare it with their connection's, and os.getpid() is a system call.
_pid = os.getpid()


def process_id() -> int:
    """This process's id (kept by a fork hook, without a system call): a
    connection whose ``pid`` differs was opened before a fork, its socket is the
    parent's."""
    return _pid


class PooledConnection:
    """One driver connection and what the pool knows of it."""

    __slots__ = ("__weakref__", "created_at", "endpoint", "expires_at", "generation", "id",
                 "info", "last_used", "leak_reported", "lent_at", "pid", "raw", "stack", "zone")

    def __init__(self, raw: Any, endpoint: Endpoint, ident: int, now: float,
                 expires_at: float, generation: int) -> None:
        self.raw = raw
        self.endpoint = endpoint
        self.zone = endpoint.zone
        self.id = ident
        self.created_at = now
        self.expires_at = expires_at
        self.last_used = now
        self.lent_at: float | None = None
        self.generation = generation
        self.pid = _pid  # the process that owns the socket
        #: where it was checked out, kept only when ``leak_threshold`` is set
        self.stack: list[str] | None = None
        self.leak_reported = False
        #: free for adapters
        self.info: dict[str, Any] = {}

    def __repr__(self) -> str:
        state = "lent" if self.lent_at is not None else "idle"
        return f"<PooledConnection #{self.id} {self.endpoint.key} {state}>"


class Slot:
    """A reservation to open one new connection to ``endpoint``."""

    __slots__ = ("endpoint", "mode")

    def __init__(self, endpoint: Endpoint, mode: RouteMode) -> None:
        self.endpoint = endpoint
        self.mode = mode

    def __repr__(self) -> str:
        return f"<Slot {self.endpoint.key} {self.mode.value}>"


class Grant:
    """What a checkout step got: an idle connection (maybe to ping) or a slot."""

    __slots__ = ("counted", "ping", "record", "slot")

    def __init__(self, record: PooledConnection | None = None, slot: Slot | None = None,
                 ping: bool = False) -> None:
        self.record = record
        self.slot = slot
        self.ping = ping
        #: the checkout is already counted: handed over in line, the connection is the
        #: waiter's to return without taking the pool's lock again
        self.counted = False


class Waiter:
    """A checkout waiting in line. Subclasses say how to wake their owner."""

    __slots__ = ("avoid", "grant", "no_route", "queued", "since")

    def __init__(self) -> None:
        self.grant: Grant | None = None
        self.queued = False
        self.no_route = False
        #: when its checkout began (the wait a hand-over counts runs from here)
        self.since = 0.0
        #: endpoint keys that failed during this checkout: it does not try them again
        self.avoid: set[str] = set()

    def notify(self) -> None:
        """Wake the owner; called with the pool's lock held, so it must not block."""
        raise NotImplementedError


class _ZoneRuntime:
    __slots__ = ("counters", "endpoints", "idle", "invalid_before", "lent", "name", "opening",
                 "removed", "spec", "use_pending", "wait_pending")

    def __init__(self, spec: Zone) -> None:
        self.spec = spec
        self.name = spec.name  # (a zone keeps its name through reconfigure)
        self.endpoints = [EndpointHealth(ep) for ep in spec.endpoints]
        self.idle: list[PooledConnection] = []  # a stack: the end is the most recent
        self.lent = 0
        self.opening = 0
        self.removed = False
        self.invalid_before = -_INF
        self.counters = ZoneCounters()
        # (the use-time values a fast checkin leaves for the histogram's next fold)
        self.use_pending = self.counters.use_time.pending
        # (and the waits of the checkouts counted: checked_out's)
        self.wait_pending = self.counters.wait_time.pending

    @property
    def size(self) -> int:
        return len(self.idle) + self.lent + self.opening

    def health_state(self) -> HealthState:
        states = {h.state for h in self.endpoints}
        for s in (HealthState.HEALTHY, HealthState.PROBATION):
            if s in states:
                return s
        return HealthState.EJECTED

    def health_of(self, ep: Endpoint) -> EndpointHealth | None:
        for h in self.endpoints:
            if h.endpoint == ep:
                return h
        return None


_WAIT = "wait"
_NO_ROUTE = "no_route"


class PoolState:
    """Per-zone LIFO idle stacks, caps, FIFO waiters, health and counters."""

    def __init__(self, config: ZonalConfig, *, jitter: Jitter | None = None,
                 health: HealthPolicy | None = None, now: float = 0.0,
                 clock: Callable[[], float] | None = None) -> None:
        self.lock = threading.Lock()
        # What the fast steps read under the lock when not given the time.
        self.clock: Callable[[], float] = clock or (lambda: now)
        self.config = config
        self.jitter = jitter or Jitter()
        self.health = health or HealthPolicy()
        self.zones: dict[str, _ZoneRuntime] = {
            z.name: _ZoneRuntime(z) for z in config.topology.zones}
        self.waiters: deque[Waiter] = deque()
        self.closed = False
        self.generation = 0
        self.suspends = 0
        self.last_op = now
        self.opening_total = 0
        self._next_id = 1
        self._reap_due = _INF
        self._route: list[RouteEntry] = []
        self._route_valid_until = -_INF
        self._fast_zone: _ZoneRuntime | None = None  # first in the route, if it serves
        # Until then the fast steps may run: the route valid, its first zone serving,
        # nothing to reap or to close, the pool open, no leak watch, no zone above
        # pool_size (-inf: none may).
        self._fast_until = -_INF
        self._oversized = False  # a reconfigure left a zone above pool_size
        # Every zone of the route NORMAL or FALLBACK: what a checkout can be given then
        # changes only by an event (a checkin, a connect, a failure...), never by time
        # alone (a probe's turn or a panic's order do).
        self._route_timeless = False
        # Until then, a checkout in line with no endpoint to avoid cannot be given
        # anything: the last dispatch found so (its head waited) and nothing changed
        # since. Every operation that may change it sets it back (_unstick).
        self._stuck_until = -_INF
        self._preferred: str | None = config.local_zone
        self._closing: list[PooledConnection] = []
        # Borrowed connections, watched for leaks when leak_threshold is set.
        self._watched: dict[int, PooledConnection] = {}
        self._next_leak_check = _INF
        self.leaks: list[tuple[PooledConnection, float]] = []
        self._static_rank = _static_rank(config)
        self.pid = _pid
        _ALL_STATES.add(self)

    # ------------------------------------------------------------------ helpers

    @property
    def total(self) -> int:
        """Open connections across zones, counting those being opened."""
        return sum(z.size for z in self.zones.values())

    @property
    def lent_total(self) -> int:
        """Borrowed connections across zones. (Added up when asked, from the zones'
        own counts: checkouts and checkins keep one count each, not two.)"""
        return sum(z.lent for z in self.zones.values())

    @property
    def _next_reap(self) -> float:
        """When an idle connection is next due to be reaped."""
        return self._reap_due

    @_next_reap.setter
    def _next_reap(self, due: float) -> None:
        self._reap_due = due
        self._refresh_fast()

    def _refresh_fast(self) -> None:
        """Recompute ``_fast_until`` from what it stands for (see ``__init__``)."""
        cfg = self.config
        if self._oversized:  # (until a reconfigure's smaller pool_size is met)
            self._oversized = any(z.size > cfg.pool_size for z in self.zones.values())
        if (self._fast_zone is None or self.closed or self._closing or self._oversized
                or cfg.leak_threshold is not None or self._watched):
            self._fast_until = -_INF
        else:
            valid, due = self._route_valid_until, self._reap_due
            self._fast_until = valid if valid < due else due

    def _flush(self) -> list[PooledConnection]:
        out, self._closing = self._closing, []
        if out:
            self._refresh_fast()
        return out

    def _close(self, z: _ZoneRuntime, rec: PooledConnection, reason: str) -> None:
        z.counters.closes[reason] += 1
        self._closing.append(rec)
        self._fast_until = -_INF  # (the closes go back through the flow)

    def _close_idle_where(self, z: _ZoneRuntime, reason: str, pred: Any = None) -> None:
        keep: list[PooledConnection] = []
        for rec in z.idle:
            if pred is None or pred(rec):
                self._close(z, rec, reason)
            else:
                keep.append(rec)
        z.idle = keep

    def _health(self, ep: Endpoint) -> EndpointHealth | None:
        z = self.zones.get(ep.zone)
        return z.health_of(ep) if z is not None else None

    # ------------------------------------------------------------------ tick

    def _tick(self, now: float) -> None:
        """Every pool operation starts here: suspend check, then reaping.

        Reaping happens on the caller's path: no background thread is needed for
        correctness, and none would run while a function is frozen anyway.
        """
        last = self.last_op
        gap = now - last
        if now > last:
            self.last_op = now
        if gap > self.config.max_idle:
            # The process was frozen, the machine slept, or nobody asked for a long
            # time: whatever sat idle through it is stale.
            self.suspends += 1
            for z in self.zones.values():
                self._close_idle_where(z, "suspend")
            self._next_reap = _INF
        elif now >= self._reap_due:  # (= _next_reap, without the property's call)
            self._reap(now)
        if now >= self._next_leak_check:
            self._check_leaks(now)

    def _check_leaks(self, now: float) -> None:
        """Report, once each, connections borrowed longer than ``leak_threshold``."""
        threshold = self.config.leak_threshold
        nxt = _INF
        if threshold is not None:
            for rec in self._watched.values():
                if rec.leak_reported or rec.lent_at is None:
                    continue
                due = rec.lent_at + threshold
                if now >= due:
                    rec.leak_reported = True
                    self.leaks.append((rec, now - rec.lent_at))
                    z = self.zones.get(rec.zone)
                    if z is not None:
                        z.counters.leaks += 1
                else:
                    nxt = min(nxt, due)
        self._next_leak_check = nxt

    def _reap(self, now: float) -> None:
        max_idle = self.config.max_idle
        nxt = _INF
        for z in self.zones.values():
            keep: list[PooledConnection] = []
            for rec in z.idle:
                if now - rec.last_used > max_idle:
                    self._close(z, rec, "idle")
                elif now >= rec.expires_at:
                    self._close(z, rec, "lifetime")
                else:
                    keep.append(rec)
                    nxt = min(nxt, rec.last_used + max_idle, rec.expires_at)
            z.idle = keep
        self._next_reap = nxt

    # ------------------------------------------------------------------ routing

    def route(self, now: float) -> list[RouteEntry]:
        """The route order now (cached until health or time changes it)."""
        if now < self._route_valid_until:
            return self._route
        route, valid_until = self._rank(now)
        self._route, self._route_valid_until = route, valid_until
        self._fast_zone = self.zones[route[0].zone.name] if route and route[0].serves else None
        self._refresh_fast()
        self._route_timeless = all(e.mode is RouteMode.NORMAL or e.mode is RouteMode.FALLBACK
                                   for e in route)
        self._note_preferred(route)
        return route

    def _rank(self, now: float) -> tuple[list[RouteEntry], float]:
        return rank_zones(
            [(z.spec, z.endpoints) for z in self.zones.values() if not z.removed],
            local_zone=self.config.local_zone, now=now,
            failback_after=self.config.failback_after,
        )

    def _preferred_of(self, route: list[RouteEntry]) -> str | None:
        return next((e.zone.name for e in route if e.serves), None)

    def _note_preferred(self, route: list[RouteEntry]) -> None:
        first = self._preferred_of(route)
        old, self._preferred = self._preferred, first
        if first == old or old is None or first is None or old not in self.zones:
            return
        rank = self._static_rank
        if rank.get(first, 0) > rank.get(old, 0):
            # Traffic left ``old`` for a zone it ranks above: a failover.
            self.zones[old].counters.failovers += 1
        else:
            # Traffic came back to a better zone: retire what idles elsewhere.
            for z in self.zones.values():
                if z.name != first:
                    self._close_idle_where(z, "failback")

    def _invalidate_route(self) -> None:
        self._route_valid_until = self._fast_until = -_INF

    def _unstick(self) -> None:
        """Something may have changed what the line can be given: the next checkout
        that joins it runs the dispatch again."""
        self._stuck_until = -_INF

    @property
    def preferred_zone(self) -> str | None:
        """The zone new checkouts go to now."""
        return self._preferred

    # ------------------------------------------------------------------ checkout

    def acquire(self, now: float, waiter: Waiter, *, front: bool = False
                ) -> tuple[Grant | None, list[PooledConnection]]:
        """One checkout step: a grant, or ``None`` with ``waiter`` in line.

        ``front`` puts a checkout that already waited (and failed to connect) back
        at the head of the line. Raises :class:`PoolClosed`, or
        :class:`NoHealthyZone` when no zone could serve even by waiting.
        """
        self._unstick()
        self._tick(now)
        if self.closed:
            # Anything reaped stays buffered in _closing for the next operation.
            raise PoolClosed(f"pool {self.config.name!r} is closed")
        if not waiter.queued and waiter.grant is None and not waiter.no_route:
            if self.waiters and not front:
                # Fairness: a newcomer never overtakes a checkout already in line.
                self._enqueue(waiter, front=False)
                self._dispatch(now)
            else:
                got = self._try_grant(now, waiter.avoid)
                if isinstance(got, Grant):
                    return got, self._flush()
                if got == _NO_ROUTE:
                    waiter.no_route = True
                else:
                    self._enqueue(waiter, front=front)
        if waiter.grant is not None:
            granted, waiter.grant = waiter.grant, None
            return granted, self._flush()
        if waiter.no_route:
            waiter.no_route = False
            raise NoHealthyZone(self.describe(now, prefix="no zone can serve"))
        return None, self._flush()

    def line_up(self, now: float, waiter: Waiter) -> list[PooledConnection] | None:
        """A new checkout when others are in line (a saturated pool): what
        :meth:`acquire` does then, in one step: it joins the end of the line and the
        line is served as far as it can be. What to close; None (nobody in line, or
        the pool closed): take :meth:`acquire`.

        The waiter may come out served (a connection handed over, counted; a slot to
        connect; a connection to ping; no route): the checkout flow takes any of them
        but the first from ``waiter`` as it does after a wait."""
        if self.closed or not self.waiters:
            return None
        self._tick(now)  # (reaping, a suspend, leaks: none of it touches the line)
        self._enqueue(waiter, front=False)
        if now < self._stuck_until and not self._closing and not self.waiters[0].avoid:
            # The dispatch would stop at the head of the line, as the last one did:
            # nothing changed since (no checkin to idle, no connect, no failure, no
            # close, no timeout, the route still valid). A saturated pool's common case.
            return []
        self._dispatch(now)
        return self._flush()

    def fast_checkout(self, now: float | None = None) -> PooledConnection | None:
        """The common case in one locked step (it takes the lock and, unless given
        ``now``, reads the clock under it): an idle connection of the preferred zone
        that needs no ping, nobody waiting, nothing to reap, no leak watch. None: take
        the flow."""
        if self.waiters:
            return None  # (read unlocked, a hint: a saturated pool skips a lock round)
        with self.lock:
            if now is None:
                now = self.clock()
            if now >= self._fast_until:
                self.route(now)  # (cached: a new one only when due)
                if now >= self._fast_until:
                    return None
            z: _ZoneRuntime = self._fast_zone  # type: ignore[assignment]  # (not None then)
            idle = z.idle
            # (no suspend check: a gap past max_idle since the last operation is past
            # every idle connection's reaping deadline, so past _fast_until too; no
            # generation or zone-invalidation check: whatever a fork, a drain or an
            # invalidation makes stale is closed there, and no checkin puts it back)
            if not idle or self.waiters:
                return None
            rec = idle.pop()
            cfg = self.config
            if cfg.pre_ping and now - rec.last_used > cfg.ping_bypass:
                idle.append(rec)  # (to ping: the flow's)
                return None
            self.last_op = now
            z.lent += 1
            rec.lent_at = now
            # (waited 0: counted in wait_time's snapshot as checkouts minus observed waits)
            z.counters.checkouts += 1
            return rec

    def fast_checkin(self, rec: PooledConnection, now: float | None = None) -> bool:
        """The common checkin in one locked step (as :meth:`fast_checkout`): back onto
        the idle stack of the preferred zone, or straight to the first checkout in
        line; nothing to reap or retire. False: take :meth:`release`."""
        with self.lock:
            if now is None:
                now = self.clock()
            lent_at = rec.lent_at
            if now >= self._fast_until:
                self.route(now)  # (cached: a new one only when due)
                if now >= self._fast_until:
                    return False
            z: _ZoneRuntime = self._fast_zone  # type: ignore[assignment]  # (not None then)
            if lent_at is None or rec.zone != z.name:
                return False
            cfg = self.config
            idle = z.idle
            expires_at = rec.expires_at
            waiters = self.waiters
            if (now >= expires_at or now - self.last_op > cfg.max_idle
                    # (a connection lent before a fork is of an older generation: the
                    # fork hook moves it on; the fast zone is never a removed one)
                    or rec.generation != self.generation
                    or rec.created_at <= z.invalid_before
                    # (checkouts in line: only a one-zone pool, full, with nothing idle)
                    or (waiters and (idle or len(self.zones) > 1
                                     or z.lent + z.opening != cfg.pool_size))):
                return False
            self.last_op = now
            # (folded into the histogram in batches: see Histogram.pending)
            pending = z.use_pending
            pending.append(now - lent_at)
            if len(pending) >= _FOLD_AT:
                z.counters.use_time.fold()
            rec.last_used = now
            if waiters:
                # What release() does, in one step: the connection tops the empty idle
                # stack and the first checkout in line takes it (just used: no ping). It
                # stays lent, to that checkout, counted here. Nobody behind it can be
                # served then (no room, no other zone), so the rest of the line stays as
                # it is. (With more zones the next in line may get a slot elsewhere, which
                # may close an idle connection: release() does that, and returns what to
                # close.)
                w = waiters.popleft()
                w.queued = False
                self._hand_over(w, Grant(record=rec), now)
                return True
            rec.lent_at = None
            z.lent -= 1
            idle.append(rec)
            # min(next_reap, now + max_idle, expires_at) without min()'s call: hot path
            due = now + cfg.max_idle
            if expires_at < due:  # noqa: PLR1730
                due = expires_at
            if due < self._reap_due:
                self._reap_due = due
                if due < self._fast_until:  # noqa: PLR1730
                    self._fast_until = due
            return True

    def _enqueue(self, waiter: Waiter, *, front: bool) -> None:
        waiter.queued = True
        if front:
            self.waiters.appendleft(waiter)
        else:
            self.waiters.append(waiter)

    def leave(self, waiter: Waiter, now: float) -> list[PooledConnection]:
        """Take ``waiter`` out of line (timeout, cancel); give back any grant."""
        self._unstick()
        if waiter.queued:
            waiter.queued = False
            with contextlib.suppress(ValueError):  # queued implies present
                self.waiters.remove(waiter)
        if waiter.grant is not None:
            g, waiter.grant = waiter.grant, None
            self._give_back(g, now)
        return self._flush()

    def timed_out(self, now: float, timeout: float, last_error: str | None) -> PoolTimeout:
        """Count a checkout timeout and build its error (after :meth:`leave`)."""
        pref = self._preferred or self.config.local_zone
        if pref in self.zones:
            self.zones[pref].counters.timeouts += 1
        prefix = f"no connection within timeout={timeout:g}s"
        if last_error:
            prefix += f" (last connect error: {last_error})"
        return PoolTimeout(self.describe(now, prefix=prefix))

    def give_back(self, grant: Grant, now: float) -> list[PooledConnection]:
        """Return a grant its checkout did not use (cancelled, timed out)."""
        self._unstick()
        self._give_back(grant, now)
        return self._flush()

    def _give_back(self, grant: Grant, now: float) -> None:
        if grant.record is not None:
            self._checkin(grant.record, now, None, used=False)
        elif grant.slot is not None:
            self._release_slot(grant.slot)
            self._dispatch(now)

    def _try_grant(self, now: float, avoid: set[str]) -> Grant | str:
        """The first thing the route can give; ``_WAIT``; or ``_NO_ROUTE``."""
        cfg = self.config
        can_wait = False
        for entry in self.route(now):
            z = self.zones[entry.zone.name]
            if entry.serves and z.idle:
                idle = self._take_idle(z, now)
                if idle is not None:
                    return idle
            h, busy = self._pick_endpoint(z, entry.mode, avoid, now)
            if h is None:
                can_wait = can_wait or busy
                continue
            if self._make_room(z):
                self._reserve(z, h, entry.mode)
                return Grant(slot=Slot(h.endpoint, entry.mode))
            if entry.serves:
                can_wait = True
                if not cfg.spillover:
                    return _WAIT  # the zone to use is full: wait for it
        if can_wait or self.opening_total:
            return _WAIT
        if any(self.zones[e.zone.name].lent for e in self._route if e.serves):
            return _WAIT  # this checkout tried every endpoint; a borrowed one may return
        return _NO_ROUTE

    def _take_idle(self, z: _ZoneRuntime, now: float) -> Grant | None:
        """Lend ``z``'s most recently used idle connection (LIFO: the rest age out),
        closing invalidated ones on the way; None if none is left."""
        cfg = self.config
        while z.idle:
            rec = z.idle.pop()
            if rec.created_at <= z.invalid_before or rec.generation != self.generation:
                self._close(z, rec, "invalidated")
                continue
            self._lend(z, rec, now)
            return Grant(record=rec, ping=cfg.pre_ping and now - rec.last_used > cfg.ping_bypass)
        return None

    def _pick_endpoint(self, z: _ZoneRuntime, mode: RouteMode, avoid: set[str], now: float
                       ) -> tuple[EndpointHealth | None, bool]:
        """The endpoint of ``z`` to connect to, and whether one was busy probing."""
        best: EndpointHealth | None = None
        busy = False
        fb = self.config.failback_after
        for h in z.endpoints:
            if h.endpoint.key in avoid:
                continue
            if mode is RouteMode.NORMAL:
                ok = h.state is HealthState.HEALTHY
            elif mode is RouteMode.FALLBACK:
                ok = h.state is HealthState.PROBATION
            elif mode is RouteMode.PROBE:
                ok = h.can_probe(now) or h.can_confirm(now, fb)
                busy = busy or h.probe_in_flight
            else:  # PANIC: every endpoint ejected; ejection over first, then the oldest
                if best is None or panic_key(h, now) < panic_key(best, now):
                    best = h
                continue
            if ok and (best is None or _load(z, h) < _load(z, best)):
                best = h
        return best, busy

    def _make_room(self, z: _ZoneRuntime) -> bool:
        if z.size >= self.config.pool_size:
            return False
        if self.total < self.config.max_total:
            return True
        # The total cap is hit: an idle connection of another zone gives way.
        for other in self.zones.values():
            if other is not z and other.idle:
                rec = other.idle.pop(0)  # its least recently used
                self._close(other, rec, "failback")
                return True
        return False

    def _reserve(self, z: _ZoneRuntime, h: EndpointHealth, mode: RouteMode) -> None:
        z.opening += 1
        self.opening_total += 1
        if mode is RouteMode.PROBE:
            h.probe_in_flight = True

    def _release_slot(self, slot: Slot) -> None:
        z = self.zones[slot.endpoint.zone]
        z.opening -= 1
        self.opening_total -= 1
        h = z.health_of(slot.endpoint)
        if h is not None and slot.mode is RouteMode.PROBE:
            h.probe_in_flight = False

    def _lend(self, z: _ZoneRuntime, rec: PooledConnection, now: float) -> None:
        z.lent += 1
        rec.lent_at = now

    def checked_out(self, rec: PooledConnection, now: float, waited: float) -> None:
        """A checkout completed with ``rec``: count it."""
        z = self.zones.get(rec.zone)
        if z is not None:
            z.counters.checkouts += 1
            # (folded into the histogram in batches, as the use time: a saturated pool
            # counts here every checkout a checkin hands a connection to)
            pending = z.wait_pending
            pending.append(waited)
            if len(pending) >= _FOLD_AT:
                z.counters.wait_time.fold()
        rec.lent_at = now
        if self.config.leak_threshold is not None:
            self._watch(rec, now)

    def _watch(self, rec: PooledConnection, now: float) -> None:
        assert self.config.leak_threshold is not None
        rec.leak_reported = False
        self._watched[rec.id] = rec
        self._next_leak_check = min(self._next_leak_check, now + self.config.leak_threshold)

    # ------------------------------------------------------------------ connect

    def connected(self, slot: Slot, raw: Any, now: float, took: float
                  ) -> tuple[PooledConnection, list[PooledConnection]]:
        """The connect for ``slot`` succeeded; the new connection is lent.

        Also returns what to close: when this connect ended a probation, traffic
        fails back now and idle connections elsewhere are retired.
        """
        self._unstick()
        rec = self._connected(slot, raw, now, took)
        self._dispatch(now)  # a zone may just have come back
        return rec, self._flush()

    def adopt(self, slot: Slot, raw: Any, now: float, took: float) -> list[PooledConnection]:
        """A connect that no checkout waits for any more completed (a hedge that
        lost the race, or a cancelled checkout's): the connection joins its zone's
        idle stack, or a waiter, when it is wanted there; else it is closed."""
        self._unstick()
        rec = self._connected(slot, raw, now, took)
        self._checkin(rec, now, None, used=False)
        return self._flush()

    def _connected(self, slot: Slot, raw: Any, now: float, took: float) -> PooledConnection:
        z = self.zones[slot.endpoint.zone]
        z.opening -= 1
        self.opening_total -= 1
        h = z.health_of(slot.endpoint)
        if h is not None and h.record_success(now, took, self.health, self.config.failback_after):
            self._invalidate_route()
            self.route(now)
        if h is not None and slot.mode is RouteMode.PROBE:
            h.probe_in_flight = False
        z.counters.connects += 1
        z.counters.connect_time.observe(took)
        # Up to 10% early, never later: connections opened together do not all
        # expire together.
        expires = now + self.config.max_lifetime * self.jitter.uniform(0.9, 1.0)
        rec = PooledConnection(raw, slot.endpoint, self._next_id, now, expires, self.generation)
        self._next_id += 1
        self._lend(z, rec, now)
        return rec

    def connect_failed(self, slot: Slot, now: float, kind: str) -> list[PooledConnection]:
        """The connect for ``slot`` failed. ``kind``: failure, busy, auth, config or
        cancelled.

        Only ``failure`` counts against the endpoint's health: a full server, a
        refused password or a misspelled option says nothing about whether the zone
        is reachable.
        """
        self._unstick()
        z = self.zones[slot.endpoint.zone]
        self._release_slot(slot)
        if kind != "cancelled":
            z.counters.connect_errors += 1
        if kind == "busy":
            z.counters.retries += 1
        if kind == "failure":
            self._failure(slot.endpoint, now)
        self._dispatch(now)
        return self._flush()

    def endpoint_failed(self, ep: Endpoint, now: float) -> list[PooledConnection]:
        """A ping or a query timed out on ``ep``: a health failure of that endpoint."""
        self._unstick()
        self._failure(ep, now)
        self._dispatch(now)
        return self._flush()

    def _failure(self, ep: Endpoint, now: float) -> None:
        h = self._health(ep)
        if h is None:
            return
        if h.record_failure(now, self.health, self.jitter, may_eject=self._has_other_capacity(h)):
            z = self.zones[ep.zone]
            z.counters.ejections += 1
            self._invalidate_route()
            # What sits idle behind an ejected endpoint is dead or hanging too.
            self._close_idle_where(z, "invalidated", lambda r: r.endpoint == ep)
            self.route(now)

    def _has_other_capacity(self, h: EndpointHealth) -> bool:
        """Whether an endpoint other than ``h`` is healthy or on probation: only then
        may ``h`` be ejected (ejection never removes the last capacity, so a slow
        machine or a paused server never turns a one-zone pool into an outage)."""
        for z in self.zones.values():
            if z.removed:
                continue
            for other in z.endpoints:
                if other is not h and other.state is not HealthState.EJECTED:
                    return True
        return False

    # ------------------------------------------------------------------ hedging

    def hedge(self, now: float, exclude: set[str]) -> Grant | None:
        """A second way to serve a checkout whose connect is slow, never a wait: an
        idle connection of a serving zone, or a slot in the next zone of the route
        (endpoints of ``exclude`` left out) that has room. None: nothing to hedge to.
        """
        self._unstick()
        self._tick(now)
        if self.closed:
            return None
        for entry in self.route(now):
            z = self.zones[entry.zone.name]
            if entry.serves and z.idle:
                idle = self._take_idle(z, now)
                if idle is not None:
                    return idle
            h, _ = self._pick_endpoint(z, entry.mode, exclude, now)
            if h is not None and self._make_room(z):
                self._reserve(z, h, entry.mode)
                return Grant(slot=Slot(h.endpoint, entry.mode))
        return None

    def can_hedge(self, now: float, exclude: set[str]) -> bool:
        """Whether the route holds an endpoint outside ``exclude`` that a hedge could
        connect to (room aside): if not, a connect runs without a racer."""
        for entry in self.route(now):
            z = self.zones[entry.zone.name]
            h, _ = self._pick_endpoint(z, entry.mode, exclude, now)
            if h is not None:
                return True
        return False

    def hedge_delay(self, ep: Endpoint) -> float:
        """Seconds a connect to ``ep`` may take before a hedge starts (0: never)."""
        return hedge_delay(self._health(ep), self.config.connect_timeout,
                           self.config.hedge_after)

    def retry(self, waiter: Waiter, now: float) -> list[PooledConnection]:
        """A checkout that tried every endpoint tries them again: it forgets which
        failed and, if it is in line, may be granted a new slot now."""
        self._unstick()
        waiter.avoid.clear()
        self._dispatch(now)
        return self._flush()

    # ------------------------------------------------------------------ checkin

    def release(self, rec: PooledConnection, now: float, discard: str | None = None
                ) -> list[PooledConnection]:
        """Check ``rec`` in. ``discard`` (a close reason) closes it instead."""
        self._unstick()
        self._tick(now)
        self._checkin(rec, now, discard, used=True)
        return self._flush()

    def _checkin(self, rec: PooledConnection, now: float, discard: str | None, *,
                 used: bool) -> None:
        z = self.zones.get(rec.zone)
        if rec.lent_at is None or z is None:
            return  # not lent by this pool: a double checkin
        lent_at, rec.lent_at = rec.lent_at, None
        self._watched.pop(rec.id, None)
        if rec.pid != self.pid:
            _FORK_ORPHANS.append(rec.raw)  # lent before a fork: the parent owns it
            return
        if used:
            z.counters.use_time.observe(max(0.0, now - lent_at))
            rec.last_used = now
        z.lent -= 1
        reason = discard or self._retire_reason(z, rec, now)
        if reason is not None:
            self._close(z, rec, reason)
            if z.removed and z.size == 0 and self.zones.get(z.name) is z:
                del self.zones[z.name]  # a removed zone's last borrowed one is back
        else:
            z.idle.append(rec)
            self._next_reap = min(self._next_reap, rec.last_used + self.config.max_idle,
                                  rec.expires_at)
        self._dispatch(now)

    def _retire_reason(self, z: _ZoneRuntime, rec: PooledConnection, now: float) -> str | None:
        if self.closed:
            return "shutdown"
        if rec.generation != self.generation or rec.created_at <= z.invalid_before:
            return "invalidated"
        if z.removed:
            return "reconfigure"
        if now >= rec.expires_at:
            return "lifetime"
        if z.size >= self.config.pool_size:  # (z.size no longer counts rec)
            return "reconfigure"
        self.route(now)  # (keeps self._preferred current)
        if not self.waiters and self._preferred not in (None, z.name):
            # Traffic has a better home now (failback, or spillover no longer needed).
            return "failback"
        return None

    def _dispatch(self, now: float) -> None:
        """Hand what the pool can give to the waiters, in order."""
        waiters = self.waiters
        self._stuck_until = -_INF
        i = 0  # (by position, without copying the line: it can be long when saturated)
        while i < len(waiters):
            w = waiters[i]
            g = self._try_grant(now, w.avoid)
            if g == _WAIT:
                if not w.avoid:
                    if i == 0 and self._route_timeless:
                        # (the same answer for any checkout that avoids nothing, until
                        # something changes or the route is due again)
                        self._stuck_until = self._route_valid_until
                    break  # nobody behind it can be served either: strict FIFO
                i += 1
                continue
            del waiters[i]
            w.queued = False
            if not isinstance(g, Grant):
                w.no_route = True
                w.notify()
            elif g.record is not None and not g.ping:
                self._hand_over(w, g, now)
            else:
                w.grant = g  # a connect to make, or a connection to ping: the flow's
                w.notify()

    def _hand_over(self, w: Waiter, grant: Grant, now: float) -> None:
        """Give ``w`` the lent connection of ``grant``, its checkout counted now:
        woken, the waiter returns it without taking the lock again (one lock round
        less per checkout when the pool is saturated)."""
        assert grant.record is not None
        self.checked_out(grant.record, now, now - w.since)
        grant.counted = True
        w.grant = grant
        w.notify()

    # ------------------------------------------------------------------ ping

    def ping_failed(self, rec: PooledConnection, now: float, timed_out: bool
                    ) -> list[PooledConnection]:
        """A pre-ping failed: discard that connection only, not the pool.

        A timed-out ping counts against the endpoint too (a black-holed server); an
        error (the backend was terminated, the server restarted) does not, so a thaw
        after backends were killed does not eject a healthy zone.
        """
        self._unstick()
        z = self.zones.get(rec.zone)
        if z is not None:
            z.counters.ping_failures += 1
        self._checkin(rec, now, "ping_failed", used=False)
        if timed_out:
            self._failure(rec.endpoint, now)
            self._dispatch(now)
        return self._flush()

    def pinged(self, rec: PooledConnection) -> None:
        """A pre-ping succeeded."""
        z = self.zones.get(rec.zone)
        if z is not None:
            z.counters.pings += 1

    def invalidate_zone(self, zone: str, now: float) -> list[PooledConnection]:
        """A disconnect in ``zone``: its connections opened before now are suspect."""
        self._unstick()
        z = self.zones.get(zone)
        if z is not None:
            z.invalid_before = now
            self._close_idle_where(z, "invalidated", lambda r: r.created_at <= now)
        return self._flush()

    # ------------------------------------------------------------------ housekeeping

    def trim(self, now: float, min_idle: int | None = None) -> list[PooledConnection]:
        """Close idle connections down to ``min_idle`` per zone; the newest stay."""
        self._unstick()
        self._tick(now)
        keep_n = self.config.min_idle if min_idle is None else max(0, min_idle)
        for z in self.zones.values():
            extra = len(z.idle) - keep_n
            if extra > 0:
                oldest = set(map(id, z.idle[:extra]))
                self._close_idle_where(z, "trim", lambda r, o=oldest: id(r) in o)
        return self._flush()

    def drain(self, now: float, reason: str = "invalidated") -> list[PooledConnection]:
        """Close every idle connection now; lent ones are closed at checkin."""
        self._unstick()
        self.generation += 1
        for z in self.zones.values():
            self._close_idle_where(z, reason)
        return self._flush()

    def close(self, now: float) -> list[PooledConnection]:
        """Close the pool: idle connections now, lent ones at checkin; wake waiters."""
        self._unstick()
        self.closed = True
        self._fast_until = -_INF
        for z in self.zones.values():
            self._close_idle_where(z, "shutdown")
        for w in list(self.waiters):
            w.queued = False
            w.notify()
        self.waiters.clear()
        return self._flush()

    def reconfigure(self, config: ZonalConfig, now: float) -> list[PooledConnection]:
        """Adopt ``config``: new zones appear, removed ones drain, sizes change.

        Borrowed connections are never dropped: those of removed zones (or beyond a
        smaller ``pool_size``) are closed when they are checked in.
        """
        self._unstick()
        old = self.zones
        new: dict[str, _ZoneRuntime] = {}
        for spec in config.topology.zones:
            z = old.get(spec.name)
            if z is None:
                new[spec.name] = _ZoneRuntime(spec)
                continue
            by_address = {h.endpoint.address: h for h in z.endpoints}
            z.spec = spec
            z.removed = False
            z.endpoints = [_rebind(by_address.get(ep.address), ep) for ep in spec.endpoints]
            kept = {ep.address for ep in spec.endpoints}
            self._close_idle_where(z, "reconfigure", lambda r, k=kept: r.endpoint.address not in k)
            for rec in z.idle:  # records follow their endpoint's new identity
                rec.endpoint = next(e for e in spec.endpoints
                                    if e.address == rec.endpoint.address)
            new[spec.name] = z
        for name, z in old.items():
            if name not in new:
                z.removed = True
                self._close_idle_where(z, "reconfigure")
                if z.lent or z.opening:
                    new[name] = z  # kept until its borrowed connections come back
        self.zones = new
        self.config = config
        self._oversized = any(z.size > config.pool_size for z in new.values())
        self._static_rank = _static_rank(config)
        for z in new.values():
            extra = min(z.size - config.pool_size, len(z.idle))
            if extra > 0:
                oldest = set(map(id, z.idle[:extra]))
                self._close_idle_where(z, "reconfigure", lambda r, o=oldest: id(r) in o)
        self._invalidate_route()
        self.route(now)  # settle preferences now: a failback closes idle elsewhere
        self._dispatch(now)
        return self._flush()

    def after_fork(self) -> None:
        """In a forked child: forget the parent's connections without closing them."""
        self._unstick()
        self.lock = threading.Lock()
        for z in self.zones.values():
            _FORK_ORPHANS.extend(r.raw for r in z.idle)
            z.counters.closes["fork"] += len(z.idle)
            z.idle = []
            z.lent = 0
            z.opening = 0
            for h in z.endpoints:
                h.probe_in_flight = False
        self.opening_total = 0
        self.waiters.clear()
        self._closing = []
        self._refresh_fast()
        self._watched.clear()
        self.leaks.clear()
        self.generation += 1
        self.pid = _pid

    # ------------------------------------------------------------------ reporting

    def describe(self, now: float, *, prefix: str) -> str:
        """``prefix`` plus every zone's state: for PoolTimeout and NoHealthyZone."""
        parts = []
        for z in self.zones.values():
            unwell = "; ".join(f"{h.endpoint.address} {h.describe(now)}" for h in z.endpoints
                               if h.state is not HealthState.HEALTHY or h.consecutive_failures)
            parts.append(f"{z.name}: open {z.size}/{self.config.pool_size}, in use {z.lent}, "
                         f"idle {len(z.idle)}, connecting {z.opening}"
                         + (f", {unwell}" if unwell else ""))
        return (f"pool {self.config.name!r}: {prefix}; {len(self.waiters)} waiting, "
                f"open {self.total}/{self.config.max_total}; zones: " + " | ".join(parts))

    def snapshot(self, now: float, clock_source: str) -> PoolStats:
        """A :class:`PoolStats` of this moment; reading it changes nothing."""
        route = self._route if now < self._route_valid_until else self._rank(now)[0]
        pref = self._preferred_of(route)
        zones: dict[str, ZoneStats] = {}
        for z in self.zones.values():
            c = z.counters
            st = z.health_state()
            ejected_for = None
            if st is HealthState.EJECTED:
                ejected_for = max(0.0, min(h.ejected_until for h in z.endpoints) - now)
            zones[z.name] = ZoneStats(
                zone=z.name, state=st.value, preferred=z.name == pref,
                open=z.size, idle=len(z.idle), in_use=z.lent, opening=z.opening,
                waiting=len(self.waiters) if z.name == pref else 0,
                max=self.config.pool_size, checkouts=c.checkouts, timeouts=c.timeouts,
                connects=c.connects, connect_errors=c.connect_errors, retries=c.retries,
                pings=c.pings, ping_failures=c.ping_failures, failovers=c.failovers,
                ejections=c.ejections, leaks=c.leaks, closes=dict(c.closes),
                wait_time=c.wait_time.snapshot(zeros=c.checkouts - c.wait_time.count),
                connect_time=c.connect_time.snapshot(), use_time=c.use_time.snapshot(),
                ejected_for=ejected_for,
            )
        return PoolStats(
            name=self.config.name, version=self.config.version,
            local_zone=self.config.local_zone, preferred_zone=pref,
            max_total=self.config.max_total, waiting=len(self.waiters),
            suspends=self.suspends, clock=clock_source, zones=zones,
        )


def _static_rank(config: ZonalConfig) -> dict[str, int]:
    """Zones ranked without health or latency: local first, then priority, then order."""
    zones = sorted(enumerate(config.topology.zones),
                   key=lambda iz: (iz[1].name != config.local_zone, iz[1].priority, iz[0]))
    return {z.name: i for i, (_, z) in enumerate(zones)}


def _load(z: _ZoneRuntime, h: EndpointHealth) -> tuple[int, float]:
    """Spread a zone's connections over its endpoints; faster endpoints break ties."""
    n = sum(1 for r in z.idle if r.endpoint == h.endpoint)
    return n, h.latency if h.latency is not None else 0.0


def _rebind(h: EndpointHealth | None, ep: Endpoint) -> EndpointHealth:
    if h is None:
        return EndpointHealth(ep)
    h.endpoint = ep
    return h


def _after_fork_in_child() -> None:
    global _pid  # noqa: PLW0603 - the one writer, in the fork hook
    _pid = os.getpid()
    for state in list(_ALL_STATES):
        state.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
