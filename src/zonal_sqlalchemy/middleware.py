"""Request scope for WSGI and ASGI apps: one Session (or Connection) per request.

The middleware gives every HTTP request a database handle that is opened lazily,
ended by the outcome of the request, always released, and — in the serverless
profile — followed by :meth:`ZonalPool.trim <zonal_sqlalchemy.ZonalPool.trim>`, so a
frozen instance holds at most ``min_idle`` connections per zone.

Flask (WSGI)::

    from flask import Flask
    from sqlalchemy import create_engine
    from zonal_sqlalchemy import ZonalPool
    from zonal_sqlalchemy.middleware import ZonalWSGIMiddleware, current_session

    engine = create_engine("postgresql+psycopg://app:secret@/appdb", poolclass=ZonalPool,
                           zones={"a": "10.0.1.5:5432", "b": "10.0.2.5:5432"},
                           serverless=True)
    app = Flask(__name__)
    app.wsgi_app = ZonalWSGIMiddleware(app.wsgi_app, engine)

    @app.post("/items")
    def add_item():
        current_session().add(Item(name=request.json["name"]))  # committed on 2xx/3xx
        return {"ok": True}                  # (or request.environ["zonal.session"])

FastAPI / Starlette (ASGI)::

    from typing import Annotated
    from fastapi import Depends, FastAPI
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
    from zonal_sqlalchemy import ZonalAsyncPool
    from zonal_sqlalchemy.middleware import ZonalASGIMiddleware, current_async_session

    aengine = create_async_engine("postgresql+psycopg://app:secret@/appdb",
                                  poolclass=ZonalAsyncPool, zones={...}, serverless=True)
    app = FastAPI()
    app.add_middleware(ZonalASGIMiddleware, aengine)

    async def get_db() -> AsyncSession:      # async: FastAPI runs plain defs in threads
        return current_async_session()       # (or request.state.zonal_session)

    DB = Annotated[AsyncSession, Depends(get_db)]

    @app.post("/items")
    async def add_item(name: str, db: DB):
        db.add(Item(name=name))              # committed on 2xx/3xx, else rolled back
        return {"ok": True}

Semantics (the same for WSGI and ASGI):

* **Lazy.** A Session takes a connection at its first statement; a request that
  never touches the database takes none. ``scope="connection"`` opens a Core
  ``Connection`` at the first :meth:`RequestDB.connection` call.
* **Commit or roll back before the status goes out.** The handler's transaction is
  ended when the response starts (WSGI: when the app returns; ASGI: at
  ``http.response.start``), *before* the status line reaches the client: committed
  when ``commit_when(status)`` is true — by default ``status < 400``, so 2xx and
  redirects (POST/redirect/GET) commit, 4xx and 5xx roll back — else rolled back. An
  exception always rolls back. A commit that fails turns into an exception, so the
  client gets a 500, never a 200 for data that was not written. An explicit
  ``session.commit()`` or ``rollback()`` in the handler stays the handler's choice.
* **Streaming bodies hold no connection while they wait on the client.** Because the
  handler's transaction ends (and its connection goes back to the pool) before the
  body is sent, a slow client holds nothing. A body generator that queries uses the
  same Session, which takes a connection again for as long as it needs one; that
  work is committed (by the same rule) once the body has been produced in full, just
  before its last chunk, and rolled back if the body fails or is abandoned (client
  disconnect, ``close()`` before the end, a cancelled task). Run streaming queries
  *inside* the generator: a result opened in the handler does not survive the end of
  the handler's transaction. Sessions the middleware makes itself use
  ``expire_on_commit=False``, so objects loaded by the handler can still be read by
  the body (pass your own ``sessionmaker`` to choose otherwise).
* **Released always**: at the end of the body (WSGI ``close()``; ASGI when the app
  returns, after background tasks, whose work is ended by the same rule), on errors,
  on disconnects and on cancellation — the ASGI cleanup runs shielded from the
  cancellation (asyncio's or an anyio cancel scope's) and re-raises it after. An ASGI
  app that returns without sending its last chunk (Starlette does when the client
  disconnects mid-stream) has its body's work rolled back.
* **Failed commits.** The handler's commit fails before the status is sent: the
  exception propagates out of the middleware, so the server (or an outer error
  middleware such as Starlette's ``ServerErrorMiddleware``) answers 500. A failed
  commit of the body's own work aborts the response before its end.
* A WSGI app that calls ``start_response`` only from inside its body iterator has
  all its work ended once the body is exhausted, since its status is unknown before.
* **Serverless**: when the engine's pool is a ``ZonalPool`` with ``serverless=True``
  (or ``trim=True``), every zone is trimmed to ``min_idle`` after the response.

Where the handle is: WSGI ``environ["zonal.session"]`` (the Session) and
``environ["zonal"]`` (the :class:`RequestDB`); ASGI ``scope["state"]["zonal_session"]``,
i.e. ``request.state.zonal_session`` in Starlette/FastAPI, and
``scope["state"]["zonal"]`` (the :class:`AsyncRequestDB`). Anywhere in the request's
context: :func:`current_session` / :func:`current_connection` (WSGI) and
:func:`current_async_session` / ``await`` :func:`current_async_connection` (ASGI).
Only HTTP requests get a scope; ASGI websocket and lifespan traffic passes through.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, MutableMapping
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.util import greenlet_spawn

from zonal_core.errors import ZonalConfigError, ZonalError
from zonal_core.secrets import mask
from zonal_sqlalchemy.pool import ZonalPool

if TYPE_CHECKING:
    from types import TracebackType
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "AsyncRequestDB",
    "NoRequestScope",
    "RequestDB",
    "ZonalASGIMiddleware",
    "ZonalWSGIMiddleware",
    "commit_below_400",
    "current_async_connection",
    "current_async_session",
    "current_connection",
    "current_session",
]

log = logging.getLogger("zonal.middleware")

T = TypeVar("T")
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


_current: contextvars.ContextVar[RequestDB | AsyncRequestDB] = contextvars.ContextVar(
    "zonal_request_db")


def _current_db() -> RequestDB:
    db = _current.get(None)
    if isinstance(db, RequestDB):
        return db
    if db is None:
        raise NoRequestScope("no request scope here: wrap the WSGI app in ZonalWSGIMiddleware")
    raise NoRequestScope("this is an ASGI request: use current_async_session() "
                         "or current_async_connection()")


def _current_async_db() -> AsyncRequestDB:
    db = _current.get(None)
    if isinstance(db, AsyncRequestDB):
        return db
    if db is None:
        raise NoRequestScope("no request scope here: wrap the ASGI app in ZonalASGIMiddleware")
    raise NoRequestScope("this is a WSGI request: use current_session() or current_connection()")


def current_session() -> Session:
    """The Session of the current WSGI request (``scope="session"``).

    >>> @app.get("/count")                       # doctest: +SKIP
    ... def count():
    ...     return {"n": current_session().scalar(select(func.count(Item.id)))}
    """
    return _current_db().session


def current_connection() -> Connection:
    """The Connection of the current WSGI request, opened on first call (with
    ``scope="session"``: the Session's connection, in its transaction)."""
    return _current_db().connection()


def current_async_session() -> AsyncSession:
    """The AsyncSession of the current ASGI request (``scope="session"``).

    As a FastAPI dependency, wrap it in an ``async def`` (FastAPI runs a plain
    function dependency in its thread pool, which works but costs a thread hop):

    >>> async def get_db() -> AsyncSession:      # doctest: +SKIP
    ...     return current_async_session()
    >>> DB = Annotated[AsyncSession, Depends(get_db)]   # doctest: +SKIP
    """
    return _current_async_db().session


async def current_async_connection() -> AsyncConnection:
    """The AsyncConnection of the current ASGI request, opened on first call."""
    return await _current_async_db().connection()


def _wrong_scope(scope: ScopeKind) -> NoRequestScope:
    return NoRequestScope(
        "this middleware was set up with scope='connection': use connection(), "
        "or scope='session' for a Session" if scope == "connection" else
        "this middleware was set up with scope='session'")


def _log_cleanup_error(what: str, exc: BaseException) -> None:
    # Only the type and a masked message: driver exceptions can carry the password.
    log.warning("zonal middleware: %s failed: %s: %s", what, type(exc).__name__,
                mask(str(exc)))


# -- sync ---------------------------------------------------------------------


class RequestDB:
    """The database handle of one WSGI request (``environ["zonal"]``).

    Nothing is opened until :attr:`session` runs a statement or
    :meth:`connection` is called.
    """

    __slots__ = ("_conn", "_engine", "_factory", "_session", "scope")

    def __init__(self, scope: ScopeKind, engine: Engine | None,
                 factory: Callable[[], Session]) -> None:
        self.scope = scope
        self._engine = engine
        self._factory = factory
        self._session: Session | None = None
        self._conn: Connection | None = None

    @property
    def session(self) -> Session:
        """The request's Session (made on first access; no connection until used)."""
        if self.scope != "session":
            raise _wrong_scope(self.scope)
        if self._session is None:
            self._session = self._factory()
        return self._session

    def connection(self) -> Connection:
        """The request's Connection, opened on first call; with ``scope="session"``
        the Session's own connection (same transaction)."""
        if self.scope == "session":
            return self.session.connection()
        if self._conn is None or self._conn.closed:
            assert self._engine is not None  # checked by the middleware
            self._conn = self._engine.connect()
        return self._conn

    def finish(self, commit: bool) -> None:
        """End the open transaction, if any: commit or roll back, and give the
        connection back. The handle stays usable (it reopens lazily)."""
        s = self._session
        if s is not None and s.in_transaction():
            if commit:
                s.commit()
            else:
                s.rollback()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                if conn.in_transaction():
                    if commit:
                        conn.commit()
                    else:
                        conn.rollback()
            finally:
                conn.close()

    def close(self) -> None:
        """Release everything (rolling back what is still open); never raises."""
        conn, self._conn = self._conn, None
        for what, closer in (("closing the session", self._session),
                             ("closing the connection", conn)):
            if closer is not None:
                try:
                    closer.close()
                except Exception as exc:
                    _log_cleanup_error(what, exc)


class _RequestOptions:
    """What both middlewares are configured with."""

    def __init__(self, scope: ScopeKind, commit_when: Callable[[int], bool],
                 trim: bool | None) -> None:
        self.scope = _check_scope(scope)
        self.commit_when = commit_when
        self.trim = trim


class ZonalWSGIMiddleware(_RequestOptions):
    """WSGI middleware: a lazily opened, request-scoped Session (or Connection),
    ended by the request's outcome and always released (see the module docs).

    ``engine_or_sessionmaker``: an ``Engine`` (Sessions get
    ``expire_on_commit=False``) or a ``sessionmaker`` bound to one.
    ``scope``: ``"session"`` (default) or ``"connection"`` (a Core Connection).
    ``commit_when(status) -> bool``: commit at a status; default
    :func:`commit_below_400`. ``trim``: trim the pool after the response; by default
    when the pool is a ``ZonalPool`` with ``serverless=True``.

    >>> app.wsgi_app = ZonalWSGIMiddleware(app.wsgi_app, engine)   # doctest: +SKIP
    """

    def __init__(
        self,
        app: WSGIApplication,
        engine_or_sessionmaker: Engine | sessionmaker[Any],
        *,
        scope: ScopeKind = "session",
        commit_when: Callable[[int], bool] = commit_below_400,
        trim: bool | None = None,
    ) -> None:
        self.app = app
        _RequestOptions.__init__(self, scope, commit_when, trim)
        bind: Any = engine_or_sessionmaker
        if isinstance(bind, (AsyncEngine, async_sessionmaker)):
            raise TypeError(f"ZonalWSGIMiddleware needs an Engine or a sessionmaker, not "
                            f"{type(bind).__name__} (use ZonalASGIMiddleware for async engines)")
        self._factory: Callable[[], Session]
        self._factory, self._engines = _sessions_of(bind, Engine, sessionmaker, Session,
                                                    "ZonalWSGIMiddleware")
        self._engine = _connection_engine(self.scope, self._engines)
        _check_trim(trim, [e.pool for e in self._engines])

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        db = RequestDB(self.scope, self._engine, self._factory)
        environ[ENVIRON_KEY] = db
        if self.scope == "session":
            environ[ENVIRON_SESSION_KEY] = db.session
        status: list[int] = []

        def start(status_line: str, headers: list[tuple[str, str]],
                  exc_info: tuple[type[BaseException], BaseException, TracebackType]
                  | tuple[None, None, None] | None = None) -> Callable[[bytes], object]:
            status[:] = [_status_code(status_line)]  # the last call wins (error pages)
            return start_response(status_line, headers, exc_info)

        body: Iterable[bytes] | None = None
        token = _current.set(db)
        try:
            body = self.app(environ, start)
            if status:  # the usual case: the handler is done and the status known
                db.finish(commit=self.commit_when(status[0]))
        except BaseException:
            try:
                if body is not None:
                    _close_iterable(body)
            finally:
                self._release(db)
            raise
        finally:
            _current.reset(token)
        file_wrapper = environ.get("wsgi.file_wrapper")
        if status and isinstance(file_wrapper, type) and isinstance(body, file_wrapper):
            # A file (send_file) runs no query: release now and hand the server its
            # own wrapper back, so it can still use sendfile().
            self._release(db)
            return body
        return _Body(self, db, body, status)

    def _release(self, db: RequestDB) -> None:
        db.close()
        for pool in _pools_to_trim(self.trim, self._engines):
            try:
                pool.trim()
            except Exception as exc:
                _log_cleanup_error("trimming the pool", exc)


class _Body:
    """The app's body, run in the request's context; ends the request's database
    work when the body is exhausted (commit) or closed early (roll back)."""

    def __init__(self, mw: ZonalWSGIMiddleware, db: RequestDB, body: Iterable[bytes],
                 status: list[int]) -> None:
        self._mw = mw
        self._db = db
        self._body = body
        self._it: Iterator[bytes] | None = None
        self._status = status
        self._closed = False

    def __iter__(self) -> _Body:
        return self

    def __next__(self) -> bytes:
        token = _current.set(self._db)
        try:
            if self._it is None:
                self._it = iter(self._body)
            try:
                return next(self._it)
            except StopIteration:
                # The whole body was produced: its own database work ends by the
                # status rule, before the server sends the end of the response (a
                # failure here aborts the response instead of completing it).
                ok = bool(self._status) and self._mw.commit_when(self._status[0])
                self._db.finish(commit=ok)
                raise
        finally:
            _current.reset(token)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        token = _current.set(self._db)
        try:
            _close_iterable(self._body)
        finally:
            _current.reset(token)
            self._mw._release(self._db)


def _close_iterable(body: Iterable[bytes]) -> None:
    close = getattr(body, "close", None)
    if close is not None:
        close()


def _status_code(status_line: str) -> int:
    try:
        return int(status_line.split(None, 1)[0])
    except (ValueError, IndexError):
        return 500  # not a status we understand: never commit on it


# -- async --------------------------------------------------------------------


class AsyncRequestDB:
    """The database handle of one ASGI request (``scope["state"]["zonal"]``)."""

    __slots__ = ("_conn", "_engine", "_factory", "_lock", "_session", "scope")

    def __init__(self, scope: ScopeKind, engine: AsyncEngine | None,
                 factory: Callable[[], AsyncSession]) -> None:
        self.scope = scope
        self._engine = engine
        self._factory = factory
        self._session: AsyncSession | None = None
        self._conn: AsyncConnection | None = None
        self._lock = asyncio.Lock()

    @property
    def session(self) -> AsyncSession:
        """The request's AsyncSession (made on first access; no connection until used)."""
        if self.scope != "session":
            raise _wrong_scope(self.scope)
        if self._session is None:
            self._session = self._factory()
        return self._session

    async def connection(self) -> AsyncConnection:
        """The request's AsyncConnection, opened on first call; with
        ``scope="session"`` the Session's own connection (same transaction)."""
        if self.scope == "session":
            return await self.session.connection()
        async with self._lock:  # two concurrent first calls open one connection
            if self._conn is None or self._conn.closed:
                assert self._engine is not None  # checked by the middleware
                self._conn = await self._engine.connect()
            return self._conn

    async def finish(self, commit: bool) -> None:
        """End the open transaction, if any: commit or roll back, and give the
        connection back. The handle stays usable (it reopens lazily)."""
        s = self._session
        if s is not None and s.in_transaction():
            if commit:
                await s.commit()
            else:
                await s.rollback()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                if conn.in_transaction():
                    if commit:
                        await conn.commit()
                    else:
                        await conn.rollback()
            finally:
                await conn.close()

    async def close(self) -> None:
        """Release everything (rolling back what is still open); never raises."""
        conn, self._conn = self._conn, None
        for what, closer in (("closing the session", self._session),
                             ("closing the connection", conn)):
            if closer is not None:
                try:
                    await closer.close()
                except Exception as exc:
                    _log_cleanup_error(what, exc)


class ZonalASGIMiddleware(_RequestOptions):
    """ASGI middleware: a lazily opened, request-scoped AsyncSession (or
    AsyncConnection), ended by the request's outcome and always released, also when
    the request is cancelled (see the module docs).

    ``engine_or_async_sessionmaker``: an ``AsyncEngine`` (sessions get
    ``expire_on_commit=False``) or an ``async_sessionmaker`` bound to one. The other
    options are :class:`ZonalWSGIMiddleware`'s.

    >>> app.add_middleware(ZonalASGIMiddleware, aengine)   # doctest: +SKIP
    """

    def __init__(
        self,
        app: ASGIApp,
        engine_or_async_sessionmaker: AsyncEngine | async_sessionmaker[Any],
        *,
        scope: ScopeKind = "session",
        commit_when: Callable[[int], bool] = commit_below_400,
        trim: bool | None = None,
    ) -> None:
        self.app = app
        _RequestOptions.__init__(self, scope, commit_when, trim)
        self._factory: Callable[[], AsyncSession]
        self._factory, self._engines = _sessions_of(
            engine_or_async_sessionmaker, AsyncEngine, async_sessionmaker, AsyncSession,
            "ZonalASGIMiddleware")
        self._engine = _connection_engine(self.scope, self._engines)
        _check_trim(trim, [e.sync_engine.pool for e in self._engines])

    async def __call__(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        db = AsyncRequestDB(self.scope, self._engine, self._factory)
        # Servers hand each request its own copy of the lifespan state (ASGI spec),
        # so writing into it is per request, and outer middleware can read it too.
        state = scope.setdefault("state", {})
        state[STATE_KEY] = db
        if self.scope == "session":
            state[STATE_SESSION_KEY] = db.session
        status: int | None = None
        complete = False  # the last chunk of the body was handed to the server

        async def send_(message: ASGIMessage) -> None:
            nonlocal status, complete
            kind = message["type"]
            if kind == "http.response.start":
                status = int(message["status"])
                # before the status leaves: a failed commit becomes a 500
                await db.finish(commit=self.commit_when(status))
            elif kind == "http.response.body" and not message.get("more_body", False):
                await db.finish(commit=status is not None and self.commit_when(status))
                complete = True
            await send(message)

        token = _current.set(db)
        try:
            await self.app(scope, receive, send_)
        except BaseException:
            await _shielded(self._release(db))
            raise
        finally:
            _current.reset(token)
        # Work after the last chunk (background tasks) ends by the same rule. An app
        # can also return without finishing its body: Starlette does when the client
        # disconnects mid-stream. Then what the body did is abandoned: rolled back.
        ok = complete and status is not None and self.commit_when(status)
        await _shielded(self._end(db, ok))

    async def _end(self, db: AsyncRequestDB, commit: bool) -> None:
        try:
            await db.finish(commit)
        finally:
            await self._release(db)

    async def _release(self, db: AsyncRequestDB) -> None:
        await db.close()
        for pool in _pools_to_trim(self.trim, self._engines):
            try:
                # closing connections of an async engine needs SQLAlchemy's greenlet
                await greenlet_spawn(pool.trim)
            except Exception as exc:
                _log_cleanup_error("trimming the pool", exc)


async def _shielded(cleanup: Coroutine[Any, Any, T]) -> T:
    """Run ``cleanup`` to its end even if this task is cancelled meanwhile (once by
    asyncio, or again and again by an anyio cancel scope); then re-raise the
    cancellation. Without this a cancelled request would leave its connection
    checked out, or in the middle of a rollback."""
    task = asyncio.ensure_future(cleanup)
    interrupted = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            interrupted = True
    if interrupted:
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what goes on
        raise asyncio.CancelledError
    return task.result()


# -- shared ---------------------------------------------------------------------


def _check_scope(scope: str) -> ScopeKind:
    if scope == "session":
        return "session"
    if scope == "connection":
        return "connection"
    raise ZonalConfigError("scope", f"unknown scope {scope!r}",
                           fix="scope='session' or scope='connection'")


E = TypeVar("E", Engine, AsyncEngine)


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
