"""The session-state rule for PgBouncer transaction mode: classify() and check()."""

from __future__ import annotations

import logging
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zonal_core.errors import SessionStateError, ZonalConfigError
from zonal_core.pgbouncer import (
    KINDS,
    TRACKED_PARAMETERS,
    SessionStateFinding,
    SessionStateWarning,
    _classify_slow,  # the unguarded slow path
    check,
    classify,
)

# (sql, kind) -- every one must be flagged with that kind.
POSITIVES = [
    # SET / RESET of untracked parameters
    ("SET statement_timeout = '5s'", "set"),
    ("SET statement_timeout TO 5000", "set"),
    ("set search_path to app, public", "set"),
    ("SET SESSION statement_timeout = '5s'", "set"),
    ("SET SCHEMA 'app'", "set"),
    ("SET myapp.tenant_id = '42'", "set"),
    ('SET "myapp"."tenant_id" = %(tenant)s', "set"),
    ("SET lock_timeout = $1", "set"),
    ("SET work_mem TO DEFAULT", "set"),
    ("SET XML OPTION DOCUMENT", "set"),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", "set"),
    ("RESET statement_timeout", "set"),
    ("RESET ALL", "set"),
    ("reset search_path", "set"),
    # roles and users
    ("SET ROLE admin", "set_role"),
    ("SET SESSION ROLE admin", "set_role"),
    ("set role = 'admin'", "set_role"),
    ("RESET ROLE", "set_role"),
    ("SET SESSION AUTHORIZATION bob", "session_authorization"),
    ("SET session_authorization = 'bob'", "session_authorization"),
    ("RESET SESSION AUTHORIZATION", "session_authorization"),
    # LISTEN, PREPARE, DEALLOCATE, cursors
    ("LISTEN jobs", "listen"),
    ('listen "Jobs Channel"', "listen"),
    ("PREPARE q (int) AS SELECT * FROM t WHERE id = $1", "prepare"),
    ("prepare transaction_q AS SELECT 1", "prepare"),
    ("DEALLOCATE q", "deallocate"),
    ("DEALLOCATE ALL", "deallocate"),
    ("DEALLOCATE PREPARE q", "deallocate"),
    ("DECLARE c CURSOR WITH HOLD FOR SELECT * FROM t", "declare_with_hold"),
    ('DECLARE "c1" NO SCROLL CURSOR WITH HOLD FOR SELECT 1', "declare_with_hold"),
    # advisory locks, session level
    ("SELECT pg_advisory_lock(42)", "advisory_lock"),
    ("SELECT pg_advisory_lock(1, 2)", "advisory_lock"),
    ("select PG_ADVISORY_LOCK_SHARED(%(key)s)", "advisory_lock"),
    ("SELECT pg_try_advisory_lock(hashtext('job'))", "advisory_lock"),
    ("SELECT pg_try_advisory_lock_shared(7)", "advisory_lock"),
    ("SELECT pg_advisory_unlock(42)", "advisory_lock"),
    ("SELECT pg_advisory_unlock_shared(42)", "advisory_lock"),
    ("SELECT pg_advisory_unlock_all()", "advisory_lock"),
    ("SELECT pg_catalog.pg_advisory_lock (42)", "advisory_lock"),
    ("SELECT x FROM t WHERE pg_try_advisory_lock(t.id) LIMIT 1", "advisory_lock"),
    ('SELECT "pg_advisory_lock"(1)', "advisory_lock"),
    ("WITH l AS (SELECT pg_advisory_lock(1)) SELECT * FROM l", "advisory_lock"),
    # temporary tables and objects
    ("CREATE TEMP TABLE t (id int)", "temp_table"),
    ("CREATE TEMPORARY TABLE t (id int)", "temp_table"),
    ("create local temporary table if not exists t (id int)", "temp_table"),
    ("CREATE GLOBAL TEMP TABLE t (id int)", "temp_table"),
    ("CREATE TEMP TABLE t (id int) ON COMMIT DELETE ROWS", "temp_table"),
    ("CREATE TEMP TABLE t (id int) ON COMMIT PRESERVE ROWS", "temp_table"),
    ("CREATE TEMP TABLE t AS SELECT * FROM users", "temp_table"),
    ("CREATE TABLE pg_temp.t (id int)", "temp_table"),
    ("SELECT * INTO TEMP t FROM users", "temp_table"),
    ("SELECT id INTO TEMPORARY TABLE t FROM users", "temp_table"),
    ("CREATE TEMP VIEW v AS SELECT 1", "temp_object"),
    ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", "temp_object"),
    ("CREATE TEMP SEQUENCE s", "temp_object"),
    # set_config with is_local false
    ("SELECT set_config('app.tenant', '42', false)", "set"),
    ("SELECT set_config('search_path', 'app', FALSE)", "set"),
    ("SELECT set_config('statement_timeout', '5s', 'off')", "set"),
    ("SELECT set_config('work_mem', '64MB', false::boolean)", "set"),
    ("SELECT set_config(%(name)s, %(value)s, false)", "set"),
    # tricky shapes: case, whitespace, comments, parentheses, several statements
    ("   \n\tSET statement_timeout = 1", "set"),
    ("-- keep it short\nSET statement_timeout = 1", "set"),
    ("/* hint */ LISTEN jobs", "listen"),
    ("/* outer /* nested */ still comment */ SET ROLE x", "set_role"),
    ("(SELECT pg_advisory_lock(1))", "advisory_lock"),
    ("SeT StAtEmEnT_TiMeOuT = 1", "set"),
    ("SET/**/statement_timeout = 1", "set"),
    ("SELECT 1; SET statement_timeout = 1", "set"),
    ("BEGIN; SET LOCAL lock_timeout = 1; LISTEN jobs; COMMIT", "listen"),
    ("SELECT ';'; SET ROLE x", "set_role"),
    ("SELECT $$;$$; SET ROLE x", "set_role"),
    ("SELECT $tag$ it's $$ fine $tag$; LISTEN x", "listen"),
    ("SELECT E'it\\'s'; LISTEN x", "listen"),
    ("SELECT 'it''s'; LISTEN x", "listen"),
    ('SELECT "a;b" FROM t; LISTEN x', "listen"),
]

