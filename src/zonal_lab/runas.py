"""Who the lab's servers run as.

PostgreSQL and PgBouncer both refuse to run as root. As root, the lab runs them as
an unprivileged user (``ZONAL_LAB_USER``, default ``nobody``) and gives that user the
files they need; as anyone else, they run as that same user and nothing changes hands.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zonal_lab.errors import LabError

__all__ = ["RunAs"]

DEFAULT_USER = "nobody"


@dataclass(frozen=True)
class RunAs:
    """The identity servers run under; ``switch`` is True only when we are root."""

    uid: int
    gid: int
    name: str
    switch: bool

    @classmethod
    def detect(cls) -> RunAs:
        """The current user, or the unprivileged user to switch to when root."""
        if os.geteuid() != 0:
            return cls(os.geteuid(), os.getegid(), pwd.getpwuid(os.geteuid()).pw_name, False)
        name = os.environ.get("ZONAL_LAB_USER", DEFAULT_USER)
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise LabError(
                f"running as root, the lab starts PostgreSQL and PgBouncer as user {name!r}, "
                "which does not exist (fix: set ZONAL_LAB_USER to an unprivileged user)"
            ) from None
        if entry.pw_uid == 0:
            raise LabError(f"ZONAL_LAB_USER={name!r} is root; PostgreSQL refuses to run as root")
        return cls(entry.pw_uid, entry.pw_gid, name, True)

    def popen_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`subprocess.Popen` that drop to this user."""
        if not self.switch:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def give(self, path: Path) -> None:
        """Hand ``path`` (recursively) to this user; a no-op when not switching."""
        if not self.switch:
            return
        os.chown(path, self.uid, self.gid, follow_symlinks=False)
        if path.is_dir() and not path.is_symlink():
            for root, dirs, files in os.walk(path):
                for name in dirs + files:
                    os.chown(os.path.join(root, name), self.uid, self.gid, follow_symlinks=False)

    def can_reach(self, path: Path) -> bool:
        """True if this user may traverse every directory above ``path``."""
        if not self.switch:
            return True
        for parent in path.resolve().parents:
            st = parent.stat()
            if st.st_uid == self.uid:
                bit = stat.S_IXUSR
            elif st.st_gid == self.gid:
                bit = stat.S_IXGRP
            else:
                bit = stat.S_IXOTH
            if not st.st_mode & bit:
                return False
        return True
