"""The pools a user would pick, built the way a user would configure them.

Every subject answers one request with :meth:`Subject.query`: check out a
connection, run one statement, fetch one value, give the connection back. Each is
pointed at a :class:`BenchDatabase` (zones in preference order, the first one local) and
configured for it: behind PgBouncer in transaction mode every psycopg subject gets
``prepare_threshold=None`` (otherwise it fails, see NOTES), so the comparison is
between correct setups.

Without zonal, failover across zones means a libpq multi-host string
(``host=a,b&port=...``): libpq tries the hosts in order (or at random with
``load_balance_hosts=random``) and pays ``connect_timeout`` on a dead one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any
from urllib.parse import quote

__all__ = [
    "DEFAULT_AGAINST",
    "NAMES",
    "SUBJECTS",
    "BenchDatabase",
    "Need",
    "Subject",
    "SubjectKind",
    "label",
    "make_subject",
    "missing",
]

_POOL_TIMEOUT = 10
"""Seconds every subject's checkout may wait for a connection before it fails
(SQLAlchemy's ``pool_timeout``, psycopg_pool's and zonal's ``timeout``)."""


@dataclass(frozen=True)
class BenchDatabase:
    """Where a subject connects: ``zones`` in order, the first is the local one."""

    user: str
    password: str
    database: str
    zones: dict[str, str]
    pgbouncer: bool = False

    @property
    def local(self) -> str:
        return next(iter(self.zones))

    def hosts_ports(self) -> tuple[str, str]:
        hosts, ports = zip(*(ep.rsplit(":", 1) for ep in self.zones.values()), strict=True)
        return ",".join(hosts), ",".join(ports)

    def conninfo(self, **params: Any) -> str:
        """A libpq connection string over every zone (multi-host when several)."""
        hosts, ports = self.hosts_ports()
        parts = {"host": hosts, "port": ports, "user": self.user, "password": self.password,
                 "dbname": self.database, **{k: v for k, v in params.items() if v is not None}}
        return " ".join(f"{k}='{_esc(str(v))}'" for k, v in parts.items())

    def sqlalchemy_url(self, with_hosts: bool = True, **params: Any) -> str:
        base = (f"postgresql+psycopg://{quote(self.user, safe='')}:"
                f"{quote(self.password, safe='')}@/{quote(self.database, safe='')}")
        if not with_hosts:
            return base
        hosts, ports = self.hosts_ports()
        query = {"host": hosts, "port": ports,
                 **{k: str(v) for k, v in params.items() if v is not None}}
        return base + "?" + "&".join(f"{k}={quote(v, safe=',')}" for k, v in query.items())


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


@dataclass
class Subject:
    """One configured pool: ``query(sql)`` is one request."""

    kind: str
    label: str
    _checkout: Callable[[], contextlib.AbstractContextManager[Callable[[str], Any]]]
    _close: Callable[[], None]
    settings: dict[str, Any] = field(default_factory=dict)
    size: int = 0
    pool: Any = None  # the pool object, for what it counts itself (zonal's stats())
    _prefill: Callable[[int], None] | None = None  # a subject that opens its own way
    lazy: bool = False
    """True: ``checkout()`` takes no connection, the first query does (Django's way)."""

    def query(self, sql: str = "select 1") -> Any:
        """Check out, run ``sql``, return its first value, check in."""
        with self._checkout() as run:
            return run(sql)

    def checkout(self) -> contextlib.AbstractContextManager[Callable[[str], Any]]:
        """Hold one connection: ``with s.checkout() as run: run("select 1")``."""
        return self._checkout()

    def close(self) -> None:
        self._close()

    def prefill(self, n: int, timeout: float = 30.0) -> None:
        """Open ``n`` connections at once (one thread each) and give them back, so a
        measure starts with a full pool rather than timing the pool's growth."""
        if n <= 0 or self.kind == "nullpool":
            return
        if self._prefill is not None:
            self._prefill(n)
            return
        barrier = threading.Barrier(n + 1)

        def hold() -> None:
            with contextlib.suppress(threading.BrokenBarrierError), self.checkout() as run:
                run("select 1")
                barrier.wait(timeout)

        threads = [threading.Thread(target=hold, daemon=True) for _ in range(n)]
        for t in threads:
            t.start()
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout)
        for t in threads:
            t.join(timeout)


Builder = Callable[[BenchDatabase, int, bool, dict[str, Any]], Subject]
"""``(target, size, ping, failover) -> Subject``: one configured pool."""


