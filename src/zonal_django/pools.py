"""The process's zonal pools, keyed by process, alias and settings.

Django's native pool is created once per alias and kept: it keeps the old database
name after the test database is created, and forked workers inherit it. Here a pool
is found by ``(pid, alias, fingerprint)``: a fork (new pid) or a change of anything
the connections depend on (NAME, USER, time zone, zonal options...) builds a new
pool, and the alias's previous pool in this process is closed (its borrowed
connections close when they come back).

Pools never call back into a ``DatabaseWrapper``: the driver is built from plain
parameters, so a pool callback cannot deadlock on the wrapper (the trap of Django's
native pool with ``assume_role``).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from zonal_core.pool import CorePool
from zonal_core.state import PooledConnection, process_id

__all__ = ["all_pools", "close_alias", "foreign", "get_pool", "lost", "pools_of"]

log = logging.getLogger("zonal.django")

_Key = tuple[int, str, str]
_lock = threading.Lock()
_pools: dict[_Key, CorePool] = {}
_current: dict[tuple[int, str], str] = {}
# Checkouts whose wrapper was garbage-collected without close(): appended by a
# weakref finalizer (which may run in any thread, even under a pool's lock, so it
# only appends) and given back to their pool on the next pool lookup.
_lost: deque[tuple[CorePool, PooledConnection]] = deque()
def foreign(rec: PooledConnection) -> bool:
    """True if ``rec`` was borrowed in another process (before a fork): its socket
    is that process's."""
    return rec.pid != process_id()


def lost(pool: CorePool, rec: PooledConnection) -> None:
    """Record a checkout whose owner vanished (lock-free: safe from a finalizer)."""
    _lost.append((pool, rec))


def _reclaim() -> None:
    while _lost:
        try:
            pool, rec = _lost.popleft()
        except IndexError:
            return
        log.warning("a Django connection of pool %r was garbage-collected without close(); "
                    "zonal_django.middleware.ZonalRequestMiddleware returns connections at "
                    "the end of each request", pool.name)
        if not foreign(rec):
            pool.invalidate(rec)  # its state is unknown: discard, never reuse
        else:
            pool.putconn(rec, reset=False)  # a parent's connection: the core orphans it


def get_pool(alias: str, fingerprint: str, factory: Callable[..., CorePool], *args: Any
             ) -> CorePool:
    """The pool of ``alias`` for these settings in this process, built by
    ``factory(*args)`` if needed."""
    if _lost:
        _reclaim()
    pid = process_id()
    key = (pid, alias, fingerprint)
    pool = _pools.get(key)
    if pool is not None and not pool.closed:
        return pool
    stale: list[CorePool] = []
    with _lock:
        pool = _pools.get(key)
        if pool is None or pool.closed:
            # Pools of another process came through fork(): the core already forgot
            # their connections in this process; drop the objects.
            for other in [k for k in _pools if k[0] != pid]:
                del _pools[other]
            old = _current.get((pid, alias))
            if old is not None and old != fingerprint:
                previous = _pools.pop((pid, alias, old), None)
                if previous is not None:
                    stale.append(previous)
            pool = factory(*args)
            _pools[key] = pool
            _current[(pid, alias)] = fingerprint
    for previous in stale:
        previous.close()
    return pool


def pools_of(alias: str) -> list[CorePool]:
    """This process's open pools of ``alias``."""
    pid = process_id()
    return [p for (kpid, a, _), p in list(_pools.items()) if kpid == pid and a == alias
            and not p.closed]


def all_pools() -> dict[str, CorePool]:
    """This process's current pool of each alias."""
    pid = process_id()
    out: dict[str, CorePool] = {}
    for (kpid, alias), fp in list(_current.items()):
        pool = _pools.get((kpid, alias, fp))
        if kpid == pid and pool is not None and not pool.closed:
            out[alias] = pool
    return out


def close_alias(alias: str) -> int:
    """Close every pool of ``alias`` in this process; returns how many."""
    pid = process_id()
    with _lock:
        doomed = [_pools.pop(k) for k in [k for k in _pools if k[0] == pid and k[1] == alias]]
        _current.pop((pid, alias), None)
    for pool in doomed:
        pool.close()
    return len(doomed)

