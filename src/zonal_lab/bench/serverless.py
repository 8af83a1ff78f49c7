"""Serverless lifecycle with real processes: frozen instances, thaw, deploy storm, shutdown.

Each scenario takes a running :class:`zonal_lab.Lab` and returns its figures as a
plain dict: the tests in ``tests/serverless`` assert on them, ``zonal bench`` (or
``python -m zonal_lab.bench.serverless``) prints them. zonal's serverless profile and
SQLAlchemy's ``QueuePool`` run in the same scenario, against the same server.

Workers are real processes, each with its own engine. They serve requests through
the WSGI request middleware (``zonal_sqlalchemy.middleware``) as a function would,
are frozen with SIGSTOP and thawed with SIGCONT. Scenarios 1, 2 and 4 fork their
workers from a preloaded fork server (a warm runtime: SQLAlchemy and psycopg already
imported); the shutdown scenario needs a real interpreter exit, so its workers are
fresh ``python`` processes. Every process a scenario starts is stopped by PID when
the scenario ends, also on failure, and each one also ends itself (an alarm, and
death with its parent) so nothing outlives a crashed run.

    python -m zonal_lab.bench.serverless [frozen thaw storm shutdown] [--json]

Only the standard library is imported at module level: a shutdown worker (this
file run as a script, not through the ``zonal_lab`` package) must register its
exit report before zonal's own ``atexit`` hook exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from zonal_lab import Lab

__all__ = [
    "SCENARIOS",
    "Fleet",
    "deploy_storm",
    "frozen_instances",
    "main",
    "pgbouncer_clients",
    "reaper_seconds_for",
    "run_scenario",
    "server_connections",
    "shutdown",
    "thaw",
]

# Workers end themselves after this long, whatever happens to the parent.
WORKER_LIFETIME = 150.0
_PRELOAD = ["sqlalchemy", "sqlalchemy.orm", "psycopg", "zonal_sqlalchemy",
            "zonal_sqlalchemy.middleware", "zonal_lab.bench.serverless"]
_ADMIN_APP = "zonal-bench-admin"


# ----------------------------------------------------------------------------- helpers

def _short(exc: BaseException) -> str:
    """Type and first line of an error (driver messages carry no password)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:160]}"


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (best effort)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def _arm_watchdog(seconds: float) -> None:
    _die_with_parent()
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(max(1, int(seconds)))


def _admin(lab: Lab, zone: str) -> Any:
    import psycopg

    return psycopg.connect(lab[zone].url(), autocommit=True, connect_timeout=5,
                           application_name=_ADMIN_APP)


def server_connections(lab: Lab, zone: str = "a", prefix: str = "") -> dict[str, int]:
    """Client backends of the lab's database per ``application_name`` (those
    starting with ``prefix``), from ``pg_stat_activity``, in one query."""
    sql = ("SELECT application_name, count(*) FROM pg_stat_activity"
           " WHERE backend_type = 'client backend' AND datname = %s"
           " AND pid <> pg_backend_pid() AND application_name LIKE %s GROUP BY 1")
    with _admin(lab, zone) as conn:
        rows = conn.execute(sql, [lab.database, prefix + "%"]).fetchall()
    return {str(name): int(n) for name, n in rows}


def server_total(lab: Lab, zone: str = "a") -> int:
    """Every client backend of the lab's database but the admin's."""
    sql = ("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
           " AND datname = %s AND pid <> pg_backend_pid()")
    with _admin(lab, zone) as conn:
        row = conn.execute(sql, [lab.database]).fetchone()
    return int(row[0]) if row else 0


def pgbouncer_clients(lab: Lab, zone: str = "a", prefix: str = "") -> dict[str, int]:
    """Client connections at the zone's PgBouncer per ``application_name``
    (``SHOW CLIENTS``); empty if this PgBouncer does not report the name."""
    import psycopg

    with psycopg.connect(lab[zone].pgbouncer_admin_url(), autocommit=True,
                         connect_timeout=5) as conn:
        cur = conn.execute("SHOW CLIENTS")
        names = [c.name for c in cur.description or ()]
        rows = [dict(zip(names, r, strict=False)) for r in cur.fetchall()]
    out: dict[str, int] = {}
    for r in rows:
        app = str(r.get("application_name") or "")
        if app.startswith(prefix) and r.get("database") == lab.database:
            out[app] = out.get(app, 0) + 1
    return out


def pgbouncer_pool_size(lab: Lab, zone: str = "a") -> int:
    """PgBouncer's ``default_pool_size`` (what bounds the server side)."""
    import psycopg

    with psycopg.connect(lab[zone].pgbouncer_admin_url(), autocommit=True,
                         connect_timeout=5) as conn:
        for key, value, *_ in conn.execute("SHOW CONFIG").fetchall():
            if key == "default_pool_size":
                return int(value)
    return -1


