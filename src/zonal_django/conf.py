"""From a ``DATABASES`` entry to a validated zonal configuration.

Everything the backend, the system checks and the management commands need to know
about one alias is read here, once, with every conflict reported as
:class:`ConfigProblem` (an id such as ``zonal.E003``, a message and a hint). The
backend raises the first problem as ``ImproperlyConfigured``; the system checks
report all of them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zonal_core.config import ZonalConfig, build_config, parse_option
from zonal_core.errors import ZonalConfigError
from zonal_core.options import OPTIONS
from zonal_core.topology import did_you_mean

__all__ = [
    "ENGINE",
    "ConfigProblem",
    "Plan",
    "is_zonal_engine",
    "plan_for",
    "problems_for",
    "zonal_options",
]

ENGINE = "zonal_django.backends.postgresql"
"""The ``ENGINE`` value of zonal's backend."""

# Connection parameters that name the server: zonal picks them per zone.
_SERVER_KEYS = frozenset({"host", "hostaddr", "port"})
# Django options that Django pops itself before connecting.
_DJANGO_ONLY = frozenset({"pool", "zonal", "assume_role", "isolation_level",
                          "server_side_binding"})


@dataclass(frozen=True)
class ConfigProblem:
    """One misconfiguration of an alias: a system check id, what, and the fix."""

    id: str
    msg: str
    hint: str
    warning: bool = False

    def text(self) -> str:
        """The message and the fix, for ``ImproperlyConfigured``."""
        return f"{self.msg} (fix: {self.hint})"


@dataclass(frozen=True)
class Plan:
    """What the backend needs for one alias: the config and derived flags."""

    alias: str
    config: ZonalConfig
    transaction_mode: bool
    fingerprint: str = field(repr=False)
    """Everything the pool depends on, as text: a new value means a new pool."""
    session_policy: str | None = None
    """What the session-state rule does with a pooled connection's statements
    (``session_state``), None where it does not apply (not transaction mode)."""


def is_zonal_engine(settings_dict: Mapping[str, Any]) -> bool:
    """True if ``settings_dict`` uses zonal's backend (or a subclass named so)."""
    engine = str(settings_dict.get("ENGINE", ""))
    return engine == ENGINE or engine.startswith(ENGINE + ".")


