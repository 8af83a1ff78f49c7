"""Zones and their endpoints: what a pool may connect to.

A :class:`Topology` is an immutable value: zones in order of appearance, each with
its endpoints (PgBouncer or PostgreSQL addresses), a priority and an optional
``direct`` endpoint (PostgreSQL itself, for migrations behind PgBouncer).

>>> topo = Topology.parse({"a": "10.0.1.5:6432", "b": ["[::1]:6432", "db-b"]})
>>> topo.names
('a', 'b')
>>> [str(e) for e in topo.zone("b").endpoints]
['[::1]:6432', 'db-b:5432']

A host starting with ``/`` is a Unix-socket directory (libpq's rule): the server's
socket is the file ``.s.PGSQL.<port>`` in it. Only a final ``:<digits>`` is a port,
so Cloud SQL's ``/cloudsql/project:region:instance`` needs none:

>>> [e.address for e in Topology.parse({"c": "/cloudsql/p:r:i", "d": "/tmp:5433"}).endpoints]
['/cloudsql/p:r:i:5432', '/tmp:5433']

Every malformed value raises :class:`~zonal_core.errors.ZonalConfigError` naming its
place (``zones['b'][1]``) and the fix; no message, repr or str holds a password.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import ipaddress
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from .errors import ZonalConfigError
from .secrets import MASK, redact

__all__ = [
    "DEFAULT_PORT",
    "Endpoint",
    "Params",
    "Topology",
    "Zone",
    "collect_secrets",
    "did_you_mean",
    "parse_topology",
]

DEFAULT_PORT = 5432
"""The port of an endpoint written without one."""

_ZONE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.\-]{0,252})")
_PARAM_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_URL_SCHEME = re.compile(r"postgres(?:ql)?(?:\+[A-Za-z0-9_]+)?://", re.IGNORECASE)
_MAX_TEXT = 2048  # no endpoint or parameter is longer; bounds the work on junk input
_MAX_PRIORITY = 1_000_000
_MAX_SOCKET_PATH = 107  # bytes of sockaddr_un.sun_path (108 on Linux) without its NUL
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Parameters that zonal sets itself or that belong to the endpoint string: allowing
# them in `params` would be a silent conflict.
_RESERVED_PARAMS = {
    "host": "write the host in the endpoint: 'host:port'",
    "hostaddr": "write the address in the endpoint: 'host:port'",
    "port": "write the port in the endpoint: 'host:port'",
    "user": "write the user in the endpoint: 'user@host:port'",
    "password": "write it in the endpoint ('user:password@host:port') or the URL",
    "connect_timeout": "use zonal's connect_timeout option",
    "target_session_attrs": "use zonal's target_session_attrs option",
}
_ZONE_KEYS = ("endpoints", "priority", "direct", "params")
_ENDPOINT_KEYS = ("host", "port", "user", "password", "params")
_TOPOLOGY_KEYS = ("zones", "version")


def _is_secret_key(key: str) -> bool:
    low = key.lower()
    return "password" in low or "secret" in low or low == "sslkey"


def _key(name: object) -> str:
    """A zone name or key as it appears in a field path: ``'b'``, truncated."""
    if isinstance(name, str) and len(name) > 60:
        return repr(name[:57] + "...")
    text = repr(name)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: object) -> str:
    return "None" if value is None else type(value).__name__


def did_you_mean(word: object, choices: Iterable[str],
                 hints: Mapping[str, str] | None = None) -> str | None:
    """The choice ``word`` was probably meant to be, or None: a known near-miss of
    ``hints`` first (``pool_timeout`` -> ``timeout``), then the closest spelling.
    The one did-you-mean of zonal's configuration errors.

    >>> did_you_mean("pool_sise", ["pool_size", "timeout"])
    'pool_size'
    """
    if not isinstance(word, str):
        return None
    options = sorted(choices)
    if hints and word in hints and hints[word] in options:
        return hints[word]
    close = difflib.get_close_matches(word.strip().lower(), options, n=1, cutoff=0.6)
    if not close and word != word.strip().lower():
        close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return close[0] if close else None


def _unknown_key(where: str, key: object, choices: Sequence[str]) -> ZonalConfigError:
    guess = did_you_mean(key, choices)
    hint = f"did you mean {guess!r}?" if guess else f"use one of: {', '.join(choices)}"
    return ZonalConfigError(f"{where}[{_key(key)}]", "is not a known key", fix=hint)


class Params(Mapping[str, str]):
    """An immutable, hashable mapping of driver parameters (``sslmode`` and the like).

    Values whose key names a secret (``sslpassword``...) are masked in its repr.

    >>> p = Params({"sslmode": "require"})
    >>> p["sslmode"], dict(p), hash(p) == hash(Params(sslmode="require"))
    ('require', {'sslmode': 'require'}, True)
    """

    __slots__ = ("_items",)
    _items: tuple[tuple[str, str], ...]

    def __init__(self, items: Mapping[str, str] | None = None, /, **kwargs: str) -> None:
        merged = dict(items or {})
        merged.update(kwargs)
        object.__setattr__(self, "_items", tuple(sorted(merged.items())))

    def __getitem__(self, key: str) -> str:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Params):
            return self._items == other._items
        if isinstance(other, Mapping):
            return dict(self._items) == dict(other)
        return NotImplemented

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Params is immutable")

    def __reduce__(self) -> tuple[type[Params], tuple[dict[str, str]]]:
        return (Params, (dict(self._items),))

    def masked(self) -> dict[str, str]:
        """A plain dict with secret values replaced by ``***``."""
        return {k: (MASK if _is_secret_key(k) else v) for k, v in self._items}

    def __repr__(self) -> str:
        return f"Params({self.masked()!r})"


_NO_PARAMS = Params()


# -- validators shared by the dataclasses and the parser --------------------------------


def _check_zone_name(name: object, where: str) -> str:
    if not isinstance(name, str):
        raise ZonalConfigError(
            where, f"a zone name must be a string, not {_kind(name)}", fix="name zones 'a'"
        )
    if not _ZONE_NAME.fullmatch(name):
        raise ZonalConfigError(
            where,
            "a zone name must be 1 to 100 letters, digits, '-', '_' or '.'",
            fix="use a name like 'eu-west-1a'",
        )
    return name


def _check_host(host: object, where: str) -> str:
    if not isinstance(host, str):
        raise ZonalConfigError(where, f"host must be a string, not {_kind(host)}")
    if not host:
        raise ZonalConfigError(where, "has no host", fix="write 'host:port'")
    if host.startswith("/"):
        return _check_socket_dir(host, where)
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host).compressed
        except ValueError:
            raise ZonalConfigError(
                where,
                "host is not a valid IPv6 address",
                fix="write IPv6 endpoints as '[2001:db8::1]:5432'",
            ) from None
    if len(host) > 253 or not _HOSTNAME.fullmatch(host):
        raise ZonalConfigError(
            where,
            "host is not a valid host name or address",
            fix="use a DNS name, an IPv4 address, '[IPv6]' or the absolute path of a "
            "Unix-socket directory ('/var/run/postgresql')",
        )
    return host


def _check_socket_dir(path: str, where: str) -> str:
    """A Unix-socket directory: absolute, one path libpq can use; normalized (no
    repeated or trailing ``/``). Need not exist yet."""
    fix = "write the absolute path of the directory, e.g. '/var/run/postgresql'"
    if len(path) > _MAX_TEXT:
        raise ZonalConfigError(where, f"the socket directory is longer than {_MAX_TEXT} "
                               "characters", fix=fix)
    if _CONTROL.search(path):
        raise ZonalConfigError(where, "the socket directory holds a control character "
                               "(NUL, newline, ...)", fix=fix)
    if "," in path:
        # libpq reads a ',' in host as a list of hosts
        raise ZonalConfigError(where, "the socket directory holds ',', which libpq reads as "
                               "a list of hosts", fix="list each endpoint on its own, or use "
                               "a path without ',' (a symlink to the directory works)")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise ZonalConfigError(where, "the socket directory is not valid text", fix=fix) from None
    normalized = re.sub(r"/{2,}", "/", path)
    return normalized.rstrip("/") or "/"


def socket_file(directory: str, port: int) -> str:
    """The socket a server on ``port`` listens on in ``directory`` (libpq's name).

    >>> socket_file("/var/run/postgresql", 5432)
    '/var/run/postgresql/.s.PGSQL.5432'
    """
    return f"{directory.rstrip('/')}/.s.PGSQL.{port}"


def _check_socket_length(directory: str, port: int, where: str) -> None:
    size = len(socket_file(directory, port).encode("utf-8"))
    if size > _MAX_SOCKET_PATH:
        raise ZonalConfigError(
            where,
            f"the socket path (directory + '/.s.PGSQL.{port}') is {size} bytes; a Unix "
            f"socket path holds at most {_MAX_SOCKET_PATH} (sun_path)",
            fix="use a shorter directory: a symlink to it works, e.g. "
                "'ln -s <directory> /tmp/pg' and zones={...: '/tmp/pg'}")


def _check_port(port: object, where: str) -> int:
    fix = "use a port from 1 to 65535, e.g. 'host:6432'"
    if isinstance(port, str):
        text = port.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 5:
            raise ZonalConfigError(where, "port must be a whole number", fix=fix)
        port = int(text)
    if isinstance(port, bool) or not isinstance(port, int):
        raise ZonalConfigError(where, f"port must be a whole number, not {_kind(port)}", fix=fix)
    if not 1 <= port <= 65535:
        raise ZonalConfigError(where, "port must be from 1 to 65535", fix=fix)
    return port


def _check_optional_text(value: object, what: str, where: str) -> str | None:
    # Never echo the value: it may be (or be next to) a password.
    if value is None:
        return None
    if not isinstance(value, str):
        raise ZonalConfigError(where, f"{what} must be a string, not {_kind(value)}")
    if len(value) > _MAX_TEXT:
        raise ZonalConfigError(where, f"{what} is longer than {_MAX_TEXT} characters")
    return value or None


def _check_params(value: object, where: str) -> Params:
    if value is None:
        return _NO_PARAMS
    if not isinstance(value, Mapping):
        raise ZonalConfigError(
            where,
            f"params must be a mapping of name to value, not {_kind(value)}",
            fix="params={'sslmode': 'require'}",
        )
    if isinstance(value, Params):
        items: dict[str, str] = dict(value)
    else:
        items = {}
        for key, raw in value.items():
            spot = f"{where}[{_key(key)}]"
            if not isinstance(key, str) or not _PARAM_KEY.fullmatch(key):
                raise ZonalConfigError(
                    spot, "a parameter name must be a libpq keyword", fix="e.g. 'sslmode'"
                )
            if key.lower() in _RESERVED_PARAMS:
                raise ZonalConfigError(
                    spot, "is not allowed here", fix=_RESERVED_PARAMS[key.lower()]
                )
            if isinstance(raw, bool) or not isinstance(raw, str | int):
                raise ZonalConfigError(
                    spot,
                    f"a parameter value must be a string, not {_kind(raw)}",
                    fix="write the value as libpq expects it, e.g. 'require' or '1'",
                )
            text = str(raw)
            if len(text) > _MAX_TEXT or "\x00" in text:
                raise ZonalConfigError(spot, "is not a valid parameter value")
            items[key] = text
    return Params(items) if items else _NO_PARAMS


# -- the values ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One address of a zone: ``host:port``, with optional credentials and params.

    ``host`` holds IPv6 addresses without brackets; :attr:`address` adds them. A host
    starting with ``/`` is a Unix-socket directory (:attr:`is_socket`); its
    :attr:`address` is ``directory:port``, the port always written, so it parses
    back to the same endpoint. The password never appears in the repr or str.

    >>> e = Endpoint("a", "::1", 6432, user="app", password="secret")
    >>> e.address, e.key, str(e)
    ('[::1]:6432', 'a/[::1]:6432', '[::1]:6432')
    >>> "secret" in repr(e)
    False
    >>> s = Endpoint("a", "/cloudsql/p:r:i", 5432)
    >>> s.is_socket, s.address, s.socket_path
    (True, '/cloudsql/p:r:i:5432', '/cloudsql/p:r:i/.s.PGSQL.5432')
    """

    zone: str
    host: str
    port: int
    index: int = 0
    """Position within its zone (0 for a zone's ``direct`` endpoint)."""
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    params: Mapping[str, str] = _NO_PARAMS
    """Per-endpoint driver parameters, e.g. ``sslmode``; a hashable :class:`Params`."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "zone", _check_zone_name(self.zone, "endpoint.zone"))
        set_(self, "host", _check_host(self.host, "endpoint.host"))
        set_(self, "port", _check_port(self.port, "endpoint.port"))
        if self.host.startswith("/"):
            _check_socket_length(self.host, self.port, "endpoint.host")
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise ZonalConfigError("endpoint.index", "must be a whole number >= 0")
        set_(self, "user", _check_optional_text(self.user, "user", "endpoint.user"))
        set_(self, "password", _check_optional_text(self.password, "password", "endpoint.password"))
        set_(self, "params", _check_params(self.params, "endpoint.params"))

    @property
    def is_socket(self) -> bool:
        """True when :attr:`host` is a Unix-socket directory (it starts with ``/``)."""
        return self.host.startswith("/")

    @property
    def socket_path(self) -> str | None:
        """The socket file, ``directory/.s.PGSQL.<port>``, of a socket endpoint."""
        return socket_file(self.host, self.port) if self.is_socket else None

    @property
    def ident(self) -> tuple[str, int]:
        """What makes two endpoints the same server: host names compare without
        case, socket directories with it."""
        return (self.host if self.is_socket else self.host.lower(), self.port)

    @property
    def address(self) -> str:
        """``host:port``, with brackets around an IPv6 host: ``[::1]:5432``; a socket
        directory and its port: ``/var/run/postgresql:5432``."""
        if ":" in self.host and not self.is_socket:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def key(self) -> str:
        """``zone/host:port`` (``zone//socket/dir:port``): unique within a topology,
        fit for a metric label."""
        return f"{self.zone}/{self.address}"

    def display(self) -> str:
        """``user:***@host:port`` (the user and a mask only when set): for humans."""
        if self.user is None and self.password is None:
            return self.address
        cred = (self.user or "") + (f":{MASK}" if self.password is not None else "")
        return f"{cred}@{self.address}"

    def __str__(self) -> str:
        return self.address


@dataclass(frozen=True)
class Zone:
    """A zone: its endpoints in order, a priority and an optional direct endpoint.

    ``priority``: lower is preferred after the local zone; parsed topologies default
    it to the zone's order of appearance.
    """

    name: str
    endpoints: tuple[Endpoint, ...]
    priority: int = 0
    direct: Endpoint | None = None
    """PostgreSQL itself, bypassing PgBouncer (for migrations and admin work)."""

    def __post_init__(self) -> None:
        where = f"zones[{_key(self.name)}]"
        _check_zone_name(self.name, where)
        given: object = self.endpoints  # checked: callers outside mypy pass anything
        if isinstance(given, Endpoint) or not isinstance(given, Sequence):
            raise ZonalConfigError(where, "endpoints must be a tuple of Endpoint")
        eps = tuple(given)
        if not eps:
            raise ZonalConfigError(where, "has no endpoints", fix=f"{where} = 'host:port'")
        for ep in (*eps, self.direct) if self.direct is not None else eps:
            if not isinstance(ep, Endpoint):
                raise ZonalConfigError(where, f"endpoints must be Endpoint, not {_kind(ep)}")
            if ep.zone != self.name:
                raise ZonalConfigError(
                    where, f"holds an endpoint of zone {_key(ep.zone)}", fix="set Endpoint.zone"
                )
        seen: set[tuple[str, int]] = set()
        for ep in eps:
            if ep.ident in seen:
                raise ZonalConfigError(
                    f"{where}[{ep.index}]",
                    f"{ep.address} is listed twice",
                    fix="list each endpoint once",
                )
            seen.add(ep.ident)
        object.__setattr__(self, "priority", _check_priority(self.priority, f"{where}['priority']"))
        object.__setattr__(self, "endpoints", eps)


@dataclass(frozen=True)
class Topology:
    """The zones a pool may use, in order of appearance, and an optional ``version``.

    >>> t = Topology.parse({"version": "v7", "zones": {"a": "h1:6432", "b": "h2"}})
    >>> t.version, t.names, [e.key for e in t.endpoints]
    ('v7', ('a', 'b'), ['a/h1:6432', 'b/h2:5432'])
    """

    zones: tuple[Zone, ...]
    version: str | None = None

    def __post_init__(self) -> None:
        zones = self.zones
        if isinstance(zones, Zone) or not isinstance(zones, Sequence) or not zones:
            raise ZonalConfigError(
                "zones", "needs at least one zone", fix="zones={'a': '10.0.1.5:6432'}"
            )
        zones = tuple(zones)
        names: set[str] = set()
        owner: dict[tuple[str, int], str] = {}
        for zone in zones:
            if not isinstance(zone, Zone):
                raise ZonalConfigError("zones", f"must hold Zone values, not {_kind(zone)}")
            if zone.name in names:
                raise ZonalConfigError(f"zones[{_key(zone.name)}]", "is listed twice")
            names.add(zone.name)
            for ep in zone.endpoints:
                other = owner.setdefault(ep.ident, zone.name)
                if other != zone.name:
                    raise ZonalConfigError(
                        f"zones[{_key(zone.name)}][{ep.index}]",
                        f"{ep.address} is also an endpoint of zone {_key(other)}",
                        fix="give each zone its own endpoints",
                    )
        object.__setattr__(self, "zones", zones)
        object.__setattr__(self, "version", _check_version(self.version, "version"))

    @property
    def names(self) -> tuple[str, ...]:
        """Zone names in order of appearance."""
        return tuple(z.name for z in self.zones)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """Every endpoint of every zone (not the ``direct`` ones), zone by zone."""
        return tuple(ep for z in self.zones for ep in z.endpoints)

    def zone(self, name: str) -> Zone:
        """The zone called ``name``; ``KeyError`` naming the known zones if none is."""
        for z in self.zones:
            if z.name == name:
                return z
        raise KeyError(f"no zone {name!r}; zones are {', '.join(self.names)}")

    def __contains__(self, name: object) -> bool:
        return any(z.name == name for z in self.zones)

    def __iter__(self) -> Iterator[Zone]:
        return iter(self.zones)

    def __len__(self) -> int:
        return len(self.zones)

    def as_dict(self) -> dict[str, Any]:
        """The file format (``{"version": ..., "zones": {...}}``), passwords masked.

        >>> Topology.parse({"a": "app:pw@h:6432"}).as_dict()
        {'zones': {'a': {'endpoints': ['app:***@h:6432'], 'priority': 0}}}
        """
        zones: dict[str, Any] = {}
        for z in self.zones:
            entry: dict[str, Any] = {
                "endpoints": [_endpoint_dict(ep) for ep in z.endpoints],
                "priority": z.priority,
            }
            if z.direct is not None:
                entry["direct"] = _endpoint_dict(z.direct)
            zones[z.name] = entry
        out: dict[str, Any] = {"zones": zones}
        if self.version is not None:
            out["version"] = self.version
        return out

    @classmethod
    def parse(cls, value: Topology | Mapping[str, Any] | str) -> Topology:
        """Build a topology from any accepted shape.

        - a :class:`Topology` (returned as is);
        - a mapping of zone name to endpoints: ``{"a": "h:6432"}``,
          ``{"a": ["h1:6432", "h2:6432"]}``, ``{"a": {"endpoints": [...],
          "priority": 1, "direct": "h:5432", "params": {"sslmode": "require"}}}``;
        - the file format ``{"version": "v7", "zones": {...}}`` (a mapping whose only
          keys are ``zones`` and ``version``, ``zones`` being a mapping);
        - a string: that format as JSON, or one endpoint (a zone named ``default``).

        Endpoints: ``host:port``, ``host`` (port 5432), ``[::1]:5432``,
        ``user:pass@host:port``, ``postgresql://user:pass@host:port/...`` (only user,
        password, host and port are taken, ``host`` and ``port`` also from the query
        string), or a mapping with ``host``, ``port``, ``user``, ``password``,
        ``params``. A Unix-socket directory: ``/var/run/postgresql``,
        ``/var/run/postgresql:5433``, ``user:pass@/cloudsql/proj:region:inst`` (only a
        final ``:<digits>`` is a port), ``postgresql://user@/db?host=/dir&port=5433``,
        or the mapping ``{"host": "/dir", "port": 5433}`` (the host taken as is).
        """
        return parse_topology(value)


def _check_version(value: object, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**18:
        value = str(value)  # TOML `version = 7`
    if not isinstance(value, str):
        raise ZonalConfigError(where, f"must be a string, not {_kind(value)}", fix="version='v7'")
    if not value or len(value) > 200 or not value.isprintable():
        raise ZonalConfigError(where, "must be 1 to 200 printable characters", fix="version='v7'")
    return value


def _endpoint_dict(ep: Endpoint) -> str | dict[str, Any]:
    if not ep.params:
        return ep.display()
    out: dict[str, Any] = {"host": ep.host, "port": ep.port}
    if ep.user is not None:
        out["user"] = ep.user
    if ep.password is not None:
        out["password"] = MASK
    out["params"] = Params(ep.params).masked()
    return out


# -- the parser ---------------------------------------------------------------------------


def parse_topology(value: object, *, field: str = "zones", version: object = None) -> Topology:
    """:meth:`Topology.parse` with the field path of the error messages.

    ``field`` prefixes every path (``zones['b'][1]``); ``version`` is used when the
    value carries none. Errors are redacted of every password found in ``value``.
    """
    try:
        return _parse_topology(value, field, version)
    except ZonalConfigError as exc:
        secrets: set[str] = set()
        collect_secrets(value, secrets)
        if not secrets:
            raise
        raise exc.redacted(lambda text: redact(text, secrets)) from None


_USERINFO_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def collect_secrets(value: object, out: set[str], _depth: int = 0) -> None:
    """Add to ``out`` whatever in raw config input may be a password.

    The password part of every ``user:password@`` string (and its percent-decoded
    form), every string under a key naming a password, and the passwords of
    :class:`Endpoint`, :class:`Zone` and :class:`Topology` values, at any depth. Used
    to redact error messages about input that could not be parsed.
    """
    if _depth > 32:
        return
    deeper = _depth + 1
    if isinstance(value, str):
        if value.lstrip().startswith(("{", "[")) and _depth == 0:
            with contextlib.suppress(ValueError, RecursionError):  # JSON form: look inside
                collect_secrets(json.loads(value), out, deeper)
        if "@" in value:
            userinfo = _USERINFO_SCHEME.sub("", value.rpartition("@")[0])
            _, colon, password = userinfo.partition(":")
            if colon and password:
                out.update((password, unquote(password)))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and _is_secret_key(key) and isinstance(item, str):
                out.add(item)
            collect_secrets(key, out, deeper)
            collect_secrets(item, out, deeper)
    elif isinstance(value, list | tuple):
        for item in value:
            collect_secrets(item, out, deeper)
    elif isinstance(value, Topology):
        collect_secrets(value.zones, out, deeper)
    elif isinstance(value, Zone):
        collect_secrets((*value.endpoints, value.direct), out, deeper)
    elif isinstance(value, Endpoint):
        if value.password:
            out.add(value.password)
        collect_secrets(dict(value.params), out, deeper)


def _parse_topology(value: object, field: str, version: object) -> Topology:
    if isinstance(value, Topology):
        if version is not None and value.version is None:
            return dataclasses.replace(value, version=_check_version(version, "version"))
        return value
    if isinstance(value, str):
        return _parse_text(value, field, version)
    if not isinstance(value, Mapping):
        raise ZonalConfigError(
            field,
            f"must be a mapping of zone name to endpoints, not {_kind(value)}",
            fix="zones={'eu-west-1a': '10.0.1.5:6432'}",
        )
    inner = value.get("zones") if "zones" in value else None
    if (
        isinstance(inner, Mapping | Topology)
        and all(isinstance(k, str) for k in value)
        and set(value) <= set(_TOPOLOGY_KEYS)
    ):
        # The file format; its own version wins over the caller's fallback.
        own = value.get("version")
        return _parse_topology(inner, field, own if own is not None else version)
    return _parse_zones(value, field, version)


def _parse_text(text: str, field: str, version: object) -> Topology:
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except (ValueError, RecursionError) as exc:
            where = getattr(exc, "lineno", None)
            at = f" at line {where}, column {getattr(exc, 'colno', '?')}" if where else ""
            raise ZonalConfigError(field, f"is not valid JSON{at}") from None
        return _parse_topology(data, field, version)
    ep = _parse_endpoint("default", stripped, 0, field, _NO_PARAMS)
    return Topology((Zone("default", (ep,)),), _check_version(version, "version"))


def _parse_zones(zones: Mapping[Any, Any], field: str, version: object) -> Topology:
    if not zones:
        raise ZonalConfigError(
            field, "needs at least one zone", fix="zones={'eu-west-1a': '10.0.1.5:6432'}"
        )
    parsed: list[Zone] = []
    owner: dict[tuple[str, int], str] = {}
    for position, (name, spec) in enumerate(zones.items()):
        zone, paths = _parse_zone(name, spec, position, f"{field}[{_key(name)}]")
        for ep, path in zip(zone.endpoints, paths, strict=True):
            other = owner.setdefault(ep.ident, zone.name)
            if other != zone.name:
                raise ZonalConfigError(
                    path,
                    f"{ep.address} is also an endpoint of zone {_key(other)}",
                    fix="give each zone its own endpoints",
                )
        parsed.append(zone)
    return Topology(tuple(parsed), _check_version(version, "version"))


def _parse_zone(
    name: object, spec: object, position: int, where: str
) -> tuple[Zone, tuple[str, ...]]:
    """One zone, and the field path of each of its endpoints."""
    name = _check_zone_name(name, where)
    if isinstance(spec, Zone):
        if spec.name != name:
            raise ZonalConfigError(where, f"holds Zone {_key(spec.name)}", fix="match the names")
        return spec, tuple(f"{where}[{i}]" for i in range(len(spec.endpoints)))
    priority = position  # default: order of appearance
    direct: Endpoint | None = None
    params = _NO_PARAMS
    items_where = where
    if isinstance(spec, Mapping) and "endpoints" in spec:
        for key in spec:
            if key not in _ZONE_KEYS:
                raise _unknown_key(where, key, _ZONE_KEYS)
        params = _check_params(spec.get("params"), f"{where}['params']")
        if "priority" in spec:
            priority = _check_priority(spec["priority"], f"{where}['priority']")
        raw_direct = spec.get("direct")
        if raw_direct is not None:
            direct = _parse_endpoint(name, raw_direct, 0, f"{where}['direct']", params)
        items_where = f"{where}['endpoints']"
        spec = spec["endpoints"]
    if isinstance(spec, str | Mapping | Endpoint):
        raw_items: list[object] = [spec]
        paths: tuple[str, ...] = (items_where,)
    elif isinstance(spec, list | tuple):
        raw_items = list(spec)
        paths = tuple(f"{items_where}[{i}]" for i in range(len(raw_items)))
    else:
        raise ZonalConfigError(
            items_where,
            f"must be an endpoint 'host:port' or a list of them, not {_kind(spec)}",
            fix=f"{where} = ['10.0.1.5:6432']",
        )
    if not raw_items:
        raise ZonalConfigError(
            items_where, "has no endpoints", fix=f"{where} = ['10.0.1.5:6432'], or remove the zone"
        )
    endpoints: list[Endpoint] = []
    seen: set[tuple[str, int]] = set()
    for i, (raw, path) in enumerate(zip(raw_items, paths, strict=True)):
        ep = _parse_endpoint(name, raw, i, path, params)
        if ep.ident in seen:
            raise ZonalConfigError(
                path, f"{ep.address} is listed twice in zone {_key(name)}", fix="list it once"
            )
        seen.add(ep.ident)
        endpoints.append(ep)
    return Zone(name, tuple(endpoints), priority, direct), paths


def _check_priority(value: object, where: str) -> int:
    fix = "priority=1 (lower is preferred after the local zone)"
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]{1,7}\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ZonalConfigError(where, f"must be a whole number, not {_kind(value)}", fix=fix)
    if abs(value) > _MAX_PRIORITY:
        raise ZonalConfigError(where, f"must be from -{_MAX_PRIORITY} to {_MAX_PRIORITY}", fix=fix)
    return value


def _parse_endpoint(
    zone: str, raw: object, index: int, where: str, zone_params: Params
) -> Endpoint:
    if isinstance(raw, Endpoint):
        if raw.zone != zone:
            raise ZonalConfigError(
                where, f"is an Endpoint of zone {_key(raw.zone)}", fix="set Endpoint.zone"
            )
        merged = {**zone_params, **raw.params}
        return dataclasses.replace(raw, index=index, params=Params(merged))
    if isinstance(raw, Mapping):
        for key in raw:
            if key not in _ENDPOINT_KEYS:
                raise _unknown_key(where, key, _ENDPOINT_KEYS)
        if "host" not in raw:
            raise ZonalConfigError(where, "has no host", fix="{'host': '10.0.1.5', 'port': 6432}")
        host = raw["host"]
        if isinstance(host, str) and host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        port = raw.get("port", DEFAULT_PORT)
        user = _check_optional_text(raw.get("user"), "user", where)
        password = _check_optional_text(raw.get("password"), "password", where)
        own = _check_params(raw.get("params"), f"{where}['params']")
        params = Params({**zone_params, **own})
    elif isinstance(raw, str):
        host, port, user, password = _split_endpoint(raw, where)
        params = zone_params
    else:
        raise ZonalConfigError(
            where,
            f"an endpoint must be a string 'host:port', not {_kind(raw)}",
            fix="'10.0.1.5:6432'",
        )
    good_host = _check_host(host, where)
    good_port = _check_port(port, where)
    if good_host.startswith("/"):
        _check_socket_length(good_host, good_port, where)
    return Endpoint(
        zone=zone,
        host=good_host,
        port=good_port,
        index=index,
        user=user,
        password=password,
        params=params,
    )


def _split_endpoint(text: str, where: str) -> tuple[str, str | int, str | None, str | None]:
    """``[user[:password]@]host[:port]``, ``[user[:password]@]/socket/dir[:port]`` or a
    postgresql:// URL, split up.

    The text is never echoed in an error: it may hold a password.
    """
    s = text.strip()
    if not s:
        raise ZonalConfigError(where, "is empty", fix="'10.0.1.5:6432'")
    if len(s) > _MAX_TEXT:
        raise ZonalConfigError(where, f"is longer than {_MAX_TEXT} characters")
    scheme = _URL_SCHEME.match(s)
    if scheme:
        return _split_url(s[scheme.end() :], where)
    if "://" in s:
        raise ZonalConfigError(
            where, "only postgresql:// URLs are accepted", fix="'postgresql://host:5432'"
        )
    # The last '@' ends the userinfo, so a password may hold '@' (and '/').
    userinfo, _, hostport = s.rpartition("@")
    if s.startswith("/"):
        userinfo, hostport = "", s  # a socket directory, '@' and all
    elif not hostport.startswith("/") and "@/" in s:
        # A socket directory holding '@': what follows the last '@' is no host
        # ('b/sock' of 'app@/run/a@b/sock'), or the user name would hold '@/'
        # ('app@/run/pg@main'). (With a password, 'app:pw@/run/pg@main' stays
        # host 'main': write such a directory in the mapping form.)
        if "/" in hostport:
            userinfo, _, tail = s.rpartition("@/")
            hostport = "/" + tail
        elif "@/" in userinfo.partition(":")[0]:
            userinfo, _, tail = s.partition("@/")
            hostport = "/" + tail
    user, _, password = userinfo.partition(":")
    if hostport.startswith("/"):
        host, port = _split_socket(hostport, where)
        return host, port, user or None, password or None
    if re.search(r"[/?#\s]", hostport):
        raise ZonalConfigError(
            where,
            "is not 'host:port' (a path, query or space follows the host)",
            fix="write 'host:port', a full 'postgresql://host:port/db' URL, or a "
                "Unix-socket directory starting with '/'",
        )
    host, port = _split_hostport(hostport, where)
    return host, port, user or None, password or None


def _split_socket(text: str, where: str) -> tuple[str, str | int]:
    """``/dir`` or ``/dir:port``: only a final ``:<digits>`` is a port (a Cloud SQL
    directory, ``/cloudsql/project:region:instance``, holds colons)."""
    if text.endswith(":"):
        raise ZonalConfigError(where, "has ':' but no port",
                               fix="'/var/run/postgresql:5433', or just the directory")
    match = re.fullmatch(r"(.*):([0-9]+)", text, re.DOTALL)
    if match is None:
        return text, DEFAULT_PORT
    return match[1], match[2]


def _split_url(rest: str, where: str) -> tuple[str, str | int, str | None, str | None]:
    """What follows ``postgresql://``. A host (and port) in the query string, as libpq
    takes them (``postgresql://app@/db?host=/var/run/postgresql``), or a
    percent-encoded socket directory as the host (``postgresql://%2Ftmp:5433/db``)."""
    netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
    userinfo, _, hostport = netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    user, password = unquote(user), unquote(password)
    query = rest.partition("#")[0].partition("?")[2]
    pairs = parse_qsl(query, keep_blank_values=True)
    hosts = [v for k, v in pairs if k == "host"]
    ports = [v for k, v in pairs if k == "port"]
    if "," in hostport or len(hosts) > 1 or any("," in h for h in hosts):
        raise ZonalConfigError(
            where,
            "a URL with several hosts is not one endpoint",
            fix="list each host as its own endpoint",
        )
    if hosts:
        netloc_host, colon, netloc_port = hostport.partition(":")
        if netloc_host:
            raise ZonalConfigError(
                where, "the URL names a host twice (before the path and in ?host=)",
                fix="keep one: 'postgresql://user@/db?host=/var/run/postgresql'")
        host = hosts[0]
        if not host:
            raise ZonalConfigError(where, "has an empty ?host=", fix="?host=/var/run/postgresql")
        port: str | int = ports[-1] if ports else (netloc_port if colon else DEFAULT_PORT)
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return host, port, user or None, password or None
    if hostport[:3].upper() == "%2F":
        # libpq splits host and port before decoding: ':' in the directory is '%3A'
        raw_host, colon, raw_port = hostport.partition(":")
        port = raw_port if colon else DEFAULT_PORT
        if ports:
            port = ports[-1]
        return unquote(raw_host), port, user or None, password or None
    host, port = _split_hostport(hostport, where)
    if ports:
        port = ports[-1]
    return host, port, user or None, password or None


def _split_hostport(hostport: str, where: str) -> tuple[str, str | int]:
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise ZonalConfigError(where, "has '[' without ']'", fix="'[2001:db8::1]:5432'")
        host, rest = hostport[1:close], hostport[close + 1 :]
        if not rest:
            return host, DEFAULT_PORT
        if not rest.startswith(":"):
            raise ZonalConfigError(where, "expected ':port' after ']'", fix="'[::1]:5432'")
        if ":" not in host:
            raise ZonalConfigError(
                where, "brackets are for IPv6 addresses only", fix="'10.0.1.5:5432'"
            )
        return host, rest[1:]
    if hostport.count(":") >= 2:
        # A bare IPv6 address is fine without a port; with one it is ambiguous.
        try:
            return ipaddress.IPv6Address(hostport).compressed, DEFAULT_PORT
        except ValueError:
            raise ZonalConfigError(
                where,
                "is neither 'host:port' nor an IPv6 address",
                fix="write IPv6 endpoints with brackets: '[2001:db8::1]:5432'",
            ) from None
    host, colon, port = hostport.partition(":")
    if colon and not port:
        raise ZonalConfigError(where, "has ':' but no port", fix="'host:6432', or just 'host'")
    return host, (port if colon else DEFAULT_PORT)
