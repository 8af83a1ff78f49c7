"""The async pool runs the same flow; here: what only asyncio can do (cancel)."""

from __future__ import annotations

import asyncio

import pytest

from zonal_core import errors
from zonal_core.clock import FakeClock, Jitter, SystemClock
from zonal_core.pool_async import AsyncZonedPool
from zonal_core.testing import AsyncFakeDriver

ZONES = {"a": "10.0.0.1:5432", "b": "10.0.0.2:5432"}


def make(**opts: object) -> tuple[AsyncZonedPool, AsyncFakeDriver]:
    drv = AsyncFakeDriver()
    opts.setdefault("local_zone", "a")
    return AsyncZonedPool(drv, zones=ZONES, clock=SystemClock(), jitter=Jitter(3), **opts), drv


async def wait_for_waiters(pool: AsyncZonedPool, n: int) -> None:
    for _ in range(2000):
        if pool.stats().waiting >= n:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never saw {n} waiters")


def test_checkout_checkin_and_lifo() -> None:
    async def main() -> None:
        pool, _drv = make()
        r1, r2 = await pool.getconn(), await pool.getconn()
        await pool.putconn(r1)
        await pool.putconn(r2)
        assert await pool.getconn() is r2
        async with pool.connection() as rec:
            assert rec.endpoint.zone == "a"
        assert pool.stats().zones["a"].in_use == 1

    asyncio.run(main())


def test_failover_and_fake_clock_freeze() -> None:
    async def main() -> None:
        clock = FakeClock(50)
        drv = AsyncFakeDriver(clock)
        pool = AsyncZonedPool(drv, zones=ZONES, local_zone="a", clock=clock, max_idle=30)
        await pool.putconn(await pool.getconn())
        clock.advance(600)
        drv.set("a", "refuse")
        rec = await pool.getconn()
        assert rec.endpoint.zone == "b"
        st = pool.stats()
        assert st.suspends == 1 and st.zones["a"].closes["suspend"] == 1

    asyncio.run(main())


def test_timeout_names_the_zones() -> None:
    async def main() -> None:
        pool, _ = make(pool_size=1)
        await pool.getconn()
        with pytest.raises(errors.PoolTimeout, match="a: open 1/1"):
            await pool.getconn(timeout=0.05)
        assert pool.stats().waiting == 0

    asyncio.run(main())


def test_cancelled_waiter_leaks_nothing() -> None:
    async def main() -> None:
        pool, _drv = make(pool_size=1)
        held = await pool.getconn()
        task = asyncio.create_task(pool.getconn(timeout=10))
        await wait_for_waiters(pool, 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.stats().waiting == 0
        await pool.putconn(held)
        s = pool.stats().zones["a"]
        assert (s.in_use, s.idle, s.open) == (0, 1, 1)
        assert await pool.getconn() is held

    asyncio.run(main())


def test_waiter_cancelled_after_it_was_handed_a_connection_gives_it_back() -> None:
    async def main() -> None:
        pool, _ = make(pool_size=1)
        held = await pool.getconn()
        task = asyncio.create_task(pool.getconn(timeout=10))
        await wait_for_waiters(pool, 1)
        await pool.putconn(held)  # handed straight to the waiter...
        task.cancel()  # ...which is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await task
        s = pool.stats().zones["a"]
        assert (s.in_use, s.idle) == (0, 1)

    asyncio.run(main())


def test_a_cancelled_checkout_behind_a_line_leaves_it_and_the_line_keeps_its_order(
        ) -> None:
    async def main() -> None:
        pool, _ = make(pool_size=1)
        held = await pool.getconn()
        first = asyncio.create_task(pool.getconn(timeout=30))
        await wait_for_waiters(pool, 1)
        behind = asyncio.create_task(pool.getconn(timeout=30))  # joins the line
        last = asyncio.create_task(pool.getconn(timeout=30))
        await wait_for_waiters(pool, 3)
        behind.cancel()
        with pytest.raises(asyncio.CancelledError):
            await behind
        assert pool.stats().waiting == 2
        await pool.putconn(held)
        assert await first is held and not last.done()
        await pool.putconn(held)
        assert await last is held
        s = pool.stats().zones["a"]
        assert (s.checkouts, s.in_use, s.waiting) == (3, 1, 0)

    asyncio.run(main())


def test_a_thousand_cancelled_acquisitions_against_a_pool_of_four() -> None:
    async def main() -> None:
        pool, drv = make(pool_size=4)
        held = [await pool.getconn() for _ in range(4)]
        tasks = [asyncio.create_task(pool.getconn(timeout=30)) for _ in range(1000)]
        await wait_for_waiters(pool, 1000)
        for i, t in enumerate(tasks):
            t.cancel()
            if i % 250 == 0 and held:  # some connections come back while cancels happen
                await pool.putconn(held.pop())
        results = await asyncio.gather(*tasks, return_exceptions=True)
        won = [r for r in results if not isinstance(r, BaseException)]
        for r in won:
            await pool.putconn(r)
        for r in held:
            await pool.putconn(r)
        s = pool.stats()
        assert s.waiting == 0 and s.in_use == 0
        assert s.zones["a"].open == s.zones["a"].idle <= 4
        assert len(drv.open_connections) == s.open

    asyncio.run(main())


def test_cancel_during_connect_releases_the_slot() -> None:
    async def main() -> None:
        pool, drv = make(pool_size=1, connect_timeout=5)
        started = asyncio.Event()

        async def slow_connect(endpoint: object, timeout: float) -> object:
            started.set()
            await asyncio.sleep(10)
            raise AssertionError("not reached")

        drv.connect = slow_connect  # type: ignore[method-assign]
        task = asyncio.create_task(pool.getconn())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # (a connect that may race another zone runs as a task of its own: the
        # cancel reaches it on the loop's next turns)
        for _ in range(100):
            if pool.stats().zones["a"].opening == 0:
                break
            await asyncio.sleep(0.001)
        s = pool.stats().zones["a"]
        assert (s.opening, s.open, s.connect_errors) == (0, 0, 0)
        assert s.state == "healthy"

    asyncio.run(main())
