"""zonal for SQLAlchemy: ``create_engine(url, poolclass=ZonalPool, zones=...)``."""
