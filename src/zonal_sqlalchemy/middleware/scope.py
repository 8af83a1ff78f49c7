"""What the WSGI and the ASGI middleware share: the request scope (a context
variable), the ``current_*`` accessors' errors, options and engine helpers, and the
request handle's lazy session."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from functools import partial
from typing import Any, Generic, Literal, TypeVar

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from zonal_core.errors import ZonalConfigError, ZonalError
from zonal_core.secrets import mask
from zonal_sqlalchemy.pool import ZonalPool

log = logging.getLogger("zonal.middleware")

T = TypeVar("T")
S = TypeVar("S")
C = TypeVar("C")
H = TypeVar("H")  # the engine of a request handle
E = TypeVar("E", Engine, AsyncEngine)
ScopeKind = Literal["session", "connection"]

# ASGI, typed as loosely as the spec (no dependency on starlette's types).
ASGIScope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
ASGIReceive = Callable[[], Awaitable[ASGIMessage]]
ASGISend = Callable[[ASGIMessage], Awaitable[None]]
ASGIApp = Callable[[ASGIScope, ASGIReceive, ASGISend], Awaitable[None]]

#: Keys under which the handle is published.
ENVIRON_KEY = "zonal"
ENVIRON_SESSION_KEY = "zonal.session"
STATE_KEY = "zonal"
STATE_SESSION_KEY = "zonal_session"


class NoRequestScope(ZonalError, LookupError):
    """``current_session()`` and friends were called outside a request that a zonal
    middleware handles (or from the other kind: WSGI vs. ASGI)."""


def commit_below_400(status: int) -> bool:
    """The default ``commit_when``: 1xx-3xx commit, 4xx and 5xx roll back."""
    return status < 400


# The handle of the request being served (a RequestDB or an AsyncRequestDB).
_current: contextvars.ContextVar[Any] = contextvars.ContextVar("zonal_request_db")


def _wrong_scope(scope: ScopeKind) -> NoRequestScope:
    return NoRequestScope(
        "this middleware was set up with scope='connection': use connection(), "
        "or scope='session' for a Session" if scope == "connection" else
        "this middleware was set up with scope='session'")


def _log_cleanup_error(what: str, exc: BaseException) -> None:
    # Only the type and a masked message: driver exceptions can carry the password.
    log.warning("zonal middleware: %s failed: %s: %s", what, type(exc).__name__,
                mask(str(exc)))


class _RequestOptions:
    """What both middlewares are configured with."""

    def __init__(self, scope: ScopeKind, commit_when: Callable[[int], bool],
                 trim: bool | None) -> None:
        self.scope = _check_scope(scope)
        self.commit_when = commit_when
        self.trim = trim


class _Handle(Generic[S, C, H]):
    """What the WSGI and the ASGI request handles share: a lazily made session, or
    a lazily opened connection, of one request (the I/O differs: sync or async)."""

    __slots__ = ("_conn", "_engine", "_factory", "_session", "scope")

    def __init__(self, scope: ScopeKind, engine: H | None, factory: Callable[[], S]) -> None:
        self.scope = scope
        self._engine: H | None = engine
        self._factory = factory
        self._session: S | None = None
        self._conn: C | None = None

    @property
    def session(self) -> S:
        """The request's session (made on first access; no connection until used)."""
        if self.scope != "session":
            raise _wrong_scope(self.scope)
        if self._session is None:
            self._session = self._factory()
        return self._session

    def _closers(self) -> list[tuple[str, Any]]:
        """What :meth:`close` closes, and how it names each in a log line."""
        conn, self._conn = self._conn, None
        return [(what, c) for what, c in (("closing the session", self._session),
                                          ("closing the connection", conn)) if c is not None]


def _check_scope(scope: str) -> ScopeKind:
    if scope == "session":
        return "session"
    if scope == "connection":
        return "connection"
    raise ZonalConfigError("scope", f"unknown scope {scope!r}",
                           fix="scope='session' or scope='connection'")


def _sessions_of(bind: Any, engine_type: type[E], maker_type: type[Any],
                 session_type: Callable[..., Any], who: str
                 ) -> tuple[Callable[[], Any], list[E]]:
    """A request session factory and the engines behind it, from an engine (sessions
    that keep their attributes after commit) or from the user's sessionmaker."""
    if isinstance(bind, engine_type):
        factory: Callable[[], Any] = partial(session_type, bind=bind, expire_on_commit=False)
        return factory, [bind]
    if isinstance(bind, maker_type):
        return bind, _bound_engines(bind.kw, engine_type)
    raise TypeError(f"{who} needs an {engine_type.__name__} or an {maker_type.__name__}, "
                    f"not {type(bind).__name__}")


def _bound_engines(kw: MutableMapping[str, Any], kind: type[E]) -> list[E]:
    """The engines a sessionmaker's sessions use (``bind=`` and ``binds=``)."""
    found: list[E] = []
    for bind in [kw.get("bind"), *(kw.get("binds") or {}).values()]:
        # a Connection gives its engine (an AsyncEngine's .engine is the sync one)
        engine = bind if isinstance(bind, kind) else getattr(bind, "engine", None)
        if isinstance(engine, kind) and engine not in found:
            found.append(engine)
    if not found:
        raise ZonalConfigError("engine_or_sessionmaker", "the sessionmaker is bound to no "
                               f"{kind.__name__}", fix="sessionmaker(bind=engine)")
    return found


def _connection_engine(scope: ScopeKind, engines: list[E]) -> E | None:
    if scope == "session":
        return None
    if len(engines) != 1:
        raise ZonalConfigError("scope", "scope='connection' needs exactly one engine",
                               fix="pass the engine itself")
    return engines[0]


def _check_trim(trim: bool | None, pools: list[Any]) -> None:
    if trim and not all(isinstance(p, ZonalPool) for p in pools):
        raise ZonalConfigError("trim", "trimming needs zonal's pool",
                               fix="create_engine(..., poolclass=ZonalPool) or "
                                   "create_async_engine(..., poolclass=ZonalAsyncPool)")


def _pools_to_trim(trim: bool | None, engines: Iterable[Engine | AsyncEngine]) -> list[ZonalPool]:
    # engine.pool is read now: engine.dispose() replaces it
    if trim is False:
        return []
    pools = []
    for engine in engines:
        pool = engine.pool
        if isinstance(pool, ZonalPool) and (trim or pool.config.serverless):
            pools.append(pool)
    return pools
