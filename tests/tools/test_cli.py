"""The ``zonal`` command: help, version, the subcommand registry, and the real
process (``python -m zonal_tools.cli``) against a lab zone."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from zonal_lab import Lab
from zonal_tools import cli

pytestmark = pytest.mark.timeout(60)


def zonal(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the command as a user would, in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "zonal_tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_help_lists_the_registered_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    names = [name for name, _, _ in cli.COMMANDS]
    assert {"doctor", "size", "demo"} <= set(names)
    assert all(name in out for name in names)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("zonal ")


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: zonal" in capsys.readouterr().out


def test_every_registered_module_has_the_two_functions() -> None:
    import importlib

    for _, module, help_text in cli.COMMANDS:
        mod = importlib.import_module(module)
        assert callable(mod.add_arguments) and callable(mod.run), module
        assert help_text


def test_a_new_command_is_one_registration(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = types.ModuleType("zonal_fake_command")

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--times", type=int, default=1)

    def run(args: argparse.Namespace) -> int:
        print("hello " * args.times)
        return 7

    fake.add_arguments = add_arguments  # type: ignore[attr-defined]
    fake.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "zonal_fake_command", fake)
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, ("hello", "zonal_fake_command", "say")))
    assert cli.main(["hello", "--times", "2"]) == 7
    assert capsys.readouterr().out.strip() == "hello hello"


def test_only_the_named_command_is_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    # a command whose module cannot even be imported does not break the others
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, ("broken", "no_such_module_x", "x")))
    assert cli.main(["size", "--db-max-connections", "10", "--instances", "1", "--cores", "1"]) == 0


def test_the_product_never_loads_the_lab() -> None:
    """zonal_tools (``zonal --help``, ``zonal size``, doctor), the adapters and their
    management commands import no zonal_lab; only ``zonal bench``/``zonal demo`` may."""
    code = (
        "import sys\n"
        "import zonal_core, zonal_sqlalchemy, zonal_django, zonal_tools.sizing\n"
        "import zonal_tools.doctor, zonal_tools.doctor.cli\n"
        "import zonal_django.management.commands.zonal_doctor\n"
        "import zonal_django.management.commands.zonal_status\n"
        "from zonal_tools import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "cli.main(['size', '--db-max-connections', '10', '--instances', '1', '--cores', '1'])\n"
        "print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] == 'zonal_lab'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout, proc.stdout


def test_help_names_bench_and_demo_without_importing_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "COMMANDS", tuple(
        (name, "no_such_module_x" if name in ("bench", "demo") else module, help_text)
        for name, module, help_text in cli.COMMANDS))
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "bench" in out and "demo" in out


def test_size_as_a_process() -> None:
    proc = zonal("size", "--db-max-connections", "200", "--instances", "40", "--reserved", "10",
                 "--cores", "8")
    assert proc.returncode == 0, proc.stderr
    assert "190 // 40 = 4 connections per instance" in proc.stdout
    assert "=> pool_size=4, max_total=4 per instance" in proc.stdout
    proc = zonal("size", "--db-max-connections", "200", "--instances", "40", "--reserved", "200")
    assert proc.returncode == 2
    assert "--reserved: 200 is not below --db-max-connections 200" in proc.stderr
    proc = zonal("size", "--db-max-connections", "lots", "--instances", "4")
    assert proc.returncode == 2
    assert "must be a whole number, not 'lots'" in proc.stderr


def test_console_script() -> None:
    # installed next to the interpreter that runs the tests (pip install puts it there)
    script = Path(sys.executable).parent / "zonal"
    assert script.exists(), f"no console script at {script}: is zonal installed?"
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                          timeout=30, check=False)
    assert proc.returncode == 0
    assert proc.stdout.startswith("zonal ")


@pytest.mark.integration
@pytest.mark.pgbouncer
def test_doctor_as_a_process(zonal_lab: Any) -> None:
    lab: Lab = zonal_lab(
        zones=["a"],
        pgbouncer=True,
        server_settings={
            "max_connections": 20,
            "superuser_reserved_connections": 0,
            "idle_session_timeout": 0,
            "idle_in_transaction_session_timeout": 0,
        },
    )
    zone = lab["a"]
    proc = zonal("doctor", zone.url(), "--instances", "10", "--json")
    assert proc.returncode == 2, proc.stderr
    doc = json.loads(proc.stdout)
    problems = {f["id"] for f in doc["findings"] if f["level"] == "problem"}
    assert problems == {"capacity"}
    assert lab.password not in proc.stdout + proc.stderr

    proc = zonal("doctor", zone.url(pgbouncer=True), "--pgbouncer-admin",
                 zone.pgbouncer_admin_url())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "talking to PgBouncer 1." in proc.stdout
    assert "transaction mode, from the admin console" in " ".join(proc.stdout.split())
    assert lab.password not in proc.stdout + proc.stderr

    wrong = zone.url(pgbouncer=True).replace(lab.password, "NotThePassword42")
    proc = zonal("doctor", wrong)
    assert proc.returncode == 2
    assert "cannot connect" in proc.stderr
    assert "NotThePassword42" not in proc.stdout + proc.stderr
    assert lab.password not in proc.stdout + proc.stderr


@pytest.mark.parametrize(("command", "hidden", "extra"), [
    (["doctor", "postgresql://app@127.0.0.1:1/db"], "psycopg", "psycopg"),
    (["demo", "--duration", "1"], "sqlalchemy", "lab"),
    (["bench", "--quick"], "matplotlib", "bench"),
])
def test_a_missing_extra_is_one_line_and_exit_2_before_anything_starts(
        command: list[str], hidden: str, extra: str) -> None:
    """As after `pip install zonal` without the extra: no traceback, nothing started
    (the demo would start three servers), the extra to install named."""
    code = ("import sys, importlib.util as u\n"
            f"real = u.find_spec\nu.find_spec = lambda n, *a: None if n == {hidden!r} "
            "else real(n, *a)\n"
            "from zonal_tools.cli import main\n"
            f"sys.exit(main({command!r}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines == [f'zonal: zonal {command[0]} needs {hidden}, which is not installed: '
                     f'pip install "zonal[{extra}]"'], out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
