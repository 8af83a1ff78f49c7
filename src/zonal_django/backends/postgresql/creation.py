"""Test databases with a pool in the way.

``CREATE DATABASE ... TEMPLATE`` and ``DROP DATABASE`` fail while any session is
connected to the database in question. Django closes its own connection first; here
the alias's pools are closed too, and behind PgBouncer, which keeps its server
connections after the clients left, those server sessions are ended on the server.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import creation as pg_creation

from zonal_django import pools

__all__ = ["DatabaseCreation"]


class DatabaseCreation(pg_creation.DatabaseCreation):
    """Django's PostgreSQL test-database creation, pool-aware."""

    def _release(self, dbname: str) -> None:
        pools.close_alias(self.connection.alias)
        plan = self.connection._zonal_plan_cache
        if plan is None or not plan[1].config.pgbouncer:
            return
        with self._nodb_cursor() as cursor:
            # PgBouncer's idle server connections to this database.
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()", [dbname])

    def _clone_test_db(self, suffix: Any, verbosity: int, keepdb: bool = False) -> None:
        self.connection.close()
        self._release(self.connection.settings_dict["NAME"])
        super()._clone_test_db(suffix, verbosity, keepdb)

    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
        self._release(test_database_name)
        super()._destroy_test_db(test_database_name, verbosity)
