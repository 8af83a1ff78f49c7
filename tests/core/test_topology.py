"""zonal_core.topology: every accepted shape, every malformed one, no password leaks."""

from __future__ import annotations

import dataclasses
import json
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zonal_core.errors import ZonalConfigError
from zonal_core.topology import DEFAULT_PORT, Endpoint, Params, Topology, Zone

SECRET = "hunter2-TOPSECRET"


def parse(value: Any) -> Topology:
    return Topology.parse(value)


# -- endpoint strings -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port", "user", "password"),
    [
        ("10.0.1.5:6432", "10.0.1.5", 6432, None, None),
        ("db.internal", "db.internal", DEFAULT_PORT, None, None),
        ("  db-b:7000  ", "db-b", 7000, None, None),
        ("[::1]:5432", "::1", 5432, None, None),
        ("[::1]", "::1", DEFAULT_PORT, None, None),
        ("::1", "::1", DEFAULT_PORT, None, None),
        ("[2001:0db8:0:0::1]:6432", "2001:db8::1", 6432, None, None),
        ("app@h:1", "h", 1, "app", None),
        ("app:pw@h:1", "h", 1, "app", "pw"),
        ("app:p@ss:w@h:1", "h", 1, "app", "p@ss:w"),
        ("app:pw@[::1]:6432", "::1", 6432, "app", "pw"),
        ("postgresql://app:pw@h:6432/appdb?sslmode=require", "h", 6432, "app", "pw"),
        ("postgres://app:p%40ss@h/appdb", "h", DEFAULT_PORT, "app", "p@ss"),
        ("postgresql+psycopg://app@[::1]:5433", "::1", 5433, "app", None),
        ("POSTGRESQL://h:1", "h", 1, None, None),
        ("postgresql://h", "h", DEFAULT_PORT, None, None),
    ],
)
def test_endpoint_strings(
    text: str, host: str, port: int, user: str | None, password: str | None
) -> None:
    (ep,) = parse({"a": text}).endpoints
    assert (ep.zone, ep.host, ep.port, ep.user, ep.password) == ("a", host, port, user, password)


def test_endpoint_mapping_form() -> None:
    topo = parse(
        {
            "a": {
                "endpoints": [
                    {"host": "h1", "port": "6432", "user": "app", "password": SECRET},
                    {"host": "[::1]", "params": {"sslmode": "verify-full"}},
                ],
                "params": {"sslmode": "require", "keepalives": 1},
            }
        }
    )
    e0, e1 = topo.zone("a").endpoints
    assert (e0.host, e0.port, e0.user, e0.password) == ("h1", 6432, "app", SECRET)
    assert dict(e0.params) == {"sslmode": "require", "keepalives": "1"}
    assert (e1.host, e1.port) == ("::1", DEFAULT_PORT)
    assert dict(e1.params) == {"sslmode": "verify-full", "keepalives": "1"}  # endpoint wins


def test_single_endpoint_mapping_as_zone() -> None:
    (ep,) = parse({"a": {"host": "h", "port": 6432}}).endpoints
    assert ep.address == "h:6432"


# -- Unix-socket directories ------------------------------------------------------------

CLOUD_SQL = "/cloudsql/my-project:europe-west1:main-db"


