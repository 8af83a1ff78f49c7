"""zonal for Django.

::

    DATABASES = {"default": {
        "ENGINE": "zonal_django.backends.postgresql",
        "NAME": "appdb", "USER": "app", "PASSWORD": "secret",
        "CONN_HEALTH_CHECKS": True,                  # -> pre_ping
        "OPTIONS": {"zonal": {
            "zones": {"eu-west-1a": "10.0.1.5:6432", "eu-west-1b": "10.0.2.5:6432"},
            "local_zone": "eu-west-1a",
            "pool_size": 5, "timeout": 5, "pgbouncer": "transaction", "serverless": True,
        }},
    }}
    INSTALLED_APPS += ["zonal_django"]               # system checks, management commands
    MIDDLEWARE.insert(0, "zonal_django.middleware.ZonalRequestMiddleware")

:func:`direct_connection` gives a session of its own on a zone's ``direct``
endpoint (PostgreSQL itself, not PgBouncer); :func:`pool` the pool of an alias.
Nothing here imports psycopg or Django until it is called, so the backend can
report a missing psycopg 3 as ``ImproperlyConfigured``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

__all__ = ["direct_connection", "pool", "use_direct"]


def direct_connection(using: str = "default") -> AbstractContextManager[Any]:
    """A Django connection of its own on a zone's ``direct`` endpoint, closed at the
    end of the ``with`` block (see :mod:`zonal_django.direct`)."""
    from zonal_django.direct import direct_connection as impl

    return impl(using)


def use_direct(using: str = "default") -> AbstractContextManager[None]:
    """Route ``connections[using]`` to a ``direct`` endpoint inside the ``with``
    block (what ``manage.py migrate`` does)."""
    from zonal_django.direct import use_direct as impl

    return impl(using)


def pool(using: str = "default") -> Any:
    """The :class:`zonal_core.CorePool` of ``using`` in this process (built on first
    use): ``pool().stats()``, ``pool().trim()``."""
    from django.db import connections

    return connections[using].zonal_pool
