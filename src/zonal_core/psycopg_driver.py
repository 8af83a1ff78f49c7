"""psycopg 3: bounded connects, pings and queries, and the core pool's driver.

libpq waits forever by default, on connect and on queries: against a SIGSTOPped or
black-holed server a request hangs for good. psycopg drives every operation through
a generator that it resumes at least every ``interval`` (0.1 s) even when the socket
is silent; wrapping that generator with a deadline bounds any operation without a
thread, on psycopg 3.2 and later. :class:`ZonalConnection` does that for every
statement (``query_timeout``) and for pings; :func:`connect` does it for connects,
with sub-second precision where libpq's own ``connect_timeout`` rounds up to 2 s.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Generator, Mapping
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import waiting
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from zonal_core.config import ZonalConfig
from zonal_core.credentials import resolve
from zonal_core.drivers import connect_kwargs, keepalive_kwargs, reaper_options
from zonal_core.errors import QueryTimeout
from zonal_core.topology import Endpoint

__all__ = [
    "AsyncZonalConnection",
    "PsycopgDriver",
    "ZonalConnection",
    "adopt",
    "bounded_ping",
    "connect",
    "connect_async",
    "reaper_seconds",
    "server_params",
    "session_attrs_mismatch",
    "verify_session_attrs",
    "verify_session_attrs_async",
]

RV = TypeVar("RV")
_INTERVAL = 0.1
# Options of Connection.connect() that are not connection-string parameters.
_CONNECTION_OPTIONS = ("autocommit", "prepare_threshold", "context", "row_factory",
                       "cursor_factory")


class _NeverRaised(Exception):
    pass


# psycopg 3.3 takes a timeout for a wait (Connection.wait(timeout=...)) and raises its
# errors._WaitTimeout when it passes; 3.2 has neither: the generator is wrapped then.
_WAIT_TIMEOUT: type[Exception] = getattr(pg_errors, "_WaitTimeout", _NeverRaised)
_NATIVE_BOUND = (_WAIT_TIMEOUT is not _NeverRaised
                 and "timeout" in inspect.signature(psycopg.Connection.wait).parameters
                 and "timeout" in inspect.signature(psycopg.AsyncConnection.wait).parameters)


def _no_answer(what: str) -> QueryTimeout:
    return QueryTimeout(f"{what} got no answer from the server in time")


def _bounded(gen: Generator[Any, Any, RV], deadline: float, what: str
             ) -> Generator[Any, Any, RV]:
    """Pass ``gen`` through, raising QueryTimeout once ``deadline`` has passed."""
    try:
        wait_for = next(gen)
        while True:
            if time.monotonic() >= deadline:
                gen.close()
                raise _no_answer(what)
            ready = yield wait_for
            wait_for = gen.send(ready)
    except StopIteration as stop:
        result: RV = stop.value
        return result


class _Settles:
    """A bound of :class:`_Bounds` (kept in the slot named with a leading ``_``):
    setting it settles ``native`` again."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, bounds: _Bounds | None, owner: type | None = None) -> Any:
        return self if bounds is None else getattr(bounds, self.slot)

    def __set__(self, bounds: _Bounds, value: float | None) -> None:
        setattr(bounds, self.slot, value)
        bounds._settle()


class _Bounds:
    """What bounds a connection's waits: a per-statement timeout, or a one-shot
    deadline (a ping), and who to tell when one expires.

    ``native`` is settled whenever either changes, for a wait without arguments (a
    statement, the common case): None, nothing bounds it; a timeout for psycopg's own
    wait (psycopg 3.3, in C: relative, no clock read); or ``_GENERAL``: ask
    :func:`_bound` (a deadline is set, or psycopg 3.2)."""

    __slots__ = ("_deadline", "_query_timeout", "native", "on_timeout")
    query_timeout = _Settles()
    deadline = _Settles()

    def __init__(self) -> None:
        self._query_timeout: float | None = None
        self._deadline: float | None = None
        self.native: float | None = None
        self.on_timeout: Callable[[], None] | None = None

    def _settle(self) -> None:
        if self._deadline is not None or (self._query_timeout and not _NATIVE_BOUND):
            self.native = _GENERAL
        else:
            self.native = self._query_timeout or None