def reaper_seconds_for(max_idle: float) -> float:
    """The server-side ``idle_session_timeout`` the serverless profile asks for."""
    from zonal_core.config import build_config
    from zonal_core.psycopg_driver import reaper_seconds

    cfg = build_config(zones={"a": "127.0.0.1:1"}, serverless=True, max_idle=max_idle)
    reapers = reaper_seconds(cfg)
    assert reapers is not None
    return reapers[0]


def _wait_for(predicate: Callable[[], bool], timeout: float, every: float = 0.05) -> float | None:
    """Poll ``predicate`` until true; seconds it took, or None after ``timeout``."""
    t0 = time.monotonic()
    while True:
        try:
            done = predicate()
        except Exception:  # e.g. the server is full for a moment: ask again
            done = False
        if done:
            return time.monotonic() - t0
        if time.monotonic() - t0 >= timeout:
            return None
        time.sleep(every)


def _url(lab: Lab, host: str | None = None) -> str:
    return f"postgresql+psycopg://{lab.user}:{lab.password}@{host or ''}/{lab.database}"


def _run_tag() -> str:
    return f"zs{os.getpid() % 10000}{int(time.monotonic() * 10) % 1000}"


# ----------------------------------------------------------------------------- worker side

def make_engine(spec: Mapping[str, Any]) -> Any:
    """The engine a worker builds from ``spec``: ``pool`` is ``zonal`` (ZonalPool,
    ``zones`` and zonal ``options``) or ``queuepool`` (a URL with a host and
    SQLAlchemy ``options``); ``app`` is its ``application_name``."""
    from sqlalchemy import create_engine

    connect_args: dict[str, Any] = {"application_name": spec["app"]}
    options = dict(spec.get("options") or {})
    if spec["pool"] == "zonal":
        from zonal_sqlalchemy import ZonalPool

        return create_engine(spec["url"], poolclass=ZonalPool, zones=spec["zones"],
                             connect_args=connect_args, **options)
    if spec.get("pgbouncer"):
        connect_args["prepare_threshold"] = None
    # libpq waits forever by default; 2 s is what zonal's serverless profile uses
    connect_args["connect_timeout"] = 2
    return create_engine(spec["url"], connect_args=connect_args, **options)


class RequestApp:
    """A one-route WSGI app behind zonal's request middleware (a Session per
    request, released and — serverless — trimmed after the response)."""

    def __init__(self, engine: Any) -> None:
        from zonal_sqlalchemy.middleware import ZonalWSGIMiddleware

        self.engine = engine
        self.wsgi = ZonalWSGIMiddleware(self._handler, engine)

    @staticmethod
    def _handler(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        from sqlalchemy import text

        session = environ["zonal.session"]
        session.execute(text("SELECT pg_sleep(:s)"), {"s": environ["bench.sleep"]})
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    def request(self, sleep: float = 0.0) -> None:
        """Serve one request; raise what reached the application."""
        status: list[str] = []
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_NAME": "bench",
                   "SERVER_PORT": "80", "wsgi.url_scheme": "http", "bench.sleep": sleep}

        def start_response(s: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status.append(s)
            return lambda data: None

        body = self.wsgi(environ, start_response)
        try:
            b"".join(body)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        if not status or not status[-1].startswith("200"):
            raise RuntimeError(f"status {status[-1] if status else None}")


def pool_figures(engine: Any) -> dict[str, Any]:
    """What the pool says about itself: zonal's ``stats()``, or QueuePool's counts."""
    pool = engine.pool
    stats = getattr(pool, "stats", None)
    if stats is None:
        return {"idle": pool.checkedin(), "in_use": pool.checkedout()}
    s = stats()
    closes: dict[str, int] = {}
    for z in s.zones.values():
        for reason, n in z.closes.items():
            closes[reason] = closes.get(reason, 0) + n
    zs = list(s.zones.values())
    return {
        "idle": s.idle, "in_use": s.in_use, "suspends": s.suspends, "clock": s.clock,
        "connects": sum(z.connects for z in zs),
        "connect_errors": sum(z.connect_errors for z in zs),
        "retries": sum(z.retries for z in zs),
        "pings": sum(z.pings for z in zs), "ping_failures": sum(z.ping_failures for z in zs),
        "closes": closes,
    }


def _serve(app: RequestApp, n: int, concurrency: int, sleep: float) -> dict[str, Any]:
    """``n`` requests on ``concurrency`` threads; the first wave starts together."""
    errors: list[str] = []
    lock = threading.Lock()
    concurrency = max(1, min(concurrency, n))
    barrier = threading.Barrier(concurrency)

    def one(i: int) -> float:
        if i < concurrency:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=10)
        t0 = time.monotonic()
        try:
            app.request(sleep)
        except Exception as exc:
            with lock:
                errors.append(_short(exc))
        return time.monotonic() - t0

    t0 = time.monotonic()
    with ThreadPoolExecutor(concurrency) as ex:
        lat = list(ex.map(one, range(n)))
    return {"requests": n, "errors": len(errors), "error_samples": sorted(set(errors))[:5],
            "latency_max_s": max(lat) if lat else 0.0, "took_s": time.monotonic() - t0,
            "end": time.monotonic()}


