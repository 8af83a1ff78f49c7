"""The WSGI middleware (Flask, Django-free WSGI apps...): see
:mod:`zonal_sqlalchemy.middleware` for what it guarantees."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from zonal_sqlalchemy.middleware.scope import (
    ENVIRON_KEY,
    ENVIRON_SESSION_KEY,
    NoRequestScope,
    ScopeKind,
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

if TYPE_CHECKING:
    from types import TracebackType
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["RequestDB", "ZonalWSGIMiddleware", "current_connection", "current_session"]


def _current_db() -> RequestDB:
    db = _current.get(None)
    if isinstance(db, RequestDB):
        return db
    if db is None:
        raise NoRequestScope("no request scope here: wrap the WSGI app in ZonalWSGIMiddleware")
    raise NoRequestScope("this is an ASGI request: use current_async_session() "
                         "or current_async_connection()")


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


class RequestDB(_Handle[Session, Connection, Engine]):
    """The database handle of one WSGI request (``environ["zonal"]``).

    Nothing is opened until :attr:`session` runs a statement or
    :meth:`connection` is called.
    """

    __slots__ = ()

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
        for what, closer in self._closers():
            try:
                closer.close()
            except Exception as exc:
                _log_cleanup_error(what, exc)


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


