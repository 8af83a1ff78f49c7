"""Pool sizing: how many connections each instance's pool may hold.

Connections are counted across the whole system, never per process: forty instances
with ``pool_size=5`` hold up to 200 connections, and the database (or PgBouncer) has
to take every one of them at once, on the worst day (all instances busy, a zone
lost, a deploy in progress). :func:`size` works that out from a few facts and says
why, step by step; ``zonal size`` prints it, ``zonal doctor`` reuses it.

>>> plan = size(db_max_connections=200, instances=40, reserved=10, cores=4)
>>> plan.pool_size, plan.fits
(4, True)
>>> plan.steps[1].split(": ")[1]
'190 // 40 = 4 connections per instance.'

The model:

- Without PgBouncer every pooled connection is a server connection:
  ``instances x pool_size <= max_connections - reserved``. Zones do not add room:
  every zone reaches the same database (a primary behind per-zone endpoints), and
  ``max_total`` caps one instance across its zones.
- With PgBouncer (one per zone) the server side is bounded by PgBouncer's pools:
  ``zones x (pool size + reserve pool) <= max_connections - reserved``; the client
  side (zonal's pools) by each PgBouncer's ``max_client_conn``, sized for one zone
  lost (its instances fail over to a surviving zone, whose PgBouncer then serves
  twice its share). A client pool larger than PgBouncer's server pool only waits
  inside PgBouncer.
- In both cases a pool larger than ``(cores x 2) + effective_spindle_count`` (the
  classic PostgreSQL heuristic) per instance buys no throughput: it is an upper
  bound, never the answer by itself.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from zonal_core.config import MAX_CONNECTIONS
from zonal_core.errors import ZonalConfigError

__all__ = [
    "PGBOUNCER_DEFAULT_MAX_CLIENT_CONN",
    "Sizing",
    "SizingError",
    "add_arguments",
    "cpu_bound",
    "run",
    "size",
]

PGBOUNCER_DEFAULT_MAX_CLIENT_CONN = 100
"""PgBouncer's own default for ``max_client_conn``."""

EFFECTIVE_SPINDLES = 1
"""``effective_spindle_count`` of the classic formula: 1 for SSDs or a cached working set."""


class SizingError(ZonalConfigError):
    """The inputs cannot describe a real system (``reserved >= max_connections``, ...).

    ``field`` names the option (``--reserved``); the message says why and the fix.
    """


