"""zonal's errors as Django sees them.

A ``PoolTimeout`` (or ``NoHealthyZone``) is raised in Django as
``django.db.OperationalError``. These classes are both, so ``except
OperationalError`` (Django code, DRF, Sentry grouping) and ``except
zonal_core.PoolTimeout`` both catch them, and the message is zonal's: every zone's
state.
"""

from __future__ import annotations

from django.db import OperationalError

from zonal_core import errors as core

__all__ = ["NoHealthyZone", "PoolClosed", "PoolTimeout", "translate"]


class PoolTimeout(OperationalError, core.PoolTimeout):
    """No connection within ``timeout``: a ``django.db.OperationalError``."""


class NoHealthyZone(OperationalError, core.NoHealthyZone):
    """Every zone is ejected: a ``django.db.OperationalError``."""


class PoolClosed(OperationalError, core.PoolClosed):
    """The pool was closed: a ``django.db.OperationalError``."""


def translate(exc: core.ZonalError) -> Exception:
    """The Django-facing twin of a core pool error (same message), or ``exc``."""
    for core_cls, django_cls in ((core.PoolTimeout, PoolTimeout),
                                 (core.NoHealthyZone, NoHealthyZone),
                                 (core.PoolClosed, PoolClosed)):
        if isinstance(exc, core_cls):
            return django_cls(str(exc))
    return exc
