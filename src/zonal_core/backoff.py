"""Retry delays: exponential backoff with full jitter, as a small value object."""

from __future__ import annotations

from dataclasses import dataclass

from zonal_core.clock import Jitter

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Full-jitter backoff for connect attempts the server refused for now.

    Used for "server full" (SQLSTATE 53300) and "starting up" (57P03), so a deploy
    storm of new instances spreads out instead of retrying in lockstep.

    >>> b = Backoff(base=0.1, cap=1.0)
    >>> b.ceiling(attempt=1), b.ceiling(attempt=5)
    (0.1, 1.0)
    """

    #: ceiling of the first delay, seconds
    base: float = 0.05
    #: no delay is longer than this
    cap: float = 2.0

    def ceiling(self, attempt: int) -> float:
        """Largest delay of the ``attempt``-th retry (1-based)."""
        return min(self.cap, self.base * 2.0 ** max(0, attempt - 1))

    def delay(self, attempt: int, jitter: Jitter, remaining: float) -> float:
        """A delay in ``[0, ceiling]``, never past ``remaining`` seconds."""
        return max(0.0, min(jitter.uniform(0.0, self.ceiling(attempt)), remaining))