# Every one must be left alone.
NEGATIVES = [
    "SELECT * FROM users WHERE id = %(id)s",
    "SELECT 1",
    "INSERT INTO t (a) VALUES (%s)",
    "UPDATE users SET name = %(name)s WHERE id = %(id)s",
    "DELETE FROM t WHERE id = $1",
    "",
    "   ",
    ";",
    "-- only a comment",
    # SET/RESET that is fine
    "SET LOCAL statement_timeout = '5s'",
    "set local search_path to app",
    "SET LOCAL ROLE admin",
    "SET LOCAL SESSION AUTHORIZATION bob",
    "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    "SET TRANSACTION READ ONLY",
    "SET CONSTRAINTS ALL DEFERRED",
    "SET TIME ZONE 'UTC'",
    "SET TIME ZONE LOCAL",
    "SET timezone = 'Europe/Paris'",
    "SET TimeZone TO 'UTC'",
    "SET \"TimeZone\" TO 'UTC'",
    "SET client_encoding = 'UTF8'",
    "SET NAMES 'UTF8'",
    "SET DateStyle = 'ISO, MDY'",
    "SET standard_conforming_strings = on",
    "SET application_name = 'worker-1'",
    "SET SESSION application_name = 'worker-1'",
    "RESET timezone",
    "RESET TIME ZONE",
    "RESET application_name",
    "SELECT set_config('app.tenant', '42', true)",
    "SELECT set_config('application_name', 'x', false)",
    "SELECT set_config('app.tenant', %(v)s, %(is_local)s)",
    # other statements that only look alike
    "UNLISTEN jobs",
    "UNLISTEN *",
    "NOTIFY jobs, 'hello'",
    "PREPARE TRANSACTION 'gid-1'",
    "COMMIT PREPARED 'gid-1'",
    "DECLARE c CURSOR FOR SELECT * FROM t",
    "DECLARE c CURSOR WITHOUT HOLD FOR SELECT * FROM t",
    "DECLARE c CURSOR FOR WITH hold AS (SELECT 1) SELECT * FROM hold",
    "SELECT pg_advisory_xact_lock(42)",
    "SELECT pg_advisory_xact_lock_shared(42)",
    "SELECT pg_try_advisory_xact_lock(42)",
    "SELECT pg_try_advisory_xact_lock_shared(1, 2)",
    "SELECT * FROM pg_locks WHERE locktype = 'advisory'",
    "SELECT pg_advisory_lock_count FROM stats",
    "CREATE TEMP TABLE t (id int) ON COMMIT DROP",
    "create temporary table t on commit drop as select 1",
    "CREATE TABLE temp (id int)",
    "CREATE TABLE temp_users (id int)",
    "CREATE UNLOGGED TABLE t (id int)",
    "INSERT INTO temp (a) VALUES (1)",
    "INSERT INTO temp SELECT * FROM users",
    "SELECT temperature INTO STRICT x FROM readings",
    "SELECT * FROM attempts WHERE info = 'into temp'",
    "ALTER ROLE app SET statement_timeout = '5s'",
    "ALTER DATABASE appdb SET search_path = app",
    "SHOW statement_timeout",
    "DISCARD ALL",
    # keywords inside literals, quoted identifiers, comments, dollar quotes
    "-- SET role admin\nSELECT 1",
    "/* LISTEN jobs */ SELECT 1",
    "SELECT 1 /* ; SET ROLE x */",
    "SELECT 1 -- ; LISTEN x",
    "SELECT 'pg_advisory_lock(1)'",
    "SELECT 'x; SET ROLE admin'",
    "SELECT E'\\'; LISTEN x'",
    "SELECT 'it''s; LISTEN x'",
    'SELECT "listen", "set" FROM t',
    'SELECT "pg_advisory_lock" FROM t',
    'SELECT "a;SET ROLE x" FROM t',
    "SELECT $$; SET ROLE admin; SELECT pg_advisory_lock(1)$$",
    "SELECT $fn$ LISTEN x; $$ inner $$ $fn$",
    "DO $$ BEGIN PERFORM pg_advisory_lock(1); END $$",
    "CREATE FUNCTION f() RETURNS void AS $$ SET search_path = x $$ LANGUAGE sql",
    "SELECT 1;",
    "SELECT 1;;  ",
    "SELECT a$b FROM t WHERE c = $1",
    "(SELECT 1) UNION (SELECT 2)",
]


