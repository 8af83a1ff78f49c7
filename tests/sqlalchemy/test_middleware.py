"""ZonalWSGIMiddleware (Flask) and ZonalASGIMiddleware (Starlette, FastAPI) against
real PostgreSQL zones: commit or rollback by outcome, lazy opening, release on every
path (errors, streaming, disconnects, cancellation), trimming in serverless mode."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import httpx
import psycopg
import pytest
from flask import Flask, abort, redirect, send_file
from flask import request as flask_request
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import sessionmaker
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, RedirectResponse, StreamingResponse
from starlette.routing import Route
from werkzeug.test import EnvironBuilder
from werkzeug.wsgi import FileWrapper

from tests.conftest import SETTLE, eventually
from tests.sqlalchemy.conftest import url_of
from zonal_core import ZonalConfigError
from zonal_core.stats import PoolStats
from zonal_lab.pytest_plugin import require_module
from zonal_sqlalchemy import ZonalAsyncPool, ZonalPool
from zonal_sqlalchemy.middleware import (
    NoRequestScope,
    ZonalASGIMiddleware,
    ZonalWSGIMiddleware,
    current_async_connection,
    current_async_session,
    current_connection,
    current_session,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TABLE = "zonal_mw_items"
# unique but deferred: a duplicate passes the INSERT and fails at COMMIT
DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id serial PRIMARY KEY,
    name text NOT NULL,
    CONSTRAINT {TABLE}_name_key UNIQUE (name) DEFERRABLE INITIALLY DEFERRED
)"""
INSERT = text(f"INSERT INTO {TABLE} (name) VALUES (:name)")


class DB:
    """The lab side of a test: the table, committed rows, server connections."""

    def __init__(self, lab: Any) -> None:
        self.lab = lab
        self.app_name = f"mw-{uuid.uuid4().hex[:10]}"
        with psycopg.connect(lab["a"].url(), autocommit=True) as conn:
            conn.execute(DDL)
            conn.execute(f"TRUNCATE {TABLE}")

    def names(self) -> set[str]:
        with psycopg.connect(self.lab["a"].url(), autocommit=True) as conn:
            return {r[0] for r in conn.execute(f"SELECT name FROM {TABLE}")}

    def server_connections(self) -> int:
        return int(self.lab["a"].server_connections(application_name=self.app_name))

    def engine_options(self, **options: Any) -> dict[str, Any]:
        options.setdefault("zones", self.lab.zones())
        options.setdefault("local_zone", "a")
        options.setdefault("connect_timeout", 2)
        options.setdefault("connect_args", {"application_name": self.app_name})
        return options


@pytest.fixture
def db(zonal_lab: Any) -> DB:
    return DB(zonal_lab(zones=["a", "b"]))


@pytest.fixture
def make_engine(db: DB) -> Iterator[Callable[..., Engine]]:
    engines: list[Engine] = []

    def make(**options: Any) -> Engine:
        engine = create_engine(url_of(db.lab), poolclass=ZonalPool, **db.engine_options(**options))
        engines.append(engine)
        return engine

    yield make
    for e in engines:
        e.dispose()


def stats(engine: Engine | AsyncEngine) -> PoolStats:
    pool = engine.pool
    assert isinstance(pool, ZonalPool)
    return pool.stats()


def warm(engine: Engine, n: int) -> None:
    """Leave ``n`` idle connections in the pool."""
    conns = [engine.connect() for _ in range(n)]
    for c in conns:
        c.execute(text("SELECT 1"))
    for c in conns:
        c.close()
    assert stats(engine).idle == n


# -- Flask (WSGI) -----------------------------------------------------------------


