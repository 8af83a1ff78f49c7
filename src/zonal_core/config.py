"""The validated configuration of a zoned pool: one vocabulary for both adapters.

:func:`build_config` gathers zonal's options (:data:`OPTIONS`, documented in
:data:`OPTION_TABLE`) from keyword
arguments or a dict, a TOML or JSON file named by ``ZONAL_TOPOLOGY_FILE`` and JSON in
``ZONAL_TOPOLOGY``, checks every value and returns a frozen :class:`ZonalConfig`.

>>> cfg = build_config(zones={"a": "10.0.1.5:6432", "b": "10.0.2.5:6432"},
...                    serverless=True, timeout=10, environ={})
>>> cfg.local_zone, cfg.timeout, cfg.connect_timeout, sorted(cfg.explicit)
('a', 10.0, 2.0, ['serverless', 'timeout', 'zones'])

Every bad value raises :class:`~zonal_core.errors.ZonalConfigError` naming the field
(``pool_size``, ``zones['b'][1]``, ``local_zone``), where it came from when that was
not a keyword argument, and the fix. No message, repr or :meth:`ZonalConfig.as_dict`
ever holds a password.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

from .errors import ZonalConfigError
from .options import ENV_LOCAL_ZONE, ENV_TOPOLOGY, ENV_TOPOLOGY_FILE, OPTIONS, TABLE
from .secrets import mask, redact
from .topology import Endpoint, Topology, collect_secrets, did_you_mean, parse_topology

__all__ = [
    "DEFAULTS",
    "ENV_LOCAL_ZONE",
    "ENV_TOPOLOGY",
    "ENV_TOPOLOGY_FILE",
    "MAX_CONNECTIONS",
    "MAX_SECONDS",
    "OPTIONS",
    "SERVERLESS_DEFAULTS",
    "SSLMODES",
    "PgBouncerMode",
    "SessionState",
    "TargetSessionAttrs",
    "ZonalConfig",
    "build_config",
    "parse_option",
]

PgBouncerMode = Literal[False, "transaction", "session"]
SessionState = Literal["error", "warn", "allow"]
TargetSessionAttrs = Literal["any", "read-write", "read-only"]

MAX_CONNECTIONS = 262_143
"""Upper bound of every size option: PostgreSQL's own limit on ``max_connections``."""
MAX_SECONDS = 1e9
"""Upper bound of every duration (about 31 years); larger values overflow timers."""

_TABLE = TABLE  # (OPTIONS and the ENV_* names are re-exported from zonal_core.options)

SSLMODES: tuple[str, ...] = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
"""libpq's ``sslmode`` values, weakest first. A zone without one gets libpq's
default, ``prefer``. A failover must never land on an endpoint weaker than the
strongest of the local zone (an attacker who can block the local zone would
otherwise choose the weaker channel): that is a configuration error unless
``allow_tls_downgrade=True``. Unix-socket endpoints are left out: no network, no
TLS (libpq ignores ``sslmode`` on a socket)."""

SERVERLESS_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {"timeout": 5.0, "connect_timeout": 2.0, "max_idle": 30.0, "query_timeout": 30.0,
     # A thaw shorter than max_idle finds backends the server may have ended; with
     # pre_ping they are replaced before use (measured: 2/100 errors without, 0 with).
     # The 0.5 s bypass window keeps busy instances from paying for it.
     "pre_ping": True}
)
"""What ``serverless=True`` changes, for options the user did not set."""

# Near-misses that difflib would not find, or would get wrong.
_HINTS = {
    "pool_timeout": "timeout",
    "pool_recycle": "max_lifetime",
    "recycle": "max_lifetime",
    "pool_pre_ping": "pre_ping",
    "max_overflow": "max_total",
    "idle_timeout": "max_idle",
    "statement_timeout": "query_timeout",
    "zone": "local_zone",
}
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
# Options for which None means "not set" (their default is derived).
_NONE_IS_UNSET = frozenset({"zones", "local_zone", "max_total", "version"})


