"""The checkout flow, written once as a generator of I/O requests.

As psycopg does with its ``generators``, the decisions live here and the blocking
(or awaiting) lives in a small runner: :class:`zonal_core.pool.CorePool` runs the
flow with threads, :class:`zonal_core.pool_async.AsyncCorePool` with asyncio. The
flow yields :class:`Connect`, :class:`Start`, :class:`Ping`, :class:`Wait` and
:class:`Sleep`; the runner performs them and sends back the result, or throws the
exception in.

Connections to close are appended to ``closing``; the runner closes them after each
step and when the flow ends, so nothing reaped is lost to an error or a cancel.

Hedged connects (Happy Eyeballs, RFC 8305): when another zone could serve, a new
connection is opened in the background (:class:`Start`) and the flow waits for it
at most its hedge delay; still pending then, a connect to the next zone of the route
starts too. The first to complete serves the checkout; the others complete on their
own and join their zone's idle stack (or a waiter) when wanted there, else close.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from zonal_core.backoff import Backoff
from zonal_core.clock import Clock
from zonal_core.errors import CredentialError, NoHealthyZone, PoolClosed, ZonalConfigError
from zonal_core.pgerrors import (
    is_auth_failure,
    is_config_error,
    is_disconnect,
    is_server_busy,
    safe_description,
)
from zonal_core.state import Grant, PooledConnection, PoolState, Slot, Waiter
from zonal_core.topology import Endpoint

__all__ = [
    "Attempt",
    "Connect",
    "Ping",
    "Sleep",
    "Start",
    "Wait",
    "checkout_flow",
    "connect_error_kind",
    "not_a_zone_failure",
]

_INF = float("inf")


@dataclass(slots=True)
class Connect:
    """Open a connection to ``endpoint`` within ``timeout`` seconds; send it back."""

    endpoint: Endpoint
    timeout: float


@dataclass(slots=True)
class Start:
    """Open a connection for ``attempt`` in the background; send back nothing.

    When the connect ends, the runner calls ``attempt.finish(raw, error)`` (from
    wherever the connect ran) and closes the connections that call returns.
    """

    attempt: Attempt


@dataclass(slots=True)
class Ping:
    """Check ``raw``; raise (``TimeoutError`` past ``timeout``) if it is unusable."""

    raw: Any
    timeout: float


@dataclass(slots=True)
class Wait:
    """Wait until ``waiter`` is notified, at most ``timeout`` seconds."""

    waiter: Waiter
    timeout: float


@dataclass(slots=True)
class Sleep:
    """Sleep ``seconds`` (backoff before retrying a busy server)."""

    seconds: float


Action = Connect | Start | Ping | Wait | Sleep


_NOT_A_ZONE_FAILURE = "_zonal_not_a_zone_failure"


def not_a_zone_failure(exc: BaseException) -> BaseException:
    """Mark ``exc`` as raised after the connection was opened, for a reason of its
    own (a dialect's ``initialize``, a user's connect hook, an invalid isolation
    level): the pool ejects nothing and re-raises ``exc`` itself to the caller.
    Adapters call it where they know the driver connected; returns ``exc``."""
    with contextlib.suppress(AttributeError, TypeError):  # (an exception without __dict__)
        setattr(exc, _NOT_A_ZONE_FAILURE, True)
    return exc


class Attempt:
    """One connect a checkout runs in the background (see :class:`Start`)."""

    __slots__ = ("_on_finish", "abandoned", "cancel", "done", "ended", "endpoint", "error",
                 "hedge_after", "raw", "slot", "started", "timeout")

    def __init__(self, slot: Slot, timeout: float, started: float, hedge_after: float,
                 on_finish: Callable[[Attempt], list[PooledConnection]]) -> None:
        self.slot = slot
        self.endpoint = slot.endpoint
        self.timeout = timeout
        self.started = started
        self.hedge_after = hedge_after
        self.done = False
        self.abandoned = False
        self.ended = 0.0
        self.raw: Any = None
        self.error: BaseException | None = None
        #: set by runners that can stop a connect midway (asyncio): used when the
        #: checkout itself is cancelled; the connect then ends as cancelled
        self.cancel: Callable[[], Any] | None = None
        self._on_finish = on_finish

    def finish(self, raw: Any, error: BaseException | None) -> list[PooledConnection]:
        """The connect ended (``raw``, or ``error``); returns what to close."""
        self.raw, self.error = raw, error
        return self._on_finish(self)

    def __repr__(self) -> str:
        state = "done" if self.done else "pending"
        return f"<Attempt {self.endpoint.key} {state}{' abandoned' if self.abandoned else ''}>"


def connect_error_kind(exc: BaseException) -> str:
    """What a failed connect means for its zone.

    ``cancelled`` (not an ``Exception``: the caller went away); ``busy`` (server
    full or starting up: retry with backoff); ``auth`` (refused credentials: raise);
    ``config`` (the settings are wrong, or the adapter's setup failed: raise as
    itself); or ``failure`` (timeouts, refusals, resets, a wrong
    ``target_session_attrs`` role: counts against the endpoint, fail over).
    """
    if not isinstance(exc, Exception):
        return "cancelled"  # (CancelledError, KeyboardInterrupt: nothing about the zone)
    if getattr(exc, _NOT_A_ZONE_FAILURE, False):
        return "failure" if is_disconnect(exc) else "config"
    if is_server_busy(exc):
        return "busy"
    if is_auth_failure(exc) or _caused_by_credentials(exc):
        return "auth"
    if is_config_error(exc):
        return "config"
    return "failure"


def _caused_by_credentials(exc: BaseException) -> bool:
    # The provider's failure may arrive wrapped by an adapter (SQLAlchemy).
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, CredentialError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def checkout_flow(state: PoolState, clock: Clock, waiter: Waiter, timeout: float,
                  closing: list[PooledConnection], *, backoff: Backoff,
                  secrets: Callable[[], list[str]] = list, concurrent: bool = True,
                  start: float | None = None) -> Generator[Action, Any, PooledConnection]:
    """Check a connection out of ``state`` within ``timeout`` seconds.

    ``timeout`` bounds the whole checkout, connect attempts and failover included:
    no attempt runs past what is left of it. A checkout that tried every endpoint
    and saw each fail tries them again, after a backoff, while time is left; it
    raises :class:`NoHealthyZone` only then. ``concurrent=False`` (a fake clock)
    never hedges: every connect runs to its end before the next starts. ``start``:
    the checkout began then, ``waiter`` already in line (see ``PoolState.line_up``).
    """
    cfg = state.config
    lock = state.lock
    if start is None:
        start = clock.now()
    waiter.since = start
    deadline = start + timeout
    front = False
    busy_attempts = 0
    rounds = 0  # how often this checkout saw every endpoint fail
    retry_at: float | None = None
    # A rotating credential (a callable password) may have just expired: one
    # more attempt fetches a fresh one. A fixed password fails the same again.
    auth_retries = 1 if callable(cfg.password) else 0
    last_error: str | None = None
    last_exc: BaseException | None = None
    attempts: list[Attempt] = []  # background connects of this checkout, pending
    next_hedge = _INF  # when the next hedge may start

    def on_finish(att: Attempt) -> list[PooledConnection]:
        # Runs where the connect ran (a thread, a task), possibly after the
        # checkout gave up: then the connection is adopted by the pool.
        now = clock.now()
        with lock:
            att.done, att.ended = True, now
            if not att.abandoned:
                waiter.notify()
                return []
            if att.error is None:
                return state.adopt(att.slot, att.raw, now, now - att.started)
            return state.connect_failed(att.slot, now, connect_error_kind(att.error))

    def abandon_all() -> None:
        # Under the lock. Pending attempts adopt themselves when they end; those
        # that ended unseen are settled now.
        now = clock.now()
        for att in attempts:
            att.abandoned = True
            if att.done:
                if att.error is None:
                    closing.extend(state.adopt(att.slot, att.raw, now, att.ended - att.started))
                else:
                    closing.extend(state.connect_failed(att.slot, now,
                                                        connect_error_kind(att.error)))
        attempts.clear()

    def failed(exc: BaseException, budget: float, ended: float) -> None:
        # What the checkout's error will name. An attempt given less than
        # connect_timeout (what was left of the checkout) that ran into the checkout's
        # deadline only says that the time ran out, which that error says anyway: the
        # error before it says why the zones failed, and is the one kept.
        nonlocal last_error, last_exc
        if last_error is not None and budget < cfg.connect_timeout and ended >= deadline:
            return
        last_error = safe_description(exc, secrets())
        last_exc = exc

    def give_up(now: float) -> BaseException:
        # Under the lock, at the deadline.
        closing.extend(state.leave(waiter, now))
        if rounds and last_error:
            exc: BaseException = NoHealthyZone(state.describe(
                now, prefix=f"every zone was tried and failed within timeout={timeout:g}s "
                            f"(last connect error: {last_error})"))
        else:
            exc = state.timed_out(now, timeout, last_error)
        exc.__cause__ = last_exc
        return exc

    try:
        while True:
            now = clock.now()
            grant: Grant | None = None

            if attempts:
                # -- a race of background connects is on -------------------------
                with lock:
                    finished = [a for a in attempts if a.done]
                for att in finished:
                    attempts.remove(att)
                    if att.error is None:
                        with lock:
                            rec, retired = state.connected(att.slot, att.raw, att.ended,
                                                           att.ended - att.started)
                            closing.extend(retired)
                            abandon_all()
                        return _checked_out(state, clock, rec, start)
                    exc = att.error
                    kind = connect_error_kind(exc)
                    with lock:
                        closing.extend(state.connect_failed(att.slot, clock.now(), kind))
                    failed(exc, att.timeout, att.ended)
                    if kind in ("config", "auth") and not (kind == "auth" and auth_retries):
                        with lock:
                            abandon_all()
                        raise exc
                    if kind == "auth":
                        auth_retries -= 1
                    else:  # (busy too: the route's other endpoints first, then a backoff)
                        waiter.avoid.add(att.endpoint.key)
                    next_hedge = clock.now()  # one failed: the next zone starts now (RFC 8305)
                if not attempts:
                    continue  # every racer failed: back to the route
                now = clock.now()
                if now >= deadline:
                    with lock:
                        abandon_all()
                        raise give_up(now)
                if now >= next_hedge:
                    exclude = waiter.avoid | {a.endpoint.key for a in attempts}
                    with lock:
                        grant = state.hedge(now, exclude)
                        closing.extend(state._flush())
                    if grant is not None and grant.slot is not None:
                        att = _attempt(state, grant.slot, clock.now(), deadline, on_finish)
                        attempts.append(att)
                        next_hedge = att.started + att.hedge_after if att.hedge_after else _INF
                        yield Start(att)
                        continue
                    if grant is None:
                        # nothing to hedge to now: look again after another delay
                        delay = attempts[-1].hedge_after
                        next_hedge = now + delay if delay else _INF
                if grant is None:
                    yield Wait(waiter, max(0.0, min(deadline, next_hedge) - now))
                    continue
                # an idle connection won the race
                with lock:
                    abandon_all()

            if grant is None:
                # -- one step of the route ----------------------------------------
                with lock:
                    if retry_at is not None and now >= retry_at:
                        retry_at = None
                        closing.extend(state.retry(waiter, now))
                    try:
                        grant, reaped = state.acquire(now, waiter, front=front)
                    except NoHealthyZone:
                        grant, reaped = None, []
                        no_route = True
                    except PoolClosed:
                        # Closed while this checkout was in line: leave it, giving back
                        # (to be closed) what a checkin handed over meanwhile.
                        closing.extend(state.leave(waiter, now))
                        raise
                    else:
                        no_route = False
                    closing.extend(reaped)
                    if now >= deadline and (grant is None or grant.slot is not None):
                        if grant is not None:
                            closing.extend(state.give_back(grant, now))
                        raise give_up(now)
                    if grant is not None and grant.record is not None and not grant.ping:
                        if grant.counted:
                            return grant.record  # handed over in line, counted then
                        # An idle connection that needs no ping: counted in this same
                        # locked step.
                        return _count_checkout(state, clock, grant.record, start)
                if no_route:
                    # Every endpoint failed in this checkout: try them all again,
                    # after a backoff, while time is left.
                    rounds += 1
                    pause = backoff.delay(rounds, state.jitter, deadline - now)
                    if pause > 0:
                        yield Sleep(pause)
                    with lock:
                        closing.extend(state.retry(waiter, clock.now()))
                    continue
                if grant is None:
                    wait_for = deadline - now
                    if waiter.avoid:
                        # In line after every endpoint failed (a borrowed connection
                        # may come back): connect again after a backoff meanwhile.
                        if retry_at is None:
                            rounds += 1
                            retry_at = now + backoff.delay(rounds, state.jitter, wait_for)
                        wait_for = min(wait_for, retry_at - now)
                    try:
                        yield Wait(waiter, max(0.0, wait_for))
                    except BaseException:
                        # Cancelled (or interrupted) in line: leave it, and give back
                        # whatever was handed over in the meantime.
                        with lock:
                            closing.extend(state.leave(waiter, clock.now()))
                        raise
                    handed = take_handed(waiter)
                    if handed is not None:
                        return handed
                    continue
                front = True  # from here on, a retry keeps its place at the head of the line

            if grant.slot is not None:
                slot = grant.slot
                t0 = clock.now()
                if concurrent:
                    with lock:
                        racer = state.hedge_delay(slot.endpoint) > 0 and state.can_hedge(
                            t0, waiter.avoid | {slot.endpoint.key})
                    if racer:
                        att = _attempt(state, slot, t0, deadline, on_finish)
                        attempts.append(att)
                        next_hedge = att.started + att.hedge_after
                        yield Start(att)
                        continue
                try:
                    budget = max(0.0, min(cfg.connect_timeout, deadline - t0))
                    raw = yield Connect(slot.endpoint, budget)
                except Exception as exc:
                    kind = connect_error_kind(exc)
                    ended = clock.now()
                    with lock:
                        closing.extend(state.connect_failed(slot, ended, kind))
                    failed(exc, budget, ended)
                    if kind == "config":
                        raise  # the same settings fail in every zone: the error itself
                    if kind == "auth":
                        if auth_retries:
                            auth_retries -= 1
                            continue
                        raise  # a refused password fails the same in every zone
                    if kind == "busy":
                        # Server full or starting up: back off with full jitter, same zone.
                        busy_attempts += 1
                        pause = backoff.delay(busy_attempts, state.jitter, deadline - clock.now())
                        if pause > 0:
                            yield Sleep(pause)
                    else:
                        waiter.avoid.add(slot.endpoint.key)
                    continue
                except BaseException:
                    with lock:
                        closing.extend(state.connect_failed(slot, clock.now(), "cancelled"))
                    raise
                t1 = clock.now()
                with lock:
                    rec, retired = state.connected(slot, raw, t1, t1 - t0)
                    closing.extend(retired)
            else:
                assert grant.record is not None
                rec = grant.record
                if grant.ping:
                    try:
                        left = deadline - clock.now()
                        yield Ping(rec.raw, max(0.001, min(cfg.ping_timeout, left)))
                    except BaseException as exc:
                        with lock:
                            closing.extend(state.ping_failed(
                                rec, clock.now(), timed_out=isinstance(exc, TimeoutError)))
                        if not isinstance(exc, Exception) or getattr(
                                exc, _NOT_A_ZONE_FAILURE, False):
                            raise  # (an adapter's "not a disconnect": the caller's error)
                        continue  # that connection only is discarded; try the next one
                    with lock:
                        state.pinged(rec)
            return _checked_out(state, clock, rec, start)
    except BaseException as exc:
        if attempts:
            stoppable = [a.cancel for a in attempts if a.cancel is not None and not a.done]
            with lock:
                abandon_all()
            if not isinstance(exc, Exception):
                # The caller went away (a cancelled task): its connects go too.
                for cancel in stoppable:
                    cancel()
        raise


def take_handed(waiter: Waiter) -> PooledConnection | None:
    """The connection a checkin handed ``waiter`` and counted, if any. Handed under
    the lock, after taking it out of line: nobody else touches it now, so no lock is
    needed to take it."""
    handed = waiter.grant
    if handed is None or not handed.counted:
        return None
    waiter.grant = None
    return handed.record


def _attempt(state: PoolState, slot: Slot, now: float, deadline: float,
             on_finish: Callable[[Attempt], list[PooledConnection]]) -> Attempt:
    timeout = max(0.0, min(state.config.connect_timeout, deadline - now))
    with state.lock:
        delay = state.hedge_delay(slot.endpoint)
    return Attempt(slot, timeout, now, delay, on_finish)


def _checked_out(state: PoolState, clock: Clock, rec: PooledConnection, start: float
                 ) -> PooledConnection:
    with state.lock:
        return _count_checkout(state, clock, rec, start)


def _count_checkout(state: PoolState, clock: Clock, rec: PooledConnection, start: float
                    ) -> PooledConnection:
    """Under the lock: count ``rec``'s checkout, which began at ``start``."""
    t2 = clock.now()
    state.checked_out(rec, t2, t2 - start)
    return rec


def check_timeout(value: float | None, default: float) -> float:
    """A checkout timeout argument, validated."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ZonalConfigError("timeout", f"must be a number of seconds >= 0, not {value!r}",
                               fix="timeout=5")
    return float(value)
