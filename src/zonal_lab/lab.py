"""The lab: N zones on loopback, each a real PostgreSQL server, optionally a
PgBouncer in front, and a fault proxy in front of both.

::

    client -> proxy -> PgBouncer -> PostgreSQL     lab.zones(pgbouncer=True)
    client -> proxy --------------> PostgreSQL     lab.zones(pgbouncer=False)
    client -------------------------> PostgreSQL   lab["a"].url()  (admin work)
    client ~~ Unix socket ~~~~~~~~~~> PostgreSQL   lab.zones(socket=True)

Sockets bypass the fault proxy: its faults (black hole, latency, reset, refuse) do
not reach them; kill and pause act on the server and do.
"""

from __future__ import annotations

import importlib
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from zonal_lab import cleanup
from zonal_lab.binaries import PgBinaries, find_pgbouncer, find_postgres
from zonal_lab.errors import LabError
from zonal_lab.load import CpuLoad, cpu_load
from zonal_lab.pgbouncer import PgBouncer, check_settings
from zonal_lab.postgres import PostgresServer, make_template
from zonal_lab.proxy import FaultProxy
from zonal_lab.reaper import Reaper
from zonal_lab.runas import RunAs
from zonal_lab.tls import LabTLS, make_tls

if TYPE_CHECKING:
    import psycopg

__all__ = ["Lab", "Zone"]

HOST = "127.0.0.1"
_ADMIN_CONNECT_TIMEOUT = 5
_PORT_RETRIES = 3
_SHM_MIN_FREE = 1 << 30
_SUN_PATH_MAX = 107  # bytes of a Unix socket's path
_SOCKET_FILE_MAX = len("/.s.PGSQL.65535")


def _scratch_dir() -> str | None:
    """Where labs keep their files: ``ZONAL_LAB_DIR``, else ``/dev/shm`` when it is a
    roomy tmpfs (copying three data folders to a slow disk takes seconds, to memory a
    tenth of that), else the system's temporary folder."""
    chosen = os.environ.get("ZONAL_LAB_DIR")
    if chosen:
        return chosen
    shm = "/dev/shm"
    try:
        st = os.statvfs(shm)
    except OSError:
        return None
    if os.access(shm, os.W_OK) and st.f_bavail * st.f_frsize >= _SHM_MIN_FREE:
        return shm
    return None


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports, all held open until all are chosen."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


