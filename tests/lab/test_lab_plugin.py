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


HELPER_TESTS = textwrap.dedent(
    """
    from zonal_lab.pytest_plugin import lab_missing, require_lab, require_module

    def test_a_missing_module():
        require_module("zonal_no_such_module")

    def test_something_else_missing():
        lab_missing("the frobnicator is not installed")

    def test_a_module_that_is_there():
        assert require_module("json").dumps(1) == "1"

    def test_a_tls_lab_with_programs_that_are_not_there():
        require_lab(tls=True)
    """
)


@pytest.mark.parametrize("required", ["", "1"])
def test_the_helpers_skip_or_fail_as_the_fixture_does(tmp_path: Path, required: str) -> None:
    """lab_missing, require_module and require_lab: skipped with the reason, or failed
    under ZONAL_LAB_REQUIRE; at module level too (there a collection error)."""
    (tmp_path / "test_helpers.py").write_text(HELPER_TESTS)
    (tmp_path / "test_module_level.py").write_text(
        "from zonal_lab.pytest_plugin import require_module\n"
        "require_module('zonal_no_such_module')\n\n"
        "def test_never_runs():\n    pass\n")
    environ = {k: v for k, v in os.environ.items()
               if k not in ("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "DJANGO_SETTINGS_MODULE",
                            "ZONAL_LAB_REQUIRE")}
    environ.update(ZONAL_LAB_PG_BIN=str(tmp_path / "nowhere"), ZONAL_LAB_REQUIRE=required)

    def run(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
             "--rootdir", str(tmp_path), str(tmp_path / name)],
            capture_output=True, text=True, cwd=tmp_path, env=environ, timeout=120,
            check=False)

    helpers, module = run("test_helpers.py"), run("test_module_level.py")
    if required:
        assert helpers.returncode == 1, helpers.stdout
        assert "3 failed, 1 passed" in helpers.stdout, helpers.stdout
        assert helpers.stdout.count("(and ZONAL_LAB_REQUIRE is set)") >= 3, helpers.stdout
        assert module.returncode == 2, module.stdout
        assert "1 error" in module.stdout and "ZONAL_LAB_REQUIRE is set" in module.stdout
    else:
        assert helpers.returncode == 0, helpers.stdout
        assert "1 passed, 3 skipped" in helpers.stdout, helpers.stdout
        assert "the frobnicator is not installed" in helpers.stdout
        assert "zonal_no_such_module cannot be imported" in helpers.stdout
        assert "ZONAL_LAB_PG_BIN=" in helpers.stdout
        assert module.returncode == 5, module.stdout  # (the module skipped: no tests)
        assert "1 skipped" in module.stdout, module.stdout


def test_the_cache_never_stops_a_pinned_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    """Django's session lab is pinned: however many other labs the session asks for,
    the least recently used that goes is never that one."""
    from zonal_lab import pytest_plugin

    class FakeLab:
        def __init__(self, **kwargs: object) -> None:
            self.name, self.running = kwargs["name"], False

        def start(self) -> FakeLab:
            self.running = True
            return self

        def stop(self) -> None:
            self.running = False

    monkeypatch.setattr(pytest_plugin, "Lab", FakeLab)
    cache = pytest_plugin.LabCache(max_labs=2)
    django = cache.get(("django",), pin=True, name="django")
    others = [cache.get((n,), name=n) for n in ("a", "b", "c")]
    assert django.running
    assert [lab.running for lab in others] == [False, False, True]
    assert cache.get(("django",), name="django") is django
    cache.close()
    assert not django.running
