"""``ZonalPool`` and ``ZonalAsyncPool``: SQLAlchemy pools over zonal's zoned pool.

SQLAlchemy keeps what it owns — connection records, the fairy, reset on return,
pool events, ``engine.dispose()`` — and zonal decides which connection a checkout
gets: routing, health, lifetime with jitter, idle reaping on the caller's path,
pre-ping with a bypass window, per-zone stats.

>>> from sqlalchemy import create_engine
>>> engine = create_engine(
...     "postgresql+psycopg://app:secret@/appdb", poolclass=ZonalPool,
...     zones={"eu-west-1a": "10.0.1.5:6432", "eu-west-1b": "10.0.2.5:6432"},
...     local_zone="eu-west-1a", pool_size=5, pool_timeout=5, pool_pre_ping=True)
>>> engine.pool.config.pre_ping, engine.pool.config.timeout
(True, 5.0)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Any

from sqlalchemy.pool import Pool
from sqlalchemy.pool.base import _ConnectionRecord
from sqlalchemy.util import await_only, greenlet_spawn
from sqlalchemy.util.concurrency import in_greenlet

from zonal_core import errors as core_errors
from zonal_core.clock import Clock
from zonal_core.config import ZonalConfig, build_config
from zonal_core.errors import ZonalConfigError
from zonal_core.flow import Attempt, not_a_zone_failure
from zonal_core.health import HealthPolicy
from zonal_core.lifecycle import install_sigterm_handler
from zonal_core.options import ENV_TOPOLOGY, ENV_TOPOLOGY_FILE, OPTIONS
from zonal_core.pool import CorePool
from zonal_core.pool_async import TaskWaiter
from zonal_core.psycopg_driver import bounded_ping
from zonal_core.state import PooledConnection, Waiter
from zonal_core.stats import PoolStats
from zonal_core.topology import Endpoint
from zonal_sqlalchemy import connect as zconnect
from zonal_sqlalchemy.errors import NoHealthyZone, PoolTimeout

__all__ = ["ZonalAsyncPool", "ZonalPool"]



class _RecordDriver:
    """The core pool's driver: its connections are SQLAlchemy connection records.

    Creating a ``_ConnectionRecord`` connects (through the creator, or the
    dialect's ``do_connect`` listener) and fires SQLAlchemy's ``connect`` events.
    """

    def __init__(self, pool: ZonalPool) -> None:
        self.pool = pool

    def connect(self, endpoint: Endpoint, timeout: float) -> _ConnectionRecord:
        pool = self.pool
        target = zconnect.ConnectSpec(pool._dialect, pool.config, endpoint, timeout,
                                 pool.core.record_failure)
        with zconnect.connecting(target):
            try:
                return _ConnectionRecord(self.pool)
            except Exception as exc:
                if target.opened:
                    # The driver connected; SQLAlchemy's setup after it failed (the
                    # dialect's initialize, a connect event, an isolation level):
                    # not the zone's fault, and the caller gets it as it is.
                    not_a_zone_failure(exc)
                raise

    # (the core's PooledConnection for a record is attached by ZonalPool._do_get)

    def ping(self, rec: _ConnectionRecord, timeout: float) -> None:
        dbapi = rec.dbapi_connection
        if dbapi is None:
            raise core_errors.ZonalError("connection was invalidated")
        dialect: Any = self.pool._dialect
        # SQLAlchemy's pre-ping: handle_error fires with is_pre_ping, and its
        # handlers may upgrade or downgrade a disconnect. False: gone, try the next
        # one; an error that is not a disconnect is the caller's (SQLAlchemy raises it).
        ping = getattr(dialect, "_do_ping_w_event", dialect.do_ping)
        try:
            alive = bounded_ping(rec.driver_connection, timeout, lambda: ping(dbapi))
        except TimeoutError:
            raise  # a black-holed server: counts against the endpoint
        except Exception as exc:
            raise not_a_zone_failure(exc) from None
        if alive is False:
            raise core_errors.ZonalError("pre-ping: the connection is gone")

    def reset(self, rec: _ConnectionRecord) -> bool:
        return True  # SQLAlchemy resets on return itself (pool_reset_on_return)

    def close(self, rec: _ConnectionRecord) -> None:
        rec.close()  # fires the "close" event


class _GreenletCorePool(CorePool):
    """The core pool run from SQLAlchemy's asyncio engines: the pool code runs in a
    greenlet on the event loop, so waiting awaits instead of blocking the thread."""

    def _new_waiter(self) -> Waiter:
        return TaskWaiter()

    def _wait(self, waiter: Waiter, timeout: float) -> bool:
        assert isinstance(waiter, TaskWaiter)
        woken: bool = await_only(waiter.wait(self.clock, timeout))
        return woken

    def _sleep(self, seconds: float) -> None:
        await_only(asyncio.sleep(seconds))

    def _start(self, att: Attempt) -> None:
        # A hedged connect runs in a greenlet of its own, as a task on the loop.
        tasks: set[asyncio.Task[Any]] = self.__dict__.setdefault("_tasks", set())
        task = asyncio.get_running_loop().create_task(
            greenlet_spawn(self._connect_to_end, att))
        att.cancel = task.cancel
        tasks.add(task)  # (a task nobody references may be collected)
        task.add_done_callback(tasks.discard)

    def _close_all(self, recs: list[PooledConnection]) -> None:
        if in_greenlet():
            super()._close_all(recs)
            return
        # At exit or on SIGTERM nothing can be awaited: end the sockets right away
        # (psycopg's pgconn.finish() and asyncpg's terminate() are synchronous).
        while recs:
            _terminate_now(recs.pop().raw)


def _terminate_now(rec: _ConnectionRecord) -> None:
    conn: Any = rec.driver_connection
    # shutting down: a dead socket is the point, so a failure here changes nothing
    with contextlib.suppress(Exception):
        if hasattr(conn, "pgconn"):
            conn.pgconn.finish()
        elif hasattr(conn, "terminate"):
            conn.terminate()
    rec.dbapi_connection = None


class ZonalPool(Pool):
    """A SQLAlchemy pool with per-zone pools, failover and failback, PgBouncer
    safety, jittered lifetimes and freeze-proof idle reaping.

    Every option of zonal's configuration table is a keyword argument, to
    ``create_engine(..., poolclass=ZonalPool, ...)`` or to ``ZonalPool(creator,
    ...)``; SQLAlchemy's own ``pool_timeout``, ``pool_recycle`` (max lifetime) and
    ``pool_pre_ping`` map onto ``timeout``, ``max_lifetime`` and ``pre_ping``.

    Built directly, ``creator(endpoint)`` is called with the endpoint to open
    (``.zone``, ``.host``, ``.port``); a creator that takes no argument serves
    every zone.
    """

    _is_asyncio = False
    _core_class: type[CorePool] = CorePool

    def __init__(
        self,
        creator: Callable[..., Any],
        zones: Any = None,
        local_zone: str | None = None,
        pool_size: int | None = None,
        max_total: int | None = None,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        max_lifetime: float | None = None,
        max_idle: float | None = None,
        min_idle: int | None = None,
        pre_ping: bool | None = None,
        ping_bypass: float | None = None,
        ping_timeout: float | None = None,
        query_timeout: float | None = None,
        pgbouncer: Any = None,
        session_state: str | None = None,
        serverless: bool | None = None,
        failback_after: float | None = None,
        spillover: bool | None = None,
        target_session_attrs: str | None = None,
        hedge_after: float | None = None,
        topology: Any = None,
        version: str | None = None,
        name: str | None = None,
        leak_threshold: float | None = None,
        password: Any = None,
        allow_tls_downgrade: bool | None = None,
        recycle: float | None = None,
        max_overflow: int | None = None,
        use_lifo: bool | None = None,
        echo: Any = None,
        logging_name: str | None = None,
        reset_on_return: Any = True,
        events: Any = None,
        dialect: Any = None,
        clock: Clock | None = None,
        _dispatch: Any = None,
        _zonal_config: ZonalConfig | None = None,
    ) -> None:
        super().__init__(creator, recycle=-1, echo=echo, logging_name=logging_name,
                         reset_on_return=reset_on_return, events=events,
                         dialect=dialect, pre_ping=False, _dispatch=_dispatch)
        cparams = zconnect.engine_connect_args(creator)
        self._engine_connect = cparams is not None
        if _zonal_config is None:
            values = dict(locals())
            # (every option is a named parameter above: create_engine passes a pool
            # class only what its signature names; a test keeps the two equal)
            options = {k: values[k] for k in OPTIONS if values[k] is not None}
            _zonal_config = _build(options, recycle=recycle, max_overflow=max_overflow,
                                   use_lifo=use_lifo, cparams=cparams)
        if cparams is not None and dialect is not None:
            zconnect.check_connect_args(dict(cparams), _zonal_config,
                                        zconnect.driver_of(dialect))
        self._clock = clock
        self._core = self._core_class(_RecordDriver(self), _zonal_config, clock=clock)
        # (the core's one-step checkout and checkin, bound once: read on every one)
        self._take, self._give = self._core._state.fast_checkout, self._core._state.fast_checkin
        # (the core's live state, whose config reconfigure replaces: what the
        # session-state rule reads before every statement behind PgBouncer)
        self._zonal_state = self._core._state
        if _zonal_config.serverless:
            # A serverless runtime may freeze or destroy the sandbox right after
            # SIGTERM: close idle connections first (main thread only; chains).
            install_sigterm_handler()
        if dialect is not None and hasattr(dialect, "dispatch"):
            zconnect.install(dialect)
            if _zonal_config.pgbouncer:
                from zonal_sqlalchemy.statements import install as install_rules

                install_rules(dialect)

    # -- what SQLAlchemy calls ------------------------------------------------

    def _should_wrap_creator(self, creator: Callable[..., Any]) -> Callable[[Any], Any]:
        wrapped = super()._should_wrap_creator(creator)
        # create_engine's connect() is routed by the do_connect listener; a creator
        # of one argument is handed the endpoint itself.
        takes_endpoint = wrapped is creator and zconnect.engine_connect_args(creator) is None

        def invoke(rec: Any) -> Any:
            target = zconnect.current_spec()
            if takes_endpoint:
                if target is None:
                    raise core_errors.ZonalError("a zonal creator needs an endpoint")
                conn = creator(target.endpoint)
            else:
                conn = wrapped(rec)
            if target is not None:
                if target.finish is not None:  # opened by SQLAlchemy's own path
                    conn = target.finish(conn)
                target.opened = True  # what fails from here on is not the zone's fault
            return conn

        return invoke

    def _do_get(self) -> _ConnectionRecord:
        pooled = self._take()  # (the common case, without getconn's call)
        if pooled is None:
            pooled = self._get_slow()
        rec: _ConnectionRecord = pooled.raw
        rec._zonal_pooled = pooled  # type: ignore[attr-defined]
        return rec

    def _get_slow(self) -> PooledConnection:
        try:
            return self._core._checkout()  # (after _do_get's fast step)
        except core_errors.PoolTimeout as exc:
            raise PoolTimeout(str(exc)) from exc.__cause__
        except core_errors.NoHealthyZone as exc:
            # SQLAlchemy's language: an OperationalError wrapping the last driver
            # error, whose message names every zone's state.
            raise NoHealthyZone(str(exc), exc.__cause__) from exc.__cause__

    def _do_return_conn(self, record: Any) -> None:
        try:
            pooled: PooledConnection = record._zonal_pooled
        except AttributeError:  # pragma: no cover - not one of ours
            record.close()
            return
        # (= record._is_hard_or_soft_invalidated(): zonal never sets the pool-wide
        # _invalidate_time, it invalidates zones in the core instead)
        if record.dbapi_connection is None or record._soft_invalidate_time > record.starttime:
            self._core.putconn(pooled, reset=False, discard="invalidated")
        elif not self._give(pooled):  # (SQLAlchemy has reset it already)
            self._core.putconn(pooled, reset=False)

    # (SQLAlchemy's Pool._return_conn only calls _do_return_conn: a call less per checkin)
    _return_conn = _do_return_conn

    def _invalidate(self, connection: Any, exception: BaseException | None = None,
                    _checkin: bool = True) -> None:
        # SQLAlchemy marks the whole pool invalid on a disconnect; zonal only the
        # zone of that connection: the others did not lose their server.
        rec = getattr(connection, "_connection_record", None)
        pooled = getattr(rec, "_zonal_pooled", None)
        if pooled is not None:
            # (a QueryTimeout was already counted against its endpoint by the
            # connection itself when it expired)
            self._core.invalidate_zone(pooled.zone)
        if _checkin and getattr(connection, "is_valid", False):
            connection.invalidate(exception)

    def recreate(self) -> ZonalPool:
        """A new pool of the same configuration (``engine.dispose()`` calls it)."""
        self.logger.info("Pool recreating")
        return self.__class__(
            self._creator,
            recycle=None,
            echo=self.echo,
            logging_name=self._orig_logging_name,
            reset_on_return=self._reset_on_return,
            _dispatch=self.dispatch,
            dialect=self._dialect,
            clock=self._clock,
            _zonal_config=self._core.config,
        )

    def dispose(self) -> None:
        """Close idle connections now; borrowed ones close when checked in. The pool
        stays usable, as SQLAlchemy's own pools do (``engine.dispose()`` then replaces
        it with :meth:`recreate`'s)."""
        self._core.drain()
        self.logger.info("Pool disposed. %s", self.status())

    def status(self) -> str:
        s = self._core.stats()
        zones = "; ".join(
            f"{z.zone}: open {z.open}/{z.max} idle {z.idle} in use {z.in_use}"
            f"{' (ejected)' if z.state == 'ejected' else ''}" for z in s.zones.values())
        return f"ZonalPool {s.name!r} local={s.local_zone} waiting={s.waiting} | {zones}"

    # QueuePool's introspection, which dashboards and tests call.
    def size(self) -> int:
        return self._core.config.pool_size

    def checkedin(self) -> int:
        return self._core.stats().idle

    def checkedout(self) -> int:
        return self._core.stats().in_use

    def overflow(self) -> int:
        return 0

    def timeout(self) -> float:
        return self._core.config.timeout

    # -- zonal's own ------------------------------------------------------------

    @property
    def core(self) -> CorePool:
        """The zoned pool underneath."""
        return self._core

    @property
    def config(self) -> ZonalConfig:
        """The validated configuration (frozen; its repr masks secrets)."""
        return self._core.config

    def stats(self) -> PoolStats:
        """A snapshot per zone (see :class:`zonal_core.stats.PoolStats`)."""
        return self._core.stats()

    def trim(self, min_idle: int | None = None) -> int:
        """Close idle connections down to ``min_idle`` per zone before returning
        (what the request middleware calls in serverless mode)."""
        return self._core.trim(min_idle)

    def set_health_policy(self, policy: HealthPolicy) -> None:
        """How failures eject endpoints (see :class:`zonal_core.health.HealthPolicy`)."""
        self._core.set_health_policy(policy)

    def reconfigure(self, **options: Any) -> None:
        """Adopt new options (zones, sizes...) without dropping borrowed connections."""
        self._core.reconfigure(self._core.config, **options)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.status()}>"


