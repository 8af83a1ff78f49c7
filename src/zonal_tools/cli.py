"""The ``zonal`` command: one subcommand per module.

::

    $ zonal doctor postgresql://app@db:5432/appdb
    $ zonal size --db-max-connections 200 --instances 40 --reserved 10

Adding a subcommand is one line in :data:`COMMANDS`: a name, the module that holds
it, a one-line help. The module provides ``add_arguments(parser)`` and
``run(args) -> int`` (the exit code); it is imported only when the command line
needs it, so a slow or optional import of one command never slows the others.
``bench`` and ``demo`` live in the lab (``zonal_lab``, with its extra dependencies):
only naming them on the command line imports it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Protocol, cast

__all__ = ["COMMANDS", "REQUIRES", "Command", "MissingExtra", "build_parser", "main"]


class Command(Protocol):
    """What a subcommand module provides."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the subcommand's options on ``parser``."""

    def run(self, args: argparse.Namespace) -> int:
        """Do the work; return the process exit code."""


COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("doctor", "zonal_tools.doctor.cli", "check a server (or PgBouncer) against zonal's needs"),
    ("size", "zonal_tools.sizing", "per-instance pool size, with the reasoning"),
    ("bench", "zonal_lab.bench", "zonal side by side with other pools: figures, tables, plots"),
    ("demo", "zonal_lab.demo", "three local zones, a workload, a zone outage, live"),
)
"""(name, module, help) of every subcommand, in the order ``zonal --help`` lists them."""

REQUIRES: dict[str, tuple[tuple[str, ...], str]] = {
    "doctor": (("psycopg",), "psycopg"),
    "size": ((), ""),
    "bench": (("psycopg", "sqlalchemy", "matplotlib"), "bench"),
    "demo": (("psycopg", "sqlalchemy"), "lab"),
}
"""The modules each subcommand cannot run without, and the extra that brings them:
checked before anything is imported or started, so a missing one is one line."""


class MissingExtra(Exception):
    """A subcommand's dependency is not installed."""


def _check_installed(name: str) -> None:
    modules, extra = REQUIRES.get(name, ((), ""))
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(f"zonal {name} needs {', '.join(missing)}, which is not "
                           f'installed: pip install "zonal[{extra}]"')


def _version() -> str:
    try:
        return metadata.version("zonal")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _load(module: str) -> Command:
    return cast(Command, importlib.import_module(module))


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``zonal`` parser. Only the subcommand named in ``argv`` is imported and
    configured; ``zonal --help`` lists every subcommand from :data:`COMMANDS` alone,
    importing none (so the lab is loaded by ``zonal bench`` and ``zonal demo`` only)."""
    parser = argparse.ArgumentParser(
        prog="zonal",
        description="zonal: zone-aware, PgBouncer-safe, serverless-safe PostgreSQL pools.",
    )
    parser.add_argument("--version", action="version", version=f"zonal {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    # before the subcommand only flags can come, so the first word names it
    wanted = next((a for a in (argv or ()) if not a.startswith("-")), None)
    for name, module, help_text in COMMANDS:
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name != wanted:
            continue
        _check_installed(name)
        command = _load(module)
        command.add_arguments(command_parser)
        command_parser.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``zonal`` console script; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(args_list)
    except MissingExtra as exc:
        print(f"zonal: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(args_list)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 2
    try:
        return int(run(args))
    except KeyboardInterrupt:
        print("zonal: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
