"""Driver settings for PgBouncer modes and for serverless server-side reapers.

PgBouncer in transaction mode hands a server connection to another client after
every transaction, so a driver must not rely on prepared statements living on "its"
connection:

- psycopg 3 auto-prepares a statement after 5 executions; ``prepare_threshold=None``
  turns that off.
- asyncpg caches prepared statements (``statement_cache_size=0`` turns that off) and
  still prepares each statement under a generated name, so names must be unique
  across clients; SQLAlchemy's asyncpg adapter adds its own cache
  (``prepared_statement_cache_size``) and takes a ``prepared_statement_name_func``.

These values are typed keyword arguments; never put them in a URL query string, where
they arrive as strings (``?prepare_threshold=0`` fails in psycopg with a TypeError).

For direct connections (no PgBouncer) the serverless profile asks the server to reap
what a frozen instance still holds (:func:`reaper_options`,
:func:`reaper_server_settings`) and turns on TCP keepalives (:func:`keepalive_kwargs`).
PgBouncer rejects the startup ``options`` parameter, so none of these is for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal
from uuid import uuid4

from zonal_core.errors import ZonalConfigError

__all__ = [
    "SQLALCHEMY_ASYNCPG_KEYS",
    "connect_kwargs",
    "keepalive_kwargs",
    "reaper_options",
    "reaper_server_settings",
    "unique_statement_name",
]

SQLALCHEMY_ASYNCPG_KEYS = frozenset(
    {"prepared_statement_cache_size", "prepared_statement_name_func"}
)
"""Keys of :func:`connect_kwargs` for ``"asyncpg"`` that SQLAlchemy's asyncpg adapter
consumes itself; drop them when calling ``asyncpg.connect()`` directly."""

Pgbouncer = Literal[False, True, "transaction", "session"]


def unique_statement_name() -> str:
    """A prepared statement name no other client of a PgBouncer will use.

    >>> unique_statement_name().startswith("__zonal_")
    True
    """
    return f"__zonal_{uuid4().hex}__"


def _mode(pgbouncer: object) -> Literal[False, "transaction", "session"]:
    # the configuration's own parser: one meaning of every spelling
    from zonal_core.config import parse_option

    mode: Literal[False, "transaction", "session"] = parse_option("pgbouncer", pgbouncer)
    return mode


def _check_not_string(user_kwargs: Mapping[str, Any], key: str, fix: str) -> None:
    value = user_kwargs.get(key)
    if isinstance(value, str):
        raise ZonalConfigError(
            key,
            f"is the string {value!r}, as it arrives from a URL query string; the driver "
            "needs a number (or None) and would fail with a TypeError",
            fix=fix,
        )


def connect_kwargs(
    driver: Literal["psycopg", "asyncpg"],
    *,
    pgbouncer: Pgbouncer,
    user_kwargs: Mapping[str, Any],
) -> dict[str, Any]:
    """The keyword arguments to add to the driver's connect call for ``pgbouncer``.

    ``user_kwargs`` are the user's own connect arguments (``connect_args``, URL query,
    Django ``OPTIONS``); a setting there that transaction mode cannot work with is a
    :class:`~zonal_core.errors.ZonalConfigError` naming the field and the fix, never a
    silent override. ``pgbouncer=True`` means ``"transaction"``.

    psycopg, transaction mode: ``{"prepare_threshold": None}``. A user
    ``prepare_threshold`` that is not None is an error; so is a string one in any mode.

    asyncpg, transaction mode: ``statement_cache_size=0`` (asyncpg's own cache),
    ``prepared_statement_cache_size=0`` (SQLAlchemy's adapter cache) and
    ``prepared_statement_name_func`` (unique names, :func:`unique_statement_name`;
    a user's own function is kept). The last two are consumed by SQLAlchemy's asyncpg
    DBAPI adapter, so they belong in the connect arguments SQLAlchemy passes on
    (``connect_args`` or a ``do_connect`` listener's ``cparams``); the URL form
    ``?prepared_statement_cache_size=0`` is equivalent. For a bare
    ``asyncpg.connect()`` drop :data:`SQLALCHEMY_ASYNCPG_KEYS`. A user cache size
    other than 0 is an error.

    Session mode and direct connections add nothing: prepared statements stay on the
    client's own server connection.

    >>> connect_kwargs("psycopg", pgbouncer="transaction", user_kwargs={})
    {'prepare_threshold': None}
    >>> connect_kwargs("psycopg", pgbouncer=False, user_kwargs={"prepare_threshold": 0})
    {}
    """
    mode = _mode(pgbouncer)
    if driver == "psycopg":
        return _psycopg(mode, user_kwargs)
    if driver == "asyncpg":
        return _asyncpg(mode, user_kwargs)
    raise ZonalConfigError(
        "driver", f"must be 'psycopg' or 'asyncpg', not {driver!r}", fix="driver='psycopg'"
    )


def _psycopg(
    mode: Literal[False, "transaction", "session"], user_kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    if mode == "transaction":
        _check_not_string(
            user_kwargs,
            "prepare_threshold",
            "remove it from the URL; zonal sets prepare_threshold=None for pgbouncer='transaction'",
        )
        value = user_kwargs.get("prepare_threshold")
        if value is not None:
            raise ZonalConfigError(
                "prepare_threshold",
                f"is {value!r}, but pgbouncer='transaction' needs None: psycopg's "
                "prepared statements live on one server connection, which PgBouncer "
                "hands to other clients ('prepared statement \"_pg3_0\" does not exist')",
                fix="remove prepare_threshold (zonal sets None), or use pgbouncer='session' "
                "or a direct connection",
            )
        return {"prepare_threshold": None}
    _check_not_string(
        user_kwargs,
        "prepare_threshold",
        "pass it as a number in connect_args (connect_args={'prepare_threshold': 5}), "
        "not in the URL",
    )
    return {}


def _asyncpg(
    mode: Literal[False, "transaction", "session"], user_kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    keys = ("statement_cache_size", "prepared_statement_cache_size")
    values = dict(user_kwargs)
    # SQLAlchemy itself converts a URL's prepared_statement_cache_size to int (and its
    # docs recommend ?prepared_statement_cache_size=0 behind PgBouncer), so a numeric
    # string is fine there; asyncpg's own statement_cache_size gets no such help.
    psc = values.get("prepared_statement_cache_size")
    if isinstance(psc, str) and psc.strip().isdigit():
        values["prepared_statement_cache_size"] = int(psc)
    for key in keys:
        _check_not_string(
            values,
            key,
            f"remove it from the URL; zonal sets {key}=0 for pgbouncer='transaction'"
            if mode == "transaction"
            else f"pass it as a number in connect_args (connect_args={{'{key}': 100}})",
        )
    if mode != "transaction":
        return {}
    out: dict[str, Any] = {}
    for key in keys:
        value = values.get(key, 0)
        if value != 0:
            raise ZonalConfigError(
                key,
                f"is {value!r}, but pgbouncer='transaction' needs 0: cached prepared "
                "statements live on one server connection, which PgBouncer hands to "
                "other clients",
                fix=f"remove {key} (zonal sets 0), or use pgbouncer='session' or a direct "
                "connection",
            )
        out[key] = 0
    if user_kwargs.get("prepared_statement_name_func") is None:
        out["prepared_statement_name_func"] = unique_statement_name
    return out


def _milliseconds(field: str, seconds: float) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ZonalConfigError(field, f"must be a number of seconds, not {seconds!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ZonalConfigError(
            field, f"must be a finite number of seconds >= 0, not {seconds!r}", fix=f"{field}=60"
        )
    # Round up: a positive timeout must never become 0, which means "off".
    return math.ceil(seconds * 1000)


def _reaper_settings(
    idle_session_timeout_s: float, idle_in_transaction_timeout_s: float
) -> dict[str, int]:
    settings = {
        "idle_session_timeout": _milliseconds("idle_session_timeout", idle_session_timeout_s),
        "idle_in_transaction_session_timeout": _milliseconds(
            "idle_in_transaction_session_timeout", idle_in_transaction_timeout_s
        ),
    }
    return {name: ms for name, ms in settings.items() if ms > 0}


def reaper_options(idle_session_timeout_s: float, idle_in_transaction_timeout_s: float) -> str:
    """The libpq startup ``options`` value that makes the server reap idle sessions.

    For direct connections of the serverless profile: a frozen instance's connections
    are closed by the server after ``idle_session_timeout_s`` idle (PostgreSQL 14+;
    older servers refuse the unknown setting at connect) and after
    ``idle_in_transaction_timeout_s`` idle inside a transaction. Values are seconds,
    sent as milliseconds rounded up; 0 leaves that setting out (0 means off anyway).
    Append to a user's own ``options`` with a space. Never for PgBouncer, which
    rejects the ``options`` startup parameter.

    >>> reaper_options(60, 30)
    '-c idle_session_timeout=60000 -c idle_in_transaction_session_timeout=30000'
    """
    settings = _reaper_settings(idle_session_timeout_s, idle_in_transaction_timeout_s)
    return " ".join(f"-c {name}={ms}" for name, ms in settings.items())


def reaper_server_settings(
    idle_session_timeout_s: float, idle_in_transaction_timeout_s: float
) -> dict[str, str]:
    """The same reapers as :func:`reaper_options`, as asyncpg's ``server_settings``.

    >>> reaper_server_settings(60, 0)
    {'idle_session_timeout': '60000'}
    """
    settings = _reaper_settings(idle_session_timeout_s, idle_in_transaction_timeout_s)
    return {name: str(ms) for name, ms in settings.items()}


def keepalive_kwargs(*, idle_s: int = 30, interval_s: int = 10, count: int = 3) -> dict[str, int]:
    """libpq TCP keepalive settings (psycopg connect arguments).

    A peer that vanished (a zone lost, a NAT entry expired while the function was
    frozen) is noticed after about ``idle_s + interval_s * count`` seconds instead of
    the kernel's two hours. asyncpg has no such arguments.

    >>> keepalive_kwargs()
    {'keepalives': 1, 'keepalives_idle': 30, 'keepalives_interval': 10, 'keepalives_count': 3}
    """
    for field, value in (
        ("keepalives_idle", idle_s),
        ("keepalives_interval", interval_s),
        ("keepalives_count", count),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ZonalConfigError(field, f"must be a whole number >= 1, not {value!r}")
    return {
        "keepalives": 1,
        "keepalives_idle": idle_s,
        "keepalives_interval": interval_s,
        "keepalives_count": count,
    }