@pytest.mark.parametrize(("sql", "kind"), POSITIVES)
def test_flagged(sql: str, kind: str) -> None:
    finding = classify(sql)
    assert finding is not None, sql
    assert finding.kind == kind
    assert finding.kind in KINDS
    assert finding.statement
    assert finding.safe_form
    # The message names the statement and the safe form.
    assert finding.statement in finding.message
    assert finding.safe_form in finding.message


@pytest.mark.parametrize("sql", NEGATIVES)
def test_not_flagged(sql: str) -> None:
    assert classify(sql) is None


def test_case_counts() -> None:
    assert len(POSITIVES) + len(NEGATIVES) >= 60
    assert len({s for s, _ in POSITIVES}) == len(POSITIVES)
    assert len(set(NEGATIVES)) == len(NEGATIVES)


def test_tracked_parameters() -> None:
    assert {
        "client_encoding",
        "datestyle",
        "timezone",
        "standard_conforming_strings",
        "application_name",
    } == TRACKED_PARAMETERS


def test_set_message_and_safe_form() -> None:
    finding = classify("SET statement_timeout = '5s'")
    assert finding == SessionStateFinding(
        kind="set",
        statement="SET statement_timeout = '5s'",
        safe_form="SET LOCAL statement_timeout = '5s'",
        message=(
            "SET statement_timeout = '5s' keeps session state that PgBouncer transaction "
            "mode loses or leaks to other clients; use SET LOCAL statement_timeout = '5s' "
            "inside a transaction, or set it per role/database on the server "
            "(ALTER ROLE ... SET)"
        ),
    )


