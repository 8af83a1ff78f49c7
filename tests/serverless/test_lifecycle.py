"""zonal_core.lifecycle: SIGTERM closes idle connections, then chains (unit level).

The end-to-end behaviour (a real process, a real server) is in test_shutdown.py.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from zonal_core import lifecycle
from zonal_core.clock import FakeClock
from zonal_core.pool import ZonedPool
from zonal_core.testing import FakeDriver


@pytest.fixture
def restore_sigterm() -> Iterator[None]:
    # Serverless engines created by earlier tests install zonal's handler: start
    # each test from the interpreter's own.
    lifecycle.uninstall_sigterm_handler()
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def make_pool(idle: int = 2, lent: int = 1) -> tuple[ZonedPool, list[Any], list[Any]]:
    clock = FakeClock()
    pool = ZonedPool(FakeDriver(clock), zones={"a": "10.0.0.1:5432"}, clock=clock, pool_size=5)
    recs = [pool.getconn() for _ in range(idle + lent)]
    for r in recs[:idle]:
        pool.putconn(r)
    return pool, recs[:idle], recs[idle:]


def test_close_idle_connections_closes_idle_only_and_keeps_the_pool_usable() -> None:
    pool, idle, lent = make_pool(idle=2, lent=1)
    n = lifecycle.close_idle_connections()
    assert n >= 2
    assert all(r.raw.closed for r in idle)
    assert not lent[0].raw.closed
    s = pool.stats()
    assert s.zones["a"].closes["shutdown"] == 2 and s.idle == 0
    pool.putconn(lent[0])  # borrowed before the SIGTERM: closed at checkin
    assert lent[0].raw.closed and pool.stats().idle == 0
    with pool.connection() as rec:  # a request still in flight may open a new one
        assert not rec.raw.closed
    pool.close()


def test_close_idle_connections_skips_a_busy_pool_within_its_timeout() -> None:
    pool, idle, _ = make_pool(idle=1, lent=0)
    pool._state.lock.acquire()
    try:
        t0 = time.monotonic()
        lifecycle.close_idle_connections(timeout=0.2)
        assert time.monotonic() - t0 < 1.0
        assert not idle[0].raw.closed
    finally:
        pool._state.lock.release()
    pool.close()


def test_handler_chains_to_the_previous_python_handler(restore_sigterm: None) -> None:
    seen: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    pool, idle, _ = make_pool(idle=2, lent=0)
    assert lifecycle.install_sigterm_handler()
    assert lifecycle.install_sigterm_handler()  # idempotent
    assert lifecycle.sigterm_handler_installed()
    signal.raise_signal(signal.SIGTERM)
    assert seen == [signal.SIGTERM]
    assert all(r.raw.closed for r in idle)
    lifecycle.uninstall_sigterm_handler()
    assert not lifecycle.sigterm_handler_installed()
    signal.raise_signal(signal.SIGTERM)  # the previous handler is back
    assert seen == [signal.SIGTERM] * 2
    pool.close()


def test_handler_respects_a_previous_sig_ign(restore_sigterm: None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pool, idle, _ = make_pool(idle=1, lent=0)
    lifecycle.install_sigterm_handler()
    signal.raise_signal(signal.SIGTERM)  # ignored, as before, but idle ones closed
    assert idle[0].raw.closed
    lifecycle.uninstall_sigterm_handler()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    pool.close()


def test_install_outside_the_main_thread_is_a_no_op(restore_sigterm: None) -> None:
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(lifecycle.install_sigterm_handler()))
    t.start()
    t.join(5)
    assert got == [False]
    assert not lifecycle.sigterm_handler_installed()
