"""Django's PostgreSQL backend, with connections from a zonal pool.

``ENGINE = "zonal_django.backends.postgresql"``; zonal's options go in
``OPTIONS["zonal"]`` (docs/configuration.md). Everything else is Django's own backend:
a new connection is a checkout from the alias's zoned pool, ``close()`` is a
checkin. ``CONN_MAX_AGE`` must be 0 (the pool keeps connections open),
``CONN_HEALTH_CHECKS`` is the pool's ``pre_ping``, and Django's own
``OPTIONS["pool"]`` is refused.

In PgBouncer transaction mode server-side cursors are off, ``assume_role`` is
refused and every statement that goes through a Django cursor (ORM and raw
``connection.cursor()``) passes the session-state rule first.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import ImproperlyConfigured

try:
    import psycopg
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImproperlyConfigured(
        "zonal_django.backends.postgresql needs psycopg 3 (psycopg2 is not supported): "
        "pip install 'zonal[django]'") from exc

from django import VERSION as DJANGO_VERSION
from django.conf import settings
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base as pg
from django.db.backends.utils import CursorWrapper
from django.utils.functional import empty

if not pg.is_psycopg3:  # pragma: no cover - Django picked psycopg2
    raise ImproperlyConfigured(
        "zonal_django.backends.postgresql needs psycopg 3, but Django loaded psycopg2 "
        "(fix: pip install 'psycopg[binary]>=3.2')")

from psycopg.pq import ConnStatus, TransactionStatus

from zonal_core import pgbouncer as rules
from zonal_core.config import ZonalConfig
from zonal_core.errors import ZonalError
from zonal_core.lifecycle import install_sigterm_handler
from zonal_core.options import env_values
from zonal_core.pool import CorePool
from zonal_core.psycopg_driver import PsycopgDriver
from zonal_core.state import PooledConnection
from zonal_django import conf, pools
from zonal_django.backends.postgresql.creation import DatabaseCreation
from zonal_django.direct import connect_direct
from zonal_django.errors import translate

__all__ = ["DatabaseWrapper"]

_UNSET: Any = object()
# (enum lookups once, not per connect or checkin)
_READ_COMMITTED = pg.IsolationLevel.READ_COMMITTED
_CONNECTION_OK = ConnStatus.OK
_TX_IDLE = TransactionStatus.IDLE
_LAZY_SETTINGS: dict[str, Any] = object.__getattribute__(settings, "__dict__")
"""The ``settings`` object's own dict: its ``_wrapped`` is the configured settings
(``settings.configure``, ``override_settings`` and the first read all put it there).
Read on every connect without ``LazyObject.__getattribute__``, a Python call with a
``super()`` on every attribute since Django 4.1."""



class _Checkout:
    """The pooled connection a wrapper holds; shared with the wrapper's finalizer,
    which must not hold the wrapper itself."""

    __slots__ = ("pool", "rec")

    def __init__(self) -> None:
        self.pool: CorePool | None = None
        self.rec: PooledConnection | None = None


def _gone(checkout: _Checkout) -> None:
    # Finalizer: the wrapper was collected while holding a connection.
    if checkout.pool is not None and checkout.rec is not None:
        pools.lost(checkout.pool, checkout.rec)
        checkout.pool = checkout.rec = None


class _SessionStateMixin:
    """Applies the session-state rule before a statement reaches the driver."""

    db: Any

    def _execute_with_wrappers(self, sql: Any, params: Any, many: bool, executor: Any) -> Any:
        policy = self.db._zonal_policy
        if policy is not None:
            rules.check(_sql_text(sql), policy)
        return super()._execute_with_wrappers(sql, params, many, executor)  # type: ignore[misc]


def _sql_text(sql: Any) -> str:
    if isinstance(sql, str):
        return sql
    if isinstance(sql, bytes):
        return sql.decode("utf-8", "replace")
    try:  # psycopg.sql.Composable
        return str(sql.as_string(None))
    except Exception:
        return str(sql)


class ZonalCursorWrapper(_SessionStateMixin, CursorWrapper):
    """Django's cursor wrapper with the session-state rule."""