def flask_app(engine_or_maker: Any, **options: Any) -> Flask:
    app = Flask(__name__)
    app.testing = True  # exceptions propagate out of Flask (through the middleware)
    app.wsgi_app = ZonalWSGIMiddleware(app.wsgi_app, engine_or_maker, **options)  # type: ignore[method-assign]

    def add(name: str) -> None:
        current_session().execute(INSERT, {"name": name})

    @app.post("/add/<name>")
    def add_ok(name: str) -> str:
        add(name)
        return "ok"

    @app.post("/raise/<name>")
    def add_raise(name: str) -> str:
        add(name)
        raise RuntimeError("boom")

    @app.post("/500/<name>")
    def add_500(name: str) -> tuple[str, int]:
        add(name)
        return "failed", 500

    @app.post("/404/<name>")
    def add_404(name: str) -> str:
        add(name)
        abort(404)

    @app.post("/redirect/<name>")
    def add_redirect(name: str) -> Any:
        add(name)
        return redirect("/")

    @app.post("/dup/<name>")
    def add_dup(name: str) -> str:
        add(name)
        add(name)  # deferred: fails only at commit
        return "ok"

    @app.post("/file/<name>")
    def file(name: str) -> Any:
        add(name)
        return send_file(io.BytesIO(b"file data"), mimetype="text/plain")

    @app.get("/nodb")
    def nodb() -> str:
        return "no database"

    @app.get("/same")
    def same() -> dict[str, bool]:
        return {"same": flask_request.environ["zonal.session"] is current_session()}

    @app.post("/stream-db/<name>")
    def stream_db(name: str) -> Any:
        add(name)

        def body() -> Iterator[str]:
            for i in range(3):
                add(f"{name}-{i}")  # the body's own work
                yield f"{i}\n"

        return app.response_class(body())

    @app.get("/stream-idle")
    def stream_idle() -> Any:
        current_session().execute(text("SELECT 1"))
        return app.response_class(f"{i}\n" for i in range(3))

    @app.post("/c/add/<name>")
    def conn_add(name: str) -> str:
        current_connection().execute(INSERT, {"name": name})
        return "ok"

    @app.post("/c/500/<name>")
    def conn_500(name: str) -> tuple[str, int]:
        current_connection().execute(INSERT, {"name": name})
        return "failed", 500

    return app


def test_flask_commits_on_success_and_rolls_back_on_failure(db: DB, make_engine: Any) -> None:
    engine = make_engine()
    client = flask_app(engine).test_client()
    assert client.post("/add/ok", buffered=True).status_code == 200
    assert stats(engine).in_use == 0
    with pytest.raises(RuntimeError, match="boom"):
        client.post("/raise/raised", buffered=True)
    assert stats(engine).in_use == 0
    for path, status in (("/500/five", 500), ("/404/four", 404), ("/redirect/moved", 302)):
        assert client.post(path, buffered=True).status_code == status
        assert stats(engine).in_use == 0
    assert db.names() == {"ok", "moved"}


def test_flask_commit_failure_is_an_error_not_a_200(db: DB, make_engine: Any) -> None:
    engine = make_engine()
    client = flask_app(engine).test_client()
    with pytest.raises(IntegrityError):
        client.post("/dup/twice", buffered=True)
    assert stats(engine).in_use == 0
    assert db.names() == set()
    assert client.post("/add/after", buffered=True).status_code == 200  # the pool is fine
    assert db.names() == {"after"}


def test_flask_request_without_database_takes_no_connection(db: DB, make_engine: Any) -> None:
    engine = make_engine()
    client = flask_app(engine).test_client()
    assert client.get("/nodb", buffered=True).status_code == 200
    st = stats(engine)
    assert (st.open, st.zones["a"].checkouts) == (0, 0)
    assert client.get("/same", buffered=True).json == {"same": True}
    assert stats(engine).zones["a"].checkouts == 0  # a Session alone takes nothing


def test_flask_serverless_trims_after_the_response(db: DB, make_engine: Any) -> None:
    engine = make_engine(serverless=True, min_idle=1)
    client = flask_app(engine).test_client()
    warm(engine, 3)
    assert db.server_connections() == 3
    assert client.post("/add/x", buffered=True).status_code == 200
    st = stats(engine)
    assert (st.in_use, st.idle) == (0, 1)
    assert eventually(db.server_connections, 1) == 1
    with pytest.raises(RuntimeError):  # the failure path trims too
        client.post("/raise/y", buffered=True)
    assert stats(engine).idle == 1


def test_flask_serverless_min_idle_0_leaves_nothing_open(db: DB, make_engine: Any) -> None:
    engine = make_engine(serverless=True)
    client = flask_app(engine).test_client()
    assert client.post("/add/x", buffered=True).status_code == 200
    assert stats(engine).open == 0
    assert eventually(db.server_connections, 0) == 0


