"""``manage.py zonal_status``: each zonal database's zones, health and pool figures.

Opens one connection per alias through its pool (``--no-connect`` to skip) and
probes every endpoint with a bounded connect (``--no-probe`` to skip), then prints a
table per alias, or JSON with ``--json``.

Exit status, so that it can gate a deploy: 0 every probe and the pool's connection
succeeded; 1 an endpoint is down or the pool cannot connect (a wrong password fails
both); 2 it could not run (an unknown or non-zonal alias, settings zonal refuses).
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from zonal_core.pgerrors import safe_description
from zonal_core.psycopg_driver import PsycopgDriver
from zonal_core.topology import Endpoint
from zonal_django.management.aliases import (
    EXIT_FAILED,
    alias_settings,
    endpoints,
    zonal_aliases,
)


def probe(driver: PsycopgDriver, ep: Endpoint, timeout: float) -> str:
    """``ok 1.9 ms`` or why not, for one endpoint (a connection of its own)."""
    began = time.monotonic()
    try:
        conn = driver.connect(ep, timeout)
    except Exception as exc:
        return "down: " + safe_description(
            exc, [ep.password or "", str(driver.base.get("password") or "")])
    try:
        return f"ok {1000 * (time.monotonic() - began):.1f} ms"
    finally:
        conn.close()


class Command(BaseCommand):
    help = ("Show each zonal database's zones: health, routing and pool figures. "
            "Exit 0: all up; 1: an endpoint down or the pool cannot connect; "
            "2: could not run.")
    # Settings zonal refuses are exit 2 here; as system check errors they would be 1.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", action="append", help="alias (repeatable); "
                            "default: every zonal alias")
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.add_argument("--no-connect", action="store_true",
                            help="do not open a connection through the pool")
        parser.add_argument("--no-probe", action="store_true",
                            help="do not probe each endpoint")

    def handle(self, *args: Any, **options: Any) -> None:
        aliases = zonal_aliases(options["database"])
        for alias in aliases:
            alias_settings(alias)  # every alias usable, or exit 2 before any output
        report: dict[str, Any] = {}
        for alias in aliases:
            report[alias] = self._alias(alias, options)
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, default=str))
        else:
            for alias, data in report.items():
                self._table(alias, data)
        failed = [f"{alias}: {', '.join(data['failed'])}"
                  for alias, data in report.items() if data["failed"]]
        if failed:
            raise CommandError("; ".join(failed), returncode=EXIT_FAILED)

    def _alias(self, alias: str, options: dict[str, Any]) -> dict[str, Any]:
        conn = connections[alias]
        settings = alias_settings(alias)
        config = settings.config
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
            timeout = min(config.connect_timeout, 2.0)
            for ep, direct in endpoints(config):
                key = ep.key + (" (direct)" if direct else "")
                probes[key] = probe(settings.driver, ep, timeout)
        failed = [f"probe {key} down" for key, result in probes.items()
                  if not result.startswith("ok")]
        if error:
            failed.insert(0, "the pool cannot connect")
        stats = pool.stats()
        return {"pool": stats.name, "version": stats.version, "local_zone": stats.local_zone,
                "preferred_zone": stats.preferred_zone, "pgbouncer": config.pgbouncer,
                "serverless": config.serverless, "max_total": stats.max_total,
                "ok": not failed, "failed": failed, "error": error, "probes": probes,
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
