"""What the sync and the async pool share: construction, classification, stats."""

from __future__ import annotations

import atexit
import contextlib
import logging
import traceback
import weakref
from collections.abc import Mapping
from typing import Any

from zonal_core.backoff import Backoff
from zonal_core.clock import Clock, Jitter, SystemClock
from zonal_core.config import ZonalConfig, build_config
from zonal_core.errors import QueryTimeout
from zonal_core.health import HealthPolicy
from zonal_core.pgerrors import is_disconnect
from zonal_core.state import PooledConnection, PoolState, Waiter
from zonal_core.stats import PoolStats
from zonal_core.topology import Endpoint

__all__ = ["PoolBase"]

log = logging.getLogger("zonal.pool")

_LIVE_POOLS: weakref.WeakSet[PoolBase] = weakref.WeakSet()


class PoolBase:
    """Configuration, state and the decisions that need no I/O."""

    _state: PoolState

    def __init__(self, config: ZonalConfig | Mapping[str, Any] | None = None, *,
                 clock: Clock | None = None, jitter: Jitter | None = None,
                 health: HealthPolicy | None = None, backoff: Backoff | None = None,
                 **options: Any) -> None:
        if isinstance(config, ZonalConfig):
            if options:
                config = config.replace(**options)
        else:
            config = build_config(config, **options)
        self.clock: Clock = clock or SystemClock()
        # Connects may race (hedging) only under a clock that runs by itself.
        self._concurrent = bool(getattr(self.clock, "concurrent", True))
        self.backoff = backoff or Backoff()
        self._now = self.clock.now  # (read on every checkout and checkin)
        self._state = PoolState(config, jitter=jitter, health=health, now=self.clock.now(),
                                clock=self._now)
        _LIVE_POOLS.add(self)

    # -- read-only views ------------------------------------------------------

    @property
    def config(self) -> ZonalConfig:
        """The validated configuration (frozen; its repr masks secrets)."""
        return self._state.config

    @property
    def name(self) -> str:
        return self._state.config.name

    @property
    def closed(self) -> bool:
        return self._state.closed

    def stats(self) -> PoolStats:
        """A snapshot per zone: open, idle, in use, waiting, max, counters, histograms."""
        with self._state.lock:
            return self._state.snapshot(self.clock.now(), _clock_source(self.clock))

    @property
    def health_policy(self) -> HealthPolicy:
        """How failures eject endpoints (see :class:`zonal_core.health.HealthPolicy`)."""
        return self._state.health

    def set_health_policy(self, policy: HealthPolicy) -> None:
        """Replace how failures eject endpoints: consecutive failures, first and
        longest ejection, jitter. Applies to the next failure; e.g. a demo that must
        show a whole outage in seconds uses ``HealthPolicy(base_ejection=1.5)``."""
        with self._state.lock:
            self._state.health = policy

    def _secrets(self) -> list[str]:
        return [ep.password for ep in self.config.topology.endpoints if ep.password]

    def __repr__(self) -> str:
        s = self._state
        return (f"<{type(self).__name__} {self.name!r} zones={list(s.zones)} "
                f"local={self.config.local_zone!r} open={s.total} in_use={s.lent_total}"
                f"{' closed' if s.closed else ''}>")

    # -- leak detection -------------------------------------------------------

    def _stamp(self, rec: PooledConnection) -> PooledConnection:
        """Keep where ``rec`` was checked out, when leaks are watched."""
        if self._state.config.leak_threshold is not None:
            rec.stack = traceback.format_stack(limit=30)[:-2]
        return rec

    def _report_leaks(self) -> None:
        """Log, once each, what the last operations found borrowed too long."""
        state = self._state
        if not state.leaks:
            return
        found = state.leaks  # read first, then replace: an append in between is kept
        state.leaks = []
        for rec, held in found:
            where = "".join(rec.stack or ["(stack not kept)\n"])
            log.warning("pool %r: connection #%d of zone %s borrowed for %.1f s "
                        "(leak_threshold=%g s); checked out at:\n%s", self.name, rec.id,
                        rec.zone, held, self.config.leak_threshold or 0, where)

    # -- decisions shared by both runners ------------------------------------

    def _line_up(self, waiter: Waiter) -> list[PooledConnection] | None:
        """A checkout that found no idle connection, when others wait: behind them
        in one locked step (see ``PoolState.line_up``); what to close. None: take the
        checkout flow."""
        state = self._state
        if not state.waiters:
            return None  # (read unlocked, a hint)
        with state.lock:
            waiter.since = now = self._now()
            return state.line_up(now, waiter)

    def _leave_plan(self, waiter: Waiter) -> list[PooledConnection]:
        """Under the lock: ``waiter`` leaves the line (cancelled, interrupted); what
        was handed to it meanwhile goes back. What to close outside the lock."""
        with self._state.lock:
            return self._state.leave(waiter, self._now())

    def _checkin_plan(self, rec: PooledConnection, discard: str | None
                      ) -> list[PooledConnection]:
        """Under the lock: check ``rec`` in (or discard it); what to close outside it."""
        state = self._state
        with state.lock:
            return state.release(rec, self._now(), discard)

    def _invalidate_zone_plan(self, zone: str) -> list[PooledConnection]:
        with self._state.lock:
            return self._state.invalidate_zone(zone, self.clock.now())

    def _trim_plan(self, min_idle: int | None) -> list[PooledConnection]:
        with self._state.lock:
            return self._state.trim(self.clock.now(), min_idle)

    def _drain_plan(self) -> list[PooledConnection]:
        with self._state.lock:
            return self._state.drain(self.clock.now())

    def _close_plan(self) -> list[PooledConnection]:
        with self._state.lock:
            return self._state.close(self.clock.now())

    def _endpoint_failed_plan(self, target: PooledConnection | Endpoint
                              ) -> list[PooledConnection]:
        ep = target.endpoint if isinstance(target, PooledConnection) else target
        with self._state.lock:
            return self._state.endpoint_failed(ep, self.clock.now())

    def _reconfigure_plan(self, config: ZonalConfig | Mapping[str, Any] | None,
                          options: Mapping[str, Any]) -> list[PooledConnection]:
        if not isinstance(config, ZonalConfig):
            config = build_config(config, **options)
        elif options:
            config = config.replace(**options)
        with self._state.lock:
            return self._state.reconfigure(config, self.clock.now())

    def _invalidate_plan(self, rec: PooledConnection, exc: BaseException | None
                         ) -> list[PooledConnection]:
        with self._state.lock:
            return self._discard_plan(rec, exc)

    def _discard_plan(self, rec: PooledConnection, exc: BaseException | None
                      ) -> list[PooledConnection]:
        """Under the lock: what a failure on ``rec`` means beyond discarding it.

        A query timeout counts against the endpoint (a black-holed server); a
        disconnect makes the zone's older connections suspect (the server may have
        restarted). Neither touches the other zones.
        """
        now = self.clock.now()
        out: list[PooledConnection] = []
        if isinstance(exc, QueryTimeout):
            out.extend(self._state.endpoint_failed(rec.endpoint, now))
        elif exc is not None and is_disconnect(exc):
            out.extend(self._state.invalidate_zone(rec.zone, now))
        out.extend(self._state.release(rec, now, discard="invalidated"))
        return out


def _clock_source(clock: Clock) -> str:
    return getattr(clock, "source", type(clock).__name__)


def live_pools() -> list[PoolBase]:
    """Every pool of this process not yet garbage-collected."""
    return list(_LIVE_POOLS)


@atexit.register
def _close_idle_at_exit() -> None:  # pragma: no cover - runs at interpreter exit
    # Idle connections are closed so the server sees them go at once; borrowed ones
    # belong to code that is still unwinding.
    for pool in live_pools():
        closer = getattr(pool, "_close_idle_sync", None)
        if closer is not None:
            with contextlib.suppress(Exception):  # exit must not fail on a dead zone
                closer()
