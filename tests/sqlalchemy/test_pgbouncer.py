"""Through PgBouncer 1.18 in transaction mode: what zonal prevents, shown both ways."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import exc, text
from sqlalchemy.orm import Session

from zonal_core import SessionStateError

pytestmark = pytest.mark.pgbouncer


@pytest.fixture
def lab(bouncer_lab: Any) -> Any:
    """Every test here goes through PgBouncer: the conftest's make_engine gets the lab
    that has one."""
    return bouncer_lab

# int values of different sizes: psycopg binds them as int2, int4 and int8, so one
# client's prepared _pg3_0 is the wrong shape for another's parameters.
VALUES = [7, 70_000, 7_000_000_000]


def committed_workload(engine: Any, threads: int = 4, per_thread: int = 200) -> Counter[str]:
    """``threads`` x ``per_thread`` transactions that end in COMMIT."""
    errors: Counter[str] = Counter()
    lock = threading.Lock()

    def work(i: int) -> None:
        for n in range(per_thread):
            v = VALUES[(i + n) % len(VALUES)]
            try:
                if n % 2:
                    with Session(engine) as s:
                        s.execute(text("select :v + 1"), {"v": v})
                        s.commit()
                else:
                    with engine.begin() as c:
                        c.execute(text("select :v + 1"), {"v": v})
            except exc.DBAPIError as e:
                msg = str(e.orig).splitlines()[0]
                with lock:
                    errors[msg[:60]] += 1

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    return errors


def test_committed_work_has_no_prepared_statement_errors(make_engine: Any) -> None:
    engine = make_engine(via_pgbouncer=True, pgbouncer="transaction", pool_size=4)
    errors = committed_workload(engine)
    assert sum(errors.values()) == 0, errors
    assert engine.pool.stats().zones["a"].checkouts >= 800


def test_without_pgbouncer_mode_the_same_work_fails(make_engine: Any) -> None:
    engine = make_engine(via_pgbouncer=True, pool_size=4)  # pgbouncer not declared
    errors = committed_workload(engine)
    print("errors without pgbouncer='transaction':", dict(errors))
    assert sum(errors.values()) > 0
    assert any("prepared statement" in m or "binary data format" in m for m in errors)


def test_session_state_statement_is_refused_naming_the_safe_form(make_engine: Any) -> None:
    engine = make_engine(via_pgbouncer=True, pgbouncer="transaction")
    with engine.connect() as c, pytest.raises(SessionStateError, match="SET LOCAL"):
        c.execute(text("SET statement_timeout = '5s'"))
    with engine.begin() as c:
        c.execute(text("SET LOCAL statement_timeout = '5s'"))
        c.execute(text("SET TIME ZONE 'UTC'"))  # tracked by PgBouncer: allowed
        assert c.execute(text("select 1")).scalar() == 1


def test_session_state_warn_and_allow(make_engine: Any) -> None:
    engine = make_engine(via_pgbouncer=True, pgbouncer="transaction", session_state="warn")
    with engine.connect() as c, pytest.warns(UserWarning, match="SET LOCAL"):
        c.execute(text("SET statement_timeout = '5s'"))
    engine = make_engine(via_pgbouncer=True, pgbouncer="transaction", session_state="allow")
    with engine.connect() as c:
        c.execute(text("SET statement_timeout = '5s'"))


def test_stream_results_outside_a_transaction_is_a_clear_error(make_engine: Any) -> None:
    engine = make_engine(via_pgbouncer=True, pgbouncer="transaction")
    with engine.connect() as c:
        auto = c.execution_options(isolation_level="AUTOCOMMIT", stream_results=True)
        with pytest.raises(SessionStateError, match="transaction"):
            auto.execute(text("select generate_series(1, 10)"))
    with engine.begin() as c:
        rows = c.execution_options(stream_results=True).execute(
            text("select generate_series(1, 10)")).all()
        assert len(rows) == 10


def test_the_rule_follows_reconfigure(make_engine: Any) -> None:
    engine = make_engine(via_pgbouncer=True, pgbouncer="transaction")
    statement = text("SET statement_timeout = '5s'")
    engine.pool.reconfigure(session_state="allow")
    with engine.connect() as c:
        c.execute(statement)
        c.execute(text("select 1"))  # (now known safe: skips the rule's call)
    engine.pool.reconfigure(session_state="error")
    with engine.connect() as c, pytest.raises(SessionStateError, match="SET LOCAL"):
        c.execute(statement)
    with engine.connect() as c:
        assert c.execute(text("select 1")).scalar() == 1