class Zone:
    """One zone of a :class:`Lab`: a PostgreSQL server, maybe a PgBouncer, a proxy."""

    def __init__(self, lab: Lab, name: str, postgres: PostgresServer) -> None:
        self.lab = lab
        self.name = name
        self.host = HOST
        self.postgres = postgres
        self.bouncer: PgBouncer | None = None
        self.proxy = FaultProxy(name)
        self._proxy_ports: dict[bool, int] = {}
        self._paused = False

    def __repr__(self) -> str:
        return f"<Zone {self.name!r} {self.state} direct={self.direct} proxy={self.proxy.state}>"

    # -- addresses ---------------------------------------------------------------

    @property
    def direct(self) -> str:
        """``host:port`` of PostgreSQL itself, no proxy, no PgBouncer."""
        return f"{self.host}:{self.postgres.port}"

    @property
    def socket_dir(self) -> str:
        """The folder of PostgreSQL's Unix socket (``.s.PGSQL.<port>`` in it)."""
        assert self.postgres.socket_dir is not None
        return str(self.postgres.socket_dir)

    @property
    def socket(self) -> str:
        """``"/socket/dir:port"``: PostgreSQL over its Unix socket, as a zone string
        (no proxy: its faults do not reach a socket; kill and pause do)."""
        return f"{self.socket_dir}:{self.postgres.port}"

    def _want_pgbouncer(self, pgbouncer: bool | None) -> bool:
        if pgbouncer is None:
            return self.bouncer is not None
        if pgbouncer and self.bouncer is None:
            raise LabError(f"zone {self.name!r} has no PgBouncer (fix: Lab(..., pgbouncer=True))")
        return pgbouncer

    def endpoint(self, pgbouncer: bool | None = None, proxy: bool = True) -> str:
        """``host:port`` to connect to: through the fault proxy unless ``proxy=False``;
        to PgBouncer if ``pgbouncer`` (default: when the lab has one), else PostgreSQL."""
        bouncer = self._want_pgbouncer(pgbouncer)
        if proxy:
            return f"{self.host}:{self._proxy_ports[bouncer]}"
        if bouncer:
            assert self.bouncer is not None
            return f"{self.host}:{self.bouncer.port}"
        return self.direct

    def url(self, pgbouncer: bool = False, proxy: bool = False, database: str | None = None,
            socket: bool = False) -> str:
        """``postgresql://user:password@host:port/db``; by default straight to the
        server (for admin work), through PgBouncer and/or the proxy when asked;
        ``socket=True``: ``postgresql://user:password@/db?host=<socket_dir>&port=<port>``,
        the server over its Unix socket."""
        lab = self.lab
        cred = f"{quote(lab.user, safe='')}:{quote(lab.password, safe='')}"
        db = quote(database or lab.database, safe="")
        if socket:
            if pgbouncer or proxy:
                raise LabError("socket=True is PostgreSQL itself: no PgBouncer, no proxy")
            return (f"postgresql://{cred}@/{db}?host={quote(self.socket_dir, safe='/')}"
                    f"&port={self.postgres.port}")
        return f"postgresql://{cred}@{self.endpoint(pgbouncer, proxy)}/{db}"

    def pgbouncer_admin_url(self, proxy: bool = False) -> str:
        """URL of PgBouncer's admin console (``SHOW CONFIG``, ``SHOW POOLS``, ...)."""
        return self.url(pgbouncer=True, proxy=proxy, database="pgbouncer")

    def connect(
        self, pgbouncer: bool = False, proxy: bool = False, **kwargs: Any
    ) -> psycopg.Connection[Any]:
        """A psycopg connection (``connect_timeout`` 5 s unless given)."""
        import psycopg

        kwargs.setdefault("connect_timeout", _ADMIN_CONNECT_TIMEOUT)
        return psycopg.connect(self.url(pgbouncer, proxy), **kwargs)

    # -- faults ------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``"running"``, ``"paused"`` or ``"killed"``."""
        if self.postgres.pid is None:
            return "killed"
        return "paused" if self._paused else "running"

    def pause(self) -> None:
        """SIGSTOP the server (postmaster and every backend) and its PgBouncer:
        connections stay open and nothing answers; new ones hang in the handshake."""
        if self.state != "running":
            return
        if self.bouncer is not None:
            self.bouncer.pause()
        self.postgres.pause()
        self._paused = True

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        if self.state != "paused":
            return
        self.postgres.resume()
        if self.bouncer is not None:
            self.bouncer.resume()
        self._paused = False

    def kill(self) -> None:
        """Immediate stop (SIGKILL) of the server, every backend and its PgBouncer.
        Through the proxy, new connections are then accepted and closed at once."""
        if self.bouncer is not None:
            self.bouncer.kill()
        self.postgres.kill()
        self._paused = False

    def start(self) -> None:
        """Start a killed zone again on the same ports (after crash recovery)."""
        self.postgres.start()
        if self.bouncer is not None:
            self.bouncer.start()

    def reset_faults(self) -> None:
        """Heal the proxy, resume if paused, start if killed."""
        self.proxy.heal()
        self.resume()
        if self.state == "killed" or (self.bouncer is not None and self.bouncer.pid is None):
            self.start()

    # -- inspection --------------------------------------------------------------

    def _admin(self) -> psycopg.Connection[Any]:
        import psycopg

        return psycopg.connect(
            self.url(),
            connect_timeout=_ADMIN_CONNECT_TIMEOUT,
            autocommit=True,
            application_name="zonal-lab-admin",
            options="-c statement_timeout=10s",
        )

    _FILTER = (
        " FROM pg_stat_activity WHERE backend_type = 'client backend'"
        " AND datname = %s AND pid <> pg_backend_pid()"
    )

    def server_connections(self, application_name: str | None = None) -> int:
        """Client backends of the lab's database, from ``pg_stat_activity``, not
        counting the one asking; only those of ``application_name`` if given."""
        return self._count_backends("count(*)", application_name)

    def terminate_backends(self, application_name: str | None = None) -> int:
        """``pg_terminate_backend`` every client backend of the lab's database (only
        those of ``application_name`` if given), waiting up to 5 s for each to end;
        returns how many were terminated."""
        return self._count_backends(
            "count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))", application_name)

    def _count_backends(self, aggregate: str, application_name: str | None) -> int:
        sql = f"SELECT {aggregate}" + self._FILTER
        params: list[Any] = [self.lab.database]
        if application_name is not None:
            sql += " AND application_name = %s"
            params.append(application_name)
        with self._admin() as conn:
            row = conn.execute(sql, params).fetchone()
        assert row is not None
        return int(row[0])

    # -- lifecycle (by the lab) ------------------------------------------------------

    def _open_proxy(self) -> None:
        self._proxy_ports[False] = self.proxy.listen(HOST, self.postgres.port)
        if self.bouncer is not None:
            self._proxy_ports[True] = self.proxy.listen(HOST, self.bouncer.port)

    def _stop(self) -> None:
        self.proxy.close()
        if self.bouncer is not None:
            self.bouncer.stop()
        self.postgres.stop()


