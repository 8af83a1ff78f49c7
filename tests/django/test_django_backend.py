"""The backend against real zones: test database, queries, PgBouncer rules, pools."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError, connection, connections, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from zonal_core.errors import NoHealthyZone, PoolTimeout, SessionStateError
from zonal_core.health import HealthPolicy
from zonal_core.pool import CorePool
from zonal_core.psycopg_driver import ZonalConnection
from zonal_django import conf, direct_connection, pools
from zonal_django.backends.postgresql.base import DatabaseWrapper

pytestmark = [pytest.mark.integration, pytest.mark.pgbouncer]


def wrapper(alias: str, **changes: Any) -> DatabaseWrapper:
    """A wrapper of its own (another alias, so its pool is its own)."""
    sd = {**connection.settings_dict, **changes}
    sd["OPTIONS"] = {**connection.settings_dict["OPTIONS"], **changes.get("OPTIONS", {})}
    return DatabaseWrapper(sd, alias)


def served_by(w: DatabaseWrapper) -> CorePool:
    """Connect ``w`` and give the connection back: the pool that served it."""
    w.ensure_connection()
    pool = w.zonal_pool
    w.close()
    return pool


def zonal_opts(**changes: Any) -> dict[str, Any]:
    return {**connection.settings_dict["OPTIONS"]["zonal"], **changes}


@pytest.mark.django_db
def test_queries_run_through_zonal_on_the_test_database(djlab: Any) -> None:
    from djtestapp.models import Item

    Item.objects.create(name="a", n=1)
    assert Item.objects.filter(name="a").count() == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database(), inet_server_port()")
        db, port = cursor.fetchone()
    # The pool follows the test database (pytest-django #1166 with Django's own pool).
    assert db == connection.settings_dict["NAME"] == "test_" + djlab.database
    assert port == djlab["a"].postgres.port
    assert isinstance(connection.connection, ZonalConnection)
    assert connection.connection.info.port == int(djlab["a"].endpoint(pgbouncer=True)
                                                  .rsplit(":", 1)[1])
    stats = connection.zonal_pool.stats()
    assert stats.zones["a"].in_use == 1 and stats.zones["a"].checkouts >= 1
    assert connection.settings_dict["DISABLE_SERVER_SIDE_CURSORS"] is True


@pytest.mark.django_db(transaction=True)
def test_committed_work_through_pgbouncer_has_no_prepared_statement_errors() -> None:
    from djtestapp.models import Item

    errors = 0
    for i in range(120):  # the same statements, committed: psycopg would prepare them
        try:
            with transaction.atomic():
                Item.objects.create(name="p", n=i)
                Item.objects.filter(name="p", n__gte=0).count()
        except Exception:
            errors += 1
        connection.close()  # back to the pool: the next one may get another server
    assert errors == 0
    assert Item.objects.filter(name="p").count() == 120
    assert connection.connection is None or connection.connection.prepare_threshold is None


def _committed_work_from_threads(options: dict[str, Any], alias: str, threads: int = 4,
                                 n: int = 100) -> tuple[int, list[str]]:
    """``threads`` Django connections (one wrapper each, one pool) commit ``n`` small
    transactions each through PgBouncer; returns the errors and a sample."""
    errors: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        w = wrapper(alias, OPTIONS=options)
        for i in range(n):
            try:
                w.ensure_connection()
                w.set_autocommit(False)
                with w.cursor() as c:
                    c.execute("SELECT %s::int + 1", [i])
                    c.fetchone()
                w.commit()
            except Exception as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
            finally:
                w.close()

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not any(t.is_alive() for t in ts)
    return len(errors), errors[:3]


def _crossed_sessions(options: dict[str, Any], alias: str) -> list[str]:
    """Two Django connections of one pool, in one thread, in the order that makes
    PgBouncer (which lends the server session released last) give the first one the
    second's session: A's transaction on one server, B's on another; A commits, B
    commits (its session is lent next) and closes, A closes (zonal lends it next); A's
    next transaction meets B's session. The errors met on the way."""
    a, b = wrapper(alias, OPTIONS=options), wrapper(alias, OPTIONS=options)
    try:
        for w, sql, params in ((a, "SELECT %s::int + 7", [1]), (b, "SELECT 'crossed'", None)):
            w.ensure_connection()
            w.set_autocommit(False)
            with w.cursor() as c:
                c.execute(sql, params)
                c.fetchone()
        a.commit()
        b.commit()
        b.close()
        a.close()
        a.ensure_connection()
        a.set_autocommit(False)
        with a.cursor() as c:
            c.execute("SELECT %s::int + 7", [2])
            assert c.fetchone() == (9,)
        a.commit()
    except Exception as exc:
        return [f"{type(exc).__name__}: {exc}"[:200]]
    finally:
        a.close()
        b.close()
    return []


