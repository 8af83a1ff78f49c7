"""``ZonalAsyncPool`` on psycopg async and asyncpg: the core scenarios again."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import greenlet_spawn

from tests.sqlalchemy.conftest import url_of
from zonal_core import ZonalError
from zonal_sqlalchemy import PoolTimeout, ZonalAsyncPool

DRIVERS = ["psycopg", "asyncpg"]
VALUES = [7, 70_000, 7_000_000_000]


def make(lab: Any, driver: str, *, via_pgbouncer: bool = False, **options: Any) -> AsyncEngine:
    options.setdefault("zones", lab.zones(pgbouncer=via_pgbouncer))
    options.setdefault("local_zone", "a")
    options.setdefault("connect_timeout", 1)
    return create_async_engine(url_of(lab, driver), poolclass=ZonalAsyncPool, **options)


async def port(engine: AsyncEngine) -> int:
    async with engine.connect() as c:
        return int((await c.execute(text("select inet_server_port()"))).scalar_one())


@pytest.mark.parametrize("driver", DRIVERS)
def test_queries_route_and_release(lab: Any, driver: str) -> None:
    async def main() -> None:
        engine = make(lab, driver, local_zone="b", pool_size=2)
        try:
            assert await port(engine) == lab["b"].postgres.port
            results = await asyncio.gather(*(port(engine) for _ in range(10)))
            assert set(results) == {lab["b"].postgres.port}
            st = engine.pool.stats()
            assert st.in_use == 0 and st.zones["b"].open <= 2
        finally:
            await engine.dispose()
    asyncio.run(main())


@pytest.mark.parametrize("driver", DRIVERS)
def test_waiting_does_not_block_the_loop_and_times_out(lab: Any, driver: str) -> None:
    async def main() -> None:
        engine = make(lab, driver, pool_size=1, pool_timeout=0.3)
        try:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            t = asyncio.create_task(ticker())
            async with engine.connect():
                with pytest.raises(PoolTimeout):
                    await engine.connect().start()
            t.cancel()
            assert ticks >= 5  # the loop kept running while the checkout waited
        finally:
            await engine.dispose()
    asyncio.run(main())


@pytest.mark.parametrize("driver", DRIVERS)
def test_failover_when_the_local_zone_is_killed(lab: Any, driver: str) -> None:
    async def main() -> None:
        engine = make(lab, driver, pool_size=2, pool_pre_ping=True)
        try:
            assert await port(engine) == lab["a"].postgres.port
            await asyncio.sleep(0.6)
            lab["a"].kill()
            assert await port(engine) == lab["b"].postgres.port
            assert await port(engine) == lab["b"].postgres.port
        finally:
            await engine.dispose()
    asyncio.run(main())


@pytest.mark.parametrize("driver", DRIVERS)
def test_cancelled_checkouts_leak_nothing(lab: Any, driver: str) -> None:
    async def main() -> None:
        engine = make(lab, driver, pool_size=1, pool_timeout=30)
        try:
            held = await engine.connect().start()
            tasks = [asyncio.create_task(port(engine)) for _ in range(20)]
            await asyncio.sleep(0.2)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await held.close()
            st = engine.pool.stats()
            assert st.waiting == 0 and st.in_use == 0
            assert await port(engine) == lab["a"].postgres.port
        finally:
            await engine.dispose()
    asyncio.run(main())


@pytest.mark.pgbouncer
@pytest.mark.parametrize("driver", DRIVERS)
def test_committed_work_through_pgbouncer_has_no_errors(bouncer_lab: Any, driver: str) -> None:
    async def main() -> Counter[str]:
        engine = make(bouncer_lab, driver, via_pgbouncer=True, pgbouncer="transaction",
                      pool_size=4)
        errors: Counter[str] = Counter()

        async def client(i: int) -> None:
            for n in range(100):
                try:
                    async with engine.begin() as c:
                        await c.execute(text("select cast(:v as bigint) + 1"),
                                        {"v": VALUES[(i + n) % 3]})
                except exc.DBAPIError as e:
                    errors[str(e.orig).splitlines()[0][:60]] += 1

        try:
            await asyncio.gather(*(client(i) for i in range(4)))
        finally:
            await engine.dispose()
        return errors

    assert sum(asyncio.run(main()).values()) == 0


@pytest.mark.parametrize("driver", DRIVERS)
def test_trim_runs_in_the_greenlet(lab: Any, driver: str) -> None:
    async def main() -> None:
        engine = make(lab, driver, pool_size=3)
        try:
            conns = [await engine.connect().start() for _ in range(3)]
            for c in conns:
                await c.close()
            assert engine.pool.stats().zones["a"].idle == 3
            closed = await greenlet_spawn(engine.sync_engine.pool.trim, 0)
            assert closed == 3 and engine.pool.stats().open == 0
            for c in [await engine.connect().start() for _ in range(2)]:
                await c.close()
            with pytest.raises(ZonalError, match="atrim"):
                engine.sync_engine.pool.trim()  # outside the greenlet: a clear error
            assert await engine.sync_engine.pool.atrim(0) == 2
        finally:
            await engine.dispose()
    asyncio.run(main())


def test_psycopg_async_query_timeout(lab: Any) -> None:
    async def main() -> None:
        engine = make(lab, "psycopg", query_timeout=0.5)
        try:
            t0 = time.monotonic()
            async with engine.connect() as c:
                with pytest.raises(exc.OperationalError, match="in time"):
                    await c.execute(text("select pg_sleep(30)"))
            assert time.monotonic() - t0 < 15
        finally:
            await engine.dispose()
    asyncio.run(main())


@pytest.mark.parametrize("driver", DRIVERS)
def test_serverless_asks_the_server_to_reap(lab: Any, driver: str) -> None:
    async def main() -> None:
        engine = make(lab, driver, serverless=True, max_idle=30)
        try:
            async with engine.connect() as c:
                got = (await c.execute(text("show idle_session_timeout"))).scalar_one()
            assert got == "1min"  # max(2 x 30 s, 30 s + 10 s)
        finally:
            await engine.dispose()
    asyncio.run(main())
