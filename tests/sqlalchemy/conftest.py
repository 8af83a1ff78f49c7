"""Fixtures for SQLAlchemy integration tests: engines over real lab zones."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine

from zonal_sqlalchemy import ZonalPool


@pytest.fixture
def lab(zonal_lab: Any) -> Any:
    """Two zones, a and b, each a PostgreSQL behind a fault proxy; no PgBouncer (a
    module whose tests all go through PgBouncer overrides ``lab`` with ``bouncer_lab``)."""
    return zonal_lab(zones=["a", "b"])


@pytest.fixture
def bouncer_lab(zonal_lab: Any) -> Any:
    """Two zones, a and b, each with PostgreSQL and a PgBouncer in transaction mode:
    for the tests that go through PgBouncer (skipped, or failed under
    ZONAL_LAB_REQUIRE, without it)."""
    return zonal_lab(zones=["a", "b"], pgbouncer=True)


def url_of(lab: Any, driver: str = "psycopg") -> str:
    """The URL with no host: hosts come from ``zones``."""
    return f"postgresql+{driver}://{lab.user}:{lab.password}@/{lab.database}"


@pytest.fixture
def make_engine(lab: Any) -> Iterator[Callable[..., Engine]]:
    """``make_engine(via_pgbouncer=False, **zonal_options)`` on ``lab``: disposed after
    the test (``via_pgbouncer=True`` needs ``lab`` to be ``bouncer_lab``)."""
    engines: list[Engine] = []

    def make(*, via_pgbouncer: bool = False, **options: Any) -> Engine:
        options.setdefault("zones", lab.zones(pgbouncer=via_pgbouncer))
        options.setdefault("local_zone", "a")
        options.setdefault("connect_timeout", 1)
        engine = create_engine(url_of(lab), poolclass=ZonalPool, **options)
        engines.append(engine)
        return engine

    yield make
    for e in engines:
        e.dispose()
