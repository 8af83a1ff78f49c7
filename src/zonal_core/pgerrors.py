"""What a driver error means for the pool: server busy, bad credentials, connection gone.

Works from SQLSTATE codes and messages only, so it understands psycopg, asyncpg and
SQLAlchemy's wrappers without importing any of them. An exception is read together
with its chain: SQLAlchemy's ``.orig``, ``__cause__`` and ``__context__``.

The chain is read outward-in: the first error that carries a SQLSTATE decides by
it, and an error without one (psycopg reports connect-time failures such as "sorry,
too many clients already" without a SQLSTATE) decides by its message. So a server
message that merely *quotes* such a text, say ``invalid input syntax for type
integer: "terminating connection"`` (22P02), is not misread, while a "server closed
the connection unexpectedly" raised while handling another error still counts.

Nothing here reads ``pgconn`` or any other attribute that may carry a password:
psycopg exception objects can hold the password in ``pgconn``'s repr.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from zonal_core.errors import QueryTimeout
from zonal_core.secrets import mask, redact

__all__ = [
    "is_auth_failure",
    "is_config_error",
    "is_disconnect",
    "is_server_busy",
    "safe_description",
    "sqlstate_of",
]

_MAX_CHAIN = 16
_MAX_LINE = 500

# 53300 too_many_connections; 57P03 cannot_connect_now (starting up, shutting down,
# in recovery, not yet accepting connections).
_BUSY_STATES = frozenset({"53300", "57P03"})
_BUSY_MESSAGES = re.compile(
    "|".join(
        re.escape(s)
        for s in (
            "sorry, too many clients already",
            "too many connections for role",
            "too many connections for database",
            "remaining connection slots are reserved",
            "the database system is starting up",
            "the database system is shutting down",
            "the database system is not yet accepting connections",
            "the database system is not accepting connections",
            "the database system is in recovery mode",
            "no more connections allowed",  # PgBouncer max_client_conn
        )
    )
)

# 28P01 invalid_password; 28000 invalid_authorization_specification.
_AUTH_STATES = frozenset({"28P01", "28000"})
_AUTH_MESSAGES = re.compile(
    r"password authentication failed|sasl authentication failed"
    r"|(?:pam|ident|peer|gss|sspi|ldap|radius|cert) authentication failed"
    r"|no pg_hba\.conf entry|no password supplied|password is required"
    r"|role \"[^\"]*\" does not exist|server login has been failing"
)

# 3D000 invalid_catalog_name (database does not exist); 42704 undefined_object and
# 22023 invalid_parameter_value (a startup option the server does not know or
# accept); 42501 insufficient_privilege (no CONNECT on the database).
_CONFIG_STATES = frozenset({"3D000", "42704", "22023", "42501"})
# Mostly libpq's own, before any server answers (no SQLSTATE): a misspelled option,
# a bad value, TLS files or modes that cannot work.
_CONFIG_MESSAGES = re.compile(
    r"invalid connection option|invalid sslmode value|invalid [a-z_ ]+ value"
    r"|missing \"=\" after|invalid uri|invalid integer value|invalid port number"
    r"|database \"[^\"]*\" does not exist|unrecognized configuration parameter"
    r"|no such database|unsupported startup parameter"  # PgBouncer's words for them
    r"|root certificate file .* does not exist|could not read root certificate file"
    r"|certificate present, but not private key|could not load private key file"
    r"|could not open certificate file|private key file .* has group or world access"
    r"|server does not support ssl, but ssl was required"
    r"|ssl support is not compiled in|sslmode value .* invalid"
)
# Python errors that mean the connect call itself is wrong (a string where a number
# belongs, a missing module, a bug in a hook), never that a server is unreachable.
_PROGRAMMING_ERRORS = (TypeError, ValueError, AttributeError, LookupError, NameError,
                       ImportError, NotImplementedError, AssertionError)

# 57P01 admin_shutdown (pg_terminate_backend), 57P02 crash_shutdown, 57P04
# database_dropped, 57P05 idle_session_timeout, 25P03 idle-in-transaction timeout:
# the server closed the session. Class 08 is connection_exception.
_DISCONNECT_STATES = frozenset({"57P01", "57P02", "57P04", "57P05", "25P03"})
_DISCONNECT_MESSAGES = re.compile(
    r"server closed the connection|connection is closed|connection already closed"
    r"|connection is lost|connection was closed|terminating connection"
    r"|consuming input failed|could not receive data from server"
    r"|could not send data to server|connection reset|connection aborted|broken pipe"
    r"|no connection to the server|lost synchronization with server"
    r"|ssl connection has been closed unexpectedly|server conn crashed|connection not open"
    r"|\beof\b"
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it wraps: SQLAlchemy's ``.orig``, ``__cause__``, ``__context__``."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < _MAX_CHAIN:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        orig = getattr(e, "orig", None)
        for nxt in (orig, e.__cause__, e.__context__):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def _own_sqlstate(exc: BaseException) -> str | None:
    # psycopg and asyncpg: .sqlstate (SQLAlchemy's asyncpg adapter copies it too);
    # psycopg2 and that adapter: .pgcode; psycopg: .diag.sqlstate as a last resort.
    for attr in ("sqlstate", "pgcode"):
        try:
            value = getattr(exc, attr, None)
        except Exception:
            continue
        if isinstance(value, str) and len(value) == 5:
            return value.upper()
    try:
        diag = getattr(exc, "diag", None)
        value = getattr(diag, "sqlstate", None) if diag is not None else None
    except Exception:
        return None
    if isinstance(value, str) and len(value) == 5:
        return value.upper()
    return None


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE of ``exc`` or of the first error in its chain that has one.

    >>> class E(Exception):
    ...     sqlstate = "53300"
    >>> try:
    ...     try:
    ...         raise E("sorry, too many clients already")
    ...     except E as inner:
    ...         raise RuntimeError("connect failed") from inner
    ... except RuntimeError as outer:
    ...     sqlstate_of(outer)
    '53300'
    """
    for e in _chain(exc):
        state = _own_sqlstate(e)
        if state is not None:
            return state
    return None


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return ""