@pytest.mark.parametrize(
    ("text", "host", "port", "user", "password"),
    [
        ("/var/run/postgresql", "/var/run/postgresql", DEFAULT_PORT, None, None),
        ("/var/run/postgresql:5433", "/var/run/postgresql", 5433, None, None),
        ("  /var/run/postgresql/  ", "/var/run/postgresql", DEFAULT_PORT, None, None),
        ("//tmp//pg", "/tmp/pg", DEFAULT_PORT, None, None),
        ("/", "/", DEFAULT_PORT, None, None),
        (CLOUD_SQL, CLOUD_SQL, DEFAULT_PORT, None, None),
        (f"{CLOUD_SQL}:5432", CLOUD_SQL, 5432, None, None),
        (f"{CLOUD_SQL}:6432", CLOUD_SQL, 6432, None, None),
        ("/run/dir with space:7", "/run/dir with space", 7, None, None),
        ("/run/pg@main", "/run/pg@main", DEFAULT_PORT, None, None),
        ("app@/tmp", "/tmp", DEFAULT_PORT, "app", None),
        ("app:pw@/tmp:5433", "/tmp", 5433, "app", "pw"),
        (f"app:pw@{CLOUD_SQL}", CLOUD_SQL, DEFAULT_PORT, "app", "pw"),
        ("app:p@ss/w:x@/tmp", "/tmp", DEFAULT_PORT, "app", "p@ss/w:x"),
        ("app@/run/a@b/sock", "/run/a@b/sock", DEFAULT_PORT, "app", None),
        ("app@/run/pg@main:5433", "/run/pg@main", 5433, "app", None),
        ("app:p@/ss@/run/pg", "/run/pg", DEFAULT_PORT, "app", "p@/ss"),
        ("postgresql://app:pw@/db?host=/var/run/postgresql&port=5433",
         "/var/run/postgresql", 5433, "app", "pw"),
        ("postgresql://app@/db?host=/var/run/postgresql", "/var/run/postgresql",
         DEFAULT_PORT, "app", None),
        ("postgresql://app@:5433/db?host=/tmp", "/tmp", 5433, "app", None),
        (f"postgresql://app@/db?host={CLOUD_SQL}", CLOUD_SQL, DEFAULT_PORT, "app", None),
        ("postgresql://%2Fvar%2Frun%2Fpostgresql:5433/db", "/var/run/postgresql", 5433, None,
         None),
        ("postgresql://app@%2Fcloudsql%2Fp%3Ar%3Ai/db", "/cloudsql/p:r:i", DEFAULT_PORT,
         "app", None),
        # libpq takes ?host= as it is: only the zone string form splits off a port
        ("postgresql:///db?host=/tmp:5433", "/tmp:5433", DEFAULT_PORT, None, None),
    ],
)
def test_socket_directory_strings(
    text: str, host: str, port: int, user: str | None, password: str | None
) -> None:
    (ep,) = parse({"a": text}).endpoints
    assert (ep.host, ep.port, ep.user, ep.password) == (host, port, user, password)
    assert ep.is_socket
    assert ep.socket_path == f"{host.rstrip('/')}/.s.PGSQL.{port}"


def test_socket_directory_mapping_form_takes_the_host_as_it_is() -> None:
    topo = parse({
        "a": {"host": "/var/run/postgresql", "port": 5433, "user": "app", "password": SECRET},
        "b": {"host": CLOUD_SQL},
        "c": {"host": "/odd/dir:5433", "port": "6000"},  # a directory whose name ends so
    })
    a, b, c = topo.endpoints
    assert (a.host, a.port, a.user, a.password) == ("/var/run/postgresql", 5433, "app", SECRET)
    assert (b.host, b.port) == (CLOUD_SQL, DEFAULT_PORT)
    assert (c.host, c.port) == ("/odd/dir:5433", 6000)


def test_socket_endpoints_need_not_exist_at_config_time() -> None:
    (ep,) = parse({"a": "/no/such/directory/anywhere"}).endpoints
    assert ep.socket_path == "/no/such/directory/anywhere/.s.PGSQL.5432"


@pytest.mark.parametrize(
    ("host", "port"),
    [("/var/run/postgresql", 5432), ("/tmp", 6432), (CLOUD_SQL, 5432), (CLOUD_SQL, 1),
     ("/odd/dir:5433", 6000), ("/run/pg@main", 5432), ("/", 5432), ("/d i r", 7)],
)
def test_socket_endpoint_round_trips(host: str, port: int) -> None:
    ep = Endpoint("a", host, port, user="app", password=SECRET)
    assert ep.address == f"{host}:{port}"
    assert ep.key == f"a/{host}:{port}"
    assert str(ep) == ep.address
    # parse(address) gives the same endpoint; so do display() (no password) and as_dict
    (back,) = parse({"a": ep.address}).endpoints
    assert (back.host, back.port) == (host, port)
    assert Topology.parse(ep.address).endpoints[0].ident == ep.ident  # the "default" zone
    (shown,) = parse({"a": Endpoint("a", host, port, user="app").display()}).endpoints
    assert (shown.host, shown.port, shown.user) == (host, port, "app")
    for text in (repr(ep), str(ep), ep.display(), ep.key, str(Topology((Zone("a", (ep,)),))),
                 str(Topology((Zone("a", (ep,)),)).as_dict())):
        assert SECRET not in text
    assert ep.display() == f"app:***@{host}:{port}"
    plain = Topology((Zone("a", (Endpoint("a", host, port),)),))
    assert parse(plain.as_dict()) == plain
    tuned = Endpoint("a", host, port, params={"sslmode": "disable"})
    with_params = Topology((Zone("a", (tuned,)),))
    assert parse(with_params.as_dict()) == with_params


