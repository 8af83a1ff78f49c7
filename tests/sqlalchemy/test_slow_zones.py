"""Slow is not dead, against real zones: a paused server, a black-holed network, a
busy machine; and errors that are not about a zone reach the caller as themselves.

Timing bounds come from the configuration (connect_timeout, hedge_after, timeout),
never from how fast this machine happens to be. Each test prints its figures.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from sqlalchemy import create_engine, event, exc, text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.sqlalchemy.conftest import url_of
from tests.sqlalchemy.test_failover import workload
from zonal_core import NoHealthyZone
from zonal_sqlalchemy import ZonalAsyncPool, ZonalPool

pytestmark = pytest.mark.integration


def _port(engine: Any) -> int:
    with engine.connect() as c:
        return int(c.execute(text("select inet_server_port()")).scalar())


def test_cold_start_with_the_local_zone_black_holed(lab: Any, make_engine: Any,
                                                    zone_figure: Any) -> None:
    """A new process starts while its zone's network is a black hole: every first
    request is served by the next zone within hedge_after + one connect."""
    cfg = {"connect_timeout": 2.0, "pool_timeout": 2.0}
    hedge = cfg["connect_timeout"] / 2  # the automatic delay before a connect is measured
    lab["a"].proxy.blackhole()
    took = []
    for _ in range(3):
        engine = make_engine(**cfg)
        t0 = time.monotonic()
        port = _port(engine)
        took.append(time.monotonic() - t0)
        assert port == lab["b"].postgres.port
    zone_figure(f"cold start, local zone black-holed: first requests took "
          f"{[round(t, 3) for t in took]} s (hedge after {hedge:g} s, "
          f"connect_timeout {cfg['connect_timeout']:g} s), 0 errors")
    # never waited out the black-holed connect; the hedge fired at its delay
    assert all(hedge <= t < cfg["connect_timeout"] for t in took)


def test_warm_pool_black_hole_fails_only_the_requests_in_flight(
        lab: Any, make_engine: Any, zone_figure: Any) -> None:
    threads = 4
    cfg = {"query_timeout": 1.0, "connect_timeout": 2.0}
    engine = make_engine(pool_size=4, pool_pre_ping=True, ping_timeout=0.5, pool_timeout=2,
                         **cfg)
    run = workload(engine, 6.0, lab["a"].proxy.blackhole, fault_after=1.0, threads=threads)
    zone_figure(run.report("black hole, warm pool"))
    # once the requests in flight gave up, everything is served by b
    late = run.after(run.fault_at + cfg["query_timeout"] + cfg["connect_timeout"])
    assert late and all(o.error is None and o.port == lab["b"].postgres.port for o in late)
    # at most the requests in flight when the network went: QueryTimeout each, no
    # PoolTimeout (a connect to the dead zone never uses the whole checkout timeout)
    assert len(run.errors()) <= threads
    assert all(o.error == "QueryTimeout" for o in run.errors()), run.report("black hole")


def test_one_zone_paused_longer_than_connect_timeout_fails_no_request(
        lab: Any, zone_figure: Any) -> None:
    """The deterministic form of the busy-machine defect: one zone, timeout 8 s,
    connect_timeout 2 s, a new connection per request, the server paused 3 s."""
    cfg = {"pool_timeout": 8.0, "connect_timeout": 2.0}
    pause = 3.0
    engine = create_engine(url_of(lab), poolclass=ZonalPool,
                           zones={"a": lab.zones(pgbouncer=False)["a"]}, **cfg)
    _port(engine)
    outcomes: list[tuple[float, float, str | None]] = []
    lock = threading.Lock()
    t0 = time.monotonic()
    paused_at: list[float] = []

    def client() -> None:
        while time.monotonic() - t0 < pause + 4.0:
            start = time.monotonic()
            err = None
            try:
                _port(engine)
            except (exc.DBAPIError, exc.TimeoutError, NoHealthyZone) as e:
                err = type(e).__name__
            engine.pool.trim(0)  # what the serverless middleware does
            with lock:
                outcomes.append((start - t0, time.monotonic() - start, err))
            time.sleep(0.05)

    ts = [threading.Thread(target=client) for _ in range(4)]
    for t in ts:
        t.start()
    time.sleep(1.0)
    lab["a"].pause()
    paused_at.append(time.monotonic() - t0)
    time.sleep(pause)
    lab["a"].resume()
    for t in ts:
        t.join(60)
    assert not any(t.is_alive() for t in ts)
    during = [o for o in outcomes if paused_at[0] <= o[0] < paused_at[0] + pause]
    errors = [o for o in outcomes if o[2]]
    st = engine.pool.stats().zones["a"]
    zone_figure(f"one zone paused {pause:g} s (timeout {cfg['pool_timeout']:g}, connect_timeout "
          f"{cfg['connect_timeout']:g}): {len(outcomes)} requests, {len(during)} started "
          f"during the pause, {len(errors)} failed, slowest {max(o[1] for o in outcomes):.2f} s, "
          f"connect errors {st.connect_errors}, ejections {st.ejections}")
    assert during, "no request started during the pause"
    assert st.connect_errors > 0  # the pause was felt: connects timed out
    assert errors == []
    assert st.ejections == 0 and st.state == "healthy"
    engine.dispose()


def test_async_engine_hedges_a_black_holed_local_zone(lab: Any, zone_figure: Any) -> None:
    cfg = {"connect_timeout": 2.0, "pool_timeout": 2.0, "hedge_after": 0.3}
    lab["a"].proxy.blackhole()

    async def main() -> tuple[int, float]:
        engine = create_async_engine(url_of(lab), poolclass=ZonalAsyncPool,
                                     zones=lab.zones(pgbouncer=False), local_zone="a", **cfg)
        try:
            t0 = time.monotonic()
            async with engine.connect() as c:
                port = (await c.execute(text("select inet_server_port()"))).scalar()
            return int(port), time.monotonic() - t0
        finally:
            await engine.dispose()

    port, took = asyncio.run(main())
    zone_figure(f"async engine, local zone black-holed: served by b in {took:.3f} s "
          f"(hedge_after {cfg['hedge_after']:g} s)")
    assert port == lab["b"].postgres.port
    assert cfg["hedge_after"] <= took < cfg["connect_timeout"]


# -- errors that are not about a zone ---------------------------------------------


def _all_healthy(engine: Any) -> bool:
    return all(z.state == "healthy" and z.ejections == 0
               for z in engine.pool.stats().zones.values())


def test_invalid_isolation_level_is_sqlalchemys_argument_error(lab: Any,
                                                                make_engine: Any) -> None:
    engine = make_engine(isolation_level="FOO")
    for _ in range(3):
        with pytest.raises(exc.ArgumentError, match="FOO"):
            engine.connect()
    assert _all_healthy(engine)


def test_a_connect_hook_error_is_the_users_own(lab: Any, make_engine: Any) -> None:
    engine = make_engine()

    class HookBug(Exception):
        pass

    @event.listens_for(engine, "connect")
    def boom(dbapi_conn: Any, rec: Any) -> None:
        raise HookBug("the hook failed")

    for _ in range(3):
        with pytest.raises(HookBug):
            engine.connect()
    assert _all_healthy(engine)


def test_a_failing_initialize_surfaces_as_itself(lab: Any, make_engine: Any) -> None:
    engine = make_engine()

    def initialize(connection: Any) -> None:
        raise RuntimeError("initialize failed")

    engine.dialect.initialize = initialize  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="initialize failed"):
        engine.connect()
    assert _all_healthy(engine)


@pytest.mark.parametrize(("query", "database", "error", "text_"), [
    ("?sslmdoe=require", None, exc.ProgrammingError, 'invalid connection option "sslmdoe"'),
    ("", "no_such_db", exc.OperationalError, 'database "no_such_db" does not exist'),
])
def test_configuration_errors_eject_nothing(lab: Any, query: str, database: str | None,
                                            error: type[Exception], text_: str) -> None:
    url = url_of(lab)
    if database:
        url = url.rsplit("/", 1)[0] + f"/{database}"
    engine = create_engine(url + query, poolclass=ZonalPool, zones=lab.zones(pgbouncer=False),
                           local_zone="a", pool_timeout=5, connect_timeout=2)
    try:
        for _ in range(3):
            t0 = time.monotonic()
            with pytest.raises(error, match=text_) as ei:
                engine.connect()
            # at once, as itself: not after the timeout, not as NoHealthyZone
            assert time.monotonic() - t0 < 5
            assert "NoHealthyZone" not in repr(ei.value)
        st = engine.pool.stats()
        assert _all_healthy(engine)
        assert st.zones["b"].connect_errors == 0  # no failover: it fails the same there
    finally:
        engine.dispose()


def test_busy_machine_local_zone_killed_mid_workload(lab: Any, make_engine: Any,
                                                     zone_figure: Any) -> None:
    """The kill-mid-workload failover with both cores kept busy by other processes."""
    engine = make_engine(pool_size=4, pool_pre_ping=True, pool_timeout=10, query_timeout=5)
    with lab.cpu_load(seconds=60) as load:
        run = workload(engine, 4.0, lab["a"].kill, fault_after=1.0)
    seen = load.load_seen()
    zone_figure(run.report("kill, busy machine") + f"; load: {seen.cores_busy:.2f} cores busy")
    late = run.after(run.fault_at + 2.0)
    assert late and all(o.error is None and o.port == lab["b"].postgres.port for o in late)
    assert len(run.errors()) <= 4 * 2
    assert not [o for o in run.errors() if o.error in ("NoHealthyZone", "TimeoutError")]


def test_slow_connects_through_the_proxy_are_slow_not_dead(lab: Any, make_engine: Any,
                                                           zone_figure: Any) -> None:
    """Zone a answers, but every round trip takes 150 ms more: a connect (several
    round trips) outlasts hedge_after. Zone b serves the checkout; a's connect still
    completes and joins a's idle stack, and a is never ejected: slow is not dead."""
    cfg = {"connect_timeout": 3.0, "pool_timeout": 5.0, "hedge_after": 0.2}
    lab["a"].proxy.latency(ms=150)
    engine = make_engine(**cfg)
    t0 = time.monotonic()
    port = _port(engine)
    took = time.monotonic() - t0
    assert port == lab["b"].postgres.port
    assert cfg["hedge_after"] <= took < cfg["connect_timeout"]
    deadline = time.monotonic() + cfg["connect_timeout"]
    while engine.pool.stats().zones["a"].opening and time.monotonic() < deadline:
        time.sleep(0.02)
    a = engine.pool.stats().zones["a"]
    zone_figure(f"zone a +150 ms per round trip, hedge_after {cfg['hedge_after']:g} s: first "
                f"request served by b in {took:.3f} s; a's connect completed "
                f"({a.connects} connect, {a.connect_errors} errors) and idles in a")
    assert (a.connects, a.connect_errors, a.idle, a.state) == (1, 0, 1, "healthy")
    # the local zone's idle connection serves the next request, slowly but surely
    assert _port(engine) == lab["a"].postgres.port