_GENERAL = -1.0
"""``_Bounds.native`` when :func:`_bound` decides (never a timeout: negative)."""


def _bound(conn: Any, gen: Any, kwargs: dict[str, Any]) -> tuple[Any, bool] | None:
    """What bounds ``conn``'s next wait: None, nothing (no bounds set, or no
    query_timeout); else what to wait on and whether psycopg's own timeout does it
    (psycopg 3.3, in C: set in ``kwargs``; its ``_WaitTimeout`` is then zonal's). Else
    (3.2, or the caller gave a timeout) ``gen`` wrapped. (A wait without arguments
    takes the answer settled in ``_Bounds.native`` instead, without a call.)"""
    try:
        bounds: _Bounds = conn._zonal
    except AttributeError:
        return None  # (no bounds set yet: nothing bounds it)
    deadline = bounds.deadline
    if deadline is None:
        left = bounds.query_timeout
        if not left:
            return None
        if _NATIVE_BOUND and kwargs.get("timeout") is None:
            kwargs["timeout"] = left  # (relative: no clock read)
            return gen, True
        deadline = time.monotonic() + left
    elif _NATIVE_BOUND and kwargs.get("timeout") is None:
        kwargs["timeout"] = max(0.0, deadline - time.monotonic())
        return gen, True
    return _bounded(gen, deadline, "the statement"), False


def _timed_out(conn: Any, exc: Exception, native: bool) -> Exception:
    """A bounded wait of ``conn`` raised ``exc``: what to raise. zonal's bound (psycopg's
    own timeout when ``native``, else the wrapped generator's QueryTimeout) means the
    statement outlived it: its state is unknown, so the connection ends and whoever
    counts timeouts against the endpoint is told. A timeout the caller gave is its own."""
    if not isinstance(exc, QueryTimeout):
        if not native:
            return exc
        exc = _no_answer("the statement")
    conn.pgconn.finish()
    on_timeout = _bounds_of(conn).on_timeout
    if on_timeout is not None:
        on_timeout()
    return exc


def _bounds_of(conn: Any) -> _Bounds:
    """The ``zonal`` bounds of a connection, created on first use."""
    try:
        bounds: _Bounds = conn._zonal
    except AttributeError:
        bounds = conn._zonal = _Bounds()
    return bounds


# Called straight, every statement: no super() lookup per wait.
_sync_wait = psycopg.Connection.wait
_async_wait = psycopg.AsyncConnection.wait


class ZonalConnection(psycopg.Connection[Any]):
    """A psycopg connection whose every wait for the server is bounded.

    A statement that waits longer than ``query_timeout`` raises
    :class:`~zonal_core.errors.QueryTimeout` (an ``OperationalError``), and the
    connection is closed: its state is unknown, it must never be reused.

    (No mixin and no slots of its own: a plain ``psycopg.Connection`` opened by
    someone else, say through SQLAlchemy's connect path, can become one in place,
    see :func:`adopt`.)
    """

    zonal = property(_bounds_of)
    _zonal: _Bounds  # (set by the first read of ``zonal``)

    def wait(self, gen: Any, interval: float | None = _INTERVAL,  # type: ignore[override]
             **kwargs: Any) -> Any:
        # (the signature spans psycopg 3.2, without ``timeout``, and 3.3, with it)
        if not kwargs:  # a statement: the bound settled beforehand, when it can be
            try:
                settled = self._zonal.native
            except AttributeError:
                settled = None  # (no bounds set yet)
            if settled is None:
                return _sync_wait(self, gen, interval or _INTERVAL)
            if settled is not _GENERAL:
                try:
                    return _sync_wait(self, gen, interval or _INTERVAL, timeout=settled)
                except _WAIT_TIMEOUT as exc:
                    error = _timed_out(self, exc, True)
                raise error
        bound = _bound(self, gen, kwargs)
        if bound is None:
            return _sync_wait(self, gen, interval or _INTERVAL, **kwargs)
        gen, native = bound
        try:
            return _sync_wait(self, gen, interval or _INTERVAL, **kwargs)
        except (_WAIT_TIMEOUT, QueryTimeout) as exc:
            error = _timed_out(self, exc, native)
        raise error