# -- value checkers: (value, field) -> normalized value, or ZonalConfigError -------------


def _show(value: object) -> str:
    """A short rendering of a scalar for a message; containers by type only."""
    if isinstance(value, bool | int | float | str) or value is None:
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return f"a {type(value).__name__}"


def _real(value: object, field: str, what: str, fix: str) -> float:
    if isinstance(value, bool):
        raise ZonalConfigError(field, f"must be {what}, not a bool", fix=fix)
    number: float
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ZonalConfigError(field, f"must be {what}, not {_show(value)}", fix=fix) from None
    elif isinstance(value, numbers.Real):
        try:
            number = float(value)
        except (OverflowError, ValueError, TypeError):
            raise ZonalConfigError(field, f"is too large for {what}", fix=fix) from None
    else:
        raise ZonalConfigError(field, f"must be {what}, not {_show(value)}", fix=fix)
    if not math.isfinite(number):
        raise ZonalConfigError(field, f"must be a finite number, not {number!r}", fix=fix)
    return number


def _seconds(*, minimum: float, inclusive: bool) -> Callable[[object, str], float]:
    def check(value: object, field: str) -> float:
        fix = f"{field}={_DEFAULT_SHOWN.get(field, 5)!r} (seconds)"
        number = _real(value, field, "a number of seconds", fix)
        if number < minimum or (number == minimum and not inclusive):
            bound = "at least" if inclusive else "more than"
            raise ZonalConfigError(field, f"must be {bound} {minimum:g} seconds", fix=fix)
        if number > MAX_SECONDS:
            raise ZonalConfigError(field, f"must be at most {MAX_SECONDS:g} seconds", fix=fix)
        return number

    return check


def _count(*, minimum: int) -> Callable[[object, str], int]:
    def check(value: object, field: str) -> int:
        fix = f"{field}={_DEFAULT_SHOWN.get(field, 5)!r}"
        if field == "max_total":
            fix = "max_total=10 (at least pool_size), or leave it out to follow pool_size"
        if isinstance(value, int) and not isinstance(value, bool):
            whole = value
        else:
            if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,12}\s*", value):
                number: float = int(value)
            else:
                number = _real(value, field, "a whole number", fix)
            if number != int(number):
                raise ZonalConfigError(field, f"must be a whole number, not {number!r}", fix=fix)
            whole = int(number)
        if whole < minimum:
            raise ZonalConfigError(field, f"must be at least {minimum}, not {whole}", fix=fix)
        if whole > MAX_CONNECTIONS:
            raise ZonalConfigError(
                field,
                f"must be at most {MAX_CONNECTIONS} (PostgreSQL's limit), not {_show(whole)}",
                fix=fix,
            )
        return whole

    return check


