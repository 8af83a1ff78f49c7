"""zonal's errors as SQLAlchemy users catch them."""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

from zonal_core import errors as core

__all__ = ["NoHealthyZone", "PoolTimeout"]


class PoolTimeout(core.PoolTimeout, sa_exc.TimeoutError):
    """No connection within ``timeout``: a :class:`zonal_core.PoolTimeout` that is
    also SQLAlchemy's ``TimeoutError``, so code catching either keeps working."""


class NoHealthyZone(core.NoHealthyZone, sa_exc.OperationalError):
    """Every zone was tried and failed within ``timeout``: a
    :class:`zonal_core.NoHealthyZone` that is also SQLAlchemy's ``OperationalError``
    wrapping the last driver error (``.orig``), as a failed connect through
    SQLAlchemy's own pools is. The message names every zone's state."""

    def __init__(self, message: str, orig: BaseException | None) -> None:
        sa_exc.OperationalError.__init__(self, None, None, orig)  # type: ignore[arg-type]
        self.zonal_message = message
        self.args = (message,)

    def __str__(self) -> str:
        return self.zonal_message

    def __reduce__(self) -> tuple[type[NoHealthyZone], tuple[str, BaseException | None]]:
        return (type(self), (self.zonal_message, self.orig))
