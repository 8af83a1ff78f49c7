"""Opening one connection to one endpoint, for SQLAlchemy engines.

The pool never sees the URL's connect arguments: ``create_engine`` keeps them in the
``connect()`` function it passes as the pool's creator, and runs the dialect's
``do_connect`` listeners with them for every new connection. zonal listens there:
the pool names the endpoint (per thread, just before the connection record
connects), and the listener opens that endpoint with the URL's arguments plus
zonal's (host and port, the zone's own parameters, PgBouncer-safe driver settings,
bounded timeouts).
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, MutableMapping
from typing import Any, Literal

from sqlalchemy import event
from sqlalchemy.util import await_only

from zonal_core.config import ZonalConfig
from zonal_core.credentials import resolve, resolve_async
from zonal_core.drivers import connect_kwargs
from zonal_core.errors import ZonalConfigError
from zonal_core.topology import DEFAULT_PORT, Endpoint

__all__ = [
    "ConnectSpec",
    "connecting",
    "current_spec",
    "engine_connect_args",
    "install",
    "verify_session_attrs_asyncpg",
]


class ConnectSpec:
    """What opening one connection needs, handed over by the pool: which dialect's
    connections are zonal's, the configuration, the endpoint and the time left, and
    whom to tell when a statement on it times out. (No pool internals: this module
    knows the pool only through this object.)"""

    __slots__ = ("config", "dialect", "endpoint", "finish", "on_query_timeout", "opened",
                 "timeout")

    def __init__(self, dialect: Any, config: ZonalConfig, endpoint: Endpoint, timeout: float,
                 on_query_timeout: Callable[[Endpoint], None]) -> None:
        self.dialect = dialect
        self.config = config
        self.endpoint = endpoint
        self.timeout = timeout
        self.on_query_timeout = on_query_timeout
        #: the driver returned a connection (set by the pool's creator wrapper)
        self.opened = False
        #: what the pool's creator wrapper does with a connection SQLAlchemy opened
        #: (bounds, role check), when zonal did not open it itself
        self.finish: Callable[[Any], Any] | None = None


_local = threading.local()


def current_spec() -> ConnectSpec | None:
    """The endpoint this thread is opening a connection to, if any."""
    t: ConnectSpec | None = getattr(_local, "target", None)
    return t


class connecting:  # noqa: N801 - used as a context manager, like a function
    """Name the endpoint for the connection record created inside the block."""

    def __init__(self, spec: ConnectSpec) -> None:
        self.spec = spec

    def __enter__(self) -> ConnectSpec:
        _local.target = self.spec
        return self.spec

    def __exit__(self, *exc: object) -> None:
        # Not ``previous``: hedged connects of an asyncio engine interleave in
        # greenlets of one thread, and each reads its target before it first waits.
        _local.target = None


def engine_connect_args(creator: Callable[..., Any]) -> dict[str, Any] | None:
    """The URL's connect arguments, read from ``create_engine``'s connect function.

    None when ``creator`` is not that function (a user's own ``creator=``, or a
    pool built directly).
    """
    code = getattr(creator, "__code__", None)
    closure = getattr(creator, "__closure__", None)
    if code is None or not closure:
        return None
    cells = dict(zip(code.co_freevars, closure, strict=False))
    cell = cells.get("cparams")
    if cell is None:
        return None
    try:
        return dict(cell.cell_contents)
    except (ValueError, TypeError):  # pragma: no cover - an empty cell
        return None


def url_endpoint(cparams: MutableMapping[str, Any]) -> str | None:
    """``host:port`` of the URL, when it names a host; for a Unix-socket directory
    (``?host=/var/run/postgresql``, ``?port=`` optional) ``/directory:port``, the
    directory taken as it is (as libpq takes it) and the port always written."""
    host = cparams.get("host")
    if not host:
        return None
    if isinstance(host, list | tuple):
        host = ",".join(map(str, host))
    port = cparams.get("port")
    if isinstance(port, list | tuple):
        port = ",".join(map(str, port))
    host = str(host)
    if "," in host:
        return host  # multi-host: reported as a conflict by the caller
    if host.startswith("/"):
        return f"{host}:{port or DEFAULT_PORT}"
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port else shown


def check_connect_args(cparams: MutableMapping[str, Any], config: ZonalConfig,
                       driver: Driver) -> None:
    """Conflicts between the URL / ``connect_args`` and zonal's settings are errors."""
    ct = cparams.get("connect_timeout", cparams.get("timeout") if driver == "asyncpg" else None)
    if ct is not None:
        try:
            same = float(ct) == float(config.connect_timeout)
        except (TypeError, ValueError):
            same = False
        if not same:
            raise ZonalConfigError(
                "connect_timeout",
                f"the URL or connect_args say connect_timeout={ct!r} but zonal's is "
                f"{config.connect_timeout:g}; zonal bounds every attempt itself",
                fix=f"drop it from the URL/connect_args and pass connect_timeout={ct} "
                    "to create_engine",
            )
    if driver != "other":
        # raises ZonalConfigError for prepare_threshold conflicts and strings
        connect_kwargs(driver, pgbouncer=config.pgbouncer, user_kwargs=cparams)


