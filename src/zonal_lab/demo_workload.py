"""The demo's workload: a few client threads sending a mix of requests through a
zonal pool (SQLAlchemy or Django), each request recorded with the zone that served
it, how long it took and the error it ended with, if any.

A *target* is the adapter under test; it knows how to run one request and where
the pool's stats are. Threads are bounded: each stops at its deadline or when the
stop event is set, and :meth:`Workload.join` waits a bounded time.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from zonal_core.health import HealthPolicy

if TYPE_CHECKING:
    from zonal_core.pool import CorePool
    from zonal_core.stats import PoolStats

__all__ = [
    "KINDS",
    "DemoAdapter",
    "DjangoTarget",
    "Failed",
    "Record",
    "SQLAlchemyTarget",
    "Workload",
    "django_unavailable",
    "set_health_policy",
]

#: request kinds and their weights: mostly reads, some writes, a few slow reads
KINDS: tuple[tuple[str, int], ...] = (("read", 7), ("write", 2), ("slow", 1))

TABLE = "zonal_demo_events"
CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} "
    "(id bigserial PRIMARY KEY, kind text NOT NULL, at timestamptz NOT NULL DEFAULT now())"
)
_READ = f"SELECT count(*) FROM (SELECT 1 FROM {TABLE} ORDER BY id DESC LIMIT 100) AS recent"
_WRITE = f"INSERT INTO {TABLE} (kind) VALUES ('write')"
_SLOW = "SELECT pg_sleep(0.05)"


@dataclass(frozen=True, slots=True)
class Record:
    """One finished request; times are seconds since the workload started."""

    start: float
    end: float
    kind: str
    zone: str | None  # the zone whose connection served (or failed) it
    error: str | None  # exception class name, never its text (it may hold a password)


class Failed(Exception):
    """A request failed; ``zone`` is where its connection was, when known."""

    def __init__(self, zone: str | None, error: str) -> None:
        super().__init__(error)
        self.zone = zone
        self.error = error


class DemoAdapter(Protocol):
    """The adapter the workload goes through."""

    name: str

    def request(self, kind: str) -> str | None:
        """Run one request of ``kind``; return the zone that served it, or raise
        :class:`Failed`."""

    def stats(self) -> PoolStats:
        """The pool's snapshot."""

    def core(self) -> CorePool:
        """The zoned pool underneath."""

    def close(self) -> None:
        """Close every connection (bounded)."""


def set_health_policy(pool: CorePool, policy: HealthPolicy) -> None:
    """Give ``pool`` shorter ejections, so a short demo shows a whole outage and its
    failback. Adapters build their pool with the default :class:`HealthPolicy`
    (5 s first ejection); this is for the demo only, before any traffic."""
    pool.set_health_policy(policy)


def _error_name(exc: BaseException) -> str:
    """The driver's (or zonal's) exception class under the adapter's wrapper:
    SQLAlchemy keeps it in ``.orig``, Django raises its own ``from`` it."""
    orig = getattr(exc, "orig", None)
    if not isinstance(orig, BaseException) and type(exc).__module__.startswith("django."):
        orig = exc.__cause__
    return type(orig if isinstance(orig, BaseException) else exc).__name__


class SQLAlchemyTarget:
    """Requests through ``create_engine(..., poolclass=ZonalPool)``."""

    name = "SQLAlchemy"

    def __init__(self, url: str, zones_by_port: Mapping[int, str], **options: Any) -> None:
        from sqlalchemy import create_engine

        from zonal_sqlalchemy import ZonalPool

        self._zones_by_port = dict(zones_by_port)
        self.engine = create_engine(url, poolclass=ZonalPool, **options)
        self.options = options

    def core(self) -> CorePool:
        from zonal_sqlalchemy import ZonalPool

        pool = self.engine.pool
        assert isinstance(pool, ZonalPool)
        return pool.core

    def stats(self) -> PoolStats:
        return self.core().stats()

    def request(self, kind: str) -> str | None:
        from sqlalchemy import exc, text

        from zonal_core import ZonalError

        zone: str | None = None
        try:
            with self.engine.connect() as conn:
                dbapi = conn.connection.dbapi_connection
                zone = self._zones_by_port.get(int(dbapi.info.port)) if dbapi else None
                if kind == "write":
                    conn.execute(text(_WRITE))
                    conn.commit()
                else:
                    conn.execute(text(_SLOW if kind == "slow" else _READ)).scalar()
        except (exc.DBAPIError, exc.TimeoutError, ZonalError) as e:
            raise Failed(zone, _error_name(e)) from None
        return zone

    def close(self) -> None:
        self.engine.dispose()


