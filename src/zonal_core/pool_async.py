"""The zoned pool for asyncio: :class:`AsyncCorePool`.

It runs the same checkout flow as :class:`zonal_core.pool.CorePool`
(:mod:`zonal_core.flow`) over the same state machine; only the waiting differs. A
cancelled checkout gives back whatever it had been granted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Generator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from zonal_core.clock import Clock
from zonal_core.config import ZonalConfig
from zonal_core.driver import AsyncDriver
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

__all__ = ["AsyncCorePool", "AsyncZonedPool", "TaskWaiter"]

log = logging.getLogger("zonal.pool")


class TaskWaiter(Waiter):
    """A checkout waiting on an asyncio loop: the one waiting helper of the asyncio
    pool and of SQLAlchemy's asyncio engines (which run the pool in a greenlet)."""

    __slots__ = ("future", "loop")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[None] = self.loop.create_future()

    def notify(self) -> None:
        # Called under the pool's (thread) lock, possibly from another thread.
        self.loop.call_soon_threadsafe(_wake, self.future)

    async def wait(self, clock: Clock, timeout: float) -> bool:
        """Wait to be notified, at most ``timeout`` seconds of ``clock``; True if
        notified. Re-armed for the next wait of the same checkout either way."""
        try:
            return await clock.wait_future(self.future, timeout)
        finally:
            if self.future.done():
                self.future = self.loop.create_future()


