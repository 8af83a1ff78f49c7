"""Unix-socket endpoints against real sockets: the lab's servers listen in a socket
directory each (``lab["a"].socket_dir``). A URL's ``?host=/dir`` is the zone
"default"; a socket zone routes, fails over and counts like a TCP one; psycopg,
psycopg async and asyncpg all open ``<dir>/.s.PGSQL.<port>``."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.sqlalchemy.conftest import url_of
from zonal_core import ZonalConfigError
from zonal_sqlalchemy import ZonalAsyncPool, ZonalPool

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# Which server answered, and over what: a socket connection has no server address.
WHERE = text("SELECT current_setting('port')::int, inet_server_addr() IS NULL")


def socket_url(lab: Any, zone: str = "a", driver: str = "psycopg", *, port_in: str = "query",
               query: str = "") -> str:
    """The URL of the lab's database over zone's socket: ``?host=<dir>&port=<port>``,
    or the port before the path (``@:<port>/db?host=<dir>``)."""
    z = lab[zone]
    cred = f"{quote(lab.user, safe='')}:{quote(lab.password, safe='')}"
    host = quote(z.socket_dir, safe="/")
    extra = f"&{query}" if query else ""
    if port_in == "netloc":
        return f"postgresql+{driver}://{cred}@:{z.postgres.port}/{lab.database}?host={host}{extra}"
    return (f"postgresql+{driver}://{cred}@/{lab.database}?host={host}"
            f"&port={z.postgres.port}{extra}")


def where(engine: Engine) -> tuple[int, bool]:
    with engine.connect() as conn:
        port, socket = conn.execute(WHERE).one()
    return int(port), bool(socket)


async def awhere(engine: AsyncEngine) -> tuple[int, bool]:
    async with engine.connect() as conn:
        port, socket = (await conn.execute(WHERE)).one()
    return int(port), bool(socket)


# -- the URL's ?host=/dir: the drop-in case ---------------------------------------------


@pytest.mark.parametrize("port_in", ["query", "netloc"])
def test_a_url_with_a_socket_directory_is_the_zone_default(lab: Any, port_in: str) -> None:
    a = lab["a"]
    engine = create_engine(socket_url(lab, port_in=port_in), poolclass=ZonalPool,
                           connect_timeout=1)
    try:
        assert where(engine) == (a.postgres.port, True)
        assert where(engine) == (a.postgres.port, True)
        (ep,) = engine.pool.config.topology.endpoints
        assert (ep.zone, ep.host, ep.port, ep.is_socket) == (
            "default", a.socket_dir, a.postgres.port, True)
        st = engine.pool.stats()
        assert list(st.zones) == ["default"]
        assert st.zones["default"].connects == 1  # the second checkout reused it
        assert st.zones["default"].checkouts == 2 and st.zones["default"].idle == 1
        assert lab.password not in repr(engine.pool.config)
    finally:
        engine.dispose()


def test_the_plugin_takes_a_socket_url_too(lab: Any) -> None:
    engine = create_engine(socket_url(lab, query="plugin=zonal"), connect_timeout=1)
    try:
        assert isinstance(engine.pool, ZonalPool)
        assert where(engine) == (lab["a"].postgres.port, True)
    finally:
        engine.dispose()


def test_a_socket_url_and_zones_conflict_as_a_tcp_host_does(lab: Any) -> None:
    with pytest.raises(ZonalConfigError) as info:
        create_engine(socket_url(lab), poolclass=ZonalPool, zones=lab.zones(pgbouncer=False))
    assert info.value.field == "zones"
    # (the host is not echoed: with an unencoded password it could be its tail)
    assert "names a host and zones are given" in info.value.problem
    assert "?host=" in str(info.value.fix)
    assert lab.password not in str(info.value)


def test_a_missing_socket_file_is_a_connect_error_naming_it(lab: Any) -> None:
    from sqlalchemy import exc

    engine = create_engine(
        f"postgresql+psycopg://{lab.user}:{quote(lab.password, safe='')}@/{lab.database}"
        f"?host={quote(lab['a'].socket_dir, safe='/')}&port=1", poolclass=ZonalPool,
        connect_timeout=1, pool_timeout=2)
    try:
        with pytest.raises(exc.OperationalError) as info:
            where(engine)
        assert ".s.PGSQL.1" in str(info.value)
        assert lab.password not in str(info.value)
    finally:
        engine.dispose()


# -- socket zones next to TCP zones ------------------------------------------------------


def mixed_zones(lab: Any) -> dict[str, str]:
    """a over its Unix socket, b over TCP through its fault proxy."""
    return {"a": lab["a"].socket, "b": lab["b"].endpoint(pgbouncer=False)}


def test_a_socket_zone_routes_and_fails_over_to_a_tcp_zone(lab: Any) -> None:
    a, b = lab["a"], lab["b"]
    engine = create_engine(url_of(lab), poolclass=ZonalPool, zones=mixed_zones(lab),
                           local_zone="a", connect_timeout=1, pool_size=2, pool_pre_ping=True,
                           ping_bypass=0.1)
    try:
        for _ in range(5):
            assert where(engine) == (a.postgres.port, True)
        st = engine.pool.stats()
        assert st.preferred_zone == "a" and st.zones["a"].connects == 1
        assert st.zones["b"].connects == 0
        time.sleep(0.2)  # past ping_bypass: the idle connection into a is pinged
        a.kill()
        assert where(engine) == (b.postgres.port, False)
        assert where(engine) == (b.postgres.port, False)
        st = engine.pool.stats()
        assert st.zones["a"].ping_failures + st.zones["a"].connect_errors >= 1
        assert st.zones["a"].open == 0
        assert st.zones["a"].state == "ejected" and st.zones["a"].failovers == 1
        assert st.zones["b"].connects >= 1
        assert st.preferred_zone == "b"
    finally:
        engine.dispose()
        a.reset_faults()  # (the plugin does it too, after the test)


def test_a_socket_zone_is_left_alone_by_the_fault_proxy(lab: Any) -> None:
    """Sockets bypass the fault proxy: a black-holed proxy does not touch them."""
    a = lab["a"]
    engine = create_engine(url_of(lab), poolclass=ZonalPool, zones={"a": a.socket},
                           connect_timeout=1)
    try:
        a.proxy.blackhole()
        assert where(engine) == (a.postgres.port, True)
    finally:
        a.proxy.heal()
        engine.dispose()


def test_serverless_over_a_socket_reaps_and_sends_no_keepalives(lab: Any) -> None:
    engine = create_engine(url_of(lab), poolclass=ZonalPool, zones={"a": lab["a"].socket},
                           serverless=True, connect_timeout=1)
    try:
        with engine.connect() as conn:
            idle = conn.execute(text("SHOW idle_session_timeout")).scalar_one()
            params = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
        assert idle != "0"  # the server-side reaper is asked for, as over TCP
        assert "keepalives" not in params and "keepalives_idle" not in params
    finally:
        engine.dispose()


# -- asyncio: psycopg async and asyncpg ---------------------------------------------------

DRIVERS = ["psycopg", "asyncpg"]


@pytest.mark.parametrize("driver", DRIVERS)
def test_async_socket_url_is_the_zone_default(lab: Any, driver: str) -> None:
    async def main() -> None:
        engine = create_async_engine(socket_url(lab, driver=driver), poolclass=ZonalAsyncPool,
                                     connect_timeout=1)
        try:
            results = await asyncio.gather(*(awhere(engine) for _ in range(4)))
            assert set(results) == {(lab["a"].postgres.port, True)}
            st = engine.pool.stats()
            assert list(st.zones) == ["default"] and st.zones["default"].connects >= 1
            assert st.zones["default"].connect_errors == 0
        finally:
            await engine.dispose()

    asyncio.run(main())


@pytest.mark.parametrize("driver", DRIVERS)
def test_async_socket_zone_fails_over_to_a_tcp_zone(lab: Any, driver: str) -> None:
    a, b = lab["a"], lab["b"]

    async def main() -> None:
        engine = create_async_engine(url_of(lab, driver), poolclass=ZonalAsyncPool,
                                     zones=mixed_zones(lab), local_zone="a", connect_timeout=1,
                                     pool_size=2, pool_pre_ping=True, ping_bypass=0.1,
                                     serverless=True)
        try:
            assert await awhere(engine) == (a.postgres.port, True)
            await asyncio.sleep(0.2)
            a.kill()
            assert await awhere(engine) == (b.postgres.port, False)
            assert await awhere(engine) == (b.postgres.port, False)
            st = engine.pool.stats()
            assert st.zones["a"].open == 0 and st.zones["a"].failovers == 1
            assert st.preferred_zone == "b"
        finally:
            await engine.dispose()

    try:
        asyncio.run(main())
    finally:
        a.reset_faults()