def test_mixed_socket_ipv6_and_tcp_topology_round_trips() -> None:
    topo = parse({
        "version": "v9",
        "zones": {
            "a": {"endpoints": [CLOUD_SQL, "/var/run/postgresql:5433"], "direct": "/tmp"},
            "b": ["[2001:db8::1]:6432", "db-b"],
            "c": {"endpoints": [
                {"host": "/run/c", "port": 6000, "params": {"sslmode": "disable"}}]},
        },
    })
    assert [e.address for e in topo.endpoints] == [
        f"{CLOUD_SQL}:5432", "/var/run/postgresql:5433", "[2001:db8::1]:6432", "db-b:5432",
        "/run/c:6000"]
    assert [e.is_socket for e in topo.endpoints] == [True, True, False, False, True]
    assert topo.zone("a").direct is not None and topo.zone("a").direct.address == "/tmp:5432"
    assert parse(topo.as_dict()) == topo
    assert pickle.loads(pickle.dumps(topo)) == topo
    # TCP and IPv6 keep their forms
    assert Endpoint("b", "::1", 1).address == "[::1]:1"
    assert Endpoint("b", "DB-B", 1).ident == ("db-b", 1)


def test_a_password_holding_at_slash_keeps_its_tcp_host() -> None:
    # the last '@' ends the userinfo: TCP endpoints read as they always did
    (ep,) = parse({"a": "app:p@/x@h:1"}).endpoints
    assert (ep.host, ep.port, ep.password) == ("h", 1, "p@/x")
    (ep,) = parse({"a": "app:pw@/run/pg@main"}).endpoints  # (a directory: mapping form)
    assert (ep.host, ep.password) == ("main", "pw@/run/pg")


def test_socket_directories_compare_with_case_and_after_normalizing() -> None:
    parse({"a": ["/tmp/pg", "/TMP/pg"]})  # two directories
    with pytest.raises(ZonalConfigError, match=r"listed twice") as info:
        parse({"a": ["/tmp/pg", "/tmp//pg/"]})
    assert info.value.field == "zones['a'][1]"
    with pytest.raises(ZonalConfigError, match=r"also an endpoint of zone 'a'"):
        parse({"a": "/tmp:5433", "b": {"host": "/tmp", "port": 5433}})
    parse({"a": "/tmp:5433", "b": "/tmp:5434"})  # another port, another socket


def _socket_dir(total: int, port: int = 5432) -> str:
    """A directory whose socket path (dir + '/.s.PGSQL.<port>') is ``total`` bytes."""
    tail = len(f"/.s.PGSQL.{port}")
    return "/" + "d" * (total - tail - 1)


def test_socket_path_limit_is_sun_path() -> None:
    ok = _socket_dir(107)
    (ep,) = parse({"a": ok}).endpoints
    assert ep.socket_path is not None and len(ep.socket_path) == 107
    parse({"a": {"host": _socket_dir(107, 6), "port": 6}})
    for value in ({"a": _socket_dir(108)}, {"a": f"app:{SECRET}@{_socket_dir(108)}"},
                  {"a": {"host": _socket_dir(107), "port": 65535}},
                  {"a": f"{_socket_dir(107, 5432)}:65535"}):
        with pytest.raises(ZonalConfigError) as info:
            parse(value)
        assert info.value.field == "zones['a']"
        assert "108 bytes" in info.value.problem and "at most 107" in info.value.problem
        assert info.value.fix is not None and "shorter directory" in info.value.fix
        assert SECRET not in str(info.value)
    # multibyte characters count as bytes
    with pytest.raises(ZonalConfigError, match="at most 107"):
        parse({"a": "/" + "é" * 50})
    with pytest.raises(ZonalConfigError, match="at most 107") as direct:
        Endpoint("a", _socket_dir(108), 5432)
    assert direct.value.field == "endpoint.host"


