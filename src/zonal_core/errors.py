"""The exceptions of zonal: one root, :class:`ZonalError`.

Messages carry the pool name, the zone states and the limit that was hit; never a
password (see :func:`zonal_core.secrets.mask`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "CredentialError",
    "NoHealthyZone",
    "PoolClosed",
    "PoolTimeout",
    "QueryTimeout",
    "SessionStateError",
    "ZonalConfigError",
    "ZonalError",
]


class ZonalError(Exception):
    """Root of every error zonal raises."""


class ZonalConfigError(ZonalError, ValueError):
    """A configuration value is wrong. The message names the field and the fix.

    >>> raise ZonalConfigError("pool_size", "must be at least 1", fix="pool_size=5")
    Traceback (most recent call last):
    ...
    zonal_core.errors.ZonalConfigError: pool_size: must be at least 1 (fix: pool_size=5)
    """

    def __init__(self, field: str, problem: str, *, fix: str | None = None) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        msg = f"{field}: {problem}"
        if fix:
            msg += f" (fix: {fix})"
        super().__init__(msg)

    def redacted(self, scrub: Callable[[str], str]) -> ZonalConfigError:
        """The same error with ``scrub`` applied to its field, problem and fix."""
        return ZonalConfigError(scrub(self.field), scrub(self.problem),
                                fix=scrub(self.fix) if self.fix else None)


class PoolTimeout(ZonalError, TimeoutError):
    """No connection could be handed out within ``timeout`` seconds.

    The message names every zone's state: open, in use, waiting, ejected until when.
    """


class NoHealthyZone(ZonalError):
    """Every endpoint of every zone is ejected, and one last attempt failed too."""


class CredentialError(ZonalError):
    """The ``password`` provider failed (a token service down). It says nothing
    about the database zones, so no zone is ejected for it; the provider's own
    exception is chained as ``__cause__``."""


class PoolClosed(ZonalError):
    """The pool was closed; it hands out nothing more."""


class SessionStateError(ZonalError):
    """A statement would change session state that PgBouncer transaction mode loses.

    ``statement`` is the offending statement (abbreviated); ``safe_form`` says what
    to write instead (``SET LOCAL``, ``pg_advisory_xact_lock``, ...).
    """

    def __init__(self, message: str, *, statement: str = "", safe_form: str = "") -> None:
        self.statement = statement
        self.safe_form = safe_form
        super().__init__(message)


class _DriverlessOperationalError(Exception):
    """QueryTimeout's base where psycopg is not installed."""


def _driver_operational_error() -> type[Exception]:
    # QueryTimeout must be the driver's OperationalError so that SQLAlchemy and
    # Django treat it as one (and invalidate that connection). psycopg is the
    # driver zonal supports first; without it, a base of our own keeps the MRO sound
    # (a bare Exception next to ZonalError would not).
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is in every adapter extra
        return _DriverlessOperationalError
    return psycopg.OperationalError


_OperationalError: Any = _driver_operational_error()


class QueryTimeout(_OperationalError, ZonalError):  # type: ignore[misc]
    """A statement waited longer than ``query_timeout`` for the server.

    A subclass of the driver's ``OperationalError``: SQLAlchemy and Django report an
    OperationalError and discard that connection. It counts as a failure of the
    endpoint, as a connect failure does.
    """
