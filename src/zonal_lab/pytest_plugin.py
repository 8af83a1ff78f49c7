"""pytest plugin (entry point ``zonal``): real PostgreSQL zones for tests.

::

    def test_failover(zonal_lab):
        lab = zonal_lab(zones=["a", "b"], pgbouncer=True)
        lab["a"].kill()       # started again after the test

``zonal_lab(...)`` returns a running :class:`~zonal_lab.Lab`. Labs are session-wide:
one per distinct set of arguments, started on first use and stopped at the end of
the session (at most ``ZONAL_LAB_MAX_LABS``, default 4, kept at once; the least
recently used goes first). After every test that used a lab, its faults are reset:
proxies healed, paused zones resumed, killed zones started. Connections a test left
open are the test's to close.

Tests that need PgBouncer are skipped, with the reason, when it is not installed:
mark them ``@pytest.mark.pgbouncer``, or just ask for ``pgbouncer=True``. Likewise
when no PostgreSQL server programs are found. Set ``ZONAL_LAB_REQUIRE=1`` (CI) to
fail instead of skipping.

Everything a test finds missing from its environment goes through one helper,
so that ``ZONAL_LAB_REQUIRE`` turns it into a failure too::

    from zonal_lab.pytest_plugin import lab_missing, require_lab, require_module

    require_lab(pgbouncer=True, tls=False)  # the lab's programs, before a Lab(...) of one's own
    fastapi = require_module("fastapi")     # a package of the [dev] extra
    lab_missing("uvicorn is not installed")  # anything else the test found missing
"""

from __future__ import annotations

import importlib
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from types import ModuleType
from typing import Any, NoReturn, Protocol

import pytest

from zonal_lab.binaries import find_pgbouncer, find_postgres
from zonal_lab.errors import LabError
from zonal_lab.lab import Lab

__all__ = [
    "LabCache",
    "LabFactory",
    "lab_missing",
    "lab_required",
    "pgbouncer_available",
    "require_lab",
    "require_module",
    "zonal_lab",
    "zonal_lab_cache",
]

_Key = tuple[object, ...]


def pgbouncer_available() -> bool:
    """True if the lab can find a ``pgbouncer`` program."""
    return _pgbouncer_missing() is None


def _pgbouncer_missing() -> str | None:
    """Why the lab has no PgBouncer, or None when it has one."""
    try:
        found = find_pgbouncer()
    except LabError as exc:  # ZONAL_LAB_PGBOUNCER points at nothing: say so
        return str(exc)
    if found is None:
        return "PgBouncer is not installed (apt-get install pgbouncer, or ZONAL_LAB_PGBOUNCER)"
    return None


def lab_required() -> bool:
    """True when ``ZONAL_LAB_REQUIRE`` is set (to anything but ``0``)."""
    return os.environ.get("ZONAL_LAB_REQUIRE", "") not in ("", "0")