@pytest.mark.parametrize(
    ("value", "field", "words"),
    [
        ({"a": "/tmp\x00x"}, "zones['a']", "control character"),
        ({"a": "/tmp/\nx"}, "zones['a']", "control character"),
        ({"a": {"host": "/tmp\x00"}}, "zones['a']", "control character"),
        ({"a": "/a,/b"}, "zones['a']", "list of hosts"),
        ({"a": "/tmp:"}, "zones['a']", "no port"),
        ({"a": "/tmp:0"}, "zones['a']", "1 to 65535"),
        ({"a": "/tmp:123456"}, "zones['a']", "whole number"),
        ({"a": "var/run/postgresql"}, "zones['a']", "host"),
        ({"a": "app@var/run/postgresql"}, "zones['a']", "host"),
        ({"a": {"host": "var/run/postgresql"}}, "zones['a']", "not a valid host"),
        ({"a": "/" + "\udcff"}, "zones['a']", "not valid text"),
        ({"a": "postgresql://h1/db?host=/tmp"}, "zones['a']", "names a host twice"),
        ({"a": "postgresql:///db?host=/a&host=/b"}, "zones['a']", "several hosts"),
        ({"a": "postgresql:///db?host=/a,/b"}, "zones['a']", "several hosts"),
        ({"a": "postgresql:///db?host="}, "zones['a']", "empty ?host="),
        ({"a": ["/tmp", "ok:1", "/tmp:5432"]}, "zones['a'][2]", "listed twice"),
    ],
)
def test_bad_socket_directories(value: Any, field: str, words: str) -> None:
    with pytest.raises(ZonalConfigError) as info:
        parse(value)
    assert info.value.field == field
    assert words in info.value.problem
    assert info.value.fix


def test_a_relative_socket_path_says_to_write_it_absolute() -> None:
    with pytest.raises(ZonalConfigError) as info:
        parse({"a": {"host": "run/postgresql"}})
    assert "absolute path of a Unix-socket directory" in str(info.value.fix)
    with pytest.raises(ZonalConfigError) as info:
        parse({"a": "run/postgresql"})
    assert "Unix-socket directory starting with '/'" in str(info.value.fix)


# -- zones and topology shapes --------------------------------------------------------


def test_shapes_string_list_and_dict() -> None:
    topo = parse(
        {
            "a": "10.0.1.5:6432",
            "b": ["h1:6432", "h2:6432"],
            "c": {
                "endpoints": ["h3:6432"],
                "priority": 7,
                "direct": "pg-c:5432",
                "params": {"sslmode": "require"},
            },
        }
    )
    assert topo.names == ("a", "b", "c")
    assert [z.priority for z in topo] == [0, 1, 7]  # default: order of appearance
    assert [ep.index for ep in topo.zone("b").endpoints] == [0, 1]
    c = topo.zone("c")
    assert c.direct is not None
    assert c.direct.address == "pg-c:5432"
    assert c.direct.params["sslmode"] == "require"
    assert c.endpoints[0].params["sslmode"] == "require"
    assert [e.key for e in topo.endpoints] == [
        "a/10.0.1.5:6432",
        "b/h1:6432",
        "b/h2:6432",
        "c/h3:6432",
    ]
    assert "c" in topo and "z" not in topo
    assert len(topo) == 3


def test_endpoints_string_inside_dict_form() -> None:
    topo = parse({"a": {"endpoints": "h:1", "priority": "2"}})
    assert topo.zone("a").priority == 2
    assert topo.endpoints[0].address == "h:1"


def test_file_format_with_version() -> None:
    topo = parse({"version": "v7", "zones": {"a": "h:1"}})
    assert topo.version == "v7"
    assert topo.names == ("a",)


