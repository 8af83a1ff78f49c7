"""pytest plugin for scripts/sqlalchemy_suite.py: every PostgreSQL engine on zonal.

Loaded with ``-p zonal_everywhere`` (this folder on ``PYTHONPATH``) in both runs of
the suite. It wraps ``create_engine`` wherever SQLAlchemy binds the name
(``sqlalchemy``, ``sqlalchemy.engine``, ``sqlalchemy.engine.create`` and the
reference ``create_async_engine`` calls); with ``--zonal-pools`` an engine for a
``postgresql`` URL that is given no ``poolclass``, ``pool`` or ``creator`` gets
``poolclass=ZonalPool`` (``ZonalAsyncPool`` for an asyncio dialect). The URL names a
host, which zonal makes its one zone, ``default``: the drop-in a user would write.
Nothing else is changed: options zonal refuses by design (``max_overflow``,
``pool_use_lifo=False``) reach it as they are, and fail as they would for a user.

In both runs it also:

* records each test's node id as the junit property ``nodeid`` (the junit
  ``classname``/``name`` pair cannot be mapped back to a node id);
* checks that the ``sqlalchemy`` under test is the installed one, not a copy from
  the sdist;
* writes a JSON summary (``--zonal-suite-report FILE``): the SQLAlchemy version and
  path, the testing database's pool class, and how many engines went on zonal or
  stayed stock, and why.

The wrapping happens when pytest imports this module (before SQLAlchemy's
conftest and the test modules bind ``create_engine`` by name); it only acts once
``pytest_configure`` has read ``--zonal-pools``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import sqlalchemy.engine
import sqlalchemy.engine.create
import sqlalchemy.ext.asyncio.engine
from sqlalchemy.engine.url import make_url

_STATE: dict[str, Any] = {"enabled": False, "options": {}}
_ENGINES: Counter[str] = Counter()

_stock_create_engine: Callable[..., Any] = sqlalchemy.engine.create.create_engine


def _zonal_pool_class(url: Any, kwargs: dict[str, Any]) -> type[Any] | None:
    """The zonal pool class for this engine, or None (and why, counted) to stay stock."""
    given = [k for k in ("poolclass", "pool", "creator") if kwargs.get(k) is not None]
    if given:
        _ENGINES[f"stock: {given[0]} given"] += 1
        return None
    if kwargs.get("strategy") == "mock":
        _ENGINES["stock: mock strategy"] += 1
        return None
    try:
        u = make_url(url)
    except Exception:
        _ENGINES["stock: URL not parsed here"] += 1
        return None  # create_engine raises its own error for it
    backend = u.get_backend_name()
    if backend != "postgresql":
        _ENGINES[f"stock: {backend if isinstance(backend, str) else 'mock'} URL"] += 1
        return None
    from zonal_sqlalchemy import ZonalAsyncPool, ZonalPool

    entrypoint: Any = u._get_entrypoint()
    if kwargs.get("_is_async"):
        dialect_cls = entrypoint.get_async_dialect_cls(u)
    else:
        dialect_cls = entrypoint.get_dialect_cls(u)
    if getattr(dialect_cls, "is_async", False):
        _ENGINES["zonal: ZonalAsyncPool"] += 1
        return ZonalAsyncPool
    _ENGINES["zonal: ZonalPool"] += 1
    return ZonalPool


def create_engine(url: Any, **kwargs: Any) -> Any:
    """``sqlalchemy.create_engine``, with zonal's pool under ``--zonal-pools``."""
    if _STATE["enabled"]:
        poolclass = _zonal_pool_class(url, kwargs)
        if poolclass is not None:
            kwargs["poolclass"] = poolclass
            for key, value in _STATE["options"].items():
                kwargs.setdefault(key, value)
    else:
        _ENGINES["stock: run without --zonal-pools"] += 1
    return _stock_create_engine(url, **kwargs)


create_engine.__doc__ = _stock_create_engine.__doc__
# every module-level binding the suite reaches create_engine through
sqlalchemy.create_engine = create_engine
sqlalchemy.engine.create_engine = create_engine
sqlalchemy.engine.create.create_engine = create_engine
# create_async_engine(url, **kw) calls this with kw["_is_async"] = True
sqlalchemy.ext.asyncio.engine._create_engine = create_engine  # type: ignore[attr-defined]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("zonal", "scripts/sqlalchemy_suite.py")
    group.addoption("--zonal-pools", action="store_true",
                    help="put every PostgreSQL engine on ZonalPool / ZonalAsyncPool")
    group.addoption("--zonal-option", metavar="NAME=JSON", action="append", default=[],
                    help="a zonal option for every zonal engine (e.g. ping_bypass=0)")
    group.addoption("--zonal-suite-report", metavar="FILE",
                    help="write the run's JSON summary (engines, pool class) here")
    group.addoption("--zonal-suite-forbid", metavar="DIR",
                    help="fail if the sqlalchemy under test was imported from DIR")


def pytest_configure(config: pytest.Config) -> None:
    _STATE["enabled"] = bool(config.getoption("--zonal-pools"))
    for item in config.getoption("--zonal-option"):
        name, _, value = item.partition("=")
        _STATE["options"][name] = json.loads(value)
    forbid = config.getoption("--zonal-suite-forbid")
    where = Path(sqlalchemy.__file__ or "").resolve()
    if forbid and Path(forbid).resolve() in where.parents:
        raise pytest.UsageError(f"sqlalchemy was imported from {where}, not the installed one")


def pytest_report_header(config: pytest.Config) -> str:
    mode = "every PostgreSQL engine on zonal" if _STATE["enabled"] else "stock pools"
    return f"zonal_everywhere: {mode}; sqlalchemy {sqlalchemy.__version__} from " \
           f"{Path(sqlalchemy.__file__ or '').parent}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.user_properties.append(("nodeid", item.nodeid))


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--zonal-suite-report")
    if not path:
        return
    testing_pool = None
    testing = sys.modules.get("sqlalchemy.testing.config")
    db = getattr(testing, "db", None) if testing is not None else None
    if db is not None:
        pool = getattr(db, "pool", None) or getattr(getattr(db, "sync_engine", None), "pool",
                                                    None)
        testing_pool = type(pool).__name__
    Path(path).write_text(json.dumps({
        "zonal_pools": _STATE["enabled"],
        "sqlalchemy_version": sqlalchemy.__version__,
        "sqlalchemy_path": str(Path(sqlalchemy.__file__ or "").parent),
        "testing_db_pool": testing_pool,
        "engines": dict(sorted(_ENGINES.items())),
    }, indent=2))
