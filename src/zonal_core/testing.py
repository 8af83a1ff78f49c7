"""A fake driver for unit tests and benchmarks: no database, exact timing.

Each endpoint (by ``"host:port"`` or by zone name) can be told to refuse, hang,
answer "too many clients", refuse the password, or take some time to connect. With
a :class:`~zonal_core.clock.FakeClock`, a hang or a latency advances that clock
instead of sleeping, so a timeout test runs in microseconds.

>>> from zonal_core.clock import FakeClock
>>> drv = FakeDriver(FakeClock())
>>> drv.set("a", "refuse")
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from typing import Any

from zonal_core.clock import FakeClock
from zonal_core.topology import Endpoint

__all__ = ["AsyncFakeDriver", "FakeConnection", "FakeDBError", "FakeDriver"]

BEHAVIOURS = ("ok", "refuse", "hang", "busy", "starting", "auth", "error")


class FakeDBError(Exception):
    """A driver error with a SQLSTATE, shaped like psycopg's."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class FakeConnection:
    """What :meth:`FakeDriver.connect` returns."""

    def __init__(self, ident: int, endpoint: Endpoint) -> None:
        self.id = ident
        self.endpoint = endpoint
        self.closed = False
        self.broken = False  # a ping or reset on it fails (backend terminated)
        self.in_transaction = False

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<FakeConnection #{self.id} {self.endpoint.address}{state}>"


class FakeDriver:
    """A :class:`zonal_core.driver.Driver` with scripted failures."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock
        self.connect_behaviour: dict[str, str] = {}
        self.ping_behaviour: dict[str, str] = {}
        self.latency: dict[str, float] = {}
        self.sequences: dict[str, list[str]] = {}
        self.opened: list[FakeConnection] = []
        self.connect_attempts = 0
        self.pings = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # -- scripting ------------------------------------------------------------

    def set(self, target: str, behaviour: str, *, ping: str | None = None) -> None:
        """Script connects to ``target`` (zone name or ``host:port``)."""
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"behaviour must be one of {BEHAVIOURS}")
        self.connect_behaviour[target] = behaviour
        if ping is not None:
            self.ping_behaviour[target] = ping

    def set_ping(self, target: str, behaviour: str) -> None:
        """Script pings on connections of ``target``: ok, error or hang."""
        self.ping_behaviour[target] = behaviour

    def script(self, target: str, behaviours: list[str]) -> None:
        """The next connects to ``target`` behave as listed, then as :meth:`set` says."""
        self.sequences[target] = list(behaviours)

    def _lookup(self, table: dict[str, Any], ep: Endpoint, default: Any) -> Any:
        return table.get(ep.address, table.get(ep.zone, default))

    @property
    def open_connections(self) -> list[FakeConnection]:
        return [c for c in self.opened if not c.closed]

    def _elapse(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self.clock is not None:
            self.clock.advance(seconds)
        else:
            time.sleep(seconds)

    # -- the Driver protocol --------------------------------------------------

    def connect(self, endpoint: Endpoint, timeout: float) -> FakeConnection:
        delay, outcome = self._plan(endpoint, timeout)
        self._elapse(delay)
        return self._conclude(endpoint, outcome)

    def _plan(self, endpoint: Endpoint, timeout: float) -> tuple[float, str]:
        """How long this connect takes, and how it ends."""
        with self._lock:
            self.connect_attempts += 1
            seq = self._lookup(self.sequences, endpoint, None)
            behaviour = seq.pop(0) if seq else self._lookup(
                self.connect_behaviour, endpoint, "ok")
        latency = self._lookup(self.latency, endpoint, 0.0)
        if behaviour == "hang" or latency > timeout:
            return timeout, "timeout"
        return latency, behaviour

    def _conclude(self, endpoint: Endpoint, outcome: str) -> FakeConnection:
        if outcome == "timeout":
            raise TimeoutError(f"connection to {endpoint.address} timed out")
        if outcome == "refuse":
            raise FakeDBError(f"connection to {endpoint.address} failed: Connection refused")
        # As psycopg reports them: connect-time server errors carry no SQLSTATE, only
        # the server's message.
        if outcome == "busy":
            raise FakeDBError(f"connection failed: connection to server at "
                              f"{endpoint.address} failed: FATAL:  sorry, too many clients "
                              "already")
        if outcome == "starting":
            raise FakeDBError(f"connection failed: connection to server at "
                              f"{endpoint.address} failed: FATAL:  the database system is "
                              "starting up")
        if outcome == "auth":
            raise FakeDBError(f"connection failed: connection to server at "
                              f"{endpoint.address} failed: FATAL:  password authentication "
                              "failed for user \"app\"")
        if outcome == "error":
            raise FakeDBError("something else went wrong")
        conn = FakeConnection(next(self._ids), endpoint)
        with self._lock:
            self.opened.append(conn)
        return conn

    def ping(self, conn: FakeConnection, timeout: float) -> None:
        self.pings += 1
        behaviour = self._lookup(self.ping_behaviour, conn.endpoint, "ok")
        if conn.closed:
            raise FakeDBError("connection is closed")
        if behaviour == "hang":
            self._elapse(timeout)
            raise TimeoutError(f"ping gave no answer in {timeout:g}s")
        if behaviour == "error" or conn.broken:
            raise FakeDBError("server closed the connection unexpectedly", "57P01")

    def reset(self, conn: FakeConnection) -> bool:
        conn.in_transaction = False
        return not conn.broken and not conn.closed

    def close(self, conn: FakeConnection) -> None:
        conn.closed = True


class AsyncFakeDriver:
    """The async face of a :class:`FakeDriver` (same scripting, same records)."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.sync = FakeDriver(clock)

    def set(self, target: str, behaviour: str, *, ping: str | None = None) -> None:
        self.sync.set(target, behaviour, ping=ping)

    def set_ping(self, target: str, behaviour: str) -> None:
        self.sync.set_ping(target, behaviour)

    @property
    def opened(self) -> list[FakeConnection]:
        return self.sync.opened

    @property
    def open_connections(self) -> list[FakeConnection]:
        return self.sync.open_connections

    async def connect(self, endpoint: Endpoint, timeout: float) -> FakeConnection:
        # Time passes for this task only: other tasks (a hedged connect) run meanwhile.
        delay, outcome = self.sync._plan(endpoint, timeout)
        if self.sync.clock is not None:
            self.sync.clock.advance(delay)
        elif delay > 0:
            await asyncio.sleep(delay)
        return self.sync._conclude(endpoint, outcome)

    async def ping(self, conn: FakeConnection, timeout: float) -> None:
        self.sync.ping(conn, timeout)

    async def reset(self, conn: FakeConnection) -> bool:
        return self.sync.reset(conn)

    async def close(self, conn: FakeConnection) -> None:
        self.sync.close(conn)
