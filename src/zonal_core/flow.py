"""The checkout flow, written once as a generator of I/O requests.

As psycopg does with its ``generators``, the decisions live here and the blocking
(or awaiting) lives in a small runner: :class:`zonal_core.pool.ZonedPool` runs the
flow with threads, :class:`zonal_core.pool_async.AsyncZonedPool` with asyncio. The
flow yields :class:`Connect`, :class:`Ping`, :class:`Wait` and :class:`Sleep`; the
runner performs them and sends back the result, or throws the exception in.

Connections to close are appended to ``closing``; the runner closes them after each
step and when the flow ends, so nothing reaped is lost to an error or a cancel.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from zonal_core.backoff import Backoff
from zonal_core.clock import Clock
from zonal_core.errors import CredentialError, NoHealthyZone, ZonalConfigError
from zonal_core.pgerrors import is_auth_failure, is_server_busy, safe_description
from zonal_core.state import Grant, PooledConnection, PoolState, Waiter
from zonal_core.topology import Endpoint

__all__ = ["Connect", "Ping", "Sleep", "Wait", "checkout_flow", "connect_error_kind"]


@dataclass(slots=True)
class Connect:
    """Open a connection to ``endpoint`` within ``timeout`` seconds; send it back."""

    endpoint: Endpoint
    timeout: float


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


Action = Connect | Ping | Wait | Sleep


def connect_error_kind(exc: BaseException) -> str:
    """``busy`` (retry with backoff), ``auth`` (raise), or ``failure`` (fail over)."""
    if is_server_busy(exc):
        return "busy"
    if is_auth_failure(exc) or _caused_by_credentials(exc):
        return "auth"
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
                  secrets: Callable[[], list[str]] = list,
                  ) -> Generator[Action, Any, PooledConnection]:
    """Check a connection out of ``state`` within ``timeout`` seconds.

    ``timeout`` bounds the whole checkout, connect attempts and failover included:
    no attempt runs past what is left of it.
    """
    cfg = state.config
    lock = state.lock
    start = clock.now()
    deadline = start + timeout
    front = False
    busy_attempts = 0
    # A rotating credential (a callable password) may have just expired: one
    # more attempt fetches a fresh one. A fixed password fails the same again.
    auth_retries = 1 if callable(cfg.password) else 0
    last_error: str | None = None
    while True:
        now = clock.now()
        grant: Grant | None
        with lock:
            try:
                grant, reaped = state.acquire(now, waiter, front=front)
            except NoHealthyZone as exc:
                if last_error:
                    raise NoHealthyZone(f"{exc} (last connect error: {last_error})") from None
                raise
            closing.extend(reaped)
            if now >= deadline and (grant is None or grant.slot is not None):
                if grant is not None:
                    closing.extend(state.give_back(grant, now))
                closing.extend(state.leave(waiter, now))
                raise state.timed_out(now, timeout, last_error)
        if grant is None:
            try:
                yield Wait(waiter, deadline - now)
            except BaseException:
                # Cancelled (or interrupted) in line: leave it, and give back
                # whatever was handed over in the meantime.
                with lock:
                    closing.extend(state.leave(waiter, clock.now()))
                raise
            continue
        front = True  # from here on, a retry keeps its place at the head of the line

        if grant.slot is not None:
            slot = grant.slot
            t0 = clock.now()
            try:
                left = deadline - t0
                raw = yield Connect(slot.endpoint, max(0.0, min(cfg.connect_timeout, left)))
            except Exception as exc:
                kind = connect_error_kind(exc)
                with lock:
                    closing.extend(state.connect_failed(slot, clock.now(), kind))
                last_error = safe_description(exc, secrets())
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
                    yield Ping(rec.raw, max(0.001, min(cfg.ping_timeout, deadline - clock.now())))
                except BaseException as exc:
                    with lock:
                        closing.extend(state.ping_failed(
                            rec, clock.now(), timed_out=isinstance(exc, TimeoutError)))
                    if not isinstance(exc, Exception):
                        raise
                    continue  # that connection only is discarded; try the next one
                with lock:
                    state.pinged(rec)
        t2 = clock.now()
        with lock:
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