def _flag(value: object, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ZonalConfigError(field, f"must be True or False, not {_show(value)}", fix=f"{field}=True")


def _choice(*choices: str) -> Callable[[object, str], str]:
    def check(value: object, field: str) -> str:
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        guess = _guess(value, choices)
        raise ZonalConfigError(
            field,
            f"must be one of {', '.join(map(repr, choices))}, not {_show(value)}",
            fix=f"did you mean {guess!r}?" if guess else f"{field}={choices[0]!r}",
        )

    return check


def _pgbouncer(value: object, field: str) -> PgBouncerMode:
    if value is None or value is False:
        return False
    if value is True:
        return "transaction"
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("transaction", "session"):
            return cast(PgBouncerMode, text)
        if text in _TRUE:
            return "transaction"
        if text in _FALSE or text in ("", "none"):
            return False
    raise ZonalConfigError(
        field,
        f"must be False, 'transaction' (or True) or 'session', not {_show(value)}",
        fix="pgbouncer='transaction'",
    )


def _optional_seconds(*, inclusive: bool, fix: str, none_words: tuple[str, ...] = ()
                      ) -> Callable[[object, str], float | None]:
    """A parser of seconds (> 0, or >= 0 when ``inclusive``) where None (or "none",
    "null" and ``none_words``) means "not set"."""
    words = ("none", "null", *none_words)

    def check(value: object, field: str) -> float | None:
        if value is None or (isinstance(value, str) and value.strip().lower() in words):
            return None
        try:
            return _seconds(minimum=0, inclusive=inclusive)(value, field)
        except ZonalConfigError as exc:
            raise ZonalConfigError(field, exc.problem, fix=fix) from None

    return check


_query_timeout = _optional_seconds(inclusive=False, fix="query_timeout=30, or None to disable")
# None (or "auto"): from the endpoint's measured connect latency; 0: off.
_hedge_after = _optional_seconds(
    inclusive=True, none_words=("auto",),
    fix="hedge_after=0.5, 0 to turn hedging off, or None (automatic)")
_leak_threshold = _optional_seconds(inclusive=False, fix="leak_threshold=60, or None")


def _password(value: object, field: str) -> object:
    # Never echo the value: it is a secret.
    if value is None or isinstance(value, str) or callable(value):
        return value
    raise ZonalConfigError(field, f"must be a string or a callable returning one, not a "
                           f"{type(value).__name__}", fix="password=lambda: token()")


def _name(value: object, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 100 or not value.isprintable():
        raise ZonalConfigError(
            field, f"must be 1 to 100 printable characters, not {_show(value)}", fix="name='orders'"
        )
    return value


_CHECKS: dict[str, Callable[[object, str], Any]] = {
    "pool_size": _count(minimum=1),
    "max_total": _count(minimum=1),
    "timeout": _seconds(minimum=0, inclusive=False),
    "connect_timeout": _seconds(minimum=0, inclusive=False),
    "max_lifetime": _seconds(minimum=0, inclusive=False),
    "max_idle": _seconds(minimum=0, inclusive=False),
    "min_idle": _count(minimum=0),
    "pre_ping": _flag,
    "ping_bypass": _seconds(minimum=0, inclusive=True),
    "ping_timeout": _seconds(minimum=0, inclusive=False),
    "query_timeout": _query_timeout,
    "pgbouncer": _pgbouncer,
    "session_state": _choice("error", "warn", "allow"),
    "serverless": _flag,
    "failback_after": _seconds(minimum=0, inclusive=True),
    "spillover": _flag,
    "target_session_attrs": _choice("any", "read-write", "read-only"),
    "hedge_after": _hedge_after,
    "leak_threshold": _leak_threshold,
    "allow_tls_downgrade": _flag,
    "password": _password,
    "name": _name,
}


def parse_option(name: str, value: object) -> Any:
    """``value`` of option ``name`` parsed and checked as :func:`build_config` does it
    (the one parser of each option: adapters that need one value early use this).

    >>> parse_option("pgbouncer", "yes"), parse_option("pre_ping", "off")
    ('transaction', False)
    """
    check = _CHECKS.get(name)
    if check is None:
        raise _unknown_option(name, None)
    return check(value, name)


def _guess(word: object, choices: Any) -> str | None:
    return did_you_mean(word, choices, _HINTS)


def _unknown_option(key: object, origin: str | None) -> ZonalConfigError:
    # A readable key is the field itself; anything odd is shown as its repr, masked
    # first (a connection string given as a key holds a password) and then shortened.
    if isinstance(key, str) and key.isidentifier() and len(key) <= 60:
        field = key
    else:
        field = _show(mask(key) if isinstance(key, str) else key)
    guess = _guess(key, OPTIONS)
    if key == "options":
        fix = "pass the mapping positionally: build_config({...})"
    elif guess:
        fix = f"did you mean {guess!r}?"
    else:
        fix = "see zonal's options table (docs/configuration.md): " + ", ".join(_TABLE)
    return _located(ZonalConfigError(str(field), "is not a zonal option", fix=fix), origin)


def _located(exc: ZonalConfigError, origin: str | None) -> ZonalConfigError:
    """``exc`` with where the value came from appended, if not a keyword argument."""
    if not origin:
        return exc
    return ZonalConfigError(exc.field, f"{exc.problem} (from {origin})", fix=exc.fix)


# -- the config ---------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class ZonalConfig:
    """Every option of zonal's table, validated; frozen, hashable, secret-free repr.

    Build it with :func:`build_config` (sources, the serverless profile, ``explicit``).
    Constructed directly, it takes its values literally (no profile, no env) and
    checks them the same way; ``max_total=0`` then means "``pool_size``" and
    ``local_zone=""`` "the first zone".

    >>> cfg = build_config(zones={"a": "app:secret@h:6432"}, environ={})
    >>> cfg  # doctest: +ELLIPSIS
    ZonalConfig(name='zonal', zones={'a': ['app:***@h:6432']}, local_zone='a', pool_size=5, ...)
    >>> cfg.replace(pool_size=10).max_total
    10
    """

    topology: Topology
    local_zone: str = ""
    pool_size: int = 5
    max_total: int = 0
    timeout: float = 30.0
    connect_timeout: float = 5.0
    max_lifetime: float = 1800.0
    max_idle: float = 300.0
    min_idle: int = 0
    pre_ping: bool = False
    ping_bypass: float = 0.5
    ping_timeout: float = 1.0
    query_timeout: float | None = None
    pgbouncer: PgBouncerMode = False
    session_state: SessionState = "error"
    serverless: bool = False
    failback_after: float = 30.0
    spillover: bool = False
    target_session_attrs: TargetSessionAttrs = "any"
    hedge_after: float | None = None
    """Seconds a new connection may take before a connect to the next zone of the
    route starts too (the first to complete serves). None: from the endpoint's
    measured connect latency (see :func:`zonal_core.health.hedge_delay`); 0: off."""
    leak_threshold: float | None = None
    allow_tls_downgrade: bool = False
    password: Any = dataclasses.field(default=None, repr=False, compare=False)
    """A string, or a callable returning one (sync or async), for every new
    connection. Never shown in a repr, ``as_dict`` or an error."""
    name: str = "zonal"
    explicit: frozenset[str] = dataclasses.field(default=frozenset(), compare=False)
    """Which options the user set, in any source (canonical names: ``zones``, never
    ``topology``). Adapters use it for their conflict checks."""

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key, value in _normalize(values, {}).items():
            object.__setattr__(self, key, value)

    @property
    def zones(self) -> dict[str, tuple[Endpoint, ...]]:
        """Zone name -> its endpoints, in order of appearance (a fresh dict)."""
        return {z.name: z.endpoints for z in self.topology.zones}

    @property
    def version(self) -> str | None:
        """The topology's version, shown in stats and metrics."""
        return self.topology.version

    def replace(self, **changes: Any) -> ZonalConfig:
        """A new config with ``changes`` applied, validated again.

        Options the user never set follow the new values: ``max_total`` follows
        ``pool_size``, and ``replace(serverless=True)`` brings the profile's defaults.
        The environment is not read again.
        """
        base: dict[str, Any] = {k: getattr(self, k) for k in self.explicit if k in _CHECKS}
        if "local_zone" in self.explicit:
            base["local_zone"] = self.local_zone
        if "zones" not in changes and "topology" not in changes:
            base["zones"] = self.topology
        return build_config({**base, **changes}, environ={})

    def as_dict(self) -> dict[str, Any]:
        """Every option, in the file format (JSON-ready); passwords masked.

        Feeding it back to :func:`build_config` gives an equal config, except that
        masked passwords are now ``***``.
        """
        out: dict[str, Any] = {"name": self.name}
        out.update(self.topology.as_dict())
        out["local_zone"] = self.local_zone
        for key in _TABLE[2:]:
            out[key] = getattr(self, key)
        out["leak_threshold"] = self.leak_threshold
        if self.allow_tls_downgrade:
            out["allow_tls_downgrade"] = True
        return out

    def __repr__(self) -> str:
        zones = {z.name: [ep.display() for ep in z.endpoints] for z in self.topology.zones}
        parts = [f"name={self.name!r}"]
        if self.version is not None:
            parts.append(f"version={self.version!r}")
        parts.append(f"zones={zones!r}")
        parts.extend(f"{key}={getattr(self, key)!r}" for key in (*_TABLE[1:], "leak_threshold"))
        if self.allow_tls_downgrade:
            parts.append("allow_tls_downgrade=True")
        if self.password is not None:
            parts.append("password=***")
        return f"ZonalConfig({', '.join(parts)})"


DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        f.name: f.default
        for f in dataclasses.fields(ZonalConfig)
        if f.name in _CHECKS and f.name not in ("max_total", "password")
    }
)
"""The defaults of the options (without the serverless profile); ``max_total``
defaults to ``pool_size``."""
_DEFAULT_SHOWN: Mapping[str, Any] = {**DEFAULTS, "max_total": 10}