@pytest.mark.usefixtures("db_access")
def test_threads_committing_through_pgbouncer_need_zonals_setting() -> None:
    """Committed work through PgBouncer in transaction mode: 0 errors with zonal's
    pgbouncer="transaction"; with psycopg preparing statements (the negative control:
    zonal told nothing of PgBouncer, prepare_threshold=0) the prepared statements of one
    client meet another's server session and fail. 4 threads x 100 commits meet that
    as their timing allows; two connections in the order that crosses their sessions
    meet it every time."""
    # server-side binding: psycopg's own parameters, so psycopg prepares statements
    # (Django's default client-side binding never prepares anything)
    safe = {"zonal": zonal_opts(), "server_side_binding": True}
    # (serverless off too: its startup options are for a server, PgBouncer refuses them)
    prepared = {"zonal": zonal_opts(pgbouncer=False, serverless=False),
                "prepare_threshold": 0, "server_side_binding": True}
    ok, _ = _committed_work_from_threads(safe, "zt_pgb_safe")
    ok_crossed = _crossed_sessions(safe, "zt_pgb_safe_crossed")
    bad, sample = _committed_work_from_threads(prepared, "zt_pgb_prepared")
    bad_crossed = _crossed_sessions(prepared, "zt_pgb_prepared_crossed")
    print(f"through PgBouncer, 4 threads x 100 commits: {ok} errors with zonal's setting, "
          f"{bad} with prepares on ({sample}); crossed sessions: {ok_crossed} with zonal's "
          f"setting, {bad_crossed} with prepares on")
    assert ok == 0 and ok_crossed == []
    assert any("prepared statement" in e or "bind" in e for e in bad_crossed), bad_crossed


@pytest.mark.django_db
def test_set_is_refused_naming_set_local_and_tracked_settings_pass() -> None:
    with connection.cursor() as cursor:
        with pytest.raises(SessionStateError, match="SET LOCAL statement_timeout"):
            cursor.execute("SET statement_timeout = '5s'")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = '5s'")
        cursor.execute("SET TIME ZONE 'UTC'")  # tracked by PgBouncer
        cursor.execute("SELECT set_config('TimeZone', 'Europe/Paris', false)")
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "5s"
    with pytest.raises(SessionStateError, match="pg_advisory_xact_lock"):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(1)")


@pytest.mark.django_db
def test_iterator_uses_no_server_side_cursor() -> None:
    from djtestapp.models import Item

    Item.objects.bulk_create([Item(name="i", n=i) for i in range(5)])
    with CaptureQueriesContext(connection) as ctx:
        assert len(list(Item.objects.filter(name="i").iterator(chunk_size=2))) == 5
    assert not any("DECLARE" in q["sql"].upper() for q in ctx.captured_queries)


@pytest.mark.usefixtures("db_access")
def test_misconfigurations_are_clear_errors() -> None:
    cases = [
        ({"OPTIONS": {"pool": True}}, "OPTIONS['pool']"),
        ({"CONN_MAX_AGE": 60}, "CONN_MAX_AGE"),
        ({"HOST": "db.example"}, "HOST/PORT"),
        ({"OPTIONS": {"assume_role": "app"}}, "assume_role"),
        ({"OPTIONS": {"prepare_threshold": 5}}, "prepare_threshold"),
        ({"OPTIONS": {"zonal": zonal_opts(local_zone="c")}}, "local_zone"),
        ({"OPTIONS": {"zonal": zonal_opts(pool_sise=3)}}, "pool_size"),
    ]
    for i, (changes, needle) in enumerate(cases):
        w = wrapper(f"zt_bad{i}", **changes)
        with pytest.raises(ImproperlyConfigured, match=needle.replace("[", r"\[")):
            w.ensure_connection()
        w.close()
    # Django's own pool is never there; asking for it with OPTIONS["pool"] set says why
    assert wrapper("zt_nopool").pool is None
    with pytest.raises(ImproperlyConfigured, match=r"OPTIONS'\]\['pool'\] turns on Django's own"):
        _ = wrapper("zt_bad0", OPTIONS={"pool": True}).pool


