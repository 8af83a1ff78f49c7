"""The zoned pool for threads: :class:`CorePool`.

>>> from zonal_core.testing import FakeDriver
>>> pool = CorePool(FakeDriver(), zones={"a": "10.0.0.1:5432", "b": "10.0.0.2:5432"},
...                  local_zone="a")
>>> with pool.connection() as conn:
...     conn.endpoint.zone
'a'
>>> pool.stats().zones["a"].idle
1
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from zonal_core.clock import Clock
from zonal_core.config import ZonalConfig
from zonal_core.driver import Driver
from zonal_core.flow import (
    Action,
    Attempt,
    Connect,
    Ping,
    Sleep,
    Start,
    Wait,
    check_timeout,
    checkout_flow,
    take_handed,
)
from zonal_core.pool_base import PoolBase
from zonal_core.state import PooledConnection, Waiter, process_id
from zonal_core.topology import Endpoint

__all__ = ["CorePool", "ZonedPool"]

log = logging.getLogger("zonal.pool")


class _ThreadWaiter(Waiter):
    """A checkout in line, and what wakes it: a lock it holds until notified (an Event
    without the Condition: every checkout that waits makes one, and a saturated pool
    makes thousands a second). Read as an Event (``is_set``, ``wait``, ``clear``)."""

    __slots__ = ("_gate", "_set")

    def __init__(self) -> None:
        super().__init__()
        self._gate = threading.Lock()
        self._gate.acquire()  # held: waiting blocks until notify() lets go
        self._set = False

    def notify(self) -> None:
        # (called under the pool's lock: notifications never race each other)
        if not self._set:
            self._set = True
            self._gate.release()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        if self._set:
            return True
        if self._gate.acquire(True, -1 if timeout is None else max(0.0, timeout)):
            self._gate.release()  # stays set until clear(), as an Event does
            return True
        return False

    def clear(self) -> None:
        # Only the waiting thread clears, after its wait: the gate is free then.
        if self._set and self._gate.acquire(False):
            self._set = False


class CorePool(PoolBase):
    """Per-zone pools behind one checkout, for threaded code.

    ``driver`` opens, pings, resets and closes connections (see
    :class:`zonal_core.driver.Driver`); options are zonal's (:mod:`zonal_core.options`).
    """

    def __init__(self, driver: Driver, config: ZonalConfig | Mapping[str, Any] | None = None,
                 *, clock: Clock | None = None, **options: Any) -> None:
        super().__init__(config, clock=clock, **options)
        self.driver = driver

    # -- checkout / checkin ---------------------------------------------------

    def getconn(self, timeout: float | None = None) -> PooledConnection:
        """Check a connection out, waiting at most ``timeout`` (default: config's).

        Raises :class:`~zonal_core.errors.PoolTimeout`,
        :class:`~zonal_core.errors.NoHealthyZone` or the driver's auth error.
        """
        rec = self._state.fast_checkout()
        if rec is not None:
            return rec
        return self._checkout(timeout)

    def _checkout(self, timeout: float | None = None) -> PooledConnection:
        """:meth:`getconn` after its fast step found nothing (an adapter that made
        that step itself calls this)."""
        t = check_timeout(timeout, self.config.timeout)
        waiter = self._new_waiter()
        lined = self._line_up(waiter) if t > 0 else None  # (0: the flow fails it at once)
        closing: list[PooledConnection] = [] if lined is None else lined
        start = None
        try:
            if lined is not None:
                # Behind others in line (a saturated pool): most such checkouts are
                # handed a connection when their turn comes and need nothing else.
                start = waiter.since
                try:
                    if closing:  # (what the line-up reaped; none, mostly)
                        self._close_all(closing)
                    if waiter.queued:
                        self._wait(waiter, max(0.0, start + t - self._now()))
                except BaseException:
                    # Interrupted in line (or while closing): leave it, giving back
                    # whatever was handed over meanwhile.
                    closing.extend(self._leave_plan(waiter))
                    raise
                handed = take_handed(waiter)
                if handed is not None:
                    return self._stamp(handed)
            gen = checkout_flow(self._state, self.clock, waiter, t, closing,
                                backoff=self.backoff, secrets=self._secrets,
                                concurrent=self._concurrent, start=start)
            return self._stamp(self._run(gen, closing))
        finally:
            self._close_all(closing)

    def _run(self, gen: Generator[Action, Any, PooledConnection],
             closing: list[PooledConnection]) -> PooledConnection:
        try:
            action = next(gen)
            while True:
                try:
                    result = self._perform(action)
                except BaseException as exc:
                    action = gen.throw(exc)
                else:
                    action = gen.send(result)
                if closing:
                    self._close_all(closing)
        except StopIteration as stop:
            rec: PooledConnection = stop.value
            return rec

    def _perform(self, action: Action) -> Any:
        if isinstance(action, Wait):
            return self._wait(action.waiter, action.timeout)
        if isinstance(action, Connect):
            return self.driver.connect(action.endpoint, action.timeout)
        if isinstance(action, Ping):
            return self.driver.ping(action.raw, action.timeout)
        if isinstance(action, Start):
            return self._start(action.attempt)
        assert isinstance(action, Sleep)
        return self._sleep(action.seconds)

    def _connect_to_end(self, att: Attempt) -> None:
        """Run ``att``'s connect and report how it ended (in a background thread)."""
        try:
            raw = self.driver.connect(att.endpoint, att.timeout)
        except BaseException as exc:  # reported to the checkout, or settled by the pool
            self._close_all(att.finish(None, exc))
        else:
            self._close_all(att.finish(raw, None))

    def _start(self, att: Attempt) -> None:
        # A hedged connect runs in a thread of its own: only connects that may race
        # another zone do (a connect costs milliseconds, a thread microseconds).
        threading.Thread(target=self._connect_to_end, args=(att,), daemon=True,
                         name=f"zonal-connect-{att.endpoint.zone}").start()

    # How this pool waits; a subclass running in greenlets (SQLAlchemy's asyncio
    # engines) waits on the event loop instead of blocking the thread.

    def _new_waiter(self) -> Waiter:
        return _ThreadWaiter()

    def _wait(self, waiter: Waiter, timeout: float) -> bool:
        assert isinstance(waiter, _ThreadWaiter)
        woken = self.clock.wait(waiter, timeout)
        if woken:
            # Re-arm before the flow looks at the state: a notification after this
            # point wakes the next wait, none is lost, and none wakes it twice.
            waiter.clear()
        return woken

    def _sleep(self, seconds: float) -> None:
        self.clock.sleep(seconds)

    def putconn(self, rec: PooledConnection, *, reset: bool = True,
                discard: str | None = None) -> None:
        """Check ``rec`` in. ``reset`` rolls back first (adapters that reset
        themselves pass False); ``discard`` (a close reason) closes it instead."""
        if discard is None:
            # (never through the socket of a connection lent before a fork: the
            # parent's; the checkin orphans it)
            if reset and rec.lent_at is not None and rec.pid == process_id():
                try:
                    if not self.driver.reset(rec.raw):
                        discard = "invalidated"
                except Exception:
                    discard = "invalidated"
            if discard is None and self._state.fast_checkin(rec):
                return
        self._close_all(self._checkin_plan(rec, discard))

    def invalidate(self, rec: PooledConnection, exc: BaseException | None = None) -> None:
        """Discard ``rec`` after an error; on a disconnect, its zone's older ones too."""
        self._close_all(self._invalidate_plan(rec, exc))

    def record_failure(self, target: PooledConnection | Endpoint) -> None:
        """Count a failure (a query timeout) against an endpoint (or ``rec``'s)."""
        self._close_all(self._endpoint_failed_plan(target))

    def invalidate_zone(self, zone: str) -> None:
        """A disconnect in ``zone``: close its idle connections opened until now and
        retire its borrowed ones at checkin. Other zones are untouched."""
        self._close_all(self._invalidate_zone_plan(zone))

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[PooledConnection]:
        """Check out, yield, check in (discarding it if the block raised).

        The record's ``.raw`` is the driver connection.
        """
        rec = self.getconn(timeout)
        try:
            yield rec
        except BaseException as exc:
            self.invalidate(rec, exc)
            raise
        else:
            self.putconn(rec)

    # -- housekeeping ---------------------------------------------------------

    def trim(self, min_idle: int | None = None) -> int:
        """Close idle connections down to ``min_idle`` per zone (config's when None)
        before returning; returns how many were closed."""
        closing = self._trim_plan(min_idle)
        n = len(closing)
        self._close_all(closing)
        return n

    def drain(self) -> int:
        """Close every idle connection now; borrowed ones close at checkin."""
        closing = self._drain_plan()
        n = len(closing)
        self._close_all(closing)
        return n

    def reconfigure(self, config: ZonalConfig | Mapping[str, Any] | None = None,
                    **options: Any) -> None:
        """Adopt a new configuration without dropping borrowed connections."""
        self._close_all(self._reconfigure_plan(config, options))

    def close(self) -> None:
        """Close idle connections now, the borrowed ones at checkin; no more checkouts."""
        self._close_all(self._close_plan())

    def _close_idle_sync(self) -> None:
        self.close()

    def __enter__(self) -> CorePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _close_all(self, recs: list[PooledConnection]) -> None:
        if self._state.leaks:
            self._report_leaks()
        while recs:
            rec = recs.pop()
            try:
                self.driver.close(rec.raw)
            except Exception as exc:  # a dead server must not fail the caller
                log.debug("closing %r failed: %s", rec, type(exc).__name__)


ZonedPool = CorePool
"""The name :class:`CorePool` had before 0.1 (one letter from ``ZonalPool``, the
SQLAlchemy pool): kept for one release."""
