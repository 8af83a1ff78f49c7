"""A bounded multi-thread workload that records every request.

``threads`` clients call ``request()`` in a loop until ``duration`` seconds have
passed or ``max_requests`` were started; ``events`` (a fault, a repair) run in the
caller's thread at their times. A request still running ``grace`` seconds after the
end is reported as hung (a paused server with no client-side bound hangs a request
forever): the run returns anyway, and the clients are daemon threads the caller
releases by repairing the fault (:meth:`Run.join`).
"""

from __future__ import annotations

import resource
import statistics
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, TypeVar

__all__ = ["Run", "Sample", "percentile", "rotated", "run_workload", "time_weighted_percentile"]

T = TypeVar("T")


@dataclass(slots=True)
class Sample:
    """One request: when it started (s since the run began), how long it took,
    what it returned, the error's type name if it failed."""

    start: float
    took: float
    value: Any = None
    error: str | None = None


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    elapsed: float = 0.0
    marks: dict[str, float] = field(default_factory=dict)  # event name -> time
    hung: list[float] = field(default_factory=list)  # start times of requests in flight
    #: this process's CPU seconds (user + system, every thread) over the run
    cpu: float = 0.0
    #: this process's context switches (every thread; voluntary: a thread blocked, on a
    #: lock, the GIL or a socket; involuntary: the kernel took the core) over the run
    switches: int = 0
    _threads: list[threading.Thread] = field(default_factory=list, repr=False)

    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.error is None]

    def errors(self) -> list[Sample]:
        return [s for s in self.samples if s.error is not None]

    def between(self, t0: float, t1: float = float("inf")) -> list[Sample]:
        return [s for s in self.samples if t0 <= s.start < t1]

    def cpu_per_request(self) -> float | None:
        """This process's CPU microseconds per request made (any outcome): what a
        request cost the client, thread switches included; None when none was made."""
        return self._per_request(self.cpu * 1e6)

    def switches_per_request(self) -> float | None:
        """This process's context switches per request made (any outcome): where a
        client's threads block and wake, per request; None when none was made."""
        return self._per_request(self.switches)

    def _per_request(self, total: float) -> float | None:
        return total / len(self.samples) if self.samples else None

    def throughput(self) -> float:
        """Successful requests per second, of those that ended within the run."""
        done = [s for s in self.ok() if s.start + s.took <= self.elapsed]
        return len(done) / self.elapsed if self.elapsed else 0.0

    def latencies_ms(self, samples: Sequence[Sample] | None = None) -> list[float]:
        chosen = self.ok() if samples is None else [s for s in samples if s.error is None]
        return [s.took * 1e3 for s in chosen]

    def join(self, timeout: float) -> bool:
        """Wait (bounded) for the clients; True when all have ended."""
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)


def rotated(names: Sequence[T], rnd: int) -> list[T]:
    """Round ``rnd``'s order of the subjects: each round starts with the next one
    (ABC, BCA, CAB...), so a drift of the machine hits every subject alike."""
    k = rnd % len(names) if names else 0
    return [*names[k:], *names[:k]]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), nearest rank; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def time_weighted_percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile of ``values`` weighted by themselves: the smallest value
    such that the values up to it make ``q``% of their sum. For waits: ``q``% of all
    the time clients spent waiting was in waits at most this long. Unlike a
    percentile of the requests, a client starved for the whole measure counts for its
    time, not as one request among thousands (None when empty or all zero)."""
    ordered = sorted(values)
    running = list(accumulate(ordered))  # the sum of the values up to each
    if not running or running[-1] <= 0:
        return None
    return ordered[min(bisect_left(running, q / 100 * running[-1]), len(ordered) - 1)]


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _usage() -> tuple[float, int]:
    """This process's CPU seconds (user + system) and context switches (voluntary and
    involuntary) so far, of every thread it ran, those that ended included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_nvcsw + usage.ru_nivcsw


def run_workload(
    request: Callable[[], Any],
    *,
    threads: int,
    duration: float,
    max_requests: int = 1_000_000,
    events: Sequence[tuple[float, str, Callable[[], None]]] = (),
    until: Callable[[Run, float], bool] | None = None,
    think: float = 0.0,
    grace: float = 2.0,
    errors: tuple[type[BaseException], ...] = (Exception,),
) -> Run:
    """Run the workload; see the module docstring.

    ``until(run, now)``, checked every 50 ms, may end the run early. ``think``
    seconds of sleep between one client's requests.
    """
    run = Run()
    lock = threading.Lock()
    stop = threading.Event()
    started = [0]
    inflight: dict[int, float] = {}
    cpu0, sw0 = _usage()
    t0 = time.monotonic()

    def client(i: int) -> None:
        while not stop.is_set():
            with lock:
                if started[0] >= max_requests:
                    return
                started[0] += 1
            start = time.monotonic() - t0
            inflight[i] = start
            value, err = None, None
            try:
                value = request()
            except errors as exc:
                err = _error_name(exc)
            took = time.monotonic() - t0 - start
            inflight.pop(i, None)
            with lock:
                run.samples.append(Sample(start, took, value, err))
            if think:
                stop.wait(think)

    run._threads = [threading.Thread(target=client, args=(i,), daemon=True, name=f"bench-{i}")
                    for i in range(threads)]
    for t in run._threads:
        t.start()
    pending = sorted(events, key=lambda e: e[0])
    end = t0 + duration
    while True:
        now = time.monotonic()
        while pending and now - t0 >= pending[0][0]:
            _, name, fn = pending.pop(0)
            fn()
            # marked once in effect: a request started while the fault was being made
            # (a SIGSTOP reaching each process in turn) counts as before it
            run.marks[name] = time.monotonic() - t0
            now = time.monotonic()
        if now >= end or not any(t.is_alive() for t in run._threads):
            break
        if until is not None and not pending and until(run, now - t0):
            break
        time.sleep(min(0.05, max(0.0, end - now)))
    stop.set()
    run.elapsed = time.monotonic() - t0
    # a request that started before the end gets ``grace`` seconds to finish
    for t in run._threads:
        t.join(max(0.0, t0 + run.elapsed + grace - time.monotonic()))
    cpu1, sw1 = _usage()
    run.cpu, run.switches = cpu1 - cpu0, sw1 - sw0
    with lock:
        run.hung = sorted(inflight.values())
        run.samples.sort(key=lambda s: s.start)
    return run


def _error_name(exc: BaseException) -> str:
    """The driver's error class when SQLAlchemy wraps it (``OperationalError``,
    ``QueryTimeout``), else the exception's own; never its message (passwords)."""
    orig = getattr(exc, "orig", None)
    return type(orig if orig is not None else exc).__name__
