"""Classification of driver errors, built from the drivers' real exception classes."""

from __future__ import annotations

import importlib.metadata
import socket
from typing import Any

import pytest

from zonal_core.errors import QueryTimeout
from zonal_core.pgerrors import (
    is_auth_failure,
    is_disconnect,
    is_server_busy,
    safe_description,
    sqlstate_of,
)
from zonal_lab.pytest_plugin import require_module

psycopg = require_module("psycopg")
from psycopg import errors as pe  # noqa: E402

TOO_MANY = (
    'connection failed: connection to server at "10.0.1.5", port 5432 failed: '
    "FATAL:  sorry, too many clients already"
)


def chained(outer: BaseException, inner: BaseException) -> BaseException:
    """``outer`` raised from ``inner``, as a driver or wrapper would."""
    try:
        try:
            raise inner
        except BaseException as e:
            raise outer from e
    except BaseException as e:
        return e


def sa_wrapped(orig: BaseException) -> BaseException:
    sa_exc = require_module("sqlalchemy.exc")
    return chained(sa_exc.OperationalError("SELECT 1", {}, orig), orig)


# --------------------------------------------------------------------------- sqlstate_of


def test_sqlstate_of_psycopg_classes() -> None:
    assert sqlstate_of(pe.TooManyConnections("x")) == "53300"
    assert sqlstate_of(pe.AdminShutdown("x")) == "57P01"
    assert sqlstate_of(pe.CannotConnectNow("x")) == "57P03"
    assert sqlstate_of(pe.InvalidPassword("x")) == "28P01"
    # A connect-time OperationalError carries none (NOTES).
    assert sqlstate_of(psycopg.OperationalError(TOO_MANY)) is None
    assert sqlstate_of(ValueError("x")) is None


def test_sqlstate_of_walks_cause_context_and_orig() -> None:
    inner = pe.TooManyConnections("sorry, too many clients already")
    assert sqlstate_of(chained(RuntimeError("pool"), inner)) == "53300"
    assert sqlstate_of(sa_wrapped(inner)) == "53300"
    # __context__ only (raised while handling)
    try:
        try:
            raise inner
        except Exception:
            raise RuntimeError("while handling") from None
    except RuntimeError as e:
        assert sqlstate_of(e) == "53300"


def test_sqlstate_of_survives_cycles_and_odd_attributes() -> None:
    a = RuntimeError("a")
    b = RuntimeError("b")
    a.__context__ = b
    b.__context__ = a
    assert sqlstate_of(a) is None

    class Odd(Exception):
        @property
        def sqlstate(self) -> str:
            raise RuntimeError("boom")

        pgcode = 42

    assert sqlstate_of(Odd()) is None

    class Psycopg2Like(Exception):
        pgcode = "53300"

    assert sqlstate_of(Psycopg2Like()) == "53300"


# --------------------------------------------------------------------------- is_server_busy

BUSY = [
    pe.TooManyConnections("sorry, too many clients already"),
    pe.CannotConnectNow("the database system is starting up"),
    pe.CannotConnectNow("the database system is shutting down"),
    psycopg.OperationalError(TOO_MANY),
    psycopg.OperationalError(
        'connection failed: connection to server at "h", port 5432 failed: FATAL:  '
        "remaining connection slots are reserved for roles with the SUPERUSER attribute"
    ),
    psycopg.OperationalError('connection failed: FATAL:  too many connections for role "app"'),
    psycopg.OperationalError("connection failed: FATAL:  the database system is starting up"),
    psycopg.OperationalError("connection failed: FATAL:  the database system is in recovery mode"),
    psycopg.OperationalError("FATAL:  no more connections allowed (max_client_conn)"),
]