class ZonalAsyncPool(ZonalPool):
    """:class:`ZonalPool` for ``create_async_engine`` (psycopg async, asyncpg).

    Closing an asyncio connection needs SQLAlchemy's greenlet: from async code call
    ``await engine.pool.atrim()`` (``trim()`` works where SQLAlchemy already runs
    the pool, as in event handlers).
    """

    _is_asyncio = True
    _core_class = _GreenletCorePool

    def trim(self, min_idle: int | None = None) -> int:
        if not in_greenlet():
            raise core_errors.ZonalError(
                "ZonalAsyncPool.trim() closes asyncio connections and must run in "
                "SQLAlchemy's greenlet: use `await engine.pool.atrim()`")
        return super().trim(min_idle)

    async def atrim(self, min_idle: int | None = None) -> int:
        """Close idle connections down to ``min_idle`` per zone, from async code."""
        n: int = await greenlet_spawn(super().trim, min_idle)
        return n

    async def adispose(self) -> None:
        """:meth:`dispose` from async code (``await engine.dispose()`` does this)."""
        await greenlet_spawn(self.dispose)


def _unsplit_userinfo(cparams: dict[str, Any]) -> bool:
    """An '@' left in a key or value other than the user and password: the URL's
    userinfo was not percent-encoded, and the parser split it in the wrong place."""
    return any("@" in str(k) or (isinstance(v, str) and "@" in v)
               for k, v in cparams.items() if k not in ("user", "password")
               and not (k == "host" and isinstance(v, str) and v.startswith("/")))