def _normalize(values: Mapping[str, Any], origin: Mapping[str, str]) -> dict[str, Any]:
    """Check and normalize a full set of field values; cross-checks included."""
    out: dict[str, Any] = {}
    topology = values["topology"]
    if not isinstance(topology, Topology):
        try:
            topology = parse_topology(topology)
        except ZonalConfigError as exc:
            raise _located(exc, origin.get("zones")) from None
    out["topology"] = topology
    for key, check in _CHECKS.items():
        value = values[key]
        if key == "max_total" and (value is None or (type(value) is int and value == 0)):
            value = values["pool_size"]  # unset: follows pool_size
        try:
            out[key] = check(value, key)
        except ZonalConfigError as exc:
            raise _located(exc, origin.get(key)) from None
    if out["min_idle"] > out["pool_size"]:
        raise _located(
            ZonalConfigError(
                "min_idle",
                f"{out['min_idle']} is more than pool_size ({out['pool_size']}): "
                "a zone never holds that many",
                fix=f"min_idle <= {out['pool_size']}, or raise pool_size",
            ),
            origin.get("min_idle"),
        )
    if out["max_total"] < out["pool_size"]:
        raise _located(
            ZonalConfigError(
                "max_total",
                f"{out['max_total']} is less than pool_size ({out['pool_size']}), "
                "so pool_size could never be reached",
                fix=f"max_total >= {out['pool_size']}, or lower pool_size",
            ),
            origin.get("max_total"),
        )
    local = values["local_zone"]
    if local is None or local == "":
        local = topology.names[0]
    if not isinstance(local, str) or local not in topology:
        guess = _guess(local, topology.names)
        raise _located(
            ZonalConfigError(
                "local_zone",
                f"{_show(local)} is not one of the zones ({', '.join(topology.names)})",
                fix=f"did you mean {guess!r}?" if guess else f"local_zone={topology.names[0]!r}",
            ),
            origin.get("local_zone"),
        )
    out["local_zone"] = local
    try:
        _check_tls(topology, local, out["allow_tls_downgrade"])
    except ZonalConfigError as exc:
        raise _located(exc, origin.get("zones")) from None
    if out["pgbouncer"]:
        for ep in topology.endpoints:
            if "options" in ep.params:
                raise _located(
                    ZonalConfigError(
                        f"zones[{ep.zone!r}]['params']['options']",
                        "PgBouncer refuses the startup parameter 'options'",
                        fix="remove it, or set pgbouncer=False for direct connections",
                    ),
                    origin.get("zones"),
                )
    explicit = values["explicit"]
    if not isinstance(explicit, frozenset | set) or not all(
        isinstance(k, str) and k in OPTIONS and k != "topology" for k in explicit
    ):
        raise ZonalConfigError(
            "explicit", "must be a set of option names", fix="leave it to build_config"
        )
    out["explicit"] = frozenset(explicit)
    return out


