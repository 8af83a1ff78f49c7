"""The analysis: :class:`Facts` and the :class:`Deployment` in, a :class:`Report` out.
Pure: no I/O, no clock, so every check is tested with made-up facts.

This module holds the server's checks and :func:`analyze`, which runs them all;
PgBouncer's checks are in :mod:`zonal_tools.doctor.pgbouncer_checks`, the settings
doctor would pick in :mod:`zonal_tools.doctor.recommend`.
"""

from __future__ import annotations

from zonal_tools.doctor.facts import Deployment, Facts, PgBouncerFacts, ServerFacts
from zonal_tools.doctor.measures import (
    HEADROOM_PROBLEM,
    HEADROOM_WARNING,
    KEEPALIVE_IDLE_LIMIT,
    duration,
    pick_max_idle,
)
from zonal_tools.doctor.pgbouncer_checks import check_pgbouncer
from zonal_tools.doctor.recommend import recommend
from zonal_tools.doctor.report import Finding, Report

__all__ = ["analyze"]


def _check_version(server: ServerFacts) -> Finding:
    text = f"PostgreSQL {server.version}"
    if server.in_recovery:
        text += ", a standby (read-only)"
    advice = (
        "writers need the primary: target_session_attrs='read-write'"
        if server.in_recovery
        else ""
    )
    if server.version_num < 140000:
        return Finding(
            "server_version",
            "warning",
            f"{text}: older than 14, so there is no idle_session_timeout; idle sessions "
            "a frozen serverless instance leaves behind are never reaped by the server",
            "upgrade to PostgreSQL 14 or later; until then rely on TCP keepalives and "
            "idle_in_transaction_session_timeout",
        )
    return Finding("server_version", "info", text, advice)


def _check_headroom(server: ServerFacts, via_pgbouncer: bool) -> Finding:
    available = server.available
    used = server.connections
    share = used / available if available else 1.0
    reserved_text = f"{server.superuser_reserved} reserved for superusers"
    if server.has("reserved_connections"):
        reserved_text += (
            f" and {server.number('reserved_connections', 0)} for pg_use_reserved_connections"
        )
    message = (
        f"max_connections {server.max_connections}: {reserved_text}, {available} for "
        f"everyone else; {used} client connection{'' if used == 1 else 's'} now "
        f"({share:.0%}), {max(available - used, 0)} free"
    )
    who = "PgBouncer's server pools and other clients" if via_pgbouncer else "the pools"
    if share >= HEADROOM_PROBLEM:
        return Finding(
            "max_connections",
            "problem",
            message,
            f"new connections will soon be refused ('sorry, too many clients already'): "
            f"shrink {who} (zonal size), put PgBouncer in transaction mode in front, or "
            "raise max_connections (needs a restart)",
        )
    if share >= HEADROOM_WARNING:
        return Finding(
            "max_connections",
            "warning",
            message,
            f"little headroom for a deploy or a failover: shrink {who} (zonal size) or "
            "raise max_connections",
        )
    return Finding("max_connections", "ok", message)


def _check_capacity(server: ServerFacts, deployment: Deployment) -> Finding:
    available = server.available
    need = deployment.planned()
    if need is None:
        pool = deployment.pool
        return Finding(
            "capacity",
            "info",
            f"room for {available} application connections across every instance: at "
            f"pool_size {pool}, {available // pool} instances",
            "pass --instances N (every process with a pool, across zones and machines) "
            "for a checked pool size",
        )
    text = f"{deployment.text()} = {need} connections at most, {available} available"
    if need > available:
        instances = deployment.instances
        fit = available // instances if instances else 0
        fix = (
            f"pool_size={fit} at most"
            if fit >= 1
            else "PgBouncer in transaction mode in front"
        )
        return Finding(
            "capacity",
            "problem",
            f"{text}: on a busy day the last {need - available} are refused",
            f"{fix} (zonal size --db-max-connections {server.max_connections} "
            f"--instances {instances} --reserved {server.reserved}), or raise max_connections",
        )
    return Finding("capacity", "ok", f"{text}: fits")


