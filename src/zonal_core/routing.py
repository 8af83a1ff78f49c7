"""Route order: which zone a checkout tries first, second, ...

The local zone first, then the others by ``priority``, then by measured connect
latency. Ejected zones drop out; a zone whose ejection ran out (or whose probation
is over) gets one probe connect when it ranks above the first healthy zone; zones on
probation serve only when no zone is healthy.

Ejection orders the route; it never empties it. When every endpoint is ejected the
pool is in *panic* (Envoy's panic threshold, PgCat's unban-all): every zone is in the
route again, those whose ejection ran out first, then the least recently ejected,
and checkouts connect to them as to healthy ones.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from zonal_core.health import EndpointHealth, HealthState
from zonal_core.topology import Zone

__all__ = ["ROUTE_REFRESH", "RouteEntry", "RouteMode", "rank_zones"]

#: seconds a route order is kept before measured latencies may reorder it
ROUTE_REFRESH = 1.0


class RouteMode(enum.Enum):
    """How a checkout may use a zone of the route."""

    NORMAL = "normal"  # healthy: idle connections, or a new one if there is room
    FALLBACK = "fallback"  # on probation, used because no zone is healthy
    PROBE = "probe"  # one half-open connect to see whether it is back
    PANIC = "panic"  # every endpoint ejected: all of them are tried again


@dataclass(frozen=True, slots=True)
class RouteEntry:
    zone: Zone
    mode: RouteMode

    @property
    def serves(self) -> bool:
        """Whether checkouts use (and wait for) this zone's connections."""
        return self.mode is not RouteMode.PROBE


def _latency(healths: Sequence[EndpointHealth]) -> float:
    known = [h.latency for h in healths if h.latency is not None
             and h.state is HealthState.HEALTHY]
    return min(known) if known else float("inf")


def rank_zones(zones: Sequence[tuple[Zone, Sequence[EndpointHealth]]], *, local_zone: str,
               now: float, failback_after: float) -> tuple[list[RouteEntry], float]:
    """The route order now, and the time until which it holds.

    >>> from zonal_core.topology import Topology
    >>> t = Topology.parse({"a": "h1:5432", "b": "h2:5432"})
    >>> route, _ = rank_zones([(z, [EndpointHealth(e) for e in z.endpoints])
    ...                        for z in t.zones], local_zone="b", now=0, failback_after=30)
    >>> [(e.zone.name, e.mode.value) for e in route]
    [('b', 'normal'), ('a', 'normal')]
    """
    ranked = sorted(
        enumerate(zones),
        key=lambda iz: (iz[1][0].name != local_zone, iz[1][0].priority,
                        _latency(iz[1][1]), iz[0]),
    )
    route: list[RouteEntry] = []
    fallback: list[RouteEntry] = []
    valid_until = now + ROUTE_REFRESH
    have_healthy = False
    for _, (zone, healths) in ranked:
        states = {h.state for h in healths}
        for h in healths:
            if h.state is HealthState.EJECTED and h.ejected_until > now:
                valid_until = min(valid_until, h.ejected_until)
            elif h.state is HealthState.PROBATION and h.probation_since + failback_after > now:
                valid_until = min(valid_until, h.probation_since + failback_after)
        if HealthState.HEALTHY in states:
            route.append(RouteEntry(zone, RouteMode.NORMAL))
            have_healthy = True
            continue
        probe_due = any(
            (h.state is HealthState.EJECTED and now >= h.ejected_until)
            or (h.state is HealthState.PROBATION and now >= h.probation_since + failback_after)
            for h in healths
        )
        if probe_due and not have_healthy:
            route.append(RouteEntry(zone, RouteMode.PROBE))
        if HealthState.PROBATION in states:
            fallback.append(RouteEntry(zone, RouteMode.FALLBACK))
    if not have_healthy:
        if not fallback:
            # Panic: nothing healthy or on probation. Every zone serves again (no
            # single-flight probe), ejection over first, then the oldest ejection.
            return [RouteEntry(zone, RouteMode.PANIC) for zone in panic_order(zones, now)], \
                valid_until
        route.extend(fallback)
    return route, valid_until


def panic_order(zones: Sequence[tuple[Zone, Sequence[EndpointHealth]]], now: float
                ) -> list[Zone]:
    """Zones by their best endpoint: ejection over first, then least recently ejected."""
    def key(iz: tuple[int, tuple[Zone, Sequence[EndpointHealth]]]) -> tuple[float, ...]:
        i, (_, healths) = iz
        best = min((panic_key(h, now) for h in healths), default=(1.0, float("inf")))
        return (*best, float(i))

    return [zone for _, (zone, _) in sorted(enumerate(zones), key=key)]


def panic_key(h: EndpointHealth, now: float) -> tuple[float, float]:
    """Sort key of an endpoint in panic: ejection over first, then ejected longest ago."""
    return (0.0 if now >= h.ejected_until else 1.0, h.ejected_at)