Driver = Literal["psycopg", "asyncpg", "other"]


def driver_of(dialect: Any) -> Driver:
    """``psycopg``, ``asyncpg``, or ``other`` (host and port only)."""
    name = str(getattr(dialect, "driver", ""))
    if name.startswith("psycopg") and name != "psycopg2":
        return "psycopg"
    if name == "asyncpg":
        return "asyncpg"
    return "other"


def _do_connect(dialect: Any, conn_rec: Any, cargs: list[Any],
                cparams: dict[str, Any]) -> Any:
    target = current_spec()
    # (what ?plugin=zonal keeps in engine.url is not a connection parameter)
    cparams.pop("plugin", None)
    for key in [k for k in cparams if isinstance(k, str) and k.startswith("zonal_")]:
        del cparams[key]
    if target is None or target.dialect is not dialect:
        return None  # not a connection zonal is opening
    from zonal_core.drivers import reaper_server_settings
    from zonal_core.psycopg_driver import reaper_seconds, server_params

    config = target.config
    ep, timeout = target.endpoint, target.timeout
    driver = driver_of(dialect)
    for key in ("host", "hostaddr", "port", "connect_timeout"):
        cparams.pop(key, None)
    if config.password is not None:
        # asked again for every connection: rotating tokens (an endpoint's own wins)
        if dialect.is_async:
            cparams["password"] = await_only(resolve_async(config.password))
        else:
            cparams["password"] = resolve(config.password)
    cparams.update(server_params(config, ep, cparams))
    if driver != "other":
        cparams.update(connect_kwargs(driver, pgbouncer=config.pgbouncer, user_kwargs=cparams))
    on_query_timeout = target.on_query_timeout
    if driver == "psycopg":
        from zonal_core import psycopg_driver as pd

        def arm(conn: Any) -> Any:
            bounds = getattr(conn, "zonal", None)
            if bounds is not None:
                bounds.query_timeout = config.query_timeout
                bounds.on_timeout = lambda: on_query_timeout(ep)
            return conn

        if dialect.is_async:
            wanted = config.target_session_attrs

            async def creator(*args: Any, **kw: Any) -> Any:
                aconn: pd.AsyncZonalConnection = await pd.connect_async(kw, timeout)
                arm(aconn)
                if wanted != "any":
                    try:
                        await pd.verify_session_attrs_async(aconn, wanted)
                    except BaseException:
                        await aconn.close()  # non-blocking: pgconn.finish()
                        raise
                return aconn

            cparams["async_creator_fn"] = creator
            return None  # the dialect wraps it in its asyncio adapter

        def finish(conn: Any) -> Any:
            conn = arm(pd.adopt(conn))
            try:
                pd.verify_session_attrs(conn, config.target_session_attrs)
            except BaseException:
                conn.close()
                raise
            return conn

        if not _sqlalchemy_path_is_plain(dialect):
            # SQLAlchemy's own path: the do_connect listeners after this one, a
            # replaced dialect.connect, create_engine(module=...) and a patched
            # psycopg.connect all take part. psycopg bounds the attempt in whole
            # seconds, at least 2 (libpq's rule); hedging covers the rest.
            cparams["connect_timeout"] = max(2, math.ceil(timeout))
            target.finish = finish
            return None
        # Nothing would differ from psycopg.connect(**cparams) but the bound: zonal
        # connects itself, with a sub-second deadline.
        return finish(pd.connect(cparams, timeout))
    if driver == "asyncpg":
        cparams.pop("options", None)  # libpq-only; asyncpg takes server_settings
        for k in ("keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count"):
            cparams.pop(k, None)
        reapers = reaper_seconds(config)
        if reapers is not None:
            settings = dict(cparams.get("server_settings") or {})
            settings.update(reaper_server_settings(*reapers))
            cparams["server_settings"] = settings
        cparams["timeout"] = timeout
        if config.query_timeout:
            cparams["command_timeout"] = config.query_timeout
        if config.target_session_attrs != "any":
            cparams["async_creator_fn"] = _asyncpg_creator(
                cparams.get("async_creator_fn"), config.target_session_attrs, timeout)
        return None
    return None


