"""``manage.py zonal_doctor``: each zone's server settings against the pool's.

When ``zonal_lab.doctor`` (the ``zonal doctor`` command) is installed it is run for
every endpoint. Otherwise a built-in report is printed: server version,
``max_connections`` against what the pools may open, the server-side reapers
(``idle_session_timeout``, ``idle_in_transaction_session_timeout``), TCP keepalives
and ``statement_timeout``, with advice for the serverless profile and PgBouncer.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any
from urllib.parse import quote

from django.core.management.base import BaseCommand, CommandParser
from django.db import connections

from zonal_core.config import ZonalConfig
from zonal_core.pgerrors import safe_description
from zonal_core.psycopg_driver import PsycopgDriver
from zonal_core.topology import Endpoint
from zonal_django.conf import connect_params, is_zonal_engine

_SETTINGS = ("server_version", "max_connections", "superuser_reserved_connections",
             "idle_session_timeout", "idle_in_transaction_session_timeout",
             "statement_timeout", "tcp_keepalives_idle")


def server_report(conn: Any) -> dict[str, str]:
    """The settings zonal cares about, read with ``SHOW`` (also through PgBouncer)."""
    out: dict[str, str] = {}
    for name in _SETTINGS:
        try:
            row = conn.execute(f"SHOW {name}").fetchone()
            out[name] = str(row[0]) if row else "?"
        except Exception as exc:
            out[name] = f"? ({type(exc).__name__})"
    return out


def advice(config: ZonalConfig, ep: Endpoint, report: dict[str, str]) -> list[str]:
    """Plain-language findings for one endpoint."""
    out: list[str] = []
    via_pooler = bool(config.pgbouncer) and ep.index >= 0 and ep in (
        e for z in config.topology.zones for e in z.endpoints)
    try:
        limit = int(report["max_connections"]) - int(report["superuser_reserved_connections"])
        if not via_pooler and config.max_total > limit:
            out.append(f"max_total={config.max_total} exceeds the {limit} connections the "
                       "server allows a client: lower pool_size/max_total")
        elif not via_pooler:
            out.append(f"this process may open {config.max_total} of the server's {limit}; "
                       f"that allows about {limit // max(1, config.max_total)} such processes")
    except (KeyError, ValueError):
        pass
    idle = report.get("idle_session_timeout", "0")
    if config.serverless and idle in ("0", "0ms") and not via_pooler:
        out.append("serverless and idle_session_timeout is 0 on the server: zonal asks for it "
                   "per connection (startup options); set it server-wide too as a backstop")
    if via_pooler:
        out.append("through PgBouncer: server-side reapers come from PgBouncer's "
                   "server_idle_timeout and client_idle_timeout (zonal doctor reads them "
                   "from PgBouncer's admin console)")
    stmt = report.get("statement_timeout", "0")
    if stmt in ("0", "0ms") and config.query_timeout is None:
        out.append("neither statement_timeout nor query_timeout: a hung statement holds a "
                   "connection forever (set query_timeout, or ALTER ROLE ... SET "
                   "statement_timeout)")
    return out


class Command(BaseCommand):
    help = "Check each zone's server settings against the zonal pool's."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", action="append", help="alias (repeatable)")
        parser.add_argument("--builtin", action="store_true",
                            help="use the built-in report even if zonal_lab is installed")

    def handle(self, *args: Any, **options: Any) -> None:
        aliases = options["database"] or [a for a in connections.settings
                                          if is_zonal_engine(connections.settings[a])]
        for alias in aliases:
            conn = connections[alias]
            params = conn.get_connection_params()
            config: ZonalConfig = conn.zonal_plan(params).config
            base = {**connect_params(params), "autocommit": True}
            self.stdout.write(f"{alias}: pool {config.name!r}, pgbouncer={config.pgbouncer!r}, "
                              f"serverless={config.serverless}, pool_size={config.pool_size}, "
                              f"max_total={config.max_total}, query_timeout="
                              f"{config.query_timeout}")
            eps = [(ep, "") for z in config.topology.zones for ep in z.endpoints]
            eps += [(z.direct, " (direct)") for z in config.topology.zones if z.direct]
            for ep, tag in eps:
                if not options["builtin"] and self._lab_doctor(ep, base):
                    continue
                self._builtin(config, ep, tag, base)

    def _lab_doctor(self, ep: Endpoint, base: dict[str, Any]) -> bool:
        try:
            mod = importlib.import_module("zonal_lab.doctor")
        except ImportError:
            return False
        user = ep.user or base.get("user") or ""
        password = ep.password or base.get("password") or ""
        cred = quote(str(user), safe="") + (":" + quote(str(password), safe="")
                                            if password else "")
        url = f"postgresql://{cred}@{ep.address}/{quote(str(base.get('dbname', '')), safe='')}"
        try:
            parser = argparse.ArgumentParser(prog="zonal doctor")
            mod.add_arguments(parser)
            return int(mod.run(parser.parse_args([url]))) in (0, 1)
        except (Exception, SystemExit):
            return False  # an interface we do not know: the built-in report instead

    def _builtin(self, config: ZonalConfig, ep: Endpoint, tag: str,
                 base: dict[str, Any]) -> None:
        w = self.stdout.write
        driver = PsycopgDriver(base, config)
        try:
            conn = driver.connect(ep, min(config.connect_timeout, 5.0))
        except Exception as exc:
            w(f"  zone {ep.zone} {ep.display()}{tag}: cannot connect: "
              f"{safe_description(exc, [ep.password or '', str(base.get('password') or '')])}")
            return
        try:
            report = server_report(conn)
        finally:
            conn.close()
        w(f"  zone {ep.zone} {ep.display()}{tag}: " +
          ", ".join(f"{k}={v}" for k, v in report.items()))
        for line in advice(config, ep, report):
            w(f"    - {line}")