class AsyncZonalConnection(psycopg.AsyncConnection[Any]):
    """The asyncio twin of :class:`ZonalConnection`."""

    zonal = property(_bounds_of)
    _zonal: _Bounds

    async def wait(self, gen: Any, interval: float | None = _INTERVAL,  # type: ignore[override]
                   **kwargs: Any) -> Any:
        if not kwargs:
            try:
                settled = self._zonal.native
            except AttributeError:
                settled = None
            if settled is None:
                return await _async_wait(self, gen, interval or _INTERVAL)
            if settled is not _GENERAL:
                try:
                    return await _async_wait(self, gen, interval or _INTERVAL, timeout=settled)
                except _WAIT_TIMEOUT as exc:
                    error = _timed_out(self, exc, True)
                raise error
        bound = _bound(self, gen, kwargs)
        if bound is None:
            return await _async_wait(self, gen, interval or _INTERVAL, **kwargs)
        gen, native = bound
        try:
            return await _async_wait(self, gen, interval or _INTERVAL, **kwargs)
        except (_WAIT_TIMEOUT, QueryTimeout) as exc:
            error = _timed_out(self, exc, native)
        raise error


def _split(kwargs: Mapping[str, Any], timeout: float) -> tuple[str, dict[str, Any]]:
    params = {k: v for k, v in kwargs.items() if k not in _CONNECTION_OPTIONS}
    # libpq's own bound (whole seconds, at least 2) stays as a backstop.
    params["connect_timeout"] = max(2, math.ceil(timeout))
    options = {k: kwargs[k] for k in _CONNECTION_OPTIONS if k in kwargs}
    return make_conninfo("", **params), options


def _finish(conn: Any, options: Mapping[str, Any]) -> None:
    # What Connection.connect() does after connecting.
    conn._autocommit = bool(options.get("autocommit", False))
    if options.get("row_factory"):
        conn.row_factory = options["row_factory"]
    if options.get("cursor_factory"):
        conn.cursor_factory = options["cursor_factory"]
    if "context" in options and options["context"] is not None:
        from psycopg.adapt import AdaptersMap

        conn._adapters = AdaptersMap(options["context"].adapters)
    conn.prepare_threshold = options.get("prepare_threshold", 5)


def _timeout_error() -> Exception:
    return pg_errors.ConnectionTimeout("connection timeout expired")


C = TypeVar("C", bound=psycopg.Connection[Any])


def connect(kwargs: Mapping[str, Any], timeout: float,
            cls: type[C] = ZonalConnection) -> C:  # type: ignore[assignment]
    """Open a psycopg connection within ``timeout`` seconds (sub-second precise).

    ``kwargs`` are ``psycopg.connect()`` keyword arguments for one host.
    """
    conninfo, options = _split(kwargs, timeout)
    deadline = time.monotonic() + timeout
    gen = cls._connect_gen(conninfo)
    try:
        conn = waiting.wait_conn(_bounded(gen, deadline, "connect"), interval=_INTERVAL)
    except QueryTimeout:
        raise _timeout_error() from None
    _finish(conn, options)
    return conn


AC = TypeVar("AC", bound=psycopg.AsyncConnection[Any])


