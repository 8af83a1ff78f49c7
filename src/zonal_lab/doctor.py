"""``zonal doctor URL``: check a PostgreSQL server (or the PgBouncer in front of it)
against what zonal needs, with advice.

::

    $ zonal doctor postgresql://app@db:5432/appdb --instances 40
    $ zonal doctor postgresql://app@db:6432/appdb --pgbouncer-admin postgresql://app@db:6432/pgbouncer

Two halves, kept apart so the analysis is testable without a database:

- :func:`collect` connects (psycopg, bounded connect timeout, the whole run under a
  deadline) and gathers :class:`Facts`: the server's settings, its connections, the
  role, and whether a PgBouncer sits in between and in which pool mode;
- :func:`analyze` turns :class:`Facts` and the user's :class:`Plan` into a
  :class:`Report`: :class:`Finding` s (id, level, message, advice) and the pool
  settings zonal would pick, with the reasoning.

How PgBouncer is recognised without its admin console: it answers the startup with
its own cancel key, so the backend PID the client was told differs from
``pg_backend_pid()``; and it refuses the startup ``options`` parameter
("unsupported startup parameter: options"). The pool mode is then inferred: in
statement mode a transaction block is refused; in transaction mode a second client
is served by the server session the first one just released, in session mode it
cannot be. With ``--pgbouncer-admin`` the mode and the limits come from ``SHOW
POOLS``, ``SHOW DATABASES`` and ``SHOW CONFIG`` instead.

Exit codes: 0 nothing to fix, 1 warnings, 2 problems (or no connection). No output
ever contains a password: URLs are masked, driver errors described by
:func:`zonal_core.pgerrors.safe_description`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import textwrap
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from zonal_core.drivers import keepalive_kwargs, reaper_options
from zonal_core.pgerrors import safe_description
from zonal_core.secrets import mask, mask_url, redact
from zonal_lab import sizing

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "Facts",
    "Finding",
    "PgBouncerFacts",
    "Plan",
    "Recommendation",
    "Report",
    "ServerFacts",
    "add_arguments",
    "analyze",
    "collect",
    "exit_code",
    "run",
]

Level = Literal["ok", "info", "warning", "problem"]
_RANK: Mapping[str, int] = {"ok": 0, "info": 0, "warning": 1, "problem": 2}

ZONAL_DEFAULT_POOL_SIZE = 5
ZONAL_DEFAULT_MAX_IDLE = 300
ZONAL_SERVERLESS_MAX_IDLE = 30
# what doctor suggests for reapers: a frozen function's idle session is gone after a
# minute, a transaction it left open after 30 s (seconds)
REAPER_IDLE_SESSION = 60
REAPER_IDLE_IN_TRANSACTION = 30
# a vanished client should be noticed within minutes, not the kernel's two hours
KEEPALIVE_IDLE_LIMIT = 300
HEADROOM_WARNING = 0.75
HEADROOM_PROBLEM = 0.90

SETTINGS = (
    "max_connections",
    "superuser_reserved_connections",
    "reserved_connections",
    "idle_session_timeout",
    "idle_in_transaction_session_timeout",
    "tcp_keepalives_idle",
    "tcp_keepalives_interval",
    "tcp_keepalives_count",
    "tcp_user_timeout",
)
"""The server settings doctor reads (from ``pg_settings``, in their base units)."""


# -- facts -----------------------------------------------------------------------


@dataclass(frozen=True)
class ServerFacts:
    """What the server says about itself; ``settings`` as ``pg_settings.setting``
    strings (times in the setting's base unit: ms, or s for ``tcp_keepalives_*``)."""

    version: str
    version_num: int
    settings: Mapping[str, str]
    connections: int = 1
    """Client backends on the whole server, this one included."""
    role: str = "app"
    database: str = "app"
    superuser: bool = False
    role_connection_limit: int = -1
    database_connection_limit: int = -1
    in_recovery: bool = False
    tcp: bool = True
    """False over a Unix socket (keepalives then do not apply)."""

    def number(self, name: str, default: int = 0) -> int:
        """A numeric setting (``default`` when the server does not have it)."""
        raw = self.settings.get(name)
        try:
            return int(float(raw)) if raw is not None else default
        except ValueError:
            return default

    def has(self, name: str) -> bool:
        """True if the server knows setting ``name``."""
        return name in self.settings


@dataclass(frozen=True)
class PgBouncerFacts:
    """PgBouncer (or another pooler) between doctor and the server.

    ``mode``: ``"transaction"``, ``"session"``, ``"statement"`` or None when unknown;
    ``mode_source`` says how it was learned. ``config`` (``SHOW CONFIG``),
    ``database`` (its ``SHOW DATABASES`` row) and ``pool`` (its ``SHOW POOLS`` row)
    are None without the admin console.
    """

    evidence: tuple[str, ...]
    mode: str | None = None
    mode_source: str | None = None
    version: str | None = None
    config: Mapping[str, str] | None = None
    database: Mapping[str, Any] | None = None
    pool: Mapping[str, Any] | None = None
    admin_error: str | None = None
    admin_url: str | None = None
    """The admin console's URL, masked."""
    options_rejected: bool = False

    def setting(self, name: str, default: int = 0) -> int:
        """A numeric ``SHOW CONFIG`` value."""
        raw = (self.config or {}).get(name)
        try:
            return int(float(raw)) if raw not in (None, "") else default
        except (TypeError, ValueError):
            return default


@dataclass(frozen=True)
class Facts:
    """Everything :func:`collect` learned; what :func:`analyze` reads."""

    target: str
    """The URL checked, masked."""
    server: ServerFacts
    pgbouncer: PgBouncerFacts | None = None
    admin_note: str | None = None
    """Why an admin console that was given could not be used (direct connections)."""


@dataclass(frozen=True)
class Plan:
    """What the user told doctor about the deployment (all optional)."""

    instances: int | None = None
    pool_size: int | None = None
    cores: int | None = None


# -- report ----------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One check's outcome. ``level``: ok, info (a fact), warning, problem."""

    id: str
    level: Level
    message: str
    advice: str = ""


@dataclass(frozen=True)
class Recommendation:
    """One zonal option doctor would set, and why."""

    option: str
    value: object
    why: str


@dataclass(frozen=True)
class Report:
    """Findings and recommended settings; :func:`exit_code` of it is doctor's."""

    target: str
    findings: tuple[Finding, ...]
    recommendations: tuple[Recommendation, ...] = ()
    facts: Facts | None = None

    def level(self, finding_id: str) -> Level | None:
        """The level of finding ``finding_id``, None if not reported."""
        for f in self.findings:
            if f.id == finding_id:
                return f.level
        return None

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` document."""
        problems = sum(f.level == "problem" for f in self.findings)
        warnings = sum(f.level == "warning" for f in self.findings)
        out: dict[str, Any] = {
            "target": self.target,
            "exit_code": exit_code(self),
            "summary": {"problems": problems, "warnings": warnings},
            "findings": [asdict(f) for f in self.findings],
            "recommendations": [
                {"option": r.option, "value": r.value, "why": r.why} for r in self.recommendations
            ],
        }
        if self.facts is not None:
            server = self.facts.server
            out["server"] = {**asdict(server), "settings": dict(server.settings)}
            bouncer = self.facts.pgbouncer
            out["pgbouncer"] = None
            if bouncer is not None:
                out["pgbouncer"] = {
                    **asdict(bouncer),
                    "evidence": list(bouncer.evidence),
                    "config": None if bouncer.config is None else dict(bouncer.config),
                    "database": None if bouncer.database is None else dict(bouncer.database),
                    "pool": None if bouncer.pool is None else dict(bouncer.pool),
                }
        return out


def exit_code(report: Report) -> int:
    """0 when nothing needs fixing, 1 for warnings only, 2 for problems."""
    return max((_RANK[f.level] for f in report.findings), default=0)


# -- analysis (pure) -------------------------------------------------------------


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "off"
    if seconds < 1:
        return f"{int(seconds * 1000)} ms"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h" if hours else "", f"{minutes} min" if minutes else "",
             f"{secs} s" if secs else ""]
    return " ".join(p for p in parts if p)


def _reserved(server: ServerFacts) -> int:
    return server.number("superuser_reserved_connections", 3) + server.number(
        "reserved_connections", 0
    )


def _available(server: ServerFacts) -> int:
    return max(server.number("max_connections", 100) - _reserved(server), 0)


def _planned(plan: Plan) -> int | None:
    if plan.instances is None:
        return None
    return plan.instances * (plan.pool_size or ZONAL_DEFAULT_POOL_SIZE)


def _plan_text(plan: Plan) -> str:
    pool = plan.pool_size or ZONAL_DEFAULT_POOL_SIZE
    default = "" if plan.pool_size else " (zonal's default)"
    return f"{plan.instances} instances x pool_size {pool}{default}"


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
    max_conn = server.number("max_connections", 100)
    su = server.number("superuser_reserved_connections", 3)
    res = server.number("reserved_connections", 0)
    available = _available(server)
    used = server.connections
    share = used / available if available else 1.0
    reserved_text = f"{su} reserved for superusers"
    if server.has("reserved_connections"):
        reserved_text += f" and {res} for pg_use_reserved_connections"
    message = (
        f"max_connections {max_conn}: {reserved_text}, {available} for everyone else; "
        f"{used} client connection{'' if used == 1 else 's'} now ({share:.0%}), "
        f"{max(available - used, 0)} free"
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


def _check_capacity(server: ServerFacts, plan: Plan) -> Finding:
    available = _available(server)
    need = _planned(plan)
    if need is None:
        pool = plan.pool_size or ZONAL_DEFAULT_POOL_SIZE
        return Finding(
            "capacity",
            "info",
            f"room for {available} application connections across every instance: at "
            f"pool_size {pool}, {available // pool} instances",
            "pass --instances N (every process with a pool, across zones and machines) "
            "for a checked pool size",
        )
    text = f"{_plan_text(plan)} = {need} connections at most, {available} available"
    if need > available:
        fit = available // plan.instances if plan.instances else 0
        fix = (
            f"pool_size={fit} at most"
            if fit >= 1
            else "PgBouncer in transaction mode in front"
        )
        return Finding(
            "capacity",
            "problem",
            f"{text}: on a busy day the last {need - available} are refused",
            f"{fix} (zonal size --db-max-connections "
            f"{server.number('max_connections', 100)} --instances {plan.instances} "
            f"--reserved {_reserved(server)}), or raise max_connections",
        )
    return Finding("capacity", "ok", f"{text}: fits")


def _check_reserved(server: ServerFacts) -> list[Finding]:
    out = []
    su = server.number("superuser_reserved_connections", 3)
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


def _check_limits(server: ServerFacts, plan: Plan) -> list[Finding]:
    out = []
    need = _planned(plan)
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
            out.append(Finding(fid, "problem", f"{text}; {_plan_text(plan)} = {need}", fix))
        else:
            out.append(Finding(fid, "info", text))
    return out


def _check_idle_session(server: ServerFacts, bouncer: PgBouncerFacts | None) -> Finding | None:
    if not server.has("idle_session_timeout"):
        return None  # < 14: said by server_version
    seconds = server.number("idle_session_timeout") / 1000
    if bouncer is not None:
        server_idle = bouncer.setting("server_idle_timeout", 600) if bouncer.config else None
        if seconds > 0 and server_idle is not None and (server_idle == 0 or server_idle >= seconds):
            return Finding(
                "idle_session_timeout",
                "warning",
                f"idle_session_timeout {_duration(seconds)}: the server closes PgBouncer's "
                f"idle server connections before PgBouncer retires them (server_idle_timeout "
                f"{_duration(server_idle)})",
                f"set PgBouncer's server_idle_timeout below {_duration(seconds)}, or turn "
                "idle_session_timeout off for PgBouncer's role and reap idle clients with "
                "PgBouncer's client_idle_timeout",
            )
        return Finding(
            "idle_session_timeout",
            "info",
            f"idle_session_timeout {_duration(seconds)}: behind PgBouncer it applies to "
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
    if seconds <= ZONAL_DEFAULT_MAX_IDLE:
        advice = (
            f"keep zonal's max_idle below it (max_idle={_pick_max_idle(seconds)}) and "
            "pre_ping=True, so the pool retires connections before the server kills them"
        )
    return Finding(
        "idle_session_timeout",
        "ok",
        f"idle_session_timeout {_duration(seconds)}: the server reaps abandoned sessions",
        advice,
    )


def _check_idle_in_transaction(server: ServerFacts, bouncer: PgBouncerFacts | None) -> Finding:
    seconds = server.number("idle_in_transaction_session_timeout") / 1000
    if seconds > 0:
        return Finding(
            "idle_in_transaction_session_timeout",
            "ok",
            f"idle_in_transaction_session_timeout {_duration(seconds)}: a transaction "
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
        f"default): a client that vanished is noticed after about {_duration(noticed)}"
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


def _check_pgbouncer(server: ServerFacts, bouncer: PgBouncerFacts, plan: Plan) -> list[Finding]:
    out: list[Finding] = []
    name = f"PgBouncer {bouncer.version}" if bouncer.version else "PgBouncer"
    if not bouncer.options_rejected and bouncer.config is None:
        name = "a connection pooler (PgBouncer or alike)"
    mode = bouncer.mode or "unknown"
    source = f", {bouncer.mode_source}" if bouncer.mode_source else ""
    out.append(
        Finding(
            "pgbouncer",
            "info",
            f"talking to {name} in {mode} mode{source}; seen: {'; '.join(bouncer.evidence)}",
        )
    )
    if bouncer.mode == "transaction":
        out.append(
            Finding(
                "pgbouncer_mode",
                "ok",
                "transaction pooling: zonal supports it",
                "pgbouncer='transaction': zonal turns prepared statements off and refuses "
                "session state (SET, LISTEN, advisory locks, ...) with the safe form",
            )
        )
    elif bouncer.mode == "session":
        out.append(
            Finding(
                "pgbouncer_mode",
                "info",
                "session pooling: each client holds a server connection while connected, "
                "so PgBouncer saves connect time but no server connections",
                "pgbouncer='session'; size pools as if direct, or switch PgBouncer to "
                "pool_mode = transaction to share server connections",
            )
        )
    elif bouncer.mode == "statement":
        out.append(
            Finding(
                "pgbouncer_mode",
                "problem",
                "statement pooling: transactions of more than one statement are refused "
                "('transaction blocks not allowed in statement pooling mode')",
                "pool_mode = transaction (zonal supports transaction and session modes)",
            )
        )
    else:
        out.append(
            Finding(
                "pgbouncer_mode",
                "warning",
                "the pool mode could not be determined",
                "pass --pgbouncer-admin so doctor can read SHOW POOLS",
            )
        )
    if bouncer.config is None:
        unchecked = (
            "pool_mode for certain, default_pool_size and reserve_pool_size against "
            "max_connections, max_client_conn, client_idle_timeout, idle_transaction_timeout, "
            "server_idle_timeout, tcp_keepalive, clients waiting"
        )
        if bouncer.admin_error:
            out.append(
                Finding(
                    "pgbouncer_admin",
                    "warning",
                    f"the admin console did not answer ({bouncer.admin_error}); not checked: "
                    f"{unchecked}",
                    "check the admin URL: database 'pgbouncer', a user in admin_users or "
                    "stats_users",
                )
            )
        else:
            out.append(
                Finding(
                    "pgbouncer_admin",
                    "info",
                    f"no admin console given; not checked: {unchecked}",
                    "pass --pgbouncer-admin postgresql://USER@HOST:PORT/pgbouncer (a user "
                    "in admin_users or stats_users)",
                )
            )
        return out
    out.extend(_check_pgbouncer_config(server, bouncer, plan))
    return out


def _bouncer_pool(bouncer: PgBouncerFacts) -> tuple[int, int]:
    """(pool size, reserve pool) for the database doctor connected to."""
    db = bouncer.database or {}
    pool = _int(db.get("pool_size")) or bouncer.setting("default_pool_size", 20)
    reserve = _int(db.get("reserve_pool"))
    if reserve is None:
        reserve = bouncer.setting("reserve_pool_size", 0)
    return pool, reserve


def _int(value: object) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(str(value))
    except ValueError:
        return None


def _check_pgbouncer_config(
    server: ServerFacts, bouncer: PgBouncerFacts, plan: Plan
) -> list[Finding]:
    out: list[Finding] = []
    pool, reserve = _bouncer_pool(bouncer)
    available = _available(server)
    total = pool + reserve
    db_max = _int((bouncer.database or {}).get("max_connections")) or 0
    text = (
        f"PgBouncer opens up to {total} server connections for this database and user "
        f"(pool_size {pool} + reserve_pool {reserve}), of {available} the server has free"
    )
    if db_max:
        text += f"; max_db_connections {db_max}"
    if total > available:
        out.append(
            Finding(
                "pgbouncer_pool",
                "problem",
                text,
                f"default_pool_size + reserve_pool_size <= {available}, and divide by the "
                "number of PgBouncers (one per zone) and of database/user pairs",
            )
        )
    else:
        out.append(
            Finding(
                "pgbouncer_pool",
                "ok",
                text,
                "count every PgBouncer (one per zone) and database/user pair: together "
                f"they must stay within {available}",
            )
        )
    max_client = bouncer.setting("max_client_conn", sizing.PGBOUNCER_DEFAULT_MAX_CLIENT_CONN)
    need = _planned(plan)
    if need is not None and need > max_client:
        out.append(
            Finding(
                "pgbouncer_max_client_conn",
                "problem",
                f"max_client_conn {max_client}, but {_plan_text(plan)} = {need} client "
                "connections: the rest get 'no more connections allowed'",
                f"max_client_conn = {need * 2} (room for a zone's instances failing over; "
                "a client connection costs PgBouncer a file descriptor)",
            )
        )
    else:
        out.append(
            Finding(
                "pgbouncer_max_client_conn",
                "ok" if need is not None else "info",
                f"max_client_conn {max_client}"
                + (f": {_plan_text(plan)} = {need} fits" if need is not None else ""),
            )
        )
    idle_tx = bouncer.setting("idle_transaction_timeout")
    if idle_tx <= 0:
        out.append(
            Finding(
                "pgbouncer_idle_transaction_timeout",
                "warning",
                "idle_transaction_timeout off: a client idle inside a transaction (a "
                "frozen function) pins a server connection of the pool",
                "idle_transaction_timeout = 60",
            )
        )
    else:
        out.append(
            Finding(
                "pgbouncer_idle_transaction_timeout",
                "ok",
                f"idle_transaction_timeout {_duration(idle_tx)}",
            )
        )
    client_idle = bouncer.setting("client_idle_timeout")
    if client_idle <= 0:
        out.append(
            Finding(
                "pgbouncer_client_idle_timeout",
                "warning",
                "client_idle_timeout off: connections frozen serverless instances leave "
                "open hold client slots (max_client_conn) until TCP notices",
                "client_idle_timeout = 600 (and zonal's max_idle below it)",
            )
        )
    else:
        out.append(
            Finding(
                "pgbouncer_client_idle_timeout",
                "ok",
                f"client_idle_timeout {_duration(client_idle)}: PgBouncer reaps idle clients",
                f"keep zonal's max_idle below it (max_idle={_pick_max_idle(client_idle)})",
            )
        )
    keepalive = bouncer.setting("tcp_keepalive", 1)
    keepidle = bouncer.setting("tcp_keepidle")
    if keepalive <= 0 or keepidle <= 0 or keepidle > KEEPALIVE_IDLE_LIMIT:
        state = "off" if keepalive <= 0 else f"on, tcp_keepidle {keepidle or 'the OS default'}"
        out.append(
            Finding(
                "pgbouncer_keepalive",
                "warning",
                f"PgBouncer's TCP keepalives {state}: a client that vanished (a lost zone, "
                "a frozen function) is noticed after hours",
                "tcp_keepalive = 1, tcp_keepidle = 60, tcp_keepintvl = 10, tcp_keepcnt = 6",
            )
        )
    else:
        out.append(
            Finding(
                "pgbouncer_keepalive", "ok", f"PgBouncer's TCP keepalives on, idle {keepidle} s"
            )
        )
    waiting = _int((bouncer.pool or {}).get("cl_waiting")) or 0
    if waiting > 0:
        maxwait = _int((bouncer.pool or {}).get("maxwait")) or 0
        out.append(
            Finding(
                "pgbouncer_waiting",
                "warning",
                f"{waiting} clients waiting for a server connection now (longest {maxwait} s)",
                "raise default_pool_size within the server's headroom, or find the long "
                "transactions (SHOW SERVERS)",
            )
        )
    if bouncer.mode == "transaction" and bouncer.setting("max_prepared_statements") <= 0:
        out.append(
            Finding(
                "pgbouncer_prepared_statements",
                "info",
                "PgBouncer does not carry prepared statements across server connections "
                "(max_prepared_statements off or unknown to this version)",
                "pgbouncer='transaction' makes zonal's drivers prepare nothing "
                "(psycopg prepare_threshold=None, asyncpg statement caches 0)",
            )
        )
    return out


def _pick_max_idle(reaper_seconds: float) -> int:
    """A ``max_idle`` safely below a reaper's timeout: half of it, at most zonal's default."""
    return max(1, min(ZONAL_DEFAULT_MAX_IDLE, int(reaper_seconds // 2)))


def recommend(facts: Facts, plan: Plan) -> list[Recommendation]:
    """The zonal settings doctor would pick for this server, each with its reason."""
    server = facts.server
    bouncer = facts.pgbouncer
    recs: list[Recommendation] = []
    if bouncer is None:
        recs.append(Recommendation("pgbouncer", False, "a direct connection to PostgreSQL"))
    elif bouncer.mode in ("transaction", "session"):
        recs.append(
            Recommendation(
                "pgbouncer",
                bouncer.mode,
                f"PgBouncer in {bouncer.mode} mode ({bouncer.mode_source or 'detected'})",
            )
        )
    else:
        recs.append(
            Recommendation(
                "pgbouncer",
                "transaction",
                "PgBouncer, mode unknown or unsupported: the safe choice, once PgBouncer "
                "runs pool_mode = transaction",
            )
        )
    recs.extend(_recommend_pool(server, bouncer, plan))
    recs.extend(_recommend_reapers(server, bouncer))
    return recs


def _recommend_pool(
    server: ServerFacts, bouncer: PgBouncerFacts | None, plan: Plan
) -> list[Recommendation]:
    max_conn = server.number("max_connections", 100)
    reserved = min(_reserved(server), max_conn - 1)
    through = bouncer is not None and bouncer.mode != "session"
    if plan.instances is None:
        pool = plan.pool_size or ZONAL_DEFAULT_POOL_SIZE
        whose = "your" if plan.pool_size else "zonal's default"
        if through:
            why = (
                f"{whose} pool_size; behind "
                "PgBouncer the server side is PgBouncer's pool; pass --instances N to check "
                "it against max_client_conn"
            )
        else:
            fits = _available(server) // pool
            why = (
                f"{whose} pool_size: fits "
                f"{fits} instances here; pass --instances N for a computed size"
            )
        return [Recommendation("pool_size", pool, why)]
    kwargs: dict[str, Any] = {}
    if through and bouncer is not None and bouncer.config is not None:
        pool_size, reserve = _bouncer_pool(bouncer)
        kwargs = {
            "pgbouncer_pool_size": pool_size,
            "pgbouncer_reserve_pool": reserve,
            "max_client_conn": bouncer.setting(
                "max_client_conn", sizing.PGBOUNCER_DEFAULT_MAX_CLIENT_CONN
            ),
        }
    elif through:
        # PgBouncer without its numbers: only the CPU bound and the given pool apply
        cpu = sizing.cpu_bound(plan.cores or os.cpu_count() or 1)
        pool = min(plan.pool_size or ZONAL_DEFAULT_POOL_SIZE, cpu)
        return [
            Recommendation(
                "pool_size",
                pool,
                f"behind PgBouncer the server side is PgBouncer's pool; per instance at most "
                f"the CPU bound {cpu}; pass --pgbouncer-admin to check max_client_conn",
            )
        ]
    plan_sizing = sizing.size(
        db_max_connections=max_conn,
        instances=plan.instances,
        reserved=reserved,
        cores=plan.cores,
        **kwargs,
    )
    why = " ".join(plan_sizing.steps + plan_sizing.problems)
    recs = [Recommendation("pool_size", plan_sizing.pool_size, why)]
    if plan_sizing.pool_size:
        recs.append(
            Recommendation(
                "max_total", plan_sizing.pool_size, "one instance's cap across zones: the same"
            )
        )
    return recs


def _recommend_reapers(server: ServerFacts, bouncer: PgBouncerFacts | None) -> list[Recommendation]:
    recs: list[Recommendation] = []
    if bouncer is not None:
        seen = (
            " (it refused doctor's: 'unsupported startup parameter: options')"
            if bouncer.options_rejected
            else ""
        )
        reapers = "PgBouncer's client_idle_timeout and idle_transaction_timeout"
        if bouncer.config is not None:
            reapers = (
                f"PgBouncer's client_idle_timeout "
                f"({_duration(bouncer.setting('client_idle_timeout'))}) and "
                f"idle_transaction_timeout "
                f"({_duration(bouncer.setting('idle_transaction_timeout'))})"
            )
        recs.append(
            Recommendation(
                "serverless",
                True,
                "if instances are serverless: zonal sends no startup options through "
                f"PgBouncer, which rejects them{seen}; abandoned connections are reaped by "
                f"{reapers}, and the pool trims itself at request end",
            )
        )
        client_idle = bouncer.setting("client_idle_timeout") if bouncer.config else 0
        if client_idle > 0:
            recs.append(
                Recommendation(
                    "max_idle",
                    _pick_max_idle(client_idle),
                    f"below PgBouncer's client_idle_timeout ({_duration(client_idle)})",
                )
            )
            recs.append(
                Recommendation("pre_ping", True, "PgBouncer may close idle clients first")
            )
        return recs
    keep = keepalive_kwargs()
    keep_text = ", ".join(f"{k}={v}" for k, v in keep.items() if k != "keepalives")
    if server.version_num >= 140000:
        options = reaper_options(REAPER_IDLE_SESSION, REAPER_IDLE_IN_TRANSACTION)
        why = (
            "if instances are serverless: on direct connections zonal asks the server to "
            f"reap what a frozen instance holds (options '{options}') and turns on TCP "
            f"keepalives ({keep_text})"
        )
    else:
        options = reaper_options(0, REAPER_IDLE_IN_TRANSACTION)
        why = (
            f"if instances are serverless: PostgreSQL {server.version} has no "
            "idle_session_timeout (a startup option naming it would be refused at "
            f"connect), so only '{options}' and TCP keepalives ({keep_text})"
        )
    recs.append(Recommendation("serverless", True, why))
    idle = server.number("idle_session_timeout") / 1000
    if idle > 0 and idle <= ZONAL_DEFAULT_MAX_IDLE:
        recs.append(
            Recommendation(
                "max_idle",
                _pick_max_idle(idle),
                f"below the server's idle_session_timeout ({_duration(idle)})",
            )
        )
        recs.append(Recommendation("pre_ping", True, "the server may close idle sessions first"))
    return recs


def analyze(facts: Facts, plan: Plan | None = None) -> Report:
    """Findings and recommendations for ``facts``; pure, no I/O.

    >>> server = ServerFacts("17.2", 170002, {"max_connections": "20",
    ...     "superuser_reserved_connections": "3", "idle_session_timeout": "0",
    ...     "idle_in_transaction_session_timeout": "0", "tcp_keepalives_idle": "7200",
    ...     "tcp_keepalives_interval": "75", "tcp_keepalives_count": "9"}, connections=2)
    >>> report = analyze(Facts("postgresql://app:***@db/app", server), Plan(instances=10))
    >>> report.level("capacity"), exit_code(report)
    ('problem', 2)
    """
    plan = plan or Plan()
    server = facts.server
    bouncer = facts.pgbouncer
    findings: list[Finding] = [_check_version(server)]
    if bouncer is not None:
        findings.extend(_check_pgbouncer(server, bouncer, plan))
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
        findings.append(_check_capacity(server, plan))
    findings.extend(_check_reserved(server))
    findings.extend(_check_limits(server, plan))
    idle = _check_idle_session(server, bouncer)
    if idle is not None:
        findings.append(idle)
    findings.append(_check_idle_in_transaction(server, bouncer))
    findings.append(_check_keepalives(server, bouncer))
    return Report(facts.target, tuple(findings), tuple(recommend(facts, plan)), facts)


# -- collection (I/O) --------------------------------------------------------------


class DoctorError(Exception):
    """Doctor could not connect or read; the message is safe to print (no password)."""


_T = TypeVar("_T")


def _password_of(url: str) -> str | None:
    try:
        from psycopg.conninfo import conninfo_to_dict

        value = conninfo_to_dict(url).get("password")
    except Exception:
        return None
    return value if isinstance(value, str) else None


def secrets_of(urls: Iterable[str | None]) -> list[str]:
    """Every password the given URLs (and ``PGPASSWORD``) carry: what output must hide."""
    found = [_password_of(u) for u in urls if u]
    found.append(os.environ.get("PGPASSWORD"))
    return [s for s in found if s]


def _connect(url: str, timeout: float, hidden: list[str], **kwargs: Any) -> psycopg.Connection[Any]:
    import psycopg

    try:
        return psycopg.connect(
            url, connect_timeout=max(2, round(timeout)), autocommit=True, **kwargs
        )
    except Exception as exc:
        raise DoctorError(safe_description(exc, hidden)) from None


def _server_facts(conn: psycopg.Connection[Any]) -> ServerFacts:
    rows = conn.execute(
        "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", [list(SETTINGS)]
    ).fetchall()
    settings = {str(name): str(value) for name, value in rows}
    row = conn.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int,"
        " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),"
        " current_user, current_database(),"
        " coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false),"
        " coalesce((SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user), -1),"
        " coalesce((SELECT datconnlimit FROM pg_database"
        "           WHERE datname = current_database()), -1),"
        " pg_is_in_recovery(), inet_server_addr() IS NOT NULL"
    ).fetchone()
    assert row is not None
    return ServerFacts(
        version=str(row[0]),
        version_num=int(row[1]),
        settings=settings,
        connections=int(row[2]),
        role=str(row[3]),
        database=str(row[4]),
        superuser=bool(row[5]),
        role_connection_limit=int(row[6]),
        database_connection_limit=int(row[7]),
        in_recovery=bool(row[8]),
        tcp=bool(row[9]),
    )


def _backend_pid(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def _infer_mode(
    conn: psycopg.Connection[Any], url: str, timeout: float, hidden: list[str], app: str
) -> tuple[str | None, str | None]:
    """(mode, how) from behaviour alone; see the module docstring."""
    import psycopg

    first = _backend_pid(conn)  # autocommit: the statement is over, the server released
    with _connect(url, timeout, hidden, prepare_threshold=None, application_name=app) as other:
        second = _backend_pid(other)
        try:
            with other.transaction():
                other.execute("SELECT 1")
                other.execute("SELECT 2")
        except psycopg.Error as exc:
            if "statement pooling" in str(exc):
                return "statement", "inferred: a transaction block was refused"
            raise
    if first == second:
        return (
            "transaction",
            "inferred: a second client was served by the first one's server session",
        )
    return (
        "session",
        "inferred: a second client got another server session while the first stayed "
        "connected (pass --pgbouncer-admin to be sure)",
    )


def _rows(admin: psycopg.Connection[Any], command: str) -> list[dict[str, Any]]:
    cur = admin.execute(command)
    names = [c.name for c in cur.description or ()]
    return [dict(zip(names, row, strict=False)) for row in cur.fetchall()]


def _read_admin(
    admin_url: str, timeout: float, hidden: list[str], database: str, role: str, app: str
) -> dict[str, Any]:
    with _connect(admin_url, timeout, hidden) as admin:
        version_rows = _rows(admin, "SHOW VERSION")
        config = {str(r["key"]): str(r["value"]) for r in _rows(admin, "SHOW CONFIG")}
        databases = [r for r in _rows(admin, "SHOW DATABASES") if r.get("name") == database]
        pools = [
            r
            for r in _rows(admin, "SHOW POOLS")
            if r.get("database") == database and r.get("user") == role
        ]
        clients = _rows(admin, "SHOW CLIENTS")
    version = None
    if version_rows:
        version = str(next(iter(version_rows[0].values()))).removeprefix("PgBouncer ").strip()
    return {
        "version": version,
        "config": config,
        "database": databases[0] if databases else None,
        "pool": pools[0] if pools else None,
        "sees_doctor": any(c.get("application_name") == app for c in clients),
    }


def collect(
    url: str, admin_url: str | None = None, connect_timeout: float = 5.0
) -> Facts:
    """Connect to ``url`` (and PgBouncer's admin console ``admin_url``) and gather
    :class:`Facts`. Raises :class:`DoctorError`, with a message free of passwords,
    when the server cannot be reached or read."""
    import psycopg

    hidden = secrets_of([url, admin_url])
    app = f"zonal-doctor-{secrets.token_hex(4)}"
    base: dict[str, Any] = {"prepare_threshold": None, "application_name": app}
    evidence: list[str] = []
    options_rejected = False
    try:
        # startup options bound doctor's own statements on a direct connection and
        # tell PgBouncer apart: it refuses them
        conn = _connect(url, connect_timeout, hidden, options="-c statement_timeout=10000", **base)
    except DoctorError as exc:
        if "unsupported startup parameter" not in str(exc):
            raise
        options_rejected = True
        evidence.append("the startup 'options' parameter was refused")
        conn = _connect(url, connect_timeout, hidden, **base)
    try:
        with conn:
            server = _server_facts(conn)
            told = conn.info.backend_pid
            actual = _backend_pid(conn)
            if told != actual:
                evidence.append(
                    "the backend PID of the startup differs from pg_backend_pid()"
                )
            mode = source = None
            if evidence and admin_url is None:
                mode, source = _infer_mode(conn, url, connect_timeout, hidden, app)
            admin: dict[str, Any] | None = None
            admin_error = None
            if admin_url is not None:
                try:
                    admin = _read_admin(
                        admin_url, connect_timeout, hidden, server.database, server.role, app
                    )
                except (DoctorError, psycopg.Error) as exc:
                    admin_error = (
                        str(exc) if isinstance(exc, DoctorError) else safe_description(exc, hidden)
                    )
    except psycopg.Error as exc:
        raise DoctorError(safe_description(exc, hidden)) from None
    if admin is not None:
        if admin["sees_doctor"]:
            evidence.append("its admin console lists doctor's own connection")
        elif not evidence:
            admin_error = (
                "the admin console answers, but doctor's connection does not go through "
                "that PgBouncer"
            )
            admin = None
    if not evidence:
        return Facts(mask_url(url), server, admin_note=admin_error)
    if admin is not None:
        pool = admin["pool"] or {}
        database = admin["database"] or {}
        mode = pool.get("pool_mode") or database.get("pool_mode") or admin["config"].get(
            "pool_mode"
        )
        source = "from the admin console (SHOW POOLS)"
    bouncer = PgBouncerFacts(
        evidence=tuple(evidence),
        mode=mode,
        mode_source=source,
        version=admin["version"] if admin else None,
        config=admin["config"] if admin else None,
        database=admin["database"] if admin else None,
        pool=admin["pool"] if admin else None,
        admin_error=admin_error,
        admin_url=mask_url(admin_url) if admin_url else None,
        options_rejected=options_rejected,
    )
    return Facts(mask_url(url), server, bouncer)


def _with_deadline(fn: Callable[[], _T], seconds: float) -> _T:
    """``fn()``, or :class:`DoctorError` when it has not returned after ``seconds``
    (libpq waits forever on a server that stopped answering)."""
    result: list[_T] = []
    error: list[BaseException] = []

    def work() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # handed to the caller
            error.append(exc)

    thread = threading.Thread(target=work, name="zonal-doctor", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise DoctorError(
            f"no answer within {seconds:g} s: the server (or PgBouncer) accepted the "
            "connection but stopped answering"
        )
    if error:
        raise error[0]
    return result[0]


# -- the `zonal doctor` command ----------------------------------------------------


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
        "--instances", type=_positive, default=None, metavar="N",
        help="processes with a pool each, across all zones and machines",
    )
    parser.add_argument(
        "--pool-size", type=_positive, default=None, metavar="N",
        help=f"the pool_size you run or plan (default: zonal's {ZONAL_DEFAULT_POOL_SIZE})",
    )
    parser.add_argument(
        "--cores", type=_positive, default=None, metavar="N",
        help="CPU cores per instance (default: this machine's)",
    )
    parser.add_argument(
        "--connect-timeout", type=float, default=5.0, metavar="S",
        help="seconds per connection attempt (default 5)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, metavar="S",
        help="seconds for the whole check (default 30)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON report")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


_MARK: Mapping[str, str] = {"ok": "ok", "info": "info", "warning": "WARN", "problem": "PROBLEM"}


def _wrap(text: str, first: str, rest: str) -> str:
    return textwrap.fill(
        text,
        width=_WIDTH,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )


_WIDTH = 100


def render(report: Report) -> str:
    """The human report: findings with advice, then the settings zonal would pick."""
    lines = [f"zonal doctor: {report.target}", ""]
    for f in report.findings:
        lines.append(_wrap(f"{f.id}: {f.message}", f"[{_MARK[f.level]:>7}] ", " " * 10))
        if f.advice:
            lines.append(_wrap(f.advice, " " * 10 + "-> ", " " * 13))
    if report.recommendations:
        lines += ["", "zonal settings for this server:"]
        for r in report.recommendations:
            value = repr(r.value) if isinstance(r.value, str) else str(r.value)
            lines.append(f"  {r.option}={value}")
            lines.append(_wrap(r.why, " " * 6, " " * 6))
    problems = sum(f.level == "problem" for f in report.findings)
    warnings = sum(f.level == "warning" for f in report.findings)
    lines += ["", f"{problems} problem(s), {warnings} warning(s): exit {exit_code(report)}"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """``zonal doctor``: print the report; return 0, 1 (warnings) or 2 (problems,
    or no connection)."""
    hidden = secrets_of([args.url, args.pgbouncer_admin])
    target = redact(mask_url(args.url), hidden)
    plan = Plan(instances=args.instances, pool_size=args.pool_size, cores=args.cores)
    try:
        facts = _with_deadline(
            lambda: collect(args.url, args.pgbouncer_admin, args.connect_timeout), args.timeout
        )
    except DoctorError as exc:
        message = mask(redact(str(exc), hidden))
        report = Report(
            target,
            (
                Finding(
                    "connect",
                    "problem",
                    f"cannot connect or read: {message}",
                    "check host, port, database, user and password (PGPASSWORD or "
                    "~/.pgpass keep it off the command line)",
                ),
            ),
        )
        if args.json:
            print(json.dumps(report.as_dict(), indent=2))
        else:
            print(f"zonal doctor: {target}: cannot connect: {message}", file=sys.stderr)
        return 2
    report = analyze(facts, plan)
    text = json.dumps(report.as_dict(), indent=2, default=str) if args.json else render(report)
    print(redact(text, hidden))  # belt and braces: nothing above should hold one
    return exit_code(report)