def _build(options: dict[str, Any], *, recycle: float | None, max_overflow: int | None,
           use_lifo: bool | None, cparams: dict[str, Any] | None) -> ZonalConfig:
    if recycle is not None and recycle != -1:
        if "max_lifetime" in options and options["max_lifetime"] != recycle:
            raise ZonalConfigError("pool_recycle", "pool_recycle and max_lifetime disagree",
                                   fix="pass only one of them")
        options["max_lifetime"] = recycle
    if max_overflow is not None and max_overflow != 0:
        raise ZonalConfigError(
            "max_overflow", "zonal has no overflow: pool_size is the most open connections "
            "per zone, max_total across zones", fix="drop max_overflow; set pool_size/max_total")
    if use_lifo is False:
        raise ZonalConfigError("pool_use_lifo", "zonal always hands out the most recently "
                               "used connection (LIFO) so the others age out",
                               fix="drop pool_use_lifo")
    url_host = zconnect.url_endpoint(cparams) if cparams else None
    socket = bool(url_host and url_host.startswith("/"))  # '@' is fine in a path
    if (url_host and "@" in url_host and not socket) or _unsplit_userinfo(cparams or {}):
        # "user:pa@ss@host": the URL parser split the password at its '@'; what it
        # calls the host is the password's tail. Never echo it.
        raise ZonalConfigError(
            "url", "the URL's password holds an unencoded '@' (or ':' or '/'), so the "
            "URL cannot be split into user, password and host",
            fix="percent-encode the password: urllib.parse.quote_plus(password), or "
                "sqlalchemy.URL.create(..., password=password)")
    has_topology = bool(options.get("zones") or options.get("topology")
                        or os.environ.get(ENV_TOPOLOGY) or os.environ.get(ENV_TOPOLOGY_FILE))
    if url_host and has_topology:
        raise ZonalConfigError(
            # (the host is not echoed: with an unencoded password it can be the
            # password's tail)
            "zones", "the URL names a host and zones are given too (percent-encode a "
            "password holding '@', '?' or '/')",
            fix="drop ?host= (and ?port=) from the URL: postgresql+psycopg://user:password@/dbname"
            if socket else "drop the host from the URL: postgresql+psycopg://user:password@/dbname")
    if url_host and not has_topology:
        if "," in url_host:
            raise ZonalConfigError("zones", "a multi-host URL is not a topology",
                                   fix="give each host its zone: zones={'a': 'h1:5432', ...}")
        options["zones"] = {"default": url_host}
    return build_config(options)