def _sslmode(ep: Endpoint) -> str:
    mode = ep.params.get("sslmode", "prefer")
    if mode not in SSLMODES:
        raise ZonalConfigError(
            f"zones[{ep.zone!r}]['params']['sslmode']",
            f"must be one of {', '.join(map(repr, SSLMODES))}, not {_show(mode)}",
            fix=f"did you mean {_guess(mode, SSLMODES)!r}?"
            if _guess(mode, SSLMODES) else "sslmode='verify-full'",
        )
    return mode


def _check_tls(topology: Topology, local: str, allowed: bool) -> None:
    """No failover may downgrade TLS: every endpoint is at least as strong as the
    strongest endpoint of the local zone, unless ``allow_tls_downgrade``.

    Unix-socket endpoints take no part: their traffic never crosses a network, and
    libpq uses no TLS on a socket whatever the ``sslmode``."""
    modes = [(ep, _sslmode(ep)) for ep in topology.endpoints]
    if allowed:
        return
    modes = [(ep, m) for ep, m in modes if not ep.is_socket]
    rank = SSLMODES.index
    # Only a mode the local zone asks for is a requirement; unset elsewhere is "prefer".
    floor = max((rank(m) for ep, m in modes if ep.zone == local and "sslmode" in ep.params),
                default=0)
    weaker = [(ep, m) for ep, m in modes if rank(m) < floor]
    if not weaker:
        return
    ep, mode = weaker[0]
    zones = sorted({e.zone for e, _ in weaker})
    strong = SSLMODES[floor]
    where = (f"zone {local!r}" if ep.zone != local
             else f"another endpoint of zone {local!r}")
    raise ZonalConfigError(
        f"zones[{ep.zone!r}]['params']['sslmode']",
        f"{mode!r} is weaker than {strong!r} of {where} (the local zone): a failover to "
        f"{', '.join(map(repr, zones))} would downgrade TLS"
        + (" (no sslmode means libpq's default, 'prefer')" if "sslmode" not in ep.params
           else ""),
        fix=f"sslmode={strong!r} (and its certificates) for zone {ep.zone!r} too, "
            "or allow_tls_downgrade=True if that zone is trusted",
    )