def test_flask_without_serverless_keeps_idle_connections(db: DB, make_engine: Any) -> None:
    engine = make_engine()
    client = flask_app(engine).test_client()
    warm(engine, 3)
    assert client.post("/add/x", buffered=True).status_code == 200
    assert stats(engine).idle == 3
    assert db.server_connections() == 3


def test_flask_streaming_body_holds_a_connection_only_while_it_queries(
    db: DB, make_engine: Any
) -> None:
    engine = make_engine()
    client = flask_app(engine).test_client()
    # the handler queried, the body does not: nothing is held while the client reads
    resp = client.get("/stream-idle", buffered=False)
    assert stats(engine).in_use == 0
    assert b"".join(resp.response) == b"0\n1\n2\n"  # type: ignore[arg-type]
    resp.close()
    assert stats(engine).in_use == 0

    # the body queries: handler work committed before the status went out; the
    # body's work committed once the body was produced in full
    resp = client.post("/stream-db/full", buffered=False)  # (werkzeug pulls chunk 0)
    assert db.names() == {"full"}
    assert stats(engine).in_use == 1  # the body's own transaction
    assert b"".join(resp.response) == b"0\n1\n2\n"  # type: ignore[arg-type]
    resp.close()
    assert stats(engine).in_use == 0
    assert db.names() == {"full", "full-0", "full-1", "full-2"}


def test_flask_streaming_body_closed_early_rolls_back_and_releases(
    db: DB, make_engine: Any
) -> None:
    engine = make_engine()
    client = flask_app(engine).test_client()
    resp = client.post("/stream-db/early", buffered=False)
    chunks = iter(resp.response)
    assert next(chunks) == b"0\n"
    assert stats(engine).in_use == 1  # the body's transaction
    resp.close()  # the client went away
    assert stats(engine).in_use == 0
    assert db.names() == {"early"}


def test_flask_file_response_keeps_the_servers_file_wrapper(db: DB, make_engine: Any) -> None:
    engine = make_engine(serverless=True)
    app = flask_app(engine)
    environ = EnvironBuilder(path="/file/sent", method="POST").get_environ()
    environ["wsgi.file_wrapper"] = FileWrapper  # what gunicorn gives, for sendfile()
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(status)
        return None

    body = app.wsgi_app(environ, start_response)
    assert isinstance(body, FileWrapper)  # not wrapped: the server may still sendfile()
    assert statuses == ["200 OK"]
    assert (stats(engine).in_use, stats(engine).open) == (0, 0)  # released and trimmed
    assert b"".join(body) == b"file data"
    body.close()
    assert db.names() == {"sent"}


def test_flask_sessionmaker_and_connection_scope(db: DB, make_engine: Any) -> None:
    engine = make_engine()
    client = flask_app(sessionmaker(engine)).test_client()
    assert client.post("/add/maker", buffered=True).status_code == 200
    client = flask_app(engine, scope="connection").test_client()
    assert client.get("/nodb", buffered=True).status_code == 200
    assert stats(engine).zones["a"].checkouts == 1  # only the first request's
    assert client.post("/c/add/conn", buffered=True).status_code == 200
    assert client.post("/c/500/conn-failed", buffered=True).status_code == 500
    assert stats(engine).in_use == 0
    assert db.names() == {"maker", "conn"}


def test_custom_commit_rule(db: DB, make_engine: Any) -> None:
    engine = make_engine()
    client = flask_app(engine, commit_when=lambda status: status < 500).test_client()
    assert client.post("/404/kept", buffered=True).status_code == 404
    assert client.post("/500/dropped", buffered=True).status_code == 500
    assert db.names() == {"kept"}


def test_configuration_errors(make_engine: Any) -> None:
    plain = create_engine("postgresql+psycopg://u:p@localhost/db")
    with pytest.raises(ZonalConfigError, match="trim"):
        ZonalWSGIMiddleware(Flask(__name__).wsgi_app, plain, trim=True)
    with pytest.raises(ZonalConfigError, match="scope"):
        ZonalWSGIMiddleware(Flask(__name__).wsgi_app, make_engine(), scope="cursor")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ZonalASGIMiddleware"):
        ZonalWSGIMiddleware(Flask(__name__).wsgi_app, create_async_engine(  # type: ignore[arg-type]
            "postgresql+psycopg://u:p@localhost/db"))
    with pytest.raises(NoRequestScope):
        current_session()
    ZonalWSGIMiddleware(Flask(__name__).wsgi_app, plain)  # a QueuePool works, untrimmed
    plain.dispose()