async def connect_async(kwargs: Mapping[str, Any], timeout: float,
                        cls: type[AC] = AsyncZonalConnection,  # type: ignore[assignment]
                        ) -> AC:
    """The asyncio twin of :func:`connect`."""
    conninfo, options = _split(kwargs, timeout)
    deadline = time.monotonic() + timeout
    gen = cls._connect_gen(conninfo)
    try:
        conn = await waiting.wait_conn_async(_bounded(gen, deadline, "connect"),
                                             interval=_INTERVAL)
    except QueryTimeout:
        raise _timeout_error() from None
    _finish(conn, options)
    return conn


def adopt(conn: Any) -> Any:
    """Make a ``psycopg.Connection`` opened elsewhere a :class:`ZonalConnection` in
    place (same object), so its statements and pings are bounded too. Anything else
    (a driver wrapper from an instrumentation, say) is returned as it is."""
    if type(conn) is psycopg.Connection:
        conn.__class__ = ZonalConnection
    elif type(conn) is psycopg.AsyncConnection:
        conn.__class__ = AsyncZonalConnection
    return conn


def bounded_ping(conn: Any, timeout: float, ping: Callable[[], Any]) -> Any:
    """Run ``ping()`` (which talks over ``conn``) within ``timeout`` seconds.

    A ping past its timeout raises ``TimeoutError`` (a black-holed server);
    any other failure propagates as it is.
    """
    bounds: _Bounds | None = getattr(conn, "zonal", None)
    if bounds is None:  # not a ZonalConnection: unbounded, as the driver does it
        return ping()
    bounds.deadline = time.monotonic() + timeout
    # The pool counts a timed-out ping against the endpoint itself: the
    # connection's own query-timeout hook must not count it a second time.
    hook, bounds.on_timeout = bounds.on_timeout, None
    try:
        return ping()
    except QueryTimeout as exc:
        raise TimeoutError(f"ping gave no answer in {timeout:g}s") from exc
    finally:
        bounds.deadline = None
        bounds.on_timeout = hook


