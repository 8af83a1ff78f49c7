"""Passwords that rotate: a ``password`` option may be a callable.

IAM database tokens (RDS, Cloud SQL) expire within minutes, so the password is
asked for again for every new connection. A provider may be a plain or an async
callable; an authentication failure is retried once with a fresh value.

>>> resolve(lambda: "t0ken"), resolve("fixed"), resolve(None)
('t0ken', 'fixed', None)
"""

from __future__ import annotations

import inspect
from typing import Any

from zonal_core.errors import CredentialError, ZonalConfigError

__all__ = ["resolve", "resolve_async"]


def _checked(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ZonalConfigError("password", f"the provider returned a {type(value).__name__}, "
                           "not a string", fix="return the token as a str")


def _call(provider: Any) -> Any:
    try:
        return provider()
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:200]
        raise CredentialError(f"the password provider failed: {type(exc).__name__}: "
                              f"{first}") from exc


def resolve(password: Any) -> str | None:
    """The password for one new connection (sync callers)."""
    value = _call(password) if callable(password) else password
    if inspect.isawaitable(value):
        if hasattr(value, "close"):
            value.close()  # never awaited: say so instead of warning later
        raise ZonalConfigError("password", "an async provider cannot serve a sync engine",
                               fix="pass a plain callable, or use the async engine/pool")
    return _checked(value)


async def resolve_async(password: Any) -> str | None:
    """The password for one new connection (async callers); awaits async providers."""
    value = _call(password) if callable(password) else password
    if inspect.isawaitable(value):
        try:
            value = await value
        except Exception as exc:
            raise CredentialError(f"the password provider failed: {type(exc).__name__}: "
                                  f"{(str(exc).splitlines() or [''])[0][:200]}") from exc
    return _checked(value)
