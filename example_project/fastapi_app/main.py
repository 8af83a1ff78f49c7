"""A FastAPI app on zonal: an async SQLAlchemy engine with ``ZonalAsyncPool``,
one session per request (``ZonalASGIMiddleware``) and Prometheus metrics.

Configuration comes from the environment, as in production:

- ``DATABASE_URL``: ``postgresql://user:password@/dbname``, with no host: the hosts
  come from the topology;
- ``ZONAL_TOPOLOGY_FILE``: the zones and pool options (``../topology.toml``);
- ``ZONAL_LOCAL_ZONE`` (optional): the zone this instance runs in.

Run it with ``python example_project/run.py fastapi`` (three local zones and this
app), or against your own servers with ``uvicorn main:app`` from this folder.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from zonal_core.metrics.prometheus import ZonalCollector
from zonal_sqlalchemy import ZonalAsyncPool
from zonal_sqlalchemy.middleware import ZonalASGIMiddleware, current_async_session

url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
# zones, local_zone, pool_size, timeouts...: all from ZONAL_TOPOLOGY_FILE
engine = create_async_engine(url, poolclass=ZonalAsyncPool)
pool = engine.sync_engine.pool

registry = CollectorRegistry()
ZonalCollector(pool, registry=registry)  # read at scrape time, nothing on the hot path



@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await engine.dispose()  # close the pool's connections inside the event loop


app = FastAPI(title="zonal example (FastAPI)", lifespan=lifespan)
app.add_middleware(ZonalASGIMiddleware, engine)  # commit on 2xx/3xx, always release
DB = Annotated[AsyncSession, Depends(current_async_session)]


@app.get("/")
async def index() -> dict[str, Any]:
    return {"app": "zonal example (FastAPI)",
            "urls": ["/items", "POST /items?name=x", "/zone", "/pool", "/metrics"]}


@app.get("/items")
async def list_items(db: DB) -> list[dict[str, Any]]:
    rows = await db.execute(text(
        "SELECT id, name, created_at FROM items ORDER BY id DESC LIMIT 20"))
    return [{"id": r.id, "name": r.name, "created_at": r.created_at.isoformat()}
            for r in rows]


@app.post("/items", status_code=201)
async def add_item(name: str, db: DB) -> dict[str, Any]:
    row = await db.execute(text("INSERT INTO items (name) VALUES (:name) RETURNING id"),
                           {"name": name})
    return {"id": row.scalar_one(), "name": name}  # committed by the middleware (201)


@app.get("/zone")
async def zone(db: DB) -> dict[str, Any]:
    """Which server answered, and where new connections go now."""
    port = (await db.execute(text("SELECT inet_server_port()"))).scalar_one()
    stats = pool.stats()  # type: ignore[attr-defined]
    return {"server_port": port, "local_zone": stats.local_zone,
            "preferred_zone": stats.preferred_zone}


@app.get("/pool")
async def pool_stats() -> dict[str, Any]:
    stats = pool.stats()  # type: ignore[attr-defined]
    return {"preferred_zone": stats.preferred_zone, "version": stats.version,
            "zones": {name: {"state": z.state, "open": z.open, "idle": z.idle,
                             "in_use": z.in_use, "waiting": z.waiting,
                             "failovers": z.failovers}
                      for name, z in stats.zones.items()}}


@app.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
