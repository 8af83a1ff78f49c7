"""Retries never repeat a statement that may have run (issue 9, item 2).

zonal retries *connecting* (a failed connect, a failed pre-ping: nothing of the
application's has run yet) and never a statement. A failure in the middle of a
transaction, or a statement the client gave up on, reaches the caller as an error;
the rows in every zone prove nothing was executed twice, nor moved to another zone.

Zones are separate PostgreSQL servers (not replicas): each zone's table is counted.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, Engine, create_engine, exc, text

from zonal_core import QueryTimeout
from zonal_core.config import build_config
from zonal_core.pool import ZonedPool
from zonal_core.psycopg_driver import PsycopgDriver, bounded_ping
from zonal_sqlalchemy import ZonalPool

TABLE = "retry_probe"
INSERT = text(f"INSERT INTO {TABLE} (key) VALUES (:k)")


@pytest.fixture
def lab(zonal_lab: Any) -> Any:
    lab = zonal_lab(zones=["a", "b"])
    for z in lab.names:
        with lab[z].connect(autocommit=True) as c:
            # The lab runs with synchronous_commit off: make this commit reach the
            # WAL before a test kills the server, or the table is gone on restart.
            c.execute("SET synchronous_commit = on")
            c.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial, key text NOT NULL)")
    return lab


@pytest.fixture
def make_engine(lab: Any) -> Iterator[Callable[..., Engine]]:
    made: list[Engine] = []

    def make(**options: Any) -> Engine:
        options.setdefault("zones", lab.zones(pgbouncer=False))
        options.setdefault("local_zone", "a")
        options.setdefault("connect_timeout", 1)
        options.setdefault("pool_timeout", 10)
        e = create_engine(f"postgresql+psycopg://{lab.user}:{lab.password}@/{lab.database}",
                          poolclass=ZonalPool, **options)
        made.append(e)
        return e

    yield make
    for e in made:
        e.dispose()


_n = itertools.count()


def key() -> str:
    return f"{uuid.uuid4().hex[:12]}-{next(_n)}"


def counts(lab: Any, *keys: str) -> dict[str, dict[str, int]]:
    """zone -> key -> rows, read on each zone's server directly."""
    out: dict[str, dict[str, int]] = {}
    for z in lab.names:
        if lab[z].state == "killed":
            lab[z].start()
        with lab[z].connect(autocommit=True) as c:
            rows = c.execute(f"SELECT key, count(*) FROM {TABLE} WHERE key = ANY(%s) "
                             "GROUP BY key", [list(keys)]).fetchall()
        out[z] = {k: 0 for k in keys} | {k: int(n) for k, n in rows}
    return out


FAULTS: dict[str, Callable[[Any], None]] = {
    "terminate": lambda lab: lab["a"].terminate_backends(),
    "network reset": lambda lab: lab["a"].proxy.reset(),
    "kill": lambda lab: lab["a"].kill(),
}


def insert(conn: Connection, k: str) -> None:
    conn.execute(INSERT, {"k": k})


@pytest.mark.parametrize("fault", list(FAULTS))
def test_failure_between_two_statements_surfaces_and_nothing_reruns(
        lab: Any, make_engine: Callable[..., Engine], fault: str) -> None:
    engine = make_engine(pool_pre_ping=True)
    k1, k2 = key(), key()
    with engine.connect() as conn:
        insert(conn, k1)  # in a transaction, not committed
        FAULTS[fault](lab)
        with pytest.raises(exc.OperationalError) as info:
            insert(conn, k2)
        assert info.value.connection_invalidated
        conn.rollback()
    print(f"\n{fault}: the caller saw {type(info.value.orig).__name__}: "
          f"{str(info.value.orig).splitlines()[0]}")
    seen = counts(lab, k1, k2)
    assert seen == {"a": {k1: 0, k2: 0}, "b": {k1: 0, k2: 0}}, seen
    # the next checkout reconnects (to a, or b while a is down): that is zonal's retry
    k3 = key()
    with engine.begin() as conn:
        insert(conn, k3)
    seen = counts(lab, k3)
    assert sum(z[k3] for z in seen.values()) == 1, seen


@pytest.mark.parametrize("fault", ["terminate", "network reset"])
def test_autocommit_statement_before_the_failure_stays_once(
        lab: Any, make_engine: Callable[..., Engine], fault: str) -> None:
    engine = make_engine(pool_pre_ping=True, isolation_level="AUTOCOMMIT")
    k1, k2 = key(), key()
    with engine.connect() as conn:
        insert(conn, k1)  # committed by the server at once
        FAULTS[fault](lab)
        with pytest.raises(exc.OperationalError):
            insert(conn, k2)
    seen = counts(lab, k1, k2)
    assert seen == {"a": {k1: 1, k2: 0}, "b": {k1: 0, k2: 0}}, seen