@pytest.mark.parametrize(
    ("sql", "safe_form"),
    [
        ("SET SESSION search_path TO app", "SET LOCAL search_path TO app"),
        ("SET ROLE admin", "SET LOCAL ROLE admin"),
        ("SET SESSION ROLE admin", "SET LOCAL ROLE admin"),
        ("SET SESSION AUTHORIZATION bob", "SET LOCAL SESSION AUTHORIZATION bob"),
        ("RESET work_mem", "SET LOCAL work_mem TO DEFAULT"),
        ("SELECT pg_advisory_lock(42)", "pg_advisory_xact_lock(42)"),
        ("SELECT pg_advisory_lock_shared(1, 2)", "pg_advisory_xact_lock_shared(1, 2)"),
        ("SELECT pg_try_advisory_lock(%(k)s)", "pg_try_advisory_xact_lock(%(k)s)"),
        ("SELECT pg_try_advisory_lock_shared(7)", "pg_try_advisory_xact_lock_shared(7)"),
        ("SELECT pg_advisory_unlock(42)", "pg_advisory_xact_lock(...)"),
        ("CREATE TEMP TABLE t (id int)", "CREATE TEMP TABLE ... ON COMMIT DROP"),
        ("LISTEN jobs", "a direct (non-PgBouncer) connection"),
        (
            "SELECT set_config('app.tenant', '42', false)",
            "set_config('app.tenant', '42', true)",
        ),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "SET TRANSACTION READ ONLY",
        ),
    ],
)
def test_safe_forms(sql: str, safe_form: str) -> None:
    finding = classify(sql)
    assert finding is not None
    assert finding.safe_form == safe_form


def test_statement_is_abbreviated_and_clean() -> None:
    long_value = "x" * 500
    finding = classify(f"SET app.blob = '{long_value}'")
    assert finding is not None
    assert len(finding.statement) <= 80
    assert finding.statement.endswith("...")
    assert long_value not in finding.message
    # Comments and runs of whitespace do not show.
    finding = classify("SET   /* why */\n  statement_timeout\t=  5")
    assert finding is not None
    assert finding.statement == "SET statement_timeout = 5"


def test_only_the_offending_statement_is_reported() -> None:
    finding = classify("SELECT 1; SET ROLE admin; SELECT 2")
    assert finding is not None
    assert finding.statement == "SET ROLE admin"


def test_unterminated_constructs_do_not_hide_or_raise() -> None:
    assert classify("SELECT 'unterminated; SET ROLE x") is None
    assert classify("SELECT $$ unterminated; SET ROLE x") is None
    assert classify("SELECT 1 /* unterminated; SET ROLE x") is None
    assert classify('SELECT "unterminated; SET ROLE x') is None


# --------------------------------------------------------------------------- check()


def test_check_error_raises_session_state_error() -> None:
    with pytest.raises(SessionStateError) as info:
        check("SET search_path = app", "error")
    err = info.value
    assert err.statement == "SET search_path = app"
    assert err.safe_form == "SET LOCAL search_path = app"
    assert "SET LOCAL search_path = app" in str(err)


def test_check_error_passes_safe_statements() -> None:
    check("SET LOCAL search_path = app", "error")
    check("SELECT 1", "error")


def test_check_warn_warns_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.zonal.pgbouncer")
    with caplog.at_level(logging.WARNING, logger="test.zonal.pgbouncer"):
        with pytest.warns(SessionStateWarning, match="LISTEN jobs") as record:
            check("LISTEN jobs", "warn", logger=logger)
    warning = record[0].message
    assert isinstance(warning, SessionStateWarning)
    assert warning.finding is not None
    assert warning.finding.kind == "listen"
    assert record[0].filename == __file__  # points at the caller
    assert any("LISTEN jobs" in r.getMessage() for r in caplog.records)


def test_check_allow_does_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check("LISTEN jobs", "allow")


def test_check_rejects_unknown_policy() -> None:
    with pytest.raises(ZonalConfigError, match="session_state"):
        check("SELECT 1", "ignore")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- robustness

SQLISH = st.lists(
    st.sampled_from(
        [
            "SET", "LOCAL", "SESSION", "ROLE", "RESET", "ALL", "LISTEN", "PREPARE",
            "TRANSACTION", "DEALLOCATE", "DECLARE", "CURSOR", "WITH", "HOLD", "FOR",
            "CREATE", "TEMP", "TABLE", "ON", "COMMIT", "DROP", "SELECT", "INTO",
            "pg_advisory_lock", "set_config", "(", ")", ",", ";", "'", '"', "$$", "$a$",
            "--", "/*", "*/", "\n", " ", "E'", "\\", ".", "=", "false", "x", "1", "::",
        ]
    ),
    max_size=30,
).map(" ".join)  # fmt: skip


