"""Driver settings for PgBouncer modes and the serverless reapers."""

from __future__ import annotations

import inspect
import math
from typing import Any

import pytest

from zonal_core.drivers import (
    SQLALCHEMY_ASYNCPG_KEYS,
    connect_kwargs,
    keepalive_kwargs,
    reaper_options,
    reaper_server_settings,
    unique_statement_name,
)
from zonal_core.errors import ZonalConfigError
from zonal_lab.pytest_plugin import require_module

# --------------------------------------------------------------------------- psycopg


@pytest.mark.parametrize("mode", ["transaction", True])
def test_psycopg_transaction_mode_turns_prepares_off(mode: Any) -> None:
    assert connect_kwargs("psycopg", pgbouncer=mode, user_kwargs={}) == {"prepare_threshold": None}
    # The user's own None agrees.
    kwargs = connect_kwargs("psycopg", pgbouncer=mode, user_kwargs={"prepare_threshold": None})
    assert kwargs == {"prepare_threshold": None}


@pytest.mark.parametrize("mode", [False, "session"])
def test_psycopg_other_modes_add_nothing(mode: Any) -> None:
    assert connect_kwargs("psycopg", pgbouncer=mode, user_kwargs={}) == {}
    assert connect_kwargs("psycopg", pgbouncer=mode, user_kwargs={"prepare_threshold": 0}) == {}


@pytest.mark.parametrize("value", [0, 5, 100])
def test_psycopg_transaction_mode_conflicts_with_prepare_threshold(value: int) -> None:
    with pytest.raises(ZonalConfigError) as info:
        connect_kwargs("psycopg", pgbouncer="transaction", user_kwargs={"prepare_threshold": value})
    err = info.value
    assert err.field == "prepare_threshold"
    assert err.fix is not None and "remove prepare_threshold" in err.fix
    assert str(err).startswith(f"prepare_threshold: is {value!r}")
    assert isinstance(err, ValueError)


@pytest.mark.parametrize("mode", ["transaction", "session", False])
def test_psycopg_string_prepare_threshold_from_url_is_a_clear_error(mode: Any) -> None:
    with pytest.raises(ZonalConfigError) as info:
        connect_kwargs("psycopg", pgbouncer=mode, user_kwargs={"prepare_threshold": "0"})
    err = info.value
    assert err.field == "prepare_threshold"
    assert "URL query string" in err.problem
    assert "TypeError" in err.problem
    assert err.fix is not None and "URL" in err.fix


def test_psycopg_keys_are_real_connect_arguments() -> None:
    psycopg = require_module("psycopg")
    params = inspect.signature(psycopg.Connection.connect).parameters
    for key in connect_kwargs("psycopg", pgbouncer="transaction", user_kwargs={}):
        assert key in params


# --------------------------------------------------------------------------- asyncpg


def test_asyncpg_transaction_mode() -> None:
    kwargs = connect_kwargs("asyncpg", pgbouncer="transaction", user_kwargs={})
    assert kwargs["statement_cache_size"] == 0
    assert kwargs["prepared_statement_cache_size"] == 0
    name_func = kwargs["prepared_statement_name_func"]
    names = {name_func() for _ in range(1000)}
    assert len(names) == 1000  # unique across calls (and across processes: uuid4)
    assert all(n.startswith("__zonal_") and n.endswith("__") for n in names)
    assert set(kwargs) - SQLALCHEMY_ASYNCPG_KEYS == {"statement_cache_size"}


def test_asyncpg_keeps_a_user_name_function_and_accepts_zero() -> None:
    def mine() -> str:
        return "mine"

    kwargs = connect_kwargs(
        "asyncpg",
        pgbouncer=True,
        user_kwargs={
            "prepared_statement_name_func": mine,
            "statement_cache_size": 0,
            "prepared_statement_cache_size": "0",  # SQLAlchemy's URL form, coerced by it
        },
    )
    assert "prepared_statement_name_func" not in kwargs
    assert kwargs == {"statement_cache_size": 0, "prepared_statement_cache_size": 0}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("statement_cache_size", 100),
        ("prepared_statement_cache_size", 100),
        ("prepared_statement_cache_size", "500"),
    ],
)
def test_asyncpg_transaction_mode_conflicts(key: str, value: Any) -> None:
    with pytest.raises(ZonalConfigError) as info:
        connect_kwargs("asyncpg", pgbouncer="transaction", user_kwargs={key: value})
    assert info.value.field == key
    assert info.value.fix is not None and f"remove {key}" in info.value.fix


def test_asyncpg_string_statement_cache_size_is_an_error() -> None:
    for mode in ("transaction", "session", False):
        with pytest.raises(ZonalConfigError, match="statement_cache_size: is the string"):
            connect_kwargs("asyncpg", pgbouncer=mode, user_kwargs={"statement_cache_size": "0"})


@pytest.mark.parametrize("mode", [False, "session"])
def test_asyncpg_other_modes_add_nothing(mode: Any) -> None:
    assert connect_kwargs("asyncpg", pgbouncer=mode, user_kwargs={}) == {}
    assert (
        connect_kwargs("asyncpg", pgbouncer=mode, user_kwargs={"statement_cache_size": 100}) == {}
    )


def test_asyncpg_keys_are_understood_by_asyncpg_and_sqlalchemy() -> None:
    asyncpg = require_module("asyncpg")
    sa_asyncpg = require_module("sqlalchemy.dialects.postgresql.asyncpg")
    kwargs = connect_kwargs("asyncpg", pgbouncer="transaction", user_kwargs={})
    native = inspect.signature(asyncpg.connect).parameters
    for key in set(kwargs) - SQLALCHEMY_ASYNCPG_KEYS:
        assert key in native
    # SQLAlchemy's DBAPI adapter pops its own two before calling asyncpg.connect().
    adapter_connect = inspect.getsource(sa_asyncpg.AsyncAdapt_asyncpg_dbapi.connect)
    for key in SQLALCHEMY_ASYNCPG_KEYS:
        assert key not in native
        assert f'"{key}"' in adapter_connect


