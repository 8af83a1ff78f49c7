"""``HOST="/socket/dir"`` (``PORT`` optional): the zone "default" over a Unix socket,
as Django's own backend takes it; the system checks accept it, the backend connects
over the lab's real sockets, ``zonal_status`` and ``zonal_doctor`` check it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections

from zonal_django import conf
from zonal_django.backends.postgresql.base import DatabaseWrapper

CLOUD_SQL = "/cloudsql/my-project:europe-west1:main-db"


def entry(lab: Any | None = None, **changes: Any) -> dict[str, Any]:
    """A DATABASES entry: the lab's database over zone a's socket (no zones given)."""
    base: dict[str, Any] = {"ENGINE": conf.ENGINE, "NAME": "app", "USER": "app",
                            "PASSWORD": "pw", "OPTIONS": {"zonal": {"serverless": True,
                                                                    "timeout": 5}}}
    if lab is not None:
        from django.db import connection

        # Django's defaults (TIME_ZONE, TEST...) as the handler filled them in
        base = {**connection.settings_dict, **base, "NAME": lab.database, "USER": lab.user,
                "PASSWORD": lab.password, "HOST": lab["a"].socket_dir,
                "PORT": lab["a"].postgres.port}
    return {**base, **changes}


# -- settings, no database ------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "address"),
    [
        ("/var/run/postgresql", "", "/var/run/postgresql:5432"),
        ("/var/run/postgresql", "5433", "/var/run/postgresql:5433"),
        ("/var/run/postgresql/", 5433, "/var/run/postgresql:5433"),
        (CLOUD_SQL, None, f"{CLOUD_SQL}:5432"),
        # Django's HOST is taken as it is: a directory whose name ends in ':5433'
        ("/odd/dir:5433", "6000", "/odd/dir:5433:6000"),
    ],
)
def test_a_socket_host_is_the_zone_default_and_passes_the_checks(
        host: str, port: Any, address: str) -> None:
    problems, config = conf.problems_for("s", entry(HOST=host, PORT=port))
    assert problems == []
    assert config is not None
    (ep,) = config.topology.endpoints
    assert (ep.zone, ep.is_socket, ep.address) == ("default", True, address)


def test_a_socket_host_with_zones_is_the_same_conflict_as_a_tcp_host() -> None:
    settings = entry(HOST="/var/run/postgresql")
    settings["OPTIONS"] = {"zonal": {"zones": {"a": "/tmp:5433"}}}
    problems, _ = conf.problems_for("s", settings)
    assert [p.id for p in problems] == ["zonal.E004"]


def test_a_socket_path_too_long_is_a_check_error_naming_the_fix() -> None:
    problems, config = conf.problems_for("s", entry(HOST="/" + "d" * 100))
    assert config is None
    (problem,) = problems
    assert problem.id == "zonal.E006"
    assert "at most 107" in problem.msg and "shorter directory" in problem.hint


def test_socket_zones_in_options_and_tcp_zones_with_tls_mix() -> None:
    """No TLS on a socket (libpq ignores sslmode there): a socket zone is no downgrade
    of a TCP zone's verify-full."""
    settings = entry()
    settings["OPTIONS"] = {"zonal": {"zones": {
        "a": {"endpoints": ["db-a:5432"], "params": {"sslmode": "verify-full"}},
        "b": CLOUD_SQL}, "local_zone": "a"}}
    problems, config = conf.problems_for("s", settings)
    assert problems == [] and config is not None


# -- against the lab's sockets ------------------------------------------------------------


@contextmanager
def socket_alias(name: str, djlab: Any, **changes: Any) -> Iterator[dict[str, Any]]:
    """A zonal alias of the lab's database over zone a's Unix socket."""
    settings = entry(djlab, **changes)
    connections.settings[name] = settings
    try:
        yield settings
    finally:
        if name in connections:
            connections[name].close()
            del connections[name]
        del connections.settings[name]


def run(command: str, **options: Any) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command(command, stdout=out, stderr=err, **options)
    except CommandError as exc:
        return exc.returncode, out.getvalue(), err.getvalue() + f"CommandError: {exc}\n"
    return 0, out.getvalue(), err.getvalue()


@pytest.mark.integration
@pytest.mark.pgbouncer  # (the session's lab has PgBouncer; the socket is PostgreSQL's own)
@pytest.mark.usefixtures("db_access")
def test_a_wrapper_with_a_socket_host_connects(djlab: Any) -> None:
    a = djlab["a"]
    for port in (a.postgres.port, str(a.postgres.port)):
        w = DatabaseWrapper(entry(djlab, PORT=port), "zt_socket")
        try:
            with w.cursor() as cursor:
                cursor.execute("SELECT current_setting('port')::int, inet_server_addr() IS NULL,"
                               " current_database(), current_setting('idle_session_timeout')")
                server_port, over_socket, db, idle = cursor.fetchone()
            assert (server_port, over_socket, db) == (a.postgres.port, True, djlab.database)
            assert idle != "0"  # serverless: the reaper is asked for over a socket too
            assert "keepalives" not in w.connection.info.get_parameters()
            assert w.connection.info.host == a.socket_dir
            stats = w.zonal_pool.stats()
            assert list(stats.zones) == ["default"] and stats.zones["default"].in_use == 1
        finally:
            w.close()


@pytest.mark.integration
@pytest.mark.pgbouncer
@pytest.mark.usefixtures("db_access")
def test_status_and_doctor_over_a_socket(djlab: Any) -> None:
    a = djlab["a"]
    address = f"{a.socket_dir}:{a.postgres.port}"
    with socket_alias("zt_sock_cmds", djlab):
        code, out, err = run("zonal_status", database=["zt_sock_cmds"])
        assert code == 0, out + err
        assert f"probe default/{address}: ok" in out
        code, out, _ = run("zonal_status", database=["zt_sock_cmds"], json=True)
        doc = json.loads(out)["zt_sock_cmds"]
        assert doc["ok"] is True and doc["zones"]["default"]["endpoints"] == [address]
        assert doc["probes"][f"default/{address}"].startswith("ok")

        code, out, err = run("zonal_doctor", database=["zt_sock_cmds"])
        text = " ".join(out.split())
        assert "cannot connect" not in text, out + err
        assert f"zone default {address}:" in text
        assert "connected over a Unix socket: TCP keepalives do not apply" in text
        assert code in (0, 1)  # the lab's server draws warnings (superuser, reapers off)
        code, out, _ = run("zonal_doctor", database=["zt_sock_cmds"], json=True)
        (item,) = json.loads(out)["zt_sock_cmds"]["endpoints"]
        target = item["report"]["target"]
        assert target.startswith(f"postgresql://{djlab.user}:***@/{djlab.database}?host=")
        assert f"&port={a.postgres.port}" in target
        assert djlab.password not in out + err