def _check_reserved(server: ServerFacts) -> list[Finding]:
    out = []
    su = server.superuser_reserved
    if su == 0:
        out.append(
            Finding(
                "superuser_reserved_connections",
                "warning",
                "superuser_reserved_connections 0: when the application takes every "
                "slot, not even an administrator can connect to fix it",
                "superuser_reserved_connections = 3 (the default; needs a restart)",
            )
        )
    else:
        out.append(
            Finding(
                "superuser_reserved_connections",
                "ok",
                f"superuser_reserved_connections {su}: an administrator can always get in",
            )
        )
    if server.has("reserved_connections"):
        res = server.number("reserved_connections", 0)
        out.append(
            Finding(
                "reserved_connections",
                "ok" if res else "info",
                f"reserved_connections {res}"
                + (": slots kept for roles granted pg_use_reserved_connections" if res else ""),
                ""
                if res
                else "optional: reserve a few slots for monitoring and migrations "
                "(reserved_connections = 3; GRANT pg_use_reserved_connections TO monitor)",
            )
        )
    if server.superuser:
        out.append(
            Finding(
                "superuser",
                "warning",
                f"connected as superuser {server.role!r}: an application that does so "
                "also takes the reserved slots, leaving no way in when it runs away",
                "give the application an ordinary role (CREATE ROLE app LOGIN ...)",
            )
        )
    return out


def _check_limits(server: ServerFacts, deployment: Deployment) -> list[Finding]:
    out = []
    need = deployment.planned()
    for fid, limit, what, fix in (
        (
            "role_connection_limit",
            server.role_connection_limit,
            f"role {server.role!r}",
            f"ALTER ROLE {server.role} CONNECTION LIMIT {need}",
        ),
        (
            "database_connection_limit",
            server.database_connection_limit,
            f"database {server.database!r}",
            f"ALTER DATABASE {server.database} CONNECTION LIMIT {need}",
        ),
    ):
        if limit < 0:
            continue
        text = f"{what} may open {limit} connections (CONNECTION LIMIT)"
        if need is not None and need > limit:
            out.append(Finding(fid, "problem", f"{text}; {deployment.text()} = {need}", fix))
        else:
            out.append(Finding(fid, "info", text))
    return out


def _check_idle_session(
    server: ServerFacts, bouncer: PgBouncerFacts | None, deployment: Deployment
) -> Finding | None:
    if not server.has("idle_session_timeout"):
        return None  # < 14: said by server_version
    seconds = server.number("idle_session_timeout") / 1000
    if bouncer is not None:
        server_idle = bouncer.setting("server_idle_timeout", 600) if bouncer.config else None
        if seconds > 0 and server_idle is not None and (server_idle == 0 or server_idle >= seconds):
            return Finding(
                "idle_session_timeout",
                "warning",
                f"idle_session_timeout {duration(seconds)}: the server closes PgBouncer's "
                f"idle server connections before PgBouncer retires them (server_idle_timeout "
                f"{duration(server_idle)})",
                f"set PgBouncer's server_idle_timeout below {duration(seconds)}, or turn "
                "idle_session_timeout off for PgBouncer's role and reap idle clients with "
                "PgBouncer's client_idle_timeout",
            )
        return Finding(
            "idle_session_timeout",
            "info",
            f"idle_session_timeout {duration(seconds)}: behind PgBouncer it applies to "
            "PgBouncer's server connections; idle clients are PgBouncer's to reap "
            "(client_idle_timeout)",
        )
    if seconds <= 0:
        return Finding(
            "idle_session_timeout",
            "warning",
            "idle_session_timeout off: a session a frozen serverless instance (or a client "
            "behind a dead NAT) leaves open holds its slot until TCP notices",
            f"zonal's serverless=True asks for it per connection; for every other client: "
            f"ALTER ROLE {server.role} SET idle_session_timeout = '10min'",
        )
    advice = ""
    if seconds <= deployment.idle_limit:
        advice = (
            f"keep zonal's max_idle below it "
            f"(max_idle={pick_max_idle(seconds, deployment.idle_limit)}) and "
            "pre_ping=True, so the pool retires connections before the server kills them"
        )
    return Finding(
        "idle_session_timeout",
        "ok",
        f"idle_session_timeout {duration(seconds)}: the server reaps abandoned sessions",
        advice,
    )


