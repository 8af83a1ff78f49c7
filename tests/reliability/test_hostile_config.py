"""Hostile configuration, the parts tests/core does not cover (issue 9, item 3).

tests/core/test_config.py and test_topology.py hold 65 + 52 hand-written bad
configurations and fuzzers of the options and the topology parser. Added here:

- the error is the user's, not a traceback from deep inside: no chained exception
  (``__cause__`` or an unsuppressed ``__context__``) from zonal's internals;
- fuzzed *sources*: arbitrary bytes in a ``ZONAL_TOPOLOGY_FILE`` (``.json`` and
  ``.toml``), arbitrary text in ``ZONAL_TOPOLOGY`` and ``ZONAL_LOCAL_ZONE``;
- fuzzed options through ``create_engine(..., poolclass=ZonalPool)``, where
  SQLAlchemy's own names (``pool_recycle``, ``max_overflow``...) are mapped;
- bad TLS configurations (``sslmode``, ``allow_tls_downgrade``).
"""

from __future__ import annotations

import json
import os
import string
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine

from zonal_core.config import (
    ENV_LOCAL_ZONE,
    ENV_TOPOLOGY,
    ENV_TOPOLOGY_FILE,
    OPTIONS,
    build_config,
)
from zonal_core.errors import ZonalConfigError
from zonal_sqlalchemy import ZonalPool

SECRET = "hunter2-" + "q" * 8
# ZONAL_FUZZ_EXAMPLES=5000 for a longer hunt
FUZZ = settings(max_examples=int(os.environ.get("ZONAL_FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def assert_clean(err: ZonalConfigError) -> None:
    """A user's error: names a field, says how to fix it, chains nothing, leaks nothing."""
    assert err.field
    assert err.__cause__ is None, f"chained from {err.__cause__!r}"
    assert err.__context__ is None or err.__suppress_context__, (
        f"a traceback from inside: {err.__context__!r}")
    assert SECRET not in str(err)


def config_error(fn: Any) -> ZonalConfigError | None:
    try:
        fn()
    except ZonalConfigError as err:
        assert_clean(err)
        return err
    return None


_scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
            | st.sampled_from(["h:1", f"app:{SECRET}@h:2", "verify-full", "disable", "1e400"]))
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["a", "b", "zones", "endpoints", "params", "sslmode", "host", "port",
                         "password", "local_zone", "pool_size", "allow_tls_downgrade"])
        | st.text(max_size=6), inner, max_size=4),
    max_leaves=16,
)


# -- no traceback from deep inside ---------------------------------------------------------


@FUZZ
@given(zones=_json, options=st.dictionaries(st.sampled_from(sorted(OPTIONS)), _json, max_size=4))
def test_errors_chain_nothing(zones: Any, options: dict[str, Any]) -> None:
    options["zones"] = zones
    config_error(lambda: build_config(environ={}, **options))


# -- fuzzed sources --------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=200) | _json.map(lambda v: json.dumps(v).encode()),
       suffix=st.sampled_from([".json", ".toml", ".JSON", ".yaml", ""]))