@pytest.mark.usefixtures("db_access")
def test_pool_timeout_is_an_operational_error_with_zonal_message(djlab: Any) -> None:
    opts = {"zonal": zonal_opts(pool_size=1, timeout=0.3)}
    w1, w2 = wrapper("zt_timeout", OPTIONS=opts), wrapper("zt_timeout", OPTIONS=opts)
    try:
        w1.ensure_connection()
        with pytest.raises(OperationalError) as info:
            w2.ensure_connection()
        assert isinstance(info.value, PoolTimeout)
        assert "a: open 1/1, in use 1" in str(info.value)
        assert djlab.password not in str(info.value)
    finally:
        w1.close()
        w2.close()
    assert pools.pools_of("zt_timeout")[0].stats().zones["a"].in_use == 0


@pytest.mark.usefixtures("db_access")
def test_a_statement_past_query_timeout_counts_against_its_endpoint(djlab: Any) -> None:
    """The connection is armed once, when the pool opens it: its timeout is a health
    failure of its endpoint (here enough to eject zone a, since b can serve), and the
    next connect goes to zone b."""
    query_timeout = 0.5
    w = wrapper("zt_qtimeout", NAME=djlab.database,  # (the test database is zone a's only)
                OPTIONS={"zonal": zonal_opts(query_timeout=query_timeout)})
    try:
        pool = served_by(w)
        pool.set_health_policy(HealthPolicy(consecutive_failures=1))
        w.ensure_connection()
        with pytest.raises(OperationalError, match="got no answer from the server"), \
                w.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(%s)", [query_timeout * 4])
        w.close()
        st = pool.stats().zones
        assert (st["a"].state, st["a"].ejections, st["b"].ejections) == ("ejected", 1, 0)
        with w.cursor() as cursor:
            cursor.execute("SELECT inet_server_port()")
            assert cursor.fetchone()[0] == djlab["b"].postgres.port
    finally:
        w.close()


@pytest.mark.usefixtures("db_access")
def test_pool_is_rebuilt_after_a_name_change(djlab: Any) -> None:
    w = wrapper("zt_name", NAME=djlab.database)
    try:
        first = served_by(w)
        w.settings_dict["NAME"] = "postgres"
        with w.cursor() as cursor:
            cursor.execute("SELECT current_database()")
            assert cursor.fetchone()[0] == "postgres"
        assert w.zonal_pool is not first and first.closed
    finally:
        w.close()


@pytest.mark.usefixtures("db_access")
def test_an_option_changed_in_place_between_connects_builds_a_new_pool(djlab: Any) -> None:
    w = wrapper("zt_inplace", NAME=djlab.database)
    w.settings_dict["OPTIONS"]["zonal"] = zonal_opts()  # its own, changed in place below
    try:
        first = served_by(w)
        w.ensure_connection()
        assert w.zonal_pool is first  # nothing changed: the same pool
        w.close()
        w.settings_dict["OPTIONS"]["zonal"]["pool_size"] = 3
        w.ensure_connection()
        assert w.zonal_pool is not first and first.closed
        assert w.zonal_pool.config.pool_size == 3
    finally:
        w.close()


