"""Shutdown: idle connections close on SIGTERM and at interpreter exit.

Interpreter exit is covered by :mod:`zonal_core.pool_base` (an ``atexit`` hook).
SIGTERM is not: its default action ends the process without running ``atexit``.
On a plain host the kernel then closes the sockets and the server sees them go, but
a serverless platform may freeze or destroy the sandbox after SIGTERM (AWS Lambda's
shutdown phase, Cloud Run after its grace period): no FIN ever reaches the server,
and the backends linger until a server-side reaper or TCP keepalive notices.
:func:`install_sigterm_handler` closes idle connections first, then does what the
previous handler would have done.

>>> import signal
>>> install_sigterm_handler()        # doctest: +SKIP
True
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from zonal_core.pool import CorePool
from zonal_core.pool_base import live_pools
from zonal_core.state import PooledConnection

__all__ = [
    "close_idle_connections",
    "install_sigterm_handler",
    "sigterm_handler_installed",
    "uninstall_sigterm_handler",
]

log = logging.getLogger("zonal.lifecycle")

#: seconds a SIGTERM may spend closing idle connections (Lambda gives 500 ms)
DEFAULT_SHUTDOWN_TIMEOUT = 0.5

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

_install_lock = threading.Lock()


def close_idle_connections(timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> int:
    """Close every idle connection of every live (threaded) pool of this process now;
    borrowed ones close when they are checked in. Pools stay usable: a request still
    in flight may open a new connection. Returns how many were closed.

    Never blocks longer than about ``timeout`` seconds: a pool whose lock cannot be
    taken in time (a signal arrived while this very thread held it) is skipped, and
    closing never waits on the server (a black-holed zone cannot hang it).
    """
    deadline = time.monotonic() + max(0.0, timeout)
    closed = 0
    for pool in live_pools():
        if not isinstance(pool, CorePool) or pool.closed:
            continue  # (asyncio pools close through their own loop)
        state = pool._state
        if not state.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            log.debug("shutdown: pool %r is busy, skipped", pool.name)
            continue
        try:
            closing: list[PooledConnection] = state.drain(pool.clock.now(), "shutdown")
        finally:
            state.lock.release()
        closed += len(closing)
        pool._close_all(closing)
    return closed


class _ZonalSigterm:
    """The installed handler: close idle connections, then chain to ``previous``."""

    def __init__(self, previous: _Handler, timeout: float) -> None:
        self.previous = previous
        self.timeout = timeout

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        try:
            n = close_idle_connections(self.timeout)
            log.debug("SIGTERM: closed %d idle connections", n)
        except Exception:  # shutting down must not fail here
            log.debug("SIGTERM: closing idle connections failed", exc_info=True)
        prev = self.previous
        if prev == signal.SIG_IGN:
            return
        if callable(prev):
            prev(signum, frame)
            return
        # SIG_DFL (or a handler set outside Python): die of the signal, as before, so
        # a supervisor sees the same exit status.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def install_sigterm_handler(timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> bool:
    """On SIGTERM, close idle connections (at most ``timeout`` seconds), then run the
    handler that was installed before (or die of the signal, the default).

    Idempotent. Signal handlers can only be set from the main thread: elsewhere this
    returns False and changes nothing. A handler installed later that does not chain
    replaces this one; install zonal's last, or call
    :func:`close_idle_connections` from your own.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    with _install_lock:
        current = signal.getsignal(signal.SIGTERM)
        if isinstance(current, _ZonalSigterm):
            current.timeout = timeout
            return True
        handler = _ZonalSigterm(current, timeout)
        signal.signal(signal.SIGTERM, handler)
        return True


def sigterm_handler_installed() -> bool:
    """True while zonal's handler is the process's SIGTERM handler."""
    return isinstance(signal.getsignal(signal.SIGTERM), _ZonalSigterm)


def uninstall_sigterm_handler() -> None:
    """Put back the handler :func:`install_sigterm_handler` replaced (main thread)."""
    with _install_lock:
        current = signal.getsignal(signal.SIGTERM)
        if isinstance(current, _ZonalSigterm):
            prev = current.previous
            signal.signal(signal.SIGTERM, prev if prev is not None else signal.SIG_DFL)
