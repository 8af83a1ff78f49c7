"""A busy machine, on purpose and for a bounded time: :func:`cpu_load`.

CI runners and serverless sandboxes share their cores with other work, so a pool's
timeouts, pings and failover must hold when the CPU is scarce; that has to be shown,
not assumed. ``cpu_load`` starts spinning worker *processes* (threads would share
one GIL with the code under test, and mostly slow the test itself down).

Each worker bounds itself: it exits after ``seconds``, and as soon as its parent is
gone (its parent PID changes), so a test killed by a timeout or a SIGKILL leaves
no spinner behind. On a normal exit the context manager stops the workers by
their PIDs: SIGTERM, a bounded wait, SIGKILL if needed.

>>> from zonal_lab.load import cpu_load
>>> with cpu_load(seconds=5) as load:        # doctest: +SKIP
...     run_the_test()
>>> load.load_seen().cores_busy               # doctest: +SKIP
1.93
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from zonal_lab.errors import LabError

__all__ = ["CpuLoad", "LoadSeen", "cpu_load"]

_START_TIMEOUT = 30.0  # a loaded machine may be slow to start an interpreter
_STOP_TIMEOUT = 5.0
_READY = b"ready\n"
_PROC = Path("/proc/self/stat").exists()
_TICK = os.sysconf("SC_CLK_TCK") if _PROC else 100

# Only the standard library, run with -I -S: nothing from the environment or the
# site folders can slow its start or change what it does. The clock and the parent
# are checked about every millisecond of spinning.
_WORKER = """\
import os, sys, time
seconds, parent, nice = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + seconds
if nice:
    os.nice(nice)
os.write(1, b"ready\\n")
x = 0
try:
    while os.getppid() == parent and time.monotonic() < deadline:
        for i in range(20000):
            x = (x * 31 + i) & 0xFFFF
except KeyboardInterrupt:
    pass
"""


@dataclass(frozen=True)
class LoadSeen:
    """What the workers really did, so a test can show the load was real rather
    than trust that it was asked for."""

    workers: int
    wall: float
    """Seconds the load ran: from the start to the stop (or now), at most ``seconds``."""
    cpu: tuple[float, ...]
    """CPU seconds (user + system) each worker used."""

    @property
    def total(self) -> float:
        """CPU seconds of all workers together."""
        return sum(self.cpu)

    @property
    def cores_busy(self) -> float:
        """Cores' worth kept busy on average: about ``min(workers, cores)`` on an
        otherwise idle machine, less when other work takes its share."""
        return self.total / self.wall if self.wall > 0 else 0.0


@dataclass
class _Worker:
    proc: subprocess.Popen[bytes]
    cpu: float = 0.0  # the last figure seen
    reaped: bool = False  # then ``cpu`` is final (from wait4)


class CpuLoad:
    """``workers`` spinning processes; see the module docstring. Made by
    :func:`cpu_load`; a context manager, or :meth:`start` and :meth:`stop`."""

    def __init__(self, workers: int | None = None, *, seconds: float = 60.0, nice: int = 0) -> None:
        if workers is None:
            workers = max(1, os.cpu_count() or 1)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(
                f"workers must be an int >= 1 (or None for every core), got {workers!r}"
            )
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or seconds <= 0
        ):
            raise ValueError(f"seconds must be a finite number > 0, got {seconds!r}")
        if isinstance(nice, bool) or not isinstance(nice, int) or not 0 <= nice <= 19:
            raise ValueError(f"nice must be an int from 0 (compete as equals) to 19, got {nice!r}")
        self.workers = workers
        self.seconds = float(seconds)
        self.nice = nice
        self._workers: list[_Worker] = []
        self._started: float | None = None
        self._stopped: float | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        if self._started is None:
            state = "not started"
        elif self._stopped is None:
            state = "running"
        else:
            state = "stopped"
        return f"<CpuLoad workers={self.workers} seconds={self.seconds:g} nice={self.nice} {state}>"

    @property
    def pids(self) -> tuple[int, ...]:
        """The workers' PIDs (empty before :meth:`start`)."""
        return tuple(w.proc.pid for w in self._workers)

    # -- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> CpuLoad:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> CpuLoad:
        """Start the workers and return once every one of them spins, so the load
        is there from the first line of the ``with`` body. Starts only once."""
        with self._lock:
            if self._started is not None:
                return self
            if not sys.executable:
                raise LabError("cpu_load needs sys.executable to start its workers")
            args = [str(self.seconds), str(os.getpid()), str(self.nice)]
            try:
                for _ in range(self.workers):
                    proc = subprocess.Popen(
                        [sys.executable, "-I", "-S", "-c", _WORKER, *args],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                    )
                    self._workers.append(_Worker(proc))
                self._await_ready()
            except BaseException:
                self._started = self._stopped = time.monotonic()
                self._stop_workers(0.0)
                raise
            finally:
                for w in self._workers:
                    if w.proc.stdout is not None:
                        w.proc.stdout.close()
            self._started = time.monotonic()
            return self

    def _await_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        pending: dict[int, tuple[_Worker, bytearray]] = {}
        for w in self._workers:
            assert w.proc.stdout is not None
            pending[w.proc.stdout.fileno()] = (w, bytearray())
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LabError(
                    f"{len(pending)} of {self.workers} load workers did not start "
                    f"within {_START_TIMEOUT:g} s"
                )
            readable, _, _ = select.select(list(pending), [], [], remaining)
            for fd in readable:
                w, out = pending[fd]
                chunk = os.read(fd, 4096)
                out += chunk
                if out.startswith(_READY):
                    del pending[fd]
                elif not chunk:
                    w.proc.wait(_STOP_TIMEOUT)
                    text = out.decode(errors="replace").strip()[-2000:]
                    raise LabError(
                        f"a load worker exited with {w.proc.returncode} before it "
                        f"started spinning: {text or '(no output)'}"
                    )

    def stop(self, timeout: float = _STOP_TIMEOUT) -> LoadSeen:
        """Stop every worker by its PID: SIGTERM, up to ``timeout`` seconds to end,
        then SIGKILL. Every worker is reaped. Idempotent; returns :meth:`load_seen`."""
        with self._lock:
            if self._started is not None and self._stopped is None:
                self._stopped = time.monotonic()
            self._stop_workers(timeout)
        return self.load_seen()

    def _stop_workers(self, timeout: float) -> None:
        live = [w for w in self._workers if not _reap(w, block=False)]
        for w in live:
            _read_cpu(w)  # the last figure, should wait4 not give one
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.proc.pid, signal.SIGTERM)  # unreaped, so still our child
        deadline = time.monotonic() + timeout
        while live and time.monotonic() < deadline:
            time.sleep(0.01)
            live = [w for w in live if not _reap(w, block=False)]
        for w in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.proc.pid, signal.SIGKILL)
            _reap(w, block=True)

    # -- evidence ----------------------------------------------------------------

    def running(self) -> list[int]:
        """PIDs of the workers still spinning; those that ended are reaped."""
        with self._lock:
            return [w.proc.pid for w in self._workers if not _reap(w, block=False)]

    def load_seen(self) -> LoadSeen:
        """CPU each worker used so far (exact, from ``wait4``, once it has ended)
        and the wall time it had; see :class:`LoadSeen`."""
        with self._lock:
            for w in self._workers:
                if not _reap(w, block=False):
                    _read_cpu(w)
            if self._started is None:
                wall = 0.0
            else:
                end = self._stopped if self._stopped is not None else time.monotonic()
                wall = min(end - self._started, self.seconds)
            return LoadSeen(len(self._workers), wall, tuple(w.cpu for w in self._workers))


