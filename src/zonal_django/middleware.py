"""Request scope: every connection goes back to its pool when the request ends.

::

    MIDDLEWARE.insert(0, "zonal_django.middleware.ZonalRequestMiddleware")

Sync (WSGI) and async (ASGI) alike. At the end of a request each zonal connection
the request opened is returned to its pool, except one inside an atomic block that
outlives the request (a test's ``TestCase`` transaction, ``ATOMIC_REQUESTS`` is
closed by Django before this runs). A streaming response returns them when it is
closed, after its last chunk. In the serverless profile the pools are then trimmed
to ``min_idle``, so a frozen instance holds almost nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async

from zonal_django import pools

__all__ = ["ZonalRequestMiddleware", "release_connections"]

log = logging.getLogger("zonal.django")


def release_connections() -> int:
    """Return this thread's (or task's) zonal connections to their pools, except
    those in an atomic block; trim serverless pools. Returns how many went back."""
    from django.db import connections

    released = 0
    for conn in connections.all(initialized_only=True):
        if not hasattr(conn, "zonal_direct") or conn.connection is None:
            continue
        if conn.in_atomic_block:
            continue  # the block outlives the request (tests): it keeps its connection
        try:
            conn.close()
            released += 1
        except Exception:  # a dead server must not turn a response into an error
            log.debug("returning a connection of %r failed", conn.alias, exc_info=True)
    for pool in pools.all_pools().values():
        if pool.config.serverless:
            pool.trim()
    return released


class ZonalRequestMiddleware:
    """Returns the request's connections to the zonal pools at its end (sync and
    async); trims serverless pools after the response."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self.__acall__(request)
        try:
            response = self.get_response(request)
        except BaseException:
            release_connections()
            raise
        if getattr(response, "streaming", False):
            # The body runs after we return: release when the server closes it.
            response._resource_closers.append(release_connections)
        else:
            release_connections()
        return response

    async def __acall__(self, request: Any) -> Any:
        get_response: Callable[[Any], Awaitable[Any]] = self.get_response
        try:
            response = await get_response(request)
        except BaseException:
            await sync_to_async(release_connections)()
            raise
        if getattr(response, "streaming", False):
            response._resource_closers.append(release_connections)
        else:
            # Django's connections live in the thread-sensitive executor's context.
            await sync_to_async(release_connections)()
        return response