class ZonalCursorDebugWrapper(_SessionStateMixin, pg.CursorDebugWrapper):
    """Django's debug cursor wrapper (``DEBUG = True``) with the session-state rule."""


class DatabaseWrapper(pg.DatabaseWrapper):
    """Django's PostgreSQL ``DatabaseWrapper`` whose connections come from zonal."""

    creation_class = DatabaseCreation
    connection: Any  # the psycopg connection, or None

    def __init__(self, settings_dict: dict[str, Any], alias: str = "default") -> None:
        super().__init__(settings_dict, alias)
        self._zonal = _Checkout()
        weakref.finalize(self, _gone, self._zonal)
        self.zonal_direct = False
        """True: new connections go to a ``direct`` endpoint, never pooled."""
        self._zonal_plan_cache: tuple[Any, conf.Plan, dict[str, Any]] | None = None
        self._zonal_policy: str | None = None
        if "DISABLE_SERVER_SIDE_CURSORS" not in settings_dict:
            # A server-side cursor outlives the transaction PgBouncer lends a server
            # for. The mode as the configuration parses it (any spelling, and from
            # ZONAL_TOPOLOGY too); a configuration that does not parse is reported
            # by the system checks and at connect.
            config = _config_of(alias, settings_dict)
            if config is not None and config.pgbouncer == "transaction":
                settings_dict["DISABLE_SERVER_SIDE_CURSORS"] = True

    # -- configuration ------------------------------------------------------

    @property
    def pool(self) -> None:
        """Django's native pool: never. zonal is the pool (see :attr:`zonal_pool`);
        asking for Django's with ``OPTIONS["pool"]`` set is ``ImproperlyConfigured``, as
        the system checks and a connect say. (Django reads it at every connect.)"""
        if self.settings_dict["OPTIONS"].get("pool"):
            problems, _ = conf.problems_for(self.alias, self.settings_dict)
            raise ImproperlyConfigured(next(p for p in problems if p.id == "zonal.E002").text())

    def zonal_plan(self, conn_params: dict[str, Any] | None = None) -> conf.Plan:
        """The validated zonal plan of this alias (``ImproperlyConfigured`` if wrong).

        Kept until anything it was made from changes: the settings (compared whole,
        nested dicts included, against a copy), the time zone, the connection
        parameters or zonal's environment variables. (Every connect asks: the check
        is a few C-level comparisons, not a serialisation.)"""
        # (Django's psycopg "context" follows USE_TZ and the time zone, from a cache)
        wrapped = _LAZY_SETTINGS.get("_wrapped", empty)
        use_tz = (settings if wrapped is empty else wrapped).USE_TZ
        key = (use_tz, self.timezone_name, conn_params or {}, env_values())
        cached = self._zonal_plan_cache
        if cached is not None and cached[0] == key and cached[2] == self.settings_dict:
            return cached[1]
        # Another wrapper of this alias may have made it: Django keeps a wrapper per
        # thread, and a server that starts a thread per request (runserver, a growing
        # thread pool) would otherwise validate and build the configuration again on
        # each new thread's first connect (about 250 µs against a comparison's 1 µs).
        shared = _PLANS.get(self.alias)
        if shared is not None and shared[0] == key and shared[2] == self.settings_dict:
            self._zonal_plan_cache = shared
            return shared[1]
        params = {k: v for k, v in key[2].items() if k != "context"}
        extra = {"use_tz": key[0], "timezone": key[1], "params": params}
        plan = conf.plan_for(self.alias, self.settings_dict, extra)
        self._zonal_plan_cache = _PLANS[self.alias] = (key, plan, _snapshot(self.settings_dict))
        return plan

    @property
    def zonal_pool(self) -> CorePool:
        """This alias's pool in this process, for these settings (built if needed)."""
        params = self.get_connection_params()
        plan = self.zonal_plan(params)
        return pools.get_pool(self.alias, plan.fingerprint, _build_pool, plan, params)

    @property
    def zonal_session_policy(self) -> str | None:
        """The session-state policy for the statements of the connection held (set
        at connect), or None where it does not apply."""
        return self._zonal_policy


    # -- connect / close ------------------------------------------------------

    @pg.async_unsafe
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        plan = self.zonal_plan(conn_params)
        options = self.settings_dict["OPTIONS"]
        set_isolation_level = False
        isolation_level_value = options.get("isolation_level", _UNSET)
        if isolation_level_value is _UNSET:
            self.isolation_level = _READ_COMMITTED
        else:
            try:
                self.isolation_level = pg.IsolationLevel(isolation_level_value)
                set_isolation_level = True
            except ValueError:
                raise ImproperlyConfigured(
                    f"Invalid transaction isolation level {isolation_level_value} "
                    "specified. Use one of the psycopg.IsolationLevel values.") from None
        if self.zonal_direct or self.alias == NO_DB_ALIAS:
            params = conf.connect_params(conn_params)
            params["autocommit"] = True
            raw: Any = connect_direct(plan.config, params, allow_pooler=True)
            self._zonal_policy = None
        else:
            pool = pools.get_pool(self.alias, plan.fingerprint, _build_pool, plan, conn_params)
            rec = pool._state.fast_checkout()  # (the common case, without getconn's call)
            if rec is None:
                try:
                    rec = pool._checkout()
                except ZonalError as exc:
                    raise translate(exc) from exc
            raw = rec.raw
            checkout = self._zonal
            checkout.pool, checkout.rec = pool, rec
            self._zonal_policy = plan.session_policy
        if set_isolation_level:
            raw.isolation_level = self.isolation_level
        return raw

    def _close(self) -> None:
        raw = self.connection
        if raw is None:
            return None
        checkout = self._zonal
        pool, rec = checkout.pool, checkout.rec
        checkout.pool = checkout.rec = None
        if pool is None or rec is None or rec.raw is not raw:
            with self.wrap_database_errors:
                raw.close()
                return None
        try:
            _give_back(pool, rec)
        finally:
            # The connection is the pool's again: this wrapper must not touch it. In
            # an atomic block Django expects a closed connection that fails every use
            # (and never a silent reconnect), as the stock backend gives.
            self.connection = _CLOSED if self.in_atomic_block else None
        return None

    def close_if_health_check_failed(self) -> None:
        """Nothing to check here: the pool checks a connection when it lends it
        (``CONN_HEALTH_CHECKS`` is its ``pre_ping``), as Django's own pool does, and a
        connection never outlives its request (``CONN_MAX_AGE`` 0). Django asks
        before every cursor."""
        return None

    def is_usable(self) -> bool:
        # Django 4.2's version assumes a connection; 5.1+ checks for None as here.
        if self.connection is None:
            return False
        return bool(super().is_usable())

    def close_pool(self) -> None:
        """Close this alias's pools in this process (idle connections now, borrowed
        ones when they come back)."""
        pools.close_alias(self.alias)

    if DJANGO_VERSION >= (5, 1):
        def _configure_timezone(self, connection: Any) -> bool:
            # Every checkout asks (a pooled connection may have been left in another
            # time zone). Most find it set: the server's report, compared as bytes,
            # settles that without building a ConnectionInfo; else Django's own check.
            name = self.timezone_name
            if name and connection.pgconn.parameter_status(b"TimeZone") == name.encode():
                return False
            return bool(super()._configure_timezone(connection))

        def ensure_timezone(self) -> bool:
            # Django closes its pool here so new connections get the new time zone;
            # zonal's pools are keyed by time zone, so the old pool is left alone.
            if self.connection is None:
                return False
            return bool(self._configure_timezone(self.connection))

    # -- PgBouncer transaction mode -------------------------------------------

    def make_cursor(self, cursor: Any) -> Any:
        if self._zonal_policy is None:
            return super().make_cursor(cursor)
        return ZonalCursorWrapper(cursor, self)

    def make_debug_cursor(self, cursor: Any) -> Any:
        if self._zonal_policy is None:
            return super().make_debug_cursor(cursor)
        return ZonalCursorDebugWrapper(cursor, self)

    def chunked_cursor(self) -> Any:
        plan = self._zonal_plan_cache
        if plan is not None and plan[1].transaction_mode and not self.zonal_direct:
            return self.cursor()  # no server-side cursor behind a transaction pooler
        return super().chunked_cursor()

    # -- direct sessions ----------------------------------------------------

    @contextmanager
    def _nodb_cursor(self) -> Iterator[Any]:
        # CREATE/DROP DATABASE must not find this alias's idle pooled connections
        # to the database in question.
        pools.close_alias(self.alias)
        with super()._nodb_cursor() as cursor:
            yield cursor


