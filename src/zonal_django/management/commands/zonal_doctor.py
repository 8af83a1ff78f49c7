"""``manage.py zonal_doctor``: every endpoint of each zonal database checked by
:func:`zonal_tools.doctor.diagnose` (``zonal doctor``) against the alias's own pool
settings (its ``pool_size``, ``max_idle``, ``connect_timeout``), connecting as its
pool does.

Exit status: 0 nothing to fix; 1 doctor found something (a warning or a problem on
some endpoint, an endpoint that cannot be reached or read included); 2 it could not
run (an unknown or non-zonal alias, settings zonal refuses).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from zonal_core.secrets import redact
from zonal_django.management.aliases import (
    EXIT_FAILED,
    AliasSettings,
    alias_settings,
    endpoints,
    zonal_aliases,
)
from zonal_tools.doctor import (
    Deployment,
    DoctorError,
    Report,
    diagnose,
    secrets_of,
    write_report,
)
from zonal_tools.doctor.cli import positive_int

# doctor sends startup options of its own (they tell PgBouncer apart); connection
# objects' options are doctor's to set
_NOT_FOR_DOCTOR = frozenset({"options", "autocommit", "prepare_threshold", "cursor_factory",
                             "row_factory", "context"})


class Command(BaseCommand):
    help = ("Check every endpoint's server (or PgBouncer) against the zonal pool's settings. "
            "Exit 0: nothing to fix; 1: warnings, problems or an endpoint unreachable; "
            "2: could not run.")
    # Settings zonal refuses are exit 2 here; as system check errors they would be 1.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", action="append",
                            help="alias (repeatable); default: every zonal alias")
        parser.add_argument("--instances", type=positive_int, default=None, metavar="N",
                            help="processes with a pool each, across all zones and machines "
                            "(checks pool_size against the server's limits)")
        parser.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        settings = [alias_settings(a) for a in zonal_aliases(options["database"])]
        document: dict[str, Any] = {}
        reports: list[Report] = []
        unreachable: list[str] = []
        hidden: list[str] = []
        for s in settings:
            document[s.alias] = self._alias(s, options, reports, unreachable, hidden)
        if options["json"]:
            self.stdout.write(redact(json.dumps(document, indent=2, default=str), hidden))
        checked = sum(len(d["endpoints"]) for d in document.values())
        problems = sum(r.count("problem") for r in reports)
        warnings = sum(r.count("warning") for r in reports)
        verdict = (f"{checked} endpoint(s) checked: {problems} problem(s), "
                   f"{warnings} warning(s), {len(unreachable)} unreachable")
        if problems or warnings or unreachable:
            if unreachable:
                verdict += f" ({', '.join(unreachable)})"
            raise CommandError(verdict, returncode=EXIT_FAILED)
        if not options["json"]:
            self.stdout.write(f"zonal_doctor: {verdict}")

    def _alias(self, s: AliasSettings, options: dict[str, Any], reports: list[Report],
               unreachable: list[str], hidden: list[str]) -> dict[str, Any]:
        """Check every endpoint of one alias; text goes out as it comes, the JSON
        entry is returned. Reports, unreachable endpoints and the secrets to hide are
        added to the lists given."""
        config = s.config
        as_json = options["json"]
        header = {"pool": config.name, "pgbouncer": config.pgbouncer,
                  "serverless": config.serverless, "pool_size": config.pool_size,
                  "max_total": config.max_total, "query_timeout": config.query_timeout}
        if not as_json:
            self.stdout.write(f"{s.alias}: pool {config.name!r}, pgbouncer={config.pgbouncer!r}, "
                              f"serverless={config.serverless}, pool_size={config.pool_size}, "
                              f"max_total={config.max_total}, "
                              f"query_timeout={config.query_timeout}")
        deployment = Deployment.of(config, instances=options["instances"])
        done: list[dict[str, Any]] = []
        for ep, direct in endpoints(config):
            where = f"zone {ep.zone} {ep.display()}{' (direct)' if direct else ''}"
            params = {k: v for k, v in s.params_for(ep).items() if k not in _NOT_FOR_DOCTOR}
            secrets = secrets_of([params])
            hidden.extend(secrets)
            item: dict[str, Any] = {"zone": ep.zone, "endpoint": ep.display(), "direct": direct}
            try:
                report = diagnose(params, deployment=deployment,
                                  connect_timeout=config.connect_timeout)
            except DoctorError as exc:
                unreachable.append(f"{ep.zone}/{ep.display()}")
                item["error"] = str(exc)
                if not as_json:
                    self.stdout.write(f"\n{where}: cannot connect: {exc}")
            else:
                reports.append(report)
                item["report"] = report.as_dict()
                if not as_json:
                    self.stdout.write(f"\n{where}:")
                    write_report(report, self.stdout, verdict=False, hidden=secrets)
            done.append(item)
        return {**header, "endpoints": done}
