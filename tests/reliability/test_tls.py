"""TLS: per-zone ``sslmode`` and certificates are honoured, a failover never
downgrades (issue 9, item 5).

The lab's zones serve TLS here (``Lab(tls=True)``: a CA and a server certificate
made for this lab); every connection goes through the zones' fault proxies, which
forward the TLS stream untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, exc, text

from zonal_core import NoHealthyZone, ZonalConfigError
from zonal_core.config import build_config
from zonal_lab import Lab
from zonal_lab.pytest_plugin import require_lab
from zonal_lab.tls import make_ca
from zonal_sqlalchemy import ZonalPool

SSL_OF_ME = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require_lab(tls=True)
    with Lab(zones=["a", "b"], tls=True) as lab:
        yield lab


@pytest.fixture
def engines(lab: Lab) -> Iterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for e in made:
        e.dispose()
    lab.reset_faults()


def engine(lab: Lab, made: list[Engine], zones: dict[str, Any], **options: Any) -> Engine:
    options.setdefault("local_zone", "a")
    options.setdefault("connect_timeout", 2)
    options.setdefault("pool_timeout", 5)
    e = create_engine(f"postgresql+psycopg://{lab.user}:{lab.password}@/{lab.database}",
                      poolclass=ZonalPool, zones=zones, **options)
    made.append(e)
    return e


def zone(lab: Lab, name: str, **params: str) -> dict[str, Any]:
    return {"endpoints": [lab[name].endpoint()], "params": params}


def ssl_and_port(e: Engine) -> tuple[bool, int]:
    with e.connect() as c:
        row = c.execute(text(f"SELECT ({SSL_OF_ME}), inet_server_port()")).one()
    return bool(row[0]), int(row[1])


# -- certificates honoured ------------------------------------------------------------


def test_verify_full_with_the_lab_ca_is_encrypted(lab: Lab, engines: list[Engine]) -> None:
    assert lab.tls is not None
    params = lab.tls.params("verify-full")
    e = engine(lab, engines, {"a": zone(lab, "a", **params), "b": zone(lab, "b", **params)})
    ssl, port = ssl_and_port(e)
    assert ssl is True and port == lab["a"].postgres.port
    with e.connect() as c:
        version = c.execute(text("SELECT version FROM pg_stat_ssl "
                                 "WHERE pid = pg_backend_pid()")).scalar()
    print(f"\nverify-full through the proxy: ssl={ssl}, {version}")


def test_verify_full_checks_the_host_name(lab: Lab, engines: list[Engine]) -> None:
    assert lab.tls is not None
    port = lab["a"].endpoint().rsplit(":", 1)[1]
    e = engine(lab, engines, {"a": {"endpoints": [f"localhost:{port}"],
                                    "params": lab.tls.params()}})
    assert ssl_and_port(e)[0] is True


def test_each_zone_uses_its_own_sslmode(lab: Lab, engines: list[Engine]) -> None:
    # b is weaker on purpose, so the downgrade must be allowed explicitly
    assert lab.tls is not None
    e = engine(lab, engines, {"a": zone(lab, "a", **lab.tls.params()),
                              "b": zone(lab, "b", sslmode="disable")},
               allow_tls_downgrade=True, pool_pre_ping=True)
    assert ssl_and_port(e) == (True, lab["a"].postgres.port)
    lab["a"].proxy.refuse()
    lab["a"].proxy.reset()
    got: tuple[bool, int] | None = None
    for _ in range(3):  # the pooled connection's ping fails, then a goes down
        try:
            got = ssl_and_port(e)
        except exc.DBAPIError:
            continue
        if got[1] == lab["b"].postgres.port:
            break
    assert got == (False, lab["b"].postgres.port)


def test_a_wrong_ca_is_refused_and_fails_over(lab: Lab, engines: list[Engine],
                                              tmp_path: Path) -> None:
    assert lab.tls is not None
    other_ca = make_ca(tmp_path / "other", name="not the lab's CA")
    wrong = {"sslmode": "verify-full", "sslrootcert": str(other_ca)}
    alone = engine(lab, engines, {"a": zone(lab, "a", **wrong)}, pool_timeout=3)
    with pytest.raises((NoHealthyZone, exc.TimeoutError)) as info:
        alone.connect()
    print(f"\nwrong CA: {type(info.value).__name__}: {info.value}")
    assert "certificate verify failed" in str(info.value)

    # the right CA for b: a is ejected, b serves, still verified
    e = engine(lab, engines,
               {"a": zone(lab, "a", **wrong), "b": zone(lab, "b", **lab.tls.params())})
    assert ssl_and_port(e) == (True, lab["b"].postgres.port)
    assert e.pool.stats().zones["a"].connect_errors >= 1  # type: ignore[attr-defined]


def test_require_without_a_ca_is_encrypted_but_unverified(lab: Lab,
                                                           engines: list[Engine]) -> None:
    e = engine(lab, engines, {"a": zone(lab, "a", sslmode="require")})
    assert ssl_and_port(e)[0] is True


def test_the_openssl_program_makes_working_certificates(monkeypatch: pytest.MonkeyPatch) -> None:
    require_lab(tls=True)
    import zonal_lab.tls as tls

    monkeypatch.setattr(tls, "_have_cryptography", lambda: False)
    import psycopg

    with Lab(zones=["x"], tls=True) as lab:
        assert lab.tls is not None
        host, port = lab.zones()["x"].rsplit(":", 1)
        with psycopg.connect(host=host, port=port, user=lab.user, password=lab.password,
                             dbname=lab.database, connect_timeout=5,
                             **lab.tls.params()) as conn:
            assert conn.execute(SSL_OF_ME).fetchone() == (True,)


# -- a failover never downgrades: the configuration rule ----------------------------------

FULL = {"sslmode": "verify-full", "sslrootcert": "/etc/ca.pem"}


def zones_with(a: dict[str, str] | None, b: dict[str, str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, params, port in (("a", a, 1), ("b", b, 2)):
        out[name] = {"endpoints": [f"h{name}:{port}"], **({"params": params} if params else {})}
    return out


@pytest.mark.parametrize("weak", ["disable", "allow", "prefer", "require", "verify-ca", None])
def test_a_weaker_zone_than_the_local_one_is_a_config_error(weak: str | None) -> None:
    b = {"sslmode": weak} if weak else None
    with pytest.raises(ZonalConfigError) as info:
        build_config(zones=zones_with(FULL, b), local_zone="a", environ={})
    err = info.value
    assert err.field == "zones['b']['params']['sslmode']"
    assert "'verify-full'" in err.problem and "zone 'a'" in err.problem
    assert err.fix is not None and "allow_tls_downgrade=True" in err.fix
    assert "sslmode='verify-full'" in err.fix
    # explicitly allowed: accepted
    cfg = build_config(zones=zones_with(FULL, b), local_zone="a", allow_tls_downgrade=True,
                       environ={})
    assert cfg.allow_tls_downgrade is True
    assert "allow_tls_downgrade=True" in repr(cfg)
    assert build_config(cfg.as_dict(), environ={}) == cfg


def test_create_engine_refuses_a_downgrade_and_takes_the_option() -> None:
    url = "postgresql+psycopg://app:pw@/db"
    zones = zones_with(FULL, {"sslmode": "disable"})
    with pytest.raises(ZonalConfigError, match=r"zones\['b'\]\['params'\]\['sslmode'\]"):
        create_engine(url, poolclass=ZonalPool, zones=zones, local_zone="a")
    e = create_engine(url, poolclass=ZonalPool, zones=zones, local_zone="a",
                      allow_tls_downgrade=True)
    assert e.pool.config.allow_tls_downgrade is True  # type: ignore[attr-defined]
    e.dispose()


@pytest.mark.parametrize(
    ("a", "b", "local"),
    [
        (FULL, FULL, "a"),
        (None, None, "a"),
        (None, {"sslmode": "disable"}, "a"),  # the local zone asks for nothing
        ({"sslmode": "require"}, {"sslmode": "verify-ca"}, "a"),  # an upgrade
        ({"sslmode": "disable"}, FULL, "a"),  # failover upgrades; b-local processes differ
        ({"sslmode": "prefer"}, {"sslmode": "prefer"}, "b"),
    ],
)
def test_equal_or_stronger_zones_are_fine(a: Any, b: Any, local: str) -> None:
    config = build_config(zones=zones_with(a, b), local_zone=local, environ={})
    assert config.local_zone == local and set(config.zones) == {"a", "b"}
    assert not config.allow_tls_downgrade


def test_the_local_zone_is_what_counts() -> None:
    zones = zones_with({"sslmode": "disable"}, FULL)
    build_config(zones=zones, local_zone="a", environ={})
    with pytest.raises(ZonalConfigError, match=r"zones\['a'\]"):
        build_config(zones=zones, local_zone="b", environ={})
    with pytest.raises(ZonalConfigError, match=r"zones\['a'\]"):
        build_config(zones=zones, environ={"ZONAL_LOCAL_ZONE": "b"})


def test_endpoints_within_the_local_zone_must_agree() -> None:
    zones = {"a": {"endpoints": [{"host": "h1", "params": FULL},
                                 {"host": "h2", "params": {"sslmode": "require"}}]}}
    with pytest.raises(ZonalConfigError) as info:
        build_config(zones=zones, environ={})
    assert "another endpoint of zone 'a'" in info.value.problem


def test_an_unknown_sslmode_is_a_config_error() -> None:
    with pytest.raises(ZonalConfigError) as info:
        build_config(zones=zones_with({"sslmode": "verify_full"}, None), environ={})
    assert info.value.field == "zones['a']['params']['sslmode']"
    assert info.value.fix == "did you mean 'verify-full'?"


def test_the_rule_holds_for_files_and_the_environment(tmp_path: Path) -> None:
    import json

    f = tmp_path / "topology.json"
    f.write_text(json.dumps({"zones": zones_with(FULL, {"sslmode": "allow"})}))
    with pytest.raises(ZonalConfigError) as info:
        build_config(environ={"ZONAL_TOPOLOGY_FILE": str(f)})
    assert "ZONAL_TOPOLOGY_FILE" in str(info.value)
    env = {"ZONAL_TOPOLOGY": json.dumps({"zones": zones_with(FULL, {"sslmode": "allow"}),
                                         "allow_tls_downgrade": True})}
    assert build_config(environ=env).allow_tls_downgrade is True
    with pytest.raises(ZonalConfigError, match="allow_tls_downgrade"):
        build_config(zones=zones_with(None, None), allow_tls_downgrade="perhaps", environ={})