# -- sources ------------------------------------------------------------------------------


@dataclass
class _Layer:
    origin: str | None  # None: keyword arguments or the dict
    values: dict[str, Any]


def _canonical(raw: Mapping[Any, Any], origin: str | None) -> dict[str, Any]:
    """Known keys only, ``topology`` folded into ``zones``."""
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in OPTIONS:
            raise _unknown_option(key, origin)
        values[key] = value
    if "topology" in values:
        topology = values.pop("topology")
        if values.get("zones") is not None and topology is not None:
            raise _located(
                ZonalConfigError(
                    "topology", "was given together with zones", fix="give one of them"
                ),
                origin,
            )
        if topology is not None or "zones" not in values:
            values["zones"] = topology
    return values


def _explicit_layer(options: object, kwargs: Mapping[str, Any]) -> _Layer:
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ZonalConfigError(
            "options",
            f"must be a mapping of option name to value, not {_show(options)}",
            fix="build_config({'zones': {...}}) or build_config(zones={...})",
        )
    merged = _canonical(options, None)
    for key, value in _canonical(kwargs, None).items():
        if key in merged and not _same(merged[key], value):
            raise ZonalConfigError(
                key,
                "was given twice with different values (in the dict and as a keyword)",
                fix="give it once",
            )
        merged[key] = value
    return _Layer(None, merged)


def _same(a: object, b: object) -> bool:
    try:
        return a is b or bool(a == b)
    except Exception:  # a user object with an odd __eq__: treat as different
        return False


def _env_text(environ: Mapping[str, Any], key: str) -> str | None:
    value = environ.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ZonalConfigError(key, f"env values are strings, not {_show(value)}")
    return value.strip() or None