def lab_missing(reason: str) -> NoReturn:
    """What the test needs from its environment is missing (the lab's programs, a
    package of the [dev] extra, ...): skip with ``reason``, or fail when
    ``ZONAL_LAB_REQUIRE`` is set. The one way tests give up for want of something;
    also usable at module level (the whole module is skipped)."""
    if lab_required():
        pytest.fail(f"{reason} (and ZONAL_LAB_REQUIRE is set)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_lab(pgbouncer: bool = False, tls: bool = False) -> None:
    """:func:`lab_missing` unless the lab can start: PostgreSQL's server programs
    (built with SSL if ``tls``), and PgBouncer if ``pgbouncer``."""
    try:
        find_postgres(tls=tls)
    except LabError as exc:
        lab_missing(str(exc))
    if pgbouncer:
        reason = _pgbouncer_missing()
        if reason is not None:
            lab_missing(reason)


def require_module(name: str) -> ModuleType:
    """The module ``name``, imported; :func:`lab_missing` if it cannot be (the test
    environment is ``pip install -e ".[dev]"``)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        lab_missing(f"{name} cannot be imported ({exc}; fix: pip install -e \".[dev]\")")


# (the names these had before they were public)
_missing = lab_missing


def _require(pgbouncer: bool) -> None:
    require_lab(pgbouncer=pgbouncer)


def _frozen(settings: Mapping[str, object] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, repr(v)) for k, v in (settings or {}).items()))


class LabCache:
    """Running labs by their arguments, least recently used first."""

    def __init__(self, max_labs: int) -> None:
        self.max_labs = max(1, max_labs)
        self._labs: OrderedDict[_Key, Lab] = OrderedDict()
        self._pinned: set[_Key] = set()

    def get(self, key: _Key, *, pin: bool = False, **kwargs: Any) -> Lab:
        """The running lab for ``key``, started with ``kwargs`` if there is none.
        Starting one stops the least recently used beyond ``max_labs``, but never a
        pinned one: ``pin`` for a lab that a session-wide fixture holds (Django's
        test database lives in it), which must run until the session ends."""
        lab = self._labs.get(key)
        if lab is not None:
            self._labs.move_to_end(key)
        else:
            while len(self._labs) >= self.max_labs:
                oldest = next((k for k in self._labs if k not in self._pinned), None)
                if oldest is None:
                    break  # every running lab is pinned
                self._labs.pop(oldest).stop()
            lab = Lab(**kwargs).start()
            self._labs[key] = lab
        if pin:
            self._pinned.add(key)
        return lab

    def discard(self, lab: Lab) -> None:
        """Stop ``lab`` and forget it (its faults could not be reset)."""
        for key, cached in list(self._labs.items()):
            if cached is lab:
                del self._labs[key]
                self._pinned.discard(key)
        lab.stop()

    def close(self) -> None:
        """Stop every lab."""
        while self._labs:
            _, lab = self._labs.popitem()
            lab.stop()


class LabFactory(Protocol):
    """The ``zonal_lab`` fixture: call it for a running lab."""

    def __call__(
        self,
        zones: Iterable[str] = ("a", "b"),
        pgbouncer: bool = False,
        server_settings: Mapping[str, object] | None = None,
        pgbouncer_settings: Mapping[str, object] | None = None,
    ) -> Lab: ...


def pytest_configure(config: pytest.Config) -> None:
    """Declare the ``pgbouncer`` marker for projects that use the plugin."""
    config.addinivalue_line("markers", "pgbouncer: needs PgBouncer (skipped without it)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip ``@pytest.mark.pgbouncer`` tests when PgBouncer is not installed."""
    if item.get_closest_marker("pgbouncer") is not None and not pgbouncer_available():
        lab_missing(_pgbouncer_missing() or "PgBouncer is not installed")


@pytest.fixture(scope="session")
def zonal_lab_cache() -> Iterator[LabCache]:
    """The session's running labs; stopped when the session ends."""
    cache = LabCache(int(os.environ.get("ZONAL_LAB_MAX_LABS", "4")))
    try:
        yield cache
    finally:
        cache.close()


@pytest.fixture
def zonal_lab(zonal_lab_cache: LabCache) -> Iterator[LabFactory]:
    """A factory of running labs (session-wide); faults are reset after the test."""
    used: list[Lab] = []

    def factory(
        zones: Iterable[str] = ("a", "b"),
        pgbouncer: bool = False,
        server_settings: Mapping[str, object] | None = None,
        pgbouncer_settings: Mapping[str, object] | None = None,
    ) -> Lab:
        require_lab(pgbouncer=pgbouncer)
        names = tuple(zones)
        key = (names, pgbouncer, _frozen(server_settings), _frozen(pgbouncer_settings))
        lab = zonal_lab_cache.get(
            key,
            zones=names,
            pgbouncer=pgbouncer,
            server_settings=server_settings,
            pgbouncer_settings=pgbouncer_settings,
        )
        if lab not in used:
            used.append(lab)
        return lab

    yield factory
    for lab in used:
        try:
            lab.reset_faults()
        except Exception:
            zonal_lab_cache.discard(lab)  # the next test gets a fresh one
            raise