def _decide(
    exc: BaseException, states: frozenset[str], messages: re.Pattern[str], state_class: str = ""
) -> bool:
    # Walk the chain outward-in. The first error that carries a SQLSTATE decides by
    # it; before that, an error without one decides by its message. A wrapper with
    # ``.orig`` (SQLAlchemy) repeats the wrapped message, so its own text is skipped.
    for e in _chain(exc):
        state = _own_sqlstate(e)
        if state is not None:
            return state in states or (state_class != "" and state.startswith(state_class))
        if getattr(e, "orig", None) is None and messages.search(_text(e).lower()):
            return True
    return False


def is_server_busy(exc: BaseException) -> bool:
    """True if the server refused a connection for now: retry with backoff.

    SQLSTATE 53300 (too many connections) or 57P03 (starting up, shutting down,
    in recovery), or without a SQLSTATE their messages ("sorry, too many clients
    already", "remaining connection slots are reserved", "too many connections for
    role", "the database system is starting up", PgBouncer's "no more connections
    allowed").

    >>> is_server_busy(Exception("connection failed: FATAL:  sorry, too many clients already"))
    True
    """
    return _decide(exc, _BUSY_STATES, _BUSY_MESSAGES)


def is_auth_failure(exc: BaseException) -> bool:
    """True if the credentials were refused (28P01, 28000, "password authentication failed").

    Retrying does not help; the pool should fail fast and say so.
    """
    return _decide(exc, _AUTH_STATES, _AUTH_MESSAGES)


def is_config_error(exc: BaseException) -> bool:
    """True if the connect failed because of how it was configured, not because of
    the zone: a misspelled or invalid connection option, a database that does not
    exist, TLS files or modes that cannot work, a startup parameter the server
    refuses, or a Python error in the connect call (TypeError, ValueError...).

    Retrying or failing over does not help: the same settings fail in every zone.
    Such errors eject nothing and reach the caller as themselves.

    >>> is_config_error(Exception('invalid connection option "sslmdoe"'))
    True
    >>> is_config_error(Exception("connection refused"))
    False
    """
    if isinstance(exc, _PROGRAMMING_ERRORS) and not _is_driver_error(exc):
        return True
    return _decide(exc, _CONFIG_STATES, _CONFIG_MESSAGES)


def _is_driver_error(exc: BaseException) -> bool:
    # A DB-API error class that also derives from ValueError or the like is still
    # the driver speaking (asyncpg's InterfaceError, for one).
    return any(c.__module__.split(".")[0] in ("psycopg", "asyncpg", "psycopg2", "sqlalchemy")
               for c in type(exc).__mro__)


def is_disconnect(exc: BaseException) -> bool:
    """True if the connection is gone and must be discarded (not returned to the pool).

    SQLSTATE class 08 and 57P01/57P02/57P04/57P05/25P03 (the server ended the
    session); Python's ``ConnectionError`` and ``EOFError``; a
    :class:`~zonal_core.errors.QueryTimeout` (zonal gave up on that connection);
    SQLAlchemy's ``connection_invalidated``; or, without a SQLSTATE, the driver's
    messages ("server closed the connection unexpectedly", "connection is closed",
    "terminating connection", "consuming input failed", "EOF", "connection reset", ...).
    """
    for e in _chain(exc):
        if isinstance(e, ConnectionError | EOFError | QueryTimeout):
            return True
        try:
            if getattr(e, "connection_invalidated", False) is True:
                return True
        except Exception:
            pass
    return _decide(exc, _DISCONNECT_STATES, _DISCONNECT_MESSAGES, state_class="08")


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[0]
    # psycopg's multi-host failure puts the reasons on the next lines.
    if line.endswith(":") and len(lines) > 1:
        line = f"{line} {lines[1]}"
    if len(line) > _MAX_LINE:
        line = line[: _MAX_LINE - 3] + "..."
    return line


def safe_description(exc: BaseException, secrets: Iterable[str | None] = ()) -> str:
    """A one-line description of ``exc`` that is safe to log: never a password.

    Type name, SQLSTATE (if any in the chain) and the first line of ``str(exc)``,
    with every known secret of ``secrets`` and every password-looking part
    (``password=...``, ``user:pass@host``) masked. It never reads ``exc.pgconn`` or
    any other attribute that could carry the connection's password.

    >>> safe_description(ValueError("missing '=' after 's3cret' in connection info string"),
    ...                  secrets=["s3cret"])
    "ValueError: missing '=' after '***' in connection info string"
    """
    name = type(exc).__name__
    state = sqlstate_of(exc)
    head = f"{name} [{state}]" if state else name
    line = _first_line(_text(exc))
    # Exact secrets first (before masking reshapes the text), then by shape.
    line = mask(redact(line, secrets))
    return f"{head}: {line}" if line else head