def zonal_options(settings_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``OPTIONS["zonal"]`` as a dict (empty when absent); not validated."""
    options = settings_dict.get("OPTIONS") or {}
    raw = options.get("zonal") if isinstance(options, Mapping) else None
    return dict(raw) if isinstance(raw, Mapping) else {}


def _where(alias: str, *keys: str) -> str:
    return f"DATABASES[{alias!r}]" + "".join(f"[{k!r}]" for k in keys)


def _host_zones(settings_dict: Mapping[str, Any]) -> dict[str, Any] | None:
    """``HOST``/``PORT`` as one zone named ``default`` (the drop-in case)."""
    host = str(settings_dict.get("HOST") or "")
    if not host:
        return None
    port = int(settings_dict.get("PORT") or 5432)
    return {"default": {"endpoints": [{"host": host, "port": port}]}}


def _is_false(value: object) -> bool:
    # the configuration's own reading of a flag ("off", "no", 0, ...)
    try:
        return parse_option("pre_ping", value) is False
    except ZonalConfigError:
        return False  # not a flag at all: build_config reports it


# OPTIONS keys Django's PostgreSQL backend itself reads, and psycopg's connection
# options; everything else in OPTIONS goes to libpq as a connection parameter.
_DJANGO_KEYS = frozenset({"zonal", "isolation_level", "assume_role", "server_side_binding",
                          "pool", "prepare_threshold", "cursor_factory", "context",
                          "autocommit", "row_factory"})


def _libpq_keywords() -> frozenset[str]:
    import psycopg

    return frozenset(d.keyword.decode() for d in psycopg.pq.Conninfo.get_defaults())


def _unknown_option_problems(alias: str, options: Mapping[str, Any]) -> list[ConfigProblem]:
    """Keys of OPTIONS that nobody reads: a misspelled "zonal", a zonal option outside
    OPTIONS["zonal"], a connection parameter libpq does not know. Found by ``manage.py
    check``, not by the first query."""
    libpq = _libpq_keywords()
    out: list[ConfigProblem] = []
    for key in options:
        if not isinstance(key, str) or key in _DJANGO_KEYS or key in libpq:
            continue
        where = _where(alias, "OPTIONS", key)
        if did_you_mean(key, ["zonal"]) == "zonal":
            out.append(ConfigProblem("zonal.E012", f"{where} is not read by anyone",
                                     f"did you mean OPTIONS['zonal']? rename {key!r}"))
        elif key in OPTIONS or did_you_mean(key, OPTIONS) in OPTIONS - libpq:
            meant = key if key in OPTIONS else did_you_mean(key, OPTIONS)
            out.append(ConfigProblem(
                "zonal.E013", f"{where} looks like a zonal option, outside OPTIONS['zonal']",
                f"move it into OPTIONS['zonal'] as {meant!r}"))
        else:
            guess = did_you_mean(key, libpq | _DJANGO_KEYS)
            out.append(ConfigProblem(
                "zonal.E014", f"{where} is not a connection parameter libpq knows",
                f"did you mean {guess!r}?" if guess else
                "remove it (see libpq's connection parameters)"))
    return out


def problems_for(alias: str, settings_dict: Mapping[str, Any],
                 environ: Mapping[str, str] | None = None) -> tuple[list[ConfigProblem],
                                                                   ZonalConfig | None]:
    """Every problem of one alias, and its config when one could be built."""
    out: list[ConfigProblem] = []
    options = settings_dict.get("OPTIONS") or {}
    if not isinstance(options, Mapping):
        return [ConfigProblem("zonal.E001", f"{_where(alias, 'OPTIONS')} is not a dict",
                              "OPTIONS = {'zonal': {...}}")], None
    raw_zonal = options.get("zonal")
    if raw_zonal is not None and not isinstance(raw_zonal, Mapping):
        return [ConfigProblem("zonal.E001", f"{_where(alias, 'OPTIONS', 'zonal')} must be a "
                              "dict of zonal options",
                              "OPTIONS['zonal'] = {'zones': {'a': 'host:6432'}}")], None
    zonal = dict(raw_zonal or {})
    out.extend(_unknown_option_problems(alias, options))
    if options.get("pool"):
        out.append(ConfigProblem(
            "zonal.E002",
            f"{_where(alias, 'OPTIONS', 'pool')} turns on Django's own connection pool, "
            "but zonal_django is the pool",
            "remove OPTIONS['pool']; size the pool with OPTIONS['zonal'] "
            "(pool_size, max_total, timeout)"))
    max_age = settings_dict.get("CONN_MAX_AGE", 0)
    if max_age != 0:
        out.append(ConfigProblem(
            "zonal.E003",
            f"{_where(alias, 'CONN_MAX_AGE')} is {max_age!r}: persistent connections bypass "
            "the pool (each thread would keep its own connection)",
            "CONN_MAX_AGE = 0; the pool keeps connections open (max_idle, max_lifetime)"))
    if zonal.get("zones") is not None or zonal.get("topology") is not None:
        if settings_dict.get("HOST") or settings_dict.get("PORT"):
            out.append(ConfigProblem(
                "zonal.E004",
                f"{_where(alias)} sets HOST/PORT together with OPTIONS['zonal']['zones']: "
                "which server is meant?",
                "remove HOST and PORT; the zones name every server"))
        server = sorted(_SERVER_KEYS & set(options))
        if server:
            out.append(ConfigProblem(
                "zonal.E004",
                f"{_where(alias, 'OPTIONS')} sets {', '.join(server)} together with zones",
                "remove them; the zones name every server"))
    elif "zones" not in zonal and "topology" not in zonal:
        host_zones = _host_zones(settings_dict)
        if host_zones is not None:
            zonal["zones"] = host_zones
    health = bool(settings_dict.get("CONN_HEALTH_CHECKS", False))
    if health:
        if "pre_ping" in zonal and _is_false(zonal["pre_ping"]):
            out.append(ConfigProblem(
                "zonal.E005",
                f"{_where(alias, 'CONN_HEALTH_CHECKS')} is True but "
                "OPTIONS['zonal']['pre_ping'] is False",
                "drop one of them (CONN_HEALTH_CHECKS maps to pre_ping)"))
        else:
            zonal["pre_ping"] = True
    zonal.setdefault("name", f"django:{alias}")
    config: ZonalConfig | None = None
    try:
        config = build_config(zonal, environ=environ)
    except ZonalConfigError as exc:
        out.append(ConfigProblem(
            "zonal.E006" if exc.field != "local_zone" else "zonal.E007",
            f"{_where(alias, 'OPTIONS', 'zonal')}: {exc.field}: {exc.problem}",
            exc.fix or "see the options table of zonal's documentation"))
        return out, None
    if config.pgbouncer == "transaction":
        out.extend(_transaction_mode_problems(alias, settings_dict, options))
    elif options.get("prepare_threshold") is not None and isinstance(
            options.get("prepare_threshold"), str):
        out.append(ConfigProblem("zonal.E006", f"{_where(alias, 'OPTIONS', 'prepare_threshold')}"
                                 " is a string", "give a number or None"))
    if config.pgbouncer and not any(z.direct for z in config.topology.zones):
        out.append(ConfigProblem(
            "zonal.W001",
            f"{_where(alias)}: pgbouncer={config.pgbouncer!r} and no zone has a 'direct' "
            "endpoint, so migrations and test-database creation go through PgBouncer",
            "zones = {'a': {'endpoints': ['pgbouncer:6432'], 'direct': 'postgres:5432'}}",
            warning=True))
    return out, config


def _transaction_mode_problems(alias: str, settings_dict: Mapping[str, Any],
                               options: Mapping[str, Any]) -> list[ConfigProblem]:
    out: list[ConfigProblem] = []
    if settings_dict.get("DISABLE_SERVER_SIDE_CURSORS") is False:
        out.append(ConfigProblem(
            "zonal.E008",
            f"{_where(alias, 'DISABLE_SERVER_SIDE_CURSORS')} is False with "
            "pgbouncer='transaction': a server-side cursor lives on one server connection, "
            "which PgBouncer hands to another client after the transaction",
            "remove it (zonal turns server-side cursors off in transaction mode)"))
    if options.get("assume_role"):
        out.append(ConfigProblem(
            "zonal.E009",
            f"{_where(alias, 'OPTIONS', 'assume_role')} runs SET ROLE on the session, which "
            "PgBouncer transaction mode leaks to other clients",
            "log in as that role (USER), or ALTER ROLE ... SET role; or use "
            "pgbouncer='session' or a direct connection"))
    if options.get("prepare_threshold") is not None:
        out.append(ConfigProblem(
            "zonal.E010",
            f"{_where(alias, 'OPTIONS', 'prepare_threshold')} is "
            f"{options.get('prepare_threshold')!r}, but pgbouncer='transaction' needs None: "
            "prepared statements live on one server connection",
            "remove OPTIONS['prepare_threshold'] (Django and zonal use None)"))
    if options.get("options"):
        out.append(ConfigProblem(
            "zonal.E011",
            f"{_where(alias, 'OPTIONS', 'options')} is a startup parameter PgBouncer refuses",
            "set those parameters per role or database on the server (ALTER ROLE ... SET), "
            "or per transaction with SET LOCAL"))
    return out


def plan_for(alias: str, settings_dict: Mapping[str, Any], extra: Mapping[str, Any]) -> Plan:
    """The validated plan for ``alias``; raises ``ImproperlyConfigured`` with the first
    problem. ``extra`` (connection parameters, time zone...) enters the fingerprint."""
    from django.core.exceptions import ImproperlyConfigured

    problems, config = problems_for(alias, settings_dict)
    errors = [p for p in problems if not p.warning]
    if errors:
        raise ImproperlyConfigured(errors[0].text())
    assert config is not None
    fingerprint = json.dumps(
        {"zonal": config.as_dict(), "secrets": [ep.password for ep in config.topology.endpoints],
         "extra": {k: extra[k] for k in sorted(extra)}},
        sort_keys=True, default=repr)
    transaction_mode = config.pgbouncer == "transaction"
    return Plan(alias=alias, config=config, transaction_mode=transaction_mode,
                fingerprint=fingerprint,
                session_policy=config.session_state if transaction_mode else None)


def connect_params(conn_params: Mapping[str, Any]) -> dict[str, Any]:
    """Django's connection parameters without what names the server (zonal picks it)
    and without Django-only options."""
    return {k: v for k, v in conn_params.items()
            if k not in _SERVER_KEYS and k not in _DJANGO_ONLY}
