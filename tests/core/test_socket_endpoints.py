"""Unix-socket endpoints past the topology: what the drivers get, the TLS-downgrade
check, and the SQLAlchemy URL's ``?host=/dir`` as the zone "default" (no database)."""

from __future__ import annotations

import pytest

from zonal_core.config import build_config
from zonal_core.errors import ZonalConfigError
from zonal_core.psycopg_driver import PsycopgDriver, server_params
from zonal_core.topology import Endpoint
from zonal_lab.pytest_plugin import require_module

CLOUD_SQL = "/cloudsql/proj:europe-west1:main"
KEEPALIVES = {"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count"}


def test_psycopg_gets_the_directory_as_host_and_no_keepalives() -> None:
    config = build_config(zones={"a": CLOUD_SQL, "b": "10.0.2.5:5432"}, serverless=True,
                          environ={})
    sock, tcp = config.topology.endpoints
    params = server_params(config, sock)
    assert (params["host"], params["port"]) == (CLOUD_SQL, 5432)
    assert not KEEPALIVES & set(params)  # libpq ignores them on a socket: none sent
    assert "idle_session_timeout" in params["options"]  # the server-side reapers are
    assert set(server_params(config, tcp)) >= KEEPALIVES  # TCP unchanged
    # a user's own keepalive settings are theirs, socket or not
    driver = PsycopgDriver({"dbname": "app", "keepalives_idle": 5}, config)
    assert driver.params_for(sock)["keepalives_idle"] == 5
    assert driver.params_for(sock)["host"] == CLOUD_SQL


def test_a_socket_zone_is_no_tls_downgrade() -> None:
    full = {"sslmode": "verify-full"}
    zones = {"a": {"endpoints": ["db-a:5432"], "params": full}, "b": CLOUD_SQL}
    config = build_config(zones=zones, local_zone="a", environ={})
    assert config.topology.zone("b").endpoints[0].is_socket
    # a local socket zone sets no floor for TCP zones either
    build_config(zones={"a": {"endpoints": ["/tmp"], "params": full}, "b": "db-b:5432"},
                 local_zone="a", environ={})
    # TCP zones are still held to it
    with pytest.raises(ZonalConfigError, match="would downgrade TLS"):
        build_config(zones={**zones, "c": "db-c:5432"}, local_zone="a", environ={})


def test_the_url_host_of_a_socket_is_the_zone_default() -> None:
    require_module("sqlalchemy")
    from sqlalchemy import create_engine

    from zonal_sqlalchemy import ZonalPool
    from zonal_sqlalchemy.connect import url_endpoint

    assert url_endpoint({"host": "/var/run/postgresql"}) == "/var/run/postgresql:5432"
    assert url_endpoint({"host": "/tmp", "port": "5433"}) == "/tmp:5433"
    assert url_endpoint({"host": CLOUD_SQL, "port": 6432}) == f"{CLOUD_SQL}:6432"
    # the directory as libpq takes it: no port split off a URL's ?host=
    assert url_endpoint({"host": "/odd/dir:5433"}) == "/odd/dir:5433:5432"
    assert url_endpoint({"host": "db", "port": 1}) == "db:1"  # TCP unchanged
    for url, address in [
        (f"postgresql+psycopg://app:s3cr%40t@/appdb?host={CLOUD_SQL}", f"{CLOUD_SQL}:5432"),
        ("postgresql+psycopg://app@/appdb?host=/tmp&port=5433", "/tmp:5433"),
        ("postgresql+psycopg://app@:5433/appdb?host=/tmp", "/tmp:5433"),
        ("postgresql+psycopg://app@/appdb?host=/run/pg@main", "/run/pg@main:5432"),
    ]:
        engine = create_engine(url, poolclass=ZonalPool)
        try:
            (ep,) = engine.pool.config.topology.endpoints  # type: ignore[attr-defined]
            assert isinstance(ep, Endpoint)
            assert (ep.zone, ep.is_socket, ep.address) == ("default", True, address)
            assert "s3cr" not in repr(engine.pool.config)  # type: ignore[attr-defined]
        finally:
            engine.dispose()


def test_a_socket_url_with_zones_or_two_sockets_is_refused() -> None:
    require_module("sqlalchemy")
    from sqlalchemy import create_engine

    from zonal_sqlalchemy import ZonalPool

    with pytest.raises(ZonalConfigError, match=r"names a host and zones") as info:
        create_engine("postgresql+psycopg://app@/appdb?host=/tmp", poolclass=ZonalPool,
                      zones={"a": "db:5432"})
    assert "?host=" in str(info.value.fix)
    with pytest.raises(ZonalConfigError, match="multi-host"):
        create_engine("postgresql+psycopg://app@/appdb?host=/a&host=/b", poolclass=ZonalPool)
    with pytest.raises(ZonalConfigError, match="at most 107"):
        create_engine(f"postgresql+psycopg://app@/appdb?host=/{'d' * 100}", poolclass=ZonalPool)
