"""zonal for SQLAlchemy: ``create_engine(url, poolclass=ZonalPool, zones=...)``.

>>> from zonal_sqlalchemy import ZonalPool, ZonalAsyncPool, PoolTimeout
"""

from zonal_sqlalchemy.errors import PoolTimeout
from zonal_sqlalchemy.pool import ZonalAsyncPool, ZonalPool

__all__ = ["PoolTimeout", "ZonalAsyncPool", "ZonalPool"]
