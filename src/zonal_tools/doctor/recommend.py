"""The zonal settings doctor would pick for a server, each with its reason. Pure."""

from __future__ import annotations

import os
from typing import Any

from zonal_core.drivers import keepalive_kwargs, reaper_options
from zonal_tools import sizing
from zonal_tools.doctor.facts import Deployment, Facts, PgBouncerFacts, ServerFacts
from zonal_tools.doctor.measures import duration, pick_max_idle, serverless_reapers
from zonal_tools.doctor.report import Recommendation

__all__ = ["recommend"]


def recommend(facts: Facts, deployment: Deployment) -> list[Recommendation]:
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
    recs.extend(_pool(server, bouncer, deployment))
    recs.extend(_reapers(server, bouncer, deployment))
    return recs


def _pool(
    server: ServerFacts, bouncer: PgBouncerFacts | None, deployment: Deployment
) -> list[Recommendation]:
    max_conn = server.max_connections
    reserved = min(server.reserved, max_conn - 1)
    through = bouncer is not None and bouncer.mode != "session"
    if deployment.instances is None:
        pool = deployment.pool
        whose = "your" if deployment.pool_size else "zonal's default"
        if through:
            why = (
                f"{whose} pool_size; behind "
                "PgBouncer the server side is PgBouncer's pool; pass --instances N to check "
                "it against max_client_conn"
            )
        else:
            fits = server.available // pool
            why = (
                f"{whose} pool_size: fits "
                f"{fits} instances here; pass --instances N for a computed size"
            )
        return [Recommendation("pool_size", pool, why)]
    kwargs: dict[str, Any] = {}
    if through and bouncer is not None and bouncer.config is not None:
        pool_size, reserve = bouncer.server_pool()
        kwargs = {
            "pgbouncer_pool_size": pool_size,
            "pgbouncer_reserve_pool": reserve,
            "max_client_conn": bouncer.setting(
                "max_client_conn", sizing.PGBOUNCER_DEFAULT_MAX_CLIENT_CONN
            ),
        }
    elif through:
        # PgBouncer without its numbers: only the CPU bound and the given pool apply
        cpu = sizing.cpu_bound(deployment.cores or os.cpu_count() or 1)
        pool = min(deployment.pool, cpu)
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
        instances=deployment.instances,
        reserved=reserved,
        cores=deployment.cores,
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


def _reapers(
    server: ServerFacts, bouncer: PgBouncerFacts | None, deployment: Deployment
) -> list[Recommendation]:
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
                f"({duration(bouncer.setting('client_idle_timeout'))}) and "
                f"idle_transaction_timeout "
                f"({duration(bouncer.setting('idle_transaction_timeout'))})"
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
                    pick_max_idle(client_idle, deployment.idle_limit),
                    f"below PgBouncer's client_idle_timeout ({duration(client_idle)})",
                )
            )
            recs.append(
                Recommendation("pre_ping", True, "PgBouncer may close idle clients first")
            )
        return recs
    keep = keepalive_kwargs()
    keep_text = ", ".join(f"{k}={v}" for k, v in keep.items() if k != "keepalives")
    # over a Unix socket zonal sends no keepalives: they do not apply there
    keep_words = f"TCP keepalives ({keep_text})" if server.tcp else ""
    idle_session, idle_in_transaction = serverless_reapers()
    if server.version_num >= 140000:
        options = reaper_options(idle_session, idle_in_transaction)
        why = (
            "if instances are serverless: on direct connections zonal asks the server to "
            f"reap what a frozen instance holds (options '{options}')"
            + (f" and turns on {keep_words}" if keep_words else "")
        )
    else:
        options = reaper_options(0, idle_in_transaction)
        why = (
            f"if instances are serverless: PostgreSQL {server.version} has no "
            "idle_session_timeout (a startup option naming it would be refused at "
            f"connect), so only '{options}'" + (f" and {keep_words}" if keep_words else "")
        )
    recs.append(Recommendation("serverless", True, why))
    idle = server.number("idle_session_timeout") / 1000
    if idle > 0 and idle <= deployment.idle_limit:
        recs.append(
            Recommendation(
                "max_idle",
                pick_max_idle(idle, deployment.idle_limit),
                f"below the server's idle_session_timeout ({duration(idle)})",
            )
        )
        recs.append(Recommendation("pre_ping", True, "the server may close idle sessions first"))
    return recs