# -- Starlette / FastAPI (ASGI) --------------------------------------------------------


def async_engine(db: DB, **options: Any) -> AsyncEngine:
    return create_async_engine(url_of(db.lab), poolclass=ZonalAsyncPool,
                               **db.engine_options(**options))


def in_use(engine: AsyncEngine) -> int:
    return stats(engine).in_use


def starlette_app(engine: Any, gate: asyncio.Queue[None] | None = None,
                  **options: Any) -> Starlette:
    async def add(name: str) -> None:
        await current_async_session().execute(INSERT, {"name": name})

    async def add_ok(request: Request) -> PlainTextResponse:
        await request.state.zonal_session.execute(INSERT, {"name": request.path_params["n"]})
        return PlainTextResponse("ok")

    async def add_raise(request: Request) -> PlainTextResponse:
        await add(request.path_params["n"])
        raise RuntimeError("boom")

    async def add_500(request: Request) -> PlainTextResponse:
        await add(request.path_params["n"])
        return PlainTextResponse("failed", status_code=500)

    async def add_404(request: Request) -> PlainTextResponse:
        await add(request.path_params["n"])
        raise HTTPException(404)

    async def add_redirect(request: Request) -> RedirectResponse:
        await add(request.path_params["n"])
        return RedirectResponse("/", status_code=303)

    async def add_dup(request: Request) -> PlainTextResponse:
        await add(request.path_params["n"])
        await add(request.path_params["n"])
        return PlainTextResponse("ok")

    async def add_background(request: Request) -> PlainTextResponse:
        name = request.path_params["n"]
        await add(name)
        return PlainTextResponse("ok", background=BackgroundTask(add, f"{name}-bg"))

    async def nodb(request: Request) -> PlainTextResponse:
        return PlainTextResponse("no database")

    async def same(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request.state.zonal_session is current_async_session()))

    async def sleep(request: Request) -> PlainTextResponse:
        await current_async_session().execute(text("SELECT pg_sleep(5)"))
        return PlainTextResponse("slept")

    async def stream_db(request: Request) -> StreamingResponse:
        name = request.path_params["n"]
        await add(name)

        async def body() -> AsyncIterator[str]:
            for i in range(3):
                await add(f"{name}-{i}")
                yield f"{i}\n"
                assert gate is not None
                await gate.get()  # the test lets the body go on, chunk by chunk

        return StreamingResponse(body())

    async def stream_idle(request: Request) -> StreamingResponse:
        await current_async_session().execute(text("SELECT 1"))

        async def body() -> AsyncIterator[str]:
            for i in range(3):
                yield f"{i}\n"
                assert gate is not None
                await gate.get()

        return StreamingResponse(body())

    async def conn_add(request: Request) -> PlainTextResponse:
        conn = await current_async_connection()
        await conn.execute(INSERT, {"name": request.path_params["n"]})
        return PlainTextResponse("ok", status_code=int(request.query_params.get("status", 200)))

    app = Starlette(routes=[
        Route("/add/{n}", add_ok, methods=["POST"]),
        Route("/raise/{n}", add_raise, methods=["POST"]),
        Route("/500/{n}", add_500, methods=["POST"]),
        Route("/404/{n}", add_404, methods=["POST"]),
        Route("/redirect/{n}", add_redirect, methods=["POST"]),
        Route("/dup/{n}", add_dup, methods=["POST"]),
        Route("/bg/{n}", add_background, methods=["POST"]),
        Route("/nodb", nodb),
        Route("/same", same),
        Route("/sleep", sleep),
        Route("/stream-db/{n}", stream_db, methods=["POST"]),
        Route("/stream-idle", stream_idle),
        Route("/c/add/{n}", conn_add, methods=["POST"]),
    ])
    app.add_middleware(ZonalASGIMiddleware, engine, **options)
    return app