# classify() guards its slow path with a catch-all (a classifier bug must never
# break a query), so these also call the unguarded slow path: that is where a bug
# would hide.
LEXICAL = st.text(alphabet=st.sampled_from("$'\"-/*;()Ee\\ \n\tsetlin_:.,0"), max_size=80)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_classify_never_raises_on_text(sql: str) -> None:
    result = classify(sql)
    assert result is None or result.kind in KINDS
    assert _classify_slow(sql) == result  # the pre-filter drops no finding


@settings(max_examples=600, deadline=None)
@given(LEXICAL)
def test_slow_path_never_raises_on_quoting_characters(sql: str) -> None:
    result = _classify_slow(sql)
    assert result is None or result.kind in KINDS
    assert classify(sql) == result


@settings(max_examples=400, deadline=None)
@given(SQLISH)
def test_classify_never_raises_on_sql_fragments(sql: str) -> None:
    result = _classify_slow(sql)
    assert result is None or (result.kind in KINDS and result.statement in result.message)
    # The pre-filter never drops what the full rule finds.
    assert classify(sql) == result


# --------------------------------------------------------------------------- cost


def _no_slow_path(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every statement that reaches the tokenizer (the slow path)."""
    from zonal_core import pgbouncer

    slow: list[str] = []
    real = pgbouncer._classify_slow

    def spy(sql: str) -> SessionStateFinding | None:
        slow.append(sql)
        return real(sql)

    monkeypatch.setattr(pgbouncer, "_classify_slow", spy)
    pgbouncer.KNOWN_SAFE.clear()
    return slow


def test_ordinary_statements_never_reach_the_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the hot path costs is the bench's to measure; what it must not do is
    # tokenize an ordinary statement (the cost then grows with the statement).
    slow = _no_slow_path(monkeypatch)
    for sql in ("SELECT users.id, users.name FROM users WHERE users.id = %(id)s",
                "UPDATE users SET name = %(name)s WHERE id = %(id)s",
                "INSERT INTO t (a) VALUES (1) RETURNING id", "BEGIN", "COMMIT"):
        assert classify(sql) is None
        assert classify(sql) is None  # (again: from the set of safe statements)
    assert slow == []
    assert classify("SET LOCAL statement_timeout = '5s'") is None
    assert slow == ["SET LOCAL statement_timeout = '5s'"]  # a candidate goes on


def test_bulk_insert_with_temp_like_column_stays_on_fast_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # "attempts" + "INTO" must not tokenize a 30 kB insertmanyvalues statement.
    slow = _no_slow_path(monkeypatch)
    rows = ", ".join(f"(%(id_m{i})s, %(attempts_m{i})s)" for i in range(1000))
    sql = f"INSERT INTO jobs (id, attempts) VALUES {rows}"
    assert classify(sql) is None
    assert slow == []
    # ...while a real SELECT INTO TEMP does go on, and is found
    finding = classify("SELECT * INTO TEMP t FROM jobs")
    assert finding is not None and slow == ["SELECT * INTO TEMP t FROM jobs"]


def test_statements_found_safe_are_remembered_in_a_bounded_set_and_unsafe_ones_never() -> None:
    # An ORM sends the same statement strings again and again: the pre-filter's
    # verdict on a safe one is kept (a set lookup next time), within a bound, and a
    # statement with session state is classified every time.
    from zonal_core import pgbouncer

    pgbouncer.KNOWN_SAFE.clear()
    unsafe = "SET search_path TO tenant_1"
    for i in range(pgbouncer.KNOWN_SAFE_MAX + 10):
        assert pgbouncer.classify(f"SELECT {i} FROM t") is None
    assert 10 <= len(pgbouncer.KNOWN_SAFE) <= pgbouncer.KNOWN_SAFE_MAX
    for _ in range(3):
        finding = pgbouncer.classify(unsafe)
        assert finding is not None and finding.kind == "set"
    assert unsafe not in pgbouncer.KNOWN_SAFE
    assert pgbouncer.classify("SELECT 1 FROM t") is None
    assert "SELECT 1 FROM t" in pgbouncer.KNOWN_SAFE
    assert pgbouncer.classify("SELECT 1 FROM t") is None  # (from the set)
