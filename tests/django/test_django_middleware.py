"""ZonalRequestMiddleware under Django's test client, sync and async."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.db import connection
from django.test import AsyncClient, Client

pytestmark = [pytest.mark.integration, pytest.mark.pgbouncer]


@pytest.mark.django_db(transaction=True)
def test_sync_request_returns_its_connection_and_serverless_trims() -> None:
    pool = connection.zonal_pool
    response = Client().get("/items")
    assert response.status_code == 200 and response.json()["count"] == 1
    assert connection.connection is None
    stats = pool.stats()
    assert stats.in_use == 0 and stats.idle == 0  # serverless: trimmed to min_idle (0)
    assert stats.zones["a"].checkouts >= 1


@pytest.mark.django_db(transaction=True)
def test_async_request_returns_its_connection() -> None:
    pool = connection.zonal_pool
    before = pool.stats().zones["a"].checkouts

    async def go() -> Any:
        return await AsyncClient().get("/aping")

    response = asyncio.run(go())
    assert response.status_code == 200 and response.json()["count"] == 0
    stats = pool.stats()
    assert stats.zones["a"].checkouts > before
    assert stats.in_use == 0 and stats.idle == 0


@pytest.mark.django_db
def test_a_connection_inside_an_atomic_block_that_outlives_the_request_is_kept() -> None:
    response = Client().get("/ping")
    assert response.status_code == 200
    assert connection.in_atomic_block and connection.connection is not None
    assert connection.zonal_pool.stats().in_use == 1


@pytest.mark.django_db(transaction=True)
def test_streaming_response_returns_connection_when_closed() -> None:
    pool = connection.zonal_pool
    response = Client().get("/stream")
    body = b"".join(response.streaming_content)
    assert body.count(b"port") == 3
    response.close()
    assert pool.stats().in_use == 0 and connection.connection is None


@pytest.mark.django_db(transaction=True)
def test_session_state_statement_is_refused_in_a_view() -> None:
    response = Client().get("/set-timeout")
    assert response.status_code == 400
    assert "SET LOCAL statement_timeout" in response.json()["refused"]
    assert connection.zonal_pool.stats().in_use == 0