def client_of(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


class Call:
    """One request driven by hand, so a test can stop in the middle of a streaming
    body, disconnect the client, or cancel the request."""

    def __init__(self, app: Any, path: str, method: str = "GET", spec: str = "2.3") -> None:
        self.messages: list[dict[str, Any]] = []
        self.disconnected = asyncio.Event()
        self._requested = False
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": spec},
            "http_version": "1.1", "method": method, "scheme": "http", "path": path,
            "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"test")], "client": ("127.0.0.1", 5000),
            "server": ("test", 80),
        }
        self.task = asyncio.ensure_future(app(scope, self._receive, self._send))

    async def _receive(self) -> dict[str, Any]:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if self.disconnected.is_set():
            raise OSError("client disconnected")  # what servers do for spec >= 2.4
        self.messages.append(message)

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages
                        if m["type"] == "http.response.body")

    async def until(self, predicate: Callable[[], bool], within: float = SETTLE) -> None:
        deadline = time.monotonic() + within
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.01)


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 20))


def test_starlette_commits_on_success_and_rolls_back_on_failure(db: DB) -> None:
    async def main() -> None:
        engine = async_engine(db)
        async with client_of(starlette_app(engine)) as client:
            for path, status in (("/add/ok", 200), ("/raise/raised", 500), ("/500/five", 500),
                                 ("/404/four", 404), ("/redirect/moved", 303)):
                assert (await client.post(path)).status_code == status
                assert in_use(engine) == 0
        await engine.dispose()

    run(main)
    assert db.names() == {"ok", "moved"}


def test_starlette_commit_failure_is_a_500(db: DB) -> None:
    async def main() -> None:
        engine = async_engine(db)
        async with client_of(starlette_app(engine)) as client:
            assert (await client.post("/dup/twice")).status_code == 500
            assert in_use(engine) == 0
            assert (await client.post("/add/after")).status_code == 200
        await engine.dispose()

    run(main)
    assert db.names() == {"after"}


def test_starlette_lazy_state_and_background_tasks(db: DB) -> None:
    async def main() -> None:
        engine = async_engine(db)
        async with client_of(starlette_app(engine)) as client:
            assert (await client.get("/nodb")).status_code == 200
            assert (await client.get("/same")).text == "True"
            assert stats(engine).zones["a"].checkouts == 0
            assert (await client.post("/bg/job")).status_code == 200
            assert in_use(engine) == 0
        await engine.dispose()

    run(main)
    assert db.names() == {"job", "job-bg"}


def test_starlette_serverless_trims_after_the_response(db: DB) -> None:
    async def main() -> None:
        engine = async_engine(db, serverless=True, min_idle=1)
        conns = [await engine.connect() for _ in range(3)]
        for c in conns:
            await c.execute(text("SELECT 1"))
        for c in conns:
            await c.close()
        assert db.server_connections() == 3
        async with client_of(starlette_app(engine)) as client:
            assert (await client.post("/add/x")).status_code == 200
            st = stats(engine)
            assert (st.in_use, st.idle) == (0, 1)
            assert eventually(db.server_connections, 1) == 1
            assert (await client.post("/raise/y")).status_code == 500
            assert stats(engine).idle == 1
        await engine.dispose()

    run(main)


def test_starlette_streaming_body_holds_no_connection_while_waiting(db: DB) -> None:
    async def main() -> None:
        engine = async_engine(db)
        gate: asyncio.Queue[None] = asyncio.Queue()
        app = starlette_app(engine, gate)
        call = Call(app, "/stream-idle")
        await call.until(lambda: call.body() == b"0\n")
        assert in_use(engine) == 0  # the handler's query is over; the client is slow
        for _ in range(3):
            gate.put_nowait(None)
        await asyncio.wait_for(call.task, 5)
        assert call.body() == b"0\n1\n2\n"

        call = Call(app, "/stream-db/full", "POST")
        await call.until(lambda: call.body() == b"0\n")
        assert in_use(engine) == 1  # the body's own transaction
        for _ in range(3):
            gate.put_nowait(None)
        await asyncio.wait_for(call.task, 5)
        assert in_use(engine) == 0
        await engine.dispose()

    run(main)
    assert db.names() == {"full", "full-0", "full-1", "full-2"}


