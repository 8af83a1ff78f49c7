"""ZonalPool goes through SQLAlchemy's connect path, as its own pools do: do_connect
listeners (added before or after the engine), a replaced ``dialect.connect``,
``create_engine(module=...)`` and a patched ``psycopg.connect`` all see zonal's
connections, while zonal still chooses the endpoint."""

from __future__ import annotations

import types
from typing import Any
from unittest import mock

import psycopg
import pytest
from sqlalchemy import create_engine, event, exc, text

from tests.sqlalchemy.conftest import url_of
from zonal_core import NoHealthyZone
from zonal_core.psycopg_driver import ZonalConnection
from zonal_sqlalchemy import ZonalPool

pytestmark = pytest.mark.integration


def _served_by(engine: Any) -> int:
    with engine.connect() as c:
        return int(c.execute(text("select inet_server_port()")).scalar())


def test_plain_engine_connects_with_zonals_bounded_connection(lab: Any, make_engine: Any) -> None:
    engine = make_engine(query_timeout=3)
    with engine.connect() as c:
        raw = c.connection.dbapi_connection
        assert isinstance(raw, ZonalConnection)
        assert raw.zonal.query_timeout == 3


def test_do_connect_listener_added_after_the_engine_sees_zonals_endpoint(
        lab: Any, make_engine: Any) -> None:
    engine = make_engine()
    seen: list[tuple[Any, Any]] = []

    @event.listens_for(engine, "do_connect")
    def token(dialect: Any, rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        seen.append((cparams.get("host"), cparams.get("port")))
        cparams["application_name"] = "token-recipe"  # the documented per-connection recipe

    with engine.connect() as c:
        name = c.execute(text("show application_name")).scalar()
        raw = c.connection.dbapi_connection
    a_host, a_port = lab.zones(pgbouncer=False)["a"].rsplit(":", 1)
    assert seen == [(a_host, int(a_port))]
    assert name == "token-recipe"
    assert isinstance(raw, ZonalConnection)  # adopted: its statements are bounded too
    assert _served_by(engine) == lab["a"].postgres.port


def test_a_patched_psycopg_connect_is_called(lab: Any, make_engine: Any) -> None:
    """What APM and OpenTelemetry instrumentations do."""
    engine = make_engine()
    calls: list[dict[str, Any]] = []
    real = psycopg.connect

    def traced(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(*args, **kwargs)

    with mock.patch.object(psycopg, "connect", traced):
        assert _served_by(engine) == lab["a"].postgres.port
    assert len(calls) == 1 and calls[0]["port"] == int(lab.zones(pgbouncer=False)["a"]
                                                       .rsplit(":", 1)[1])


def test_a_replaced_dialect_connect_and_module_are_used(lab: Any, make_engine: Any) -> None:
    engine = make_engine()
    calls: list[str] = []
    real = engine.dialect.connect

    def connect(*cargs: Any, **cparams: Any) -> Any:
        calls.append(str(cparams.get("host")))
        return real(*cargs, **cparams)

    with mock.patch.object(engine.dialect, "connect", connect):
        _served_by(engine)
    assert len(calls) == 1

    module_calls: list[Any] = []
    fake = types.ModuleType("psycopg_wrapper")
    fake.__dict__.update(psycopg.__dict__)
    fake.connect = lambda *a, **k: module_calls.append(k) or psycopg.connect(*a, **k)
    other = create_engine(url_of(lab), poolclass=ZonalPool, module=fake,
                          zones=lab.zones(pgbouncer=False), local_zone="a", connect_timeout=1)
    try:
        assert _served_by(other) == lab["a"].postgres.port
        assert len(module_calls) == 1
    finally:
        other.dispose()


def test_dispose_keeps_the_pool_usable_and_copies_independent(lab: Any,
                                                              make_engine: Any) -> None:
    engine = make_engine()
    _served_by(engine)
    engine.pool.dispose()  # as QueuePool: idle connections closed, the pool lives on
    assert engine.pool.stats().zones["a"].idle == 0
    assert _served_by(engine) == lab["a"].postgres.port
    copy = engine.execution_options()  # shares the pool, as copies of an engine do
    copy.engine.dispose()
    assert _served_by(engine) == lab["a"].postgres.port
    engine.dispose()
    assert _served_by(engine) == lab["a"].postgres.port


def test_a_checkout_that_cannot_connect_is_sqlalchemys_operational_error(lab: Any) -> None:
    engine = create_engine(url_of(lab), poolclass=ZonalPool,
                           zones={"a": lab.zones(pgbouncer=False)["a"]},
                           pool_timeout=1, connect_timeout=0.5)
    lab["a"].proxy.refuse()
    try:
        with pytest.raises(exc.OperationalError) as info:
            engine.connect()
        assert isinstance(info.value, NoHealthyZone)  # still zonal's, for those who catch it
        assert isinstance(info.value.orig, psycopg.OperationalError)
        assert "a: open 0/5" in str(info.value)  # every zone's state in the message
        assert lab.password not in str(info.value)
    finally:
        lab["a"].proxy.heal()
        engine.dispose()


def test_pre_ping_fires_handle_error_with_is_pre_ping(lab: Any, make_engine: Any) -> None:
    engine = make_engine(pool_pre_ping=True, ping_bypass=0)
    seen: list[bool] = []

    @event.listens_for(engine, "handle_error")
    def on_error(ctx: Any) -> None:
        seen.append(ctx.is_pre_ping)

    with engine.connect() as c:
        pid = c.execute(text("select pg_backend_pid()")).scalar()
    with lab["a"].connect(autocommit=True) as admin:
        admin.execute("select pg_terminate_backend(%s)", (pid,))
    assert _served_by(engine) == lab["a"].postgres.port  # replaced silently
    assert seen == [True]


def test_max_overflow_zero_is_accepted(lab: Any, make_engine: Any) -> None:
    engine = make_engine(max_overflow=0)
    assert _served_by(engine) == lab["a"].postgres.port
    with pytest.raises(ValueError, match="max_overflow"):
        make_engine(max_overflow=5)


def test_plugin_survives_create_engine_of_engine_url(lab: Any) -> None:
    import json

    zones = json.dumps({"a": lab.zones(pgbouncer=False)["a"]})
    engine = create_engine(url_of(lab) + f"?plugin=zonal&zonal_zones={zones}")
    again = create_engine(engine.url)
    try:
        assert isinstance(again.pool, ZonalPool)
        assert again.pool.config.zones.keys() == {"a"}
        assert _served_by(again) == lab["a"].postgres.port
    finally:
        engine.dispose()
        again.dispose()


def test_plugin_with_a_pool_of_ones_own_and_on_other_databases(lab: Any) -> None:
    from sqlalchemy.pool import StaticPool

    own = StaticPool(lambda: psycopg.connect(lab["a"].url()))
    engine = create_engine(url_of(lab).replace("@/", f"@{lab.zones(pgbouncer=False)['a']}/")
                           + "?plugin=zonal", pool=own)
    try:
        assert engine.pool is own
    finally:
        engine.dispose()
    with pytest.raises(ValueError, match=r"PostgreSQL.*sqlite"):
        create_engine("sqlite://?plugin=zonal")
