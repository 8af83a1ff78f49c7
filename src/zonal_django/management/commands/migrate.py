"""``manage.py migrate`` on a direct endpoint: migrations bypass the transaction pooler.

With ``zonal_django`` in ``INSTALLED_APPS`` this replaces Django's ``migrate``: the
same command, run inside :func:`zonal_django.use_direct` for the chosen database,
so DDL, ``SET`` statements of migrations and non-atomic operations (``CREATE INDEX
CONCURRENTLY``) run on PostgreSQL itself, not through PgBouncer.
"""

from __future__ import annotations

from typing import Any

from django.core.management.commands import migrate
from django.db import connections

from zonal_django.direct import candidates, use_direct


class Command(migrate.Command):
    """Django's ``migrate``, on a zone's ``direct`` endpoint when there is one."""

    def handle(self, *args: Any, **options: Any) -> Any:
        alias = options.get("database") or "default"
        conn = connections[alias]
        if not hasattr(conn, "zonal_plan"):
            return super().handle(*args, **options)
        config = conn.zonal_plan(conn.get_connection_params()).config
        if not candidates(config, allow_pooler=False):
            self.stderr.write(
                f"zonal: no 'direct' endpoint for {alias!r} (pgbouncer={config.pgbouncer!r}); "
                "migrating through the pooler")
            return super().handle(*args, **options)
        with use_direct(alias):
            return super().handle(*args, **options)