@pytest.mark.parametrize("spec", ["2.3", "2.4"])
def test_starlette_client_disconnect_mid_stream_rolls_back_and_releases(
    db: DB, spec: str
) -> None:
    # spec 2.3: Starlette cancels the body (anyio task group) on http.disconnect;
    # spec 2.4: the server's send() raises OSError
    async def main() -> None:
        engine = async_engine(db)
        gate: asyncio.Queue[None] = asyncio.Queue()
        call = Call(starlette_app(engine, gate), "/stream-db/gone", "POST", spec=spec)
        await call.until(lambda: call.body() == b"0\n")
        assert in_use(engine) == 1
        call.disconnected.set()
        if spec == "2.3":
            # Starlette cancels the body while it waits, and returns normally
            await asyncio.wait_for(call.task, 5)
        else:
            gate.put_nowait(None)  # the body goes on (a second insert); its send fails
            with pytest.raises(ClientDisconnect):
                await asyncio.wait_for(call.task, 5)
        assert in_use(engine) == 0
        await engine.dispose()

    run(main)
    assert db.names() == {"gone"}  # the handler's part was committed with its 200


def test_cancelled_request_releases_its_connection(db: DB) -> None:
    async def main() -> None:
        engine = async_engine(db)
        app = starlette_app(engine)
        # asyncio: the server cancels the request's task once
        call = Call(app, "/sleep")
        await call.until(lambda: in_use(engine) == 1)
        await asyncio.sleep(0.1)  # inside pg_sleep
        call.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(call.task, 5)
        assert in_use(engine) == 0
        # anyio: a cancel scope cancels again at every await (level-triggered)
        with anyio.move_on_after(0.3) as scope:
            await Call(app, "/sleep").task
        assert scope.cancelled_caught
        assert in_use(engine) == 0
        # asyncio.timeout needs the cancellation to come out as it went in
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await Call(app, "/sleep").task
        assert in_use(engine) == 0
        assert stats(engine).zones["a"].state == "healthy"
        async with client_of(app) as client:
            assert (await client.post("/add/after")).status_code == 200
        await engine.dispose()

    began = time.monotonic()
    run(main)
    assert time.monotonic() - began < 4  # no wait for pg_sleep(5)
    assert db.names() == {"after"}


def test_asgi_sessionmaker_and_connection_scope(db: DB) -> None:
    async def main() -> None:
        engine = async_engine(db)
        async with client_of(starlette_app(async_sessionmaker(engine))) as client:
            assert (await client.post("/add/maker")).status_code == 200
        async with client_of(starlette_app(engine, scope="connection")) as client:
            assert (await client.post("/c/add/conn")).status_code == 200
            assert (await client.post("/c/add/conn-failed?status=500")).status_code == 500
        assert in_use(engine) == 0
        with pytest.raises(TypeError, match="AsyncEngine"):
            ZonalASGIMiddleware(starlette_app(engine), create_engine(  # type: ignore[arg-type]
                "postgresql+psycopg://u:p@localhost/db"))
        await engine.dispose()

    run(main)
    assert db.names() == {"maker", "conn"}


def test_fastapi(db: DB) -> None:
    fastapi = require_module("fastapi")
    async def get_db() -> AsyncSession:
        return current_async_session()

    # (a default, not Annotated: a local alias does not resolve under __future__ annotations)
    session_dep = fastapi.Depends(get_db)

    async def main() -> None:
        engine = async_engine(db, serverless=True)
        app = fastapi.FastAPI()
        app.add_middleware(ZonalASGIMiddleware, engine)

        @app.post("/items/{name}")  # type: ignore[untyped-decorator]
        async def create(name: str, status: int = 200,
                         session: AsyncSession = session_dep) -> dict[str, str]:
            await session.execute(INSERT, {"name": name})
            if status == 409:
                raise fastapi.HTTPException(409, "conflict")
            if status == 500:
                raise RuntimeError("boom")
            return {"name": name}

        @app.get("/state")  # type: ignore[untyped-decorator]
        async def state(request: Request, session: AsyncSession = session_dep) -> dict[str, bool]:
            return {"same": request.state.zonal_session is session}

        async with client_of(app) as client:
            assert (await client.post("/items/ok")).json() == {"name": "ok"}
            assert (await client.post("/items/taken?status=409")).status_code == 409
            assert (await client.post("/items/broken?status=500")).status_code == 500
            assert (await client.get("/state")).json() == {"same": True}
            st = stats(engine)
            assert (st.in_use, st.open) == (0, 0)  # serverless: trimmed to 0
        await engine.dispose()

    run(main)
    assert db.names() == {"ok"}
    assert eventually(db.server_connections, 0) == 0