def server_params(config: ZonalConfig, endpoint: Endpoint,
                  user_params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Connection parameters zonal adds for ``endpoint``: host, port, the zone's
    own parameters (sslmode...), and the serverless server-side reapers.

    ``user_params`` are the user's own connect arguments, which the result is
    applied over: the reapers go *before* the zone's and the user's startup
    ``options`` (a ``-c`` given later wins, so an explicit ``idle_session_timeout``
    beats the profile's), and keepalive settings the user gave are kept.

    A Unix-socket endpoint is ``host=<directory>``, ``port=<port>`` (libpq, and
    asyncpg, open ``<directory>/.s.PGSQL.<port>``); it gets no TCP keepalives, which
    libpq ignores on a socket anyway.
    """
    user = user_params or {}
    params: dict[str, Any] = {"host": endpoint.host, "port": endpoint.port}
    params.update(endpoint.params)
    if endpoint.user:
        params["user"] = endpoint.user
    if endpoint.password:
        params["password"] = endpoint.password
    reapers = reaper_seconds(config)
    if reapers is not None:
        theirs = [str(o) for o in (user.get("options"), params.get("options")) if o]
        params["options"] = " ".join([reaper_options(*reapers), *theirs])
        if not endpoint.is_socket:
            for key, value in keepalive_kwargs().items():
                if key not in user and key not in params:
                    params[key] = value
    return params


def reaper_seconds(config: ZonalConfig) -> tuple[float, float] | None:
    """``(idle_session_timeout, idle_in_transaction_session_timeout)`` to ask the
    server for, or None.

    Serverless, on direct connections only (PgBouncer rejects the startup
    ``options`` parameter; its own timeouts reap there). The server's idle timeout
    stays above ``max_idle``, so the client always discards an idle connection
    before the server kills it under it.
    """
    if not config.serverless or config.pgbouncer:
        return None
    idle = max(2 * config.max_idle, config.max_idle + 10)
    return idle, max(idle, 60.0)


class PsycopgDriver:
    """The :class:`zonal_core.driver.Driver` for psycopg 3 (used by Django and
    by the core pool directly).

    ``params`` are the ``psycopg.connect()`` keyword arguments common to every zone
    (dbname, user, password, application_name...).
    """

    def __init__(self, params: Mapping[str, Any], config: ZonalConfig, *,
                 on_query_timeout: Callable[[Endpoint], None] | None = None) -> None:
        self.base = dict(params)
        self.config = config
        self.on_query_timeout = on_query_timeout
        self.base.update(connect_kwargs("psycopg", pgbouncer=config.pgbouncer,
                                        user_kwargs=self.base))

    def params_for(self, endpoint: Endpoint) -> dict[str, Any]:
        """The full ``psycopg.connect()`` arguments for ``endpoint``."""
        params = dict(self.base)
        if self.config.password is not None:
            params["password"] = resolve(self.config.password)
        params.update(server_params(self.config, endpoint, params))  # an endpoint's own wins
        return params

    def connect(self, endpoint: Endpoint, timeout: float) -> ZonalConnection:
        conn: ZonalConnection = connect(self.params_for(endpoint), timeout)
        conn.zonal.query_timeout = self.config.query_timeout
        if self.on_query_timeout is not None:
            cb = self.on_query_timeout
            conn.zonal.on_timeout = lambda: cb(endpoint)
        try:
            verify_session_attrs(conn, self.config.target_session_attrs)
        except BaseException:
            conn.close()
            raise
        return conn

    def ping(self, conn: ZonalConnection, timeout: float) -> None:
        bounded_ping(conn, timeout, lambda: conn.execute(""))

    def reset(self, conn: ZonalConnection) -> bool:
        if conn.closed:
            return False
        status = conn.pgconn.transaction_status  # (conn.info would build an object)
        if status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            conn.rollback()
            status = conn.pgconn.transaction_status
        return bool(status == TransactionStatus.IDLE)

    def close(self, conn: ZonalConnection) -> None:
        # psycopg connections are non-blocking: closing never waits on the server.
        conn.close()


def session_attrs_mismatch(read_only: bool, wanted: str) -> str | None:
    """Why a server whose ``transaction_read_only`` is ``read_only`` does not suit
    ``target_session_attrs=wanted``, or None if it does (any driver).

    >>> session_attrs_mismatch(True, "read-write")
    "server is read-only, target_session_attrs='read-write'"
    >>> session_attrs_mismatch(False, "read-write") is None
    True
    """
    if wanted == "any" or (wanted == "read-write") != read_only:
        return None
    return (f"server is {'read-only' if read_only else 'read-write'}, "
            f"target_session_attrs={wanted!r}")


def verify_session_attrs(conn: psycopg.Connection[Any], wanted: str) -> None:
    """Raise ``OperationalError`` unless ``conn`` is ``read-write``/``read-only``
    as ``target_session_attrs`` asks (checked after connect, as libpq does).

    ``wanted="any"`` costs nothing: no round trip. The caller closes ``conn`` when
    this raises.
    """
    if wanted == "any":
        return
    with conn.cursor(row_factory=tuple_row) as cur:  # whatever the connection's factory
        row = cur.execute("SHOW transaction_read_only").fetchone()
    if conn.info.transaction_status != TransactionStatus.IDLE:
        conn.rollback()
    problem = session_attrs_mismatch(bool(row and row[0] == "on"), wanted)
    if problem is not None:
        raise psycopg.OperationalError(problem)


async def verify_session_attrs_async(conn: psycopg.AsyncConnection[Any], wanted: str) -> None:
    """The asyncio twin of :func:`verify_session_attrs` (same error, same text)."""
    if wanted == "any":
        return
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute("SHOW transaction_read_only")
        row = await cur.fetchone()
    if conn.info.transaction_status != TransactionStatus.IDLE:
        await conn.rollback()
    problem = session_attrs_mismatch(bool(row and row[0] == "on"), wanted)
    if problem is not None:
        raise psycopg.OperationalError(problem)