def django_unavailable() -> str | None:
    """Why ``--django`` cannot run here, or None when it can."""
    try:
        import django  # noqa: F401

        import zonal_django.backends.postgresql.base
        import zonal_django.middleware  # noqa: F401
    except ImportError as e:
        return (f"zonal demo --django is not available: {e.name or e} cannot be imported "
                '(fix: pip install "zonal[lab,django]")')
    return None


class DjangoTarget:
    """Requests through Django's ORM layer on ``zonal_django.backends.postgresql``;
    each request ends like one under ``ZonalRequestMiddleware``."""

    name = "Django"

    def __init__(self, database: dict[str, Any], zones_by_port: Mapping[int, str]) -> None:
        import django
        from django.conf import settings

        if settings.configured:
            raise RuntimeError("Django is already configured in this process")
        settings.configure(
            DATABASES={"default": database},
            INSTALLED_APPS=["zonal_django"],
            USE_TZ=True,
            DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
            LOGGING_CONFIG=None,
        )
        django.setup()
        self._zones_by_port = dict(zones_by_port)

    def core(self) -> CorePool:
        import zonal_django

        pool: CorePool = zonal_django.pool()
        return pool

    def stats(self) -> PoolStats:
        return self.core().stats()

    def request(self, kind: str) -> str | None:
        from django.db import Error, connection, transaction

        from zonal_core import ZonalError
        from zonal_django.middleware import release_connections

        zone: str | None = None
        try:
            connection.ensure_connection()
            raw = connection.connection
            zone = self._zones_by_port.get(int(raw.info.port)) if raw is not None else None
            if kind == "write":
                with transaction.atomic(), connection.cursor() as cur:
                    cur.execute(_WRITE)
            else:
                with connection.cursor() as cur:
                    cur.execute(_SLOW if kind == "slow" else _READ)
                    cur.fetchone()
        except (Error, ZonalError) as e:
            raise Failed(zone, _error_name(e)) from None
        finally:
            release_connections()  # what the request middleware does at the end
        return zone

    def close(self) -> None:
        from django.db import connections

        from zonal_django import pools

        connections.close_all()
        pools.close_alias("default")


class Workload:
    """``threads`` clients, each sending requests with a short think time until
    ``stop()`` or ``seconds`` after ``start()``."""

    def __init__(self, target: DemoAdapter, threads: int = 6, seconds: float = 60.0,
                 think: float = 0.01, seed: int | None = None) -> None:
        self.target = target
        self.threads = threads
        self.seconds = seconds
        self.think = think
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._t0 = 0.0
        self._rng = random.Random(seed)
        self._kinds = [k for k, w in KINDS for _ in range(w)]

    def now(self) -> float:
        """Seconds since :meth:`start`."""
        return time.monotonic() - self._t0

    def start(self, t0: float | None = None) -> None:
        self._t0 = time.monotonic() if t0 is None else t0
        for i in range(self.threads):
            rng = random.Random(self._rng.random())
            t = threading.Thread(target=self._client, args=(rng,), name=f"zonal-demo-{i}",
                                 daemon=True)
            self._threads.append(t)
            t.start()

    def _client(self, rng: random.Random) -> None:
        deadline = self._t0 + self.seconds
        request: Callable[[str], str | None] = self.target.request
        while not self._stop.is_set() and time.monotonic() < deadline:
            kind = rng.choice(self._kinds)
            start = self.now()
            zone: str | None
            error: str | None = None
            try:
                zone = request(kind)
            except Failed as f:
                zone, error = f.zone, f.error
            except Exception as e:  # counted as an error, never hidden
                zone, error = None, type(e).__name__
            with self._lock:
                self.records.append(Record(start, self.now(), kind, zone, error))
            self._stop.wait(self.think * rng.uniform(0.5, 1.5))

    def snapshot(self) -> list[Record]:
        with self._lock:
            return list(self.records)

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds in all; True if every client ended."""
        end = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)
