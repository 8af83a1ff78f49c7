"""The measures doctor judges by and words its findings in: headroom thresholds,
the keepalive limit, the reapers zonal's serverless profile asks for, durations.

zonal's own defaults are never restated here: they are read from
:data:`zonal_core.config.DEFAULTS` and :data:`zonal_core.config.SERVERLESS_DEFAULTS`,
and the reapers from the same function the pools use.
"""

from __future__ import annotations

from functools import cache

from zonal_core.config import SERVERLESS_DEFAULTS, build_config

__all__ = [
    "HEADROOM_PROBLEM",
    "HEADROOM_WARNING",
    "KEEPALIVE_IDLE_LIMIT",
    "duration",
    "pick_max_idle",
    "serverless_reapers",
]

HEADROOM_WARNING = 0.75
"""Share of the server's free slots in use from which headroom is a warning."""
HEADROOM_PROBLEM = 0.90
"""... and a problem."""
KEEPALIVE_IDLE_LIMIT = 300
"""Seconds: a vanished client should be noticed within minutes, not the kernel's two hours."""


def duration(seconds: float) -> str:
    """Seconds in words.

    >>> duration(0), duration(0.5), duration(3725)
    ('off', '500 ms', '1 h 2 min 5 s')
    """
    if seconds <= 0:
        return "off"
    if seconds < 1:
        return f"{int(seconds * 1000)} ms"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h" if hours else "", f"{minutes} min" if minutes else "",
             f"{secs} s" if secs else ""]
    return " ".join(p for p in parts if p)


def pick_max_idle(reaper_seconds: float, max_idle: float) -> int:
    """A ``max_idle`` safely below a reaper's timeout: half of it, at most the pool's
    ``max_idle`` now.

    >>> pick_max_idle(600, 300.0), pick_max_idle(60, 300.0), pick_max_idle(1, 300.0)
    (300, 30, 1)
    """
    return max(1, min(int(max_idle), int(reaper_seconds // 2)))


@cache
def serverless_reapers() -> tuple[float, float]:
    """``(idle_session_timeout, idle_in_transaction_session_timeout)`` in seconds:
    what zonal's serverless profile asks a direct server for, at its default
    ``max_idle`` (computed by the pools' own :func:`~zonal_core.psycopg_driver.reaper_seconds`).

    >>> serverless_reapers()
    (60.0, 60.0)
    """
    from zonal_core.psycopg_driver import reaper_seconds  # psycopg: only when asked

    config = build_config(zones={"doctor": "localhost:5432"}, serverless=True,
                          max_idle=SERVERLESS_DEFAULTS["max_idle"], environ={})
    reapers = reaper_seconds(config)
    assert reapers is not None  # serverless, direct
    return reapers