def test_topology_file_bytes(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / f"topology{suffix}"
        f.write_bytes(data)
        config_error(lambda: build_config(environ={ENV_TOPOLOGY_FILE: str(f)}))


@pytest.mark.parametrize("key", [f"app:{SECRET}@h:2", f"postgresql://app:{SECRET}@h/db",
                                 f"postgresql://appuser:{SECRET}@h/db"])
def test_a_connection_string_given_as_a_key_is_masked_in_the_error(key: str) -> None:
    # (found by test_topology_file_bytes: the unknown option's name echoed verbatim;
    # a long one is masked before it is shortened, so no piece of it is left)
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "topology.json"
        f.write_text(json.dumps({"zones": {"a": "h:1"}, key: 1}))
        err = config_error(lambda: build_config(environ={ENV_TOPOLOGY_FILE: str(f)}))
    assert err is not None and "is not a zonal option" in str(err)
    assert not [SECRET[i:i + 4] for i in range(len(SECRET) - 3) if SECRET[i:i + 4] in str(err)]
    assert err.field.startswith(repr(key[:key.index(":" + SECRET)])[:-1])  # (the key is named)


@FUZZ
@given(text=st.text(max_size=100) | _json.map(json.dumps), local=st.text(max_size=10))
def test_environment_text(text: str, local: str) -> None:
    config_error(lambda: build_config(environ={ENV_TOPOLOGY: text, ENV_LOCAL_ZONE: local}))


@FUZZ
@given(name=st.text(alphabet=string.printable, max_size=30), value=_json)
def test_toml_documents(name: str, value: Any) -> None:
    # TOML-shaped, to get past the parser more often than random bytes do
    doc = f'local_zone = {json.dumps(name)}\n[zones]\na = {json.dumps(value)}\n'
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "t.toml"
        f.write_text(doc)
        config_error(lambda: build_config(environ={ENV_TOPOLOGY_FILE: str(f)}))


# -- through create_engine ---------------------------------------------------------------------

_ENGINE_NAMES = sorted((OPTIONS - {"topology"}) | {"pool_timeout", "pool_recycle",
                                                    "pool_pre_ping", "max_overflow",
                                                    "pool_use_lifo"})


@FUZZ
@given(options=st.dictionaries(st.sampled_from(_ENGINE_NAMES), _json, max_size=4))
def test_create_engine_options(options: dict[str, Any]) -> None:
    options.setdefault("zones", {"a": f"app:{SECRET}@h:1"})
    try:
        e = create_engine(f"postgresql+psycopg://app:{SECRET}@/db", poolclass=ZonalPool,
                          **options)
    except ZonalConfigError as err:
        assert_clean(err)
        return
    except TypeError as err:
        # SQLAlchemy's own checks of its own arguments (pool_pre_ping=[...], echo...)
        assert SECRET not in str(err)
        return
    e.dispose()


# -- bad TLS configurations -----------------------------------------------------------------

FULL = {"sslmode": "verify-full", "sslrootcert": "/ca.pem"}
BAD_TLS: list[tuple[dict[str, Any], str]] = [
    ({"zones": {"a": {"endpoints": ["h:1"], "params": FULL},
                "b": {"endpoints": ["h:2"], "params": {"sslmode": "disable"}}}},
     "zones['b']['params']['sslmode']"),
    ({"zones": {"a": {"endpoints": ["h:1"], "params": FULL}, "b": "h:2"}},
     "zones['b']['params']['sslmode']"),
    ({"zones": {"a": {"endpoints": ["h:1"], "params": {"sslmode": "require"}},
                "b": {"endpoints": ["h:2"], "params": {"sslmode": "allow"}}}},
     "zones['b']['params']['sslmode']"),
    ({"zones": {"a": {"endpoints": ["h:1"], "params": {"sslmode": "verify-ca"}},
                "b": {"endpoints": ["h:2"], "params": {"sslmode": "require"}}}},
     "zones['b']['params']['sslmode']"),
    ({"zones": {"a": {"endpoints": ["h:1"], "params": {"sslmode": "VERIFY-FULL"}}}},
     "zones['a']['params']['sslmode']"),
    ({"zones": {"a": {"endpoints": ["h:1"], "params": {"sslmode": ""}}}},
     "zones['a']['params']['sslmode']"),
    ({"zones": {"a": {"endpoints": ["h:1"], "params": {"sslmode": "on"}}}},
     "zones['a']['params']['sslmode']"),
    ({"zones": {"a": "h:1"}, "allow_tls_downgrade": "sometimes"}, "allow_tls_downgrade"),
    ({"zones": {"a": "h:1"}, "allow_tls_downgrade": 2}, "allow_tls_downgrade"),
    ({"zones": {"a": "h:1"}, "allow_tls_downgrade": None}, "allow_tls_downgrade"),
    ({"zones": {"a": "h:1"}, "allow_tls_dowgrade": True}, "allow_tls_dowgrade"),
]


@pytest.mark.parametrize(("options", "field"), BAD_TLS)
def test_bad_tls_configurations(options: dict[str, Any], field: str) -> None:
    err = config_error(lambda: build_config(environ={}, **options))
    assert err is not None, "accepted"
    assert err.field == field
    assert err.fix


def test_hand_written_bad_configurations_are_at_least_fifty() -> None:
    from tests.core.test_config import BAD
    from tests.core.test_topology import BAD_TOPOLOGIES

    total = len(BAD) + len(BAD_TOPOLOGIES) + len(BAD_TLS)
    print(f"\nhand-written bad configurations: {len(BAD)} options + {len(BAD_TOPOLOGIES)} "
          f"topologies + {len(BAD_TLS)} TLS = {total}")
    assert total >= 50