NOT_BUSY = [
    pe.InvalidPassword('password authentication failed for user "app"'),
    pe.AdminShutdown("terminating connection due to administrator command"),
    pe.QueryCanceled("canceling statement due to statement timeout"),
    pe.DiskFull("could not extend file"),  # 53100: class 53 but not "busy"
    # A server error that quotes the text is not the condition (SQLSTATE decides).
    pe.InvalidTextRepresentation(
        'invalid input syntax for type integer: "sorry, too many clients already"'
    ),
    psycopg.OperationalError("connection failed: Connection refused"),
    ValueError("nothing to do with it"),
]


@pytest.mark.parametrize("exc", BUSY, ids=repr)
def test_busy(exc: BaseException) -> None:
    assert is_server_busy(exc)
    assert is_server_busy(sa_wrapped(exc))
    assert is_server_busy(chained(RuntimeError("connect attempt failed"), exc))


@pytest.mark.parametrize("exc", NOT_BUSY, ids=repr)
def test_not_busy(exc: BaseException) -> None:
    assert not is_server_busy(exc)
    assert not is_server_busy(sa_wrapped(exc))


# --------------------------------------------------------------------------- is_auth_failure

AUTH = [
    pe.InvalidPassword('password authentication failed for user "app"'),
    pe.InvalidAuthorizationSpecification('role "nobody" does not exist'),
    psycopg.OperationalError(
        'connection failed: connection to server at "h", port 5432 failed: FATAL:  '
        'password authentication failed for user "app"'
    ),
    psycopg.OperationalError(
        'connection failed: FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "app"'
    ),
    psycopg.OperationalError("connection failed: fe_sendauth: no password supplied"),
    psycopg.OperationalError('connection failed: FATAL:  role "ghost" does not exist'),
]

NOT_AUTH = [
    pe.TooManyConnections("sorry, too many clients already"),
    # SET ROLE of a missing role is 42704, not a login failure.
    pe.UndefinedObject('role "ghost" does not exist'),
    psycopg.OperationalError(TOO_MANY),
]


@pytest.mark.parametrize("exc", AUTH, ids=repr)
def test_auth_failure(exc: BaseException) -> None:
    assert is_auth_failure(exc)
    assert is_auth_failure(sa_wrapped(exc))
    assert not is_server_busy(exc)


@pytest.mark.parametrize("exc", NOT_AUTH, ids=repr)
def test_not_auth_failure(exc: BaseException) -> None:
    assert not is_auth_failure(exc)


# --------------------------------------------------------------------------- is_disconnect

DISCONNECT: list[BaseException] = [
    pe.AdminShutdown("terminating connection due to administrator command"),
    pe.CrashShutdown("terminating connection because of crash of another server process"),
    pe.IdleSessionTimeout("terminating connection due to idle-session timeout"),
    pe.IdleInTransactionSessionTimeout("terminating connection due to idle-in-transaction timeout"),
    pe.ConnectionFailure("connection failure"),
    pe.ConnectionDoesNotExist("connection does not exist"),
    pe.ProtocolViolation("server conn crashed?"),  # 08P01, what PgBouncer sends
    psycopg.OperationalError(
        "consuming input failed: server closed the connection unexpectedly\n"
        "\tThis probably means the server terminated abnormally"
    ),
    psycopg.OperationalError("the connection is closed"),
    psycopg.OperationalError("the connection is lost"),
    psycopg.OperationalError("consuming input failed: EOF detected"),
    psycopg.OperationalError("SSL SYSCALL error: EOF detected"),
    psycopg.OperationalError("could not receive data from server: Connection reset by peer"),
    psycopg.OperationalError("sending query failed: could not send data to server: Broken pipe"),
    psycopg.InterfaceError("connection already closed"),
    ConnectionResetError(104, "Connection reset by peer"),
    BrokenPipeError(32, "Broken pipe"),
    EOFError(),
    QueryTimeout("query_timeout of 30s expired"),
]

