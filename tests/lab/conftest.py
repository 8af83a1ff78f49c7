"""Fixtures for the lab's own tests: two session-wide labs and a bounded thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from zonal_lab import Lab

SERVER_SETTINGS = {"max_connections": 30, "idle_session_timeout": "60s"}
PGBOUNCER_SETTINGS = {"default_pool_size": 4, "max_client_conn": 50}


@pytest.fixture
def lab(zonal_lab: Any) -> Lab:
    """Two zones, no PgBouncer, settings applied at start."""
    return zonal_lab(zones=["a", "b"], server_settings=SERVER_SETTINGS)  # type: ignore[no-any-return]


@pytest.fixture
def bouncer_lab(zonal_lab: Any) -> Lab:
    """Two zones, each with PgBouncer in transaction mode (skipped without it)."""
    return zonal_lab(  # type: ignore[no-any-return]
        zones=["a", "b"], pgbouncer=True, pgbouncer_settings=PGBOUNCER_SETTINGS
    )


class Background:
    """Run ``fn`` in a daemon thread; ``wait`` with a bound, never forever."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BaseException as exc:  # handed to the test through .error
            self.error = exc

    def wait(self, timeout: float) -> bool:
        """True if ``fn`` finished within ``timeout`` seconds."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


@pytest.fixture
def background() -> Iterator[Callable[[Callable[[], Any]], Background]]:
    """Start functions in bounded background threads; joined (bounded) at teardown."""
    started: list[Background] = []

    def start(fn: Callable[[], Any]) -> Background:
        job = Background(fn)
        started.append(job)
        return job

    yield start
    for job in started:
        job.wait(10)


@pytest.fixture
def django_db_open(request: pytest.FixtureRequest) -> Iterator[None]:
    """Django connections allowed, for the bench's Django subjects: pytest-django,
    when it is loaded, blocks database access outside its own fixtures once a Django
    test has run in the same session."""
    blocker = (request.getfixturevalue("django_db_blocker")
               if request.config.pluginmanager.hasplugin("django") else None)
    if blocker is None:  # (None too while Django is not configured)
        yield
        return
    with blocker.unblock():
        yield
