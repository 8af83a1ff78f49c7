"""The lab's PgBouncer: transaction mode for real, its settings, its faults."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from zonal_lab import Lab, LabError
from zonal_lab.binaries import find_pgbouncer, pgbouncer_version

pytestmark = [pytest.mark.integration, pytest.mark.pgbouncer]


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    kwargs.setdefault("connect_timeout", 5)
    return psycopg.connect(url, **kwargs)


def committed_work(lab: Lab, prepare_threshold: int | None) -> list[str]:
    """Three clients take turns, 5 rounds, each a transaction that ends in COMMIT
    and runs the same parameterised statement; the errors they get, by message."""
    url = lab["a"].url(pgbouncer=True, proxy=True)
    clients = [connect(url, prepare_threshold=prepare_threshold) for _ in range(3)]
    errors = []
    try:
        for i in range(5):
            for conn in clients:
                try:
                    with conn.transaction():
                        conn.execute("SELECT %s::int + 1", [i]).fetchone()
                except psycopg.Error as exc:
                    errors.append(str(exc).splitlines()[0])
    finally:
        for conn in clients:
            conn.close()
        # server connections now hold prepared statements: do not pass them on
        lab["a"].terminate_backends()
    return errors


def test_transaction_mode_breaks_prepared_statements(bouncer_lab: Lab) -> None:
    errors = committed_work(bouncer_lab, prepare_threshold=0)
    assert errors, "prepared statements survived transaction pooling"
    assert any("_pg3_" in e or "bind" in e for e in errors), errors


def test_transaction_mode_is_fine_without_prepared_statements(bouncer_lab: Lab) -> None:
    assert committed_work(bouncer_lab, prepare_threshold=None) == []


def test_admin_console_shows_the_settings(bouncer_lab: Lab) -> None:
    zone = bouncer_lab["a"]
    with connect(zone.pgbouncer_admin_url(), autocommit=True) as admin:
        cur = admin.execute("SHOW CONFIG")
        config = {row[0]: row[1] for row in cur.fetchall()}
        pools = admin.execute("SHOW POOLS").fetchall()
    assert config["pool_mode"] == "transaction"
    assert config["default_pool_size"] == "4"
    assert config["max_client_conn"] == "50"
    assert config["listen_port"] == zone.endpoint(pgbouncer=True, proxy=False).split(":")[1]
    assert pools is not None


def test_endpoints_through_pgbouncer(bouncer_lab: Lab) -> None:
    via_proxy = bouncer_lab.zones()  # the lab has PgBouncer: it is the default
    assert via_proxy == bouncer_lab.zones(pgbouncer=True)
    assert via_proxy != bouncer_lab.zones(pgbouncer=False)
    for zone in bouncer_lab:
        for url in (zone.url(pgbouncer=True), zone.url(pgbouncer=True, proxy=True)):
            with connect(url, prepare_threshold=None) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)


def test_pause_and_kill_reach_pgbouncer(bouncer_lab: Lab) -> None:
    zone = bouncer_lab["b"]
    url = zone.url(pgbouncer=True)
    zone.pause()
    with pytest.raises(psycopg.OperationalError):
        connect(url, connect_timeout=1)  # PgBouncer itself is stopped
    zone.resume()
    zone.kill()
    with pytest.raises(psycopg.OperationalError, match="refused"):
        connect(url, connect_timeout=1)
    zone.start()
    with connect(url, prepare_threshold=None) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_pgbouncer_sees_zone_restart(bouncer_lab: Lab) -> None:
    """After a server-only crash PgBouncer reconnects within its login retry."""
    zone = bouncer_lab["b"]
    zone.postgres.kill()
    zone.postgres.start()
    url = zone.url(pgbouncer=True, proxy=True)
    last: Exception | None = None
    for _ in range(30):  # bounded: PgBouncer retries a failed login every 1 s here
        try:
            with connect(url, prepare_threshold=None) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            break
        except psycopg.OperationalError as exc:
            last = exc
            time.sleep(0.1)
    else:
        raise AssertionError(f"no connection through PgBouncer after restart: {last}")


def test_max_prepared_statements_where_the_version_has_it() -> None:
    program = find_pgbouncer()
    assert program is not None
    lab = Lab(zones=["x"], pgbouncer=True, pgbouncer_settings={"max_prepared_statements": 50})
    if pgbouncer_version(program) >= (1, 21):
        with lab:
            with connect(lab["x"].pgbouncer_admin_url(), autocommit=True) as admin:
                rows = admin.execute("SHOW CONFIG").fetchall()
            assert ("max_prepared_statements", "50") in [(r[0], r[1]) for r in rows]
        return
    with pytest.raises(LabError, match=r"max_prepared_statements.*needs PgBouncer >= 1\.21"):
        lab.start()
    assert lab.base_dir is None  # nothing left behind