class Lab:
    """N zones on loopback; see the module docstring. Use as a context manager::

        with Lab(zones=["a", "b"], pgbouncer=True) as lab:
            engine = create_engine(..., zones=lab.zones(pgbouncer=True))
            lab["a"].kill()

    ``server_settings`` go into every server's configuration (anything
    ``postgresql.conf`` takes); ``pgbouncer_settings`` into every ``pgbouncer.ini``
    (transaction pooling unless ``pool_mode`` says otherwise). Servers run as the
    current user, or as ``ZONAL_LAB_USER`` (default ``nobody``) when that is root.

    ``tls=True``: every PostgreSQL server serves TLS with a certificate for
    ``127.0.0.1`` and ``localhost`` signed by a CA made for this lab;
    :attr:`tls` then holds the files (``lab.tls.params()`` are per-zone driver
    parameters that verify it). PgBouncer's client side stays plain text.
    """

    def __init__(
        self,
        zones: Iterable[str] = ("a", "b"),
        *,
        pgbouncer: bool = False,
        server_settings: Mapping[str, object] | None = None,
        pgbouncer_settings: Mapping[str, object] | None = None,
        backend: str = "local",
        user: str = "zonal",
        database: str = "zonal",
        start_timeout: float = 30.0,
        tls: bool = False,
    ) -> None:
        names = list(zones)
        if not names:
            raise LabError("a lab needs at least one zone (fix: zones=['a', 'b'])")
        if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise LabError(f"zone names must be distinct non-empty strings, got {names!r}")
        if backend not in ("local", "docker"):
            raise LabError(f"backend must be 'local' or 'docker', got {backend!r}")
        self.names = names
        self.pgbouncer = pgbouncer
        self.server_settings = dict(server_settings or {})
        self.pgbouncer_settings = dict(pgbouncer_settings or {})
        self.backend = backend
        self.user = user
        self.database = database
        self.password = secrets.token_urlsafe(18)
        self.start_timeout = start_timeout
        self.base_dir: Path | None = None
        self._socket_base: Path | None = None  # outside base_dir when that is too long
        self.binaries: PgBinaries | None = None
        self.started_in: float | None = None  # seconds start() took
        self._zones: dict[str, Zone] = {}
        self._reaper: Reaper | None = None
        self._want_tls = bool(tls)
        self.tls: LabTLS | None = None  # the CA and certificate, once started with tls=True

    def __repr__(self) -> str:
        state = "running" if self._zones else "stopped"
        tls = " tls" if self._want_tls else ""
        return f"<Lab zones={self.names!r} pgbouncer={self.pgbouncer}{tls} {state}>"

    # -- access ------------------------------------------------------------------

    def __getitem__(self, name: str) -> Zone:
        try:
            return self._zones[name]
        except KeyError:
            if not self._zones:
                raise LabError(
                    "the lab is not running (fix: Lab(...).start() or with Lab(...))"
                ) from None
            raise KeyError(f"no zone {name!r} in this lab; zones: {self.names}") from None

    def __iter__(self) -> Iterator[Zone]:
        return iter(self._zones.values())

    def __len__(self) -> int:
        return len(self.names)

    def zones(self, pgbouncer: bool | None = None, proxy: bool = True,
              socket: bool = False) -> dict[str, str]:
        """``{zone: "host:port"}``, ready for ``zones=``: through each zone's fault
        proxy, to PgBouncer if ``pgbouncer`` (default: when the lab has one).
        ``socket=True``: ``{zone: "/socket/dir:port"}``, each PostgreSQL over its Unix
        socket (no proxy, no PgBouncer)."""
        if socket:
            if pgbouncer:
                raise LabError("socket=True is PostgreSQL itself: PgBouncer listens on "
                               "TCP only (fix: drop pgbouncer=True)")
            return {name: self[name].socket for name in self.names}
        return {name: self[name].endpoint(pgbouncer, proxy) for name in self.names}

    def reset_faults(self) -> None:
        """Heal every proxy, resume paused zones, start killed ones."""
        for zone in self:
            zone.reset_faults()

    def cpu_load(
        self, workers: int | None = None, *, seconds: float = 60.0, nice: int = 0
    ) -> CpuLoad:
        """Keep the machine's cores busy while a test runs: ``with lab.cpu_load():``.
        CI runners and serverless sandboxes are loaded, and the zones' servers share
        these cores with the pool, so timeouts, pings and failover must hold when
        CPU is scarce. Spinning processes, bounded by ``seconds`` even if this
        process dies; see :func:`zonal_lab.load.cpu_load`."""
        return cpu_load(workers, seconds=seconds, nice=nice)

    # -- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Lab:
        """Start every zone (in parallel); return the lab. Stops what it started
        if any part fails."""
        if self._zones:
            return self
        began = time.monotonic()
        if self.backend == "docker":
            _docker_unavailable()
        bouncer_program = None
        if self.pgbouncer:
            bouncer_program = find_pgbouncer()
            if bouncer_program is None:
                raise LabError(
                    "pgbouncer=True but PgBouncer is not installed (fix: apt-get install "
                    "pgbouncer, brew install pgbouncer, or set ZONAL_LAB_PGBOUNCER)"
                )
            check_settings(bouncer_program, self.pgbouncer_settings)
        runas = RunAs.detect()
        cleanup.register(self)
        self._reaper = Reaper()
        try:
            self._start(runas, bouncer_program)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self

    def _start(self, runas: RunAs, bouncer_program: str | None) -> None:
        base = Path(tempfile.mkdtemp(prefix="zonal-lab-", dir=_scratch_dir()))
        self.base_dir = base
        reaper = self._reaper
        assert reaper is not None
        reaper.folder(base)
        if runas.switch:
            runas.give(base)  # empty yet: only the folder itself changes hands
        # Everyone may pass through (not list) the folder to reach the servers'
        # sockets, as everyone may reach their loopback ports; the data folders
        # and keys inside stay 0700/0600.
        base.chmod(0o711)
        sockets = self._socket_parent(base, reaper)
        bins = find_postgres(tls=self._want_tls).reachable_by(runas, base / "pg")
        self.binaries = bins
        template = base / "template"
        make_template(
            bins,
            template,
            user=self.user,
            password=self.password,
            database=self.database,
            runas=runas,
        )
        if self._want_tls:
            self.tls = make_tls(base / "tls")
        ports = iter(_free_ports(2 * len(self.names)))
        for i, name in enumerate(self.names):
            server = PostgresServer(
                bins, base / f"zone-{name}", next(ports), runas, self.server_settings,
                socket_dir=sockets / f"s{i}",  # short: a socket path holds 107 bytes
            )
            server.on_start = reaper.watch
            server.tls = self.tls
            zone = Zone(self, name, server)
            self._zones[name] = zone
            if bouncer_program is not None:
                zone.bouncer = PgBouncer(
                    bouncer_program,
                    base / f"pgbouncer-{name}",
                    next(ports),
                    server.port,
                    user=self.user,
                    password=self.password,
                    runas=runas,
                    settings=self.pgbouncer_settings,
                )
                zone.bouncer.on_start = reaper.watch
        with ThreadPoolExecutor(len(self.names), thread_name_prefix="zonal-lab") as pool:
            list(pool.map(lambda z: self._start_zone(z, template), self._zones.values()))
        shutil.rmtree(template, ignore_errors=True)

    def _socket_parent(self, base: Path, reaper: Reaper) -> Path:
        """Where the zones' socket folders go: the lab's folder, or a short one in
        /tmp when that path leaves no room for ``/sN/.s.PGSQL.<port>`` (a long
        ``ZONAL_LAB_DIR``)."""
        room = _SUN_PATH_MAX - _SOCKET_FILE_MAX - len(f"/s{len(self.names)}")
        if len(os.fsencode(base)) <= room:
            return base
        short = Path(tempfile.mkdtemp(prefix="zl-", dir="/tmp"))
        if len(os.fsencode(short)) > room:  # pragma: no cover - /tmp is short
            shutil.rmtree(short, ignore_errors=True)
            raise LabError(f"no folder short enough for the servers' Unix sockets "
                           f"(at most {_SUN_PATH_MAX} bytes)")
        self._socket_base = short
        reaper.folder(short)
        short.chmod(0o711)
        return short

    def _start_zone(self, zone: Zone, template: Path) -> None:
        server = zone.postgres
        shutil.copytree(template, server.datadir, symlinks=True)
        for attempt in range(_PORT_RETRIES):
            server.configure()
            server.runas.give(server.datadir)
            try:
                server.start(self.start_timeout)
                break
            except LabError:
                # another process took the port between our choice and the bind
                if attempt + 1 == _PORT_RETRIES or "could not bind" not in server.log_tail():
                    raise
                server.port = _free_ports(1)[0]
        if zone.bouncer is not None:
            zone.bouncer.server_port = server.port
            zone.bouncer.start(self.start_timeout)
        zone._open_proxy()

    def stop(self) -> None:
        """Stop every server, PgBouncer and proxy; remove the lab's files. Idempotent."""
        zones = list(self._zones.values())
        self._zones = {}
        # one after the other: at interpreter exit (atexit) no new thread may start
        for zone in zones:
            _stop_quietly(zone)
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None
        if self._socket_base is not None:
            shutil.rmtree(self._socket_base, ignore_errors=True)
            self._socket_base = None
        self.tls = None
        if self._reaper is not None:
            self._reaper.close()
            self._reaper = None
        cleanup.unregister(self)


def _stop_quietly(zone: Zone) -> None:
    try:
        zone._stop()
    except Exception:  # stop the other zones regardless; kill what is left
        zone.postgres.kill()
        if zone.bouncer is not None:
            zone.bouncer.kill()


def _docker_unavailable() -> None:
    """Raise why ``backend="docker"`` cannot run here."""
    try:
        importlib.import_module("testcontainers")
        docker = importlib.import_module("docker")
    except ImportError:
        raise LabError(
            "backend='docker' needs testcontainers and a running Docker engine "
            "(fix: pip install testcontainers, or use backend='local')"
        ) from None
    try:
        docker.from_env().ping()
    except Exception as exc:
        raise LabError(
            f"backend='docker': no Docker engine answers ({type(exc).__name__}); "
            "start Docker or use backend='local'"
        ) from None
    raise LabError("backend='docker' is not implemented yet; use backend='local'")
