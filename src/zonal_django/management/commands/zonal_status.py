"""``manage.py zonal_status``: each zonal database's zones, health and pool figures.

Opens one connection per alias through its pool (``--no-connect`` to skip) and
probes every endpoint with a bounded connect (``--no-probe`` to skip), then prints a
table per alias, or JSON with ``--json``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import connections

from zonal_core.config import ZonalConfig
from zonal_core.pgerrors import safe_description
from zonal_core.psycopg_driver import PsycopgDriver
from zonal_core.topology import Endpoint
from zonal_django.conf import connect_params, is_zonal_engine


def probe(driver: PsycopgDriver, ep: Endpoint, timeout: float) -> str:
    """``ok 1.9 ms`` or why not, for one endpoint (a connection of its own)."""
    began = time.monotonic()
    try:
        conn = driver.connect(ep, timeout)
    except Exception as exc:
        return "down: " + safe_description(exc, [ep.password or ""])
    try:
        return f"ok {1000 * (time.monotonic() - began):.1f} ms"
    finally:
        conn.close()


class Command(BaseCommand):
    help = "Show each zonal database's zones: health, routing and pool figures."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", action="append", help="alias (repeatable); "
                            "default: every zonal alias")
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.add_argument("--no-connect", action="store_true",
                            help="do not open a connection through the pool")
        parser.add_argument("--no-probe", action="store_true",
                            help="do not probe each endpoint")

    def handle(self, *args: Any, **options: Any) -> None:
        aliases = options["database"] or [a for a in connections.settings
                                          if is_zonal_engine(connections.settings[a])]
        report: dict[str, Any] = {}
        for alias in aliases:
            report[alias] = self._alias(alias, options)
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, default=str))
            return
        for alias, data in report.items():
            self._table(alias, data)

    def _alias(self, alias: str, options: dict[str, Any]) -> dict[str, Any]:
        conn = connections[alias]
        params = conn.get_connection_params()
        config: ZonalConfig = conn.zonal_plan(params).config
        pool = conn.zonal_pool
        error = None
        if not options["no_connect"]:
            try:
                with conn.cursor() as cursor:
                    cursor.execute("SELECT 1")
            except Exception as exc:
                error = safe_description(exc)
            finally:
                conn.close()
        probes: dict[str, str] = {}
        if not options["no_probe"]:
            driver = PsycopgDriver({**connect_params(params), "autocommit": True}, config)
            timeout = min(config.connect_timeout, 2.0)
            for zone in config.topology.zones:
                for ep in zone.endpoints:
                    probes[ep.key] = probe(driver, ep, timeout)
                if zone.direct is not None:
                    probes[zone.direct.key + " (direct)"] = probe(driver, zone.direct, timeout)
        stats = pool.stats()
        return {"pool": stats.name, "version": stats.version, "local_zone": stats.local_zone,
                "preferred_zone": stats.preferred_zone, "pgbouncer": config.pgbouncer,
                "serverless": config.serverless, "max_total": stats.max_total,
                "error": error, "probes": probes,
                "zones": {name: {"state": z.state, "preferred": z.preferred, "open": z.open,
                                 "idle": z.idle, "in_use": z.in_use, "max": z.max,
                                 "connects": z.connects, "connect_errors": z.connect_errors,
                                 "timeouts": z.timeouts, "failovers": z.failovers,
                                 "ejections": z.ejections,
                                 "endpoints": [ep.display() for ep in
                                               config.topology.zone(name).endpoints]}
                          for name, z in stats.zones.items()}}

    def _table(self, alias: str, d: dict[str, Any]) -> None:
        w = self.stdout.write
        w(f"{alias}: pool {d['pool']!r}, local zone {d['local_zone']!r}, preferred "
          f"{d['preferred_zone']!r}, pgbouncer={d['pgbouncer']!r}, "
          f"serverless={d['serverless']}, max_total={d['max_total']}"
          + (f", version {d['version']}" if d["version"] else ""))
        if d["error"]:
            w(f"  connect through the pool FAILED: {d['error']}")
        head = ("zone", "state", "pref", "open", "idle", "in_use", "max", "connects",
                "errors", "timeouts", "failovers")
        rows = [head] + [
            (name, z["state"], "*" if z["preferred"] else "", z["open"], z["idle"],
             z["in_use"], z["max"], z["connects"], z["connect_errors"], z["timeouts"],
             z["failovers"]) for name, z in d["zones"].items()]
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
        for r in rows:
            w("  " + "  ".join(str(c).ljust(widths[i]) for i, c in enumerate(r)).rstrip())
        for key, result in d["probes"].items():
            w(f"  probe {key}: {result}")
