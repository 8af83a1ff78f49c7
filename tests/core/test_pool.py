"""The zoned pool with a fake clock and a fake driver: every timing rule, exactly."""

from __future__ import annotations

import os
import threading

import pytest

from tests.conftest import eventually
from zonal_core import errors
from zonal_core.clock import FakeClock, Jitter, SystemClock
from zonal_core.health import HealthState
from zonal_core.pool import ZonedPool
from zonal_core.testing import FakeDBError, FakeDriver

ZONES = {"a": "10.0.0.1:5432", "b": "10.0.0.2:5432", "c": "10.0.0.3:5432"}


def make(zones: dict[str, object] | None = None, **opts: object
         ) -> tuple[ZonedPool, FakeDriver, FakeClock]:
    clock = FakeClock(1000.0)
    drv = FakeDriver(clock)
    opts.setdefault("local_zone", "a")
    pool = ZonedPool(drv, zones=zones or ZONES, clock=clock, jitter=Jitter(seed=7), **opts)
    return pool, drv, clock


def zone_of(rec: object) -> str:
    return rec.endpoint.zone  # type: ignore[attr-defined]


# -- checkout basics ------------------------------------------------------------


def test_lifo_hands_out_the_most_recently_used() -> None:
    pool, drv, clock = make()
    recs = [pool.getconn() for _ in range(3)]
    for r in recs:
        clock.advance(1)
        pool.putconn(r)
    assert pool.getconn() is recs[-1]
    assert len(drv.opened) == 3


def test_new_connections_go_to_the_local_zone() -> None:
    pool, _drv, _ = make(local_zone="b")
    assert {zone_of(pool.getconn()) for _ in range(3)} == {"b"}
    assert pool.stats().preferred_zone == "b"


def test_pool_size_caps_each_zone_and_timeout_names_every_zone() -> None:
    pool, drv, clock = make(pool_size=2)
    held = [pool.getconn(), pool.getconn()]
    t0 = clock.now()
    with pytest.raises(errors.PoolTimeout) as ei:
        pool.getconn(timeout=5)
    assert clock.now() - t0 == pytest.approx(5)
    msg = str(ei.value)
    assert "a: open 2/2, in use 2" in msg and "b: open 0/2" in msg and "timeout=5s" in msg
    assert isinstance(ei.value, TimeoutError)
    assert pool.stats().zones["a"].timeouts == 1
    assert len(drv.opened) == 2
    for r in held:
        pool.putconn(r)


def test_max_total_caps_across_zones_with_spillover() -> None:
    pool, _drv, _ = make(pool_size=1, max_total=2, spillover=True)
    r1, r2 = pool.getconn(), pool.getconn()
    assert (zone_of(r1), zone_of(r2)) == ("a", "b")
    with pytest.raises(errors.PoolTimeout):
        pool.getconn(timeout=1)
    pool.putconn(r2)  # a spillover connection is retired when nobody waits
    assert pool.stats().zones["b"].closes["failback"] == 1


def test_without_spillover_a_full_local_zone_means_waiting() -> None:
    pool, _, _ = make(pool_size=1, max_total=3)
    pool.getconn()
    with pytest.raises(errors.PoolTimeout):
        pool.getconn(timeout=2)


def test_bad_timeout_argument_is_a_config_error() -> None:
    pool, _, _ = make()
    with pytest.raises(errors.ZonalConfigError, match="timeout"):
        pool.getconn(timeout=-1)


def test_double_checkin_is_harmless() -> None:
    pool, _, _ = make()
    r = pool.getconn()
    pool.putconn(r)
    pool.putconn(r)
    s = pool.stats().zones["a"]
    assert (s.idle, s.in_use, s.open) == (1, 0, 1)


# -- idle, lifetime, suspend ----------------------------------------------------


