"""PgBouncer's checks: its pool mode, and with its admin console its pools, client
limit, timeouts and keepalives against the server and the deployment. Pure."""

from __future__ import annotations

from zonal_tools import sizing
from zonal_tools.doctor.facts import Deployment, PgBouncerFacts, ServerFacts, as_int
from zonal_tools.doctor.measures import KEEPALIVE_IDLE_LIMIT, duration, pick_max_idle
from zonal_tools.doctor.report import Finding

__all__ = ["check_pgbouncer"]


def check_pgbouncer(
    server: ServerFacts, bouncer: PgBouncerFacts, deployment: Deployment
) -> list[Finding]:
    """What doctor finds about the PgBouncer between it and ``server``."""
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
    out.extend(_check_config(server, bouncer, deployment))
    return out


def _check_config(
    server: ServerFacts, bouncer: PgBouncerFacts, deployment: Deployment
) -> list[Finding]:
    out: list[Finding] = []
    pool, reserve = bouncer.server_pool()
    available = server.available
    total = pool + reserve
    db_max = as_int((bouncer.database or {}).get("max_connections")) or 0
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
    need = deployment.planned()
    if need is not None and need > max_client:
        out.append(
            Finding(
                "pgbouncer_max_client_conn",
                "problem",
                f"max_client_conn {max_client}, but {deployment.text()} = {need} client "
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
                + (f": {deployment.text()} = {need} fits" if need is not None else ""),
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
                f"idle_transaction_timeout {duration(idle_tx)}",
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
                f"client_idle_timeout {duration(client_idle)}: PgBouncer reaps idle clients",
                "keep zonal's max_idle below it "
                f"(max_idle={pick_max_idle(client_idle, deployment.idle_limit)})",
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
    waiting = as_int((bouncer.pool or {}).get("cl_waiting")) or 0
    if waiting > 0:
        maxwait = as_int((bouncer.pool or {}).get("maxwait")) or 0
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
