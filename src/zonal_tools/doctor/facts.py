"""What doctor observed (:class:`Facts`) and what the caller says about the
deployment (:class:`Deployment`): plain frozen dataclasses, no I/O, no judgement.

:mod:`zonal_tools.doctor.collect` fills the facts in; :mod:`zonal_tools.doctor.checks`
judges them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zonal_core.config import DEFAULTS

if TYPE_CHECKING:
    from zonal_core.config import ZonalConfig

__all__ = ["SETTINGS", "Deployment", "Facts", "PgBouncerFacts", "ServerFacts"]

SETTINGS = (
    "max_connections",
    "superuser_reserved_connections",
    "reserved_connections",
    "idle_session_timeout",
    "idle_in_transaction_session_timeout",
    "tcp_keepalives_idle",
    "tcp_keepalives_interval",
    "tcp_keepalives_count",
    "tcp_user_timeout",
)
"""The server settings doctor reads (from ``pg_settings``, in their base units)."""

# PostgreSQL's own defaults, for a server that does not report a setting
_PG_MAX_CONNECTIONS = 100
_PG_SUPERUSER_RESERVED = 3


@dataclass(frozen=True)
class ServerFacts:
    """What the server says about itself; ``settings`` as ``pg_settings.setting``
    strings (times in the setting's base unit: ms, or s for ``tcp_keepalives_*``)."""

    version: str
    version_num: int
    settings: Mapping[str, str]
    connections: int = 1
    """Client backends on the whole server, this one included."""
    role: str = "app"
    database: str = "app"
    superuser: bool = False
    role_connection_limit: int = -1
    database_connection_limit: int = -1
    in_recovery: bool = False
    tcp: bool = True
    """False over a Unix socket (keepalives then do not apply)."""

    def number(self, name: str, default: int = 0) -> int:
        """A numeric setting (``default`` when the server does not have it)."""
        raw = self.settings.get(name)
        try:
            return int(float(raw)) if raw is not None else default
        except ValueError:
            return default

    def has(self, name: str) -> bool:
        """True if the server knows setting ``name``."""
        return name in self.settings

    @property
    def max_connections(self) -> int:
        """``max_connections`` (PostgreSQL's default when not reported)."""
        return self.number("max_connections", _PG_MAX_CONNECTIONS)

    @property
    def superuser_reserved(self) -> int:
        """``superuser_reserved_connections`` (PostgreSQL's default when not reported)."""
        return self.number("superuser_reserved_connections", _PG_SUPERUSER_RESERVED)

    @property
    def reserved(self) -> int:
        """Slots ordinary roles cannot take: superusers' plus ``reserved_connections``."""
        return self.superuser_reserved + self.number("reserved_connections", 0)

    @property
    def available(self) -> int:
        """Slots for everyone else (the applications)."""
        return max(self.max_connections - self.reserved, 0)


@dataclass(frozen=True)
class PgBouncerFacts:
    """PgBouncer (or another pooler) between doctor and the server.

    ``mode``: ``"transaction"``, ``"session"``, ``"statement"`` or None when unknown;
    ``mode_source`` says how it was learned. ``config`` (``SHOW CONFIG``),
    ``database`` (its ``SHOW DATABASES`` row) and ``pool`` (its ``SHOW POOLS`` row)
    are None without the admin console.
    """

    evidence: tuple[str, ...]
    mode: str | None = None
    mode_source: str | None = None
    version: str | None = None
    config: Mapping[str, str] | None = None
    database: Mapping[str, Any] | None = None
    pool: Mapping[str, Any] | None = None
    admin_error: str | None = None
    admin_url: str | None = None
    """The admin console's URL, masked."""
    options_rejected: bool = False

    def setting(self, name: str, default: int = 0) -> int:
        """A numeric ``SHOW CONFIG`` value."""
        raw = (self.config or {}).get(name)
        try:
            return int(float(raw)) if raw not in (None, "") else default
        except (TypeError, ValueError):
            return default

    def server_pool(self) -> tuple[int, int]:
        """(pool size, reserve pool) for the database doctor connected to."""
        db = self.database or {}
        pool = as_int(db.get("pool_size")) or self.setting("default_pool_size", 20)
        reserve = as_int(db.get("reserve_pool"))
        if reserve is None:
            reserve = self.setting("reserve_pool_size", 0)
        return pool, reserve


def as_int(value: object) -> int | None:
    """``value`` as an int (admin console cells), None when it is not one."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(str(value))
    except ValueError:
        return None


@dataclass(frozen=True)
class Facts:
    """Everything :func:`~zonal_tools.doctor.collect.collect` learned; what
    :func:`~zonal_tools.doctor.checks.analyze` reads."""

    target: str
    """The URL checked, masked."""
    server: ServerFacts
    pgbouncer: PgBouncerFacts | None = None
    admin_note: str | None = None
    """Why an admin console that was given could not be used (direct connections)."""


@dataclass(frozen=True)
class Deployment:
    """What the caller says about the deployment (all optional).

    ``pool_size`` and ``max_idle`` are the pool's real settings when the caller has
    them (``manage.py zonal_doctor`` passes the alias's configuration, see
    :meth:`of`); None means zonal's defaults (:data:`zonal_core.config.DEFAULTS`).
    """

    instances: int | None = None
    pool_size: int | None = None
    cores: int | None = None
    max_idle: float | None = None

    @classmethod
    def of(cls, config: ZonalConfig, *, instances: int | None = None,
           cores: int | None = None) -> Deployment:
        """The deployment of a pool with ``config``."""
        return cls(instances=instances, pool_size=config.pool_size, cores=cores,
                   max_idle=config.max_idle)

    @property
    def pool(self) -> int:
        """The pool size in use: the given one, else zonal's default."""
        return self.pool_size or int(DEFAULTS["pool_size"])

    @property
    def idle_limit(self) -> float:
        """The pool's ``max_idle``: the given one, else zonal's default."""
        return float(DEFAULTS["max_idle"]) if self.max_idle is None else self.max_idle

    def planned(self) -> int | None:
        """Connections every instance together may open, None without ``instances``."""
        if self.instances is None:
            return None
        return self.instances * self.pool

    def text(self) -> str:
        """``10 instances x pool_size 5 (zonal's default)``."""
        default = "" if self.pool_size else " (zonal's default)"
        return f"{self.instances} instances x pool_size {self.pool}{default}"