def _check_idle_in_transaction(server: ServerFacts, bouncer: PgBouncerFacts | None) -> Finding:
    seconds = server.number("idle_in_transaction_session_timeout") / 1000
    if seconds > 0:
        return Finding(
            "idle_in_transaction_session_timeout",
            "ok",
            f"idle_in_transaction_session_timeout {duration(seconds)}: a transaction "
            "left open is ended by the server",
        )
    pinned = (
        " and, behind PgBouncer, a server connection of the pool" if bouncer is not None else ""
    )
    zonal = (
        ""
        if bouncer is not None
        else "zonal's serverless=True sets it per connection; for every other client: "
    )
    return Finding(
        "idle_in_transaction_session_timeout",
        "warning",
        "idle_in_transaction_session_timeout off: a transaction left open by a frozen "
        f"function or a crashed client keeps its locks{pinned} until TCP notices",
        f"{zonal}ALTER ROLE {server.role} SET idle_in_transaction_session_timeout = '60s'",
    )


def _check_keepalives(server: ServerFacts, bouncer: PgBouncerFacts | None) -> Finding:
    if not server.tcp:
        return Finding(
            "tcp_keepalives", "info", "connected over a Unix socket: TCP keepalives do not apply"
        )
    idle = server.number("tcp_keepalives_idle")
    interval = server.number("tcp_keepalives_interval")
    count = server.number("tcp_keepalives_count")
    user_timeout = server.number("tcp_user_timeout")
    noticed = idle + interval * count
    text = (
        f"tcp_keepalives_idle {idle}, _interval {interval}, _count {count} (0 = the OS "
        f"default): a client that vanished is noticed after about {duration(noticed)}"
    )
    if user_timeout:
        text += f"; tcp_user_timeout {user_timeout} ms"
    if bouncer is not None:
        return Finding(
            "tcp_keepalives",
            "info",
            f"{text}. Behind PgBouncer these watch PgBouncer's server connections; "
            "vanished clients are PgBouncer's to notice (tcp_keepalive, tcp_keepidle)",
        )
    if idle <= 0 or noticed > KEEPALIVE_IDLE_LIMIT * 2:
        return Finding(
            "tcp_keepalives",
            "warning",
            f"{text}: meanwhile its connection holds a slot (a lost zone, a frozen "
            "function, an expired NAT entry)",
            "tcp_keepalives_idle = 60, tcp_keepalives_interval = 10, tcp_keepalives_count "
            "= 6 in postgresql.conf (reload); zonal's serverless profile also turns on "
            "client-side keepalives",
        )
    return Finding("tcp_keepalives", "ok", text)


def analyze(facts: Facts, deployment: Deployment | None = None) -> Report:
    """Findings and recommendations for ``facts``; pure, no I/O.

    ``deployment`` carries what the caller knows of the pools (their real
    ``pool_size`` and ``max_idle``, the number of instances); None: zonal's defaults.

    >>> from zonal_tools.doctor.report import exit_code
    >>> server = ServerFacts("17.2", 170002, {"max_connections": "20",
    ...     "superuser_reserved_connections": "3", "idle_session_timeout": "0",
    ...     "idle_in_transaction_session_timeout": "0", "tcp_keepalives_idle": "7200",
    ...     "tcp_keepalives_interval": "75", "tcp_keepalives_count": "9"}, connections=2)
    >>> report = analyze(Facts("postgresql://app:***@db/app", server), Deployment(instances=10))
    >>> report.level("capacity"), exit_code(report)
    ('problem', 2)
    """
    deployment = deployment or Deployment()
    server = facts.server
    bouncer = facts.pgbouncer
    findings: list[Finding] = [_check_version(server)]
    if bouncer is not None:
        findings.extend(check_pgbouncer(server, bouncer, deployment))
    else:
        findings.append(
            Finding(
                "pgbouncer",
                "info",
                "talking to PostgreSQL directly: the startup options were accepted and the "
                "backend PID matches",
            )
        )
        if facts.admin_note:
            findings.append(
                Finding(
                    "pgbouncer_admin",
                    "warning",
                    f"--pgbouncer-admin was given, but {facts.admin_note}",
                    "give the admin console of the PgBouncer the URL goes through, or drop "
                    "--pgbouncer-admin",
                )
            )
    findings.append(_check_headroom(server, bouncer is not None))
    if bouncer is None or bouncer.mode == "session":
        findings.append(_check_capacity(server, deployment))
    findings.extend(_check_reserved(server))
    findings.extend(_check_limits(server, deployment))
    idle = _check_idle_session(server, bouncer, deployment)
    if idle is not None:
        findings.append(idle)
    findings.append(_check_idle_in_transaction(server, bouncer))
    findings.append(_check_keepalives(server, bouncer))
    return Report(facts.target, tuple(findings), tuple(recommend(facts, deployment)), facts)
