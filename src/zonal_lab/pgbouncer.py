"""One PgBouncer of the lab, in front of one PostgreSQL server.

Transaction pooling by default, password auth (scram-sha-256) from a userlist that
holds the lab's password, and the admin console open to the lab's user so tools can
run ``SHOW CONFIG`` and ``SHOW POOLS``.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from zonal_lab import procs
from zonal_lab.binaries import pgbouncer_version
from zonal_lab.errors import LabError
from zonal_lab.runas import RunAs

__all__ = ["DEFAULT_PGBOUNCER_SETTINGS", "PgBouncer", "check_settings"]

DEFAULT_PGBOUNCER_SETTINGS: Mapping[str, object] = {
    "pool_mode": "transaction",
    "max_client_conn": 200,
    "default_pool_size": 10,
    # PgBouncer waits this long after a failed server login before trying again;
    # its 15 s default would keep a restarted zone unusable through PgBouncer
    "server_login_retry": 1,
    "server_connect_timeout": 5,
}

# settings that appeared in a later PgBouncer than some installs have
_SINCE: Mapping[str, tuple[int, int]] = {
    "max_prepared_statements": (1, 21),
}


def _ini_value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    text = str(value)
    if "\n" in text:
        raise LabError(f"a PgBouncer setting cannot hold a newline: {text!r}")
    return text


def check_settings(program: str, settings: Mapping[str, object]) -> tuple[int, int]:
    """Raise :class:`LabError` for a setting this PgBouncer is too old to know;
    return its (major, minor) version."""
    version = pgbouncer_version(program)
    for key, since in _SINCE.items():
        if key in settings and version < since:
            have = ".".join(map(str, version))
            need = ".".join(map(str, since))
            raise LabError(
                f"PgBouncer setting {key!r} needs PgBouncer >= {need}; "
                f"{program} is {have} (fix: drop it from pgbouncer_settings)"
            )
    return version


class PgBouncer:
    """PgBouncer listening on 127.0.0.1:``port``, forwarding to ``server_port``."""

    def __init__(
        self,
        program: str,
        workdir: Path,
        port: int,
        server_port: int,
        *,
        user: str,
        password: str,
        runas: RunAs,
        settings: Mapping[str, object] | None = None,
    ) -> None:
        self.program = program
        self.workdir = workdir
        self.port = port
        self.server_port = server_port
        self.user = user
        self.runas = runas
        self.version = check_settings(program, settings or {})
        self.settings = {**DEFAULT_PGBOUNCER_SETTINGS, **(settings or {})}
        self.logfile = workdir / "pgbouncer.log"
        self._password = password
        self._proc: subprocess.Popen[bytes] | None = None
        self.on_start: Callable[[int], None] | None = None  # told each new PID

    def __repr__(self) -> str:
        return f"<PgBouncer port={self.port} server_port={self.server_port} pid={self.pid}>"

    def _write_config(self) -> None:
        self.workdir.mkdir(mode=0o700, exist_ok=True)
        userlist = self.workdir / "userlist.txt"
        quoted_user = self.user.replace('"', '""')
        quoted_password = self._password.replace('"', '""')
        userlist.write_text(f'"{quoted_user}" "{quoted_password}"\n')
        userlist.chmod(0o600)
        settings: dict[str, object] = {
            **self.settings,
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "unix_socket_dir": "",
            "auth_type": "scram-sha-256",
            "auth_file": str(userlist),
            "admin_users": self.user,
            "stats_users": self.user,
        }
        lines = [
            "[databases]",
            # any database name maps to the same name on the zone's server
            f"* = host=127.0.0.1 port={self.server_port}",
            "",
            "[pgbouncer]",
            *(f"{key} = {_ini_value(value)}" for key, value in settings.items()),
        ]
        (self.workdir / "pgbouncer.ini").write_text("\n".join(lines) + "\n")
        self.runas.give(self.workdir)

    @property
    def pid(self) -> int | None:
        """PgBouncer's PID while it runs."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    def start(self, timeout: float = 15.0) -> None:
        """Start PgBouncer and wait until its port accepts connections."""
        if self.pid is not None:
            return
        self._write_config()
        with open(self.logfile, "ab") as log:
            self._proc = subprocess.Popen(
                [self.program, str(self.workdir / "pgbouncer.ini")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                **self.runas.popen_kwargs(),
            )
        if self.on_start is not None:
            self.on_start(self._proc.pid)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise LabError(
                    f"PgBouncer on port {self.port} exited with {self._proc.returncode}:\n"
                    + self.log_tail()
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                self.kill()
                raise LabError(f"PgBouncer on port {self.port} not listening after {timeout}s")
            time.sleep(0.01)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of PgBouncer's log, for error messages."""
        return procs.log_tail(self.logfile, lines)

    def _signal(self, sig: int) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)

    def pause(self) -> None:
        """SIGSTOP PgBouncer (a single process): its clients hang."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT what :meth:`pause` stopped."""
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL PgBouncer."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        self._proc = None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (PgBouncer's immediate shutdown), SIGKILL if it lingers."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._proc = None
