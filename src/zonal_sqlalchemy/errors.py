"""zonal's errors as SQLAlchemy users catch them."""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

from zonal_core import errors as core

__all__ = ["PoolTimeout"]


class PoolTimeout(core.PoolTimeout, sa_exc.TimeoutError):
    """No connection within ``timeout``: a :class:`zonal_core.PoolTimeout` that is
    also SQLAlchemy's ``TimeoutError``, so code catching either keeps working."""