def _decoded(data: object, origin: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        # Never echo the value: a lone string may be an endpoint with its password.
        raise ZonalConfigError(
            origin,
            f"must hold a mapping (an object), not a {type(data).__name__}",
            fix='{"zones": {"a": "10.0.1.5:6432"}, "local_zone": "a"}',
        )
    return _canonical(data, origin)


def _json_error(exc: Exception) -> str:
    line = getattr(exc, "lineno", None)
    if line is None:
        return "is not valid JSON"
    msg, col = getattr(exc, "msg", "error"), getattr(exc, "colno", "?")
    return f"is not valid JSON: {msg} at line {line}, column {col}"


def _file_layer(environ: Mapping[str, Any]) -> _Layer | None:
    raw = _env_text(environ, ENV_TOPOLOGY_FILE)
    if raw is None:
        return None
    path = Path(raw).expanduser()
    origin = f"{ENV_TOPOLOGY_FILE}={path}"
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ZonalConfigError(
            ENV_TOPOLOGY_FILE,
            f"{path}: unknown format {suffix or '(no extension)'!r}",
            fix="name the file *.toml or *.json",
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ZonalConfigError(
            ENV_TOPOLOGY_FILE,
            f"cannot read {path}: {exc.strerror or type(exc).__name__}",
            fix=f"check the path and its permissions, or unset {ENV_TOPOLOGY_FILE}",
        ) from None
    try:
        if suffix == ".toml":
            parsed: object = tomllib.loads(data.decode("utf-8"))
        else:
            parsed = json.loads(data.decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ZonalConfigError(
            ENV_TOPOLOGY_FILE, f"{path} is not valid TOML: {exc}", fix="fix the file"
        ) from None
    except UnicodeDecodeError:
        raise ZonalConfigError(
            ENV_TOPOLOGY_FILE, f"{path} is not UTF-8 text", fix="save it as UTF-8"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise ZonalConfigError(
            ENV_TOPOLOGY_FILE, f"{path} {_json_error(exc)}", fix="fix the file"
        ) from None
    return _Layer(origin, _decoded(parsed, origin))


def _env_layer(environ: Mapping[str, Any]) -> _Layer | None:
    raw = _env_text(environ, ENV_TOPOLOGY)
    if raw is None:
        return None
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # Never echo the value: it may hold passwords.
        raise ZonalConfigError(
            ENV_TOPOLOGY,
            _json_error(exc),
            fix=f'{ENV_TOPOLOGY}=\'{{"zones": {{"a": "10.0.1.5:6432"}}}}\'',
        ) from None
    return _Layer(ENV_TOPOLOGY, _decoded(parsed, ENV_TOPOLOGY))


# -- build_config -------------------------------------------------------------------------


def build_config(
    options: Mapping[str, Any] | None = None,
    /,
    *,
    environ: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> ZonalConfig:
    """Gather, check and freeze the configuration.

    Sources, highest first: keyword arguments and ``options`` (the same key in both
    with different values is an error), the file named by ``ZONAL_TOPOLOGY_FILE``
    (``.toml`` or ``.json``), then ``ZONAL_TOPOLOGY`` (JSON). Each option comes from
    the highest source that sets it; the zones come whole from one source, with that
    source's ``version`` (a ``version`` keyword overrides it). ``local_zone``:
    keyword, else ``ZONAL_LOCAL_ZONE``, else the file, else ``ZONAL_TOPOLOGY``, else
    the first zone. ``serverless=True`` fills :data:`SERVERLESS_DEFAULTS` only where
    no source set the option.

    ``environ`` replaces ``os.environ`` (tests). Strings are accepted for numbers and
    flags (``"5"``, ``"true"``); bools are not numbers; ``pgbouncer=True`` means
    ``"transaction"``; ``query_timeout=None`` disables it; ``max_total`` may not be
    below ``pool_size`` and ``min_idle`` may not exceed it.

    >>> build_config(zones={"a": "h:6432"}, pool_sise=3, environ={})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    zonal_core.errors.ZonalConfigError: pool_sise: is not a zonal option (fix: did you mean ...)
    """
    secrets: set[str] = set()
    try:
        env: Mapping[str, Any] = os.environ if environ is None else environ
        if not isinstance(env, Mapping):
            raise ZonalConfigError("environ", f"must be a mapping, not {_show(env)}")
        explicit = _explicit_layer(options, kwargs)
        collect_secrets(explicit.values, secrets)
        layers = [explicit]
        for load in (_file_layer, _env_layer):
            layer = load(env)
            if layer is not None:
                collect_secrets(layer.values, secrets)
                layers.append(layer)
        return _resolve(layers, env)
    except ZonalConfigError as exc:
        if not secrets:
            raise
        raise exc.redacted(lambda text: redact(text, secrets)) from None


def _resolve(layers: list[_Layer], env: Mapping[str, Any]) -> ZonalConfig:
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    explicit: set[str] = set()

    def take(key: str) -> bool:
        for layer in layers:
            if key in layer.values and not (key in _NONE_IS_UNSET and layer.values[key] is None):
                values[key] = layer.values[key]
                explicit.add(key)
                if layer.origin:
                    origin[key] = layer.origin
                return True
        return False

    # Zones come whole from one source, with that source's version.
    zones_layer = next((layer for layer in layers if layer.values.get("zones") is not None), None)
    if zones_layer is None:
        raise ZonalConfigError(
            "zones",
            "no zones were given",
            fix=f"zones={{'a': '10.0.1.5:6432'}}, or set {ENV_TOPOLOGY} or {ENV_TOPOLOGY_FILE}",
        )
    raw_zones = zones_layer.values["zones"]
    if not isinstance(raw_zones, Mapping | Topology):
        raise _located(
            ZonalConfigError(
                "zones",
                "must be a mapping of zone name to endpoints, or a Topology, "
                f"not {_show(raw_zones)}",
                fix="zones={'eu-west-1a': '10.0.1.5:6432', 'eu-west-1b': '10.0.2.5:6432'}",
            ),
            zones_layer.origin,
        )
    try:
        topology = parse_topology(raw_zones, version=zones_layer.values.get("version"))
    except ZonalConfigError as exc:
        raise _located(exc, zones_layer.origin) from None
    own_version = layers[0].values.get("version")
    if own_version is not None and own_version != topology.version:
        topology = parse_topology(dataclasses.replace(topology, version=None), version=own_version)
    values["topology"] = topology
    explicit.add("zones")
    if zones_layer.origin:
        origin["zones"] = zones_layer.origin
    if topology.version is not None:
        explicit.add("version")

    # local_zone: keyword, ZONAL_LOCAL_ZONE, the file, ZONAL_TOPOLOGY, the first zone.
    local = layers[0].values.get("local_zone")
    if local is not None:
        explicit.add("local_zone")
    elif (from_env := _env_text(env, ENV_LOCAL_ZONE)) is not None:
        local, origin["local_zone"] = from_env, ENV_LOCAL_ZONE
        explicit.add("local_zone")
    else:
        take("local_zone")
        local = values.get("local_zone")
    values["local_zone"] = local

    for key, check in _CHECKS.items():
        if not take(key):
            values[key] = DEFAULTS.get(key)
        elif key == "max_total":
            # Checked here, where 0 is an error; _normalize reads 0 as "unset".
            try:
                values[key] = check(values[key], key)
            except ZonalConfigError as exc:
                raise _located(exc, origin.get(key)) from None
    if _flag_of(values, origin, "serverless"):
        for key, default in SERVERLESS_DEFAULTS.items():
            if key not in explicit:
                values[key] = default
    values["explicit"] = frozenset(explicit)
    return ZonalConfig(**_normalize(values, origin))


def _flag_of(values: Mapping[str, Any], origin: Mapping[str, str], key: str) -> bool:
    try:
        return _flag(values[key], key)
    except ZonalConfigError as exc:
        raise _located(exc, origin.get(key)) from None