def _sqlalchemy_path_is_plain(dialect: Any) -> bool:
    """Whether SQLAlchemy would end in a plain ``psycopg.connect(**cparams)``: no
    other ``do_connect`` listener, ``dialect.connect`` not replaced, no
    ``create_engine(module=...)``, ``psycopg.connect`` not patched (by an APM or
    OpenTelemetry instrumentation, say)."""
    import psycopg
    from sqlalchemy.engine.default import DefaultDialect

    if sum(1 for _ in dialect.dispatch.do_connect) > 1:
        return False
    if "connect" in vars(dialect) or type(dialect).connect is not DefaultDialect.connect:
        return False
    if getattr(dialect, "loaded_dbapi", None) is not psycopg:
        return False
    return bool(psycopg.connect == psycopg.Connection.connect)


def _asyncpg_creator(inner: Callable[..., Any] | None, wanted: str,
                     timeout: float) -> Callable[..., Any]:
    """An ``async_creator_fn`` for SQLAlchemy's asyncpg dialect: ``asyncpg.connect``
    (or the user's own creator), then :func:`verify_session_attrs_asyncpg`.

    The dialect calls it with the connect arguments left after its own
    (``prepared_statement_cache_size``...) and wraps the connection it returns.
    """

    async def creator(*args: Any, **kw: Any) -> Any:
        if inner is None:
            import asyncpg

            conn = await asyncpg.connect(*args, **kw)
        else:
            conn = await inner(*args, **kw)
        try:
            await verify_session_attrs_asyncpg(conn, wanted)
        except Exception:
            # a polite goodbye, bounded; then make sure the socket is gone
            with contextlib.suppress(Exception):
                await conn.close(timeout=timeout)
            if not conn.is_closed():
                conn.terminate()
            raise
        except BaseException:  # cancelled: nothing may be awaited any more
            conn.terminate()
            raise
        return conn

    return creator


async def verify_session_attrs_asyncpg(conn: Any, wanted: str) -> None:
    """asyncpg's twin of :func:`zonal_core.psycopg_driver.verify_session_attrs`.

    Raises asyncpg's ``TargetServerAttributeNotMatched`` ("server is read-only,
    target_session_attrs='read-write'") unless the server of ``conn`` is what
    ``target_session_attrs`` asks; ``wanted="any"`` costs no round trip. The
    caller closes ``conn`` when this raises.
    """
    if wanted == "any":
        return
    from zonal_core.psycopg_driver import session_attrs_mismatch

    value = await conn.fetchval("SHOW transaction_read_only")
    problem = session_attrs_mismatch(value == "on", wanted)
    if problem is not None:
        raise _asyncpg_mismatch_error()(problem)


def _asyncpg_mismatch_error() -> type[Exception]:
    import asyncpg

    exc: type[Exception] | None = getattr(
        asyncpg.exceptions, "TargetServerAttributeNotMatched", None)
    if exc is None:  # pragma: no cover - asyncpg < 0.25
        exc = asyncpg.exceptions.InternalClientError
    return exc


def install(dialect: Any) -> None:
    """Listen on ``dialect``'s ``do_connect`` once (pools come and go; it stays)."""
    if getattr(dialect, "_zonal_listening", False):
        return
    # First, so that listeners added before or after the engine see (and may
    # change) the endpoint's parameters zonal sets.
    event.listen(dialect, "do_connect", _do_connect, insert=True)
    dialect._zonal_listening = True