NOT_DISCONNECT: list[BaseException] = [
    pe.QueryCanceled("canceling statement due to statement timeout"),
    pe.UniqueViolation('duplicate key value violates unique constraint "pk"'),
    pe.TooManyConnections("sorry, too many clients already"),
    pe.InvalidTextRepresentation(
        'invalid input syntax for type integer: "server closed the connection"'
    ),
    pe.UndefinedTable('relation "geofence" does not exist'),
    psycopg.OperationalError(TOO_MANY),
    psycopg.ProgrammingError("the query has 2 placeholders but 1 parameters were passed"),
    # No SQLSTATE, so the message decides: "eof" must be a word, not part of one.
    psycopg.OperationalError('relation "geofence" is not usable'),
    psycopg.OperationalError("sending query failed: another command is already in progress"),
    ValueError("x"),
]


@pytest.mark.parametrize("exc", DISCONNECT, ids=repr)
def test_disconnect(exc: BaseException) -> None:
    assert is_disconnect(exc)
    assert is_disconnect(sa_wrapped(exc))
    assert is_disconnect(chained(RuntimeError("rollback failed"), exc))


@pytest.mark.parametrize("exc", NOT_DISCONNECT, ids=repr)
def test_not_disconnect(exc: BaseException) -> None:
    assert not is_disconnect(exc)
    assert not is_disconnect(sa_wrapped(exc))


def test_disconnect_while_handling_another_error() -> None:
    # The rollback after a data error finds the server gone: that counts.
    data_error = pe.InvalidTextRepresentation("invalid input syntax for type integer")
    lost = psycopg.OperationalError("server closed the connection unexpectedly")
    try:
        try:
            raise data_error
        except pe.DataError:
            raise lost  # noqa: B904 - the implicit __context__ is the point
    except psycopg.OperationalError as e:
        assert is_disconnect(e)
        assert sqlstate_of(e) == "22P02"


def test_sqlalchemy_connection_invalidated_flag() -> None:
    sa_exc = require_module("sqlalchemy.exc")
    err = sa_exc.OperationalError(
        "SELECT 1", {}, ValueError("whatever"), connection_invalidated=True
    )
    assert is_disconnect(err)


def test_real_connection_refused_is_not_disconnect_or_busy() -> None:
    port = _closed_port()
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(host="127.0.0.1", port=port, user="app", connect_timeout=2)
    assert not is_server_busy(info.value)
    assert not is_auth_failure(info.value)


# --------------------------------------------------------------------------- asyncpg

def _sqlalchemy_version() -> tuple[int, int]:
    try:
        major, minor = importlib.metadata.version("sqlalchemy").split(".")[:2]
    except importlib.metadata.PackageNotFoundError:
        return (0, 0)
    return int(major), int(minor)


def test_asyncpg_exceptions() -> None:
    a = require_module("asyncpg.exceptions")
    assert is_server_busy(a.TooManyConnectionsError("sorry, too many clients already"))
    assert is_server_busy(a.CannotConnectNowError("the database system is starting up"))
    assert is_auth_failure(a.InvalidPasswordError('password authentication failed for user "x"'))
    assert is_disconnect(a.AdminShutdownError("terminating connection"))
    assert is_disconnect(
        a.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    )
    assert is_disconnect(a.InterfaceError("cannot perform operation: connection is closed"))
    assert not is_disconnect(a.QueryCanceledError("canceling statement due to user request"))
    assert not is_server_busy(a.UniqueViolationError("duplicate key"))
    assert sqlstate_of(a.TooManyConnectionsError("x")) == "53300"


@pytest.mark.skipif(_sqlalchemy_version() < (2, 1),
                    reason="the asyncpg adapter's exception translation is reachable this "
                           "way (_handle_exception_no_connection) on SQLAlchemy 2.1 and later")