def test_ten_minute_freeze_reaps_idle_on_the_callers_path_without_a_thread() -> None:
    threads_before = threading.active_count()
    pool, drv, clock = make(max_idle=30)
    recs = [pool.getconn() for _ in range(3)]
    for r in recs:
        pool.putconn(r)
    clock.advance(600)  # the function was frozen for ten minutes
    fresh = pool.getconn()
    assert fresh not in recs
    st = pool.stats()
    assert st.suspends == 1
    assert st.zones["a"].closes["suspend"] == 3
    assert all(c.closed for c in drv.opened[:3])
    assert threading.active_count() == threads_before


def test_max_idle_closes_only_what_idled_too_long() -> None:
    pool, drv, clock = make(max_idle=300)
    r1, r2 = pool.getconn(), pool.getconn()
    pool.putconn(r1)
    pool.putconn(r2)
    clock.advance(200)
    r = pool.getconn()  # r2, LIFO
    assert r is r2
    pool.putconn(r)
    clock.advance(150)  # r1 idle 350 s, r2 idle 150 s; no gap > 300 between operations
    assert pool.getconn() is r2
    s = pool.stats()
    assert s.suspends == 0
    assert s.zones["a"].closes["idle"] == 1
    assert drv.opened[0].closed and not drv.opened[1].closed


@pytest.mark.parametrize("seed", range(5))
def test_lifetime_jitter_is_up_to_ten_percent_early_never_later(seed: int) -> None:
    clock = FakeClock()
    pool = ZonedPool(FakeDriver(clock), zones=ZONES, clock=clock, jitter=Jitter(seed),
                     pool_size=50, max_total=50, max_lifetime=100)
    recs = [pool.getconn() for _ in range(50)]
    spans = [r.expires_at - r.created_at for r in recs]
    assert all(90 <= s <= 100 for s in spans)
    assert len(set(spans)) > 40  # they do not all expire together
    assert max(spans) - min(spans) > 5


def test_lifetime_never_closes_a_connection_mid_transaction() -> None:
    pool, drv, clock = make(max_lifetime=100, max_idle=1000)
    r = pool.getconn()
    clock.advance(150)
    assert not drv.opened[0].closed  # still lent: never closed under its user
    pool.putconn(r)
    assert drv.opened[0].closed
    assert pool.stats().zones["a"].closes["lifetime"] == 1


def test_expired_idle_connection_is_not_handed_out() -> None:
    pool, drv, clock = make(max_lifetime=100, max_idle=1000)
    pool.putconn(pool.getconn())
    clock.advance(101)
    r = pool.getconn()
    assert r.id == 2 and drv.opened[0].closed


# -- pre-ping -------------------------------------------------------------------


def test_ping_bypass_window() -> None:
    pool, drv, clock = make(pre_ping=True, ping_bypass=0.5)
    pool.putconn(pool.getconn())
    clock.advance(0.2)
    pool.putconn(pool.getconn())
    assert drv.pings == 0
    clock.advance(0.6)
    pool.putconn(pool.getconn())
    assert drv.pings == 1
    assert pool.stats().zones["a"].pings == 1


def test_failed_ping_discards_one_connection_not_the_pool() -> None:
    pool, drv, clock = make(pre_ping=True)
    recs = [pool.getconn() for _ in range(3)]
    for r in recs:
        pool.putconn(r)
    drv.opened[2].broken = True  # the most recent one's backend was terminated
    clock.advance(5)
    got = pool.getconn()
    assert got is recs[1]
    s = pool.stats().zones["a"]
    assert s.ping_failures == 1 and s.closes["ping_failed"] == 1
    assert s.idle == 1 and not drv.opened[0].closed
    assert s.state == "healthy"  # a ping error says nothing about the zone


def test_ping_timeout_is_bounded_and_counts_against_the_endpoint() -> None:
    pool, drv, clock = make(pre_ping=True, ping_timeout=1)
    r1, r2 = pool.getconn(), pool.getconn()
    pool.putconn(r1)
    pool.putconn(r2)
    drv.set_ping("a", "hang")
    clock.advance(5)
    t0 = clock.now()
    r = pool.getconn(timeout=30)
    # two hung pings of exactly ping_timeout each eject zone a; b serves.
    assert clock.now() - t0 == pytest.approx(2.0)
    assert zone_of(r) == "b"
    s = pool.stats().zones["a"]
    assert s.ping_failures == 2 and s.state == "ejected" and s.ejections == 1