def test_one_zone_with_slow_connects_is_never_an_error(lab: Any) -> None:
    """One zone whose connects take longer than usual (+100 ms per round trip), a new
    connection per request: QueuePool would only be slow, so zonal is only slow."""
    lab["a"].proxy.latency(ms=100)
    engine = create_engine(url_of(lab), poolclass=ZonalPool,
                           zones={"a": lab.zones(pgbouncer=False)["a"]},
                           pool_timeout=5, connect_timeout=3)
    try:
        for _ in range(5):
            assert _port(engine) == lab["a"].postgres.port
            engine.pool.trim(0)
        st = engine.pool.stats().zones["a"]
        assert (st.connects, st.connect_errors, st.state) == (5, 0, "healthy")
    finally:
        engine.dispose()


def test_a_real_server_restarting_fails_no_checkout(lab: Any, zone_figure: Any) -> None:
    """One zone, killed then started again while requests come in: refused, then
    "starting up" (crash recovery), then served; no request fails within its timeout."""
    cfg = {"pool_timeout": 15.0, "connect_timeout": 2.0}
    engine = create_engine(url_of(lab), poolclass=ZonalPool,
                           zones={"a": lab.zones(pgbouncer=False)["a"]}, **cfg)
    try:
        _port(engine)
        engine.pool.trim(0)
        lab["a"].kill()
        starter = threading.Timer(0.5, lab["a"].start)
        starter.start()
        t0 = time.monotonic()
        assert _port(engine) == lab["a"].postgres.port
        took = time.monotonic() - t0
        starter.join(30)
        st = engine.pool.stats().zones["a"]
        zone_figure(f"one zone killed and restarted: the next request waited {took:.2f} s "
                    f"({st.connect_errors} refused or starting-up connects, {st.retries} "
                    f"retried as busy), 0 errors, ejections {st.ejections}")
        assert st.connect_errors > 0 and st.ejections == 0
        assert took < cfg["pool_timeout"]
    finally:
        engine.dispose()
