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

from zonal_sqlalchemy.middleware.asgi import (
    AsyncRequestDB,
    ZonalASGIMiddleware,
    current_async_connection,
    current_async_session,
)
from zonal_sqlalchemy.middleware.scope import (
    ENVIRON_KEY,
    ENVIRON_SESSION_KEY,
    STATE_KEY,
    STATE_SESSION_KEY,
    NoRequestScope,
    commit_below_400,
)
from zonal_sqlalchemy.middleware.wsgi import (
    RequestDB,
    ZonalWSGIMiddleware,
    current_connection,
    current_session,
)

__all__ = [
    "ENVIRON_KEY",
    "ENVIRON_SESSION_KEY",
    "STATE_KEY",
    "STATE_SESSION_KEY",
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
