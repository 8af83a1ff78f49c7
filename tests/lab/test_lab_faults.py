"""Each fault control does to a plain psycopg connection what it says."""

from __future__ import annotations

import statistics
import time
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from tests.conftest import eventually

from zonal_lab import Lab

pytestmark = pytest.mark.integration

# a client-side bound for every wait on a faulty zone: nothing here may hang
SHORT = 1


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    kwargs.setdefault("connect_timeout", 5)
    kwargs.setdefault("autocommit", True)
    return psycopg.connect(url, **kwargs)


def select_1(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT 1").fetchone()
    assert row is not None
    return int(row[0])


def median_round_trip(conn: psycopg.Connection[Any], n: int = 15) -> float:
    times = []
    for _ in range(n):
        began = time.perf_counter()
        select_1(conn)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


# -- addresses, auth, settings ---------------------------------------------------


def test_zones_are_distinct_loopback_endpoints(lab: Lab) -> None:
    proxied = lab.zones()
    direct = lab.zones(proxy=False)
    assert list(proxied) == ["a", "b"]
    endpoints = [*proxied.values(), *direct.values()]
    assert all(e.startswith("127.0.0.1:") for e in endpoints)
    assert len(set(endpoints)) == 4
    assert lab.zones(pgbouncer=False) == proxied  # no PgBouncer in this lab
    assert direct["a"] == lab["a"].direct


def test_url_carries_user_password_database(lab: Lab) -> None:
    url = urlsplit(lab["a"].url())
    assert (url.username, url.password, url.path) == (lab.user, lab.password, f"/{lab.database}")
    assert f"{url.hostname}:{url.port}" == lab["a"].direct
    assert urlsplit(lab["a"].url(proxy=True)).port == int(lab.zones()["a"].split(":")[1])
    with connect(lab["a"].url(proxy=True)) as conn:
        assert select_1(conn) == 1


def test_password_is_required_and_never_shown(lab: Lab) -> None:
    bad = lab["a"].url().replace(lab.password, "wrong-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(bad)
    for text in (repr(lab), repr(lab["a"]), repr(lab["a"].proxy), repr(lab["a"].postgres)):
        assert lab.password not in text


def test_no_pgbouncer_in_a_lab_without_it(lab: Lab) -> None:
    with pytest.raises(Exception, match="no PgBouncer"):
        lab["a"].endpoint(pgbouncer=True)


def test_server_settings_are_applied(lab: Lab) -> None:
    for zone in lab:
        with connect(zone.url()) as conn:
            assert conn.execute("SHOW max_connections").fetchone() == ("30",)
            assert conn.execute("SHOW idle_session_timeout").fetchone() == ("1min",)


# -- proxy faults ----------------------------------------------------------------


def test_refuse_then_heal_on_the_same_port(lab: Lab) -> None:
    zone = lab["a"]
    url = zone.url(proxy=True)
    with connect(url) as open_conn:
        zone.proxy.refuse()
        with pytest.raises(psycopg.OperationalError, match="refused"):
            connect(url)
        assert select_1(open_conn) == 1  # what was open carries on
        zone.proxy.heal()
        with connect(url) as conn:
            assert select_1(conn) == 1
    with connect(lab["b"].url(proxy=True)) as conn:  # other zones never noticed
        assert select_1(conn) == 1


def test_blackhole_hangs_new_connections_past_the_timeout(lab: Lab) -> None:
    zone = lab["a"]
    zone.proxy.blackhole()
    began = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        connect(zone.url(proxy=True), connect_timeout=SHORT)
    assert time.monotonic() - began >= 0.9 * SHORT
    with connect(zone.url()) as conn:  # the server itself is fine
        assert select_1(conn) == 1


def test_blackhole_stalls_open_connections_until_healed(background: Any, lab: Lab) -> None:
    zone = lab["a"]
    with connect(zone.url(proxy=True)) as conn:
        zone.proxy.blackhole()
        job = background(lambda: select_1(conn))
        assert not job.wait(SHORT), "a query answered through a black hole"
        zone.proxy.heal()
        assert job.wait(10)
        assert job.error is None and job.result == 1


def test_reset_drops_open_connections(lab: Lab) -> None:
    zone = lab["a"]
    url = zone.url(proxy=True)
    conns = [connect(url) for _ in range(3)]
    try:
        assert zone.proxy.connections >= 3
        zone.proxy.reset()
        for conn in conns:
            with pytest.raises(psycopg.OperationalError):
                select_1(conn)
        with connect(url) as fresh:  # new connections are welcome
            assert select_1(fresh) == 1
    finally:
        for conn in conns:
            conn.close()


def test_latency_slows_open_and_new_connections(lab: Lab) -> None:
    added_ms = 20
    zone = lab["b"]
    url = zone.url(proxy=True)
    with connect(url) as conn:
        before = median_round_trip(conn)
        zone.proxy.latency(ms=added_ms)
        assert zone.proxy.state == f"latency={added_ms}ms"
        after = median_round_trip(conn)
        began = time.perf_counter()
        with connect(url) as fresh:
            connect_time = time.perf_counter() - began
            fresh_rtt = median_round_trip(fresh, n=5)
        zone.proxy.heal()
        healed = median_round_trip(conn)
    added = added_ms / 1000
    assert after - before >= 0.7 * added
    assert fresh_rtt - before >= 0.7 * added
    assert connect_time >= 0.7 * added  # the handshake is several round trips
    assert after - healed >= 0.7 * added


# -- server faults -----------------------------------------------------------------


def test_server_connections_are_counted(lab: Lab) -> None:
    zone = lab["a"]
    assert zone.server_connections(application_name="counted") == 0
    conns = [connect(zone.url(proxy=True), application_name="counted") for _ in range(3)]
    other = connect(zone.url(), application_name="not-counted")
    try:
        assert zone.server_connections(application_name="counted") == 3
        assert zone.server_connections() >= 4
        assert lab["b"].server_connections(application_name="counted") == 0
    finally:
        for conn in [*conns, other]:
            conn.close()
    # backends exit just after the client goes
    assert eventually(lambda: zone.server_connections(application_name="counted"), 0) == 0


def test_terminate_backends(lab: Lab) -> None:
    zone = lab["a"]
    victims = [connect(zone.url(), application_name="victim") for _ in range(2)]
    bystander = connect(zone.url(), application_name="bystander")
    try:
        assert zone.terminate_backends(application_name="victim") == 2
        assert zone.server_connections(application_name="victim") == 0
        for conn in victims:
            with pytest.raises(psycopg.OperationalError):
                select_1(conn)
        assert select_1(bystander) == 1
        assert zone.terminate_backends() >= 1  # everyone's
        with pytest.raises(psycopg.OperationalError):
            select_1(bystander)
    finally:
        for conn in [*victims, bystander]:
            conn.close()


def test_kill_then_start_on_the_same_port(lab: Lab) -> None:
    zone = lab["b"]
    direct = zone.direct
    conn = connect(zone.url(proxy=True))
    try:
        zone.kill()
        assert zone.state == "killed"
        with pytest.raises(psycopg.OperationalError):
            select_1(conn)
        with pytest.raises(psycopg.OperationalError, match="refused"):
            connect(zone.url(), connect_timeout=SHORT)
        with pytest.raises(psycopg.OperationalError):  # the proxy accepts, then closes
            connect(zone.url(proxy=True), connect_timeout=SHORT)
    finally:
        conn.close()
    zone.start()
    assert zone.state == "running"
    assert zone.direct == direct
    for url in (zone.url(), zone.url(proxy=True)):
        with connect(url) as fresh:
            assert select_1(fresh) == 1


def test_a_crash_with_a_query_unread_closes_the_clients_connection(background: Any,
                                                                   lab: Lab) -> None:
    """A server killed with a query still unread in its socket sends RST, not FIN;
    through the proxy the client must see its connection end, as it would directly,
    not a black hole (the fault proxy once kept such a pair open)."""
    zone = lab["a"]
    conn = connect(zone.url(proxy=True))
    try:
        zone.pause()  # the backend cannot read what comes next
        job = background(lambda: select_1(conn))
        assert not job.wait(SHORT / 2)
        zone.kill()
        assert job.wait(5 * SHORT), "the client still waits on a crashed server"
        assert isinstance(job.error, psycopg.OperationalError)
    finally:
        conn.close()
        zone.start()


def test_pause_hangs_everything_until_resumed(background: Any, lab: Lab) -> None:
    zone = lab["a"]
    conn = connect(zone.url(proxy=True))
    try:
        zone.pause()
        assert zone.state == "paused"
        job = background(lambda: select_1(conn))
        assert not job.wait(SHORT), "a paused server answered"
        began = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            connect(zone.url(), connect_timeout=SHORT)
        assert time.monotonic() - began >= 0.9 * SHORT
        zone.resume()
        assert zone.state == "running"
        assert job.wait(10)
        assert job.error is None and job.result == 1
    finally:
        zone.resume()
        conn.close()


def test_reset_faults_restores_every_zone(lab: Lab) -> None:
    lab["a"].proxy.blackhole()
    lab["a"].pause()
    lab["b"].kill()
    lab["b"].proxy.refuse()
    lab["b"].proxy.latency(ms=5)
    lab.reset_faults()
    for zone in lab:
        assert zone.state == "running" and zone.proxy.state == "ok"
        with connect(zone.url(proxy=True), connect_timeout=SHORT * 5) as conn:
            assert select_1(conn) == 1
