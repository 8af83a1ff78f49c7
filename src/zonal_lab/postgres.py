"""One PostgreSQL server of the lab: a template made once, copied per zone.

``initdb`` costs most of a server's start, so a lab runs it once into a template
(password auth, the lab's user and database already made) and every zone starts from
a copy of it.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from zonal_lab import procs
from zonal_lab.binaries import PgBinaries
from zonal_lab.errors import LabError
from zonal_lab.runas import RunAs
from zonal_lab.tls import LabTLS

__all__ = ["DEFAULT_SERVER_SETTINGS", "PostgresServer", "make_template"]

# a lab's data is thrown away: durability costs time and buys nothing here
DEFAULT_SERVER_SETTINGS: Mapping[str, object] = {
    "fsync": False,
    "synchronous_commit": False,
    "full_page_writes": False,
    "shared_buffers": "16MB",
    "max_wal_size": "64MB",
    "log_min_messages": "warning",
    "log_connections": False,
}


def _conf_value(value: object) -> str:
    text = ("on" if value else "off") if isinstance(value, bool) else str(value)
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _run(args: list[str], runas: RunAs, *, what: str, stdin: str | None = None) -> None:
    proc = subprocess.run(
        args,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        **runas.popen_kwargs(),
    )
    if proc.returncode != 0:
        raise LabError(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")


def make_template(
    bins: PgBinaries, dest: Path, *, user: str, password: str, database: str, runas: RunAs
) -> None:
    """``initdb`` into ``dest`` with scram-sha-256 auth for ``user``/``password``,
    then create ``database`` in single-user mode (no server, no port needed)."""
    dest.mkdir(mode=0o700)
    pwfile = dest.parent / f"{dest.name}.pw"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    runas.give(dest)
    runas.give(pwfile)
    try:
        _run(
            [
                bins.program("initdb"),
                "-D",
                str(dest),
                "-U",
                user,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--wal-segsize=1",  # MB: a 1 MB WAL instead of 16 MB to copy per zone
            ],
            runas,
            what="initdb",
        )
    finally:
        pwfile.unlink()
    if database not in ("postgres", "template1"):
        _run(
            [
                bins.program("postgres"),
                "--single",
                "-D",
                str(dest),
                "-c",
                "unix_socket_directories=",
                "-c",
                "fsync=off",
                "template1",
            ],
            runas,
            what=f"CREATE DATABASE {database}",
            stdin=f'CREATE DATABASE "{database}";\n',
        )


class PostgresServer:
    """A server in ``datadir`` listening on 127.0.0.1:``port``, and on a Unix socket
    in ``socket_dir`` when one is given (``socket_dir/.s.PGSQL.<port>``, usable by
    every local user, as the loopback port is; the password is asked either way).

    The postmaster runs in a session of its own, so a Ctrl-C in the terminal reaches
    the lab (which then stops it) and never the server directly.
    """

    def __init__(
        self,
        bins: PgBinaries,
        datadir: Path,
        port: int,
        runas: RunAs,
        settings: Mapping[str, object] | None = None,
        socket_dir: Path | None = None,
    ) -> None:
        self.bins = bins
        self.datadir = datadir
        self.port = port
        self.socket_dir = socket_dir
        self.runas = runas
        self.settings = {**DEFAULT_SERVER_SETTINGS, **(settings or {})}
        self.logfile = datadir.parent / f"{datadir.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.on_start: Callable[[int], None] | None = None  # told each new PID
        self.tls: LabTLS | None = None  # serve TLS with these files (Lab(tls=True))

    def __repr__(self) -> str:
        return f"<PostgresServer port={self.port} pid={self.pid}>"

    def configure(self) -> None:
        """Write the port and settings into ``postgresql.auto.conf`` (read last, wins);
        with :attr:`tls`, copy the certificate and key in and turn ``ssl`` on; with
        :attr:`socket_dir`, make that folder (the server's user owns it, everyone may
        enter it) and listen there too."""
        tls_settings: dict[str, object] = {}
        if self.tls is not None:
            # in the data folder, so they change hands with it; the key stays 0600
            shutil.copyfile(self.tls.server_cert, self.datadir / "server.crt")
            shutil.copyfile(self.tls.server_key, self.datadir / "server.key")
            (self.datadir / "server.key").chmod(0o600)
            tls_settings = {"ssl": True, "ssl_cert_file": "server.crt",
                            "ssl_key_file": "server.key"}
        socket_settings: dict[str, object] = {"unix_socket_directories": ""}
        if self.socket_dir is not None:
            self.socket_dir.mkdir(exist_ok=True)
            self.socket_dir.chmod(0o755)
            self.runas.give(self.socket_dir)
            socket_settings = {"unix_socket_directories": str(self.socket_dir),
                               "unix_socket_permissions": "0777"}
        lines = [
            f"{key} = {_conf_value(value)}"
            for key, value in {
                **self.settings,
                **tls_settings,
                "listen_addresses": "127.0.0.1",
                "port": self.port,
                **socket_settings,
            }.items()
        ]
        (self.datadir / "postgresql.auto.conf").write_text("\n".join(lines) + "\n")

    @property
    def pid(self) -> int | None:
        """The postmaster's PID while it runs."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    def start(self, timeout: float = 30.0) -> None:
        """Start the postmaster and wait until it accepts connections."""
        if self.pid is not None:
            return
        with open(self.logfile, "ab") as log:
            self._proc = subprocess.Popen(
                [self.bins.program("postgres"), "-D", str(self.datadir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.datadir,
                start_new_session=True,
                **self.runas.popen_kwargs(),
            )
        if self.on_start is not None:
            self.on_start(self._proc.pid)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        pidfile = self.datadir / "postmaster.pid"
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise LabError(
                    f"PostgreSQL on port {self.port} exited with {self._proc.returncode}:\n"
                    + self.log_tail()
                )
            try:
                lines = pidfile.read_text().splitlines()
            except (FileNotFoundError, PermissionError):
                lines = []
            # line 1 is the postmaster's PID (a stale file from a killed run has
            # another), line 8 its status; "ready" once it accepts connections
            if (
                len(lines) >= 8
                and lines[0].strip() == str(self._proc.pid)
                and lines[7].strip() == "ready"
            ):
                return
            if time.monotonic() >= deadline:
                self.kill()
                raise LabError(f"PostgreSQL on port {self.port} not ready after {timeout}s")
            time.sleep(0.01)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log, for error messages."""
        return procs.log_tail(self.logfile, lines)

    def pause(self) -> None:
        """SIGSTOP the postmaster and every backend: connections stay open, nothing answers."""
        if self.pid is not None:
            procs.signal_tree(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT what :meth:`pause` stopped."""
        if self.pid is not None:
            procs.signal_tree(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend: an abrupt crash of the server."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            kids = procs.signal_tree(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            procs.wait_gone(kids, timeout=10)
        self._proc = None

    def stop(self, timeout: float = 5.0) -> None:
        """Immediate shutdown (SIGQUIT), which also frees shared memory; SIGKILL if it
        has not finished within ``timeout`` seconds."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            procs.signal_tree(proc.pid, signal.SIGCONT)  # a paused server cannot shut down
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._proc = None
