"""zonal_django's tests: pytest-django against the lab's zones and PgBouncer.

Django is configured here, for this folder only: the settings module is
``djtest_settings`` (next to this file) and its database is filled in from a
session-wide lab (zones a and b, PgBouncer in transaction mode) just before
pytest-django creates the test database.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djtest_settings")

import django  # noqa: E402

django.setup()

from djtest_lab import LAB_KEY, ZONES, database_entry  # noqa: E402

from zonal_lab.pytest_plugin import LabCache, require_lab  # noqa: E402


@pytest.fixture(scope="session")
def djlab(zonal_lab_cache: LabCache) -> Any:
    """The lab behind the ``default`` alias (shared with zonal_lab(pgbouncer=True));
    pinned: the other labs of the session never push it out of the cache."""
    require_lab(pgbouncer=True)
    return zonal_lab_cache.get(LAB_KEY, pin=True, zones=ZONES, pgbouncer=True,
                               server_settings=None, pgbouncer_settings=None)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(djlab: Any) -> None:
    from django.conf import settings

    # In place: Django's connection handler holds this very dict.
    settings.DATABASES["default"].update(database_entry(djlab))


@pytest.fixture
def db_access(django_db_setup: None, django_db_blocker: Any) -> Any:
    """Database access outside Django's test transaction, for tests that build
    wrappers of their own (other aliases, other settings)."""
    with django_db_blocker.unblock():
        yield
