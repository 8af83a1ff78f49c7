"""PgBouncer transaction mode: the session-state rule on every statement.

Listens on the dialect's ``do_execute`` family (the pool has no engine to listen
on, the dialect it is given is the engine's), so the rule applies to Core, the
ORM and ``exec_driver_sql`` alike, before the statement reaches the server.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from zonal_core.errors import SessionStateError
from zonal_core.pgbouncer import KNOWN_SAFE, check

__all__ = ["install"]


def _on_execute(cursor: Any, statement: str, parameters: Any, context: Any) -> None:
    # Runs before every statement of every engine on this dialect: one chain of
    # attribute reads to the pool's live configuration (reconfigure replaces it),
    # and a statement found safe before skips the rule's call.
    try:  # (None, or a context of another engine: no rule)
        config = context.root_connection.engine.pool._zonal_state.config
    except AttributeError:
        return
    if config.pgbouncer != "transaction":
        return
    if context.execution_options.get("stream_results"):
        # SQLAlchemy "begins" even in AUTOCOMMIT; the driver knows the truth.
        dbapi_conn = getattr(cursor, "connection", None)
        if getattr(dbapi_conn, "autocommit", False):
            raise SessionStateError(
                "stream_results outside a transaction needs a cursor WITH HOLD, which "
                "PgBouncer transaction mode hands to other clients; run it inside a "
                "transaction (engine.begin() / Session) or use a direct connection",
                statement=statement[:80], safe_form="inside a transaction")
    if statement not in KNOWN_SAFE:
        check(statement, config.session_state)


def _on_execute_no_params(cursor: Any, statement: str, context: Any) -> None:
    _on_execute(cursor, statement, None, context)


def install(dialect: Any) -> None:
    """Apply the rule to everything ``dialect`` executes (once per dialect)."""
    if getattr(dialect, "_zonal_rules", False):
        return
    event.listen(dialect, "do_execute", _on_execute)
    event.listen(dialect, "do_executemany", _on_execute)
    event.listen(dialect, "do_execute_no_params", _on_execute_no_params)
    dialect._zonal_rules = True