# -- health, failover, failback -------------------------------------------------


def test_failover_to_next_zone_without_error() -> None:
    pool, drv, _ = make()
    drv.set("a", "refuse")
    r = pool.getconn()
    assert zone_of(r) == "b"
    s = pool.stats()
    assert s.zones["a"].connect_errors == 1 and s.zones["a"].state == "healthy"
    pool.putconn(pool.getconn())  # second failure ejects a
    s = pool.stats()
    assert s.zones["a"].state == "ejected" and s.zones["a"].failovers == 1
    assert s.preferred_zone == "b"


def test_priority_orders_the_other_zones() -> None:
    zones = {"a": "10.0.0.1:5432",
             "b": {"endpoints": ["10.0.0.2:5432"], "priority": 2},
             "c": {"endpoints": ["10.0.0.3:5432"], "priority": 1}}
    pool, drv, _ = make(zones=zones)
    drv.set("a", "refuse")
    assert zone_of(pool.getconn()) == "c"


def test_ejection_time_grows_with_jitter_and_is_capped() -> None:
    pool, drv, clock = make()
    drv.set("a", "refuse")
    st = pool._state
    h = st.zones["a"].endpoints[0]
    pool.putconn(pool.getconn())
    pool.putconn(pool.getconn())
    lengths = []
    for _ in range(20):
        assert h.state is HealthState.EJECTED
        lengths.append(h.ejected_until - h.ejected_at)
        clock.advance(h.ejected_until - clock.now())
        pool.putconn(pool.getconn())  # the half-open probe fails: ejected again, longer
    base = st.health.base_ejection
    assert base <= lengths[0] <= base * 1.2
    assert 2 * base <= lengths[1] <= 2 * base * 1.2
    assert lengths[1] > lengths[0]
    assert max(lengths) <= st.health.max_ejection
    assert lengths[-1] == pytest.approx(st.health.max_ejection)


def test_failback_only_after_the_hysteresis() -> None:
    pool, drv, clock = make(failback_after=30)
    drv.set("a", "refuse")
    pool.putconn(pool.getconn())
    pool.putconn(pool.getconn())
    st = pool.stats()
    assert st.zones["a"].state == "ejected" and st.preferred_zone == "b"
    drv.set("a", "ok")
    clock.advance(st.zones["a"].ejected_for or 0)
    probe = pool.getconn()  # the half-open probe: a new connection in a
    assert zone_of(probe) == "a"
    pool.putconn(probe)  # a is on probation: its connection is retired
    assert pool.stats().zones["a"].state == "probation"
    for _ in range(5):
        clock.advance(5)
        r = pool.getconn()
        assert zone_of(r) == "b"  # still b: a has not been healthy for 30 s
        pool.putconn(r)
    clock.advance(6)  # 31 s after the probe
    r = pool.getconn()
    assert zone_of(r) == "a"
    st = pool.stats()
    assert st.zones["a"].state == "healthy" and st.preferred_zone == "a"
    assert st.zones["b"].closes["failback"] >= 1 and st.zones["b"].idle == 0


def test_no_healthy_zone_only_after_every_zone_failed_for_the_whole_timeout() -> None:
    pool, drv, clock = make(connect_timeout=1)
    for z in ZONES:
        drv.set(z, "refuse")
    t0 = clock.now()
    with pytest.raises(errors.NoHealthyZone) as ei:
        pool.getconn(timeout=5)
    # tried again and again (backoff between rounds) until the timeout, not before
    assert clock.now() - t0 == pytest.approx(5)
    assert "every zone was tried and failed" in str(ei.value)
    assert "Connection refused" in str(ei.value)
    assert isinstance(ei.value.__cause__, FakeDBError)  # the last driver error, chained
    assert drv.connect_attempts > 2 * len(ZONES)
    st = pool.stats()
    # ejection never removes the last capacity: one zone stays in the route
    assert [z.state for z in st.zones.values()].count("healthy") == 1
    # a zone that comes back serves the very next checkout, at once
    drv.set("b", "ok")
    t1 = clock.now()
    assert zone_of(pool.getconn(timeout=5)) == "b"
    assert clock.now() - t1 < 5


