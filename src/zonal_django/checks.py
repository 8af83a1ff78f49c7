"""System checks (``manage.py check``): zonal's misconfigurations, by id.

========== ==============================================================
zonal.E001 ``OPTIONS`` / ``OPTIONS["zonal"]`` is not a dict
zonal.E002 Django's ``OPTIONS["pool"]`` together with zonal
zonal.E003 ``CONN_MAX_AGE`` is not 0
zonal.E004 ``HOST``/``PORT`` (or host/port options) together with ``zones``
zonal.E005 ``CONN_HEALTH_CHECKS`` True but ``pre_ping`` False
zonal.E006 an invalid zonal option (the message names the field and the fix)
zonal.E007 ``local_zone`` is not one of the zones
zonal.E008 ``DISABLE_SERVER_SIDE_CURSORS = False`` in PgBouncer transaction mode
zonal.E009 ``assume_role`` in PgBouncer transaction mode
zonal.E010 ``prepare_threshold`` not None in PgBouncer transaction mode
zonal.E011 ``OPTIONS["options"]`` (a startup parameter PgBouncer refuses)
zonal.E012 an ``OPTIONS`` key that looks like a misspelled ``"zonal"``
zonal.E013 a zonal option in ``OPTIONS`` instead of ``OPTIONS["zonal"]``
zonal.E014 an ``OPTIONS`` key that is no libpq connection parameter (did you mean...)
zonal.W001 PgBouncer and no ``direct`` endpoint: migrations go through PgBouncer
zonal.W002 zonal databases but no ``ZonalRequestMiddleware``
========== ==============================================================
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

from zonal_django.conf import is_zonal_engine, problems_for

__all__ = ["check_databases", "check_middleware"]

MIDDLEWARE = "zonal_django.middleware.ZonalRequestMiddleware"


def check_databases(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Every zonal alias of ``DATABASES``, checked without connecting."""
    out: list[checks.CheckMessage] = []
    for alias, sd in settings.DATABASES.items():
        if not is_zonal_engine(sd):
            continue
        problems, _ = problems_for(alias, sd)
        for p in problems:
            cls = checks.Warning if p.warning else checks.Error
            out.append(cls(p.msg, hint=p.hint, id=p.id, obj=f"DATABASES[{alias!r}]"))
    return out


def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """zonal aliases work without the middleware, but under ASGI a connection is only
    returned when Django's request_finished runs; the middleware also trims."""
    if not any(is_zonal_engine(sd) for sd in settings.DATABASES.values()):
        return []
    if MIDDLEWARE in (getattr(settings, "MIDDLEWARE", None) or []):
        return []
    return [checks.Warning(
        "zonal databases are configured but ZonalRequestMiddleware is not in MIDDLEWARE",
        hint=f'MIDDLEWARE.insert(0, "{MIDDLEWARE}")', id="zonal.W002")]