_TaskWaiter = TaskWaiter  # (the name SQLAlchemy's adapter used before)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class AsyncCorePool(PoolBase):
    """Per-zone pools behind one checkout, for asyncio code."""

    def __init__(self, driver: AsyncDriver,
                 config: ZonalConfig | Mapping[str, Any] | None = None,
                 *, clock: Clock | None = None, **options: Any) -> None:
        super().__init__(config, clock=clock, **options)
        self.driver = driver
        self._tasks: set[asyncio.Task[None]] = set()  # hedged connects still running

    async def getconn(self, timeout: float | None = None) -> PooledConnection:
        """Check a connection out, waiting at most ``timeout`` (default: config's)."""
        rec = self._state.fast_checkout()
        if rec is not None:
            return rec
        t = check_timeout(timeout, self.config.timeout)
        waiter = TaskWaiter()
        lined = self._line_up(waiter) if t > 0 else None  # (0: the flow fails it at once)
        closing: list[PooledConnection] = [] if lined is None else lined
        start = None
        try:
            if lined is not None:
                # Behind others in line: most are handed a connection in their turn.
                start = waiter.since
                try:
                    if closing:  # (what the line-up reaped; none, mostly)
                        await self._close_all(closing)
                    if waiter.queued:
                        await waiter.wait(self.clock, max(0.0, start + t - self._now()))
                except BaseException:  # cancelled in line (or while closing): leave it
                    closing.extend(self._leave_plan(waiter))
                    raise
                handed = take_handed(waiter)
                if handed is not None:
                    return self._stamp(handed)
            gen = checkout_flow(self._state, self.clock, waiter, t, closing,
                                backoff=self.backoff, secrets=self._secrets,
                                concurrent=self._concurrent, start=start)
            return self._stamp(await self._run(gen, closing))
        finally:
            await self._close_all(closing)

    async def _run(self, gen: Generator[Action, Any, PooledConnection],
                   closing: list[PooledConnection]) -> PooledConnection:
        try:
            action = next(gen)
            while True:
                try:
                    result = await self._perform(action)
                except BaseException as exc:
                    action = gen.throw(exc)
                else:
                    action = gen.send(result)
                if closing:
                    await self._close_all(closing)
        except StopIteration as stop:
            rec: PooledConnection = stop.value
            return rec

    async def _perform(self, action: Action) -> Any:
        if isinstance(action, Wait):
            assert isinstance(action.waiter, TaskWaiter)
            return await action.waiter.wait(self.clock, action.timeout)
        if isinstance(action, Connect):
            return await asyncio.wait_for(
                self.driver.connect(action.endpoint, action.timeout), action.timeout or None)
        if isinstance(action, Ping):
            try:
                return await asyncio.wait_for(self.driver.ping(action.raw, action.timeout),
                                              action.timeout)
            except TimeoutError as exc:
                raise TimeoutError(f"ping gave no answer in {action.timeout:g}s") from exc
        if isinstance(action, Start):
            task = asyncio.get_running_loop().create_task(self._connect_to_end(action.attempt))
            action.attempt.cancel = task.cancel
            self._tasks.add(task)  # (a task nobody references may be collected)
            task.add_done_callback(self._tasks.discard)
            return None
        assert isinstance(action, Sleep)
        return await self.clock.asleep(action.seconds)

    async def _connect_to_end(self, att: Attempt) -> None:
        """Run ``att``'s connect and report how it ended (in a task of its own)."""
        try:
            raw = await asyncio.wait_for(self.driver.connect(att.endpoint, att.timeout),
                                         att.timeout or None)
        except BaseException as exc:  # reported to the checkout, or settled by the pool
            await self._close_all(att.finish(None, exc))
            if not isinstance(exc, Exception):
                raise
        else:
            await self._close_all(att.finish(raw, None))

    async def putconn(self, rec: PooledConnection, *, reset: bool = True,
                      discard: str | None = None) -> None:
        """Check ``rec`` in (see :meth:`zonal_core.pool.CorePool.putconn`)."""
        if discard is None:
            # (never through the socket of a connection lent before a fork: the
            # parent's; the checkin orphans it)
            if reset and rec.lent_at is not None and rec.pid == process_id():
                try:
                    if not await self.driver.reset(rec.raw):
                        discard = "invalidated"
                except Exception:
                    discard = "invalidated"
            if discard is None and self._state.fast_checkin(rec):
                return
        await self._close_all(self._checkin_plan(rec, discard))

    async def invalidate(self, rec: PooledConnection, exc: BaseException | None = None) -> None:
        """Discard ``rec`` after an error; on a disconnect, its zone's older ones too."""
        await self._close_all(self._invalidate_plan(rec, exc))

    async def record_failure(self, target: PooledConnection | Endpoint) -> None:
        """Count a failure (a query timeout) against an endpoint (or ``rec``'s)."""
        await self._close_all(self._endpoint_failed_plan(target))

    async def invalidate_zone(self, zone: str) -> None:
        """A disconnect in ``zone``: close its idle connections opened until now and
        retire its borrowed ones at checkin. Other zones are untouched."""
        await self._close_all(self._invalidate_zone_plan(zone))

    @asynccontextmanager
    async def connection(self, timeout: float | None = None
                         ) -> AsyncIterator[PooledConnection]:
        """Check out, yield, check in (discarding it if the block raised)."""
        rec = await self.getconn(timeout)
        try:
            yield rec
        except BaseException as exc:
            await self.invalidate(rec, exc)
            raise
        else:
            await self.putconn(rec)

    async def trim(self, min_idle: int | None = None) -> int:
        """Close idle connections down to ``min_idle`` per zone; returns how many."""
        closing = self._trim_plan(min_idle)
        n = len(closing)
        await self._close_all(closing)
        return n

    async def drain(self) -> int:
        """Close every idle connection now; borrowed ones close at checkin."""
        closing = self._drain_plan()
        n = len(closing)
        await self._close_all(closing)
        return n

    async def reconfigure(self, config: ZonalConfig | Mapping[str, Any] | None = None,
                          **options: Any) -> None:
        """Adopt a new configuration without dropping borrowed connections."""
        await self._close_all(self._reconfigure_plan(config, options))

    async def close(self) -> None:
        """Close idle connections now, the borrowed ones at checkin."""
        await self._close_all(self._close_plan())

    def _close_idle_sync(self) -> None:
        # At interpreter exit (or SIGTERM) nothing can be awaited on the application's
        # loop any more: close on a loop of our own (drivers close without waiting
        # on the server).
        asyncio.run(self.close())

    async def __aenter__(self) -> AsyncCorePool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _close_all(self, recs: list[PooledConnection]) -> None:
        if self._state.leaks:
            self._report_leaks()
        while recs:
            rec = recs.pop()
            try:
                await self.driver.close(rec.raw)
            except Exception as exc:  # a dead server must not fail the caller
                log.debug("closing %r failed: %s", rec, type(exc).__name__)


AsyncZonedPool = AsyncCorePool
"""The name :class:`AsyncCorePool` had before 0.1: kept for one release."""