_PLANS: dict[str, tuple[Any, conf.Plan, dict[str, Any]]] = {}
"""The last plan made for each alias (what it was made from, the plan, a copy of the
settings), shared by the alias's wrappers (one per thread)."""


def _config_of(alias: str, settings_dict: dict[str, Any]) -> ZonalConfig | None:
    """The configuration of these settings (None if they do not make one): the shared
    plan's when it was made from the same settings and environment."""
    shared = _PLANS.get(alias)
    if shared is not None and shared[0][3] == env_values() and shared[2] == settings_dict:
        return shared[1].config
    return conf.problems_for(alias, settings_dict)[1]


def _build_pool(plan: conf.Plan, conn_params: dict[str, Any]) -> CorePool:
    """A new pool for ``plan`` (its parameters from Django's ``conn_params``)."""
    params = conf.connect_params(conn_params)
    # Idle connections sit in autocommit; Django sets its own mode at checkout.
    params["autocommit"] = True
    if plan.config.serverless:
        # the runtime may freeze or destroy the sandbox right after SIGTERM:
        # close idle connections first (main thread only; chains)
        install_sigterm_handler()
    driver = PsycopgDriver(params, plan.config)
    pool = CorePool(driver, plan.config)
    # A statement past query_timeout counts against its endpoint: the driver arms each
    # connection once, when it opens it (as SQLAlchemy's connect path does); the
    # callback goes to the pool, never to a wrapper.
    driver.on_query_timeout = pool.record_failure
    return pool


