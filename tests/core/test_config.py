"""zonal_core.config: sources and precedence, the serverless profile, coercion,
validation (every error a ZonalConfigError naming the field), secret hygiene."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zonal_core.config import (
    DEFAULTS,
    ENV_LOCAL_ZONE,
    ENV_TOPOLOGY,
    ENV_TOPOLOGY_FILE,
    OPTIONS,
    SERVERLESS_DEFAULTS,
    ZonalConfig,
    build_config,
)
from zonal_core.errors import ZonalConfigError
from zonal_core.topology import Topology

SECRET = "hunter2-TOPSECRET"
ZONES = {"a": "10.0.1.5:6432", "b": "10.0.2.5:6432"}


def cfg(*args: Any, environ: dict[str, str] | None = None, **kwargs: Any) -> ZonalConfig:
    return build_config(*args, environ={} if environ is None else environ, **kwargs)


# -- defaults and the table -----------------------------------------------------------


def test_defaults_match_the_design_table() -> None:
    c = cfg(zones=ZONES)
    assert c.local_zone == "a"
    assert (c.pool_size, c.max_total, c.min_idle) == (5, 5, 0)
    assert (c.timeout, c.connect_timeout, c.max_lifetime, c.max_idle) == (30, 5, 1800, 300)
    assert (c.pre_ping, c.ping_bypass, c.ping_timeout, c.query_timeout) == (False, 0.5, 1, None)
    assert (c.pgbouncer, c.session_state, c.serverless) == (False, "error", False)
    assert (c.failback_after, c.spillover, c.target_session_attrs) == (30, False, "any")
    assert c.name == "zonal"
    assert c.version is None
    assert c.explicit == {"zones"}
    assert c.leak_threshold is None and c.password is None
    assert set(DEFAULTS) | {"max_total"} == OPTIONS - {"zones", "topology", "version",
                                                       "local_zone", "password"}


def test_every_option_is_a_field() -> None:
    names = {f.name for f in dataclasses.fields(ZonalConfig)}
    assert OPTIONS - {"zones", "topology", "version"} <= names


def test_zones_property_and_version() -> None:
    c = cfg(zones={"a": ["h1:1", "h2:2"], "b": "h3"}, version="v9")
    assert list(c.zones) == ["a", "b"]
    assert [e.address for e in c.zones["a"]] == ["h1:1", "h2:2"]
    assert c.version == "v9"
    assert "version" in c.explicit


def test_topology_object_and_alias() -> None:
    topo = Topology.parse({"version": "v1", "zones": ZONES})
    assert cfg(zones=topo).topology is topo
    assert cfg(topology=topo).topology is topo
    assert cfg(topology=ZONES).topology.names == ("a", "b")
    assert cfg(topology=topo).explicit == {"zones", "version"}  # canonical name
    assert cfg(zones=topo, version="v2").version == "v2"  # the keyword wins


def test_options_dict_and_kwargs() -> None:
    c = cfg({"zones": ZONES, "pool_size": 7}, timeout=3)
    assert (c.pool_size, c.timeout) == (7, 3)
    assert cfg({"zones": ZONES, "pool_size": 7}, pool_size=7).pool_size == 7


# -- coercion -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "given", "expected"),
    [
        ("pool_size", "7", 7),
        ("pool_size", " 7 ", 7),
        ("pool_size", 7.0, 7),
        ("pool_size", "7.0", 7),
        ("timeout", 5, 5.0),
        ("timeout", "2.5", 2.5),
        ("timeout", "1e1", 10.0),
        ("ping_bypass", 0, 0.0),
        ("failback_after", 0, 0.0),
        ("pre_ping", "true", True),
        ("pre_ping", "Off", False),
        ("pre_ping", 1, True),
        ("spillover", "yes", True),
        ("pgbouncer", True, "transaction"),
        ("pgbouncer", "transaction", "transaction"),
        ("pgbouncer", "Session", "session"),
        ("pgbouncer", False, False),
        ("pgbouncer", None, False),
        ("pgbouncer", "false", False),
        ("query_timeout", None, None),
        ("query_timeout", "none", None),
        ("query_timeout", 12, 12.0),
        ("session_state", "WARN", "warn"),
        ("target_session_attrs", "read-write", "read-write"),
        ("name", "orders", "orders"),
    ],
)
def test_coercion(option: str, given: Any, expected: Any) -> None:
    value = getattr(cfg(zones=ZONES, **{option: given}), option)
    assert value == expected
    assert type(value) is type(expected)


def test_max_total_none_follows_pool_size() -> None:
    assert cfg(zones=ZONES, pool_size=8, max_total=None).max_total == 8
    assert cfg(zones=ZONES, pool_size=8, max_total=20).max_total == 20


# -- serverless profile ---------------------------------------------------------------


def test_serverless_profile_fills_defaults() -> None:
    c = cfg(zones=ZONES, serverless=True)
    for key, value in SERVERLESS_DEFAULTS.items():
        assert getattr(c, key) == value
    assert c.explicit == {"zones", "serverless"}


def test_explicit_values_win_over_the_profile() -> None:
    c = cfg(zones=ZONES, serverless=True, timeout=10, query_timeout=None, max_idle=60)
    assert (c.timeout, c.query_timeout, c.max_idle) == (10, None, 60)
    assert c.connect_timeout == SERVERLESS_DEFAULTS["connect_timeout"]


def test_profile_from_env_explicit_from_file(tmp_path: Path) -> None:
    f = tmp_path / "z.toml"
    f.write_text("timeout = 9\n")
    env = {
        ENV_TOPOLOGY: json.dumps({"zones": ZONES, "serverless": True}),
        ENV_TOPOLOGY_FILE: str(f),
    }
    c = cfg(environ=env)
    assert c.serverless is True
    assert c.timeout == 9  # set in the file: the profile does not override it
    assert c.max_idle == 30  # unset anywhere: the profile's


# -- sources and precedence -----------------------------------------------------------

TOML = """
version = "v7"
local_zone = "b"
pool_size = 4
timeout = "12"