@dataclass(frozen=True)
class Sizing:
    """The answer of :func:`size`: a pool size, whether it fits, and the reasoning.

    ``pool_size`` is 0 when no pool fits; ``problems`` then say what must change.
    ``numbers`` holds every intermediate figure by name (also in ``--json``).
    """

    pool_size: int
    steps: tuple[str, ...]
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    numbers: dict[str, int] = field(default_factory=dict)

    @property
    def fits(self) -> bool:
        """True when a pool of at least one connection fits and nothing overflows."""
        return self.pool_size >= 1 and not self.problems

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``pool_size``, ``fits``, ``steps``, ``problems``, ...)."""
        out = asdict(self)
        out["fits"] = self.fits
        out["steps"] = list(self.steps)
        out["problems"] = list(self.problems)
        out["warnings"] = list(self.warnings)
        return out


def cpu_bound(cores: int, spindles: int = EFFECTIVE_SPINDLES) -> int:
    """The classic ``(cores x 2) + effective_spindle_count``.

    >>> cpu_bound(8)
    17
    """
    return cores * 2 + spindles


def _check(name: str, value: object, minimum: int, maximum: int = MAX_CONNECTIONS) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SizingError(name, f"must be a whole number, not {value!r}")
    if value < minimum:
        raise SizingError(name, f"must be at least {minimum}, not {value}")
    if value > maximum:
        raise SizingError(name, f"must be at most {maximum}, not {value}")
    return value


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def size(
    *,
    db_max_connections: int,
    instances: int,
    reserved: int = 0,
    cores: int | None = None,
    pgbouncer_pool_size: int | None = None,
    pgbouncer_reserve_pool: int = 0,
    max_client_conn: int | None = None,
    zones: int = 1,
) -> Sizing:
    """Per-instance ``pool_size`` for ``instances`` processes sharing one database.

    ``reserved``: connections kept free for anything but the application
    (``superuser_reserved_connections``, ``reserved_connections``, migrations,
    monitoring, a psql session). ``cores``: CPU cores per instance (default
    ``os.cpu_count()``). ``pgbouncer_pool_size``: PgBouncer's ``default_pool_size``
    (server connections per database and user), one PgBouncer per zone;
    ``pgbouncer_reserve_pool`` its ``reserve_pool_size``; ``max_client_conn`` its
    client limit, or None to be told what it must be. Raises :class:`SizingError`
    for inputs no system can have.

    >>> size(db_max_connections=100, instances=3, reserved=10, cores=2).pool_size
    5
    >>> size(db_max_connections=100, instances=200, reserved=10, cores=2).problems[0][:40]
    '200 instances need at least 200 connecti'
    """
    max_conn = _check("--db-max-connections", db_max_connections, 1)
    n = _check("--instances", instances, 1, 10**7)
    res = _check("--reserved", reserved, 0)
    if res >= max_conn:
        raise SizingError(
            "--reserved",
            f"{res} is not below --db-max-connections {max_conn}: nothing would be left "
            "for the application",
            fix="reserve a few connections (superuser_reserved_connections is 3 by "
            "default) or raise max_connections",
        )
    n_cores = _check("--cores", (os.cpu_count() or 1) if cores is None else cores, 1, 100_000)
    n_zones = _check("--zones", zones, 1, 1000)
    bouncer = None
    if pgbouncer_pool_size is not None:
        bouncer = _check("--pgbouncer-pool-size", pgbouncer_pool_size, 1)
    bouncer_reserve = _check("--pgbouncer-reserve-pool", pgbouncer_reserve_pool, 0)
    client_limit = None
    if max_client_conn is not None:
        client_limit = _check("--max-client-conn", max_client_conn, 1, 10**7)
    if bouncer is None and (max_client_conn is not None or pgbouncer_reserve_pool):
        raise SizingError(
            "--pgbouncer-pool-size",
            "is needed with --max-client-conn or --pgbouncer-reserve-pool (they describe "
            "a PgBouncer)",
            fix="add --pgbouncer-pool-size (PgBouncer's default_pool_size)",
        )

    available = max_conn - res
    cpu = cpu_bound(n_cores)
    steps = [
        f"The database takes {max_conn} connections; {res} stay reserved for "
        f"superusers, migrations and monitoring: {available} for the application."
    ]
    problems: list[str] = []
    warnings: list[str] = []
    numbers = {
        "db_max_connections": max_conn,
        "reserved": res,
        "available": available,
        "instances": n,
        "cores": n_cores,
        "cpu_bound": cpu,
        "zones": n_zones,
    }
    cpu_step = (
        f"CPU: {_plural(n_cores, 'core')} -> (cores x 2) + {EFFECTIVE_SPINDLES} = {cpu}; "
        "more concurrent queries than that per instance buy no throughput "
        "(upper bound only)."
    )

    if bouncer is None:
        budget = available // n
        numbers["per_instance_budget"] = budget
        steps.append(
            f"{n} instances each keep their own pool, so the budget is shared: "
            f"{available} // {n} = {budget} connections per instance."
        )
        steps.append(cpu_step)
        pool = min(budget, cpu)
        if budget < 1:
            problems.append(
                f"{n} instances need at least {n} connections, one each, but only "
                f"{available} are free: put PgBouncer (transaction mode) in front and "
                "pass --pgbouncer-pool-size, run fewer instances, or raise max_connections"
            )
            pool = 0
        elif n_zones > 1:
            steps.append(
                f"{n_zones} zones reach the same database, so zones add no room: "
                "pool_size is per zone and max_total caps an instance across zones "
                "(set both to the same number)."
            )
        if pool >= 1:
            total = n * pool
            numbers["system_total"] = total
            steps.append(
                f"pool_size = min({budget}, {cpu}) = {pool}: worst case {n} x {pool} = "
                f"{total} of {available} connections, {available - total} to spare."
            )
            if pool == 1:
                warnings.append(
                    "pool_size 1: one query at a time per instance; consider PgBouncer"
                )
        return Sizing(pool, tuple(steps), tuple(problems), tuple(warnings), numbers)

    # PgBouncer: server side bounded by its pools, client side by max_client_conn.
    server_total = n_zones * (bouncer + bouncer_reserve)
    numbers["pgbouncer_pool_size"] = bouncer
    numbers["pgbouncer_reserve_pool"] = bouncer_reserve
    numbers["server_total"] = server_total
    where = "one PgBouncer" if n_zones == 1 else f"{n_zones} PgBouncers, one per zone,"
    steps.append(
        f"Server side: {where} x ({bouncer} pool + {bouncer_reserve} reserve) = "
        f"{server_total} server connections of {available} free."
    )
    if server_total > available:
        fitting = available // n_zones - bouncer_reserve
        problems.append(
            f"PgBouncer may open {server_total} server connections but only {available} "
            f"are free: lower default_pool_size to {max(fitting, 0)} or raise max_connections"
        )
    if n_zones == 1:
        worst = n
        steps.append(f"Client side: all {n} instances connect to that one PgBouncer.")
    else:
        share = math.ceil(n / n_zones)
        worst = min(n, 2 * share)
        steps.append(
            f"Client side: {n} instances over {n_zones} zones = {share} per PgBouncer; "
            f"with one zone lost its instances fail over to another, which then serves "
            f"{worst}."
        )
    numbers["instances_per_pgbouncer"] = worst
    steps.append(cpu_step)
    steps.append(
        f"A pool larger than PgBouncer's {bouncer} server connections only waits inside "
        "PgBouncer: at most that many per instance."
    )
    pool = min(cpu, bouncer)
    bounds = f"min({cpu}, {bouncer}"
    if client_limit is not None:
        per_client = client_limit // worst
        numbers["max_client_conn"] = client_limit
        numbers["client_budget"] = per_client
        steps.append(
            f"max_client_conn {client_limit} // {worst} instances = {per_client} client "
            "connections per instance."
        )
        bounds += f", {per_client}"
        pool = min(pool, per_client)
        if per_client < 1:
            problems.append(
                f"{worst} instances at one PgBouncer need at least {worst} client "
                f"connections but max_client_conn is {client_limit}: raise max_client_conn "
                f"to {worst * min(cpu, bouncer)} (client connections are cheap: a file "
                "descriptor each)"
            )
            pool = 0
    if pool >= 1:
        clients = worst * pool
        numbers["clients_per_pgbouncer"] = clients
        steps.append(
            f"pool_size = {bounds}) = {pool}: up to {worst} x {pool} = {clients} client "
            "connections at one PgBouncer; the server never sees more than "
            f"{server_total}."
        )
        if client_limit is None:
            numbers["max_client_conn_needed"] = clients
            steps.append(
                f"Set max_client_conn >= {clients} on each PgBouncer (its default is "
                f"{PGBOUNCER_DEFAULT_MAX_CLIENT_CONN}), plus room for other clients."
            )
            if clients > PGBOUNCER_DEFAULT_MAX_CLIENT_CONN:
                warnings.append(
                    f"max_client_conn must be at least {clients}; PgBouncer's default "
                    f"{PGBOUNCER_DEFAULT_MAX_CLIENT_CONN} would refuse clients"
                )
    return Sizing(pool, tuple(steps), tuple(problems), tuple(warnings), numbers)


# -- the `zonal size` command ------------------------------------------------------


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``zonal size``."""
    parser.add_argument(
        "--db-max-connections", type=_whole, required=True, metavar="N",
        help="the server's max_connections",
    )
    parser.add_argument(
        "--instances", type=_whole, required=True, metavar="N",
        help="application processes with a pool each, across all zones and machines "
        "(gunicorn workers count one each; count the overlap of a rolling deploy)",
    )
    parser.add_argument(
        "--reserved", type=_whole, default=0, metavar="N",
        help="connections kept free for superusers, migrations, monitoring (default 0)",
    )
    parser.add_argument(
        "--cores", type=_whole, default=None, metavar="N",
        help=f"CPU cores per instance (default: this machine's, {os.cpu_count()})",
    )
    parser.add_argument(
        "--pgbouncer-pool-size", type=_whole, default=None, metavar="N",
        help="PgBouncer's default_pool_size, when the instances connect through PgBouncer",
    )
    parser.add_argument(
        "--pgbouncer-reserve-pool", type=_whole, default=0, metavar="N",
        help="PgBouncer's reserve_pool_size (default 0)",
    )
    parser.add_argument(
        "--max-client-conn", type=_whole, default=None, metavar="N",
        help="PgBouncer's max_client_conn (default: say what it must be)",
    )
    parser.add_argument(
        "--zones", type=_whole, default=1, metavar="N",
        help="zones the instances are spread over, one PgBouncer each (default 1)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON report")