def _snapshot(value: Any) -> Any:
    """A copy of ``value``'s containers (dicts, lists, tuples), leaves shared: equal
    to ``value`` until something inside it is changed in place."""
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_snapshot(v) for v in value)
    return value


class _ClosedConnection:
    """Stands for a connection given back to the pool inside an atomic block:
    every use raises ``InterfaceError``, as a closed psycopg connection does."""

    closed = True
    broken = False

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise psycopg.InterfaceError("the connection is closed (returned to the zonal pool)")

    cursor = execute = commit = rollback = _fail

    @property
    def autocommit(self) -> bool:
        return self._fail()  # type: ignore[no-any-return]

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self._fail()

    def close(self) -> None:
        pass


_CLOSED = _ClosedConnection()


def _give_back(pool: CorePool, rec: PooledConnection) -> None:
    """Check ``rec`` in: idle in autocommit, or discarded if broken."""
    raw = rec.raw
    if pools.foreign(rec):
        # Borrowed before a fork: the socket is the parent's. Never roll back or
        # close it from here; the core keeps it referenced and untouched.
        pool.putconn(rec, reset=False)
        return
    pgconn = raw.pgconn
    if pgconn.status != _CONNECTION_OK:
        if raw.broken:
            # Lost mid-use: the server (or the path to it) went away, so the zone's
            # older idle connections are suspect too.
            pool.invalidate(rec, ConnectionError("connection lost"))
            return
        if raw.closed:  # closed by zonal after a query timeout (already counted)
            pool.invalidate(rec)
            return
    try:
        if pgconn.transaction_status != _TX_IDLE:
            raw.rollback()
        if not raw.autocommit:
            raw.autocommit = True
    except psycopg.Error as exc:
        pool.invalidate(rec, exc)
        return
    pool.putconn(rec, reset=False)