def test_server_busy_is_retried_with_backoff_not_ejected() -> None:
    pool, drv, clock = make()
    drv.script("a", ["busy", "busy", "busy"])
    t0 = clock.now()
    r = pool.getconn(timeout=5)
    assert zone_of(r) == "a"
    s = pool.stats().zones["a"]
    assert s.retries == 3 and s.connect_errors == 3 and s.state == "healthy"
    assert 0 <= clock.now() - t0 <= 0.05 + 0.1 + 0.2


def test_server_busy_until_timeout_says_so() -> None:
    pool, drv, _clock = make()
    drv.set("a", "busy")
    with pytest.raises(errors.PoolTimeout, match="too many clients"):
        pool.getconn(timeout=3)
    assert pool.stats().zones["a"].state == "healthy"


def test_auth_failure_is_raised_and_ejects_nothing() -> None:
    pool, drv, _ = make()
    drv.set("a", "auth")
    for _ in range(3):
        with pytest.raises(FakeDBError, match="password authentication"):
            pool.getconn()
    assert pool.stats().zones["a"].state == "healthy"


def test_connect_attempt_never_runs_past_what_is_left_of_timeout() -> None:
    pool, drv, clock = make(connect_timeout=5)
    for z in ZONES:
        drv.set(z, "hang")
    t0 = clock.now()
    with pytest.raises((errors.PoolTimeout, errors.NoHealthyZone)):
        pool.getconn(timeout=7)
    assert clock.now() - t0 == pytest.approx(7)


def test_paused_local_zone_costs_one_slow_checkout_not_errors() -> None:
    pool, drv, clock = make(connect_timeout=2, timeout=30)
    drv.set("a", "hang")
    t0 = clock.now()
    assert zone_of(pool.getconn()) == "b"
    assert clock.now() - t0 == pytest.approx(2)
    t1 = clock.now()
    assert zone_of(pool.getconn()) == "b"
    assert clock.now() - t1 == pytest.approx(2)  # second failure: a ejected now
    t2 = clock.now()
    assert zone_of(pool.getconn()) == "b"
    assert clock.now() == t2  # no more attempts at a while it is ejected


def test_disconnect_invalidates_that_zone_only() -> None:
    pool, _drv, _clock = make(pool_size=3, spillover=True, max_total=6)
    recs = [pool.getconn() for _ in range(4)]  # 3 in a, 1 in b
    for r in recs[1:]:
        pool.putconn(r, reset=False)
    pool.invalidate(recs[0], FakeDBError("server closed the connection unexpectedly", "57P01"))
    s = pool.stats()
    assert s.zones["a"].idle == 0 and s.zones["a"].closes["invalidated"] == 3


# -- waiting, fairness ----------------------------------------------------------


def test_waiters_are_served_in_order() -> None:
    pool = ZonedPool(FakeDriver(), zones=ZONES, clock=SystemClock(), pool_size=1)
    held = pool.getconn()
    order: list[int] = []
    threads = []

    def worker(i: int) -> None:
        r = pool.getconn(timeout=10)
        order.append(i)
        pool.putconn(r)

    for i in range(6):
        t = threading.Thread(target=worker, args=(i,))
        t.start()
        threads.append(t)
        # (each in line before the next starts, within the checkout's own timeout)
        assert eventually(lambda: pool.stats().waiting, i + 1, within=10) == i + 1
    pool.putconn(held)
    for t in threads:
        t.join(10)
    assert order == list(range(6))
    assert pool.stats().zones["a"].in_use == 0


def test_returned_connection_goes_straight_to_the_waiter() -> None:
    pool = ZonedPool(FakeDriver(), zones=ZONES, clock=SystemClock(), pool_size=1)
    held = pool.getconn()
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(pool.getconn(timeout=10)))
    t.start()
    assert eventually(lambda: pool.stats().waiting, 1, within=10) == 1
    pool.putconn(held)
    t.join(10)
    assert got == [held]


