"""The ``zonal_django`` app: system checks and management commands."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["ZonalConfig"]


class ZonalConfig(AppConfig):
    """Registers zonal's system checks (``zonal.E001``...)."""

    name = "zonal_django"
    label = "zonal_django"
    verbose_name = "zonal"

    def ready(self) -> None:
        from django.core import checks

        from zonal_django.checks import check_databases, check_middleware

        checks.register(check_databases, checks.Tags.database, "zonal")
        checks.register(check_middleware, "zonal")