@dataclass(frozen=True)
class Need:
    """A library a subject imports: ``module`` (import name), from distribution
    ``dist`` at version ``min_version`` or later, installed with ``install``."""

    module: str
    dist: str
    install: str
    min_version: tuple[int, ...] = ()

    def problem(self) -> str | None:
        """None when usable here, else what is wrong and the command that fixes it."""
        if importlib.util.find_spec(self.module) is None:
            return f"{self.dist} is not installed (pip install {self.install})"
        if self.min_version:
            try:
                have = metadata.version(self.dist)
            except metadata.PackageNotFoundError:
                return None  # importable without metadata (a source tree): trust it
            if _version_tuple(have) < self.min_version:
                wanted = ".".join(map(str, self.min_version))
                return f"{self.dist} {have} is installed, {wanted} or later is needed " \
                       f"(pip install {self.install})"
        return None


def _version_tuple(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split("."):
        digits = "".join(itertools.takewhile(str.isdigit, piece))
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


@dataclass(frozen=True)
class SubjectKind:
    """One entry of :data:`SUBJECTS`: a pool ``zonal bench --against`` knows."""

    name: str
    label: str
    build: Builder
    needs: tuple[Need, ...]
    help: str
    against: bool = True
    """False: measured only by the scenarios that name it (``request_shapes``), not a
    choice of ``--against``."""


# -- builders -----------------------------------------------------------------


def _engine_subject(kind: str, label: str, engine: Any, settings: dict[str, Any]) -> Subject:
    @contextlib.contextmanager
    def checkout() -> Iterator[Callable[[str], Any]]:
        with engine.connect() as conn:
            yield lambda sql: conn.exec_driver_sql(sql).scalar()

    return Subject(kind, label, checkout, engine.dispose, settings, pool=engine.pool)


def _zonal(t: BenchDatabase, size: int, ping: bool, failover: dict[str, Any]) -> Subject:
    from sqlalchemy import create_engine

    from zonal_sqlalchemy import ZonalPool

    opts: dict[str, Any] = {"zones": dict(t.zones), "local_zone": t.local, "pool_size": size,
                            "pool_pre_ping": ping, "pool_timeout": _POOL_TIMEOUT}
    if t.pgbouncer:
        opts["pgbouncer"] = "transaction"
    opts.update(failover)
    engine = create_engine(t.sqlalchemy_url(with_hosts=False), poolclass=ZonalPool, **opts)
    return _engine_subject("zonal", label("zonal"), engine,
                           {k: v for k, v in opts.items() if k != "zones"})


def _libpq_params(failover: dict[str, Any]) -> dict[str, Any]:
    """What a user puts in a multi-host URL for failover (libpq's only means)."""
    params: dict[str, Any] = {}
    if failover:
        params["connect_timeout"] = failover.get("connect_timeout", 2)
        params["target_session_attrs"] = "read-write"
    if failover.get("load_balance_hosts"):
        params["load_balance_hosts"] = failover["load_balance_hosts"]
    return params


def _queuepool(t: BenchDatabase, size: int, ping: bool, failover: dict[str, Any]) -> Subject:
    from sqlalchemy import create_engine

    params = _libpq_params(failover)
    connect_args = {"prepare_threshold": None} if t.pgbouncer else {}
    engine = create_engine(t.sqlalchemy_url(**params), pool_size=size, max_overflow=0,
                           pool_pre_ping=ping, pool_timeout=_POOL_TIMEOUT,
                           connect_args=connect_args)
    name = label("queuepool") + (" + pre-ping" if ping else "")
    return _engine_subject("queuepool", name, engine,
                           {"pool_size": size, "max_overflow": 0, "pool_pre_ping": ping,
                            "pool_timeout": _POOL_TIMEOUT, **params, **connect_args})


def _nullpool(t: BenchDatabase, size: int, ping: bool, failover: dict[str, Any]) -> Subject:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    params = _libpq_params(failover)
    connect_args = {"prepare_threshold": None} if t.pgbouncer else {}
    engine = create_engine(t.sqlalchemy_url(**params), poolclass=NullPool,
                           connect_args=connect_args)
    return _engine_subject("nullpool", label("nullpool"), engine,
                           {"poolclass": "NullPool", **params, **connect_args})


def _psycopg_pool(t: BenchDatabase, size: int, ping: bool, failover: dict[str, Any],
                  autocommit: bool = False) -> Subject:
    """psycopg_pool, in transactions (as SQLAlchemy's requests are) or in autocommit
    (the request shape of ``request_shapes``): one builder for both subjects."""
    from psycopg_pool import ConnectionPool

    params = _libpq_params(failover)
    kwargs: dict[str, Any] = {"autocommit": True} if autocommit else {}
    if t.pgbouncer:
        kwargs["prepare_threshold"] = None
    pool = ConnectionPool(t.conninfo(**params), min_size=min(4, size), max_size=size,
                          kwargs=kwargs, timeout=_POOL_TIMEOUT, open=True,
                          check=ConnectionPool.check_connection if ping else None)

    @contextlib.contextmanager
    def checkout() -> Iterator[Callable[[str], Any]]:
        with pool.connection() as conn:
            def run(sql: str) -> Any:
                row = conn.execute(sql).fetchone()
                return row[0] if row else None
            yield run

    key = "psycopg_pool_autocommit" if autocommit else "psycopg_pool"
    name = label(key) + (" + check" if ping and not autocommit else "")
    return Subject(key, name, checkout, pool.close,
                   {"min_size": min(4, size), "max_size": size, "check": ping, **params,
                    **kwargs})


_django_aliases = itertools.count()
_django_lock = threading.Lock()


def _django_setup() -> None:
    with _django_lock:
        from django.conf import settings

        if not settings.configured:
            settings.configure(USE_TZ=True, DATABASES={}, INSTALLED_APPS=[])
            import django

            django.setup()


def _django_alias(db: dict[str, Any]) -> Callable[[], Any]:
    """A new alias configured with ``db``: makes its ``DatabaseWrapper`` objects."""
    _django_setup()
    from django.db.utils import ConnectionHandler, load_backend

    alias = f"bench{next(_django_aliases)}"
    settings_dict = ConnectionHandler().configure_settings({"default": db, alias: db})[alias]
    wrapper_class = load_backend(settings_dict["ENGINE"]).DatabaseWrapper
    return lambda: wrapper_class(settings_dict, alias)


def _django_factory(kind: str, target: BenchDatabase, size: int = 8) -> Callable[[], Any]:
    """What makes the ``DatabaseWrapper`` objects of one alias configured as subject
    ``kind`` (``django_pool`` or ``zonal_django``): Django makes one per thread."""
    db = _DJANGO_DBS[kind](target, size, False, {})[0]
    return _django_alias(db)


def _django_subject(kind: str, name: str, t: BenchDatabase, db: dict[str, Any],
                    settings: dict[str, Any]) -> Subject:
    """A Django alias configured with ``db``; a request is what a view does in
    autocommit: one query through the thread's connection, then ``close()`` (which
    gives the connection back to the pool at request end)."""
    new_wrapper = _django_alias(db)
    local = threading.local()
    wrappers: list[Any] = []

    def wrapper() -> Any:
        w = getattr(local, "w", None)
        if w is None:
            w = local.w = new_wrapper()
            with _django_lock:
                wrappers.append(w)
        return w

    @contextlib.contextmanager
    def checkout() -> Iterator[Callable[[str], Any]]:
        w = wrapper()
        try:
            def run(sql: str) -> Any:
                with w.cursor() as cur:
                    cur.execute(sql)
                    row = cur.fetchone()
                return row[0] if row else None
            yield run
        finally:
            w.close()  # Django returns the connection to the pool at request end

    def close() -> None:
        if wrappers:
            with contextlib.suppress(Exception):
                wrappers[0].close_pool()

    return Subject(kind, name, checkout, close, settings, lazy=True)


def _django_db(t: BenchDatabase, engine: str, options: dict[str, Any],
               ping: bool) -> dict[str, Any]:
    hosts, ports = t.hosts_ports()
    return {"ENGINE": engine, "NAME": t.database, "USER": t.user, "PASSWORD": t.password,
            "HOST": hosts, "PORT": ports, "OPTIONS": options, "CONN_HEALTH_CHECKS": ping}


def _django_pool_db(t: BenchDatabase, size: int, ping: bool, failover: dict[str, Any]
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(DATABASES entry, settings shown) of the django_pool subject."""
    pool_opts: dict[str, Any] = {"min_size": min(4, size), "max_size": size,
                                 "timeout": _POOL_TIMEOUT}
    options: dict[str, Any] = {"pool": pool_opts, **_libpq_params(failover)}
    if t.pgbouncer:
        options["prepare_threshold"] = None
    # CONN_HEALTH_CHECKS with a pool: ConnectionPool.check_connection
    return (_django_db(t, "django.db.backends.postgresql", options, ping),
            {"OPTIONS.pool": pool_opts, "CONN_HEALTH_CHECKS": ping,
             **{k: v for k, v in options.items() if k != "pool"}})


def _zonal_django_db(t: BenchDatabase, size: int, ping: bool, failover: dict[str, Any]
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(DATABASES entry, settings shown) of the zonal_django subject."""
    zopts: dict[str, Any] = {"zones": dict(t.zones), "local_zone": t.local, "pool_size": size,
                             "timeout": _POOL_TIMEOUT, **failover}
    if t.pgbouncer:
        zopts["pgbouncer"] = "transaction"
    db = _django_db(t, "zonal_django.backends.postgresql", {"zonal": zopts}, ping)
    db["HOST"] = db["PORT"] = ""  # the zones name every server
    return db, {"OPTIONS.zonal": {k: v for k, v in zopts.items() if k != "zones"},
                "CONN_HEALTH_CHECKS": ping}


_DJANGO_DBS = {"django_pool": _django_pool_db, "zonal_django": _zonal_django_db}


def _django_pool(t: BenchDatabase, size: int, ping: bool, failover: dict[str, Any]) -> Subject:
    db, shown = _django_pool_db(t, size, ping, failover)
    name = label("django_pool") + (" + check" if ping else "")
    return _django_subject("django_pool", name, t, db, shown)


def _zonal_django(t: BenchDatabase, size: int, ping: bool, failover: dict[str, Any]) -> Subject:
    db, shown = _zonal_django_db(t, size, ping, failover)
    name = label("zonal_django") + (" + pre-ping" if ping else "")
    return _django_subject("zonal_django", name, t, db, shown)


def _zonal_core(t: BenchDatabase, size: int, ping: bool, failover: dict[str, Any]) -> Subject:
    from zonal_core.config import build_config
    from zonal_core.pool import CorePool
    from zonal_core.psycopg_driver import PsycopgDriver

    opts: dict[str, Any] = {"zones": dict(t.zones), "local_zone": t.local, "pool_size": size,
                            "timeout": _POOL_TIMEOUT, "pre_ping": ping, **failover}
    if t.pgbouncer:
        opts["pgbouncer"] = "transaction"
    config = build_config(opts, environ={})
    driver = PsycopgDriver({"user": t.user, "password": t.password, "dbname": t.database,
                            "autocommit": True}, config)
    pool = CorePool(driver, config)

    @contextlib.contextmanager
    def checkout() -> Iterator[Callable[[str], Any]]:
        with pool.connection() as rec:
            conn = rec.raw

            def run(sql: str) -> Any:
                row = conn.execute(sql).fetchone()
                return row[0] if row else None
            yield run

    return Subject("zonal_core", label("zonal_core"), checkout, pool.close,
                   {k: v for k, v in opts.items() if k != "zones"} | {"autocommit": True},
                   pool=pool)


def _psycopg_pool_autocommit(t: BenchDatabase, size: int, ping: bool,
                             failover: dict[str, Any]) -> Subject:
    return _psycopg_pool(t, size, ping, failover, autocommit=True)


def _raw_psycopg(t: BenchDatabase, size: int, ping: bool, failover: dict[str, Any]) -> Subject:
    """No pool: each workload thread keeps its own autocommit connection, opened once
    (keyed by the thread's name, which the workload reuses from run to run)."""
    import psycopg

    conninfo = t.conninfo(**_libpq_params(failover))
    kwargs: dict[str, Any] = {"autocommit": True}
    if t.pgbouncer:
        kwargs["prepare_threshold"] = None
    conns: dict[str, Any] = {}
    lock = threading.Lock()

    def conn_for(name: str) -> Any:
        conn = conns.get(name)
        if conn is None:
            conn = psycopg.connect(conninfo, **kwargs)
            with lock:
                conns[name] = conn
        return conn

    @contextlib.contextmanager
    def checkout() -> Iterator[Callable[[str], Any]]:
        conn = conn_for(threading.current_thread().name)

        def run(sql: str) -> Any:
            row = conn.execute(sql).fetchone()
            return row[0] if row else None
        yield run

    def prefill(n: int) -> None:
        for i in range(n):
            conn_for(f"bench-{i}")  # the names run_workload gives its threads

    def close() -> None:
        with lock:
            for conn in conns.values():
                with contextlib.suppress(Exception):
                    conn.close()
            conns.clear()

    return Subject("raw_psycopg", label("raw_psycopg"), checkout, close,
                   {"pool": None, **kwargs}, _prefill=prefill)


_SQLALCHEMY = (Need("sqlalchemy", "SQLAlchemy", "'zonal[sqlalchemy]'"),
               Need("psycopg", "psycopg", "'zonal[sqlalchemy]'"))
_PSYCOPG = Need("psycopg", "psycopg", "'zonal[psycopg]'")
_PSYCOPG_POOL = Need("psycopg_pool", "psycopg-pool", "'zonal[bench]'")
_DJANGO_POOL = Need("django", "Django", "'django>=5.1'", (5, 1))

SUBJECTS: dict[str, SubjectKind] = {k.name: k for k in (
    SubjectKind("zonal", "ZonalPool (SQLAlchemy)", _zonal, _SQLALCHEMY,
                "zonal_sqlalchemy.ZonalPool under a SQLAlchemy engine: zones, local_zone, "
                "pre-ping with ping_bypass"),
    SubjectKind("queuepool", "SQLAlchemy QueuePool", _queuepool, _SQLALCHEMY,
                "SQLAlchemy's default pool on a libpq multi-host URL"),
    SubjectKind("nullpool", "NullPool + PgBouncer", _nullpool, _SQLALCHEMY,
                "SQLAlchemy's NullPool, a connection per checkout, through PgBouncer"),
    SubjectKind("psycopg_pool", "psycopg_pool", _psycopg_pool, (_PSYCOPG_POOL,),
                "psycopg_pool.ConnectionPool on a libpq multi-host string"),
    SubjectKind("django_pool", "Django native pool", _django_pool,
                (_DJANGO_POOL, _PSYCOPG_POOL),
                "Django 5.1+'s OPTIONS['pool'] (psycopg_pool inside), one wrapper per thread"),
    # measured by the request_shapes scenario only
    SubjectKind("zonal_django", "zonal_django (Django backend)", _zonal_django,
                (Need("django", "Django", "'zonal[django]'", (4, 2)), _PSYCOPG),
                "zonal_django.backends.postgresql, OPTIONS['zonal'], one wrapper per thread",
                against=False),
    SubjectKind("zonal_core", "zonal core + psycopg (CorePool.connection)", _zonal_core,
                (_PSYCOPG,),
                "zonal_core.pool.CorePool with zonal_core.psycopg_driver.PsycopgDriver, "
                "autocommit, no SQLAlchemy", against=False),
    SubjectKind("psycopg_pool_autocommit", "psycopg_pool (pool.connection, autocommit)",
                _psycopg_pool_autocommit, (_PSYCOPG_POOL,),
                "psycopg_pool.ConnectionPool with autocommit connections, no SQLAlchemy",
                against=False),
    SubjectKind("raw_psycopg", "raw psycopg, a connection per thread (ceiling)", _raw_psycopg,
                (_PSYCOPG,),
                "no pool: one autocommit psycopg connection per thread, opened once",
                against=False),
)}
"""Every subject the bench knows, zonal first: the one list of names. Those with
``against=True`` are the choices of ``zonal bench --against``; the others are measured
by the scenario that names them."""

NAMES = tuple(k for k, s in SUBJECTS.items() if s.against)
DEFAULT_AGAINST = tuple(n for n in NAMES if n != "zonal")
"""What zonal is compared with when ``--against`` is not given: every other subject."""


_ZONAL_KINDS = ("zonal", "zonal_django", "zonal_core")  # take zonal's failover options


def label(kind: str) -> str:
    """The name a table shows for ``kind``."""
    return SUBJECTS[kind].label


def missing(kind: str) -> str | None:
    """Why ``kind`` cannot run here (a library it needs is not installed), or None."""
    for need in SUBJECTS[kind].needs:
        problem = need.problem()
        if problem is not None:
            return problem
    return None


def make_subject(kind: str, target: BenchDatabase, *, size: int = 8, ping: bool = False,
                 failover: dict[str, Any] | None = None) -> Subject:
    """Build ``kind`` against ``target`` with at most ``size`` connections.

    ``failover``: zonal options for a multi-zone run (``connect_timeout``,
    ``query_timeout``, ``failback_after``, ...); the other subjects take from it
    ``connect_timeout`` and ``load_balance_hosts`` for their multi-host string.
    """
    try:
        build = SUBJECTS[kind].build
    except KeyError:
        raise ValueError(f"unknown subject {kind!r}; known: {', '.join(SUBJECTS)}") from None
    fo = dict(failover or {})
    if kind not in _ZONAL_KINDS:
        fo = {k: v for k, v in fo.items() if k in ("connect_timeout", "load_balance_hosts")}
        if failover is not None and not fo:
            fo = {"connect_timeout": 2}
    else:
        fo.pop("load_balance_hosts", None)
    subject = build(target, size, ping, fo)
    subject.size = size
    return subject
