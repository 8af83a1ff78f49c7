"""``zonal doctor``: the analysis with made-up facts (no database), then the whole
command against real lab zones, direct and through PgBouncer."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import pytest

from zonal_lab import Lab
from zonal_tools import cli
from zonal_tools.doctor import (
    Deployment,
    DoctorError,
    Facts,
    PgBouncerFacts,
    Report,
    ServerFacts,
    analyze,
    exit_code,
    render,
    with_deadline,
)
from zonal_tools.doctor.measures import serverless_reapers

# -- analysis, no database ---------------------------------------------------------

GOOD_SETTINGS = {
    "max_connections": "200",
    "superuser_reserved_connections": "3",
    "reserved_connections": "2",
    "idle_session_timeout": "600000",  # ms
    "idle_in_transaction_session_timeout": "60000",
    "tcp_keepalives_idle": "60",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "6",
    "tcp_user_timeout": "0",
}


def server(settings: Mapping[str, str] | None = None, **kwargs: Any) -> ServerFacts:
    merged = {**GOOD_SETTINGS, **(settings or {})}
    kwargs.setdefault("connections", 10)
    return ServerFacts(kwargs.pop("version", "17.2"), kwargs.pop("version_num", 170002),
                       merged, **kwargs)


def report_of(
    srv: ServerFacts, bouncer: PgBouncerFacts | None = None, **plan: Any
) -> Report:
    return analyze(Facts("postgresql://app:***@db/app", srv, bouncer), Deployment(**plan))


def finding(report: Report, fid: str) -> Any:
    matches = [f for f in report.findings if f.id == fid]
    assert matches, f"no finding {fid!r} in {[f.id for f in report.findings]}"
    return matches[0]


def test_well_configured_direct_server_is_clean() -> None:
    report = report_of(server(), instances=10, pool_size=5)
    assert exit_code(report) == 0, render(report)
    assert finding(report, "max_connections").level == "ok"
    # 200 - 3 - 2 = 195 available; 10 instances x 5 = 50
    assert "195 for everyone else" in finding(report, "max_connections").message
    assert "10 instances x pool_size 5 = 50 connections at most, 195 available" in (
        finding(report, "capacity").message
    )
    assert finding(report, "pgbouncer").message.startswith("talking to PostgreSQL directly")


def test_headroom_levels() -> None:
    # 195 available: 146 in use is 75 % (warning), 176 is 90 % (problem)
    assert finding(report_of(server(connections=145)), "max_connections").level == "ok"
    assert finding(report_of(server(connections=147)), "max_connections").level == "warning"
    full = finding(report_of(server(connections=176)), "max_connections")
    assert full.level == "problem"
    assert "176 client connections now (90%), 19 free" in full.message
    assert "too many clients" in full.advice


def test_capacity_problem_names_the_pool_size_that_fits() -> None:
    srv = server({"max_connections": "20", "reserved_connections": "0"})
    report = report_of(srv, instances=10)
    cap = finding(report, "capacity")
    assert cap.level == "problem"
    assert "10 instances x pool_size 5 (zonal's default) = 50" in cap.message
    assert "17 available" in cap.message
    assert "pool_size=1 at most" in cap.advice
    assert "zonal size --db-max-connections 20 --instances 10 --reserved 3" in cap.advice
    assert exit_code(report) == 2
    pool = next(r for r in report.recommendations if r.option == "pool_size")
    assert pool.value == 1  # 17 // 10


def test_capacity_without_instances_says_how_many_fit() -> None:
    cap = finding(report_of(server()), "capacity")
    assert cap.level == "info"
    assert "room for 195 application connections" in cap.message
    assert "at pool_size 5, 39 instances" in cap.message


def test_the_callers_pool_size_is_the_one_reported() -> None:
    """``manage.py zonal_doctor`` with ``pool_size: 50`` used to say 'at pool_size 5'."""
    report = report_of(server(), pool_size=50)
    assert "at pool_size 50, 3 instances" in finding(report, "capacity").message  # 195 // 50
    pool = next(r for r in report.recommendations if r.option == "pool_size")
    assert pool.value == 50 and pool.why.startswith("your pool_size")
    full = report_of(server(), instances=10, pool_size=50)
    assert "10 instances x pool_size 50 = 500" in finding(full, "capacity").message


def test_defaults_come_from_the_configuration() -> None:
    from zonal_core.config import DEFAULTS, build_config

    assert Deployment().pool == DEFAULTS["pool_size"]
    assert Deployment().idle_limit == DEFAULTS["max_idle"]
    config = build_config(zones={"a": "db:5432"}, pool_size=50, serverless=True, environ={})
    deployment = Deployment.of(config, instances=3)
    assert (deployment.pool, deployment.instances) == (50, 3)
    assert deployment.idle_limit == config.max_idle  # the serverless profile's
    # a server reaping after 40 s: the pool's own 30 s already retire first
    report = report_of(server({"idle_session_timeout": "40000"}))
    assert "max_idle=20" in finding(report, "idle_session_timeout").advice
    report = analyze(Facts("t", server({"idle_session_timeout": "40000"})), deployment)
    assert finding(report, "idle_session_timeout").advice == ""


def test_the_report_is_written_to_the_stream_given(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import io

    from zonal_tools.doctor import write_report

    report = report_of(server(), instances=10, pool_size=5)
    out = io.StringIO()
    write_report(report, out, hidden=["195"])
    write_report(report, out, as_json=True)
    write_report(report, out, verdict=False)
    assert capsys.readouterr() == ("", "")
    text = out.getvalue()
    assert text.startswith("zonal doctor: postgresql://app:***@db/app\n")
    assert "0 problem(s), 0 warning(s): exit 0\n" in text
    assert "*** for everyone else" in text  # hidden strings are masked
    assert text.endswith("0 problem(s), 0 warning(s)\n")


def test_reapers_off_are_warnings_with_the_fix() -> None:
    srv = server({"idle_session_timeout": "0", "idle_in_transaction_session_timeout": "0"},
                 role="app")
    report = report_of(srv)
    idle = finding(report, "idle_session_timeout")
    assert idle.level == "warning" and "off" in idle.message
    assert "ALTER ROLE app SET idle_session_timeout" in idle.advice
    tx = finding(report, "idle_in_transaction_session_timeout")
    assert tx.level == "warning"
    assert "ALTER ROLE app SET idle_in_transaction_session_timeout = '60s'" in tx.advice
    assert exit_code(report) == 1


def test_short_idle_session_timeout_moves_max_idle_below_it() -> None:
    report = report_of(server({"idle_session_timeout": "120000"}))  # 2 min
    idle = finding(report, "idle_session_timeout")
    assert idle.level == "ok"
    assert "max_idle=60" in idle.advice
    recs = {r.option: r.value for r in report.recommendations}
    assert recs["max_idle"] == 60
    assert recs["pre_ping"] is True


def test_keepalives() -> None:
    slow = finding(report_of(server({"tcp_keepalives_idle": "7200",
                                     "tcp_keepalives_interval": "75",
                                     "tcp_keepalives_count": "9"})), "tcp_keepalives")
    assert slow.level == "warning"
    assert "2 h 11 min 15 s" in slow.message
    fast = finding(report_of(server()), "tcp_keepalives")
    assert fast.level == "ok" and "2 min" in fast.message  # 60 + 10 x 6 s
    unix = finding(report_of(server(tcp=False)), "tcp_keepalives")
    assert unix.level == "info" and "Unix socket" in unix.message


def test_reserved_and_superuser() -> None:
    report = report_of(server({"superuser_reserved_connections": "0"}, superuser=True,
                              role="postgres"))
    assert finding(report, "superuser_reserved_connections").level == "warning"
    su = finding(report, "superuser")
    assert su.level == "warning" and "'postgres'" in su.message
    assert finding(report_of(server()), "reserved_connections").level == "ok"
    # before PostgreSQL 16 there is no reserved_connections: no finding
    settings = {k: v for k, v in GOOD_SETTINGS.items() if k != "reserved_connections"}
    old = ServerFacts("15.8", 150008, settings)
    assert report_of(old).level("reserved_connections") is None


def test_old_server_has_no_idle_session_timeout() -> None:
    settings = {k: v for k, v in GOOD_SETTINGS.items()
                if k not in ("idle_session_timeout", "reserved_connections")}
    report = report_of(ServerFacts("13.16", 130016, settings))
    assert finding(report, "server_version").level == "warning"
    assert report.level("idle_session_timeout") is None
    serverless = next(r for r in report.recommendations if r.option == "serverless")
    assert "idle_session_timeout=" not in serverless.why.split("'")[1]
    # what the serverless profile really asks for, not a figure of doctor's own
    in_transaction = int(serverless_reapers()[1] * 1000)
    assert f"-c idle_in_transaction_session_timeout={in_transaction}" in serverless.why


def test_connection_limits_of_role_and_database() -> None:
    srv = server(role_connection_limit=20, database_connection_limit=-1)
    report = report_of(srv, instances=5, pool_size=5)
    limit = finding(report, "role_connection_limit")
    assert limit.level == "problem" and "= 25" in limit.message
    assert report.level("database_connection_limit") is None
    assert finding(report_of(srv), "role_connection_limit").level == "info"


BOUNCER_CONFIG = {
    "pool_mode": "transaction",
    "default_pool_size": "20",
    "reserve_pool_size": "5",
    "max_client_conn": "1000",
    "client_idle_timeout": "600",
    "idle_transaction_timeout": "60",
    "server_idle_timeout": "300",
    "tcp_keepalive": "1",
    "tcp_keepidle": "60",
}


def bouncer(
    mode: str | None = "transaction", config: Mapping[str, str] | None = None, **kwargs: Any
) -> PgBouncerFacts:
    fields: dict[str, Any] = {
        "evidence": ("the startup 'options' parameter was refused",),
        "mode": mode,
        "mode_source": "from the admin console (SHOW POOLS)",
        "version": "1.18.0",
        "config": config,
        "options_rejected": True,
    }
    return PgBouncerFacts(**{**fields, **kwargs})


def test_pgbouncer_well_configured() -> None:
    report = report_of(server(), bouncer(config=BOUNCER_CONFIG,
                                         database={"pool_size": 20, "reserve_pool": 5}),
                       instances=40, cores=2)
    assert exit_code(report) == 0, render(report)
    assert "talking to PgBouncer 1.18.0 in transaction mode" in finding(report, "pgbouncer").message
    assert finding(report, "pgbouncer_mode").level == "ok"
    assert "up to 25 server connections" in finding(report, "pgbouncer_pool").message
    assert report.level("capacity") is None  # clients are PgBouncer's, not the server's
    recs = {r.option: r.value for r in report.recommendations}
    assert recs["pgbouncer"] == "transaction"
    assert recs["max_idle"] == 300  # half of client_idle_timeout 600
    assert recs["pool_size"] == 5  # min(CPU bound 5, PgBouncer pool 20, 1000 // 40 = 25)


def test_pgbouncer_problems() -> None:
    config = {**BOUNCER_CONFIG, "default_pool_size": "190", "reserve_pool_size": "10",
              "max_client_conn": "100", "idle_transaction_timeout": "0",
              "client_idle_timeout": "0", "tcp_keepidle": "0"}
    report = report_of(server(), bouncer(config=config, pool={"cl_waiting": 3, "maxwait": 2}),
                       instances=40, pool_size=5)
    assert finding(report, "pgbouncer_pool").level == "problem"  # 200 > 195
    mcc = finding(report, "pgbouncer_max_client_conn")
    assert mcc.level == "problem" and "= 200 client connections" in mcc.message
    assert finding(report, "pgbouncer_idle_transaction_timeout").level == "warning"
    assert finding(report, "pgbouncer_client_idle_timeout").level == "warning"
    assert finding(report, "pgbouncer_keepalive").level == "warning"
    assert "3 clients waiting" in finding(report, "pgbouncer_waiting").message
    assert exit_code(report) == 2


def test_statement_mode_is_a_problem_session_mode_is_not() -> None:
    assert finding(report_of(server(), bouncer("statement")), "pgbouncer_mode").level == "problem"
    session = report_of(server(), bouncer("session"), instances=100)
    assert finding(session, "pgbouncer_mode").level == "info"
    # session mode holds a server connection per client: capacity is checked as if direct
    assert finding(session, "capacity").level == "problem"


def test_pgbouncer_without_admin_says_what_it_cannot_check() -> None:
    facts = bouncer("transaction", mode_source="inferred: ...")
    report = report_of(server(), facts)
    admin = finding(report, "pgbouncer_admin")
    assert admin.level == "info"
    assert "max_client_conn" in admin.message and "client_idle_timeout" in admin.message
    assert "--pgbouncer-admin" in admin.advice
    serverless = next(r for r in report.recommendations if r.option == "serverless")
    assert "rejects them" in serverless.why
    # the server's idle_session_timeout concerns PgBouncer's server connections
    assert finding(report, "idle_session_timeout").level == "info"


def test_server_reaps_pgbouncer_connections_before_pgbouncer_does() -> None:
    srv = server({"idle_session_timeout": "60000"})  # 1 min < server_idle_timeout 5 min
    found = finding(report_of(srv, bouncer(config=BOUNCER_CONFIG)), "idle_session_timeout")
    assert found.level == "warning"
    assert "server_idle_timeout below 1 min" in found.advice


def test_json_document_shape() -> None:
    srv = server({"idle_in_transaction_session_timeout": "0"})
    report = report_of(srv, bouncer(config=BOUNCER_CONFIG))
    doc = json.loads(json.dumps(report.as_dict()))
    assert doc["exit_code"] == 1
    assert doc["summary"] == {"problems": 0, "warnings": 1}
    assert {"id", "level", "message", "advice"} <= set(doc["findings"][0])
    assert doc["pgbouncer"]["config"]["pool_mode"] == "transaction"
    assert doc["server"]["settings"]["max_connections"] == "200"


def test_deadline_bounds_a_hung_check() -> None:
    began = time.monotonic()
    with pytest.raises(DoctorError, match=r"no answer within 0\.2 s"):
        with_deadline(lambda: time.sleep(5), 0.2)
    assert time.monotonic() - began < 2
    assert with_deadline(lambda: 42, 1) == 42
    with pytest.raises(ZeroDivisionError):
        with_deadline(lambda: 1 // 0, 1)


# -- against real zones -------------------------------------------------------------

BAD_SERVER = {
    "max_connections": 20,
    "superuser_reserved_connections": 0,
    "idle_session_timeout": 0,
    "idle_in_transaction_session_timeout": 0,
}
GOOD_SERVER = {
    "max_connections": 100,
    "idle_session_timeout": "10min",
    "idle_in_transaction_session_timeout": "60s",
    "tcp_keepalives_idle": 60,
    "tcp_keepalives_interval": 10,
    "tcp_keepalives_count": 6,
}
GOOD_BOUNCER = {
    "client_idle_timeout": 600,
    "idle_transaction_timeout": 60,
    "server_idle_timeout": 300,
    "tcp_keepidle": 60,
    "tcp_keepintvl": 10,
    "tcp_keepcnt": 6,
    "max_client_conn": 500,
}
APP_ROLE = "doctor_app"
APP_PASSWORD = "app-Pa55-word"


@pytest.fixture
def bad_lab(zonal_lab: Any) -> Lab:
    """One zone with PgBouncer (transaction mode) in front of a badly set server."""
    return zonal_lab(zones=["a"], pgbouncer=True, server_settings=BAD_SERVER)  # type: ignore[no-any-return]


@pytest.fixture
def good_lab(zonal_lab: Any) -> Lab:
    """One zone, server and PgBouncer set as doctor advises, plus an ordinary role."""
    lab: Lab = zonal_lab(
        zones=["a"], pgbouncer=True, server_settings=GOOD_SERVER, pgbouncer_settings=GOOD_BOUNCER
    )
    with lab["a"].connect(autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [APP_ROLE]).fetchone()
        if not exists:
            conn.execute(
                f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{APP_PASSWORD}'"
            )
    return lab


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["doctor", *args])
    out, err = capsys.readouterr()
    return code, out, err


def doctor_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = doctor(capsys, *args, "--json")
    doc = json.loads(out)
    assert doc["exit_code"] == code
    return code, doc


def levels(doc: Mapping[str, Any]) -> dict[str, str]:
    return {f["id"]: f["level"] for f in doc["findings"]}


@pytest.mark.integration
@pytest.mark.pgbouncer
def test_bad_server_direct(bad_lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    url = bad_lab["a"].url()
    code, doc = doctor_json(capsys, url, "--instances", "10")
    found = levels(doc)
    assert code == 2
    assert found["capacity"] == "problem"  # 10 x 5 = 50 > 20
    assert found["superuser_reserved_connections"] == "warning"
    assert found["idle_session_timeout"] == "warning"
    assert found["idle_in_transaction_session_timeout"] == "warning"
    assert found["superuser"] == "warning"
    assert doc["server"]["settings"]["max_connections"] == "20"
    assert doc["pgbouncer"] is None
    # without a deployment to check, the same server has warnings only
    assert doctor_json(capsys, url)[0] == 1
    code, out, _ = doctor(capsys, url, "--instances", "10")
    assert code == 2
    assert "[PROBLEM] capacity: 10 instances x pool_size 5" in out
    assert bad_lab.password not in out


@pytest.mark.integration
@pytest.mark.pgbouncer
def test_bad_server_through_pgbouncer_without_admin(
    bad_lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = doctor(capsys, bad_lab["a"].url(pgbouncer=True, proxy=True))
    assert code == 1
    text = " ".join(out.split())  # unwrapped
    assert "talking to PgBouncer in transaction mode, inferred" in text
    assert "no admin console given; not checked:" in text
    assert "pgbouncer='transaction'" in text
    _, doc = doctor_json(capsys, bad_lab["a"].url(pgbouncer=True))
    assert doc["pgbouncer"]["mode"] == "transaction"
    assert doc["pgbouncer"]["options_rejected"] is True
    assert levels(doc)["pgbouncer_admin"] == "info"


@pytest.mark.integration
@pytest.mark.pgbouncer
def test_pgbouncer_with_admin_console(bad_lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    zone = bad_lab["a"]
    code, doc = doctor_json(
        capsys, zone.url(pgbouncer=True), "--pgbouncer-admin", zone.pgbouncer_admin_url(),
        "--instances", "50", "--cores", "2",
    )
    bouncer = doc["pgbouncer"]
    assert bouncer["version"].startswith("1.")
    assert bouncer["mode"] == "transaction"
    assert bouncer["mode_source"] == "from the admin console (SHOW POOLS)"
    assert bouncer["config"]["pool_mode"] == "transaction"  # read from SHOW CONFIG
    assert "its admin console lists doctor's own connection" in bouncer["evidence"]
    found = levels(doc)
    # lab PgBouncer: default_pool_size 10 of 20; max_client_conn 200 < 50 x 5
    assert found["pgbouncer_pool"] == "ok"
    assert found["pgbouncer_max_client_conn"] == "problem"
    assert found["pgbouncer_idle_transaction_timeout"] == "warning"
    assert found["pgbouncer_client_idle_timeout"] == "warning"
    assert code == 2
    recs = {r["option"]: r["value"] for r in doc["recommendations"]}
    assert recs["pgbouncer"] == "transaction"
    assert recs["pool_size"] == 4  # min(CPU bound 5, PgBouncer pool 10, 200 // 50 = 4)


@pytest.mark.integration
@pytest.mark.pgbouncer
def test_admin_console_unreachable_is_a_warning_without_leaks(
    bad_lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    zone = bad_lab["a"]
    wrong = zone.pgbouncer_admin_url().replace(bad_lab.password, "Wr0ngAdminPass")
    code, out, err = doctor(capsys, zone.url(pgbouncer=True), "--pgbouncer-admin", wrong)
    assert code == 1
    assert "the admin console did not answer" in " ".join(out.split())
    assert "Wr0ngAdminPass" not in out + err
    assert bad_lab.password not in out + err


@pytest.mark.integration
@pytest.mark.pgbouncer
def test_well_configured_zone(good_lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    zone = good_lab["a"]
    host, port = zone.direct.split(":")
    app_url = f"postgresql://{APP_ROLE}:{APP_PASSWORD}@{host}:{port}/{good_lab.database}"
    code, doc = doctor_json(capsys, app_url, "--instances", "10", "--pool-size", "5")
    assert code == 0, doc["findings"]
    found = levels(doc)
    assert found["idle_session_timeout"] == "ok"
    assert found["tcp_keepalives"] == "ok"
    assert found["capacity"] == "ok"
    # through PgBouncer, with its admin console: only the lab's superuser role is left
    code, doc = doctor_json(
        capsys, zone.url(pgbouncer=True), "--pgbouncer-admin", zone.pgbouncer_admin_url(),
        "--instances", "10",
    )
    warnings = [f["id"] for f in doc["findings"] if f["level"] in ("warning", "problem")]
    assert warnings == ["superuser"], doc["findings"]
    assert code == 1


@pytest.mark.integration
@pytest.mark.pgbouncer
def test_statement_mode_is_detected(zonal_lab: Any, capsys: pytest.CaptureFixture[str]) -> None:
    lab = zonal_lab(zones=["a"], pgbouncer=True, pgbouncer_settings={"pool_mode": "statement"})
    code, doc = doctor_json(capsys, lab["a"].url(pgbouncer=True))
    assert doc["pgbouncer"]["mode"] == "statement"
    assert "refused" in doc["pgbouncer"]["mode_source"]
    assert levels(doc)["pgbouncer_mode"] == "problem"
    assert code == 2


@pytest.mark.integration
@pytest.mark.pgbouncer
def test_wrong_password_exit_2_and_never_shown(
    bad_lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    zone = bad_lab["a"]
    for url in (zone.url(), zone.url(pgbouncer=True)):
        wrong = url.replace(bad_lab.password, "Sup3rS3cretWrong")
        code, out, err = doctor(capsys, wrong)
        assert code == 2
        assert "cannot connect" in err and "authentication failed" in err
        assert "Sup3rS3cretWrong" not in out + err
        assert bad_lab.password not in out + err
        code, doc = doctor_json(capsys, wrong)
        assert code == 2
        assert doc["findings"][0]["id"] == "connect"
        assert "Sup3rS3cretWrong" not in json.dumps(doc)


def test_nothing_listening_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out, err = doctor(capsys, f"postgresql://u:NoSuchPw@127.0.0.1:{port}/db")
    assert code == 2
    assert "cannot connect" in err and "NoSuchPw" not in out + err

