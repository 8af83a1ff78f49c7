"""What the core needs from an adapter: connect, ping, reset, close.

The core never imports a database driver; SQLAlchemy and Django adapters (and the
fake driver of :mod:`zonal_core.testing`) fill these protocols.
"""

from __future__ import annotations

from typing import Any, Protocol

from zonal_core.topology import Endpoint

__all__ = ["AsyncDriver", "Driver"]


class Driver(Protocol):
    """Blocking connection operations, each bounded by the timeout it is given."""

    def connect(self, endpoint: Endpoint, timeout: float) -> Any:
        """Open a connection to ``endpoint`` within ``timeout`` seconds, or raise."""
        ...

    def ping(self, conn: Any, timeout: float) -> None:
        """Raise if ``conn`` is unusable; raise ``TimeoutError`` past ``timeout``."""
        ...

    def reset(self, conn: Any) -> bool:
        """Make ``conn`` ready for the next user (roll back); False if it is broken."""
        ...

    def close(self, conn: Any) -> None:
        """Close ``conn``; must not block on an unresponsive server."""
        ...


class AsyncDriver(Protocol):
    """The same operations for asyncio."""

    async def connect(self, endpoint: Endpoint, timeout: float) -> Any: ...

    async def ping(self, conn: Any, timeout: float) -> None: ...

    async def reset(self, conn: Any) -> bool: ...

    async def close(self, conn: Any) -> None: ...