def test_unique_statement_name() -> None:
    a, b = unique_statement_name(), unique_statement_name()
    assert a != b
    assert len(a) < 64  # PostgreSQL truncates identifiers at 63 bytes


# --------------------------------------------------------------------------- bad input


def test_unknown_driver_and_mode() -> None:
    with pytest.raises(ZonalConfigError, match="driver"):
        connect_kwargs("psycopg2", pgbouncer=False, user_kwargs={})  # type: ignore[arg-type]
    with pytest.raises(ZonalConfigError, match="pgbouncer"):
        connect_kwargs("psycopg", pgbouncer="statement", user_kwargs={})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- reapers


def test_reaper_options() -> None:
    assert reaper_options(60, 30) == (
        "-c idle_session_timeout=60000 -c idle_in_transaction_session_timeout=30000"
    )
    # Rounded up to whole milliseconds: never 0 (which means "off").
    assert reaper_options(0.0001, 1.5) == (
        "-c idle_session_timeout=1 -c idle_in_transaction_session_timeout=1500"
    )
    assert reaper_options(0, 30) == "-c idle_in_transaction_session_timeout=30000"
    assert reaper_options(0, 0) == ""


@pytest.mark.parametrize("bad", [-1, math.inf, math.nan, "60", True])
def test_reaper_options_rejects_bad_values(bad: Any) -> None:
    with pytest.raises(ZonalConfigError, match="idle_session_timeout"):
        reaper_options(bad, 30)
    with pytest.raises(ZonalConfigError, match="idle_in_transaction_session_timeout"):
        reaper_options(60, bad)


def test_reaper_server_settings_for_asyncpg() -> None:
    assert reaper_server_settings(60, 30) == {
        "idle_session_timeout": "60000",
        "idle_in_transaction_session_timeout": "30000",
    }
    assert reaper_server_settings(0, 0) == {}


def test_keepalive_kwargs() -> None:
    assert keepalive_kwargs() == {
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    assert keepalive_kwargs(idle_s=5, interval_s=2, count=2)["keepalives_idle"] == 5
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ZonalConfigError):
            keepalive_kwargs(idle_s=bad)


def test_libpq_accepts_keepalives_and_reaper_options() -> None:
    # libpq itself parses the conninfo: unknown keys or a malformed value would fail.
    conninfo = require_module("psycopg.conninfo")
    text = conninfo.make_conninfo(
        "host=db dbname=app", options=reaper_options(60, 30), **keepalive_kwargs()
    )
    parsed = conninfo.conninfo_to_dict(text)
    assert parsed["options"] == (
        "-c idle_session_timeout=60000 -c idle_in_transaction_session_timeout=30000"
    )
    assert parsed["keepalives"] == "1"
    assert parsed["keepalives_idle"] == "30"


# ------------------------------------------------------------ psycopg wait bounds


class _FakePgConn:
    def __init__(self) -> None:
        self.finished = 0

    def finish(self) -> None:
        self.finished += 1


class _FakeConn:
    """What the bound's timeout handling touches of a psycopg connection."""

    def __init__(self) -> None:
        from zonal_core.psycopg_driver import _Bounds

        self.pgconn = _FakePgConn()
        self._zonal = _Bounds()
        self.told: list[str] = []
        self._zonal.on_timeout = lambda: self.told.append("timeout")


def test_a_statement_past_zonals_bound_ends_the_connection_and_tells() -> None:
    from zonal_core.errors import QueryTimeout
    from zonal_core.psycopg_driver import _NATIVE_BOUND, _WAIT_TIMEOUT, _timed_out

    # zonal's generator bound (psycopg 3.2, or a caller's timeout on 3.3)
    conn, own = _FakeConn(), QueryTimeout("the statement got no answer")
    assert _timed_out(conn, own, native=False) is own
    assert conn.pgconn.finished == 1 and conn.told == ["timeout"]
    if not _NATIVE_BOUND:
        return
    # psycopg 3.3's own timeout, set by zonal: a QueryTimeout instead
    conn = _FakeConn()
    got = _timed_out(conn, _WAIT_TIMEOUT(), native=True)
    assert isinstance(got, QueryTimeout) and "no answer from the server" in str(got)
    assert conn.pgconn.finished == 1 and conn.told == ["timeout"]
    # psycopg's timeout given by the caller: the caller's own, the connection untouched
    conn, theirs = _FakeConn(), _WAIT_TIMEOUT()
    assert _timed_out(conn, theirs, native=False) is theirs
    assert conn.pgconn.finished == 0 and conn.told == []


def test_a_statements_bound_is_settled_whenever_the_bounds_change() -> None:
    from zonal_core.psycopg_driver import _GENERAL, _NATIVE_BOUND, _Bounds

    statement = 3.0 if _NATIVE_BOUND else _GENERAL  # psycopg 3.3's own timeout, or ask
    b = _Bounds()
    assert b.native is None  # nothing bounds a wait
    b.query_timeout = 3.0
    assert b.native == statement
    b.deadline = 10.0  # a ping: its deadline decides, through _bound
    assert b.native is _GENERAL
    b.deadline = None
    assert b.native == statement
    b.query_timeout = None
    assert b.native is None
    b.deadline = 5.0
    assert b.native is _GENERAL
