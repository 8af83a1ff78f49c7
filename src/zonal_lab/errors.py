"""The lab's one exception: :class:`LabError`."""

from __future__ import annotations

from zonal_core.errors import ZonalError

__all__ = ["LabError"]


class LabError(ZonalError, RuntimeError):
    """The lab could not do what was asked: a binary is missing, a server did not
    start, a fault was asked of a zone in the wrong state. The message says why and,
    where there is one, the fix. It never contains the lab's password."""