@pytest.mark.usefixtures("db_access")
@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_a_new_threads_wrapper_reuses_the_plan_another_made(
        djlab: Any, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    # Django keeps a wrapper per thread: a server that starts threads (runserver, a
    # growing thread pool) must not validate and build the configuration again on
    # each new thread's first connect. The same settings give the same plan. (In
    # session mode the wrapper's constructor also asks for the configuration.)
    first = wrapper(f"zt_shared_plan_{mode}", NAME=djlab.database,
                    OPTIONS={"zonal": zonal_opts(pgbouncer=mode)})
    if mode == "session":  # (as an alias of this mode has it: server-side cursors stay)
        del first.settings_dict["DISABLE_SERVER_SIDE_CURSORS"]
    try:
        first.ensure_connection()
        plan = first.zonal_plan(first.get_connection_params())
        built: list[str] = []
        real = conf.problems_for

        def counted(alias: str, sd: Any, *args: Any) -> Any:
            built.append(alias)
            return real(alias, sd, *args)

        monkeypatch.setattr(conf, "problems_for", counted)
        seen: dict[str, Any] = {}

        def new_thread() -> None:  # what Django does for a thread's first query
            second = DatabaseWrapper(first.settings_dict, first.alias)
            try:
                second.ensure_connection()
                seen["plan"] = second.zonal_plan(second.get_connection_params())
                seen["pool"] = second.zonal_pool
            finally:
                second.close()

        other = threading.Thread(target=new_thread)
        other.start()
        other.join()
        assert seen["plan"] is plan and seen["pool"] is first.zonal_pool
        assert built == []  # neither its construction nor its connect built one
        # The settings changed in place: the next new wrapper builds its own plan.
        first.close()
        first.settings_dict["OPTIONS"]["zonal"] = zonal_opts(pgbouncer=mode, pool_size=3)
        third = DatabaseWrapper(first.settings_dict, first.alias)
        third.ensure_connection()
        assert built and third.zonal_plan(third.get_connection_params()) is not plan
        assert third.zonal_pool.config.pool_size == 3
        third.close()
    finally:
        first.close()


@pytest.mark.usefixtures("db_access")
def test_use_tz_changed_by_override_settings_builds_a_new_pool(djlab: Any) -> None:
    # USE_TZ decides how psycopg loads timestamps (Django's adapters context): a pool
    # built for one value must not serve the other. Read on every connect, through
    # override_settings as Django's test runner changes it.
    w = wrapper("zt_use_tz", NAME=djlab.database)

    def now_is_aware() -> bool:
        # (what Django's setting_changed receiver does for the aliases it knows)
        w.__dict__.pop("timezone", None)
        w.__dict__.pop("timezone_name", None)
        with w.cursor() as cursor:
            cursor.execute("SELECT now()")
            return cursor.fetchone()[0].tzinfo is not None

    try:
        first = served_by(w)
        with override_settings(USE_TZ=False):
            assert not now_is_aware()  # naive, as USE_TZ=False says
            second = w.zonal_pool
            w.close()
        assert second is not first and first.closed
        assert now_is_aware()  # USE_TZ back: aware again, from a pool built again
        assert w.zonal_pool is not second and second.closed
    finally:
        w.close()


@pytest.mark.usefixtures("db_access")
def test_a_pooled_connection_left_in_another_time_zone_gets_the_aliases_back(
        djlab: Any) -> None:
    # Every checkout compares the connection's time zone with the alias's (unlike
    # Django's own pool, which sets it once per connection).
    w = wrapper("zt_tz", NAME=djlab.database)
    try:
        w.ensure_connection()
        raw = w.connection
        tz = w.timezone_name  # (UTC: USE_TZ, and no TIME_ZONE of the alias)
        assert tz != "Asia/Tokyo" and raw.info.parameter_status("TimeZone") == tz
        raw.execute("SELECT set_config('TimeZone', 'Asia/Tokyo', false)")
        assert raw.info.parameter_status("TimeZone") == "Asia/Tokyo"
        w.close()
        w.ensure_connection()
        assert w.connection is raw  # the same pooled connection...
        assert raw.info.parameter_status("TimeZone") == tz  # ...set back
        with w.cursor() as cursor:
            cursor.execute("SHOW TimeZone")
            assert cursor.fetchone()[0] == tz
    finally:
        w.close()


@pytest.mark.usefixtures("db_access")
def test_forked_child_builds_its_own_pool_and_leaves_the_parents_alone(djlab: Any) -> None:
    w = wrapper("zt_fork", NAME=djlab.database)
    w.ensure_connection()
    parent_pool = w.zonal_pool
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            w.close()  # a parent's connection: must be neither reset nor closed here
            with w.cursor() as cursor:
                cursor.execute("SELECT 1")
            code = 0 if w.zonal_pool is not parent_pool else 2
            w.close()
        finally:
            os.write(write, bytes([code]))
            os._exit(0)
    os.close(write)
    status = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert status == b"\x00"
    with w.cursor() as cursor:  # the parent's connection still works
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    w.close()


@pytest.mark.usefixtures("db_access")
def test_assume_role_works_on_direct_connections_without_deadlock(djlab: Any) -> None:
    zones = {n: djlab[n].endpoint(pgbouncer=False) for n in djlab.names}
    w = wrapper("zt_role", NAME=djlab.database, OPTIONS={
        "assume_role": djlab.user, "zonal": {"zones": zones, "local_zone": "a"}})
    result: list[Any] = []

    def run() -> None:
        with w.cursor() as cursor:
            cursor.execute("SELECT current_user")
            result.append(cursor.fetchone()[0])
        w.close()

    t = threading.Thread(target=run)
    w.inc_thread_sharing()
    t.start()
    t.join(10)
    assert not t.is_alive() and result == [djlab.user]


@pytest.mark.usefixtures("db_access")
def test_direct_connection_bypasses_pgbouncer(djlab: Any) -> None:
    w = connections["default"]
    direct_port = int(djlab["a"].endpoint(pgbouncer=False).rsplit(":", 1)[1])
    with direct_connection() as conn:
        with conn.cursor() as cursor:
            cursor.execute("SET statement_timeout = '7s'")  # a real session: allowed
            cursor.execute("SHOW statement_timeout")
            assert cursor.fetchone()[0] == "7s"
        assert conn.connection.info.port == direct_port
    assert w.zonal_direct is False


@pytest.mark.django_db(transaction=True)
def test_migrate_runs_on_the_direct_endpoint(djlab: Any) -> None:
    from django.core.management import call_command
    from django.db.backends.signals import connection_created

    ports: list[int] = []

    def seen(sender: Any, connection: Any, **kw: Any) -> None:
        ports.append(connection.connection.info.port)

    connection_created.connect(seen)
    try:
        connection.close()
        call_command("migrate", verbosity=0, database="default")
    finally:
        connection_created.disconnect(seen)
    direct_port = int(djlab["a"].endpoint(pgbouncer=False).rsplit(":", 1)[1])
    assert ports and set(ports) == {direct_port}


def test_system_checks_report_ids() -> None:
    from django.test import override_settings

    from zonal_django.checks import check_databases, check_middleware

    good = connection.settings_dict
    bad = {
        "E002": {**good, "OPTIONS": {**good["OPTIONS"], "pool": True}},
        "E003": {**good, "CONN_MAX_AGE": None},
        "E004": {**good, "HOST": "db"},
        "E007": {**good, "OPTIONS": {"zonal": zonal_opts(local_zone="zz")}},
        "E008": {**good, "DISABLE_SERVER_SIDE_CURSORS": False},
        "E009": {**good, "OPTIONS": {**good["OPTIONS"], "assume_role": "x"}},
        "E012": {**good, "OPTIONS": {**good["OPTIONS"], "zonnal": {"pool_size": 3}}},
        "E013": {**good, "OPTIONS": {**good["OPTIONS"], "pool_size": 3}},
        "E014": {**good, "OPTIONS": {**good["OPTIONS"], "sslmdoe": "require"}},
        "W001": {**good, "OPTIONS": {"zonal": {"zones": {"a": "h:6432"},
                                               "pgbouncer": "transaction"}}},
    }
    with override_settings(DATABASES={"default": good, **bad}, MIDDLEWARE=[]):
        ids = {m.id: m for m in check_databases()}
        assert {m.id for m in check_middleware()} == {"zonal.W002"}
    for code in bad:
        assert f"zonal.{code}" in ids, code
    assert all(m.hint for m in ids.values())
    assert "OPTIONS['zonal']" in ids["zonal.E012"].hint
    assert "'sslmode'" in ids["zonal.E014"].hint
    # what Django and libpq read is not flagged
    legit = {**good, "OPTIONS": {**good["OPTIONS"], "sslmode": "prefer",
                                 "isolation_level": 1, "application_name": "x"}}
    assert conf.problems_for("default", legit)[0] == []
    assert conf.problems_for("default", good)[0] == []


def test_psycopg2_only_gets_a_clear_improperly_configured() -> None:
    code = ("import sys; sys.modules['psycopg'] = None\n"
            "from django.conf import settings; settings.configure()\n"
            "try:\n    import zonal_django.backends.postgresql.base\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.startswith("ImproperlyConfigured") and "psycopg 3" in out


@pytest.mark.usefixtures("db_access")
def test_a_misspelled_connection_option_is_refused_before_any_connect() -> None:
    w = wrapper("zt_cfg_typo", OPTIONS={"sslmdoe": "require"})
    with pytest.raises(ImproperlyConfigured, match=r"sslmdoe.*did you mean 'sslmode'"):
        w.ensure_connection()
    assert pools.pools_of("zt_cfg_typo") == []


@pytest.mark.usefixtures("db_access")
@pytest.mark.parametrize(("changes", "error", "needle"), [
    ({"NAME": "zt_no_such_db"}, OperationalError, "no such database|does not exist"),
])
def test_configuration_errors_surface_as_themselves_and_eject_nothing(
        djlab: Any, changes: dict[str, Any], error: type[Exception], needle: str) -> None:
    """A database that does not exist or a misspelled connection option fails the
    same in every zone: the driver's error, well within the timeout, no ejection.

    (PgBouncer holds new clients of a database whose server login just failed until
    it retries the login; such a connect is then raced by one to zone b, which
    answers with the same error: that is the error raised.)"""
    alias = f"zt_cfg_{len(changes.get('OPTIONS', {}))}"
    w = wrapper(alias, **changes)
    timeout = w.settings_dict["OPTIONS"]["zonal"]["timeout"]
    try:
        for _ in range(3):
            t0 = time.monotonic()
            with pytest.raises(error, match=needle) as info:
                w.ensure_connection()
            assert time.monotonic() - t0 < timeout
            assert not isinstance(info.value, NoHealthyZone)
    finally:
        w.close()
    st = pools.pools_of(alias)[0].stats()
    assert all(z.state == "healthy" and z.ejections == 0 for z in st.zones.values())
    assert st.zones["a"].connect_errors >= 1