def cpu_load(workers: int | None = None, *, seconds: float = 60.0, nice: int = 0) -> CpuLoad:
    """Keep ``workers`` cores busy (default: every core) for at most ``seconds``.

    ``with cpu_load() as load:`` starts one spinning process per worker and stops
    them on exit; each also stops by itself after ``seconds`` or when this process
    is gone. ``nice`` (0 to 19) lowers the workers' priority: 0 competes with the
    code under test as equals, like a noisy neighbour; higher values only take what
    is left over. ``load.pids`` are the workers; ``load.load_seen()`` says how much
    CPU they really used. Raises ``ValueError`` for a bad argument.
    """
    return CpuLoad(workers, seconds=seconds, nice=nice)


def _reap(w: _Worker, *, block: bool) -> bool:
    """Reap ``w`` if it has ended, keeping its exact CPU time; True once reaped."""
    if w.reaped:
        return True
    try:
        pid, status, usage = os.wait4(w.proc.pid, 0 if block else os.WNOHANG)
    except ChildProcessError:  # reaped elsewhere (a SIGCHLD handler): keep the last figure
        w.proc.poll()  # Popen's own convention for a lost exit status
        w.reaped = True
        return True
    if pid == 0:
        return False
    w.cpu = usage.ru_utime + usage.ru_stime
    w.proc.returncode = os.waitstatus_to_exitcode(status)
    w.reaped = True
    return True


def _read_cpu(w: _Worker) -> None:
    """Update ``w.cpu`` from the running (unreaped, so still ours) process."""
    seconds = _proc_cpu(w.proc.pid) if _PROC else _ps_cpu(w.proc.pid)
    if seconds is not None:
        w.cpu = max(w.cpu, seconds)


def _proc_cpu(pid: int) -> float | None:
    """utime + stime from ``/proc/<pid>/stat``, in seconds (Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: split after the last ")"
    fields = stat.rsplit(")", 1)[-1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _ps_cpu(pid: int) -> float | None:
    """CPU time from ``ps -o time=`` (``[[dd-]hh:]mm:ss[.cc]``), where there is no /proc."""
    try:
        out = subprocess.run(
            ["ps", "-o", "time=", "-p", str(pid)],
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    if not out:
        return None
    days, _, clock = out.rpartition("-")
    seconds = 0.0
    for part in clock.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds + (int(days) * 86400 if days else 0)