def _worker_main(spec: dict[str, Any], conn: Connection) -> None:
    """A function instance: build the engine, then serve commands from the parent."""
    _arm_watchdog(spec.get("lifetime", WORKER_LIFETIME))
    try:
        engine = make_engine(spec)
        app = RequestApp(engine)
    except Exception as exc:
        conn.send({"ready": False, "pid": os.getpid(), "app": spec["app"],
                   "error": _short(exc)})
        return
    conn.send({"ready": True, "pid": os.getpid(), "app": spec["app"]})
    while conn.poll(spec.get("lifetime", WORKER_LIFETIME)):
        try:
            cmd = conn.recv()
        except EOFError:
            break
        op = cmd.get("op")
        reply: dict[str, Any]
        try:
            if op == "serve":
                reply = _serve(app, cmd.get("n", 1), cmd.get("concurrency", 1),
                               cmd.get("sleep", 0.0))
                reply["pool"] = pool_figures(engine)
            elif op == "stats":
                reply = {"pool": pool_figures(engine)}
            elif op == "exit":
                conn.send({"ok": True})
                break
            else:
                reply = {"error": f"unknown op {op!r}"}
        except Exception as exc:
            reply = {"error": _short(exc)}
        conn.send(reply)
    with contextlib.suppress(Exception):
        engine.dispose()


# ----------------------------------------------------------------------------- parent side

def _fork_server_main() -> None:
    """The fork server: a fresh interpreter that imports SQLAlchemy, psycopg and
    zonal once, then forks one worker per line read on stdin (a warm runtime: a fork
    costs milliseconds where a new interpreter costs about a second of CPU). It ends
    at EOF, i.e. when its parent is gone; its workers die with it."""
    import importlib
    import socket
    from multiprocessing.connection import Connection

    _die_with_parent()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the workers
    for name in _PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    for line in sys.stdin:
        req = json.loads(line)
        if os.fork() == 0:  # the worker
            code = 0
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(req["address"])
                _worker_main(req["spec"], Connection(sock.detach()))
            except BaseException:
                code = 1
            finally:
                os._exit(code)


class _ForkServer:
    """The parent's handle on its fork server; workers call back on a Unix socket
    in a private folder."""

    def __init__(self) -> None:
        import socket
        import tempfile

        from zonal_lab.bench.children import child_env

        self.folder = tempfile.mkdtemp(prefix="zonal-bench-")
        self.address = os.path.join(self.folder, "workers")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.address)
        self.sock.listen(256)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from zonal_lab.bench.serverless import _fork_server_main;"
             " _fork_server_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=child_env())

    def spawn(self, spec: Mapping[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"spec": spec, "address": self.address}) + "\n")
        self.proc.stdin.flush()

    def accept(self, timeout: float) -> Connection:
        from multiprocessing.connection import Connection

        self.sock.settimeout(max(0.01, timeout))
        conn, _ = self.sock.accept()
        conn.settimeout(None)
        return Connection(conn.detach())

    def owns(self, pid: int) -> bool:
        """True if ``pid`` is a live worker of this server (not a reused PID)."""
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        fields = stat.rsplit(")", 1)[-1].split()
        return fields[0] != "Z" and int(fields[1]) == self.proc.pid

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(5)
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        self.sock.close()
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


_SERVER: list[_ForkServer] = []


def _fork_server() -> _ForkServer:
    """This process's fork server, started on first use, stopped at exit."""
    if _SERVER and _SERVER[0].proc.poll() is None:
        return _SERVER[0]
    if _SERVER:
        _SERVER.pop().close()
    server = _ForkServer()
    _SERVER.append(server)
    if len(_SERVER) == 1:
        import atexit

        atexit.register(_stop_fork_server)
    return server


def _stop_fork_server() -> None:
    while _SERVER:
        _SERVER.pop().close()