[zones]
# zone b (local) asks for TLS: a failover to a must not downgrade it
a = { endpoints = ["10.0.1.5:6432"], params = { sslmode = "require" } }

[zones.b]
endpoints = ["10.0.2.5:6432", "[fd00::5]:6432"]
priority = 1
direct = "10.0.2.9:5432"
params = { sslmode = "require" }
"""


def test_toml_file(tmp_path: Path) -> None:
    f = tmp_path / "zonal.toml"
    f.write_text(TOML)
    c = cfg(environ={ENV_TOPOLOGY_FILE: str(f)})
    assert c.version == "v7"
    assert c.local_zone == "b"
    assert (c.pool_size, c.timeout) == (4, 12.0)
    b = c.topology.zone("b")
    assert [e.address for e in b.endpoints] == ["10.0.2.5:6432", "[fd00::5]:6432"]
    assert b.direct is not None and b.direct.params["sslmode"] == "require"
    assert c.explicit == {"zones", "version", "local_zone", "pool_size", "timeout"}


def test_json_file(tmp_path: Path) -> None:
    f = tmp_path / "zonal.JSON"
    f.write_text(json.dumps({"zones": ZONES, "pre_ping": True, "local_zone": "b"}))
    c = cfg(environ={ENV_TOPOLOGY_FILE: str(f)})
    assert (c.pre_ping, c.local_zone) == (True, "b")


def test_env_topology() -> None:
    env = {ENV_TOPOLOGY: json.dumps({"version": "e1", "zones": ZONES, "pool_size": 3})}
    c = cfg(environ=env)
    assert (c.version, c.pool_size, c.topology.names) == ("e1", 3, ("a", "b"))


def test_precedence_kwargs_over_file_over_env(tmp_path: Path) -> None:
    f = tmp_path / "z.json"
    f.write_text(
        json.dumps({"zones": {"f": "file:1"}, "version": "vf", "pool_size": 4, "timeout": 4})
    )
    env = {
        ENV_TOPOLOGY_FILE: str(f),
        ENV_TOPOLOGY: json.dumps(
            {"zones": {"e": "env:1"}, "pool_size": 3, "timeout": 3, "max_idle": 3, "version": "ve"}
        ),
    }
    c = cfg(environ=env, pool_size=5)
    assert c.topology.names == ("f",)  # zones come whole from the file
    assert c.version == "vf"  # with the file's version
    assert (c.pool_size, c.timeout, c.max_idle) == (5, 4, 3)
    c = cfg(environ=env, zones={"k": "kw:1"})
    assert c.topology.names == ("k",)
    assert c.version is None  # the file's version describes the file's zones
    assert cfg(environ={ENV_TOPOLOGY: env[ENV_TOPOLOGY]}).topology.names == ("e",)


def test_local_zone_precedence(tmp_path: Path) -> None:
    zones = {"a": "h:1", "b": "h:2", "c": "h:3", "d": "h:4"}
    f = tmp_path / "z.json"
    f.write_text(json.dumps({"zones": zones, "local_zone": "c"}))
    env = {ENV_TOPOLOGY_FILE: str(f), ENV_TOPOLOGY: json.dumps({"local_zone": "d"})}
    assert cfg(environ={**env, ENV_LOCAL_ZONE: "b"}, local_zone="a").local_zone == "a"
    assert cfg(environ={**env, ENV_LOCAL_ZONE: "b"}).local_zone == "b"
    assert cfg(environ={**env, ENV_LOCAL_ZONE: "  "}).local_zone == "c"  # blank = unset
    assert (
        cfg(environ={ENV_TOPOLOGY: json.dumps({"zones": zones, "local_zone": "d"})}).local_zone
        == "d"
    )
    assert cfg(zones=zones).local_zone == "a"
    assert cfg(zones=zones, local_zone=None).local_zone == "a"


def test_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_TOPOLOGY, json.dumps({"zones": ZONES}))
    monkeypatch.setenv(ENV_LOCAL_ZONE, "b")
    monkeypatch.delenv(ENV_TOPOLOGY_FILE, raising=False)
    assert build_config().local_zone == "b"


def test_empty_env_values_are_unset() -> None:
    env = {ENV_TOPOLOGY: "", ENV_TOPOLOGY_FILE: " ", ENV_LOCAL_ZONE: ""}
    assert cfg(environ=env, zones=ZONES).local_zone == "a"


# -- replace, as_dict, repr -----------------------------------------------------------


def test_replace_validates_and_rederives() -> None:
    c = cfg(zones=ZONES, pool_size=4)
    assert c.replace(pool_size=9).max_total == 9  # max_total was not set: it follows
    fixed = cfg(zones=ZONES, pool_size=4, max_total=10)
    assert fixed.replace(pool_size=6).max_total == 10
    with pytest.raises(ZonalConfigError, match="max_total"):
        fixed.replace(pool_size=11)
    s = c.replace(serverless=True)
    assert (s.timeout, s.query_timeout) == (5, 30)
    assert s.replace(serverless=False).timeout == 30
    assert c.replace(zones={"x": "h:9"}).local_zone == "x"
    with pytest.raises(ZonalConfigError, match="local_zone"):
        cfg(zones=ZONES, local_zone="b").replace(zones={"x": "h:9"})
    with pytest.raises(ZonalConfigError, match="pool_size"):
        c.replace(pool_size=0)
    with pytest.raises(ZonalConfigError, match="did you mean 'pool_size'"):
        c.replace(pool_sise=1)
    assert c.replace().explicit == c.explicit
    assert c.replace(pool_size=4) == c


def test_replace_does_not_read_the_environment_again(monkeypatch: pytest.MonkeyPatch) -> None:
    c = cfg(zones=ZONES)
    monkeypatch.setenv(ENV_LOCAL_ZONE, "b")
    assert c.replace(pool_size=2).local_zone == "a"


def test_as_dict_is_json_masked_and_round_trips() -> None:
    c = cfg(
        zones={"a": "h:1", "b": {"endpoints": ["h:2"], "priority": 5, "direct": "p:5432"}},
        version="v1",
        pgbouncer=True,
        serverless=True,
        min_idle=1,
    )
    d = json.loads(json.dumps(c.as_dict()))
    assert d["zones"]["b"]["priority"] == 5
    assert d["pgbouncer"] == "transaction"
    again = cfg(d)
    assert again == c
    assert hash(again) == hash(c)


def test_secrets_masked_in_repr_str_and_as_dict() -> None:
    c = cfg(
        zones={
            "a": f"app:{SECRET}@h:1",
            "b": {
                "endpoints": [{"host": "h2", "password": SECRET, "params": {"sslpassword": SECRET}}]
            },
            "c": f"postgresql://app:{SECRET}@h3/db",
        }
    )
    assert c.zones["a"][0].password == SECRET  # kept for the connection itself
    for text in (repr(c), str(c), json.dumps(c.as_dict()), repr(c.topology), repr(c.zones)):
        assert SECRET not in text
    assert "app:***@h:1" in repr(c)


def test_config_is_frozen_and_hashable() -> None:
    c = cfg(zones=ZONES)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.pool_size = 3  # type: ignore[misc]
    assert {c: 1}[cfg(zones=ZONES)] == 1


def test_direct_construction() -> None:
    topo = Topology.parse(ZONES)
    c = ZonalConfig(topo, pool_size=3)
    assert (c.local_zone, c.max_total, c.timeout) == ("a", 3, 30.0)
    assert ZonalConfig(topo, serverless=True).timeout == 30.0  # literal: no profile
    assert ZonalConfig(ZONES).topology == topo  # type: ignore[arg-type]
    with pytest.raises(ZonalConfigError, match="pool_size"):
        ZonalConfig(topo, pool_size=-1)
    with pytest.raises(ZonalConfigError, match="explicit"):
        ZonalConfig(topo, explicit=frozenset({"bogus"}))


def test_pgbouncer_refuses_startup_options_param() -> None:
    zones = {"a": {"endpoints": ["h:1"], "params": {"options": "-c x=1"}}}
    assert cfg(zones=zones).zones["a"][0].params["options"] == "-c x=1"
    with pytest.raises(ZonalConfigError, match=r"zones\['a'\]\['params'\]\['options'\]"):
        cfg(zones=zones, pgbouncer="transaction")


# -- bad configurations: type, field, fix, no password ---------------------------------

BAD: list[tuple[dict[str, Any], str]] = [
    # sizes
    ({"pool_size": 0}, "pool_size"),
    ({"pool_size": -1}, "pool_size"),
    ({"pool_size": True}, "pool_size"),
    ({"pool_size": 2.5}, "pool_size"),
    ({"pool_size": "five"}, "pool_size"),
    ({"pool_size": None}, "pool_size"),
    ({"pool_size": [5]}, "pool_size"),
    ({"pool_size": 10**100}, "pool_size"),
    ({"pool_size": float("inf")}, "pool_size"),
    ({"pool_size": "9" * 5000}, "pool_size"),
    ({"max_total": 0}, "max_total"),
    ({"max_total": 3, "pool_size": 4}, "max_total"),
    ({"min_idle": -1}, "min_idle"),
    ({"min_idle": 6}, "min_idle"),
    ({"min_idle": 3, "pool_size": 2, "max_total": 9}, "min_idle"),
    # durations
    ({"timeout": 0}, "timeout"),
    ({"timeout": -5}, "timeout"),
    ({"timeout": float("nan")}, "timeout"),
    ({"timeout": float("inf")}, "timeout"),
    ({"timeout": "nan"}, "timeout"),
    ({"timeout": False}, "timeout"),
    ({"timeout": 10**400}, "timeout"),
    ({"timeout": 1e12}, "timeout"),
    ({"timeout": {"s": 1}}, "timeout"),
    ({"connect_timeout": 0}, "connect_timeout"),
    ({"max_lifetime": -1}, "max_lifetime"),
    ({"max_idle": 0}, "max_idle"),
    ({"ping_bypass": -0.1}, "ping_bypass"),
    ({"ping_timeout": 0}, "ping_timeout"),
    ({"query_timeout": 0}, "query_timeout"),
    ({"query_timeout": "soon"}, "query_timeout"),
    ({"failback_after": -1}, "failback_after"),
    # choices and flags
    ({"pgbouncer": "tx"}, "pgbouncer"),
    ({"pgbouncer": 1.5}, "pgbouncer"),
    ({"session_state": "warning"}, "session_state"),
    ({"session_state": None}, "session_state"),
    ({"target_session_attrs": "primary"}, "target_session_attrs"),
    ({"pre_ping": "maybe"}, "pre_ping"),
    ({"pre_ping": 2}, "pre_ping"),
    ({"serverless": None}, "serverless"),
    ({"spillover": []}, "spillover"),
    ({"name": ""}, "name"),
    ({"name": 5}, "name"),
    ({"name": "a\nb"}, "name"),
    # zones and local_zone
    ({"zones": {}}, "zones"),
    ({"zones": None}, "zones"),
    ({"zones": "h:1"}, "zones"),
    ({"zones": ["h:1"]}, "zones"),
    ({"zones": {"a": []}}, "zones['a']"),
    ({"zones": {"a": "h:0"}}, "zones['a']"),
    ({"zones": {"a": "h:65536"}}, "zones['a']"),
    ({"zones": {"a": "h:x"}}, "zones['a']"),
    ({"zones": {"a": "h:1", "b": ["h:2", "h:99999"]}}, "zones['b'][1]"),
    ({"zones": {"a": "h:1", "b": ["h:2", "h:1"]}}, "zones['b'][1]"),
    ({"zones": {"a b": "h:1"}}, "zones['a b']"),
    ({"zones": ZONES, "topology": ZONES}, "topology"),
    ({"local_zone": "c"}, "local_zone"),
    ({"local_zone": "A"}, "local_zone"),
    ({"local_zone": 1}, "local_zone"),
    ({"version": ""}, "version"),
    ({"version": 1.5}, "version"),
    # unknown options
    ({"pool_sise": 5}, "pool_sise"),
    ({"pool_timeout": 5}, "pool_timeout"),
    ({"options": {}}, "options"),
    ({"explicit": {"zones"}}, "explicit"),
]


@pytest.mark.parametrize(
    ("changes", "field"), BAD, ids=[f"{i}-{f}" for i, (_, f) in enumerate(BAD)]
)
def test_bad_configurations(changes: dict[str, Any], field: str) -> None:
    # Every config carries a password, so a leak would show.
    kwargs: dict[str, Any] = {"zones": {"a": f"app:{SECRET}@h:6432", "b": "h:6433"}, **changes}
    with pytest.raises(ZonalConfigError) as info:
        build_config(environ={}, **kwargs)
    exc = info.value
    assert isinstance(exc, ValueError)
    assert exc.field == field
    assert field in str(exc)
    assert exc.fix, "every error says how to fix it"
    for text in (str(exc), repr(exc), exc.field, exc.problem, exc.fix or ""):
        assert SECRET not in text


def test_did_you_mean() -> None:
    with pytest.raises(ZonalConfigError, match="did you mean 'pool_size'"):
        cfg(zones=ZONES, pool_sise=5)
    with pytest.raises(ZonalConfigError, match="did you mean 'max_lifetime'"):
        cfg(zones=ZONES, pool_recycle=5)
    with pytest.raises(ZonalConfigError, match="did you mean 'b'"):
        cfg(zones={"a": "h:1", "bb": "h:2", "b": "h:3"}, local_zone="B")
    with pytest.raises(ZonalConfigError, match="did you mean 'warn'"):
        cfg(zones=ZONES, session_state="warning")


def test_dict_and_kwarg_disagree() -> None:
    with pytest.raises(ZonalConfigError, match="given twice"):
        cfg({"zones": ZONES, "pool_size": 5}, pool_size=6)


def test_options_not_a_mapping() -> None:
    with pytest.raises(ZonalConfigError, match="options"):
        build_config([("zones", ZONES)], environ={})  # type: ignore[arg-type]


def test_bad_environ_value() -> None:
    with pytest.raises(ZonalConfigError, match=ENV_LOCAL_ZONE):
        build_config(zones=ZONES, environ={ENV_LOCAL_ZONE: 5})  # type: ignore[dict-item]


# -- bad sources ----------------------------------------------------------------------


def _raises_naming(env: dict[str, str], *needles: str) -> ZonalConfigError:
    with pytest.raises(ZonalConfigError) as info:
        build_config(environ=env)
    for needle in needles:
        assert needle in str(info.value)
    assert SECRET not in str(info.value)
    return info.value


def test_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    exc = _raises_naming({ENV_TOPOLOGY_FILE: str(path)}, str(path), "cannot read")
    assert exc.field == ENV_TOPOLOGY_FILE


def test_file_is_a_directory(tmp_path: Path) -> None:
    d = tmp_path / "dir.json"
    d.mkdir()
    _raises_naming({ENV_TOPOLOGY_FILE: str(d)}, str(d))


def test_file_unknown_extension(tmp_path: Path) -> None:
    f = tmp_path / "z.yaml"
    f.write_text("zones: {}")
    _raises_naming({ENV_TOPOLOGY_FILE: str(f)}, str(f), ".toml")


def test_file_invalid_toml(tmp_path: Path) -> None:
    f = tmp_path / "z.toml"
    f.write_text(f'zones = {{ a = "app:{SECRET}@h:1" \n')
    _raises_naming({ENV_TOPOLOGY_FILE: str(f)}, str(f), "not valid TOML", ENV_TOPOLOGY_FILE)


def test_file_invalid_json(tmp_path: Path) -> None:
    f = tmp_path / "z.json"
    f.write_text(f'{{"zones": {{"a": "app:{SECRET}@h:1",}}')
    _raises_naming({ENV_TOPOLOGY_FILE: str(f)}, str(f), "not valid JSON", "line 1")


def test_file_not_utf8(tmp_path: Path) -> None:
    f = tmp_path / "z.json"
    f.write_bytes(b'{"zones": "\xff"}')
    _raises_naming({ENV_TOPOLOGY_FILE: str(f)}, str(f), "UTF-8")


def test_file_not_a_mapping(tmp_path: Path) -> None:
    f = tmp_path / "z.json"
    f.write_text("[1, 2]")
    _raises_naming({ENV_TOPOLOGY_FILE: str(f)}, str(f), "mapping")


def test_file_unknown_key_and_bad_value_name_the_file(tmp_path: Path) -> None:
    f = tmp_path / "z.toml"
    f.write_text('pool_sise = 3\n[zones]\na = "h:1"\n')
    exc = _raises_naming({ENV_TOPOLOGY_FILE: str(f)}, str(f), "did you mean 'pool_size'")
    assert exc.field == "pool_sise"
    f.write_text(f'[zones]\na = ["h:1", "app:{SECRET}@h:0"]\n')
    exc = _raises_naming({ENV_TOPOLOGY_FILE: str(f)}, str(f), "zones['a'][1]")
    assert exc.field == "zones['a'][1]"
    f.write_text('timeout = -1\n[zones]\na = "h:1"\n')
    _raises_naming({ENV_TOPOLOGY_FILE: str(f)}, str(f), "timeout")


def test_env_invalid_json_names_the_variable_not_the_value() -> None:
    env = {ENV_TOPOLOGY: f'{{"zones": {{"a": "app:{SECRET}@h:1"'}
    exc = _raises_naming(env, ENV_TOPOLOGY, "not valid JSON")
    assert exc.field == ENV_TOPOLOGY


def test_env_errors_name_the_variable() -> None:
    env = {ENV_TOPOLOGY: json.dumps({"zones": {"a": f"app:{SECRET}@h:x"}})}
    exc = _raises_naming(env, "zones['a']", ENV_TOPOLOGY)
    assert exc.field == "zones['a']"
    _raises_naming({ENV_TOPOLOGY: "[]"}, ENV_TOPOLOGY, "mapping")
    _raises_naming(
        {ENV_TOPOLOGY: json.dumps({"zones": ZONES}), ENV_LOCAL_ZONE: "x"}, ENV_LOCAL_ZONE
    )


def test_no_zones_anywhere() -> None:
    exc = _raises_naming({}, "zones", ENV_TOPOLOGY)
    assert exc.field == "zones"


def test_zone_name_holding_a_password_is_redacted() -> None:
    with pytest.raises(ZonalConfigError) as info:
        cfg(zones={f"app:{SECRET}@h": "h:1"})
    assert SECRET not in str(info.value)


# -- fuzz -----------------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(), max_size=20)  # lone surrogates included, as in os.environ
    | st.sampled_from(
        [
            "h:1",
            "[::1]:5432",
            f"app:{SECRET}@h:2",
            f"postgresql://u:{SECRET}@h/db",
            "5",
            "true",
            "::1",
        ]
    )
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["a", "b", "endpoints", "priority", "direct", "params", "host", "port"])
            | st.text(max_size=8),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)
_option_names = st.sampled_from(sorted(OPTIONS)) | st.text(max_size=12)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(zones=_json, options=st.dictionaries(_option_names, _json, max_size=5))
def test_fuzz_only_config_errors(zones: Any, options: dict[str, Any]) -> None:
    options.pop("environ", None)
    options["zones"] = zones
    try:
        c = build_config(environ={}, **options)
    except ZonalConfigError as exc:
        assert exc.field
        assert SECRET not in str(exc)
        return
    assert c.topology.names
    assert c.local_zone in c.topology
    assert c.max_total >= c.pool_size >= c.min_idle
    for value in (c.timeout, c.connect_timeout, c.max_lifetime, c.max_idle):
        assert math.isfinite(value) and value > 0


@settings(max_examples=300, deadline=None)
@given(
    option=st.sampled_from(sorted(OPTIONS - {"zones", "topology"})),
    value=_json,
    secret=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=12, max_size=16),
)
def test_fuzz_option_values_never_leak(option: str, value: Any, secret: str) -> None:
    zones = {"a": f"app:{secret}@h:1", "b": {"endpoints": [{"host": "h2", "password": secret}]}}
    try:
        build_config(environ={}, zones=zones, **{option: value})
    except ZonalConfigError as exc:
        assert secret not in str(exc)


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=12)
_hosts = st.from_regex(
    r"[a-z][a-z0-9-]{0,10}(\.[a-z0-9-]{1,8}){0,2}", fullmatch=True
) | st.ip_addresses(v=4).map(str)
_endpoint = st.tuples(_hosts, st.integers(1, 65535)).map(lambda t: f"{t[0]}:{t[1]}") | st.tuples(
    st.ip_addresses(v=6), st.integers(1, 65535)
).map(lambda t: f"[{t[0]}]:{t[1]}")


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_names, st.lists(_endpoint, min_size=1, max_size=3), min_size=1, max_size=4))
def test_fuzz_valid_topologies_round_trip(zones: dict[str, list[str]]) -> None:
    try:
        c = build_config(environ={}, zones=zones)
    except ZonalConfigError as exc:
        # Only duplicate endpoints may be refused here.
        assert "listed twice" in str(exc) or "also an endpoint" in str(exc)
        return
    assert c.topology.names == tuple(zones)
    assert [len(v) for v in c.zones.values()] == [len(v) for v in zones.values()]
    assert build_config(c.as_dict(), environ={}) == c


def test_surrogates_from_the_environment() -> None:
    # Undecodable env bytes arrive as lone surrogates (surrogateescape).
    env = {ENV_TOPOLOGY: json.dumps({"zones": {"a": "app:\udcffpw@h:1"}}), ENV_LOCAL_ZONE: "\udcff"}
    with pytest.raises(ZonalConfigError) as info:
        build_config(environ=env)
    assert info.value.field == "local_zone"
    assert "\udcffpw" not in str(info.value)


def test_env_values_follow_changes_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from zonal_core.options import ENV_LOCAL_ZONE, ENV_VARS, env_values

    monkeypatch.delenv(ENV_LOCAL_ZONE, raising=False)
    before = env_values()
    assert len(before) == len(ENV_VARS)
    monkeypatch.setenv(ENV_LOCAL_ZONE, "eu-west-1b")
    assert env_values() != before
    changed = env_values()
    monkeypatch.setenv(ENV_LOCAL_ZONE, "eu-west-1c")
    assert env_values() not in (before, changed)
    monkeypatch.delenv(ENV_LOCAL_ZONE)
    assert env_values() == before
