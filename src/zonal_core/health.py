"""Endpoint health as ejection, after Envoy's outlier detection.

Consecutive failures eject an endpoint; the ejection lasts ``base x times ejected``
(with jitter, capped). When it ends, one half-open probe may connect: success puts
the endpoint on probation, failure ejects it again for longer. An endpoint leaves
probation (and traffic fails back to it) only through a successful connect at least
``failback_after`` seconds after the probe, with no failure in between.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from zonal_core.clock import Jitter
from zonal_core.topology import Endpoint

__all__ = ["EndpointHealth", "HealthPolicy", "HealthState", "hedge_delay"]

#: connect latencies kept per endpoint for the automatic hedge delay
RECENT_CONNECTS = 20
#: the automatic hedge delay is at least this long (seconds) ...
HEDGE_FLOOR = 0.25
#: ... and this many times the slowest of the endpoint's recent connects
HEDGE_FACTOR = 4.0


class HealthState(enum.Enum):
    """Where an endpoint stands."""

    HEALTHY = "healthy"
    PROBATION = "probation"  # a probe succeeded; waiting out failback_after
    EJECTED = "ejected"


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """How failures eject an endpoint. Defaults are documented constants.

    >>> HealthPolicy().ejection_time(times_ejected=3, factor=1.0)
    15.0
    """

    #: consecutive failures (connect errors, ping or query timeouts) that eject
    consecutive_failures: int = 2
    #: seconds of the first ejection; the n-th lasts n times as long
    base_ejection: float = 5.0
    #: no ejection lasts longer than this
    max_ejection: float = 60.0
    #: ejection times are stretched by a random factor in [1, 1 + jitter]
    jitter: float = 0.2
    #: weight of the newest sample in the connect-latency average
    latency_alpha: float = 0.3

    def ejection_time(self, times_ejected: int, factor: float) -> float:
        """Seconds the ``times_ejected``-th ejection lasts, for a jitter ``factor``."""
        return min(self.base_ejection * max(1, times_ejected) * factor, self.max_ejection)


class EndpointHealth:
    """Mutable health record of one endpoint; the pool's lock guards it."""

    __slots__ = (
        "consecutive_failures",
        "ejected_at",
        "ejected_until",
        "endpoint",
        "healthy_since",
        "latency",
        "probation_since",
        "probe_in_flight",
        "recent",
        "state",
        "times_ejected",
    )

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.state = HealthState.HEALTHY
        self.consecutive_failures = 0
        self.times_ejected = 0
        self.ejected_at = 0.0
        self.ejected_until = 0.0
        self.probation_since = 0.0
        self.healthy_since = float("-inf")
        self.probe_in_flight = False
        self.latency: float | None = None
        #: the last connect latencies, for the hedge delay
        self.recent: deque[float] = deque(maxlen=RECENT_CONNECTS)

    # -- questions -------------------------------------------------------------

    def can_probe(self, now: float) -> bool:
        """An ejection that has run out allows one half-open connect at a time."""
        return (
            self.state is HealthState.EJECTED
            and now >= self.ejected_until
            and not self.probe_in_flight
        )

    def can_confirm(self, now: float, failback_after: float) -> bool:
        """On probation long enough that one more good connect ends it."""
        return (
            self.state is HealthState.PROBATION
            and now >= self.probation_since + failback_after
            and not self.probe_in_flight
        )

    # -- events ----------------------------------------------------------------

    def record_success(self, now: float, latency: float | None, policy: HealthPolicy,
                       failback_after: float) -> bool:
        """A connect succeeded. Returns True when the state changed."""
        self.probe_in_flight = False
        self.consecutive_failures = 0
        if latency is not None:
            self.recent.append(latency)
            a = policy.latency_alpha
            self.latency = latency if self.latency is None else a * latency + (1 - a) * self.latency
        if self.state is HealthState.EJECTED:
            self.state = HealthState.PROBATION
            self.probation_since = now
            return True
        if self.state is HealthState.PROBATION and now >= self.probation_since + failback_after:
            self.state = HealthState.HEALTHY
            self.healthy_since = now
            return True
        return False

    def record_failure(self, now: float, policy: HealthPolicy, jitter: Jitter, *,
                       may_eject: bool = True) -> bool:
        """A connect failed or a ping/query timed out. Returns True when ejected now.

        ``may_eject=False`` (this endpoint is the pool's last capacity) counts the
        failure without ejecting: ejection orders the route, it never empties it.
        """
        self.probe_in_flight = False
        self.consecutive_failures += 1
        if not may_eject:
            return False
        if self.state is HealthState.HEALTHY:
            if self.consecutive_failures < policy.consecutive_failures:
                return False
            # A long healthy stretch forgives earlier ejections (Envoy decrements
            # its multiplier likewise), so a zone that failed last week is not
            # ejected for the maximum on its first bad minute.
            if now - self.healthy_since >= policy.max_ejection:
                self.times_ejected = 0
        self._eject(now, policy, jitter)
        return True

    def _eject(self, now: float, policy: HealthPolicy, jitter: Jitter) -> None:
        self.times_ejected += 1
        self.state = HealthState.EJECTED
        self.ejected_at = now
        factor = jitter.uniform(1.0, 1.0 + policy.jitter)
        self.ejected_until = now + policy.ejection_time(self.times_ejected, factor)

    def describe(self, now: float) -> str:
        """Short state for error messages and tables."""
        if self.state is HealthState.EJECTED:
            left = self.ejected_until - now
            when = f"for {left:.1f}s more" if left > 0 else "probe due"
            return f"ejected {when} ({self.times_ejected}x)"
        if self.state is HealthState.PROBATION:
            return f"probation since {now - self.probation_since:.1f}s"
        if self.consecutive_failures:
            return f"healthy, {self.consecutive_failures} failure(s) in a row"
        return "healthy"


def hedge_delay(health: EndpointHealth | None, connect_timeout: float,
                configured: float | None) -> float:
    """Seconds a connect to this endpoint may take before a hedge starts; 0: never.

    ``configured`` (the ``hedge_after`` option) wins when set. Automatic: 4 x the
    slowest of the endpoint's last 20 connects, at least 0.25 s, at most half of
    ``connect_timeout``; half of ``connect_timeout`` until a connect was measured.

    >>> h = EndpointHealth.__new__(EndpointHealth); h.recent = deque([0.01, 0.02])
    >>> hedge_delay(h, 5.0, None), hedge_delay(None, 5.0, None), hedge_delay(h, 5.0, 0.0)
    (0.25, 2.5, 0.0)
    """
    if configured is not None:
        return configured
    ceiling = connect_timeout / 2
    if health is None or not health.recent:
        return ceiling
    return min(max(HEDGE_FLOOR, HEDGE_FACTOR * max(health.recent)), ceiling)