def test_version_as_int_from_toml() -> None:
    assert parse({"version": 7, "zones": {"a": "h:1"}}).version == "7"


def test_zone_named_zones_in_plain_mapping() -> None:
    # {"zones": <str>} cannot be the file format, so it is a zone called "zones".
    assert parse({"zones": "h:1"}).names == ("zones",)


def test_json_string_and_single_endpoint_string() -> None:
    topo = parse('{"version": "v2", "zones": {"a": ["h:1", "h:2"]}}')
    assert topo.version == "v2"
    assert len(topo.endpoints) == 2
    single = parse("db:6432")
    assert single.names == ("default",)
    assert single.endpoints[0].address == "db:6432"


def test_parse_returns_topology_unchanged() -> None:
    topo = parse({"a": "h:1"})
    assert Topology.parse(topo) is topo


def test_zone_and_endpoint_objects_accepted() -> None:
    ep = Endpoint("a", "h", 1)
    topo = parse({"a": [ep, "h2:2"], "b": Zone("b", (Endpoint("b", "x", 3),))})
    assert topo.zone("a").endpoints[0] == ep
    assert topo.zone("b").endpoints[0].address == "x:3"


def test_zone_lookup_error_names_the_zones() -> None:
    topo = parse({"a": "h:1", "b": "h:2"})
    with pytest.raises(KeyError, match="zones are a, b"):
        topo.zone("c")


# -- values ---------------------------------------------------------------------------


def test_endpoint_address_key_str_ipv6() -> None:
    ep = Endpoint("a", "::1", 6432)
    assert ep.address == "[::1]:6432"
    assert ep.key == "a/[::1]:6432"
    assert str(ep) == "[::1]:6432"


def test_endpoint_password_never_in_repr_or_str() -> None:
    ep = Endpoint("a", "h", 1, user="app", password=SECRET, params={"sslpassword": SECRET})
    for text in (repr(ep), str(ep), ep.display(), repr(ep.params)):
        assert SECRET not in text
    assert ep.display() == "app:***@h:1"
    topo = Topology((Zone("a", (ep,)),))
    assert SECRET not in repr(topo)
    assert SECRET not in str(topo.as_dict())


