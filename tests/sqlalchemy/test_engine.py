"""What SQLAlchemy users rely on keeps working with ``poolclass=ZonalPool``."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import create_engine, event, exc, text
from sqlalchemy.orm import Session

from tests.sqlalchemy.conftest import url_of
from zonal_core import ZonalConfigError
from zonal_sqlalchemy import PoolTimeout, ZonalPool


def port_of(conn: Any) -> int:
    return int(conn.execute(text("select inet_server_port()")).scalar())


def direct_ports(lab: Any) -> dict[str, int]:
    return {z: lab[z].postgres.port for z in ("a", "b")}


def test_queries_go_to_the_local_zone(lab: Any, make_engine: Any) -> None:
    engine = make_engine(local_zone="b")
    with engine.connect() as c:
        assert port_of(c) == direct_ports(lab)["b"]
    with Session(engine) as s:
        assert s.execute(text("select 1")).scalar() == 1
    st = engine.pool.stats()
    assert st.zones["b"].connects == 1 and st.zones["a"].connects == 0
    assert st.in_use == 0 and st.zones["b"].idle == 1


def test_pool_events_fire(make_engine: Any) -> None:
    engine = make_engine()
    seen: list[str] = []
    for name in ("connect", "checkout", "checkin", "reset", "close", "invalidate"):
        event.listen(engine.pool, name, lambda *a, _n=name: seen.append(_n))
    with engine.connect() as c:
        c.execute(text("select 1"))
    with engine.connect() as c:
        c.invalidate()
    engine.dispose()
    assert seen[:4] == ["connect", "checkout", "reset", "checkin"]
    assert "invalidate" in seen and "close" in seen


def test_status_and_queuepool_introspection(make_engine: Any) -> None:
    engine = make_engine(pool_size=3)
    with engine.connect():
        assert engine.pool.checkedout() == 1
        assert "a: open 1/3" in engine.pool.status()
    assert engine.pool.checkedin() == 1 and engine.pool.size() == 3


def test_dispose_keeps_the_zones(lab: Any, make_engine: Any) -> None:
    engine = make_engine(local_zone="b", pool_size=2, pool_recycle=100)
    old = engine.pool
    with engine.connect() as c:
        c.execute(text("select 1"))
    engine.dispose()
    assert engine.pool is not old
    assert engine.pool.config == old.config
    assert old.stats().open == 0
    with engine.connect() as c:
        assert port_of(c) == direct_ports(lab)["b"]


def test_pool_recycle_is_a_jittered_max_lifetime(make_engine: Any) -> None:
    engine = make_engine(pool_recycle=100, pool_size=4)
    conns = [engine.connect() for _ in range(4)]
    recs = [c.connection._connection_record._zonal_pooled for c in conns]
    spans = [r.expires_at - r.created_at for r in recs]
    assert all(90 <= s <= 100 for s in spans) and len(set(spans)) == 4
    for c in conns:
        c.close()


def test_invalidating_one_connection_leaves_other_zones(make_engine: Any) -> None:
    engine = make_engine(pool_size=2, spillover=True, max_total=4)
    held = [engine.connect() for _ in range(4)]  # 2 in a, 2 spilled to b
    zones = [c.connection._connection_record._zonal_pooled.zone for c in held]
    assert sorted(zones) == ["a", "a", "b", "b"]
    a_conn = held[zones.index("a")]
    a_conn.invalidate()
    engine.pool._invalidate(a_conn.connection, None, _checkin=False)  # as on a disconnect
    for c in held:
        c.close()
    st = engine.pool.stats()
    assert st.zones["a"].closes["invalidated"] >= 1
    assert st.zones["b"].closes["invalidated"] == 0


def test_pool_timeout_is_sqlalchemys_timeout_error_and_names_zones(make_engine: Any) -> None:
    engine = make_engine(pool_size=1, pool_timeout=0.2)
    with engine.connect():
        with pytest.raises(exc.TimeoutError) as ei:
            engine.connect()
    assert isinstance(ei.value, PoolTimeout)
    assert "a: open 1/1, in use 1" in str(ei.value)


def test_password_never_in_errors_or_reprs(lab: Any, make_engine: Any) -> None:
    engine = make_engine(pool_size=1, pool_timeout=0.2)
    with engine.connect():
        with pytest.raises(PoolTimeout) as ei:
            engine.connect()
    blob = str(ei.value) + repr(engine.pool) + repr(engine.pool.config) + repr(engine.pool.stats())
    assert lab.password not in blob


def test_url_plugin(lab: Any) -> None:
    engine = create_engine(url_of(lab) + "?plugin=zonal&zonal_local_zone=b&zonal_pool_size=2",
                           zones=lab.zones(pgbouncer=False), connect_timeout=1)
    try:
        assert isinstance(engine.pool, ZonalPool)
        assert engine.pool.config.pool_size == 2
        # kept in engine.url (create_engine(engine.url) is zonal again); the driver
        # never sees them: the connection below would fail on an unknown option
        assert "plugin=zonal" in str(engine.url) and "zonal_pool_size=2" in str(engine.url)
        with engine.connect() as c:
            assert port_of(c) == direct_ports(lab)["b"]
    finally:
        engine.dispose()


def test_drop_in_without_zones_uses_the_url_host(lab: Any) -> None:
    host, port = lab.zones(pgbouncer=False)["a"].rsplit(":", 1)
    url = f"postgresql+psycopg://{lab.user}:{lab.password}@{host}:{port}/{lab.database}"
    engine = create_engine(url, poolclass=ZonalPool)
    try:
        assert list(engine.pool.stats().zones) == ["default"]
        with engine.connect() as c:
            assert c.execute(text("select 1")).scalar() == 1
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("url_tail", "kwargs", "field"),
    [
        ("127.0.0.1:5432/db", {"zones": {"a": "127.0.0.1:5433"}}, "zones"),
        ("/db?connect_timeout=9", {"zones": {"a": "127.0.0.1:5433"}}, "connect_timeout"),
        ("/db", {"zones": {"a": "127.0.0.1:5433"}, "pgbouncer": "transaction",
                 "connect_args": {"prepare_threshold": 5}}, "prepare_threshold"),
        ("/db", {"zones": {"a": "127.0.0.1:5433"}, "max_overflow": 10}, "max_overflow"),
        ("/db", {"zones": {"a": "127.0.0.1:5433"}, "pool_recycle": 10,
                 "max_lifetime": 20}, "pool_recycle"),
    ],
)
def test_conflicts_are_errors(url_tail: str, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ZonalConfigError) as ei:
        create_engine(f"postgresql+psycopg://app:s3cret@{url_tail}", poolclass=ZonalPool,
                      **kwargs)
    assert field in str(ei.value) and "s3cret" not in str(ei.value)


def test_query_timeout_bounds_a_statement(make_engine: Any) -> None:
    engine = make_engine(query_timeout=0.5)
    with engine.connect() as c:
        t0 = time.monotonic()
        with pytest.raises(exc.OperationalError, match="in time"):
            c.execute(text("select pg_sleep(30)"))
        took = time.monotonic() - t0
    # query_timeout, plus a stated 1 s (psycopg wakes every 0.1 s; a loaded machine);
    # libpq alone would wait the whole 30 s
    assert 0.5 <= took < 0.5 + 1.0, took
    assert engine.pool.stats().in_use == 0


def test_rotating_password_is_asked_for_each_new_connection(lab: Any) -> None:
    issued: list[str] = []

    def token() -> str:
        # the first token is stale (expired): zonal retries once with a fresh one
        issued.append("stale-token" if not issued else lab.password)
        return issued[-1]

    url = f"postgresql+psycopg://{lab.user}@/{lab.database}"
    engine = create_engine(url, poolclass=ZonalPool, zones=lab.zones(pgbouncer=False),
                           password=token, connect_timeout=2)
    try:
        with engine.connect() as c1, engine.connect() as c2:
            assert c1.execute(text("select 1")).scalar() == c2.execute(text("select 1")).scalar()
        assert issued[0] == "stale-token" and len(issued) == 3
        assert engine.pool.stats().zones["a"].state == "healthy"
        assert "stale-token" not in repr(engine.pool.config)
    finally:
        engine.dispose()
