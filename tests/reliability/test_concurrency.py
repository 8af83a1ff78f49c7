"""64 threads against a pool of 4, and cancelled async acquisitions (issue 9, item 8).

Real threads, the real clock, a fake driver (no database: what is measured is the
pool). What must hold: every thread finishes (no deadlock), nothing is leaked,
nobody starves. Fairness is measured and printed as max wait / median wait; only
generous sanity bounds are asserted, never a tight wall-clock limit.

The plain "1,000 cancelled acquisitions against a pool of 4" is
tests/core/test_pool_async.py::test_a_thousand_cancelled_acquisitions_against_a_pool_of_four;
here it is mixed with acquisitions that succeed, on the real clock.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from zonal_core.clock import Jitter, SystemClock
from zonal_core.pool import ZonedPool
from zonal_core.pool_async import AsyncZonedPool
from zonal_core.testing import AsyncFakeDriver, FakeDriver

THREADS = 64
POOL = 4
ROUNDS = 40  # checkouts per thread
HOLD = 0.0005  # seconds a connection is held: long enough that 60 threads queue
JOIN = 120.0  # a thread not done by then is hung (the whole run takes about 1-3 s)


def _quantiles(waits: list[float]) -> str:
    q = statistics.quantiles(waits, n=100)
    return (f"median {statistics.median(waits) * 1e3:.2f} ms, p99 {q[98] * 1e3:.2f} ms, "
            f"max {max(waits) * 1e3:.2f} ms")


def _hammer(checkout: Callable[[], Any], checkin: Callable[[Any], None]
            ) -> tuple[list[list[float]], list[BaseException], float]:
    """THREADS threads, ROUNDS checkouts each; per-thread waits, errors, elapsed."""
    waits: list[list[float]] = [[] for _ in range(THREADS)]
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(i: int) -> None:
        rng = random.Random(i)
        try:
            start.wait(timeout=30)
            for _ in range(ROUNDS):
                t0 = time.perf_counter()
                conn = checkout()
                waits[i].append(time.perf_counter() - t0)
                try:
                    time.sleep(HOLD * rng.uniform(0.5, 1.5))
                finally:
                    checkin(conn)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(THREADS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN)
    elapsed = time.perf_counter() - t0
    hung = [t.name for t in threads if t.is_alive()]
    assert not hung, f"{len(hung)} threads hung (deadlock?)"
    return waits, errors, elapsed


def _report(name: str, waits: list[list[float]], elapsed: float) -> tuple[float, float]:
    flat = [w for ws in waits for w in ws]
    median = statistics.median(flat)
    # per thread: the total time spent waiting, to see a thread left behind
    per_thread = sorted(sum(ws) for ws in waits)
    ratio = max(flat) / median if median > 0 else float("inf")
    print(f"\n{name}: {THREADS} threads x {ROUNDS} checkouts, pool of {POOL}, "
          f"{elapsed:.2f} s; waits {_quantiles(flat)}; fairness max/median = {ratio:.1f}; "
          f"total wait per thread min {per_thread[0]:.3f} s, max {per_thread[-1]:.3f} s")
    return ratio, max(flat)


def _check_sane(waits: list[list[float]], max_wait: float) -> None:
    assert all(len(ws) == ROUNDS for ws in waits), "a thread was starved of its checkouts"
    # Generous: with FIFO hand-over a checkout waits for about THREADS/POOL holds.
    # A wait of 20 s would mean a waiter was skipped over and over (starvation).
    assert max_wait < 20.0
    totals = [sum(ws) for ws in waits]
    assert max(totals) < 30.0
    # Fairness, the bound docs/reliability.md states: with FIFO hand-off every thread
    # waits about as long in total (measured within 12%); a LIFO hand-off or a
    # newcomer overtaking the line leaves some threads far behind.
    assert max(totals) <= 2.0 * min(totals), (min(totals), max(totals))


def test_64_threads_on_a_pool_of_4_core() -> None:
    drv = FakeDriver()  # no clock: latencies (none here) would really sleep
    pool = ZonedPool(drv, zones={"a": "10.0.0.1:5432"}, pool_size=POOL, timeout=60,
                     clock=SystemClock(), jitter=Jitter(9))
    waits, errors, elapsed = _hammer(pool.getconn, pool.putconn)
    assert not errors, errors[:3]
    _ratio, max_wait = _report("core ZonedPool", waits, elapsed)
    _check_sane(waits, max_wait)
    s = pool.stats()
    assert (s.in_use, s.waiting) == (0, 0), "a borrowed connection leaked"
    assert s.open <= POOL and s.zones["a"].checkouts == THREADS * ROUNDS
    assert len(drv.open_connections) == s.open <= POOL
    assert s.zones["a"].timeouts == 0


def test_64_threads_on_a_pool_of_4_sqlalchemy() -> None:
    from zonal_sqlalchemy import ZonalPool

    opened: list[_DBAPIConnection] = []
    lock = threading.Lock()

    def creator(ep: Any) -> _DBAPIConnection:
        conn = _DBAPIConnection()
        with lock:
            opened.append(conn)
        return conn

    pool = ZonalPool(creator, zones={"a": "10.0.0.1:5432"}, pool_size=POOL, timeout=60,
                     clock=SystemClock())

    def checkin(fairy: Any) -> None:
        fairy.close()

    waits, errors, elapsed = _hammer(pool.connect, checkin)
    assert not errors, errors[:3]
    _ratio, max_wait = _report("SQLAlchemy ZonalPool", waits, elapsed)
    _check_sane(waits, max_wait)
    s = pool.stats()
    assert (s.in_use, s.waiting) == (0, 0), "a borrowed connection leaked"
    assert pool.checkedout() == 0
    assert sum(not c.closed for c in opened) == s.open <= POOL
    assert sum(c.rollbacks for c in opened) == THREADS * ROUNDS  # reset on every return


class _DBAPIConnection:
    """The least a DBAPI connection offers SQLAlchemy's pool."""

    def __init__(self) -> None:
        self.closed = False
        self.rollbacks = 0

    def rollback(self) -> None:
        self.rollbacks += 1

    def commit(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("seed", [1, 2])
def test_cancelled_and_served_async_acquisitions_mixed(seed: int) -> None:
    """1,000 acquisitions against a pool of 4: a random third cancelled at random
    moments (in line, or just after being handed a connection), the rest served;
    nothing leaks and the served ones all finish."""
    rng = random.Random(seed)

    async def main() -> None:
        drv = AsyncFakeDriver()
        pool = AsyncZonedPool(drv, zones={"a": "10.0.0.1:5432"}, pool_size=POOL,
                              clock=SystemClock(), jitter=Jitter(seed))
        waits: list[float] = []

        async def use(i: int) -> None:
            t0 = time.perf_counter()
            rec = await pool.getconn(timeout=60)
            waits.append(time.perf_counter() - t0)
            try:
                await asyncio.sleep(0 if i % 3 else 0.0002)
            finally:
                await pool.putconn(rec)

        tasks = [asyncio.create_task(use(i)) for i in range(1000)]
        doomed = rng.sample(range(1000), 333)
        for n, i in enumerate(doomed):
            tasks[i].cancel()
            if n % 20 == 0:
                await asyncio.sleep(0)  # let some hand-overs happen between cancels
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
        cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
        failed = [r for r in results
                  if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]
        assert not failed, failed[:3]
        assert cancelled <= 333 and len(waits) >= 1000 - 333
        s = pool.stats()
        assert (s.in_use, s.waiting) == (0, 0), "a cancelled acquisition leaked"
        assert s.open == s.idle <= POOL
        assert len(drv.open_connections) == s.open
        median = statistics.median(waits)
        print(f"\nasync seed {seed}: {len(waits)} served, {cancelled} cancelled; waits "
              f"{_quantiles(waits)}; fairness max/median = "
              f"{max(waits) / median if median else float('inf'):.1f}")
        assert max(waits) < 20.0

    asyncio.run(main())
