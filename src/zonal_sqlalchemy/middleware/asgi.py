"""The ASGI middleware (Starlette, FastAPI...): see :mod:`zonal_sqlalchemy.middleware`
for what it guarantees."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
)
from sqlalchemy.util import greenlet_spawn

from zonal_sqlalchemy.middleware.scope import (
    STATE_KEY,
    STATE_SESSION_KEY,
    ASGIApp,
    ASGIMessage,
    ASGIReceive,
    ASGIScope,
    ASGISend,
    NoRequestScope,
    ScopeKind,
    T,
    _check_trim,
    _connection_engine,
    _current,
    _Handle,
    _log_cleanup_error,
    _pools_to_trim,
    _RequestOptions,
    _sessions_of,
    commit_below_400,
)

__all__ = ["AsyncRequestDB", "ZonalASGIMiddleware", "current_async_connection",
           "current_async_session"]


def _current_async_db() -> AsyncRequestDB:
    db = _current.get(None)
    if isinstance(db, AsyncRequestDB):
        return db
    if db is None:
        raise NoRequestScope("no request scope here: wrap the ASGI app in ZonalASGIMiddleware")
    raise NoRequestScope("this is a WSGI request: use current_session() or current_connection()")


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


class AsyncRequestDB(_Handle[AsyncSession, AsyncConnection, AsyncEngine]):
    """The database handle of one ASGI request (``scope["state"]["zonal"]``)."""

    __slots__ = ("_lock",)

    def __init__(self, scope: ScopeKind, engine: AsyncEngine | None,
                 factory: Callable[[], AsyncSession]) -> None:
        super().__init__(scope, engine, factory)
        self._lock = asyncio.Lock()

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
        for what, closer in self._closers():
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


