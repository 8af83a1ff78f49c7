"""Gathering :class:`Facts`: the only part of doctor that talks to a server.

Every connect goes through :func:`zonal_core.psycopg_driver.connect`, bounded to the
sub-second (libpq alone waits forever on a black-holed address and rounds its own
``connect_timeout`` up to 2 s); :func:`with_deadline` bounds the whole check.

How PgBouncer is recognised without its admin console: it answers the startup with
its own cancel key, so the backend PID the client was told differs from
``pg_backend_pid()``; and it refuses the startup ``options`` parameter
("unsupported startup parameter: options"). The pool mode is then inferred: in
statement mode a transaction block is refused; in transaction mode a second client
is served by the server session the first one just released, in session mode it
cannot be. With an admin console the mode and the limits come from ``SHOW POOLS``,
``SHOW DATABASES`` and ``SHOW CONFIG`` instead.

No message leaves this module with a password: driver errors are described by
:func:`zonal_core.pgerrors.safe_description` with every known secret hidden.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from zonal_core.config import DEFAULTS
from zonal_core.pgerrors import safe_description
from zonal_core.secrets import mask_url
from zonal_tools.doctor.facts import SETTINGS, Facts, PgBouncerFacts, ServerFacts

if TYPE_CHECKING:
    import psycopg

__all__ = ["DoctorError", "DoctorTarget", "collect", "describe", "secrets_of", "with_deadline"]

DoctorTarget = str | Mapping[str, Any]
"""What to check: a URL (or libpq conninfo string), or ``psycopg.connect()``
keyword arguments for one host."""

_T = TypeVar("_T")


class DoctorError(Exception):
    """Doctor could not connect or read; the message is safe to print (no password)."""


def _password_of(target: DoctorTarget) -> str | None:
    if not isinstance(target, str):
        value = target.get("password")
        return value if isinstance(value, str) else None
    try:
        from psycopg.conninfo import conninfo_to_dict

        value = conninfo_to_dict(target).get("password")
    except Exception:
        return None
    return value if isinstance(value, str) else None


def secrets_of(targets: Iterable[DoctorTarget | None]) -> list[str]:
    """Every password the given targets (and ``PGPASSWORD``) carry: what output must hide."""
    found = [_password_of(t) for t in targets if t]
    found.append(os.environ.get("PGPASSWORD"))
    return [s for s in found if s]


def describe(target: DoctorTarget) -> str:
    """The target as a URL with its password masked, for reports.

    >>> describe("postgresql://app:secret@db:5432/appdb")
    'postgresql://app:***@db:5432/appdb'
    >>> describe({"host": "db", "port": 6432, "user": "app", "password": "s", "dbname": "x"})
    'postgresql://app:***@db:6432/x'
    >>> describe({"host": "/cloudsql/p:r:i", "port": 5432, "user": "app", "dbname": "x"})
    'postgresql://app@/x?host=/cloudsql/p%3Ar%3Ai&port=5432'
    """
    if isinstance(target, str):
        return mask_url(target)
    user = quote(str(target.get("user") or ""), safe="")
    cred = f"{user}:***@" if target.get("password") else (f"{user}@" if user else "")
    host = str(target.get("host") or "")
    dbname = quote(str(target.get("dbname") or ""), safe="")
    if host.startswith("/"):  # a Unix-socket directory: libpq's URL form
        port = f"&port={quote(str(target['port']), safe='')}" if target.get("port") else ""
        return f"postgresql://{cred}/{dbname}?host={quote(host, safe='/')}{port}"
    where = f"[{host}]" if ":" in host else quote(host, safe="/")
    if target.get("port"):
        where += f":{target['port']}"
    return f"postgresql://{cred}{where}/{dbname}"


def check_url(target: DoctorTarget) -> None:
    """Refuse a URL whose password was not percent-encoded, before libpq splits it in
    the wrong place and echoes a piece of it as a host or database name.

    >>> check_url("postgresql://app:Pa@ss@db/x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    zonal_tools.doctor.collect.DoctorError: the URL's password ... percent-encode it: ...
    """
    if not isinstance(target, str) or "://" not in target:
        return
    rest = target.split("://", 1)[1]
    netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
    userinfo = netloc.rpartition("@")[0]
    if (netloc.count("@") > 1 or rest.count("@") != netloc.count("@")
            or re.search(r"%(?![0-9A-Fa-f]{2})|\s", userinfo)):
        raise DoctorError("the URL's password (or user name) holds an unencoded '@', '/', '%' "
                          "or space (fix: percent-encode it: urllib.parse.quote_plus(password))")


def _connect(
    target: DoctorTarget, timeout: float, hidden: list[str], **kwargs: Any
) -> psycopg.Connection[Any]:
    from psycopg.conninfo import conninfo_to_dict

    from zonal_core.psycopg_driver import connect

    check_url(target)
    try:
        params = conninfo_to_dict(target) if isinstance(target, str) else dict(target)
        params.update(kwargs, autocommit=True)
        return connect(params, timeout)
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
    conn: psycopg.Connection[Any], target: DoctorTarget, timeout: float, hidden: list[str], app: str
) -> tuple[str | None, str | None]:
    """(mode, how) from behaviour alone; see the module docstring."""
    import psycopg

    first = _backend_pid(conn)  # autocommit: the statement is over, the server released
    with _connect(target, timeout, hidden, prepare_threshold=None, application_name=app) as other:
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
    target: DoctorTarget,
    admin_url: str | None = None,
    connect_timeout: float = DEFAULTS["connect_timeout"],
) -> Facts:
    """Connect to ``target`` (and PgBouncer's admin console ``admin_url``) and gather
    :class:`Facts`, each connect bounded by ``connect_timeout`` seconds (zonal's
    default). Raises :class:`DoctorError`, with a message free of passwords,
    when the server cannot be reached or read."""
    import psycopg

    hidden = secrets_of([target, admin_url])
    app = f"zonal-doctor-{secrets.token_hex(4)}"
    base: dict[str, Any] = {"prepare_threshold": None, "application_name": app}
    evidence: list[str] = []
    options_rejected = False
    try:
        # startup options bound doctor's own statements on a direct connection and
        # tell PgBouncer apart: it refuses them
        conn = _connect(target, connect_timeout, hidden,
                        options="-c statement_timeout=10000", **base)
    except DoctorError as exc:
        if "unsupported startup parameter" not in str(exc):
            raise
        options_rejected = True
        evidence.append("the startup 'options' parameter was refused")
        conn = _connect(target, connect_timeout, hidden, **base)
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
                mode, source = _infer_mode(conn, target, connect_timeout, hidden, app)
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
        return Facts(describe(target), server, admin_note=admin_error)
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
    return Facts(describe(target), server, bouncer)


def with_deadline(fn: Callable[[], _T], seconds: float) -> _T:
    """``fn()``, or :class:`DoctorError` when it has not returned after ``seconds``
    (a server that accepted the connection may stop answering any time)."""
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
