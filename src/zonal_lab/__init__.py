"""The local multi-zone lab: real PostgreSQL zones, PgBouncer and a fault proxy."""