def test_values_are_frozen_hashable_and_picklable() -> None:
    topo = parse({"a": {"endpoints": ["u:p@h:1"], "params": {"sslmode": "require"}}})
    ep = topo.endpoints[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ep.port = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        topo.version = "x"  # type: ignore[misc]
    assert hash(topo) == hash(
        parse({"a": {"endpoints": ["u:p@h:1"], "params": {"sslmode": "require"}}})
    )
    assert pickle.loads(pickle.dumps(topo)) == topo
    assert {ep: 1}[ep] == 1


def test_params_mapping() -> None:
    p = Params({"b": "2"}, a="1")
    assert list(p) == ["a", "b"]
    assert p == {"a": "1", "b": "2"}
    assert p == Params(a="1", b="2")
    assert len(p) == 2
    with pytest.raises(KeyError):
        p["c"]
    with pytest.raises(AttributeError):
        p.x = 1  # type: ignore[attr-defined]
    assert "***" in repr(Params(sslpassword="x"))


def test_as_dict_round_trips() -> None:
    src = {
        "version": "v3",
        "zones": {
            "a": {"endpoints": ["h1:6432", "[::1]:6432"], "priority": 2, "direct": "pg:5432"},
            "b": {"endpoints": [{"host": "h2", "port": 1, "params": {"sslmode": "require"}}]},
        },
    }
    topo = parse(src)
    assert parse(topo.as_dict()) == topo


def test_ipv6_normalized_and_duplicates_found_across_spellings() -> None:
    with pytest.raises(ZonalConfigError, match=r"zones\['a'\]\[1\]"):
        parse({"a": ["[2001:db8::1]:5432", "[2001:0db8:0000::1]:5432"]})


def test_direct_endpoint_may_be_shared_between_zones() -> None:
    # One primary behind a PgBouncer per zone: the direct address is the same.
    topo = parse(
        {
            "a": {"endpoints": ["pgb-a:6432"], "direct": "primary:5432"},
            "b": {"endpoints": ["pgb-b:6432"], "direct": "primary:5432"},
        }
    )
    assert topo.zone("a").direct == dataclasses.replace(topo.zone("b").direct, zone="a")  # type: ignore[arg-type]


# -- errors ---------------------------------------------------------------------------

BAD_TOPOLOGIES: list[tuple[Any, str]] = [
    ({}, "zones"),
    ([], "zones"),
    (None, "zones"),
    (42, "zones"),
    ({"a": []}, "zones['a']"),
    ({"a": None}, "zones['a']"),
    ({"a": 5432}, "zones['a']"),
    ({"a": {"endpoints": []}}, "zones['a']['endpoints']"),
    ({"a": {"endpoints": ["h"], "prio": 1}}, "zones['a']['prio']"),
    ({"a": {"endpoints": ["h"], "priority": True}}, "zones['a']['priority']"),
    ({"a": {"endpoints": ["h"], "priority": 10**9}}, "zones['a']['priority']"),
    ({"a": {"endpoints": ["h"], "params": ["sslmode"]}}, "zones['a']['params']"),
    ({"a": {"endpoints": ["h"], "params": {"port": "1"}}}, "zones['a']['params']['port']"),
    ({"a": {"endpoints": ["h"], "params": {"sslmode": None}}}, "zones['a']['params']['sslmode']"),
    ({"a": {"endpoints": ["h"], "params": {"bad key": "x"}}}, "zones['a']['params']['bad key']"),
    ({"a": {"endpoints": ["h"], "direct": "h:0"}}, "zones['a']['direct']"),
    ({"": "h"}, "zones['']"),
    ({"a b": "h"}, "zones['a b']"),
    ({"a/b": "h"}, "zones['a/b']"),
    ({1: "h"}, "zones[1]"),
    ({"a": "h:0"}, "zones['a']"),
    ({"a": "h:65536"}, "zones['a']"),
    ({"a": "h:x"}, "zones['a']"),
    ({"a": "h:"}, "zones['a']"),
    ({"a": ""}, "zones['a']"),
    ({"a": "   "}, "zones['a']"),
    ({"a": ["h:1", "h:-1"]}, "zones['a'][1]"),
    ({"a": ["h:1", "H:1"]}, "zones['a'][1]"),
    ({"a": "h:1", "b": ["x:1", "h:1"]}, "zones['b'][1]"),
    ({"a": ["h:1", None]}, "zones['a'][1]"),
    ({"a": ["h:1", ["h:2"]]}, "zones['a'][1]"),
    ({"a": "[::1"}, "zones['a']"),
    ({"a": "[::1]5432"}, "zones['a']"),
    ({"a": "[h]:5432"}, "zones['a']"),
    ({"a": "1:2:3:x"}, "zones['a']"),
    ({"a": "h:1/db"}, "zones['a']"),
    ({"a": "/var/run/postgresql:0"}, "zones['a']"),
    ({"a": "mysql://h:1"}, "zones['a']"),
    ({"a": "postgresql://h1:1,h2:2/db"}, "zones['a']"),
    ({"a": "postgresql:///db"}, "zones['a']"),
    ({"a": "-bad-host-:1"}, "zones['a']"),
    ({"a": "h" * 3000}, "zones['a']"),
    ({"a": {"host": "h", "prot": 1}}, "zones['a']['prot']"),
    ({"a": {"port": 1}}, "zones['a']"),
    ({"a": {"host": 5, "port": 1}}, "zones['a']"),
    ({"a": {"host": "h", "port": True}}, "zones['a']"),
    ({"a": {"host": "h", "user": 5}}, "zones['a']"),
    ({"a": {"host": "h", "params": {"password": "x"}}}, "zones['a']['params']['password']"),
    ({"version": "", "zones": {"a": "h"}}, "version"),
    ({"version": ["v"], "zones": {"a": "h"}}, "version"),
    ("{not json", "zones"),
    ('{"a": 1}', "zones['a']"),
]


@pytest.mark.parametrize(("value", "field"), BAD_TOPOLOGIES)
def test_bad_topologies(value: Any, field: str) -> None:
    with pytest.raises(ZonalConfigError) as info:
        parse(value)
    assert info.value.field == field
    assert str(info.value).startswith(field)


@pytest.mark.parametrize(
    "text",
    [
        f"app:{SECRET}@h:0",
        f"app:{SECRET}@h:x",
        f"app:{SECRET}@",
        f"app:{SECRET}@h:1/db",
        f"app:{SECRET}",  # forgot the host: the password lands in the port
        f"{SECRET}:{SECRET}",
        f"postgresql://app:{SECRET}@h1,h2/db",
        f"postgresql://app:{SECRET}@/db",
        f"postgresql://app:{SECRET}@[::1/db",
        f"app:{SECRET}@[::1]x",
        f"mysql://app:{SECRET}@h",
        f"app:{SECRET}@/tmp:",
        f"app:{SECRET}@/tmp:99999",
        f"app:{SECRET}@/tmp/{'d' * 100}",
        f"app:{SECRET}@tmp/sock",
    ],
)
def test_errors_never_echo_endpoint_text(text: str) -> None:
    with pytest.raises(ZonalConfigError) as info:
        parse({"a": ["ok:1", text]})
    assert info.value.field == "zones['a'][1]"
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)


