"""The README's quick starts from a built wheel, as users install it: each extra set in
a new, empty virtual environment outside the checkout, then the quick start's code
against a real lab zone. (``zonal[lab,bench]`` and ``zonal bench`` are
tests/lab/test_bench_wheel.py.)"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.lab.test_bench_wheel import ROOT, _run

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    assert ROOT not in dist.parents
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q",
          "-w", str(dist), str(ROOT)], timeout=300)
    (built,) = dist.glob("zonal-*.whl")
    return built


def _venv(base: Path, wheel: Path, extras: str) -> Path:
    venv = base / f"venv-{extras.replace(',', '-')}"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
          f"{wheel}[{extras}]"], timeout=600)
    return python


def _script(python: Path, cwd: Path, code: str) -> str:
    path = cwd / "quickstart.py"
    path.write_text(textwrap.dedent(code))
    out = _run([str(python), str(path)], timeout=120, cwd=cwd).stdout
    return out


def test_sqlalchemy_extra_runs_the_sync_and_async_quick_starts(
        wheel: Path, zonal_lab: Any, tmp_path: Path) -> None:
    lab = zonal_lab(zones=["a", "b"])
    python = _venv(tmp_path, wheel, "sqlalchemy")
    out = _script(python, tmp_path, f"""
        import asyncio
        import zonal_sqlalchemy, sqlalchemy
        assert "site-packages" in zonal_sqlalchemy.__file__, zonal_sqlalchemy.__file__
        from sqlalchemy import create_engine, text
        from sqlalchemy.ext.asyncio import create_async_engine
        from zonal_sqlalchemy import ZonalAsyncPool, ZonalPool

        url = "postgresql+psycopg://{lab.user}:{lab.password}@/{lab.database}"
        zones = {lab.zones()!r}
        engine = create_engine(url, poolclass=ZonalPool, zones=zones, local_zone="a",
                               pool_size=5, pool_timeout=5, pool_pre_ping=True,
                               query_timeout=30)
        with engine.connect() as conn:
            print("sync", conn.execute(text("select 1")).scalar())
        print("zones", sorted(engine.pool.stats().zones))
        engine.pool.trim()

        async def main():
            aengine = create_async_engine(url, poolclass=ZonalAsyncPool, zones=zones,
                                          local_zone="a")
            async with aengine.connect() as conn:
                print("async", (await conn.execute(text("select 2"))).scalar())
            await aengine.dispose()

        asyncio.run(main())
        print("sqlalchemy", sqlalchemy.__version__)
    """)
    assert "sync 1" in out and "async 2" in out and "zones ['a', 'b']" in out, out


def test_django_extra_runs_the_django_quick_start(wheel: Path, zonal_lab: Any,
                                                  tmp_path: Path) -> None:
    lab = zonal_lab(zones=["a", "b"])
    python = _venv(tmp_path, wheel, "django")
    out = _script(python, tmp_path, f"""
        import django
        from django.conf import settings
        settings.configure(
            DATABASES={{"default": {{
                "ENGINE": "zonal_django.backends.postgresql",
                "NAME": {lab.database!r}, "USER": {lab.user!r}, "PASSWORD": {lab.password!r},
                "CONN_HEALTH_CHECKS": True,
                "OPTIONS": {{"zonal": {{"zones": {lab.zones()!r}, "local_zone": "a",
                                        "pool_size": 5, "timeout": 5}}}},
            }}}},
            INSTALLED_APPS=["zonal_django"],
            MIDDLEWARE=["zonal_django.middleware.ZonalRequestMiddleware"],
            USE_TZ=True,
        )
        django.setup()
        import zonal_django
        assert "site-packages" in zonal_django.__file__, zonal_django.__file__
        from django.core.management import call_command
        from django.db import connection
        call_command("check")
        with connection.cursor() as cursor:
            cursor.execute("select 3")
            print("django", cursor.fetchone()[0])
        connection.close()
        print("pool", sorted(connection.zonal_pool.stats().zones))
    """)
    assert "django 3" in out and "pool ['a', 'b']" in out, out
