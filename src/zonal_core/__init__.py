"""zonal_core: the framework-free core both adapters share.

Configuration and topology, routing and health, lifecycle policy, the zoned pool
(sync and async), PgBouncer rules, metrics, clock and errors. It never imports
SQLAlchemy or Django.
"""

from zonal_core.clock import Clock, FakeClock, Jitter, SystemClock
from zonal_core.config import ZonalConfig, build_config
from zonal_core.errors import (
    CredentialError,
    NoHealthyZone,
    PoolClosed,
    PoolTimeout,
    QueryTimeout,
    SessionStateError,
    ZonalConfigError,
    ZonalError,
)
from zonal_core.health import HealthPolicy
from zonal_core.pool import CorePool, ZonedPool
from zonal_core.pool_async import AsyncCorePool, AsyncZonedPool
from zonal_core.state import PooledConnection
from zonal_core.stats import PoolStats, ZoneStats
from zonal_core.topology import Endpoint, Topology, Zone

__all__ = [
    "AsyncCorePool",
    "AsyncZonedPool",
    "Clock",
    "CorePool",
    "CredentialError",
    "Endpoint",
    "FakeClock",
    "HealthPolicy",
    "Jitter",
    "NoHealthyZone",
    "PoolClosed",
    "PoolStats",
    "PoolTimeout",
    "PooledConnection",
    "QueryTimeout",
    "SessionStateError",
    "SystemClock",
    "Topology",
    "ZonalConfig",
    "ZonalConfigError",
    "ZonalError",
    "Zone",
    "ZoneStats",
    "ZonedPool",
    "build_config",
]