def test_direct_construction_is_checked() -> None:
    with pytest.raises(ZonalConfigError, match=r"endpoint\.port"):
        Endpoint("a", "h", 0)
    with pytest.raises(ZonalConfigError, match=r"endpoint\.host"):
        Endpoint("a", "", 1)
    with pytest.raises(ZonalConfigError, match=r"endpoint\.zone"):
        Endpoint("a b", "h", 1)
    with pytest.raises(ZonalConfigError, match=r"endpoint\.index"):
        Endpoint("a", "h", 1, index=-1)
    with pytest.raises(ZonalConfigError, match="has no endpoints"):
        Zone("a", ())
    with pytest.raises(ZonalConfigError, match="endpoint of zone 'b'"):
        Zone("a", (Endpoint("b", "h", 1),))
    with pytest.raises(ZonalConfigError, match="listed twice"):
        Zone("a", (Endpoint("a", "h", 1), Endpoint("a", "h", 1, index=1)))
    with pytest.raises(ZonalConfigError, match="at least one zone"):
        Topology(())
    z = Zone("a", (Endpoint("a", "h", 1),))
    with pytest.raises(ZonalConfigError, match="listed twice"):
        Topology((z, z))
    with pytest.raises(ZonalConfigError, match="also an endpoint of zone 'a'"):
        Topology((z, Zone("b", (Endpoint("b", "h", 1),))))


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["h:1", "[::1]", f"u:{SECRET}@h:0", f"postgresql://u:{SECRET}@h,x/db"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["a", "zones", "version", "endpoints", "priority", "direct", "params"])
            | st.sampled_from(["host", "port", "user", "password"])
            | st.text(max_size=6),
            inner,
            max_size=4,
        )
    ),
    max_leaves=16,
)


@settings(max_examples=300, deadline=None)
@given(_values | st.text())
def test_fuzz_parse_raises_only_config_errors(value: Any) -> None:
    try:
        topo = Topology.parse(value)
    except ZonalConfigError as exc:
        assert exc.field.startswith(("zones", "version"))
        assert f"u:{SECRET}" not in str(exc)
        return
    assert topo.endpoints


@pytest.mark.parametrize(
    "value",
    [
        {f"app:{SECRET}@h": "h:1"},
        {"a": "h:1", f"x:{SECRET}@": "h:2"},
        json.dumps({f"app:{SECRET}@h": "h:1"}),
        {"a": {"endpoints": ["h"], f"u:{SECRET}@h": 1}},
        {"a": {"host": "h", "password": SECRET, "params": {f"x:{SECRET}@": "1"}}},
    ],
)
def test_parse_errors_redact_passwords_found_in_the_input(value: Any) -> None:
    with pytest.raises(ZonalConfigError) as info:
        Topology.parse(value)
    assert SECRET not in str(info.value)
