"""The pytest plugin, as a user's project sees it: a separate pytest run of a small
test file, with nothing but the installed ``zonal`` entry point."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

USER_TESTS = textwrap.dedent(
    """
    import psycopg
    import pytest

    seen = []

    def test_break_everything(zonal_lab):
        lab = zonal_lab(zones=["p", "q"])
        seen.append(lab)
        assert zonal_lab(zones=["p", "q"]) is lab   # same arguments, same lab
        lab["p"].kill()
        lab["q"].pause()
        lab["q"].proxy.refuse()

    def test_faults_were_reset(zonal_lab):
        lab = zonal_lab(zones=["p", "q"])
        assert lab is seen[0]                        # started once per session
        for zone in lab:
            assert zone.state == "running" and zone.proxy.state == "ok"
            with psycopg.connect(zone.url(proxy=True), connect_timeout=5) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)

    def test_other_arguments_other_lab(zonal_lab):
        lab = zonal_lab(zones=["p"], server_settings={"max_connections": 25})
        assert lab is not seen[0]
        with psycopg.connect(lab["p"].url(), connect_timeout=5) as conn:
            assert conn.execute("SHOW max_connections").fetchone() == ("25",)

    @pytest.mark.pgbouncer
    def test_marked_pgbouncer():
        pass

    def test_asks_for_pgbouncer(zonal_lab):
        zonal_lab(zones=["p"], pgbouncer=True)
    """
)


def run_pytest(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    # A user's project: none of this test session's plugin settings leak in.
    environ = {k: v for k, v in os.environ.items()
               if k not in ("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "DJANGO_SETTINGS_MODULE",
                            "ZONAL_LAB_REQUIRE")}
    environ.update(env)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rs",
            "--rootdir",
            str(tmp_path),
            *args,
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environ,
        timeout=120,
        check=False,
    )


def test_plugin_fixture_caches_labs_and_resets_faults(tmp_path: Path) -> None:
    # a PgBouncer that is not there: both PgBouncer tests skip, with the reason
    result = run_pytest(tmp_path, ZONAL_LAB_PGBOUNCER="/nonexistent/pgbouncer")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed, 2 skipped" in result.stdout, result.stdout
    # (the variable points at nothing: the reason names it)
    assert "ZONAL_LAB_PGBOUNCER='/nonexistent/pgbouncer'" in result.stdout


def test_plugin_fails_instead_of_skipping_when_required(tmp_path: Path) -> None:
    result = run_pytest(
        tmp_path,
        "-k",
        "pgbouncer",  # only the two PgBouncer tests: no lab is started
        ZONAL_LAB_PGBOUNCER="/nonexistent/pgbouncer",
        ZONAL_LAB_REQUIRE="1",
    )
    assert result.returncode == 1
    assert "1 failed, 3 deselected, 1 error" in result.stdout, result.stdout
    assert "ZONAL_LAB_REQUIRE is set" in result.stdout
