"""Time and randomness seams.

Every decision that depends on time takes a :class:`Clock`; production reads
``CLOCK_BOOTTIME``, tests drive a :class:`FakeClock`. Both ``CLOCK_BOOTTIME`` and
``CLOCK_MONOTONIC`` keep counting while a process is merely stopped or frozen (SIGSTOP,
a serverless sandbox suspended by the cgroup freezer); only ``CLOCK_BOOTTIME`` also
counts while the whole machine sleeps, which is why it is read where the OS has it.
Randomness goes through one :class:`Jitter` that tests seed.
"""

from __future__ import annotations

import asyncio
import functools
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "Jitter", "SystemClock", "boottime_available"]


def boottime_available() -> bool:
    """True where the OS offers ``CLOCK_BOOTTIME`` (Linux)."""
    clk = getattr(time, "CLOCK_BOOTTIME", None)
    if clk is None:
        return False
    try:
        time.clock_gettime(clk)
    except OSError:  # pragma: no cover - old kernels
        return False
    return True


class _Signal(Protocol):
    """What a thread waits for: a ``threading.Event``, or anything read as one."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


@runtime_checkable
class Clock(Protocol):
    """Elapsed seconds from an arbitrary origin, plus the ways a caller may wait."""

    def now(self) -> float:
        """Seconds since an arbitrary origin; never goes backwards."""
        ...

    def wait(self, event: _Signal, timeout: float) -> bool:
        """Wait for ``event`` at most ``timeout`` seconds; True if it was set."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds``."""
        ...

    async def wait_future(self, future: asyncio.Future[Any], timeout: float) -> bool:
        """Wait for ``future`` at most ``timeout`` seconds (never cancelling it); True if
        it is done."""
        ...


class SystemClock:
    """The production clock: ``CLOCK_BOOTTIME`` where available, else monotonic."""

    #: connects may run side by side (hedging) under this clock
    concurrent = True

    def __init__(self) -> None:
        clk = getattr(time, "CLOCK_BOOTTIME", None)
        if clk is not None and boottime_available():
            self.source = "boottime"
            self._read: Callable[[], float] = functools.partial(time.clock_gettime, clk)
        else:
            self.source = "monotonic"
            self._read = time.monotonic
        # The hot path reads the clock twice per checkout: one C call, no method.
        self.now = self._read  # type: ignore[method-assign]

    def now(self) -> float:
        return self._read()

    def wait(self, event: _Signal, timeout: float) -> bool:
        return event.wait(max(0.0, timeout))

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def wait_future(self, future: asyncio.Future[Any], timeout: float) -> bool:
        try:
            await asyncio.wait_for(asyncio.shield(future), max(0.0, timeout))
        except TimeoutError:
            return False
        return True

    def __repr__(self) -> str:
        return f"SystemClock(source={self.source!r})"


class FakeClock:
    """A clock that moves only when told, for exact timing tests.

    Waiting on an unset event advances the clock by the whole timeout at once (the
    waiter would have timed out), so single-threaded tests of timeouts run instantly.

    Under a fake clock a pool never races connects (no hedging): a connect runs to
    its end before the next starts, so the timeline a test drives stays exact.

    >>> c = FakeClock(); c.advance(600); c.now()
    600.0
    """

    concurrent = False

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward (a freeze, a sleep, or just work)."""
        if seconds < 0:
            raise ValueError("a clock never goes backwards")
        with self._lock:
            self._now += seconds

    def wait(self, event: _Signal, timeout: float) -> bool:
        if event.is_set():
            return True
        self.advance(max(0.0, timeout))
        return event.is_set()

    def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))

    async def asleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)

    async def wait_future(self, future: asyncio.Future[Any], timeout: float) -> bool:
        await asyncio.sleep(0)  # what is ready to run, runs
        if future.done():
            return True
        self.advance(max(0.0, timeout))
        return future.done()

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now})"


class Jitter:
    """The one source of randomness of a pool; seed it in tests.

    >>> Jitter(seed=1).uniform(0, 1) == Jitter(seed=1).uniform(0, 1)
    True
    """

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def uniform(self, low: float, high: float) -> float:
        """A float in ``[low, high]``."""
        with self._lock:
            return self._rng.uniform(low, high)
