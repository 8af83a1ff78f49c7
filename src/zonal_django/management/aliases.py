"""What zonal's management commands share: the aliases they work on, each alias's
configuration and connect parameters, and their exit codes.

Every command exits :data:`EXIT_OK` when all is well, :data:`EXIT_FAILED` when it ran
and found something wrong (a zone down, a setting to fix), :data:`EXIT_UNUSABLE` when
it could not run at all (an unknown alias, settings zonal refuses). A failure is a
``CommandError`` with that ``returncode``: ``manage.py`` prints its message once, to
stderr, and exits with it; ``call_command`` raises it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.db import connections

from zonal_core.config import ZonalConfig
from zonal_core.errors import ZonalConfigError
from zonal_core.psycopg_driver import PsycopgDriver
from zonal_core.topology import Endpoint
from zonal_django.conf import connect_params, is_zonal_engine

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_UNUSABLE", "AliasSettings", "alias_settings",
           "endpoints", "zonal_aliases"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNUSABLE = 2


@dataclass(frozen=True)
class AliasSettings:
    """One alias as its pool sees it."""

    alias: str
    config: ZonalConfig
    """The validated configuration (the pool's real ``pool_size``, timeouts...)."""
    driver: PsycopgDriver
    """Connects to one endpoint exactly as the pool does (credentials, TLS, ...)."""

    def params_for(self, endpoint: Endpoint) -> dict[str, Any]:
        """``psycopg.connect()`` keyword arguments for ``endpoint``."""
        return self.driver.params_for(endpoint)


def zonal_aliases(requested: Iterable[str] | None) -> list[str]:
    """The aliases named (each must be a zonal one), else every zonal alias.

    Raises ``CommandError`` (:data:`EXIT_UNUSABLE`) for an unknown or non-zonal
    alias, or when no database uses zonal's backend.
    """
    names = list(requested or ())
    if not names:
        names = [a for a in connections.settings if is_zonal_engine(connections.settings[a])]
        if not names:
            raise CommandError("no database uses zonal_django.backends.postgresql",
                               returncode=EXIT_UNUSABLE)
        return names
    for alias in names:
        if alias not in connections.settings:
            raise CommandError(f"no database {alias!r} in DATABASES", returncode=EXIT_UNUSABLE)
        if not is_zonal_engine(connections.settings[alias]):
            raise CommandError(f"DATABASES[{alias!r}] does not use zonal's backend "
                               "(ENGINE zonal_django.backends.postgresql)",
                               returncode=EXIT_UNUSABLE)
    return names


def alias_settings(alias: str) -> AliasSettings:
    """The configuration and driver of ``alias``; ``CommandError``
    (:data:`EXIT_UNUSABLE`) when its settings are refused (the message names the
    field and the fix, never a password)."""
    conn = connections[alias]
    try:
        params = conn.get_connection_params()
        config: ZonalConfig = conn.zonal_plan(params).config
        driver = PsycopgDriver({**connect_params(params), "autocommit": True}, config)
    except (ImproperlyConfigured, ZonalConfigError) as exc:
        raise CommandError(f"DATABASES[{alias!r}]: {exc}", returncode=EXIT_UNUSABLE) from None
    return AliasSettings(alias, config, driver)


def endpoints(config: ZonalConfig) -> list[tuple[Endpoint, bool]]:
    """Zone by zone, its endpoints then its ``direct`` one: (endpoint, is direct)."""
    out: list[tuple[Endpoint, bool]] = []
    for zone in config.topology.zones:
        out += [(ep, False) for ep in zone.endpoints]
        if zone.direct is not None:
            out.append((zone.direct, True))
    return out