def run(args: argparse.Namespace) -> int:
    """``zonal size``: 0 when a pool fits, 2 when none does or the inputs are impossible."""
    try:
        plan = size(
            db_max_connections=args.db_max_connections,
            instances=args.instances,
            reserved=args.reserved,
            cores=args.cores,
            pgbouncer_pool_size=args.pgbouncer_pool_size,
            pgbouncer_reserve_pool=args.pgbouncer_reserve_pool,
            max_client_conn=args.max_client_conn,
            zones=args.zones,
        )
    except SizingError as exc:
        if args.json:
            print(json.dumps({"error": str(exc), "field": exc.field}, indent=2))
        else:
            print(f"zonal size: error: {exc}", file=sys.stderr)
        return 2
    code = 0 if plan.fits else 2
    if args.json:
        print(json.dumps({**plan.as_dict(), "exit_code": code}, indent=2))
    else:
        print(render(plan))
    return code


def render(plan: Sizing) -> str:
    """The human report: numbered steps, then the answer (or what to change)."""
    lines = [f"{i}. {step}" for i, step in enumerate(plan.steps, 1)]
    lines.append("")
    for warning in plan.warnings:
        lines.append(f"warning: {warning}")
    for problem in plan.problems:
        lines.append(f"problem: {problem}")
    if plan.fits:
        lines.append(
            f"=> pool_size={plan.pool_size}, max_total={plan.pool_size} per instance"
        )
    else:
        lines.append("=> no pool size fits these numbers")
    return "\n".join(lines)