# -- trim, drain, close, reconfigure --------------------------------------------


def test_trim_keeps_the_most_recent_min_idle() -> None:
    pool, _drv, clock = make(min_idle=1)
    recs = [pool.getconn() for _ in range(4)]
    for r in recs:
        clock.advance(1)
        pool.putconn(r)
    assert pool.trim() == 3
    s = pool.stats().zones["a"]
    assert s.idle == 1 and s.closes["trim"] == 3
    assert pool.getconn() is recs[-1]
    assert pool.trim(0) == 0


def test_close_closes_idle_now_and_borrowed_at_checkin() -> None:
    pool, drv, _ = make()
    r1, r2 = pool.getconn(), pool.getconn()
    pool.putconn(r1)
    pool.close()
    assert drv.opened[0].closed and not drv.opened[1].closed
    with pytest.raises(errors.PoolClosed):
        pool.getconn()
    pool.putconn(r2)
    assert drv.opened[1].closed
    assert pool.stats().zones["a"].closes["shutdown"] == 2


def test_reconfigure_drains_removed_zones_without_dropping_borrowed() -> None:
    pool, drv, _ = make(local_zone="b")
    rb1, rb2 = pool.getconn(), pool.getconn()
    pool.putconn(rb1)
    pool.reconfigure(zones={"a": ZONES["a"], "c": ZONES["c"]}, local_zone="c", pool_size=3)
    assert drv.opened[0].closed  # idle in removed zone b
    assert not drv.opened[1].closed  # borrowed: untouched
    assert zone_of(pool.getconn()) == "c"
    pool.putconn(rb2)
    assert drv.opened[1].closed
    assert set(pool.stats().zones) == {"a", "c"}
    assert pool.config.pool_size == 3


def test_reconfigure_to_smaller_pool_size() -> None:
    pool, _drv, _ = make(pool_size=4)
    recs = [pool.getconn() for _ in range(4)]
    for r in recs[:2]:
        pool.putconn(r)
    pool.reconfigure(pool.config, pool_size=1)
    s = pool.stats().zones["a"]
    assert s.idle == 0 and s.in_use == 2
    pool.putconn(recs[2])
    pool.putconn(recs[3])
    s = pool.stats().zones["a"]
    assert s.open <= 1


def test_drain_closes_idle_and_retires_borrowed() -> None:
    pool, drv, _ = make()
    r1, r2 = pool.getconn(), pool.getconn()
    pool.putconn(r1)
    assert pool.drain() == 1
    pool.putconn(r2)
    assert all(c.closed for c in drv.opened)


def test_password_never_in_timeout_message_or_repr() -> None:
    pool, _drv, _ = make(zones={"a": "app:s3cr3t-pw@10.0.0.1:5432"}, pool_size=1)
    pool.getconn()
    with pytest.raises(errors.PoolTimeout) as ei:
        pool.getconn(timeout=1)
    assert "s3cr3t-pw" not in str(ei.value)
    assert "s3cr3t-pw" not in repr(pool) + repr(pool.config) + repr(pool.stats())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_forked_child_never_reuses_the_parents_connections() -> None:
    pool = ZonedPool(FakeDriver(), zones=ZONES)
    first = pool.getconn()
    lent = pool.getconn()  # borrowed across the fork, given back in the child
    pool.putconn(first)
    parent_conn = pool._state.zones["a"].idle[0].raw
    lent.raw.in_transaction = True  # the parent's transaction, on the parent's socket
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            pool.putconn(lent)  # the parent's socket: neither idle here nor closed
            rec = pool.getconn()
            ok = (rec.raw is not parent_conn and rec.raw is not lent.raw
                  and not parent_conn.closed and not lent.raw.closed
                  and lent.raw.in_transaction  # never reset (rolled back) from here
                  and pool.stats().zones["a"].idle == 0)
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"1"
    os.waitpid(pid, 0)
    assert not parent_conn.closed
    assert pool.getconn().raw is parent_conn


