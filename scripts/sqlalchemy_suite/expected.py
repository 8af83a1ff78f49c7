# ruff: noqa: E501  (a table of exact test ids)
"""The differences between SQLAlchemy's own tests on its stock pools and on zonal's
that are understood, one by one: "<run> <node id>" -> (a regular expression the zonal
outcome's text must match, why it differs). The server version in class names reads
"_PG". Anything else that differs fails scripts/sqlalchemy_suite.py."""

from __future__ import annotations

PING_BYPASS = (
    "zonal skips pre-ping for a connection used less than ping_bypass (0.5 s) ago; these "
    "tests restart or stop the server and check out within that window, so nothing pings. "
    "Documented in the README's limits; the run psycopg_ping_every_checkout (ping_bypass=0) "
    "passes every one of SQLAlchemy's pre-ping tests")
MULTI_HOST = (
    "a multi-host URL (host=a,b) is refused by design: zonal routes between zones itself; "
    "ZonalConfigError names the fix (zones={'a': ..., 'b': ...})")
NO_HOST = (
    "a URL without a host and no zones: zonal needs at least one endpoint, libpq's default "
    "Unix socket is not one (ZonalConfigError 'no zones were given')")
QUEUE_POOL_ONLY = (
    "the test requires QueuePool (requires.queue_pool) and is skipped when the testing "
    "engine's pool is another class")
RECYCLE_ATTR = (
    "pool_recycle becomes zonal's max_lifetime (jittered, never mid-transaction); the "
    "Pool._recycle attribute SQLAlchemy's own pools check stays -1")
ZONE_NOT_POOL = (
    "a disconnect invalidates the connections of that zone, not the whole pool: zonal never "
    "sets Pool._invalidate_time, which the test reads")
ZONE_INVALIDATED_AT_ONCE = (
    "after a disconnect zonal closes the zone's idle connections at once; QueuePool closes "
    "them at their next checkout (the mock sees close() earlier)")
EXPLICIT_PORT = (
    "zonal passes the endpoint's port explicitly (5432 from the URL's default) to the "
    "driver; the mock DBAPI records the extra keyword")

