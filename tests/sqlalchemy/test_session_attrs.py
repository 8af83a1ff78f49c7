"""``target_session_attrs`` is verified after connect on every driver path.

Against real read-only servers from the lab: sync psycopg, async psycopg and
asyncpg. A server that does not suit is a connect failure of its zone: the
checkout fails over to one that does, or fails saying why when none does, and
the rejected connection is closed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import eventually
from tests.sqlalchemy.conftest import url_of
from zonal_core import ZonalError
from zonal_core.stats import PoolStats
from zonal_sqlalchemy import ZonalAsyncPool, ZonalPool

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FLAVORS = ["psycopg", "psycopg-async", "asyncpg"]
READ_ONLY = {"default_transaction_read_only": "on"}
QUERY = text("select inet_server_port(), current_setting('transaction_read_only')")
_names = itertools.count()


def _app_name() -> str:
    return f"zonal-attrs-{next(_names)}"


def _connect_args(flavor: str, app: str) -> dict[str, Any]:
    if flavor == "asyncpg":
        return {"server_settings": {"application_name": app}}
    return {"application_name": app}


def stats_of(pool: Any) -> PoolStats:
    assert isinstance(pool, ZonalPool)
    return pool.stats()


def serve(lab: Any, flavor: str, app: str, **options: Any) -> tuple[int, str, PoolStats]:
    """One checkout: (server port, its transaction_read_only, the pool's stats)."""
    options.setdefault("zones", lab.zones(pgbouncer=False))
    options.setdefault("connect_timeout", 2)
    options.setdefault("pool_timeout", 5)
    options["connect_args"] = _connect_args(flavor, app)
    if flavor == "psycopg":
        engine = create_engine(url_of(lab), poolclass=ZonalPool, **options)
        try:
            with engine.connect() as c:
                port, ro = c.execute(QUERY).one()
            return int(port), str(ro), stats_of(engine.pool)
        finally:
            engine.dispose()

    async def main() -> tuple[int, str, PoolStats]:
        driver = "asyncpg" if flavor == "asyncpg" else "psycopg"
        engine = create_async_engine(url_of(lab, driver), poolclass=ZonalAsyncPool, **options)
        try:
            async with engine.connect() as c:
                port, ro = (await c.execute(QUERY)).one()
            return int(port), str(ro), stats_of(engine.pool)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def backends(lab: Any, app: str) -> int:
    """Server-side sessions of ``app`` left open, in every zone (they end right
    after the client closes: give them a moment)."""
    return int(eventually(
        lambda: sum(zone.server_connections(application_name=app) for zone in lab), 0))


def _set_read_only(zone: Any, on: bool) -> None:
    # The admin session itself must be able to write, whatever the database says.
    with zone.connect(autocommit=True, options="-c default_transaction_read_only=off") as c:
        db = c.execute("select current_database()").fetchone()[0]
        if on:
            c.execute(f'ALTER DATABASE "{db}" SET default_transaction_read_only = on')
        else:
            c.execute(f'ALTER DATABASE "{db}" RESET default_transaction_read_only')


@pytest.fixture
def mixed_lab(zonal_lab: Any) -> Iterator[Any]:
    """Zones a and b, a read-only (new sessions of its database), b read-write."""
    lab = zonal_lab(zones=["a", "b"])
    _set_read_only(lab["a"], True)
    try:
        with lab["a"].connect() as c:
            assert c.execute("show transaction_read_only").fetchone()[0] == "on"
        with lab["b"].connect() as c:
            assert c.execute("show transaction_read_only").fetchone()[0] == "off"
        yield lab
    finally:
        _set_read_only(lab["a"], False)


@pytest.fixture
def read_only_lab(zonal_lab: Any) -> Any:
    """Zones a and b, both read-only (``default_transaction_read_only=on``)."""
    return zonal_lab(zones=["a", "b"], server_settings=READ_ONLY)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_read_write_fails_over_from_a_read_only_zone(mixed_lab: Any, flavor: str) -> None:
    app = _app_name()
    port, ro, st = serve(mixed_lab, flavor, app, local_zone="a",
                         target_session_attrs="read-write")
    assert port == mixed_lab["b"].postgres.port and ro == "off"
    assert st.zones["a"].connect_errors > 0 and st.zones["a"].connects == 0
    assert st.zones["b"].connects == 1
    assert backends(mixed_lab, app) == 0  # the rejected connection was closed too


@pytest.mark.parametrize("flavor", FLAVORS)
def test_read_only_picks_the_read_only_zone(mixed_lab: Any, flavor: str) -> None:
    app = _app_name()
    port, ro, st = serve(mixed_lab, flavor, app, local_zone="b",
                         target_session_attrs="read-only")
    assert port == mixed_lab["a"].postgres.port and ro == "on"
    assert st.zones["b"].connect_errors > 0 and st.zones["b"].connects == 0
    assert st.zones["a"].connects == 1


@pytest.mark.parametrize("flavor", FLAVORS)
def test_no_read_write_zone_fails_saying_why(read_only_lab: Any, flavor: str) -> None:
    app = _app_name()
    # NoHealthyZone, or PoolTimeout once retried up to pool_timeout: either names
    # the last connect error
    with pytest.raises(ZonalError) as ei:
        serve(read_only_lab, flavor, app, local_zone="a", target_session_attrs="read-write",
              pool_timeout=3)
    assert "read-only" in str(ei.value), repr(ei.value)
    assert "target_session_attrs='read-write'" in str(ei.value), repr(ei.value)
    assert backends(read_only_lab, app) == 0  # every rejected connection was closed


@pytest.mark.parametrize("flavor", FLAVORS)
def test_any_connects_to_a_read_only_server(read_only_lab: Any, flavor: str) -> None:
    app = _app_name()
    port, ro, st = serve(read_only_lab, flavor, app, local_zone="a",
                         target_session_attrs="any")
    assert port == read_only_lab["a"].postgres.port and ro == "on"
    assert st.zones["a"].connects == 1 and st.zones["a"].connect_errors == 0


@pytest.mark.parametrize("flavor", FLAVORS)
def test_read_only_server_suits_read_only(read_only_lab: Any, flavor: str) -> None:
    app = _app_name()
    port, ro, st = serve(read_only_lab, flavor, app, local_zone="a",
                         target_session_attrs="read-only")
    assert port == read_only_lab["a"].postgres.port and ro == "on"
    assert st.zones["a"].connect_errors == 0