class Worker:
    """A worker process seen from the parent: commands, freeze, thaw, kill."""

    def __init__(self, pid: int, conn: Connection, app: str, server: _ForkServer) -> None:
        self.pid = pid
        self.conn = conn
        self.app = app
        self.server = server

    def send(self, cmd: Mapping[str, Any]) -> None:
        self.conn.send(dict(cmd))

    def receive(self, timeout: float) -> dict[str, Any]:
        if not self.conn.poll(timeout):
            raise TimeoutError(f"worker {self.app} (pid {self.pid}) gave no answer "
                               f"in {timeout:g}s")
        reply: dict[str, Any] = self.conn.recv()
        return reply

    def call(self, cmd: Mapping[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        self.send(cmd)
        return self.receive(timeout)

    def freeze(self) -> None:
        """SIGSTOP: its threads and timers stop, its sockets stay open."""
        os.kill(self.pid, signal.SIGSTOP)
        _wait_for(lambda: _proc_state(self.pid) in ("T", "t", None), 2.0, 0.005)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.server.owns(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            _wait_for(lambda: not self.server.owns(self.pid), 5.0, 0.01)
        with contextlib.suppress(Exception):
            self.conn.close()


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[0]


class Fleet:
    """Worker processes that are all killed, by PID, when the block ends."""

    def __init__(self) -> None:
        self.workers: list[Worker] = []

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, specs: list[dict[str, Any]], timeout: float = 60.0) -> list[Worker]:
        """Start one worker per spec and wait until each has built its engine;
        returned in the order of ``specs``."""
        server = _fork_server()
        for spec in specs:
            server.spawn(spec)
        deadline = time.monotonic() + timeout
        by_app: dict[str, Worker] = {}
        errors: list[str] = []
        for _ in specs:
            conn = server.accept(deadline - time.monotonic())
            if not conn.poll(max(0.01, deadline - time.monotonic())):
                raise TimeoutError("a worker connected but never said hello")
            hello = conn.recv()
            w = Worker(int(hello["pid"]), conn, str(hello["app"]), server)
            self.workers.append(w)
            by_app[w.app] = w
            if not hello.get("ready"):
                errors.append(f"{w.app}: {hello.get('error')}")
        if errors:
            raise RuntimeError("workers did not start: " + "; ".join(errors[:3]))
        return [by_app[s["app"]] for s in specs]

    def close(self) -> None:
        for w in self.workers:  # all at once, then wait for each
            if w.server.owns(w.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGKILL)
        for w in self.workers:
            w.kill()
        self.workers = []


def _broadcast(workers: list[Worker], cmd: Mapping[str, Any], timeout: float
               ) -> list[dict[str, Any]]:
    """Send ``cmd`` to every worker at once, then collect every reply."""
    for w in workers:
        w.send(cmd)
    deadline = time.monotonic() + timeout
    return [w.receive(max(0.1, deadline - time.monotonic())) for w in workers]


def _zonal_spec(lab: Lab, app: str, *, via_pgbouncer: bool = False, **options: Any
                ) -> dict[str, Any]:
    options.setdefault("serverless", True)
    if via_pgbouncer:
        options.setdefault("pgbouncer", "transaction")
    return {"pool": "zonal", "app": app, "url": _url(lab),
            "zones": {"a": lab["a"].endpoint(pgbouncer=via_pgbouncer, proxy=False)},
            "options": options}


def _queuepool_spec(lab: Lab, app: str, *, via_pgbouncer: bool = False, **options: Any
                    ) -> dict[str, Any]:
    host = lab["a"].endpoint(pgbouncer=via_pgbouncer, proxy=False)
    return {"pool": "queuepool", "app": app, "url": _url(lab, host),
            "pgbouncer": via_pgbouncer, "options": options}


# ----------------------------------------------------------------------------- 1. frozen

def frozen_instances(lab: Lab, *, k: int = 12, burst: int = 5, max_idle: float = 2.0,
                     min_idle: int = 1, via_pgbouncer: bool = False,
                     wait_for_reaper: bool = True) -> dict[str, Any]:
    """K zonal (serverless) and K QueuePool instances each serve a burst of
    ``burst`` concurrent requests, then all are frozen with SIGSTOP.

    Figures: server connections per instance right after the freeze and, on direct
    connections, once the server-side reaper (``idle_session_timeout``) has fired;
    through PgBouncer, client connections at PgBouncer and the server's total.
    """
    tag = _run_tag()
    pool_size = max(burst, 1)
    zspecs = [_zonal_spec(lab, f"{tag}-z{i}", via_pgbouncer=via_pgbouncer, pool_size=pool_size,
                          max_idle=max_idle, min_idle=min_idle) for i in range(k)]
    qspecs = [_queuepool_spec(lab, f"{tag}-q{i}", via_pgbouncer=via_pgbouncer,
                              pool_size=pool_size, max_overflow=10) for i in range(k)]
    t_start = time.monotonic()
    out: dict[str, Any] = {"k": k, "burst": burst, "max_idle_s": max_idle, "min_idle": min_idle,
                           "via": "pgbouncer" if via_pgbouncer else "direct"}
    reaper = reaper_seconds_for(max_idle)
    with Fleet() as fleet:
        workers = fleet.start(zspecs + qspecs)
        out["start_s"] = round(time.monotonic() - t_start, 2)
        replies = _broadcast(workers, {"op": "serve", "n": burst, "concurrency": burst,
                                       "sleep": 0.2}, timeout=60)
        out["request_errors"] = sum(r.get("errors", 0) for r in replies) + sum(
            1 for r in replies if "error" in r)
        out["error_samples"] = [s for r in replies for s in r.get("error_samples", [])][:5]
        last_use = max(r.get("end", 0.0) for r in replies)
        for w in workers:
            w.freeze()
        t_freeze = time.monotonic()
        zapps = [w.app for w in workers[:k]]
        qapps = [w.app for w in workers[k:]]

        def per(counts: Mapping[str, int], apps: list[str]) -> list[int]:
            return [counts.get(a, 0) for a in apps]

        if via_pgbouncer:
            clients = pgbouncer_clients(lab, prefix=tag)
            out["zonal"] = {"pgbouncer_clients": per(clients, zapps)}
            out["queuepool"] = {"pgbouncer_clients": per(clients, qapps)}
            out["server_total_after_freeze"] = server_total(lab)
            out["pgbouncer_default_pool_size"] = pgbouncer_pool_size(lab)
            for name in ("zonal", "queuepool"):
                out[name]["pgbouncer_clients_total"] = sum(out[name]["pgbouncer_clients"])
        else:
            now = server_connections(lab, prefix=tag)
            out["zonal"] = {"after_freeze": per(now, zapps)}
            out["queuepool"] = {"after_freeze": per(now, qapps)}
            # A backend ends a moment after its Terminate message: settle (<= 1 s).
            settled = _wait_for(lambda: max(per(server_connections(lab, prefix=tag), zapps),
                                            default=0) <= min_idle, 1.0)
            out["zonal"]["settled_in_s"] = None if settled is None else round(settled, 3)
            out["server_reaper_s"] = reaper
            if wait_for_reaper:
                # idle_session_timeout counts from each connection's last statement
                time.sleep(max(0.0, last_use + reaper - time.monotonic()))
                took = _wait_for(lambda: sum(per(server_connections(lab, prefix=tag),
                                                 zapps)) == 0, 10.0, 0.1)
                after = server_connections(lab, prefix=tag)
                out["zonal"]["after_reaper"] = per(after, zapps)
                out["queuepool"]["after_reaper"] = per(after, qapps)
                out["zonal"]["zero_after_freeze_s"] = (
                    None if took is None else round(time.monotonic() - t_freeze, 2))
            for name in ("zonal", "queuepool"):
                for key in ("after_freeze", "after_reaper"):
                    if key in out[name]:
                        out[name][key + "_total"] = sum(out[name][key])
    if via_pgbouncer:  # PgBouncer keeps its server connections (server_idle_timeout)
        _wait_for(lambda: not pgbouncer_clients(lab, prefix=tag), 10.0, 0.1)
    else:
        _wait_for(lambda: not server_connections(lab, prefix=tag), 10.0, 0.1)
    out["duration_s"] = round(time.monotonic() - t_start, 2)
    return out


# ----------------------------------------------------------------------------- 2. thaw

def thaw(lab: Lab, *, fault: str = "terminate", pool: str = "zonal", pre_ping: bool = False,
         max_idle: float = 2.0, freeze_for: float | None = None, requests: int = 100,
         concurrency: int = 4) -> dict[str, Any]:
    """An instance with idle pooled connections is frozen; meanwhile ``fault``
    (``terminate``: its backends are terminated server-side; ``restart``: the zone is
    killed and started again; ``none``) happens; it is thawed after ``freeze_for``
    seconds (default ``max_idle + 1``: a suspend) and serves ``requests`` requests.

    Figures: errors that reached the application, and what ``stats()`` counted.
    """
    tag = _run_tag()
    freeze_for = max_idle + 1.0 if freeze_for is None else freeze_for
    app = f"{tag}-{pool[0]}"
    if pool == "zonal":
        spec = _zonal_spec(lab, app, pool_size=4, min_idle=2, max_idle=max_idle,
                           pool_pre_ping=pre_ping)
    else:
        spec = _queuepool_spec(lab, app, pool_size=4, max_overflow=0, pool_pre_ping=pre_ping)
    out: dict[str, Any] = {"pool": pool, "fault": fault, "pre_ping": pre_ping,
                           "max_idle_s": max_idle, "freeze_s": freeze_for}
    t_start = time.monotonic()
    with Fleet() as fleet:
        (w,) = fleet.start([spec])
        warm = w.call({"op": "serve", "n": 8, "concurrency": 4, "sleep": 0.05})
        out["warmup_errors"] = warm.get("errors", 0)
        before = w.call({"op": "stats"})["pool"]
        out["idle_before_freeze"] = before["idle"]
        out["server_before_freeze"] = server_connections(lab, prefix=app).get(app, 0)
        w.freeze()
        t_freeze = time.monotonic()
        if fault == "terminate":
            out["terminated"] = lab["a"].terminate_backends(application_name=app)
        elif fault == "restart":
            lab["a"].kill()
            lab["a"].start()
        elif fault != "none":
            raise ValueError(f"fault must be terminate, restart or none, not {fault!r}")
        time.sleep(max(0.0, t_freeze + freeze_for - time.monotonic()))
        out["frozen_s"] = round(time.monotonic() - t_freeze, 2)
        w.thaw()
        r = w.call({"op": "serve", "n": requests, "concurrency": concurrency, "sleep": 0.0})
        out["errors"] = r.get("errors", 0) + (1 if "error" in r else 0)
        out["error_samples"] = r.get("error_samples", []) or ([r["error"]] if "error" in r else [])
        out["requests"] = requests
        after = r.get("pool") or w.call({"op": "stats"})["pool"]
        if pool == "zonal":
            out["suspends"] = after["suspends"] - before["suspends"]
            out["closes"] = {k: v - before["closes"].get(k, 0) for k, v in after["closes"].items()
                             if v - before["closes"].get(k, 0)}
            out["ping_failures"] = after["ping_failures"] - before["ping_failures"]
            out["clock"] = after["clock"]
    _wait_for(lambda: not server_connections(lab, prefix=tag), 10.0, 0.1)
    out["duration_s"] = round(time.monotonic() - t_start, 2)
    return out


# ----------------------------------------------------------------------------- 4. storm

def deploy_storm(lab: Lab, *, n: int = 60, pool: str = "zonal", hold: float = 0.3,
                 timeout: float = 5.0) -> dict[str, Any]:
    """``n`` fresh instances, each serving one request (a transaction of ``hold``
    seconds) at the same moment, against a server with few slots (the lab should have
    ``max_connections`` well below ``n``, and no PgBouncer). Instances stay up (warm)
    until all have answered.

    Figures: requests that failed, 53300 retries (zonal), time to drain.
    """
    tag = _run_tag()
    if pool == "zonal":
        specs = [_zonal_spec(lab, f"{tag}-z{i}", pool_timeout=timeout) for i in range(n)]
    else:
        specs = [_queuepool_spec(lab, f"{tag}-q{i}", pool_size=5, max_overflow=10,
                                 pool_timeout=timeout) for i in range(n)]
    out: dict[str, Any] = {"pool": pool, "instances": n, "hold_s": hold}
    t_start = time.monotonic()
    with Fleet() as fleet:
        workers = fleet.start(specs)
        out["start_s"] = round(time.monotonic() - t_start, 2)
        out["server_max_connections"] = _show(lab, "max_connections")
        t_go = time.monotonic()
        replies = _broadcast(workers, {"op": "serve", "n": 1, "concurrency": 1, "sleep": hold},
                             timeout=timeout + 60)
        failed = [r for r in replies if r.get("errors") or "error" in r]
        ends = [r["end"] for r in replies if "end" in r]
        figs = [r.get("pool", {}) for r in replies]
        retries = [f.get("retries", 0) for f in figs]
        out["ok"] = n - len(failed)
        out["failed"] = len(failed)
        out["error_samples"] = sorted({s for r in replies for s in r.get("error_samples", [])}
                                      | {r["error"] for r in replies if "error" in r})[:5]
        out["drain_s"] = round(max(ends) - t_go, 2) if ends else None
        lat = sorted(r.get("latency_max_s", 0.0) for r in replies)
        out["latency_p50_s"] = round(statistics.median(lat), 3) if lat else None
        out["latency_max_s"] = round(lat[-1], 3) if lat else None
        if pool == "zonal":
            out["retries_total"] = sum(retries)
            out["retries_max"] = max(retries, default=0)
            out["instances_that_retried"] = sum(1 for r in retries if r)
        # (asked of the instances: the server may have no slot left for an admin)
        out["connections_held_after"] = sum(f.get("idle", 0) + f.get("in_use", 0)
                                            for f in figs)
    _wait_for(lambda: not server_connections(lab, prefix=tag), 10.0, 0.1)
    out["duration_s"] = round(time.monotonic() - t_start, 2)
    return out


def _show(lab: Lab, setting: str) -> str:
    with _admin(lab, "a") as conn:
        row = conn.execute(f"SHOW {setting}").fetchone()
    return str(row[0]) if row else ""


# ----------------------------------------------------------------------------- 5. shutdown

def _shutdown_worker(spec: dict[str, Any]) -> None:
    """A fresh interpreter: serve a burst, report, wait for stdin's end, exit."""
    import atexit

    report: dict[str, Any] = {}

    def at_exit() -> None:
        # Registered before zonal is imported, so it runs after zonal's own hook.
        engine = report.get("engine")
        if engine is not None:
            figs = pool_figures(engine)
            print(json.dumps({"at_exit": figs}), flush=True)

    atexit.register(at_exit)
    _arm_watchdog(spec.get("lifetime", 60))
    if spec.get("prior") == "keep-alive":
        # A platform runtime that survives SIGTERM (and would be frozen or destroyed
        # after it): the kernel closes no socket, so only zonal's handler can.
        def prior(signum: int, frame: Any) -> None:
            print(json.dumps({"sigterm": "handled"}), flush=True)

        signal.signal(signal.SIGTERM, prior)
    engine = make_engine(spec)
    report["engine"] = engine
    if spec.get("install_handler"):
        from zonal_core.lifecycle import install_sigterm_handler

        install_sigterm_handler()
    app = RequestApp(engine)
    r = _serve(app, spec.get("burst", 3), spec.get("burst", 3), 0.1)
    print(json.dumps({"ready": True, "errors": r["errors"], "pool": pool_figures(engine)}),
          flush=True)
    sys.stdin.readline()  # returns at EOF: then a normal interpreter exit


class _Proc:
    """A shutdown worker: a fresh ``python`` process, killed by PID at the end."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from zonal_lab.bench.children import child_env

        # This file as a script (not ``-m``, which would import zonal_lab, hence zonal,
        # first); -P: its folder is not put on sys.path.
        self.p = subprocess.Popen(
            [sys.executable, "-P", str(Path(__file__).resolve()), "--shutdown-worker",
             json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=child_env())
        self.lines: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(line))

    def wait_line(self, key: str, timeout: float) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [x for x in self.lines if key in x]
            return bool(found) or self.p.poll() is not None

        _wait_for(seen, timeout, 0.01)
        if not found:
            err = self.p.stderr.read() if self.p.poll() is not None and self.p.stderr else ""
            raise RuntimeError(f"shutdown worker: no {key!r} line; stderr: {err[-800:]}")
        return found[0]

    def kill(self) -> None:
        if self.p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.p.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.p.wait(5)
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            with contextlib.suppress(Exception):
                if f is not None:
                    f.close()


@contextlib.contextmanager
def _shutdown_proc(spec: dict[str, Any]) -> Iterator[_Proc]:
    proc = _Proc(spec)
    try:
        yield proc
    finally:
        proc.kill()


def shutdown(lab: Lab, *, how: str = "exit", pool: str = "zonal", install_handler: bool = True,
             paused: bool = False) -> dict[str, Any]:
    """An instance holds idle connections, then ends.

    ``how``: ``exit`` (normal interpreter exit), ``sigterm`` (SIGTERM, previous
    handler the default), or ``sigterm-alive`` (SIGTERM with a previous handler that
    keeps the process alive, as a platform runtime would before it is frozen or
    destroyed). ``paused``: the zone is SIGSTOPped (a black hole) before the end.

    Figures: seconds until the process exited (or handled the signal), and the
    server's connections of that instance right after and until they were gone.
    """
    tag = _run_tag()
    app = f"{tag}-{pool[0]}-{how}"
    if pool == "zonal":
        spec = _zonal_spec(lab, app, pool_size=3, min_idle=3)
    else:
        spec = _queuepool_spec(lab, app, pool_size=3, max_overflow=0)
    spec.update(install_handler=install_handler and pool == "zonal", burst=3,
                prior="keep-alive" if how == "sigterm-alive" else "default")
    out: dict[str, Any] = {"pool": pool, "how": how, "paused": paused,
                           "handler": spec["install_handler"]}
    t_start = time.monotonic()
    with _shutdown_proc(spec) as proc:
        ready = proc.wait_line("ready", 30)
        out["request_errors"] = ready.get("errors")
        out["idle_before"] = ready["pool"]["idle"]
        out["server_before"] = server_connections(lab, prefix=app).get(app, 0)
        if paused:
            lab["a"].pause()
        try:
            t0 = time.monotonic()
            if how == "exit":
                assert proc.p.stdin is not None
                proc.p.stdin.close()
            else:
                proc.p.send_signal(signal.SIGTERM)
            if how == "sigterm-alive":
                proc.wait_line("sigterm", 10)
                out["handled_in_s"] = round(time.monotonic() - t0, 3)
                out["alive_after"] = proc.p.poll() is None
                os.kill(proc.p.pid, signal.SIGSTOP)  # as the platform freezes it
            else:
                try:
                    proc.p.wait(10)
                except subprocess.TimeoutExpired:
                    out["hung"] = True
                out["exit_s"] = round(time.monotonic() - t0, 3)
                out["returncode"] = proc.p.returncode
        finally:
            if paused:
                lab["a"].resume()
        if not paused:
            out["server_right_after"] = server_connections(lab, prefix=app).get(app, 0)
        gone = _wait_for(lambda: not server_connections(lab, prefix=app), 3.0, 0.02)
        out["server_gone_in_s"] = None if gone is None else round(gone, 3)
        at_exit = [x["at_exit"] for x in proc.lines if "at_exit" in x]
        if at_exit and pool == "zonal":
            out["closed_at_exit"] = at_exit[0]["closes"].get("shutdown", 0)
            out["idle_at_exit"] = at_exit[0]["idle"]
    _wait_for(lambda: not server_connections(lab, prefix=tag), 10.0, 0.1)
    out["duration_s"] = round(time.monotonic() - t_start, 2)
    return out


# ----------------------------------------------------------------------------- runner

def _frozen_all(lab_direct: Lab) -> dict[str, Any]:
    return {"direct": frozen_instances(lab_direct),
            "pgbouncer": frozen_instances(lab_direct, via_pgbouncer=True)}


def _thaw_all(lab: Lab) -> dict[str, Any]:
    return {
        "terminate_suspend": thaw(lab, fault="terminate"),
        "restart_suspend": thaw(lab, fault="restart"),
        "terminate_short_no_ping": thaw(lab, fault="terminate", freeze_for=1.0),
        "terminate_short_pre_ping": thaw(lab, fault="terminate", freeze_for=1.0, pre_ping=True),
        "queuepool_terminate": thaw(lab, fault="terminate", pool="queuepool"),
        "queuepool_terminate_pre_ping": thaw(lab, fault="terminate", pool="queuepool",
                                             pre_ping=True),
    }


def _storm_all(lab: Lab) -> dict[str, Any]:
    return {"zonal": deploy_storm(lab), "queuepool": deploy_storm(lab, pool="queuepool")}


def _shutdown_all(lab: Lab) -> dict[str, Any]:
    return {
        "exit": shutdown(lab, how="exit"),
        "sigterm": shutdown(lab, how="sigterm"),
        "sigterm_alive": shutdown(lab, how="sigterm-alive"),
        "queuepool_sigterm_alive": shutdown(lab, how="sigterm-alive", pool="queuepool"),
        "sigterm_paused_zone": shutdown(lab, how="sigterm", paused=True),
        "exit_paused_zone": shutdown(lab, how="exit", paused=True),
    }


#: name -> (lab arguments, scenario over a running lab)
SCENARIOS: dict[str, tuple[dict[str, Any], Callable[[Lab], dict[str, Any]]]] = {
    "frozen": ({"zones": ["a"], "pgbouncer": True,
                "server_settings": {"max_connections": 200}}, _frozen_all),
    "thaw": ({"zones": ["a"], "pgbouncer": True,
              "server_settings": {"max_connections": 200}}, _thaw_all),
    "storm": ({"zones": ["a"], "server_settings": {"max_connections": 30}}, _storm_all),
    "shutdown": ({"zones": ["a"], "pgbouncer": True,
                  "server_settings": {"max_connections": 200}}, _shutdown_all),
}


def run_scenario(name: str) -> dict[str, Any]:
    """Start the lab ``name`` needs, run it, stop the lab; return the figures."""
    from zonal_lab import Lab

    lab_args, scenario = SCENARIOS[name]
    with Lab(**lab_args) as lab:
        return scenario(lab)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                    help=f"any of {', '.join(SCENARIOS)} (default: all)")
    ap.add_argument("--json", action="store_true", help="one JSON document")
    args = ap.parse_args(argv)
    unknown = [n for n in args.scenarios if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    results = {}
    for name in args.scenarios or list(SCENARIOS):
        results[name] = run_scenario(name)
        if not args.json:
            print(f"== {name}")
            print(json.dumps(results[name], indent=2))
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--shutdown-worker":
        _shutdown_worker(json.loads(sys.argv[2]))
    else:
        # Run as a module: the scenario code must live in ``zonal_lab.bench.serverless``
        # (not ``__main__``) so the fork server can find the worker function.
        import importlib

        raise SystemExit(importlib.import_module("zonal_lab.bench.serverless").main())