EXPECTED: dict[str, tuple[str, str]] = {
    'psycopg test/dialect/postgresql/test_dialect.py::BackendDialectTest_postgresql+psycopg_PG::test_multiple_host_real_connect[postgresql+D://U:PS@/DB?host=H&host=H:P&host=H-False]':
        ('a multi-host URL is not a topology', MULTI_HOST),
    'psycopg test/dialect/postgresql/test_dialect.py::BackendDialectTest_postgresql+psycopg_PG::test_multiple_host_real_connect[postgresql+D://U:PS@/DB?host=H,H,H&port=P,P,P-True]':
        ('a multi-host URL is not a topology', MULTI_HOST),
    'psycopg test/dialect/postgresql/test_dialect.py::BackendDialectTest_postgresql+psycopg_PG::test_multiple_host_real_connect[postgresql+D://U:PS@/DB?host=H:P&host=H&host=H-False]':
        ('a multi-host URL is not a topology', MULTI_HOST),
    'psycopg test/dialect/postgresql/test_dialect.py::BackendDialectTest_postgresql+psycopg_PG::test_multiple_host_real_connect[postgresql+D://U:PS@/DB?host=H:P&host=H&host=H:P-False]':
        ('a multi-host URL is not a topology', MULTI_HOST),
    'psycopg test/dialect/postgresql/test_dialect.py::BackendDialectTest_postgresql+psycopg_PG::test_multiple_host_real_connect[postgresql+D://U:PS@/DB?host=H:P&host=H:P&host=H:P-True]':
        ('a multi-host URL is not a topology', MULTI_HOST),
    'psycopg test/dialect/postgresql/test_dialect.py::Psycopg3Test_postgresql+psycopg_PG::test_async_version':
        ('no zones were given', NO_HOST),
    'psycopg test/engine/test_deprecations.py::CreateEngineTest::test_empty_in_keyword':
        ('no zones were given', NO_HOST),
    'psycopg test/engine/test_parseconnect.py::CreateEngineTest::test_bad_args':
        ('no zones were given', NO_HOST),
    'psycopg test/engine/test_parseconnect.py::CreateEngineTest::test_default_driver':
        ('no zones were given', NO_HOST),
    'psycopg test/engine/test_parseconnect.py::CreateEngineTest::test_engine_from_config':
        ('assert -1 == 50', RECYCLE_ATTR),
    'psycopg test/engine/test_parseconnect.py::CreateEngineTest::test_poolargs':
        ('no zones were given', NO_HOST),
    'psycopg test/engine/test_parseconnect.py::CreateEngineTest::test_recycle':
        ('no zones were given', NO_HOST),
    'psycopg test/engine/test_parseconnect.py::CreateEngineTest::test_reset_on_return':
        ('no zones were given', NO_HOST),
    'psycopg test/engine/test_reconnect.py::MockReconnectTest::test_conn_reusable':
        ('port=5432\\)\\] != ', EXPLICIT_PORT),
    'psycopg test/engine/test_reconnect.py::MockReconnectTest::test_invalidate_conn_w_contextmanager_disconnect':
        ('AssertionError: 0 == 0', ZONE_NOT_POOL),
    'psycopg test/engine/test_reconnect.py::MockReconnectTest::test_reconnect':
        ('\\[\\[call\\(\\)\\], \\[call\\(\\)\\]\\] != \\[\\[call\\(\\)\\], \\[\\]\\]', ZONE_INVALIDATED_AT_ONCE),
    'psycopg test/engine/test_reconnect.py::PrePingRealTest_postgresql+psycopg_PG::test_pre_ping_db_is_restarted':
        ('connection is closed', PING_BYPASS),
    'psycopg test/engine/test_reconnect.py::PrePingRealTest_postgresql+psycopg_PG::test_pre_ping_db_stays_shutdown':
        ('Callable did not raise an exception', PING_BYPASS),
    'psycopg test/engine/test_reconnect.py::RealPrePingEventHandlerTest_postgresql+psycopg_PG::test_control':
        ('Callable did not raise an exception', PING_BYPASS),
    'psycopg test/engine/test_reconnect.py::RealPrePingEventHandlerTest_postgresql+psycopg_PG::test_event_handler_can_downgrade_disconnect':
        ('Callable did not raise an exception', PING_BYPASS),
    'psycopg test/engine/test_reconnect.py::RealPrePingEventHandlerTest_postgresql+psycopg_PG::test_event_handler_didnt_upgrade_disconnect':
        ('Callable did not raise an exception', PING_BYPASS),
    'psycopg_async test/dialect/postgresql/test_dialect.py::BackendDialectTest_postgresql+psycopg_async_PG::test_multiple_host_real_connect[postgresql+D://U:PS@/DB?host=H&host=H:P&host=H-False]':
        ('a multi-host URL is not a topology', MULTI_HOST),
    'psycopg_async test/dialect/postgresql/test_dialect.py::BackendDialectTest_postgresql+psycopg_async_PG::test_multiple_host_real_connect[postgresql+D://U:PS@/DB?host=H,H,H&port=P,P,P-True]':
        ('a multi-host URL is not a topology', MULTI_HOST),
    'psycopg_async test/dialect/postgresql/test_dialect.py::BackendDialectTest_postgresql+psycopg_async_PG::test_multiple_host_real_connect[postgresql+D://U:PS@/DB?host=H:P&host=H&host=H-False]':
        ('a multi-host URL is not a topology', MULTI_HOST),
    'psycopg_async test/dialect/postgresql/test_dialect.py::BackendDialectTest_postgresql+psycopg_async_PG::test_multiple_host_real_connect[postgresql+D://U:PS@/DB?host=H:P&host=H&host=H:P-False]':
        ('a multi-host URL is not a topology', MULTI_HOST),
    'psycopg_async test/dialect/postgresql/test_dialect.py::BackendDialectTest_postgresql+psycopg_async_PG::test_multiple_host_real_connect[postgresql+D://U:PS@/DB?host=H:P&host=H:P&host=H:P-True]':
        ('a multi-host URL is not a topology', MULTI_HOST),
    'psycopg_async test/dialect/postgresql/test_dialect.py::Psycopg3Test_postgresql+psycopg_async_PG::test_async_version':
        ('no zones were given', NO_HOST),
    'psycopg_async test/engine/test_reconnect.py::MockReconnectTest::test_conn_reusable':
        ('port=5432\\)\\] != ', EXPLICIT_PORT),
    'psycopg_async test/engine/test_reconnect.py::MockReconnectTest::test_invalidate_conn_w_contextmanager_disconnect':
        ('AssertionError: 0 == 0', ZONE_NOT_POOL),
    'psycopg_async test/engine/test_reconnect.py::MockReconnectTest::test_reconnect':
        ('\\[\\[call\\(\\)\\], \\[call\\(\\)\\]\\] != \\[\\[call\\(\\)\\], \\[\\]\\]', ZONE_INVALIDATED_AT_ONCE),
    'psycopg_async test/engine/test_reconnect.py::PrePingRealTest_postgresql+psycopg_async_PG::test_pre_ping_db_is_restarted':
        ('connection is closed', PING_BYPASS),
    'psycopg_async test/engine/test_reconnect.py::PrePingRealTest_postgresql+psycopg_async_PG::test_pre_ping_db_stays_shutdown':
        ('Callable did not raise an exception', PING_BYPASS),
    'psycopg_async test/engine/test_reconnect.py::RealPrePingEventHandlerTest_postgresql+psycopg_async_PG::test_control':
        ('Callable did not raise an exception', PING_BYPASS),
    'psycopg_async test/engine/test_reconnect.py::RealPrePingEventHandlerTest_postgresql+psycopg_async_PG::test_event_handler_can_downgrade_disconnect':
        ('Callable did not raise an exception', PING_BYPASS),
    'psycopg_async test/engine/test_reconnect.py::RealPrePingEventHandlerTest_postgresql+psycopg_async_PG::test_event_handler_didnt_upgrade_disconnect':
        ('Callable did not raise an exception', PING_BYPASS),
    'psycopg_async test/ext/asyncio/test_engine.py::AsyncEngineTest_postgresql+psycopg_async_PG::test_dispose':
        ('custom function', QUEUE_POOL_ONLY),
    'psycopg_async test/ext/asyncio/test_engine.py::AsyncEngineTest_postgresql+psycopg_async_PG::test_dispose_no_close':
        ('custom function', QUEUE_POOL_ONLY),
    'psycopg_async test/ext/asyncio/test_engine.py::AsyncEngineTest_postgresql+psycopg_async_PG::test_invalidate':
        ('custom function', QUEUE_POOL_ONLY),
    'psycopg_async test/ext/asyncio/test_engine.py::AsyncEngineTest_postgresql+psycopg_async_PG::test_pool_exhausted_no_timeout':
        ('custom function', QUEUE_POOL_ONLY),
    'psycopg_async test/ext/asyncio/test_engine.py::AsyncEngineTest_postgresql+psycopg_async_PG::test_pool_exhausted_some_timeout':
        ('custom function', QUEUE_POOL_ONLY),
    'psycopg_async test/ext/asyncio/test_engine.py::PoolRegenTest::test_gather_after_dispose[do_dispose]':
        ('custom function', QUEUE_POOL_ONLY),
    'psycopg_async test/ext/asyncio/test_engine.py::PoolRegenTest::test_gather_after_dispose[not_do_dispose]':
        ('custom function', QUEUE_POOL_ONLY),
    'asyncpg test/dialect/postgresql/test_dialect.py::BackendDialectTest_postgresql+asyncpg_async_PG::test_multiple_host_real_connect[postgresql+D://U:PS@/DB?host=H,H,H&port=P,P,P-True]':
        ('a multi-host URL is not a topology', MULTI_HOST),
    'asyncpg test/dialect/postgresql/test_dialect.py::BackendDialectTest_postgresql+asyncpg_async_PG::test_multiple_host_real_connect[postgresql+D://U:PS@/DB?host=H:P&host=H:P&host=H:P-True]':
        ('a multi-host URL is not a topology', MULTI_HOST),
    'asyncpg test/dialect/postgresql/test_dialect.py::MiscBackendTest_postgresql+asyncpg_async_PG::test_asyncpg_transactional_ping[False]':
        ('\\[\\] != \\[call\\(\\)\\]', PING_BYPASS),
    'asyncpg test/engine/test_reconnect.py::MockReconnectTest::test_conn_reusable':
        ('port=5432\\)\\] != ', EXPLICIT_PORT),
    'asyncpg test/engine/test_reconnect.py::MockReconnectTest::test_invalidate_conn_w_contextmanager_disconnect':
        ('AssertionError: 0 == 0', ZONE_NOT_POOL),
    'asyncpg test/engine/test_reconnect.py::MockReconnectTest::test_reconnect':
        ('\\[\\[call\\(\\)\\], \\[call\\(\\)\\]\\] != \\[\\[call\\(\\)\\], \\[\\]\\]', ZONE_INVALIDATED_AT_ONCE),
    'asyncpg test/engine/test_reconnect.py::PrePingRealTest_postgresql+asyncpg_async_PG::test_pre_ping_db_is_restarted':
        ('connection is closed', PING_BYPASS),
    'asyncpg test/engine/test_reconnect.py::PrePingRealTest_postgresql+asyncpg_async_PG::test_pre_ping_db_stays_shutdown':
        ('Callable did not raise an exception', PING_BYPASS),
    'asyncpg test/engine/test_reconnect.py::RealPrePingEventHandlerTest_postgresql+asyncpg_async_PG::test_control':
        ('Callable did not raise an exception', PING_BYPASS),
    'asyncpg test/engine/test_reconnect.py::RealPrePingEventHandlerTest_postgresql+asyncpg_async_PG::test_event_handler_can_downgrade_disconnect':
        ('Callable did not raise an exception', PING_BYPASS),
    'asyncpg test/engine/test_reconnect.py::RealPrePingEventHandlerTest_postgresql+asyncpg_async_PG::test_event_handler_didnt_upgrade_disconnect':
        ('Callable did not raise an exception', PING_BYPASS),
    'asyncpg test/ext/asyncio/test_engine.py::AsyncEngineTest_postgresql+asyncpg_async_PG::test_dispose':
        ('custom function', QUEUE_POOL_ONLY),
    'asyncpg test/ext/asyncio/test_engine.py::AsyncEngineTest_postgresql+asyncpg_async_PG::test_dispose_no_close':
        ('custom function', QUEUE_POOL_ONLY),
    'asyncpg test/ext/asyncio/test_engine.py::AsyncEngineTest_postgresql+asyncpg_async_PG::test_invalidate':
        ('custom function', QUEUE_POOL_ONLY),
    'asyncpg test/ext/asyncio/test_engine.py::AsyncEngineTest_postgresql+asyncpg_async_PG::test_pool_exhausted_no_timeout':
        ('custom function', QUEUE_POOL_ONLY),
    'asyncpg test/ext/asyncio/test_engine.py::AsyncEngineTest_postgresql+asyncpg_async_PG::test_pool_exhausted_some_timeout':
        ('custom function', QUEUE_POOL_ONLY),
    'asyncpg test/ext/asyncio/test_engine.py::PoolRegenTest::test_gather_after_dispose[do_dispose]':
        ('custom function', QUEUE_POOL_ONLY),
    'asyncpg test/ext/asyncio/test_engine.py::PoolRegenTest::test_gather_after_dispose[not_do_dispose]':
        ('custom function', QUEUE_POOL_ONLY),
    'psycopg_ping_every_checkout test/engine/test_reconnect.py::MockReconnectTest::test_conn_reusable':
        ('port=5432\\)\\] != ', EXPLICIT_PORT),
    'psycopg_ping_every_checkout test/engine/test_reconnect.py::MockReconnectTest::test_invalidate_conn_w_contextmanager_disconnect':
        ('AssertionError: 0 == 0', ZONE_NOT_POOL),
    'psycopg_ping_every_checkout test/engine/test_reconnect.py::MockReconnectTest::test_reconnect':
        ('\\[\\[call\\(\\)\\], \\[call\\(\\)\\]\\] != \\[\\[call\\(\\)\\], \\[\\]\\]', ZONE_INVALIDATED_AT_ONCE),
}