@pytest.mark.parametrize("autocommit", [False, True])
def test_query_timeout_during_an_insert_is_an_error_and_never_a_retry(
        lab: Any, make_engine: Callable[..., Engine], autocommit: bool) -> None:
    """The client gives up on an INSERT still running on the server: the caller
    gets QueryTimeout; the server finishes it (autocommit: it commits) or rolls it
    back; it never runs a second time, here or in zone b."""
    options: dict[str, Any] = {"query_timeout": 0.5}
    if autocommit:
        options["isolation_level"] = "AUTOCOMMIT"
    engine = make_engine(**options)
    k = key()
    t0 = time.monotonic()
    with engine.connect() as conn, pytest.raises(exc.OperationalError) as info:
        conn.execute(text(f"INSERT INTO {TABLE} (key) SELECT :k FROM pg_sleep(1.5)"),
                     {"k": k})
    took = time.monotonic() - t0
    assert isinstance(info.value.orig, QueryTimeout)
    assert took < 1.4, "the caller waited for the server instead of query_timeout"
    time.sleep(2.0)  # the server's statement ends meanwhile
    seen = counts(lab, k)
    print(f"\nquery_timeout during INSERT (autocommit={autocommit}): error after "
          f"{took:.2f} s; rows afterwards {seen}")
    assert seen["b"][k] == 0
    if autocommit:
        # it did run after the caller's error, and committed: once, not twice
        assert seen["a"][k] == 1
    else:
        assert seen["a"][k] == 0  # its transaction died with the connection


def test_a_dead_idle_connection_fails_the_statement_without_pre_ping(
        lab: Any, make_engine: Callable[..., Engine]) -> None:
    """Without pre-ping, a pooled connection whose backend died fails the statement
    (it is not re-run on a new connection); with pre-ping, the ping fails, zonal
    connects again and the statement runs once."""
    plain = make_engine(pool_pre_ping=False, pool_size=1)
    pinged = make_engine(pool_pre_ping=True, ping_bypass=0, pool_size=1)
    for e in (plain, pinged):
        with e.connect() as c:
            c.execute(text("SELECT 1"))
    lab["a"].terminate_backends()
    k_plain, k_pinged = key(), key()
    with pytest.raises(exc.OperationalError), plain.begin() as conn:
        insert(conn, k_plain)
    with pinged.begin() as conn:
        insert(conn, k_pinged)
    seen = counts(lab, k_plain, k_pinged)
    assert seen["a"] == {k_plain: 0, k_pinged: 1}, seen
    assert seen["b"] == {k_plain: 0, k_pinged: 0}, seen


def test_core_pool_with_the_psycopg_driver(lab: Any) -> None:
    """The same through the core pool and its psycopg driver (what Django uses)."""
    config = build_config(zones=lab.zones(pgbouncer=False), local_zone="a", connect_timeout=1,
                          query_timeout=0.5, environ={})
    failures: list[Any] = []
    driver = PsycopgDriver({"user": lab.user, "password": lab.password,
                            "dbname": lab.database}, config, on_query_timeout=failures.append)
    pool = ZonedPool(driver, config)
    k1, k2, k3 = key(), key(), key()
    try:
        with pytest.raises(psycopg.OperationalError), pool.connection() as rec:
            rec.raw.execute(f"INSERT INTO {TABLE} (key) VALUES (%s)", [k1])
            lab["a"].terminate_backends()
            rec.raw.execute(f"INSERT INTO {TABLE} (key) VALUES (%s)", [k2])
        with pytest.raises(QueryTimeout), pool.connection() as rec:
            rec.raw.execute(f"INSERT INTO {TABLE} (key) SELECT %s FROM pg_sleep(1.5)", [k3])
        time.sleep(2.0)
        seen = counts(lab, k1, k2, k3)
        assert all(n == 0 for z in seen.values() for n in z.values()), seen
        assert pool.stats().in_use == 0
        assert [ep.zone for ep in failures] == ["a"]  # the timeout counted against a
    finally:
        pool.close()


def test_a_ping_is_bounded_without_a_query_timeout_and_statements_are_free_after(
        lab: Any) -> None:
    """With query_timeout off, a ping is still bounded by its own timeout (the wait
    takes the deadline, not the settled "nothing bounds it"), and once it is over a
    statement is not bounded by the ping's timeout any more."""
    config = build_config(zones=lab.zones(pgbouncer=False), local_zone="a", connect_timeout=1,
                          query_timeout=None, environ={})
    driver = PsycopgDriver({"user": lab.user, "password": lab.password,
                            "dbname": lab.database, "autocommit": True}, config)
    ep = config.topology.zones[0].endpoints[0]
    conn = driver.connect(ep, 2.0)
    try:
        with pytest.raises(TimeoutError):
            bounded_ping(conn, 0.2, lambda: conn.execute("SELECT pg_sleep(1.5)"))
        assert conn.closed  # its state was unknown: ended
        conn = driver.connect(ep, 2.0)
        ping_timeout = 1.0  # (generous: a busy machine answers an empty query in time)
        bounded_ping(conn, ping_timeout, lambda: conn.execute(""))
        # longer than the ping's bound, which ended with the ping
        conn.execute("SELECT pg_sleep(%s)", [ping_timeout + 0.5])
        assert not conn.closed
    finally:
        conn.close()