def test_asyncpg_through_sqlalchemy_adapter() -> None:
    asyncpg = require_module("asyncpg")
    asyncpg_exc = require_module("asyncpg.exceptions")
    mod = require_module("sqlalchemy.dialects.postgresql.asyncpg")
    dbapi = mod.AsyncAdapt_asyncpg_dbapi(asyncpg)

    def translate(err: BaseException) -> BaseException:
        try:
            mod.AsyncAdapt_asyncpg_connection._handle_exception_no_connection(dbapi, err)
        except Exception as e:
            return e
        raise AssertionError("not raised")  # pragma: no cover

    busy = translate(asyncpg_exc.TooManyConnectionsError("sorry, too many clients already"))
    assert sqlstate_of(busy) == "53300"
    assert is_server_busy(busy)
    assert is_server_busy(sa_wrapped(busy))
    gone = translate(asyncpg_exc.InterfaceError("cannot perform operation: connection is closed"))
    assert is_disconnect(gone)
    assert is_disconnect(sa_wrapped(gone))


# --------------------------------------------------------------------------- safe_description


def test_safe_description_shape() -> None:
    assert safe_description(pe.TooManyConnections("sorry, too many clients already")) == (
        "TooManyConnections [53300]: sorry, too many clients already"
    )
    assert safe_description(psycopg.OperationalError(TOO_MANY)) == f"OperationalError: {TOO_MANY}"
    assert safe_description(ValueError()) == "ValueError"
    # First line only; psycopg's "...: \n- host: ..." keeps the reason.
    multi = psycopg.OperationalError(
        "connection failed: Multiple connection attempts failed. All failures were:\n"
        "- host: 'a', port: '5432': Connection refused\n- host: 'b' ..."
    )
    assert safe_description(multi) == (
        "OperationalError: connection failed: Multiple connection attempts failed. "
        "All failures were: - host: 'a', port: '5432': Connection refused"
    )
    assert len(safe_description(ValueError("x" * 10_000))) < 600


def test_password_never_in_safe_description_of_a_real_psycopg_error() -> None:
    password = "s3cr3t-Pa55"
    port = _closed_port()
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(
            f"host=127.0.0.1 port={port} user=app password={password} dbname=x connect_timeout=2"
        )
    exc = info.value
    # The premise (NOTES): the exception object carries the password in pgconn's repr.
    assert password in repr(exc.pgconn)
    text = safe_description(exc)
    assert password not in text
    assert text.startswith("OperationalError: connection failed")
    assert password not in safe_description(sa_wrapped(exc))


def test_safe_description_never_reads_pgconn() -> None:
    class Leaky(psycopg.OperationalError):
        @property
        def pgconn(self) -> Any:
            raise AssertionError("safe_description read pgconn")

        def __repr__(self) -> str:
            raise AssertionError("safe_description used repr")

    exc = Leaky("connection failed: server closed the connection unexpectedly")
    assert safe_description(exc).startswith("Leaky: connection failed")
    assert is_disconnect(exc)
    assert not is_server_busy(exc)
    assert not is_auth_failure(exc)
    assert sqlstate_of(exc) is None


@pytest.mark.parametrize(
    "message",
    [
        'missing "=" after "hunter2" in connection info string',
        "invalid URI: postgresql://app:hunter2@db:5432/appdb?sslmode=bogus",
        "could not connect using host=db user=app password=hunter2 dbname=appdb",
        "bad conninfo: password='hunter2' host=db",
    ],
)
def test_password_redacted_from_message(message: str) -> None:
    for exc in (psycopg.ProgrammingError(message), psycopg.OperationalError(message)):
        text = safe_description(exc, secrets=["hunter2"])
        assert "hunter2" not in text
        assert "***" in text
    # Masked by shape even when the secret is not given.
    if "hunter2@" in message or "password=" in message:
        assert "hunter2" not in safe_description(ValueError(message))


def test_safe_description_with_unprintable_exception() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert safe_description(Unprintable()) == "Unprintable"


def _closed_port() -> int:
    # A port nobody listens on: bind, read the number, close.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
