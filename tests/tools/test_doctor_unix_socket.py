"""``zonal doctor`` over a Unix socket: the URL form (``?host=/dir&port=N``) and the
libpq DSN form against a lab server's real socket; what changes (no TCP keepalives),
and the target described without a password."""

from __future__ import annotations

import json
from typing import Any

import pytest

from zonal_tools import cli
from zonal_tools.doctor import Deployment, Facts, ServerFacts, analyze, describe


def test_describe_a_socket_target_in_libpq_url_form() -> None:
    target = {"host": "/cloudsql/p:r:i", "port": 5432, "user": "app", "password": "s3cr3t",
              "dbname": "appdb"}
    text = describe(target)
    assert text == "postgresql://app:***@/appdb?host=/cloudsql/p%3Ar%3Ai&port=5432"
    assert "s3cr3t" not in text
    from psycopg.conninfo import conninfo_to_dict

    assert conninfo_to_dict(text)["host"] == "/cloudsql/p:r:i"  # libpq reads it back


def test_the_serverless_advice_over_a_socket_names_no_keepalives() -> None:
    settings = {"max_connections": "100", "superuser_reserved_connections": "3",
                "idle_session_timeout": "0", "idle_in_transaction_session_timeout": "0"}
    for tcp in (True, False):
        facts = Facts("postgresql://app@/db?host=/tmp", ServerFacts("17.2", 170002, settings,
                                                                      tcp=tcp))
        report = analyze(facts, Deployment())
        why = next(r.why for r in report.recommendations if r.option == "serverless")
        assert ("TCP keepalives" in why) is tcp, why


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["doctor", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.integration
def test_doctor_over_a_socket_url_and_dsn(zonal_lab: Any,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    lab = zonal_lab(zones=["a"])
    a = lab["a"]
    dsn = (f"host={a.socket_dir} port={a.postgres.port} user={lab.user} "
           f"password={lab.password} dbname={lab.database}")
    for target in (a.url(socket=True), dsn):
        code, out, err = doctor(capsys, target, "--json")
        doc = json.loads(out)
        found = {f["id"]: f for f in doc["findings"]}
        assert code == doc["exit_code"] == 1, out + err  # the lab's superuser, reapers off
        assert found["tcp_keepalives"]["level"] == "info"
        assert "Unix socket" in found["tcp_keepalives"]["message"]
        assert doc["pgbouncer"] is None
        assert doc["server"]["tcp"] is False
        why = next(r["why"] for r in doc["recommendations"] if r["option"] == "serverless")
        assert "TCP keepalives" not in why
        assert lab.password not in out + err
    code, out, err = doctor(capsys, a.url(socket=True))
    assert code == 1
    assert out.startswith(f"zonal doctor: postgresql://{lab.user}:***@/{lab.database}?host=")
    assert lab.password not in out + err


@pytest.mark.integration
def test_doctor_on_a_missing_socket_exit_2(zonal_lab: Any,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    lab = zonal_lab(zones=["a"])
    url = lab["a"].url(socket=True).replace(f"port={lab['a'].postgres.port}", "port=1")
    code, out, err = doctor(capsys, url, "--connect-timeout", "1")
    assert code == 2
    assert "cannot connect" in err and ".s.PGSQL.1" in err
    assert lab.password not in out + err
