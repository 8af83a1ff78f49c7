"""Real sessions: PostgreSQL itself, bypassing the transaction pooler.

The pooler is for the app; migrations, test-database creation and code that needs a
session of its own (``LISTEN``, session advisory locks, ``SET`` for a while) go to a
zone's ``direct`` endpoint::

    zones = {"a": {"endpoints": ["pgbouncer-a:6432"], "direct": "postgres-a:5432"}}

    from zonal_django import direct_connection
    with direct_connection("default") as conn:       # a Django connection of its own
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(42)")

``manage.py migrate`` (with ``zonal_django`` in ``INSTALLED_APPS``) runs inside
:func:`use_direct`, which routes the alias's own connection the same way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from zonal_core.config import ZonalConfig
from zonal_core.pgerrors import safe_description
from zonal_core.psycopg_driver import ZonalConnection, connect, server_params
from zonal_core.topology import Endpoint

__all__ = ["candidates", "connect_direct", "direct_connection", "use_direct"]


def candidates(config: ZonalConfig, *, allow_pooler: bool) -> list[Endpoint]:
    """Where a real session may go, best first: each zone's ``direct`` endpoint, the
    local zone first; without one, the zone's own endpoints when they are not a
    transaction pooler (or ``allow_pooler``)."""
    zones = sorted(enumerate(config.topology.zones),
                   key=lambda iz: (iz[1].name != config.local_zone, iz[1].priority, iz[0]))
    out: list[Endpoint] = []
    for _, zone in zones:
        if zone.direct is not None:
            out.append(zone.direct)
        elif config.pgbouncer != "transaction" or allow_pooler:
            out.extend(zone.endpoints)
    return out


def connect_direct(config: ZonalConfig, params: Mapping[str, Any], *,
                   allow_pooler: bool) -> ZonalConnection:
    """A connection of its own (never pooled) to the first endpoint of
    :func:`candidates` that answers, within the config's ``timeout`` in all.

    Statements are not bounded by ``query_timeout`` (a migration may take long).
    Raises ``psycopg.OperationalError`` naming each endpoint's failure.
    """
    import psycopg
    from django.core.exceptions import ImproperlyConfigured

    eps = candidates(config, allow_pooler=allow_pooler)
    if not eps:
        raise ImproperlyConfigured(
            f"pool {config.name!r}: no zone has a 'direct' endpoint, and its endpoints are "
            "a transaction pooler (fix: zones={'a': {'endpoints': [...], "
            "'direct': 'postgres-host:5432'}})")
    deadline = time.monotonic() + config.timeout
    failures: list[str] = []
    secrets = [p for p in (params.get("password"), *(ep.password for ep in eps)) if p]
    for ep in eps:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        kwargs = dict(params)
        kwargs.update(server_params(config, ep, kwargs))
        try:
            conn: ZonalConnection = connect(kwargs, min(config.connect_timeout, left))
        except psycopg.Error as exc:
            failures.append(f"{ep.key}: {safe_description(exc, secrets)}")
            continue
        return conn
    raise psycopg.OperationalError(
        f"pool {config.name!r}: no direct endpoint answered: " + "; ".join(failures or
                                                                           ["timeout"]))


@contextmanager
def direct_connection(using: str = "default") -> Iterator[Any]:
    """A Django connection of its own to PostgreSQL itself (``direct`` endpoint),
    closed at the end; use ``.cursor()`` on it as on ``connections[using]``."""
    from django.db import connections

    conn = connections[using].copy()
    conn.zonal_direct = True
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def use_direct(using: str = "default") -> Iterator[None]:
    """Route ``connections[using]`` (this thread's) to a direct endpoint while inside;
    what it held from the pool goes back first, the direct one is closed at the end."""
    from django.db import connections

    conn = connections[using]
    if not hasattr(conn, "zonal_direct"):
        yield  # not a zonal connection: nothing to route
        return
    before = conn.zonal_direct
    if not before and not conn.in_atomic_block:
        conn.close()
    conn.zonal_direct = True
    try:
        yield
    finally:
        if not conn.in_atomic_block:
            conn.close()
        conn.zonal_direct = before
