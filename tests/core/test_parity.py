"""The thread pool and the asyncio pool offer the same operations: parity is checked,
not hoped for."""

from __future__ import annotations

import inspect

from zonal_core.pool import ZonedPool
from zonal_core.pool_async import AsyncZonedPool
from zonal_core.pool_base import PoolBase


def _public(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_")}


def test_sync_and_async_pools_expose_the_same_operations() -> None:
    assert _public(ZonedPool) == _public(AsyncZonedPool)


def test_what_does_io_is_async_in_the_async_pool() -> None:
    shared = _public(PoolBase)
    for name in sorted(_public(ZonedPool) - shared):
        sync_attr = inspect.getattr_static(ZonedPool, name)
        async_attr = inspect.getattr_static(AsyncZonedPool, name)
        if isinstance(sync_attr, property) or name == "connection":
            continue  # properties; connection() is a context manager in both
        assert not inspect.iscoroutinefunction(sync_attr), name
        assert inspect.iscoroutinefunction(async_attr), f"AsyncZonedPool.{name} is not async"


def test_both_close_idle_connections_at_exit() -> None:
    assert callable(ZonedPool._close_idle_sync)
    assert callable(AsyncZonedPool._close_idle_sync)
