"""zonal's options: names, what each means, the environment variables. One owner.

:mod:`zonal_core.config` parses and checks the values and owns the defaults; the
adapters take these names from here (SQLAlchemy's ``ZonalPool`` signature, Django's
``OPTIONS["zonal"]``), and docs/configuration.md is :func:`markdown_table` (a test
keeps the two equal).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = [
    "ENV_LOCAL_ZONE",
    "ENV_TOPOLOGY",
    "ENV_TOPOLOGY_FILE",
    "ENV_VARS",
    "EXTRA",
    "HELP",
    "OPTIONS",
    "TABLE",
    "env_values",
    "markdown_table",
]

ENV_TOPOLOGY = "ZONAL_TOPOLOGY"
"""Env var holding the topology (and any option) as JSON."""
ENV_TOPOLOGY_FILE = "ZONAL_TOPOLOGY_FILE"
"""Env var naming a ``.toml`` or ``.json`` file in the same format."""
ENV_LOCAL_ZONE = "ZONAL_LOCAL_ZONE"
"""Env var naming the zone this process runs in."""
ENV_VARS = (ENV_TOPOLOGY, ENV_TOPOLOGY_FILE, ENV_LOCAL_ZONE)
"""Every environment variable a configuration is read from."""


def env_values() -> tuple[Any, ...]:
    """The values of :data:`ENV_VARS` now (None where unset), to tell whether they
    changed: Django compares them on every connect, so this is cheap. CPython's
    ``os.environ`` keeps its encoded items in a dict that every change updates; it is
    read directly when there (0.2 µs against 1.8 µs through the mapping API)."""
    data = getattr(os.environ, "_data", None)
    if _ENCODED_KEYS is not None and type(data) is dict:
        return tuple(map(data.get, _ENCODED_KEYS))
    return tuple(map(os.environ.get, ENV_VARS))


_encode = getattr(os.environ, "encodekey", None)
_ENCODED_KEYS = tuple(_encode(n) for n in ENV_VARS) if _encode is not None else None

TABLE = (
    "zones",
    "local_zone",
    "pool_size",
    "max_total",
    "timeout",
    "connect_timeout",
    "max_lifetime",
    "max_idle",
    "min_idle",
    "pre_ping",
    "ping_bypass",
    "ping_timeout",
    "query_timeout",
    "pgbouncer",
    "session_state",
    "serverless",
    "failback_after",
    "spillover",
    "target_session_attrs",
    "hedge_after",
)
"""The options table, in the order users read it."""

EXTRA = ("leak_threshold", "password", "allow_tls_downgrade", "name", "version")
"""Options beyond the table: reliability and security features, names."""

OPTIONS: frozenset[str] = frozenset((*TABLE, *EXTRA, "topology"))
"""Every name a configuration accepts (``topology`` is another spelling of ``zones``)."""

HELP: Mapping[str, tuple[str, str | None]] = MappingProxyType({
    # name: (what it means, its default as users read it; None: from the config)
    "zones": ('mapping zone name -> endpoint `"host:port"`, a Unix-socket directory '
              '(`"/cloudsql/proj:region:inst"`, optional `:port`), or a list of them; or a '
              "`Topology`", "required (or `topology`)"),
    "local_zone": ("the zone this process runs in",
                   f"env `{ENV_LOCAL_ZONE}`, else the first zone"),
    "pool_size": ("most open connections per zone", None),
    "max_total": ("most open connections across zones", "`pool_size`"),
    "timeout": ("seconds a checkout may wait before `PoolTimeout` (connects and failover "
                "included)", None),
    "connect_timeout": ("seconds per connection attempt", None),
    "max_lifetime": ("seconds; recycled up to 10% earlier at random, never later, never "
                     "mid-transaction", None),
    "max_idle": ("seconds idle before a connection is closed, checked on every pool "
                 "operation", None),
    "min_idle": ("idle connections kept per zone when trimming", None),
    "pre_ping": ("check a connection before handing it out", None),
    "ping_bypass": ("seconds since last use under which pre-ping is skipped", None),
    "ping_timeout": ("seconds a ping may take, also against a black-holed server", None),
    "query_timeout": ("seconds a statement may wait for the server before the client gives "
                      "up and discards that connection (`QueryTimeout`)", None),
    "pgbouncer": ('`False`, `"transaction"` (or `True`), `"session"`', None),
    "session_state": ('what a session-state statement gets in transaction mode: `"error"`, '
                      '`"warn"`, `"allow"`', None),
    "serverless": ("profile: trim at request end, short idle, server-side reapers", None),
    "failback_after": ("seconds the local zone must stay healthy before traffic returns",
                       None),
    "spillover": ("open connections in another zone when the local one is full", None),
    "target_session_attrs": ('`"any"`, `"read-write"`, `"read-only"`: verified after '
                             "connect (sync and async psycopg, asyncpg)", None),
    "hedge_after": ("seconds a new connection may take before a connect in the next zone "
                    "of the route starts too (first to complete serves); 0 = off",
                    "from measured connect latency, at most `connect_timeout`/2"),
    "leak_threshold": ("seconds a connection may stay borrowed before it is reported, once, "
                       "with the stack of its checkout (`stats()` counts `leaks`)", None),
    "password": ("a string, or a callable (sync or async) called for every new connection: "
                 "rotating credentials such as IAM tokens. A refused credential is retried "
                 "once with a fresh one; a failing provider raises `CredentialError` and "
                 "ejects no zone", "None (the URL's)"),
    "allow_tls_downgrade": ("accept a zone whose `sslmode` is weaker than the local zone's "
                            "(otherwise a configuration error: a failover never downgrades "
                            "TLS)", None),
    "name": ("the pool's name, shown in errors, stats and metrics", None),
    "version": ("the topology's version, shown in stats and metrics", "None"),
})
"""What each option means, and its default where the config's value needs words."""


def _shown(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f'"{value}"' if isinstance(value, str) else str(value)


def default_text(name: str) -> str:
    """The default of ``name`` as the table shows it, serverless profile included."""
    from zonal_core.config import DEFAULTS, SERVERLESS_DEFAULTS

    words = HELP[name][1]
    if words is not None:
        return words
    text = _shown(DEFAULTS[name])
    if name in SERVERLESS_DEFAULTS:
        text += f" (serverless: {_shown(SERVERLESS_DEFAULTS[name])})"
    return text


def markdown_table(names: tuple[str, ...] = TABLE) -> str:
    """The options table in Markdown, as docs/configuration.md and the README show it."""
    rows = ["| option | meaning | default |", "|---|---|---|"]
    rows += [f"| `{n}` | {HELP[n][0]} | {default_text(n)} |" for n in names]
    return "\n".join(rows)
