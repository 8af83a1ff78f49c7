"""The ``zonal doctor`` subcommand: options, then :func:`~zonal_tools.doctor.diagnose`
and the report on stdout.

Exit codes: 0 nothing to fix, 1 warnings, 2 problems (or no connection).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from zonal_core.config import DEFAULTS
from zonal_core.secrets import mask_url, redact
from zonal_tools.doctor import (
    CHECK_TIMEOUT,
    Deployment,
    DoctorError,
    connect_failure,
    diagnose,
    exit_code,
    secrets_of,
    write_report,
)
from zonal_tools.doctor.collect import check_url

__all__ = ["add_arguments", "positive_int", "run"]


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (for ``--instances`` and alike)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``zonal doctor``."""
    parser.add_argument(
        "url",
        metavar="URL",
        help="postgresql://USER[:PASSWORD]@HOST:PORT/DB (or leave the password to "
        "PGPASSWORD / ~/.pgpass); direct or through PgBouncer",
    )
    parser.add_argument(
        "--pgbouncer-admin", metavar="URL", default=None,
        help="PgBouncer's admin console, postgresql://USER@HOST:PORT/pgbouncer: read "
        "SHOW CONFIG, SHOW POOLS, SHOW DATABASES",
    )
    parser.add_argument(
        "--instances", type=positive_int, default=None, metavar="N",
        help="processes with a pool each, across all zones and machines",
    )
    parser.add_argument(
        "--pool-size", type=positive_int, default=None, metavar="N",
        help=f"the pool_size you run or plan (default: zonal's {DEFAULTS['pool_size']})",
    )
    parser.add_argument(
        "--cores", type=positive_int, default=None, metavar="N",
        help="CPU cores per instance (default: this machine's)",
    )
    parser.add_argument(
        "--connect-timeout", type=float, default=DEFAULTS["connect_timeout"], metavar="S",
        help=f"seconds per connection attempt (default {DEFAULTS['connect_timeout']:g})",
    )
    parser.add_argument(
        "--timeout", type=float, default=CHECK_TIMEOUT, metavar="S",
        help=f"seconds for the whole check (default {CHECK_TIMEOUT:g})",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON report")


def run(args: argparse.Namespace, stdout: TextIO | None = None,
        stderr: TextIO | None = None) -> int:
    """``zonal doctor``: write the report to ``stdout`` (default ``sys.stdout``);
    return 0, 1 (warnings) or 2 (problems, or no connection)."""
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    hidden = secrets_of([args.url, args.pgbouncer_admin])
    target = redact(mask_url(args.url), hidden)
    for url in (args.url, args.pgbouncer_admin):
        try:
            check_url(url)
        except DoctorError as exc:
            # not split where its owner meant: show none of it
            which = "the URL" if url == args.url else "the PgBouncer admin URL"
            err.write(f"zonal doctor: {which}: {exc}\n")
            return 2
    deployment = Deployment(instances=args.instances, pool_size=args.pool_size, cores=args.cores)
    try:
        report = diagnose(args.url, admin_url=args.pgbouncer_admin, deployment=deployment,
                          connect_timeout=args.connect_timeout, timeout=args.timeout)
    except DoctorError as exc:
        if args.json:
            write_report(connect_failure(target, str(exc)), out, as_json=True, hidden=hidden)
        else:
            err.write(f"zonal doctor: {target}: cannot connect: {exc}\n")
        return 2
    write_report(report, out, as_json=args.json, hidden=hidden)
    return exit_code(report)
