"""``cpu_load``: the load is real (the workers use CPU), bounded (they stop by
themselves, also when their parent dies) and cleaned up (no PID left after exit).
No database; a few seconds in all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from zonal_lab import Lab, cpu_load, procs

pytestmark = pytest.mark.timeout(60)

CORES = os.cpu_count() or 1


def gone(pids: tuple[int, ...] | list[int], timeout: float) -> bool:
    """True once none of ``pids`` runs (a zombie counts as gone), within ``timeout``."""
    return procs.wait_gone(list(pids), timeout)


def assert_reaped(pids: tuple[int, ...]) -> None:
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_workers_use_cpu_then_are_gone_after_exit() -> None:
    workers = 2
    with Lab().cpu_load(workers, seconds=30) as load:
        assert len(load.pids) == workers and len(set(load.pids)) == workers
        assert os.getpid() not in load.pids
        assert sorted(load.running()) == sorted(load.pids)
        time.sleep(1.0)
        live = load.load_seen()
        assert live.total > 0, live  # read from the running workers
    seen = load.load_seen()
    # every core this busy is the ideal; other work on the machine takes its share,
    # so ask for a quarter of the ideal: enough to tell spinning from sleeping
    assert seen.total >= 0.5 * seen.wall * min(workers, CORES) / 2, seen
    assert seen.workers == workers and seen.total >= live.total
    assert 0.9 < seen.wall < 30
    assert load.running() == []
    assert_reaped(load.pids)
    assert load.stop() == seen  # idempotent


def test_worker_stops_by_itself_after_seconds() -> None:
    with cpu_load(1, seconds=1) as load:
        began = time.monotonic()
        assert gone(load.pids, timeout=10), "the worker outlived its seconds"
        assert time.monotonic() - began < 10
        assert load.running() == []  # reaps it
        assert_reaped(load.pids)
        assert load.load_seen().total > 0


def test_workers_stop_when_their_parent_dies() -> None:
    # a parent that starts workers for 30 s, says their PIDs and is SIGKILLed
    code = (
        "import json, sys, time\n"
        "from zonal_lab.load import cpu_load\n"
        "load = cpu_load(2, seconds=30).start()\n"
        "print(json.dumps(load.pids), flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pids = json.loads(parent.stdout.readline())
        assert len(pids) == 2 and all(procs.alive(p) for p in pids)
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        if parent.stdout is not None:
            parent.stdout.close()
    assert gone(pids, timeout=10), "workers outlived their parent"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"workers": 0}, "workers"),
        ({"workers": -1}, "workers"),
        ({"seconds": -1}, "seconds"),
        ({"seconds": 0}, "seconds"),
        ({"seconds": float("inf")}, "seconds"),
        ({"nice": -5}, "nice"),
        ({"nice": 20}, "nice"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be"):
        cpu_load(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"^{name} must be"):
        Lab().cpu_load(**kwargs)  # type: ignore[arg-type]


def test_default_is_one_worker_per_core() -> None:
    load = cpu_load()
    assert load.workers == CORES and load.seconds == 60
    assert load.pids == () and load.load_seen().total == 0  # nothing starts before start()