# -- leaks, rotating credentials --------------------------------------------------


def _held_too_long(pool: ZonedPool) -> object:
    return pool.getconn()  # the stack of this line is what the report shows


def test_leak_is_reported_once_with_the_checkout_stack(caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    pool, _, clock = make(leak_threshold=10)
    rec = _held_too_long(pool)
    other = pool.getconn()
    pool.putconn(other)  # returned in time: never reported
    clock.advance(11)
    with caplog.at_level("WARNING", logger="zonal.pool"):
        pool.putconn(pool.getconn())
        clock.advance(30)
        pool.putconn(pool.getconn())
    leaks = [r for r in caplog.records if "leak_threshold" in r.getMessage()]
    assert len(leaks) == 1
    msg = leaks[0].getMessage()
    assert f"connection #{rec.id} of zone a borrowed for 11.0 s" in msg  # type: ignore[attr-defined]
    assert "_held_too_long" in msg
    assert pool.stats().zones["a"].leaks == 1


def test_no_stack_is_kept_without_leak_threshold() -> None:
    pool, _, _ = make()
    assert pool.getconn().stack is None


def test_refused_rotating_credential_is_retried_once_with_a_fresh_one() -> None:
    calls: list[int] = []

    def token() -> str:
        calls.append(1)
        return f"token-{len(calls)}"

    pool, drv, _ = make(password=token)
    drv.script("a", ["auth", "ok"])
    assert zone_of(pool.getconn()) == "a"
    assert pool.stats().zones["a"].state == "healthy"
    drv.script("a", ["auth", "auth"])
    with pytest.raises(FakeDBError, match="password authentication"):
        pool.getconn()


def test_a_fixed_password_is_not_retried() -> None:
    pool, drv, _ = make(password="fixed")
    drv.script("a", ["auth", "ok"])
    with pytest.raises(FakeDBError, match="password authentication"):
        pool.getconn()


def test_health_policy_is_public_and_applies_to_the_next_failure() -> None:
    from zonal_core.health import HealthPolicy

    pool, drv, _ = make()
    pool.set_health_policy(HealthPolicy(consecutive_failures=1, base_ejection=1.5))
    assert pool.health_policy.base_ejection == 1.5
    drv.set("a", "refuse")
    pool.getconn()
    h = pool._state.zones["a"].endpoints[0]
    assert h.state is HealthState.EJECTED
    assert 1.5 <= h.ejected_until - h.ejected_at <= 1.5 * 1.2


def test_a_failing_password_provider_ejects_nothing() -> None:
    from zonal_core.credentials import resolve

    def down() -> str:
        raise RuntimeError("token service unavailable")

    pool, drv, _ = make(password=down)
    real_connect = drv.connect

    def connect(endpoint: object, timeout: float) -> object:
        resolve(pool.config.password)  # as the real drivers do, per new connection
        return real_connect(endpoint, timeout)  # type: ignore[arg-type]

    drv.connect = connect  # type: ignore[method-assign]
    for _ in range(3):
        with pytest.raises(errors.CredentialError, match="token service") as ei:
            pool.getconn()
        assert isinstance(ei.value.__cause__, RuntimeError)
    assert all(z.ejections == 0 for z in pool.stats().zones.values())


def test_wait_time_counts_each_immediate_checkout_as_a_zero_wait() -> None:
    # The hot path skips the histogram; its snapshot adds those checkouts as zeros.
    pool, drv, _ = make(zones={"a": ZONES["a"]})
    drv.latency["a"] = 0.003  # the first checkout waits 3 ms for its connect
    pool.putconn(pool.getconn())
    for _ in range(3):
        pool.putconn(pool.getconn())
    z = pool.stats().zones["a"]
    assert z.checkouts == 4 and z.wait_time.count == 4
    assert z.wait_time.counts[0] == 3  # the immediate ones, in the lowest bucket
    assert z.wait_time.sum == pytest.approx(0.003)
    assert sum(z.wait_time.counts) == z.wait_time.count
